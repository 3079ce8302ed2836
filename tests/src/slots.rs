//! A process-wide limit on concurrently running QEMUs: the machines have 2
//! cores and cargo runs a test binary's tests on as many threads, so more
//! QEMUs would only slow each other down (and stretch timing-sensitive
//! waits).
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// How many QEMUs may run at once: `RHV_QEMU_JOBS`, else the number of CPUs
/// capped at 2.
pub fn limit() -> usize {
    std::env::var("RHV_QEMU_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(2))
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(());

impl Slot {
    /// Waits up to `timeout` for a free slot.
    pub fn acquire(timeout: Duration) -> Option<Slot> {
        let deadline = Instant::now() + timeout;
        let max = limit();
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= max {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            running = FREED.wait_timeout(running, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        *running += 1;
        Some(Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        drop(running);
        FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_freed() {
        let max = limit();
        let held: Vec<Slot> = (0..max).map(|_| Slot::acquire(Duration::from_secs(60)).expect("free slot")).collect();
        // Other unit tests take no slots, so all are ours now.
        assert!(Slot::acquire(Duration::from_millis(20)).is_none());
        drop(held);
        assert!(Slot::acquire(Duration::from_secs(5)).is_some());
    }
}
