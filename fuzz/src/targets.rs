//! The registry: one [`Target`] per decoder of untrusted bytes. See the
//! crate documentation for how to add one.
//!
//! Besides "never panics", some targets check properties the decoders
//! document (a READ never returns more than requested, record reassembly
//! does not depend on how the stream is chunked, an accepted ELF image
//! lies inside guest memory, an accepted migration record re-encodes to
//! the bytes it came from, only what the peer sealed opens on a relocation
//! channel, ...): a violated property is reported like a panic, with the
//! input.

use std::collections::BTreeSet;

use guest_abi::{IMAGE_BASE, INITIAL_STACK_BYTES};
use hypervisor::cpupolicy::{self, parse_spec, CpuPolicy};
use hypervisor::migstream::{self, Limits, Reader, Record, StreamError};
use hypervisor::relocauth::{
    self, Channel, ChannelError, ClientHandshake, ClientStep, HandshakeError, Mode, ServerHandshake,
};
use hypervisor::{cmdline, elf, xlcfg};
use net::nfs3::{self, NfsStat3};
use net::rpc::{self, Auth, RecordDecoder, RetryPolicy, RpcClient};
use net::xdr::{XdrError, XdrReader};
use net::{mount3, portmap};

use crate::{chunks, class, err, hex, outcome, seeds, Outcome, Target};

/// Every target, in `--list` order.
pub static TARGETS: &[Target] = &[
    // ---- net::rpc ----
    Target { name: "rpc::decode_reply", seeds: seeds::rpc_reply, run: rpc_reply },
    Target { name: "rpc::decode_call", seeds: seeds::rpc_call, run: rpc_call },
    Target { name: "rpc::RecordDecoder", seeds: seeds::rpc_records, run: record_decoder },
    Target { name: "rpc::RpcClient::on_bytes", seeds: seeds::rpc_client, run: rpc_client },
    // ---- net::portmap, net::mount3 ----
    Target {
        name: "portmap::decode_getport_result",
        seeds: seeds::getport,
        run: |b| outcome(portmap::decode_getport_result(b)),
    },
    Target { name: "mount3::decode_mnt_result", seeds: seeds::mnt, run: mnt },
    Target { name: "mount3::decode_export_result", seeds: seeds::exports, run: exports },
    // ---- net::nfs3 ----
    Target { name: "nfs3::decode_null_result", seeds: seeds::nfs_null, run: |b| outcome(nfs3::decode_null_result(b)) },
    Target {
        name: "nfs3::decode_getattr_result",
        seeds: seeds::getattr,
        run: |b| nfs(nfs3::decode_getattr_result(b), |r| r.err()),
    },
    Target {
        name: "nfs3::decode_setattr_result",
        seeds: seeds::setattr,
        run: |b| nfs(nfs3::decode_setattr_result(b), |r| r.status.err()),
    },
    Target {
        name: "nfs3::decode_lookup_result",
        seeds: seeds::lookup,
        run: |b| nfs(nfs3::decode_lookup_result(b), |r| r.result.as_ref().err().copied()),
    },
    Target {
        name: "nfs3::decode_access_result",
        seeds: seeds::access,
        run: |b| nfs(nfs3::decode_access_result(b), |r| r.result.err()),
    },
    Target { name: "nfs3::decode_read_result", seeds: seeds::read, run: read },
    Target {
        name: "nfs3::decode_write_result",
        seeds: seeds::write,
        run: |b| nfs(nfs3::decode_write_result(b), |r| r.result.err()),
    },
    Target {
        name: "nfs3::decode_create_result",
        seeds: seeds::create,
        run: |b| nfs(nfs3::decode_create_result(b), |r| r.result.as_ref().err().copied()),
    },
    Target {
        name: "nfs3::decode_mkdir_result",
        seeds: seeds::create,
        run: |b| nfs(nfs3::decode_mkdir_result(b), |r| r.result.as_ref().err().copied()),
    },
    Target {
        name: "nfs3::decode_remove_result",
        seeds: seeds::remove,
        run: |b| nfs(nfs3::decode_remove_result(b), |r| r.status.err()),
    },
    Target {
        name: "nfs3::decode_rmdir_result",
        seeds: seeds::remove,
        run: |b| nfs(nfs3::decode_rmdir_result(b), |r| r.status.err()),
    },
    Target {
        name: "nfs3::decode_rename_result",
        seeds: seeds::rename,
        run: |b| nfs(nfs3::decode_rename_result(b), |r| r.status.err()),
    },
    Target { name: "nfs3::decode_readdirplus_result", seeds: seeds::readdirplus, run: readdirplus },
    Target {
        name: "nfs3::decode_fsstat_result",
        seeds: seeds::fsstat,
        run: |b| nfs(nfs3::decode_fsstat_result(b), |r| r.result.err()),
    },
    Target {
        name: "nfs3::decode_fsinfo_result",
        seeds: seeds::fsinfo,
        run: |b| nfs(nfs3::decode_fsinfo_result(b), |r| r.result.err()),
    },
    Target {
        name: "nfs3::decode_commit_result",
        seeds: seeds::commit,
        run: |b| nfs(nfs3::decode_commit_result(b), |r| r.result.err()),
    },
    // ---- hypervisor (the kernel's pure parsers) ----
    Target { name: "elf::parse", seeds: seeds::elf, run: elf_parse },
    Target { name: "xlcfg::domain_config", seeds: seeds::xlcfg, run: xlcfg_domain_config },
    Target { name: "cmdline::parse", seeds: seeds::cmdline, run: cmdline_parse },
    // ---- hypervisor: migration (stream, relocation port, CPU policy) ----
    Target { name: "migstream::decode", seeds: seeds::migstream_records, run: migstream_decode },
    Target { name: "migstream::Reader::push_bytes", seeds: seeds::migstream_streams, run: migstream_reader },
    Target { name: "relocauth::ServerHandshake::push", seeds: seeds::reloc_server, run: reloc_server },
    Target { name: "relocauth::ClientHandshake::push", seeds: seeds::reloc_client, run: reloc_client },
    Target { name: "relocauth::Channel::next", seeds: seeds::reloc_channel, run: reloc_channel },
    Target { name: "cpupolicy::CpuPolicy::decode", seeds: seeds::cpupolicy_blobs, run: cpupolicy_decode },
    Target { name: "cpupolicy::parse_spec", seeds: seeds::cpuid_specs, run: cpupolicy_parse_spec },
];

