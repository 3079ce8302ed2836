//! Migration: the relocation server (destination), `migrate` (source),
//! `save` and `restore`.
//!
//! The wire: TCP to the destination's relocation port, the key handshake and
//! AEAD channel of `hypervisor::relocauth` (docs/relocation-protocol.md),
//! and inside it the record stream of `hypervisor::migstream`
//! (docs/migration-stream.md). A save file is the same records, unencrypted.
//!
//! Safety rules: the destination refuses (naming why) before any page
//! moves when it cannot honour the domain's CPU policy, lacks memory or
//! already has the name; it frees every partial frame on any failure. The
//! source keeps its domain until the destination reports `Resumed`; any
//! error before that resumes it here (unless it was paused to begin with).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hypervisor::cpupolicy::CpuPolicy;
use hypervisor::domain::DomId;
use hypervisor::migstream::{
    self, DeviceRecord, DiskRecord, DomainRecord, Header, Reader, Record, TimeRecord, FLAG_LIVE, FLAG_PAUSED_AT_DEST,
    FLAG_SAVE_FILE, MAX_BATCH,
};
use hypervisor::relocauth::{self, AllowList, Channel, ClientHandshake, ClientStep, Mode, Psk, ServerHandshake};
use net::stack::{fmt_ipv4, TcpHandle, TcpStatus};
use spin::Once;

use crate::arch::cpu;
use crate::vcpu::{self, ThreadId};
use crate::{domains, network, time};

/// Handshake deadline (slow or silent peers are dropped after it).
const HANDSHAKE_MS: u64 = 10_000;
/// Longest silence in the middle of a stream.
const IDLE_MS: u64 = 30_000;
/// Live migration: most pre-copy rounds, and the downtime target.
const MAX_ROUNDS: u32 = 30;
const DOWNTIME_TARGET_MS: u64 = 300;
/// Announcements of a migrated guest's MAC.
const ANNOUNCE_ROUNDS: u32 = 5;

struct Config {
    port: u16,
    allow: AllowList,
    psk: Option<Psk>,
    crypto: bool,
    enabled: bool,
}

static CONFIG: Once<spin::Mutex<Config>> = Once::new();
static NONCE_CTR: AtomicU64 = AtomicU64::new(0);

fn config() -> &'static spin::Mutex<Config> {
    CONFIG.call_once(|| {
        spin::Mutex::new(Config { port: 8002, allow: AllowList::any(), psk: None, crypto: true, enabled: false })
    })
}

fn now_ms() -> u64 {
    time::now_ns() / 1_000_000
}

/// A fresh 32-byte nonce: RDRAND where the CPU has it, mixed with the TSC
/// and a counter through SHA-256 (never repeats within a boot either way).
fn nonce() -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"rhv relocation nonce");
    h.update(cpu::rdtsc().to_le_bytes());
    h.update(NONCE_CTR.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    for _ in 0..4 {
        if let Some(r) = cpu::rdrand() {
            h.update(r.to_le_bytes());
        }
    }
    h.update(time::now_ns().to_le_bytes());
    h.update(crate::boot().opts.hostname.as_bytes());
    h.finalize().into()
}

/// Reads the relocation options; starts the server if `relocation=on`.
/// Call after the boot mounts (a key file may live on the share).
pub fn init() {
    let o = &crate::boot().opts;
    let mut c = config().lock();
    c.port = o.relocation_port;
    c.crypto = o.relocation_crypto;
    c.enabled = o.relocation;
    match AllowList::parse(&o.relocation_hosts_allow) {
        Ok(a) => c.allow = a,
        Err(e) => {
            log::error!("relocation: relocation-hosts-allow: {e}; refusing every peer");
            c.allow = AllowList::parse("^$").unwrap_or_default();
        }
    }
    let secret: Option<Vec<u8>> = match (&o.relocation_key, &o.relocation_key_file) {
        (Some(k), _) => Some(k.as_bytes().to_vec()),
        (None, Some(path)) => match crate::storage::read_file(path, 4096) {
            Ok(b) => Some(b),
            Err(e) => {
                log::error!("relocation: key file {e}");
                None
            }
        },
        (None, None) => None,
    };
    if let Some(s) = secret {
        match Psk::from_secret(&s) {
            Ok(k) => c.psk = Some(k),
            Err(e) => log::error!("relocation: key: {e}"),
        }
    }
    if !c.enabled {
        return;
    }
    if c.psk.is_none() {
        log::error!("relocation: on, but no usable key (relocation-key= or relocation-key-file=); server not started");
        c.enabled = false;
        return;
    }
    let port = c.port;
    let allow =
        if c.allow.is_any() { String::from("any host") } else { c.allow.patterns().collect::<Vec<_>>().join(" ") };
    drop(c);
    match vcpu::spawn_kernel(relocd_main, 0, hypervisor::sched::DEFAULT_WEIGHT) {
        Some(_) => log::info!("relocation: listening on port {port}, allowing {allow}"),
        None => log::error!("relocation: cannot start the server thread (out of memory)"),
    }
}

