//! NFS version 3 (RFC 1813): types, argument encoders and result decoders.
//!
//! Each `encode_*_args` function returns the procedure's XDR arguments for
//! [`RpcClient::call`](crate::rpc::RpcClient::call); each `decode_*_result`
//! takes the reply body. A decoder returns `Err(XdrError)` for a malformed
//! body and otherwise a result struct whose `result`/`status` field holds
//! either the success data or the server's [`NfsStat3`], next to the fields
//! RFC 1813 sends in both cases (attributes, `wcc_data`).

use alloc::vec::Vec;
use core::fmt;

use crate::xdr::{XdrError, XdrReader, XdrWriter};

/// The NFS program number.
pub const PROGRAM: u32 = 100_003;
/// NFS protocol version 3.
pub const VERSION: u32 = 3;
/// The usual NFS port.
pub const PORT: u16 = 2049;

/// Procedure numbers.
pub mod proc_ {
    pub const NULL: u32 = 0;
    pub const GETATTR: u32 = 1;
    pub const SETATTR: u32 = 2;
    pub const LOOKUP: u32 = 3;
    pub const ACCESS: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const READ: u32 = 6;
    pub const WRITE: u32 = 7;
    pub const CREATE: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const SYMLINK: u32 = 10;
    pub const MKNOD: u32 = 11;
    pub const REMOVE: u32 = 12;
    pub const RMDIR: u32 = 13;
    pub const RENAME: u32 = 14;
    pub const LINK: u32 = 15;
    pub const READDIR: u32 = 16;
    pub const READDIRPLUS: u32 = 17;
    pub const FSSTAT: u32 = 18;
    pub const FSINFO: u32 = 19;
    pub const PATHCONF: u32 = 20;
    pub const COMMIT: u32 = 21;
}

/// ACCESS bits.
pub mod access {
    pub const READ: u32 = 0x0001;
    pub const LOOKUP: u32 = 0x0002;
    pub const MODIFY: u32 = 0x0004;
    pub const EXTEND: u32 = 0x0008;
    pub const DELETE: u32 = 0x0010;
    pub const EXECUTE: u32 = 0x0020;
}

/// FSINFO `properties` bits.
pub mod fsf {
    pub const LINK: u32 = 0x0001;
    pub const SYMLINK: u32 = 0x0002;
    pub const HOMOGENEOUS: u32 = 0x0008;
    pub const CANSETTIME: u32 = 0x0010;
}

/// `NFS3_FHSIZE`.
pub const FHSIZE: usize = 64;
/// Size of cookie, create and write verifiers.
pub const VERIFIER_SIZE: usize = 8;
/// Cap on file names we send or accept.
pub const MAX_NAME: u32 = 1024;
/// Cap on READ data accepted in one reply.
pub const MAX_READ: u32 = 1024 * 1024;
/// Cap on READDIRPLUS entries accepted in one reply.
pub const MAX_DIR_ENTRIES: usize = 16 * 1024;

/// `nfsstat3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NfsStat3 {
    Ok,
    Perm,
    NoEnt,
    Io,
    NxIo,
    Acces,
    Exist,
    XDev,
    NoDev,
    NotDir,
    IsDir,
    Inval,
    FBig,
    NoSpc,
    RoFs,
    MLink,
    NameTooLong,
    NotEmpty,
    DQuot,
    Stale,
    Remote,
    BadHandle,
    NotSync,
    BadCookie,
    NotSupp,
    TooSmall,
    ServerFault,
    BadType,
    Jukebox,
    /// A value RFC 1813 does not define.
    Other(u32),
}

const STATS: [(NfsStat3, u32, &str); 29] = [
    (NfsStat3::Ok, 0, "NFS3_OK"),
    (NfsStat3::Perm, 1, "NFS3ERR_PERM: not owner"),
    (NfsStat3::NoEnt, 2, "NFS3ERR_NOENT: no such file or directory"),
    (NfsStat3::Io, 5, "NFS3ERR_IO: I/O error"),
    (NfsStat3::NxIo, 6, "NFS3ERR_NXIO: no such device or address"),
    (NfsStat3::Acces, 13, "NFS3ERR_ACCES: permission denied"),
    (NfsStat3::Exist, 17, "NFS3ERR_EXIST: file exists"),
    (NfsStat3::XDev, 18, "NFS3ERR_XDEV: cross-device link"),
    (NfsStat3::NoDev, 19, "NFS3ERR_NODEV: no such device"),
    (NfsStat3::NotDir, 20, "NFS3ERR_NOTDIR: not a directory"),
    (NfsStat3::IsDir, 21, "NFS3ERR_ISDIR: is a directory"),
    (NfsStat3::Inval, 22, "NFS3ERR_INVAL: invalid argument"),
    (NfsStat3::FBig, 27, "NFS3ERR_FBIG: file too large"),
    (NfsStat3::NoSpc, 28, "NFS3ERR_NOSPC: no space left on device"),
    (NfsStat3::RoFs, 30, "NFS3ERR_ROFS: read-only file system"),
    (NfsStat3::MLink, 31, "NFS3ERR_MLINK: too many hard links"),
    (NfsStat3::NameTooLong, 63, "NFS3ERR_NAMETOOLONG: file name too long"),
    (NfsStat3::NotEmpty, 66, "NFS3ERR_NOTEMPTY: directory not empty"),
    (NfsStat3::DQuot, 69, "NFS3ERR_DQUOT: quota exceeded"),
    (NfsStat3::Stale, 70, "NFS3ERR_STALE: stale file handle"),
    (NfsStat3::Remote, 71, "NFS3ERR_REMOTE: too many levels of remote in path"),
    (NfsStat3::BadHandle, 10001, "NFS3ERR_BADHANDLE: illegal file handle"),
    (NfsStat3::NotSync, 10002, "NFS3ERR_NOT_SYNC: SETATTR guard mismatch"),
    (NfsStat3::BadCookie, 10003, "NFS3ERR_BAD_COOKIE: stale READDIR cookie"),
    (NfsStat3::NotSupp, 10004, "NFS3ERR_NOTSUPP: operation not supported"),
    (NfsStat3::TooSmall, 10005, "NFS3ERR_TOOSMALL: buffer or request too small"),
    (NfsStat3::ServerFault, 10006, "NFS3ERR_SERVERFAULT: server fault"),
    (NfsStat3::BadType, 10007, "NFS3ERR_BADTYPE: object type not supported"),
    (NfsStat3::Jukebox, 10008, "NFS3ERR_JUKEBOX: server busy, retry later"),
];

