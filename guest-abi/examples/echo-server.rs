//! `echo-server`: TCP and UDP echo (RFC 862) over the domain's vif, on its
//! own smoltcp stack; answers ping.
//!
//! ```text
//! create echo-server vif=... extra="ip=10.77.0.10/24 gw=10.77.0.1 port=7"
//! ```
//!
//! Parameters: `ip` (address/prefix, default `10.77.0.10/24`; a bare
//! address gets /24), `gw` (default route, none by default), `port`
//! (default 7), `conns` (concurrent TCP connections, default 4, 1..=16).
//!
//! Output (stable format):
//!
//! ```text
//! echo-server: listening on <ip>:<port> (tcp, udp) mac=<mac>
//! echo-server: tcp open <peer ip>:<peer port> conn=<n>
//! echo-server: tcp close <peer ip>:<peer port> conn=<n> rx=<bytes> tx=<bytes>
//! echo-server: served tcp=<connections> udp=<datagrams>
//! echo-server: shutting down
//! ```
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

/// What the command line asks for.
struct Params {
    cidr: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    port: u16,
    conns: usize,
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
    Ok(Params { cidr, gateway, port, conns })
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
    config.random_seed =
        wall_ns() ^ now().rotate_left(32) ^ u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
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
