//! A write-back cache for a paravirtual disk whose image lives on NFSv3.
//!
//! The disk is split into aligned chunks (a power of two, e.g. 64 KiB; the
//! last may be short). Each cached chunk holds the chunk's full current
//! contents and is in some combination of these states:
//!
//! - **dirty**: bytes `lo..hi` were written by the guest and not yet sent;
//! - **pinned**: bytes `lo..hi` were sent as NFS `WRITE UNSTABLE` and are not
//!   yet known to be committed; the write verifier is remembered. A server
//!   restart may still lose them, so a pinned chunk is never evicted;
//! - **clean**: neither; the server's committed copy equals the cache.
//!
//! A chunk can be dirty and pinned at once (written back, then written again).
//!
//! Guest writes land in the cache and return. Dirty spans go to the server on
//! eviction, through [`BlockCache::write_back_some`], or in
//! [`BlockCache::flush`], which writes back everything, issues `COMMIT`, and
//! re-sends every pinned span whose write verifier differs from the commit's
//! (the server restarted in between and may have dropped it), committing again
//! up to [`MAX_COMMIT_ROUNDS`] times. After a successful flush, everything the
//! guest wrote before it is durable on the server.
//!
//! Eviction is least-recently-used. The LRU scan drops the first clean chunk
//! it finds, writing back (and so pinning) dirty chunks it passes; if no chunk
//! can be dropped, it flushes to unpin everything, then drops the LRU chunk.
//! Cached bytes never exceed `max_bytes` by more than one chunk.
//!
//! Backend errors leave the cache consistent: data that failed to reach the
//! server stays dirty (or pinned) and a later flush retries it. A failed write
//! spanning several chunks may have updated a prefix of them (each chunk is
//! either entirely old or entirely new), as with a real disk.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// How many `COMMIT`s one [`BlockCache::flush`] issues before giving up with
/// [`CacheError::VerifierUnstable`] because the server kept restarting.
pub const MAX_COMMIT_ROUNDS: u32 = 3;

/// The file holding the disk image: an NFSv3 file in production, a fake in
/// tests.
pub trait Backend {
    /// The backend's error type.
    type Error;
    /// Reads up to `buf.len()` bytes at `off`; returns the number read, which
    /// is short only at the end of the file (0 at or past it).
    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<usize, Self::Error>;
    /// Writes all of `data` at `off` (NFS `WRITE UNSTABLE`); returns the
    /// server's write verifier.
    fn write_at(&mut self, off: u64, data: &[u8]) -> Result<u64, Self::Error>;
    /// Commits every earlier write (NFS `COMMIT`); returns the server's
    /// verifier. Writes that returned a different verifier may be lost.
    fn commit(&mut self) -> Result<u64, Self::Error>;
}

/// Why a cache operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError<E> {
    /// The range `off..off + len` is not inside the disk; nothing was done.
    OutOfRange {
        /// Start of the requested range.
        off: u64,
        /// Length of the requested range.
        len: u64,
        /// The disk size.
        size: u64,
    },
    /// The backend failed; the cache is consistent and the operation may be
    /// retried.
    Backend(E),
    /// The commit verifier still disagreed with some write's verifier after
    /// [`MAX_COMMIT_ROUNDS`] commits; the affected data is dirty again.
    VerifierUnstable,
}

impl<E: fmt::Display> fmt::Display for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::OutOfRange { off, len, size } => {
                write!(f, "block range {off:#x}+{len:#x} is outside the disk ({size:#x} bytes)")
            }
            CacheError::Backend(e) => write!(f, "disk backend: {e}"),
            CacheError::VerifierUnstable => {
                write!(f, "server kept restarting: commit verifier unstable after {MAX_COMMIT_ROUNDS} rounds")
            }
        }
    }
}

/// [`BlockCache::invalidate`] refused: some data is not committed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unflushed {
    /// Bytes written by the guest and not yet sent to the server.
    pub dirty_bytes: usize,
    /// Bytes sent to the server but not yet committed.
    pub uncommitted_bytes: usize,
}

impl fmt::Display for Unflushed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "disk cache not flushed: {} dirty, {} uncommitted bytes", self.dirty_bytes, self.uncommitted_bytes)
    }
}

/// Counters since the cache was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Chunk lookups (one per chunk a read or write touches) found cached.
    pub hits: u64,
    /// Chunk lookups that had to allocate the chunk.
    pub misses: u64,
    /// Bytes read from the backend.
    pub read_bytes: u64,
    /// Bytes written to the backend (including re-sends).
    pub written_bytes: u64,
    /// `COMMIT`s that succeeded.
    pub commits: u64,
    /// Chunks re-marked dirty because a commit's verifier differed from their
    /// write's.
    pub resends: u64,
    /// Chunks dropped to make room.
    pub evictions: u64,
}

/// A non-empty byte span `lo..hi` within a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    lo: usize,
    hi: usize,
}

impl Span {
    fn len(self) -> usize {
        self.hi - self.lo
    }

    /// The smallest span covering `a` (if any) and `b`.
    fn hull(a: Option<Span>, b: Span) -> Span {
        match a {
            Some(a) => Span { lo: a.lo.min(b.lo), hi: a.hi.max(b.hi) },
            None => b,
        }
    }
}