/// One line for `info`.
pub fn status() -> String {
    let c = config().lock();
    if !c.enabled {
        return String::from("off");
    }
    alloc::format!(
        "port {}, {}, {}",
        c.port,
        if c.allow.is_any() { "any host".to_string() } else { c.allow.patterns().collect::<Vec<_>>().join(" ") },
        if c.crypto { "AEAD" } else { "AEAD or plain" }
    )
}

// -- The TCP connection + channel ------------------------------------------

/// Waits for the network to move (`network::wait_progress`); Ctrl-C at the
/// shell aborts.
fn wait(seen: u64) -> Result<(), String> {
    if network::wait_progress(seen) {
        return Err("interrupted (Ctrl-C)".into());
    }
    Ok(())
}

struct Conn {
    tcp: TcpHandle,
    peer: [u8; 4],
    chan: Option<Channel>,
    pub sent: u64,
}

impl Conn {
    fn connect(host: [u8; 4], port: u16) -> Result<Conn, String> {
        let h = network::with_stack(|s| s.tcp_connect(host, port, now_ms()))
            .ok_or("no network (ip= not set)")?
            .map_err(|e| e.to_string())?;
        let c = Conn { tcp: h, peer: host, chan: None, sent: 0 };
        let deadline = now_ms() + HANDSHAKE_MS;
        loop {
            let seen = network::activity();
            network::pump();
            match network::with_stack(|s| s.tcp_status(h)) {
                Some(TcpStatus::Established) => return Ok(c),
                Some(TcpStatus::Connecting) => {}
                _ => return Err(alloc::format!("{}:{port}: connection refused", fmt_ipv4(host))),
            }
            if now_ms() > deadline {
                return Err(alloc::format!("{}:{port}: no answer within {} s", fmt_ipv4(host), HANDSHAKE_MS / 1000));
            }
            wait(seen)?;
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.send_raw_within(bytes, IDLE_MS)
    }

    /// Best effort, within a second: an Abort to a peer that may be gone.
    fn abort(&mut self, reason: &str) {
        let mut plain = Vec::new();
        migstream::encode(&Record::Abort { reason: reason.chars().take(400).collect() }, &mut plain);
        if let Some(frame) = self.chan.as_mut().and_then(|c| c.seal(&plain).ok()) {
            let _ = self.send_raw_within(&frame, 1_000);
        }
    }

    /// Sends everything, giving up after `idle_ms` without progress.
    fn send_raw_within(&mut self, mut bytes: &[u8], idle_ms: u64) -> Result<(), String> {
        let mut last = now_ms();
        while !bytes.is_empty() {
            let seen = network::activity();
            let n = network::with_stack(|s| {
                if matches!(s.tcp_status(self.tcp), TcpStatus::Established | TcpStatus::Closing) {
                    Some(s.tcp_send(self.tcp, bytes))
                } else {
                    None
                }
            })
            .flatten()
            .ok_or("connection lost")?;
            bytes = &bytes[n..];
            self.sent += n as u64;
            network::pump();
            if n > 0 {
                last = now_ms();
                continue;
            }
            if now_ms() - last > idle_ms {
                return Err(alloc::format!("peer stopped reading for {} s", idle_ms / 1000));
            }
            wait(seen)?;
        }
        Ok(())
    }

    /// Some bytes, waiting up to `deadline` (ms).
    fn recv_raw(&mut self, deadline: u64) -> Result<Vec<u8>, String> {
        let mut buf = alloc::vec![0u8; 64 * 1024];
        loop {
            let seen = network::activity();
            network::pump();
            let (n, st) = network::with_stack(|s| (s.tcp_recv(self.tcp, &mut buf), s.tcp_status(self.tcp)))
                .ok_or("no network")?;
            if n > 0 {
                buf.truncate(n);
                return Ok(buf);
            }
            if !matches!(st, TcpStatus::Established) {
                return Err("connection closed by the peer".into());
            }
            if now_ms() > deadline {
                return Err("timed out waiting for the peer".into());
            }
            wait(seen)?;
        }
    }

    fn send_encoded(&mut self, plain: &[u8]) -> Result<(), String> {
        let chan = self.chan.as_mut().ok_or("no channel")?;
        let frame = chan.seal(plain).map_err(|e| e.to_string())?;
        self.send_raw(&frame)
    }

    /// The next record from the peer (a control record or, on the
    /// destination, the next stream record as a raw message).
    fn recv_message(&mut self, deadline_ms: u64) -> Result<Vec<u8>, String> {
        loop {
            let chan = self.chan.as_mut().ok_or("no channel")?;
            if let Some(m) = chan.next().map_err(|e| e.to_string())? {
                return Ok(m);
            }
            let bytes = self.recv_raw(deadline_ms)?;
            if let Some(c) = self.chan.as_mut() {
                c.push(&bytes);
            }
        }
    }

    fn recv_control(&mut self, deadline_ms: u64) -> Result<Record, String> {
        let m = self.recv_message(deadline_ms)?;
        match migstream::decode(&m, &migstream::Limits::MAX).map_err(|e| e.to_string())? {
            Some((r, n)) if n == m.len() => Ok(r),
            _ => Err("malformed reply".into()),
        }
    }

    /// Gives the peer a moment to read what was sent, then drops the
    /// connection.
    fn close(self) {
        let _ = network::with_stack(|s| s.tcp_close(self.tcp));
        let until = now_ms() + 500;
        while now_ms() < until {
            let seen = network::activity();
            network::pump();
            let done = network::with_stack(|s| s.tcp_status(self.tcp)).is_none_or(|st| st == TcpStatus::Closed);
            if done || wait(seen).is_err() {
                break;
            }
        }
        let _ = network::with_stack(|s| s.tcp_release(self.tcp));
    }
}

// -- Destination -------------------------------------------------------------

fn listen(port: u16) -> TcpHandle {
    loop {
        match network::with_stack(|s| s.tcp_listen(port)) {
            Some(Ok(h)) => return h,
            Some(Err(e)) => log::error!("relocation: {e}; retrying in 5 s"),
            None => log::error!("relocation: no network (ip= not set); retrying in 5 s"),
        }
        sleep_ms(5_000);
    }
}

extern "C" fn relocd_main(_: u64) -> ! {
    cpu::sti();
    let port = config().lock().port;
    let mut next = listen(port);
    loop {
        let h = next;
        loop {
            let seen = network::activity();
            match network::with_stack(|s| s.tcp_status(h)) {
                Some(TcpStatus::Listening) | Some(TcpStatus::Connecting) => network::wait_activity(seen, 1_000_000_000),
                _ => break,
            }
        }
        // A listener stays open while this connection is served: the next
        // peer waits for its turn instead of being refused.
        next = listen(port);
        let peer = network::with_stack(|s| s.tcp_remote(h)).flatten();
        let Some((peer_ip, _)) = peer else {
            network::with_stack(|s| s.tcp_release(h));
            continue;
        };
        let mut conn = Conn { tcp: h, peer: peer_ip, chan: None, sent: 0 };
        let who = fmt_ipv4(peer_ip);
        match serve(&mut conn) {
            Ok((msg, arrived)) => {
                log::info!("relocation: {msg}");
                conn.close();
                if let Some(id) = arrived {
                    announce(id);
                }
            }
            Err(e) => {
                log::warn!("relocation: {who}: {e}");
                conn.close();
            }
        }
    }
}

/// Admission and handshake, then one incoming domain: the report and the
/// new domain (its MAC still to be announced again).
fn serve(conn: &mut Conn) -> Result<(String, Option<DomId>), String> {
    let who = fmt_ipv4(conn.peer);
    let (allowed, psk, crypto) = {
        let c = config().lock();
        (c.allow.allows(&who), c.psk.clone(), c.crypto)
    };
    if !allowed {
        let _ = conn.send_raw(&relocauth::refuse_frame("your address is not in relocation-hosts-allow"));
        return Err(String::from("refused: not in relocation-hosts-allow"));
    }
    let psk = psk.ok_or("no key configured")?;
    let (mut hs, hello) = ServerHandshake::new(psk, nonce(), !crypto);
    conn.send_raw(&hello)?;
    let deadline = now_ms() + HANDSHAKE_MS;
    let chan = loop {
        let bytes = conn.recv_raw(deadline).map_err(|e| alloc::format!("handshake: {e}"))?;
        match hs.push(&bytes) {
            Ok(None) => {}
            Ok(Some((chan, welcome))) => {
                conn.send_raw(&welcome)?;
                break chan;
            }
            Err(e) => {
                if let Some(f) = e.refuse_frame() {
                    let _ = conn.send_raw(&f);
                }
                return Err(alloc::format!("refused: {e}"));
            }
        }
    };
    conn.chan = Some(chan);
    let mut inc = IncomingStream::new(alloc::format!("from {who}"));
    let r = receive(conn, &mut inc);
    match r {
        Ok(m) => Ok(m),
        Err(e) => {
            inc.discard();
            conn.abort(&e);
            Err(e)
        }
    }
}

fn receive(conn: &mut Conn, inc: &mut IncomingStream) -> Result<(String, Option<DomId>), String> {
    loop {
        let msg = conn.recv_message(now_ms() + IDLE_MS)?;
        match inc.push(&msg)? {
            Step::More => {}
            Step::Reply(r) => {
                conn.record(&r)?;
                if let Record::Refuse { reason } = *r {
                    return Err(alloc::format!("refused {}: {reason}", inc.name()));
                }
            }
            Step::Done(id) => {
                if let Err(e) = conn.record(&Record::Resumed { domid: id }) {
                    // The source cannot learn that it runs here, so it
                    // resumes its copy: this one must go.
                    domains::destroy(id);
                    return Err(alloc::format!("could not confirm the resume ({e}); destroyed the copy here"));
                }
                return Ok((inc.report(id), Some(id)));
            }
        }
    }
}

enum Step {
    More,
    Reply(alloc::boxed::Box<Record>),
    Done(DomId),
}

/// The destination's side of one stream (network or save file).
struct IncomingStream {
    reader: Reader,
    from: String,
    header: Option<Header>,
    config: Option<DomainRecord>,
    id: Option<DomId>,
    time: Option<TimeRecord>,
    vcpus: Vec<migstream::VcpuRecord>,
    device: Option<DeviceRecord>,
    pages: u64,
    started_ns: u64,
    /// Restore with `-p`.
    force_paused: bool,
}

impl IncomingStream {
    fn new(from: String) -> Self {
        IncomingStream {
            reader: Reader::new(),
            from,
            header: None,
            config: None,
            id: None,
            time: None,
            vcpus: Vec::new(),
            device: None,
            pages: 0,
            started_ns: time::now_ns(),
            force_paused: false,
        }
    }

