//! Kernel threads and vCPU scheduling glue.
//!
//! Thread 0 is the shell (it also idles the CPU). Every guest vCPU is a
//! kernel thread with its own guarded kernel stack: a trap from ring 3 lands
//! on that stack (TSS.RSP0 / the syscall entry), and switching vCPUs is
//! switching kernel stacks (`rhv_switch`) plus CR3, FS/GS base and the FPU
//! registers. Which vCPU runs is decided by `hypervisor::sched`; the shell
//! preempts guests whenever console input is waiting.
//!
//! Locking: never switch threads while holding a lock. `DOMAINS` (in
//! `domains.rs`) may be taken before `STATE`, never after.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use core::sync::atomic::{AtomicBool, Ordering};

use hypervisor::domain::DomId;
use hypervisor::sched::{Scheduler, State as SchedState, SLICE_NS};

use crate::arch::fpu::FpuState;
use crate::arch::sync::IrqMutex;
use crate::arch::trap::TrapFrame;
use crate::arch::{cpu, syscall};
use crate::{mm, time};

/// A thread's identity; 0 is the shell.
pub type ThreadId = u64;
/// The shell/idle thread.
pub const SHELL: ThreadId = 0;
/// Kernel stack size of a vCPU thread, in pages.
const VCPU_STACK_PAGES: u64 = 4;

extern "C" {
    fn rhv_switch(save_rsp: *mut u64, new_rsp: u64);
    fn rhv_thread_start();
    fn rhv_enter_user(frame: *mut TrapFrame) -> !;
}

struct Thread {
    saved_rsp: u64,
    kstack_top: u64,
    kstack_pages: u64,
    cr3: u64,
    fpu: Option<FpuState>,
    fs: u64,
    gs: u64,
    owner: Option<(DomId, u32)>,
    /// The XSAVE components the vCPU's domain may use (its CPU policy).
    xcr0: u64,
}

struct State {
    threads: BTreeMap<ThreadId, Box<Thread>>,
    sched: Scheduler<ThreadId>,
    current: ThreadId,
    next_id: ThreadId,
    slice_start_tsc: u64,
    /// (host deadline ns, thread) of blocked vCPUs with a deadline.
    sleepers: BTreeSet<(u64, ThreadId)>,
    fpu_owner: Option<ThreadId>,
    idle_ns: u64,
}

static STATE: IrqMutex<Option<State>> = IrqMutex::new(None);
static SHELL_WANTED: AtomicBool = AtomicBool::new(false);
/// The shell was preempted by a tick: the next pick goes to a vCPU even if
/// the shell has work, and the shell is wanted again after that slice.
static SHELL_PREEMPTED: AtomicBool = AtomicBool::new(false);

/// Makes the running boot thread the shell thread.
pub fn init() {
    let shell = Box::new(Thread {
        saved_rsp: 0,
        kstack_top: 0,
        kstack_pages: 0,
        cr3: cpu::read_cr3(),
        fpu: None,
        fs: 0,
        gs: 0,
        owner: None,
        xcr0: 0,
    });
    let mut threads = BTreeMap::new();
    threads.insert(SHELL, shell);
    *STATE.lock() = Some(State {
        threads,
        sched: Scheduler::new(),
        current: SHELL,
        next_id: 1,
        slice_start_tsc: cpu::rdtsc(),
        sleepers: BTreeSet::new(),
        fpu_owner: None,
        idle_ns: 0,
    });
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.lock().as_mut().map(f)
}

/// The running thread.
pub fn current() -> ThreadId {
    with(|s| s.current).unwrap_or(SHELL)
}

/// The domain and vCPU index of the running thread, if it is a vCPU.
pub fn current_vcpu() -> Option<(DomId, u32)> {
    with(|s| s.threads.get(&s.current).and_then(|t| t.owner)).flatten()
}

