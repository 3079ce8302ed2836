//! `systest`: the QEMU harness for rhv's system tests and bench.
//!
//! [`QemuBuilder`] makes the QEMU command line (TCG by default; `RHV_ACCEL=kvm`
//! opts `-kernel` boots into KVM), [`Qemu`] runs it with the serial console
//! on pipes: a reader thread appends the output to a shared transcript, and
//! [`Qemu::expect`] waits (with a timeout, on a condition variable) for text
//! or a regex after a cursor that each successful expect moves on. Dropping a
//! [`Qemu`] kills and reaps the process. At most two QEMUs run at once per
//! test binary ([`slots`]).
//!
//! Environment knobs: `RHV_ACCEL=kvm`, `RHV_QEMU` (binary), `RHV_QEMU_JOBS`
//! (concurrent QEMUs), `RHV_TIMEOUT_SCALE` (multiplies every timeout),
//! `RHV_TEST_ECHO=1` (mirror serial output to stderr), `RHV_IMAGE_DIR`
//! (artefacts; default `target/image`).
#![forbid(unsafe_code)]

pub mod contract;
pub mod migbench;
pub mod netbench;
pub mod nfsbench;
pub mod qemu;
pub mod qmp;
pub mod rig;
pub mod rng;
pub mod slots;
pub mod stream;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use contract::{Banner, PROMPT};
pub use image_tools;
pub use image_tools::tempdir::TempDir;
pub use qemu::{Accel, Boot, Input, Pattern, Qemu, QemuBuilder};
pub use regex_lite::{Captures, Regex};

/// Timeouts for TCG on a 2-core machine, generous on purpose.
pub mod timeouts {
    use std::time::Duration;
    /// `-kernel` boot to prompt (TCG needs well under a second).
    pub const KERNEL_BOOT: Duration = Duration::from_secs(30);
    /// SeaBIOS → GRUB ISO → prompt.
    pub const ISO_BOOT: Duration = Duration::from_secs(60);
    /// SeaBIOS → iPXE → TFTP → GRUB → prompt.
    pub const PXE_BOOT: Duration = Duration::from_secs(120);
    /// One shell command's output.
    pub const COMMAND: Duration = Duration::from_secs(10);
    /// QEMU exiting after poweroff/reset/debug-exit.
    pub const EXIT: Duration = Duration::from_secs(20);
}

/// Details of a failed wait.
#[derive(Debug, Clone)]
pub struct Context {
    /// What was awaited.
    pub what: String,
    /// The machine's label.
    pub name: String,
    /// How long it was awaited.
    pub waited: Duration,
    /// The last ~2 KB of serial output.
    pub tail: String,
    /// The last ~2 KB of QEMU's stderr.
    pub stderr: String,
    /// QEMU's arguments.
    pub argv: String,
}

