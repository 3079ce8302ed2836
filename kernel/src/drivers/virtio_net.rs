//! virtio-net over the virtio 1.x PCI transport ("modern": virtio spec §4.1,
//! network device §5.1), for the modern ID 1af4:1041 and for the
//! transitional 1af4:1000 (QEMU's default `virtio-net-pci`) driven through
//! its modern capabilities. A legacy-only device (no virtio capabilities) is
//! refused.
//!
//! - Features: VIRTIO_F_VERSION_1 (required), VIRTIO_NET_F_MAC and
//!   VIRTIO_NET_F_STATUS when offered; nothing else (no offloads, no
//!   mergeable buffers, no control queue, no event index), so every buffer
//!   starts with the 12-byte `virtio_net_hdr` and RX buffers hold 1526+ bytes.
//! - Queues: split virtqueues 0 (receive) and 1 (transmit), min(device
//!   maximum, 256) entries, each in one `alloc_dma` block; descriptor `i` of
//!   a queue always points at buffer `i` (2048 bytes) of that queue.
//! - Receive buffers are all posted at start and re-posted as they are
//!   consumed; transmit copies header + frame into a free slot's buffer.
//! - Interrupts: legacy INTx; `handle_irq` reads (and so clears) the ISR
//!   status. MSI-X stays off. Transmit interrupts are suppressed
//!   (VIRTQ_AVAIL_F_NO_INTERRUPT); completions are reclaimed in `transmit`.
//! - Receive mode: the virtio spec (1.x, §5.1.6.5.1 "Packet Receive
//!   Filtering") gives a driver control over promiscuous mode only through
//!   the control queue with VIRTIO_NET_F_CTRL_RX (command class
//!   VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC). Neither CTRL_VQ nor
//!   CTRL_RX is negotiated here (`wanted` below never includes them), so the
//!   device keeps its reset receive mode; QEMU's resets to promiscuous
//!   (`virtio_net_reset`: `promisc = 1`, and `receive_filter` passes every
//!   frame while it is set). The bridge depends on that: guests' unicast
//!   frames arrive for MACs that are not the NIC's. A device that filtered
//!   without CTRL_RX would break guest receive; `set_promiscuous` logs that
//!   it cannot ask, and tests/tests/network.rs shows a guest behind a
//!   virtio uplink receiving frames addressed to its own MAC.
//!
//! The device is not trusted: used-ring indices are checked against the
//! queue size, used IDs against the queue size and against which buffers the
//! device actually holds, lengths against the buffer size; a device that runs
//! its used index ahead of the ring is declared broken and left alone. Every
//! wait is bounded.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

use hypervisor::pci::{
    check_used_elem, pick_queue_size, used_pending, virtio_caps, UsedElem, VirtioRegion, VirtqLayout,
};

use super::nic::{Nic, NicStats};
use super::pci::{wait_until, Dma, Mmio, PciDevice};

// Common configuration structure (§4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0C;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1A;
const QUEUE_ENABLE: u64 = 0x1C;
const QUEUE_NOTIFY_OFF: u64 = 0x1E;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// Length of the common configuration structure as of virtio 1.0.
const COMMON_LEN: u64 = 0x38;
const NO_VECTOR: u16 = 0xFFFF;

// Device status bits (§2.1).
const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_NEEDS_RESET: u8 = 64;
const STATUS_FAILED: u8 = 128;

// Feature bits.
const F_NET_MAC: u64 = 1 << 5;
const F_NET_STATUS: u64 = 1 << 16;
/// Control queue and receive-mode commands: never negotiated (see above).
const F_NET_CTRL_VQ: u64 = 1 << 17;
const F_NET_CTRL_RX: u64 = 1 << 18;
const F_VERSION_1: u64 = 1 << 32;

// Network device configuration (§5.1.4).
const NET_CFG_MAC: u64 = 0;
const NET_CFG_STATUS: u64 = 6;
const NET_S_LINK_UP: u16 = 1;

