//! ONC RPC version 2 (RFC 5531) over a byte stream, sans IO.
//!
//! * record marking (RFC 5531 §11): [`encode_record`], [`RecordDecoder`];
//! * call headers with `AUTH_SYS` or `AUTH_NONE` credentials: [`encode_call`];
//! * reply headers: [`decode_reply`];
//! * [`RpcClient`]: XIDs, calls in flight, reply matching, timeouts with
//!   exponential backoff and resends after a reconnect. The caller moves the
//!   bytes and supplies the time.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::xdr::{XdrError, XdrReader, XdrWriter};

/// `msg_type` CALL.
pub const CALL: u32 = 0;
/// `msg_type` REPLY.
pub const REPLY: u32 = 1;
/// The RPC protocol version carried in every call.
pub const RPC_VERSION: u32 = 2;
/// `AUTH_NONE` flavor.
pub const AUTH_NONE: u32 = 0;
/// `AUTH_SYS` (`AUTH_UNIX`) flavor.
pub const AUTH_SYS: u32 = 1;
/// Maximum length of an `opaque_auth` body.
pub const MAX_AUTH_BYTES: u32 = 400;
/// Maximum length of the AUTH_SYS machine name.
pub const MAX_MACHINE_NAME: u32 = 255;
/// Maximum number of AUTH_SYS supplementary groups.
pub const MAX_GIDS: usize = 16;
/// Default cap on a reassembled record: 8 MiB of payload plus headers.
pub const DEFAULT_MAX_RECORD: usize = 8 * 1024 * 1024 + 64 * 1024;
/// The last-fragment bit of a record mark.
const LAST_FRAGMENT: u32 = 0x8000_0000;
/// The largest fragment a record mark can describe.
const MAX_FRAGMENT: usize = 0x7fff_ffff;

/// A transaction id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xid(pub u32);

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// `auth_stat` values of an `AUTH_ERROR` rejection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthStat {
    Ok,
    BadCred,
    RejectedCred,
    BadVerf,
    RejectedVerf,
    TooWeak,
    InvalidResp,
    Failed,
    /// Anything else (RPCSEC_GSS codes and unknown values).
    Other(u32),
}

impl AuthStat {
    /// From the wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => AuthStat::Ok,
            1 => AuthStat::BadCred,
            2 => AuthStat::RejectedCred,
            3 => AuthStat::BadVerf,
            4 => AuthStat::RejectedVerf,
            5 => AuthStat::TooWeak,
            6 => AuthStat::InvalidResp,
            7 => AuthStat::Failed,
            v => AuthStat::Other(v),
        }
    }
}

impl fmt::Display for AuthStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthStat::Ok => f.write_str("AUTH_OK"),
            AuthStat::BadCred => f.write_str("AUTH_BADCRED (bad credential)"),
            AuthStat::RejectedCred => f.write_str("AUTH_REJECTEDCRED (credential rejected)"),
            AuthStat::BadVerf => f.write_str("AUTH_BADVERF (bad verifier)"),
            AuthStat::RejectedVerf => f.write_str("AUTH_REJECTEDVERF (verifier rejected)"),
            AuthStat::TooWeak => f.write_str("AUTH_TOOWEAK (security too weak)"),
            AuthStat::InvalidResp => f.write_str("AUTH_INVALIDRESP (bogus response verifier)"),
            AuthStat::Failed => f.write_str("AUTH_FAILED"),
            AuthStat::Other(v) => write!(f, "auth_stat {v}"),
        }
    }
}

