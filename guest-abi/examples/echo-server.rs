//! `echo-server`: TCP and UDP echo (RFC 862) over the domain's vif, on its
//! own smoltcp stack; answers ping.
//!
//! ```text
//! create echo-server vif=... extra="ip=10.77.0.10/24 gw=10.77.0.1 port=7"
//! ```
//!
//! Parameters: `ip` (address/prefix, default `10.77.0.10/24`; a bare
//! address gets /24), `gw` (default route, none by default), `port`
//! (default 7), `conns` (concurrent TCP connections, default 4, 1..=16),
//! `probe=IP:PORT` (once up, check the path to another UDP echo server:
//! see below), `probes` (datagrams a probe sends, default 4, 1..=64).
//!
//! Output (stable format):
//!
//! ```text
//! echo-server: listening on <ip>:<port> (tcp, udp) mac=<mac>
//! echo-server: tcp open <peer ip>:<peer port> conn=<n>
//! echo-server: tcp close <peer ip>:<peer port> conn=<n> rx=<bytes> tx=<bytes>
//! echo-server: probe ok <n>/<n> to <ip>:<port>
//! echo-server: probe failed <ok>/<n> to <ip>:<port> (<why>)
//! echo-server: served tcp=<connections> udp=<datagrams>
//! echo-server: shutting down
//! ```
//!
//! A probe sends `probes` UDP datagrams of different lengths and contents,
//! one at a time, from port 49152 (49153 if that is `port`) to `IP:PORT`
//! and waits for each to come back from there: resent every 500 ms, 20
//! times at most. `probe ok` means every datagram came back byte for byte;
//! one that came back altered, or never, ends the probe with `probe
//! failed`. The server echoes all the while.
//!
//! Without a vif it prints `echo-server: no network interface (<error>)`
//! and exits with status 1.
//!
//! TCP echo never drops a byte: it reads only as much as the connection's
//! send buffer can take right now, so a peer that sends faster than it
//! reads is slowed down by TCP's window (backpressure), not cut off. When
//! the peer half-closes, the server sends back what is left and closes its
//! side; then the socket listens again. UDP datagrams are sent back to
//! their source; one that cannot be queued stays queued until it can.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use guest_abi::rt::net::{Mac, VifDevice};
use guest_abi::rt::prelude::*;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration as NetDuration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Cidr};

guest_abi::main!(echo_server);

/// Longest sleep between two polls of the stack (the stack asks for less
/// when its timers need it; frames wake the server through `NET_RX`).
const IDLE_NS: u64 = 10_000_000;
/// Per-connection TCP buffers (each direction).
const TCP_BUFFER: usize = 64 * 1024;
/// UDP buffers: payload bytes and datagrams per direction.
const UDP_BUFFER: usize = 32 * 1024;
const UDP_PACKETS: usize = 32;
/// Bytes moved from a socket's receive buffer to its send buffer at once.
const CHUNK: usize = 16 * 1024;
/// A probe resends an unanswered datagram after this long, at most
/// `PROBE_TRIES` times in all (the peer may still be starting).
const PROBE_RETRY_NS: u64 = 500_000_000;
const PROBE_TRIES: u32 = 20;

/// What the command line asks for.
struct Params {
    cidr: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    port: u16,
    conns: usize,
    /// `probe=IP:PORT` and `probes=N`.
    probe: Option<(IpEndpoint, u32)>,
}

