//! EL2's exception vectors and the guest entry/exit path (the world
//! switch's general-purpose half).
//!
//! `TPIDR_EL2` names the running vCPU's [`GuestFrame`] whenever a guest
//! runs. A guest exit saves x0–x30 into that frame, calls
//! `handle_guest_exit(frame, kind)` on a fresh EL2 stack (the CPU's
//! [`crate::head::stack_top`]), then restores the frame named by
//! `TPIDR_EL2` — possibly another vCPU's — and `eret`s. EL2 holds no state
//! on its stack while a guest runs, so a handler that decides to run
//! something else never returns: it calls `enter_guest` with the stack
//! top, which drops whatever the stack held.
//!
//! Every instruction on this path counts (the bench measures exits in
//! executed instructions): a vector entry is three instructions before the
//! common save, the save and restore are 16 `stp`/`ldp` pairs each (ADR
//! 0003), and nothing else runs between the guest and the handler.
//!
//! An exception taken from EL2 itself (a hypervisor bug) saves a few
//! registers on the current stack, calls `hyp_fault(kind, frame)` and parks
//! the CPU should that ever return.
//!
//! # Contract with the binary that links this crate
//! The vectors call into the EL2 binary by link name; it must define:
//! - `handle_guest_exit`, a [`GuestExitHandler`]: handles one exit of the
//!   vCPU whose frame is `frame` (the value of `TPIDR_EL2`); `kind` is one
//!   of [`kind`]. Returning resumes the vCPU `TPIDR_EL2` names then, whose
//!   `ELR_EL2`/`SPSR_EL2` must be loaded.
//! - `hyp_fault`, a [`HypFaultHandler`]: an exception taken at EL2; `kind`
//!   is the vector slot (0–3 from EL2 with SP_EL0, 4–7 with SP_EL2; sync,
//!   IRQ, FIQ, SError in each group), `frame` the address of 32 saved
//!   doublewords holding x0–x3 and x29/x30 at their register numbers.
//!
//! The binary asserts those signatures at compile time by coercing its
//! functions to the type aliases below. The head code ([`crate::head`])
//! installs the table in `VBAR_EL2` on every CPU.

#[cfg(target_arch = "aarch64")]
use core::arch::global_asm;

/// The general-purpose registers of a guest vCPU, saved by the exit vector
/// and restored on entry, and whatever the binary keeps beside them (`T`).
/// The layout is fixed: the assembly stores `xN` at byte offset `8 * N`,
/// N = 0..=30, and never touches `tag`.
///
/// The tag is how the exit path knows whose exit it handles without a
/// lookup: the frame is what `TPIDR_EL2` names, so the binary keeps the
/// vCPU's identity (and, say, where its counters are) in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestFrame<T = ()> {
    /// x0–x30.
    pub x: [u64; 31],
    /// The binary's own words, after the registers.
    pub tag: T,
}

const _: () = {
    assert!(core::mem::size_of::<GuestFrame>() == 31 * 8);
    assert!(core::mem::offset_of!(GuestFrame, x) == 0);
    assert!(core::mem::offset_of!(GuestFrame<[u64; 2]>, x) == 0);
    // `stp`/`ldp` at 8-byte multiples need no more than 8-byte alignment.
    assert!(core::mem::align_of::<GuestFrame>() == 8);
};

/// Exit kinds passed to `handle_guest_exit` (the vector group taken from a
/// lower EL).
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

/// Signature of `handle_guest_exit` (see the module docs), for a binary
/// whose frames carry a tag of type `T`.
pub type GuestExitHandler<T = ()> = extern "C" fn(frame: *mut GuestFrame<T>, kind: u64);
/// Signature of `hyp_fault` (see the module docs).
pub type HypFaultHandler = extern "C" fn(kind: u64, frame: usize) -> !;

#[cfg(target_arch = "aarch64")]
global_asm!(
    r#"
.macro hyp_fault_vector kind
    .balign 0x80
    sub     sp, sp, #(32 * 8)
    stp     x0, x1, [sp]
    mov     x0, #\kind
    mov     x1, sp
    b       hyp_fault_common
.endm

.macro guest_exit_vector kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       guest_exit_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    hyp_fault_vector 0              // current EL, SP_EL0
    hyp_fault_vector 1
    hyp_fault_vector 2
    hyp_fault_vector 3
    hyp_fault_vector 4              // current EL, SP_EL2
    hyp_fault_vector 5
    hyp_fault_vector 6
    hyp_fault_vector 7
    guest_exit_vector {sync}        // lower EL, AArch64
    guest_exit_vector {irq}
    guest_exit_vector {fiq}
    guest_exit_vector {serror}
    guest_exit_vector {sync32}      // lower EL, AArch32
    guest_exit_vector {async32}
    guest_exit_vector {async32}
    guest_exit_vector {async32}

hyp_fault_common:
    stp     x2, x3, [sp, #16]
    stp     x29, x30, [sp, #(29 * 8)]
    bl      hyp_fault
    b       el2_park

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

// Enters the guest whose frame TPIDR_EL2 names, on a fresh stack (x0 = stack top).
.global enter_guest
enter_guest:
    mov     sp, x0
    b       guest_resume
"#,
    sync = const kind::SYNC,
    irq = const kind::IRQ,
    fiq = const kind::FIQ,
    serror = const kind::SERROR,
    sync32 = const kind::SYNC32,
    async32 = const kind::ASYNC32,
);

#[cfg(target_arch = "aarch64")]
unsafe extern "C" {
    /// Switches to the stack whose top is `stack_top` and enters the guest
    /// whose frame `TPIDR_EL2` points to: restores x0–x30 from it and
    /// `eret`s to `ELR_EL2` with `SPSR_EL2`.
    ///
    /// # Safety
    /// `TPIDR_EL2` must point to a live [`GuestFrame`] of the vCPU to run,
    /// its `ELR_EL2`/`SPSR_EL2` and its VM's stage 2 must be loaded on this
    /// CPU, and `stack_top` must be this CPU's [`crate::head::stack_top`]:
    /// nothing on the current stack may be needed again.
    pub fn enter_guest(stack_top: usize) -> !;
}