impl NfsStat3 {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        STATS.iter().find(|s| s.1 == v).map_or(NfsStat3::Other(v), |s| s.0)
    }

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            NfsStat3::Other(v) => v,
            s => STATS.iter().find(|x| x.0 == s).map_or(u32::MAX, |x| x.1),
        }
    }

    /// Worth retrying the same request later (`NFS3ERR_JUKEBOX`).
    pub fn is_retryable(self) -> bool {
        self == NfsStat3::Jukebox
    }
}

impl fmt::Display for NfsStat3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NfsStat3::Other(v) => write!(f, "nfsstat3 {v}: unknown error"),
            s => f.write_str(STATS.iter().find(|x| x.0 == *s).map_or("nfsstat3: unknown error", |x| x.2)),
        }
    }
}

/// Reads an `nfsstat3`; `Ok(())` for NFS3_OK.
fn status(r: &mut XdrReader<'_>, field: &'static str) -> Result<Result<(), NfsStat3>, XdrError> {
    Ok(match r.u32(field)? {
        0 => Ok(()),
        v => Err(NfsStat3::from_u32(v)),
    })
}

/// `nfs_fh3`: an opaque handle of at most 64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NfsFh3(Vec<u8>);

impl NfsFh3 {
    /// A handle from its bytes, if at most [`FHSIZE`] long.
    pub fn new(b: &[u8]) -> Option<Self> {
        (b.len() <= FHSIZE).then(|| NfsFh3(b.to_vec()))
    }

    /// The handle's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Encodes the handle.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.opaque_var(&self.0);
    }

    /// Decodes a handle.
    pub fn decode(r: &mut XdrReader<'_>, field: &'static str) -> Result<Self, XdrError> {
        r.opaque_var(FHSIZE as u32, field).map(|b| NfsFh3(b.to_vec()))
    }
}

/// `ftype3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FType3 {
    Reg,
    Dir,
    Blk,
    Chr,
    Lnk,
    Sock,
    Fifo,
}

impl FType3 {
    fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(match r.u32("fattr3.type")? {
            1 => FType3::Reg,
            2 => FType3::Dir,
            3 => FType3::Blk,
            4 => FType3::Chr,
            5 => FType3::Lnk,
            6 => FType3::Sock,
            7 => FType3::Fifo,
            value => return Err(XdrError::BadDiscriminant { field: "fattr3.type", value }),
        })
    }

    /// The wire value.
    pub fn to_u32(self) -> u32 {
        self as u32 + 1
    }
}

/// `nfstime3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NfsTime3 {
    pub seconds: u32,
    pub nseconds: u32,
}

impl NfsTime3 {
    fn encode(&self, w: &mut XdrWriter) {
        w.u32(self.seconds).u32(self.nseconds);
    }

    fn decode(r: &mut XdrReader<'_>, field: &'static str) -> Result<Self, XdrError> {
        Ok(NfsTime3 { seconds: r.u32(field)?, nseconds: r.u32(field)? })
    }
}

/// `fattr3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fattr3 {
    pub ftype: FType3,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub used: u64,
    /// `specdata3`: major, minor.
    pub rdev: (u32, u32),
    pub fsid: u64,
    pub fileid: u64,
    pub atime: NfsTime3,
    pub mtime: NfsTime3,
    pub ctime: NfsTime3,
}

impl Fattr3 {
    /// Encodes the attributes (for tests and loopback servers).
    pub fn encode(&self, w: &mut XdrWriter) {
        w.u32(self.ftype.to_u32()).u32(self.mode).u32(self.nlink).u32(self.uid).u32(self.gid);
        w.u64(self.size).u64(self.used).u32(self.rdev.0).u32(self.rdev.1).u64(self.fsid).u64(self.fileid);
        self.atime.encode(w);
        self.mtime.encode(w);
        self.ctime.encode(w);
    }

    /// Decodes the attributes.
    pub fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        Ok(Fattr3 {
            ftype: FType3::decode(r)?,
            mode: r.u32("fattr3.mode")?,
            nlink: r.u32("fattr3.nlink")?,
            uid: r.u32("fattr3.uid")?,
            gid: r.u32("fattr3.gid")?,
            size: r.u64("fattr3.size")?,
            used: r.u64("fattr3.used")?,
            rdev: (r.u32("fattr3.rdev")?, r.u32("fattr3.rdev")?),
            fsid: r.u64("fattr3.fsid")?,
            fileid: r.u64("fattr3.fileid")?,
            atime: NfsTime3::decode(r, "fattr3.atime")?,
            mtime: NfsTime3::decode(r, "fattr3.mtime")?,
            ctime: NfsTime3::decode(r, "fattr3.ctime")?,
        })
    }
}

/// `post_op_attr`.
pub type PostOpAttr = Option<Fattr3>;

fn post_op_attr(r: &mut XdrReader<'_>) -> Result<PostOpAttr, XdrError> {
    r.optional("post_op_attr", Fattr3::decode)
}

/// `wcc_attr`: the attributes before the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WccAttr {
    pub size: u64,
    pub mtime: NfsTime3,
    pub ctime: NfsTime3,
}

/// `wcc_data`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WccData {
    pub before: Option<WccAttr>,
    pub after: PostOpAttr,
}

impl WccData {
    /// Decodes `wcc_data`.
    pub fn decode(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let before = r.optional("pre_op_attr", |r| {
            Ok(WccAttr {
                size: r.u64("wcc_attr.size")?,
                mtime: NfsTime3::decode(r, "wcc_attr.mtime")?,
                ctime: NfsTime3::decode(r, "wcc_attr.ctime")?,
            })
        })?;
        Ok(WccData { before, after: post_op_attr(r)? })
    }
}

