//! Links the example guests with `guest.ld` when building for the bare-metal
//! target; host builds (the library and its unit tests) need nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=guest.ld");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-none" {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        format!("-T{dir}/guest.ld"),
        "-zmax-page-size=4096".into(),
        "--no-dynamic-linker".into(),
        "--build-id=none".into(),
        // The release profile keeps line tables (debug = 1) for the
        // hypervisor; guests are loaded whole, so drop them from the file.
        // The symbol table stays, for mapping a crash RIP to a function.
        "--strip-debug".into(),
    ] {
        println!("cargo:rustc-link-arg-examples={arg}");
    }
}
