//! Shared storage without dom0: the hypervisor's own NFSv3 client
//! (`net::nfs`) over its own TCP stack, and the mount table behind `mount`,
//! `ls`, `cat`, `df` and `umount`.
//!
//! Mounts are hard: a call is resent (same XID) until the server answers,
//! over a fresh connection when the old one dies, with one "not responding,
//! still trying" line in the log; Ctrl-C gives up. Only the shell thread uses
//! this module, with interrupts on (the network moves in interrupts while it
//! waits, and guests keep running), so a plain lock suffices.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use net::nfs::{Nfs, NfsError, RpcTransport, TransportError};
use net::rpc::{Auth, AuthSys, RetryPolicy, RpcClient};
use net::stack::{fmt_ipv4, TcpHandle, TcpStatus};

use crate::{network, time};

/// Well-known ports: portmapper, NFS.
const PORTMAP_PORT: u16 = 111;
const NFS_PORT: u16 = 2049;
/// After this long without an answer the log says so (once per outage).
const NOT_RESPONDING_MS: u64 = 5_000;

fn now_ms() -> u64 {
    time::now_ns() / 1_000_000
}

/// One TCP connection to a server port carrying ONC RPC calls.
pub struct KernelTransport {
    server: [u8; 4],
    port: u16,
    tcp: Option<TcpHandle>,
    rpc: RpcClient,
    out: Vec<u8>,
    /// No new connection before this time (backoff while the server is down).
    next_connect_ms: u64,
    backoff_ms: u64,
    /// The current outage has been logged.
    outage_logged: bool,
    /// Give up (Timeout) after this time; None: retry until Ctrl-C.
    deadline_ms: Option<u64>,
}

impl KernelTransport {
    /// A transport to `server:port` (connected on first use).
    pub fn new(server: [u8; 4], port: u16) -> Self {
        let cred = Auth::Sys(AuthSys {
            stamp: (time::now_ns() / 1000) as u32,
            machine_name: crate::boot().opts.hostname.clone(),
            uid: 0,
            gid: 0,
            gids: Vec::new(),
        });
        let xid = (crate::arch::cpu::rdtsc() as u32) ^ u32::from(port).rotate_left(16);
        KernelTransport {
            server,
            port,
            tcp: None,
            rpc: RpcClient::new(cred, xid, RetryPolicy { initial_ms: 1_000, max_ms: 8_000 }),
            out: Vec::new(),
            next_connect_ms: 0,
            backoff_ms: 0,
            outage_logged: false,
            deadline_ms: None,
        }
    }

    fn drop_connection(&mut self) {
        if let Some(h) = self.tcp.take() {
            network::with_stack(|s| s.tcp_release(h));
        }
        self.out.clear();
    }

    /// Keeps the connection up; on a new connection everything in flight is
    /// queued again.
    fn ensure_connected(&mut self, now: u64) -> Result<Option<TcpStatus>, TransportError> {
        let status = match self.tcp {
            Some(h) => network::with_stack(|s| s.tcp_status(h)),
            None => None,
        };
        match status {
            Some(TcpStatus::Established) => {
                self.backoff_ms = 0;
                Ok(status)
            }
            Some(TcpStatus::Connecting) => Ok(status),
            _ if now < self.next_connect_ms => Ok(None),
            _ => {
                // 0, then 250 ms doubling to 4 s between attempts.
                self.backoff_ms = if self.backoff_ms == 0 { 250 } else { (self.backoff_ms * 2).min(4_000) };
                self.next_connect_ms = now + self.backoff_ms;
                if status.is_some() && !self.outage_logged {
                    self.outage_logged = true;
                    log::warn!(
                        "nfs: connection to {}:{} lost; reconnecting and resending {} call(s)",
                        fmt_ipv4(self.server),
                        self.port,
                        self.rpc.in_flight()
                    );
                }
                self.drop_connection();
                let h = network::with_stack(|s| s.tcp_connect(self.server, self.port, now))
                    .ok_or_else(|| TransportError::Disconnected("no network".into()))?
                    .map_err(TransportError::Disconnected)?;
                self.tcp = Some(h);
                for (_, bytes) in self.rpc.reset_stream(now) {
                    self.out.extend_from_slice(&bytes);
                }
                Ok(Some(TcpStatus::Connecting))
            }
        }
    }