// ISR status bits (§4.1.4.5).
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

// Split virtqueue flags (§2.7).
const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// `struct virtio_net_hdr` with VERSION_1 and without MRG_RXBUF (§5.1.6).
const NET_HDR_LEN: usize = 12;
const BUF_SIZE: usize = 2048;
const QUEUE_WANT: u16 = 256;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const MIN_FRAME: usize = 14;
const MAX_FRAME: usize = 1514;
/// Largest capability window mapped.
const MAX_REGION: u32 = 1 << 20;

/// A used-ring element as the driver judged it.
enum Used {
    /// A buffer the device held, given back: (descriptor ID, bytes written,
    /// within the buffer).
    Buffer(u16, u32),
    /// A buffer the device held, given back with a length past the buffer:
    /// its contents are not used, the buffer is.
    Overlong(u16, u32),
    /// An ID outside the queue or one the device did not hold: ignored.
    Bogus(u32, u32),
}

/// A split virtqueue whose descriptor `i` always describes buffer `i`.
struct Queue {
    index: u16,
    layout: VirtqLayout,
    mem: Dma,
    /// Byte offset of this queue's doorbell in the notify window.
    notify_at: u64,
    /// The driver's running available index (published by `flush`).
    avail_idx: u16,
    /// The next used-ring index to consume.
    last_used: u16,
    /// Descriptors currently handed to the device.
    device_owns: Vec<bool>,
}

impl Queue {
    /// Sets up queue `index` (selected in the common configuration) but does
    /// not enable it.
    fn new(common: &Mmio, notify: &Mmio, multiplier: u32, index: u16) -> Result<Queue, &'static str> {
        common.write16(QUEUE_SELECT, index);
        let size = pick_queue_size(common.read16(QUEUE_SIZE), QUEUE_WANT).ok_or("a required queue is missing")?;
        let layout = VirtqLayout::new(size).ok_or("bad queue size")?;
        let notify_at = u64::from(common.read16(QUEUE_NOTIFY_OFF)) * u64::from(multiplier);
        if notify_at + 2 > notify.len() {
            return Err("queue doorbell lies outside the notify region");
        }
        let mem = Dma::new(layout.total).ok_or("out of DMA memory")?;
        common.write16(QUEUE_SIZE, size);
        common.write16(QUEUE_MSIX_VECTOR, NO_VECTOR);
        write64(common, QUEUE_DESC, mem.pa(layout.desc));
        write64(common, QUEUE_DRIVER, mem.pa(layout.avail));
        write64(common, QUEUE_DEVICE, mem.pa(layout.used));
        Ok(Queue {
            index,
            layout,
            mem,
            notify_at,
            avail_idx: 0,
            last_used: 0,
            device_owns: vec![false; usize::from(size)],
        })
    }

    fn size(&self) -> u16 {
        self.layout.size
    }

    fn enable(&self, common: &Mmio) {
        common.write16(QUEUE_SELECT, self.index);
        common.write16(QUEUE_ENABLE, 1);
    }

    /// Writes descriptor `id` (a single buffer, no chaining).
    fn set_desc(&self, id: u16, addr: u64, len: u32, flags: u16) {
        let d = self.layout.desc_at(id);
        self.mem.write64(d, addr);
        self.mem.write32(d + 8, len);
        self.mem.write16(d + 12, flags);
        self.mem.write16(d + 14, 0);
    }

    /// Puts descriptor `id` in the next available slot (published by `flush`).
    fn push(&mut self, id: u16) {
        self.mem.write16(self.layout.avail_slot(self.avail_idx), id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.device_owns[usize::from(id)] = true;
    }

    /// Publishes the available index (after the ring entries and buffers).
    fn flush(&self) {
        fence(Ordering::Release);
        self.mem.write16(self.layout.avail_idx(), self.avail_idx);
    }

    /// Rings the doorbell unless the device asked not to be notified.
    fn kick(&self, notify: &Mmio) {
        // The avail index store must be visible before the flags load.
        fence(Ordering::SeqCst);
        if self.mem.read16(self.layout.used_flags()) & USED_F_NO_NOTIFY == 0 {
            notify.write16(self.notify_at, self.index);
        }
    }

    /// Takes the next used element, if any; Err if the device's used index
    /// is impossible.
    fn pop_used(&mut self, buf_len: u32) -> Result<Option<Used>, &'static str> {
        let used_idx = self.mem.read16(self.layout.used_idx());
        let pending = used_pending(used_idx, self.last_used, self.size()).ok_or("used index ran past the ring")?;
        if pending == 0 {
            return Ok(None);
        }
        // The element is read only after the index that covers it.
        fence(Ordering::Acquire);
        let at = self.layout.used_slot(self.last_used);
        let (id, len) = (self.mem.read32(at), self.mem.read32(at + 4));
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some(match check_used_elem(id, len, self.size(), buf_len) {
            UsedElem::Ok(i, l) if self.device_owns[usize::from(i)] => {
                self.device_owns[usize::from(i)] = false;
                Used::Buffer(i, l)
            }
            UsedElem::Overlong(i, l) if self.device_owns[usize::from(i)] => {
                self.device_owns[usize::from(i)] = false;
                Used::Overlong(i, l)
            }
            _ => Used::Bogus(id, len),
        }))
    }
}

