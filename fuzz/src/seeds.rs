//! Valid encodings to start fuzzing from, one function per target. They
//! use the crates' own encoders where those exist (`rpc::encode_call`,
//! `rpc::encode_record_fragments`, `mount3::encode_export_result`,
//! `nfs3::Fattr3::encode`) and otherwise write replies field by field with
//! the public [`XdrWriter`], as a server would (the NFS test server in
//! `net/src/nfs/fake.rs` is `#[cfg(test)]`, so its pieces are not reachable
//! from here). The hypervisor's seeds come from its own encoders too
//! (`migstream::encode`, `CpuPolicy::encode`) and, for the relocation
//! handshake, from running a real client and server against each other.
//! `tests::every_seed_is_accepted` checks that each decodes.

use hypervisor::cpupolicy::{self, CpuPolicy};
use hypervisor::migstream::{
    self, DeviceRecord, DomainRecord, Header, PageData, PermRun, Record, TimeRecord, VcpuRecord,
};
use hypervisor::relocauth::{self, Channel, ClientHandshake, ClientStep, Mode, Psk, ServerHandshake};
use hypervisor::samples;
use net::mount3::{self, ExportNode};
use net::nfs3::{FType3, Fattr3, NfsTime3};
use net::rpc::{self, Auth, AuthSys, Xid};
use net::xdr::XdrWriter;

/// The bytes `f` writes.
fn xdr(f: impl FnOnce(&mut XdrWriter)) -> Vec<u8> {
    let mut w = XdrWriter::new();
    f(&mut w);
    w.into_bytes()
}

fn attrs(ftype: FType3, size: u64, fileid: u64) -> Fattr3 {
    let t = |s: u32, ns: u32| NfsTime3 { seconds: s, nseconds: ns };
    Fattr3 {
        ftype,
        mode: if ftype == FType3::Dir { 0o40755 } else { 0o100644 },
        nlink: 1,
        uid: 1000,
        gid: 100,
        size,
        used: size.next_multiple_of(4096),
        rdev: (0, 0),
        fsid: 0x77,
        fileid,
        atime: t(1_700_000_000, 1),
        mtime: t(1_700_000_001, 2),
        ctime: t(1_700_000_002, 3),
    }
}

/// `post_op_attr` present: a regular file.
fn post_op(w: &mut XdrWriter) {
    w.bool(true);
    attrs(FType3::Reg, 5000, 4242).encode(w);
}

/// `post_op_attr` present: a directory.
fn post_op_dir(w: &mut XdrWriter) {
    w.bool(true);
    attrs(FType3::Dir, 4096, 1).encode(w);
}

/// `wcc_data` with both halves present.
fn wcc(w: &mut XdrWriter) {
    w.bool(true).u64(4000).u32(10).u32(11).u32(12).u32(13);
    post_op(w);
}

/// `wcc_data` with neither half.
fn wcc_none(w: &mut XdrWriter) {
    w.bool(false).bool(false);
}

/// A 28-byte handle as Linux knfsd hands out.
const FH: [u8; 28] =
    [1, 0, 6, 0, 0xa1, 0xb2, 0xc3, 0xd4, 0, 0, 0, 2, 0, 0, 0, 0, 0x10, 0x20, 0x30, 0x40, 5, 6, 7, 8, 9, 10, 11, 12];

/// An accepted reply header (AUTH_NONE verifier) with `stat` and `tail`.
fn accepted(xid: u32, stat: u32, tail: &[u8]) -> Vec<u8> {
    xdr(|w| {
        w.u32(xid).u32(rpc::REPLY).u32(0).u32(rpc::AUTH_NONE).u32(0).u32(stat).raw(tail);
    })
}

// ---- rpc ----

pub fn rpc_reply() -> Vec<Vec<u8>> {
    let mismatch = xdr(|w| {
        w.u32(2).u32(3);
    });
    vec![
        accepted(0x1234_5678, 0, &[0, 0, 0, 0, 1, 2, 3, 4]),
        // An AUTH_SYS-style verifier body before the result.
        xdr(|w| {
            w.u32(7).u32(rpc::REPLY).u32(0).u32(rpc::AUTH_SYS).opaque_var(&[9; 12]).u32(0).u32(0);
        }),
        accepted(1, 1, &[]),
        accepted(2, 2, &mismatch),
        accepted(3, 3, &[]),
        accepted(4, 4, &[]),
        accepted(5, 5, &[]),
        // MSG_DENIED: RPC_MISMATCH, then AUTH_ERROR / AUTH_TOOWEAK.
        xdr(|w| {
            w.u32(6).u32(rpc::REPLY).u32(1).u32(0).u32(2).u32(2);
        }),
        xdr(|w| {
            w.u32(8).u32(rpc::REPLY).u32(1).u32(1).u32(5);
        }),
    ]
}