/// The class of an NFS result: `ok` or `ok: <nfsstat3>` for a decoded
/// reply (`status` extracts the server's error, if any), else the error.
fn nfs<T>(r: Result<T, XdrError>, status: impl FnOnce(&T) -> Option<NfsStat3>) -> Outcome {
    match r {
        Ok(res) => match status(&res) {
            None => "ok".into(),
            Some(s) => format!("ok: {}", class(s)),
        },
        Err(e) => err(e),
    }
}

// ---- rpc ----

fn rpc_reply(b: &[u8]) -> Outcome {
    match rpc::decode_reply(b) {
        Ok(r) => match r.result {
            Ok(body) => {
                assert!(body.len() <= b.len());
                "ok".into()
            }
            Err(e) => format!("ok: {}", class(e)),
        },
        Err(e) => err(e),
    }
}

/// Also decodes an AUTH_SYS credential body, as a server would.
fn rpc_call(b: &[u8]) -> Outcome {
    match rpc::decode_call(b) {
        Ok(h) if h.cred_flavor == rpc::AUTH_SYS => {
            let cred = rpc::AuthSys::decode_body(&mut XdrReader::new(h.cred_body));
            if let Ok(c) = &cred {
                assert!(c.gids.len() <= rpc::MAX_GIDS && c.machine_name.len() <= rpc::MAX_MACHINE_NAME as usize);
            }
            format!("ok: auth_sys {}", outcome(cred))
        }
        Ok(_) => "ok".into(),
        Err(e) => err(e),
    }
}

/// Decoder limits the first input byte selects (bits 0..2).
const RECORD_LIMITS: [usize; 4] = [rpc::DEFAULT_MAX_RECORD, 64, 1024, 0];

/// `n` as a coarse word (classes keep no digits).
fn count(n: usize) -> &'static str {
    match n {
        0 => "none",
        1 => "one",
        2 => "two",
        3..=7 => "several",
        _ => "many",
    }
}

/// Byte 0 picks the record limit and how the rest is chunked. Checks that
/// chunked reassembly matches one-shot reassembly and respects the limit.
fn record_decoder(b: &[u8]) -> Outcome {
    let Some((&h, stream)) = b.split_first() else { return "ok: empty".into() };
    let max = RECORD_LIMITS[usize::from(h & 3)];
    let mut whole = RecordDecoder::new(max);
    let mut want = Vec::new();
    let want_res = whole.push(stream, &mut want);
    let mut d = RecordDecoder::new(max);
    let mut got = Vec::new();
    let mut res = Ok(());
    for c in chunks(stream, h >> 2) {
        res = d.push(c, &mut got);
        if res.is_err() {
            break;
        }
    }
    assert_eq!(got, want, "chunked reassembly differs from one-shot");
    assert_eq!(res, want_res, "chunked reassembly ended differently");
    assert_eq!(d.pending_len(), whole.pending_len());
    assert!(got.iter().all(|r| r.len() <= max), "record beyond the limit");
    assert_eq!(d.error(), res.err());
    if let Err(e) = res {
        assert_eq!(d.push(&[0], &mut got), Err(e), "input accepted after an error");
    }
    let records = count(got.len());
    match res {
        Ok(()) => format!("ok: {records} records, {} pending", count(d.pending_len().min(8))),
        Err(e) => format!("ok: {records} records, then {}", class(e)),
    }
}