/// A 64-bit common-configuration field as two 32-bit accesses, low first.
fn write64(common: &Mmio, off: u64, v: u64) {
    common.write32(off, v as u32);
    common.write32(off + 4, (v >> 32) as u32);
}

/// A virtio network device.
pub struct VirtioNet {
    pci: PciDevice,
    location: String,
    common: Mmio,
    notify: Mmio,
    isr: Mmio,
    device_cfg: Option<Mmio>,
    features: u64,
    mac: [u8; 6],
    irq: Option<u32>,
    rx: Queue,
    tx: Queue,
    rx_bufs: Dma,
    tx_bufs: Dma,
    tx_free: Vec<u16>,
    stats: NicStats,
    scratch: Vec<u8>,
    /// Bogus used elements seen (logged once).
    bogus: u64,
    /// The device broke the ring protocol or needs a reset; leave it alone.
    broken: bool,
}

/// Probes a virtio-net function (1af4:1041, or 1af4:1000 in modern mode);
/// None (with a log line) on anything unexpected.
pub fn probe(dev: &PciDevice) -> Option<Box<dyn Nic>> {
    if dev.vendor != 0x1AF4 || !matches!(dev.device, 0x1000 | 0x1041) {
        return None;
    }
    let loc = dev.location();
    match VirtioNet::init(dev) {
        Ok(nic) => {
            let m = nic.mac;
            log::info!(
                "virtio-net {loc}: {} rev {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, queues {}/{}, link {}, irq {}",
                if dev.device == 0x1041 { "modern" } else { "transitional, modern mode" },
                dev.revision,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                nic.rx.size(),
                nic.tx.size(),
                if nic.link_up() { "up" } else { "down" },
                nic.irq.map_or(String::from("none"), |i| alloc::format!("{i}"))
            );
            Some(Box::new(nic))
        }
        Err(e) => {
            log::warn!("virtio-net {loc}: {e}; skipped");
            None
        }
    }
}

/// Maps one capability window after checking it lies inside its BAR and is
/// at least `min` bytes long.
fn map_region(dev: &PciDevice, r: VirtioRegion, min: u32) -> Option<Mmio> {
    if r.length < min || r.length > MAX_REGION {
        return None;
    }
    dev.map_bar_range(usize::from(r.bar), u64::from(r.offset), u64::from(r.length))
}

