//! The rhv migration stream, version 1: the typed, length-prefixed records a
//! domain travels in between hosts (live and cold migration) and in save
//! files. `docs/migration-stream.md` is the normative description; this is
//! its code form.
//!
//! Every record is `type: u32, len: u32, body: [u8; len]`, little-endian.
//! [`encode`] appends one record, [`decode`] reads one from the front of a
//! buffer (or says it needs more bytes), and [`Reader`] checks a whole
//! source-to-destination stream, record order included.
//!
//! Decoding never panics. Every length and count is checked against its
//! limit (and against the bytes present) before anything is allocated for
//! it, and a record's body length is checked against the largest body its
//! type can have as soon as the 8-byte record header is in, before the body
//! is read or buffered.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The stream version this code writes and the only one it reads.
pub const STREAM_VERSION: u32 = 1;
/// The first 8 bytes of a [`TYPE_HEADER`] body.
pub const MAGIC: [u8; 8] = *b"RHVMIGS\0";
/// The bytes before a record's body: type and length.
pub const RECORD_HEADER_BYTES: usize = 8;
/// The bytes of a guest page.
pub const PAGE_SIZE: usize = 4096;
/// The most guest pages a stream can describe: 16 GiB.
pub const MAX_GUEST_PAGES: u64 = (16 << 30) / PAGE_SIZE as u64;
/// The most vCPUs a domain can have.
pub const MAX_VCPUS: u32 = 64;
/// The most pages in one [`TYPE_PAGES`] record.
pub const MAX_BATCH: usize = 512;
/// The largest body of any record: a [`TYPE_PAGES`] record of [`MAX_BATCH`]
/// raw pages (`4 + 512 × 4105` bytes) rounded up. Longer bodies are refused
/// from the record header alone.
pub const MAX_BODY: usize = 2 * 1024 * 1024 + 8192;
/// The largest record, header included: what one channel message must be
/// able to hold.
pub const MAX_RECORD: usize = RECORD_HEADER_BYTES + MAX_BODY;

/// [`Record::Header`].
pub const TYPE_HEADER: u32 = 1;
/// [`Record::DomainConfig`].
pub const TYPE_DOMAIN_CONFIG: u32 = 2;
/// [`Record::CpuPolicy`].
pub const TYPE_CPU_POLICY: u32 = 3;
/// [`Record::Time`].
pub const TYPE_TIME: u32 = 4;
/// [`Record::Pages`].
pub const TYPE_PAGES: u32 = 5;
/// [`Record::Vcpu`].
pub const TYPE_VCPU: u32 = 6;
/// [`Record::Device`].
pub const TYPE_DEVICE: u32 = 7;
/// [`Record::End`].
pub const TYPE_END: u32 = 8;
/// [`Record::Round`].
pub const TYPE_ROUND: u32 = 9;
/// [`Record::Accept`].
pub const TYPE_ACCEPT: u32 = 16;
/// [`Record::Refuse`].
pub const TYPE_REFUSE: u32 = 17;
/// [`Record::Resumed`].
pub const TYPE_RESUMED: u32 = 18;
/// [`Record::Abort`].
pub const TYPE_ABORT: u32 = 19;

/// Header flag: the source keeps running the guest while pages are sent.
pub const FLAG_LIVE: u32 = 1 << 0;
/// Header flag: the destination leaves the domain paused after restoring it.
pub const FLAG_PAUSED_AT_DEST: u32 = 1 << 1;
/// Header flag: the stream is a save file, not a network migration.
pub const FLAG_SAVE_FILE: u32 = 1 << 2;
/// All header flags version 1 defines; any other bit is an error.
pub const KNOWN_FLAGS: u32 = FLAG_LIVE | FLAG_PAUSED_AT_DEST | FLAG_SAVE_FILE;

/// Longest domain name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest image name or path, in bytes.
pub const MAX_IMAGE_BYTES: usize = 256;
/// Longest guest command line, in bytes.
pub const MAX_EXTRA_BYTES: usize = 1024;
/// Most network interfaces.
pub const MAX_VIFS: usize = 8;
/// Most disks.
pub const MAX_DISKS: usize = 4;
/// Longest disk target (image path), in bytes.
pub const MAX_TARGET_BYTES: usize = 256;
/// Longest disk vdev name, in bytes.
pub const MAX_VDEV_BYTES: usize = 16;
/// Longest `cpuid=` string, in bytes.
pub const MAX_CPUID_BYTES: usize = 256;
/// The largest `on_*` action number: the index in `xlcfg::Action`'s order
/// (0 destroy, 1 restart, 2 preserve, 3 coredump-destroy, 4 coredump-restart,
/// 5 rename-restart).
pub const MAX_ACTION: u8 = 5;
/// Largest [`Record::CpuPolicy`] blob.
pub const MAX_CPU_POLICY_BYTES: usize = 512;
/// Longest [`Record::Refuse`] / [`Record::Abort`] reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Largest console backlog in a [`DeviceRecord`].
pub const MAX_CONSOLE_BYTES: usize = 16384;

/// [`VcpuRecord::state`]: runnable.
pub const VCPU_RUNNABLE: u8 = 0;
/// [`VcpuRecord::state`]: blocked (waiting for an event or its deadline).
pub const VCPU_BLOCKED: u8 = 1;
/// [`VcpuRecord::state`]: paused.
pub const VCPU_PAUSED: u8 = 2;
/// [`VcpuRecord::fpu_format`]: a 512-byte FXSAVE image.
pub const FPU_FXSAVE: u8 = 0;
/// [`VcpuRecord::fpu_format`]: an XSAVE image (legacy area, XSAVE header and
/// the components `xcr0` enables).
pub const FPU_XSAVE: u8 = 1;
/// The bytes of an FXSAVE image.
pub const FXSAVE_BYTES: usize = 512;
/// The smallest XSAVE image: legacy area plus XSAVE header.
pub const XSAVE_MIN_BYTES: usize = 576;
/// Largest FPU image.
pub const MAX_FPU_BYTES: usize = 4096;
/// The number of general registers in [`VcpuRecord::regs`].
pub const NUM_REGS: usize = 18;
/// The registers of [`VcpuRecord::regs`], in order.
pub const REG_NAMES: [&str; NUM_REGS] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
    "rip", "rflags",
];

/// The bytes of one page entry in a [`TYPE_PAGES`] body carrying data.
const RAW_ENTRY_BYTES: usize = 8 + 1 + PAGE_SIZE;
const HEADER_BODY: usize = 8 + 4 + 4 + 4 + 8 + 4;
const DISK_MAX: usize = 4 + MAX_TARGET_BYTES + 4 + MAX_VDEV_BYTES + 1;
const DOMAIN_MAX: usize = 4
    + MAX_NAME_BYTES
    + 8
    + 4
    + 2
    + 4
    + MAX_IMAGE_BYTES
    + 4
    + MAX_EXTRA_BYTES
    + 4
    + 6 * MAX_VIFS
    + 4
    + DISK_MAX * MAX_DISKS
    + 3
    + 4
    + MAX_CPUID_BYTES
    + 4
    + 17 * MAX_LAYOUT_RUNS;
const TIME_BODY: usize = 8 + 8 + 8 + 4;
const PAGES_MAX: usize = 4 + MAX_BATCH * RAW_ENTRY_BYTES;
const VCPU_MAX: usize = 4 + 8 * NUM_REGS + 8 + 8 + 1 + 8 + 1 + 8 + 4 + MAX_FPU_BYTES;
const DEVICE_MAX: usize = 8 + 1 + 4 + MAX_CONSOLE_BYTES;
const _: () = assert!(PAGES_MAX <= MAX_BODY && DOMAIN_MAX <= MAX_BODY && VCPU_MAX <= MAX_BODY);

/// The largest body a record of type `ty` can have; `None` for a type
/// version 1 does not define.
fn max_body(ty: u32) -> Option<usize> {
    Some(match ty {
        TYPE_HEADER => HEADER_BODY,
        TYPE_DOMAIN_CONFIG => DOMAIN_MAX,
        TYPE_CPU_POLICY => 4 + MAX_CPU_POLICY_BYTES,
        TYPE_TIME => TIME_BODY,
        TYPE_PAGES => PAGES_MAX,
        TYPE_VCPU => VCPU_MAX,
        TYPE_DEVICE => DEVICE_MAX,
        TYPE_END | TYPE_ROUND => 8,
        TYPE_ACCEPT => 0,
        TYPE_REFUSE | TYPE_ABORT => 4 + MAX_REASON_BYTES,
        TYPE_RESUMED => 4,
        _ => return None,
    })
}

/// The short name of record type `ty` (`"pages"`), `"unknown"` for a type
/// version 1 does not define.
pub fn record_name(ty: u32) -> &'static str {
    match ty {
        TYPE_HEADER => "header",
        TYPE_DOMAIN_CONFIG => "domain config",
        TYPE_CPU_POLICY => "cpu policy",
        TYPE_TIME => "time",
        TYPE_PAGES => "pages",
        TYPE_VCPU => "vcpu",
        TYPE_DEVICE => "device",
        TYPE_END => "end",
        TYPE_ROUND => "round",
        TYPE_ACCEPT => "accept",
        TYPE_REFUSE => "refuse",
        TYPE_RESUMED => "resumed",
        TYPE_ABORT => "abort",
        _ => "unknown",
    }
}

/// The body of [`Record::Header`], after the [`MAGIC`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The stream version, [`STREAM_VERSION`].
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The guest page size, [`PAGE_SIZE`].
    pub page_size: u32,
    /// Guest memory in pages, `1..=MAX_GUEST_PAGES`; every gfn in the
    /// stream is below it.
    pub guest_pages: u64,
    /// The domain's vCPUs, `1..=MAX_VCPUS`.
    pub vcpus: u32,
}

