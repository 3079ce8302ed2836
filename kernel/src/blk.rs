//! Paravirtual block devices backed by image files on NFS.
//!
//! Each `disk=` of a domain is an image file on a mounted export, served
//! over a TCP connection of its own through a write-back cache
//! (`hypervisor::blkcache`): guest writes land in the cache, go to the
//! server as UNSTABLE WRITEs when evicted or flushed, and a guest flush
//! (`BLOCK_FLUSH`), a detach (destroy) or a migration switch-over writes
//! everything back and COMMITs it.
//!
//! All NFS work happens on one service thread, `blkio`, fed by a FIFO
//! queue: a vCPU doing `block_read`/`block_write`/`block_flush` validates
//! its arguments, queues a request and blocks; the thread does the I/O
//! (copying read data straight into guest memory through the domain's
//! checked copy), records the result and wakes the vCPU. A vCPU blocked
//! here holds nothing on its stack but integers, so destroying its domain
//! meanwhile leaks nothing; the thread drops results for vanished vCPUs.
//! Attach and detach travel through the same queue, so a re-created
//! domain reads what its predecessor flushed.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use guest_abi::Error;
use hypervisor::blkcache::{Backend, BlockCache, CacheError};
use hypervisor::domain::DomId;
use net::nfs::{Nfs, NfsError};
use net::nfs3::{NfsFh3, StableHow};

use crate::arch::cpu;
use crate::arch::sync::IrqMutex;
use crate::storage::{KernelTransport, OpenFile};
use crate::vcpu::{self, ThreadId};

/// Guest-visible sector size.
pub const SECTOR: u64 = 512;
/// Cache chunk size and per-disk cache bound.
const CHUNK: usize = 64 * 1024;
const CACHE_BYTES: usize = 4 << 20;
/// Most disks per domain.
pub const MAX_DISKS: usize = 4;

/// What `block-list` and `block_info` show; kept by the shell side, updated
/// by the thread.
#[derive(Clone)]
pub struct DiskInfo {
    pub vdev: String,
    pub target: String,
    pub server: [u8; 4],
    pub size: u64,
    pub writable: bool,
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub dirty_bytes: u64,
    pub errors: u64,
}

/// An opened image waiting to be attached.
pub struct OpenDisk {
    info: DiskInfo,
    file: OpenFile,
}

struct Disk {
    dom: DomId,
    index: usize,
    writable: bool,
    nfs: Nfs<KernelTransport>,
    fh: NfsFh3,
    cache: BlockCache,
    bogus: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Read,
    Write,
    Flush,
}

enum Req {
    Attach(Box<Disk>),
    /// Flush and drop the domain's disks.
    Detach(DomId),
    Io {
        dom: DomId,
        index: usize,
        thread: ThreadId,
        op: Op,
        off: u64,
        gva: u64,
        len: u64,
        data: Vec<u8>,
    },
    /// Flush every disk of the domain and report to `thread`.
    FlushDomain {
        dom: DomId,
        thread: ThreadId,
    },
}

static QUEUE: IrqMutex<VecDeque<Req>> = IrqMutex::new(VecDeque::new());
static INFO: IrqMutex<BTreeMap<(DomId, usize), DiskInfo>> = IrqMutex::new(BTreeMap::new());
/// Results for blocked threads: raw hypercall result (>= 0 or -errno).
static DONE: IrqMutex<BTreeMap<ThreadId, i64>> = IrqMutex::new(BTreeMap::new());
/// The service thread, 0 before `start`.
static THREAD: AtomicU64 = AtomicU64::new(0);

/// Starts the block service thread.
pub fn start() {
    match vcpu::spawn_kernel(blkio_main, 0, hypervisor::sched::DEFAULT_WEIGHT) {
        Some(t) => THREAD.store(t, Ordering::Relaxed),
        None => log::error!("blk: cannot start the block I/O thread (out of memory); disks unavailable"),
    }
}

fn push(req: Req) {
    QUEUE.lock().push_back(req);
    let t = THREAD.load(Ordering::Relaxed);
    if t != 0 {
        vcpu::wake(t);
    }
}