    /// Waits until every call in `xids` has its reply (results in order);
    /// on a deadline or Ctrl-C the unanswered ones get that error.
    fn wait_for(&mut self, xids: &[net::rpc::Xid]) -> Vec<Result<Vec<u8>, TransportError>> {
        let mut results: Vec<Option<Result<Vec<u8>, TransportError>>> = xids.iter().map(|_| None).collect();
        let give_up =
            |this: &mut Self, results: &mut Vec<Option<Result<Vec<u8>, TransportError>>>, e: TransportError| {
                for (x, r) in xids.iter().zip(results.iter_mut()) {
                    if r.is_none() {
                        this.rpc.cancel(*x);
                        *r = Some(Err(e.clone()));
                    }
                }
            };
        let started = now_ms();
        let mut warned = false;
        let mut buf = alloc::vec![0u8; 16 * 1024];
        loop {
            if results.iter().all(Option::is_some) {
                return results.into_iter().map(|r| r.unwrap_or(Err(TransportError::Timeout))).collect();
            }
            let seen = network::activity();
            let now = now_ms();
            let status = match self.ensure_connected(now) {
                Ok(s) => s,
                Err(e) => {
                    give_up(self, &mut results, e);
                    continue;
                }
            };
            if status == Some(TcpStatus::Established) {
                if let Some(h) = self.tcp {
                    if !self.out.is_empty() {
                        let n = network::with_stack(|s| s.tcp_send(h, &self.out)).unwrap_or(0);
                        self.out.drain(..n);
                    }
                    loop {
                        let n = network::with_stack(|s| s.tcp_recv(h, &mut buf)).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        for (x, r) in self.rpc.on_bytes(&buf[..n]) {
                            if let Some(i) = xids.iter().position(|&w| w == x) {
                                if warned || self.outage_logged {
                                    log::info!("nfs: server {} OK", fmt_ipv4(self.server));
                                    warned = false;
                                }
                                self.outage_logged = false;
                                results[i] = Some(r.map_err(TransportError::Rpc));
                            }
                        }
                        if self.rpc.stream_error().is_some() {
                            // A garbled stream: start over on a new connection.
                            self.drop_connection();
                            break;
                        }
                    }
                }
            }
            for (_, bytes) in self.rpc.poll_timeouts(now) {
                self.out.extend_from_slice(&bytes);
            }
            if !warned && now.saturating_sub(started) >= NOT_RESPONDING_MS {
                warned = true;
                log::warn!("nfs: server {}:{} not responding, still trying", fmt_ipv4(self.server), self.port);
            }
            network::pump();
            if self.deadline_ms.is_some_and(|d| now >= d) {
                give_up(self, &mut results, TransportError::Timeout);
                continue;
            }
            if results.iter().any(Option::is_none) && network::wait_progress(seen) {
                give_up(self, &mut results, TransportError::Interrupted);
            }
        }
    }
}

impl RpcTransport for KernelTransport {
    fn call(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Result<Vec<u8>, TransportError> {
        let (xid, bytes) = self.rpc.call(prog, vers, proc_, args, now_ms());
        self.out.extend_from_slice(&bytes);
        self.wait_for(&[xid]).pop().unwrap_or(Err(TransportError::Timeout))
    }

    fn call_batch(&mut self, calls: &[(u32, u32, u32, Vec<u8>)]) -> Vec<Result<Vec<u8>, TransportError>> {
        let now = now_ms();
        let xids: Vec<net::rpc::Xid> = calls
            .iter()
            .map(|(p, v, c, a)| {
                let (xid, bytes) = self.rpc.call(*p, *v, *c, a, now);
                self.out.extend_from_slice(&bytes);
                xid
            })
            .collect();
        self.wait_for(&xids)
    }

    fn wait_ms(&mut self, ms: u64) {
        network::sleep_until(time::now_ns() + ms * 1_000_000);
    }
}

impl Drop for KernelTransport {
    fn drop(&mut self) {
        self.drop_connection();
    }
}

/// A mounted export.
pub struct Mount {
    pub server: [u8; 4],
    pub export: String,
    pub at: String,
    mount_port: u16,
    nfs_port: u16,
    nfs: Nfs<KernelTransport>,
}

static MOUNTS: spin::Mutex<Vec<Mount>> = spin::Mutex::new(Vec::new());

/// Asks the portmapper for a program's TCP port.
fn getport(server: [u8; 4], prog: u32, vers: u32, deadline_ms: Option<u64>) -> Result<u16, String> {
    let mut t = KernelTransport::new(server, PORTMAP_PORT);
    t.deadline_ms = deadline_ms;
    let args = net::portmap::GetPortArgs { prog, vers, prot: 6 }.encode();
    let body = t.call(100_000, 2, 3, &args).map_err(|e| e.to_string())?;
    net::portmap::decode_getport_result(&body)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| alloc::format!("program {prog} v{vers} is not registered"))
}