impl Header {
    /// A version-1 header with 4 KiB pages.
    pub const fn new(flags: u32, guest_pages: u64, vcpus: u32) -> Self {
        Self { version: STREAM_VERSION, flags, page_size: PAGE_SIZE as u32, guest_pages, vcpus }
    }
}

/// A disk of [`DomainRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// The image file, at most [`MAX_TARGET_BYTES`] bytes.
    pub target: String,
    /// The guest's device name (`xvda`), at most [`MAX_VDEV_BYTES`] bytes.
    pub vdev: String,
    /// Whether the guest may write to it.
    pub writable: bool,
}

/// The domain's configuration, enough for the destination to create an
/// empty domain of the same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    /// The domain name, 1..=[`MAX_NAME_BYTES`] bytes.
    pub name: String,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// vCPUs, `1..=MAX_VCPUS`, equal to the header's.
    pub vcpus: u32,
    /// Scheduler weight.
    pub weight: u16,
    /// Where the kernel came from (`/var/xen/heartbeat.elf` or a boot module
    /// name), at most [`MAX_IMAGE_BYTES`] bytes.
    pub image: String,
    /// The guest command line, at most [`MAX_EXTRA_BYTES`] bytes.
    pub extra: String,
    /// The network interfaces' MAC addresses, at most [`MAX_VIFS`].
    pub vifs: Vec<[u8; 6]>,
    /// The disks, at most [`MAX_DISKS`].
    pub disks: Vec<DiskRecord>,
    /// `on_poweroff`, `0..=MAX_ACTION`.
    pub on_poweroff: u8,
    /// `on_crash`, `0..=MAX_ACTION`.
    pub on_crash: u8,
    /// `on_reboot`, `0..=MAX_ACTION`.
    pub on_reboot: u8,
    /// The configuration's `cpuid=` string, possibly empty, at most
    /// [`MAX_CPUID_BYTES`] bytes.
    pub cpuid: String,
    /// The guest memory layout: runs of pages with the same permissions
    /// (`PERM_*` bits; 0 = no memory behind the page), covering every page
    /// from 0 in order, at most [`MAX_LAYOUT_RUNS`].
    pub layout: Vec<PermRun>,
}

/// Most permission runs in [`DomainRecord::layout`].
pub const MAX_LAYOUT_RUNS: usize = 1024;
/// Page permission bits in a [`PermRun`].
pub const PERM_READ: u8 = 1;
pub const PERM_WRITE: u8 = 2;
pub const PERM_EXEC: u8 = 4;

/// `count` pages from `first` with permissions `perms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermRun {
    pub first: u64,
    pub count: u64,
    pub perms: u8,
}

/// The guest's clock at the moment the source paused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRecord {
    /// Guest monotonic time, in ns.
    pub guest_ns: u64,
    /// The source's TSC frequency, in Hz.
    pub source_tsc_hz: u64,
    /// Unix time in ns; 0 if unknown.
    pub wall_ns: u64,
    /// The guest time page's generation counter.
    pub generation: u32,
}

/// The contents of one page of a [`Record::Pages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageData {
    /// All zero bytes (wire kind 0, no data).
    Zero,
    /// The page's bytes (wire kind 1).
    Raw(Box<[u8; PAGE_SIZE]>),
}

/// One vCPU's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuRecord {
    /// The vCPU number, below the header's `vcpus`.
    pub index: u32,
    /// The general registers, in [`REG_NAMES`] order.
    pub regs: [u64; NUM_REGS],
    /// The FS base.
    pub fs_base: u64,
    /// The GS base.
    pub gs_base: u64,
    /// `VCPU_RUNNABLE`, `VCPU_BLOCKED` or `VCPU_PAUSED`.
    pub state: u8,
    /// The wake-up deadline in guest ns; 0 for none.
    pub deadline_ns: u64,
    /// [`FPU_FXSAVE`] or [`FPU_XSAVE`].
    pub fpu_format: u8,
    /// The guest's XCR0 (bit 0 must be set with [`FPU_XSAVE`]).
    pub xcr0: u64,
    /// The FPU image: exactly [`FXSAVE_BYTES`] for FXSAVE,
    /// [`XSAVE_MIN_BYTES`]..=[`MAX_FPU_BYTES`] for XSAVE.
    pub fpu: Vec<u8>,
}

/// The domain's device state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Pending event bits.
    pub events: u64,
    /// Whether a shutdown request is pending.
    pub shutdown_requested: bool,
    /// The console backlog, at most [`MAX_CONSOLE_BYTES`].
    pub console: Vec<u8>,
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Type 1: the first record; what the stream is.
    Header(Header),
    /// Type 2: the domain's configuration.
    DomainConfig(DomainRecord),
    /// Type 3: the CPU policy, an opaque blob of at most
    /// [`MAX_CPU_POLICY_BYTES`] (`cpupolicy` defines its contents).
    CpuPolicy(Vec<u8>),
    /// Type 4: the guest's clock when the source paused it.
    Time(TimeRecord),
    /// Type 5: 1..=[`MAX_BATCH`] guest pages, each `(gfn, data)`.
    Pages(Vec<(u64, PageData)>),
    /// Type 6: one vCPU.
    Vcpu(VcpuRecord),
    /// Type 7: the device state.
    Device(DeviceRecord),
    /// Type 8: the last record of the source's stream.
    End {
        /// The page entries in all [`Record::Pages`] records of the stream.
        pages_sent: u64,
    },
    /// Type 9: progress, source to destination; informational.
    Round {
        /// The round number.
        round: u32,
        /// The pages the round sends.
        pages: u32,
    },
    /// Type 16, destination to source: go ahead and send pages.
    Accept,
    /// Type 17, destination to source: the domain cannot come here.
    Refuse {
        /// Why, at most [`MAX_REASON_BYTES`] bytes.
        reason: String,
    },
    /// Type 18, destination to source: the guest runs here now.
    Resumed {
        /// The domain's ID on the destination.
        domid: u32,
    },
    /// Type 19, either direction: the migration is off.
    Abort {
        /// Why, at most [`MAX_REASON_BYTES`] bytes.
        reason: String,
    },
}

impl Record {
    /// The record's wire type, `TYPE_*`.
    pub fn type_code(&self) -> u32 {
        match self {
            Self::Header(_) => TYPE_HEADER,
            Self::DomainConfig(_) => TYPE_DOMAIN_CONFIG,
            Self::CpuPolicy(_) => TYPE_CPU_POLICY,
            Self::Time(_) => TYPE_TIME,
            Self::Pages(_) => TYPE_PAGES,
            Self::Vcpu(_) => TYPE_VCPU,
            Self::Device(_) => TYPE_DEVICE,
            Self::End { .. } => TYPE_END,
            Self::Round { .. } => TYPE_ROUND,
            Self::Accept => TYPE_ACCEPT,
            Self::Refuse { .. } => TYPE_REFUSE,
            Self::Resumed { .. } => TYPE_RESUMED,
            Self::Abort { .. } => TYPE_ABORT,
        }
    }
}

/// What a decoder needs to know from outside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Guest memory in pages: every gfn of a [`Record::Pages`] is below it.
    pub guest_pages: u64,
}

impl Limits {
    /// The widest limits: any gfn below [`MAX_GUEST_PAGES`].
    pub const MAX: Limits = Limits { guest_pages: MAX_GUEST_PAGES };

    /// The limits a stream's header sets.
    pub const fn for_header(header: &Header) -> Self {
        Self { guest_pages: header.guest_pages }
    }
}

/// A malformed or out-of-order stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// Where the record starts in the stream, when a [`Reader`] knows it.
    pub offset: Option<u64>,
    /// The record's type, once known.
    pub record: Option<u32>,
    /// What is wrong (one line).
    pub message: String,
}

impl StreamError {
    fn new(record: Option<u32>, message: String) -> Self {
        Self { offset: None, record, message }
    }

    fn in_record(ty: u32, message: String) -> Self {
        Self::new(Some(ty), message)
    }
}

impl fmt::Display for StreamError {
    /// `migration stream: at byte 8240: record 5 (pages): gfn 0x12345
    /// beyond guest memory (4096 pages)`, without the parts not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("migration stream: ")?;
        if let Some(offset) = self.offset {
            write!(f, "at byte {offset}: ")?;
        }
        if let Some(ty) = self.record {
            write!(f, "record {ty} ({}): ", record_name(ty))?;
        }
        f.write_str(&self.message)
    }
}

// ---------------------------------------------------------------------------
// Encoding

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_blob(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_blob(out, s.as_bytes());
}

/// Starts a record of type `ty`; returns where its length goes.
fn begin(out: &mut Vec<u8>, ty: u32) -> usize {
    put_u32(out, ty);
    put_u32(out, 0);
    out.len()
}

/// Fills in the length of the record whose body started at `body`.
fn end(out: &mut [u8], body: usize) {
    let len = (out.len() - body) as u32;
    out[body - 4..body].copy_from_slice(&len.to_le_bytes());
}

