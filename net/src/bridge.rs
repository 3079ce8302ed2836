//! A learning Ethernet switch: it only decides where a frame goes; the
//! caller moves the bytes and reports deliveries with [`Bridge::note_tx`].
//!
//! Frames come from the wire and from hostile guests, so nothing here trusts
//! them: lengths are checked before any field is read, the MAC table is
//! bounded, and a guest's port may only send with its own MAC, which no
//! other port can claim.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use crate::mac::Mac;

/// A bridge port. IDs are handed out in increasing order and never reused.
pub type PortId = u32;

/// Default MAC table ageing time (Linux's 300 s).
pub const DEFAULT_AGING_MS: u64 = 300_000;
/// Default cap on learned MAC table entries.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;
/// Shortest frame accepted: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Longest frame accepted: 1514 bytes plus an 802.1Q tag (no FCS).
pub const MAX_FRAME: usize = 1518;

/// What is attached to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A physical NIC.
    Uplink,
    /// The hypervisor's own network stack.
    Host,
    /// A domain's virtual interface: it may only send with source `mac`,
    /// and no other port may send with it.
    Guest {
        /// The interface's address.
        mac: Mac,
    },
}

/// Per-port counters. `rx_*` counts every frame the port handed to the
/// bridge (dropped ones included); `tx_*` counts what the caller reported
/// delivered with [`Bridge::note_tx`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received from the port.
    pub rx_frames: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames delivered to the port.
    pub tx_frames: u64,
    /// Bytes delivered to the port.
    pub tx_bytes: u64,
    /// Frames from the port that were too short/long or had a group or
    /// all-zero source address.
    pub dropped_malformed: u64,
    /// Frames from the port with a source MAC it may not use.
    pub dropped_spoofed: u64,
    /// Frames from the port whose destination lives on the same port.
    pub dropped_loop: u64,
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Bad length, or a multicast/broadcast/all-zero source MAC.
    Malformed,
    /// Source MAC not allowed on the ingress port.
    Spoofed,
    /// The destination is on the ingress port.
    Loop,
    /// The ingress port does not exist (removed, or never added).
    UnknownPort,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Malformed => "malformed",
            DropReason::Spoofed => "spoofed source",
            DropReason::Loop => "destination on the ingress port",
            DropReason::UnknownPort => "unknown port",
        })
    }
}

/// The ports a frame goes to. A known unicast destination needs no
/// allocation; a flood allocates one `Vec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// Exactly one port (known unicast destination).
    One(PortId),
    /// Any number of ports (flood), in increasing order; may be empty when
    /// the ingress port is the only one.
    Many(Vec<PortId>),
}

impl Ports {
    /// The ports as a slice.
    pub fn as_slice(&self) -> &[PortId] {
        match self {
            Ports::One(p) => core::slice::from_ref(p),
            Ports::Many(v) => v,
        }
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// No port at all.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Whether `p` is among them.
    pub fn contains(&self, p: PortId) -> bool {
        self.as_slice().contains(&p)
    }

    /// Iterates over the ports.
    pub fn iter(&self) -> core::iter::Copied<core::slice::Iter<'_, PortId>> {
        self.as_slice().iter().copied()
    }
}

/// By-value iterator over [`Ports`].
#[derive(Debug)]
pub enum PortsIter {
    /// What is left of a single port.
    One(Option<PortId>),
    /// What is left of a flood list.
    Many(alloc::vec::IntoIter<PortId>),
}

impl Iterator for PortsIter {
    type Item = PortId;
    fn next(&mut self) -> Option<PortId> {
        match self {
            PortsIter::One(p) => p.take(),
            PortsIter::Many(it) => it.next(),
        }
    }
}

impl IntoIterator for Ports {
    type Item = PortId;
    type IntoIter = PortsIter;
    fn into_iter(self) -> PortsIter {
        match self {
            Ports::One(p) => PortsIter::One(Some(p)),
            Ports::Many(v) => PortsIter::Many(v.into_iter()),
        }
    }
}

