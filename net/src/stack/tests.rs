//! Host tests: stacks wired back to back with a fake clock.

use super::*;
use alloc::string::ToString;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

const MAC_A: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xa]);
const MAC_B: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xb]);
const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];

fn cidr(addr: [u8; 4], prefix: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(addr, prefix).unwrap()
}

fn fixed(addr: [u8; 4]) -> IpConfig {
    IpConfig::Static { addr: cidr(addr, 24), gateway: None }
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

/// Two stacks on one wire, a fake clock in ms, and a log of frames moved.
struct Pair {
    a: NetStack,
    b: NetStack,
    t: u64,
    a_to_b: Vec<Vec<u8>>,
    b_to_a: Vec<Vec<u8>>,
}

impl Pair {
    fn new() -> Self {
        Pair {
            a: NetStack::new(MAC_A, fixed(IP_A), 0),
            b: NetStack::new(MAC_B, fixed(IP_B), 0),
            t: 0,
            a_to_b: Vec::new(),
            b_to_a: Vec::new(),
        }
    }

    /// One round: both poll, frames cross, time advances by 1 ms.
    fn step(&mut self) {
        self.a.poll(self.t);
        while let Some(f) = self.a.egress() {
            self.b.ingress(&f);
            if self.a_to_b.len() < 64 {
                self.a_to_b.push(f);
            }
        }
        self.b.poll(self.t);
        while let Some(f) = self.b.egress() {
            self.a.ingress(&f);
            if self.b_to_a.len() < 64 {
                self.b_to_a.push(f);
            }
        }
        self.t += 1;
    }

    fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..max_steps {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

#[test]
fn arp_resolves_and_ping_replies_in_order() {
    let mut p = Pair::new();
    let mut replies = Vec::new();
    for seq in 1..=5u16 {
        // The µs clock for RTTs: the fake ms clock * 1000 + a bit.
        p.a.ping_send(IP_B, 0x4242, seq, 56, p.t * 1000).unwrap();
        let got = p.run_until(50, |p| {
            if let Some(r) = p.a.ping_recv(p.t * 1000 + 7) {
                replies.push(r);
                true
            } else {
                false
            }
        });
        assert!(got, "no reply to seq {seq}");
    }
    // The first frame A sent was an ARP request (broadcast), answered by B.
    let first = &p.a_to_b[0];
    assert_eq!(ethertype(first), 0x0806);
    assert_eq!(&first[..6], &[0xff; 6]);
    assert!(p.b_to_a.iter().any(|f| ethertype(f) == 0x0806 && f[..6] == MAC_A.0));
    assert_eq!(replies.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    for r in &replies {
        assert_eq!((r.from, r.ident, r.bytes, r.ttl), (IP_B, 0x4242, 64, Some(64)));
        assert!(r.rtt_us >= 7 && r.rtt_us < 50_000, "rtt {}", r.rtt_us);
    }
    // B answered by itself; both counted traffic.
    let (ia, ib) = (p.a.info(), p.b.info());
    assert!(ia.tx_packets >= 6 && ib.rx_packets >= 6 && ia.rx_packets >= 6);
    assert_eq!(ia.rx_dropped + ib.rx_dropped, 0);
    assert!(p.a.ping_recv(p.t * 1000).is_none());
}

#[test]
fn ping_with_new_ident_and_big_payload() {
    let mut p = Pair::new();
    p.a.ping_send(IP_B, 1, 1, 0, 0).unwrap();
    assert!(p.run_until(50, |p| p.a.ping_recv(0).is_some_and(|r| r.seq == 1 && r.bytes == 8)));
    p.a.ping_send(IP_B, 2, 9, MAX_PING_PAYLOAD, 0).unwrap();
    let mut got = None;
    assert!(p.run_until(50, |p| {
        got = p.a.ping_recv(0);
        got.is_some()
    }));
    let r = got.unwrap();
    assert_eq!((r.ident, r.seq, r.bytes), (2, 9, MAX_PING_PAYLOAD + 8));
}

#[test]
fn ping_errors() {
    let mut a = NetStack::new(MAC_A, fixed(IP_A), 0);
    let e = a.ping_send(IP_B, 1, 1, MAX_PING_PAYLOAD + 1, 0).unwrap_err();
    assert!(e.contains("too large"), "{e}");
    let e = a.ping_send([8, 8, 8, 8], 1, 1, 56, 0).unwrap_err();
    assert!(e.contains("no route"), "{e}");
    for bad in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1], [127, 0, 0, 1]] {
        assert!(a.ping_send(bad, 1, 1, 56, 0).is_err());
    }
    assert!(a.ping_send(IP_A, 1, 1, 56, 0).unwrap_err().contains("own address"));
    let mut n = NetStack::new(MAC_A, IpConfig::None, 0);
    assert!(n.ping_send(IP_B, 1, 1, 56, 0).unwrap_err().contains("no IPv4 address"));
    let mut d = NetStack::new(MAC_A, IpConfig::Dhcp, 0);
    assert!(d.ping_send(IP_B, 1, 1, 56, 0).unwrap_err().contains("DHCP"));
    // With a gateway, off-subnet destinations are fine (queued for the gateway).
    let gw = IpConfig::Static { addr: cidr(IP_A, 24), gateway: Some([10, 0, 0, 254]) };
    let mut g = NetStack::new(MAC_A, gw, 0);
    g.ping_send([8, 8, 8, 8], 1, 1, 56, 0).unwrap();
    g.poll(1);
    let f = g.egress().unwrap();
    assert_eq!(ethertype(&f), 0x0806);
    assert_eq!(&f[38..42], &[10, 0, 0, 254], "ARP for the gateway");
    // The send queue is bounded.
    let mut full = false;
    for seq in 0..100 {
        if g.ping_send([8, 8, 8, 8], 1, seq, 1000, 0).is_err() {
            full = true;
            break;
        }
    }
    assert!(full);
}

#[test]
fn tcp_sink_receives_exactly_what_the_source_sends() {
    let mut p = Pair::new();
    p.b.sink_listen(5001);
    const N: u64 = 1 << 20;
    p.a.source_start(IP_B, 5001, N, p.t).unwrap();
    assert!(p.a.source_start(IP_B, 5001, N, p.t).unwrap_err().contains("still running"));
    assert!(p.run_until(20_000, |p| p.a.source_progress().unwrap().done), "{:?}", p.a.source_progress());
    assert!(p.t < 200, "1 MiB took {} rounds", p.t);
    p.run_until(100, |_| false);
    let prog = p.a.source_progress().unwrap();
    assert_eq!((prog.sent, prog.total, prog.error.clone()), (N, N, None));
    assert!(prog.finished_ms.unwrap() >= prog.started_ms);
    assert_eq!(p.b.sink_bytes(), N);

    // The sink listens again: a second transfer (after the first is done).
    p.b.sink_listen(5001);
    assert_eq!(p.b.sink_bytes(), 0);
    p.a.source_start(IP_B, 5001, 100_000, p.t).unwrap();
    assert!(p.run_until(20_000, |p| p.a.source_progress().unwrap().done));
    p.run_until(100, |_| false);
    assert_eq!(p.b.sink_bytes(), 100_000);
    assert_eq!(p.a.info().rx_dropped + p.b.info().rx_dropped, 0);
}

#[test]
fn sink_sees_the_pattern() {
    // Check the bytes themselves with a sink replaced by a raw smoltcp socket.
    let mut p = Pair::new();
    let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 64]));
    sock.listen(7000).unwrap();
    let h = p.b.sockets.add(sock);
    p.a.source_start(IP_B, 7000, 300_000, 0).unwrap();
    let mut got: Vec<u8> = Vec::new();
    p.run_until(20_000, |p| {
        let s = p.b.sockets.get_mut::<tcp::Socket>(h);
        while let Ok(n) = s.recv(|b| {
            got.extend_from_slice(b);
            (b.len(), b.len())
        }) {
            if n == 0 {
                break;
            }
        }
        got.len() == 300_000
    });
    assert_eq!(got.len(), 300_000);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[test]