/// `SERVER:/export`.
pub fn parse_spec(spec: &str) -> Result<([u8; 4], String), String> {
    let (host, export) = spec.split_once(':').ok_or("expected SERVER:/export")?;
    let ip = net::stack::parse_ipv4(host).ok_or_else(|| alloc::format!("'{host}' is not an IPv4 address"))?;
    if !export.starts_with('/') {
        return Err(alloc::format!("export '{export}' must be an absolute path"));
    }
    Ok((ip, export.to_string()))
}

/// Mounts `SERVER:/export` at `at`. `mount_port` 0 asks the portmapper.
/// With `deadline_ms`, the mount itself gives up at that time (later calls
/// on the mount are hard, as always).
pub fn mount(spec: &str, at: &str, mount_port: u16, nfs_port: u16, deadline_ms: Option<u64>) -> Result<(), String> {
    let (server, export) = parse_spec(spec)?;
    let at = normalize(at)?;
    if MOUNTS.lock().iter().any(|m| m.at == at) {
        return Err(alloc::format!("{at} is already a mount point"));
    }
    let mport = if mount_port != 0 { mount_port } else { getport(server, 100_005, 3, deadline_ms)? };
    let mut mt = KernelTransport::new(server, mport);
    mt.deadline_ms = deadline_ms;
    let mounted = net::nfs::mount(&mut mt, &export).map_err(|e| e.to_string())?;
    let nfs_port = if nfs_port != 0 { nfs_port } else { NFS_PORT };
    let mut nt = KernelTransport::new(server, nfs_port);
    nt.deadline_ms = deadline_ms;
    let mut nfs = Nfs::new(nt, mounted.root).map_err(|e| e.to_string())?;
    nfs.transport().deadline_ms = None;
    log::info!("nfs: mounted {}:{export} on {at}", fmt_ipv4(server));
    MOUNTS.lock().push(Mount { server, export, at, mount_port: mport, nfs_port, nfs });
    Ok(())
}

/// Unmounts whatever is mounted at `at`.
pub fn umount(at: &str) -> Result<(), String> {
    let at = normalize(at)?;
    let m = {
        let mut ms = MOUNTS.lock();
        let i = ms.iter().position(|m| m.at == at).ok_or_else(|| alloc::format!("{at} is not mounted"))?;
        ms.remove(i)
    };
    let mut mt = KernelTransport::new(m.server, m.mount_port);
    // The server forgets the mount; a failure here changes nothing for us.
    let _ = net::nfs::unmount(&mut mt, &m.export);
    Ok(())
}

/// `/a//b/./c/` → `/a/b/c`; refuses relative paths and `..`.
fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(alloc::format!("'{path}' is not an absolute path"));
    }
    let mut out = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(alloc::format!("'{path}': '..' is not supported"));
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The mount point holding the normalized `path` (the longest match).
fn owner<'a>(ms: &'a mut [Mount], path: &str) -> Option<&'a mut Mount> {
    ms.iter_mut()
        .filter(|m| path == m.at || path.starts_with(&alloc::format!("{}/", m.at.trim_end_matches('/'))))
        .max_by_key(|m| m.at.len())
}

/// Runs `f` with the mount holding `path` and the path inside the export.
pub fn with_path<R>(
    path: &str,
    f: impl FnOnce(&mut Nfs<KernelTransport>, &str) -> Result<R, NfsError>,
) -> Result<R, String> {
    locate(path, |m, path, rel| f(&mut m.nfs, rel).map_err(|e| alloc::format!("{path}: {e}")))?
}

