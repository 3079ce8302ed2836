//! rhv hypervisor image entry (stub).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the rhv image runs on bare metal only: build it with scripts/build");
}