fn source_to_a_closed_port_fails() {
    let mut p = Pair::new();
    p.a.source_start(IP_B, 9, 1000, 0).unwrap();
    assert!(p.run_until(200, |p| p.a.source_progress().unwrap().error.is_some()));
    let prog = p.a.source_progress().unwrap();
    assert!(prog.error.unwrap().contains("refused"));
    assert!(!prog.done && prog.sent == 0);
    // A new transfer may start after a failed one.
    p.b.sink_listen(9);
    p.a.source_start(IP_B, 9, 1000, p.t).unwrap();
    assert!(p.run_until(200, |p| p.a.source_progress().unwrap().done));
}

#[test]
fn source_to_a_silent_host_times_out() {
    let mut a = NetStack::new(MAC_A, fixed(IP_A), 0);
    a.source_start(IP_B, 5001, 1000, 0).unwrap();
    let mut t = 0;
    while t < 60_000 && a.source_progress().unwrap().error.is_none() {
        a.poll(t);
        while a.egress().is_some() {}
        t += 100;
    }
    assert!(a.source_progress().unwrap().error.is_some(), "still trying after {t} ms");
}

#[test]
fn source_argument_errors() {
    let mut a = NetStack::new(MAC_A, fixed(IP_A), 0);
    assert!(a.source_start(IP_B, 5001, 0, 0).is_err());
    assert!(a.source_start(IP_B, 0, 10, 0).is_err());
    assert!(a.source_start([1, 2, 3, 4], 5001, 10, 0).is_err());
    assert!(a.source_progress().is_none());
}

