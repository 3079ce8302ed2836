//! Paravirtual domains: creation from a guest ELF, the guest address space,
//! checked copies in and out of guest memory, lifecycle (pause, shutdown,
//! crash, destroy) and the data the shell's `list` shows.
//!
//! A guest sees memory `[0, mem_bytes)` at the same virtual addresses
//! (guest-physical = guest-virtual), made of machine frames listed in `p2m`;
//! the hypervisor never dereferences a guest pointer, it translates each
//! page through `p2m` and copies via the direct map.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use guest_abi::{StartInfo, VcpuTime, INITIAL_STACK_BYTES, START_INFO_VA, START_MAGIC, TIME_PAGE_VA};
use hypervisor::conring::{ConsoleRing, GuestOutputFilter};
use hypervisor::cpupolicy::CpuPolicy;
use hypervisor::domain::{CreateArgs, DomId, DomainTable, StateFlags};
use hypervisor::elf;
use hypervisor::frames::PAGE_SIZE;
use hypervisor::migstream::{self, DeviceRecord, DomainRecord, PermRun, TimeRecord, VcpuRecord};
use hypervisor::sched::State as SchedState;
use hypervisor::xlcfg::Action;

use crate::arch::paging::{self, Mapper, DIRECT_MAP_BASE};
use crate::arch::sync::IrqMutex;
use crate::arch::trap::TrapFrame;
use crate::arch::{cpu, gdt};
use crate::vcpu::{self, ThreadId};
use crate::{mm, time};

/// Guest page permissions (in `Domain::perms`).
const P_READ: u8 = 1;
const P_WRITE: u8 = 2;
const P_EXEC: u8 = 4;

/// Grace period between `shutdown` and a forced destroy.
const SHUTDOWN_GRACE_NS: u64 = 10_000_000_000;

/// Why a domain stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    Exited(u64),
    Crashed(String),
}

/// One vCPU of a domain.
pub struct Vcpu {
    pub thread: ThreadId,
    pub started: bool,
}

/// A paravirtual domain.
pub struct Domain {
    pub mem_bytes: u64,
    /// Machine frame of each guest frame (0: not backed, e.g. page 0).
    p2m: Vec<u64>,
    /// Guest-visible permissions of each guest frame.
    perms: Vec<u8>,
    pml4: u64,
    pt_frames: Vec<u64>,
    pub vcpus: Vec<Vcpu>,
    pub paused: bool,
    pub stop: Option<Stop>,
    pub shutdown_deadline: Option<u64>,
    pub console: ConsoleRing,
    /// Sanitises this domain's output for the operator's terminal (keeps
    /// state so multi-byte characters split across writes survive).
    pub out_filter: GuestOutputFilter,
    pub input: alloc::collections::VecDeque<u8>,
    pub events: u64,
    /// Host monotonic time (ns) at guest time 0; negative for a domain that
    /// migrated in with more guest time than this host's uptime.
    pub epoch_ns: i64,
    pub created_tsc: u64,
    pub weight: u16,
    pub image: String,
    pub cmdline: String,
    pub memory_mib: u64,
    /// The CPU features the guest may use (levelled by `cpuid=`).
    pub policy: CpuPolicy,
    /// The config's `cpuid=` as written ("" when none).
    pub cpuid_spec: String,
    /// The time page's generation (bumped when the guest's clock source
    /// changes, e.g. after a migration).
    pub time_generation: u32,
    /// Pages the hypervisor wrote while dirty logging is on (one bit each).
    dirty_log: Option<Vec<AtomicU64>>,
    /// A migration or save owns the domain: no second one, no destroy from
    /// the shell's `migrate` path races.
    pub migrating: bool,
    /// How it was created (for `on_poweroff`/`on_crash` = restart, and the
    /// actions themselves).
    pub args: CreateArgs,
    /// The stop was handled (a preserved domain is not handled again).
    handled: bool,
}

/// A domain to create again (its `on_poweroff`/`on_crash` said restart).
pub struct Respawn {
    pub args: CreateArgs,
    pub disks: Vec<(String, String, bool)>,
}

/// Every domain; the hypervisor itself (ID 0) is not in the table.
pub static DOMAINS: IrqMutex<Option<DomainTable<Domain>>> = IrqMutex::new(None);

/// Runs `f` on the domain table.
pub fn with_table<R>(f: impl FnOnce(&mut DomainTable<Domain>) -> R) -> R {
    let mut g = DOMAINS.lock();
    f(g.get_or_insert_with(DomainTable::new))
}

impl Domain {
    /// Domain-relative monotonic time.
    pub fn now_ns(&self) -> u64 {
        (time::now_ns() as i64).saturating_sub(self.epoch_ns).max(0) as u64
    }