struct Chunk {
    /// The chunk's current contents (the chunk size, or less for the last).
    data: Vec<u8>,
    /// Written by the guest, not yet sent.
    dirty: Option<Span>,
    /// Sent UNSTABLE, not yet committed (the hull of all such writes).
    pinned: Option<Span>,
    /// The verifier of the pinned writes; `None` while pinned means they
    /// returned different verifiers, so the span must be re-sent.
    verf: Option<u64>,
    /// Last use, the key of this chunk in [`BlockCache::lru`].
    tick: u64,
}

/// Sends up to `limit` bytes of `c`'s dirty span (from its start) and pins
/// them. Returns the number of bytes sent.
fn write_back<B: Backend>(
    b: &mut B,
    base: u64,
    c: &mut Chunk,
    limit: usize,
    stats: &mut Stats,
) -> Result<usize, B::Error> {
    let Some(d) = c.dirty else { return Ok(0) };
    let n = d.len().min(limit);
    if n == 0 {
        return Ok(0);
    }
    let sent = Span { lo: d.lo, hi: d.lo + n };
    let v = b.write_at(base + sent.lo as u64, &c.data[sent.lo..sent.hi])?;
    stats.written_bytes += n as u64;
    c.dirty = if sent.hi < d.hi { Some(Span { lo: sent.hi, hi: d.hi }) } else { None };
    c.verf = match c.pinned {
        None => Some(v),
        Some(_) => c.verf.filter(|&old| old == v),
    };
    c.pinned = Some(Span::hull(c.pinned, sent));
    Ok(n)
}

/// Fills `buf` from the backend at `off`; bytes past the end of the file
/// stay as they are (zero for a fresh buffer).
fn fill<B: Backend>(b: &mut B, off: u64, buf: &mut [u8], stats: &mut Stats) -> Result<(), B::Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = b.read_at(off + got as u64, &mut buf[got..])?.min(buf.len() - got);
        if n == 0 {
            break;
        }
        got += n;
        stats.read_bytes += n as u64;
    }
    Ok(())
}

/// A write-back, LRU chunk cache in front of a [`Backend`].
pub struct BlockCache {
    size: u64,
    chunk: usize,
    /// `log2(chunk)`.
    shift: u32,
    max_bytes: usize,
    /// Sum of the cached chunks' lengths.
    used: usize,
    /// Cached chunks by index (`offset >> shift`).
    chunks: BTreeMap<u64, Chunk>,
    /// Chunk indices by last use, oldest first.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    stats: Stats,
}

impl BlockCache {
    /// An empty cache for a disk of `size` bytes, in chunks of `chunk` bytes,
    /// holding at most `max_bytes` (plus at most one chunk: a cache smaller
    /// than a chunk still holds one).
    ///
    /// # Panics
    ///
    /// If `chunk` is not a power of two.
    pub fn new(size: u64, chunk: usize, max_bytes: usize) -> Self {
        assert!(chunk.is_power_of_two(), "block cache chunk size {chunk} is not a power of two");
        BlockCache {
            size,
            chunk,
            shift: chunk.trailing_zeros(),
            max_bytes,
            used: 0,
            chunks: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            stats: Stats::default(),
        }
    }