/// Runs `f` with the mount holding `path`, the normalized path and the
/// path inside the export (under the mount table's lock).
fn locate<R>(path: &str, f: impl FnOnce(&mut Mount, &str, &str) -> R) -> Result<R, String> {
    let path = normalize(path)?;
    let mut ms = MOUNTS.lock();
    let m =
        owner(&mut ms, &path).ok_or_else(|| alloc::format!("{path}: not on a mounted file system (see 'mount')"))?;
    let rel = path[m.at.len()..].trim_start_matches('/').to_string();
    Ok(f(m, &path, &rel))
}

/// A file on a mounted export with a connection of its own (for a disk
/// image served by the block thread, which must not share the shell's).
pub struct OpenFile {
    pub nfs: Nfs<KernelTransport>,
    pub fh: net::nfs3::NfsFh3,
    pub size: u64,
    /// The server's address, for `block-list`.
    pub server: [u8; 4],
}

/// Opens the regular file `path` over a new connection to its server.
pub fn open_file(path: &str) -> Result<OpenFile, String> {
    let (server, nfs_port, root, rel) =
        locate(path, |m, _, rel| (m.server, m.nfs_port, m.nfs.root().clone(), rel.to_string()))?;
    let mut nfs = Nfs::new(KernelTransport::new(server, nfs_port), root).map_err(|e| alloc::format!("{path}: {e}"))?;
    let (fh, attr) = nfs.lookup(&rel).map_err(|e| alloc::format!("{path}: {e}"))?;
    if attr.ftype != net::nfs3::FType3::Reg {
        return Err(alloc::format!("{path}: not a regular file"));
    }
    Ok(OpenFile { nfs, fh, size: attr.size, server })
}

/// Creates (or truncates) the regular file `path`.
pub fn create_file(path: &str) -> Result<(), String> {
    with_path(path, |nfs, rel| {
        let (dir, name) = net::nfs::split_parent(rel);
        let (dfh, _) = nfs.lookup(dir)?;
        let fh = nfs.create(&dfh, name, 0o600, false)?;
        nfs.set_size(&fh, 0)
    })
}

/// Reads a whole file (at most `max` bytes).
pub fn read_file(path: &str, max: u64) -> Result<Vec<u8>, String> {
    with_path(path, |nfs, rel| {
        let (fh, attr) = nfs.lookup(rel)?;
        let mut out = Vec::new();
        nfs.read_to(&fh, 0, attr.size.min(max), &mut |chunk| out.extend_from_slice(chunk))?;
        Ok(out)
    })
}

/// Mount table lines for `mount` without arguments.
pub fn list() -> Vec<String> {
    MOUNTS
        .lock()
        .iter()
        .map(|m| alloc::format!("{}:{} on {} type nfs3 (tcp)", fmt_ipv4(m.server), m.export, m.at))
        .collect()
}

/// `df` lines.
pub fn df() -> Vec<String> {
    let mut out =
        alloc::vec![String::from("Filesystem                          Size       Used      Avail Use% Mounted on")];
    let ats: Vec<String> = MOUNTS.lock().iter().map(|m| m.at.clone()).collect();
    for at in ats {
        let r = with_path(&at, |nfs, _| nfs.fsstat());
        let name = MOUNTS
            .lock()
            .iter()
            .find(|m| m.at == at)
            .map(|m| alloc::format!("{}:{}", fmt_ipv4(m.server), m.export))
            .unwrap_or_default();
        match r {
            Ok(s) => {
                let used = s.tbytes.saturating_sub(s.fbytes);
                let pct = (used * 100).checked_div(s.tbytes).unwrap_or(0);
                let b = hypervisor::shell::format_bytes;
                out.push(alloc::format!(
                    "{name:<30} {:>10} {:>10} {:>10} {pct:>3}% {at}",
                    b(s.tbytes),
                    b(used),
                    b(s.abytes)
                ));
            }
            Err(e) => out.push(alloc::format!("{name:<30} error: {e}")),
        }
    }
    out
}

/// SHA-256 of a file on a share, streamed (any size).
pub fn sha256(path: &str) -> Result<([u8; 32], u64), String> {
    use sha2::Digest;
    with_path(path, |nfs, rel| {
        let (fh, attr) = nfs.lookup(rel)?;
        let mut h = sha2::Sha256::new();
        let n = nfs.read_to(&fh, 0, attr.size, &mut |chunk| h.update(chunk))?;
        Ok((h.finalize().into(), n))
    })
}