impl<'a> IntoIterator for &'a Ports {
    type Item = PortId;
    type IntoIter = core::iter::Copied<core::slice::Iter<'a, PortId>>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Whether a frame a guest offers can be taken now (`net_write`'s `Again`,
/// docs/hypercall-abi.md §13.3). `targets` are the ports the bridge would
/// deliver it to; `uplink_full(p)` says whether `p` is an uplink whose
/// NIC's transmit ring is full. Only a full uplink the frame must go out on
/// refuses it: the guest keeps the frame and retries, so a flood is never
/// delivered twice. Other guests and the host stack are never "full" (their
/// queues drop and count instead).
pub fn guest_frame_admitted(
    targets: impl IntoIterator<Item = PortId>,
    mut uplink_full: impl FnMut(PortId) -> bool,
) -> bool {
    !targets.into_iter().any(&mut uplink_full)
}

/// The bridge's decision for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Do not deliver the frame anywhere.
    Drop(DropReason),
    /// Deliver the frame, unchanged, to these ports.
    Forward(Ports),
}

#[derive(Clone, Copy, Debug)]
struct Port {
    kind: PortKind,
    stats: PortStats,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortId,
    seen_ms: u64,
}

/// A learning switch. See the module documentation.
#[derive(Debug)]
pub struct Bridge {
    ports: BTreeMap<PortId, Port>,
    next_id: PortId,
    /// Learned addresses (bounded by `max_entries`).
    table: BTreeMap<Mac, Entry>,
    /// Guest interface addresses: static, never age, never move.
    owners: BTreeMap<Mac, PortId>,
    aging_ms: u64,
    max_entries: usize,
    /// Latest time seen (time never goes backwards here).
    now_ms: u64,
    next_sweep_ms: u64,
    learn_refused: u64,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new(DEFAULT_AGING_MS)
    }
}

impl Bridge {
    /// A bridge without ports whose learned entries expire `aging_ms` after
    /// the address was last seen as a source ([`DEFAULT_AGING_MS`] is
    /// Linux's default). `aging_ms == 0` learns nothing (a hub). The table
    /// holds at most [`DEFAULT_MAX_ENTRIES`] learned addresses.
    pub fn new(aging_ms: u64) -> Self {
        Bridge::with_capacity(aging_ms, DEFAULT_MAX_ENTRIES)
    }

    /// Like [`Bridge::new`] with a cap of `max_entries` learned addresses:
    /// when the table is full (and nothing in it has expired) new sources
    /// are not learned, and frames to them are flooded.
    pub fn with_capacity(aging_ms: u64, max_entries: usize) -> Self {
        Bridge {
            ports: BTreeMap::new(),
            next_id: 1,
            table: BTreeMap::new(),
            owners: BTreeMap::new(),
            aging_ms,
            max_entries,
            now_ms: 0,
            next_sweep_ms: 0,
            learn_refused: 0,
        }
    }

    /// Adds a port; its ID is new (never one used before). A guest port's
    /// MAC becomes a static entry pointing to it. If another guest port
    /// already has that MAC, the first one keeps it and frames from this one
    /// are dropped as spoofed until the first is removed — callers should
    /// refuse duplicate MACs before adding.
    pub fn add_port(&mut self, kind: PortKind) -> PortId {
        let mut id = self.next_id;
        while id == 0 || self.ports.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.ports.insert(id, Port { kind, stats: PortStats::default() });
        if let PortKind::Guest { mac } = kind {
            if Self::valid_source(mac) && !self.owners.contains_key(&mac) {
                self.owners.insert(mac, id);
                self.table.remove(&mac);
            }
        }
        id
    }

    /// Removes a port and forgets every address learned on it (no-op for an
    /// unknown port).
    pub fn remove_port(&mut self, p: PortId) {
        let Some(port) = self.ports.remove(&p) else { return };
        self.table.retain(|_, e| e.port != p);
        if let PortKind::Guest { mac } = port.kind {
            if self.owners.get(&mac) == Some(&p) {
                self.owners.remove(&mac);
                // Hand the address to another guest port that has it, if any.
                let heir = self.ports.iter().find(|(_, q)| q.kind == port.kind).map(|(id, _)| *id);
                if let Some(heir) = heir {
                    self.owners.insert(mac, heir);
                }
            }
        }
    }

    fn valid_source(mac: Mac) -> bool {
        mac.is_unicast() && !mac.is_zero()
    }

    fn expired(&self, e: &Entry) -> bool {
        self.now_ms.saturating_sub(e.seen_ms) >= self.aging_ms
    }