/// Why a call did not produce a result body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// MSG_ACCEPTED / PROG_UNAVAIL.
    ProgUnavail,
    /// MSG_ACCEPTED / PROG_MISMATCH with the supported version range.
    ProgMismatch { low: u32, high: u32 },
    /// MSG_ACCEPTED / PROC_UNAVAIL.
    ProcUnavail,
    /// MSG_ACCEPTED / GARBAGE_ARGS.
    GarbageArgs,
    /// MSG_ACCEPTED / SYSTEM_ERR.
    SystemErr,
    /// MSG_DENIED / RPC_MISMATCH with the supported RPC version range.
    RpcMismatch { low: u32, high: u32 },
    /// MSG_DENIED / AUTH_ERROR.
    AuthError(AuthStat),
    /// The reply header after the XID could not be decoded.
    BadReply(XdrError),
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::ProgUnavail => f.write_str("rpc: program unavailable"),
            RpcError::ProgMismatch { low, high } => {
                write!(f, "rpc: program version mismatch (server has {low}..={high})")
            }
            RpcError::ProcUnavail => f.write_str("rpc: procedure unavailable"),
            RpcError::GarbageArgs => f.write_str("rpc: server could not decode arguments"),
            RpcError::SystemErr => f.write_str("rpc: server system error"),
            RpcError::RpcMismatch { low, high } => write!(f, "rpc: RPC version mismatch (server has {low}..={high})"),
            RpcError::AuthError(s) => write!(f, "rpc: authentication error: {s}"),
            RpcError::BadReply(e) => write!(f, "rpc: malformed reply: {e}"),
        }
    }
}

/// A record-marking failure: the stream is out of step and must be reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The record being reassembled would exceed `max` bytes.
    TooLarge { len: usize, max: usize },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooLarge { len, max } => write!(f, "rpc: record of {len} bytes exceeds limit {max}"),
        }
    }
}

/// Frames `payload` as one record (split into fragments only beyond 2 GiB).
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    encode_record_fragments(payload, MAX_FRAGMENT)
}

/// Frames `payload` as one record of fragments of at most `frag` bytes.
pub fn encode_record_fragments(payload: &[u8], frag: usize) -> Vec<u8> {
    let frag = frag.clamp(1, MAX_FRAGMENT);
    let mut out = Vec::with_capacity(payload.len() + 4 * (payload.len() / frag + 1));
    let mut chunks = payload.chunks(frag).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&LAST_FRAGMENT.to_be_bytes());
    }
    while let Some(c) = chunks.next() {
        let last = if chunks.peek().is_none() { LAST_FRAGMENT } else { 0 };
        // `c.len() <= MAX_FRAGMENT` fits in 31 bits.
        out.extend_from_slice(&(last | c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Reassembles records from stream bytes delivered in arbitrary chunks.
#[derive(Clone, Debug)]
pub struct RecordDecoder {
    max: usize,
    header: [u8; 4],
    header_len: usize,
    /// Bytes still expected in the current fragment.
    frag_left: usize,
    /// The current fragment is the record's last.
    frag_last: bool,
    /// Inside a fragment body (as opposed to waiting for a header).
    in_frag: bool,
    record: Vec<u8>,
    broken: Option<RecordError>,
}

impl Default for RecordDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD)
    }
}

impl RecordDecoder {
    /// A decoder that refuses records longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        RecordDecoder {
            max,
            header: [0; 4],
            header_len: 0,
            frag_left: 0,
            frag_last: false,
            in_frag: false,
            record: Vec::new(),
            broken: None,
        }
    }

    /// Forgets any partial record (after a reconnect).
    pub fn reset(&mut self) {
        *self = Self::new(self.max);
    }

    /// The error that stopped the decoder, if any.
    pub fn error(&self) -> Option<RecordError> {
        self.broken
    }

    /// Bytes of the record being reassembled.
    pub fn pending_len(&self) -> usize {
        self.record.len()
    }

    /// Consumes `data`, appending each completed record to `out`. After an
    /// error all further input is refused until [`reset`](Self::reset);
    /// records completed before it stay in `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), RecordError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        while !data.is_empty() {
            if !self.in_frag {
                let n = (4 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                if self.header_len < 4 {
                    break;
                }
                self.header_len = 0;
                let mark = u32::from_be_bytes(self.header);
                self.frag_last = mark & LAST_FRAGMENT != 0;
                self.frag_left = (mark & !LAST_FRAGMENT) as usize;
                let total = self.record.len().saturating_add(self.frag_left);
                if total > self.max {
                    let e = RecordError::TooLarge { len: total, max: self.max };
                    self.broken = Some(e);
                    self.record = Vec::new();
                    return Err(e);
                }
                self.record.reserve(self.frag_left.min(64 * 1024));
                self.in_frag = true;
            }
            let n = self.frag_left.min(data.len());
            self.record.extend_from_slice(&data[..n]);
            self.frag_left -= n;
            data = &data[n..];
            if self.frag_left == 0 {
                self.in_frag = false;
                if self.frag_last {
                    out.push(core::mem::take(&mut self.record));
                }
            }
        }
        Ok(())
    }
}

