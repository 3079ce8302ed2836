//! The `log` backend: every record goes into the `dmesg` ring; records at or
//! above the console level are printed too.

use core::fmt::Write;
use core::sync::atomic::{AtomicUsize, Ordering};

use hypervisor::logring::{self, LogRing};
use log::{LevelFilter, Log, Metadata, Record};

use crate::arch::sync::IrqMutex;

/// 64 KiB of log records.
static RING: IrqMutex<LogRing<65536>> = IrqMutex::new(LogRing::new());
static CONSOLE_LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);

struct Logger;
static LOGGER: Logger = Logger;

/// A truncating fixed-size text buffer (no allocation while logging).
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        FixedBuf { buf: [0; N], len: 0 }
    }
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl<const N: usize> Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Log for Logger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let mut msg = FixedBuf::<256>::new();
        let _ = write!(msg, "{}", record.args());
        // The ring keeps raw TSC ticks since entry, converted when printed:
        // records logged before the TSC is calibrated still get true times.
        let ticks = crate::arch::cpu::rdtsc().wrapping_sub(crate::arch::boot_tsc_value());
        RING.lock().push(ticks, record.level(), msg.as_str());
        if record.level() as usize <= CONSOLE_LEVEL.load(Ordering::Relaxed) {
            let mut line = FixedBuf::<300>::new();
            let ts = crate::time::ticks_to_ns(ticks);
            let _ = logring::format_record(&mut line, ts, record.level(), msg.as_str());
            crate::println!("{}", line.as_str());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (all levels recorded in the ring).
pub fn init() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Trace);
}

/// Sets which records also go to the console.
pub fn set_console_level(l: LevelFilter) {
    CONSOLE_LEVEL.store(l as usize, Ordering::Relaxed);
}

/// The console level.
pub fn console_level() -> LevelFilter {
    match CONSOLE_LEVEL.load(Ordering::Relaxed) {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Prints the ring, oldest first (formatted into a bounded buffer per record).
pub fn dump() {
    let ring = RING.lock();
    let dropped = ring.dropped();
    let mut lines: alloc::vec::Vec<alloc::string::String> = alloc::vec::Vec::with_capacity(ring.len());
    ring.for_each(|ticks, level, msg| {
        let mut s = alloc::string::String::new();
        let _ = logring::format_record(&mut s, crate::time::ticks_to_ns(ticks), level, msg);
        lines.push(s);
    });
    drop(ring);
    if dropped > 0 {
        crate::println!("({dropped} older records dropped)");
    }
    for l in lines {
        crate::println!("{l}");
    }
}