#[test]
fn sink_port_changes_and_stops() {
    let mut p = Pair::new();
    p.b.sink_listen(1000);
    p.b.sink_listen(2000);
    p.a.source_start(IP_B, 1000, 10, 0).unwrap();
    assert!(p.run_until(200, |p| p.a.source_progress().unwrap().error.is_some()));
    p.a.source_start(IP_B, 2000, 10, p.t).unwrap();
    assert!(p.run_until(200, |p| p.a.source_progress().unwrap().done));
    p.run_until(20, |_| false);
    assert_eq!(p.b.sink_bytes(), 10);
    p.b.sink_listen(0);
    p.a.source_start(IP_B, 2000, 10, p.t).unwrap();
    assert!(p.run_until(200, |p| p.a.source_progress().unwrap().error.is_some()));
}

/// Frames that are garbage, or valid headers cut short, or lies about lengths.
fn nasty_frames(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..3000 {
        let len = (rng.next() % 1600) as usize;
        out.push((0..len).map(|_| rng.next() as u8).collect());
    }
    // Valid Ethernet header to B, then random IPv4/ARP-ish content.
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&MAC_B.0);
    hdr.extend_from_slice(&MAC_A.0);
    for ty in [[0x08, 0x00], [0x08, 0x06], [0x86, 0xdd], [0x81, 0x00]] {
        for len in 0..80 {
            let mut f = hdr.clone();
            f.extend_from_slice(&ty);
            f.extend((0..len).map(|_| rng.next() as u8));
            if ty == [0x08, 0x00] && len > 0 {
                f[14] = 0x45;
            }
            out.push(f);
        }
    }
    // Plausible IPv4 headers with lying length/ihl fields, for each protocol.
    for proto in [1u8, 6, 17, 2, 255] {
        for _ in 0..200 {
            let mut f = hdr.clone();
            f.extend_from_slice(&[0x08, 0x00]);
            let ihl = (rng.next() % 16) as u8;
            let total = (rng.next() % 2000) as u16;
            let mut ip = vec![0x40 | ihl, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, proto, 0, 0];
            ip.extend_from_slice(&IP_A);
            ip.extend_from_slice(&IP_B);
            let extra = (rng.next() % 60) as usize;
            ip.extend((0..extra).map(|_| rng.next() as u8));
            f.extend_from_slice(&ip);
            out.push(f);
        }
    }
    // Broadcast garbage, and oversized/undersized frames.
    for len in [0usize, 1, 13, 14, 15, 1519, 4000] {
        let mut f = vec![0xffu8; len];
        if len > 13 {
            f[12] = 0x08;
            f[13] = 0x06;
        }
        out.push(f);
    }
    out
}