/// AUTH_SYS credential contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSys {
    pub stamp: u32,
    /// At most 255 bytes (longer names are truncated at a char boundary).
    pub machine_name: String,
    pub uid: u32,
    pub gid: u32,
    /// At most 16 (extra groups are not sent).
    pub gids: Vec<u32>,
}

impl AuthSys {
    /// Encodes the credential body (`authsys_parms`).
    pub fn encode_body(&self, w: &mut XdrWriter) {
        let mut name = self.machine_name.as_str();
        let mut cut = name.len().min(MAX_MACHINE_NAME as usize);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = &name[..cut];
        w.u32(self.stamp).string(name).u32(self.uid).u32(self.gid);
        let gids = &self.gids[..self.gids.len().min(MAX_GIDS)];
        w.u32(gids.len() as u32);
        for &g in gids {
            w.u32(g);
        }
    }

    /// Decodes a credential body (used by tests and servers).
    pub fn decode_body(r: &mut XdrReader<'_>) -> Result<Self, XdrError> {
        let stamp = r.u32("authsys.stamp")?;
        let machine_name = r.string(MAX_MACHINE_NAME, "authsys.machinename")?;
        let uid = r.u32("authsys.uid")?;
        let gid = r.u32("authsys.gid")?;
        let gids = r.array_var(MAX_GIDS as u32, "authsys.gids", |r| r.u32("authsys.gid"))?;
        Ok(AuthSys { stamp, machine_name, uid, gid, gids })
    }
}

/// The credential sent with each call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Sys(AuthSys),
}

impl Auth {
    /// Encodes the `opaque_auth` credential.
    pub fn encode(&self, w: &mut XdrWriter) {
        match self {
            Auth::None => {
                w.u32(AUTH_NONE).u32(0);
            }
            Auth::Sys(s) => {
                let mut body = XdrWriter::with_capacity(64);
                s.encode_body(&mut body);
                w.u32(AUTH_SYS).opaque_var(body.as_bytes());
            }
        }
    }
}

/// Writes a call header (with an AUTH_NONE verifier); the caller appends the
/// procedure's arguments.
pub fn encode_call_header(w: &mut XdrWriter, xid: Xid, prog: u32, vers: u32, proc_: u32, cred: &Auth) {
    w.u32(xid.0).u32(CALL).u32(RPC_VERSION).u32(prog).u32(vers).u32(proc_);
    cred.encode(w);
    w.u32(AUTH_NONE).u32(0);
}

/// A complete call message (without record mark).
pub fn encode_call(xid: Xid, prog: u32, vers: u32, proc_: u32, cred: &Auth, args: &[u8]) -> Vec<u8> {
    let mut w = XdrWriter::with_capacity(128 + args.len());
    encode_call_header(&mut w, xid, prog, vers, proc_, cred);
    w.raw(args);
    w.into_bytes()
}

/// A decoded call header (for tests and loopback servers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHeader<'a> {
    pub xid: Xid,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub cred_flavor: u32,
    pub cred_body: &'a [u8],
    pub args: &'a [u8],
}

