//! The NFSv3 client: synchronous logic over an [`RpcTransport`].
//!
//! The kernel supplies the transport (one TCP connection per server port,
//! AUTH_SYS credentials, reconnects and resends); this module turns file
//! operations into MOUNT3/NFS3 calls with the codecs of [`crate::mount3`]
//! and [`crate::nfs3`], and their results into [`NfsError`]s that name the
//! operation and the path.
//!
//! * `NFS3ERR_JUKEBOX` is retried after [`RpcTransport::wait_ms`] (100 ms
//!   doubling to 2 s, [`JUKEBOX_RETRIES`] times), then reported.
//! * Transport errors are reported as they are (the transport has already
//!   retried).
//! * UNSTABLE writes: the client remembers, per file handle, the write
//!   verifier of the writes since the last COMMIT. If a later WRITE or the
//!   COMMIT returns a different verifier, the server has restarted and may
//!   have lost that data: the call fails with
//!   `NfsError::Protocol(VERIFIER_CHANGED.into())` (see
//!   [`NfsError::is_verifier_changed`]) and the caller must resend every
//!   unstable write since its last successful COMMIT, then commit again.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::mount3::{self, ExportNode, MountStat};
use crate::nfs3::{
    self, proc_, CreateHow, FType3, Fattr3, FsStat, NfsFh3, NfsStat3, Sattr3, SetTime, StableHow, WriteOk,
    VERIFIER_SIZE,
};
use crate::rpc::RpcError;
use crate::xdr::XdrError;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

/// How many times an `NFS3ERR_JUKEBOX` reply is retried.
pub const JUKEBOX_RETRIES: u32 = 30;
/// First wait after `NFS3ERR_JUKEBOX`, in milliseconds.
pub const JUKEBOX_FIRST_MS: u64 = 100;
/// Longest wait after `NFS3ERR_JUKEBOX`, in milliseconds.
pub const JUKEBOX_MAX_MS: u64 = 2000;
/// Largest READ/WRITE transfer size used.
pub const MAX_TRANSFER: u32 = 1024 * 1024;
/// Smallest READ/WRITE transfer size used.
pub const MIN_TRANSFER: u32 = 4096;
/// Cap on the entries [`Nfs::readdir`] collects.
pub const MAX_READDIR_ENTRIES: usize = 100_000;
/// The message of the `Protocol` error reporting a server restart between
/// UNSTABLE writes and their COMMIT.
pub const VERIFIER_CHANGED: &str = "server restarted: write verifier changed";
/// READDIRPLUS `dircount` and `maxcount`.
const READDIR_DIRCOUNT: u32 = 16 * 1024;
const READDIR_MAXCOUNT: u32 = 64 * 1024;
/// Cap on the handle → path names remembered for error messages.
const MAX_NAMES: usize = 4096;

/// Why a transport call produced no reply body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// No reply in time (after the transport's own retries).
    Timeout,
    /// The connection is gone and could not be re-established.
    Disconnected(String),
    /// The server rejected the call at the RPC level.
    Rpc(RpcError),
    /// The caller asked to stop waiting.
    Interrupted,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("timed out waiting for the server"),
            TransportError::Disconnected(why) => write!(f, "disconnected: {why}"),
            TransportError::Rpc(e) => write!(f, "{e}"),
            TransportError::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// The RPC transport the client runs over.
