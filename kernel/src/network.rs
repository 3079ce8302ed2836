//! The hypervisor on the network, without a dom0: NIC drivers feed a
//! learning bridge (`net::bridge`) whose ports are the physical NICs, the
//! hypervisor's own smoltcp stack (`net::stack`) and one virtual interface
//! per guest. Frames move in interrupt context (NIC interrupts, the timer
//! tick as a polling fallback) and on guest hypercalls.
//!
//! Lock order: `NET` may be taken before `domains::DOMAINS`, never after;
//! events for domains are posted after `NET` is released.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hypervisor::domain::DomId;
use net::bridge::{Bridge, PortId, PortKind, Verdict};
use net::mac::Mac;
use net::stack::{IpConfig, NetStack};

use crate::arch::sync::IrqMutex;
use crate::drivers::nic::Nic;
use crate::drivers::pci::{self, PciDevice};
use crate::time;
use crate::vcpu::{self, ThreadId};

/// First interrupt vector for NICs (one per NIC).
pub const NIC_VECTOR_BASE: u8 = 0x30;
/// Frames a guest's receive queue holds before new ones are dropped.
const VIF_QUEUE: usize = 256;
/// Frames moved per NIC per pump (bounds the time spent in an interrupt).
const RX_BUDGET: usize = 64;

struct Uplink {
    nic: Box<dyn Nic>,
    port: PortId,
    /// The I/O APIC input its interrupt is routed to; None: polled on the
    /// timer tick only.
    irq: Option<u32>,
}

/// A guest's virtual interface.
pub struct Vif {
    pub port: PortId,
    pub mac: Mac,
    rxq: VecDeque<Vec<u8>>,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// `net_write` calls answered `Again` (the uplink's ring was full).
    pub tx_again: u64,
}

struct Net {
    bridge: Bridge,
    uplinks: Vec<Uplink>,
    host: Option<(PortId, NetStack)>,
    vifs: BTreeMap<DomId, Vif>,
}

static NET: IrqMutex<Option<Net>> = IrqMutex::new(None);
/// Bumped whenever the host stack took frames in (see [`wait_activity`]).
static ACTIVITY: AtomicU64 = AtomicU64::new(0);
/// Service threads sleeping in [`wait_activity`].
static WAITERS: IrqMutex<BTreeSet<ThreadId>> = IrqMutex::new(BTreeSet::new());
static PCI: IrqMutex<Vec<PciDevice>> = IrqMutex::new(Vec::new());

fn now_ms() -> u64 {
    time::now_ns() / 1_000_000
}

/// Finds the NICs, builds the bridge and starts the hypervisor's own stack
/// with the `ip=`/`gw=` options. `nic_irq` false (`nic-irq=off`) leaves
/// the NICs' interrupts unrouted: the timer tick's poll does all receiving.
pub fn init(ip: Option<&str>, gw: Option<&str>, nic_irq: bool) {
    let devs = pci::scan();
    let nics = crate::drivers::probe_nics(&devs);
    *PCI.lock() = devs;
    let mut bridge = Bridge::new(300_000);
    let mut uplinks = Vec::new();
    for (i, mut nic) in nics.into_iter().enumerate() {
        nic.set_promiscuous(true);
        let port = bridge.add_port(PortKind::Uplink);
        let vector = NIC_VECTOR_BASE + i as u8;
        let irq = match nic.irq_gsi() {
            _ if !nic_irq => {
                log::info!("net: {} at {}: nic-irq=off; polled on the timer tick", nic.name(), nic.location());
                None
            }
            // PCI INTx: level-triggered, active low.
            Some(gsi) if crate::arch::ioapic::route(gsi, vector, 0b1111, crate::arch::apic::id()) => Some(gsi),
            _ => {
                log::warn!("net: {} at {}: no usable interrupt; polled", nic.name(), nic.location());
                None
            }
        };
        log::info!(
            "net: {} at {} mac {} link {}",
            nic.name(),
            nic.location(),
            Mac(nic.mac()),
            if nic.link_up() { "up" } else { "down" }
        );
        uplinks.push(Uplink { nic, port, irq });
    }
    let host = match uplinks.first() {
        None => {
            if ip.is_some() {
                log::warn!("net: ip= given but no supported NIC found (e1000, virtio-net)");
            }
            None
        }
        Some(u) => {
            let cfg = match ip {
                None => IpConfig::None,
                Some(ip) => match net::stack::parse_ip_config(ip, gw) {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("net: ip={ip}: {e}; no address");
                        IpConfig::None
                    }
                },
            };
            let port = bridge.add_port(PortKind::Host);
            // Ephemeral ports and TCP sequence numbers come from this seed:
            // it must differ per boot (RFC 6056), or a rebooted host reuses
            // its last connection's 4-tuple while the server still holds
            // that connection. The boot's millisecond count alone barely
            // varies; RDRAND (where present) and the raw TSC do.
            let seed = crate::arch::cpu::rdrand().unwrap_or(0) ^ crate::arch::cpu::rdtsc();
            Some((port, NetStack::new_seeded(Mac(u.nic.mac()), cfg, now_ms(), seed)))
        }
    };
    *NET.lock() = Some(Net { bridge, uplinks, host, vifs: BTreeMap::new() });
    pump();
}