    /// Decides where a frame received on `in_port` at `now_ms` goes, and
    /// learns its source address. Never panics, whatever `frame` holds.
    /// Time is clamped to never go backwards.
    pub fn forward(&mut self, in_port: PortId, frame: &[u8], now_ms: u64) -> Verdict {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(port) = self.ports.get_mut(&in_port) else { return Verdict::Drop(DropReason::UnknownPort) };
        port.stats.rx_frames += 1;
        port.stats.rx_bytes += frame.len() as u64;
        let kind = port.kind;

        let (Some(dst), Some(src)) = (frame.get(0..6), frame.get(6..12)) else {
            port.stats.dropped_malformed += 1;
            return Verdict::Drop(DropReason::Malformed);
        };
        let mut d = [0u8; 6];
        d.copy_from_slice(dst);
        let mut s = [0u8; 6];
        s.copy_from_slice(src);
        let (dst, src) = (Mac(d), Mac(s));
        if frame.len() < MIN_FRAME || frame.len() > MAX_FRAME || !Self::valid_source(src) {
            port.stats.dropped_malformed += 1;
            return Verdict::Drop(DropReason::Malformed);
        }
        let spoofed = match kind {
            PortKind::Guest { mac } => src != mac,
            PortKind::Uplink | PortKind::Host => false,
        } || self.owners.get(&src).is_some_and(|&owner| owner != in_port);
        if spoofed {
            port.stats.dropped_spoofed += 1;
            return Verdict::Drop(DropReason::Spoofed);
        }

        if !self.owners.contains_key(&src) {
            self.learn(src, in_port);
        }

        if self.table.get(&dst).is_some_and(|e| self.expired(e)) {
            self.table.remove(&dst);
        }
        match self.targets(in_port, dst) {
            Ports::One(t) if t == in_port => {
                if let Some(port) = self.ports.get_mut(&in_port) {
                    port.stats.dropped_loop += 1;
                }
                Verdict::Drop(DropReason::Loop)
            }
            ports => Verdict::Forward(ports),
        }
    }

    /// Where a frame for `dst` arriving on `in_port` goes now, without
    /// learning, counting or expiring anything: the port [`Bridge::destination`]
    /// names, else a flood to every other port. ([`Bridge::forward`] drops
    /// a frame whose one port is `in_port` as a loop.)
    pub fn targets(&self, in_port: PortId, dst: Mac) -> Ports {
        match self.destination(dst) {
            Some(t) => Ports::One(t),
            None => Ports::Many(self.ports.keys().copied().filter(|&p| p != in_port).collect()),
        }
    }

    fn learn(&mut self, src: Mac, in_port: PortId) {
        if self.aging_ms == 0 {
            return;
        }
        let now = self.now_ms;
        if let Some(e) = self.table.get_mut(&src) {
            e.port = in_port;
            e.seen_ms = now;
            return;
        }
        if self.table.len() >= self.max_entries && now >= self.next_sweep_ms {
            // Rate-limited so a storm against a full table costs O(n) at most
            // once per interval, not per frame.
            self.sweep();
            self.next_sweep_ms = now.saturating_add(self.aging_ms.clamp(1, 1000));
        }
        if self.table.len() < self.max_entries {
            self.table.insert(src, Entry { port: in_port, seen_ms: now });
        } else {
            self.learn_refused += 1;
        }
    }

    /// Drops expired entries.
    fn sweep(&mut self) {
        let (now, aging) = (self.now_ms, self.aging_ms);
        self.table.retain(|_, e| now.saturating_sub(e.seen_ms) < aging);
    }

    /// Where a unicast frame for `dst` would go now, without learning,
    /// counting or expiring anything: the owning guest port or a learned,
    /// unexpired entry; None means a flood (multicast, unknown or expired).
    pub fn destination(&self, dst: Mac) -> Option<PortId> {
        if dst.is_multicast() {
            return None;
        }
        if let Some(&owner) = self.owners.get(&dst) {
            return Some(owner);
        }
        self.table.get(&dst).filter(|e| !self.expired(e)).map(|e| e.port)
    }

    /// The counters of port `p`.
    pub fn stats(&self, p: PortId) -> Option<PortStats> {
        self.ports.get(&p).map(|port| port.stats)
    }

    /// Records that a frame of `bytes` bytes was delivered to port `p`.
    pub fn note_tx(&mut self, p: PortId, bytes: usize) {
        if let Some(port) = self.ports.get_mut(&p) {
            port.stats.tx_frames += 1;
            port.stats.tx_bytes += bytes as u64;
        }
    }