/// Appends `rec` to `out`.
///
/// The record is written as given: one that breaks a limit (a 65-byte name,
/// an empty [`Record::Pages`]) is written anyway and refused by the
/// receiver's [`decode`].
pub fn encode(rec: &Record, out: &mut Vec<u8>) {
    let body = begin(out, rec.type_code());
    match rec {
        Record::Header(h) => {
            out.extend_from_slice(&MAGIC);
            put_u32(out, h.version);
            put_u32(out, h.flags);
            put_u32(out, h.page_size);
            put_u64(out, h.guest_pages);
            put_u32(out, h.vcpus);
        }
        Record::DomainConfig(d) => {
            put_str(out, &d.name);
            put_u64(out, d.memory_mib);
            put_u32(out, d.vcpus);
            put_u16(out, d.weight);
            put_str(out, &d.image);
            put_str(out, &d.extra);
            put_u32(out, d.vifs.len() as u32);
            for mac in &d.vifs {
                out.extend_from_slice(mac);
            }
            put_u32(out, d.disks.len() as u32);
            for disk in &d.disks {
                put_str(out, &disk.target);
                put_str(out, &disk.vdev);
                put_u8(out, disk.writable.into());
            }
            put_u8(out, d.on_poweroff);
            put_u8(out, d.on_crash);
            put_u8(out, d.on_reboot);
            put_str(out, &d.cpuid);
            put_u32(out, d.layout.len() as u32);
            for r in &d.layout {
                put_u64(out, r.first);
                put_u64(out, r.count);
                put_u8(out, r.perms);
            }
        }
        Record::CpuPolicy(blob) => put_blob(out, blob),
        Record::Time(t) => {
            put_u64(out, t.guest_ns);
            put_u64(out, t.source_tsc_hz);
            put_u64(out, t.wall_ns);
            put_u32(out, t.generation);
        }
        Record::Pages(pages) => {
            put_u32(out, pages.len() as u32);
            for (gfn, data) in pages {
                put_u64(out, *gfn);
                match data {
                    PageData::Zero => put_u8(out, 0),
                    PageData::Raw(bytes) => {
                        put_u8(out, 1);
                        out.extend_from_slice(&bytes[..]);
                    }
                }
            }
        }
        Record::Vcpu(v) => {
            put_u32(out, v.index);
            for r in v.regs {
                put_u64(out, r);
            }
            put_u64(out, v.fs_base);
            put_u64(out, v.gs_base);
            put_u8(out, v.state);
            put_u64(out, v.deadline_ns);
            put_u8(out, v.fpu_format);
            put_u64(out, v.xcr0);
            put_blob(out, &v.fpu);
        }
        Record::Device(d) => {
            put_u64(out, d.events);
            put_u8(out, d.shutdown_requested.into());
            put_blob(out, &d.console);
        }
        Record::End { pages_sent } => put_u64(out, *pages_sent),
        Record::Round { round, pages } => {
            put_u32(out, *round);
            put_u32(out, *pages);
        }
        Record::Accept => {}
        Record::Refuse { reason } | Record::Abort { reason } => put_str(out, reason),
        Record::Resumed { domid } => put_u32(out, *domid),
    }
    end(out, body);
}

/// Whether `page` is all zero bytes.
pub fn is_zero_page(page: &[u8; PAGE_SIZE]) -> bool {
    page.chunks_exact(8).all(|w| w == [0u8; 8])
}

/// Appends `pages` (`(gfn, contents)`) to `out` as [`Record::Pages`]
/// records, sending zero pages without their data; returns the numbers of
/// zero and raw pages written.
///
/// Up to [`MAX_BATCH`] pages make one record (one channel message); more are
/// split into several records of at most [`MAX_BATCH`]; none writes nothing.
pub fn encode_pages(pages: &[(u64, &[u8; PAGE_SIZE])], out: &mut Vec<u8>) -> (usize, usize) {
    let (mut zero, mut raw) = (0, 0);
    for batch in pages.chunks(MAX_BATCH) {
        let body = begin(out, TYPE_PAGES);
        put_u32(out, batch.len() as u32);
        for (gfn, bytes) in batch {
            put_u64(out, *gfn);
            if is_zero_page(bytes) {
                put_u8(out, 0);
                zero += 1;
            } else {
                put_u8(out, 1);
                out.extend_from_slice(&bytes[..]);
                raw += 1;
            }
        }
        end(out, body);
    }
    (zero, raw)
}

// ---------------------------------------------------------------------------
// Decoding

/// A record body being read, field by field.
struct Body<'a> {
    ty: u32,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Body<'a> {
    fn err(&self, message: String) -> StreamError {
        StreamError::in_record(self.ty, message)
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], StreamError> {
        let left = self.left();
        if n > left {
            return Err(self.err(format!("body ends inside {what} (needs {n} bytes, {left} left)")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], StreamError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, StreamError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, StreamError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, StreamError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, StreamError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn bool(&mut self, what: &str) -> Result<bool, StreamError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("{what} is {v}, not 0 or 1"))),
        }
    }

    /// A u8 in `0..=max`.
    fn small(&mut self, what: &str, max: u8) -> Result<u8, StreamError> {
        let v = self.u8(what)?;
        if v > max {
            return Err(self.err(format!("{what} is {v}, at most {max}")));
        }
        Ok(v)
    }

    /// A u32 count of at most `max` entries.
    fn count(&mut self, what: &str, max: usize) -> Result<usize, StreamError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(self.err(format!("{n} {what}, at most {max}")));
        }
        Ok(n)
    }

    /// A u32-length-prefixed byte string of at most `max` bytes.
    fn blob_slice(&mut self, what: &str, max: usize) -> Result<&'a [u8], StreamError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(self.err(format!("{what} is {n} bytes, at most {max}")));
        }
        self.bytes(n, what)
    }

    fn blob(&mut self, what: &str, max: usize) -> Result<Vec<u8>, StreamError> {
        Ok(self.blob_slice(what, max)?.to_vec())
    }

    fn string(&mut self, what: &str, max: usize) -> Result<String, StreamError> {
        let b = self.blob_slice(what, max)?;
        match core::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.err(format!("{what} is not UTF-8"))),
        }
    }

    fn finish(&self) -> Result<(), StreamError> {
        match self.left() {
            0 => Ok(()),
            n => Err(self.err(format!("{n} bytes after the last field"))),
        }
    }
}

/// Reads a record header from the front of `buf`: the type and body length,
/// both checked; `None` if fewer than [`RECORD_HEADER_BYTES`] bytes.
fn peek(buf: &[u8]) -> Result<Option<(u32, usize)>, StreamError> {
    let Some(head) = buf.get(..RECORD_HEADER_BYTES) else { return Ok(None) };
    let ty = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let Some(max) = max_body(ty) else {
        return Err(StreamError::new(None, format!("unknown record type {ty} (body of {len} bytes)")));
    };
    if len > max {
        return Err(StreamError::in_record(ty, format!("body of {len} bytes, at most {max}")));
    }
    Ok(Some((ty, len)))
}

/// Reads one record from the front of `buf`.
///
/// `Ok(None)`: `buf` holds the start of a record that is fine so far and
/// needs more bytes. `Ok(Some((record, n)))`: the record and the `n` bytes
/// it took. An unknown type or a body too long for its type is refused as
/// soon as the 8-byte record header is in.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Record, usize)>, StreamError> {
    let Some((ty, len)) = peek(buf)? else { return Ok(None) };
    let total = RECORD_HEADER_BYTES + len;
    let Some(body) = buf.get(RECORD_HEADER_BYTES..total) else { return Ok(None) };
    let mut b = Body { ty, buf: body, pos: 0 };
    let rec = decode_body(&mut b, limits)?;
    b.finish()?;
    Ok(Some((rec, total)))
}

fn decode_body(b: &mut Body<'_>, limits: &Limits) -> Result<Record, StreamError> {
    Ok(match b.ty {
        TYPE_HEADER => Record::Header(decode_header(b)?),
        TYPE_DOMAIN_CONFIG => Record::DomainConfig(decode_domain(b)?),
        TYPE_CPU_POLICY => Record::CpuPolicy(b.blob("policy", MAX_CPU_POLICY_BYTES)?),
        TYPE_TIME => Record::Time(TimeRecord {
            guest_ns: b.u64("guest_ns")?,
            source_tsc_hz: b.u64("source_tsc_hz")?,
            wall_ns: b.u64("wall_ns")?,
            generation: b.u32("generation")?,
        }),
        TYPE_PAGES => Record::Pages(decode_pages(b, limits)?),
        TYPE_VCPU => Record::Vcpu(decode_vcpu(b)?),
        TYPE_DEVICE => Record::Device(DeviceRecord {
            events: b.u64("events")?,
            shutdown_requested: b.bool("shutdown_requested")?,
            console: b.blob("console", MAX_CONSOLE_BYTES)?,
        }),
        TYPE_END => Record::End { pages_sent: b.u64("pages_sent")? },
        TYPE_ROUND => Record::Round { round: b.u32("round")?, pages: b.u32("pages")? },
        TYPE_ACCEPT => Record::Accept,
        TYPE_REFUSE => Record::Refuse { reason: b.string("reason", MAX_REASON_BYTES)? },
        TYPE_RESUMED => Record::Resumed { domid: b.u32("domid")? },
        TYPE_ABORT => Record::Abort { reason: b.string("reason", MAX_REASON_BYTES)? },
        // `peek` has refused the others.
        ty => return Err(StreamError::new(None, format!("unknown record type {ty}"))),
    })
}

fn decode_header(b: &mut Body<'_>) -> Result<Header, StreamError> {
    if b.array::<8>("magic")? != MAGIC {
        return Err(b.err("bad magic (not an rhv migration stream)".to_owned()));
    }
    let version = b.u32("version")?;
    if version != STREAM_VERSION {
        return Err(b.err(format!("stream version {version}; this hypervisor reads version {STREAM_VERSION}")));
    }
    let flags = b.u32("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(b.err(format!("unknown flags {:#x}", flags & !KNOWN_FLAGS)));
    }
    if flags & FLAG_LIVE != 0 && flags & FLAG_SAVE_FILE != 0 {
        return Err(b.err("flags LIVE and SAVE_FILE together".to_owned()));
    }
    let page_size = b.u32("page_size")?;
    if page_size as usize != PAGE_SIZE {
        return Err(b.err(format!("page size {page_size}, expected {PAGE_SIZE}")));
    }
    let guest_pages = b.u64("guest_pages")?;
    if !(1..=MAX_GUEST_PAGES).contains(&guest_pages) {
        return Err(b.err(format!("{guest_pages} guest pages, expected 1 to {MAX_GUEST_PAGES}")));
    }
    let vcpus = b.u32("vcpus")?;
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(b.err(format!("{vcpus} vcpus, expected 1 to {MAX_VCPUS}")));
    }
    Ok(Header { version, flags, page_size, guest_pages, vcpus })
}