pub trait RpcTransport {
    /// One RPC call: program, version, procedure and XDR-encoded arguments; returns the reply body (XDR after the accepted-reply header).
    fn call(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Result<Vec<u8>, TransportError>;
    /// Sleeps `ms` (used between NFS3ERR_JUKEBOX retries).
    fn wait_ms(&mut self, ms: u64);
    /// Several calls (program, version, procedure, arguments) in flight at
    /// once; results in the same order. The default makes them one by one.
    fn call_batch(&mut self, calls: &[(u32, u32, u32, Vec<u8>)]) -> Vec<Result<Vec<u8>, TransportError>> {
        calls.iter().map(|(p, v, c, a)| self.call(*p, *v, *c, a)).collect()
    }
}

/// READs kept in flight by [`Nfs::read_to`].
pub const READ_WINDOW: usize = 8;
/// WRITEs kept in flight by [`Nfs::write`].
pub const WRITE_WINDOW: usize = 8;

/// A failed client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NfsError {
    /// The transport failed.
    Transport(TransportError),
    /// MNT was refused.
    Mount(MountStat),
    /// The server answered `op` on `path` with an error status.
    Nfs { op: &'static str, path: String, status: NfsStat3 },
    /// The server's reply made no sense (or, with [`VERIFIER_CHANGED`], it
    /// restarted and lost unstable writes).
    Protocol(String),
    /// A path component that must be a directory is not one.
    NotADirectory(String),
    /// The path does not exist.
    NotFound(String),
    /// A transfer or listing exceeds what the client handles.
    TooLarge(String),
    /// The path is not acceptable (`..` above the export root).
    InvalidPath(String),
}

impl NfsError {
    /// The server restarted between UNSTABLE writes and COMMIT: resend all
    /// unstable writes since the last successful COMMIT.
    pub fn is_verifier_changed(&self) -> bool {
        matches!(self, NfsError::Protocol(m) if m == VERIFIER_CHANGED)
    }

    /// The NFS status, if the server returned one.
    pub fn status(&self) -> Option<NfsStat3> {
        match self {
            NfsError::Nfs { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for NfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NfsError::Transport(e) => write!(f, "NFS transport: {e}"),
            NfsError::Mount(s) => write!(f, "MNT: {s}"),
            NfsError::Nfs { op, path, status } => {
                // "NFS3ERR_IO: I/O error" → "NFS3ERR_IO (I/O error)".
                let s = status.to_string();
                match s.split_once(": ") {
                    Some((code, text)) => write!(f, "{op} {path}: {code} ({text})"),
                    None => write!(f, "{op} {path}: {s}"),
                }
            }
            NfsError::Protocol(m) => write!(f, "NFS protocol error: {m}"),
            NfsError::NotADirectory(p) => write!(f, "LOOKUP {p}: not a directory"),
            NfsError::NotFound(p) => write!(f, "LOOKUP {p}: no such file or directory"),
            NfsError::TooLarge(p) => write!(f, "{p}: too large"),
            NfsError::InvalidPath(p) => write!(f, "LOOKUP {p}: '..' leaves the export root"),
        }
    }
}

impl From<TransportError> for NfsError {
    fn from(e: TransportError) -> Self {
        NfsError::Transport(e)
    }
}

fn bad_reply(op: &str, path: &str, e: XdrError) -> NfsError {
    NfsError::Protocol(format!("{op} {path}: malformed reply: {e}"))
}

/// A mounted export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounted {
    pub root: NfsFh3,
    pub export: String,
}

/// MOUNT3 MNT of `export` (credentials are the transport's business).
pub fn mount(t: &mut impl RpcTransport, export: &str) -> Result<Mounted, NfsError> {
    let body = t.call(mount3::PROGRAM, mount3::VERSION, mount3::PROC_MNT, &mount3::encode_mnt_args(export))?;
    match mount3::decode_mnt_result(&body).map_err(|e| bad_reply("MNT", export, e))? {
        Ok(ok) => {
            let root = NfsFh3::new(&ok.fhandle)
                .ok_or_else(|| NfsError::Protocol(format!("MNT {export}: file handle too long")))?;
            Ok(Mounted { root, export: export.into() })
        }
        Err(s) => Err(NfsError::Mount(s)),
    }
}

/// MOUNT3 UMNT of `export` (advisory; the result is void).
pub fn unmount(t: &mut impl RpcTransport, export: &str) -> Result<(), NfsError> {
    t.call(mount3::PROGRAM, mount3::VERSION, mount3::PROC_UMNT, &mount3::encode_umnt_args(export))?;
    Ok(())
}

/// MOUNT3 EXPORT: the server's export list.
pub fn exports(t: &mut impl RpcTransport) -> Result<Vec<ExportNode>, NfsError> {
    let body = t.call(mount3::PROGRAM, mount3::VERSION, mount3::PROC_EXPORT, &[])?;
    mount3::decode_export_result(&body).map_err(|e| bad_reply("EXPORT", "", e))
}

/// Splits `path` into its parent directory and last name:
/// `"a/b/c"` → `("a/b", "c")`, `"/c"` → `("", "c")`, `"c/"` → `("", "c")`.
pub fn split_parent(path: &str) -> (&str, &str) {
    let p = path.trim_end_matches('/');
    match p.rfind('/') {
        Some(i) => (p[..i].trim_end_matches('/'), &p[i + 1..]),
        None => ("", p),
    }
}

/// Normalizes a path relative to the export root into its components:
/// empty and `.` parts are dropped, `..` removes the previous component and
/// is refused above the root.
pub fn path_components(path: &str) -> Result<Vec<&str>, NfsError> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(NfsError::InvalidPath(path.into()));
                }
            }
            name => out.push(name),
        }
    }
    Ok(out)
}

