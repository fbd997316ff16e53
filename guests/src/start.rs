//! Boot: `_start`, the hand-off to the guest's `main`, and the panic handler.
//!
//! `_start` opens with an arm64 `Image` header (a branch over it comes
//! first), so each guest's flattened binary is also a valid `Image` and raw
//! binary. Then, before any Rust code, it keeps `x0` (the DTB address) in a
//! callee-saved register, sets `SP` to the top of the stack reserved in `.bss`
//! by `link.ld`, enables FP/SIMD at EL1 (`CPACR_EL1.FPEN = 0b11`; the compiler
//! may use SIMD registers anywhere), zeroes `.bss`, installs the vector table
//! and calls `stratum_guest_entry(dtb)`, which [`entry!`](crate::entry) defines.

use core::panic::PanicInfo;

use crate::global::Global;

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
    .type _start, %function
_start:
    // An arm64 `Image` header (Documentation/arch/arm64/booting.rst), so the
    // flattened binary boots as a Linux-style Image or as a raw binary too.
    b       .Lboot                  // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset: RAM + 0x80000, as linked
    .quad   __image_size            // image_size, bss and stack included
    .quad   0x2                     // little-endian, 4 KiB pages
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0
.Lboot:
    mov     x19, x0
    adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  adrp    x1, stratum_vectors
    add     x1, x1, :lo12:stratum_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      stratum_guest_entry
3:  wfe
    b       3b
    .size _start, . - _start
"#
);

unsafe extern "C" {
    /// The image's entry point (for `CPU_ON` tests that need a valid address).
    fn _start();
}

/// Address of `_start`, the image entry point.
pub fn entry_point() -> usize {
    _start as *const () as usize
}

unsafe extern "C" {
    /// End of the image in memory, `.bss` and the boot stack included (`link.ld`).
    static __image_end: u8;
}

/// First address after the image (`.bss` and the boot stack included):
/// guest RAM above it is unused by the runtime.
pub fn image_end() -> usize {
    // Only the symbol's address is taken, never its contents.
    &raw const __image_end as usize
}

/// The name of the running guest, for the `STRATUM-TEST` lines.
static GUEST_NAME: Global<&'static str> = Global::new("unnamed-guest");

/// The running guest's name, as given to [`entry!`](crate::entry).
pub fn guest_name() -> &'static str {
    GUEST_NAME.get()
}

/// Called from the `stratum_guest_entry` that [`entry!`](crate::entry)
/// generates: records the guest's name and runs its `main`.
pub fn start_guest(name: &'static str, dtb: usize, main: fn(usize) -> !) -> ! {
    GUEST_NAME.set(name);
    main(dtb)
}

/// Declares a guest binary's name and entry function `fn(dtb: usize) -> !`.
///
/// ```ignore
/// stratum_guests::entry!("hello", main);
/// fn main(dtb: usize) -> ! { stratum_guests::pass() }
/// ```
#[macro_export]
macro_rules! entry {
    ($name:literal, $main:path) => {
        /// Entry from the runtime's `_start`, with the DTB address from `x0`.
        #[unsafe(no_mangle)]
        pub extern "C" fn stratum_guest_entry(dtb: usize) -> ! {
            $crate::start_guest($name, dtb, $main)
        }
    };
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    crate::report::fail(format_args!("panic: {info}"))
}
