//! An in-memory NFSv3 + MOUNT3 server behind [`RpcTransport`], for tests.
//! Replies follow RFC 1813; knobs inject JUKEBOX, verifier changes,
//! a read-only export and dropped calls.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::{RpcTransport, TransportError};
use crate::mount3::{self, ExportNode};
use crate::nfs3::{self, proc_};
use crate::xdr::{XdrError, XdrReader, XdrWriter};

pub const EXPORT: &str = "/export";
const ROOT: u64 = 1;

pub struct Node {
    pub dir: bool,
    pub mode: u32,
    pub data: Vec<u8>,
    pub children: BTreeMap<String, u64>,
    pub create_verf: Option<[u8; 8]>,
}

pub struct FakeServer {
    pub nodes: BTreeMap<u64, Node>,
    next_id: u64,
    /// Answer the next N NFS calls with NFS3ERR_JUKEBOX.
    pub jukebox: u32,
    /// The write verifier (change it to simulate a restart).
    pub verf: [u8; 8],
    /// Refuse modifications with NFS3ERR_ROFS.
    pub read_only: bool,
    /// Drop the next N calls (Timeout).
    pub drop_calls: u32,
    pub rtpref: u32,
    pub wtpref: u32,
    /// READDIRPLUS entries per reply.
    pub dir_page: usize,
    /// Procedures called (NFS program only).
    pub calls: Vec<u32>,
    /// Waits requested by the client.
    pub waits: Vec<u64>,
    /// Omit handles in CREATE/MKDIR replies.
    pub omit_created_fh: bool,
}

type Res = Result<(), u32>;

fn fh_bytes(id: u64) -> Vec<u8> {
    let mut v = b"fakefh".to_vec();
    v.extend_from_slice(&id.to_be_bytes());
    v
}

impl FakeServer {
    pub fn new() -> Self {
        let mut s = FakeServer {
            nodes: BTreeMap::new(),
            next_id: ROOT + 1,
            jukebox: 0,
            verf: *b"verf0001",
            read_only: false,
            drop_calls: 0,
            rtpref: 64 * 1024,
            wtpref: 32 * 1024,
            dir_page: 1000,
            calls: Vec::new(),
            waits: Vec::new(),
            omit_created_fh: false,
        };
        s.nodes
            .insert(ROOT, Node { dir: true, mode: 0o755, data: vec![], children: BTreeMap::new(), create_verf: None });
        s
    }

    /// Adds `path` (creating parent directories); `data` None = directory.
    pub fn add(&mut self, path: &str, data: Option<Vec<u8>>) -> u64 {
        let mut cur = ROOT;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Some(&id) = self.nodes[&cur].children.get(*p) {
                cur = id;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let node = match (&data, last) {
                (Some(d), true) => {
                    Node { dir: false, mode: 0o644, data: d.clone(), children: BTreeMap::new(), create_verf: None }
                }
                _ => Node { dir: true, mode: 0o755, data: vec![], children: BTreeMap::new(), create_verf: None },
            };
            self.nodes.insert(id, node);
            self.nodes.get_mut(&cur).unwrap().children.insert((*p).into(), id);
            cur = id;
        }
        cur
    }

    pub fn node_at(&self, path: &str) -> Option<&Node> {
        let mut cur = ROOT;
        for p in path.split('/').filter(|p| !p.is_empty()) {
            cur = *self.nodes[&cur].children.get(p)?;
        }
        self.nodes.get(&cur)
    }

    fn fattr(&self, id: u64, w: &mut XdrWriter) {
        let n = &self.nodes[&id];
        let size = if n.dir { 4096 } else { n.data.len() as u64 };
        w.u32(if n.dir { 2 } else { 1 }).u32(n.mode).u32(1).u32(0).u32(0);
        w.u64(size).u64(size).u32(0).u32(0).u64(0x77).u64(id);
        for _ in 0..3 {
            w.u32(1_700_000_000).u32(0);
        }
    }

    fn post_op(&self, id: u64, w: &mut XdrWriter) {
        w.bool(true);
        self.fattr(id, w);
    }

    fn wcc(&self, id: u64, w: &mut XdrWriter) {
        w.bool(false);
        self.post_op(id, w);
    }