fn join(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// One directory entry from [`Nfs::readdir`] (`.` and `..` are left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (invalid UTF-8 replaced by U+FFFD).
    pub name: String,
    pub fileid: u64,
    pub attr: Option<Fattr3>,
    pub fh: Option<NfsFh3>,
}

/// An NFSv3 client on one mounted export.
pub struct Nfs<T: RpcTransport> {
    t: T,
    root: NfsFh3,
    rsize: u32,
    wsize: u32,
    /// Paths of handles met, for error messages.
    names: BTreeMap<NfsFh3, String>,
    /// Write verifier of the unstable writes not yet committed, per file.
    unstable: BTreeMap<NfsFh3, [u8; VERIFIER_SIZE]>,
    /// Counter for EXCLUSIVE create verifiers.
    create_seq: u64,
}

impl<T: RpcTransport> Nfs<T> {
    /// A client on the export whose root handle is `root`; FSINFO sets
    /// the transfer sizes (preferred sizes, within 4 KiB..=1 MiB).
    pub fn new(t: T, root: NfsFh3) -> Result<Self, NfsError> {
        let mut names = BTreeMap::new();
        names.insert(root.clone(), String::from("/"));
        let mut n =
            Nfs { t, root, rsize: MIN_TRANSFER, wsize: MIN_TRANSFER, names, unstable: BTreeMap::new(), create_seq: 0 };
        let root = n.root.clone();
        let args = nfs3::encode_fsinfo_args(&root);
        let info =
            n.call(proc_::FSINFO, &args, "FSINFO", &root, |b| nfs3::decode_fsinfo_result(b).map(|r| r.result))?;
        n.rsize = transfer_size(info.rtpref, info.rtmax);
        n.wsize = transfer_size(info.wtpref, info.wtmax);
        Ok(n)
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        &mut self.t
    }

    /// The export root's handle.
    pub fn root(&self) -> &NfsFh3 {
        &self.root
    }

    /// READ transfer size.
    pub fn rsize(&self) -> u32 {
        self.rsize
    }

    /// WRITE transfer size.
    pub fn wsize(&self) -> u32 {
        self.wsize
    }