impl VirtioNet {
    fn init(dev: &PciDevice) -> Result<VirtioNet, &'static str> {
        let caps = virtio_caps(&dev.config_space());
        let (Some(common), Some((notify, multiplier)), Some(isr)) = (caps.common, caps.notify, caps.isr) else {
            return Err("no virtio 1.x capabilities (legacy-only device, not supported)");
        };
        let common = map_region(dev, common, COMMON_LEN as u32).ok_or("common configuration window is unusable")?;
        let notify = map_region(dev, notify, 2).ok_or("notify window is unusable")?;
        let isr = map_region(dev, isr, 1).ok_or("ISR window is unusable")?;
        let device_cfg = caps.device.and_then(|r| map_region(dev, r, 6));
        dev.enable(true, false, true);

        // §3.1.1: reset, ACKNOWLEDGE, DRIVER.
        common.write8(DEVICE_STATUS, 0);
        if !wait_until(100_000, || common.read8(DEVICE_STATUS) == 0) {
            dev.disable_bus_master();
            return Err("device did not reset in 100 ms");
        }
        common.write8(DEVICE_STATUS, STATUS_ACKNOWLEDGE);
        common.write8(DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let fail = |why: &'static str| {
            common.write8(DEVICE_STATUS, common.read8(DEVICE_STATUS) | STATUS_FAILED);
            dev.disable_bus_master();
            why
        };