    /// The host monotonic time at which guest time is `guest_ns`.
    pub fn host_time(&self, guest_ns: u64) -> u64 {
        (guest_ns as i64).saturating_add(self.epoch_ns).max(0) as u64
    }

    /// xl-style state flags.
    pub fn flags(&self) -> StateFlags {
        let mut f = StateFlags::default();
        match &self.stop {
            Some(Stop::Crashed(_)) => f.crashed = true,
            Some(_) => f.dying = true,
            None if self.paused => {
                f.paused = true;
                f.shutdown = self.shutdown_deadline.is_some();
            }
            None => {
                f.shutdown = self.shutdown_deadline.is_some();
                let any_running = self.vcpus.iter().any(|v| vcpu::is_running(v.thread));
                let any_runnable = self.vcpus.iter().any(|v| vcpu::state(v.thread) == Some(SchedState::Runnable));
                if any_running || any_runnable {
                    f.running = true;
                } else {
                    f.blocked = true;
                }
            }
        }
        f
    }

    /// Total CPU time of all vCPUs.
    pub fn cpu_time_ns(&self) -> u64 {
        self.vcpus.iter().map(|v| vcpu::cpu_time_ns(v.thread)).sum()
    }

    /// The machine address of guest address `gpa`, if the page is backed and
    /// allows `need` (P_* bits).
    fn machine(&self, gpa: u64, need: u8) -> Option<u64> {
        let pfn = usize::try_from(gpa / PAGE_SIZE).ok()?;
        let mfn = *self.p2m.get(pfn)?;
        let perms = *self.perms.get(pfn)?;
        (mfn != 0 && perms & need == need).then_some(mfn + gpa % PAGE_SIZE)
    }

    /// May the guest execute at `gva`?
    pub fn can_exec(&self, gva: u64) -> bool {
        gva < self.mem_bytes && self.machine(gva, P_EXEC).is_some()
    }

    /// Copies `len` bytes of guest memory at `gva` (which the guest may read).
    pub fn copy_from(&self, gva: u64, len: u64) -> Result<Vec<u8>, guest_abi::Error> {
        self.check(gva, len, P_READ)?;
        let end = gva + len;
        let mut out = Vec::new();
        out.try_reserve_exact(len as usize).map_err(|_| guest_abi::Error::NoMem)?;
        let mut at = gva;
        while at < end {
            let chunk = (PAGE_SIZE - at % PAGE_SIZE).min(end - at);
            let ma = self.machine(at, P_READ).ok_or(guest_abi::Error::Fault)?;
            // SAFETY: `ma..ma+chunk` lies in one machine frame owned by this
            // domain (p2m), reachable through the direct map.
            let src = unsafe { core::slice::from_raw_parts(paging::phys_to_virt(ma) as *const u8, chunk as usize) };
            out.extend_from_slice(src);
            at += chunk;
        }
        Ok(out)
    }

    /// Checks that the guest has `need` access to all of `[gva, gva + len)`
    /// (a zero-length buffer still needs a valid address).
    fn check(&self, gva: u64, len: u64, need: u8) -> Result<(), guest_abi::Error> {
        let end = gva.checked_add(len).ok_or(guest_abi::Error::Fault)?;
        if end > self.mem_bytes || gva >= self.mem_bytes {
            return Err(guest_abi::Error::Fault);
        }
        let mut at = gva & !(PAGE_SIZE - 1);
        while at < end.max(gva + 1) {
            self.machine(at, need).ok_or(guest_abi::Error::Fault)?;
            at += PAGE_SIZE;
        }
        Ok(())
    }

    /// Checks that the guest may write all of `[gva, gva + len)`.
    pub fn check_writable(&self, gva: u64, len: u64) -> Result<(), guest_abi::Error> {
        self.check(gva, len, P_WRITE)
    }

    /// Copies `data` into guest memory at `gva` (which the guest may write).
    /// Every page is checked first, so a fault writes nothing.
    pub fn copy_to(&self, gva: u64, data: &[u8]) -> Result<(), guest_abi::Error> {
        self.check_writable(gva, data.len() as u64)?;
        self.write_unchecked(gva, data);
        Ok(())
    }