/// A harness failure; `Debug` prints the same readable text as `Display`,
/// so a test returning `Result<(), Error>` fails with the transcript tail.
pub enum Error {
    /// Missing artefacts, QEMU not startable, bad arguments.
    Setup(String),
    /// The awaited output did not come in time.
    Timeout(Box<Context>),
    /// QEMU exited before the awaited output came.
    Exited(Box<Context>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, c) = match self {
            Error::Setup(msg) => return f.write_str(msg),
            Error::Timeout(c) => ("timed out", c),
            Error::Exited(c) => ("QEMU exited", c),
        };
        writeln!(f, "[{}] {kind} after {:.1} s {}", c.name, c.waited.as_secs_f64(), c.what)?;
        writeln!(f, "qemu args: {}", c.argv)?;
        writeln!(f, "--- last serial output ---")?;
        writeln!(f, "{}", printable(&c.tail))?;
        if !c.stderr.trim().is_empty() {
            writeln!(f, "--- qemu stderr ---")?;
            writeln!(f, "{}", printable(c.stderr.trim_end()))?;
        }
        write!(f, "---")
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<image_tools::Error> for Error {
    fn from(e: image_tools::Error) -> Self {
        Error::Setup(format!("rhv-image: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Setup(format!("I/O error: {e}"))
    }
}

/// Makes a transcript readable in a terminal: `\r\n` → newline, other
/// control characters (escape sequences, bells) shown escaped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.replace("\r\n", "\n").chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// `d` multiplied by `RHV_TIMEOUT_SCALE` (default 1), for slow machines.
pub fn scaled(d: Duration) -> Duration {
    let scale = std::env::var("RHV_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    d.mul_f64(scale)
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The artefacts of scripts/build.
pub mod images {
    use super::{repo_root, Error};
    use std::path::PathBuf;

    /// `RHV_IMAGE_DIR`, else `<repo>/target/image`.
    pub fn dir() -> PathBuf {
        std::env::var_os("RHV_IMAGE_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/image"))
    }

    pub(crate) fn existing(name: &str) -> Result<PathBuf, Error> {
        let p = dir().join(name);
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::Setup(format!("{} is missing: run scripts/build first", p.display())))
        }
    }

    /// `hypervisor.elf`, the kernel for `-kernel` and for custom images.
    pub fn elf() -> Result<PathBuf, Error> {
        existing("hypervisor.elf")
    }

    /// `hypervisor.iso`, the GRUB ISO with the default command line.
    pub fn iso() -> Result<PathBuf, Error> {
        existing("hypervisor.iso")
    }

    /// `guests/<name>.elf`, an example guest built by scripts/build.
    pub fn guest(name: &str) -> Result<PathBuf, Error> {
        existing(&format!("guests/{name}.elf"))
    }

    /// `pxe/`, the TFTP tree.
    pub fn pxe() -> Result<PathBuf, Error> {
        let p = existing("pxe")?;
        if p.join(super::qemu::PXE_BOOTFILE).is_file() {
            Ok(p)
        } else {
            Err(Error::Setup(format!("{} has no {}: run scripts/build first", p.display(), super::qemu::PXE_BOOTFILE)))
        }
    }
}

/// Boots `hypervisor.elf` with `-kernel` and `cmdline`, waiting for the
/// prompt.
pub fn boot_kernel(cmdline: &str) -> Result<(Qemu, Banner), Error> {
    let mut q = QemuBuilder::kernel(images::elf()?).append(cmdline).spawn()?;
    let banner = q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok((q, banner))
}

/// Boots `hypervisor.elf` with `-kernel`, the named example guests as boot
/// modules, `cpu` as the QEMU CPU model and `mem` of RAM.
pub fn boot_with_guests(guests: &[&str], cpu: &str, mem: &str) -> Result<Qemu, Error> {
    let mut b =
        QemuBuilder::kernel(images::elf()?).append("console=ttyS0 loglevel=info").memory(mem).arg("-cpu").arg(cpu);
    for g in guests {
        b = b.initrd(images::guest(g)?);
    }
    let mut q = b.spawn()?;
    q.wait_ready(timeouts::KERNEL_BOOT)?;
    Ok(q)
}

/// Runs `rhv-image` (its library entry point, the same code as the binary)
/// with `args`.
pub fn rhv_image(args: &[&str]) -> Result<(), Error> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Ok(image_tools::cli::run(&args)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable("a\r\nb\x07\x1b[D"), "a\nb\\u{7}\\u{1b}[D");
    }

    #[test]
    fn repo_root_has_workspace_manifest() {
        assert!(repo_root().join("Cargo.toml").is_file());
        assert!(repo_root().join("tests/Cargo.toml").is_file());
    }

    #[test]
    fn missing_image_message_says_run_build() {
        let e = images::existing("no-such-artefact.bin").unwrap_err();
        assert!(e.to_string().contains("run scripts/build first"), "{e}");
    }

    #[test]
    fn error_display_has_tail_and_stderr() {
        let e = Error::Timeout(Box::new(Context {
            what: "waiting for \"x\"".into(),
            name: "kernel".into(),
            waited: Duration::from_millis(1500),
            tail: "boot...\r\nrhv> ".into(),
            stderr: "qemu: warning\n".into(),
            argv: "-kernel k".into(),
        }));
        let s = format!("{e:?}");
        assert!(s.contains("[kernel] timed out after 1.5 s waiting for \"x\""), "{s}");
        assert!(s.contains("boot...\nrhv> ") && s.contains("qemu: warning"), "{s}");
    }
}