fn sys() -> Auth {
    Auth::Sys(AuthSys { stamp: 7, machine_name: "rhv".into(), uid: 0, gid: 0, gids: vec![0, 10] })
}

pub fn rpc_call() -> Vec<Vec<u8>> {
    let many = Auth::Sys(AuthSys {
        stamp: 0x6500_0000,
        machine_name: "host.example.org".into(),
        uid: 1000,
        gid: 100,
        gids: (0..16).collect(),
    });
    vec![
        rpc::encode_call(Xid(0x1234), 100_003, 3, 1, &sys(), &[0, 0, 0, 28]),
        rpc::encode_call(Xid(1), 100_000, 2, 0, &Auth::None, &[]),
        rpc::encode_call(Xid(u32::MAX), 100_005, 3, 1, &many, &mount3::encode_mnt_args("/export")),
    ]
}

/// Records as a server sends them: several, one split into fragments, one
/// empty.
fn record_stream() -> Vec<u8> {
    let mut s = rpc::encode_record(&accepted(1, 0, &[0; 8]));
    s.extend(rpc::encode_record_fragments(&accepted(2, 0, &[0xab; 40]), 12));
    s.extend(rpc::encode_record(&[]));
    s.extend(rpc::encode_record_fragments(&[7; 9], 4));
    s
}

/// First byte: decoder limit and chunking (see `targets::record_decoder`).
pub fn rpc_records() -> Vec<Vec<u8>> {
    [0x00, 0x05, 0x0a, 0x27, 0x3d, 0xe6]
        .iter()
        .map(|&h| {
            let mut v = vec![h];
            v.extend(record_stream());
            v
        })
        .collect()
}

/// First byte: client set-up and chunking (see `targets::rpc_client`):
/// 0b110 in bits 1..3 means four calls in flight (XIDs 1 to 4).
pub fn rpc_client() -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    let mismatch = [0, 0, 0, 2, 0, 0, 0, 3];
    stream.extend(rpc::encode_record(&accepted(2, 0, &[0xbb; 8])));
    stream.extend(rpc::encode_record(&accepted(999, 0, &[])));
    stream.extend(rpc::encode_record_fragments(&accepted(1, 2, &mismatch), 8));
    stream.extend(rpc::encode_record(&[1, 2, 3]));
    stream.extend(rpc::encode_record(&accepted(4, 1, &[])));
    stream.extend(rpc::encode_record(&accepted(3, 0, &[])));
    [0x06, 0x0e, 0x36, 0x7f, 0xc6]
        .iter()
        .map(|&h| {
            let mut v = vec![h];
            v.extend_from_slice(&stream);
            v
        })
        .collect()
}

// ---- portmap, mount3 ----

pub fn getport() -> Vec<Vec<u8>> {
    vec![vec![0, 0, 8, 1], vec![0, 0, 0, 0], vec![0, 0, 0xff, 0xff]]
}

pub fn mnt() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0).opaque_var(&FH).u32(1).u32(rpc::AUTH_SYS);
        }),
        xdr(|w| {
            w.u32(0).opaque_var(&[0xab; 64]).u32(3).u32(390_003).u32(0).u32(1);
        }),
        vec![0, 0, 0, 13],
        vec![0, 0, 0x27, 0x14],
    ]
}

pub fn exports() -> Vec<Vec<u8>> {
    let ex = vec![
        ExportNode { dir: "/export".into(), groups: vec!["10.77.0.0/24".into(), "*".into()] },
        ExportNode { dir: "/srv/nfs/guests".into(), groups: vec![] },
    ];
    vec![mount3::encode_export_result(&ex), vec![0, 0, 0, 0]]
}

// ---- nfs3 ----

pub fn nfs_null() -> Vec<Vec<u8>> {
    vec![Vec::new()]
}