        // Features.
        common.write32(DEVICE_FEATURE_SELECT, 0);
        let lo = common.read32(DEVICE_FEATURE);
        common.write32(DEVICE_FEATURE_SELECT, 1);
        let hi = common.read32(DEVICE_FEATURE);
        let offered = u64::from(lo) | (u64::from(hi) << 32);
        if offered & F_VERSION_1 == 0 {
            return Err(fail("device does not offer VIRTIO_F_VERSION_1"));
        }
        let cfg_len = device_cfg.as_ref().map_or(0, |c| c.len());
        let mut wanted = F_VERSION_1;
        if cfg_len >= NET_CFG_MAC + 6 {
            wanted |= F_NET_MAC;
        }
        if cfg_len >= NET_CFG_STATUS + 2 {
            wanted |= F_NET_STATUS;
        }
        let features = offered & wanted;
        common.write32(DRIVER_FEATURE_SELECT, 0);
        common.write32(DRIVER_FEATURE, features as u32);
        common.write32(DRIVER_FEATURE_SELECT, 1);
        common.write32(DRIVER_FEATURE, (features >> 32) as u32);
        common.write8(DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        if common.read8(DEVICE_STATUS) & STATUS_FEATURES_OK == 0 {
            return Err(fail("device refused the features (FEATURES_OK not kept)"));
        }

        // Queues.
        if common.read16(NUM_QUEUES) < 2 {
            return Err(fail("device has fewer than two queues"));
        }
        common.write16(MSIX_CONFIG, NO_VECTOR);
        let rx = Queue::new(&common, &notify, multiplier, RX_QUEUE).map_err(fail)?;
        let tx = Queue::new(&common, &notify, multiplier, TX_QUEUE).map_err(fail)?;
        let rx_bufs = Dma::new(usize::from(rx.size()) * BUF_SIZE).ok_or_else(|| fail("out of DMA memory"))?;
        let tx_bufs = Dma::new(usize::from(tx.size()) * BUF_SIZE).ok_or_else(|| fail("out of DMA memory"))?;

        let mut nic = VirtioNet {
            pci: dev.clone(),
            location: dev.location(),
            tx_free: (0..tx.size()).rev().collect(),
            common,
            notify,
            isr,
            device_cfg,
            features,
            mac: [0; 6],
            irq: dev.legacy_irq().map(u32::from),
            rx,
            tx,
            rx_bufs,
            tx_bufs,
            stats: NicStats::default(),
            scratch: vec![0; BUF_SIZE],
            bogus: 0,
            broken: false,
        };
        // From here on, dropping `nic` resets the device before the DMA
        // memory is freed.
        nic.mac = nic.read_mac();
        for id in 0..nic.rx.size() {
            nic.post_rx(id);
        }
        nic.rx.flush();
        nic.tx.mem.write16(nic.tx.layout.avail, AVAIL_F_NO_INTERRUPT);
        nic.rx.enable(&nic.common);
        nic.tx.enable(&nic.common);
        nic.common.write8(DEVICE_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        let status = nic.common.read8(DEVICE_STATUS);
        if status & (STATUS_NEEDS_RESET | STATUS_FAILED) != 0 || status & STATUS_DRIVER_OK == 0 {
            return Err("device did not accept DRIVER_OK");
        }
        nic.rx.kick(&nic.notify);
        Ok(nic)
    }

    /// The MAC from the device configuration (read consistently across the
    /// configuration generation), or a locally administered one made from
    /// the PCI location when the device has none.
    fn read_mac(&self) -> [u8; 6] {
        if self.features & F_NET_MAC != 0 {
            if let Some(cfg) = &self.device_cfg {
                let mac = self.read_config(|| core::array::from_fn(|i| cfg.read8(NET_CFG_MAC + i as u64)));
                if mac != [0; 6] && mac[0] & 1 == 0 {
                    return mac;
                }
            }
        }
        let mac = [0x02, 0x00, 0x00, self.pci.bus, self.pci.dev, self.pci.func];
        log::warn!("virtio-net {}: device gives no usable MAC; using a local one", self.location);
        mac
    }

    /// Reads device configuration until the generation is stable (bounded).
    fn read_config<T>(&self, f: impl Fn() -> T) -> T {
        for _ in 0..16 {
            let before = self.common.read8(CONFIG_GENERATION);
            let v = f();
            if self.common.read8(CONFIG_GENERATION) == before {
                return v;
            }
        }
        f()
    }

    /// Hands receive buffer `id` to the device (not yet published).
    fn post_rx(&mut self, id: u16) {
        let addr = self.rx_bufs.pa(usize::from(id) * BUF_SIZE);
        self.rx.set_desc(id, addr, BUF_SIZE as u32, DESC_F_WRITE);
        self.rx.push(id);
    }

    fn set_broken(&mut self, why: &str) {
        if !self.broken {
            log::warn!("virtio-net {}: {why}; device disabled", self.location);
            self.broken = true;
        }
    }

    fn note_bogus(&mut self, queue: &str, id: u32, len: u32) {
        if self.bogus == 0 {
            log::warn!("virtio-net {}: bogus {queue} used element (id {id}, len {len}) ignored", self.location);
        }
        self.bogus += 1;
    }

    /// Returns finished transmit buffers to the free list.
    fn reclaim_tx(&mut self) {
        for _ in 0..self.tx.size() {
            match self.tx.pop_used(BUF_SIZE as u32) {
                Ok(Some(Used::Buffer(id, _))) => self.tx_free.push(id),
                Ok(Some(Used::Overlong(id, len))) => {
                    self.note_bogus("transmit", u32::from(id), len);
                    self.tx_free.push(id);
                }
                Ok(Some(Used::Bogus(id, len))) => self.note_bogus("transmit", id, len),
                Ok(None) => break,
                Err(e) => {
                    self.set_broken(e);
                    break;
                }
            }
        }
    }
}

impl Nic for VirtioNet {
    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&self) -> bool {
        if self.broken {
            return false;
        }
        match (&self.device_cfg, self.features & F_NET_STATUS != 0) {
            (Some(cfg), true) => self.read_config(|| cfg.read16(NET_CFG_STATUS)) & NET_S_LINK_UP != 0,
            _ => true,
        }
    }

