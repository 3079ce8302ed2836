//! Host-side image tools for rhv.
//!
//! `rhv-image` (see `main.rs`) turns the hypervisor ELF plus optional boot
//! modules into a bootable GRUB ISO (BIOS; USB stick or CD) or a PXE tree for
//! a TFTP server. The pieces are a library so that the system tests can drive
//! exactly the code path the command line uses ([`cli::run`]) and so the pure
//! parts ([`grub::grub_cfg`], [`elf::find_multiboot2_header`]) are unit-tested.
#![forbid(unsafe_code)]

pub mod cli;
pub mod elf;
pub mod grub;
pub mod image;
pub mod tempdir;
pub mod tools;

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong; `Display` is one line, fit for a terminal.
#[derive(Debug)]
pub enum Error {
    /// Bad command line; the caller prints usage.
    Usage(String),
    /// A required host tool is missing.
    MissingTool {
        /// The command or file that was looked for.
        what: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The kernel ELF or a module file is missing or unusable.
    Input(String),
    /// An external tool ran and failed.
    ToolFailed {
        /// The tool's name.
        tool: String,
        /// Exit status description.
        status: String,
        /// The last meaningful line of its output.
        last_line: String,
    },
    /// A file system operation failed.
    Io {
        /// What was being done, e.g. "copy a to b".
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg} (try 'rhv-image --help')"),
            Error::MissingTool { what, package } => write!(
                f,
                "{what} not found: install the Debian package '{package}' \
                 (apt-get install --no-install-recommends {package}), or run scripts/build which does"
            ),
            Error::Input(msg) => f.write_str(msg),
            Error::ToolFailed { tool, status, last_line } => {
                write!(f, "{tool} failed ({status})")?;
                if !last_line.is_empty() {
                    write!(f, ": {last_line}")?;
                }
                Ok(())
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A boot module: a host file and the name it gets on the image (its file
/// name under `/boot/modules/` and its multiboot2 module string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// The file on the host.
    pub path: PathBuf,
    /// The name on the image; see [`grub::valid_module_name`].
    pub name: String,
}

/// What goes onto an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The hypervisor ELF on the host.
    pub kernel: PathBuf,
    /// The kernel command line, words separated by spaces.
    pub cmdline: String,
    /// Boot modules in the order they are loaded.
    pub modules: Vec<Module>,
}

/// The command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 loglevel=info";
/// Where the kernel lives on the ISO and in the PXE tree.
pub const KERNEL_IMAGE_PATH: &str = "/boot/hypervisor.elf";
/// The directory holding modules on the ISO and in the PXE tree.
pub const MODULE_IMAGE_DIR: &str = "/boot/modules";
/// The PXE boot file, relative to the TFTP root (give it to DHCP).
pub const PXE_BOOTFILE: &str = "boot/grub/i386-pc/core.0";