    fn name(&self) -> &str {
        self.config.as_ref().map_or("?", |c| c.name.as_str())
    }

    fn report(&self, id: DomId) -> String {
        let live = self.header.is_some_and(|h| h.flags & FLAG_LIVE != 0);
        alloc::format!(
            "domain '{}' arrived {} as domain {id} ({}, {} pages in {} ms)",
            self.name(),
            self.from,
            if live { "live" } else { "cold" },
            self.pages,
            (time::now_ns() - self.started_ns) / 1_000_000
        )
    }

    /// Frees a partial domain.
    fn discard(&mut self) {
        if let Some(id) = self.id.take() {
            domains::destroy(id);
        }
    }

    fn push(&mut self, msg: &[u8]) -> Result<Step, String> {
        let rec = self.reader.push_message(msg).map_err(|e| e.to_string())?;
        self.apply(rec)
    }

    /// A save file's bytes: every record they complete, in order.
    fn push_file_bytes(&mut self, bytes: &[u8]) -> Result<Option<DomId>, String> {
        let recs = self.reader.push_bytes(bytes).map_err(|e| e.to_string())?;
        for rec in recs {
            match self.apply(rec)? {
                Step::More => {}
                Step::Reply(r) => match *r {
                    Record::Accept => {}
                    Record::Refuse { reason } => return Err(reason),
                    _ => return Err("unexpected record".into()),
                },
                Step::Done(id) => return Ok(Some(id)),
            }
        }
        Ok(None)
    }