/// How SETATTR/CREATE/MKDIR set a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SetTime {
    #[default]
    DontChange,
    ServerTime,
    ClientTime(NfsTime3),
}

impl SetTime {
    fn encode(&self, w: &mut XdrWriter) {
        match self {
            SetTime::DontChange => {
                w.u32(0);
            }
            SetTime::ServerTime => {
                w.u32(1);
            }
            SetTime::ClientTime(t) => {
                w.u32(2);
                t.encode(w);
            }
        }
    }
}

/// `sattr3`: `None` leaves an attribute unchanged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sattr3 {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

impl Sattr3 {
    /// Encodes the attributes.
    pub fn encode(&self, w: &mut XdrWriter) {
        w.optional(self.mode, |w, v| {
            w.u32(v);
        });
        w.optional(self.uid, |w, v| {
            w.u32(v);
        });
        w.optional(self.gid, |w, v| {
            w.u32(v);
        });
        w.optional(self.size, |w, v| {
            w.u64(v);
        });
        self.atime.encode(w);
        self.mtime.encode(w);
    }
}

fn diropargs(w: &mut XdrWriter, dir: &NfsFh3, name: &str) {
    dir.encode(w);
    w.string(name);
}

fn fh_only(fh: &NfsFh3) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(72);
    fh.encode(&mut w);
    w.into_bytes()
}

fn verifier(r: &mut XdrReader<'_>, field: &'static str) -> Result<[u8; VERIFIER_SIZE], XdrError> {
    let mut v = [0u8; VERIFIER_SIZE];
    v.copy_from_slice(r.opaque_fixed(VERIFIER_SIZE, field)?);
    Ok(v)
}

// ---- NULL ----

/// NULL has no arguments.
pub fn encode_null_args() -> Vec<u8> {
    Vec::new()
}

/// NULL returns nothing; any trailing bytes are an error.
pub fn decode_null_result(b: &[u8]) -> Result<(), XdrError> {
    XdrReader::new(b).finish("null.result")
}

// ---- GETATTR ----

/// GETATTR arguments.
pub fn encode_getattr_args(fh: &NfsFh3) -> Vec<u8> {
    fh_only(fh)
}

/// GETATTR result.
pub fn decode_getattr_result(b: &[u8]) -> Result<Result<Fattr3, NfsStat3>, XdrError> {
    let mut r = XdrReader::new(b);
    match status(&mut r, "getattr.status")? {
        Ok(()) => Ok(Ok(Fattr3::decode(&mut r)?)),
        Err(s) => Ok(Err(s)),
    }
}

// ---- SETATTR ----

/// SETATTR arguments; `guard` is the expected ctime (`sattrguard3`).
pub fn encode_setattr_args(fh: &NfsFh3, attrs: &Sattr3, guard: Option<NfsTime3>) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(128);
    fh.encode(&mut w);
    attrs.encode(&mut w);
    w.optional(guard, |w, t| t.encode(w));
    w.into_bytes()
}

/// A result that is only a status and `wcc_data` (SETATTR, REMOVE, RMDIR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WccRes {
    pub status: Result<(), NfsStat3>,
    pub wcc: WccData,
}

fn decode_wcc_res(b: &[u8], field: &'static str) -> Result<WccRes, XdrError> {
    let mut r = XdrReader::new(b);
    let status = status(&mut r, field)?;
    Ok(WccRes { status, wcc: WccData::decode(&mut r)? })
}

/// SETATTR result.
pub fn decode_setattr_result(b: &[u8]) -> Result<WccRes, XdrError> {
    decode_wcc_res(b, "setattr.status")
}

// ---- LOOKUP ----

/// LOOKUP arguments.
pub fn encode_lookup_args(dir: &NfsFh3, name: &str) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(80 + name.len());
    diropargs(&mut w, dir, name);
    w.into_bytes()
}

/// LOOKUP success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupOk {
    pub object: NfsFh3,
    pub obj_attributes: PostOpAttr,
}

/// LOOKUP result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupRes {
    pub result: Result<LookupOk, NfsStat3>,
    pub dir_attributes: PostOpAttr,
}

/// LOOKUP result.
pub fn decode_lookup_result(b: &[u8]) -> Result<LookupRes, XdrError> {
    let mut r = XdrReader::new(b);
    match status(&mut r, "lookup.status")? {
        Ok(()) => {
            let object = NfsFh3::decode(&mut r, "lookup.object")?;
            let obj_attributes = post_op_attr(&mut r)?;
            let dir_attributes = post_op_attr(&mut r)?;
            Ok(LookupRes { result: Ok(LookupOk { object, obj_attributes }), dir_attributes })
        }
        Err(s) => Ok(LookupRes { result: Err(s), dir_attributes: post_op_attr(&mut r)? }),
    }
}

// ---- ACCESS ----

/// ACCESS arguments (`mask` of [`access`] bits).
pub fn encode_access_args(fh: &NfsFh3, mask: u32) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(72);
    fh.encode(&mut w);
    w.u32(mask);
    w.into_bytes()
}

/// ACCESS result: the granted bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRes {
    pub result: Result<u32, NfsStat3>,
    pub obj_attributes: PostOpAttr,
}

/// ACCESS result.
pub fn decode_access_result(b: &[u8]) -> Result<AccessRes, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "access.status")?;
    let obj_attributes = post_op_attr(&mut r)?;
    let result = match st {
        Ok(()) => Ok(r.u32("access.access")?),
        Err(s) => Err(s),
    };
    Ok(AccessRes { result, obj_attributes })
}

// ---- READ ----

/// READ arguments.
pub fn encode_read_args(fh: &NfsFh3, offset: u64, count: u32) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(84);
    fh.encode(&mut w);
    w.u64(offset).u32(count);
    w.into_bytes()
}

/// READ success; `data` borrows the reply body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOk<'a> {
    pub eof: bool,
    pub data: &'a [u8],
}

/// READ result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRes<'a> {
    pub result: Result<ReadOk<'a>, NfsStat3>,
    pub file_attributes: PostOpAttr,
}

