//! Build script: links every guest binary with `link.ld` (load address
//! `0x4008_0000`, the conventional kernel offset in guest RAM) when building for
//! bare metal. Host builds (unit tests of the pure modules) use the default layout.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo always sets CARGO_MANIFEST_DIR");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
    }
}