/// Byte 0 sets the client up (bit 0: a 256-byte record limit; bits 1..2:
/// one to four calls in flight, XIDs from 1) and chunks the rest, which is
/// fed to `on_bytes`; a broken stream is reset as the NFS client does.
/// Checks that each completed call was in flight, and only once.
fn rpc_client(b: &[u8]) -> Outcome {
    let Some((&h, stream)) = b.split_first() else { return "ok: empty".into() };
    let mut c = RpcClient::new(Auth::None, 1, RetryPolicy::default());
    if h & 1 != 0 {
        c.set_max_record(256);
    }
    let calls = 1 + u32::from((h >> 1) & 3);
    for _ in 0..calls {
        c.call(100_003, 3, 0, &[], 0);
    }
    let mut done = Vec::new();
    let mut results = BTreeSet::new();
    let mut resets = 0;
    for (now, chunk) in chunks(stream, h >> 3).into_iter().enumerate() {
        let before = c.in_flight();
        let got = c.on_bytes(chunk);
        assert_eq!(c.in_flight() + got.len(), before, "completions do not match calls in flight");
        for (xid, r) in got {
            assert!((1..=calls).contains(&xid.0) && !done.contains(&xid), "completed {xid} twice or never called");
            done.push(xid);
            results.insert(match r {
                Ok(_) => "result: ok".into(),
                Err(e) => format!("result: {}", class(e)),
            });
        }
        if c.stream_error().is_some() {
            let again = c.reset_stream(now as u64);
            assert_eq!(again.len(), c.in_flight());
            assert!(c.stream_error().is_none());
            resets += 1;
        }
    }
    let st = c.stats();
    assert_eq!(st.replies as usize, done.len());
    let mut out = format!(
        "ok\ndone: {}\nunknown: {}\nmalformed: {}\nresets: {}",
        count(done.len()),
        count(st.unknown_xids.min(8) as usize),
        count(st.malformed.min(8) as usize),
        count(resets)
    );
    for r in results {
        out.push('\n');
        out.push_str(&r);
    }
    out
}

// ---- mount3 ----

fn mnt(b: &[u8]) -> Outcome {
    match mount3::decode_mnt_result(b) {
        Ok(Ok(m)) => {
            assert!(m.fhandle.len() <= mount3::FHSIZE3 as usize);
            assert!(m.auth_flavors.len() <= mount3::MAX_AUTH_FLAVORS as usize);
            "ok".into()
        }
        Ok(Err(s)) => format!("ok: {}", class(s)),
        Err(e) => err(e),
    }
}

fn exports(b: &[u8]) -> Outcome {
    match mount3::decode_export_result(b) {
        Ok(list) => {
            assert!(list.len() <= mount3::MAX_EXPORTS);
            assert!(list.iter().all(|e| e.groups.len() <= mount3::MAX_GROUPS));
            format!("ok: {} exports", count(list.len()))
        }
        Err(e) => err(e),
    }
}

// ---- nfs3 ----

/// Bytes 0..4: the `requested` count (big-endian); the rest is the reply.
/// Checks that no more than requested (and [`nfs3::MAX_READ`]) comes back.
fn read(b: &[u8]) -> Outcome {
    let Some((req, body)) = b.split_first_chunk::<4>() else { return "ok: short".into() };
    let requested = u32::from_be_bytes(*req);
    let r = nfs3::decode_read_result(body, requested);
    if let Ok(res) = &r {
        if let Ok(ok) = &res.result {
            assert!(ok.data.len() <= requested.min(nfs3::MAX_READ) as usize, "READ returned more than requested");
        }
    }
    nfs(r, |r| r.result.err())
}

fn readdirplus(b: &[u8]) -> Outcome {
    let r = nfs3::decode_readdirplus_result(b);
    if let Ok(Ok(ok)) = r.as_ref().map(|r| &r.result) {
        assert!(ok.entries.len() <= nfs3::MAX_DIR_ENTRIES);
        assert!(ok.entries.iter().all(|e| e.name.len() <= nfs3::MAX_NAME as usize));
        for e in &ok.entries {
            let _ = e.name_str();
        }
    }
    nfs(r, |r| r.result.as_ref().err().copied())
}

// ---- hypervisor ----

/// The domain size the ELF target validates against.
const ELF_MEM: u64 = 16 << 20;