    fn apply(&mut self, rec: Record) -> Result<Step, String> {
        match rec {
            Record::Header(h) => {
                self.header = Some(h);
                Ok(Step::More)
            }
            Record::DomainConfig(d) => {
                let pages = self.header.map_or(0, |h| h.guest_pages);
                if d.memory_mib.checked_mul(256) != Some(pages) {
                    return Err(alloc::format!("{} MiB of memory but {pages} pages in the header", d.memory_mib));
                }
                self.config = Some(d);
                Ok(Step::More)
            }
            Record::CpuPolicy(blob) => {
                let policy = CpuPolicy::decode(&blob).map_err(|e| alloc::format!("cpu policy: {e}"))?;
                let missing = policy.missing_on(&domains::host_policy());
                if !missing.is_empty() {
                    return Ok(Step::Reply(alloc::boxed::Box::new(Record::Refuse {
                        reason: alloc::format!(
                            "this host's CPU lacks features the domain's policy needs: {} (level the domain with cpuid=)",
                            missing.join(", ")
                        ),
                    })));
                }
                let cfg = self.config.as_ref().ok_or("no domain config")?;
                match domains::create_incoming(cfg, policy) {
                    Ok(id) => {
                        self.id = Some(id);
                        Ok(Step::Reply(alloc::boxed::Box::new(Record::Accept)))
                    }
                    Err(e) => Ok(Step::Reply(alloc::boxed::Box::new(Record::Refuse { reason: e }))),
                }
            }
            Record::Round { .. } => Ok(Step::More),
            Record::Pages(pages) => {
                let id = self.id.ok_or("pages before the domain exists")?;
                self.pages += pages.len() as u64;
                domains::with_table(|t| {
                    let d = t.get(id).ok_or("the domain vanished")?;
                    for (gfn, data) in &pages {
                        let ok = match data {
                            migstream::PageData::Zero => d.zero_page(*gfn),
                            migstream::PageData::Raw(b) => d.write_page(*gfn, b),
                        };
                        if !ok {
                            return Err(alloc::format!("page {gfn:#x} has no memory behind it here"));
                        }
                    }
                    Ok(())
                })?;
                Ok(Step::More)
            }
            Record::Time(t) => {
                self.time = Some(t);
                Ok(Step::More)
            }
            Record::Vcpu(v) => {
                self.vcpus.push(v);
                Ok(Step::More)
            }
            Record::Device(d) => {
                self.device = Some(d);
                Ok(Step::More)
            }
            Record::End { .. } => self.finish().map(Step::Done),
            Record::Abort { reason } => Err(alloc::format!("the source aborted: {reason}")),
            Record::Accept | Record::Refuse { .. } | Record::Resumed { .. } => Err("unexpected control record".into()),
        }
    }