fn params(env: &Env) -> Result<Params, &'static str> {
    let cidr = match env.arg("ip") {
        None => Ipv4Cidr::new(Ipv4Addr::new(10, 77, 0, 10), 24),
        Some(s) => {
            let (addr, prefix) = match s.split_once('/') {
                Some((a, p)) => (a, p.parse::<u8>().map_err(|_| "ip= prefix must be 0..32")?),
                None => (s, 24),
            };
            if prefix > 32 {
                return Err("ip= prefix must be 0..32");
            }
            Ipv4Cidr::new(addr.parse().map_err(|_| "ip= must be an IPv4 address like 10.77.0.10/24")?, prefix)
        }
    };
    let gateway = match env.arg("gw") {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| "gw= must be an IPv4 address")?),
    };
    let port = u16::try_from(env.arg_u64_or("port", 7)).ok().filter(|&p| p != 0).ok_or("port= must be 1..65535")?;
    let conns = usize::try_from(env.arg_u64_or("conns", 4))
        .ok()
        .filter(|n| (1..=16).contains(n))
        .ok_or("conns= must be 1..16")?;
    let probe = match env.arg("probe") {
        None => None,
        Some(s) => {
            let err = "probe= must be IP:PORT, like 10.77.0.10:7";
            let (ip, port) = s.split_once(':').ok_or(err)?;
            let ip: Ipv4Addr = ip.parse().map_err(|_| err)?;
            let port = port.parse::<u16>().ok().filter(|&p| p != 0).ok_or(err)?;
            let n = u32::try_from(env.arg_u64_or("probes", 4))
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or("probes= must be 1..64")?;
            Some((IpEndpoint::new(IpAddress::Ipv4(ip), port), n))
        }
    };
    Ok(Params { cidr, gateway, port, conns, probe })
}

/// One TCP listening socket and the connection it serves.
struct Slot {
    handle: SocketHandle,
    conn: Option<Conn>,
}

/// An open connection's bookkeeping.
struct Conn {
    id: u64,
    peer: IpEndpoint,
    rx: u64,
    tx: u64,
}

fn smol_now() -> Instant {
    Instant::from_micros((now() / 1000) as i64)
}

fn echo_server(env: &Env) -> i32 {
    let p = match params(env) {
        Ok(p) => p,
        Err(e) => {
            println!("echo-server: {e}");
            return 1;
        }
    };
    let mut dev = match VifDevice::new() {
        Ok(d) => d,
        Err(e) => {
            println!("echo-server: no network interface ({e:?})");
            return 1;
        }
    };
    let mac = dev.info().mac;

    let mut config = Config::new(HardwareAddress::Ethernet(dev.ethernet_address()));
    config.random_seed = config_seed(&mac);
    let mut iface = Interface::new(config, &mut dev, smol_now());
    iface.update_ip_addrs(|addrs| {
        // One address; the vector has room for it.
        let _ = addrs.push(IpCidr::Ipv4(p.cidr));
    });
    if let Some(gw) = p.gateway {
        if iface.routes_mut().add_default_ipv4_route(gw).is_err() {
            println!("echo-server: cannot add the default route via {gw}");
            return 1;
        }
    }

    let mut sockets = SocketSet::new(Vec::new());
    let mut slots = Vec::with_capacity(p.conns);
    for _ in 0..p.conns {
        let mut s =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_BUFFER]), tcp::SocketBuffer::new(vec![0; TCP_BUFFER]));
        // Echo small writes at once instead of holding them for an ACK.
        s.set_nagle_enabled(false);
        // A peer that vanished does not hold a slot for ever.
        s.set_keep_alive(Some(NetDuration::from_secs(30)));
        s.set_timeout(Some(NetDuration::from_secs(120)));
        if s.listen(p.port).is_err() {
            println!("echo-server: cannot listen on port {}", p.port);
            return 1;
        }
        slots.push(Slot { handle: sockets.add(s), conn: None });
    }
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_PACKETS], vec![0; UDP_BUFFER]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_PACKETS], vec![0; UDP_BUFFER]),
    );
    if u.bind(p.port).is_err() {
        println!("echo-server: cannot bind UDP port {}", p.port);
        return 1;
    }
    let udp_handle = sockets.add(u);

    let mut probe = match p.probe {
        None => None,
        Some((peer, count)) => {
            let mut u = udp::Socket::new(
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8 * 1024]),
                udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8 * 1024]),
            );
            // Not the echo port: the peer's echo would be echoed back again.
            let local = if p.port == 49152 { 49153 } else { 49152 };
            if u.bind(local).is_err() {
                println!("echo-server: cannot bind UDP port {local} for the probe");
                return 1;
            }
            Some(Probe::new(sockets.add(u), peer, count, config_seed(&mac)))
        }
    };

    println!("echo-server: listening on {}:{} (tcp, udp) mac={}", p.cidr.address(), p.port, Mac(mac));

    let mut scratch = vec![0u8; CHUNK];
    let mut next_conn: u64 = 1;
    let mut udp_datagrams: u64 = 0;
    loop {
        let ts = smol_now();
        iface.poll(ts, &mut dev, &mut sockets);

        let mut moved = false;
        for slot in &mut slots {
            moved |= serve_tcp(sockets.get_mut::<tcp::Socket>(slot.handle), slot, p.port, &mut scratch, &mut next_conn);
        }
        let n = serve_udp(sockets.get_mut::<udp::Socket>(udp_handle), &mut scratch);
        udp_datagrams += n;
        moved |= n > 0;
        if let Some(pr) = probe.as_mut() {
            moved |= pr.step(sockets.get_mut::<udp::Socket>(pr.handle), now());
        }

        // Data just queued goes out with the next poll, at once; otherwise
        // sleep until the stack's next timer, a frame, or IDLE_NS.
        let wait_ns = if moved {
            0
        } else {
            match iface.poll_delay(smol_now(), &sockets) {
                Some(d) => d.total_micros().saturating_mul(1000).min(IDLE_NS),
                None => IDLE_NS,
            }
        };
        let ev = if wait_ns == 0 { block_until(0) } else { wait_until(now().saturating_add(wait_ns)) };
        if ev & event::SHUTDOWN != 0 {
            println!("echo-server: served tcp={} udp={udp_datagrams}", next_conn - 1);
            println!("echo-server: shutting down");
            return 0;
        }
    }
}

