//! The image's first instructions: the arm64 `Image` header, the primary
//! and secondary CPU entry points, EL2 stage-1 translation (MMU and caches
//! on), and the per-CPU EL2 stacks they switch to.
//!
//! The image starts with an arm64 Linux `Image` header (text_offset 0, "place
//! anywhere"), so QEMU's `-kernel` and U-Boot's `booti` load it at a 2 MiB
//! aligned address and pass the host DTB in x0. It is a position-independent
//! executable linked at 0x4020_0000 (where QEMU `virt` puts it): when loaded
//! elsewhere, the first instructions apply its `.rela.dyn` relocations (all
//! `R_AARCH64_RELATIVE`: add the load offset) with the MMU off, before any
//! absolute address is used (docs/adr/0018-relocatable-system-image.md). The
//! header's `res3`/`res4` may name a boot bundle inside the image
//! (`stratum_abi::sysimg`).
//!
//! EL2 translation, identity-mapped: first a boot map of 1 GiB blocks, all
//! Device-nGnRE and never executable but the gigabytes holding the image's
//! footprint and the DT (Normal write-back), enough to read the DT; then
//! the map [`switch_el2_map`] lays out from the DT's memory banks
//! ([`stratum_core::el2map`]), which the secondary CPUs start on.
//!
//! # Contract with the binary that links this crate
//! The assembly calls into the EL2 binary by link name, and reads symbols
//! its linker script defines. The binary must provide:
//! - `boot_primary`, a [`BootPrimary`]: the boot CPU's Rust entry, with the
//!   MMU and caches on, vectors installed, on CPU 0's stack, `x0` = the host
//!   DTB's address (0 when the loader passed none). It never returns.
//! - `boot_secondary`, a [`BootSecondary`]: a secondary CPU's Rust entry
//!   (same state, on its own stack), `x0` = its CPU index. It never returns.
//! - `stratum_telemetry`: any data symbol; its address goes into the
//!   header's `res2` field, where the host tool finds the telemetry block.
//! - The linker symbols `__image_size` (bytes from `_start` to the end of
//!   the image, bss included), `__bss_start` and `__bss_end` (16-byte
//!   aligned), `__rela_start` and `__rela_end` (the `.rela.dyn` entries),
//!   with the `.text.head` section placed first at the link address and
//!   `_start` as the ELF entry. It links with `-pie --apply-dynamic-relocs`,
//!   so every literal holds its link-time value until the entry code
//!   relocates it.
//!
//! The binary asserts those signatures at compile time by coercing its
//! functions to the type aliases below.
//!
//! Interrupts stay masked at EL2 from the first instruction on (`DAIF`).
//! A CPU that cannot run (not at EL2, not 4 KiB-aligned, or a relocation of
//! a type other than `R_AARCH64_RELATIVE`) parks in `wfe` forever.

#[cfg(target_arch = "aarch64")]
use core::arch::global_asm;

use stratum_core::el2map;

/// Bytes of EL2 stack per physical CPU.
pub const STACK_SIZE: usize = 128 * 1024;
/// Most physical CPUs the image has stacks for.
pub const MAX_CPUS: usize = 8;

/// Signature of `boot_primary`: the boot CPU's Rust entry (`dtb` = the
/// address the loader passed in x0).
pub type BootPrimary = extern "C" fn(dtb: usize) -> !;
/// Signature of `boot_secondary`: a secondary CPU's Rust entry (`cpu` = the
/// index it was started with through PSCI `CPU_ON`).
pub type BootSecondary = extern "C" fn(cpu: usize) -> !;

// The Image header is 64 bytes; the entry code follows it.
#[cfg(target_arch = "aarch64")]
global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry
    .long   0
    .quad   0                       // text_offset
    .quad   __image_size            // image_size, bss included
    .quad   0xa                     // LE, 4 KiB pages, any 2 MiB-aligned base
    .quad   stratum_telemetry       // res2: the telemetry block (stratum_abi::telemetry)
    .quad   0, 0                    // res3, res4: a bundle inside (stratum_abi::sysimg)
    .ascii  "ARM\x64"
    .long   0