/// Copies a file within one mounted export (UNSTABLE writes, one COMMIT at
/// the end; if the server restarted meanwhile, the copy is done again once).
pub fn copy(src: &str, dst: &str) -> Result<u64, String> {
    let (src_n, dst_n) = (normalize(src)?, normalize(dst)?);
    let same_mount = {
        let mut ms = MOUNTS.lock();
        let src_at = owner(&mut ms, &src_n).map(|m| m.at.clone());
        let dst_at = owner(&mut ms, &dst_n).map(|m| m.at.clone());
        match (src_at, dst_at) {
            (Some(a), Some(b)) if a == b => Some(a),
            (Some(_), Some(_)) => return Err(String::from("copying between two mounts is not supported yet")),
            _ => None,
        }
    };
    let Some(at) = same_mount else { return Err(alloc::format!("{src_n} or {dst_n}: not on a mounted file system")) };
    let rel = |p: &str| p[at.len()..].trim_start_matches('/').to_string();
    let (src_rel, dst_rel) = (rel(&src_n), rel(&dst_n));
    with_path(&at, |nfs, _| {
        let (sfh, sattr) = nfs.lookup(&src_rel)?;
        let (parent, name) = net::nfs::split_parent(&dst_rel);
        let (dir, _) = nfs.lookup(parent)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dfh = nfs.create(&dir, name, 0o644, false)?;
            nfs.set_size(&dfh, 0)?;
            let mut off = 0u64;
            let chunk = u64::from(nfs.rsize());
            while off < sattr.size {
                let (data, eof) = nfs.read(&sfh, off, chunk.min(sattr.size - off) as u32)?;
                if data.is_empty() {
                    break;
                }
                nfs.write(&dfh, off, &data, net::nfs3::StableHow::Unstable)?;
                off += data.len() as u64;
                if eof {
                    break;
                }
            }
            match nfs.commit(&dfh) {
                Ok(_) => return Ok(off),
                Err(e) if e.is_verifier_changed() && attempt < 2 => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .map_err(|e| alloc::format!("cp {src_n} {dst_n}: {e}"))
}

/// Reads a whole file and discards it; returns bytes read (throughput test).
pub fn read_discard(path: &str) -> Result<u64, String> {
    with_path(path, |nfs, rel| {
        let (fh, attr) = nfs.lookup(rel)?;
        nfs.read_to(&fh, 0, attr.size, &mut |_| {})
    })
}

/// Writes `bytes` of a pattern to a new file (UNSTABLE + COMMIT); returns
/// bytes written (throughput test).
pub fn write_pattern(path: &str, bytes: u64) -> Result<u64, String> {
    let path = normalize(path)?;
    with_path(&path, |nfs, rel| {
        let (parent, name) = net::nfs::split_parent(rel);
        let (dir, _) = nfs.lookup(parent)?;
        let fh = nfs.create(&dir, name, 0o644, false)?;
        nfs.set_size(&fh, 0)?;
        let chunk: Vec<u8> = (0..nfs.wsize() as usize).map(|i| (i % 251) as u8).collect();
        let mut off = 0u64;
        while off < bytes {
            let n = (bytes - off).min(chunk.len() as u64) as usize;
            nfs.write(&fh, off, &chunk[..n], net::nfs3::StableHow::Unstable)?;
            off += n as u64;
        }
        nfs.commit(&fh)?;
        Ok(off)
    })
}

/// Mounts the `nfs=SERVER:/export@/dir` boot options, each given up to 20 s
/// (after waiting up to 15 s for a DHCP address); a failure is logged and
/// the boot goes on (`mount` can retry later).
pub fn mount_boot_options(specs: &[String]) {
    if specs.is_empty() {
        return;
    }
    let until = now_ms() + 15_000;
    while network::with_stack(|s| s.info().ipv4.is_some()) == Some(false) && now_ms() < until {
        crate::cmds::wait_interruptible();
    }
    for spec in specs {
        let Some((export, at)) = spec.rsplit_once('@') else { continue };
        if let Err(e) = mount(export, at, 0, 0, Some(now_ms() + 20_000)) {
            log::error!("nfs: boot mount {spec} failed: {e}; 'mount {export} {at}' retries");
        }
    }
}