    /// Writes guest memory regardless of guest permissions (the hypervisor
    /// filling the image, start-info and time pages). Out-of-range bytes are
    /// skipped; callers pass ranges inside guest memory.
    fn write_unchecked(&self, gpa: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let at = gpa + done as u64;
            let chunk = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(data.len() - done);
            let Some(&mfn) = usize::try_from(at / PAGE_SIZE).ok().and_then(|p| self.p2m.get(p)) else { return };
            if mfn != 0 {
                self.mark_dirty(at / PAGE_SIZE);
                // SAFETY: the destination lies in one machine frame owned by
                // this domain, reachable through the direct map.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        data[done..].as_ptr(),
                        paging::phys_to_virt(mfn + at % PAGE_SIZE) as *mut u8,
                        chunk,
                    )
                };
            }
            done += chunk;
        }
    }

    fn mark_dirty(&self, gfn: u64) {
        if let Some(log) = &self.dirty_log {
            if let Some(w) = log.get((gfn / 64) as usize) {
                w.fetch_or(1 << (gfn % 64), Ordering::Relaxed);
            }
        }
    }

    /// Number of guest pages.
    pub fn pages(&self) -> u64 {
        self.mem_bytes / PAGE_SIZE
    }

    /// A copy of guest page `gfn`; `None` if no memory backs it.
    pub fn read_page(&self, gfn: u64, out: &mut [u8; 4096]) -> bool {
        let Some(&mfn) = usize::try_from(gfn).ok().and_then(|p| self.p2m.get(p)) else { return false };
        if mfn == 0 {
            return false;
        }
        // SAFETY: `mfn` is a whole machine frame owned by this domain,
        // reachable through the direct map; the copy only reads it.
        unsafe { core::ptr::copy_nonoverlapping(paging::phys_to_virt(mfn) as *const u8, out.as_mut_ptr(), 4096) };
        true
    }

    /// Fills guest page `gfn` (a migration's incoming page); false if no
    /// memory backs it.
    pub fn write_page(&self, gfn: u64, data: &[u8; 4096]) -> bool {
        let backed = usize::try_from(gfn).ok().and_then(|p| self.p2m.get(p)).is_some_and(|&m| m != 0);
        if backed {
            self.write_unchecked(gfn * PAGE_SIZE, data);
        }
        backed
    }

    /// Zeroes guest page `gfn`.
    pub fn zero_page(&self, gfn: u64) -> bool {
        self.write_page(gfn, &[0u8; 4096])
    }

    /// The memory layout as permission runs (for the migration stream).
    pub fn layout(&self) -> Vec<PermRun> {
        let mut runs: Vec<PermRun> = Vec::new();
        for (i, (&p, &m)) in self.perms.iter().zip(self.p2m.iter()).enumerate() {
            let p = if m == 0 { 0 } else { p };
            match runs.last_mut() {
                Some(r) if r.perms == p => r.count += 1,
                _ => runs.push(PermRun { first: i as u64, count: 1, perms: p }),
            }
        }
        runs
    }

    /// Starts dirty logging: clears every page's dirty bit in the guest's
    /// page tables and starts the log of hypervisor writes. Call with no vCPU
    /// of the domain running (the shell or a service thread does).
    pub fn start_dirty_log(&mut self) {
        let words = self.p2m.len().div_ceil(64);
        self.dirty_log = Some((0..words).map(|_| AtomicU64::new(0)).collect());
        let _ = self.take_dirty();
    }

    /// Stops dirty logging.
    pub fn stop_dirty_log(&mut self) {
        self.dirty_log = None;
    }

    /// The pages written since the last call (or since logging started):
    /// by the guest (dirty bits of its page tables, cleared here) or by the
    /// hypervisor (the log).
    pub fn take_dirty(&mut self) -> Vec<u64> {
        // SAFETY: the PML4 and every table under it are this domain's own
        // frames, reachable through the direct map; the domain's vCPUs are
        // not running while the caller (not a vCPU) holds the table lock.
        let mut m = unsafe { Mapper::new(self.pml4, DIRECT_MAP_BASE) };
        let mut out = Vec::new();
        for (gfn, &mfn) in self.p2m.iter().enumerate() {
            if mfn == 0 {
                continue;
            }
            let gfn = gfn as u64;
            let hw = m.take_dirty(gfn * PAGE_SIZE);
            let sw = self.dirty_log.as_ref().is_some_and(|log| {
                log.get((gfn / 64) as usize)
                    .is_some_and(|w| w.fetch_and(!(1 << (gfn % 64)), Ordering::Relaxed) & (1 << (gfn % 64)) != 0)
            });
            if hw || sw {
                out.push(gfn);
            }
        }
        out
    }

    /// Returns every frame to the pool (memory, page tables).
    fn free_memory(&mut self) {
        for &f in self.p2m.iter().chain(self.pt_frames.iter()) {
            if f != 0 {
                let _ = mm::free_frame(f);
            }
        }
        if self.pml4 != 0 {
            let _ = mm::free_frame(self.pml4);
        }
        self.p2m.clear();
        self.pt_frames.clear();
        self.pml4 = 0;
    }
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a plain repr(C) ABI struct (StartInfo, VcpuTime) made of
    // integers and byte arrays, so every byte is initialised.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
}