/// Checks what [`elf::parse`] promises about an accepted image.
fn check_elf(file: &[u8], img: &elf::ElfImage, mem_bytes: u64) {
    let limit = mem_bytes.saturating_sub(INITIAL_STACK_BYTES) & !(elf::PAGE_SIZE - 1);
    assert!(!img.segments.is_empty() && img.segments.len() <= elf::MAX_SEGMENTS);
    for s in &img.segments {
        assert!(s.mem_size > 0 && s.file_size <= s.mem_size, "{s:?}");
        assert!(s.file_offset.checked_add(s.file_size).is_some_and(|e| e <= file.len() as u64), "{s:?}");
        assert!(s.vaddr >= IMAGE_BASE && s.vaddr.checked_add(s.mem_size).is_some(), "{s:?}");
        let (start, end) = s.page_range();
        assert!(start <= s.vaddr && end >= s.end() && end <= limit, "{s:?} outside memory");
        assert_eq!(s.file_offset % elf::PAGE_SIZE, s.vaddr % elf::PAGE_SIZE);
        assert!(img.image_end >= end);
        assert_eq!(elf::permissions(s).len(), 3);
    }
    assert!(img.segments.iter().any(|s| s.exec && s.vaddr <= img.entry && img.entry < s.end()));
    assert_eq!(img.image_end % elf::PAGE_SIZE, 0);
}

/// Parses for a 16 MiB domain, for the largest possible one and for an
/// empty one (which nothing fits in).
fn elf_parse(b: &[u8]) -> Outcome {
    let r = elf::parse(b, ELF_MEM);
    if let Ok(img) = &r {
        check_elf(b, img, ELF_MEM);
    }
    if let Ok(img) = elf::parse(b, u64::MAX) {
        check_elf(b, &img, u64::MAX);
    }
    assert!(elf::parse(b, 0).is_err(), "an image fits in no memory");
    match r {
        Ok(img) => format!("ok: {} segments", count(img.segments.len())),
        Err(e) => err(e),
    }
}

/// The part of a warning after its `file:line: key: ` prefix.
fn warning_class(w: &str) -> String {
    class(w.rsplit(": ").next().unwrap_or(w))
}

/// A configuration file read from a share, bytes made text as the shell
/// does (lossy UTF-8). Checks that `parse` and `domain_config` agree and
/// that errors are one line.
fn xlcfg_domain_config(b: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(b);
    let parsed = xlcfg::parse("fuzz.cfg", &text);
    match xlcfg::domain_config("fuzz.cfg", &text) {
        Ok(cfg) => {
            assert!(parsed.is_ok(), "domain_config accepted what parse refused");
            let mut out = String::from("ok");
            for w in cfg.warnings.iter().map(|w| warning_class(w)).collect::<BTreeSet<_>>() {
                out.push_str("\nwarning: ");
                out.push_str(&w);
            }
            out
        }
        Err(e) => {
            if let Err(p) = parsed {
                assert_eq!(p, e, "parse and domain_config disagree");
            }
            assert!(!e.to_string().contains('\n'), "multi-line error");
            err(&e.message)
        }
    }
}

/// A warning's kind: the text before the first quote (values quoted in
/// warnings may hold quotes and spaces) and what was expected, which names
/// the option.
fn cmdline_warning(w: &str) -> String {
    let kind = class(w.split('\'').next().unwrap_or(w));
    match w.rfind(" (expected") {
        Some(p) => kind + &class(&w[p..]),
        None => kind,
    }
}

/// A kernel command line (lossy UTF-8). Never fails; the class is the set
/// of warnings and which options were set.
fn cmdline_parse(b: &[u8]) -> Outcome {
    let line = String::from_utf8_lossy(b);
    let (opts, warnings) = cmdline::parse(&line);
    assert!(warnings.len() <= cmdline::MAX_WARNINGS + 1);
    assert!(warnings.iter().all(|w| !w.0.contains('\n')), "multi-line warning: {warnings:?}");
    assert_eq!(cmdline::SerialConsole::MAX_BAUD % opts.console.baud, 0, "baud rate does not divide 115200");
    let d = cmdline::Options::default();
    let mut out = String::from(if warnings.is_empty() { "ok" } else { "warn" });
    for (on, name) in [
        (opts.image_path.is_some(), "image path"),
        (opts.console != d.console, "console"),
        (opts.console.baud != d.console.baud, "baud"),
        (opts.loglevel != d.loglevel, "loglevel"),
        (opts.panic != d.panic, "panic"),
        (opts.selftest, "selftest"),
        (opts.hostname != d.hostname, "hostname"),
        (opts.ip.is_some(), "ip"),
        (opts.gw.is_some(), "gw"),
        (!opts.nfs.is_empty(), "nfs"),
    ] {
        if on {
            out.push_str("\nset: ");
            out.push_str(name);
        }
    }
    out.push_str("\nwarnings: ");
    out.push_str(count(warnings.len()));
    for w in warnings.iter().map(|w| cmdline_warning(&w.0)).collect::<BTreeSet<_>>() {
        out.push('\n');
        out.push_str(&w);
    }
    out
}