/// Creates a (paused) vCPU thread that will enter ring 3 with `frame`.
pub fn create_vcpu(dom: DomId, idx: u32, cr3: u64, frame: TrapFrame, weight: u16, xcr0: u64) -> Option<ThreadId> {
    let top = mm::alloc_stack(VCPU_STACK_PAGES)?;
    let Some(fpu) = FpuState::new() else {
        mm::free_stack(top, VCPU_STACK_PAGES);
        return None;
    };
    let frame_at = top - core::mem::size_of::<TrapFrame>() as u64;
    // Below the frame: what rhv_switch pops on the first switch (r15, r14,
    // r13 = arg, r12 = entry, rbx, rbp, rflags) and its return address.
    let regs: [u64; 8] =
        [0, 0, frame_at, vcpu_bootstrap as *const () as u64, 0, 0, 0x2, rhv_thread_start as *const () as u64];
    let rsp = frame_at - 8 * regs.len() as u64;
    // SAFETY: [rsp, top) lies in the freshly mapped stack owned by this new
    // thread, which nothing else references yet.
    unsafe {
        (frame_at as *mut TrapFrame).write(frame);
        for (i, v) in regs.iter().enumerate() {
            ((rsp + 8 * i as u64) as *mut u64).write(*v);
        }
    }
    let t = Box::new(Thread {
        saved_rsp: rsp,
        kstack_top: top,
        kstack_pages: VCPU_STACK_PAGES,
        cr3,
        fpu: Some(fpu),
        fs: 0,
        gs: 0,
        owner: Some((dom, idx)),
        xcr0,
    });
    add_thread(t, weight, false)
}

/// Registers a new thread with the scheduler (paused, or runnable).
fn add_thread(t: Box<Thread>, weight: u16, runnable: bool) -> Option<ThreadId> {
    with(|s| {
        let id = s.next_id;
        s.next_id += 1;
        s.threads.insert(id, t);
        s.sched.add(id, weight);
        if runnable {
            s.sched.set_state(id, SchedState::Runnable);
        }
        id
    })
}

extern "C" fn vcpu_bootstrap(frame: u64) -> ! {
    // SAFETY: `frame` is the initial TrapFrame written by create_vcpu at the
    // top of this thread's own stack; entering ring 3 from it discards the
    // rest of this stack.
    unsafe { rhv_enter_user(frame as *mut TrapFrame) }
}

/// Kernel stack size of a hypervisor service thread (NFS-deep call chains), in pages.
const KTHREAD_STACK_PAGES: u64 = 16;

/// Starts a hypervisor service thread (not a vCPU): it runs `entry(arg)` in
/// ring 0 on its own guarded stack with the kernel's page tables, is
/// scheduled like a vCPU with `weight`, and must never return. It starts
/// runnable, with interrupts disabled (the entry enables them).
pub fn spawn_kernel(entry: extern "C" fn(u64) -> !, arg: u64, weight: u16) -> Option<ThreadId> {
    let top = mm::alloc_stack(KTHREAD_STACK_PAGES)?;
    // What rhv_switch pops on the first switch (r15, r14, r13 = arg,
    // r12 = entry, rbx, rbp, rflags) and its return address.
    let regs: [u64; 8] = [0, 0, arg, entry as *const () as u64, 0, 0, 0x2, rhv_thread_start as *const () as u64];
    // The entry is called with RSP = top - 16 (16-byte aligned, SysV ABI).
    let rsp = top - 16 - 8 * regs.len() as u64;
    // SAFETY: [rsp, top) lies in the freshly mapped stack owned by this new
    // thread, which nothing else references yet.
    unsafe {
        for (i, v) in regs.iter().enumerate() {
            ((rsp + 8 * i as u64) as *mut u64).write(*v);
        }
    }
    let t = Box::new(Thread {
        saved_rsp: rsp,
        kstack_top: top,
        kstack_pages: KTHREAD_STACK_PAGES,
        cr3: cpu::read_cr3(),
        fpu: None,
        fs: 0,
        gs: 0,
        owner: None,
        xcr0: 0,
    });
    add_thread(t, weight, true)
}