pub fn getattr() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            attrs(FType3::Reg, 5000, 4242).encode(w);
        }),
        xdr(|w| {
            w.u32(0);
            attrs(FType3::Dir, 4096, 1).encode(w);
        }),
        vec![0, 0, 0, 70],
    ]
}

pub fn setattr() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            wcc(w);
        }),
        xdr(|w| {
            w.u32(10002);
            wcc_none(w);
        }),
    ]
}

pub fn lookup() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0).opaque_var(&FH);
            post_op(w);
            post_op_dir(w);
        }),
        xdr(|w| {
            w.u32(0).opaque_var(&[5; 64]).bool(false).bool(false);
        }),
        xdr(|w| {
            w.u32(2);
            post_op_dir(w);
        }),
    ]
}

pub fn access() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            post_op(w);
            w.u32(0x3f);
        }),
        vec![0, 0, 0, 13, 0, 0, 0, 0],
    ]
}

/// First four bytes: the `requested` count (see `targets::read`).
pub fn read() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(4096).u32(0);
            post_op(w);
            w.u32(5).bool(true).opaque_var(b"hello");
        }),
        xdr(|w| {
            w.u32(100).u32(0).bool(false).u32(100).bool(false).opaque_var(&[0x5a; 100]);
        }),
        xdr(|w| {
            w.u32(10).u32(10008).bool(false);
        }),
    ]
}

pub fn write() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            wcc(w);
            w.u32(5).u32(2).opaque_fixed(b"verf0001");
        }),
        xdr(|w| {
            w.u32(28);
            wcc_none(w);
        }),
    ]
}

/// CREATE and MKDIR replies (same layout).
pub fn create() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0).bool(true).opaque_var(&FH);
            post_op(w);
            wcc(w);
        }),
        xdr(|w| {
            w.u32(0).bool(false).bool(false);
            wcc_none(w);
        }),
        xdr(|w| {
            w.u32(17);
            wcc(w);
        }),
    ]
}

/// REMOVE and RMDIR replies (same layout as SETATTR).
pub fn remove() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            wcc(w);
        }),
        xdr(|w| {
            w.u32(66).bool(false);
            post_op_dir(w);
        }),
    ]
}

pub fn rename() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            wcc(w);
            w.bool(false);
            post_op_dir(w);
        }),
        xdr(|w| {
            w.u32(18);
            wcc_none(w);
            wcc_none(w);
        }),
    ]
}

pub fn readdirplus() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            post_op_dir(w);
            w.opaque_fixed(&[3; 8]);
            w.bool(true).u64(1).string(".").u64(11);
            post_op_dir(w);
            w.bool(true).opaque_var(&FH);
            w.bool(true).u64(4242).string("kernel.elf").u64(12).bool(false).bool(false);
            w.bool(true).u64(4243).opaque_var(&[0xff, 0xfe, b'x']).u64(13);
            post_op(w);
            w.bool(false);
            w.bool(false).bool(true);
        }),
        xdr(|w| {
            w.u32(0).bool(false).opaque_fixed(&[0; 8]).bool(false).bool(false);
        }),
        xdr(|w| {
            w.u32(10003).bool(false);
        }),
    ]
}

pub fn fsstat() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0).bool(false);
            w.u64(1 << 40).u64(1 << 39).u64(1 << 38).u64(1000).u64(500).u64(400).u32(0);
        }),
        xdr(|w| {
            w.u32(0);
            post_op_dir(w);
            w.u64(u64::MAX).u64(0).u64(0).u64(u64::MAX).u64(1).u64(1).u32(u32::MAX);
        }),
        vec![0, 0, 0, 70, 0, 0, 0, 0],
    ]
}

pub fn fsinfo() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            post_op_dir(w);
            w.u32(64 << 20).u32(64 << 20).u32(4096).u32(64 << 20).u32(64 << 20).u32(4096).u32(64 << 20);
            w.u64(u64::MAX).u32(0).u32(1).u32(0x1b);
        }),
        vec![0, 0, 0x27, 0x11, 0, 0, 0, 0],
    ]
}

pub fn commit() -> Vec<Vec<u8>> {
    vec![
        xdr(|w| {
            w.u32(0);
            wcc(w);
            w.opaque_fixed(&[9; 8]);
        }),
        xdr(|w| {
            w.u32(5);
            wcc_none(w);
        }),
    ]
}