// ---- hypervisor::migstream ----

/// Checks an accepted record: the encoding is canonical (it re-encodes to
/// exactly the bytes it took) and its length is in its header (a strict
/// prefix only asks for more).
fn check_record(b: &[u8], rec: &Record, n: usize) {
    assert!((migstream::RECORD_HEADER_BYTES..=b.len().min(migstream::MAX_RECORD)).contains(&n), "took {n} bytes");
    let mut again = Vec::new();
    migstream::encode(rec, &mut again);
    assert!(again == b[..n], "the record re-encodes to other bytes:\n{}", hex(&again));
    assert_eq!(migstream::decode(&b[..n - 1], &Limits::MAX), Ok(None), "a strict prefix decoded");
}

/// One record from the front of the input, for the largest guest.
fn migstream_decode(b: &[u8]) -> Outcome {
    match migstream::decode(b, &Limits::MAX) {
        Ok(Some((rec, n))) => {
            check_record(b, &rec, n);
            format!("ok: {}", migstream::record_name(rec.type_code()))
        }
        Ok(None) => "ok: needs more".into(),
        Err(e) => {
            assert!(!e.message.contains('\n'), "multi-line error: {e}");
            err(e)
        }
    }
}

/// Checks a chunked read against a one-shot read of the same stream (same
/// records or the same error), that the records read re-encode to the bytes
/// consumed, that `finish` agrees, and that a dead reader stays dead.
fn check_reader(stream: &[u8], r: &mut Reader, got: &[Record], res: &Result<(), StreamError>) {
    let mut one = Reader::new();
    match (res, one.push_bytes(stream)) {
        (Ok(()), Ok(all)) => {
            assert!(all == got, "chunked reading gives other records");
            assert_eq!(one.buffered(), r.buffered());
            let mut again = Vec::new();
            for rec in got {
                migstream::encode(rec, &mut again);
            }
            assert!(again == stream[..stream.len() - r.buffered()], "records re-encode to other bytes");
            assert_eq!(r.finish().is_ok(), r.buffered() == 0 && (r.is_complete() || r.is_aborted()));
        }
        (Err(e), Err(f)) => {
            assert_eq!(e, &f, "chunked and one-shot reading fail differently");
            assert_eq!(r.push_bytes(b"\x01").err().as_ref(), Some(e), "a dead reader took bytes");
            assert_eq!(r.finish().err().as_ref(), Some(e));
        }
        (a, b) => panic!("chunked reading: {:?}; one-shot: {:?}", a.as_ref().err(), b.err()),
    }
}

/// Byte 0 chunks the rest, a source stream fed to `push_bytes`; the reader
/// never holds more than a record.
fn migstream_reader(b: &[u8]) -> Outcome {
    let Some((&h, stream)) = b.split_first() else { return "ok: empty".into() };
    let mut r = Reader::new();
    let mut got = Vec::new();
    let mut res = Ok(());
    for c in chunks(stream, h) {
        match r.push_bytes(c) {
            Ok(recs) => got.extend(recs),
            Err(e) => res = Err(e),
        }
        assert!(r.buffered() <= migstream::MAX_RECORD, "the reader holds {} bytes", r.buffered());
        if res.is_err() {
            break;
        }
    }
    check_reader(stream, &mut r, &got, &res);
    match (res, r.finish()) {
        (Err(e), _) => err(e),
        (Ok(()), Ok(())) if r.is_complete() => "ok: complete".into(),
        (Ok(()), Ok(())) => "ok: aborted".into(),
        (Ok(()), Err(e)) => format!("ok: unfinished: {}", class(e.message)),
    }
}

// ---- hypervisor::relocauth ----

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Aead => "aead",
        Mode::Plain => "plain",
    }
}

/// Drains `next` (bytes that came with the handshake may be in already),
/// then pushes `parts` into `ch`, draining after each; the class is
/// how many frames opened and, as an `Err`, the error that killed the
/// channel. Checks that in AEAD mode only what the peer sealed opens, in
/// order (any change to a frame must fail), and that a failed channel
/// stays dead.
fn drain_channel(ch: &mut Channel, parts: &[&[u8]]) -> Result<String, String> {
    let mut opened = 0;
    for p in std::iter::once(&[][..]).chain(parts.iter().copied()) {
        ch.push(p);
        loop {
            match ch.next() {
                Ok(Some(m)) => {
                    if ch.is_encrypted() {
                        let sealed = seeds::RELOC_MESSAGES.get(opened).copied();
                        assert!(sealed == Some(&m[..]), "frame {opened} opened to bytes never sealed: {}", hex(&m));
                    }
                    assert!(m.len() <= relocauth::MAX_PLAINTEXT);
                    opened += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(ch.next(), Err(ChannelError::Dead), "a failed channel is not dead");
                    return Err(format!("channel: opened {}, then {}", count(opened), class(e)));
                }
            }
        }
    }
    let partial = if ch.at_frame_boundary() { "" } else { ", part of one more" };
    Ok(format!("channel: opened {}{partial}", count(opened)))
}