primary_entry:
    mov     x19, x0                 // host DTB
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    el2_park
    adr     x1, _start
    tst     x1, #0xfff
    b.ne    el2_park                // not page-aligned: the tables and stacks would be off
    ldr     x2, =_start             // the link address: a literal not yet relocated
    subs    x20, x1, x2             // how far the loader moved us
    b.eq    2f
    adrp    x3, __rela_start
    add     x3, x3, :lo12:__rela_start
    adrp    x4, __rela_end
    add     x4, x4, :lo12:__rela_end
1:  cmp     x3, x4
    b.hs    2f
    ldp     x5, x6, [x3], #16       // r_offset, r_info
    ldr     x7, [x3], #8            // r_addend
    cmp     x6, #{r_relative}
    b.ne    el2_park                // the link left something we cannot apply
    add     x5, x5, x20
    add     x7, x7, x20
    str     x7, [x5]
    dc      ivac, x5                // no stale cached copy may hide the write
    b       1b
2:  dsb     sy
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
3:  cmp     x1, x2
    b.hs    4f
    stp     xzr, xzr, [x1], #16
    b       3b
4:  ldr     x1, ={stacks}
    add     x1, x1, #{stack_size}
    mov     sp, x1
    bl      el2_mmu_on
    ldr     x1, =el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      boot_primary

// Secondary CPUs, started by firmware PSCI CPU_ON with x0 = CPU index.
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    ldr     x1, ={stacks}
    ldr     x2, ={stack_size}
    madd    x1, x19, x2, x1
    add     x1, x1, x2
    mov     sp, x1
    adrp    x0, {l1_final}
    add     x0, x0, :lo12:{l1_final}
    bl      el2_mmu_enable
    ldr     x1, =el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      boot_secondary

// A CPU with nothing safe to do (also the end of an EL2 fault: vectors.rs).
.global el2_park
el2_park:
    wfe
    b       el2_park

// The boot map, enough to read the DT (stratum_core::el2map has the real
// one): 1 GiB identity blocks, Device and never executable, but Normal for
// the gigabytes holding the image's footprint (its header's image_size, so
// an embedded bundle too) and the 2 MiB a DT may take at x19.
el2_mmu_on:
    mov     x21, x30
    adrp    x0, {l1}
    add     x0, x0, :lo12:{l1}
    movz    x2, #0x0405             // block | AttrIndx 1 (device) | AF
    movk    x2, #0x0040, lsl #48    // XN
    mov     x1, #0
