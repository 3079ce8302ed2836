//! Intel 8254x gigabit Ethernet (82540EM 8086:100e, QEMU's `-device e1000`;
//! 82545EM 8086:100f) with legacy descriptors, after the PCI/PCI-X Family of
//! Gigabit Ethernet Controllers Software Developer's Manual (8254x SDM).
//!
//! - Registers: memory BAR 0 (128 KiB), uncached.
//! - Receive: 256 legacy descriptors, one 2048-byte buffer each (RCTL.BSIZE
//!   00, BSEX 0), CRC stripped (SECRC), broadcast accepted (BAM), long
//!   packets off, so a frame never spans descriptors.
//! - Transmit: 256 legacy descriptors, each with its own pre-allocated
//!   2048-byte buffer the frame is copied into (no allocation per frame);
//!   short frames padded by the MAC (TCTL.PSP), FCS appended (IFCS).
//! - Interrupts: RXT0, RXO, RXDMT0, LSC; ICR (read-to-clear) in `handle_irq`.
//!   Transmit completions are reclaimed lazily in `transmit` (no TXDW).
//!
//! The device is not trusted: every done receive descriptor goes through
//! `hypervisor::pci::e1000desc::check_rx` (length against the buffer, EOP,
//! error bits; unit-tested with hostile values), the transmit head the
//! device reports is checked against the ring before it is believed, and
//! every wait is bounded.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use hypervisor::pci::e1000desc::{self, check_rx, Rx, RX_STATUS_DD};
use hypervisor::pci::ring_next;

use super::nic::{Nic, NicStats};
use super::pci::{delay_us, wait_until, Dma, Mmio, PciDevice};

// Registers (8254x SDM §13).
const CTRL: u64 = 0x0000;
const STATUS: u64 = 0x0008;
const EERD: u64 = 0x0014;
const FCAL: u64 = 0x0028;
const FCAH: u64 = 0x002C;
const FCT: u64 = 0x0030;
const ICR: u64 = 0x00C0;
const ITR: u64 = 0x00C4;
const IMS: u64 = 0x00D0;
const IMC: u64 = 0x00D8;
const RCTL: u64 = 0x0100;
const FCTTV: u64 = 0x0170;
const TCTL: u64 = 0x0400;
const TIPG: u64 = 0x0410;
const RDBAL: u64 = 0x2800;
const RDBAH: u64 = 0x2804;
const RDLEN: u64 = 0x2808;
const RDH: u64 = 0x2810;
const RDT: u64 = 0x2818;
const RDTR: u64 = 0x2820;
const TDBAL: u64 = 0x3800;
const TDBAH: u64 = 0x3804;
const TDLEN: u64 = 0x3808;
const TDH: u64 = 0x3810;
const TDT: u64 = 0x3818;
const TIDV: u64 = 0x3820;
const MTA: u64 = 0x5200;
const RAL0: u64 = 0x5400;
const RAH0: u64 = 0x5404;
/// The register window the driver touches (through RA[15]).
const REGS_LEN: u64 = 0x5480;

// CTRL bits.
const CTRL_LRST: u32 = 1 << 3;
const CTRL_ASDE: u32 = 1 << 5;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_ILOS: u32 = 1 << 7;
const CTRL_RST: u32 = 1 << 26;
const CTRL_VME: u32 = 1 << 30;
const CTRL_PHY_RST: u32 = 1 << 31;

// STATUS bits.
const STATUS_LU: u32 = 1 << 1;

// EERD (82540/82545 layout: START bit 0, DONE bit 4, address 15:8, data 31:16).
const EERD_START: u32 = 1 << 0;
const EERD_DONE: u32 = 1 << 4;

// Interrupt cause / mask bits.
const INT_LSC: u32 = 1 << 2;
const INT_RXDMT0: u32 = 1 << 4;
const INT_RXO: u32 = 1 << 6;
const INT_RXT0: u32 = 1 << 7;

// RCTL bits.
const RCTL_EN: u32 = 1 << 1;
const RCTL_UPE: u32 = 1 << 3;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_BAM: u32 = 1 << 15;
/// BSIZE (bits 17:16) = 00 with BSEX = 0: 2048-byte buffers.
const RCTL_BSIZE_2048: u32 = 0;
const RCTL_SECRC: u32 = 1 << 26;