    fn fh(&self, r: &mut XdrReader<'_>) -> Result<u64, u32> {
        let b = r.opaque_var(64, "fh").map_err(|_| 10001u32)?;
        if b.len() != 14 || &b[..6] != b"fakefh" {
            return Err(10001);
        }
        let id = u64::from_be_bytes(b[6..].try_into().unwrap());
        if self.nodes.contains_key(&id) {
            Ok(id)
        } else {
            Err(70)
        }
    }

    fn dir(&self, r: &mut XdrReader<'_>) -> Result<(u64, String), u32> {
        let d = self.fh(r)?;
        let name = r.string(1024, "name").map_err(|_| 22u32)?;
        if !self.nodes[&d].dir {
            return Err(20);
        }
        Ok((d, name))
    }

    fn sattr(r: &mut XdrReader<'_>) -> Result<(Option<u32>, Option<u64>), XdrError> {
        let mode = r.optional("mode", |r| r.u32("mode"))?;
        r.optional("uid", |r| r.u32("uid"))?;
        r.optional("gid", |r| r.u32("gid"))?;
        let size = r.optional("size", |r| r.u64("size"))?;
        for _ in 0..2 {
            if r.u32("time")? == 2 {
                r.u64("t")?;
            }
        }
        Ok((mode, size))
    }

