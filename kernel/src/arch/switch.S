/* Kernel thread switching and the syscall entry.
 *
 * rhv_switch(save_rsp: *mut u64, new_rsp: u64): saves callee-saved registers
 * and RFLAGS on the current stack, stores RSP, loads the new RSP and restores
 * the same set from it.
 *
 * rhv_syscall_entry: LSTAR target. SFMASK has cleared IF, so nothing can
 * interrupt the few instructions that run on the guest's stack. It builds the
 * same TrapFrame as an interrupt from ring 3 (vector 0x100) on the current
 * vCPU's kernel stack and joins trap_common, which returns with iretq.
 */
.section .text.switch, "ax"
.code64
.global rhv_switch
rhv_switch:
    pushfq
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, (%rdi)
    mov %rsi, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    popfq
    ret

/* First switch into a new thread lands here with the entry in r12 and its
 * argument in r13 (set up by Thread::new). */
.global rhv_thread_start
rhv_thread_start:
    mov %r13, %rdi
    call *%r12
    ud2

.global rhv_syscall_entry
rhv_syscall_entry:
    mov %rsp, rhv_syscall_user_rsp(%rip)
    mov rhv_kstack_top(%rip), %rsp
    pushq $0x23                       /* user SS */
    pushq rhv_syscall_user_rsp(%rip)  /* user RSP */
    push %r11                         /* user RFLAGS */
    pushq $0x2b                       /* user CS */
    push %rcx                         /* user RIP */
    pushq $0                          /* error code */
    pushq $0x100                      /* vector: hypercall */
    jmp trap_common

/* Enters a guest vCPU for the first time: rdi points at a TrapFrame on this
 * thread's kernel stack holding the initial user state. */
.global rhv_enter_user
rhv_enter_user:
    mov %rdi, %rsp
    jmp trap_return

.section .bss.switch, "aw", @nobits
.balign 8
.global rhv_syscall_user_rsp
rhv_syscall_user_rsp: .quad 0
.global rhv_kstack_top
rhv_kstack_top: .quad 0

.section .text.switch, "ax"
/* MSR access that survives a #GP (an MSR the CPU does not have): the
 * #GP handler sends a fault at rhv_rdmsr_insn / rhv_wrmsr_insn to the
 * matching fixup, which returns 1.
 *   u64 rhv_rdmsr_safe(u32 msr, u64 *out)   0 = ok
 *   u64 rhv_wrmsr_safe(u32 msr, u64 value)  0 = ok */
.global rhv_rdmsr_safe
.global rhv_rdmsr_insn
.global rhv_rdmsr_fixup
rhv_rdmsr_safe:
    mov %edi, %ecx
rhv_rdmsr_insn:
    rdmsr
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, (%rsi)
    xor %eax, %eax
    ret
rhv_rdmsr_fixup:
    mov $1, %eax
    ret

.global rhv_wrmsr_safe
.global rhv_wrmsr_insn
.global rhv_wrmsr_fixup
rhv_wrmsr_safe:
    mov %edi, %ecx
    mov %rsi, %rax
    mov %rsi, %rdx
    shr $32, %rdx
rhv_wrmsr_insn:
    wrmsr
    xor %eax, %eax
    ret
rhv_wrmsr_fixup:
    mov $1, %eax
    ret
