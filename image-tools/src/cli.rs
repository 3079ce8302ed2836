//! The `rhv-image` command line (hand-written parser, std only).
use std::path::PathBuf;

use crate::image::{self, Options};
use crate::{grub, Config, Error, Module, DEFAULT_CMDLINE, PXE_BOOTFILE};

/// The help text.
pub const USAGE: &str = "\
rhv-image: build boot images for the rhv hypervisor

usage:
  rhv-image iso --kernel ELF --out FILE.iso [--cmdline \"...\"] [--module PATH[=NAME]]...
  rhv-image pxe --kernel ELF --out DIR      [--cmdline \"...\"] [--module PATH[=NAME]]...
  rhv-image grub-cfg [--cmdline \"...\"] [--module PATH[=NAME]]...

  iso       a GRUB (BIOS) ISO for QEMU -cdrom, a CD, or dd onto a USB stick
  pxe       a TFTP tree: DHCP boot file boot/grub/i386-pc/core.0 in DIR
  grub-cfg  print the grub.cfg the other two would write

options:
  --kernel ELF         the hypervisor ELF (multiboot2), e.g. target/image/hypervisor.elf
  --out PATH           the ISO file, or the PXE directory
  --cmdline STR        kernel command line (default: \"console=ttyS0 loglevel=info\")
  --module PATH[=NAME] add a boot module, named NAME (default: the file name);
                       repeatable, loaded in the order given
  -v, --verbose        show the output of grub-mkrescue / grub-mknetdir
  -h, --help           this text
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build an ISO at `out`.
    Iso {
        /// Contents.
        config: Config,
        /// The ISO file.
        out: PathBuf,
    },
    /// Build a PXE tree in `out`.
    Pxe {
        /// Contents.
        config: Config,
        /// The TFTP root directory.
        out: PathBuf,
    },
    /// Print grub.cfg.
    GrubCfg(Config),
    /// Print usage.
    Help,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The subcommand with its inputs.
    pub action: Action,
    /// Shared options.
    pub opts: Options,
}

/// Parses `--module PATH[=NAME]`. The text after the last `=` is a name
/// when it holds no `/`; otherwise the whole argument is a path.
pub fn parse_module(spec: &str) -> Result<Module, Error> {
    let (path, name) = match spec.rsplit_once('=') {
        Some((path, name)) if !path.is_empty() && !name.contains('/') => (PathBuf::from(path), name.to_string()),
        _ => {
            let path = PathBuf::from(spec);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (path, name)
        }
    };
    if spec.is_empty() {
        return Err(Error::Usage("--module needs a PATH".into()));
    }
    if !grub::valid_module_name(&name) {
        return Err(Error::Usage(format!(
            "module name '{name}' is not usable: 1-64 of [A-Za-z0-9._+-], not starting with '.' or '-' (use --module PATH=NAME)"
        )));
    }
    Ok(Module { path, name })
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Parsed, Error> {
    let mut opts = Options::default();
    let mut sub: Option<&str> = None;
    let mut kernel: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut cmdline: Option<String> = None;
    let mut modules = Vec::new();
    let mut help = false;

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        // `--opt=value` or `--opt value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> Result<String, Error> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = args.get(i).ok_or_else(|| Error::Usage(format!("{what} needs a value")))?;
            i += 1;
            Ok(v.clone())
        };
        match name {
            "-h" | "--help" => help = true,
            "help" if sub.is_none() => help = true,
            "-v" | "--verbose" => opts.verbose = true,
            "--kernel" => kernel = Some(PathBuf::from(value("--kernel")?)),
            "--out" | "-o" => out = Some(PathBuf::from(value("--out")?)),
            "--cmdline" => {
                if cmdline.is_some() {
                    return Err(Error::Usage("--cmdline given twice".into()));
                }
                cmdline = Some(value("--cmdline")?);
            }
            "--module" => modules.push(parse_module(&value("--module")?)?),
            "iso" | "pxe" | "grub-cfg" if sub.is_none() => sub = Some(name),
            other if other.starts_with('-') => return Err(Error::Usage(format!("unknown option '{other}'"))),
            other => return Err(Error::Usage(format!("unexpected argument '{other}'"))),
        }
    }
    if help {
        return Ok(Parsed { action: Action::Help, opts });
    }
    let sub = sub.ok_or_else(|| Error::Usage("missing subcommand: iso, pxe or grub-cfg".into()))?;
    let cmdline = cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    let need = |v: Option<PathBuf>, flag: &str| v.ok_or_else(|| Error::Usage(format!("'{sub}' needs {flag}")));
    let action = match sub {
        "grub-cfg" => Action::GrubCfg(Config { kernel: kernel.unwrap_or_default(), cmdline, modules }),
        _ => {
            let config = Config { kernel: need(kernel, "--kernel ELF")?, cmdline, modules };
            let out = need(out, "--out PATH")?;
            if sub == "iso" {
                Action::Iso { config, out }
            } else {
                Action::Pxe { config, out }
            }
        }
    };
    Ok(Parsed { action, opts })
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// Runs `rhv-image` with `args` (without the program name): the binary's
/// `main` and the system tests both come through here.
pub fn run(args: &[String]) -> Result<(), Error> {
    let parsed = parse(args)?;
    let warn = |warnings: Vec<String>| {
        for w in warnings {
            eprintln!("rhv-image: warning: {w}");
        }
    };
    match parsed.action {
        Action::Help => print!("{USAGE}"),
        Action::GrubCfg(config) => {
            grub::validate_cmdline(&config.cmdline)?;
            print!("{}", grub::grub_cfg(&config));
        }
        Action::Iso { config, out } => {
            warn(image::build_iso(&config, &out, parsed.opts)?);
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            eprintln!("rhv-image: wrote {} ({})", out.display(), human_size(size));
        }
        Action::Pxe { config, out } => {
            warn(image::build_pxe(&config, &out, parsed.opts)?);
            eprintln!("rhv-image: wrote {} (TFTP root; DHCP boot file {PXE_BOOTFILE})", out.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn iso_with_everything() {
        let p = parse(&args(&[
            "iso",
            "--kernel",
            "k.elf",
            "--out=x.iso",
            "--cmdline",
            "console=ttyS0 a=b",
            "--module",
            "/tmp/g.bin=guest1",
            "--module",
            "/tmp/disk.img",
            "-v",
        ]))
        .unwrap();
        assert!(p.opts.verbose);
        let Action::Iso { config, out } = p.action else { panic!("{:?}", p.action) };
        assert_eq!(out, PathBuf::from("x.iso"));
        assert_eq!(config.kernel, PathBuf::from("k.elf"));
        assert_eq!(config.cmdline, "console=ttyS0 a=b");
        assert_eq!(
            config.modules,
            vec![
                Module { path: "/tmp/g.bin".into(), name: "guest1".into() },
                Module { path: "/tmp/disk.img".into(), name: "disk.img".into() },
            ]
        );
    }

    #[test]
    fn cmdline_value_may_contain_equals_and_dashes() {
        let p = parse(&args(&["pxe", "--cmdline=loglevel=debug -x", "--kernel=k", "--out", "d"])).unwrap();
        let Action::Pxe { config, .. } = p.action else { panic!() };
        assert_eq!(config.cmdline, "loglevel=debug -x");
    }

    #[test]
    fn default_cmdline() {
        let p = parse(&args(&["pxe", "--kernel", "k", "--out", "d"])).unwrap();
        let Action::Pxe { config, .. } = p.action else { panic!() };
        assert_eq!(config.cmdline, DEFAULT_CMDLINE);
    }

    #[test]
    fn module_specs() {
        assert_eq!(parse_module("a/b.bin").unwrap().name, "b.bin");
        assert_eq!(parse_module("a/b.bin=g").unwrap().path, PathBuf::from("a/b.bin"));
        // `=` inside a directory name is part of the path.
        let m = parse_module("/tmp/x=y/file").unwrap();
        assert_eq!((m.path, m.name.as_str()), (PathBuf::from("/tmp/x=y/file"), "file"));
        assert!(parse_module("").is_err());
        assert!(parse_module("f=bad name").is_err());
        assert!(parse_module("/").is_err());
    }

    #[test]
    fn usage_errors_are_one_line() {
        for bad in [
            vec![],
            vec!["iso"],
            vec!["iso", "--kernel", "k"],
            vec!["pxe", "--out", "d"],
            vec!["iso", "--kernel"],
            vec!["iso", "--bogus"],
            vec!["iso", "extra"],
            vec!["iso", "pxe"],
            vec!["iso", "--cmdline", "a", "--cmdline", "b"],
        ] {
            let e = parse(&args(&bad)).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad:?}: {e:?}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn help_anywhere() {
        for a in [vec!["--help"], vec!["iso", "-h"], vec!["help"]] {
            assert_eq!(parse(&args(&a)).unwrap().action, Action::Help);
        }
    }

    #[test]
    fn grub_cfg_needs_no_kernel() {
        let p = parse(&args(&["grub-cfg", "--cmdline", "x=1"])).unwrap();
        assert!(matches!(p.action, Action::GrubCfg(ref c) if c.cmdline == "x=1"));
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(2048), "2.0 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
