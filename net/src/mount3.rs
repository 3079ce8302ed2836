//! MOUNT protocol version 3 (RFC 1813 Appendix I): MNT, UMNT, EXPORT.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::xdr::{XdrError, XdrReader, XdrWriter};

/// The MOUNT program number.
pub const PROGRAM: u32 = 100_005;
/// MOUNT protocol version 3.
pub const VERSION: u32 = 3;
/// `MOUNTPROC3_NULL`.
pub const PROC_NULL: u32 = 0;
/// `MOUNTPROC3_MNT`.
pub const PROC_MNT: u32 = 1;
/// `MOUNTPROC3_UMNT`.
pub const PROC_UMNT: u32 = 3;
/// `MOUNTPROC3_EXPORT`.
pub const PROC_EXPORT: u32 = 5;
/// `MNTPATHLEN`.
pub const MNTPATHLEN: u32 = 1024;
/// `MNTNAMLEN`.
pub const MNTNAMLEN: u32 = 255;
/// `FHSIZE3`.
pub const FHSIZE3: u32 = 64;
/// Cap on the number of auth flavors accepted in a MNT reply.
pub const MAX_AUTH_FLAVORS: u32 = 32;
/// Cap on the number of exports accepted in an EXPORT reply.
pub const MAX_EXPORTS: usize = 1024;
/// Cap on the number of groups accepted per export.
pub const MAX_GROUPS: usize = 256;

/// `mountstat3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountStat {
    Ok,
    Perm,
    NoEnt,
    Io,
    Acces,
    NotDir,
    Inval,
    NameTooLong,
    NotSupp,
    ServerFault,
    /// A value RFC 1813 does not define.
    Other(u32),
}

impl MountStat {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => MountStat::Ok,
            1 => MountStat::Perm,
            2 => MountStat::NoEnt,
            5 => MountStat::Io,
            13 => MountStat::Acces,
            20 => MountStat::NotDir,
            22 => MountStat::Inval,
            63 => MountStat::NameTooLong,
            10004 => MountStat::NotSupp,
            10006 => MountStat::ServerFault,
            v => MountStat::Other(v),
        }
    }

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            MountStat::Ok => 0,
            MountStat::Perm => 1,
            MountStat::NoEnt => 2,
            MountStat::Io => 5,
            MountStat::Acces => 13,
            MountStat::NotDir => 20,
            MountStat::Inval => 22,
            MountStat::NameTooLong => 63,
            MountStat::NotSupp => 10004,
            MountStat::ServerFault => 10006,
            MountStat::Other(v) => v,
        }
    }
}

impl fmt::Display for MountStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountStat::Ok => f.write_str("MNT3_OK"),
            MountStat::Perm => f.write_str("MNT3ERR_PERM: not owner"),
            MountStat::NoEnt => f.write_str("MNT3ERR_NOENT: no such file or directory"),
            MountStat::Io => f.write_str("MNT3ERR_IO: I/O error"),
            MountStat::Acces => f.write_str("MNT3ERR_ACCES: permission denied"),
            MountStat::NotDir => f.write_str("MNT3ERR_NOTDIR: not a directory"),
            MountStat::Inval => f.write_str("MNT3ERR_INVAL: invalid argument"),
            MountStat::NameTooLong => f.write_str("MNT3ERR_NAMETOOLONG: filename too long"),
            MountStat::NotSupp => f.write_str("MNT3ERR_NOTSUPP: operation not supported"),
            MountStat::ServerFault => f.write_str("MNT3ERR_SERVERFAULT: server fault"),
            MountStat::Other(v) => write!(f, "mountstat3 {v}: unknown error"),
        }
    }
}

/// A successful MNT: the root file handle and the auth flavors the server
/// accepts for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOk {
    pub fhandle: Vec<u8>,
    pub auth_flavors: Vec<u32>,
}

/// Encodes a `dirpath` argument (MNT and UMNT). Paths longer than
/// `MNTPATHLEN` are the caller's mistake; they are sent and the server
/// rejects them.
pub fn encode_dirpath(path: &str) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(8 + path.len());
    w.string(path);
    w.into_bytes()
}

/// MNT arguments.
pub fn encode_mnt_args(path: &str) -> Vec<u8> {
    encode_dirpath(path)
}

/// UMNT arguments (the result is void).
pub fn encode_umnt_args(path: &str) -> Vec<u8> {
    encode_dirpath(path)
}