/// Opens the image of one `disk=` entry (shell thread; talks to the server).
pub fn open(target: &str, vdev: &str, writable: bool) -> Result<OpenDisk, String> {
    if THREAD.load(Ordering::Relaxed) == 0 {
        return Err("disk: the block I/O thread is not running".into());
    }
    let file = crate::storage::open_file(target)?;
    let size = file.size - file.size % SECTOR;
    if size == 0 {
        return Err(alloc::format!("{target}: image smaller than one {SECTOR}-byte sector"));
    }
    Ok(OpenDisk {
        info: DiskInfo {
            vdev: vdev.into(),
            target: target.into(),
            server: file.server,
            size,
            writable,
            reads: 0,
            writes: 0,
            flushes: 0,
            read_bytes: 0,
            write_bytes: 0,
            dirty_bytes: 0,
            errors: 0,
        },
        file,
    })
}

/// Gives domain `dom` its disks (in order: index 0 is the first `disk=`).
pub fn attach(dom: DomId, disks: Vec<OpenDisk>) {
    for (index, d) in disks.into_iter().enumerate() {
        let OpenDisk { info, file } = d;
        let cache = BlockCache::new(info.size, CHUNK, CACHE_BYTES);
        INFO.lock().insert((dom, index), info.clone());
        log::info!(
            "domain {dom}: disk {index} {} = {} ({} MiB{})",
            info.vdev,
            info.target,
            info.size >> 20,
            if info.writable { "" } else { ", read-only" }
        );
        push(Req::Attach(Box::new(Disk {
            dom,
            index,
            writable: info.writable,
            nfs: file.nfs,
            fh: file.fh,
            cache,
            bogus: 0,
        })));
    }
}

/// Flushes and closes a destroyed domain's disks (in the background).
pub fn detach(dom: DomId) {
    let had = {
        let mut info = INFO.lock();
        let keys: Vec<(DomId, usize)> = info.range((dom, 0)..(dom, usize::MAX)).map(|(k, _)| *k).collect();
        for k in &keys {
            info.remove(k);
        }
        !keys.is_empty()
    };
    if had {
        push(Req::Detach(dom));
    }
}

/// The disks of `dom` (for `block-list`).
pub fn list(dom: DomId) -> Vec<DiskInfo> {
    INFO.lock().range((dom, 0)..(dom, usize::MAX)).map(|(_, i)| i.clone()).collect()
}

/// Number of disks `dom` has.
pub fn count(dom: DomId) -> usize {
    INFO.lock().range((dom, 0)..(dom, usize::MAX)).count()
}

/// Flushes every disk of `dom` and waits (calling thread blocks or, for the
/// shell, idles). Returns the first error.
pub fn flush_domain(dom: DomId) -> Result<(), String> {
    if count(dom) == 0 {
        return Ok(());
    }
    let me = vcpu::current();
    push(Req::FlushDomain { dom, thread: me });
    let r = wait_result(me);
    if r < 0 {
        return Err(alloc::format!("flushing the disks of domain {dom} failed (error {r})"));
    }
    Ok(())
}

/// Waits until the service thread posted a result for `me`. A vCPU waits
/// with interrupts off between its checks (as it entered the hypercall), so
/// it is never preempted holding a result it has taken but not returned.
fn wait_result(me: ThreadId) -> i64 {
    let were = cpu::interrupts_enabled();
    loop {
        cpu::cli();
        if let Some(r) = DONE.lock().remove(&me) {
            if were {
                cpu::sti();
            }
            return r;
        }
        if me == vcpu::SHELL {
            cpu::sti();
            vcpu::shell_idle();
        } else {
            vcpu::block_current(None);
        }
    }
}

/// For a migration: the result of the block request the stopped vCPU
/// `thread` is waiting for, waiting for the service thread if need be
/// (`None` if the operator interrupted). Give it back with [`put_result`]
/// if the vCPU resumes here after all.
pub fn take_result(thread: ThreadId) -> Option<i64> {
    loop {
        if let Some(r) = DONE.lock().remove(&thread) {
            return Some(r);
        }
        if crate::cmds::wait_interruptible() {
            return None;
        }
    }
}

/// Hands a result taken by [`take_result`] back to its (resumed) vCPU.
pub fn put_result(thread: ThreadId, r: i64) {
    DONE.lock().insert(thread, r);
    vcpu::wake(thread);
}