/// A failed handshake: a REFUSE from the peer is a proper answer (`ok`),
/// anything else an error. Either is one line, and the REFUSE frame to send
/// back is within the limit.
fn handshake_err(e: HandshakeError) -> Outcome {
    let text = e.to_string();
    assert!(!text.contains('\n'), "multi-line error: {text}");
    if let Some(f) = e.refuse_frame() {
        assert!(f.len() <= 4 + 1 + relocauth::MAX_REFUSE_REASON, "REFUSE frame of {} bytes", f.len());
    }
    match e {
        HandshakeError::Refused(reason) => {
            assert!(!reason.chars().any(char::is_control), "control characters in {reason:?}");
            "ok: refused".into()
        }
        e => err(e),
    }
}

/// The server accepted the AUTH at the front of `stream`: it must be the one
/// a real client sends (nothing else carries a valid proof), in a mode the
/// server allows, and the WELCOME must satisfy that client.
fn check_welcomed(stream: &[u8], hello: &[u8], mode: Mode, allow_plain: bool, welcome: &[u8]) {
    assert!(mode == Mode::Aead || allow_plain, "plain mode accepted though not allowed");
    let auth = seeds::reloc_auth(hello, mode);
    assert!(stream.starts_with(&auth), "an AUTH no real client sent was accepted");
    let mut c = ClientHandshake::new(seeds::reloc_psk(), seeds::RELOC_CLIENT_NONCE, mode);
    assert!(matches!(c.push(hello), Ok(ClientStep::Send(_))));
    assert!(matches!(c.push(welcome), Ok(ClientStep::Done(_))), "the client refuses the WELCOME");
}

/// Byte 0: bit 0 allow_plain, the rest chunks the client's bytes, pushed
/// into a server handshake and, once it succeeds, into its channel.
fn reloc_server(b: &[u8]) -> Outcome {
    let Some((&h, stream)) = b.split_first() else { return "ok: empty".into() };
    let allow_plain = h & 1 != 0;
    let (mut hs, hello) = ServerHandshake::new(seeds::reloc_psk(), seeds::RELOC_SERVER_NONCE, allow_plain);
    let parts = chunks(stream, h >> 1);
    for (i, p) in parts.iter().enumerate() {
        match hs.push(p) {
            Ok(None) => {}
            Ok(Some((mut ch, welcome))) => {
                check_welcomed(stream, &hello, ch.mode(), allow_plain, &welcome);
                assert_eq!(hs.push(b"x").err(), Some(HandshakeError::Finished));
                return format!(
                    "ok: welcome, {}\n{}",
                    mode_name(ch.mode()),
                    drain_channel(&mut ch, &parts[i + 1..]).unwrap_or_else(|e| e)
                );
            }
            Err(e) => {
                assert_eq!(hs.push(b"x").err(), Some(HandshakeError::Finished));
                return handshake_err(e);
            }
        }
    }
    "ok: needs more".into()
}

/// The client sent `auth` after the HELLO at the front of `stream`: a real
/// server that sent that HELLO must accept it. Returns its WELCOME.
fn real_welcome(stream: &[u8], auth: &[u8]) -> Vec<u8> {
    let ns: [u8; 32] = stream[7..39].try_into().expect("a HELLO was accepted");
    let (mut s, hello) = ServerHandshake::new(seeds::reloc_psk(), ns, true);
    assert_eq!(hello[..39], stream[..39], "the HELLO accepted is not one a server sends");
    match s.push(auth) {
        Ok(Some((_, welcome))) => welcome,
        r => panic!("a real server refuses the client's AUTH: {:?}", r.err()),
    }
}