/// READ result for a request of `requested` bytes: data longer than that,
/// longer than [`MAX_READ`] or disagreeing with the `count` field is refused.
pub fn decode_read_result(b: &[u8], requested: u32) -> Result<ReadRes<'_>, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "read.status")?;
    let file_attributes = post_op_attr(&mut r)?;
    let result = match st {
        Ok(()) => {
            let max = requested.min(MAX_READ);
            let count = r.u32("read.count")?;
            if count > max {
                return Err(XdrError::TooLong { field: "read.count", len: count, max });
            }
            let eof = r.bool("read.eof")?;
            let data = r.opaque_var(max, "read.data")?;
            if data.len() != count as usize {
                return Err(XdrError::BadDiscriminant { field: "read.count", value: count });
            }
            Ok(ReadOk { eof, data })
        }
        Err(s) => Err(s),
    };
    Ok(ReadRes { result, file_attributes })
}

// ---- WRITE ----

/// `stable_how`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StableHow {
    Unstable = 0,
    DataSync = 1,
    FileSync = 2,
}

impl StableHow {
    fn decode(r: &mut XdrReader<'_>, field: &'static str) -> Result<Self, XdrError> {
        Ok(match r.u32(field)? {
            0 => StableHow::Unstable,
            1 => StableHow::DataSync,
            2 => StableHow::FileSync,
            value => return Err(XdrError::BadDiscriminant { field, value }),
        })
    }
}

/// WRITE arguments.
pub fn encode_write_args(fh: &NfsFh3, offset: u64, stable: StableHow, data: &[u8]) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(96 + data.len());
    fh.encode(&mut w);
    let count = u32::try_from(data.len()).unwrap_or(u32::MAX);
    w.u64(offset).u32(count).u32(stable as u32).opaque_var(data);
    w.into_bytes()
}

/// WRITE success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOk {
    pub count: u32,
    pub committed: StableHow,
    pub verf: [u8; VERIFIER_SIZE],
}

/// WRITE result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRes {
    pub result: Result<WriteOk, NfsStat3>,
    pub file_wcc: WccData,
}

/// WRITE result.
pub fn decode_write_result(b: &[u8]) -> Result<WriteRes, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "write.status")?;
    let file_wcc = WccData::decode(&mut r)?;
    let result = match st {
        Ok(()) => Ok(WriteOk {
            count: r.u32("write.count")?,
            committed: StableHow::decode(&mut r, "write.committed")?,
            verf: verifier(&mut r, "write.verf")?,
        }),
        Err(s) => Err(s),
    };
    Ok(WriteRes { result, file_wcc })
}

// ---- CREATE / MKDIR ----

/// `createhow3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateHow {
    Unchecked(Sattr3),
    Guarded(Sattr3),
    Exclusive([u8; VERIFIER_SIZE]),
}

/// CREATE arguments.
pub fn encode_create_args(dir: &NfsFh3, name: &str, how: &CreateHow) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(128 + name.len());
    diropargs(&mut w, dir, name);
    match how {
        CreateHow::Unchecked(a) => {
            w.u32(0);
            a.encode(&mut w);
        }
        CreateHow::Guarded(a) => {
            w.u32(1);
            a.encode(&mut w);
        }
        CreateHow::Exclusive(v) => {
            w.u32(2).opaque_fixed(v);
        }
    }
    w.into_bytes()
}

/// MKDIR arguments.
pub fn encode_mkdir_args(dir: &NfsFh3, name: &str, attrs: &Sattr3) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(128 + name.len());
    diropargs(&mut w, dir, name);
    attrs.encode(&mut w);
    w.into_bytes()
}

/// CREATE/MKDIR success; the server may omit the handle (then LOOKUP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOk {
    pub obj: Option<NfsFh3>,
    pub obj_attributes: PostOpAttr,
}

/// CREATE/MKDIR result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRes {
    pub result: Result<CreateOk, NfsStat3>,
    pub dir_wcc: WccData,
}

fn decode_create_like(b: &[u8], field: &'static str) -> Result<CreateRes, XdrError> {
    let mut r = XdrReader::new(b);
    match status(&mut r, field)? {
        Ok(()) => {
            let obj = r.optional("post_op_fh3", |r| NfsFh3::decode(r, "post_op_fh3.handle"))?;
            let obj_attributes = post_op_attr(&mut r)?;
            let dir_wcc = WccData::decode(&mut r)?;
            Ok(CreateRes { result: Ok(CreateOk { obj, obj_attributes }), dir_wcc })
        }
        Err(s) => Ok(CreateRes { result: Err(s), dir_wcc: WccData::decode(&mut r)? }),
    }
}

/// CREATE result.
pub fn decode_create_result(b: &[u8]) -> Result<CreateRes, XdrError> {
    decode_create_like(b, "create.status")
}

/// MKDIR result.
pub fn decode_mkdir_result(b: &[u8]) -> Result<CreateRes, XdrError> {
    decode_create_like(b, "mkdir.status")
}

// ---- REMOVE / RMDIR ----

/// REMOVE arguments.
pub fn encode_remove_args(dir: &NfsFh3, name: &str) -> Vec<u8> {
    encode_lookup_args(dir, name)
}

/// REMOVE result (`wcc` is the directory's).
pub fn decode_remove_result(b: &[u8]) -> Result<WccRes, XdrError> {
    decode_wcc_res(b, "remove.status")
}

/// RMDIR arguments.
pub fn encode_rmdir_args(dir: &NfsFh3, name: &str) -> Vec<u8> {
    encode_lookup_args(dir, name)
}

/// RMDIR result (`wcc` is the directory's).
pub fn decode_rmdir_result(b: &[u8]) -> Result<WccRes, XdrError> {
    decode_wcc_res(b, "rmdir.status")
}

// ---- RENAME ----

/// RENAME arguments.
pub fn encode_rename_args(from_dir: &NfsFh3, from_name: &str, to_dir: &NfsFh3, to_name: &str) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(160 + from_name.len() + to_name.len());
    diropargs(&mut w, from_dir, from_name);
    diropargs(&mut w, to_dir, to_name);
    w.into_bytes()
}

/// RENAME result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenameRes {
    pub status: Result<(), NfsStat3>,
    pub fromdir_wcc: WccData,
    pub todir_wcc: WccData,
}