// TCTL bits.
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
/// Collision threshold 0x0F (bits 11:4), the recommended value.
const TCTL_CT: u32 = 0x0F << 4;
/// Collision distance 0x40 (bits 21:12): full duplex.
const TCTL_COLD: u32 = 0x40 << 12;

/// TIPG for copper (IPGT 10, IPGR1 8, IPGR2 6; SDM §13.4.34).
const TIPG_COPPER: u32 = 10 | (8 << 10) | (6 << 20);
/// Interrupt throttling: at least 100 × 256 ns (25.6 µs) between interrupts.
const ITR_INTERVAL: u32 = 100;

// RAH.
const RAH_AV: u32 = 1 << 31;

// Descriptor fields (legacy layout, 16 bytes).
const DESC_SIZE: usize = 16;
const TX_CMD_EOP: u8 = 1 << 0;
const TX_CMD_IFCS: u8 = 1 << 1;
const TX_CMD_RS: u8 = 1 << 3;
const TX_STATUS_DD: u8 = 1 << 0;

const RX_COUNT: usize = 256;
const TX_COUNT: usize = 256;
const BUF_SIZE: usize = 2048;
const MIN_FRAME: usize = e1000desc::MIN_FRAME;
const MAX_FRAME: usize = 1514;

/// An 8254x NIC.
pub struct E1000 {
    pci: PciDevice,
    location: String,
    model: &'static str,
    regs: Mmio,
    mac: [u8; 6],
    irq: Option<u32>,
    rx_ring: Dma,
    rx_bufs: Dma,
    tx_ring: Dma,
    tx_bufs: Dma,
    /// Next receive descriptor to look at.
    rx_next: usize,
    /// Dropping the rest of a frame that spans descriptors (should not
    /// happen with LPE off; a device that does it anyway is survived).
    rx_skip_to_eop: bool,
    /// Next transmit descriptor to fill.
    tx_tail: usize,
    /// Oldest transmit descriptor not yet seen done.
    tx_clean: usize,
    promiscuous: bool,
    stats: NicStats,
    scratch: Vec<u8>,
    /// The device reads as all-ones (gone); stop touching it.
    dead: bool,
}

/// Probes an 82540EM / 82545EM; None (with a log line) on anything odd.
pub fn probe(dev: &PciDevice) -> Option<Box<dyn Nic>> {
    let model = match (dev.vendor, dev.device) {
        (0x8086, 0x100E) => "82540EM",
        (0x8086, 0x100F) => "82545EM",
        _ => return None,
    };
    let loc = dev.location();
    let bar = dev.bars[0];
    if bar.mem_addr().is_none() {
        log::warn!("e1000 {loc}: BAR0 is not an assigned memory BAR ({bar:?}); skipped");
        return None;
    }
    if bar.size() < REGS_LEN {
        log::warn!("e1000 {loc}: BAR0 is only {:#x} bytes; skipped", bar.size());
        return None;
    }
    let Some(regs) = dev.map_bar_range(0, 0, bar.size().min(0x20000)) else {
        log::warn!("e1000 {loc}: cannot map BAR0; skipped");
        return None;
    };
    dev.enable(true, false, true);
    let irq = dev.legacy_irq().map(u32::from);
    match E1000::init(dev.clone(), loc.clone(), model, regs, irq) {
        Ok(nic) => {
            let m = nic.mac;
            log::info!(
                "e1000 {loc}: {model} rev {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, link {}, irq {}",
                dev.revision,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                if nic.link_up() { "up" } else { "down" },
                irq.map_or(String::from("none"), |i| alloc::format!("{i}"))
            );
            Some(Box::new(nic))
        }
        Err(e) => {
            log::warn!("e1000 {loc}: {e}; skipped");
            dev.disable_bus_master();
            None
        }
    }
}