    fn finish(&mut self) -> Result<DomId, String> {
        let id = self.id.ok_or("no domain")?;
        let cfg = self.config.clone().ok_or("no domain config")?;
        let paused = self.force_paused || self.header.is_some_and(|h| h.flags & FLAG_PAUSED_AT_DEST != 0);
        let inc = domains::Incoming {
            vcpus: core::mem::take(&mut self.vcpus),
            time: self.time.ok_or("no time record")?,
            device: self.device.take().ok_or("no device record")?,
        };
        domains::finish_incoming(id, inc)?;
        if let Some(mac) = cfg.vifs.first() {
            let spec = alloc::format!("mac={}", net::mac::Mac(*mac));
            network::vif_add(id, &spec).map_err(|e| alloc::format!("vif: {e}"))?;
        }
        let mut disks = Vec::new();
        for d in &cfg.disks {
            disks.push(crate::blk::open(&d.target, &d.vdev, d.writable).map_err(|e| alloc::format!("disk: {e}"))?);
        }
        crate::blk::attach(id, disks);
        domains::start_incoming(id, paused);
        self.id = None; // it is a real domain now; no discard
        network::vif_announce(id);
        Ok(id)
    }
}

/// More announcements of a migrated guest's MAC (the first went out
/// before it resumed), spaced 50, 100, 200, 400 ms.
fn announce(id: DomId) {
    for i in 1..ANNOUNCE_ROUNDS {
        sleep_ms(25 << i.min(4));
        network::vif_announce(id);
    }
}

fn sleep_ms(ms: u64) {
    network::sleep_until(time::now_ns() + ms * 1_000_000);
}

// -- Source ------------------------------------------------------------------

/// What `migrate` was asked to do.
pub struct Request {
    pub live: bool,
    pub paused_at_dest: bool,
}

/// Where the outgoing stream goes: a destination host or a save file.
trait Sink {
    fn record(&mut self, rec: &Record) -> Result<(), String> {
        let mut b = Vec::new();
        migstream::encode(rec, &mut b);
        self.encoded(&b)
    }
    fn encoded(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// Bytes sent so far.
    fn sent(&self) -> u64;
    /// The destination's answer (`None`: a file, nobody answers).
    fn reply(&mut self, deadline_ms: u64) -> Result<Option<Record>, String>;
}

impl Sink for Conn {
    fn encoded(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.send_encoded(bytes)
    }
    fn sent(&self) -> u64 {
        self.sent
    }
    fn reply(&mut self, deadline_ms: u64) -> Result<Option<Record>, String> {
        self.recv_control(deadline_ms).map(Some)
    }
}

/// The configuration record of a running domain.
fn domain_record(id: DomId) -> Result<(DomainRecord, CpuPolicy, u64, u32), String> {
    let mac = network::vif_info(id).map(|(m, _)| m.0);
    let disks: Vec<DiskRecord> = crate::blk::list(id)
        .into_iter()
        .map(|d| DiskRecord { target: d.target, vdev: d.vdev, writable: d.writable })
        .collect();
    domains::with_table(|t| {
        let name = t.name(id).ok_or("no such domain")?.to_string();
        let d = t.get(id).ok_or("no such domain")?;
        if d.stop.is_some() {
            return Err(String::from("the domain has stopped"));
        }
        let rec = DomainRecord {
            name,
            memory_mib: d.memory_mib,
            vcpus: d.vcpus.len() as u32,
            weight: d.weight,
            image: d.image.clone(),
            extra: d.cmdline.clone(),
            vifs: mac.into_iter().collect(),
            disks,
            on_poweroff: d.args.on_poweroff.code(),
            on_crash: d.args.on_crash.code(),
            on_reboot: hypervisor::xlcfg::Action::Restart.code(),
            cpuid: d.cpuid_spec.clone(),
            layout: d.layout(),
        };
        Ok((rec, d.policy.clone(), d.pages(), d.vcpus.len() as u32))
    })
}

/// Sends pages `gfns` (in batches, zero pages elided); returns the page
/// entries sent and how many of them were zero pages.
fn send_pages(sink: &mut dyn Sink, id: DomId, gfns: &[u64]) -> Result<(u64, u64), String> {
    let mut entries = 0u64;
    let mut zeros = 0u64;
    let mut buf: Vec<[u8; 4096]> = alloc::vec![[0u8; 4096]; MAX_BATCH.min(gfns.len().max(1))];
    for chunk in gfns.chunks(MAX_BATCH) {
        let mut list: Vec<u64> = Vec::with_capacity(chunk.len());
        domains::with_table(|t| {
            let d = t.get(id).ok_or("the domain vanished")?;
            for &g in chunk {
                if d.read_page(g, &mut buf[list.len()]) {
                    list.push(g);
                }
            }
            Ok::<(), String>(())
        })?;
        if list.is_empty() {
            continue;
        }
        let pages: Vec<(u64, &[u8; 4096])> = list.iter().enumerate().map(|(i, &g)| (g, &buf[i])).collect();
        let mut out = Vec::with_capacity(12 + pages.len() * 4105);
        let (z, _) = migstream::encode_pages(&pages, &mut out);
        sink.encoded(&out)?;
        entries += list.len() as u64;
        zeros += z as u64;
    }
    Ok((entries, zeros))
}

/// Outcome of a successful migration or save.
pub struct Report {
    pub rounds: u32,
    pub pages: u64,
    pub bytes: u64,
    pub downtime_ms: u64,
    pub total_ms: u64,
    pub new_id: Option<DomId>,
}

/// State to undo if the stream fails after the domain was paused.
struct Rollback {
    id: DomId,
    was_paused: bool,
    paused: bool,
    pending: Vec<(ThreadId, i64)>,
}

impl Rollback {
    /// The end of an outgoing stream: on success the domain here goes (it
    /// lives on there, or in the file); on failure it is restored.
    fn settle(mut self, r: Result<Report, String>) -> Result<Report, String> {
        match r {
            Ok(rep) => {
                domains::destroy(self.id);
                Ok(rep)
            }
            Err(e) => {
                self.undo();
                Err(e)
            }
        }
    }