/// `block_info(disk, buf, len)`: the 24-byte `BlockInfo` record.
pub fn hc_info(dom: DomId, disk: u64, buf: u64, len: u64) -> Result<u64, Error> {
    let info = INFO.lock().get(&(dom, usize::try_from(disk).map_err(|_| Error::NoDev)?)).cloned();
    let info = info.ok_or(Error::NoDev)?;
    if len > guest_abi::MAX_IO_BYTES {
        return Err(Error::TooBig);
    }
    if len < 24 {
        return Err(Error::Invalid);
    }
    let mut rec = [0u8; 24];
    rec[0..8].copy_from_slice(&(info.size / SECTOR).to_le_bytes());
    rec[8..12].copy_from_slice(&(SECTOR as u32).to_le_bytes());
    rec[12..16].copy_from_slice(&(guest_abi::MAX_IO_BYTES as u32).to_le_bytes());
    let flags: u32 = if info.writable { 0 } else { 1 };
    rec[16..20].copy_from_slice(&flags.to_le_bytes());
    crate::domains::with_table(|t| t.get(dom).ok_or(Error::Invalid)?.copy_to(buf, &rec))?;
    Ok(24)
}

/// `block_read` / `block_write` (`sector`, `buf`, `len`) and `block_flush`:
/// validated here on the vCPU, performed by the service thread while the
/// vCPU blocks.
pub fn hc_io(dom: DomId, which: u64, disk: u64, sector: u64, buf: u64, len: u64) -> Result<u64, Error> {
    let op = match which {
        guest_abi::nr::BLOCK_READ => Op::Read,
        guest_abi::nr::BLOCK_WRITE => Op::Write,
        _ => Op::Flush,
    };
    let index = usize::try_from(disk).map_err(|_| Error::NoDev)?;
    let (size, writable) = INFO.lock().get(&(dom, index)).map(|i| (i.size, i.writable)).ok_or(Error::NoDev)?;
    let (off, data) = if op == Op::Flush {
        (0, Vec::new())
    } else {
        if len > guest_abi::MAX_IO_BYTES {
            return Err(Error::TooBig);
        }
        if len == 0 || !len.is_multiple_of(SECTOR) {
            return Err(Error::Invalid);
        }
        let off = sector.checked_mul(SECTOR).ok_or(Error::Invalid)?;
        if off.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::Invalid);
        }
        if op == Op::Write && !writable {
            return Err(Error::Invalid);
        }
        let data = crate::domains::with_table(|t| {
            let d = t.get(dom).ok_or(Error::Invalid)?;
            match op {
                Op::Write => d.copy_from(buf, len),
                _ => d.check_writable(buf, len).map(|()| Vec::new()),
            }
        })?;
        (off, data)
    };
    let me = vcpu::current();
    push(Req::Io { dom, index, thread: me, op, off, gva: buf, len, data });
    // Nothing but integers lives on this stack while it waits.
    let r = wait_result(me);
    Error::from_raw(r)
}

/// The thread's adapter from the cache to the NFS client.
struct NfsBackend<'a> {
    nfs: &'a mut Nfs<KernelTransport>,
    fh: &'a NfsFh3,
    bogus: &'a mut u64,
}

impl NfsBackend<'_> {
    /// A verifier that matches nothing the server sent, so the cache
    /// re-sends what the server may have lost.
    fn changed(&mut self) -> u64 {
        *self.bogus += 1;
        0x5eed_0000_0000_0000 ^ *self.bogus
    }
}

impl Backend for NfsBackend<'_> {
    type Error = NfsError;

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<usize, NfsError> {
        let mut n = 0usize;
        self.nfs.read_to(self.fh, off, buf.len() as u64, &mut |b| {
            let end = (n + b.len()).min(buf.len());
            buf[n..end].copy_from_slice(&b[..end - n]);
            n = end;
        })?;
        Ok(n)
    }

    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<u64, NfsError> {
        match self.nfs.write(self.fh, off, data, StableHow::Unstable) {
            Ok(ok) => Ok(u64::from_le_bytes(ok.verf)),
            Err(e) if e.is_verifier_changed() => Ok(self.changed()),
            Err(e) => Err(e),
        }
    }

    fn commit(&mut self) -> Result<u64, NfsError> {
        match self.nfs.commit(self.fh) {
            Ok(v) => Ok(u64::from_le_bytes(v)),
            Err(e) if e.is_verifier_changed() => Ok(self.changed()),
            Err(e) => Err(e),
        }
    }
}

