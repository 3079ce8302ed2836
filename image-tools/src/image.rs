//! Building the ISO and the PXE tree.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tempdir::TempDir;
use crate::{elf, grub, tools, Config, Error, KERNEL_IMAGE_PATH, MODULE_IMAGE_DIR, PXE_BOOTFILE};

/// Options shared by the builders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Echo the external tools' full output.
    pub verbose: bool,
}

/// Checks the kernel, the command line and the modules; returns warnings.
pub fn check_inputs(config: &Config) -> Result<Vec<String>, Error> {
    let mut warnings = Vec::new();
    warnings.extend(elf::check_kernel(&config.kernel)?);
    grub::validate_cmdline(&config.cmdline)?;
    warnings.extend(grub::cmdline_warnings(&config.cmdline));
    let mut names = HashSet::new();
    for m in &config.modules {
        if !grub::valid_module_name(&m.name) {
            return Err(Error::Input(format!(
                "module name '{}' is not usable: 1-64 of [A-Za-z0-9._+-], not starting with '.' or '-' (give one with --module PATH=NAME)",
                m.name
            )));
        }
        if !names.insert(m.name.as_str()) {
            return Err(Error::Input(format!(
                "two modules are named '{}' (rename one with --module PATH=NAME)",
                m.name
            )));
        }
        if !m.path.is_file() {
            return Err(Error::Input(format!("module file {} not found", m.path.display())));
        }
    }
    Ok(warnings)
}

/// The host path for an image path like `/boot/x` under `root`.
fn under(root: &Path, image_path: &str) -> PathBuf {
    root.join(image_path.trim_start_matches('/'))
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| Error::io(format!("copy {} to {}", from.display(), to.display()), e))
}

fn create_dir_all(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Puts the kernel, the modules (replacing any earlier set) and grub.cfg
/// under `root` at their image paths.
fn place_files(config: &Config, root: &Path, grub_dir: &Path) -> Result<(), Error> {
    let kernel = under(root, KERNEL_IMAGE_PATH);
    create_dir_all(kernel.parent().unwrap_or(root))?;
    copy(&config.kernel, &kernel)?;
    let modules = under(root, MODULE_IMAGE_DIR);
    if modules.exists() {
        std::fs::remove_dir_all(&modules).map_err(|e| Error::io(format!("remove old {}", modules.display()), e))?;
    }
    if !config.modules.is_empty() {
        create_dir_all(&modules)?;
        for m in &config.modules {
            copy(&m.path, &modules.join(&m.name))?;
        }
    }
    create_dir_all(grub_dir)?;
    write(&grub_dir.join("grub.cfg"), &grub::grub_cfg(config))
}

/// Picks the line of a tool's output that best explains a failure: the last
/// one mentioning an error, else the last non-trivial one.
pub fn explain_failure(output: &str) -> String {
    let lines: Vec<&str> = output.lines().map(str::trim).filter(|l| l.len() > 1).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// Runs an external tool, capturing its chatter; on failure returns its
/// most telling line.
fn run_tool(cmd: &mut Command, name: &str, package: &'static str, opts: Options) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingTool { what: name.to_string(), package },
        _ => Error::io(format!("run {name}"), e),
    })?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if opts.verbose {
        eprint!("{text}");
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::ToolFailed {
            tool: name.to_string(),
            status: out.status.to_string(),
            last_line: explain_failure(&text),
        })
    }
}