    /// The disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// Reads `buf.len()` bytes at `off`. Bytes beyond the end of the image
    /// file (but inside the disk) read as zeros.
    pub fn read<B: Backend>(&mut self, b: &mut B, off: u64, buf: &mut [u8]) -> Result<(), CacheError<B::Error>> {
        self.check(off, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let (idx, within, n) = self.piece(off + done as u64, buf.len() - done);
            let c = self.chunk_mut(b, idx, true)?;
            buf[done..done + n].copy_from_slice(&c.data[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `off` into the cache. Chunks it covers entirely are
    /// not read from the backend; partly covered uncached chunks are.
    pub fn write<B: Backend>(&mut self, b: &mut B, off: u64, data: &[u8]) -> Result<(), CacheError<B::Error>> {
        self.check(off, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let (idx, within, n) = self.piece(off + done as u64, data.len() - done);
            let whole = within == 0 && n == self.chunk_len(idx);
            let c = self.chunk_mut(b, idx, !whole)?;
            c.data[within..within + n].copy_from_slice(&data[done..done + n]);
            c.dirty = Some(Span::hull(c.dirty, Span { lo: within, hi: within + n }));
            done += n;
        }
        Ok(())
    }

    /// Writes back every dirty byte, commits, and re-sends whatever the
    /// commit's verifier says may be lost, for at most [`MAX_COMMIT_ROUNDS`]
    /// commits. On success nothing is dirty or pinned and everything written
    /// before is durable. Does nothing if nothing is dirty or pinned.
    pub fn flush<B: Backend>(&mut self, b: &mut B) -> Result<(), CacheError<B::Error>> {
        for _ in 0..MAX_COMMIT_ROUNDS {
            for (&idx, c) in self.chunks.iter_mut() {
                write_back(b, idx << self.shift, c, usize::MAX, &mut self.stats).map_err(CacheError::Backend)?;
            }
            if self.chunks.values().all(|c| c.pinned.is_none()) {
                return Ok(());
            }
            let v = b.commit().map_err(CacheError::Backend)?;
            self.stats.commits += 1;
            let mut lost = false;
            for c in self.chunks.values_mut() {
                let Some(p) = c.pinned.take() else { continue };
                if c.verf != Some(v) {
                    c.dirty = Some(Span::hull(c.dirty, p));
                    self.stats.resends += 1;
                    lost = true;
                }
                c.verf = None;
            }
            if !lost {
                return Ok(());
            }
        }
        Err(CacheError::VerifierUnstable)
    }

    /// Background progress: writes back (UNSTABLE, so the data stays pinned
    /// until the next commit) up to `budget` dirty bytes, least recently used
    /// chunks first. Returns the number of bytes written.
    pub fn write_back_some<B: Backend>(&mut self, b: &mut B, budget: usize) -> Result<usize, CacheError<B::Error>> {
        let mut done = 0;
        let mut from = 0;
        while done < budget {
            let Some((&tick, &idx)) = self.lru.range(from..).next() else { break };
            from = tick + 1;
            if let Some(c) = self.chunks.get_mut(&idx) {
                done +=
                    write_back(b, idx << self.shift, c, budget - done, &mut self.stats).map_err(CacheError::Backend)?;
            }
        }
        Ok(done)
    }

    /// Bytes written by the guest and not yet sent to the server (the sum of
    /// the chunks' dirty spans).
    pub fn dirty_bytes(&self) -> usize {
        self.chunks.values().filter_map(|c| c.dirty).map(Span::len).sum()
    }

    /// Bytes sent to the server and not yet committed (the sum of the chunks'
    /// pinned spans).
    pub fn uncommitted_bytes(&self) -> usize {
        self.chunks.values().filter_map(|c| c.pinned).map(Span::len).sum()
    }

    /// Memory held by cached chunks, in bytes.
    pub fn cached_bytes(&self) -> usize {
        self.used
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Drops every cached chunk, e.g. before another host takes over the disk.
    /// Refuses, changing nothing, if anything is dirty or uncommitted: call
    /// [`BlockCache::flush`] first.
    pub fn invalidate(&mut self) -> Result<(), Unflushed> {
        let (dirty_bytes, uncommitted_bytes) = (self.dirty_bytes(), self.uncommitted_bytes());
        if dirty_bytes > 0 || uncommitted_bytes > 0 {
            return Err(Unflushed { dirty_bytes, uncommitted_bytes });
        }
        self.chunks.clear();
        self.lru.clear();
        self.used = 0;
        Ok(())
    }

    fn check<E>(&self, off: u64, len: usize) -> Result<(), CacheError<E>> {
        let len = len as u64;
        match off.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(CacheError::OutOfRange { off, len, size: self.size }),
        }
    }

    /// The length of chunk `idx` (short for the last chunk).
    fn chunk_len(&self, idx: u64) -> usize {
        (self.size - (idx << self.shift)).min(self.chunk as u64) as usize
    }

    /// The chunk holding `pos`, the offset of `pos` in it, and how many of
    /// `len` bytes from `pos` lie in it.
    fn piece(&self, pos: u64, len: usize) -> (u64, usize, usize) {
        let idx = pos >> self.shift;
        let within = (pos & (self.chunk as u64 - 1)) as usize;
        (idx, within, len.min(self.chunk_len(idx) - within))
    }

    /// The cached chunk `idx`, marked most recently used. On a miss, makes
    /// room and allocates it, reading its contents if `fetch`.
    fn chunk_mut<B: Backend>(&mut self, b: &mut B, idx: u64, fetch: bool) -> Result<&mut Chunk, CacheError<B::Error>> {
        self.tick += 1;
        if self.chunks.contains_key(&idx) {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
            let len = self.chunk_len(idx);
            self.make_room(b, len)?;
            let mut data = vec![0; len];
            if fetch {
                fill(b, idx << self.shift, &mut data, &mut self.stats).map_err(CacheError::Backend)?;
            }
            self.used += len;
            self.lru.insert(self.tick, idx);
            self.chunks.insert(idx, Chunk { data, dirty: None, pinned: None, verf: None, tick: self.tick });
        }
        let c = self.chunks.get_mut(&idx).expect("chunk was cached above");
        if c.tick != self.tick {
            self.lru.remove(&c.tick);
            c.tick = self.tick;
            self.lru.insert(self.tick, idx);
        }
        Ok(c)
    }

    /// Evicts until `need` more bytes fit in `max_bytes` (or the cache is
    /// empty).
    fn make_room<B: Backend>(&mut self, b: &mut B, need: usize) -> Result<(), CacheError<B::Error>> {
        let mut flushed = false;
        while self.used + need > self.max_bytes && !self.chunks.is_empty() {
            if let Some(idx) = self.victim(b)? {
                if let Some(c) = self.chunks.remove(&idx) {
                    self.lru.remove(&c.tick);
                    self.used -= c.data.len();
                    self.stats.evictions += 1;
                }
            } else if flushed {
                // Unreachable: a successful flush leaves every chunk clean.
                debug_assert!(false, "block cache: nothing evictable after a flush");
                break;
            } else {
                self.flush(b)?;
                flushed = true;
            }
        }
        Ok(())
    }

    /// Scans chunks oldest first for a clean, unpinned one, writing back the
    /// dirty unpinned chunks it passes.
    fn victim<B: Backend>(&mut self, b: &mut B) -> Result<Option<u64>, CacheError<B::Error>> {
        let mut from = 0;
        while let Some((&tick, &idx)) = self.lru.range(from..).next() {
            from = tick + 1;
            let Some(c) = self.chunks.get_mut(&idx) else { continue };
            if c.pinned.is_some() {
                continue;
            }
            if c.dirty.is_none() {
                return Ok(Some(idx));
            }
            write_back(b, idx << self.shift, c, usize::MAX, &mut self.stats).map_err(CacheError::Backend)?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Fault;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Call {
        Read(u64, usize),
        Write(u64, usize),
        Commit,
    }

    /// An NFS-like file: `current` is what reads see, `committed` what
    /// survives a server restart.
    struct Fake {
        current: Vec<u8>,
        committed: Vec<u8>,
        verf: u64,
        calls: Vec<Call>,
        read_bytes: u64,
        written_bytes: u64,
        commits: u64,
        /// Fail the call after this many more succeed.
        fail_in: Option<u64>,
        /// Restart right after this many more writes have been applied.
        restart_after_writes: Option<u64>,
        /// Restart just before every commit.
        restart_every_commit: bool,
        /// Longest read returned (to exercise short reads).
        max_read: usize,
    }

    impl Fake {
        fn new(file: Vec<u8>) -> Self {
            Fake {
                current: file.clone(),
                committed: file,
                verf: 0x1111,
                calls: Vec::new(),
                read_bytes: 0,
                written_bytes: 0,
                commits: 0,
                fail_in: None,
                restart_after_writes: None,
                restart_every_commit: false,
                max_read: usize::MAX,
            }
        }

        fn restart(&mut self) {
            self.current = self.committed.clone();
            self.verf = self.verf.wrapping_mul(31).wrapping_add(7);
        }

        fn step(&mut self) -> Result<(), Fault> {
            match self.fail_in {
                Some(0) => {
                    self.fail_in = None;
                    Err(Fault)
                }
                Some(n) => {
                    self.fail_in = Some(n - 1);
                    Ok(())
                }
                None => Ok(()),
            }
        }

        /// The committed contents as a disk of `size` bytes.
        fn durable(&self, size: usize) -> Vec<u8> {
            assert!(self.committed.len() <= size);
            let mut v = self.committed.clone();
            v.resize(size, 0);
            v
        }

        fn reads(&self) -> usize {
            self.calls.iter().filter(|c| matches!(c, Call::Read(..))).count()
        }
    }

    impl Backend for Fake {
        type Error = Fault;

        fn read_at(&mut self, off: u64, buf: &mut [u8]) -> Result<usize, Fault> {
            self.step()?;
            self.calls.push(Call::Read(off, buf.len()));
            let off = off as usize;
            if off >= self.current.len() {
                return Ok(0);
            }
            let n = buf.len().min(self.current.len() - off).min(self.max_read);
            buf[..n].copy_from_slice(&self.current[off..off + n]);
            self.read_bytes += n as u64;
            Ok(n)
        }

        fn write_at(&mut self, off: u64, data: &[u8]) -> Result<u64, Fault> {
            self.step()?;
            self.calls.push(Call::Write(off, data.len()));
            let off = off as usize;
            if self.current.len() < off + data.len() {
                self.current.resize(off + data.len(), 0);
            }
            self.current[off..off + data.len()].copy_from_slice(data);
            self.written_bytes += data.len() as u64;
            let v = self.verf;
            match self.restart_after_writes {
                Some(0) | Some(1) => {
                    self.restart_after_writes = None;
                    self.restart();
                }
                Some(n) => self.restart_after_writes = Some(n - 1),
                None => {}
            }
            Ok(v)
        }

        fn commit(&mut self) -> Result<u64, Fault> {
            self.step()?;
            self.calls.push(Call::Commit);
            if self.restart_every_commit {
                self.restart();
            }
            self.committed = self.current.clone();
            self.commits += 1;
            Ok(self.verf)
        }
    }

    fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
        (0..n).map(|_| rng.next() as u8).collect()
    }

    /// Structural invariants, including the memory bound.
    fn check_invariants(c: &BlockCache) {
        let sum: usize = c.chunks.values().map(|ch| ch.data.len()).sum();
        assert_eq!(sum, c.used);
        assert!(c.used <= c.max_bytes + c.chunk, "used {} > max {} + chunk {}", c.used, c.max_bytes, c.chunk);
        assert_eq!(c.lru.len(), c.chunks.len());
        for (&tick, &idx) in &c.lru {
            assert_eq!(c.chunks[&idx].tick, tick);
        }
        for (&idx, ch) in &c.chunks {
            assert_eq!(ch.data.len(), c.chunk_len(idx));
            for s in [ch.dirty, ch.pinned].into_iter().flatten() {
                assert!(s.lo < s.hi && s.hi <= ch.data.len(), "bad span {s:?}");
            }
            if ch.pinned.is_none() {
                assert_eq!(ch.verf, None);
            }
        }
    }

    /// Retries `op` (clearing injected faults) until it succeeds.
    fn retry<T>(fake: &mut Fake, mut op: impl FnMut(&mut Fake) -> Result<T, CacheError<Fault>>) -> T {
        for _ in 0..4 {
            match op(fake) {
                Ok(v) => return v,
                Err(CacheError::Backend(Fault)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        panic!("still failing");
    }

    struct Params {
        size: usize,
        chunk: usize,
        max_bytes: usize,
        file_len: usize,
        faults: bool,
        restarts: bool,
        ops: usize,
    }

    fn fuzz(seed: u64, p: Params) {
        let mut rng = Rng(seed);
        let file = random_bytes(&mut rng, p.file_len);
        let mut model = file.clone();
        model.resize(p.size, 0);
        let mut fake = Fake::new(file);
        if seed.is_multiple_of(2) {
            fake.max_read = p.chunk / 2 + 1;
        }
        let mut cache = BlockCache::new(p.size as u64, p.chunk, p.max_bytes);
        let mut flushes = 0;
        for _ in 0..p.ops {
            if p.faults && rng.next().is_multiple_of(6) {
                fake.fail_in = Some(rng.next() % 4);
            }
            if p.restarts {
                match rng.next() % 24 {
                    0 => fake.restart(),
                    1 => fake.restart_after_writes = Some(rng.next() % 4),
                    _ => {}
                }
            }
            let off = (rng.next() % p.size as u64) as usize;
            let len = ((rng.next() % (3 * p.chunk as u64 + 2)) as usize).min(p.size - off);
            match rng.next() % 10 {
                0..=3 => {
                    let mut buf = vec![0xAA; len];
                    retry(&mut fake, |f| cache.read(f, off as u64, &mut buf));
                    assert_eq!(buf, model[off..off + len], "read {off}+{len}");
                }
                4..=7 => {
                    let data = random_bytes(&mut rng, len);
                    if let Err(e) = cache.write(&mut fake, off as u64, &data) {
                        assert_eq!(e, CacheError::Backend(Fault));
                        check_invariants(&cache);
                        check_failed_write(&mut cache, &mut fake, off, &data, &model);
                        retry(&mut fake, |f| cache.write(f, off as u64, &data));
                    }
                    model[off..off + len].copy_from_slice(&data);
                }
                8 => {
                    retry(&mut fake, |f| cache.flush(f));
                    assert_eq!(cache.dirty_bytes(), 0);
                    assert_eq!(cache.uncommitted_bytes(), 0);
                    assert!(fake.durable(p.size) == model, "committed != model after flush");
                    flushes += 1;
                }
                _ => {
                    let budget = (rng.next() % (2 * p.chunk as u64)) as usize;
                    let before = cache.dirty_bytes();
                    match cache.write_back_some(&mut fake, budget) {
                        Ok(n) => {
                            assert!(n <= budget);
                            assert_eq!(cache.dirty_bytes(), before - n);
                        }
                        Err(e) => {
                            // Some bytes may have been sent before the error.
                            assert_eq!(e, CacheError::Backend(Fault));
                            let n = retry(&mut fake, |f| cache.write_back_some(f, budget));
                            assert!(n <= budget && cache.dirty_bytes() <= before - n);
                        }
                    }
                }
            }
            check_invariants(&cache);
        }
        fake.fail_in = None;
        fake.restart_after_writes = None;
        cache.flush(&mut fake).unwrap();
        assert!(fake.durable(p.size) == model);
        assert!(flushes > 0);
        // Everything is committed: a restart and a cold cache still see it all.
        fake.restart();
        cache.invalidate().unwrap();
        let mut all = vec![0; p.size];
        cache.read(&mut fake, 0, &mut all).unwrap();
        assert!(all == model);

        let s = cache.stats();
        assert_eq!(s.read_bytes, fake.read_bytes);
        assert_eq!(s.written_bytes, fake.written_bytes);
        assert_eq!(s.commits, fake.commits);
        assert!(s.misses > 0 && s.hits > 0);
        if p.max_bytes < p.size / 2 {
            assert!(s.evictions > 0);
        }
        if p.restarts {
            assert!(s.resends > 0);
        }
    }

    /// After a failed write: each chunk piece is all old or all new, new ones
    /// forming a prefix; the rest of the disk is untouched.
    fn check_failed_write(cache: &mut BlockCache, fake: &mut Fake, off: usize, data: &[u8], model: &[u8]) {
        let saved = (fake.fail_in.take(), fake.restart_after_writes.take());
        let mut now = vec![0; model.len()];
        cache.read(fake, 0, &mut now).unwrap();
        assert_eq!(now[..off], model[..off]);
        assert_eq!(now[off + data.len()..], model[off + data.len()..]);
        let mut done = 0;
        let mut seen_old = false;
        while done < data.len() {
            let (_, _, n) = cache.piece((off + done) as u64, data.len() - done);
            let (got, new, old) = (&now[off + done..][..n], &data[done..][..n], &model[off + done..][..n]);
            if got == new && !seen_old {
                // Written (or old == new).
            } else {
                assert_eq!(got, old, "torn chunk piece at {}", off + done);
                seen_old |= got != new;
            }
            done += n;
        }
        (fake.fail_in, fake.restart_after_writes) = saved;
    }

    #[test]
    fn fuzz_against_model() {
        for seed in 1..=6 {
            let p = Params {
                size: 4096 + 100,
                chunk: 256,
                max_bytes: 1024,
                file_len: 3000,
                faults: false,
                restarts: false,
                ops: 3000,
            };
            fuzz(seed, p);
        }
    }

    #[test]
    fn fuzz_with_faults_and_restarts() {
        for seed in 10..=15 {
            let p = Params {
                size: 3000,
                chunk: 64,
                max_bytes: 300,
                file_len: 1000 + (seed as usize - 10) * 300,
                faults: true,
                restarts: true,
                ops: 4000,
            };
            fuzz(seed, p);
        }
    }

    #[test]
    fn fuzz_tiny_cache() {
        // A cache smaller than one chunk still works and holds one chunk.
        for (seed, max_bytes) in [(21, 0), (22, 10), (23, 64)] {
            let p = Params { size: 1000, chunk: 64, max_bytes, file_len: 500, faults: true, restarts: true, ops: 2000 };
            fuzz(seed, p);
        }
    }

    #[test]
    fn fuzz_large_cache() {
        let p = Params {
            size: 8192,
            chunk: 512,
            max_bytes: 1 << 20,
            file_len: 8192,
            faults: true,
            restarts: true,
            ops: 3000,
        };
        fuzz(31, p);
    }

    #[test]
    fn out_of_range_never_touches_backend() {
        let mut fake = Fake::new(vec![1; 100]);
        let mut c = BlockCache::new(1000, 64, 256);
        let mut buf = [0; 10];
        assert_eq!(c.read(&mut fake, 995, &mut buf), Err(CacheError::OutOfRange { off: 995, len: 10, size: 1000 }));
        assert!(matches!(c.write(&mut fake, 1000, &[1]), Err(CacheError::OutOfRange { .. })));
        assert!(matches!(c.write(&mut fake, u64::MAX, &[1, 2]), Err(CacheError::OutOfRange { .. })));
        assert!(matches!(c.read(&mut fake, 1001, &mut []), Err(CacheError::OutOfRange { .. })));
        // Empty ranges inside (or at the end of) the disk are fine.
        c.read(&mut fake, 1000, &mut []).unwrap();
        c.write(&mut fake, 0, &[]).unwrap();
        assert!(fake.calls.is_empty());
        assert_eq!(c.stats(), Stats::default());
        assert_eq!(c.cached_bytes(), 0);
    }

    #[test]
    fn sparse_file_and_short_last_chunk() {
        let mut fake = Fake::new(vec![7; 100]);
        let mut c = BlockCache::new(300, 128, 1024);
        let mut buf = vec![0xFF; 300];
        c.read(&mut fake, 0, &mut buf).unwrap();
        assert!(buf[..100].iter().all(|&b| b == 7));
        assert!(buf[100..].iter().all(|&b| b == 0));
        // Chunks 0..128, 128..256 and the short 256..300.
        assert_eq!(c.cached_bytes(), 300);
        assert_eq!(c.stats().misses, 3);
        // A write filling the short last chunk is a whole-chunk write.
        c.invalidate().unwrap();
        let reads = fake.reads();
        c.write(&mut fake, 256, &[9; 44]).unwrap();
        assert_eq!(fake.reads(), reads);
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.calls.last(), Some(&Call::Commit));
        assert_eq!(fake.durable(300)[256..], [9; 44]);
        assert_eq!(fake.committed.len(), 300);
    }

    #[test]
    fn whole_chunk_writes_do_no_reads() {
        let mut fake = Fake::new(vec![3; 4096]);
        // Cache of 2 chunks so the writes also force evictions.
        let mut c = BlockCache::new(4096, 256, 512);
        let mut rng = Rng(5);
        for i in 0..40u64 {
            let chunks = 1 + (rng.next() % 4) as usize;
            let idx = rng.next() % (16 - chunks as u64 + 1);
            c.write(&mut fake, idx * 256, &vec![i as u8; chunks * 256]).unwrap();
            check_invariants(&c);
        }
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.reads(), 0);
        assert_eq!(c.stats().read_bytes, 0);
        assert!(c.stats().evictions > 0);
    }

    #[test]
    fn partial_write_reads_the_chunk_once() {
        let file: Vec<u8> = (0..1024).map(|i| i as u8).collect();
        let mut fake = Fake::new(file.clone());
        let mut c = BlockCache::new(1024, 256, 1024);
        c.write(&mut fake, 300, &[0xEE; 10]).unwrap();
        assert_eq!(fake.calls, [Call::Read(256, 256)]);
        c.write(&mut fake, 310, &[0xEE; 10]).unwrap();
        assert_eq!(fake.calls.len(), 1);
        let mut buf = [0; 30];
        c.read(&mut fake, 295, &mut buf).unwrap();
        assert_eq!(buf[..5], file[295..300]);
        assert_eq!(buf[5..25], [0xEE; 20]);
        assert_eq!(buf[25..], file[320..325]);
        assert_eq!(c.dirty_bytes(), 20);
        // Only the dirty span is written back.
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.calls[1..], [Call::Write(300, 20), Call::Commit]);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.read_bytes, s.written_bytes, s.commits), (2, 1, 256, 20, 1));
    }

    #[test]
    fn dirty_span_is_merged_per_chunk() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(1024, 256, 1024);
        c.write(&mut fake, 10, &[1; 5]).unwrap();
        c.write(&mut fake, 100, &[2; 5]).unwrap();
        c.write(&mut fake, 250, &[3; 20]).unwrap(); // Spans chunks 0 and 1.
        assert_eq!(c.dirty_bytes(), (256 - 10) + 14);
        c.flush(&mut fake).unwrap();
        let writes: Vec<Call> = fake.calls.iter().copied().filter(|c| matches!(c, Call::Write(..))).collect();
        assert_eq!(writes, [Call::Write(10, 246), Call::Write(256, 14)]);
        // Empty file: reads of the partial chunks returned nothing; the gaps are zeros.
        let d = fake.durable(1024);
        assert_eq!(d[..10], [0; 10]);
        assert_eq!(d[10..15], [1; 5]);
        assert_eq!(d[15..100], [0; 85]);
        assert_eq!(d[250..270], [3; 20]);
    }

    #[test]
    fn server_restart_between_write_back_and_commit_loses_nothing() {
        let mut fake = Fake::new(vec![0; 2048]);
        let mut c = BlockCache::new(2048, 256, 4096);
        c.write(&mut fake, 0, &[5; 1000]).unwrap();
        assert_eq!(c.write_back_some(&mut fake, usize::MAX).unwrap(), 1000);
        assert_eq!(c.dirty_bytes(), 0);
        assert_eq!(c.uncommitted_bytes(), 1000);
        assert_eq!(fake.current[..1000], [5; 1000]);
        fake.restart();
        assert_eq!(fake.current[..1000], [0; 1000]);
        // Reads are served from the pinned chunks.
        let mut buf = [0; 1000];
        c.read(&mut fake, 0, &mut buf).unwrap();
        assert_eq!(buf, [5; 1000]);
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.durable(2048)[..1000], [5; 1000]);
        let s = c.stats();
        assert_eq!(s.resends, 4);
        assert_eq!(s.commits, 2);
        assert_eq!(s.written_bytes, 2000);
    }

    #[test]
    fn restart_during_flush_is_repaired() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(4096, 256, 4096);
        for i in 0..8u64 {
            c.write(&mut fake, i * 512, &[i as u8 + 1; 300]).unwrap();
        }
        // The server restarts after the third write-back of the flush.
        fake.restart_after_writes = Some(3);
        c.flush(&mut fake).unwrap();
        for i in 0..8usize {
            assert_eq!(fake.durable(4096)[i * 512..][..300], [i as u8 + 1; 300]);
        }
        // Only the chunks written before the restart were re-sent.
        assert_eq!(c.stats().resends, 3);
    }