    /// The path known for `fh` (for messages), or its bytes in hex.
    pub fn path_of(&self, fh: &NfsFh3) -> String {
        match self.names.get(fh) {
            Some(p) => p.clone(),
            None => {
                let mut s = String::from("fh:");
                for b in fh.as_bytes() {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            }
        }
    }

    fn remember(&mut self, fh: &NfsFh3, path: String) {
        if self.names.len() >= MAX_NAMES && !self.names.contains_key(fh) {
            self.names.clear();
            self.names.insert(self.root.clone(), String::from("/"));
        }
        self.names.insert(fh.clone(), path);
    }

    /// One NFS call, retried on JUKEBOX; `decode` yields the procedure's
    /// status-or-result.
    fn call<R>(
        &mut self,
        proc_: u32,
        args: &[u8],
        op: &'static str,
        fh: &NfsFh3,
        decode: impl Fn(&[u8]) -> Result<Result<R, NfsStat3>, XdrError>,
    ) -> Result<R, NfsError> {
        self.call_named(proc_, args, op, None, fh, decode)
    }

    /// As [`call`](Self::call) with a path named in errors: `name` inside
    /// the directory `fh`, or `fh` itself.
    fn call_named<R>(
        &mut self,
        proc_: u32,
        args: &[u8],
        op: &'static str,
        name: Option<&str>,
        fh: &NfsFh3,
        decode: impl Fn(&[u8]) -> Result<Result<R, NfsStat3>, XdrError>,
    ) -> Result<R, NfsError> {
        let mut wait = JUKEBOX_FIRST_MS;
        let mut retries = 0;
        loop {
            let body = self.t.call(nfs3::PROGRAM, nfs3::VERSION, proc_, args)?;
            let path = || match name {
                Some(n) => join(&self.path_of(fh), n),
                None => self.path_of(fh),
            };
            match decode(&body) {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(NfsStat3::Jukebox)) if retries < JUKEBOX_RETRIES => {
                    retries += 1;
                    self.t.wait_ms(wait);
                    wait = (wait * 2).min(JUKEBOX_MAX_MS);
                }
                Ok(Err(status)) => return Err(NfsError::Nfs { op, path: path(), status }),
                Err(e) => return Err(bad_reply(op, &path(), e)),
            }
        }
    }

    /// Looks up `path` relative to the export root (`/`-separated; empty
    /// and `.` parts are ignored, `..` may not leave the root).
    pub fn lookup(&mut self, path: &str) -> Result<(NfsFh3, Fattr3), NfsError> {
        let parts = path_components(path)?;
        let mut fh = self.root.clone();
        let mut cur = String::new();
        if parts.is_empty() {
            let attr = self.getattr(&fh)?;
            return Ok((fh, attr));
        }
        let mut attr = None;
        for (i, name) in parts.iter().enumerate() {
            if let Some(a) = attr {
                if !is_dir(&a) {
                    return Err(NfsError::NotADirectory(if cur.is_empty() { "/".into() } else { cur }));
                }
            }
            cur.push('/');
            cur.push_str(name);
            let args = nfs3::encode_lookup_args(&fh, name);
            let res = self.call_named(proc_::LOOKUP, &args, "LOOKUP", Some(name), &fh, |b| {
                nfs3::decode_lookup_result(b).map(|r| r.result)
            });
            let ok = match res {
                Ok(ok) => ok,
                Err(NfsError::Nfs { status: NfsStat3::NoEnt, .. }) => return Err(NfsError::NotFound(cur)),
                Err(NfsError::Nfs { status: NfsStat3::NotDir, .. }) => {
                    let parent = parts[..i].join("/");
                    return Err(NfsError::NotADirectory(format!("/{parent}")));
                }
                Err(e) => return Err(e),
            };
            fh = ok.object;
            self.remember(&fh, cur.clone());
            attr = match ok.obj_attributes {
                Some(a) => Some(a),
                None => Some(self.getattr(&fh)?),
            };
        }
        match attr {
            Some(a) => Ok((fh, a)),
            None => Err(NfsError::Protocol(format!("LOOKUP {cur}: no attributes"))),
        }
    }

    /// GETATTR.
    pub fn getattr(&mut self, fh: &NfsFh3) -> Result<Fattr3, NfsError> {
        let args = nfs3::encode_getattr_args(fh);
        self.call(proc_::GETATTR, &args, "GETATTR", fh, nfs3::decode_getattr_result)
    }