    fn new_node(&mut self, dir: u64, name: &str, is_dir: bool, mode: u32) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(id, Node { dir: is_dir, mode, data: vec![], children: BTreeMap::new(), create_verf: None });
        self.nodes.get_mut(&dir).unwrap().children.insert(name.into(), id);
        id
    }

    /// Words after the status in an error reply of `proc_`.
    fn err_tail(proc_: u32) -> usize {
        match proc_ {
            proc_::GETATTR => 0,
            proc_::SETATTR
            | proc_::WRITE
            | proc_::CREATE
            | proc_::MKDIR
            | proc_::REMOVE
            | proc_::RMDIR
            | proc_::COMMIT => 2,
            proc_::RENAME => 4,
            _ => 1,
        }
    }

    fn nfs(&mut self, proc_: u32, args: &[u8], w: &mut XdrWriter) -> Res {
        let mut r = XdrReader::new(args);
        let modifies = matches!(
            proc_,
            proc_::SETATTR | proc_::WRITE | proc_::CREATE | proc_::MKDIR | proc_::REMOVE | proc_::RMDIR | proc_::RENAME
        );
        if modifies && self.read_only {
            return Err(30);
        }
        match proc_ {
            proc_::GETATTR => {
                let id = self.fh(&mut r)?;
                w.u32(0);
                self.fattr(id, w);
            }
            proc_::SETATTR => {
                let id = self.fh(&mut r)?;
                let (mode, size) = Self::sattr(&mut r).map_err(|_| 22u32)?;
                r.optional("guard", |r| r.u64("g")).map_err(|_| 22u32)?;
                let n = self.nodes.get_mut(&id).unwrap();
                if let Some(m) = mode {
                    n.mode = m;
                }
                if let Some(s) = size {
                    if n.dir {
                        return Err(21);
                    }
                    n.data.resize(s as usize, 0);
                }
                w.u32(0);
                self.wcc(id, w);
            }
            proc_::LOOKUP => {
                let (d, name) = self.dir(&mut r)?;
                let Some(&id) = self.nodes[&d].children.get(&name) else {
                    w.u32(2);
                    self.post_op(d, w);
                    return Ok(());
                };
                w.u32(0).opaque_var(&fh_bytes(id));
                self.post_op(id, w);
                self.post_op(d, w);
            }
            proc_::READ => {
                let id = self.fh(&mut r)?;
                let off = r.u64("off").map_err(|_| 22u32)? as usize;
                let count = r.u32("count").map_err(|_| 22u32)?.min(self.rtpref.max(1024 * 1024)) as usize;
                let n = &self.nodes[&id];
                if n.dir {
                    return Err(21);
                }
                let start = off.min(n.data.len());
                let end = (start + count).min(n.data.len());
                let data = n.data[start..end].to_vec();
                let eof = end == n.data.len();
                w.u32(0);
                self.post_op(id, w);
                w.u32(data.len() as u32).bool(eof).opaque_var(&data);
            }
            proc_::WRITE => {
                let id = self.fh(&mut r)?;
                let off = r.u64("off").map_err(|_| 22u32)? as usize;
                let count = r.u32("count").map_err(|_| 22u32)?;
                let stable = r.u32("stable").map_err(|_| 22u32)?;
                let data = r.opaque_var(u32::MAX, "data").map_err(|_| 22u32)?;
                if data.len() != count as usize {
                    return Err(22);
                }
                let n = self.nodes.get_mut(&id).unwrap();
                if n.dir {
                    return Err(21);
                }
                if n.data.len() < off + data.len() {
                    n.data.resize(off + data.len(), 0);
                }
                n.data[off..off + data.len()].copy_from_slice(data);
                w.u32(0);
                self.wcc(id, w);
                w.u32(count).u32(stable).opaque_fixed(&self.verf);
            }
            proc_::CREATE => {
                let (d, name) = self.dir(&mut r)?;
                let how = r.u32("how").map_err(|_| 22u32)?;
                let existing = self.nodes[&d].children.get(&name).copied();
                let id = match how {
                    0 | 1 => {
                        let (mode, size) = Self::sattr(&mut r).map_err(|_| 22u32)?;
                        match existing {
                            Some(_) if how == 1 => return Err(17),
                            Some(id) => {
                                if let Some(s) = size {
                                    self.nodes.get_mut(&id).unwrap().data.resize(s as usize, 0);
                                }
                                id
                            }
                            None => self.new_node(d, &name, false, mode.unwrap_or(0o644)),
                        }
                    }
                    2 => {
                        let v: [u8; 8] = r.opaque_fixed(8, "verf").map_err(|_| 22u32)?.try_into().unwrap();
                        match existing {
                            Some(id) if self.nodes[&id].create_verf == Some(v) => id,
                            Some(_) => return Err(17),
                            None => {
                                let id = self.new_node(d, &name, false, 0);
                                self.nodes.get_mut(&id).unwrap().create_verf = Some(v);
                                id
                            }
                        }
                    }
                    _ => return Err(22),
                };
                w.u32(0);
                if self.omit_created_fh {
                    w.bool(false);
                } else {
                    w.bool(true).opaque_var(&fh_bytes(id));
                }
                self.post_op(id, w);
                self.wcc(d, w);
            }
            proc_::MKDIR => {
                let (d, name) = self.dir(&mut r)?;
                let (mode, _) = Self::sattr(&mut r).map_err(|_| 22u32)?;
                if self.nodes[&d].children.contains_key(&name) {
                    return Err(17);
                }
                let id = self.new_node(d, &name, true, mode.unwrap_or(0o755));
                w.u32(0);
                if self.omit_created_fh {
                    w.bool(false);
                } else {
                    w.bool(true).opaque_var(&fh_bytes(id));
                }
                self.post_op(id, w);
                self.wcc(d, w);
            }
            proc_::REMOVE | proc_::RMDIR => {
                let (d, name) = self.dir(&mut r)?;
                let id = *self.nodes[&d].children.get(&name).ok_or(2u32)?;
                let n = &self.nodes[&id];
                if proc_ == proc_::REMOVE && n.dir {
                    return Err(21);
                }
                if proc_ == proc_::RMDIR && !n.dir {
                    return Err(20);
                }
                if !n.children.is_empty() {
                    return Err(66);
                }
                self.nodes.get_mut(&d).unwrap().children.remove(&name);
                self.nodes.remove(&id);
                w.u32(0);
                self.wcc(d, w);
            }
            proc_::RENAME => {
                let (fd, from) = self.dir(&mut r)?;
                let (td, to) = self.dir(&mut r)?;
                let id = *self.nodes[&fd].children.get(&from).ok_or(2u32)?;
                if let Some(&old) = self.nodes[&td].children.get(&to) {
                    if old != id {
                        if !self.nodes[&old].children.is_empty() {
                            return Err(66);
                        }
                        self.nodes.remove(&old);
                    }
                }
                self.nodes.get_mut(&fd).unwrap().children.remove(&from);
                self.nodes.get_mut(&td).unwrap().children.insert(to, id);
                w.u32(0);
                self.wcc(fd, w);
                self.wcc(td, w);
            }
            proc_::READDIRPLUS => {
                let d = self.fh(&mut r)?;
                let cookie = r.u64("cookie").map_err(|_| 22u32)?;
                let cverf = r.opaque_fixed(8, "verf").map_err(|_| 22u32)?;
                if !self.nodes[&d].dir {
                    return Err(20);
                }
                let my_verf = (d ^ 0xc0ffee).to_be_bytes();
                if cookie != 0 && cverf != my_verf {
                    return Err(10003);
                }
                let mut all: Vec<(String, u64)> = vec![(".".into(), d), ("..".into(), d)];
                all.extend(self.nodes[&d].children.iter().map(|(k, v)| (k.clone(), *v)));
                let start = cookie as usize;
                let end = (start + self.dir_page).min(all.len());
                w.u32(0);
                self.post_op(d, w);
                w.opaque_fixed(&my_verf);
                for (i, (name, id)) in all.iter().enumerate().take(end).skip(start) {
                    w.bool(true).u64(*id).string(name).u64(i as u64 + 1);
                    self.post_op(*id, w);
                    w.bool(true).opaque_var(&fh_bytes(*id));
                }
                w.bool(false).bool(end == all.len());
            }
            proc_::FSSTAT => {
                let id = self.fh(&mut r)?;
                w.u32(0);
                self.post_op(id, w);
                w.u64(1 << 40).u64(1 << 39).u64(1 << 38).u64(1000).u64(900).u64(800).u32(0);
            }
            proc_::FSINFO => {
                let id = self.fh(&mut r)?;
                w.u32(0);
                self.post_op(id, w);
                w.u32(self.rtpref.max(1024 * 1024)).u32(self.rtpref).u32(4096);
                w.u32(self.wtpref.max(1024 * 1024)).u32(self.wtpref).u32(4096);
                w.u32(8192).u64(u64::MAX).u32(0).u32(1).u32(0x1b);
            }
            proc_::COMMIT => {
                let id = self.fh(&mut r)?;
                w.u32(0);
                self.wcc(id, w);
                w.opaque_fixed(&self.verf);
            }
            _ => return Err(10004),
        }
        Ok(())
    }
}

