//! Links the EL2 binary with its linker script (aarch64 bare-metal only), as
//! a position-independent executable whose only dynamic relocations are
//! `R_AARCH64_RELATIVE` ones the entry code applies itself
//! (docs/adr/0018-relocatable-system-image.md):
//! - `-pie --no-dynamic-linker`: a relocatable image with no interpreter;
//! - `-z notext`: the prebuilt `core` is not PIC, so its absolute pointers
//!   in read-only data become relocations too;
//! - `-z norelro`: no RELRO segment to page-align;
//! - `--apply-dynamic-relocs`: each relocated word also holds its link-time
//!   value, so an image loaded at its link address needs no relocation and
//!   the entry code can read the link address from a literal.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("TARGET").is_ok_and(|t| t.starts_with("aarch64-unknown-none")) {
        println!("cargo:rustc-link-arg=-T{dir}/link.ld");
        for arg in [
            "-pie",
            "--no-dynamic-linker",
            "-znotext",
            "-znorelro",
            "--apply-dynamic-relocs",
        ] {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
    println!("cargo:rerun-if-changed=link.ld");
}