    /// One READ of at most `count` bytes (clamped to the read size, so the
    /// data may be shorter without `eof`).
    pub fn read(&mut self, fh: &NfsFh3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), NfsError> {
        let count = count.min(self.rsize);
        let args = nfs3::encode_read_args(fh, offset, count);
        self.call(proc_::READ, &args, "READ", fh, |b| {
            nfs3::decode_read_result(b, count).map(|r| r.result.map(|ok| (ok.data.to_vec(), ok.eof)))
        })
    }

    /// Reads `len` bytes from `offset` in chunks of the read size, handing
    /// each to `out`; stops early at end of file. Returns the bytes read.
    /// Up to [`READ_WINDOW`] READs are in flight at once
    /// ([`RpcTransport::call_batch`]); a JUKEBOX or a short read falls back
    /// to single calls from that point.
    pub fn read_to(&mut self, fh: &NfsFh3, offset: u64, len: u64, out: &mut dyn FnMut(&[u8])) -> Result<u64, NfsError> {
        let mut done = 0u64;
        while done < len {
            let mut chunks: Vec<(u64, u32)> = Vec::new();
            let mut planned = done;
            while planned < len && chunks.len() < READ_WINDOW {
                let want = u32::try_from(len - planned).unwrap_or(u32::MAX).min(self.rsize);
                let pos = offset
                    .checked_add(planned)
                    .ok_or_else(|| NfsError::TooLarge(format!("READ {}: offset overflows", self.path_of(fh))))?;
                chunks.push((pos, want));
                planned += u64::from(want);
            }
            let calls: Vec<(u32, u32, u32, Vec<u8>)> = chunks
                .iter()
                .map(|&(pos, want)| (nfs3::PROGRAM, nfs3::VERSION, proc_::READ, nfs3::encode_read_args(fh, pos, want)))
                .collect();
            let results = if calls.len() == 1 { Vec::new() } else { self.t.call_batch(&calls) };
            for (i, &(pos, want)) in chunks.iter().enumerate() {
                let pipelined = results.get(i).map(|r| {
                    r.clone().map_err(NfsError::Transport).and_then(|body| {
                        nfs3::decode_read_result(&body, want)
                            .map(|r| r.result.map(|ok| (ok.data.to_vec(), ok.eof)))
                            .map_err(|e| bad_reply("READ", &self.path_of(fh), e))
                    })
                });
                let (data, eof) = match pipelined {
                    Some(Ok(Ok(de))) => de,
                    // JUKEBOX (retried inside), errors, or no batch: one call.
                    Some(Ok(Err(NfsStat3::Jukebox))) | None => self.read(fh, pos, want)?,
                    Some(Ok(Err(status))) => return Err(NfsError::Nfs { op: "READ", path: self.path_of(fh), status }),
                    Some(Err(e)) => return Err(e),
                };
                if !data.is_empty() {
                    out(&data);
                    done += data.len() as u64;
                }
                if eof {
                    return Ok(done);
                }
                if data.is_empty() {
                    return Err(NfsError::Protocol(format!(
                        "READ {} at {pos}: no data and no end of file",
                        self.path_of(fh)
                    )));
                }
                if data.len() < want as usize {
                    // Short read: the later chunks no longer line up.
                    break;
                }
            }
        }
        Ok(done)
    }