/// A seed for the stack and the probe's payloads: differs between guests
/// (MAC) and runs (clocks).
fn config_seed(mac: &[u8; 6]) -> u64 {
    wall_ns() ^ now().rotate_left(32) ^ u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// `probe=`: sends datagrams to another echo server one at a time and
/// checks that each comes back unchanged.
struct Probe {
    handle: SocketHandle,
    peer: IpEndpoint,
    count: u32,
    /// Index of the datagram in flight; `count` once all came back.
    seq: u32,
    payload: Vec<u8>,
    /// When the datagram in flight was last sent (`None`: not yet).
    sent_at: Option<u64>,
    tries: u32,
    rng: u64,
    done: bool,
}

impl Probe {
    fn new(handle: SocketHandle, peer: IpEndpoint, count: u32, seed: u64) -> Probe {
        let mut p = Probe {
            handle,
            peer,
            count,
            seq: 0,
            payload: Vec::new(),
            sent_at: None,
            tries: 0,
            rng: seed | 1,
            done: false,
        };
        p.fill();
        p
    }

    /// The payload of datagram `seq`: a header naming it, then
    /// pseudo-random bytes; 40 to about 1.2 KB long, different each time.
    fn fill(&mut self) {
        let header = alloc::format!("rhv-probe {} of {} ", self.seq + 1, self.count);
        let len = 40 + (self.seq as usize * 397 + 211) % 1200;
        self.payload.clear();
        self.payload.extend_from_slice(header.as_bytes());
        while self.payload.len() < len {
            // xorshift64
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.payload.push(self.rng as u8);
        }
    }

    fn finish(&mut self, failure: Option<&str>) {
        self.done = true;
        match failure {
            None => println!("echo-server: probe ok {}/{} to {}", self.seq, self.count, self.peer),
            Some(why) => println!("echo-server: probe failed {}/{} to {} ({why})", self.seq, self.count, self.peer),
        }
    }

    /// Takes the echoes that arrived, (re)sends the datagram in flight when
    /// due. Returns whether it queued a datagram.
    fn step(&mut self, u: &mut udp::Socket<'_>, now_ns: u64) -> bool {
        if self.done {
            // Drain stray duplicates of resent datagrams.
            while u.recv().is_ok() {}
            return false;
        }
        let header = alloc::format!("rhv-probe {} of {} ", self.seq + 1, self.count);
        while let Ok((data, meta)) = u.recv() {
            if meta.endpoint != self.peer || !data.starts_with(header.as_bytes()) {
                continue; // someone else, or a late copy of an earlier datagram
            }
            if data != self.payload.as_slice() {
                let why = alloc::format!(
                    "datagram {} came back altered: {} bytes, sent {}",
                    self.seq + 1,
                    data.len(),
                    self.payload.len()
                );
                self.finish(Some(&why));
                return false;
            }
            self.seq += 1;
            if self.seq == self.count {
                self.finish(None);
                return false;
            }
            self.fill();
            self.sent_at = None;
            self.tries = 0;
            return self.step(u, now_ns);
        }
        let due = self.sent_at.is_none_or(|t| now_ns.saturating_sub(t) >= PROBE_RETRY_NS);
        if !due {
            return false;
        }
        if self.tries == PROBE_TRIES {
            let why = alloc::format!("no echo of datagram {} after {} sends", self.seq + 1, self.tries);
            self.finish(Some(&why));
            return false;
        }
        // A full send buffer (the peer's address not resolved yet holds
        // earlier copies back) counts as a send too: the probe still ends.
        let queued = u.send_slice(&self.payload, self.peer).is_ok();
        self.tries += 1;
        self.sent_at = Some(now_ns);
        queued
    }
}

/// Whether a socket in `state` carries a connection (for the open line).
fn connected(state: tcp::State) -> bool {
    !matches!(
        state,
        tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived | tcp::State::TimeWait
    )
}

/// Echoes what one TCP socket has received, as far as its send buffer has
/// room; reports opens and closes; listens again once the connection is
/// over. Returns whether any byte moved.
fn serve_tcp(s: &mut tcp::Socket<'_>, slot: &mut Slot, port: u16, scratch: &mut [u8], next_conn: &mut u64) -> bool {
    let state = s.state();
    if slot.conn.is_none() && connected(state) {
        let peer = s.remote_endpoint().unwrap_or(IpEndpoint::new(IpAddress::Ipv4(Ipv4Addr::UNSPECIFIED), 0));
        let id = *next_conn;
        *next_conn += 1;
        println!("echo-server: tcp open {peer} conn={id}");
        slot.conn = Some(Conn { id, peer, rx: 0, tx: 0 });
    }

    let mut moved = false;
    if let Some(conn) = slot.conn.as_mut() {
        // Only read what can be written back now: never drop a byte.
        while s.can_recv() && s.may_send() {
            let room = s.send_capacity() - s.send_queue();
            if room == 0 {
                break;
            }
            let want = room.min(scratch.len());
            let n = match s.recv_slice(&mut scratch[..want]) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            conn.rx += n as u64;
            let sent = s.send_slice(&scratch[..n]).unwrap_or(0);
            conn.tx += sent as u64;
            if sent != n {
                // Cannot happen (the room was checked); say so if it does.
                println!("echo-server: conn={} lost {} bytes", conn.id, n - sent);
            }
            moved = true;
        }
        // The peer is done sending and everything it sent is queued back:
        // close our side (the rest of the echo goes out before the FIN).
        if state == tcp::State::CloseWait && s.recv_queue() == 0 {
            s.close();
        }
    }

    if matches!(s.state(), tcp::State::Closed | tcp::State::Listen | tcp::State::TimeWait) {
        if let Some(c) = slot.conn.take() {
            println!("echo-server: tcp close {} conn={} rx={} tx={}", c.peer, c.id, c.rx, c.tx);
        }
    }
    if !s.is_open() {
        // Closed (or lingering in TIME-WAIT): serve the next client.
        if s.listen(port).is_err() {
            println!("echo-server: cannot listen on port {port} again");
        }
    }
    moved
}

/// Sends received UDP datagrams back to their senders while the send
/// buffer has room; returns how many.
fn serve_udp(u: &mut udp::Socket<'_>, scratch: &mut [u8]) -> u64 {
    let mut n = 0;
    let max = scratch.len().min(u.payload_send_capacity());
    while u.can_recv() {
        let (len, peer) = match u.peek() {
            Ok((data, meta)) if data.len() <= max => {
                scratch[..data.len()].copy_from_slice(data);
                (data.len(), meta.endpoint)
            }
            Ok(_) => {
                // Can never be sent back whole: drop it.
                let _ = u.recv();
                continue;
            }
            Err(_) => break,
        };
        if u.send_slice(&scratch[..len], peer).is_err() {
            // Send buffer full: keep it for the next round.
            break;
        }
        let _ = u.recv();
        n += 1;
    }
    n
}