// ---- hypervisor ----

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// `(p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz)`.
type Ph = (u32, u32, u64, u64, u64, u64);

/// An x86_64 ET_EXEC image: the ELF header, program headers right after
/// it, the file padded with a recognisable pattern to `len` bytes.
fn elf_image(entry: u64, phdrs: &[Ph], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(64 + 56 * phdrs.len())];
    for (i, b) in f.iter_mut().enumerate().skip(64 + 56 * phdrs.len()) {
        *b = 0x90 ^ (i as u8);
    }
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1; // EV_CURRENT
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
    for (i, &(p_type, flags, offset, vaddr, file_size, mem_size)) in phdrs.iter().enumerate() {
        let o = 64 + 56 * i;
        f[o..o + 4].copy_from_slice(&p_type.to_le_bytes());
        f[o + 4..o + 8].copy_from_slice(&flags.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&offset.to_le_bytes());
        f[o + 16..o + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[o + 24..o + 32].copy_from_slice(&vaddr.to_le_bytes()); // p_paddr
        f[o + 32..o + 40].copy_from_slice(&file_size.to_le_bytes());
        f[o + 40..o + 48].copy_from_slice(&mem_size.to_le_bytes());
        f[o + 48..o + 56].copy_from_slice(&4096u64.to_le_bytes()); // p_align
    }
    f
}

/// Small valid guest images (for a 16 MiB domain): text + data + bss,
/// one rwx segment, segments sharing a page with equal permissions, and
/// the most segments allowed (one more is refused).
pub fn elf() -> Vec<Vec<u8>> {
    const GNU_STACK: u32 = 0x6474_e551;
    let most: Vec<Ph> = (0..16u64).map(|i| (PT_LOAD, PF_R | PF_X, 0, 0x200000 + i * 0x1000, 0, 0x10)).collect();
    vec![
        elf_image(0x200008, &most, 0),
        elf_image(
            0x200100,
            &[
                (PT_LOAD, PF_R | PF_X, 0, 0x200000, 0x120, 0x120),
                (PT_LOAD, PF_R | PF_W, 0x100, 0x202100, 0x20, 0x3000),
                (GNU_STACK, PF_R | PF_W, 0, 0, 0, 0),
            ],
            0x120,
        ),
        elf_image(0x10078, &[(PT_LOAD, PF_R | PF_W | PF_X, 0, 0x10000, 0xb0, 0x2_0000)], 0xb0),
        elf_image(
            0x400010,
            &[
                (PT_LOAD, PF_R | PF_X, 0, 0x400000, 0x100, 0x100),
                (PT_LOAD, PF_R | PF_X, 0x100, 0x400100, 0x40, 0x80),
                (PT_LOAD, PF_R, 0, 0x401000, 0, 0x1000),
            ],
            0x140,
        ),
    ]
}

/// xl.cfg files as users write them.
pub fn xlcfg() -> Vec<Vec<u8>> {
    const RICH: &str = r#"# A guest with everything.
name='web-01'; memory = 0x400 ; vcpus="4"
kernel = '/srv/guests/web.elf'   # the image
cmdline = "root=/dev/xvda ro \x41 \\ \"q\" it\'s"
weight = 512
on_poweroff = 'destroy'
on_reboot = "rename-restart"
cpuid = "host,tm=0,sse3=0"
type = "pv"
maxmem = 2048
vif = [
    'mac=00:16:3e:12:34:56, bridge=br-lan',  # first NIC
    "bridge=xenbr1,model=e1000",
]
disk = [ '/srv/guests/web.img,raw,xvda,rw',
         'format=raw, vdev=xvdb, access=ro, target=/srv/guests/data,1.img', ]
"#;
    vec![samples::XLCFG_RX7.into(), RICH.into(), b"name = 'a'\nkernel = '/k'\n".to_vec()]
}

/// Kernel command lines as GRUB and QEMU pass them.
pub fn cmdline() -> Vec<Vec<u8>> {
    vec![
        b"/boot/rhv.elf console=ttyS1,9600n8 loglevel=debug panic=reboot selftest hostname=rhv-1.lab".to_vec(),
        br#"console=com2 loglevel=3 ip=10.77.0.2/24 gw=10.77.0.1 nfs=10.77.0.1:/export@/var/xen selftest=off"#.to_vec(),
        br#""hostname=a_b" panic="halt" nfs="srv:/a b@/mnt" loglevel=trace"#.to_vec(),
        b"ip=dhcp\tselftest=yes\r\n".to_vec(),
    ]
}