    /// Writes `data` at `offset` in chunks of the write size. The result's
    /// `count` is `data.len()`, `committed` the weakest stability of the
    /// chunks and `verf` the server's write verifier. For UNSTABLE data a
    /// verifier different from that of earlier uncommitted writes to `fh`
    /// fails with [`VERIFIER_CHANGED`] (the data of this call was written).
    pub fn write(&mut self, fh: &NfsFh3, offset: u64, data: &[u8], stable: StableHow) -> Result<WriteOk, NfsError> {
        let total = u32::try_from(data.len())
            .map_err(|_| NfsError::TooLarge(format!("WRITE {}: {} bytes", self.path_of(fh), data.len())))?;
        let mut done = 0usize;
        let mut committed = StableHow::FileSync;
        let mut verf = [0u8; VERIFIER_SIZE];
        let mut changed = false;
        if data.is_empty() {
            return Ok(WriteOk { count: 0, committed: stable, verf });
        }
        // Up to WRITE_WINDOW WRITEs in flight (WRITE at an offset is
        // idempotent, so after a short write or an error the rest is simply
        // sent again from that point, one call at a time if need be).
        while done < data.len() {
            let mut chunks: Vec<(usize, usize)> = Vec::new();
            let mut planned = done;
            while planned < data.len() && chunks.len() < WRITE_WINDOW {
                let end = data.len().min(planned + self.wsize as usize);
                chunks.push((planned, end));
                planned = end;
            }
            let mut calls = Vec::with_capacity(chunks.len());
            for &(from, to) in &chunks {
                let pos = offset.checked_add(from as u64).ok_or_else(|| NfsError::TooLarge(self.path_of(fh)))?;
                calls.push((
                    nfs3::PROGRAM,
                    nfs3::VERSION,
                    proc_::WRITE,
                    nfs3::encode_write_args(fh, pos, stable, &data[from..to]),
                ));
            }
            let results = if calls.len() == 1 { Vec::new() } else { self.t.call_batch(&calls) };
            for (i, &(from, to)) in chunks.iter().enumerate() {
                let chunk = &data[from..to];
                let pipelined = results.get(i).and_then(|r| r.as_ref().ok()).and_then(|body| {
                    match nfs3::decode_write_result(body).map(|r| r.result) {
                        Ok(Ok(ok)) => Some(ok),
                        _ => None, // errors and JUKEBOX: redone as one call below
                    }
                });
                let ok = match pipelined {
                    Some(ok) => ok,
                    None => {
                        let args = &calls[i].3;
                        self.call(proc_::WRITE, args, "WRITE", fh, |b| nfs3::decode_write_result(b).map(|r| r.result))?
                    }
                };
                if ok.count as usize > chunk.len() || (ok.count == 0 && !chunk.is_empty()) {
                    return Err(NfsError::Protocol(format!(
                        "WRITE {}: server wrote {} of {} bytes",
                        self.path_of(fh),
                        ok.count,
                        chunk.len()
                    )));
                }
                if ok.committed < stable {
                    return Err(NfsError::Protocol(format!(
                        "WRITE {}: asked for {stable:?}, server committed {:?}",
                        self.path_of(fh),
                        ok.committed
                    )));
                }
                committed = committed.min(ok.committed);
                verf = ok.verf;
                if ok.committed == StableHow::Unstable {
                    match self.unstable.insert(fh.clone(), ok.verf) {
                        Some(old) if old != ok.verf => changed = true,
                        _ => {}
                    }
                }
                done = from + ok.count as usize;
                if (ok.count as usize) < chunk.len() {
                    // Short write: continue from where it stopped.
                    break;
                }
            }
        }
        if changed {
            return Err(NfsError::Protocol(VERIFIER_CHANGED.into()));
        }
        Ok(WriteOk { count: total, committed, verf })
    }

    /// COMMITs the whole file. Fails with [`VERIFIER_CHANGED`] if the
    /// verifier differs from that of the uncommitted UNSTABLE writes.
    pub fn commit(&mut self, fh: &NfsFh3) -> Result<[u8; VERIFIER_SIZE], NfsError> {
        let args = nfs3::encode_commit_args(fh, 0, 0);
        let verf =
            self.call(proc_::COMMIT, &args, "COMMIT", fh, |b| nfs3::decode_commit_result(b).map(|r| r.result))?;
        match self.unstable.remove(fh) {
            Some(old) if old != verf => Err(NfsError::Protocol(VERIFIER_CHANGED.into())),
            _ => Ok(verf),
        }
    }