#[test]
fn garbage_frames_are_ignored() {
    let mut p = Pair::new();
    let mut rng = Rng(0xfeed_beef_1234_5678);
    let frames = nasty_frames(&mut rng);
    for chunk in frames.chunks(200) {
        for f in chunk {
            p.b.ingress(f);
        }
        p.b.poll(p.t);
        while p.b.egress().is_some() {}
        p.t += 1;
    }
    // Still works afterwards.
    p.a.ping_send(IP_B, 7, 1, 56, 0).unwrap();
    assert!(p.run_until(50, |p| p.a.ping_recv(0).is_some()));
    assert!(p.b.info().rx_dropped >= 4);
}

#[test]
fn garbage_with_dhcp_and_sockets_open() {
    let mut s = NetStack::new(MAC_B, IpConfig::Dhcp, 0);
    s.sink_listen(5001);
    let mut rng = Rng(42);
    let frames = nasty_frames(&mut rng);
    for (i, f) in frames.iter().enumerate() {
        s.ingress(f);
        if i % 100 == 0 {
            s.poll(i as u64);
            while s.egress().is_some() {}
        }
    }
    s.poll(1_000_000);
    assert_eq!(s.info().dhcp, DhcpState::Requesting);
}

#[test]
fn ingress_queue_is_bounded() {
    let mut b = NetStack::new(MAC_B, fixed(IP_B), 0);
    let f = vec![0u8; 60];
    for _ in 0..300 {
        b.ingress(&f);
    }
    let i = b.info();
    assert_eq!((i.rx_packets, i.rx_dropped), (RX_QUEUE as u64, 300 - RX_QUEUE as u64));
    assert_eq!(b.poll_delay_ms(0), Some(0));
    b.poll(1);
    b.ingress(&f);
    assert_eq!(b.info().rx_packets, RX_QUEUE as u64 + 1);
}

#[test]
fn egress_queue_is_bounded() {
    // A caller that never drains: smoltcp is held back, memory stays bounded.
    let mut a = NetStack::new(MAC_A, fixed(IP_A), 0);
    for seq in 0..2000u16 {
        let _ = a.ping_send([10, 0, 0, (seq % 200 + 3) as u8], 1, seq, 100, 0);
        a.poll(u64::from(seq));
    }
    assert!(a.dev.tx.len() <= TX_QUEUE);
}

#[test]
fn time_going_backwards_is_harmless() {
    let mut p = Pair::new();
    p.b.sink_listen(80);
    p.a.source_start(IP_B, 80, 50_000, 0).unwrap();
    for i in 0..400u64 {
        let t = if i % 3 == 0 { 0 } else { i * 7 };
        p.a.poll(t);
        while let Some(f) = p.a.egress() {
            p.b.ingress(&f);
        }
        p.b.poll(u64::MAX - i);
        while let Some(f) = p.b.egress() {
            p.a.ingress(&f);
        }
    }
    let _ = p.a.poll_delay_ms(0);
    let _ = p.b.poll_delay_ms(u64::MAX);
}

#[test]
fn poll_delay() {
    let mut a = NetStack::new(MAC_A, fixed(IP_A), 0);
    a.poll(0);
    assert_eq!(a.poll_delay_ms(0), None, "idle static stack has no timers");
    let mut d = NetStack::new(MAC_A, IpConfig::Dhcp, 0);
    d.poll(0);
    let delay = d.poll_delay_ms(0).expect("DHCP retransmit timer");
    assert!(delay > 0 && delay <= 60_000, "{delay}");
}

#[test]
fn invalid_mac_is_replaced() {
    for m in [Mac::BROADCAST, Mac::ZERO, Mac([0x01, 0, 0x5e, 0, 0, 1])] {
        let s = NetStack::new(m, IpConfig::None, 5);
        let got = s.info().mac;
        assert!(got.is_unicast() && !got.is_zero() && got.is_locally_administered(), "{got}");
    }
    assert_eq!(NetStack::new(MAC_A, IpConfig::None, 0).info().mac, MAC_A);
}

