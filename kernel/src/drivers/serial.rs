//! 16550 UART: polled transmit, interrupt-driven receive into a ring.
//!
//! Flow control toward the sender: when the receive ring is full the RX
//! interrupt is switched off, so bytes wait in the UART FIFO (and QEMU or the
//! remote end stops sending) until the shell has drained the ring.

use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use crate::arch::cpu::{inb, outb};
use crate::arch::sync::IrqMutex;

const RBR: u16 = 0;
const THR: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const SCR: u16 = 7;

static PORT: AtomicU16 = AtomicU16::new(0x3F8);
static PRESENT: AtomicBool = AtomicBool::new(false);
static RX_PAUSED: AtomicBool = AtomicBool::new(false);

const RX_CAP: usize = 4096;

struct Ring {
    buf: [u8; RX_CAP],
    head: usize,
    len: usize,
}

static RX: IrqMutex<Ring> = IrqMutex::new(Ring { buf: [0; RX_CAP], head: 0, len: 0 });

/// Programs the UART at `port` for `baud` 8N1 with FIFOs. Returns false when
/// no UART answers there (then output is dropped).
pub fn init(port: u16, baud: u32) -> bool {
    PORT.store(port, Ordering::Relaxed);
    outb(port + SCR, 0x5A);
    if inb(port + SCR) != 0x5A {
        PRESENT.store(false, Ordering::Relaxed);
        return false;
    }
    let divisor = (115_200 / baud.clamp(1, 115_200)).max(1) as u16;
    outb(port + IER, 0);
    outb(port + LCR, 0x80);
    outb(port, divisor as u8);
    outb(port + 1, (divisor >> 8) as u8);
    outb(port + LCR, 0x03);
    outb(port + FCR, 0xC7); // FIFO on, cleared, RX trigger at 14 bytes
    outb(port + MCR, 0x0B); // DTR, RTS, OUT2 (IRQ line enable on PCs)
    PRESENT.store(true, Ordering::Relaxed);
    true
}

/// Turns on the receive-data interrupt.
pub fn enable_rx_interrupt() {
    if PRESENT.load(Ordering::Relaxed) {
        outb(PORT.load(Ordering::Relaxed) + IER, 0x01);
    }
}

/// Writes bytes, waiting for the transmitter (bounded, so a dead UART cannot
/// hang the hypervisor).
pub fn write(bytes: &[u8]) {
    if !PRESENT.load(Ordering::Relaxed) {
        return;
    }
    let port = PORT.load(Ordering::Relaxed);
    for &b in bytes {
        let mut spins = 0u32;
        while inb(port + LSR) & 0x20 == 0 && spins < 100_000 {
            spins += 1;
            core::hint::spin_loop();
        }
        outb(port + THR, b);
    }
}

/// Moves received bytes from the UART into the ring. Called from the UART
/// interrupt and, as a fallback, from the idle loop.
pub fn poll_rx() {
    if !PRESENT.load(Ordering::Relaxed) {
        return;
    }
    let port = PORT.load(Ordering::Relaxed);
    let mut rx = RX.lock();
    while inb(port + LSR) & 0x01 != 0 {
        if rx.len == RX_CAP {
            // Leave the rest in the FIFO; stop interrupts until drained.
            outb(port + IER, 0);
            RX_PAUSED.store(true, Ordering::Relaxed);
            return;
        }
        let b = inb(port + RBR);
        let tail = (rx.head + rx.len) % RX_CAP;
        rx.buf[tail] = b;
        rx.len += 1;
    }
}

/// Takes up to `out.len()` received bytes; returns how many.
pub fn read(out: &mut [u8]) -> usize {
    let n = {
        let mut rx = RX.lock();
        let n = rx.len.min(out.len());
        for slot in out.iter_mut().take(n) {
            *slot = rx.buf[rx.head];
            rx.head = (rx.head + 1) % RX_CAP;
        }
        rx.len -= n;
        n
    };
    if RX_PAUSED.load(Ordering::Relaxed) && n > 0 {
        RX_PAUSED.store(false, Ordering::Relaxed);
        poll_rx();
        if !RX_PAUSED.load(Ordering::Relaxed) {
            enable_rx_interrupt();
        }
    }
    n
}

/// Are received bytes waiting in the ring?
pub fn rx_pending() -> bool {
    RX.lock().len > 0
}
