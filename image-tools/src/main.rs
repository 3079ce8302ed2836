//! `rhv-image`: build a GRUB ISO or a PXE tree for rhv. See `--help`.
#![forbid(unsafe_code)]

use image_tools::{cli, Error};

fn main() {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!("rhv-image: error: argument {a:?} is not UTF-8");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = cli::run(&args) {
        eprintln!("rhv-image: error: {e}");
        std::process::exit(if matches!(e, Error::Usage(_)) { 2 } else { 1 });
    }
}