/// Creates and starts a domain from an ELF image with the opened `disks`
/// (attached before its first vCPU can run).
pub fn create(
    args: &CreateArgs,
    image_name: &str,
    file: &[u8],
    disks: Vec<crate::blk::OpenDisk>,
) -> Result<DomId, String> {
    let mem_bytes = args.memory_mib.checked_mul(1 << 20).ok_or("memory size overflows")?;
    let img = elf::parse(file, mem_bytes).map_err(|e| alloc::format!("{image_name}: {e}"))?;
    let name = args.name.clone().unwrap_or_else(|| hypervisor::domain::default_name(image_name));
    let host = host_policy();
    let policy = match &args.cpuid {
        Some(spec) => hypervisor::cpupolicy::parse_spec(spec, &host)?,
        None => host,
    };
    check_room(args.memory_mib)?;

    let mut d = blank(CreateArgs { name: Some(name.clone()), ..args.clone() }, mem_bytes, image_name, policy, false);
    if let Err(e) = build_memory(&mut d, &img, file, &name, args) {
        d.free_memory();
        return Err(e);
    }

    let stack_top = mem_bytes;
    let id = with_table(|t| {
        t.insert(&name, |id| {
            // The domain ID is known only now: patch it into StartInfo.
            d.write_unchecked(START_INFO_VA + 12, &id.to_le_bytes());
            d
        })
    });
    let id = match id {
        Ok(id) => id,
        Err(e) => return Err(e.to_string()),
    };
    // vCPU threads: vCPU 0 starts at the entry, the others wait for vcpu_up.
    let frame0 = TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: START_INFO_VA,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error_code: 0,
        rip: img.entry,
        cs: u64::from(gdt::USER_CS),
        rflags: 0x202,
        rsp: stack_top,
        ss: u64::from(gdt::USER_DS),
    };
    if let Some(spec) = &args.vif {
        match crate::network::vif_add(id, spec) {
            Ok(mac) => log::info!("domain {id} ({name}): vif mac {mac}"),
            Err(e) => {
                destroy(id);
                return Err(e);
            }
        }
    }
    let mut failed = false;
    with_table(|t| {
        if let Some(d) = t.get_mut(id) {
            for i in 0..args.vcpus {
                match vcpu::create_vcpu(id, i, d.pml4, frame0, d.weight, d.policy.xcr0) {
                    Some(th) => d.vcpus.push(Vcpu { thread: th, started: i == 0 }),
                    None => failed = true,
                }
            }
        }
    });
    if failed {
        destroy(id);
        return Err("out of memory for vCPU stacks".into());
    }
    crate::blk::attach(id, disks);
    with_table(|t| {
        if let Some(d) = t.get(id) {
            if let Some(v) = d.vcpus.first() {
                vcpu::set_state(v.thread, SchedState::Runnable);
            }
        }
    });
    log::info!("domain {id} ({name}): created from {image_name}, {} MiB, {} vCPU(s)", args.memory_mib, args.vcpus);
    Ok(id)
}

/// Backs every page with permissions with a fresh frame and maps the guest
/// address space (the kernel's upper half shared).
fn alloc_and_map(d: &mut Domain) -> Result<(), String> {
    let pages = d.perms.len();
    for pfn in 0..pages {
        let f = if d.perms[pfn] == 0 { 0 } else { mm::alloc_frame().ok_or("out of memory for guest pages")? };
        d.p2m.push(f);
    }

    // Address space: the kernel's upper half shared, the guest mapped low.
    let pml4 = mm::alloc_frame().ok_or("out of memory for page tables")?;
    d.pml4 = pml4;
    mm::copy_kernel_half(pml4);
    // SAFETY: pml4 is a fresh zeroed frame owned by this domain; all table
    // pages are frames reachable through the direct map.
    let mut m = unsafe { Mapper::new(pml4, DIRECT_MAP_BASE) };
    let nx = paging::nx();
    let mut pt = Vec::new();
    for (pfn, (&mfn, &p)) in d.p2m.iter().zip(d.perms.iter()).enumerate() {
        if mfn == 0 {
            continue;
        }
        let flags =
            paging::USER | if p & P_WRITE != 0 { paging::WRITABLE } else { 0 } | if p & P_EXEC != 0 { 0 } else { nx };
        m.map(pfn as u64 * PAGE_SIZE, mfn, flags, &mut || {
            let f = mm::alloc_frame()?;
            pt.push(f);
            Some(f)
        })
        .map_err(|e| {
            d.pt_frames.append(&mut pt);
            alloc::format!("cannot map guest memory: {e:?}")
        })?;
    }
    d.pt_frames = pt;

    Ok(())
}