/// Moves frames until nothing is left to move (bounded): NIC receive queues,
/// the host stack's output, and everything the bridge forwards.
pub fn pump() {
    let mut wake: Vec<DomId> = Vec::new();
    let mut host_rx = false;
    {
        let mut g = NET.lock();
        let Some(n) = g.as_mut() else { return };
        let now = now_ms();
        for _round in 0..8 {
            let mut frames: Vec<(PortId, Vec<u8>)> = Vec::new();
            for u in &mut n.uplinks {
                let port = u.port;
                u.nic.receive(RX_BUDGET, &mut |f| frames.push((port, f.to_vec())));
            }
            if let Some((port, stack)) = n.host.as_mut() {
                stack.poll(now);
                while let Some(f) = stack.egress() {
                    frames.push((*port, f));
                }
            }
            if frames.is_empty() {
                break;
            }
            for (port, f) in frames {
                host_rx |= deliver(n, port, &f, now, &mut wake);
            }
        }
    }
    notify(wake);
    if host_rx {
        ACTIVITY.fetch_add(1, Ordering::Relaxed);
        let waiters: Vec<ThreadId> = WAITERS.lock().iter().copied().collect();
        for t in waiters {
            vcpu::wake(t);
        }
    }
}

/// Waits a little for network progress, whoever calls: the shell idles
/// (running guests) and reports Ctrl-C (true); a service thread sleeps
/// until the host stack receives something after [`activity`] returned
/// `seen`, or 10 ms pass (never interrupted).
pub fn wait_progress(seen: u64) -> bool {
    if vcpu::current() == vcpu::SHELL {
        return crate::cmds::wait_interruptible();
    }
    wait_activity(seen, 10_000_000);
    false
}

/// Sleeps until host time `until_ns`: the shell idles and stops early on
/// Ctrl-C (true), a service thread blocks.
pub fn sleep_until(until_ns: u64) -> bool {
    while time::now_ns() < until_ns {
        if vcpu::current() != vcpu::SHELL {
            vcpu::block_current(Some(until_ns));
        } else if crate::cmds::wait_interruptible() {
            return true;
        }
    }
    false
}

/// The host stack's receive counter, for [`wait_activity`].
pub fn activity() -> u64 {
    ACTIVITY.load(Ordering::Relaxed)
}

/// For service threads (not the shell): sleeps until the host stack
/// receives something after [`activity`] returned `seen`, or `timeout_ns`
/// passes. Lost wake-ups are impossible: the check and the block happen
/// with interrupts off.
pub fn wait_activity(seen: u64, timeout_ns: u64) {
    let were = crate::arch::cpu::interrupts_enabled();
    crate::arch::cpu::cli();
    if ACTIVITY.load(Ordering::Relaxed) == seen {
        let me = vcpu::current();
        WAITERS.lock().insert(me);
        vcpu::block_current(Some(time::now_ns() + timeout_ns));
        WAITERS.lock().remove(&me);
    }
    if were {
        crate::arch::cpu::sti();
    }
}