    fn undo(&mut self) {
        domains::with_table(|t| {
            if let Some(d) = t.get_mut(self.id) {
                d.stop_dirty_log();
                d.migrating = false;
            }
        });
        for (t, r) in self.pending.drain(..) {
            crate::blk::put_result(t, r);
        }
        if self.paused && !self.was_paused {
            let _ = domains::set_paused(self.id, false);
        }
    }
}

/// The whole outgoing stream to `sink`. `await_reply` waits for the
/// destination's answers (network) or not (save file).
fn send_domain(id: DomId, sink: &mut dyn Sink, req: &Request, flags: u32, rb: &mut Rollback) -> Result<Report, String> {
    let t0 = time::now_ns();
    let (rec, policy, pages, vcpus) = domain_record(id)?;
    sink.record(&Record::Header(Header::new(flags, pages, vcpus)))?;
    sink.record(&Record::DomainConfig(rec))?;
    sink.record(&Record::CpuPolicy(policy.encode()))?;
    match sink.reply(now_ms() + IDLE_MS)? {
        None | Some(Record::Accept) => {}
        Some(Record::Refuse { reason }) => return Err(alloc::format!("refused: {reason}")),
        Some(Record::Abort { reason }) => return Err(alloc::format!("aborted by the destination: {reason}")),
        Some(_) => return Err("unexpected reply".into()),
    }
    let all: Vec<u64> = (0..pages).collect();
    let mut sent_pages: u64 = 0;
    let mut rounds = 0u32;
    // Pages dirtied during the last pre-copy round: sent with the final copy.
    let mut carried: Vec<u64> = Vec::new();
    if req.live {
        domains::with_table(|t| t.get_mut(id).map(|d| d.start_dirty_log())).ok_or("the domain vanished")?;
        let mut todo = all.clone();
        loop {
            rounds += 1;
            let r0 = time::now_ns();
            let b0 = sink.sent();
            sink.record(&Record::Round { round: rounds, pages: todo.len() as u32 })?;
            let (n, zeros) = send_pages(sink, id, &todo)?;
            sent_pages += n;
            let dt = (time::now_ns() - r0).max(1);
            let bytes = sink.sent() - b0;
            let rate = bytes as f64 * 1e9 / dt as f64;
            crate::println!(
                "migrate: round {rounds}: {n} pages ({} zero), {:.1} MiB in {} ms ({:.1} MiB/s)",
                zeros,
                bytes as f64 / 1048576.0,
                dt / 1_000_000,
                rate / 1048576.0
            );
            todo = domains::with_table(|t| t.get_mut(id).map(|d| d.take_dirty())).ok_or("the domain vanished")?;
            // Pages that fit the downtime target at this round's rate.
            let fits = ((rate * DOWNTIME_TARGET_MS as f64 / 1000.0) / 4096.0) as usize;
            if todo.len() <= fits.max(64) || rounds >= MAX_ROUNDS {
                carried = todo;
                break;
            }
        }
    }
    // Stop-and-copy.
    let paused_at = time::now_ns();
    rb.paused = true;
    domains::set_paused(id, true)?;
    // vCPU state first (it waits for block requests in flight, whose reads
    // write guest memory), then every page dirtied since the last round
    // was read, then the disks.
    let mut vrecs = Vec::new();
    for i in 0..vcpus {
        vrecs.push(domains::export_vcpu(id, i, &mut rb.pending)?);
    }
    let last: Vec<u64> = if req.live {
        rounds += 1;
        let mut l = carried;
        l.extend(domains::with_table(|t| t.get_mut(id).map(|d| d.take_dirty())).ok_or("the domain vanished")?);
        l.sort_unstable();
        l.dedup();
        l
    } else {
        rounds = 1;
        all
    };
    sink.record(&Record::Round { round: rounds, pages: last.len() as u32 })?;
    sent_pages += send_pages(sink, id, &last)?.0;
    crate::blk::flush_domain(id)?;
    let (time_rec, device) = domains::with_table(|t| {
        let d = t.get(id)?;
        let mut console = Vec::new();
        d.console.peek_all(&mut console);
        Some((
            TimeRecord {
                guest_ns: d.now_ns(),
                source_tsc_hz: time::tsc_hz(),
                wall_ns: (time::boot_unix().max(0) as u64) * 1_000_000_000 + time::now_ns(),
                generation: d.time_generation,
            },
            DeviceRecord { events: d.events, shutdown_requested: d.shutdown_deadline.is_some(), console },
        ))
    })
    .ok_or("the domain vanished")?;
    sink.record(&Record::Time(time_rec))?;
    for v in vrecs {
        sink.record(&Record::Vcpu(v))?;
    }
    sink.record(&Record::Device(device))?;
    sink.record(&Record::End { pages_sent: sent_pages })?;
    let new_id = match sink.reply(now_ms() + 120_000)? {
        None => None,
        Some(Record::Resumed { domid }) => Some(domid),
        Some(Record::Abort { reason }) | Some(Record::Refuse { reason }) => {
            return Err(alloc::format!("the destination failed: {reason}"))
        }
        Some(_) => return Err("unexpected reply".into()),
    };
    let now = time::now_ns();
    Ok(Report {
        rounds,
        pages: sent_pages,
        bytes: sink.sent(),
        downtime_ms: (now - paused_at) / 1_000_000,
        total_ms: (now - t0) / 1_000_000,
        new_id,
    })
}

/// Parses `host` or `host:port`.
fn parse_target(s: &str, default_port: u16) -> Result<([u8; 4], u16), String> {
    let (h, p) = match s.split_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| alloc::format!("bad port '{p}'"))?),
        None => (s, default_port),
    };
    let ip = net::stack::parse_ipv4(h).ok_or_else(|| alloc::format!("'{h}' is not an IPv4 address"))?;
    Ok((ip, p))
}

