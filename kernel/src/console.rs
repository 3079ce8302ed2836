//! The serial console: line-serialised output for the shell and the log.

use core::fmt::{self, Write};

use crate::arch::sync::IrqMutex;
use crate::drivers::serial;

static LOCK: IrqMutex<()> = IrqMutex::new(());

struct Out;

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_crlf(s.as_bytes());
        Ok(())
    }
}

/// Writes `bytes`, turning lone `\n` into `\r\n`.
fn write_crlf(bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            serial::write(&bytes[start..i]);
            serial::write(b"\r\n");
            start = i + 1;
        }
    }
    serial::write(&bytes[start..]);
}

/// Prints formatted text (used by `print!`/`println!`).
pub fn print(args: fmt::Arguments) {
    let _g = LOCK.lock();
    let _ = Out.write_fmt(args);
}

/// Writes raw bytes (terminal control sequences from the line editor).
pub fn write_bytes(bytes: &[u8]) {
    let _g = LOCK.lock();
    serial::write(bytes);
}

/// Writes without taking the console lock: the fatal path only.
pub fn write_raw(bytes: &[u8]) {
    write_crlf(bytes);
}

/// `print!` to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
