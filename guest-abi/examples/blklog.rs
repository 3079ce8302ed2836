//! `blklog`: an append-only log on the domain's first disk, and a disk
//! checksummer — the example guest of the paravirtual block device.
//!
//! Parameters (`extra=`): `mode` = `log` (default), `print` or `sha256`;
//! `append` (entries to add in `log` mode, default 1); `msg` (their text,
//! default `hello`); `bytes` (how much of the disk `sha256` reads, default
//! all); `stay` (1, default: wait for `shutdown` afterwards; 0: exit);
//! `flush` (1, default; 0: leave the appended entries in the hypervisor's
//! write-back cache — they become durable at its next flush, e.g. when the
//! domain is migrated or destroyed).
//!
//! ```text
//! blklog: disk sectors=<n> ro=<0|1>
//! blklog: empty disk, formatting           (no log header found)
//! blklog: found <n> entries
//! blklog: entry seq=<s> dom=<name> t=<ms> <msg>
//! blklog: appended <k>, flushed, now <n> entries
//! blklog: appended <k>, not flushed, now <n> entries      (flush=0)
//! blklog: sha256 <64 hex digits> bytes=<n>
//! blklog: error <what>: <error>
//! blklog: shutting down
//! ```
//!
//! Layout: sector 0 holds the header (`RHVBLKLG`, entry count, bytes used);
//! the entries follow from byte 512 as text lines. An append writes the
//! entry sectors, then the header, then flushes, so a log survives the
//! domain's destruction and re-creation (and a migration).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;

use guest_abi::rt::blk;
use guest_abi::rt::prelude::*;
use sha2::{Digest, Sha256};

guest_abi::main!(blklog);

const MAGIC: &[u8; 8] = b"RHVBLKLG";
const SECTOR: u64 = blk::SECTOR_BYTES as u64;

fn fail(what: &str, e: guest_abi::Error) -> i32 {
    println!("blklog: error {what}: {e:?}");
    1
}

fn blklog(env: &Env) -> i32 {
    let info = match blk::info(0) {
        Ok(i) => i,
        Err(e) => return fail("block_info", e),
    };
    println!("blklog: disk sectors={} ro={}", info.sectors, u8::from(info.read_only()));
    let r = match env.arg("mode").unwrap_or("log") {
        "sha256" => checksum(env, &info),
        "print" => log(env, &info, 0),
        "log" => log(env, &info, env.arg_u64_or("append", 1)),
        other => {
            println!("blklog: error mode: unknown mode '{other}'");
            1
        }
    };
    if r != 0 || env.arg_u64_or("stay", 1) == 0 {
        return r;
    }
    loop {
        if wait_until(u64::MAX) & event::SHUTDOWN != 0 {
            println!("blklog: shutting down");
            return 0;
        }
    }
}

fn checksum(env: &Env, info: &blk::BlockInfo) -> i32 {
    let total = env.arg_u64_or("bytes", info.bytes()).min(info.bytes());
    let chunk = u64::from(info.max_io).min(64 * 1024) / SECTOR * SECTOR;
    let mut buf = vec![0u8; chunk as usize];
    let mut h = Sha256::new();
    let mut done = 0u64;
    while done < total {
        let want = (total - done).min(chunk);
        let len = want.div_ceil(SECTOR) * SECTOR;
        if let Err(e) = blk::read(0, done / SECTOR, &mut buf[..len as usize]) {
            return fail("block_read", e);
        }
        h.update(&buf[..want as usize]);
        done += want;
    }
    let mut hex = String::new();
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    println!("blklog: sha256 {hex} bytes={total}");
    0
}

fn log(env: &Env, info: &blk::BlockInfo, append: u64) -> i32 {
    let mut head = [0u8; SECTOR as usize];
    if let Err(e) = blk::read(0, 0, &mut head) {
        return fail("block_read", e);
    }
    let (mut entries, mut used) = if &head[0..8] == MAGIC {
        let n = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
        let u = u64::from_le_bytes(head[16..24].try_into().unwrap_or([0; 8]));
        (n, u.min(info.bytes() - SECTOR))
    } else {
        println!("blklog: empty disk, formatting");
        (0, 0)
    };
    println!("blklog: found {entries} entries");
    // Read the whole log, print it.
    let sectors = used.div_ceil(SECTOR);
    let mut data = vec![0u8; (sectors * SECTOR) as usize];
    let step = (u64::from(info.max_io) / SECTOR).max(1);
    let mut s = 0;
    while s < sectors {
        let n = step.min(sectors - s);
        if let Err(e) = blk::read(0, 1 + s, &mut data[(s * SECTOR) as usize..((s + n) * SECTOR) as usize]) {
            return fail("block_read", e);
        }
        s += n;
    }
    data.truncate(used as usize);
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        println!("blklog: entry {}", core::str::from_utf8(line).unwrap_or("<not utf-8>"));
    }
    if append == 0 {
        return 0;
    }
    if info.read_only() {
        println!("blklog: error append: the disk is read-only");
        return 1;
    }
    let msg = env.arg("msg").unwrap_or("hello");
    let first_sector = used / SECTOR;
    let mut tail: Vec<u8> = data[(first_sector * SECTOR) as usize..].to_vec();
    for _ in 0..append {
        entries += 1;
        let t = now() / 1_000_000;
        let mut line = String::new();
        let _ = writeln!(line, "seq={entries} dom={} t={t} {msg}", env.name());
        tail.extend_from_slice(line.as_bytes());
    }
    used = first_sector * SECTOR + tail.len() as u64;
    if SECTOR + used > info.bytes() {
        println!("blklog: error append: the disk is full");
        return 1;
    }
    tail.resize(tail.len().div_ceil(SECTOR as usize) * SECTOR as usize, 0);
    for (i, c) in tail.chunks(step as usize * SECTOR as usize).enumerate() {
        if let Err(e) = blk::write(0, 1 + first_sector + i as u64 * step, c) {
            return fail("block_write", e);
        }
    }
    head = [0u8; SECTOR as usize];
    head[0..8].copy_from_slice(MAGIC);
    head[8..16].copy_from_slice(&entries.to_le_bytes());
    head[16..24].copy_from_slice(&used.to_le_bytes());
    if let Err(e) = blk::write(0, 0, &head) {
        return fail("block_write", e);
    }
    if env.arg_u64_or("flush", 1) == 0 {
        println!("blklog: appended {append}, not flushed, now {entries} entries");
        return 0;
    }
    if let Err(e) = blk::flush(0) {
        return fail("block_flush", e);
    }
    println!("blklog: appended {append}, flushed, now {entries} entries");
    0
}
