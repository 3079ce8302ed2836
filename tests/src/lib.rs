//! QEMU test harness (stub)