/// Builds a BIOS-bootable GRUB ISO (also fit for `dd` onto a USB stick) at
/// `out`. The ISO appears atomically: it is written beside `out` and renamed.
pub fn build_iso(config: &Config, out: &Path, opts: Options) -> Result<Vec<String>, Error> {
    tools::check(&tools::iso_requirements())?;
    let warnings = check_inputs(config)?;
    let stage = TempDir::new("iso").map_err(|e| Error::io("create a staging directory", e))?;
    place_files(config, stage.path(), &stage.path().join("boot/grub"))?;

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = run_tool(
        Command::new("grub-mkrescue").args(["--locales=", "--fonts=", "--themes=", "-o"]).arg(&tmp).arg(stage.path()),
        "grub-mkrescue",
        "grub-common",
        opts,
    )
    .and_then(|()| {
        std::fs::rename(&tmp, out).map_err(|e| Error::io(format!("rename {} to {}", tmp.display(), out.display()), e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| warnings)
}

/// Builds a PXE tree in `dir`: GRUB's network image and modules from
/// grub-mknetdir under `boot/grub/`, the kernel and modules under `boot/`,
/// and grub.cfg. Point DHCP's boot file at [`PXE_BOOTFILE`].
pub fn build_pxe(config: &Config, dir: &Path, opts: Options) -> Result<Vec<String>, Error> {
    tools::check(&tools::pxe_requirements())?;
    let warnings = check_inputs(config)?;
    create_dir_all(dir)?;
    let mut net_dir = std::ffi::OsString::from("--net-directory=");
    net_dir.push(dir);
    run_tool(
        Command::new("grub-mknetdir").arg(net_dir).args(["--subdir=boot/grub", "--locales=", "--fonts=", "--themes="]),
        "grub-mknetdir",
        "grub-common",
        opts,
    )?;
    let bootfile = dir.join(PXE_BOOTFILE);
    if !bootfile.is_file() {
        return Err(Error::Input(format!(
            "grub-mknetdir did not create {} (is grub-pc-bin installed?)",
            bootfile.display()
        )));
    }
    place_files(config, dir, &dir.join("boot/grub"))?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Module;

    #[test]
    fn explain_prefers_error_lines() {
        let out =
            "xorriso 1.5.4 : banner\n\nxorriso : FAILURE : bad\ngrub-mkrescue: error: `xorriso` invocation failed\n.\n";
        assert_eq!(explain_failure(out), "grub-mkrescue: error: `xorriso` invocation failed");
        assert_eq!(explain_failure("one\ntwo\n"), "two");
        assert_eq!(explain_failure(""), "");
    }

    #[test]
    fn inputs_are_checked() {
        let dir = TempDir::new("inputs").unwrap();
        let kernel = dir.path().join("k.elf");
        std::fs::write(&kernel, b"\x7fELF").unwrap();
        let module = dir.path().join("m.bin");
        std::fs::write(&module, b"m").unwrap();
        let cfg = |modules: Vec<Module>| Config { kernel: kernel.clone(), cmdline: "console=ttyS0".into(), modules };
        let m = |name: &str, path: &Path| Module { path: path.to_path_buf(), name: name.into() };
        // No multiboot2 header: a warning, not an error.
        let w = check_inputs(&cfg(vec![m("a", &module)])).unwrap();
        assert_eq!(w.len(), 1);
        let dup = check_inputs(&cfg(vec![m("a", &module), m("a", &module)]));
        assert!(dup.unwrap_err().to_string().contains("two modules"));
        let bad = check_inputs(&cfg(vec![m("a b", &module)]));
        assert!(bad.unwrap_err().to_string().contains("not usable"));
        let gone = check_inputs(&cfg(vec![m("a", &dir.path().join("gone"))]));
        assert!(gone.unwrap_err().to_string().contains("not found"));
    }

    #[test]
    fn place_files_replaces_old_modules() {
        let src = TempDir::new("place-src").unwrap();
        let root = TempDir::new("place-root").unwrap();
        let kernel = src.path().join("k.elf");
        std::fs::write(&kernel, b"\x7fELF kernel").unwrap();
        let module = src.path().join("m.bin");
        std::fs::write(&module, b"module").unwrap();
        let stale = root.path().join("boot/modules/stale");
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"old").unwrap();
        let config =
            Config { kernel, cmdline: "a=1".into(), modules: vec![Module { path: module, name: "guest1".into() }] };
        let grub_dir = root.path().join("boot/grub");
        place_files(&config, root.path(), &grub_dir).unwrap();
        assert!(!stale.exists());
        assert_eq!(std::fs::read(root.path().join("boot/modules/guest1")).unwrap(), b"module");
        assert_eq!(std::fs::read(root.path().join("boot/hypervisor.elf")).unwrap(), b"\x7fELF kernel");
        let cfg = std::fs::read_to_string(grub_dir.join("grub.cfg")).unwrap();
        assert_eq!(cfg, grub::grub_cfg(&config));
    }
}