fn build_memory(d: &mut Domain, img: &elf::ElfImage, file: &[u8], name: &str, args: &CreateArgs) -> Result<(), String> {
    let pages = (d.mem_bytes / PAGE_SIZE) as usize;
    d.p2m.try_reserve_exact(pages).map_err(|_| "out of memory")?;
    d.perms.try_reserve_exact(pages).map_err(|_| "out of memory")?;
    // Permissions: RW data by default; image segments as the ELF says; the
    // start-info and time pages read-only; page 0 and the stack guard absent.
    d.perms.resize(pages, P_READ | P_WRITE);
    d.perms[0] = 0;
    d.perms[(START_INFO_VA / PAGE_SIZE) as usize] = P_READ;
    d.perms[(TIME_PAGE_VA / PAGE_SIZE) as usize] = P_READ;
    let guard = ((d.mem_bytes - INITIAL_STACK_BYTES) / PAGE_SIZE - 1) as usize;
    d.perms[guard] = 0;
    for seg in &img.segments {
        let first = (seg.vaddr / PAGE_SIZE) as usize;
        let last = ((seg.vaddr + seg.mem_size).div_ceil(PAGE_SIZE) as usize).min(pages);
        let p = P_READ | if seg.write { P_WRITE } else { 0 } | if seg.exec { P_EXEC } else { 0 };
        for q in &mut d.perms[first..last] {
            *q = p;
        }
    }
    alloc_and_map(d)?;

    // Image.
    for seg in &img.segments {
        let off = seg.file_offset as usize;
        d.write_unchecked(seg.vaddr, &file[off..off + seg.file_size as usize]);
    }
    // Start info.
    let heap_start = img.image_end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let heap_end = guard as u64 * PAGE_SIZE;
    let mut si = StartInfo {
        magic: START_MAGIC,
        abi_version: guest_abi::ABI_VERSION,
        domid: 0,
        vcpus: args.vcpus,
        flags: 0,
        mem_bytes: d.mem_bytes,
        heap_start,
        heap_end: heap_end.max(heap_start),
        stack_top: d.mem_bytes,
        name: [0; 64],
        cmdline: [0; 1024],
    };
    let n = name.len().min(63);
    si.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let c = args.extra.len().min(1023);
    si.cmdline[..c].copy_from_slice(&args.extra.as_bytes()[..c]);
    d.write_unchecked(START_INFO_VA, as_bytes(&si));
    write_time_page(d, args.vcpus);
    Ok(())
}

/// Fills one time record per vCPU: domain time 0 at creation.
fn write_time_page(d: &Domain, vcpus: u32) {
    write_time_records(d, vcpus, d.created_tsc, 0);
}

/// Fills the time records: guest time `system_ns` at TSC `tsc`, with this
/// host's TSC scale and the domain's generation.
fn write_time_records(d: &Domain, vcpus: u32, tsc: u64, system_ns: u64) {
    let s = guest_abi::time::TscScale::from_hz(time::tsc_hz());
    let boot_unix_ns = (time::boot_unix().max(0) as u64 * 1_000_000_000) as i64;
    let rec = VcpuTime {
        version: 2,
        generation: d.time_generation,
        tsc_timestamp: tsc,
        system_time_ns: system_ns,
        tsc_to_system_mul: s.mul_frac,
        tsc_shift: s.shift,
        flags: 0,
        _pad: [0; 2],
        wall_base_ns: boot_unix_ns.saturating_add(d.epoch_ns).max(0) as u64,
        _reserved: [0; 3],
    };
    for i in 0..u64::from(vcpus) {
        d.write_unchecked(TIME_PAGE_VA + i * 64, as_bytes(&rec));
    }
}

/// Is there room for a domain of `memory_mib`? (Guest memory plus page
/// tables, about 1/512, and slack.)
fn check_room(memory_mib: u64) -> Result<(), String> {
    let pages = memory_mib * 256;
    let (_, free, _) = mm::frame_stats();
    if pages * PAGE_SIZE + pages * 8 + (1 << 20) > free {
        return Err(alloc::format!("not enough memory: domain needs {memory_mib} MiB, {} free", free >> 20));
    }
    Ok(())
}

/// A domain with no memory, vCPUs or state yet.
fn blank(args: CreateArgs, mem_bytes: u64, image: &str, policy: CpuPolicy, migrating: bool) -> Domain {
    Domain {
        mem_bytes,
        p2m: Vec::new(),
        perms: Vec::new(),
        pml4: 0,
        pt_frames: Vec::new(),
        vcpus: Vec::new(),
        paused: migrating,
        stop: None,
        shutdown_deadline: None,
        console: ConsoleRing::new(16 * 1024),
        out_filter: GuestOutputFilter::new(),
        input: alloc::collections::VecDeque::new(),
        events: 0,
        epoch_ns: time::now_ns() as i64,
        created_tsc: cpu::rdtsc(),
        weight: args.weight,
        image: image.to_string(),
        cmdline: args.extra.clone(),
        memory_mib: args.memory_mib,
        policy,
        cpuid_spec: args.cpuid.clone().unwrap_or_default(),
        time_generation: 0,
        dirty_log: None,
        migrating,
        args,
        handled: false,
    }
}