/// A stopped vCPU's user-visible state, for migration.
pub struct Context {
    /// The ring-3 frame at the top of its kernel stack (a preemption or a
    /// hypercall in progress: `vector` tells which).
    pub frame: TrapFrame,
    pub fs: u64,
    pub gs: u64,
    /// (format, XCR0, bytes), see `FpuState::export`.
    pub fpu: (u8, u64, alloc::vec::Vec<u8>),
}

/// The state of a vCPU thread that is not running (paused or blocked).
pub fn capture(id: ThreadId) -> Option<Context> {
    with(|s| {
        if s.current == id {
            return None;
        }
        let owner = s.fpu_owner;
        let t = s.threads.get_mut(&id)?;
        t.owner?;
        let fpu = t.fpu.as_mut()?;
        if owner == Some(id) {
            // The registers still hold this vCPU's values (the hypervisor
            // never uses them): store them, they stay loaded.
            fpu.save();
        }
        let frame_at = t.kstack_top - core::mem::size_of::<TrapFrame>() as u64;
        // SAFETY: a vCPU's initial or latest ring-3 frame lives at the top
        // of its own mapped stack; the thread is not running, so nothing
        // writes it meanwhile.
        let frame = unsafe { (frame_at as *const TrapFrame).read() };
        Some(Context { frame, fs: t.fs, gs: t.gs, fpu: fpu.export() })
    })
    .flatten()
}

/// Sets RAX in a stopped vCPU's ring-3 frame (the result of a hypercall it
/// will return from).
pub fn set_frame_rax(id: ThreadId, rax: u64) {
    with(|s| {
        if s.current == id {
            return;
        }
        if let Some(t) = s.threads.get(&id).filter(|t| t.owner.is_some()) {
            let frame_at = t.kstack_top - core::mem::size_of::<TrapFrame>() as u64;
            // SAFETY: as in `capture`; the frame belongs to this stopped thread.
            unsafe { (*(frame_at as *mut TrapFrame)).rax = rax };
        }
    });
}

/// Gives a new (never run) vCPU thread migrated FS/GS bases and FPU state.
pub fn install(id: ThreadId, fs: u64, gs: u64, fpu: FpuState) {
    with(|s| {
        if s.fpu_owner == Some(id) {
            s.fpu_owner = None;
        }
        if let Some(t) = s.threads.get_mut(&id) {
            t.fs = fs;
            t.gs = gs;
            t.fpu = Some(fpu);
        }
    });
}

/// Frees a thread that is not running (its stack and FPU area).
pub fn destroy_thread(id: ThreadId) {
    let t = with(|s| {
        if s.current == id {
            return None;
        }
        s.sched.remove(id);
        s.sleepers.retain(|(_, t)| *t != id);
        if s.fpu_owner == Some(id) {
            s.fpu_owner = None;
        }
        s.threads.remove(&id)
    })
    .flatten();
    if let Some(t) = t {
        mm::free_stack(t.kstack_top, t.kstack_pages);
    }
}

/// Sets a vCPU thread runnable, blocked or paused.
pub fn set_state(id: ThreadId, st: SchedState) {
    with(|s| {
        s.sched.set_state(id, st);
        if st != SchedState::Blocked {
            s.sleepers.retain(|(_, t)| *t != id);
        }
    });
}

/// Wakes a blocked vCPU thread.
pub fn wake(id: ThreadId) {
    with(|s| {
        if s.sched.state(id) == Some(SchedState::Blocked) {
            s.sched.set_state(id, SchedState::Runnable);
            s.sleepers.retain(|(_, t)| *t != id);
        }
    });
}

/// Changes a vCPU's weight.
pub fn set_weight(id: ThreadId, w: u16) -> bool {
    with(|s| s.sched.set_weight(id, w).is_ok()).unwrap_or(false)
}

/// CPU time a thread has used.
pub fn cpu_time_ns(id: ThreadId) -> u64 {
    with(|s| s.sched.cpu_time_ns(id)).unwrap_or(0)
}