/// RENAME result.
pub fn decode_rename_result(b: &[u8]) -> Result<RenameRes, XdrError> {
    let mut r = XdrReader::new(b);
    let status = status(&mut r, "rename.status")?;
    let fromdir_wcc = WccData::decode(&mut r)?;
    let todir_wcc = WccData::decode(&mut r)?;
    Ok(RenameRes { status, fromdir_wcc, todir_wcc })
}

// ---- READDIRPLUS ----

/// READDIRPLUS arguments: start with cookie 0 and a zero verifier, then
/// pass the last entry's cookie and the verifier of the previous reply.
pub fn encode_readdirplus_args(
    dir: &NfsFh3,
    cookie: u64,
    cookieverf: [u8; VERIFIER_SIZE],
    dircount: u32,
    maxcount: u32,
) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(96);
    dir.encode(&mut w);
    w.u64(cookie).opaque_fixed(&cookieverf).u32(dircount).u32(maxcount);
    w.into_bytes()
}

/// `entryplus3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPlus3 {
    pub fileid: u64,
    /// File names are bytes; see [`name_str`](Self::name_str).
    pub name: Vec<u8>,
    pub cookie: u64,
    pub attributes: PostOpAttr,
    pub handle: Option<NfsFh3>,
}

impl EntryPlus3 {
    /// The name if it is UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        core::str::from_utf8(&self.name).ok()
    }
}

/// READDIRPLUS success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaddirplusOk {
    pub cookieverf: [u8; VERIFIER_SIZE],
    pub entries: Vec<EntryPlus3>,
    pub eof: bool,
}

/// READDIRPLUS result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaddirplusRes {
    pub result: Result<ReaddirplusOk, NfsStat3>,
    pub dir_attributes: PostOpAttr,
}

/// READDIRPLUS result, at most [`MAX_DIR_ENTRIES`] entries.
pub fn decode_readdirplus_result(b: &[u8]) -> Result<ReaddirplusRes, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "readdirplus.status")?;
    let dir_attributes = post_op_attr(&mut r)?;
    let result = match st {
        Ok(()) => {
            let cookieverf = verifier(&mut r, "readdirplus.cookieverf")?;
            let mut entries = Vec::new();
            while r.bool("readdirplus.entries")? {
                if entries.len() >= MAX_DIR_ENTRIES {
                    return Err(XdrError::TooMany { field: "readdirplus.entries", max: MAX_DIR_ENTRIES as u32 });
                }
                let fileid = r.u64("entryplus3.fileid")?;
                let name = r.opaque_var(MAX_NAME, "entryplus3.name")?.to_vec();
                let cookie = r.u64("entryplus3.cookie")?;
                let attributes = post_op_attr(&mut r)?;
                let handle = r.optional("entryplus3.name_handle", |r| NfsFh3::decode(r, "entryplus3.name_handle"))?;
                entries.push(EntryPlus3 { fileid, name, cookie, attributes, handle });
            }
            let eof = r.bool("readdirplus.eof")?;
            Ok(ReaddirplusOk { cookieverf, entries, eof })
        }
        Err(s) => Err(s),
    };
    Ok(ReaddirplusRes { result, dir_attributes })
}

// ---- FSSTAT ----

/// FSSTAT arguments.
pub fn encode_fsstat_args(root: &NfsFh3) -> Vec<u8> {
    fh_only(root)
}

/// FSSTAT success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStat {
    pub tbytes: u64,
    pub fbytes: u64,
    pub abytes: u64,
    pub tfiles: u64,
    pub ffiles: u64,
    pub afiles: u64,
    pub invarsec: u32,
}

/// FSSTAT result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsstatRes {
    pub result: Result<FsStat, NfsStat3>,
    pub obj_attributes: PostOpAttr,
}

/// FSSTAT result.
pub fn decode_fsstat_result(b: &[u8]) -> Result<FsstatRes, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "fsstat.status")?;
    let obj_attributes = post_op_attr(&mut r)?;
    let result = match st {
        Ok(()) => Ok(FsStat {
            tbytes: r.u64("fsstat.tbytes")?,
            fbytes: r.u64("fsstat.fbytes")?,
            abytes: r.u64("fsstat.abytes")?,
            tfiles: r.u64("fsstat.tfiles")?,
            ffiles: r.u64("fsstat.ffiles")?,
            afiles: r.u64("fsstat.afiles")?,
            invarsec: r.u32("fsstat.invarsec")?,
        }),
        Err(s) => Err(s),
    };
    Ok(FsstatRes { result, obj_attributes })
}

// ---- FSINFO ----

/// FSINFO arguments.
pub fn encode_fsinfo_args(root: &NfsFh3) -> Vec<u8> {
    fh_only(root)
}

/// FSINFO success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub rtmax: u32,
    pub rtpref: u32,
    pub rtmult: u32,
    pub wtmax: u32,
    pub wtpref: u32,
    pub wtmult: u32,
    pub dtpref: u32,
    pub maxfilesize: u64,
    pub time_delta: NfsTime3,
    /// [`fsf`] bits.
    pub properties: u32,
}

/// FSINFO result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsinfoRes {
    pub result: Result<FsInfo, NfsStat3>,
    pub obj_attributes: PostOpAttr,
}

/// FSINFO result.
pub fn decode_fsinfo_result(b: &[u8]) -> Result<FsinfoRes, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "fsinfo.status")?;
    let obj_attributes = post_op_attr(&mut r)?;
    let result = match st {
        Ok(()) => Ok(FsInfo {
            rtmax: r.u32("fsinfo.rtmax")?,
            rtpref: r.u32("fsinfo.rtpref")?,
            rtmult: r.u32("fsinfo.rtmult")?,
            wtmax: r.u32("fsinfo.wtmax")?,
            wtpref: r.u32("fsinfo.wtpref")?,
            wtmult: r.u32("fsinfo.wtmult")?,
            dtpref: r.u32("fsinfo.dtpref")?,
            maxfilesize: r.u64("fsinfo.maxfilesize")?,
            time_delta: NfsTime3::decode(&mut r, "fsinfo.time_delta")?,
            properties: r.u32("fsinfo.properties")?,
        }),
        Err(s) => Err(s),
    };
    Ok(FsinfoRes { result, obj_attributes })
}