#[test]
fn info_display() {
    let s = NetStack::new(
        Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        IpConfig::Static { addr: cidr([10, 0, 2, 15], 24), gateway: Some([10, 0, 2, 2]) },
        0,
    );
    let line = s.info().to_string();
    assert!(
        line.starts_with("mac 52:54:00:12:34:56 inet 10.0.2.15/24 netmask 255.255.255.0 gw 10.0.2.2  RX packets 0"),
        "{line}"
    );
    let mut other = s.info();
    other.ipv4 = Some(cidr([172, 16, 1, 9], 20));
    assert!(other.to_string().contains("inet 172.16.1.9/20 netmask 255.255.240.0 gw"), "{other}");
    assert!(!line.contains('\n'));
    let d = NetStack::new(MAC_A, IpConfig::Dhcp, 0);
    assert!(d.info().to_string().contains("inet none dhcp requesting"));
    let n = NetStack::new(MAC_A, IpConfig::None, 0);
    assert!(!n.info().to_string().contains("dhcp"));
    assert!(!n.info().to_string().contains("netmask"), "no address, no mask");
}

// -- DHCP ----------------------------------------------------------------------

const SERVER_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

struct Dhcp {
    dst: [u8; 6],
    kind: DhcpMessageType,
    xid: u32,
    client: EthernetAddress,
    requested: Option<Ipv4Addr>,
}

fn parse_dhcp(frame: &[u8]) -> Option<Dhcp> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    if (udp.src_port(), udp.dst_port()) != (68, 67) {
        return None;
    }
    let pkt = DhcpPacket::new_checked(udp.payload()).ok()?;
    let r = DhcpRepr::parse(&pkt).ok()?;
    Some(Dhcp {
        dst: eth.dst_addr().0,
        kind: r.message_type,
        xid: r.transaction_id,
        client: r.client_hardware_address,
        requested: r.requested_ip,
    })
}

fn dhcp_reply(kind: DhcpMessageType, xid: u32, client: EthernetAddress) -> Vec<u8> {
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: client,
        client_ip: Ipv4Addr::UNSPECIFIED,
        your_ip: OFFERED,
        server_ip: SERVER_IP,
        router: Some(SERVER_IP),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(SERVER_IP),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: Some(3600),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let dhcp_len = repr.buffer_len();
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; 14 + 20 + 8 + dhcp_len];
    EthernetRepr { src_addr: SERVER_MAC, dst_addr: EthernetAddress::BROADCAST, ethertype: EthernetProtocol::Ipv4 }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    Ipv4Repr {
        src_addr: SERVER_IP,
        dst_addr: Ipv4Addr::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dhcp_len,
        hop_limit: 64,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut buf[14..34]), &caps);
    UdpRepr { src_port: 67, dst_port: 68 }.emit(
        &mut UdpPacket::new_unchecked(&mut buf[34..]),
        &IpAddress::Ipv4(SERVER_IP),
        &IpAddress::Ipv4(Ipv4Addr::BROADCAST),
        dhcp_len,
        |p| repr.emit(&mut DhcpPacket::new_unchecked(p)).unwrap(),
        &caps,
    );
    buf
}

#[test]
fn dhcp_discover_is_broadcast_and_state_is_requesting() {
    let mut s = NetStack::new(MAC_A, IpConfig::Dhcp, 0);
    assert_eq!(s.info().dhcp, DhcpState::Requesting);
    s.poll(0);
    let f = s.egress().expect("a DHCPDISCOVER");
    let d = parse_dhcp(&f).expect("a DHCP frame");
    assert_eq!(d.dst, [0xff; 6]);
    assert_eq!(&f[6..12], &MAC_A.0);
    assert_eq!(d.kind, DhcpMessageType::Discover);
    assert_eq!(d.client.0, MAC_A.0);
    // Nobody answers: still requesting, and it retries.
    let mut discovers = 1;
    for t in 1..=30_000u64 {
        s.poll(t);
        while let Some(f) = s.egress() {
            if parse_dhcp(&f).is_some_and(|d| d.kind == DhcpMessageType::Discover) {
                discovers += 1;
            }
        }
    }
    assert!(discovers >= 2);
    assert_eq!(s.info().dhcp, DhcpState::Requesting);
    assert_eq!(s.info().ipv4, None);
}