/// Scheduler state of a thread.
pub fn state(id: ThreadId) -> Option<SchedState> {
    with(|s| s.sched.state(id)).flatten()
}

/// Is `id` the running thread?
pub fn is_running(id: ThreadId) -> bool {
    current() == id
}

/// Time the CPU spent halted in the idle loop.
pub fn idle_ns() -> u64 {
    with(|s| s.idle_ns).unwrap_or(0)
}

/// Blocks the running vCPU until `deadline` (host ns; `None` = until woken)
/// and switches away. Returns when it runs again.
pub fn block_current(deadline: Option<u64>) {
    with(|s| {
        let me = s.current;
        s.sched.set_state(me, SchedState::Blocked);
        if let Some(d) = deadline {
            s.sleepers.insert((d, me));
        }
    });
    schedule();
}

/// The running vCPU can never run again (its domain exited or crashed):
/// switch away for good.
pub fn stop_current() -> ! {
    with(|s| {
        let me = s.current;
        s.sched.set_state(me, SchedState::Paused);
        s.sleepers.retain(|(_, t)| *t != me);
    });
    SHELL_WANTED.store(true, Ordering::Relaxed);
    schedule();
    // Nothing resumes a stopped vCPU; if it happens, halt this thread safely.
    loop {
        schedule();
    }
}

/// Asks for the shell to run soon (something it waits for happened).
pub fn want_shell() {
    SHELL_WANTED.store(true, Ordering::Relaxed);
}

fn shell_wanted() -> bool {
    SHELL_WANTED.load(Ordering::Relaxed) || crate::drivers::serial::rx_pending()
}

