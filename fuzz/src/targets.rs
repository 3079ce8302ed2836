//! The registry: one [`Target`] per decoder of untrusted bytes. See the
//! crate documentation for how to add one.
//!
//! Besides "never panics", some targets check properties the decoders
//! document (a READ never returns more than requested, record reassembly
//! does not depend on how the stream is chunked, an accepted ELF image
//! lies inside guest memory, ...): a violated property is reported like a
//! panic, with the input.

use std::collections::BTreeSet;

use guest_abi::{IMAGE_BASE, INITIAL_STACK_BYTES};
use hypervisor::{cmdline, elf, xlcfg};
use net::nfs3::{self, NfsStat3};
use net::rpc::{self, Auth, RecordDecoder, RetryPolicy, RpcClient};
use net::xdr::{XdrError, XdrReader};
use net::{mount3, portmap};

use crate::{chunks, class, err, outcome, seeds, Outcome, Target};

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
    // Being written now; add a target for each once it lands:
    // - migstream (kernel/src/migstream.rs): the migration stream decoder;
    // - relocauth (kernel/src/relocauth.rs): the relocation handshake;
    // - cpupolicy (kernel/src/cpupolicy.rs): the CPU policy parser.
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