/// Decodes a `mountres3`: `Ok(Err(stat))` for a server-side failure.
pub fn decode_mnt_result(b: &[u8]) -> Result<Result<MountOk, MountStat>, XdrError> {
    let mut r = XdrReader::new(b);
    match MountStat::from_u32(r.u32("mountres3.fhs_status")?) {
        MountStat::Ok => {
            let fhandle = r.opaque_var(FHSIZE3, "mountres3.fhandle")?.to_vec();
            let auth_flavors = r.array_var(MAX_AUTH_FLAVORS, "mountres3.auth_flavors", |r| r.u32("auth_flavor"))?;
            Ok(Ok(MountOk { fhandle, auth_flavors }))
        }
        s => Ok(Err(s)),
    }
}

/// One entry of the EXPORT list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportNode {
    pub dir: String,
    pub groups: Vec<String>,
}

/// Decodes the EXPORT result (a linked list of exports, each with a linked
/// list of groups), capped at [`MAX_EXPORTS`] and [`MAX_GROUPS`].
pub fn decode_export_result(b: &[u8]) -> Result<Vec<ExportNode>, XdrError> {
    let mut r = XdrReader::new(b);
    let mut out = Vec::new();
    while r.bool("exports.next")? {
        if out.len() >= MAX_EXPORTS {
            return Err(XdrError::TooMany { field: "exports", max: MAX_EXPORTS as u32 });
        }
        let dir = r.string(MNTPATHLEN, "exportnode.ex_dir")?;
        let mut groups = Vec::new();
        while r.bool("groups.next")? {
            if groups.len() >= MAX_GROUPS {
                return Err(XdrError::TooMany { field: "exportnode.ex_groups", max: MAX_GROUPS as u32 });
            }
            groups.push(r.string(MNTNAMLEN, "groupnode.gr_name")?);
        }
        out.push(ExportNode { dir, groups });
    }
    Ok(out)
}

/// Encodes an EXPORT result (for tests and loopback servers).
pub fn encode_export_result(exports: &[ExportNode]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    for e in exports {
        w.bool(true).string(&e.dir);
        for g in &e.groups {
            w.bool(true).string(g);
        }
        w.bool(false);
    }
    w.bool(false);
    w.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::testutil::hammer;
    use alloc::vec;

    #[test]
    fn mnt_args() {
        assert_eq!(encode_mnt_args("/export"), [0, 0, 0, 7, b'/', b'e', b'x', b'p', b'o', b'r', b't', 0]);
        assert_eq!(encode_umnt_args("/"), [0, 0, 0, 1, b'/', 0, 0, 0]);
    }

    #[test]
    fn mnt_result_as_sent() {
        let mut w = XdrWriter::new();
        w.u32(0).opaque_var(&[0xab; 28]).u32(1).u32(1);
        let b = w.into_bytes();
        let ok = decode_mnt_result(&b).unwrap().unwrap();
        assert_eq!(ok, MountOk { fhandle: vec![0xab; 28], auth_flavors: vec![1] });
        assert_eq!(decode_mnt_result(&[0, 0, 0, 13]).unwrap(), Err(MountStat::Acces));
        assert_eq!(decode_mnt_result(&[0, 0, 0x27, 0x14]).unwrap(), Err(MountStat::NotSupp));
        // Oversized handle.
        let mut w = XdrWriter::new();
        w.u32(0).opaque_var(&[0; 65]).u32(0);
        assert!(decode_mnt_result(w.as_bytes()).is_err());
        hammer(&b, 3000, 21, decode_mnt_result);
        for v in [0, 1, 2, 5, 13, 20, 22, 63, 10004, 10006, 7] {
            let s = MountStat::from_u32(v);
            assert_eq!(s.to_u32(), v);
            assert!(!alloc::format!("{s}").is_empty());
        }
    }

    #[test]
    fn export_result() {
        let ex = vec![
            ExportNode { dir: "/export".into(), groups: vec!["10.77.0.0/24".into(), "*".into()] },
            ExportNode { dir: "/tmp".into(), groups: vec![] },
        ];
        let b = encode_export_result(&ex);
        assert_eq!(decode_export_result(&b).unwrap(), ex);
        assert_eq!(decode_export_result(&[0, 0, 0, 0]).unwrap(), vec![]);
        hammer(&b, 3000, 22, decode_export_result);
        // An endless list is capped.
        let mut w = XdrWriter::new();
        for _ in 0..=MAX_EXPORTS {
            w.bool(true).string("/").bool(false);
        }
        w.bool(false);
        assert_eq!(
            decode_export_result(w.as_bytes()),
            Err(XdrError::TooMany { field: "exports", max: MAX_EXPORTS as u32 })
        );
    }
}