    /// The MAC table sorted by address: learned entries that have not
    /// expired, with their age relative to the latest time passed to
    /// [`Bridge::forward`], and guest interface addresses (static, age 0).
    pub fn table(&self) -> Vec<(Mac, PortId, u64)> {
        let mut out: Vec<(Mac, PortId, u64)> = self
            .table
            .iter()
            .filter(|(_, e)| !self.expired(e))
            .map(|(m, e)| (*m, e.port, self.now_ms.saturating_sub(e.seen_ms)))
            .chain(self.owners.iter().map(|(m, p)| (*m, *p, 0)))
            .collect();
        out.sort_unstable_by_key(|(m, _, _)| *m);
        out
    }

    /// Learned entries currently stored (expired ones not yet purged
    /// included); never more than the cap.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// How many times a new source address was not learned because the
    /// table was full.
    pub fn learn_refused(&self) -> u64 {
        self.learn_refused
    }

    /// The ports in ID order.
    pub fn ports(&self) -> Vec<(PortId, PortKind)> {
        self.ports.iter().map(|(id, p)| (*id, p.kind)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const A: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xa]);
    const B: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xb]);
    const C: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xc]);
    const G1: Mac = Mac([0x02, 0x72, 0x68, 0, 0, 1]);
    const G2: Mac = Mac([0x02, 0x72, 0x68, 0, 0, 2]);

    fn frame(dst: Mac, src: Mac, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(12)];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        if len >= 14 {
            f[12] = 0x08;
        }
        f.truncate(len);
        f
    }

    fn fwd(b: &mut Bridge, p: PortId, dst: Mac, src: Mac, now: u64) -> Verdict {
        b.forward(p, &frame(dst, src, 60), now)
    }

    fn many(v: &[PortId]) -> Verdict {
        Verdict::Forward(Ports::Many(v.to_vec()))
    }

    fn one(p: PortId) -> Verdict {
        Verdict::Forward(Ports::One(p))
    }

    #[test]
    fn destination_is_a_read_only_lookup() {
        let mut b = Bridge::new(1000);
        let up = b.add_port(PortKind::Uplink);
        let host = b.add_port(PortKind::Host);
        let g1 = b.add_port(PortKind::Guest { mac: G1 });
        assert_eq!(b.destination(G1), Some(g1), "a guest's own MAC is static");
        assert_eq!(b.destination(A), None, "unknown: flood");
        assert_eq!(b.destination(Mac::BROADCAST), None);
        fwd(&mut b, up, B, A, 0);
        assert_eq!(b.destination(A), Some(up));
        let before = b.stats(up).unwrap();
        assert_eq!(b.destination(A), Some(up));
        assert_eq!(b.stats(up).unwrap(), before, "nothing counted");
        fwd(&mut b, host, G1, C, 2000);
        assert_eq!(b.destination(A), None, "expired entries flood");
    }

    #[test]
    fn a_guest_frame_waits_only_for_a_full_uplink() {
        let (up, host, g2): (PortId, PortId, PortId) = (0, 1, 3);
        let full = |p: PortId| p == up;
        assert!(!guest_frame_admitted([up], full), "unicast out of a full uplink: Again");
        assert!(!guest_frame_admitted([up, host, g2], full), "a flood waits too (delivered once, on retry)");
        assert!(guest_frame_admitted([host], full), "the host stack is never full");
        assert!(guest_frame_admitted([g2], full), "another guest is never full");
        assert!(guest_frame_admitted([up, host, g2], |_| false));
        assert!(guest_frame_admitted([], full), "nowhere to go: taken (and dropped)");
    }

    /// Uplink 1, host 2, guest 3 (G1), guest 4 (G2).
    fn setup() -> (Bridge, PortId, PortId, PortId, PortId) {
        let mut b = Bridge::new(DEFAULT_AGING_MS);
        let up = b.add_port(PortKind::Uplink);
        let host = b.add_port(PortKind::Host);
        let g1 = b.add_port(PortKind::Guest { mac: G1 });
        let g2 = b.add_port(PortKind::Guest { mac: G2 });
        (b, up, host, g1, g2)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn ids_are_never_reused() {
        let mut b = Bridge::new(1000);
        let a = b.add_port(PortKind::Uplink);
        let c = b.add_port(PortKind::Host);
        b.remove_port(c);
        let d = b.add_port(PortKind::Host);
        assert!(a != c && c != d && a != d);
        assert_eq!(b.ports(), vec![(a, PortKind::Uplink), (d, PortKind::Host)]);
        assert_eq!(b.stats(c), None);
    }

    #[test]
    fn learning_and_flooding() {
        let (mut b, up, host, g1, g2) = setup();
        // Unknown destination: flood to all but the ingress port.
        assert_eq!(fwd(&mut b, up, B, A, 0), many(&[host, g1, g2]));
        // B unknown still; A learned on the uplink.
        assert_eq!(fwd(&mut b, host, A, B, 1), one(up));
        assert_eq!(fwd(&mut b, up, B, A, 2), one(host));
        // Broadcast and multicast always flood.
        assert_eq!(fwd(&mut b, up, Mac::BROADCAST, A, 3), many(&[host, g1, g2]));
        assert_eq!(fwd(&mut b, g1, Mac([0x01, 0, 0x5e, 0, 0, 1]), G1, 3), many(&[up, host, g2]));
        // Guest MACs are known before the guest ever sends.
        assert_eq!(fwd(&mut b, up, G2, A, 4), one(g2));
        assert_eq!(fwd(&mut b, g2, A, G2, 4), one(up));
        assert_eq!(fwd(&mut b, g1, G2, G1, 4), one(g2));
        let t = b.table();
        assert_eq!(t, vec![(G1, g1, 0), (G2, g2, 0), (A, up, 0), (B, host, 3)]);
        let st = b.stats(up).unwrap();
        assert_eq!((st.rx_frames, st.rx_bytes), (4, 240));
    }

    #[test]
    fn destination_on_ingress_port_is_a_loop() {
        let (mut b, up, host, ..) = setup();
        fwd(&mut b, up, B, A, 0);
        fwd(&mut b, up, A, C, 0);
        assert_eq!(fwd(&mut b, up, A, C, 0), Verdict::Drop(DropReason::Loop));
        assert_eq!(b.stats(up).unwrap().dropped_loop, 2);
        let g1 = 3;
        assert_eq!(fwd(&mut b, g1, G1, G1, 0), Verdict::Drop(DropReason::Loop));
        assert_eq!(b.stats(host).unwrap().dropped_loop, 0);
    }

    #[test]
    fn single_port_floods_nowhere() {
        let mut b = Bridge::new(1000);
        let p = b.add_port(PortKind::Uplink);
        assert_eq!(fwd(&mut b, p, B, A, 0), many(&[]));
    }

    #[test]
    fn moves() {
        let (mut b, up, host, _, g2) = setup();
        fwd(&mut b, up, Mac::BROADCAST, A, 0);
        assert_eq!(fwd(&mut b, g2, A, G2, 1), one(up));
        // A shows up behind the host port: it moves there.
        fwd(&mut b, host, Mac::BROADCAST, A, 2);
        assert_eq!(fwd(&mut b, g2, A, G2, 3), one(host));
        assert!(b.table().contains(&(A, host, 1)));
    }

    #[test]
    fn aging() {
        let mut b = Bridge::new(1000);
        let up = b.add_port(PortKind::Uplink);
        let host = b.add_port(PortKind::Host);
        let g = b.add_port(PortKind::Guest { mac: G1 });
        fwd(&mut b, up, Mac::BROADCAST, A, 10_000);
        assert_eq!(fwd(&mut b, host, A, B, 10_999), one(up));
        assert_eq!(b.table(), vec![(G1, g, 0), (A, up, 999), (B, host, 0)]);
        // Refreshing as a source restarts the clock.
        fwd(&mut b, up, Mac::BROADCAST, A, 10_500);
        assert_eq!(b.table()[1], (A, up, 0), "time never goes backwards");
        assert_eq!(fwd(&mut b, host, A, B, 11_998), one(up));
        assert_eq!(fwd(&mut b, host, A, B, 12_000), many(&[up, g]));
        assert!(!b.table().iter().any(|(m, ..)| *m == A));
        // Static guest entries never age.
        assert_eq!(fwd(&mut b, host, G1, B, 1_000_000), one(g));
    }

    #[test]
    fn hub_mode() {
        let mut b = Bridge::new(0);
        let up = b.add_port(PortKind::Uplink);
        let host = b.add_port(PortKind::Host);
        fwd(&mut b, up, B, A, 0);
        assert_eq!(fwd(&mut b, host, A, B, 0), many(&[up]));
        assert_eq!(b.table_len(), 0);
    }

    #[test]
    fn spoofing() {
        let (mut b, up, host, g1, g2) = setup();
        // A guest sending with someone else's (or a random) source.
        assert_eq!(fwd(&mut b, g1, Mac::BROADCAST, A, 0), Verdict::Drop(DropReason::Spoofed));
        assert_eq!(fwd(&mut b, g1, Mac::BROADCAST, G2, 0), Verdict::Drop(DropReason::Spoofed));
        // The uplink or host claiming a guest's MAC (e.g. to steal its traffic).
        assert_eq!(fwd(&mut b, up, Mac::BROADCAST, G1, 0), Verdict::Drop(DropReason::Spoofed));
        assert_eq!(fwd(&mut b, host, B, G2, 0), Verdict::Drop(DropReason::Spoofed));
        // Nothing was learned from those.
        assert_eq!(b.table_len(), 0);
        assert_eq!(fwd(&mut b, up, G1, B, 0), one(g1));
        assert_eq!(fwd(&mut b, up, G2, B, 0), one(g2));
        let s1 = b.stats(g1).unwrap();
        assert_eq!((s1.dropped_spoofed, s1.rx_frames), (2, 2));
        assert_eq!(b.stats(up).unwrap().dropped_spoofed, 1);
        assert_eq!(b.stats(host).unwrap().dropped_spoofed, 1);
        // A guest cannot hijack a MAC learned on the uplink either.
        fwd(&mut b, up, Mac::BROADCAST, A, 1);
        assert_eq!(fwd(&mut b, g2, Mac::BROADCAST, A, 1), Verdict::Drop(DropReason::Spoofed));
        assert_eq!(fwd(&mut b, host, A, C, 1), one(up));
    }

    #[test]
    fn guest_added_with_a_learned_mac_takes_it_over() {
        let mut b = Bridge::new(1000);
        let up = b.add_port(PortKind::Uplink);
        let host = b.add_port(PortKind::Host);
        fwd(&mut b, up, Mac::BROADCAST, A, 0);
        let g = b.add_port(PortKind::Guest { mac: A });
        assert_eq!(fwd(&mut b, host, A, B, 0), one(g));
        assert_eq!(fwd(&mut b, up, B, A, 0), Verdict::Drop(DropReason::Spoofed));
    }

    #[test]
    fn duplicate_guest_mac_first_wins_then_inherits() {
        let mut b = Bridge::new(1000);
        let up = b.add_port(PortKind::Uplink);
        let g1 = b.add_port(PortKind::Guest { mac: G1 });
        let g1b = b.add_port(PortKind::Guest { mac: G1 });
        assert_eq!(fwd(&mut b, g1b, B, G1, 0), Verdict::Drop(DropReason::Spoofed));
        assert_eq!(fwd(&mut b, up, G1, B, 0), one(g1));
        b.remove_port(g1);
        assert_eq!(fwd(&mut b, up, G1, B, 0), one(g1b));
        assert_eq!(fwd(&mut b, g1b, B, G1, 0), one(up));
    }

    #[test]
    fn malformed() {
        let (mut b, up, _, g1, _) = setup();
        for len in [0, 1, 6, 11, 12, 13, 1519, 9000] {
            assert_eq!(b.forward(up, &frame(B, A, len), 0), Verdict::Drop(DropReason::Malformed), "len {len}");
        }
        for len in [14, 60, 1514, 1518] {
            assert!(matches!(b.forward(up, &frame(B, A, len), 0), Verdict::Forward(_)), "len {len}");
        }
        for src in [Mac::BROADCAST, Mac([0x01, 0x00, 0x5e, 1, 2, 3]), Mac([0x33, 0x33, 0, 0, 0, 1]), Mac::ZERO] {
            assert_eq!(fwd(&mut b, up, B, src, 0), Verdict::Drop(DropReason::Malformed));
            assert!(!b.table().iter().any(|(m, ..)| *m == src));
        }
        // A guest with a multicast source: malformed first.
        assert_eq!(fwd(&mut b, g1, B, Mac::BROADCAST, 0), Verdict::Drop(DropReason::Malformed));
        assert_eq!(b.stats(up).unwrap().dropped_malformed, 12);
        assert_eq!(b.stats(up).unwrap().rx_frames, 16);
        assert_eq!(b.stats(g1).unwrap().dropped_malformed, 1);
        assert_eq!(b.forward(99, &frame(B, A, 60), 0), Verdict::Drop(DropReason::UnknownPort));
    }

    #[test]
    fn random_garbage_never_panics() {
        let (mut b, up, host, g1, g2) = setup();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let ports = [up, host, g1, g2, 77];
        for i in 0..20_000u64 {
            let len = (rng.next() % 1600) as usize;
            let f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let p = ports[(rng.next() % 5) as usize];
            if let Verdict::Forward(ps) = b.forward(p, &f, i) {
                assert!(!ps.contains(p));
                for q in &ps {
                    b.note_tx(q, f.len());
                }
            }
        }
        assert!(b.table_len() <= DEFAULT_MAX_ENTRIES);
    }

    #[test]
    fn storm_of_random_sources_stays_bounded() {
        let mut b = Bridge::with_capacity(300_000, 256);
        let up = b.add_port(PortKind::Uplink);
        let host = b.add_port(PortKind::Host);
        let g = b.add_port(PortKind::Guest { mac: G1 });
        fwd(&mut b, host, Mac::BROADCAST, C, 0);
        let mut rng = Rng(7);
        for i in 0..50_000u64 {
            let mut m = Mac::generated(rng.next());
            m.0[0] = (rng.next() as u8) & 0xfe;
            let v = fwd(&mut b, up, Mac::BROADCAST, m, i / 10);
            assert!(matches!(v, Verdict::Forward(_) | Verdict::Drop(DropReason::Malformed)));
            assert!(b.table_len() <= 256);
        }
        assert_eq!(b.table_len(), 256);
        assert!(b.learn_refused() > 40_000);
        // Forwarding still works: known destinations go straight, unknown ones flood.
        assert_eq!(fwd(&mut b, up, C, A, 5000), one(host));
        assert_eq!(fwd(&mut b, up, G1, A, 5000), one(g));
        assert_eq!(fwd(&mut b, host, B, C, 5000), many(&[up, g]));
        // Once the storm's entries age out, learning resumes.
        assert_eq!(fwd(&mut b, up, Mac::BROADCAST, A, 400_000), many(&[host, g]));
        assert_eq!(fwd(&mut b, host, A, C, 400_000), one(up));
        assert!(b.table_len() <= 2);
    }

    #[test]
    fn storm_from_a_guest_learns_nothing() {
        let (mut b, _, _, g1, _) = setup();
        let mut rng = Rng(99);
        for i in 0..5000 {
            let m = Mac::generated(rng.next());
            assert_eq!(fwd(&mut b, g1, Mac::BROADCAST, m, i), Verdict::Drop(DropReason::Spoofed));
        }
        assert_eq!(b.table_len(), 0);
        assert_eq!(b.stats(g1).unwrap().dropped_spoofed, 5000);
    }

    #[test]
    fn port_removal() {
        let (mut b, up, host, g1, g2) = setup();
        fwd(&mut b, up, Mac::BROADCAST, A, 0);
        fwd(&mut b, up, Mac::BROADCAST, B, 0);
        fwd(&mut b, host, Mac::BROADCAST, C, 0);
        b.remove_port(up);
        assert_eq!(b.table(), vec![(G1, g1, 0), (G2, g2, 0), (C, host, 0)]);
        assert_eq!(fwd(&mut b, host, A, C, 1), many(&[g1, g2]));
        assert_eq!(fwd(&mut b, up, A, C, 1), Verdict::Drop(DropReason::UnknownPort));
        // A removed guest's MAC is free again (e.g. for the same domain on the uplink).
        b.remove_port(g1);
        assert_eq!(fwd(&mut b, host, G1, C, 1), many(&[g2]));
        let up2 = b.add_port(PortKind::Uplink);
        assert_eq!(fwd(&mut b, up2, C, G1, 2), one(host));
        assert_eq!(fwd(&mut b, host, G1, C, 2), one(up2));
        b.remove_port(12345);
        b.note_tx(12345, 60);
    }

    #[test]
    fn tx_stats() {
        let (mut b, up, ..) = setup();
        b.note_tx(up, 100);
        b.note_tx(up, 60);
        let s = b.stats(up).unwrap();
        assert_eq!((s.tx_frames, s.tx_bytes, s.rx_frames), (2, 160, 0));
    }

    #[test]
    fn ports_iterate() {
        let p = Ports::Many(vec![1, 2, 3]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.iter().sum::<u32>(), 6);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        let p = Ports::One(7);
        assert!(!p.is_empty() && p.contains(7));
        assert_eq!(p.as_slice(), &[7]);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![7]);
    }
}