3:  lsl     x4, x1, #30
    orr     x4, x4, x2
    str     x4, [x0, x1, lsl #3]
    add     x1, x1, #1
    cmp     x1, #{l1_entries}
    b.lo    3b
    mov     x3, #0x0701             // block | AttrIndx 0 (normal) | SH inner | AF
    adr     x1, _start
    ldr     x2, [x1, #0x10]         // image_size
    add     x2, x1, x2
    bl      5f
    cbz     x19, 6f
    mov     x1, x19
    add     x2, x19, #(2 << 20)
    bl      5f
6:  dsb     sy
    adrp    x0, {l1}
    add     x0, x0, :lo12:{l1}
    mov     x30, x21
    b       el2_mmu_enable
// Normal blocks for the gigabytes of [x1, x2) below the map's end.
5:  lsr     x1, x1, #30
    sub     x2, x2, #1
    lsr     x2, x2, #30
7:  cmp     x1, #{l1_entries}
    b.hs    8f
    cmp     x1, x2
    b.hi    8f
    lsl     x4, x1, #30
    orr     x4, x4, x3
    str     x4, [x0, x1, lsl #3]
    add     x1, x1, #1
    b       7b
8:  ret
// Point EL2 translation at the table in x0, turn MMU and caches on.
el2_mmu_enable:
    msr     ttbr0_el2, x0
    mov     x1, #0x04ff             // attr0 normal WB RW-alloc, attr1 device-nGnRE
    msr     mair_el2, x1
    mrs     x1, id_aa64mmfr0_el1
    and     x1, x1, #0x7
    cmp     x1, #5
    mov     x2, #5
    csel    x1, x1, x2, ls          // PS: at most 48 bits with 4 KiB pages
    lsl     x1, x1, #16
    ldr     x2, =0x80803519         // RES1 31,23 | SH0 IS | WBWA | T0SZ 25
    orr     x1, x1, x2
    msr     tcr_el2, x1
    isb
    tlbi    alle2
    dsb     nsh
    isb
    ldr     x1, =0x30c5183d         // RES1 | I | SA | C | M
    msr     sctlr_el2, x1
    isb
    ret
"#,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    l1 = sym EL2_L1_TABLE,
    l1_final = sym EL2_L1_FINAL,
    l1_entries = const stratum_core::el2map::L1_ENTRIES,
    r_relative = const R_AARCH64_RELATIVE,
);

/// The only relocation type a position-independent EL2 image carries
/// (`.rela.dyn`; see docs/adr/0018-relocatable-system-image.md).
pub const R_AARCH64_RELATIVE: u64 = 1027;

/// Per-CPU EL2 stacks (CPU n uses `STACKS[n]`, growing down from its end).
#[repr(C, align(16))]
pub struct Stacks(pub [[u8; STACK_SIZE]; MAX_CPUS]);

/// The EL2 stacks. Only touched by the entry assembly and through
/// [`stack_top`] / [`current_cpu`], which take its address only.
#[unsafe(no_mangle)]
pub static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// EL2's level-1 translation table, filled by `el2_mmu_on`.
#[repr(C, align(4096))]
pub struct L1Table(pub [u64; 512]);

/// The EL2 translation table. Only touched by the entry assembly before the
/// MMU is on.
#[unsafe(no_mangle)]
pub static mut EL2_L1_TABLE: L1Table = L1Table([0; 512]);

/// EL2's level-1 table after boot, laid out from the DT
/// ([`stratum_core::el2map`]); the secondary CPUs start on it.
#[unsafe(no_mangle)]
pub static mut EL2_L1_FINAL: L1Table = L1Table([0; 512]);

/// The level-2 tables of [`EL2_L1_FINAL`].
#[repr(C, align(4096))]
pub struct L2Tables(pub [[u64; el2map::TABLE_ENTRIES]; el2map::L2_TABLES]);

/// The level-2 tables of the map after boot.
static mut EL2_L2_FINAL: L2Tables = L2Tables([[0; el2map::TABLE_ENTRIES]; el2map::L2_TABLES]);

/// Lays out EL2's map after boot with `build` (given the level-1 table, the
/// level-2 tables and their physical address; [`el2map::plan`]) and, if it
/// succeeds, switches this CPU to it. The secondary CPUs start on it.
///
/// # Safety
/// Only the boot CPU may call it, once, before it starts any other CPU, and
/// the new map must map everything the running code uses (its image,
/// stack, the DT, the console) with the attributes the boot map gave it or
/// Normal memory where the boot map had Device: nothing else then holds a
/// translation of the tables or the memory whose attributes change.
pub unsafe fn switch_el2_map<T, E>(
    build: impl FnOnce(
        &mut [u64; el2map::TABLE_ENTRIES],
        &mut [[u64; el2map::TABLE_ENTRIES]; el2map::L2_TABLES],
        u64,
    ) -> Result<T, E>,
) -> Result<T, E> {
    // SAFETY: the caller is the only CPU running and calls this once, so
    // nothing else reads or writes the two tables meanwhile.
    let (l1, l2) = unsafe {
        (
            &mut (*core::ptr::addr_of_mut!(EL2_L1_FINAL)).0,
            &mut (*core::ptr::addr_of_mut!(EL2_L2_FINAL)).0,
        )
    };
    let l2_base = core::ptr::addr_of!(EL2_L2_FINAL) as u64;
    let built = build(l1, l2, l2_base)?;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the tables are written (the `dsb` makes them visible to the
    // walker); the caller guarantees the new map keeps what runs mapped.
    unsafe {
        core::arch::asm!(
            "dsb ish",
            "msr ttbr0_el2, {t}",
            "isb",
            "tlbi alle2",
            "dsb ish",
            "isb",
            t = in(reg) core::ptr::addr_of!(EL2_L1_FINAL) as u64,
            options(nostack),
        );
    }
    Ok(built)
}

/// Address one past the top of CPU `cpu`'s EL2 stack.
///
/// # Panics
/// If `cpu >= MAX_CPUS` (a broken hypervisor invariant).
pub fn stack_top(cpu: usize) -> usize {
    assert!(cpu < MAX_CPUS, "CPU index {cpu} beyond MAX_CPUS");
    // Taking the address of a static does not read or write it.
    let base = core::ptr::addr_of!(STACKS) as usize;
    base + (cpu + 1) * STACK_SIZE
}

/// This CPU's index (0 = the boot CPU), from the stack it runs on: CPU `n`
/// always runs on `STACKS[n]` (the entry code and [`stack_top`] put it
/// there), so the index is the stack pointer's offset into them divided by
/// their size — a handful of instructions, where matching `MPIDR_EL1`
/// against the recorded affinities would loop.
///
/// # Panics
/// If the stack pointer lies outside the EL2 stacks (a broken invariant:
/// EL2 code only ever runs on them).
#[inline]
pub fn current_cpu() -> usize {
    let sp = stack_pointer();
    let base = stack_top(0) - STACK_SIZE;
    let cpu = sp.wrapping_sub(base) / STACK_SIZE;
    assert!(
        cpu < MAX_CPUS,
        "EL2 running off its per-CPU stacks (sp {sp:#x})"
    );
    cpu
}

/// The current stack pointer. (On the host: an address inside CPU 0's
/// stack, so [`current_cpu`] is 0 in unit tests.)
#[inline(always)]
pub fn stack_pointer() -> usize {
    #[cfg(target_arch = "aarch64")]
    {
        let sp: usize;
        // SAFETY: reading SP has no side effects.
        unsafe {
            core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        stack_top(0) - 16
    }
}

#[cfg(target_arch = "aarch64")]
unsafe extern "C" {
    /// Where secondary CPUs start (physical = virtual address): the address
    /// to hand firmware's PSCI `CPU_ON`, with the CPU's index as its context
    /// id (x0). It sets up that CPU's stack, turns on its MMU with the
    /// shared table, installs the vectors and calls `boot_secondary`.
    ///
    /// Never call it: only its address is meaningful.
    pub fn secondary_entry();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_disjoint_and_in_order() {
        let base = core::ptr::addr_of!(STACKS) as usize;
        assert_eq!(stack_top(0), base + STACK_SIZE);
        assert_eq!(stack_top(MAX_CPUS - 1), base + MAX_CPUS * STACK_SIZE);
        assert_eq!(stack_top(3) - stack_top(2), STACK_SIZE);
        assert_eq!(base % 16, 0, "AAPCS64 wants 16-byte aligned stacks");
    }

    #[test]
    #[should_panic(expected = "beyond MAX_CPUS")]
    fn a_cpu_past_the_stacks_is_a_broken_invariant() {
        let _ = stack_top(MAX_CPUS);
    }

    #[test]
    fn the_fake_stack_pointer_is_on_cpu_0() {
        assert_eq!(current_cpu(), 0);
    }
}
