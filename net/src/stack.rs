//! The hypervisor's own IPv4 endpoint, on smoltcp.
//!
//! [`NetStack`] owns a smoltcp [`Interface`], its [`SocketSet`] and a
//! queue-backed [`Device`]: the caller puts received Ethernet frames in with
//! [`NetStack::ingress`], takes frames to send out with [`NetStack::egress`]
//! and calls [`NetStack::poll`] often. Nothing here touches hardware or
//! reads a clock; time is passed in:
//!
//! * `now_ms` (milliseconds since boot) drives smoltcp: [`NetStack::new`],
//!   [`NetStack::poll`], [`NetStack::poll_delay_ms`],
//!   [`NetStack::source_start`];
//! * `now_us` (microseconds, any monotonic origin) is used only to measure
//!   ping round trips: [`NetStack::ping_send`], [`NetStack::ping_recv`].
//!
//! Time never goes backwards inside a stack (an older `now_ms` counts as the
//! newest one seen). Medium Ethernet, MTU 1500 (1514-byte frames), IPv4
//! only, no IP fragmentation. smoltcp answers ARP and ICMP echo requests by
//! itself.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, icmp, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr};

use crate::mac::{mix64, Mac};

/// IP MTU.
pub const MTU: usize = 1500;
/// Longest Ethernet frame the stack sends (MTU + 14-byte header).
pub const MAX_FRAME: usize = MTU + 14;
/// Received frames waiting for [`NetStack::poll`]; more are dropped.
pub const RX_QUEUE: usize = 256;
/// Frames waiting for [`NetStack::egress`]; when full, smoltcp holds back.
pub const TX_QUEUE: usize = 256;
/// Largest ping payload (no fragmentation: MTU - IP header - ICMP header).
pub const MAX_PING_PAYLOAD: usize = MTU - 20 - 8;
/// A TCP connection that gets no acknowledgement for this long is aborted.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
const TCP_BUFFER: usize = 64 * 1024;
/// Receive buffer of outgoing connections (the NFS client's): larger than
/// one READ reply (rsize 64 KiB plus RPC and NFS headers). With 64 KiB the
/// window closed inside every reply, and on some boots every reply then
/// stalled ~15 ms (the server was window-limited 99.9 % of the time, by
/// `ss -ti`): NFS reads ran at 3.8 instead of ~60 MiB/s.
const TCP_CLIENT_RX_BUFFER: usize = 256 * 1024;
/// Keep-alive interval of tcp_connect/tcp_listen connections (below
/// TCP_TIMEOUT, so an idle but live connection is never timed out).
const TCP_KEEPALIVE: Duration = Duration::from_secs(3);
/// Ping requests (and received-reply TTLs) remembered for matching replies.
const PING_MEMORY: usize = 64;
/// Times are clamped to this many ms so smoltcp's µs arithmetic never overflows.
const MAX_MS: u64 = 1 << 50;

// ---------------------------------------------------------------------------
// Addresses and configuration

/// Parses a dotted-quad IPv4 address (`10.0.2.15`).
pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    s.trim().parse::<Ipv4Addr>().ok().map(|a| a.octets())
}

/// Formats an IPv4 address as a dotted quad.
pub fn fmt_ipv4(a: [u8; 4]) -> String {
    Ipv4Addr::from(a).to_string()
}

/// An IPv4 address with a prefix length, `a.b.c.d/n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: [u8; 4],
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// `None` if `prefix > 32`.
    pub fn new(addr: [u8; 4], prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Cidr { addr, prefix })
    }

    fn mask_bits(&self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    /// The netmask (`255.255.255.0` for /24).
    pub fn netmask(&self) -> [u8; 4] {
        self.mask_bits().to_be_bytes()
    }

    /// The network address.
    pub fn network(&self) -> [u8; 4] {
        (u32::from_be_bytes(self.addr) & self.mask_bits()).to_be_bytes()
    }

    /// The directed broadcast address.
    pub fn broadcast(&self) -> [u8; 4] {
        (u32::from_be_bytes(self.addr) | !self.mask_bits()).to_be_bytes()
    }

    /// Whether `ip` is in this subnet.
    pub fn contains(&self, ip: [u8; 4]) -> bool {
        (u32::from_be_bytes(ip) ^ u32::from_be_bytes(self.addr)) & self.mask_bits() == 0
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

/// How the stack gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// Ask a DHCP server.
    Dhcp,
    /// A fixed address, and optionally a default gateway in its subnet.
    Static {
        /// Address and prefix.
        addr: Ipv4Cidr,
        /// Default gateway.
        gateway: Option<[u8; 4]>,
    },
    /// No IPv4 address (the stack still exists, e.g. for its MAC).
    None,
}

fn usable_host(a: [u8; 4]) -> bool {
    let ip = Ipv4Addr::from(a);
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() || a[0] >= 240)
}