/// Decodes a call message header.
pub fn decode_call(msg: &[u8]) -> Result<CallHeader<'_>, XdrError> {
    let mut r = XdrReader::new(msg);
    let xid = Xid(r.u32("call.xid")?);
    let mtype = r.u32("call.msg_type")?;
    if mtype != CALL {
        return Err(XdrError::BadDiscriminant { field: "call.msg_type", value: mtype });
    }
    let rpcvers = r.u32("call.rpcvers")?;
    if rpcvers != RPC_VERSION {
        return Err(XdrError::BadDiscriminant { field: "call.rpcvers", value: rpcvers });
    }
    let prog = r.u32("call.prog")?;
    let vers = r.u32("call.vers")?;
    let proc_ = r.u32("call.proc")?;
    let cred_flavor = r.u32("call.cred.flavor")?;
    let cred_body = r.opaque_var(MAX_AUTH_BYTES, "call.cred.body")?;
    r.u32("call.verf.flavor")?;
    r.opaque_var(MAX_AUTH_BYTES, "call.verf.body")?;
    Ok(CallHeader { xid, prog, vers, proc_, cred_flavor, cred_body, args: r.rest() })
}

/// A reply message: its XID and either the procedure's result body or why
/// there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub xid: Xid,
    pub result: Result<&'a [u8], RpcError>,
}

/// Decodes a reply message. Fails only when the message is not a reply at
/// all; an undecodable header after the XID yields
/// `result: Err(RpcError::BadReply(..))` so the call can still be matched.
pub fn decode_reply(msg: &[u8]) -> Result<Reply<'_>, XdrError> {
    let mut r = XdrReader::new(msg);
    let xid = Xid(r.u32("reply.xid")?);
    let mtype = r.u32("reply.msg_type")?;
    if mtype != REPLY {
        return Err(XdrError::BadDiscriminant { field: "reply.msg_type", value: mtype });
    }
    let result = decode_reply_body(&mut r).unwrap_or_else(|e| Err(RpcError::BadReply(e)));
    Ok(Reply { xid, result })
}

fn decode_reply_body<'a>(r: &mut XdrReader<'a>) -> Result<Result<&'a [u8], RpcError>, XdrError> {
    match r.u32("reply.reply_stat")? {
        0 => {
            r.u32("reply.verf.flavor")?;
            r.opaque_var(MAX_AUTH_BYTES, "reply.verf.body")?;
            Ok(match r.u32("reply.accept_stat")? {
                0 => Ok(r.rest()),
                1 => Err(RpcError::ProgUnavail),
                2 => {
                    let low = r.u32("reply.mismatch.low")?;
                    let high = r.u32("reply.mismatch.high")?;
                    Err(RpcError::ProgMismatch { low, high })
                }
                3 => Err(RpcError::ProcUnavail),
                4 => Err(RpcError::GarbageArgs),
                5 => Err(RpcError::SystemErr),
                value => return Err(XdrError::BadDiscriminant { field: "reply.accept_stat", value }),
            })
        }
        1 => Ok(match r.u32("reply.reject_stat")? {
            0 => {
                let low = r.u32("reply.rpc_mismatch.low")?;
                let high = r.u32("reply.rpc_mismatch.high")?;
                Err(RpcError::RpcMismatch { low, high })
            }
            1 => Err(RpcError::AuthError(AuthStat::from_u32(r.u32("reply.auth_stat")?))),
            value => return Err(XdrError::BadDiscriminant { field: "reply.reject_stat", value }),
        }),
        value => Err(XdrError::BadDiscriminant { field: "reply.reply_stat", value }),
    }
}

/// Retransmission policy of an [`RpcClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First timeout after a (re)send.
    pub initial_ms: u64,
    /// Timeouts double after each resend up to this.
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { initial_ms: 1_000, max_ms: 30_000 }
    }
}

#[derive(Clone, Debug)]
struct Pending {
    /// The framed request, ready to resend.
    request: Vec<u8>,
    deadline: u64,
    timeout: u64,
    sends: u32,
}

/// Counters of an [`RpcClient`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcStats {
    pub calls: u64,
    pub replies: u64,
    pub resends: u64,
    /// Replies whose XID matched no call in flight (late duplicates).
    pub unknown_xids: u64,
    /// Records that were not RPC replies at all.
    pub malformed: u64,
}