/// Timer tick (interrupt context): wakes sleepers whose deadline passed and
/// preempts at the end of a slice: a vCPU for the next one (or for the shell
/// when it needs the CPU), and the shell itself when it has been busy for a
/// whole slice while vCPUs wait — so a long command never stalls guests. A
/// preempted shell gets the CPU back after one guest slice.
pub fn on_tick() {
    let now = time::now_ns();
    let preempt = with(|s| {
        while let Some(&(d, t)) = s.sleepers.first() {
            if d > now {
                break;
            }
            s.sleepers.pop_first();
            if s.sched.state(t) == Some(SchedState::Blocked) {
                s.sched.set_state(t, SchedState::Runnable);
            }
        }
        let ran = time::ticks_to_ns(cpu::rdtsc().wrapping_sub(s.slice_start_tsc));
        if s.current == SHELL {
            return if ran >= SLICE_NS && s.sched.pick().is_some() { Preempt::Shell } else { Preempt::No };
        }
        if ran >= SLICE_NS {
            Preempt::Vcpu
        } else {
            Preempt::No
        }
    })
    .unwrap_or(Preempt::No);
    match preempt {
        Preempt::Shell => switch_to_guest(),
        Preempt::Vcpu => schedule(),
        Preempt::No if current() != SHELL && shell_wanted() => schedule(),
        Preempt::No => {}
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Preempt {
    No,
    Shell,
    Vcpu,
}

/// Lets guests have one slice while the shell is busy.
fn switch_to_guest() {
    SHELL_PREEMPTED.store(true, Ordering::Relaxed);
    schedule();
}

/// After a device interrupt: let the shell run if it has input.
pub fn on_device_interrupt() {
    if current() != SHELL && shell_wanted() {
        schedule();
    }
}

/// Called by the shell when it has nothing to do: runs guests if any are
/// runnable, else halts until an interrupt. Returns when the shell has work.
pub fn shell_idle() {
    SHELL_WANTED.store(false, Ordering::Relaxed);
    cpu::cli();
    if shell_wanted() {
        cpu::sti();
        return;
    }
    let runnable = with(|s| s.sched.pick().is_some()).unwrap_or(false);
    if runnable {
        schedule();
        cpu::sti();
    } else {
        let t0 = cpu::rdtsc();
        cpu::sti_hlt();
        let dt = time::ticks_to_ns(cpu::rdtsc().wrapping_sub(t0));
        with(|s| s.idle_ns += dt);
    }
}

/// Picks the next thread and switches to it (interrupts are disabled for
/// the switch and restored after).
pub fn schedule() {
    let were = cpu::interrupts_enabled();
    cpu::cli();
    let now = cpu::rdtsc();
    let switch = with(|s| {
        let cur = s.current;
        let ran = time::ticks_to_ns(now.wrapping_sub(s.slice_start_tsc));
        if cur != SHELL {
            s.sched.charge(cur, ran);
        }
        let next = if SHELL_PREEMPTED.swap(false, Ordering::Relaxed) {
            // The shell still has work: it is wanted again after this slice.
            SHELL_WANTED.store(true, Ordering::Relaxed);
            s.sched.pick().unwrap_or(SHELL)
        } else if shell_wanted() {
            SHELL
        } else {
            s.sched.pick().unwrap_or(SHELL)
        };
        s.slice_start_tsc = now;
        if next == cur {
            return None;
        }
        // FPU: keep the registers of the last vCPU until another vCPU runs.
        if next != SHELL && s.fpu_owner != Some(next) {
            if let Some(owner) = s.fpu_owner {
                if let Some(f) = s.threads.get_mut(&owner).and_then(|t| t.fpu.as_mut()) {
                    f.save();
                }
            }
            if let Some(t) = s.threads.get(&next) {
                if let Some(f) = t.fpu.as_ref() {
                    // XCR0 limits the guest to its policy's components;
                    // saved under the owner's, restored under the next's.
                    crate::arch::fpu::set_xcr0(t.xcr0);
                    f.restore();
                }
            }
            s.fpu_owner = Some(next);
        }
        let (fs, gs) = syscall::fs_gs_base();
        let from = s.threads.get_mut(&cur)?;
        from.fs = fs;
        from.gs = gs;
        let from_rsp: *mut u64 = &mut from.saved_rsp;
        let to = s.threads.get(&next)?;
        let to_info = (to.saved_rsp, to.kstack_top, to.cr3, to.fs, to.gs, to.owner.map(|(_, i)| i));
        s.current = next;
        Some((from_rsp, to_info))
    })
    .flatten();
    if let Some((from_rsp, (to_rsp, ktop, cr3, fs, gs, vcpu_idx))) = switch {
        if ktop != 0 {
            syscall::set_kernel_stack(ktop);
        }
        if let Some(i) = vcpu_idx {
            // RDTSCP hands the guest its vCPU index (ABI: TSC_AUX).
            syscall::set_tsc_aux(i);
        }
        syscall::set_fs_gs_base(fs, gs);
        if cpu::read_cr3() != cr3 {
            // SAFETY: `cr3` is the kernel PML4 or a domain PML4 whose upper
            // half is a copy of the kernel's, so the running code, this stack
            // and all kernel data stay mapped.
            unsafe { cpu::write_cr3(cr3) };
        }
        // SAFETY: `from_rsp` points into a boxed Thread that is not freed
        // while it is the running thread (destroy_thread refuses the current
        // one); `to_rsp` is a stack pointer saved by rhv_switch or built by
        // create_vcpu. No lock is held across the switch.
        unsafe { rhv_switch(from_rsp, to_rsp) };
    }
    if were {
        cpu::sti();
    }
}

/// Points a vCPU that has not run yet at a new entry: RIP, RSP and RDI.
pub fn set_entry(id: ThreadId, rip: u64, rsp: u64, arg: u64) {
    with(|s| {
        if let Some(t) = s.threads.get(&id) {
            let frame_at = t.kstack_top - core::mem::size_of::<TrapFrame>() as u64;
            // SAFETY: the thread has never run (the caller checked `started`),
            // so its initial TrapFrame at the top of its own stack is unused
            // by anything else; the stack is mapped.
            unsafe {
                let f = &mut *(frame_at as *mut TrapFrame);
                f.rip = rip;
                f.rsp = rsp;
                f.rdi = arg;
            }
        }
    });
}