fn decode_domain(b: &mut Body<'_>) -> Result<DomainRecord, StreamError> {
    let name = b.string("name", MAX_NAME_BYTES)?;
    if name.is_empty() {
        return Err(b.err("empty domain name".to_owned()));
    }
    let memory_mib = b.u64("memory_mib")?;
    let vcpus = b.u32("vcpus")?;
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(b.err(format!("{vcpus} vcpus, expected 1 to {MAX_VCPUS}")));
    }
    let weight = b.u16("weight")?;
    let image = b.string("image", MAX_IMAGE_BYTES)?;
    let extra = b.string("extra", MAX_EXTRA_BYTES)?;
    let n = b.count("vifs", MAX_VIFS)?;
    let mut vifs = Vec::with_capacity(n);
    for _ in 0..n {
        vifs.push(b.array::<6>("vif mac")?);
    }
    let n = b.count("disks", MAX_DISKS)?;
    let mut disks = Vec::with_capacity(n);
    for _ in 0..n {
        disks.push(DiskRecord {
            target: b.string("disk target", MAX_TARGET_BYTES)?,
            vdev: b.string("disk vdev", MAX_VDEV_BYTES)?,
            writable: b.bool("disk writable")?,
        });
    }
    Ok(DomainRecord {
        name,
        memory_mib,
        vcpus,
        weight,
        image,
        extra,
        vifs,
        disks,
        on_poweroff: b.small("on_poweroff", MAX_ACTION)?,
        on_crash: b.small("on_crash", MAX_ACTION)?,
        on_reboot: b.small("on_reboot", MAX_ACTION)?,
        cpuid: b.string("cpuid", MAX_CPUID_BYTES)?,
        layout: decode_layout(b, memory_mib)?,
    })
}

/// Permission runs: contiguous from page 0, covering exactly the guest's
/// pages, no empty run, only known bits.
fn decode_layout(b: &mut Body<'_>, memory_mib: u64) -> Result<Vec<PermRun>, StreamError> {
    let n = b.count("layout runs", MAX_LAYOUT_RUNS)?;
    let pages = memory_mib.checked_mul(256).filter(|&p| p <= MAX_GUEST_PAGES);
    let Some(pages) = pages else {
        return Err(b.err(format!("memory of {memory_mib} MiB is beyond the limit")));
    };
    let mut runs = Vec::with_capacity(n);
    let mut next = 0u64;
    for _ in 0..n {
        let first = b.u64("layout first")?;
        let count = b.u64("layout count")?;
        let perms = b.small("layout perms", PERM_READ | PERM_WRITE | PERM_EXEC)?;
        if first != next || count == 0 || count > pages - next {
            return Err(b.err(format!("layout run {first}+{count} does not continue at page {next} of {pages}")));
        }
        next += count;
        runs.push(PermRun { first, count, perms });
    }
    if next != pages {
        return Err(b.err(format!("layout covers {next} of {pages} pages")));
    }
    Ok(runs)
}

fn decode_pages(b: &mut Body<'_>, limits: &Limits) -> Result<Vec<(u64, PageData)>, StreamError> {
    let n = b.count("pages", MAX_BATCH)?;
    if n == 0 {
        return Err(b.err("no pages".to_owned()));
    }
    let mut pages = Vec::with_capacity(n);
    for _ in 0..n {
        let gfn = b.u64("gfn")?;
        if gfn >= limits.guest_pages {
            return Err(b.err(format!("gfn {gfn:#x} beyond guest memory ({} pages)", limits.guest_pages)));
        }
        let data = match b.u8("page kind")? {
            0 => PageData::Zero,
            1 => {
                let bytes = b.bytes(PAGE_SIZE, "page data")?;
                match Box::<[u8]>::from(bytes).try_into() {
                    Ok(page) => PageData::Raw(page),
                    Err(_) => return Err(b.err("page data of the wrong size".to_owned())),
                }
            }
            k => return Err(b.err(format!("page kind {k} for gfn {gfn:#x}, expected 0 or 1"))),
        };
        pages.push((gfn, data));
    }
    Ok(pages)
}

fn decode_vcpu(b: &mut Body<'_>) -> Result<VcpuRecord, StreamError> {
    let index = b.u32("index")?;
    let mut regs = [0u64; NUM_REGS];
    for (r, name) in regs.iter_mut().zip(REG_NAMES) {
        *r = b.u64(name)?;
    }
    let fs_base = b.u64("fs_base")?;
    let gs_base = b.u64("gs_base")?;
    let state = b.small("state", VCPU_PAUSED)?;
    let deadline_ns = b.u64("deadline_ns")?;
    let fpu_format = b.small("fpu_format", FPU_XSAVE)?;
    let xcr0 = b.u64("xcr0")?;
    let fpu = b.blob("fpu", MAX_FPU_BYTES)?;
    if fpu_format == FPU_FXSAVE && fpu.len() != FXSAVE_BYTES {
        return Err(b.err(format!("vcpu {index}: FXSAVE image of {} bytes, expected {FXSAVE_BYTES}", fpu.len())));
    }
    if fpu_format == FPU_XSAVE {
        if fpu.len() < XSAVE_MIN_BYTES {
            return Err(b.err(format!(
                "vcpu {index}: XSAVE image of {} bytes, expected at least {XSAVE_MIN_BYTES}",
                fpu.len()
            )));
        }
        if xcr0 & 1 == 0 {
            return Err(b.err(format!("vcpu {index}: xcr0 {xcr0:#x} without x87 (bit 0)")));
        }
    }
    Ok(VcpuRecord { index, regs, fs_base, gs_base, state, deadline_ns, fpu_format, xcr0, fpu })
}

// ---------------------------------------------------------------------------
// The stream reader

/// Where a [`Reader`] is in the stream: what it accepts next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the header.
    Start,
    /// After the header: the domain config.
    Config,
    /// After the domain config: the CPU policy.
    Policy,
    /// Rounds and pages, until the time record.
    Memory,
    /// After the time record: the vCPUs, then the device record.
    Vcpus,
    /// After the device record: the end record.
    End,
    /// After the end record.
    Done,
    /// After an abort record.
    Aborted,
}

/// Checks a whole source-to-destination stream (or save file), in order:
///
/// `Header, DomainConfig, CpuPolicy, (Round | Pages)*, Time, Vcpu × vcpus,
/// Device, End`
///
/// with one [`Record::Vcpu`] for each index `0..vcpus` in any order, every
/// gfn below the header's `guest_pages`, `DomainConfig.vcpus` equal to the
/// header's, and `End.pages_sent` equal to the page entries seen. An
/// [`Record::Abort`] may come at any point before the end and finishes the
/// stream. Destination-to-source records (`Accept`, `Refuse`, `Resumed`) are
/// errors here.
///
/// After an error the reader is dead: every later call returns that error.
#[derive(Debug, Clone)]
pub struct Reader {
    phase: Phase,
    header: Option<Header>,
    /// Bit `i`: vCPU `i`'s record has been seen.
    vcpus_seen: u64,
    pages_seen: u64,
    /// The start of a record not yet complete (at most [`MAX_RECORD`]
    /// bytes, and never more than the record's type allows).
    buf: Vec<u8>,
    /// The stream offset of `buf[0]` (the next record).
    offset: u64,
    failed: Option<StreamError>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader expecting a header.
    pub const fn new() -> Self {
        Self {
            phase: Phase::Start,
            header: None,
            vcpus_seen: 0,
            pages_seen: 0,
            buf: Vec::new(),
            offset: 0,
            failed: None,
        }
    }

    /// The stream's header, once read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Whether the end record has been read.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether an abort record has been read.
    pub fn is_aborted(&self) -> bool {
        self.phase == Phase::Aborted
    }

    /// The page entries read so far.
    pub fn pages_seen(&self) -> u64 {
        self.pages_seen
    }