fn describe(e: &CacheError<NfsError>) -> String {
    match e {
        CacheError::Backend(e) => alloc::format!("{e}"),
        other => alloc::format!("{other}"),
    }
}

extern "C" fn blkio_main(_: u64) -> ! {
    cpu::sti();
    let mut disks: Vec<Box<Disk>> = Vec::new();
    loop {
        cpu::cli();
        let req = QUEUE.lock().pop_front();
        let Some(req) = req else {
            // Idle: sleep until a request arrives (checked with interrupts
            // off, so no wake-up is lost).
            vcpu::block_current(None);
            cpu::sti();
            continue;
        };
        cpu::sti();
        match req {
            Req::Attach(d) => disks.push(d),
            Req::Detach(dom) => {
                for d in disks.iter_mut().filter(|d| d.dom == dom) {
                    if let Err(e) = flush(d) {
                        log::error!("domain {dom}: disk {}: flush on detach failed: {}", d.index, describe(&e));
                    }
                }
                disks.retain(|d| d.dom != dom);
            }
            Req::FlushDomain { dom, thread } => {
                let mut r = 0i64;
                for d in disks.iter_mut().filter(|d| d.dom == dom) {
                    if let Err(e) = flush(d) {
                        log::error!("domain {dom}: disk {}: flush failed: {}", d.index, describe(&e));
                        r = Error::Io.to_raw();
                    }
                }
                complete(thread, r);
            }
            Req::Io { dom, index, thread, op, off, gva, len, data } => {
                let r = match disks.iter_mut().find(|d| d.dom == dom && d.index == index) {
                    None => Error::NoDev.to_raw(),
                    Some(d) => io(d, op, off, gva, len, &data),
                };
                complete(thread, r);
            }
        }
    }
}

fn flush(d: &mut Disk) -> Result<(), CacheError<NfsError>> {
    let mut b = NfsBackend { nfs: &mut d.nfs, fh: &d.fh, bogus: &mut d.bogus };
    d.cache.flush(&mut b)
}

fn io(d: &mut Disk, op: Op, off: u64, gva: u64, len: u64, data: &[u8]) -> i64 {
    let mut b = NfsBackend { nfs: &mut d.nfs, fh: &d.fh, bogus: &mut d.bogus };
    let result = match op {
        Op::Read => {
            let mut buf = alloc::vec![0u8; len as usize];
            d.cache.read(&mut b, off, &mut buf).map(|()| {
                crate::domains::with_table(|t| t.get(d.dom).map(|dm| dm.copy_to(gva, &buf)))
                    .map_or(Error::Invalid.to_raw(), |r| r.map_or_else(|e| e.to_raw(), |()| len as i64))
            })
        }
        Op::Write if !d.writable => Ok(Error::Invalid.to_raw()),
        Op::Write => d.cache.write(&mut b, off, data).map(|()| len as i64),
        Op::Flush => d.cache.flush(&mut b).map(|()| 0),
    };
    let dirty = d.cache.dirty_bytes() as u64;
    let mut info = INFO.lock();
    let i = info.get_mut(&(d.dom, d.index));
    match result {
        Ok(r) => {
            if let Some(i) = i {
                i.dirty_bytes = dirty;
                match op {
                    Op::Read => {
                        i.reads += 1;
                        i.read_bytes += len;
                    }
                    Op::Write => {
                        i.writes += 1;
                        i.write_bytes += len;
                    }
                    Op::Flush => i.flushes += 1,
                }
            }
            r
        }
        Err(e) => {
            drop(info);
            log::error!("domain {}: disk {}: {op:?} at byte {off}: {}", d.dom, d.index, describe(&e));
            if let Some(i) = INFO.lock().get_mut(&(d.dom, d.index)) {
                i.errors += 1;
                i.dirty_bytes = dirty;
            }
            Error::Io.to_raw()
        }
    }
}

/// Posts a result and wakes its thread (if it still exists).
fn complete(thread: ThreadId, r: i64) {
    if thread != vcpu::SHELL && vcpu::state(thread).is_none() {
        return;
    }
    DONE.lock().insert(thread, r);
    if thread == vcpu::SHELL {
        vcpu::want_shell();
    } else {
        vcpu::wake(thread);
    }
}