impl E1000 {
    fn init(
        pci: PciDevice,
        location: String,
        model: &'static str,
        regs: Mmio,
        irq: Option<u32>,
    ) -> Result<E1000, &'static str> {
        if regs.read32(STATUS) == 0xFFFF_FFFF {
            return Err("device does not respond (STATUS reads all-ones)");
        }
        // Quiesce and reset (SDM §14.5: global reset, then wait for RST to
        // self-clear; at least 1 µs before touching other registers).
        regs.write32(IMC, 0xFFFF_FFFF);
        regs.write32(RCTL, 0);
        regs.write32(TCTL, TCTL_PSP);
        delay_us(10);
        regs.write32(CTRL, regs.read32(CTRL) | CTRL_RST);
        delay_us(10);
        if !wait_until(20_000, || regs.read32(CTRL) & CTRL_RST == 0) {
            return Err("reset did not complete in 20 ms");
        }
        delay_us(1000); // the EEPROM auto-read after reset
        regs.write32(IMC, 0xFFFF_FFFF);
        let _ = regs.read32(ICR);

        // Link: set link up, auto speed detection; no forced PHY reset,
        // loss-of-signal inversion or VLAN mode.
        let ctrl = regs.read32(CTRL);
        regs.write32(CTRL, (ctrl | CTRL_SLU | CTRL_ASDE) & !(CTRL_LRST | CTRL_ILOS | CTRL_VME | CTRL_PHY_RST));

        let mac = read_mac(&regs)?;
        regs.write32(RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        regs.write32(RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV);
        for i in 1..16u64 {
            regs.write32(RAL0 + 8 * i, 0);
            regs.write32(RAH0 + 8 * i, 0);
        }
        for i in 0..128u64 {
            regs.write32(MTA + 4 * i, 0);
        }
        // No flow control.
        for r in [FCAL, FCAH, FCT, FCTTV] {
            regs.write32(r, 0);
        }

        let rx_ring = Dma::new(RX_COUNT * DESC_SIZE).ok_or("out of DMA memory")?;
        let rx_bufs = Dma::new(RX_COUNT * BUF_SIZE).ok_or("out of DMA memory")?;
        let tx_ring = Dma::new(TX_COUNT * DESC_SIZE).ok_or("out of DMA memory")?;
        let tx_bufs = Dma::new(TX_COUNT * BUF_SIZE).ok_or("out of DMA memory")?;
        let mut nic = E1000 {
            pci,
            location,
            model,
            regs,
            mac,
            irq,
            rx_ring,
            rx_bufs,
            tx_ring,
            tx_bufs,
            rx_next: 0,
            rx_skip_to_eop: false,
            tx_tail: 0,
            tx_clean: 0,
            promiscuous: false,
            stats: NicStats::default(),
            scratch: vec![0; BUF_SIZE],
            dead: false,
        };
        // From here on, dropping `nic` resets the device before the DMA
        // memory is freed.
        nic.setup_rings();
        Ok(nic)
    }

    fn setup_rings(&mut self) {
        let r = &self.regs;
        for i in 0..RX_COUNT {
            self.give_rx(i);
        }
        for i in 0..TX_COUNT {
            let d = i * DESC_SIZE;
            self.tx_ring.write64(d, self.tx_bufs.pa(i * BUF_SIZE));
            self.tx_ring.write64(d + 8, u64::from(TX_STATUS_DD) << 32); // "done": free
        }
        fence(Ordering::Release);

        r.write32(RDBAL, self.rx_ring.pa(0) as u32);
        r.write32(RDBAH, (self.rx_ring.pa(0) >> 32) as u32);
        r.write32(RDLEN, (RX_COUNT * DESC_SIZE) as u32);
        r.write32(RDH, 0);
        // All descriptors but one belong to the device (RDT == RDH: empty).
        r.write32(RDT, (RX_COUNT - 1) as u32);
        r.write32(RDTR, 0);
        self.write_rctl();

        r.write32(TDBAL, self.tx_ring.pa(0) as u32);
        r.write32(TDBAH, (self.tx_ring.pa(0) >> 32) as u32);
        r.write32(TDLEN, (TX_COUNT * DESC_SIZE) as u32);
        r.write32(TDH, 0);
        r.write32(TDT, 0);
        r.write32(TIDV, 0);
        r.write32(TIPG, TIPG_COPPER);
        r.write32(TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);

        r.write32(ITR, ITR_INTERVAL);
        let _ = r.read32(ICR);
        r.write32(IMS, INT_RXT0 | INT_RXO | INT_RXDMT0 | INT_LSC);
    }