    /// The bytes of an incomplete record held back by [`Self::push_bytes`].
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Reads the next bytes of a stream; returns the records they complete.
    ///
    /// Bytes of a record not yet complete are kept (at most [`MAX_RECORD`]).
    /// On an error the records this call had already decoded are dropped;
    /// the stream is dead anyway.
    pub fn push_bytes(&mut self, mut bytes: &[u8]) -> Result<Vec<Record>, StreamError> {
        self.alive()?;
        let mut out = Vec::new();
        loop {
            if self.buf.is_empty() {
                // Whole records straight from `bytes`.
                match self.peek_admit(bytes)? {
                    Some(total) if bytes.len() >= total => {
                        out.push(self.take(&bytes[..total])?);
                        bytes = &bytes[total..];
                    }
                    Some(total) => {
                        self.buf.reserve_exact(total);
                        self.buf.extend_from_slice(bytes);
                        return Ok(out);
                    }
                    None => {
                        self.buf.extend_from_slice(bytes);
                        return Ok(out);
                    }
                }
            } else {
                // Complete the held-back record first.
                if self.buf.len() < RECORD_HEADER_BYTES {
                    let n = (RECORD_HEADER_BYTES - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                }
                let buf = core::mem::take(&mut self.buf);
                let total = match self.peek_admit(&buf)? {
                    Some(total) => total,
                    None => {
                        self.buf = buf;
                        return Ok(out);
                    }
                };
                self.buf = buf;
                let n = (total - self.buf.len()).min(bytes.len());
                self.buf.reserve_exact(total - self.buf.len());
                self.buf.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if self.buf.len() < total {
                    return Ok(out);
                }
                let buf = core::mem::take(&mut self.buf);
                out.push(self.take(&buf)?);
            }
        }
    }

    /// Reads one channel message, which must hold exactly one whole record.
    pub fn push_message(&mut self, msg: &[u8]) -> Result<Record, StreamError> {
        self.alive()?;
        if !self.buf.is_empty() {
            let e = StreamError::new(None, format!("message while {} bytes of a record are pending", self.buf.len()));
            return Err(self.fail(e));
        }
        let total = match self.peek_admit(msg)? {
            Some(total) if total == msg.len() => total,
            Some(total) if total < msg.len() => {
                let e = format!("{} bytes after the record in the message", msg.len() - total);
                return Err(self.fail(StreamError::new(Some(record_type(msg)), e)));
            }
            Some(total) => {
                let e = format!("message of {} bytes holds part of a {total}-byte record", msg.len());
                return Err(self.fail(StreamError::new(Some(record_type(msg)), e)));
            }
            None => {
                let e = format!("message of {} bytes is shorter than a record header", msg.len());
                return Err(self.fail(StreamError::new(None, e)));
            }
        };
        self.take(&msg[..total])
    }

    /// Checks `rec` as the next record (as if it had been received).
    pub fn push_record(&mut self, rec: &Record) -> Result<(), StreamError> {
        let mut msg = Vec::new();
        encode(rec, &mut msg);
        self.push_message(&msg).map(|_| ())
    }

    /// Checks that the stream ended cleanly: complete or aborted, with no
    /// partial record left.
    pub fn finish(&self) -> Result<(), StreamError> {
        self.alive()?;
        let mut e = if !self.buf.is_empty() {
            StreamError::new(None, format!("stream ends inside a record ({} bytes of it)", self.buf.len()))
        } else if matches!(self.phase, Phase::Done | Phase::Aborted) {
            return Ok(());
        } else {
            StreamError::new(None, format!("stream ends early: expected {}", self.expected()))
        };
        e.offset = Some(self.offset);
        Err(e)
    }

    fn alive(&self) -> Result<(), StreamError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Records `e` (at the current record) as the reader's death.
    fn fail(&mut self, mut e: StreamError) -> StreamError {
        e.offset = Some(self.offset);
        self.failed = Some(e.clone());
        e
    }

    /// The record header at the front of `buf`, checked, and the record's
    /// type checked against the order: the record's total size, or `None`
    /// if the header is not all there yet.
    fn peek_admit(&mut self, buf: &[u8]) -> Result<Option<usize>, StreamError> {
        let (ty, len) = match peek(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        if let Err(m) = self.admit(ty) {
            return Err(self.fail(StreamError::in_record(ty, m)));
        }
        Ok(Some(RECORD_HEADER_BYTES + len))
    }

    /// Decodes and applies the whole record `bytes`, already admitted.
    fn take(&mut self, bytes: &[u8]) -> Result<Record, StreamError> {
        let limits = Limits { guest_pages: self.header.map_or(0, |h| h.guest_pages) };
        let rec = match decode(bytes, &limits) {
            Ok(Some((rec, _))) => rec,
            Ok(None) => return Err(self.fail(StreamError::new(None, "record cut short".to_owned()))),
            Err(e) => return Err(self.fail(e)),
        };
        if let Err(m) = self.apply(&rec) {
            return Err(self.fail(StreamError::in_record(rec.type_code(), m)));
        }
        self.offset += bytes.len() as u64;
        Ok(rec)
    }

    fn vcpus(&self) -> u32 {
        self.header.map_or(0, |h| h.vcpus)
    }

    /// The lowest vCPU index not yet seen, if any.
    fn missing_vcpu(&self) -> Option<u32> {
        (0..self.vcpus()).find(|&i| self.vcpus_seen & (1 << i) == 0)
    }

    /// What the stream needs next, for messages.
    fn expected(&self) -> String {
        match self.phase {
            Phase::Start => "the header".to_owned(),
            Phase::Config => "the domain config".to_owned(),
            Phase::Policy => "the cpu policy".to_owned(),
            Phase::Memory => "pages, a round or the time record".to_owned(),
            Phase::Vcpus => match self.missing_vcpu() {
                Some(i) => format!("vcpu {i}"),
                None => "the device record".to_owned(),
            },
            Phase::End => "the end record".to_owned(),
            Phase::Done => "nothing after the end record".to_owned(),
            Phase::Aborted => "nothing after an abort".to_owned(),
        }
    }

    /// Whether a record of type `ty` may come now.
    fn admit(&self, ty: u32) -> Result<(), String> {
        let ok = match (self.phase, ty) {
            (Phase::Done, _) => return Err("record after the end record".to_owned()),
            (Phase::Aborted, _) => return Err("record after an abort".to_owned()),
            (_, TYPE_ABORT) => true,
            (_, TYPE_ACCEPT | TYPE_REFUSE | TYPE_RESUMED) => {
                return Err("destination-to-source record in the source's stream".to_owned())
            }
            (Phase::Start, TYPE_HEADER) => true,
            (_, TYPE_HEADER) => return Err("second header".to_owned()),
            (Phase::Config, TYPE_DOMAIN_CONFIG) => true,
            (Phase::Policy, TYPE_CPU_POLICY) => true,
            (Phase::Memory, TYPE_ROUND | TYPE_PAGES | TYPE_TIME) => true,
            (Phase::Vcpus, TYPE_VCPU) => true,
            (Phase::Vcpus, TYPE_DEVICE) => self.missing_vcpu().is_none(),
            (Phase::End, TYPE_END) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("out of order: expected {}", self.expected()))
        }
    }

    /// Takes in an admitted, decoded record.
    fn apply(&mut self, rec: &Record) -> Result<(), String> {
        match rec {
            Record::Header(h) => {
                self.header = Some(*h);
                self.phase = Phase::Config;
            }
            Record::DomainConfig(d) => {
                if d.vcpus != self.vcpus() {
                    return Err(format!("{} vcpus, the header says {}", d.vcpus, self.vcpus()));
                }
                self.phase = Phase::Policy;
            }
            Record::CpuPolicy(_) => self.phase = Phase::Memory,
            Record::Round { .. } => {}
            Record::Pages(pages) => self.pages_seen += pages.len() as u64,
            Record::Time(_) => self.phase = Phase::Vcpus,
            Record::Vcpu(v) => {
                let n = self.vcpus();
                if v.index >= n {
                    return Err(format!("vcpu index {} out of range ({n} vcpus)", v.index));
                }
                if self.vcpus_seen & (1 << v.index) != 0 {
                    return Err(format!("vcpu {} sent twice", v.index));
                }
                self.vcpus_seen |= 1 << v.index;
            }
            Record::Device(_) => self.phase = Phase::End,
            Record::End { pages_sent } => {
                if *pages_sent != self.pages_seen {
                    return Err(format!("says {pages_sent} pages were sent; the stream carried {}", self.pages_seen));
                }
                self.phase = Phase::Done;
            }
            Record::Abort { .. } => self.phase = Phase::Aborted,
            // `admit` refuses these.
            Record::Accept | Record::Refuse { .. } | Record::Resumed { .. } => {
                return Err("destination-to-source record in the source's stream".to_owned())
            }
        }
        Ok(())
    }
}

/// The type field of the record header at the front of `buf` (at least 4
/// bytes long).
fn record_type(buf: &[u8]) -> u32 {
    match buf.get(..4) {
        Some(t) => u32::from_le_bytes([t[0], t[1], t[2], t[3]]),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples::{mig_domain as domain, mig_page as page};
    use crate::testutil::Rng;

    fn vcpu(index: u32, xsave: bool) -> VcpuRecord {
        let mut regs = [0u64; NUM_REGS];
        for (i, r) in regs.iter_mut().enumerate() {
            *r = 0x0111_0000_0000_0000u64.wrapping_mul(i as u64 + 1) + u64::from(index);
        }
        VcpuRecord {
            index,
            regs,
            fs_base: 0x7000_0000,
            gs_base: 0x7100_0000 + u64::from(index),
            state: VCPU_BLOCKED,
            deadline_ns: 5_000_000_123,
            fpu_format: if xsave { FPU_XSAVE } else { FPU_FXSAVE },
            xcr0: if xsave { 0x7 } else { 0 },
            fpu: (0..if xsave { 832 } else { FXSAVE_BYTES }).map(|i| i as u8).collect(),
        }
    }

    /// One record of every type, the limits at their largest in places.
    fn samples() -> Vec<Record> {
        let mut big = domain(64);
        big.name = "n".repeat(MAX_NAME_BYTES);
        big.image = "i".repeat(MAX_IMAGE_BYTES);
        big.extra = "e".repeat(MAX_EXTRA_BYTES);
        big.vifs = vec![[2, 0, 0, 0, 0, 9]; MAX_VIFS];
        big.disks =
            vec![
                DiskRecord { target: "t".repeat(MAX_TARGET_BYTES), vdev: "v".repeat(MAX_VDEV_BYTES), writable: false };
                MAX_DISKS
            ];
        big.on_crash = MAX_ACTION;
        big.cpuid = "c".repeat(MAX_CPUID_BYTES);
        let mut empty = domain(1);
        empty.image.clear();
        empty.extra.clear();
        empty.vifs.clear();
        empty.disks.clear();
        empty.cpuid.clear();
        let mut bigvcpu = vcpu(63, true);
        bigvcpu.fpu = vec![0xa5; MAX_FPU_BYTES];
        vec![
            Record::Header(Header::new(FLAG_LIVE | FLAG_PAUSED_AT_DEST, 4096, 4)),
            Record::Header(Header::new(FLAG_SAVE_FILE, MAX_GUEST_PAGES, MAX_VCPUS)),
            Record::DomainConfig(domain(4)),
            Record::DomainConfig(big),
            Record::DomainConfig(empty),
            Record::CpuPolicy(vec![1, 2, 3, 4]),
            Record::CpuPolicy(vec![0xff; MAX_CPU_POLICY_BYTES]),
            Record::CpuPolicy(Vec::new()),
            Record::Time(TimeRecord { guest_ns: 123_456_789, source_tsc_hz: 2_400_000_000, wall_ns: 0, generation: 7 }),
            Record::Pages(vec![(0, PageData::Zero), (4095, PageData::Raw(page(3))), (17, PageData::Zero)]),
            Record::Pages((0..MAX_BATCH as u64).map(|g| (g, PageData::Raw(page(g as u8)))).collect()),
            Record::Vcpu(vcpu(0, false)),
            Record::Vcpu(bigvcpu),
            Record::Device(DeviceRecord { events: 0b1010, shutdown_requested: true, console: b"hello\n".to_vec() }),
            Record::Device(DeviceRecord {
                events: 0,
                shutdown_requested: false,
                console: vec![b'x'; MAX_CONSOLE_BYTES],
            }),
            Record::End { pages_sent: 99 },
            Record::Round { round: 3, pages: 1234 },
            Record::Accept,
            Record::Refuse { reason: "missing CPU features: avx2 bmi2".into() },
            Record::Refuse { reason: "r".repeat(MAX_REASON_BYTES) },
            Record::Resumed { domid: 12 },
            Record::Abort { reason: "operator cancelled".into() },
            Record::Abort { reason: String::new() },
        ]
    }

    fn enc(rec: &Record) -> Vec<u8> {
        let mut v = Vec::new();
        encode(rec, &mut v);
        v
    }

    fn dec(buf: &[u8]) -> Result<Option<(Record, usize)>, StreamError> {
        decode(buf, &Limits::MAX)
    }

    /// The message of the error decoding `buf`.
    fn dec_err(buf: &[u8]) -> String {
        match dec(buf) {
            Err(e) => e.to_string(),
            Ok(r) => panic!("decoded {r:?}"),
        }
    }

    fn set_u32(buf: &mut [u8], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn every_record_type_round_trips() {
        let mut types = Vec::new();
        for rec in samples() {
            let bytes = enc(&rec);
            assert!(bytes.len() <= MAX_RECORD);
            assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), rec.type_code());
            assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize, bytes.len() - 8);
            let (back, n) = dec(&bytes).unwrap().unwrap();
            assert_eq!(n, bytes.len());
            assert_eq!(back, rec);
            // The largest sample of each size-limited type hits its maximum.
            assert!(bytes.len() - 8 <= max_body(rec.type_code()).unwrap());
            types.push(rec.type_code());
        }
        types.sort();
        types.dedup();
        assert_eq!(types, [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 18, 19]);
    }