#[test]
fn dhcp_full_exchange_binds() {
    let mut s = NetStack::new(MAC_A, IpConfig::Dhcp, 0);
    let mut t = 0;
    let mut bound = false;
    let mut seen = Vec::new();
    while t < 5000 && !bound {
        s.poll(t);
        while let Some(f) = s.egress() {
            if let Some(d) = parse_dhcp(&f) {
                seen.push(d.kind);
                match d.kind {
                    DhcpMessageType::Discover => s.ingress(&dhcp_reply(DhcpMessageType::Offer, d.xid, d.client)),
                    DhcpMessageType::Request => {
                        assert_eq!(d.requested, Some(OFFERED));
                        assert_eq!(s.info().dhcp, DhcpState::Requesting);
                        s.ingress(&dhcp_reply(DhcpMessageType::Ack, d.xid, d.client));
                    }
                    _ => {}
                }
            }
        }
        bound = matches!(s.info().dhcp, DhcpState::Bound { .. });
        t += 10;
    }
    assert!(bound, "saw {seen:?}");
    assert_eq!(&seen[..2], &[DhcpMessageType::Discover, DhcpMessageType::Request]);
    let i = s.info();
    assert_eq!(i.dhcp.to_string(), "bound to 10.0.2.15/24 from 10.0.2.2");
    assert_eq!(i.ipv4, Some(cidr([10, 0, 2, 15], 24)));
    assert_eq!(i.gateway, Some([10, 0, 2, 2]));
    assert!(i
        .to_string()
        .contains("inet 10.0.2.15/24 netmask 255.255.255.0 gw 10.0.2.2 dhcp bound to 10.0.2.15/24 from 10.0.2.2"));
    // The address works: pinging the gateway ARPs for it from 10.0.2.15.
    s.ping_send([10, 0, 2, 2], 1, 1, 56, 0).unwrap();
    s.poll(t);
    let arp = s.egress().unwrap();
    assert_eq!(ethertype(&arp), 0x0806);
    assert_eq!(&arp[28..32], &[10, 0, 2, 15]);
}

// -- configuration parsing -----------------------------------------------------

#[test]
fn parse_config_ok() {
    assert_eq!(parse_ip_config("dhcp", None), Ok(IpConfig::Dhcp));
    assert_eq!(parse_ip_config(" DHCP ", None), Ok(IpConfig::Dhcp));
    assert_eq!(parse_ip_config("none", None), Ok(IpConfig::None));
    assert_eq!(parse_ip_config("off", None), Ok(IpConfig::None));
    assert_eq!(
        parse_ip_config("10.0.0.2/24", None),
        Ok(IpConfig::Static { addr: cidr([10, 0, 0, 2], 24), gateway: None })
    );
    assert_eq!(
        parse_ip_config("192.168.1.77/16", Some("192.168.0.1")),
        Ok(IpConfig::Static { addr: cidr([192, 168, 1, 77], 16), gateway: Some([192, 168, 0, 1]) })
    );
    assert_eq!(
        parse_ip_config("10.0.0.7/32", None),
        Ok(IpConfig::Static { addr: cidr([10, 0, 0, 7], 32), gateway: None })
    );
    assert!(parse_ip_config("10.0.0.0/31", None).is_ok());
}

#[test]
fn parse_config_errors() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("", None, "expected dhcp"),
        ("10.0.0.2", None, "expected dhcp"),
        ("dhcp", Some("10.0.0.1"), "only a static"),
        ("10.0.0/24", None, "not an IPv4"),
        ("10.0.0.256/24", None, "not an IPv4"),
        ("10.0.0.2/33", None, "prefix"),
        ("10.0.0.2/0", None, "prefix"),
        ("10.0.0.2/", None, "prefix"),
        ("10.0.0.2/+8", None, "prefix"),
        ("10.0.0.2/24/1", None, "prefix"),
        ("0.0.0.0/8", None, "usable"),
        ("224.0.0.1/4", None, "usable"),
        ("127.0.0.1/8", None, "usable"),
        ("255.255.255.255/32", None, "usable"),
        ("10.0.0.0/24", None, "network or broadcast"),
        ("10.0.0.255/24", None, "network or broadcast"),
        ("10.0.0.2/24", Some("10.0.1.1"), "not another host"),
        ("10.0.0.2/24", Some("10.0.0.2"), "not another host"),
        ("10.0.0.2/24", Some("gateway"), "not an IPv4"),
        ("10.0.0.2/24\nx", None, "prefix"),
    ];
    for (ip, gw, want) in cases {
        let e = parse_ip_config(ip, *gw).unwrap_err();
        assert!(e.contains(want), "{ip:?} {gw:?}: {e}");
        assert!(!e.contains('\n'), "{e:?}");
    }
}