/// Parses the `ip=`/`gw=` boot options: `dhcp`, `none` (or `off`), or
/// `a.b.c.d/n` with an optional gateway `a.b.c.d` in that subnet. Errors
/// are one line and quote the offending input.
pub fn parse_ip_config(ip: &str, gw: Option<&str>) -> Result<IpConfig, String> {
    let ip = ip.trim();
    if ip.eq_ignore_ascii_case("dhcp") || ip.eq_ignore_ascii_case("none") || ip.eq_ignore_ascii_case("off") {
        if let Some(gw) = gw {
            return Err(format!("gateway {gw:?} given, but only a static address (a.b.c.d/n) takes one"));
        }
        return Ok(if ip.eq_ignore_ascii_case("dhcp") { IpConfig::Dhcp } else { IpConfig::None });
    }
    let Some((a, p)) = ip.split_once('/') else {
        return Err(format!("expected dhcp, none or a.b.c.d/prefix, got {ip:?}"));
    };
    let addr = parse_ipv4(a).ok_or_else(|| format!("{a:?} is not an IPv4 address"))?;
    let prefix = match p.parse::<u8>() {
        Ok(n) if (1..=32).contains(&n) && p.bytes().all(|c| c.is_ascii_digit()) => n,
        _ => return Err(format!("bad prefix length {p:?} (expected 1-32)")),
    };
    let cidr = Ipv4Cidr { addr, prefix };
    if !usable_host(addr) {
        return Err(format!("{} is not a usable host address", fmt_ipv4(addr)));
    }
    if prefix <= 30 && (addr == cidr.network() || addr == cidr.broadcast()) {
        return Err(format!("{} is the network or broadcast address of {cidr}", fmt_ipv4(addr)));
    }
    let gateway = match gw {
        None => None,
        Some(g) => {
            let g4 = parse_ipv4(g).ok_or_else(|| format!("gateway {g:?} is not an IPv4 address"))?;
            if !usable_host(g4) || g4 == addr || !cidr.contains(g4) {
                return Err(format!("gateway {} is not another host in {cidr}", fmt_ipv4(g4)));
            }
            Some(g4)
        }
    };
    Ok(IpConfig::Static { addr: cidr, gateway })
}

// ---------------------------------------------------------------------------
// Status types

/// The DHCP client's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpState {
    /// Not configured for DHCP.
    Off,
    /// Looking for a server / waiting for a lease.
    Requesting,
    /// A lease is held.
    Bound {
        /// The leased address.
        addr: Ipv4Cidr,
        /// The server that granted it.
        server: [u8; 4],
        /// The router it announced.
        router: Option<[u8; 4]>,
    },
}

impl fmt::Display for DhcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhcpState::Off => f.write_str("off"),
            DhcpState::Requesting => f.write_str("requesting"),
            DhcpState::Bound { addr, server, .. } => write!(f, "bound to {addr} from {}", Ipv4Addr::from(*server)),
        }
    }
}

/// A snapshot of the interface (Display: one line for `ifconfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfInfo {
    /// The interface's MAC.
    pub mac: Mac,
    /// Its IPv4 address, if any.
    pub ipv4: Option<Ipv4Cidr>,
    /// Its default gateway, if any.
    pub gateway: Option<[u8; 4]>,
    /// DNS servers learnt from DHCP.
    pub dns: Vec<[u8; 4]>,
    /// The DHCP client.
    pub dhcp: DhcpState,
    /// Frames accepted by [`NetStack::ingress`].
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames refused by [`NetStack::ingress`] (queue full, bad length).
    pub rx_dropped: u64,
    /// Frames produced for [`NetStack::egress`].
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Replies smoltcp produced while the egress queue was full.
    pub tx_dropped: u64,
}