/// Claims a domain for a migration or save (one at a time per domain).
fn claim(id: DomId) -> Result<bool, String> {
    domains::with_table(|t| {
        let d = t.get_mut(id).ok_or("no such domain")?;
        if d.migrating {
            return Err(String::from("a migration of this domain is already running"));
        }
        if d.stop.is_some() {
            return Err(String::from("the domain has stopped"));
        }
        d.migrating = true;
        Ok(d.paused)
    })
}

/// `migrate [--live] [-p] <dom> <host[:port]>`.
pub fn migrate(id: DomId, target: &str, req: &Request) -> Result<Report, String> {
    let (psk, crypto, port) = {
        let c = config().lock();
        (c.psk.clone(), c.crypto, c.port)
    };
    let psk = psk.ok_or("no relocation key (boot with relocation-key= or relocation-key-file=)")?;
    let (ip, port) = parse_target(target, port)?;
    let was_paused = claim(id)?;
    let mut rb = Rollback { id, was_paused, paused: false, pending: Vec::new() };
    let r = (|| {
        let mut conn = Conn::connect(ip, port)?;
        let mode = if crypto { Mode::Aead } else { Mode::Plain };
        let mut hs = ClientHandshake::new(psk, nonce(), mode);
        let deadline = now_ms() + HANDSHAKE_MS;
        let chan = loop {
            let bytes = conn.recv_raw(deadline)?;
            match hs.push(&bytes) {
                Ok(ClientStep::NeedMore) => {}
                Ok(ClientStep::Send(b)) => conn.send_raw(&b)?,
                Ok(ClientStep::Done(c)) => break c,
                Err(relocauth::HandshakeError::Refused(why)) => {
                    return Err(alloc::format!("refused by {}: {why}", fmt_ipv4(ip)))
                }
                Err(e) => return Err(alloc::format!("{}: {e}", fmt_ipv4(ip))),
            }
        };
        conn.chan = Some(chan);
        let flags = if req.live { FLAG_LIVE } else { 0 } | if req.paused_at_dest { FLAG_PAUSED_AT_DEST } else { 0 };
        let r = send_domain(id, &mut conn, req, flags, &mut rb);
        match r {
            Ok(rep) => {
                conn.close();
                Ok(rep)
            }
            Err(e) => {
                conn.abort(&e);
                conn.close();
                Err(e)
            }
        }
    })();
    // Confirmed running there: only now does the copy here go.
    rb.settle(r)
}

