//! In-kernel self-test (command line `selftest`): checks the allocator, the
//! page tables and the timer on the real machine, prints one line per check
//! and exits QEMU through isa-debug-exit (33 = pass, 35 = fail).

use alloc::vec::Vec;

use hypervisor::frames::PAGE_SIZE;

use crate::arch::{cpu, paging, trap};
use crate::{mm, power, time};

type Check = (&'static str, fn() -> Result<(), alloc::string::String>);

const CHECKS: &[Check] = &[
    ("frame allocator", frames),
    ("heap growth", heap),
    ("page tables", page_tables),
    ("upper half only", upper_half),
    ("W^X and NX", wx),
    ("stack guard pages", guards),
    ("monotonic clock", clock),
    ("timer interrupts", timer),
    ("guarded MSR access", guarded_msr),
];

/// A read of an MSR no CPU has comes back as an error (or, under emulators
/// that ignore unknown MSRs, a value), never as a #GP that stops the
/// hypervisor; a real MSR reads through the same path.
fn guarded_msr() -> Result<(), alloc::string::String> {
    let bogus = cpu::rdmsr_safe(0x4e55_4c4c);
    let efer = cpu::rdmsr_safe(0xC000_0080).ok_or("EFER unreadable")?;
    if efer & (1 << 8) == 0 {
        return Err(alloc::format!("EFER {efer:#x} without LME"));
    }
    println!("selftest: unknown MSR read: {}", if bogus.is_some() { "ignored by the CPU" } else { "#GP recovered" });
    Ok(())
}

/// Runs every check and ends the run.
/// The check `selftest=fail` adds: proves the failure path.
fn injected_failure() -> Result<(), alloc::string::String> {
    Err("injected by selftest=fail".into())
}

pub fn run() -> ! {
    let mut failed = 0;
    let injected: &[Check] =
        if crate::boot().opts.selftest_fail { &[("injected failure", injected_failure)] } else { &[] };
    let total = CHECKS.len() + injected.len();
    for (name, check) in CHECKS.iter().chain(injected) {
        match check() {
            Ok(()) => println!("selftest: {name} ok"),
            Err(e) => {
                failed += 1;
                println!("selftest: {name} FAILED: {e}");
            }
        }
    }
    if failed == 0 {
        println!("selftest: PASS ({total} checks)");
        power::qemu_exit(0x10);
    } else {
        println!("selftest: FAIL ({failed} of {total} checks failed)");
        power::qemu_exit(0x11);
    }
    println!("selftest: no isa-debug-exit device; halted");
    cpu::halt_forever()
}

fn frames() -> Result<(), alloc::string::String> {
    let (_, free_before, _) = mm::frame_stats();
    let reserved = mm::reserved_ranges();
    let mut got = Vec::new();
    for _ in 0..256 {
        let pa = mm::alloc_frame().ok_or("allocation failed")?;
        if pa % PAGE_SIZE != 0 {
            return Err(alloc::format!("frame {pa:#x} is not page aligned"));
        }
        if let Some(r) = reserved.iter().find(|r| pa < r.end && pa + PAGE_SIZE > r.start) {
            return Err(alloc::format!("frame {pa:#x} overlaps reserved {:#x}..{:#x}", r.start, r.end));
        }
        got.push(pa);
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != got.len() {
        return Err("a frame was handed out twice".into());
    }
    for pa in &got {
        mm::free_frame(*pa).map_err(|e| alloc::format!("free {pa:#x}: {e}"))?;
    }
    if mm::free_frame(got[0]).is_ok() {
        return Err("double free not detected".into());
    }
    let (_, free_after, _) = mm::frame_stats();
    if free_after != free_before {
        return Err(alloc::format!("free memory {free_before} before, {free_after} after"));
    }
    Ok(())
}

fn heap() -> Result<(), alloc::string::String> {
    let (_, size_before) = mm::heap_stats();
    let mut v: Vec<u64> = Vec::new();
    v.try_reserve_exact(1 << 19).map_err(|_| "4 MiB allocation failed")?;
    v.extend((0..1u64 << 19).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    if v.iter().enumerate().any(|(i, x)| *x != (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
        return Err("heap contents corrupted".into());
    }
    let (_, size_after) = mm::heap_stats();
    if size_after <= size_before {
        return Err("heap did not grow".into());
    }
    Ok(())
}

fn page_tables() -> Result<(), alloc::string::String> {
    let va = paging::MMIO_LIMIT - 16 * PAGE_SIZE;
    let pa = mm::map_fresh_page(va, paging::data_flags()).map_err(|e| alloc::format!("map: {e:?}"))?;
    // SAFETY: `va` was just mapped to a fresh frame owned by this test.
    unsafe { (va as *mut u64).write_volatile(0x5EED_CAFE) };
    // SAFETY: the same frame seen through the direct map.
    let seen = unsafe { (paging::phys_to_virt(pa) as *const u64).read_volatile() };
    if seen != 0x5EED_CAFE {
        return Err(alloc::format!("direct map sees {seen:#x}"));
    }
    match mm::translate(va) {
        Some((p, _)) if p == pa => {}
        other => return Err(alloc::format!("translate gave {other:?}")),
    }
    if !mm::unmap_and_free(va) {
        return Err("unmap failed".into());
    }
    if mm::translate(va).is_some() {
        return Err("still mapped after unmap".into());
    }
    Ok(())
}

/// The boot identity map is gone: CR3 holds the hypervisor's own tables,
/// which leave the lower half (the guests') empty, and the image, stacks and
/// heap all live in the upper half.
fn upper_half() -> Result<(), alloc::string::String> {
    let (root, lower) = mm::kernel_root_and_lower_slots().ok_or("no kernel page tables")?;
    let cr3 = cpu::read_cr3() & paging::ADDR_MASK;
    if cr3 != root {
        return Err(alloc::format!("CR3 {cr3:#x} is not the hypervisor's tables at {root:#x}"));
    }
    if lower != 0 {
        return Err(alloc::format!("{lower} lower-half PML4 slot(s) present"));
    }
    let image = mm::image_range();
    for (what, va) in [("low memory", 0x1000), ("1 MiB", 0x10_0000), ("image (identity)", image.start)] {
        if mm::translate(va).is_some() {
            return Err(alloc::format!("{what} at {va:#x} is still mapped"));
        }
    }
    let heap = alloc::boxed::Box::new(0u8);
    let places = [
        ("text", upper_half as *const () as u64),
        ("stack", cpu::frame_pointer()),
        ("heap", &*heap as *const u8 as u64),
    ];
    for (what, va) in places {
        if va < paging::DIRECT_MAP_BASE {
            return Err(alloc::format!("{what} at {va:#x} is in the lower half"));
        }
    }
    Ok(())
}

fn wx() -> Result<(), alloc::string::String> {
    let text = wx as *const () as u64;
    static RO: [u8; 4] = *b"rhv!";
    static mut DATA: u64 = 0;
    let ro = RO.as_ptr() as u64;
    let data = core::ptr::addr_of!(DATA) as u64;
    let nx = paging::nx();
    let check = |what: &str, va: u64, want_w: bool, want_nx: bool| -> Result<(), alloc::string::String> {
        let (_, f) = mm::translate(va).ok_or_else(|| alloc::format!("{what} unmapped"))?;
        let w = f & paging::WRITABLE != 0;
        let x = nx != 0 && f & nx != 0;
        if w != want_w || (nx != 0 && x != want_nx) {
            return Err(alloc::format!("{what} at {va:#x} has flags {f:#x}"));
        }
        Ok(())
    };
    check("text", text, false, false)?;
    check("rodata", ro, false, true)?;
    check("data", data, true, true)?;
    let stack = cpu::frame_pointer();
    check("stack", stack, true, true)?;
    check("heap", alloc::boxed::Box::into_raw(alloc::boxed::Box::new(0u8)) as u64, true, true)?;
    if cpu::read_cr0() & (1 << 16) == 0 {
        return Err("CR0.WP is off".into());
    }
    Ok(())
}

fn guards() -> Result<(), alloc::string::String> {
    let top = mm::alloc_stack(2).ok_or("cannot allocate a stack")?;
    let guard = top - 3 * PAGE_SIZE;
    if mm::translate(guard).is_some() {
        return Err(alloc::format!("guard page {guard:#x} is mapped"));
    }
    if !mm::is_stack_guard(guard) {
        return Err("guard page not recognised".into());
    }
    if mm::translate(top - PAGE_SIZE).is_none() {
        return Err("stack page unmapped".into());
    }
    Ok(())
}

fn clock() -> Result<(), alloc::string::String> {
    let mut last = time::now_ns();
    for _ in 0..10_000 {
        let t = time::now_ns();
        if t < last {
            return Err(alloc::format!("went back from {last} to {t}"));
        }
        last = t;
    }
    if time::tsc_hz() < 1_000_000 {
        return Err(alloc::format!("implausible TSC frequency {}", time::tsc_hz()));
    }
    Ok(())
}

fn timer() -> Result<(), alloc::string::String> {
    let t0 = time::now_ns();
    let k0 = trap::ticks();
    while trap::ticks() < k0 + 10 {
        if time::now_ns() - t0 > 5_000_000_000 {
            return Err(alloc::format!("only {} ticks in 5 s", trap::ticks() - k0));
        }
        cpu::sti_hlt();
    }
    let ms = (time::now_ns() - t0) / 1_000_000;
    // 10 ticks at 100 Hz = 100 ms; emulators are loose, so accept 30..1000 ms.
    if !(30..=1000).contains(&ms) {
        return Err(alloc::format!("10 ticks took {ms} ms (expected about 100)"));
    }
    Ok(())
}
