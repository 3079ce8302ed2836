/* rhv entry: multiboot1 + multiboot2 headers, 32-bit protected mode entry,
 * switch to long mode on boot page tables, jump to the higher half.
 *
 * Boot page tables: identity map of 0..4 GiB and the top 2 GiB -> 0..2 GiB,
 * both with 2 MiB pages. The Rust side replaces them before anything else
 * touches memory above the image.
 * On entry to boot64_high: edi = loader magic, esi = boot info address.
 */
.set KVMA, 0xFFFFFFFF80000000
.set MB2_MAGIC, 0xE85250D6
.set MB1_MAGIC, 0x1BADB002
.set MB1_FLAGS, 0x00010003      /* page-align modules, memory info, a.out kludge */

.section .multiboot, "a"
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long 0                      /* i386 protected mode */
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + (mb2_header_end - mb2_header))
    .balign 8                    /* end tag */
    .short 0
    .short 0
    .long 8
mb2_header_end:

.balign 4
mb1_header:
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long -(MB1_MAGIC + MB1_FLAGS)
    .long mb1_header             /* header_addr */
    .long __image_phys_start     /* load_addr */
    .long __load_end_phys        /* load_end_addr */
    .long __bss_end_phys         /* bss_end_addr */
    .long _start                 /* entry_addr */

.section .boot.text, "ax"
.code32
.global _start
_start:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    rdtsc
    mov %eax, (boot_tsc - KVMA)
    mov %edx, (boot_tsc - KVMA + 4)
    mov $(boot_stack_top - KVMA), %esp

    /* Long mode present? */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz no_long_mode
    mov %edx, %ebp               /* keep: bit 20 = NX */

    /* Zero the boot tables (7 pages). */
    push %edi
    mov $(boot_pml4 - KVMA), %edi
    mov $(7 * 1024), %ecx
    xor %eax, %eax
    rep stosl
    pop %edi

    /* PML4[0] -> low PDPT, PML4[511] -> high PDPT */
    mov $(boot_pdpt_low - KVMA + 3), %eax
    mov %eax, (boot_pml4 - KVMA)
    mov $(boot_pdpt_high - KVMA + 3), %eax
    mov %eax, (boot_pml4 - KVMA + 511 * 8)
    /* low PDPT[0..4] -> PD0..PD3; high PDPT[510,511] -> PD0, PD1 */
    mov $(boot_pd - KVMA + 3), %eax
    mov %eax, (boot_pdpt_low - KVMA)
    mov %eax, (boot_pdpt_high - KVMA + 510 * 8)
    add $4096, %eax
    mov %eax, (boot_pdpt_low - KVMA + 8)
    mov %eax, (boot_pdpt_high - KVMA + 511 * 8)
    add $4096, %eax
    mov %eax, (boot_pdpt_low - KVMA + 16)
    add $4096, %eax
    mov %eax, (boot_pdpt_low - KVMA + 24)
    /* 2048 PD entries: 2 MiB pages, present + writable + PS */
    mov $(boot_pd - KVMA), %ebx
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%ebx, %ecx, 8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, 4(%ebx, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    mov $(boot_pml4 - KVMA), %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $(1 << 5), %eax           /* PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx        /* EFER */
    rdmsr
    or $(1 << 8), %eax           /* LME */
    test $(1 << 20), %ebp
    jz 2f
    or $(1 << 11), %eax          /* NXE when the CPU has NX */
2:  wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax         /* PG | WP | PE */
    mov %eax, %cr0
    lgdt boot_gdtr
    ljmp $0x08, $boot64

no_long_mode:
    /* Say so on COM1 (polled) and halt. */
    mov $no_lm_msg, %esi
3:  lodsb
    test %al, %al
    jz 5f
    mov %al, %bl
    mov $0x3FD, %dx
4:  inb %dx, %al
    test $0x20, %al
    jz 4b
    mov $0x3F8, %dx
    mov %bl, %al
    outb %al, %dx
    jmp 3b
5:  hlt
    jmp 5b

.code64
boot64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %edi, %edi               /* zero-extend magic and info pointer */
    mov %esi, %esi
    movabs $kmain, %rax
    call *%rax
6:  hlt
    jmp 6b

.section .boot.rodata, "a"
.balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF     /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF     /* 0x10: data */
boot_gdtr:
    .short boot_gdtr - boot_gdt - 1
    .long boot_gdt
no_lm_msg:
    .asciz "rhv: this CPU has no long mode (x86_64); halted\r\n"

.section .bss.boot, "aw", @nobits
.balign 4096
.global boot_pml4
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096
.global boot_stack_guard
boot_stack_guard: .skip 4096
boot_stack:     .skip 64 * 1024
.global boot_stack_top
boot_stack_top:
.balign 8
.global boot_tsc
boot_tsc:       .quad 0