// ---- COMMIT ----

/// COMMIT arguments (`count` 0 means to the end of the file).
pub fn encode_commit_args(fh: &NfsFh3, offset: u64, count: u32) -> Vec<u8> {
    encode_read_args(fh, offset, count)
}

/// COMMIT result: the write verifier on success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitRes {
    pub result: Result<[u8; VERIFIER_SIZE], NfsStat3>,
    pub file_wcc: WccData,
}

/// COMMIT result.
pub fn decode_commit_result(b: &[u8]) -> Result<CommitRes, XdrError> {
    let mut r = XdrReader::new(b);
    let st = status(&mut r, "commit.status")?;
    let file_wcc = WccData::decode(&mut r)?;
    let result = match st {
        Ok(()) => Ok(verifier(&mut r, "commit.verf")?),
        Err(s) => Err(s),
    };
    Ok(CommitRes { result, file_wcc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::testutil::hammer;
    use alloc::format;
    use alloc::vec;

    const ITERS: usize = 3000;

    /// A regular file's fattr3 as a server puts it on the wire.
    fn put_fattr(w: &mut XdrWriter) {
        w.u32(1).u32(0o100644).u32(1).u32(1000).u32(100);
        w.u64(5000).u64(8192).u32(0).u32(0).u64(0x77).u64(4242);
        w.u32(1_700_000_000).u32(1).u32(1_700_000_001).u32(2).u32(1_700_000_002).u32(3);
    }

    fn fattr() -> Fattr3 {
        Fattr3 {
            ftype: FType3::Reg,
            mode: 0o100644,
            nlink: 1,
            uid: 1000,
            gid: 100,
            size: 5000,
            used: 8192,
            rdev: (0, 0),
            fsid: 0x77,
            fileid: 4242,
            atime: NfsTime3 { seconds: 1_700_000_000, nseconds: 1 },
            mtime: NfsTime3 { seconds: 1_700_000_001, nseconds: 2 },
            ctime: NfsTime3 { seconds: 1_700_000_002, nseconds: 3 },
        }
    }

    fn put_post_op(w: &mut XdrWriter) {
        w.bool(true);
        put_fattr(w);
    }

    /// wcc_data with both halves present.
    fn put_wcc(w: &mut XdrWriter) {
        w.bool(true).u64(4000).u32(10).u32(11).u32(12).u32(13);
        put_post_op(w);
    }

    fn wcc() -> WccData {
        WccData {
            before: Some(WccAttr {
                size: 4000,
                mtime: NfsTime3 { seconds: 10, nseconds: 11 },
                ctime: NfsTime3 { seconds: 12, nseconds: 13 },
            }),
            after: Some(fattr()),
        }
    }

    fn fh(n: u8) -> NfsFh3 {
        NfsFh3::new(&[n; 28]).unwrap()
    }

    fn reply(f: impl FnOnce(&mut XdrWriter)) -> Vec<u8> {
        let mut w = XdrWriter::new();
        f(&mut w);
        w.into_bytes()
    }

    #[test]
    fn stat_codes() {
        for &(s, v, _) in STATS.iter() {
            assert_eq!(NfsStat3::from_u32(v), s);
            assert_eq!(s.to_u32(), v);
            let text = format!("{s}");
            assert!(text.starts_with("NFS3") && !text.contains('\n'));
        }
        assert_eq!(format!("{}", NfsStat3::Jukebox), "NFS3ERR_JUKEBOX: server busy, retry later");
        assert!(NfsStat3::from_u32(10008).is_retryable());
        assert_eq!(NfsStat3::from_u32(4), NfsStat3::Other(4));
        assert_eq!(format!("{}", NfsStat3::Other(4)), "nfsstat3 4: unknown error");
    }

    #[test]
    fn fattr_layout_and_round_trip() {
        let b = reply(put_fattr);
        assert_eq!(b.len(), 84);
        assert_eq!(Fattr3::decode(&mut XdrReader::new(&b)).unwrap(), fattr());
        let mut w = XdrWriter::new();
        fattr().encode(&mut w);
        assert_eq!(w.into_bytes(), b);
        assert!(NfsFh3::new(&[0; 65]).is_none());
        assert!(NfsFh3::decode(
            &mut XdrReader::new(&reply(|w| {
                w.opaque_var(&[0; 65]);
            })),
            "fh"
        )
        .is_err());
    }

    #[test]
    fn arg_layouts() {
        let f = fh(1);
        let mut head = XdrWriter::new();
        head.u32(28).raw(&[1; 28]);
        let head = head.into_bytes();
        assert_eq!(encode_getattr_args(&f), head);
        assert!(encode_null_args().is_empty());
        assert_eq!(
            encode_lookup_args(&f, "abcde"),
            [&head[..], &[0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]].concat()
        );
        assert_eq!(encode_access_args(&f, 0x3f)[32..], [0, 0, 0, 0x3f]);
        assert_eq!(encode_read_args(&f, 1 << 32, 4096)[32..], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 16, 0]);
        assert_eq!(encode_commit_args(&f, 0, 0).len(), 44);
        assert_eq!(
            encode_write_args(&f, 7, StableHow::DataSync, b"hello")[32..],
            [0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
        );
        // sattr3: mode set, uid/gid/size not, atime server, mtime client.
        let sa = Sattr3 {
            mode: Some(0o644),
            atime: SetTime::ServerTime,
            mtime: SetTime::ClientTime(NfsTime3 { seconds: 5, nseconds: 6 }),
            ..Sattr3::default()
        };
        let mut want = XdrWriter::new();
        want.raw(&head).u32(1).u32(0o644).u32(0).u32(0).u32(0).u32(1).u32(2).u32(5).u32(6);
        want.u32(1).u32(9).u32(0);
        assert_eq!(encode_setattr_args(&f, &sa, Some(NfsTime3 { seconds: 9, nseconds: 0 })), want.into_bytes());
        let mut want = XdrWriter::new();
        want.raw(&head).string("x").u32(1).u32(0).u32(0).u32(0).u32(1).u64(0).u32(0).u32(0);
        let trunc = Sattr3 { size: Some(0), ..Sattr3::default() };
        assert_eq!(encode_create_args(&f, "x", &CreateHow::Guarded(trunc)), want.into_bytes());
        let ex = encode_create_args(&f, "x", &CreateHow::Exclusive(*b"verifier"));
        assert_eq!(ex[40..], [0, 0, 0, 2, b'v', b'e', b'r', b'i', b'f', b'i', b'e', b'r']);
        assert_eq!(encode_create_args(&f, "x", &CreateHow::Unchecked(Sattr3::default()))[40..44], [0, 0, 0, 0]);
        assert_eq!(encode_mkdir_args(&f, "d", &Sattr3::default()).len(), 40 + 24);
        assert_eq!(encode_remove_args(&f, "x"), encode_rmdir_args(&f, "x"));
        assert_eq!(encode_rename_args(&f, "a", &fh(2), "b").len(), 80);
        let rdp = encode_readdirplus_args(&f, 99, [7; 8], 4096, 65536);
        assert_eq!(rdp[32..], [0, 0, 0, 0, 0, 0, 0, 99, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 16, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn null_and_getattr() {
        decode_null_result(&[]).unwrap();
        assert!(decode_null_result(&[0]).is_err());
        let ok = reply(|w| {
            w.u32(0);
            put_fattr(w);
        });
        assert_eq!(decode_getattr_result(&ok).unwrap(), Ok(fattr()));
        assert_eq!(decode_getattr_result(&[0, 0, 0, 70]).unwrap(), Err(NfsStat3::Stale));
        hammer(&ok, ITERS, 1, decode_getattr_result);
    }

    #[test]
    fn setattr_remove_rmdir() {
        let ok = reply(|w| {
            w.u32(0);
            put_wcc(w);
        });
        assert_eq!(decode_setattr_result(&ok).unwrap(), WccRes { status: Ok(()), wcc: wcc() });
        let err = reply(|w| {
            w.u32(10002).u32(0).u32(0);
        });
        assert_eq!(
            decode_setattr_result(&err).unwrap(),
            WccRes { status: Err(NfsStat3::NotSync), wcc: WccData::default() }
        );
        assert_eq!(decode_remove_result(&ok).unwrap().status, Ok(()));
        let ne = reply(|w| {
            w.u32(66).u32(0);
            put_post_op(w);
        });
        assert_eq!(decode_rmdir_result(&ne).unwrap().status, Err(NfsStat3::NotEmpty));
        hammer(&ok, ITERS, 2, decode_setattr_result);
        hammer(&ne, ITERS, 3, decode_rmdir_result);
    }

    #[test]
    fn lookup() {
        let ok = reply(|w| {
            w.u32(0).opaque_var(&[5; 28]);
            put_post_op(w);
            w.bool(false);
        });
        let r = decode_lookup_result(&ok).unwrap();
        assert_eq!(r.result, Ok(LookupOk { object: fh(5), obj_attributes: Some(fattr()) }));
        assert_eq!(r.dir_attributes, None);
        let err = reply(|w| {
            w.u32(2);
            put_post_op(w);
        });
        let r = decode_lookup_result(&err).unwrap();
        assert_eq!((r.result, r.dir_attributes), (Err(NfsStat3::NoEnt), Some(fattr())));
        hammer(&ok, ITERS, 4, decode_lookup_result);
        hammer(&err, ITERS, 5, decode_lookup_result);
    }

    #[test]
    fn access() {
        let ok = reply(|w| {
            w.u32(0);
            put_post_op(w);
            w.u32(access::READ | access::LOOKUP);
        });
        let r = decode_access_result(&ok).unwrap();
        assert_eq!((r.result, r.obj_attributes), (Ok(3), Some(fattr())));
        assert_eq!(decode_access_result(&[0, 0, 0, 13, 0, 0, 0, 0]).unwrap().result, Err(NfsStat3::Acces));
        hammer(&ok, ITERS, 6, decode_access_result);
    }

    #[test]
    fn read() {
        let ok = reply(|w| {
            w.u32(0);
            put_post_op(w);
            w.u32(5).bool(true).opaque_var(b"hello");
        });
        let r = decode_read_result(&ok, 4096).unwrap();
        assert_eq!(r.result, Ok(ReadOk { eof: true, data: b"hello" }));
        assert_eq!(r.file_attributes, Some(fattr()));
        // More than requested, count disagreeing with the data.
        assert!(decode_read_result(&ok, 4).is_err());
        let bad = reply(|w| {
            w.u32(0).bool(false).u32(4).bool(false).opaque_var(b"hello");
        });
        assert!(decode_read_result(&bad, 100).is_err());
        let big = reply(|w| {
            w.u32(0).bool(false).u32(MAX_READ + 4).bool(false);
        });
        assert!(matches!(decode_read_result(&big, u32::MAX), Err(XdrError::TooLong { field: "read.count", .. })));
        let jb = reply(|w| {
            w.u32(10008).bool(false);
        });
        assert_eq!(decode_read_result(&jb, 10).unwrap().result, Err(NfsStat3::Jukebox));
        hammer(&ok, ITERS, 7, |b| decode_read_result(b, 4096).map(|r| r.result.is_ok()));
    }

    #[test]
    fn write_and_commit() {
        let ok = reply(|w| {
            w.u32(0);
            put_wcc(w);
            w.u32(5).u32(2).opaque_fixed(b"\x01\x02\x03\x04\x05\x06\x07\x08");
        });
        let r = decode_write_result(&ok).unwrap();
        assert_eq!(r.result, Ok(WriteOk { count: 5, committed: StableHow::FileSync, verf: [1, 2, 3, 4, 5, 6, 7, 8] }));
        assert_eq!(r.file_wcc, wcc());
        let nospc = reply(|w| {
            w.u32(28).bool(false).bool(false);
        });
        assert_eq!(decode_write_result(&nospc).unwrap().result, Err(NfsStat3::NoSpc));
        let mut bad = ok.clone();
        let n = bad.len();
        bad[n - 9] = 3; // committed = 3
        assert!(decode_write_result(&bad).is_err());
        hammer(&ok, ITERS, 8, decode_write_result);

        let c = reply(|w| {
            w.u32(0);
            put_wcc(w);
            w.opaque_fixed(&[9; 8]);
        });
        let r = decode_commit_result(&c).unwrap();
        assert_eq!((r.result, r.file_wcc), (Ok([9; 8]), wcc()));
        assert_eq!(decode_commit_result(&[0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap().result, Err(NfsStat3::Io));
        hammer(&c, ITERS, 9, decode_commit_result);
    }

    #[test]
    fn create_and_mkdir() {
        let ok = reply(|w| {
            w.u32(0).bool(true).opaque_var(&[6; 28]);
            put_post_op(w);
            put_wcc(w);
        });
        let r = decode_create_result(&ok).unwrap();
        assert_eq!(r.result, Ok(CreateOk { obj: Some(fh(6)), obj_attributes: Some(fattr()) }));
        assert_eq!(r.dir_wcc, wcc());
        let nofh = reply(|w| {
            w.u32(0).bool(false).bool(false).bool(false).bool(false);
        });
        assert_eq!(decode_mkdir_result(&nofh).unwrap().result, Ok(CreateOk { obj: None, obj_attributes: None }));
        let exist = reply(|w| {
            w.u32(17);
            put_wcc(w);
        });
        let r = decode_mkdir_result(&exist).unwrap();
        assert_eq!((r.result, r.dir_wcc), (Err(NfsStat3::Exist), wcc()));
        hammer(&ok, ITERS, 10, decode_create_result);
        hammer(&exist, ITERS, 11, decode_mkdir_result);
    }

    #[test]
    fn rename() {
        let ok = reply(|w| {
            w.u32(0);
            put_wcc(w);
            w.bool(false);
            put_post_op(w);
        });
        let r = decode_rename_result(&ok).unwrap();
        assert_eq!(r.status, Ok(()));
        assert_eq!(r.fromdir_wcc, wcc());
        assert_eq!(r.todir_wcc, WccData { before: None, after: Some(fattr()) });
        assert_eq!(
            decode_rename_result(&[0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap().status,
            Err(NfsStat3::XDev)
        );
        hammer(&ok, ITERS, 12, decode_rename_result);
    }

    #[test]
    fn readdirplus() {
        let ok = reply(|w| {
            w.u32(0);
            put_post_op(w);
            w.opaque_fixed(&[3; 8]);
            w.bool(true).u64(1).string(".").u64(11);
            put_post_op(w);
            w.bool(true).opaque_var(&[1; 28]);
            w.bool(true).u64(4242).string("kernel.elf").u64(12).bool(false).bool(false);
            w.bool(false).bool(true);
        });
        let r = decode_readdirplus_result(&ok).unwrap();
        assert_eq!(r.dir_attributes, Some(fattr()));
        let ok_part = r.result.unwrap();
        assert_eq!(ok_part.cookieverf, [3; 8]);
        assert!(ok_part.eof);
        assert_eq!(
            ok_part.entries,
            vec![
                EntryPlus3 {
                    fileid: 1,
                    name: b".".to_vec(),
                    cookie: 11,
                    attributes: Some(fattr()),
                    handle: Some(fh(1))
                },
                EntryPlus3 { fileid: 4242, name: b"kernel.elf".to_vec(), cookie: 12, attributes: None, handle: None },
            ]
        );
        assert_eq!(ok_part.entries[1].name_str(), Some("kernel.elf"));
        let bc = reply(|w| {
            w.u32(10003).bool(false);
        });
        assert_eq!(decode_readdirplus_result(&bc).unwrap().result, Err(NfsStat3::BadCookie));
        hammer(&ok, ITERS, 13, decode_readdirplus_result);
        // Too many entries.
        let many = reply(|w| {
            w.u32(0).bool(false).opaque_fixed(&[0; 8]);
            for i in 0..=MAX_DIR_ENTRIES as u64 {
                w.bool(true).u64(i).string("f").u64(i).bool(false).bool(false);
            }
            w.bool(false).bool(true);
        });
        assert!(matches!(decode_readdirplus_result(&many), Err(XdrError::TooMany { .. })));
    }

    #[test]
    fn fsstat_and_fsinfo() {
        let st = reply(|w| {
            w.u32(0).bool(false);
            w.u64(1 << 40).u64(1 << 39).u64(1 << 38).u64(1000).u64(500).u64(400).u32(0);
        });
        let r = decode_fsstat_result(&st).unwrap();
        assert_eq!(
            r.result,
            Ok(FsStat {
                tbytes: 1 << 40,
                fbytes: 1 << 39,
                abytes: 1 << 38,
                tfiles: 1000,
                ffiles: 500,
                afiles: 400,
                invarsec: 0
            })
        );
        hammer(&st, ITERS, 14, decode_fsstat_result);
        // As ganesha advertises: rtmax/wtmax 64 MiB.
        let info = reply(|w| {
            w.u32(0);
            put_post_op(w);
            w.u32(64 << 20).u32(64 << 20).u32(4096).u32(64 << 20).u32(64 << 20).u32(4096).u32(64 << 20);
            w.u64(u64::MAX).u32(0).u32(1).u32(fsf::LINK | fsf::SYMLINK | fsf::HOMOGENEOUS | fsf::CANSETTIME);
        });
        let r = decode_fsinfo_result(&info).unwrap();
        let i = r.result.unwrap();
        assert_eq!(
            (i.rtmax, i.wtpref, i.dtpref, i.maxfilesize, i.properties),
            (64 << 20, 64 << 20, 64 << 20, u64::MAX, 0x1b)
        );
        assert_eq!(i.time_delta, NfsTime3 { seconds: 0, nseconds: 1 });
        assert_eq!(r.obj_attributes, Some(fattr()));
        assert_eq!(decode_fsinfo_result(&[0, 0, 0x27, 0x11, 0, 0, 0, 0]).unwrap().result, Err(NfsStat3::BadHandle));
        hammer(&info, ITERS, 15, decode_fsinfo_result);
    }
}