    fn write_rctl(&self) {
        let mut v = RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_BSIZE_2048;
        if self.promiscuous {
            v |= RCTL_UPE | RCTL_MPE;
        }
        self.regs.write32(RCTL, v);
    }

    /// (Re)arms receive descriptor `i` with its buffer.
    fn give_rx(&self, i: usize) {
        let d = i * DESC_SIZE;
        self.rx_ring.write64(d, self.rx_bufs.pa(i * BUF_SIZE));
        self.rx_ring.write64(d + 8, 0); // length, checksum, status, errors, special
    }

    /// Reclaims transmit descriptors the device has finished.
    fn reclaim_tx(&mut self) {
        while self.tx_clean != self.tx_tail {
            if self.tx_ring.read8(self.tx_clean * DESC_SIZE + 12) & TX_STATUS_DD == 0 {
                break;
            }
            self.tx_clean = ring_next(self.tx_clean, TX_COUNT);
        }
    }

    fn check_alive(&mut self) -> bool {
        if !self.dead && self.regs.read32(STATUS) == 0xFFFF_FFFF {
            log::warn!("e1000 {}: device stopped responding (registers read all-ones)", self.location);
            self.dead = true;
        }
        !self.dead
    }
}

/// The MAC address: RAL0/RAH0 as loaded from the EEPROM at reset, or the
/// EEPROM words 0..=2 through EERD when RAL0/RAH0 are empty.
fn read_mac(regs: &Mmio) -> Result<[u8; 6], &'static str> {
    let (ral, rah) = (regs.read32(RAL0), regs.read32(RAH0));
    let mut mac = [0u8; 6];
    if rah & RAH_AV != 0 && (ral != 0 || rah & 0xFFFF != 0) {
        mac[..4].copy_from_slice(&ral.to_le_bytes());
        mac[4..].copy_from_slice(&(rah as u16).to_le_bytes());
    } else {
        for word in 0..3u32 {
            regs.write32(EERD, EERD_START | (word << 8));
            let mut v = 0;
            if !wait_until(10_000, || {
                v = regs.read32(EERD);
                v & EERD_DONE != 0
            }) {
                return Err("EEPROM read timed out");
            }
            let w = ((v >> 16) as u16).to_le_bytes();
            mac[2 * word as usize] = w[0];
            mac[2 * word as usize + 1] = w[1];
        }
    }
    if mac == [0; 6] || mac == [0xFF; 6] || mac[0] & 1 != 0 {
        return Err("no valid MAC address in RAL0/RAH0 or the EEPROM");
    }
    Ok(mac)
}