    #[test]
    fn rewritten_pinned_chunk_with_mixed_verifiers_is_resent() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(1024, 1024, 4096);
        c.write(&mut fake, 0, &[1; 10]).unwrap();
        c.write_back_some(&mut fake, 100).unwrap();
        fake.restart(); // Loses bytes 0..10.
        c.write(&mut fake, 500, &[2; 10]).unwrap();
        c.write_back_some(&mut fake, 100).unwrap(); // New verifier.
        c.flush(&mut fake).unwrap();
        let d = fake.durable(1024);
        assert_eq!(d[..10], [1; 10]);
        assert_eq!(d[500..510], [2; 10]);
        assert_eq!(c.stats().resends, 1);
        // The re-send covers the hull of the two writes.
        assert_eq!(fake.calls[fake.calls.len() - 2..], [Call::Write(0, 510), Call::Commit]);
    }

    #[test]
    fn verifier_unstable_after_max_rounds() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(1024, 256, 4096);
        c.write(&mut fake, 0, &[4; 600]).unwrap();
        fake.restart_every_commit = true;
        assert_eq!(c.flush(&mut fake), Err(CacheError::VerifierUnstable));
        assert_eq!(fake.commits, u64::from(MAX_COMMIT_ROUNDS));
        assert_eq!(c.dirty_bytes(), 600);
        assert!(c.invalidate().is_err());
        fake.restart_every_commit = false;
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.durable(1024)[..600], [4; 600]);
        assert_eq!(c.dirty_bytes() + c.uncommitted_bytes(), 0);
    }

    #[test]
    fn backend_errors_then_retry_recover() {
        let mut fake = Fake::new(vec![8; 1024]);
        let mut c = BlockCache::new(1024, 256, 4096);
        // A failed read of a miss caches nothing.
        fake.fail_in = Some(0);
        let mut buf = [0; 10];
        assert_eq!(c.read(&mut fake, 0, &mut buf), Err(CacheError::Backend(Fault)));
        assert_eq!(c.cached_bytes(), 0);
        c.read(&mut fake, 0, &mut buf).unwrap();
        assert_eq!(buf, [8; 10]);

        c.write(&mut fake, 0, &[1; 1024]).unwrap();
        // The second write-back fails: the first chunk is pinned, the rest dirty.
        fake.fail_in = Some(1);
        assert_eq!(c.flush(&mut fake), Err(CacheError::Backend(Fault)));
        assert_eq!((c.dirty_bytes(), c.uncommitted_bytes()), (768, 256));
        // The commit fails: everything is pinned, nothing is lost.
        fake.fail_in = Some(3);
        assert_eq!(c.flush(&mut fake), Err(CacheError::Backend(Fault)));
        assert_eq!((c.dirty_bytes(), c.uncommitted_bytes()), (0, 1024));
        assert_eq!(fake.committed, [8; 1024]);
        fake.restart();
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.committed, [1; 1024]);
        assert_eq!(c.stats().resends, 4);
        c.invalidate().unwrap();
    }

    #[test]
    fn eviction_writes_back_lru_dirty_and_commits_when_all_pinned() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(4096, 256, 512);
        c.write(&mut fake, 0, &[1; 256]).unwrap();
        c.write(&mut fake, 256, &[2; 256]).unwrap();
        assert!(fake.calls.is_empty());
        // A third chunk: both dirty chunks are written back (pinned), nothing
        // clean is left, so the cache flushes and then evicts chunk 0.
        c.write(&mut fake, 512, &[3; 256]).unwrap();
        assert_eq!(fake.calls, [Call::Write(0, 256), Call::Write(256, 256), Call::Commit]);
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.cached_bytes(), 512);
        assert!(!c.chunks.contains_key(&0));
        // Chunk 1 is clean now: the next miss evicts it without backend calls.
        let mut buf = [0; 4];
        c.read(&mut fake, 0, &mut buf).unwrap();
        assert_eq!(buf, [1; 4]);
        assert_eq!(fake.calls[3..], [Call::Read(0, 256)]);
        assert!(!c.chunks.contains_key(&1));
        // A hit refreshes LRU: reading chunk 2 makes chunk 0 the oldest.
        c.read(&mut fake, 512, &mut buf).unwrap();
        c.read(&mut fake, 768, &mut buf).unwrap();
        assert!(c.chunks.contains_key(&2) && !c.chunks.contains_key(&0));
        check_invariants(&c);
    }

    #[test]
    fn write_back_some_respects_budget_and_lru_order() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(4096, 256, 4096);
        c.write(&mut fake, 512, &[1; 100]).unwrap();
        c.write(&mut fake, 0, &[2; 100]).unwrap();
        fake.calls.clear(); // The partial writes' reads of the empty file.
        assert_eq!(c.write_back_some(&mut fake, 0).unwrap(), 0);
        assert_eq!(c.write_back_some(&mut fake, 150).unwrap(), 150);
        assert_eq!(fake.calls, [Call::Write(512, 100), Call::Write(0, 50)]);
        assert_eq!((c.dirty_bytes(), c.uncommitted_bytes()), (50, 150));
        assert_eq!(c.write_back_some(&mut fake, 1000).unwrap(), 50);
        assert_eq!(fake.calls[2..], [Call::Write(50, 50)]);
        assert_eq!(c.write_back_some(&mut fake, 1000).unwrap(), 0);
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.calls[3..], [Call::Commit]);
        // Nothing left: a flush does not even commit.
        c.flush(&mut fake).unwrap();
        assert_eq!(fake.calls.len(), 4);
    }

    #[test]
    fn invalidate_refuses_unflushed_data() {
        let mut fake = Fake::new(vec![6; 512]);
        let mut c = BlockCache::new(512, 256, 4096);
        let mut buf = [0; 512];
        c.read(&mut fake, 0, &mut buf).unwrap();
        c.write(&mut fake, 0, &[1; 10]).unwrap();
        assert_eq!(c.invalidate(), Err(Unflushed { dirty_bytes: 10, uncommitted_bytes: 0 }));
        c.write_back_some(&mut fake, 4).unwrap();
        assert_eq!(c.invalidate(), Err(Unflushed { dirty_bytes: 6, uncommitted_bytes: 4 }));
        assert_eq!(c.cached_bytes(), 512);
        c.flush(&mut fake).unwrap();
        c.invalidate().unwrap();
        assert_eq!(c.cached_bytes(), 0);
        // Another host changes the file; the next read sees it.
        fake.current[0] = 42;
        c.read(&mut fake, 0, &mut buf[..1]).unwrap();
        assert_eq!(buf[0], 42);
        assert_eq!(c.stats().misses, 3);
    }

    #[test]
    fn memory_bound_with_huge_requests() {
        let mut fake = Fake::new(vec![]);
        let mut c = BlockCache::new(1 << 16, 512, 2000);
        let data = vec![9; 1 << 16];
        c.write(&mut fake, 0, &data).unwrap();
        check_invariants(&c);
        let mut buf = vec![0; 1 << 16];
        c.read(&mut fake, 0, &mut buf).unwrap();
        assert!(buf == data);
        check_invariants(&c);
        c.flush(&mut fake).unwrap();
        assert!(fake.durable(1 << 16) == data);
    }

    #[test]
    fn error_display() {
        use alloc::string::ToString;
        let e: CacheError<&str> = CacheError::OutOfRange { off: 16, len: 32, size: 40 };
        assert_eq!(e.to_string(), "block range 0x10+0x20 is outside the disk (0x28 bytes)");
        assert_eq!(CacheError::Backend("timeout").to_string(), "disk backend: timeout");
        assert!(CacheError::<&str>::VerifierUnstable.to_string().contains("3 rounds"));
        let u = Unflushed { dirty_bytes: 1, uncommitted_bytes: 2 };
        assert_eq!(u.to_string(), "disk cache not flushed: 1 dirty, 2 uncommitted bytes");
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn chunk_must_be_power_of_two() {
        let _ = BlockCache::new(100, 100, 1000);
    }
}