#[test]
fn cidr_math() {
    let c = cidr([192, 168, 1, 77], 20);
    assert_eq!(c.netmask(), [255, 255, 240, 0]);
    assert_eq!(c.network(), [192, 168, 0, 0]);
    assert_eq!(c.broadcast(), [192, 168, 15, 255]);
    assert!(c.contains([192, 168, 15, 1]) && !c.contains([192, 168, 16, 1]));
    assert_eq!(c.to_string(), "192.168.1.77/20");
    assert!(Ipv4Cidr::new([1, 2, 3, 4], 33).is_none());
    let all = cidr([1, 2, 3, 4], 0);
    assert!(all.contains([200, 1, 1, 1]) && all.netmask() == [0; 4]);
    assert_eq!(cidr([1, 2, 3, 4], 32).netmask(), [255; 4]);
    assert_eq!(parse_ipv4("10.0.2.15"), Some([10, 0, 2, 15]));
    assert_eq!(parse_ipv4("10.0.2"), None);
    assert_eq!(fmt_ipv4([10, 0, 2, 15]), "10.0.2.15");
}

#[test]
fn echo_reply_sniffer_is_bounds_safe() {
    let mut rng = Rng(5);
    for _ in 0..20_000 {
        let len = (rng.next() % 80) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 14 {
            f[..6].copy_from_slice(&MAC_A.0);
            f[12] = 8;
            f[13] = 0;
        }
        if len >= 24 {
            f[14] = 0x40 | (f[14] & 0x0f);
            f[23] = 1;
        }
        let _ = echo_reply_ttl(&f, MAC_A);
    }
}

#[test]
fn stack_and_bridge_are_send() {
    fn send<T: Send>() {}
    send::<NetStack>();
    send::<crate::bridge::Bridge>();
}

#[test]
fn tcp_connect_listen_send_recv_close() {
    let mut p = Pair::new();
    let server = p.b.tcp_listen(2049).unwrap();
    assert_eq!(p.b.tcp_status(server), TcpStatus::Listening);
    let client = p.a.tcp_connect(IP_B, 2049, p.t).unwrap();
    assert!(p.run_until(200, |p| p.a.tcp_status(client) == TcpStatus::Established), "no connection");
    // 200 KB from A to B (more than one buffer), then a reply back.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let (mut sent, mut got) = (0, Vec::new());
    let ok = p.run_until(20_000, |p| {
        sent += p.a.tcp_send(client, &data[sent..]);
        let mut buf = [0u8; 4096];
        loop {
            let n = p.b.tcp_recv(server, &mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.len() == data.len()
    });
    assert!(ok && got == data, "received {} of {} bytes", got.len(), data.len());
    assert_eq!(p.b.tcp_send(server, b"reply"), 5);
    let mut back = Vec::new();
    assert!(p.run_until(200, |p| {
        let mut buf = [0u8; 16];
        let n = p.a.tcp_recv(client, &mut buf);
        back.extend_from_slice(&buf[..n]);
        back == b"reply"
    }));
    // A closes; B sees the end of the stream.
    p.a.tcp_close(client);
    assert!(p.run_until(200, |p| p.b.tcp_status(server) == TcpStatus::Closing));
    p.a.tcp_release(client);
    p.b.tcp_release(server);
}

#[test]
fn tcp_connect_to_a_closed_port_ends_closed() {
    let mut p = Pair::new();
    let c = p.a.tcp_connect(IP_B, 9, p.t).unwrap();
    assert!(p.run_until(500, |p| p.a.tcp_status(c) == TcpStatus::Closed), "refused connection not reported");
    assert_eq!(p.a.tcp_send(c, b"x"), 0);
    assert!(p.a.tcp_connect(IP_B, 0, p.t).is_err());
}