/// A domain arriving by migration or restore: memory laid out as `layout`
/// says (zeroed; pages follow), no vCPU threads yet, paused, flagged
/// `migrating` so the shell leaves it alone until [`finish_incoming`].
pub fn create_incoming(rec: &DomainRecord, policy: CpuPolicy) -> Result<DomId, String> {
    let mem_bytes = rec.memory_mib.checked_mul(1 << 20).ok_or("memory size overflows")?;
    if rec.memory_mib == 0 || rec.memory_mib > hypervisor::domain::MAX_MEMORY_MIB {
        return Err(alloc::format!("memory of {} MiB is out of range", rec.memory_mib));
    }
    hypervisor::domain::validate_name(&rec.name).map_err(|e| e.to_string())?;
    if with_table(|t| t.resolve(&rec.name).is_ok()) {
        return Err(alloc::format!("a domain named '{}' already exists here", rec.name));
    }
    check_room(rec.memory_mib)?;
    let pages = mem_bytes / PAGE_SIZE;
    let args = CreateArgs {
        image: rec.image.clone(),
        name: Some(rec.name.clone()),
        memory_mib: rec.memory_mib,
        vcpus: rec.vcpus,
        extra: rec.extra.clone(),
        weight: rec.weight.max(1),
        vif: rec.vifs.first().map(|m| alloc::format!("mac={}", net::mac::Mac(*m))),
        cpuid: (!rec.cpuid.is_empty()).then(|| rec.cpuid.clone()),
        on_poweroff: Action::from_code(rec.on_poweroff).unwrap_or(Action::Destroy),
        on_crash: Action::from_code(rec.on_crash).unwrap_or(Action::Preserve),
    };
    let mut d = blank(args, mem_bytes, &rec.image, policy, true);
    let mut perms = Vec::new();
    perms.try_reserve_exact(pages as usize).map_err(|_| "out of memory")?;
    for r in &rec.layout {
        let p = r.perms & (P_READ | P_WRITE | P_EXEC);
        perms.resize(perms.len() + r.count as usize, p);
    }
    if perms.len() as u64 != pages {
        return Err(alloc::format!("layout covers {} of {pages} pages", perms.len()));
    }
    d.perms = perms;
    if let Err(e) = alloc_and_map(&mut d) {
        d.free_memory();
        return Err(e);
    }
    with_table(|t| t.insert(&rec.name, |_| d)).map_err(|e| e.to_string())
}

/// What [`finish_incoming`] needs besides the pages.
pub struct Incoming {
    pub vcpus: Vec<VcpuRecord>,
    pub time: TimeRecord,
    pub device: DeviceRecord,
}

fn canonical(a: u64) -> bool {
    let top = a >> 47;
    top == 0 || top == 0x1_ffff
}

/// Gives an incoming domain its vCPUs, clock and devices and (unless
/// paused) starts it. On error the caller destroys the domain.
pub fn finish_incoming(id: DomId, inc: Incoming) -> Result<(), String> {
    let (pml4, weight, mem, xcr0) = with_table(|t| t.get(id).map(|d| (d.pml4, d.weight, d.mem_bytes, d.policy.xcr0)))
        .ok_or("the domain vanished")?;
    let mut threads: Vec<Vcpu> = Vec::new();
    let fail = |threads: &mut Vec<Vcpu>, e: String| {
        with_table(|t| {
            if let Some(d) = t.get_mut(id) {
                d.vcpus.append(threads);
            }
        });
        Err(e)
    };
    let mut sorted: Vec<&VcpuRecord> = inc.vcpus.iter().collect();
    sorted.sort_by_key(|v| v.index);
    for v in sorted {
        let r = &v.regs;
        let started = v.state != migstream::VCPU_PAUSED;
        if started && (r[16] >= mem || !canonical(r[7]) || !canonical(v.fs_base) || !canonical(v.gs_base)) {
            return fail(&mut threads, alloc::format!("vcpu {}: rip, rsp or a segment base is out of range", v.index));
        }
        // User-settable flags only; interrupts on, IOPL 0.
        let rflags = (r[17] & 0x0024_0DD5) | 0x202;
        let frame = TrapFrame {
            rax: r[0],
            rbx: r[1],
            rcx: r[2],
            rdx: r[3],
            rsi: r[4],
            rdi: r[5],
            rbp: r[6],
            rsp: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
            vector: 0,
            error_code: 0,
            rip: r[16],
            cs: u64::from(gdt::USER_CS),
            rflags,
            ss: u64::from(gdt::USER_DS),
        };
        let fpu = crate::arch::fpu::FpuState::import(v.fpu_format, v.xcr0 & xcr0, &v.fpu)
            .map_err(|e| alloc::format!("vcpu {}: {e}", v.index));
        let fpu = match fpu {
            Ok(f) => f,
            Err(e) => return fail(&mut threads, e),
        };
        let Some(th) = vcpu::create_vcpu(id, v.index, pml4, frame, weight, xcr0) else {
            return fail(&mut threads, "out of memory for vCPU stacks".into());
        };
        vcpu::install(th, v.fs_base, v.gs_base, fpu);
        threads.push(Vcpu { thread: th, started });
    }
    // The clock continues from where the source stopped it; the TSC scale
    // is this host's; the generation tells the guest its clock source changed.
    let n = threads.len() as u32;
    with_table(|t| {
        let Some(d) = t.get_mut(id) else { return };
        d.vcpus.append(&mut threads);
        let tsc = cpu::rdtsc();
        d.epoch_ns = time::now_ns() as i64 - inc.time.guest_ns as i64;
        d.created_tsc = tsc;
        d.time_generation = inc.time.generation.wrapping_add(1);
        write_time_records(d, n, tsc, inc.time.guest_ns);
        d.write_unchecked(START_INFO_VA + 12, &id.to_le_bytes());
        d.events |= inc.device.events | guest_abi::event::TIME_CHANGED;
        d.console.push(&inc.device.console);
        if inc.device.shutdown_requested {
            d.shutdown_deadline = Some(time::now_ns() + SHUTDOWN_GRACE_NS);
        }
    });
    Ok(())
}