    fn created(&mut self, op: &'static str, dir: &NfsFh3, name: &str, obj: Option<NfsFh3>) -> Result<NfsFh3, NfsError> {
        let fh = match obj {
            Some(fh) => fh,
            None => {
                let args = nfs3::encode_lookup_args(dir, name);
                self.call_named(proc_::LOOKUP, &args, op, Some(name), dir, |b| {
                    nfs3::decode_lookup_result(b).map(|r| r.result)
                })?
                .object
            }
        };
        let path = join(&self.path_of(dir), name);
        self.remember(&fh, path);
        Ok(fh)
    }

    /// Creates the regular file `name` in `dir` with `mode`. `exclusive`
    /// fails with `NFS3ERR_EXIST` if it exists (EXCLUSIVE create, safe
    /// against resends, then SETATTR of the mode); otherwise an existing
    /// file is opened as it is (UNCHECKED).
    pub fn create(&mut self, dir: &NfsFh3, name: &str, mode: u32, exclusive: bool) -> Result<NfsFh3, NfsError> {
        let how = if exclusive {
            self.create_seq = self.create_seq.wrapping_add(1);
            let mut v = self.create_seq.to_be_bytes();
            for (i, b) in dir.as_bytes().iter().chain(name.as_bytes()).enumerate() {
                v[i % VERIFIER_SIZE] ^= b.rotate_left(i as u32 % 8);
            }
            v[0] ^= 0x5a;
            CreateHow::Exclusive(v)
        } else {
            CreateHow::Unchecked(Sattr3 { mode: Some(mode), ..Sattr3::default() })
        };
        let args = nfs3::encode_create_args(dir, name, &how);
        let ok = self.call_named(proc_::CREATE, &args, "CREATE", Some(name), dir, |b| {
            nfs3::decode_create_result(b).map(|r| r.result)
        })?;
        let fh = self.created("CREATE", dir, name, ok.obj)?;
        if exclusive {
            // The verifier sits in the times: set them and the mode.
            let attrs = Sattr3 {
                mode: Some(mode),
                atime: SetTime::ServerTime,
                mtime: SetTime::ServerTime,
                ..Sattr3::default()
            };
            self.setattr(&fh, &attrs)?;
        }
        Ok(fh)
    }

    /// Creates the directory `name` in `dir`.
    pub fn mkdir(&mut self, dir: &NfsFh3, name: &str, mode: u32) -> Result<NfsFh3, NfsError> {
        let args = nfs3::encode_mkdir_args(dir, name, &Sattr3 { mode: Some(mode), ..Sattr3::default() });
        let ok = self.call_named(proc_::MKDIR, &args, "MKDIR", Some(name), dir, |b| {
            nfs3::decode_mkdir_result(b).map(|r| r.result)
        })?;
        self.created("MKDIR", dir, name, ok.obj)
    }

    fn forget(&mut self, dir: &NfsFh3, name: &str) {
        let path = join(&self.path_of(dir), name);
        let sub = join(&path, "");
        self.names.retain(|_, p| *p != path && !p.starts_with(&sub));
    }

