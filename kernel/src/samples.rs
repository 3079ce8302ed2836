//! Sample inputs shared by the unit tests and the fuzzer's seeds (feature
//! `samples`, on for tests): CPUID tables of real CPU models, a migrated
//! domain's record, the seed setup's xl.cfg. One copy, so the fuzzer starts
//! from exactly what the tests check.

use alloc::boxed::Box;
use alloc::vec;

use crate::migstream::{DiskRecord, DomainRecord, PermRun, PAGE_SIZE, PERM_EXEC, PERM_READ, PERM_WRITE};

/// The seed setup's `rx7.cfg`, as a user writes it.
pub const XLCFG_RX7: &str = r#"name = "rx7"
memory = 512
vcpus = 2
kernel = "/var/xen/rx7.elf"
extra = "console=hvc0 period_ms=500"
vif = [ 'mac=00:16:3e:00:00:07,bridge=xenbr0' ]
disk = [ 'file:/var/xen/rx7.img,xvda,w' ]
on_crash = "preserve"
"#;

/// A word with the listed bits set.
pub fn bits(list: &[u8]) -> u32 {
    list.iter().fold(0, |acc, &b| acc | 1 << b)
}

/// CPUID of a Skylake-SP-like server CPU (AVX-512, no SHA, no UMIP), as
/// [`crate::cpupolicy::CpuPolicy::from_cpuid`] asks for it.
pub fn cpuid_skylake(leaf: u32, subleaf: u32) -> [u32; 4] {
    match (leaf, subleaf) {
        (0, _) => [0x16, 0x756E_6547, 0x6C65_746E, 0x4965_6E69],
        (1, _) => [
            0x0005_0654,
            0x0010_0800,
            // Table bits plus monitor(3), vmx(5), tsc_deadline(24), osxsave(27).
            bits(&[0, 1, 3, 5, 9, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]),
            0xBFEB_FBFF,
        ],
        (7, 0) => [
            0,
            // Plus tsc_adjust(1), hle(4), rtm(11), mpx(14), intel_pt(25).
            bits(&[0, 1, 3, 4, 5, 7, 8, 9, 10, 11, 14, 16, 17, 18, 19, 20, 23, 24, 25, 28, 30, 31]),
            bits(&[3]),
            bits(&[10, 26, 27, 28, 29, 31]),
        ],
        (0xD, 0) => [0x2FF, 0xA88, 0xA88, 0],
        (0xD, 1) => [0xF, 0xA88, 0x100, 0],
        (0xD, 2) => [256, 576, 0, 0],
        (0xD, 3) => [64, 960, 0, 0],
        (0xD, 5) => [64, 1088, 0, 0],
        (0xD, 6) => [512, 1152, 0, 0],
        (0xD, 7) => [1024, 1664, 0, 0],
        (0xD, 9) => [8, 2688, 0, 0],
        (0x8000_0000, _) => [0x8000_0008, 0, 0, 0],
        (0x8000_0001, _) => [0, 0, bits(&[0, 5, 8]), bits(&[11, 20, 26, 27, 29])],
        _ => [0; 4],
    }
}

/// QEMU's qemu64 model (AMD-style mirrors in 0x80000001 EDX, no XSAVE).
pub fn cpuid_qemu64(leaf: u32, _subleaf: u32) -> [u32; 4] {
    match leaf {
        0 => [0xD, 0x6874_7541, 0x444D_4163, 0x6974_6E65],
        1 => [0x663, 0x0000_0800, bits(&[0, 13, 31]), 0x078B_FBFF],
        0x8000_0000 => [0x8000_000A, 0, 0, 0],
        0x8000_0001 => [0, 0, bits(&[0, 2]), 0x2193_FBFF],
        _ => [0; 4],
    }
}

/// A page of recognisable bytes, none of them zero.
pub fn mig_page(seed: u8) -> Box<[u8; PAGE_SIZE]> {
    let mut p = Box::new([0u8; PAGE_SIZE]);
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
    }
    p
}

/// A 16 MiB domain (4096 pages) with two vifs and a disk; its layout
/// covers every page from 0.
pub fn mig_domain(vcpus: u32) -> DomainRecord {
    DomainRecord {
        name: "rx7".into(),
        memory_mib: 16,
        vcpus,
        weight: 256,
        image: "/var/xen/heartbeat.elf".into(),
        extra: "console=hvc0 quiet".into(),
        vifs: vec![[0x00, 0x16, 0x3e, 1, 2, 3], [0x00, 0x16, 0x3e, 4, 5, 6]],
        disks: vec![DiskRecord { target: "/var/xen/rx7.img".into(), vdev: "xvda".into(), writable: true }],
        on_poweroff: 0,
        on_crash: 2,
        on_reboot: 1,
        cpuid: "host,avx512f=0".into(),
        layout: vec![
            PermRun { first: 0, count: 1, perms: 0 },
            PermRun { first: 1, count: 15, perms: PERM_READ | PERM_EXEC },
            PermRun { first: 16, count: 4080, perms: PERM_READ | PERM_WRITE },
        ],
    }
}