    fn transmit(&mut self, frame: &[u8]) -> bool {
        if self.broken || !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            self.stats.tx_dropped += 1;
            return false;
        }
        if self.tx_ring_full() {
            self.stats.tx_full += 1;
            return false;
        }
        if self.broken {
            // Found broken while reclaiming: dropped, not "full".
            self.stats.tx_dropped += 1;
            return false;
        }
        let Some(id) = self.tx_free.pop() else {
            self.stats.tx_dropped += 1;
            return false;
        };
        let off = usize::from(id) * BUF_SIZE;
        if !(self.tx_bufs.copy_in(off, &[0; NET_HDR_LEN]) && self.tx_bufs.copy_in(off + NET_HDR_LEN, frame)) {
            self.tx_free.push(id);
            self.stats.tx_dropped += 1;
            return false;
        }
        self.tx.set_desc(id, self.tx_bufs.pa(off), (NET_HDR_LEN + frame.len()) as u32, 0);
        self.tx.push(id);
        self.tx.flush();
        self.tx.kick(&self.notify);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += frame.len() as u64;
        true
    }

    fn tx_ring_full(&mut self) -> bool {
        if self.broken {
            return false;
        }
        self.reclaim_tx();
        !self.broken && self.tx_free.is_empty()
    }

    fn receive(&mut self, budget: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut delivered = 0;
        let mut reposted = false;
        let mut seen = 0;
        while !self.broken && delivered < budget && seen < self.rx.size() {
            let (id, len) = match self.rx.pop_used(BUF_SIZE as u32) {
                Ok(Some(Used::Buffer(id, len))) => (id, len as usize),
                // Dropped below (too long), and the buffer re-posted.
                Ok(Some(Used::Overlong(id, len))) => {
                    self.note_bogus("receive", u32::from(id), len);
                    (id, 0)
                }
                Ok(Some(Used::Bogus(id, len))) => {
                    self.note_bogus("receive", id, len);
                    self.stats.rx_dropped += 1;
                    seen += 1;
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    self.set_broken(e);
                    break;
                }
            };
            seen += 1;
            let n = len.saturating_sub(NET_HDR_LEN);
            // `len` <= BUF_SIZE was checked with the used element.
            if n >= MIN_FRAME && self.rx_bufs.copy_out(usize::from(id) * BUF_SIZE + NET_HDR_LEN, &mut self.scratch[..n])
            {
                f(&self.scratch[..n]);
                delivered += 1;
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += n as u64;
            } else {
                self.stats.rx_dropped += 1;
            }
            self.post_rx(id);
            reposted = true;
        }
        if reposted {
            self.rx.flush();
            self.rx.kick(&self.notify);
        }
        delivered
    }

    fn handle_irq(&mut self) -> bool {
        let isr = self.isr.read8(0); // read-to-clear, deasserts INTx
        if isr == 0xFF || isr & (ISR_QUEUE | ISR_CONFIG) == 0 {
            return false;
        }
        self.stats.interrupts += 1;
        if isr & ISR_CONFIG != 0 && self.common.read8(DEVICE_STATUS) & STATUS_NEEDS_RESET != 0 {
            self.set_broken("device signalled DEVICE_NEEDS_RESET");
        }
        true
    }

    fn set_promiscuous(&mut self, on: bool) {
        // Without VIRTIO_NET_F_CTRL_RX (deliberately not negotiated, see the
        // module comment) there is no command to send: the receive mode
        // stays the device's reset mode, promiscuous on QEMU.
        debug_assert!(self.features & (F_NET_CTRL_VQ | F_NET_CTRL_RX) == 0);
        log::debug!("virtio-net {}: promiscuous {on} requested; no CTRL_RX, the device keeps its mode", self.location);
    }

    fn stats(&self) -> NicStats {
        self.stats
    }

    fn irq_gsi(&self) -> Option<u32> {
        self.irq
    }
}

impl Drop for VirtioNet {
    fn drop(&mut self) {
        // Reset stops the device using the queues (§4.1.4.3.2: wait for the
        // status to read 0) before their memory is freed.
        self.common.write8(DEVICE_STATUS, 0);
        let _ = wait_until(100_000, || self.common.read8(DEVICE_STATUS) == 0);
        self.pci.disable_bus_master();
        log::info!("virtio-net {}: stopped", self.location);
    }
}