    /// Removes the file `name` from `dir`.
    pub fn remove(&mut self, dir: &NfsFh3, name: &str) -> Result<(), NfsError> {
        let args = nfs3::encode_remove_args(dir, name);
        self.call_named(proc_::REMOVE, &args, "REMOVE", Some(name), dir, |b| {
            nfs3::decode_remove_result(b).map(|r| r.status)
        })?;
        self.forget(dir, name);
        Ok(())
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn rmdir(&mut self, dir: &NfsFh3, name: &str) -> Result<(), NfsError> {
        let args = nfs3::encode_rmdir_args(dir, name);
        self.call_named(proc_::RMDIR, &args, "RMDIR", Some(name), dir, |b| {
            nfs3::decode_rmdir_result(b).map(|r| r.status)
        })?;
        self.forget(dir, name);
        Ok(())
    }

    /// Renames `from` in `from_dir` to `to` in `to_dir`.
    pub fn rename(&mut self, from_dir: &NfsFh3, from: &str, to_dir: &NfsFh3, to: &str) -> Result<(), NfsError> {
        let args = nfs3::encode_rename_args(from_dir, from, to_dir, to);
        self.call_named(proc_::RENAME, &args, "RENAME", Some(from), from_dir, |b| {
            nfs3::decode_rename_result(b).map(|r| r.status)
        })?;
        let old = join(&self.path_of(from_dir), from);
        let new = join(&self.path_of(to_dir), to);
        self.forget(to_dir, to);
        let sub = join(&old, "");
        for p in self.names.values_mut() {
            if *p == old {
                *p = new.clone();
            } else if let Some(rest) = p.strip_prefix(&sub) {
                *p = join(&new, rest);
            }
        }
        Ok(())
    }

    /// Lists `dir` with READDIRPLUS, page by page until end of directory
    /// (at most [`MAX_READDIR_ENTRIES`] entries; `.` and `..` left out).
    pub fn readdir(&mut self, dir: &NfsFh3) -> Result<Vec<DirEntry>, NfsError> {
        let mut out = Vec::new();
        let mut cookie = 0u64;
        let mut cookieverf = [0u8; VERIFIER_SIZE];
        loop {
            let args = nfs3::encode_readdirplus_args(dir, cookie, cookieverf, READDIR_DIRCOUNT, READDIR_MAXCOUNT);
            let ok = self.call(proc_::READDIRPLUS, &args, "READDIRPLUS", dir, |b| {
                nfs3::decode_readdirplus_result(b).map(|r| r.result)
            })?;
            cookieverf = ok.cookieverf;
            let got = ok.entries.len();
            for e in ok.entries {
                cookie = e.cookie;
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                if out.len() >= MAX_READDIR_ENTRIES {
                    return Err(NfsError::TooLarge(format!(
                        "READDIRPLUS {}: more than {MAX_READDIR_ENTRIES} entries",
                        self.path_of(dir)
                    )));
                }
                out.push(DirEntry {
                    name: String::from_utf8_lossy(&e.name).into_owned(),
                    fileid: e.fileid,
                    attr: e.attributes,
                    fh: e.handle,
                });
            }
            if ok.eof {
                return Ok(out);
            }
            if got == 0 {
                return Err(NfsError::Protocol(format!(
                    "READDIRPLUS {}: empty page before end of directory",
                    self.path_of(dir)
                )));
            }
        }
    }

    /// FSSTAT of the export.
    pub fn fsstat(&mut self) -> Result<FsStat, NfsError> {
        let root = self.root.clone();
        let args = nfs3::encode_fsstat_args(&root);
        self.call(proc_::FSSTAT, &args, "FSSTAT", &root, |b| nfs3::decode_fsstat_result(b).map(|r| r.result))
    }

    /// SETATTR with `attrs` (no guard).
    pub fn setattr(&mut self, fh: &NfsFh3, attrs: &Sattr3) -> Result<(), NfsError> {
        let args = nfs3::encode_setattr_args(fh, attrs, None);
        self.call(proc_::SETATTR, &args, "SETATTR", fh, |b| nfs3::decode_setattr_result(b).map(|r| r.status))
    }

    /// Truncates or extends the file to `size` bytes.
    pub fn set_size(&mut self, fh: &NfsFh3, size: u64) -> Result<(), NfsError> {
        self.setattr(fh, &Sattr3 { size: Some(size), ..Sattr3::default() })
    }
}

fn is_dir(a: &Fattr3) -> bool {
    a.ftype == FType3::Dir
}

/// The transfer size from FSINFO's preferred and maximum sizes.
fn transfer_size(pref: u32, max: u32) -> u32 {
    let mut s = if pref == 0 { MAX_TRANSFER } else { pref };
    if max >= MIN_TRANSFER {
        s = s.min(max);
    }
    s.clamp(MIN_TRANSFER, MAX_TRANSFER)
}
