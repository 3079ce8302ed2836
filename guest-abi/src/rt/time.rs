//! Time without hypercalls: the per-vCPU records of the time page and the
//! TSC, with the hypercalls as the fallback.

use core::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use core::time::Duration;

use super::{block_until, clock_monotonic, clock_wall, current_vcpu, events, vcpu_id, yield_now};
use crate::{VcpuTime, MAX_VCPUS, TIME_PAGE_VA};

/// Tries of the version loop before giving up on the record (a writer never
/// keeps it odd for long; a record that stays odd is treated as absent).
const MAX_TRIES: u32 = 1000;

/// Largest value [`now`] has returned on any vCPU: `now` never goes back,
/// even between vCPUs whose records were updated at different times.
static LAST_NOW: AtomicU64 = AtomicU64::new(0);

/// Reads the TSC after all earlier loads (`lfence; rdtsc`).
#[inline(always)]
fn rdtsc_ordered() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: RDTSC is allowed at CPL 3 in rhv guests (ABI v1, CR4.TSD
    // clear); LFENCE has no side effects. No `nomem`: the asm also acts as a
    // compiler barrier inside the version loop.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The version-loop reader of a pvclock-style record, over accessors so the
/// algorithm is testable: returns a consistent record and the TSC read
/// inside the same version window, or `None` after `MAX_TRIES`.
pub(crate) fn consistent_read(
    mut version: impl FnMut() -> u32,
    mut record: impl FnMut() -> VcpuTime,
    mut tsc: impl FnMut() -> u64,
) -> Option<(VcpuTime, u64)> {
    for _ in 0..MAX_TRIES {
        let v1 = version();
        if v1 & 1 != 0 {
            // An update is in progress.
            core::hint::spin_loop();
            continue;
        }
        compiler_fence(Ordering::Acquire);
        let rec = record();
        let t = tsc();
        compiler_fence(Ordering::Acquire);
        if version() == v1 {
            return Some((rec, t));
        }
    }
    None
}

/// A consistent copy of vCPU `vcpu`'s time record and a TSC value read with
/// it; `None` if there is no usable record (id out of range, multiplier 0,
/// or a record that never settles). `rec.ns_at(tsc)` is then the monotonic
/// time and `rec.wall_base_ns` plus that the wall time.
pub fn read_time_record(vcpu: u32) -> Option<(VcpuTime, u64)> {
    if vcpu >= MAX_VCPUS {
        return None;
    }
    let rec = (TIME_PAGE_VA + u64::from(vcpu) * core::mem::size_of::<VcpuTime>() as u64) as *const VcpuTime;
    let read = consistent_read(
        // SAFETY: the time page is mapped readable in every guest and holds
        // MAX_VCPUS records; `rec` is one of them, aligned. The hypervisor
        // may change it at any time, hence volatile reads.
        || unsafe { core::ptr::addr_of!((*rec).version).read_volatile() },
        // SAFETY: as above; a torn copy is discarded by the version check.
        || unsafe { rec.read_volatile() },
        rdtsc_ordered,
    )?;
    (read.0.tsc_to_system_mul != 0).then_some(read)
}

/// The calling vCPU's record, when the runtime knows which vCPU it is on.
fn own_record() -> Option<(VcpuTime, u64)> {
    read_time_record(current_vcpu()?)
}

/// Monotonic time in ns since the domain was created (continues across
/// migration; never goes back). Read from the time page without a
/// hypercall when possible, else with `clock_monotonic`.
pub fn now() -> u64 {
    let ns = match own_record() {
        Some((rec, tsc)) => rec.ns_at(tsc),
        None => clock_monotonic(),
    };
    let last = LAST_NOW.fetch_max(ns, Ordering::Relaxed);
    last.max(ns)
}

/// Wall-clock time in ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    match own_record() {
        Some((rec, tsc)) => rec.wall_base_ns.saturating_add(rec.ns_at(tsc)),
        None => clock_wall(),
    }
}

/// Whether this vCPU takes the domain's events (vCPU 0, or code on a stack
/// the runtime does not know, which asks the hypervisor).
fn takes_events() -> bool {
    current_vcpu().unwrap_or_else(vcpu_id) == 0
}

/// Waits until the monotonic clock reaches `deadline_ns` or an event is
/// pending, and returns the pending [`event`](crate::event) bits (0: the
/// deadline passed).
///
/// Events belong to the domain, and the runtime lets vCPU 0 handle them: on
/// vCPU 0 the bits are taken (cleared), so the next wait sleeps again; on
/// other vCPUs they are left for vCPU 0, and the call yields once so that a
/// waiting loop does not spin while vCPU 0 gets to them.
pub fn wait_until(deadline_ns: u64) -> u64 {
    let pending = block_until(deadline_ns);
    if pending == 0 {
        return 0;
    }
    if takes_events() {
        // What `block_until` reported, plus anything newer; a hypervisor
        // that cleared the bits in `block` already is fine too.
        pending | events()
    } else {
        yield_now();
        pending
    }
}

/// Sleeps at least `ns` nanoseconds and returns the event bits that arrived
/// meanwhile (taken on vCPU 0, see [`wait_until`]); events do not cut the
/// sleep short ([`wait_until`] returns at the first one).
pub fn sleep_ns(ns: u64) -> u64 {
    let deadline = now().saturating_add(ns);
    let mut events = 0;
    while now() < deadline {
        events |= wait_until(deadline);
    }
    events
}

/// [`sleep_ns`] for a [`Duration`].
pub fn sleep(d: Duration) -> u64 {
    sleep_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// [`sleep_ns`] in milliseconds.
pub fn sleep_ms(ms: u64) -> u64 {
    sleep_ns(ms.saturating_mul(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    fn rec(ns: u64) -> VcpuTime {
        VcpuTime { version: 2, system_time_ns: ns, tsc_to_system_mul: 1 << 31, tsc_shift: 1, ..Default::default() }
    }

    #[test]
    fn stable_record_reads_first_time() {
        let (r, t) = consistent_read(|| 4, || rec(10), || 99).expect("stable");
        assert_eq!((r.system_time_ns, t), (10, 99));
        assert_eq!(r.ns_at(t), 10 + 99);
    }

    #[test]
    fn retries_while_odd_or_changed() {
        // Versions seen: 5 (odd: skip), 6, 8 (changed: retry), 8, 8.
        let versions = [5u32, 6, 8, 8, 8];
        let i = Cell::new(0);
        let version = || {
            let v = versions[i.get().min(versions.len() - 1)];
            i.set(i.get() + 1);
            v
        };
        let reads = Cell::new(0u64);
        let record = || {
            reads.set(reads.get() + 1);
            rec(reads.get() * 100)
        };
        let (r, _) = consistent_read(version, record, || 0).expect("settles");
        // The first full read (between 6 and 8) was discarded.
        assert_eq!(reads.get(), 2);
        assert_eq!(r.system_time_ns, 200);
    }

    #[test]
    fn gives_up_on_a_stuck_writer() {
        assert!(consistent_read(|| 1, || rec(0), || 0).is_none());
        let n = Cell::new(0u32);
        let changing = || {
            n.set(n.get() + 2);
            n.get()
        };
        assert!(consistent_read(changing, || rec(0), || 0).is_none());
    }
}