/// Ends an incoming domain's migration: runs it unless `paused`.
pub fn start_incoming(id: DomId, paused: bool) {
    with_table(|t| {
        if let Some(d) = t.get_mut(id) {
            d.migrating = false;
            d.paused = paused;
            if !paused {
                for v in &d.vcpus {
                    if v.started {
                        vcpu::set_state(v.thread, SchedState::Runnable);
                    }
                }
            }
        }
    });
}

/// One vCPU's state for the migration stream; the domain must be paused.
/// A vCPU waiting in a hypercall gets that call's result in RAX: 0 for
/// `block`/`yield` (a permitted early return), the block request's result
/// (waited for; `pending` receives it so a rollback can hand it back).
pub fn export_vcpu(id: DomId, index: u32, pending: &mut Vec<(ThreadId, i64)>) -> Result<VcpuRecord, String> {
    let (thread, started) =
        with_table(|t| t.get(id).and_then(|d| d.vcpus.get(index as usize)).map(|v| (v.thread, v.started)))
            .ok_or("no such vCPU")?;
    let ctx = vcpu::capture(thread).ok_or_else(|| alloc::format!("vcpu {index} is running"))?;
    let mut f = ctx.frame;
    if started && f.vector == crate::arch::trap::HYPERCALL_VECTOR {
        f.rax = match f.rax {
            guest_abi::nr::BLOCK_READ | guest_abi::nr::BLOCK_WRITE | guest_abi::nr::BLOCK_FLUSH => {
                let r = crate::blk::take_result(thread).ok_or("interrupted")?;
                pending.push((thread, r));
                r as u64
            }
            _ => 0,
        };
        vcpu::set_frame_rax(thread, f.rax);
    }
    let regs = [
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp, f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15,
        f.rip, f.rflags,
    ];
    let (fpu_format, xcr0, fpu) = ctx.fpu;
    Ok(VcpuRecord {
        index,
        regs,
        fs_base: ctx.fs,
        gs_base: ctx.gs,
        state: if started { migstream::VCPU_RUNNABLE } else { migstream::VCPU_PAUSED },
        deadline_ns: 0,
        fpu_format,
        xcr0,
        fpu,
    })
}

/// This host's CPU features (what a domain gets without `cpuid=`).
pub fn host_policy() -> CpuPolicy {
    CpuPolicy::from_cpuid(
        |leaf, sub| {
            let r = cpu::cpuid(leaf, sub);
            [r.eax, r.ebx, r.ecx, r.edx]
        },
        crate::arch::fpu::host_xcr0(),
    )
}

/// Stops a domain's vCPUs and removes it, freeing everything (its threads
/// are freed unless one is running; the reaper catches those).
pub fn destroy(id: DomId) -> bool {
    let d = with_table(|t| t.remove(id));
    let Some(mut d) = d else { return false };
    crate::network::vif_remove(id);
    crate::blk::detach(id);
    for v in &d.vcpus {
        vcpu::set_state(v.thread, SchedState::Paused);
        vcpu::destroy_thread(v.thread);
    }
    d.free_memory();
    if crate::hypercall::attached() == Some(id) {
        crate::hypercall::attach_console(0);
        crate::println!("\n[domain {id} is gone; back to {}]", hypervisor::NAME);
        crate::print!("{}", hypervisor::PROMPT);
    }
    true
}