impl RpcTransport for FakeServer {
    fn call(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Result<Vec<u8>, TransportError> {
        if self.drop_calls > 0 {
            self.drop_calls -= 1;
            return Err(TransportError::Timeout);
        }
        let mut w = XdrWriter::new();
        match (prog, vers) {
            (mount3::PROGRAM, mount3::VERSION) => match proc_ {
                mount3::PROC_MNT => {
                    let path = XdrReader::new(args).string(1024, "path").map_err(|_| garbage())?;
                    if path == EXPORT {
                        w.u32(0).opaque_var(&fh_bytes(ROOT)).u32(1).u32(1);
                    } else {
                        w.u32(2);
                    }
                }
                mount3::PROC_UMNT => {}
                mount3::PROC_EXPORT => {
                    return Ok(mount3::encode_export_result(&[ExportNode {
                        dir: EXPORT.into(),
                        groups: vec!["*".into()],
                    }]))
                }
                _ => return Err(TransportError::Rpc(crate::rpc::RpcError::ProcUnavail)),
            },
            (nfs3::PROGRAM, nfs3::VERSION) => {
                self.calls.push(proc_);
                if self.jukebox > 0 {
                    self.jukebox -= 1;
                    w.u32(10008);
                    for _ in 0..Self::err_tail(proc_) {
                        w.u32(0);
                    }
                    return Ok(w.into_bytes());
                }
                if let Err(st) = self.nfs(proc_, args, &mut w) {
                    let mut e = XdrWriter::new();
                    e.u32(st);
                    for _ in 0..Self::err_tail(proc_) {
                        e.u32(0);
                    }
                    return Ok(e.into_bytes());
                }
            }
            _ => return Err(TransportError::Rpc(crate::rpc::RpcError::ProgUnavail)),
        }
        Ok(w.into_bytes())
    }

    fn wait_ms(&mut self, ms: u64) {
        self.waits.push(ms);
    }
}

fn garbage() -> TransportError {
    TransportError::Rpc(crate::rpc::RpcError::GarbageArgs)
}