// ---- hypervisor::migstream ----

/// A 1 MiB domain with every optional part empty and one layout run.
fn mig_small_domain() -> DomainRecord {
    DomainRecord {
        name: "d".into(),
        memory_mib: 1,
        vcpus: 1,
        weight: 1,
        image: String::new(),
        extra: String::new(),
        vifs: Vec::new(),
        disks: Vec::new(),
        on_poweroff: migstream::MAX_ACTION,
        on_crash: 0,
        on_reboot: 0,
        cpuid: String::new(),
        layout: vec![PermRun { first: 0, count: 256, perms: migstream::PERM_READ | migstream::PERM_WRITE }],
    }
}

/// vCPU `index` with an FXSAVE image, or the smallest XSAVE one.
fn mig_vcpu(index: u32, xsave: bool) -> VcpuRecord {
    let mut regs = [0u64; migstream::NUM_REGS];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = 0x0111_0000_0000_0000u64.wrapping_mul(i as u64 + 1) + u64::from(index);
    }
    let fpu_bytes = if xsave { migstream::XSAVE_MIN_BYTES } else { migstream::FXSAVE_BYTES };
    VcpuRecord {
        index,
        regs,
        fs_base: 0x7000_0000,
        gs_base: 0x7100_0000 + u64::from(index),
        state: migstream::VCPU_BLOCKED,
        deadline_ns: 5_000_000_123,
        fpu_format: if xsave { migstream::FPU_XSAVE } else { migstream::FPU_FXSAVE },
        xcr0: if xsave { 0x7 } else { 0 },
        fpu: (0..fpu_bytes).map(|i| i as u8).collect(),
    }
}

fn mig_encode(recs: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        migstream::encode(r, &mut out);
    }
    out
}

/// One record of every type (several for some), each encoded alone. Raw
/// pages are few: their 4 KiB of data is no use to mutate.
pub fn migstream_records() -> Vec<Vec<u8>> {
    let recs = [
        Record::Header(Header::new(migstream::FLAG_LIVE | migstream::FLAG_PAUSED_AT_DEST, 4096, 4)),
        Record::Header(Header::new(migstream::FLAG_SAVE_FILE, migstream::MAX_GUEST_PAGES, migstream::MAX_VCPUS)),
        Record::DomainConfig(samples::mig_domain(4)),
        Record::DomainConfig(mig_small_domain()),
        Record::CpuPolicy(cpu_host().encode()),
        Record::CpuPolicy(Vec::new()),
        Record::Time(TimeRecord { guest_ns: 123_456_789, source_tsc_hz: 2_400_000_000, wall_ns: 0, generation: 7 }),
        Record::Pages(vec![(0, PageData::Zero), (4095, PageData::Raw(samples::mig_page(3))), (17, PageData::Zero)]),
        Record::Pages(vec![(migstream::MAX_GUEST_PAGES - 1, PageData::Zero), (1, PageData::Zero)]),
        Record::Vcpu(mig_vcpu(0, false)),
        Record::Vcpu(mig_vcpu(63, true)),
        Record::Device(DeviceRecord { events: 0b1010, shutdown_requested: true, console: b"hello\n".to_vec() }),
        Record::End { pages_sent: 99 },
        Record::Round { round: 3, pages: 1234 },
        Record::Accept,
        Record::Refuse { reason: "missing CPU features: avx2 bmi2".into() },
        Record::Resumed { domid: 12 },
        Record::Abort { reason: "operator cancelled".into() },
        Record::Abort { reason: String::new() },
    ];
    recs.iter().map(|r| mig_encode(std::slice::from_ref(r))).collect()
}