/// Byte 0: bit 0 plain mode, the rest chunks the server's bytes, pushed
/// into a client handshake (then once more, empty, for bytes it kept back)
/// and, once it succeeds, into its channel.
fn reloc_client(b: &[u8]) -> Outcome {
    let Some((&h, stream)) = b.split_first() else { return "ok: empty".into() };
    let mode = if h & 1 == 0 { Mode::Aead } else { Mode::Plain };
    let mut hs = ClientHandshake::new(seeds::reloc_psk(), seeds::RELOC_CLIENT_NONCE, mode);
    let mut parts = chunks(stream, h >> 1);
    parts.push(&[]);
    let mut welcome = None;
    for (i, p) in parts.iter().enumerate() {
        match hs.push(p) {
            Ok(ClientStep::NeedMore) => {}
            Ok(ClientStep::Send(auth)) => welcome = Some(real_welcome(stream, &auth)),
            Ok(ClientStep::Done(mut ch)) => {
                let welcome = welcome.expect("done before sending AUTH");
                assert!(stream[40..].starts_with(&welcome), "a WELCOME no real server sent was accepted");
                assert_eq!(ch.mode(), mode);
                return format!(
                    "ok: done, {}\n{}",
                    mode_name(mode),
                    drain_channel(&mut ch, &parts[i + 1..]).unwrap_or_else(|e| e)
                );
            }
            Err(e) => {
                assert_eq!(hs.push(b"x").err(), Some(HandshakeError::Finished));
                return handshake_err(e);
            }
        }
    }
    if welcome.is_some() { "ok: sent auth" } else { "ok: needs more" }.into()
}

/// Byte 0: bit 0 plain mode, bit 1 server to client (else client to server),
/// the rest chunks the frames pushed into the receiving side of a channel
/// pair made by a real handshake.
fn reloc_channel(b: &[u8]) -> Outcome {
    let Some((&h, stream)) = b.split_first() else { return "ok: empty".into() };
    let s = seeds::reloc_session(if h & 1 == 0 { Mode::Aead } else { Mode::Plain });
    let mut rx = if h & 2 == 0 { s.server } else { s.client };
    match drain_channel(&mut rx, &chunks(stream, h >> 2)) {
        Ok(c) => format!("ok: {c}"),
        Err(c) => format!("err: {c}"),
    }
}

// ---- hypervisor::cpupolicy ----

/// Checks what every policy keeps: it is closed under the dependencies
/// with the XCR0 they call for (so an empty spec on it changes nothing),
/// and its blob decodes back to it.
fn check_policy(p: &CpuPolicy) {
    assert_eq!(parse_spec("", p).as_ref(), Ok(p), "not closed, or xcr0 not the features'");
    let blob = p.encode();
    assert!(blob.len() <= cpupolicy::MAX_BLOB_BYTES);
    assert_eq!(CpuPolicy::decode(&blob).as_ref(), Ok(p), "the blob does not decode back");
    assert!(p.missing_on(p).is_empty() && p.intersect(p) == *p);
}

/// A migration stream's CPU policy blob.
fn cpupolicy_decode(b: &[u8]) -> Outcome {
    match CpuPolicy::decode(b) {
        Ok(p) => {
            check_policy(&p);
            format!("ok: {}", p.level())
        }
        Err(e) => {
            assert!(e.starts_with("cpu policy: ") && !e.contains('\n'), "{e}");
            err(e)
        }
    }
}

/// The kind of a `parse_spec` error: the message without the names and
/// items the user gave (which it does not quote).
fn spec_error_kind(e: &str) -> String {
    const KINDS: [&str; 10] = [
        "which this host lacks",
        "but this host lacks",
        "which the policy lacks",
        "unknown base",
        "unknown feature",
        "must be the first item",
        "leaf:register=bits form",
        "has no feature name",
        "the value must be 0 or 1",
        "needs =0 or =1",
    ];
    let kind = KINDS.iter().find(|k| e.contains(*k)).map_or_else(|| class(e), |k| (*k).to_owned());
    if e.contains("(did you mean ") {
        kind + ", with a hint"
    } else {
        kind
    }
}

/// The class of `spec` on `host`; checks that an accepted policy is one
/// the host can run.
fn spec_outcome(spec: &str, host: &CpuPolicy) -> Outcome {
    match parse_spec(spec, host) {
        Ok(p) => {
            check_policy(&p);
            assert!(p.missing_on(host).is_empty(), "the host lacks {:?}", p.missing_on(host));
            format!("ok: {}", if p == *host { "host" } else { p.level() })
        }
        Err(e) => {
            assert!(e.starts_with("cpuid: ") && !e.contains('\n'), "{e}");
            format!("err: {}", spec_error_kind(&e))
        }
    }
}