impl Nic for E1000 {
    fn name(&self) -> &'static str {
        "e1000"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&self) -> bool {
        let status = self.regs.read32(STATUS);
        !self.dead && status != 0xFFFF_FFFF && status & STATUS_LU != 0
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        if self.dead || !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            self.stats.tx_dropped += 1;
            return false;
        }
        if self.tx_ring_full() {
            self.stats.tx_full += 1;
            return false;
        }
        let next = ring_next(self.tx_tail, TX_COUNT);
        if self.dead || next == self.tx_clean {
            // Found gone while checking for room (a full ring on a dead
            // device is not "full": the frame is dropped).
            self.stats.tx_dropped += 1;
            return false;
        }
        let i = self.tx_tail;
        if !self.tx_bufs.copy_in(i * BUF_SIZE, frame) {
            self.stats.tx_dropped += 1;
            return false;
        }
        let d = i * DESC_SIZE;
        let cmd = TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS;
        self.tx_ring.write64(d, self.tx_bufs.pa(i * BUF_SIZE));
        // length (15:0), CSO 0, CMD (31:24); status/CSS/special 0.
        self.tx_ring.write64(d + 8, frame.len() as u64 | (u64::from(cmd) << 24));
        // Descriptor and buffer writes before the tail bump (x86 keeps
        // stores in order; this stops the compiler reordering them).
        fence(Ordering::Release);
        self.tx_tail = next;
        self.regs.write32(TDT, next as u32);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += frame.len() as u64;
        true
    }

    fn tx_ring_full(&mut self) -> bool {
        if self.dead {
            return false;
        }
        self.reclaim_tx();
        if e1000desc::tx_free(self.tx_clean, self.tx_tail, TX_COUNT) != Some(0) {
            return false;
        }
        // Full (one slot stays empty so TDT never catches TDH). Before
        // blaming congestion: is the device there, and is the head it
        // reports inside the ring?
        if !self.check_alive() {
            return false;
        }
        if e1000desc::ring_index(self.regs.read32(TDH), TX_COUNT).is_none() {
            log::warn!(
                "e1000 {}: transmit head {:#x} outside the ring; device disabled",
                self.location,
                self.regs.read32(TDH)
            );
            self.dead = true;
            return false;
        }
        true
    }

    fn receive(&mut self, budget: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        if self.dead {
            return 0;
        }
        let mut delivered = 0;
        let mut returned = None;
        let mut seen = 0;
        while delivered < budget && seen < RX_COUNT {
            let i = self.rx_next;
            let d = i * DESC_SIZE;
            let status = self.rx_ring.read8(d + 12);
            if status & RX_STATUS_DD == 0 {
                break;
            }
            // Read the rest of the descriptor and the buffer only after DD.
            fence(Ordering::Acquire);
            seen += 1;
            let len = self.rx_ring.read16(d + 8);
            let errors = self.rx_ring.read8(d + 13);
            let (verdict, skip) = check_rx(status, errors, len, BUF_SIZE, self.rx_skip_to_eop);
            self.rx_skip_to_eop = skip;
            match verdict {
                Rx::Frame(len) if self.rx_bufs.copy_out(i * BUF_SIZE, &mut self.scratch[..len]) => {
                    f(&self.scratch[..len]);
                    delivered += 1;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                }
                Rx::Frame(_) | Rx::Drop(_) => self.stats.rx_dropped += 1,
                Rx::Skip => {}
            }
            self.give_rx(i);
            returned = Some(i);
            self.rx_next = ring_next(i, RX_COUNT);
        }
        if let Some(i) = returned {
            // Descriptor rewrites before the tail moves past them.
            fence(Ordering::Release);
            self.regs.write32(RDT, i as u32);
        }
        delivered
    }

    fn handle_irq(&mut self) -> bool {
        if self.dead {
            return false;
        }
        let icr = self.regs.read32(ICR); // read-to-clear
        if icr == 0xFFFF_FFFF {
            self.check_alive();
            return false;
        }
        if icr == 0 {
            return false;
        }
        self.stats.interrupts += 1;
        if icr & INT_RXO != 0 {
            // The device dropped frames for want of descriptors; they are not
            // ours to count per frame, but one overrun is one event.
            self.stats.rx_dropped += 1;
        }
        true
    }

    fn set_promiscuous(&mut self, on: bool) {
        // Only on a change: QEMU's e1000 stops receiving for 1 s after every
        // RCTL write.
        if on != self.promiscuous && !self.dead {
            self.promiscuous = on;
            self.write_rctl();
        }
    }

    fn stats(&self) -> NicStats {
        self.stats
    }

    fn irq_gsi(&self) -> Option<u32> {
        self.irq
    }
}

impl Drop for E1000 {
    fn drop(&mut self) {
        // Stop all DMA before the rings and buffers are freed (the fields
        // drop after this body).
        if !self.dead {
            self.regs.write32(IMC, 0xFFFF_FFFF);
            self.regs.write32(RCTL, 0);
            self.regs.write32(TCTL, 0);
            self.regs.write32(CTRL, self.regs.read32(CTRL) | CTRL_RST);
            delay_us(10);
            let _ = wait_until(20_000, || self.regs.read32(CTRL) & CTRL_RST == 0);
        }
        self.pci.disable_bus_master();
        log::info!("e1000 {}: {} stopped", self.location, self.model);
    }
}