/// A whole source stream for a 4096-page domain with `vcpus` vCPUs
/// (sent in reverse order).
fn mig_stream(vcpus: u32) -> Vec<Record> {
    let mut v = vec![
        Record::Header(Header::new(migstream::FLAG_LIVE, 4096, vcpus)),
        Record::DomainConfig(samples::mig_domain(vcpus)),
        Record::CpuPolicy(CpuPolicy::baseline("x86-64-v2").expect("a psABI level").encode()),
        Record::Round { round: 0, pages: 3 },
        Record::Pages(vec![(0, PageData::Zero), (1, PageData::Raw(samples::mig_page(1))), (4095, PageData::Zero)]),
        Record::Round { round: 1, pages: 1 },
        Record::Pages(vec![(2, PageData::Zero)]),
        Record::Time(TimeRecord { guest_ns: 1, source_tsc_hz: 2, wall_ns: 3, generation: 4 }),
    ];
    for i in (0..vcpus).rev() {
        v.push(Record::Vcpu(mig_vcpu(i, i % 2 == 0)));
    }
    v.push(Record::Device(DeviceRecord { events: 2, shutdown_requested: false, console: b"log".to_vec() }));
    v.push(Record::End { pages_sent: 4 });
    v
}

/// First byte: how the stream is chunked (see `targets::migstream_reader`);
/// then whole streams, and one that aborts after the configuration.
pub fn migstream_streams() -> Vec<Vec<u8>> {
    let two = mig_encode(&mig_stream(2));
    let one = mig_encode(&mig_stream(1));
    let mut aborted = mig_stream(1);
    aborted.truncate(2);
    aborted.push(Record::Abort { reason: "disk full".into() });
    let aborted = mig_encode(&aborted);
    [(0x07, &two), (0x00, &one), (0x2d, &two), (0x16, &aborted), (0x05, &one)]
        .iter()
        .map(|&(h, s)| [&[h][..], s].concat())
        .collect()
}

// ---- hypervisor::relocauth ----

/// The key both hosts share in every relocation seed and target.
pub const RELOC_SECRET: &[u8] = b"fuzzing relocation key";
/// The server's nonce in every HELLO.
pub const RELOC_SERVER_NONCE: [u8; 32] = [0x5a; 32];
/// The client's nonce in every AUTH.
pub const RELOC_CLIENT_NONCE: [u8; 32] = [0xc3; 32];
/// What each side seals after the handshake, in order: with AEAD, no other
/// frame can open.
pub const RELOC_MESSAGES: [&[u8]; 3] = [b"the first record", b"", &[0xab; 100]];

pub fn reloc_psk() -> Psk {
    Psk::from_secret(RELOC_SECRET).expect("a long enough secret")
}

/// A real handshake's frames and the connected channels.
pub struct RelocSession {
    pub hello: Vec<u8>,
    pub auth: Vec<u8>,
    pub welcome: Vec<u8>,
    pub client: Channel,
    pub server: Channel,
}

/// The AUTH a real client (nonce [`RELOC_CLIENT_NONCE`]) answers `hello`
/// with, asking for `mode`.
pub fn reloc_auth(hello: &[u8], mode: Mode) -> Vec<u8> {
    match ClientHandshake::new(reloc_psk(), RELOC_CLIENT_NONCE, mode).push(hello) {
        Ok(ClientStep::Send(auth)) => auth,
        other => panic!("a real client does not answer the HELLO: {:?}", other.err()),
    }
}

/// Runs a real handshake in `mode` (the server allows plain mode).
pub fn reloc_session(mode: Mode) -> RelocSession {
    let (mut server, hello) = ServerHandshake::new(reloc_psk(), RELOC_SERVER_NONCE, true);
    let mut client = ClientHandshake::new(reloc_psk(), RELOC_CLIENT_NONCE, mode);
    let Ok(ClientStep::Send(auth)) = client.push(&hello) else { panic!("a real client does not answer the HELLO") };
    let Ok(Some((server, welcome))) = server.push(&auth) else { panic!("a real server refuses a real AUTH") };
    let Ok(ClientStep::Done(client)) = client.push(&welcome) else { panic!("a real client refuses a real WELCOME") };
    RelocSession { hello, auth, welcome, client, server }
}

/// [`RELOC_MESSAGES`] sealed by `ch`, one frame each.
pub fn reloc_frames(ch: &mut Channel) -> Vec<u8> {
    RELOC_MESSAGES.iter().flat_map(|m| ch.seal(m).expect("a small message")).collect()
}