impl fmt::Display for IfInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mac {}", self.mac)?;
        match self.ipv4 {
            Some(c) => write!(f, " inet {c} netmask {}", Ipv4Addr::from(c.netmask()))?,
            None => f.write_str(" inet none")?,
        }
        if let Some(g) = self.gateway {
            write!(f, " gw {}", Ipv4Addr::from(g))?;
        }
        if self.dhcp != DhcpState::Off {
            write!(f, " dhcp {}", self.dhcp)?;
        }
        write!(
            f,
            "  RX packets {} bytes {} dropped {}  TX packets {} bytes {} dropped {}",
            self.rx_packets, self.rx_bytes, self.rx_dropped, self.tx_packets, self.tx_bytes, self.tx_dropped
        )
    }
}

/// An ICMP echo reply matched to a request sent with [`NetStack::ping_send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingReply {
    /// Identifier of the request.
    pub ident: u16,
    /// Sequence number of the request.
    pub seq: u16,
    /// Who answered.
    pub from: [u8; 4],
    /// The reply's IP TTL, when it could be seen.
    pub ttl: Option<u8>,
    /// ICMP message size (header + payload), as `ping` prints it.
    pub bytes: usize,
    /// Round trip: `now_us` of [`NetStack::ping_recv`] minus that of
    /// [`NetStack::ping_send`].
    pub rtt_us: u64,
}

/// How a [`NetStack::source_start`] transfer is going.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceProgress {
    /// Destination address.
    pub dst: [u8; 4],
    /// Destination port.
    pub port: u16,
    /// Bytes to send.
    pub total: u64,
    /// Bytes the peer acknowledged so far.
    pub sent: u64,
    /// All bytes acknowledged.
    pub done: bool,
    /// Why the transfer stopped early (refused, reset, timed out).
    pub error: Option<String>,
    /// `now_ms` of [`NetStack::source_start`].
    pub started_ms: u64,
    /// `now_ms` of the poll that saw the last byte acknowledged.
    pub finished_ms: Option<u64>,
}

// ---------------------------------------------------------------------------
// The queue-backed device

#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    tx_packets: u64,
    tx_bytes: u64,
    tx_dropped: u64,
}

struct QueueRx(Vec<u8>);

impl RxToken for QueueRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct QueueTx<'a>(&'a mut Queues);

impl TxToken for QueueTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        let q = self.0;
        if q.tx.len() < TX_QUEUE {
            q.tx_packets += 1;
            q.tx_bytes += len as u64;
            q.tx.push_back(buf);
        } else {
            q.tx_dropped += 1;
        }
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = QueueRx;
    type TxToken<'a> = QueueTx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(QueueRx, QueueTx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((QueueRx(frame), QueueTx(self)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<QueueTx<'_>> {
        (self.tx.len() < TX_QUEUE).then_some(QueueTx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

// ---------------------------------------------------------------------------
// The stack

#[derive(Debug)]
struct Sink {
    handle: SocketHandle,
    port: u16,
    bytes: u64,
}

#[derive(Debug)]
struct Source {
    handle: SocketHandle,
    progress: SourceProgress,
    enqueued: u64,
    established: bool,
    closing: bool,
}

#[derive(Clone, Copy, Debug)]
struct PingSent {
    ident: u16,
    seq: u16,
    dst: [u8; 4],
    at_us: u64,
}

#[derive(Clone, Copy, Debug)]
struct SeenTtl {
    from: [u8; 4],
    ident: u16,
    seq: u16,
    ttl: u8,
}

/// A TCP connection of [`NetStack::tcp_connect`] or [`NetStack::tcp_listen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHandle(SocketHandle);

/// The state of a [`TcpHandle`], simplified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpStatus {
    /// Waiting for a peer.
    Listening,
    /// Handshake under way.
    Connecting,
    /// Open both ways.
    Established,
    /// The peer closed; received data may remain.
    Closing,
    /// Gone (closed, reset, refused or timed out).
    Closed,
}

/// The hypervisor's IP endpoint. See the module documentation.
pub struct NetStack {
    mac: Mac,
    iface: Interface,
    dev: Queues,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    dhcp_state: DhcpState,
    cidr: Option<Ipv4Cidr>,
    gateway: Option<[u8; 4]>,
    dns: Vec<[u8; 4]>,
    now_ms: u64,
    icmp: Option<(SocketHandle, u16)>,
    pings: VecDeque<PingSent>,
    ttls: VecDeque<SeenTtl>,
    sink: Option<Sink>,
    source: Option<Source>,
    next_port: u16,
    rx_packets: u64,
    rx_bytes: u64,
    rx_dropped: u64,
}

impl fmt::Debug for NetStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetStack").field("info", &self.info()).finish_non_exhaustive()
    }
}

fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

impl NetStack {
    /// A stack with address `mac` configured per `cfg`, at time `now_ms`.
    /// smoltcp's random seed (TCP sequence numbers, ephemeral ports) comes
    /// from the MAC and `now_ms`; use [`NetStack::new_seeded`] to pass real
    /// entropy. A group or all-zero `mac` is replaced by
    /// [`Mac::generated`] (see [`IfInfo::mac`]).
    pub fn new(mac: Mac, cfg: IpConfig, now_ms: u64) -> Self {
        Self::new_seeded(mac, cfg, now_ms, now_ms)
    }

    /// Like [`NetStack::new`], mixing `seed` into smoltcp's random seed.
    pub fn new_seeded(mac: Mac, cfg: IpConfig, now_ms: u64, seed: u64) -> Self {
        let bits = mac.0.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
        let seed = mix64(bits ^ mix64(seed) ^ now_ms.rotate_left(32));
        let mac = if mac.is_multicast() || mac.is_zero() { Mac::generated(seed) } else { mac };
        let mut dev = Queues::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        config.random_seed = seed;
        let now_ms = now_ms.min(MAX_MS);
        let iface = Interface::new(config, &mut dev, Self::instant(now_ms));
        let mut s = NetStack {
            mac,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            dhcp: None,
            dhcp_state: DhcpState::Off,
            cidr: None,
            gateway: None,
            dns: Vec::new(),
            now_ms,
            icmp: None,
            pings: VecDeque::new(),
            ttls: VecDeque::new(),
            sink: None,
            source: None,
            next_port: 49152 + (seed >> 48) as u16 % 16384,
            rx_packets: 0,
            rx_bytes: 0,
            rx_dropped: 0,
        };
        match cfg {
            IpConfig::None => {}
            IpConfig::Static { addr, gateway } => s.set_address(Some(addr), gateway),
            IpConfig::Dhcp => {
                s.dhcp = Some(s.sockets.add(dhcpv4::Socket::new()));
                s.dhcp_state = DhcpState::Requesting;
            }
        }
        s
    }

    fn instant(ms: u64) -> Instant {
        Instant::from_millis(i64::try_from(ms.min(MAX_MS)).unwrap_or(0))
    }

    fn tick(&mut self, now_ms: u64) -> Instant {
        self.now_ms = self.now_ms.max(now_ms.min(MAX_MS));
        Self::instant(self.now_ms)
    }