/// Switches one frame; true if the host stack took it.
fn deliver(n: &mut Net, in_port: PortId, frame: &[u8], now: u64, wake: &mut Vec<DomId>) -> bool {
    let Verdict::Forward(ports) = n.bridge.forward(in_port, frame, now) else { return false };
    let mut host = false;
    for p in ports {
        if let Some(u) = n.uplinks.iter_mut().find(|u| u.port == p) {
            // A refused frame (ring full, device gone) is counted by the
            // driver (tx_full / tx_dropped) and not by the bridge port.
            if u.nic.transmit(frame) {
                n.bridge.note_tx(p, frame.len());
            }
        } else if let Some((hp, stack)) = n.host.as_mut().filter(|(hp, _)| *hp == p) {
            stack.ingress(frame);
            n.bridge.note_tx(*hp, frame.len());
            host = true;
        } else if let Some((dom, v)) = n.vifs.iter_mut().find(|(_, v)| v.port == p) {
            if v.rxq.len() >= VIF_QUEUE {
                v.rx_dropped += 1;
            } else {
                v.rxq.push_back(frame.to_vec());
                v.rx_frames += 1;
                v.rx_bytes += frame.len() as u64;
                n.bridge.note_tx(p, frame.len());
                if !wake.contains(dom) {
                    wake.push(*dom);
                }
            }
        }
    }
    host
}

fn notify(wake: Vec<DomId>) {
    for d in wake {
        crate::domains::post_event(d, guest_abi::event::NET_RX);
    }
}

/// A NIC interrupt.
pub fn on_irq() {
    if let Some(n) = NET.lock().as_mut() {
        for u in &mut n.uplinks {
            u.nic.handle_irq();
        }
    }
    pump();
}

/// Gives a domain a virtual interface; `spec` is the `vif=` value.
pub fn vif_add(dom: DomId, spec: &str) -> Result<Mac, String> {
    let mut mac = None;
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some(("mac", v)) => {
                let m: Mac = v.parse().map_err(|e| alloc::format!("vif= mac: {e}"))?;
                if !m.is_unicast() {
                    return Err(alloc::format!("vif= mac {m} is not a unicast address"));
                }
                mac = Some(m);
            }
            _ => return Err(alloc::format!("vif=: unknown setting '{item}' (expected mac=)")),
        }
    }
    let mac = mac.unwrap_or_else(|| Mac::generated(u64::from(dom) ^ crate::arch::cpu::rdtsc().rotate_left(17)));
    let mut g = NET.lock();
    let n = g.as_mut().ok_or("no network")?;
    if n.vifs.values().any(|v| v.mac == mac) || n.uplinks.iter().any(|u| Mac(u.nic.mac()) == mac) {
        return Err(alloc::format!("vif= mac {mac} is already in use"));
    }
    let port = n.bridge.add_port(PortKind::Guest { mac });
    n.vifs.insert(
        dom,
        Vif {
            port,
            mac,
            rxq: VecDeque::new(),
            rx_frames: 0,
            rx_bytes: 0,
            rx_dropped: 0,
            tx_frames: 0,
            tx_bytes: 0,
            tx_again: 0,
        },
    );
    Ok(mac)
}

/// Removes a domain's interface (if any).
pub fn vif_remove(dom: DomId) {
    if let Some(n) = NET.lock().as_mut() {
        if let Some(v) = n.vifs.remove(&dom) {
            n.bridge.remove_port(v.port);
        }
    }
}

/// MAC and link of a domain's interface.
pub fn vif_info(dom: DomId) -> Option<(Mac, bool)> {
    let g = NET.lock();
    let n = g.as_ref()?;
    let v = n.vifs.get(&dom)?;
    Some((v.mac, n.uplinks.first().is_none_or(|u| u.nic.link_up())))
}

/// Announces a domain's MAC on the wire (after a migration brought it
/// here): one RARP frame, as Xen and QEMU send, so switches and bridges
/// learn the new port at once. Callers repeat it a few times.
pub fn vif_announce(dom: DomId) -> bool {
    let Some((mac, _)) = vif_info(dom) else { return false };
    let mut f = [0u8; 60];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&0x8035u16.to_be_bytes());
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op 3 (reverse request)
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]);
    f[22..28].copy_from_slice(&mac.0);
    f[32..38].copy_from_slice(&mac.0);
    vif_transmit(dom, &f) == VifTx::Taken
}

/// What became of a frame a guest offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VifTx {
    /// Taken (delivered, or dropped by the bridge and counted there).
    Taken,
    /// Not taken: an uplink it must go out on has a full transmit ring
    /// (`net_write` answers `Again`; the guest still has the frame).
    Full,
    /// The domain has no vif (or there is no network).
    NoVif,
}