// -- Save and restore --------------------------------------------------------

/// A save file on the share, written sequentially (UNSTABLE, committed at
/// the end).
struct FileSink {
    file: crate::storage::OpenFile,
    off: u64,
}

impl Sink for FileSink {
    fn encoded(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .nfs
            .write(&self.file.fh, self.off, bytes, net::nfs3::StableHow::Unstable)
            .map_err(|e| e.to_string())?;
        self.off += bytes.len() as u64;
        Ok(())
    }
    fn sent(&self) -> u64 {
        self.off
    }
    fn reply(&mut self, _: u64) -> Result<Option<Record>, String> {
        Ok(None)
    }
}

/// `save <dom> <file>`: the domain's state into a file on the share; the
/// domain is destroyed once the file is committed (as `xl save` does).
pub fn save(id: DomId, path: &str) -> Result<Report, String> {
    let was_paused = claim(id)?;
    let mut rb = Rollback { id, was_paused, paused: false, pending: Vec::new() };
    let r = (|| {
        crate::storage::create_file(path)?;
        let file = crate::storage::open_file(path)?;
        let mut sink = FileSink { file, off: 0 };
        let rep = send_domain(id, &mut sink, &Request { live: false, paused_at_dest: false }, FLAG_SAVE_FILE, &mut rb)?;
        sink.file.nfs.commit(&sink.file.fh).map_err(|e| alloc::format!("{path}: {e}"))?;
        Ok(rep)
    })();
    rb.settle(r)
}

/// `restore [-p] <file>`: a domain back from a save file.
pub fn restore(path: &str, paused: bool) -> Result<(DomId, String), String> {
    let mut file =
        crate::storage::open_file(path).map_err(|e| e.trim_start_matches(path).trim_start_matches(": ").to_string())?;
    let mut inc = IncomingStream::new(alloc::format!("from {path}"));
    inc.force_paused = paused;
    let mut off = 0u64;
    let size = file.size;
    let r = (|| {
        while off < size {
            let mut chunk = Vec::new();
            let want = (size - off).min(1 << 20);
            file.nfs.read_to(&file.fh, off, want, &mut |b| chunk.extend_from_slice(b)).map_err(|e| e.to_string())?;
            if chunk.is_empty() {
                break;
            }
            off += chunk.len() as u64;
            if let Some(id) = inc.push_file_bytes(&chunk)? {
                return Ok(id);
            }
        }
        Err(String::from("the file ends before the stream does"))
    })();
    match r {
        Ok(id) => Ok((id, inc.report(id))),
        Err(e) => {
            inc.discard();
            Err(e)
        }
    }
}
