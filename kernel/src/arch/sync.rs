//! A spin lock that keeps interrupts off while held, so an interrupt handler
//! can never spin on a lock its own CPU holds.

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

use super::cpu;

/// Spin mutex that disables interrupts for the lifetime of its guard.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Guard of an [`IrqMutex`]; restores the interrupt flag when dropped.
pub struct IrqGuard<'a, T> {
    guard: ManuallyDrop<spin::MutexGuard<'a, T>>,
    were_enabled: bool,
}

impl<T> IrqMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(v: T) -> Self {
        IrqMutex { inner: spin::Mutex::new(v) }
    }

    /// Disables interrupts and takes the lock.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let were_enabled = cpu::interrupts_enabled();
        cpu::cli();
        IrqGuard { guard: ManuallyDrop::new(self.inner.lock()), were_enabled }
    }

    /// Takes the lock if it is free (for fatal paths that must not wait).
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let were_enabled = cpu::interrupts_enabled();
        cpu::cli();
        match self.inner.try_lock() {
            Some(g) => Some(IrqGuard { guard: ManuallyDrop::new(g), were_enabled }),
            None => {
                if were_enabled {
                    cpu::sti();
                }
                None
            }
        }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard is dropped exactly once, here, and never used after.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        if self.were_enabled {
            cpu::sti();
        }
    }
}