/// First byte: bit 0 allow_plain, the rest chunking (see
/// `targets::reloc_server`); then what the client sends: an AUTH (AEAD or
/// plain), possibly followed by frames, or a REFUSE.
pub fn reloc_server() -> Vec<Vec<u8>> {
    let mut aead = reloc_session(Mode::Aead);
    let mut plain = reloc_session(Mode::Plain);
    let refuse = relocauth::refuse_frame("unsupported protocol version: server speaks v2, this host speaks v1");
    vec![
        [&[0x00][..], &aead.auth].concat(),
        [&[0x01][..], &plain.auth].concat(),
        [&[0x0e][..], &aead.auth, &reloc_frames(&mut aead.client)].concat(),
        [&[0x0b][..], &plain.auth, &reloc_frames(&mut plain.client)].concat(),
        [&[0x00][..], &refuse].concat(),
    ]
}

/// First byte: bit 0 plain mode, the rest chunking (see
/// `targets::reloc_client`); then what the server sends: HELLO, WELCOME
/// and frames, HELLO alone, or HELLO and a REFUSE.
pub fn reloc_client() -> Vec<Vec<u8>> {
    let mut aead = reloc_session(Mode::Aead);
    let mut plain = reloc_session(Mode::Plain);
    let refuse = relocauth::refuse_frame("plain mode not allowed by this host");
    vec![
        [&[0x00][..], &aead.hello, &aead.welcome].concat(),
        [&[0x01][..], &plain.hello, &plain.welcome].concat(),
        [&[0x0e][..], &aead.hello, &aead.welcome, &reloc_frames(&mut aead.server)].concat(),
        [&[0x07][..], &plain.hello, &plain.welcome, &reloc_frames(&mut plain.server)].concat(),
        [&[0x00][..], &aead.hello].concat(),
        [&[0x01][..], &plain.hello, &refuse].concat(),
    ]
}

/// First byte: bit 0 plain mode, bit 1 the direction (client to server or
/// back), the rest chunking (see `targets::reloc_channel`); then the frames
/// the other side sealed.
pub fn reloc_channel() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (h, chunking) in [(0, 0x1c), (1, 0x00), (2, 0x04), (3, 0x18)] {
        let mode = if h & 1 == 0 { Mode::Aead } else { Mode::Plain };
        let mut s = reloc_session(mode);
        let frames = if h & 2 == 0 { reloc_frames(&mut s.client) } else { reloc_frames(&mut s.server) };
        out.push([&[h | chunking][..], &frames].concat());
    }
    out
}

// ---- hypervisor::cpupolicy ----

/// The host policy `parse_spec` is fuzzed against: the Skylake-like CPU
/// with XCR0 x87 | SSE | AVX | AVX-512.
pub fn cpu_host() -> CpuPolicy {
    CpuPolicy::from_cpuid(samples::cpuid_skylake, 0xE7)
}

/// A second host for `parse_spec`: qemu64, below x86-64-v2.
pub fn cpu_old_host() -> CpuPolicy {
    CpuPolicy::from_cpuid(samples::cpuid_qemu64, 0)
}

/// Blobs of a host policy, two psABI baselines, a host without XSAVE, and
/// one that leaves every word out (no features).
pub fn cpupolicy_blobs() -> Vec<Vec<u8>> {
    let level = |name| CpuPolicy::baseline(name).expect("a psABI level").encode();
    vec![
        cpu_host().encode(),
        level("x86-64-v2"),
        level("x86-64-v4"),
        cpu_old_host().encode(),
        [&[cpupolicy::BLOB_VERSION, 0][..], &(cpupolicy::XCR0_X87 | cpupolicy::XCR0_SSE).to_le_bytes()].concat(),
    ]
}

/// `cpuid=` strings as domain configs write them (all valid on
/// [`cpu_host`]), with aliases and spellings to feed the dictionary.
pub fn cpuid_specs() -> Vec<Vec<u8>> {
    [
        "host",
        "x86-64-v2,avx=0",
        "x86-64-v3,sse4_2=0",
        "host,avx512f=0,pku=0",
        "x86-64-v2, aes=1 ,pclmulqdq=1,popcnt=0",
        "X86_64-V3,SSE4.2=0,lzcnt=0,pni=1,sse4-1=1,avx2=0,avx2=1",
        "x86-64-v4,avx512vl=0,sha_ni=0,3dnowprefetch=1,page1gb=1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