    fn set_address(&mut self, cidr: Option<Ipv4Cidr>, gateway: Option<[u8; 4]>) {
        self.cidr = cidr;
        self.gateway = gateway;
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(c) = cidr {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Addr::from(c.addr)), c.prefix));
            }
        });
        match gateway {
            Some(g) => {
                let _ = self.iface.routes_mut().add_default_ipv4_route(Ipv4Addr::from(g));
            }
            None => {
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
    }

    /// Hands the stack a received Ethernet frame (copied). Frames shorter
    /// than a header, longer than 1518 bytes, or arriving while
    /// [`RX_QUEUE`] frames wait are dropped and counted.
    pub fn ingress(&mut self, frame: &[u8]) {
        if frame.len() < 14 || frame.len() > MAX_FRAME + 4 || self.dev.rx.len() >= RX_QUEUE {
            self.rx_dropped += 1;
            return;
        }
        self.rx_packets += 1;
        self.rx_bytes += frame.len() as u64;
        if self.icmp.is_some() {
            if let Some(seen) = echo_reply_ttl(frame, self.mac) {
                if self.ttls.len() >= PING_MEMORY {
                    self.ttls.pop_front();
                }
                self.ttls.push_back(seen);
            }
        }
        self.dev.rx.push_back(frame.to_vec());
    }

    /// The next frame the stack wants sent, oldest first.
    pub fn egress(&mut self) -> Option<Vec<u8>> {
        self.dev.tx.pop_front()
    }

    /// Runs smoltcp: processes received frames, timers, DHCP, the TCP sink
    /// and source, and queues frames for [`NetStack::egress`].
    pub fn poll(&mut self, now_ms: u64) {
        let now = self.tick(now_ms);
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.service();
        // Send what servicing queued (new data, FINs, DHCP changes).
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.service();
    }

    /// How long the caller may wait before the next [`NetStack::poll`]
    /// (0: now; `None`: only when a frame arrives or a socket call is made).
    pub fn poll_delay_ms(&mut self, now_ms: u64) -> Option<u64> {
        let now = self.tick(now_ms);
        if !self.dev.rx.is_empty() {
            return Some(0);
        }
        self.iface.poll_delay(now, &self.sockets).map(|d| d.total_millis())
    }

    fn service(&mut self) {
        self.service_dhcp();
        self.service_sink();
        self.service_source();
    }

    fn service_dhcp(&mut self) {
        let Some(h) = self.dhcp else { return };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            None => return,
            Some(dhcpv4::Event::Deconfigured) => None,
            Some(dhcpv4::Event::Configured(c)) => Some((
                Ipv4Cidr { addr: c.address.address().octets(), prefix: c.address.prefix_len().min(32) },
                c.server.address.octets(),
                c.router.map(|r| r.octets()),
                c.dns_servers.iter().map(|d| d.octets()).collect::<Vec<_>>(),
            )),
        };
        match event {
            None => {
                self.set_address(None, None);
                self.dns.clear();
                self.dhcp_state = DhcpState::Requesting;
            }
            Some((addr, server, router, dns)) => {
                self.set_address(Some(addr), router);
                self.dns = dns;
                self.dhcp_state = DhcpState::Bound { addr, server, router };
            }
        }
    }

    /// A snapshot of the interface.
    pub fn info(&self) -> IfInfo {
        IfInfo {
            mac: self.mac,
            ipv4: self.cidr,
            gateway: self.gateway,
            dns: self.dns.clone(),
            dhcp: self.dhcp_state,
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            rx_dropped: self.rx_dropped,
            tx_packets: self.dev.tx_packets,
            tx_bytes: self.dev.tx_bytes,
            tx_dropped: self.dev.tx_dropped,
        }
    }

    /// Checks that `dst` can be reached from this stack.
    fn check_route(&self, dst: [u8; 4]) -> Result<(), String> {
        let ip = Ipv4Addr::from(dst);
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(format!("{ip} is not a unicast address"));
        }
        let Some(cidr) = self.cidr else {
            return Err(String::from(if self.dhcp_state == DhcpState::Requesting {
                "no IPv4 address yet (DHCP is still requesting one)"
            } else {
                "no IPv4 address configured"
            }));
        };
        if dst == cidr.addr {
            return Err(format!("{ip} is this stack's own address"));
        }
        if !cidr.contains(dst) && self.gateway.is_none() {
            return Err(format!("no route to {ip} (not in {cidr} and no gateway)"));
        }
        Ok(())
    }

    // -- ping --------------------------------------------------------------

    /// Queues an ICMP echo request to `dst` with `payload_len` bytes of
    /// payload (at most [`MAX_PING_PAYLOAD`]); it leaves on the next
    /// [`NetStack::poll`] (after ARP, if needed). `now_us` is remembered to
    /// compute the round trip.
    pub fn ping_send(
        &mut self,
        dst: [u8; 4],
        ident: u16,
        seq: u16,
        payload_len: usize,
        now_us: u64,
    ) -> Result<(), String> {
        if payload_len > MAX_PING_PAYLOAD {
            return Err(format!("payload of {payload_len} bytes is too large (at most {MAX_PING_PAYLOAD})"));
        }
        self.check_route(dst)?;
        let handle = match self.icmp {
            Some((h, id)) if id == ident => h,
            old => {
                if let Some((h, _)) = old {
                    self.sockets.remove(h);
                }
                let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 16 * (MTU - 20)]);
                let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 8 * (MTU - 20)]);
                let mut sock = icmp::Socket::new(rx, tx);
                sock.bind(icmp::Endpoint::Ident(ident)).map_err(|e| format!("ICMP socket: {e}"))?;
                let h = self.sockets.add(sock);
                self.icmp = Some((h, ident));
                h
            }
        };
        let data: Vec<u8> = (0..payload_len).map(|i| pattern_byte(i as u64)).collect();
        let repr = Icmpv4Repr::EchoRequest { ident, seq_no: seq, data: &data };
        let sock = self.sockets.get_mut::<icmp::Socket>(handle);
        let buf = sock
            .send(repr.buffer_len(), IpAddress::Ipv4(Ipv4Addr::from(dst)))
            .map_err(|e| format!("cannot queue echo request: {e}"))?;
        repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &ChecksumCapabilities::default());
        if self.pings.len() >= PING_MEMORY {
            self.pings.pop_front();
        }
        self.pings.push_back(PingSent { ident, seq, dst, at_us: now_us });
        Ok(())
    }

    /// The next echo reply that matches one of the last 64 requests sent
    /// (duplicates included); anything else is discarded. `now_us` is on
    /// the same clock as [`NetStack::ping_send`]'s.
    pub fn ping_recv(&mut self, now_us: u64) -> Option<PingReply> {
        let (h, _) = self.icmp?;
        loop {
            let (data, from) = self.sockets.get_mut::<icmp::Socket>(h).recv().ok()?;
            let Some(from) = ipv4_octets(from) else { continue };
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else { continue };
            let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv4Repr::parse(&pkt, &ChecksumCapabilities::default())
            else {
                continue;
            };
            let bytes = data.len();
            let Some(sent) = self.pings.iter().rev().find(|p| p.ident == ident && p.seq == seq_no && p.dst == from)
            else {
                continue;
            };
            let rtt_us = now_us.saturating_sub(sent.at_us);
            let ttl = self
                .ttls
                .iter()
                .position(|t| t.from == from && t.ident == ident && t.seq == seq_no)
                .and_then(|i| self.ttls.remove(i))
                .map(|t| t.ttl);
            return Some(PingReply { ident, seq: seq_no, from, ttl, bytes, rtt_us });
        }
    }

    // -- TCP sink ----------------------------------------------------------

    /// Listens on TCP `port`, reading and discarding everything and
    /// counting the bytes; after each connection closes it listens again
    /// (one connection at a time). Resets the byte count. A new port
    /// replaces the old one (aborting its connection); port 0 stops the
    /// sink.
    pub fn sink_listen(&mut self, port: u16) {
        if let Some(old) = self.sink.take() {
            let sock = self.sockets.get_mut::<tcp::Socket>(old.handle);
            if port != 0 && old.port == port {
                self.sink = Some(Sink { bytes: 0, ..old });
                return;
            }
            sock.abort();
            if port == 0 {
                // Keep the socket so its RST goes out; it is reused later.
                self.sink = Some(Sink { port: 0, bytes: 0, ..old });
                return;
            }
            self.sink = Some(Sink { port, bytes: 0, ..old });
        } else if port != 0 {
            let sock =
                tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_BUFFER]), tcp::SocketBuffer::new(vec![0; 1024]));
            let handle = self.sockets.add(sock);
            self.sink = Some(Sink { handle, port, bytes: 0 });
        }
        self.service_sink();
    }

    /// Bytes the sink has received since the last [`NetStack::sink_listen`].
    pub fn sink_bytes(&self) -> u64 {
        self.sink.as_ref().map_or(0, |s| s.bytes)
    }

    fn service_sink(&mut self) {
        let Some(sink) = self.sink.as_mut() else { return };
        let sock = self.sockets.get_mut::<tcp::Socket>(sink.handle);
        while sock.can_recv() {
            match sock.recv(|b| (b.len(), b.len())) {
                Ok(n) if n > 0 => sink.bytes += n as u64,
                _ => break,
            }
        }
        match sock.state() {
            tcp::State::CloseWait => sock.close(),
            _ if !sock.is_open() && sink.port != 0 => {
                sock.set_timeout(Some(TCP_TIMEOUT));
                let _ = sock.listen(sink.port);
            }
            _ => {}
        }
    }

    // -- TCP connections -----------------------------------------------------

    /// Opens a TCP connection to `dst:port` (64 KiB buffers each way, 10 s
    /// without progress closes it). Drive it with [`NetStack::poll`].
    pub fn tcp_connect(&mut self, dst: [u8; 4], port: u16, now_ms: u64) -> Result<TcpHandle, String> {
        if port == 0 {
            return Err(String::from("port 0 is not a valid destination"));
        }
        self.check_route(dst)?;
        self.tick(now_ms);
        let handle = self.sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_CLIENT_RX_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        ));
        let local_port = self.next_port;
        self.next_port = self.next_port.checked_add(1).unwrap_or(49152);
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        sock.set_timeout(Some(TCP_TIMEOUT));
        // Idle connections (an NFS mount between commands) stay up: the
        // keep-alives are answered, so the timeout only ends dead peers.
        sock.set_keep_alive(Some(TCP_KEEPALIVE));
        if let Err(e) = sock.connect(self.iface.context(), (IpAddress::Ipv4(Ipv4Addr::from(dst)), port), local_port) {
            self.sockets.remove(handle);
            return Err(format!("cannot connect to {}:{port}: {e}", Ipv4Addr::from(dst)));
        }
        Ok(TcpHandle(handle))
    }

    /// Listens on `port` for one connection (64 KiB buffers).
    pub fn tcp_listen(&mut self, port: u16) -> Result<TcpHandle, String> {
        let handle = self.sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        ));
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        sock.set_timeout(Some(TCP_TIMEOUT));
        sock.set_keep_alive(Some(TCP_KEEPALIVE));
        if let Err(e) = sock.listen(port) {
            self.sockets.remove(handle);
            return Err(format!("cannot listen on port {port}: {e}"));
        }
        Ok(TcpHandle(handle))
    }

    /// Where a connection stands (`Closing`: either side has closed but the
    /// connection is not gone; received data may remain).
    pub fn tcp_status(&mut self, h: TcpHandle) -> TcpStatus {
        let sock = self.sockets.get_mut::<tcp::Socket>(h.0);
        match sock.state() {
            tcp::State::Listen => TcpStatus::Listening,
            tcp::State::SynSent | tcp::State::SynReceived => TcpStatus::Connecting,
            tcp::State::Established => TcpStatus::Established,
            tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::FinWait1
            | tcp::State::FinWait2
            | tcp::State::Closing => TcpStatus::Closing,
            tcp::State::Closed | tcp::State::TimeWait => TcpStatus::Closed,
        }
    }

    /// The peer of a connection (once it has one).
    pub fn tcp_remote(&mut self, h: TcpHandle) -> Option<([u8; 4], u16)> {
        let ep = self.sockets.get_mut::<tcp::Socket>(h.0).remote_endpoint()?;
        match ep.addr {
            IpAddress::Ipv4(a) => Some((a.octets(), ep.port)),
        }
    }

    /// Room left in the send buffer.
    pub fn tcp_send_room(&mut self, h: TcpHandle) -> usize {
        let sock = self.sockets.get_mut::<tcp::Socket>(h.0);
        sock.send_capacity() - sock.send_queue()
    }

    /// Queues bytes to send; returns how many were taken (0 when the send
    /// buffer is full or the connection cannot send).
    pub fn tcp_send(&mut self, h: TcpHandle, data: &[u8]) -> usize {
        let sock = self.sockets.get_mut::<tcp::Socket>(h.0);
        if !sock.may_send() {
            return 0;
        }
        sock.send_slice(data).unwrap_or(0)
    }

    /// Takes received bytes into `buf`; returns how many.
    pub fn tcp_recv(&mut self, h: TcpHandle, buf: &mut [u8]) -> usize {
        let sock = self.sockets.get_mut::<tcp::Socket>(h.0);
        if !sock.can_recv() {
            return 0;
        }
        sock.recv_slice(buf).unwrap_or(0)
    }

    /// Closes the sending side (the peer sees end of stream).
    pub fn tcp_close(&mut self, h: TcpHandle) {
        self.sockets.get_mut::<tcp::Socket>(h.0).close();
    }

    /// Drops a connection at once (RST if it was open) and frees it; the
    /// handle must not be used again.
    pub fn tcp_release(&mut self, h: TcpHandle) {
        self.sockets.get_mut::<tcp::Socket>(h.0).abort();
        self.sockets.remove(h.0);
    }

    // -- TCP source --------------------------------------------------------

    /// Connects to `dst:port` and sends `bytes` bytes of a fixed pattern
    /// (byte `i` is `i % 251`), then closes. Progress with
    /// [`NetStack::source_progress`]. Fails if a transfer is still running.
    pub fn source_start(&mut self, dst: [u8; 4], port: u16, bytes: u64, now_ms: u64) -> Result<(), String> {
        if bytes == 0 {
            return Err(String::from("nothing to send (0 bytes)"));
        }
        if port == 0 {
            return Err(String::from("port 0 is not a valid destination"));
        }
        self.check_route(dst)?;
        let handle = match self.source.take() {
            Some(old) if !old.progress.done && old.progress.error.is_none() => {
                let p = &old.progress;
                let msg = format!("a transfer to {}:{} is still running", Ipv4Addr::from(p.dst), p.port);
                self.source = Some(old);
                return Err(msg);
            }
            Some(old) => old.handle,
            None => self.sockets.add(tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 1024]),
                tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            )),
        };
        self.tick(now_ms);
        let now_ms = self.now_ms;
        let local_port = self.next_port;
        self.next_port = self.next_port.checked_add(1).unwrap_or(49152);
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        sock.abort();
        sock.set_timeout(Some(TCP_TIMEOUT));
        let progress = SourceProgress {
            dst,
            port,
            total: bytes,
            sent: 0,
            done: false,
            error: None,
            started_ms: now_ms,
            finished_ms: None,
        };
        let mut src = Source { handle, progress, enqueued: 0, established: false, closing: false };
        let r = sock.connect(self.iface.context(), (IpAddress::Ipv4(Ipv4Addr::from(dst)), port), local_port);
        if let Err(e) = r {
            src.progress.error = Some(format!("connect: {e}"));
            self.source = Some(src);
            return Err(format!("cannot connect to {}:{port}: {e}", Ipv4Addr::from(dst)));
        }
        self.source = Some(src);
        Ok(())
    }

    /// The last transfer started with [`NetStack::source_start`], if any.
    pub fn source_progress(&self) -> Option<SourceProgress> {
        self.source.as_ref().map(|s| s.progress.clone())
    }

    fn service_source(&mut self) {
        let now_ms = self.now_ms;
        let Some(src) = self.source.as_mut() else { return };
        if src.progress.done || src.progress.error.is_some() {
            return;
        }
        let sock = self.sockets.get_mut::<tcp::Socket>(src.handle);
        let state = sock.state();
        if state == tcp::State::Closed {
            src.progress.error = Some(if src.established {
                format!("connection reset or timed out after {} bytes", src.progress.sent)
            } else {
                String::from("connection refused or timed out")
            });
            return;
        }
        if matches!(state, tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen) {
            return;
        }
        src.established = true;
        let total = src.progress.total;
        while src.enqueued < total && sock.can_send() {
            let start = src.enqueued;
            let want = total - start;
            let r = sock.send(|buf| {
                let n = buf.len().min(usize::try_from(want).unwrap_or(usize::MAX));
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = pattern_byte(start + i as u64);
                }
                (n, n)
            });
            match r {
                Ok(n) if n > 0 => src.enqueued += n as u64,
                _ => break,
            }
        }
        if src.enqueued == total && !src.closing {
            sock.close();
            src.closing = true;
        }
        src.progress.sent = src.enqueued.saturating_sub(sock.send_queue() as u64);
        if src.progress.sent == total {
            src.progress.done = true;
            src.progress.finished_ms = Some(now_ms);
        }
    }
}

/// The octets of an IPv4 address (`None` for other families, should a
/// feature-unified smoltcp have them).
#[allow(unreachable_patterns)]
fn ipv4_octets(a: IpAddress) -> Option<[u8; 4]> {
    match a {
        IpAddress::Ipv4(v4) => Some(v4.octets()),
        _ => None,
    }
}

/// If `frame` is an IPv4 ICMP echo reply to `mac`, its source, ident, seq
/// and TTL. Reads only within bounds.
fn echo_reply_ttl(frame: &[u8], mac: Mac) -> Option<SeenTtl> {
    if frame.get(0..6)? != mac.0 || frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let vihl = *ip.first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    if vihl >> 4 != 4 || ihl < 20 || *ip.get(9)? != 1 || frag & 0x3fff != 0 {
        return None;
    }
    let ttl = *ip.get(8)?;
    let from: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    let icmp = ip.get(ihl..)?;
    if icmp.get(0..2)? != [0, 0] {
        return None;
    }
    let ident = u16::from_be_bytes(icmp.get(4..6)?.try_into().ok()?);
    let seq = u16::from_be_bytes(icmp.get(6..8)?.try_into().ok()?);
    Some(SeenTtl { from, ident, seq, ttl })
}

#[cfg(test)]
mod tests;
