//! Runs grub-mkrescue / grub-mknetdir for real through the CLI entry point
//! and inspects what they produced. Needs grub-common, grub-pc-bin and
//! xorriso (scripts/build installs them).
use std::path::Path;
use std::process::Command;

use image_tools::tempdir::TempDir;
use image_tools::{cli, elf::MULTIBOOT2_MAGIC};

/// A stand-in kernel: an ELF magic and a valid multiboot2 header. GRUB's
/// tools do not look inside the kernel, so this is enough to build images.
fn fake_kernel(dir: &Path) -> std::path::PathBuf {
    let mut image = b"\x7fELF\x02\x01\x01\x00".to_vec();
    let len = 24u32;
    let sum = 0u32.wrapping_sub(MULTIBOOT2_MAGIC.wrapping_add(len));
    for v in [MULTIBOOT2_MAGIC, 0, len, sum, 0, 8] {
        image.extend_from_slice(&v.to_le_bytes());
    }
    image.resize(4096, 0);
    let path = dir.join("fake.elf");
    std::fs::write(&path, image).unwrap();
    path
}

fn run(args: &[&str]) -> Result<(), image_tools::Error> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    cli::run(&args)
}

fn require_tools() {
    if let Err(e) = image_tools::tools::check(&image_tools::tools::iso_requirements()) {
        panic!("{e} (scripts/build or scripts/test install the GRUB tools)");
    }
}

/// Reads one file out of an ISO with xorriso.
fn iso_file(iso: &Path, inside: &str, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("extracted");
    let _ = std::fs::remove_file(&out);
    let status = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", inside])
        .arg(&out)
        .output()
        .expect("run xorriso");
    assert!(status.status.success(), "xorriso -extract {inside}: {}", String::from_utf8_lossy(&status.stderr));
    std::fs::read(&out).unwrap()
}

#[test]
fn iso_holds_kernel_modules_and_grub_cfg() {
    require_tools();
    let dir = TempDir::new("iso-real").unwrap();
    let kernel = fake_kernel(dir.path());
    let module = dir.path().join("payload.bin");
    std::fs::write(&module, b"guest payload").unwrap();
    let iso = dir.path().join("out/test.iso");
    let k = kernel.to_str().unwrap();
    let m = format!("{}=guest1", module.display());
    run(&[
        "iso",
        "--kernel",
        k,
        "--out",
        iso.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 isomarker=5 v=$x",
        "--module",
        &m,
    ])
    .unwrap();

    let bytes = std::fs::read(&iso).unwrap();
    assert!(bytes.len() > 100_000, "ISO only {} bytes", bytes.len());
    // ISO 9660 primary volume descriptor at sector 16; MBR boot signature
    // for BIOS boot from a USB stick.
    assert_eq!(&bytes[0x8001..0x8006], b"CD001");
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);

    let cfg = String::from_utf8(iso_file(&iso, "/boot/grub/grub.cfg", dir.path())).unwrap();
    assert!(cfg.contains("multiboot2 /boot/hypervisor.elf console=ttyS0 isomarker=5 'v=$x'\n"), "{cfg}");
    assert!(cfg.contains("module2 /boot/modules/guest1 guest1\n"), "{cfg}");
    assert_eq!(iso_file(&iso, "/boot/hypervisor.elf", dir.path()), std::fs::read(&kernel).unwrap());
    assert_eq!(iso_file(&iso, "/boot/modules/guest1", dir.path()), b"guest payload");
    // No temporary file left beside the ISO.
    let leftovers: Vec<_> = std::fs::read_dir(iso.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("test.iso")]);
}

#[test]
fn pxe_tree_has_core_0_kernel_and_config_and_rebuilds_cleanly() {
    require_tools();
    let dir = TempDir::new("pxe-real").unwrap();
    let kernel = fake_kernel(dir.path());
    let a = dir.path().join("a.bin");
    std::fs::write(&a, b"AAA").unwrap();
    let net = dir.path().join("tftp");
    let (k, n) = (kernel.to_str().unwrap(), net.to_str().unwrap());
    run(&["pxe", "--kernel", k, "--out", n, "--module", a.to_str().unwrap()]).unwrap();
    assert!(net.join("boot/grub/i386-pc/core.0").is_file());
    assert!(net.join("boot/grub/i386-pc/multiboot2.mod").is_file());
    assert_eq!(std::fs::read(net.join("boot/hypervisor.elf")).unwrap(), std::fs::read(&kernel).unwrap());
    assert_eq!(std::fs::read(net.join("boot/modules/a.bin")).unwrap(), b"AAA");
    let cfg = std::fs::read_to_string(net.join("boot/grub/grub.cfg")).unwrap();
    assert!(cfg.contains("multiboot2 /boot/hypervisor.elf console=ttyS0 loglevel=info\n"));
    assert!(cfg.contains("module2 /boot/modules/a.bin a.bin\n"));

    // Rebuild without modules: the old module goes, the config follows.
    run(&["pxe", "--kernel", k, "--out", n, "--cmdline", "console=ttyS0"]).unwrap();
    assert!(!net.join("boot/modules").exists());
    let cfg = std::fs::read_to_string(net.join("boot/grub/grub.cfg")).unwrap();
    assert!(!cfg.contains("module2"), "{cfg}");
    assert!(cfg.contains("multiboot2 /boot/hypervisor.elf console=ttyS0\n"));
}

#[test]
fn missing_kernel_is_a_clear_error() {
    require_tools();
    let dir = TempDir::new("missing").unwrap();
    let iso = dir.path().join("x.iso");
    let e = run(&["iso", "--kernel", "/nonexistent/hypervisor.elf", "--out", iso.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/hypervisor.elf"), "{e}");
    assert!(!e.contains('\n'));
    assert!(!iso.exists());
}

#[test]
fn binary_reports_errors_on_one_line_with_status() {
    let out = Command::new(env!("CARGO_BIN_EXE_rhv-image"))
        .args(["iso", "--kernel", "/nonexistent.elf", "--out", "/tmp/never.iso"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("rhv-image: error: "), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_rhv-image")).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = Command::new(env!("CARGO_BIN_EXE_rhv-image")).args(["grub-cfg", "--cmdline", "a=1"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("multiboot2 /boot/hypervisor.elf a=1\n"));
}