    #[test]
    fn largest_bodies_fit_their_limits() {
        for rec in samples() {
            let len = enc(&rec).len() - 8;
            let max = max_body(rec.type_code()).unwrap();
            assert!(len <= max, "{rec:?}");
        }
        // A full batch of raw pages is exactly the pages maximum.
        let full = &samples()[10];
        assert_eq!(enc(full).len() - 8, PAGES_MAX);
    }

    #[test]
    fn records_decode_from_a_concatenation() {
        let recs = samples();
        let mut stream = Vec::new();
        for r in &recs {
            encode(r, &mut stream);
        }
        let mut at = 0;
        let mut back = Vec::new();
        while at < stream.len() {
            let (r, n) = dec(&stream[at..]).unwrap().unwrap();
            back.push(r);
            at += n;
        }
        assert_eq!(back, recs);
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        for rec in samples() {
            let bytes = enc(&rec);
            // Every prefix for small records; a sample of them for big ones.
            let step = if bytes.len() > 20_000 { 997 } else { 1 };
            for cut in (0..bytes.len()).step_by(step).chain(bytes.len().saturating_sub(20)..bytes.len()) {
                assert_eq!(dec(&bytes[..cut]), Ok(None), "{} cut at {cut}", record_name(rec.type_code()));
            }
        }
    }

    #[test]
    fn huge_lengths_are_refused_from_the_header() {
        for ty in [TYPE_HEADER, TYPE_PAGES, TYPE_VCPU, TYPE_ACCEPT, TYPE_END] {
            let mut h = Vec::new();
            put_u32(&mut h, ty);
            put_u32(&mut h, u32::MAX);
            let e = dec_err(&h);
            assert!(e.contains("body of 4294967295 bytes, at most"), "{e}");
        }
        // One byte over the pages maximum.
        let mut h = Vec::new();
        put_u32(&mut h, TYPE_PAGES);
        put_u32(&mut h, PAGES_MAX as u32 + 1);
        assert!(dec(&h).is_err());
        // An accept record has no body.
        assert_eq!(
            dec_err(&[16, 0, 0, 0, 1, 0, 0, 0]),
            "migration stream: record 16 (accept): body of 1 bytes, at most 0"
        );
    }

    #[test]
    fn huge_inner_lengths_are_refused() {
        // A refuse reason claiming 4 GiB inside a small body.
        let mut r = enc(&Record::Refuse { reason: "no".into() });
        set_u32(&mut r, 8, u32::MAX);
        assert_eq!(dec_err(&r), "migration stream: record 17 (refuse): reason is 4294967295 bytes, at most 512");
        // A reason within its limit but beyond the body.
        set_u32(&mut r, 8, 100);
        assert_eq!(
            dec_err(&r),
            "migration stream: record 17 (refuse): body ends inside reason (needs 100 bytes, 2 left)"
        );
        // Page and vif counts.
        let mut p = enc(&Record::Pages(vec![(1, PageData::Zero)]));
        set_u32(&mut p, 8, 0x7fff_ffff);
        assert!(dec_err(&p).contains("2147483647 pages, at most 512"));
        set_u32(&mut p, 8, 2);
        assert!(dec_err(&p).contains("body ends inside gfn"));
        set_u32(&mut p, 8, 0);
        assert!(dec_err(&p).contains("no pages"));
        let mut d = domain(1);
        d.vifs.clear();
        d.disks.clear();
        let mut b = enc(&Record::DomainConfig(d.clone()));
        let vifs_at = 8 + 4 + 3 + 8 + 4 + 2 + 4 + d.image.len() + 4 + d.extra.len();
        assert_eq!(&b[vifs_at..vifs_at + 4], &[0, 0, 0, 0]);
        set_u32(&mut b, vifs_at, 9);
        assert!(dec_err(&b).contains("9 vifs, at most 8"));
        set_u32(&mut b, vifs_at, 0);
        set_u32(&mut b, vifs_at + 4, u32::MAX);
        assert!(dec_err(&b).contains("4294967295 disks, at most 4"));
    }

    #[test]
    fn trailing_and_missing_bytes_are_errors() {
        for rec in samples() {
            let mut bytes = enc(&rec);
            // One extra byte inside the body.
            let len = bytes.len() - 8;
            if len < max_body(rec.type_code()).unwrap() {
                set_u32(&mut bytes, 4, len as u32 + 1);
                bytes.push(0);
                let e = dec_err(&bytes);
                assert!(e.ends_with("1 bytes after the last field"), "{e}");
                bytes.pop();
            }
            // One byte fewer: a body cut short.
            if len > 0 {
                set_u32(&mut bytes, 4, len as u32 - 1);
                let e = dec_err(&bytes[..bytes.len() - 1]);
                assert!(e.contains("body ends inside") || e.contains("after the last field"), "{e}");
            }
        }
    }

    #[test]
    fn unknown_types_are_named() {
        assert_eq!(dec_err(&[42, 0, 0, 0, 0, 0, 0, 0]), "migration stream: unknown record type 42 (body of 0 bytes)");
        assert!(dec_err(&[0, 0, 0, 0, 0, 0, 0, 0]).contains("unknown record type 0"));
        assert!(dec_err(&[10, 0, 0, 0, 4, 0, 0, 0]).contains("unknown record type 10"));
        assert_eq!(record_name(42), "unknown");
    }