/// A sans-IO RPC client over one stream connection.
#[derive(Clone, Debug)]
pub struct RpcClient {
    cred: Auth,
    next_xid: u32,
    policy: RetryPolicy,
    pending: BTreeMap<Xid, Pending>,
    decoder: RecordDecoder,
    stats: RpcStats,
}

impl RpcClient {
    /// A client sending `cred`; XIDs start at `first_xid` (seed it from a
    /// clock or random source so a restart does not reuse XIDs).
    pub fn new(cred: Auth, first_xid: u32, policy: RetryPolicy) -> Self {
        RpcClient {
            cred,
            next_xid: first_xid,
            policy,
            pending: BTreeMap::new(),
            decoder: RecordDecoder::default(),
            stats: RpcStats::default(),
        }
    }

    /// Replaces the credential for future calls.
    pub fn set_cred(&mut self, cred: Auth) {
        self.cred = cred;
    }

    /// Replaces the cap on reply records (default [`DEFAULT_MAX_RECORD`]).
    pub fn set_max_record(&mut self, max: usize) {
        self.decoder = RecordDecoder::new(max);
    }

    /// Counters.
    pub fn stats(&self) -> RpcStats {
        self.stats
    }

    /// Calls awaiting a reply.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether `xid` is awaiting a reply.
    pub fn is_pending(&self, xid: Xid) -> bool {
        self.pending.contains_key(&xid)
    }

    /// The earliest deadline of the calls in flight.
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// The record-marking error that broke the stream; the caller should
    /// reconnect and call [`reset_stream`](Self::reset_stream).
    pub fn stream_error(&self) -> Option<RecordError> {
        self.decoder.error()
    }