/// A domain config's `cpuid=` string (lossy UTF-8) on the fuzzing host,
/// then (second line) on an older one without XSAVE, where levels above
/// x86-64-v1 are refused.
fn cpupolicy_parse_spec(b: &[u8]) -> Outcome {
    let spec = String::from_utf8_lossy(b);
    format!("{}\non qemu64: {}", spec_outcome(&spec, &seeds::cpu_host()), spec_outcome(&spec, &seeds::cpu_old_host()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fuzz, install_panic_hook};
    use std::time::Duration;

    #[test]
    fn every_seed_is_accepted() {
        for t in TARGETS {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{}: no seeds", t.name);
            for (i, s) in seeds.iter().enumerate() {
                let out = (t.run)(s);
                assert!(out.starts_with("ok"), "{} seed {i}: {out}", t.name);
            }
        }
    }

    #[test]
    fn nfs_seeds_decode_to_the_intended_status() {
        // Spot checks that the seeds reach the success arms, not just Ok.
        assert_eq!(
            (TARGETS.iter().find(|t| t.name == "nfs3::decode_lookup_result").unwrap().run)(&seeds::lookup()[0]),
            "ok"
        );
        let r = nfs3::decode_readdirplus_result(&seeds::readdirplus()[0]).unwrap();
        assert_eq!(r.result.unwrap().entries.len(), 3);
        let read = seeds::read();
        let r = nfs3::decode_read_result(&read[0][4..], 4096).unwrap();
        assert_eq!(r.result.unwrap().data, b"hello");
        assert_eq!(nfs3::decode_getattr_result(&seeds::getattr()[2]).unwrap(), Err(NfsStat3::Stale));
        let segments: Vec<usize> =
            seeds::elf().iter().map(|f| elf::parse(f, ELF_MEM).unwrap().segments.len()).collect();
        assert_eq!(segments, [elf::MAX_SEGMENTS, 2, 1, 3]);
        let cfg = xlcfg::domain_config("rich.cfg", std::str::from_utf8(&seeds::xlcfg()[1]).unwrap()).unwrap();
        assert_eq!((cfg.name.as_str(), cfg.memory_mib, cfg.vcpus, cfg.disks.len()), ("web-01", 1024, 4, 2));
        assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
    }

    /// The outcome of each seed of target `name`.
    fn seed_outcomes(name: &str) -> Vec<String> {
        let t = TARGETS.iter().find(|t| t.name == name).unwrap();
        (t.seeds)().iter().map(|s| (t.run)(s)).collect()
    }

    #[test]
    fn migration_seeds_reach_the_success_arms() {
        let records = seed_outcomes("migstream::decode");
        let mut kinds: Vec<&str> = records.iter().map(|o| o.strip_prefix("ok: ").unwrap()).collect();
        kinds.dedup();
        assert_eq!(
            kinds,
            [
                "header",
                "domain config",
                "cpu policy",
                "time",
                "pages",
                "vcpu",
                "device",
                "end",
                "round",
                "accept",
                "refuse",
                "resumed",
                "abort"
            ]
        );
        assert_eq!(
            seed_outcomes("migstream::Reader::push_bytes"),
            ["ok: complete", "ok: complete", "ok: complete", "ok: aborted", "ok: complete"]
        );
        let frames = "channel: opened several";
        assert_eq!(
            seed_outcomes("relocauth::ServerHandshake::push"),
            [
                "ok: welcome, aead\nchannel: opened none".to_owned(),
                "ok: welcome, plain\nchannel: opened none".to_owned(),
                format!("ok: welcome, aead\n{frames}"),
                format!("ok: welcome, plain\n{frames}"),
                "ok: refused".to_owned(),
            ]
        );
        assert_eq!(
            seed_outcomes("relocauth::ClientHandshake::push"),
            [
                "ok: done, aead\nchannel: opened none".to_owned(),
                "ok: done, plain\nchannel: opened none".to_owned(),
                format!("ok: done, aead\n{frames}"),
                format!("ok: done, plain\n{frames}"),
                "ok: sent auth".to_owned(),
                "ok: refused".to_owned(),
            ]
        );
        assert_eq!(seed_outcomes("relocauth::Channel::next"), vec![format!("ok: {frames}"); 4]);
        assert_eq!(
            seed_outcomes("cpupolicy::CpuPolicy::decode"),
            ["ok: x86-64-v4", "ok: x86-64-v2", "ok: x86-64-v4", "ok: x86-64-v1", "ok: below x86-64-v1"]
        );
        let specs = seed_outcomes("cpupolicy::parse_spec");
        assert_eq!(
            specs.iter().map(|o| o.lines().next().unwrap()).collect::<Vec<_>>(),
            [
                "ok: host",
                "ok: x86-64-v2",
                "ok: x86-64-v1",
                "ok: x86-64-v3",
                "ok: x86-64-v1",
                "ok: x86-64-v1",
                "ok: x86-64-v3"
            ]
        );
    }

    #[test]
    fn smoke_fuzz_every_target() {
        install_panic_hook();
        // One second each, all at once.
        let handles: Vec<_> =
            TARGETS.iter().map(|t| std::thread::spawn(move || (t.name, fuzz(t, Duration::from_secs(1), 1)))).collect();
        for h in handles {
            let (name, st) = h.join().unwrap();
            assert!(st.execs > 100, "{name}: only {} execs", st.execs);
            assert!(st.outcomes >= 2, "{name}: {:?}", st.classes);
        }
    }
}