/// A frame from a guest: into the bridge, unless an uplink it must leave
/// by is full (then nothing happens and the guest retries).
pub fn vif_transmit(dom: DomId, frame: &[u8]) -> VifTx {
    let mut wake = Vec::new();
    let res = {
        let mut g = NET.lock();
        let Some(n) = g.as_mut() else { return VifTx::NoVif };
        let Some(port) = n.vifs.get(&dom).map(|v| v.port) else { return VifTx::NoVif };
        let targets =
            frame.get(0..6).and_then(|d| <[u8; 6]>::try_from(d).ok()).map(|dst| n.bridge.targets(port, Mac(dst)));
        let uplinks = &mut n.uplinks;
        let admitted = net::bridge::guest_frame_admitted(targets.into_iter().flatten(), |p| {
            uplinks.iter_mut().find(|u| u.port == p).is_some_and(|u| u.nic.tx_ring_full())
        });
        let v = n.vifs.get_mut(&dom).expect("checked above, NET held");
        if admitted {
            v.tx_frames += 1;
            v.tx_bytes += frame.len() as u64;
            deliver(n, port, frame, now_ms(), &mut wake);
            VifTx::Taken
        } else {
            v.tx_again += 1;
            VifTx::Full
        }
    };
    notify(wake);
    pump();
    res
}

/// Takes the oldest frame queued for a guest, and whether the queue is now
/// empty.
pub fn vif_receive(dom: DomId) -> Option<(Vec<u8>, bool)> {
    let mut g = NET.lock();
    let v = g.as_mut()?.vifs.get_mut(&dom)?;
    let f = v.rxq.pop_front()?;
    Some((f, v.rxq.is_empty()))
}

/// Runs `f` on the host stack (the shell's ping, ifconfig, benchmarks).
pub fn with_stack<R>(f: impl FnOnce(&mut NetStack) -> R) -> Option<R> {
    NET.lock().as_mut().and_then(|n| n.host.as_mut()).map(|(_, s)| f(s))
}

/// `lspci` lines (`verbose`: with each function's BARs).
pub fn lspci(verbose: bool) -> Vec<String> {
    pci::lspci_lines(&PCI.lock(), verbose)
}

/// `ifconfig` lines.
pub fn ifconfig() -> Vec<String> {
    let g = NET.lock();
    let Some(n) = g.as_ref() else { return alloc::vec![String::from("no network")] };
    let mut out = Vec::new();
    for (i, u) in n.uplinks.iter().enumerate() {
        let s = u.nic.stats();
        out.push(alloc::format!(
            "eth{i}: {} at {}, mac {}, link {}, irq {}",
            u.nic.name(),
            u.nic.location(),
            Mac(u.nic.mac()),
            if u.nic.link_up() { "up" } else { "down" },
            u.irq.map_or(String::from("polled"), |g| alloc::format!("{g}"))
        ));
        out.push(alloc::format!(
            "      RX packets {} bytes {} dropped {}   TX packets {} bytes {} dropped {} full {}   interrupts {}",
            s.rx_packets,
            s.rx_bytes,
            s.rx_dropped,
            s.tx_packets,
            s.tx_bytes,
            s.tx_dropped,
            s.tx_full,
            s.interrupts
        ));
    }
    if n.uplinks.is_empty() {
        out.push(String::from("no NIC (supported: e1000 82540EM/82545EM, virtio-net)"));
    }
    if let Some((port, stack)) = &n.host {
        let info = stack.info();
        out.push(alloc::format!("rhv0: {info}"));
        if let Some(st) = n.bridge.stats(*port) {
            out.push(alloc::format!(
                "      bridge port: RX frames {} bytes {}   TX frames {} bytes {}",
                st.rx_frames,
                st.rx_bytes,
                st.tx_frames,
                st.tx_bytes
            ));
        }
    }
    out
}

/// `network-list` lines for one domain.
pub fn network_list(dom: DomId) -> Vec<String> {
    let g = NET.lock();
    let mut out = alloc::vec![String::from(
        "Idx Mac Addr.          RX-frames   RX-bytes RX-drop  TX-frames   TX-bytes TX-again Spoofed"
    )];
    if let Some(n) = g.as_ref() {
        if let Some(v) = n.vifs.get(&dom) {
            let spoofed = n.bridge.stats(v.port).map_or(0, |s| s.dropped_spoofed);
            out.push(alloc::format!(
                "0   {}  {:>9} {:>10} {:>7} {:>10} {:>10} {:>8} {:>7}",
                v.mac,
                v.rx_frames,
                v.rx_bytes,
                v.rx_dropped,
                v.tx_frames,
                v.tx_bytes,
                v.tx_again,
                spoofed
            ));
        }
    }
    out
}
