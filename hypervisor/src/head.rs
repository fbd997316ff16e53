//! Entry point, EL2 stage-1 translation, exception vectors and the guest
//! entry/exit path, in assembly.
//!
//! The image starts with an arm64 Linux `Image` header (text_offset 0), so
//! QEMU's `-kernel` and U-Boot's `booti` load it at RAM base + 2 MiB and pass
//! the host DTB in x0. It is linked at 0x4020_0000 and refuses to run
//! anywhere else (see docs/adr/0002-fixed-link-address.md).
//!
//! EL2 translation: one level-1 table of 1 GiB blocks, identity-mapped —
//! the first GiB (devices on `virt`) as Device-nGnRE, never executable; the
//! next 255 GiB as Normal write-back memory.
//!
//! Guest exits save x0–x30 into the running vCPU's [`crate::vcpu::GuestRegs`]
//! (found through `TPIDR_EL2`), call `handle_guest_exit(regs, kind)` on a
//! fresh EL2 stack, then restore the (possibly different) vCPU named by
//! `TPIDR_EL2` and `eret`. EL2 holds no state on its stack while a guest
//! runs.

use core::arch::global_asm;

/// Exit kinds passed to `handle_guest_exit` (vector group for a lower EL).
pub mod kind {
    /// Synchronous exception from a lower EL (AArch64).
    pub const SYNC: u64 = 0;
    /// IRQ while a guest ran.
    pub const IRQ: u64 = 1;
    /// FIQ while a guest ran.
    pub const FIQ: u64 = 2;
    /// SError while a guest ran.
    pub const SERROR: u64 = 3;
    /// Synchronous exception from AArch32 EL0.
    pub const SYNC32: u64 = 4;
    /// IRQ/FIQ/SError from AArch32 EL0.
    pub const ASYNC32: u64 = 5;
}

/// Bytes of EL2 stack per physical CPU.
pub const STACK_SIZE: usize = 128 * 1024;
/// Most physical CPUs the image has stacks for.
pub const MAX_CPUS: usize = 8;

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
    .quad   {telemetry}             // res2: the telemetry block (stratum_abi::telemetry)
    .quad   0, 0
    .ascii  "ARM\x64"
    .long   0

primary_entry:
    mov     x19, x0                 // host DTB
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    park
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    b.ne    park                    // not at our link address: nothing safe to do
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  ldr     x1, ={stacks}
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
    bl      el2_mmu_enable
    ldr     x1, =el2_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      boot_secondary
park:
    wfe
    b       park

// Identity map: L1 table of 1 GiB blocks; turn on the MMU and caches.
el2_mmu_on:
    ldr     x0, ={l1}
    movz    x2, #0x0405             // block | AttrIndx 1 (device) | AF
    movk    x2, #0x0040, lsl #48    // XN
    str     x2, [x0]
    mov     x1, #1
    mov     x3, #0x0701             // block | AttrIndx 0 (normal) | SH inner | AF
3:  lsl     x4, x1, #30
    orr     x4, x4, x3
    str     x4, [x0, x1, lsl #3]
    add     x1, x1, #1
    cmp     x1, #256
    b.lo    3b
    dsb     sy
// Every CPU: point EL2 translation at the shared table, turn MMU and caches on.
el2_mmu_enable:
    ldr     x0, ={l1}
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

// Enters the guest whose frame TPIDR_EL2 names, on a fresh stack (x0 = stack top).
.global enter_guest
enter_guest:
    mov     sp, x0
    b       guest_resume

.macro hyp_fault kind
    .balign 0x80
    sub     sp, sp, #(32 * 8)
    stp     x0, x1, [sp]
    mov     x0, #\kind
    mov     x1, sp
    b       hyp_fault_common
.endm

.macro guest_exit kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       guest_exit_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    hyp_fault 0                     // current EL, SP_EL0
    hyp_fault 1
    hyp_fault 2
    hyp_fault 3
    hyp_fault 4                     // current EL, SP_EL2
    hyp_fault 5
    hyp_fault 6
    hyp_fault 7
    guest_exit {sync}               // lower EL, AArch64
    guest_exit {irq}
    guest_exit {fiq}
    guest_exit {serror}
    guest_exit {sync32}             // lower EL, AArch32
    guest_exit {async32}
    guest_exit {async32}
    guest_exit {async32}

hyp_fault_common:
    stp     x2, x3, [sp, #16]
    stp     x29, x30, [sp, #(29 * 8)]
    bl      hyp_fault
    b       park

guest_exit_common:
    mrs     x0, tpidr_el2
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0]
    bl      handle_guest_exit
guest_resume:
    mrs     x0, tpidr_el2
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0]
    eret
    dsb     nsh                     // no straight-line speculation past eret
    isb
"#,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    l1 = sym EL2_L1_TABLE,
    telemetry = sym crate::telemetry::BLOCK,
    sync = const kind::SYNC,
    irq = const kind::IRQ,
    fiq = const kind::FIQ,
    serror = const kind::SERROR,
    sync32 = const kind::SYNC32,
    async32 = const kind::ASYNC32,
);

/// Per-CPU EL2 stacks (CPU n uses `STACKS[n]`, growing down from its end).
#[repr(C, align(16))]
pub struct Stacks(pub [[u8; STACK_SIZE]; MAX_CPUS]);

/// The EL2 stacks. Only touched by assembly and through `stack_top`.
#[unsafe(no_mangle)]
pub static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// EL2's level-1 translation table, filled by `el2_mmu_on`.
#[repr(C, align(4096))]
pub struct L1Table(pub [u64; 512]);

/// The EL2 translation table. Only touched by assembly before the MMU is on.
#[unsafe(no_mangle)]
pub static mut EL2_L1_TABLE: L1Table = L1Table([0; 512]);

/// Address one past the top of CPU `cpu`'s EL2 stack.
pub fn stack_top(cpu: usize) -> usize {
    assert!(cpu < MAX_CPUS, "CPU index {cpu} beyond MAX_CPUS");
    // Taking the address of a static does not read or write it.
    let base = core::ptr::addr_of!(STACKS) as usize;
    base + (cpu + 1) * STACK_SIZE
}

unsafe extern "C" {
    /// Switches to the stack whose top is `stack_top` and enters the guest
    /// whose frame `TPIDR_EL2` points to.
    pub fn enter_guest(stack_top: usize) -> !;
    /// Where secondary CPUs start (physical = virtual address), x0 = index.
    pub fn secondary_entry();
}
