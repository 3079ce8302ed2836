//! Finding the host tools the images need, with the package to install.
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Error;

/// The GRUB BIOS platform files (package grub-pc-bin).
pub const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
/// The GRUB x86_64 UEFI platform files; when present grub-mkrescue also
/// builds an EFI image and then needs mtools.
pub const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Something that must be present on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// A command on `PATH`.
    Command(&'static str, &'static str),
    /// A file or directory.
    Path(&'static str, &'static str),
}

impl Requirement {
    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Requirement::Command(_, p) | Requirement::Path(_, p) => p,
        }
    }

    /// Whether it is present.
    pub fn present(self) -> bool {
        match self {
            Requirement::Command(cmd, _) => find_in_path(cmd).is_some(),
            Requirement::Path(p, _) => Path::new(p).exists(),
        }
    }

    /// An error naming the missing thing and its package.
    pub fn missing(self) -> Error {
        let what = match self {
            Requirement::Command(c, _) => c.to_string(),
            Requirement::Path(p, _) => format!("GRUB platform files ({p})"),
        };
        Error::MissingTool { what, package: self.package() }
    }
}

/// What `rhv-image iso` needs.
pub fn iso_requirements() -> Vec<Requirement> {
    let mut reqs = vec![
        Requirement::Command("grub-mkrescue", "grub-common"),
        Requirement::Path(GRUB_PC_DIR, "grub-pc-bin"),
        Requirement::Command("xorriso", "xorriso"),
    ];
    if Path::new(GRUB_EFI_DIR).exists() {
        reqs.push(Requirement::Command("mformat", "mtools"));
    }
    reqs
}

/// What `rhv-image pxe` needs.
pub fn pxe_requirements() -> Vec<Requirement> {
    vec![Requirement::Command("grub-mknetdir", "grub-common"), Requirement::Path(GRUB_PC_DIR, "grub-pc-bin")]
}

/// Fails with the first missing requirement.
pub fn check(reqs: &[Requirement]) -> Result<(), Error> {
    match reqs.iter().find(|r| !r.present()) {
        Some(r) => Err(r.missing()),
        None => Ok(()),
    }
}

/// Looks `cmd` up in `PATH` like a shell does (executable regular files).
pub fn find_in_path(cmd: &str) -> Option<PathBuf> {
    find_in(cmd, std::env::var_os("PATH").unwrap_or_default())
}

fn find_in(cmd: &str, path_var: OsString) -> Option<PathBuf> {
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return is_executable(&p).then_some(p);
    }
    std::env::split_paths(&path_var).map(|dir| dir.join(cmd)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("rhv-no-such-tool-xyz").is_none());
        assert!(find_in("sh", OsString::from("/nonexistent-dir")).is_none());
        assert!(find_in("/bin/sh", OsString::new()).is_some());
    }

    #[test]
    fn missing_tool_error_names_the_package() {
        let e = Requirement::Command("rhv-no-such-tool-xyz", "grub-common");
        assert!(!e.present());
        let msg = e.missing().to_string();
        assert!(msg.contains("rhv-no-such-tool-xyz") && msg.contains("grub-common"), "{msg}");
        assert!(!msg.contains('\n'));
        let p = Requirement::Path("/nonexistent/i386-pc", "grub-pc-bin").missing();
        assert!(p.to_string().contains("grub-pc-bin"));
        assert!(check(&[Requirement::Command("sh", "dash")]).is_ok());
    }
}