    #[test]
    fn header_checks() {
        let good = enc(&Record::Header(Header::new(0, 10, 1)));
        let at = |field: usize| 8 + 8 + field;
        let with = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            dec_err(&b)
        };
        assert!(with(8, b"RHVMIGX\0").contains("bad magic"));
        assert_eq!(
            with(at(0), &2u32.to_le_bytes()),
            "migration stream: record 1 (header): stream version 2; this hypervisor reads version 1"
        );
        assert!(with(at(0), &0u32.to_le_bytes()).contains("stream version 0"));
        assert!(with(at(4), &8u32.to_le_bytes()).contains("unknown flags 0x8"));
        assert!(with(at(4), &(FLAG_LIVE | FLAG_SAVE_FILE).to_le_bytes()).contains("LIVE and SAVE_FILE"));
        assert!(with(at(8), &8192u32.to_le_bytes()).contains("page size 8192"));
        assert!(with(at(12), &0u64.to_le_bytes()).contains("0 guest pages"));
        assert!(with(at(12), &(MAX_GUEST_PAGES + 1).to_le_bytes()).contains("4194305 guest pages"));
        assert!(with(at(20), &0u32.to_le_bytes()).contains("0 vcpus"));
        assert!(with(at(20), &65u32.to_le_bytes()).contains("65 vcpus"));
        for flags in 0..8 {
            let r = Record::Header(Header::new(flags, 1, 1));
            assert_eq!(dec(&enc(&r)).is_ok(), flags & 5 != 5, "flags {flags}");
        }
    }

    #[test]
    fn domain_checks() {
        let check = |f: &dyn Fn(&mut DomainRecord), want: &str| {
            let mut d = domain(2);
            f(&mut d);
            let e = dec_err(&enc(&Record::DomainConfig(d)));
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(e.starts_with("migration stream: record 2 (domain config): "), "{e}");
        };
        check(&|d| d.name.clear(), "empty domain name");
        check(&|d| d.name = "n".repeat(65), "name is 65 bytes, at most 64");
        check(&|d| d.vcpus = 0, "0 vcpus");
        check(&|d| d.vcpus = 65, "65 vcpus");
        check(&|d| d.image = "i".repeat(257), "image is 257 bytes");
        check(&|d| d.extra = "e".repeat(1025), "extra is 1025 bytes");
        check(&|d| d.vifs = vec![[0; 6]; 9], "9 vifs");
        check(&|d| d.disks = vec![d.disks[0].clone(); 5], "5 disks");
        check(&|d| d.disks[0].vdev = "v".repeat(17), "disk vdev is 17 bytes");
        check(&|d| d.disks[0].target = "t".repeat(257), "disk target is 257 bytes");
        check(&|d| d.on_poweroff = 6, "on_poweroff is 6, at most 5");
        check(&|d| d.on_crash = 200, "on_crash is 200");
        check(&|d| d.on_reboot = 6, "on_reboot is 6");
        check(&|d| d.cpuid = "c".repeat(257), "cpuid is 257 bytes");
        // Not UTF-8, and a bool that is neither 0 nor 1.
        let mut b = enc(&Record::DomainConfig(domain(2)));
        b[12] = 0xff;
        assert!(dec_err(&b).contains("name is not UTF-8"));
        let mut b = enc(&Record::DomainConfig(domain(2)));
        let pos = b.windows(4).position(|w| w == b"xvda").unwrap() + 4;
        assert_eq!(b[pos], 1);
        b[pos] = 2;
        assert!(dec_err(&b).contains("disk writable is 2, not 0 or 1"));
    }

    #[test]
    fn vcpu_checks() {
        let check = |f: &dyn Fn(&mut VcpuRecord), want: &str| {
            let mut v = vcpu(1, true);
            f(&mut v);
            let e = dec_err(&enc(&Record::Vcpu(v)));
            assert!(e.contains(want), "{e} lacks {want}");
        };
        check(&|v| v.state = 3, "state is 3, at most 2");
        check(&|v| v.fpu_format = 2, "fpu_format is 2, at most 1");
        check(&|v| v.fpu.truncate(575), "XSAVE image of 575 bytes, expected at least 576");
        check(&|v| v.fpu = vec![0; 4097], "body of 4283 bytes, at most 4282");
        check(&|v| v.xcr0 = 6, "without x87");
        check(
            &|v| {
                v.fpu_format = FPU_FXSAVE;
                v.fpu.truncate(511);
            },
            "vcpu 1: FXSAVE image of 511 bytes, expected 512",
        );
        check(&|v| v.fpu_format = FPU_FXSAVE, "FXSAVE image of 832 bytes");
        let mut v = vcpu(1, true);
        v.fpu.truncate(XSAVE_MIN_BYTES);
        assert!(dec(&enc(&Record::Vcpu(v))).is_ok());
        assert_eq!(REG_NAMES[0], "rax");
        assert_eq!(REG_NAMES[16], "rip");
        assert_eq!(REG_NAMES[17], "rflags");
    }

    #[test]
    fn device_and_blob_checks() {
        let mut b =
            enc(&Record::Device(DeviceRecord { events: 1, shutdown_requested: false, console: b"ab".to_vec() }));
        b[16] = 7;
        assert!(dec_err(&b).contains("shutdown_requested is 7"));
        let d = DeviceRecord { events: 1, shutdown_requested: false, console: vec![0; MAX_CONSOLE_BYTES + 1] };
        assert!(dec_err(&enc(&Record::Device(d))).contains("body of 16398 bytes, at most 16397"));
        assert!(dec_err(&enc(&Record::CpuPolicy(vec![0; 513]))).contains("at most 516"));
        let mut b = enc(&Record::Abort { reason: "ab".into() });
        b[12] = 0xc3;
        assert!(dec_err(&b).contains("reason is not UTF-8"));
    }

    #[test]
    fn pages_check_gfn_and_kind() {
        let r = Record::Pages(vec![(0x12345, PageData::Zero)]);
        let e = decode(&enc(&r), &Limits { guest_pages: 4096 }).unwrap_err();
        assert_eq!(e.to_string(), "migration stream: record 5 (pages): gfn 0x12345 beyond guest memory (4096 pages)");
        assert!(decode(&enc(&r), &Limits { guest_pages: 0x12346 }).is_ok());
        let hdr = Header::new(0, 0x12345, 1);
        assert!(decode(&enc(&r), &Limits::for_header(&hdr)).is_err());
        let mut b = enc(&Record::Pages(vec![(1, PageData::Zero)]));
        b[20] = 2;
        assert!(dec_err(&b).contains("page kind 2 for gfn 0x1, expected 0 or 1"));
        // Kind 1 without its data.
        b[20] = 1;
        assert!(dec_err(&b).contains("body ends inside page data"));
    }

    #[test]
    fn encode_pages_elides_zero_pages() {
        let zero = [0u8; PAGE_SIZE];
        let mut nearly = [0u8; PAGE_SIZE];
        nearly[PAGE_SIZE - 1] = 1;
        let data = page(9);
        let pages: Vec<(u64, &[u8; PAGE_SIZE])> = vec![(5, &zero), (6, &nearly), (7, &data), (8, &zero)];
        let mut out = Vec::new();
        assert_eq!(encode_pages(&pages, &mut out), (2, 2));
        assert_eq!(out.len(), 8 + 4 + 4 * 9 + 2 * PAGE_SIZE);
        let (rec, n) = dec(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        let Record::Pages(got) = rec else { panic!("{rec:?}") };
        assert_eq!(got[0], (5, PageData::Zero));
        assert_eq!(got[1], (6, PageData::Raw(Box::new(nearly))));
        assert_eq!(got[2], (7, PageData::Raw(data.clone())));
        assert_eq!(got[3], (8, PageData::Zero));
        assert!(is_zero_page(&zero));
        assert!(!is_zero_page(&nearly));
        // More than a batch: split; nothing: nothing.
        let many: Vec<(u64, &[u8; PAGE_SIZE])> = (0..1100).map(|g| (g, &zero)).collect();
        let mut out = Vec::new();
        assert_eq!(encode_pages(&many, &mut out), (1100, 0));
        let mut at = 0;
        let mut sizes = Vec::new();
        while at < out.len() {
            let (Record::Pages(p), n) = dec(&out[at..]).unwrap().unwrap() else { panic!() };
            sizes.push(p.len());
            at += n;
        }
        assert_eq!(sizes, [512, 512, 76]);
        let mut out = Vec::new();
        assert_eq!(encode_pages(&[], &mut out), (0, 0));
        assert!(out.is_empty());
    }

    // ---- the reader ----

    /// A valid stream: header (guest_pages pages, `vcpus` vCPUs), config,
    /// policy, two rounds of pages, time, vCPUs in reverse order, device,
    /// end.
    fn stream_records(vcpus: u32, guest_pages: u64) -> Vec<Record> {
        let mut v = vec![
            Record::Header(Header::new(FLAG_LIVE, guest_pages, vcpus)),
            Record::DomainConfig(domain(vcpus)),
            Record::CpuPolicy(vec![9; 40]),
            Record::Round { round: 0, pages: 3 },
            Record::Pages(vec![(0, PageData::Zero), (1, PageData::Raw(page(1))), (guest_pages - 1, PageData::Zero)]),
            Record::Round { round: 1, pages: 1 },
            Record::Pages(vec![(1, PageData::Raw(page(2)))]),
            Record::Time(TimeRecord { guest_ns: 1, source_tsc_hz: 2, wall_ns: 3, generation: 4 }),
        ];
        for i in (0..vcpus).rev() {
            v.push(Record::Vcpu(vcpu(i, i % 2 == 0)));
        }
        v.push(Record::Device(DeviceRecord { events: 2, shutdown_requested: false, console: b"log".to_vec() }));
        v.push(Record::End { pages_sent: 4 });
        v
    }

    fn concat(recs: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in recs {
            encode(r, &mut out);
        }
        out
    }

    /// Feeds `recs` one message each; returns the first error.
    fn feed(recs: &[Record]) -> Result<Reader, StreamError> {
        let mut r = Reader::new();
        for rec in recs {
            r.push_record(rec)?;
        }
        Ok(r)
    }

    fn feed_err(recs: &[Record]) -> String {
        match feed(recs) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("stream accepted"),
        }
    }

    #[test]
    fn reader_accepts_a_valid_stream_in_any_chunking() {
        let recs = stream_records(3, 64);
        let bytes = concat(&recs);
        let mut rng = Rng(0x5eed);
        for round in 0..200 {
            let mut r = Reader::new();
            let mut got = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = match round {
                    0 => 1,
                    1 => bytes.len(),
                    _ => 1 + (rng.next() % 3000) as usize,
                }
                .min(bytes.len() - at);
                got.extend(r.push_bytes(&bytes[at..at + n]).unwrap());
                assert!(r.buffered() <= MAX_RECORD);
                at += n;
                if at < bytes.len() {
                    assert!(!r.is_complete() || r.buffered() == 0);
                }
            }
            assert_eq!(got, recs);
            assert!(r.is_complete());
            assert!(!r.is_aborted());
            assert_eq!(r.pages_seen(), 4);
            assert_eq!(r.header().unwrap().vcpus, 3);
            assert_eq!(r.finish(), Ok(()));
        }
        // One message per record.
        let mut r = Reader::new();
        for rec in &recs {
            assert_eq!(&r.push_message(&enc(rec)).unwrap(), rec);
        }
        assert!(r.is_complete());
    }

    #[test]
    fn reader_prefixes_never_give_wrong_records() {
        let recs = stream_records(2, 8);
        let bytes = concat(&recs);
        let mut bounds = vec![0];
        for r in &recs {
            bounds.push(bounds.last().unwrap() + enc(r).len());
        }
        for cut in (0..bytes.len()).step_by(7) {
            let mut r = Reader::new();
            let got = r.push_bytes(&bytes[..cut]).unwrap();
            let whole = bounds.iter().filter(|&&b| b <= cut).count() - 1;
            assert_eq!(got, recs[..whole]);
            assert!(!r.is_complete());
            assert!(r.finish().is_err());
        }
    }

    #[test]
    fn reader_order_violations() {
        let good = stream_records(2, 16);
        // good: 0 header, 1 config, 2 policy, 3 round, 4 pages, 5 round,
        // 6 pages, 7 time, 8 vcpu 1, 9 vcpu 0, 10 device, 11 end.
        let without = |skip: usize| -> Vec<Record> {
            good.iter().enumerate().filter(|&(i, _)| i != skip).map(|(_, r)| r.clone()).collect()
        };
        let e = feed_err(&good[4..5]);
        assert_eq!(e, "migration stream: at byte 0: record 5 (pages): out of order: expected the header");
        let mut two = good[..1].to_vec();
        two.push(good[0].clone());
        assert!(feed_err(&two).ends_with("record 1 (header): second header"));
        assert!(feed_err(&without(1)).contains("out of order: expected the domain config"));
        assert!(feed_err(&without(2)).contains("out of order: expected the cpu policy"));
        assert!(feed_err(&without(7)).contains("record 6 (vcpu): out of order: expected pages, a round or the time"));
        assert!(feed_err(&without(8)).contains("record 7 (device): out of order: expected vcpu 1"));
        assert!(feed_err(&without(10)).contains("record 8 (end): out of order: expected the device record"));
        // Pages after the time record.
        let mut late = good[..8].to_vec();
        late.push(good[4].clone());
        assert!(feed_err(&late).contains("record 5 (pages): out of order: expected vcpu 0"));
        // Duplicate and out-of-range vCPUs.
        let mut dup = good[..9].to_vec();
        dup.push(good[8].clone());
        assert!(feed_err(&dup).ends_with("record 6 (vcpu): vcpu 1 sent twice"));
        let mut far = good[..8].to_vec();
        far.push(Record::Vcpu(vcpu(2, false)));
        assert!(feed_err(&far).ends_with("vcpu index 2 out of range (2 vcpus)"));
        // Config and header disagree on vCPUs.
        let mut odd = good.clone();
        odd[1] = Record::DomainConfig(domain(3));
        assert!(feed_err(&odd).ends_with("record 2 (domain config): 3 vcpus, the header says 2"));
        // A page beyond the header's memory.
        let mut big = good.clone();
        big[6] = Record::Pages(vec![(16, PageData::Zero)]);
        assert!(feed_err(&big).ends_with("gfn 0x10 beyond guest memory (16 pages)"));
        // A wrong page count at the end.
        let mut count = good.clone();
        count[11] = Record::End { pages_sent: 3 };
        assert!(feed_err(&count).ends_with("record 8 (end): says 3 pages were sent; the stream carried 4"));
        // Anything after the end.
        let mut after = good.clone();
        after.push(Record::Round { round: 9, pages: 0 });
        assert!(feed_err(&after).ends_with("record after the end record"));
        after.pop();
        after.push(Record::Abort { reason: "x".into() });
        assert!(feed_err(&after).ends_with("record after the end record"));
        // Destination-to-source records.
        for (i, ctl) in [Record::Accept, Record::Resumed { domid: 1 }, Record::Refuse { reason: "no".into() }]
            .into_iter()
            .enumerate()
        {
            let mut s = good[..3 + i].to_vec();
            s.push(ctl);
            assert!(feed_err(&s).ends_with("destination-to-source record in the source's stream"));
        }
    }

    #[test]
    fn reader_errors_at_the_record_header() {
        // Pages before the header are refused with just the 8 header bytes
        // in, not after buffering the body.
        let mut r = Reader::new();
        let e = r.push_bytes(&enc(&samples()[10])[..8]).unwrap_err();
        assert!(e.message.contains("expected the header"));
        assert_eq!(r.buffered(), 0);
        // And the reader stays dead.
        assert_eq!(r.push_bytes(&enc(&samples()[0])), Err(e.clone()));
        assert_eq!(r.finish(), Err(e));
        // Offsets point at the failing record.
        let good = stream_records(1, 16);
        let mut bytes = concat(&good[..3]);
        let at = bytes.len() as u64;
        bytes.extend_from_slice(&[42, 0, 0, 0, 0, 0, 0, 0]);
        let e = Reader::new().push_bytes(&bytes).unwrap_err();
        assert_eq!(e.offset, Some(at));
        assert_eq!(e.to_string(), format!("migration stream: at byte {at}: unknown record type 42 (body of 0 bytes)"));
    }

    #[test]
    fn reader_abort_any_time() {
        let good = stream_records(2, 16);
        for at in 0..good.len() {
            let mut s = good[..at].to_vec();
            s.push(Record::Abort { reason: "disk full".into() });
            let mut r = feed(&s).unwrap();
            assert!(r.is_aborted());
            assert!(!r.is_complete());
            assert_eq!(r.finish(), Ok(()));
            let e = r.push_record(&good[at]).unwrap_err();
            assert!(e.message.contains("record after an abort"));
        }
    }

    #[test]
    fn reader_messages_hold_one_record() {
        let good = stream_records(1, 16);
        let mut two = enc(&good[0]);
        two.extend(enc(&good[1]));
        let e = Reader::new().push_message(&two).unwrap_err();
        assert!(e.to_string().contains("record 1 (header): "));
        assert!(e.message.contains("bytes after the record in the message"));
        let one = enc(&good[0]);
        let e = Reader::new().push_message(&one[..20]).unwrap_err();
        assert!(e.message.contains("holds part of a"));
        assert!(Reader::new().push_message(&one[..3]).unwrap_err().message.contains("shorter than a record header"));
        let mut r = Reader::new();
        r.push_bytes(&one[..10]).unwrap();
        assert!(r.push_message(&one).unwrap_err().message.contains("10 bytes of a record are pending"));
    }

    #[test]
    fn reader_finish_reports_where_the_stream_stopped() {
        let good = stream_records(2, 16);
        let r = feed(&good[..9]).unwrap();
        assert_eq!(
            r.finish().unwrap_err().to_string(),
            format!("migration stream: at byte {}: stream ends early: expected vcpu 0", concat(&good[..9]).len())
        );
        let mut r = Reader::new();
        r.push_bytes(&enc(&good[0])[..5]).unwrap();
        assert!(r.finish().unwrap_err().message.contains("stream ends inside a record (5 bytes of it)"));
    }

    #[test]
    fn sixty_four_vcpus() {
        let recs = stream_records(64, 16);
        let r = feed(&recs).unwrap();
        assert!(r.is_complete());
    }

    /// Random damage to valid streams never panics and never makes the
    /// reader hold more than a record; whatever is accepted re-encodes to
    /// exactly the bytes it came from (the encoding is canonical, so nothing
    /// is silently reinterpreted).
    #[test]
    fn fuzz_mutated_streams() {
        let base = [concat(&stream_records(2, 8)), concat(&stream_records(1, 4)), concat(&samples()[..9])];
        let mut rng = Rng(0xdead_beef_1234);
        for iter in 0..4000 {
            let mut s = base[iter % base.len()].clone();
            let other = &base[(rng.next() % 3) as usize];
            for _ in 0..1 + rng.next() % 4 {
                let len = s.len().max(1) as u64;
                let at = (rng.next() % len) as usize;
                match rng.next() % 6 {
                    0 => {
                        if let Some(b) = s.get_mut(at) {
                            *b ^= 1 << (rng.next() % 8);
                        }
                    }
                    1 => s.truncate(at),
                    2 => {
                        // A random or boundary value in some u32.
                        let v = match rng.next() % 4 {
                            0 => rng.next() as u32,
                            1 => u32::MAX,
                            2 => MAX_BODY as u32 + 1,
                            _ => (rng.next() % 64) as u32,
                        };
                        if at + 4 <= s.len() {
                            set_u32(&mut s, at, v);
                        }
                    }
                    3 => {
                        // Splice part of another stream in.
                        let from = (rng.next() % other.len() as u64) as usize;
                        let n = ((rng.next() % 5000) as usize).min(other.len() - from);
                        let at = at.min(s.len());
                        s.splice(at..at, other[from..from + n].iter().copied());
                    }
                    4 => {
                        let n = ((rng.next() % 300) as usize).min(s.len() - at.min(s.len()));
                        s.drain(at.min(s.len())..at.min(s.len()) + n);
                    }
                    _ => {
                        let n = (rng.next() % 64) as usize;
                        for _ in 0..n {
                            s.insert(at.min(s.len()), rng.next() as u8);
                        }
                    }
                }
            }
            // Plain decoding, record by record.
            let mut at = 0;
            while let Ok(Some((rec, n))) = dec(&s[at..]) {
                assert_eq!(enc(&rec), s[at..at + n]);
                at += n;
            }
            // The reader, in random chunks.
            let mut r = Reader::new();
            let mut got = Vec::new();
            let mut at = 0;
            let mut failed = false;
            while at < s.len() {
                let n = (1 + (rng.next() % 4096) as usize).min(s.len() - at);
                match r.push_bytes(&s[at..at + n]) {
                    Ok(recs) => got.extend(recs),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
                assert!(r.buffered() <= MAX_RECORD);
                at += n;
            }
            if !failed {
                assert_eq!(concat(&got), s[..s.len() - r.buffered()]);
                assert_eq!(r.finish().is_ok(), r.buffered() == 0 && (r.is_complete() || r.is_aborted()));
            }
        }
    }
}
