//! A lock for guests: spins briefly, then yields the vCPU.
//!
//! vCPUs of a domain may share one physical CPU, so a vCPU that finds the
//! lock taken should let the holder run instead of spinning out its slice.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Spins before each yield while waiting.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A mutual-exclusion lock whose waiters yield their vCPU.
pub struct YieldLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one holder at a time, so
// sharing the lock between vCPUs is sound when `T` may be sent between them.
unsafe impl<T: Send> Sync for YieldLock<T> {}
// SAFETY: moving the lock moves the `T`.
unsafe impl<T: Send> Send for YieldLock<T> {}

impl<T> YieldLock<T> {
    /// A new, unlocked lock.
    pub const fn new(value: T) -> Self {
        YieldLock { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, waiting (and yielding) while another vCPU holds it.
    pub fn lock(&self) -> YieldGuard<'_, T> {
        let mut spins = 0;
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                core::hint::spin_loop();
            } else {
                spins = 0;
                yield_vcpu();
            }
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<YieldGuard<'_, T>> {
        if self.locked.load(Ordering::Relaxed) {
            return None;
        }
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| YieldGuard { lock: self })
    }
}

#[cfg(target_os = "none")]
fn yield_vcpu() {
    super::yield_now();
}

#[cfg(not(target_os = "none"))]
fn yield_vcpu() {
    core::hint::spin_loop();
}

/// Access to a [`YieldLock`]'s value; unlocks when dropped.
pub struct YieldGuard<'a, T> {
    lock: &'a YieldLock<T>,
}

impl<T> Deref for YieldGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this is the only holder of the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for YieldGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves this is the only holder of the lock, and
        // `&mut self` that this is the only use of the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for YieldGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A value written at most once, then shared read-only.
pub(crate) struct SetOnce<T> {
    /// `EMPTY`, `WRITING` or `SET`.
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const SET: u8 = 2;

// SAFETY: the value is written by one caller of `set` before `state` says
// `SET` (release), and only read through shared references after that
// (acquire); `T: Sync` makes those shared reads sound across vCPUs, `T: Send`
// the move of the value in from whichever vCPU sets it.
unsafe impl<T: Send + Sync> Sync for SetOnce<T> {}

impl<T> SetOnce<T> {
    /// An empty cell.
    pub(crate) const fn new() -> Self {
        SetOnce { state: AtomicU8::new(EMPTY), value: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// Stores `value` if the cell is empty; gives it back otherwise.
    pub(crate) fn set(&self, value: T) -> Result<&T, T> {
        if self.state.compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Err(value);
        }
        // SAFETY: winning the EMPTY -> WRITING exchange makes this the only
        // writer, and no reader looks before SET.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(SET, Ordering::Release);
        // SAFETY: just initialized; never written again.
        Ok(unsafe { (*self.value.get()).assume_init_ref() })
    }

    /// The value, once set.
    pub(crate) fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != SET {
            return None;
        }
        // SAFETY: SET is stored (release) only after the value was written,
        // and it is never written again.
        Some(unsafe { (*self.value.get()).assume_init_ref() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_once() {
        let c = SetOnce::new();
        assert!(c.get().is_none());
        assert_eq!(c.set(1), Ok(&1));
        assert_eq!(c.set(2), Err(2));
        assert_eq!(c.get(), Some(&1));
    }

    #[test]
    fn lock_excludes() {
        let l = YieldLock::new(5);
        {
            let mut g = l.lock();
            *g += 1;
            assert!(l.try_lock().is_none());
        }
        assert_eq!(*l.try_lock().expect("free again"), 6);
    }
}