    /// Starts a call; returns its XID and the framed bytes to send.
    pub fn call(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8], now_ms: u64) -> (Xid, Vec<u8>) {
        let mut xid = Xid(self.next_xid);
        // Skip XIDs still in flight after a wrap-around.
        while self.pending.contains_key(&xid) {
            xid = Xid(xid.0.wrapping_add(1));
        }
        self.next_xid = xid.0.wrapping_add(1);
        let mut w = XdrWriter::with_capacity(132 + args.len());
        w.u32(0);
        encode_call_header(&mut w, xid, prog, vers, proc_, &self.cred);
        w.raw(args);
        let mut request = w.into_bytes();
        let len = request.len() - 4;
        // Requests are far below 2 GiB; a larger one is framed in fragments.
        if len <= MAX_FRAGMENT {
            request[..4].copy_from_slice(&(LAST_FRAGMENT | len as u32).to_be_bytes());
        } else {
            request = encode_record(&request[4..]);
        }
        let timeout = self.policy.initial_ms.max(1);
        self.pending.insert(
            xid,
            Pending { request: request.clone(), deadline: now_ms.saturating_add(timeout), timeout, sends: 1 },
        );
        self.stats.calls += 1;
        (xid, request)
    }

    /// Abandons a call; a later reply to it counts as unknown.
    pub fn cancel(&mut self, xid: Xid) -> bool {
        self.pending.remove(&xid).is_some()
    }

    /// How many times `xid` has been sent.
    pub fn sends(&self, xid: Xid) -> Option<u32> {
        self.pending.get(&xid).map(|p| p.sends)
    }

    /// Consumes stream bytes; returns the calls completed by them.
    pub fn on_bytes(&mut self, data: &[u8]) -> Vec<(Xid, Result<Vec<u8>, RpcError>)> {
        let mut records = Vec::new();
        // On error the completed records are still in `records`, and
        // `stream_error` tells the caller to reconnect.
        let _ = self.decoder.push(data, &mut records);
        let mut done = Vec::new();
        for rec in records {
            match decode_reply(&rec) {
                Ok(reply) => {
                    if self.pending.remove(&reply.xid).is_some() {
                        self.stats.replies += 1;
                        done.push((reply.xid, reply.result.map(<[u8]>::to_vec)));
                    } else {
                        self.stats.unknown_xids += 1;
                    }
                }
                Err(_) => self.stats.malformed += 1,
            }
        }
        done
    }

    /// Calls whose deadline has passed, with the bytes to resend (same XID);
    /// their timeouts double up to the policy's cap.
    pub fn poll_timeouts(&mut self, now_ms: u64) -> Vec<(Xid, Vec<u8>)> {
        let max = self.policy.max_ms.max(1);
        let mut out = Vec::new();
        for (&xid, p) in self.pending.iter_mut() {
            if p.deadline <= now_ms {
                p.timeout = p.timeout.saturating_mul(2).min(max);
                p.deadline = now_ms.saturating_add(p.timeout);
                p.sends = p.sends.saturating_add(1);
                self.stats.resends += 1;
                out.push((xid, p.request.clone()));
            }
        }
        out
    }

    /// After a reconnect: drops any partial reply and returns every call in
    /// flight for resending (same XIDs, in XID order), with fresh deadlines.
    pub fn reset_stream(&mut self, now_ms: u64) -> Vec<(Xid, Vec<u8>)> {
        self.decoder.reset();
        let mut out = Vec::with_capacity(self.pending.len());
        for (&xid, p) in self.pending.iter_mut() {
            p.deadline = now_ms.saturating_add(p.timeout);
            p.sends = p.sends.saturating_add(1);
            self.stats.resends += 1;
            out.push((xid, p.request.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::testutil::{hammer, Rng};
    use alloc::vec;

    fn accepted(xid: u32, stat: u32, tail: &[u8]) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.u32(xid).u32(REPLY).u32(0).u32(AUTH_NONE).u32(0).u32(stat).raw(tail);
        w.into_bytes()
    }

    fn sys() -> Auth {
        Auth::Sys(AuthSys { stamp: 7, machine_name: "rhv".into(), uid: 0, gid: 0, gids: vec![0, 10] })
    }

    #[test]
    fn call_header_layout() {
        let msg = encode_call(Xid(0x1234), 100003, 3, 1, &sys(), &[0, 0, 0, 9]);
        let mut w = XdrWriter::new();
        w.u32(0x1234).u32(0).u32(2).u32(100003).u32(3).u32(1);
        // AUTH_SYS: flavor, length 4+8+4+4+12 = 32, body.
        w.u32(1).u32(32).u32(7).string("rhv").u32(0).u32(0).u32(2).u32(0).u32(10);
        w.u32(0).u32(0).u32(9);
        assert_eq!(msg, w.into_bytes());
        let h = decode_call(&msg).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.proc_, h.cred_flavor), (Xid(0x1234), 100003, 3, 1, AUTH_SYS));
        assert_eq!(h.args, &[0, 0, 0, 9]);
        let a = AuthSys::decode_body(&mut XdrReader::new(h.cred_body)).unwrap();
        assert_eq!(Auth::Sys(a), sys());
        let none = encode_call(Xid(1), 100000, 2, 0, &Auth::None, &[]);
        assert_eq!(none.len(), 40);
    }

    #[test]
    fn auth_sys_caps() {
        let long = AuthSys { stamp: 0, machine_name: "é".repeat(200), uid: 1, gid: 2, gids: (0..40).collect() };
        let mut w = XdrWriter::new();
        long.encode_body(&mut w);
        let back = AuthSys::decode_body(&mut XdrReader::new(w.as_bytes())).unwrap();
        assert_eq!(back.gids.len(), MAX_GIDS);
        assert_eq!(back.machine_name.len(), 254);
        assert!(w.len() <= MAX_AUTH_BYTES as usize);
    }

    #[test]
    fn reply_variants() {
        let ok = accepted(5, 0, &[1, 2, 3, 4]);
        assert_eq!(decode_reply(&ok).unwrap(), Reply { xid: Xid(5), result: Ok(&[1, 2, 3, 4][..]) });
        let cases: [(Vec<u8>, RpcError); 7] = [
            (accepted(1, 1, &[]), RpcError::ProgUnavail),
            (accepted(1, 2, &[0, 0, 0, 2, 0, 0, 0, 3]), RpcError::ProgMismatch { low: 2, high: 3 }),
            (accepted(1, 3, &[]), RpcError::ProcUnavail),
            (accepted(1, 4, &[]), RpcError::GarbageArgs),
            (accepted(1, 5, &[]), RpcError::SystemErr),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2].to_vec(),
                RpcError::RpcMismatch { low: 2, high: 2 },
            ),
            (
                [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5].to_vec(),
                RpcError::AuthError(AuthStat::TooWeak),
            ),
        ];
        for (msg, err) in cases {
            assert_eq!(decode_reply(&msg).unwrap().result, Err(err));
            assert!(!alloc::format!("{err}").contains('\n'));
        }
        // A call is not a reply; an unknown accept_stat is a bad reply.
        assert!(decode_reply(&encode_call(Xid(1), 1, 1, 1, &Auth::None, &[])).is_err());
        let bad = accepted(9, 77, &[]);
        assert!(matches!(decode_reply(&bad).unwrap().result, Err(RpcError::BadReply(_))));
    }

    #[test]
    fn reply_fuzz() {
        let msg = accepted(5, 2, &[0, 0, 0, 2, 0, 0, 0, 3]);
        hammer(&msg, 3000, 11, |b| {
            decode_reply(b).and_then(|r| match r.result {
                Err(RpcError::BadReply(e)) => Err(e),
                _ => Ok(()),
            })
        });
    }

    #[test]
    fn record_marking_chunks() {
        let payloads: Vec<Vec<u8>> = (0..20u32).map(|i| (0..i * 37).map(|b| b as u8).collect()).collect();
        let mut stream = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            stream.extend_from_slice(&encode_record_fragments(p, 1 + i * 5));
        }
        // Byte by byte.
        let mut d = RecordDecoder::default();
        let mut out = Vec::new();
        for b in &stream {
            d.push(core::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, payloads);
        // Random chunks.
        let mut rng = Rng(99);
        for _ in 0..50 {
            let mut d = RecordDecoder::default();
            let mut out = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(300));
                d.push(&rest[..n], &mut out).unwrap();
                rest = &rest[n..];
            }
            assert_eq!(out, payloads);
            assert_eq!(d.pending_len(), 0);
        }
        assert_eq!(encode_record(&[]), vec![0x80, 0, 0, 0]);
    }

    #[test]
    fn record_too_large() {
        let mut d = RecordDecoder::new(100);
        let mut out = Vec::new();
        let mut s = encode_record(&[1; 10]);
        s.extend_from_slice(&encode_record_fragments(&[2; 120], 60));
        let e = d.push(&s, &mut out).unwrap_err();
        assert_eq!(e, RecordError::TooLarge { len: 120, max: 100 });
        assert_eq!(out, vec![vec![1; 10]]);
        assert_eq!(d.push(&[0], &mut out), Err(e));
        d.reset();
        d.push(&encode_record(&[3; 100]), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        // A hostile 2 GiB mark is refused without allocating.
        let mut d = RecordDecoder::default();
        assert!(d.push(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
    }

    fn xid_of(req: &[u8]) -> Xid {
        Xid(u32::from_be_bytes([req[4], req[5], req[6], req[7]]))
    }

    #[test]
    fn client_matches_out_of_order_and_ignores_unknown() {
        let mut c = RpcClient::new(sys(), 100, RetryPolicy::default());
        let (a, ra) = c.call(100003, 3, 1, &[0, 0, 0, 1], 0);
        let (b, rb) = c.call(100003, 3, 6, &[0, 0, 0, 2], 0);
        let (x, _) = c.call(100003, 3, 0, &[], 0);
        assert_eq!((a, b, x), (Xid(100), Xid(101), Xid(102)));
        assert_eq!(xid_of(&ra), a);
        assert_eq!(xid_of(&rb), b);
        assert_eq!(decode_call(&ra[4..]).unwrap().args, &[0, 0, 0, 1]);
        assert_eq!(c.in_flight(), 3);
        let mut s = encode_record(&accepted(b.0, 0, &[0xbb; 4]));
        s.extend_from_slice(&encode_record(&accepted(999, 0, &[])));
        s.extend_from_slice(&encode_record(&accepted(a.0, 1, &[])));
        s.extend_from_slice(&encode_record(&[1, 2, 3]));
        let (s1, s2) = s.split_at(7);
        let mut got = c.on_bytes(s1);
        assert!(got.is_empty());
        got.extend(c.on_bytes(s2));
        assert_eq!(got, vec![(b, Ok(vec![0xbb; 4])), (a, Err(RpcError::ProgUnavail))]);
        // Duplicate reply to b: unknown now.
        assert!(c.on_bytes(&encode_record(&accepted(b.0, 0, &[]))).is_empty());
        let st = c.stats();
        assert_eq!((st.calls, st.replies, st.unknown_xids, st.malformed), (3, 2, 2, 1));
        assert_eq!(c.in_flight(), 1);
        assert!(c.is_pending(x));
        assert!(c.cancel(x));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn client_resends_with_backoff() {
        let mut c = RpcClient::new(Auth::None, u32::MAX, RetryPolicy { initial_ms: 100, max_ms: 350 });
        let (a, ra) = c.call(1, 1, 1, &[], 0);
        let (b, rb) = c.call(1, 1, 2, &[], 50);
        assert_eq!((a, b), (Xid(u32::MAX), Xid(0)));
        assert_eq!(c.next_deadline(), Some(100));
        assert!(c.poll_timeouts(99).is_empty());
        assert_eq!(c.poll_timeouts(100), vec![(a, ra.clone())]);
        assert_eq!(c.poll_timeouts(150), vec![(b, rb.clone())]);
        // a: 200 ms, then 350 (capped), then 350.
        assert!(c.poll_timeouts(299).is_empty());
        assert_eq!(c.poll_timeouts(300), vec![(a, ra.clone())]);
        assert_eq!(c.sends(a), Some(3));
        let r = c.poll_timeouts(1000);
        assert_eq!(r.len(), 2);
        assert_eq!(c.next_deadline(), Some(1350));
        // Reconnect: everything in flight again, partial reply dropped.
        let partial = encode_record(&accepted(a.0, 0, &[]));
        assert!(c.on_bytes(&partial[..10]).is_empty());
        let again = c.reset_stream(2000);
        assert_eq!(again, vec![(b, rb), (a, ra)]);
        assert_eq!(c.on_bytes(&partial), vec![(a, Ok(vec![]))]);
        assert_eq!(c.stats().resends, 7);
    }

    #[test]
    fn client_stream_error_then_reset() {
        let mut c = RpcClient::new(Auth::None, 1, RetryPolicy::default());
        c.set_max_record(64);
        let (a, _) = c.call(1, 1, 1, &[], 0);
        assert!(c.on_bytes(&encode_record(&[0; 100])).is_empty());
        assert!(c.stream_error().is_some());
        assert!(c.on_bytes(&encode_record(&accepted(a.0, 0, &[]))).is_empty());
        assert_eq!(c.reset_stream(5).len(), 1);
        assert!(c.stream_error().is_none());
        assert_eq!(c.on_bytes(&encode_record(&accepted(a.0, 0, &[]))).len(), 1);
    }

    #[test]
    fn client_fuzzed_stream_never_panics() {
        let mut rng = Rng(5);
        for _ in 0..200 {
            let mut c = RpcClient::new(Auth::None, 1, RetryPolicy::default());
            for _ in 0..4 {
                c.call(1, 1, 1, &[], 0);
            }
            let mut s = Vec::new();
            for x in 1..5 {
                s.extend_from_slice(&encode_record(&accepted(x, rng.below(7) as u32, &[0; 8])));
            }
            for _ in 0..rng.below(6) {
                let i = rng.below(s.len());
                s[i] = rng.next() as u8;
            }
            let mut rest = &s[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(40));
                c.on_bytes(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}