/// Marks the current vCPU's domain stopped (exit or crash), logs it and
/// switches away for good.
pub fn stop_current(reason: Stop) -> ! {
    if let Some((id, _)) = vcpu::current_vcpu() {
        with_table(|t| {
            let name = t.name(id).unwrap_or("?").to_string();
            if let Some(d) = t.get_mut(id) {
                match &reason {
                    Stop::Crashed(why) => log::error!("domain {id} ({name}): crashed: {why}"),
                    Stop::Exited(st) => log::info!("domain {id} ({name}): exited with status {st}"),
                }
                d.stop = Some(reason);
                for v in &d.vcpus {
                    vcpu::set_state(v.thread, SchedState::Paused);
                }
            }
        });
    }
    vcpu::stop_current()
}

/// Shell-side housekeeping: applies `on_poweroff` to exited domains and
/// `on_crash` to crashed ones (destroy, preserve, or restart: returned for
/// the shell to create again), and forces shutdowns whose grace period is
/// over.
pub fn reap() -> Vec<Respawn> {
    let now = time::now_ns();
    let (stopped, overdue): (Vec<(DomId, Action, bool)>, Vec<DomId>) = with_table(|t| {
        let mut stopped = Vec::new();
        for (id, _, d) in t.iter() {
            if d.handled || d.migrating {
                continue;
            }
            match d.stop {
                Some(Stop::Exited(_)) => stopped.push((id, d.args.on_poweroff, false)),
                Some(Stop::Crashed(_)) => stopped.push((id, d.args.on_crash, true)),
                None => {}
            }
        }
        let overdue = t
            .iter()
            .filter(|(_, _, d)| d.stop.is_none() && d.shutdown_deadline.is_some_and(|dl| now >= dl))
            .map(|(id, _, _)| id)
            .collect();
        (stopped, overdue)
    });
    let mut respawn = Vec::new();
    for (id, action, crashed) in stopped {
        let what = if crashed { "on_crash" } else { "on_poweroff" };
        match action {
            Action::Preserve => {
                with_table(|t| t.get_mut(id).map(|d| d.handled = true));
                if !crashed {
                    log::info!("domain {id}: {what}=preserve: kept (destroy it when done)");
                }
            }
            Action::Destroy | Action::CoredumpDestroy => {
                if crashed {
                    log::info!("domain {id}: {what}={action}: destroyed");
                }
                destroy(id);
            }
            _ => {
                let args = with_table(|t| t.get(id).map(|d| d.args.clone()));
                let disks =
                    crate::blk::list(id).into_iter().map(|d| (d.target, d.vdev, d.writable)).collect::<Vec<_>>();
                destroy(id);
                if let Some(args) = args {
                    log::info!("domain {id}: {what}={action}: creating it again");
                    respawn.push(Respawn { args, disks });
                }
            }
        }
    }
    for id in overdue {
        log::warn!("domain {id}: did not shut down within {} s; destroyed", SHUTDOWN_GRACE_NS / 1_000_000_000);
        destroy(id);
    }
    respawn
}

/// Pauses or unpauses every vCPU of a domain.
pub fn set_paused(id: DomId, paused: bool) -> Result<(), String> {
    with_table(|t| {
        let d = t.get_mut(id).ok_or_else(|| alloc::format!("no domain with ID {id}"))?;
        if d.stop.is_some() {
            return Err("the domain has stopped; destroy it".into());
        }
        if d.migrating && d.vcpus.is_empty() {
            return Err("the domain is still arriving (migration in progress)".into());
        }
        d.paused = paused;
        for v in &d.vcpus {
            if v.started {
                vcpu::set_state(v.thread, if paused { SchedState::Paused } else { SchedState::Runnable });
            }
        }
        Ok(())
    })
}

/// Posts event bits to a domain and wakes its blocked vCPUs.
pub fn post_event(id: DomId, bits: u64) {
    with_table(|t| {
        if let Some(d) = t.get_mut(id) {
            d.events |= bits;
            if !d.paused {
                for v in &d.vcpus {
                    if v.started {
                        vcpu::wake(v.thread);
                    }
                }
            }
        }
    });
}

/// Asks a domain to shut down; it is destroyed if it has not exited after
/// the grace period.
pub fn request_shutdown(id: DomId) -> Result<(), String> {
    with_table(|t| -> Result<(), String> {
        let d = t.get_mut(id).ok_or_else(|| alloc::format!("no domain with ID {id}"))?;
        if d.stop.is_some() {
            return Err("the domain has already stopped".into());
        }
        d.shutdown_deadline = Some(time::now_ns() + SHUTDOWN_GRACE_NS);
        Ok(())
    })?;
    post_event(id, guest_abi::event::SHUTDOWN);
    Ok(())
}
