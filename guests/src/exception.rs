//! EL1 exception vectors and the "expected abort" mechanism.
//!
//! The 16-entry table (`stratum_vectors`, 2 KiB aligned) saves the general
//! registers, `ELR_EL1`, `SPSR_EL1` and all of FP/SIMD on the current (SP_EL1)
//! stack, then calls `stratum_exception` with the frame and the vector offset
//! it came through. The fourth instruction of every vector reads `CNTVCT_EL0`
//! into the frame, so IRQ latency can be measured from the vector entry
//! ([`irq_entry_counter`]). Saving FP/SIMD matters: an abort is taken inside an inline
//! `asm!` block, and the compiler may keep live values in vector registers
//! across it.
//!
//! Normally every exception is unexpected: the guest prints
//! `STRATUM-TEST FAIL <guest>: unexpected exception ESR=… ELR=… FAR=…` and powers
//! off. [`expect_abort`] arms a one-shot mode in which the next synchronous
//! exception is recorded and execution resumes at `ELR + 4`. IRQs from the
//! current EL go to [`crate::irq::dispatch`] (ack, handler, EOI); an IRQ
//! nobody expects fails the test there, naming its INTID. The frame is saved
//! before any Rust code runs, so an IRQ handler may unmask IRQs and be
//! preempted.

use crate::global::{Global, GlobalArray};
use crate::sysreg;

/// Size of [`ExceptionFrame`] as the assembly lays it out.
const FRAME_SIZE: usize = 800;

core::arch::global_asm!(
    r#"
    .section .text.vectors, "ax"
    .balign 2048
    .global stratum_vectors
stratum_vectors:
    .irp off, 0x000, 0x080, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0x400, 0x480, 0x500, 0x580, 0x600, 0x680, 0x700, 0x780
    .balign 128
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    isb
    mrs     x0, cntvct_el0
    str     x0, [sp, #264]
    mov     x0, #\off
    b       stratum_exception_common
    .endr

stratum_exception_common:
    mov     x1, x0
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x30, x2, [sp, #240]
    str     x3, [sp, #256]
    add     x2, sp, #272
    stp     q0, q1, [x2, #0]
    stp     q2, q3, [x2, #32]
    stp     q4, q5, [x2, #64]
    stp     q6, q7, [x2, #96]
    stp     q8, q9, [x2, #128]
    stp     q10, q11, [x2, #160]
    stp     q12, q13, [x2, #192]
    stp     q14, q15, [x2, #224]
    stp     q16, q17, [x2, #256]
    stp     q18, q19, [x2, #288]
    stp     q20, q21, [x2, #320]
    stp     q22, q23, [x2, #352]
    stp     q24, q25, [x2, #384]
    stp     q26, q27, [x2, #416]
    stp     q28, q29, [x2, #448]
    stp     q30, q31, [x2, #480]
    mrs     x3, fpsr
    mrs     x4, fpcr
    str     x3, [sp, #784]
    str     x4, [sp, #792]
    mov     x0, sp
    bl      stratum_exception
    add     x2, sp, #272
    ldr     x3, [sp, #784]
    ldr     x4, [sp, #792]
    msr     fpsr, x3
    msr     fpcr, x4
    ldp     q0, q1, [x2, #0]
    ldp     q2, q3, [x2, #32]
    ldp     q4, q5, [x2, #64]
    ldp     q6, q7, [x2, #96]
    ldp     q8, q9, [x2, #128]
    ldp     q10, q11, [x2, #160]
    ldp     q12, q13, [x2, #192]
    ldp     q14, q15, [x2, #224]
    ldp     q16, q17, [x2, #256]
    ldp     q18, q19, [x2, #288]
    ldp     q20, q21, [x2, #320]
    ldp     q22, q23, [x2, #352]
    ldp     q24, q25, [x2, #384]
    ldp     q26, q27, [x2, #416]
    ldp     q28, q29, [x2, #448]
    ldp     q30, q31, [x2, #480]
    ldp     x30, x2, [sp, #240]
    ldr     x3, [sp, #256]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret

    .section .text, "ax"
    .global stratum_run_on_sp_el0
    .type stratum_run_on_sp_el0, %function
stratum_run_on_sp_el0:
    stp     x29, x30, [sp, #-16]!
    mov     x29, sp
    msr     sp_el0, x2
    msr     spsel, #0
    mov     x3, x0
    mov     x0, x1
    blr     x3
    msr     spsel, #1
    ldp     x29, x30, [sp], #16
    ret
    .size stratum_run_on_sp_el0, . - stratum_run_on_sp_el0
"#,
    frame = const FRAME_SIZE,
);

/// The state saved by the vector on exception entry (layout fixed by the asm).
#[repr(C)]
pub struct ExceptionFrame {
    /// `x0`..`x30` of the interrupted context.
    pub x: [u64; 31],
    /// `ELR_EL1`: where `eret` returns to. The handler may change it.
    pub elr: u64,
    /// `SPSR_EL1`: the interrupted `PSTATE`.
    pub spsr: u64,
    /// `CNTVCT_EL0` read by the vector itself, the fourth instruction after
    /// entry (for the interrupt-latency benchmark).
    pub entry_counter: u64,
    /// `q0`..`q31`.
    pub q: [u128; 32],
    /// `FPSR`.
    pub fpsr: u64,
    /// `FPCR`.
    pub fpcr: u64,
}

const _: () = assert!(core::mem::size_of::<ExceptionFrame>() == FRAME_SIZE);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, elr) == 248);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, entry_counter) == 264);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, q) == 272);
const _: () = assert!(core::mem::offset_of!(ExceptionFrame, fpsr) == 784);

/// Vector offset of "current EL with SP_EL0, synchronous".
pub const VECTOR_CURRENT_SP0_SYNC: u64 = 0x000;
/// Vector offset of "current EL with SP_ELx, synchronous".
pub const VECTOR_CURRENT_SPX_SYNC: u64 = 0x200;
/// Vector offset of "current EL with SP_EL0, IRQ".
pub const VECTOR_CURRENT_SP0_IRQ: u64 = 0x080;
/// Vector offset of "current EL with SP_ELx, IRQ".
pub const VECTOR_CURRENT_SPX_IRQ: u64 = 0x280;
/// `ESR_ELx.EC` for a data abort taken without a change in exception level.
pub const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
/// Data fault status code: synchronous external abort, not on a table walk.
pub const DFSC_SYNC_EXTERNAL: u64 = 0x10;

/// What the handler saw for one exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakenException {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1` (only meaningful for aborts).
    pub far: u64,
    /// `ELR_EL1` as taken (before the handler skipped the instruction).
    pub elr: u64,
    /// `SPSR_EL1`.
    pub spsr: u64,
    /// Offset from `VBAR_EL1` of the vector entry used.
    pub vector_offset: u64,
}

impl TakenException {
    /// `ESR.EC`, the exception class.
    pub fn ec(&self) -> u64 {
        (self.esr >> 26) & 0x3f
    }

    /// `ESR.IL`: 32-bit instruction.
    pub fn il(&self) -> bool {
        self.esr & (1 << 25) != 0
    }

    /// `ESR.ISS.DFSC` / `IFSC`.
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }

    /// `ESR.ISS.WnR`: the abort came from a write.
    pub fn wnr(&self) -> bool {
        self.esr & (1 << 6) != 0
    }

    /// `ESR.ISS.ISV`: the syndrome describes the access.
    pub fn isv(&self) -> bool {
        self.esr & (1 << 24) != 0
    }

    /// `SPSR.M[3:0]`: the mode the exception was taken from.
    pub fn from_mode(&self) -> u64 {
        self.spsr & 0xf
    }
}

/// Per CPU (`MPIDR_EL1.Aff0`, up to 8): the virtual counter at the entry of
/// the last IRQ vector taken.
static IRQ_ENTRY_COUNTER: GlobalArray<u64, 8> = GlobalArray::new(0);

/// This CPU's index for per-CPU runtime state (`MPIDR_EL1.Aff0`, modulo 8).
fn cpu_slot() -> usize {
    (sysreg::mpidr_el1() & 7) as usize
}

/// The virtual counter as the vector read it on entry of the IRQ this CPU
/// is handling (or handled last): the interrupt's arrival, for latency
/// measurements, without the cost of the frame save and the GIC acknowledge.
pub fn irq_entry_counter() -> u64 {
    IRQ_ENTRY_COUNTER.get(cpu_slot())
}

/// A handler for synchronous exceptions from EL0 ([`set_lower_el_hook`]).
pub type LowerElHook = fn(&mut ExceptionFrame, &TakenException) -> bool;

/// The guest's handler for synchronous exceptions from EL0, if any.
static LOWER_EL_HOOK: Global<Option<LowerElHook>> = Global::new(None);
/// Vector offset of "lower EL, AArch64, synchronous".
pub const VECTOR_LOWER_A64_SYNC: u64 = 0x400;

/// Installs (or, with `None`, removes) a handler for synchronous exceptions
/// taken from EL0: it sees the frame and may change where and how `eret`
/// returns; returning `false` leaves the exception unexpected.
pub fn set_lower_el_hook(hook: Option<LowerElHook>) {
    LOWER_EL_HOOK.set(hook);
}

/// Armed by [`expect_abort`]: the next synchronous exception is recorded.
static ARMED: Global<bool> = Global::new(false);
/// What the handler recorded while armed.
static RECORD: Global<Option<TakenException>> = Global::new(None);

/// Runs `f` with the handler armed for one synchronous exception, and returns
/// what it recorded (`None` if `f` took no exception). The faulting instruction
/// is skipped (`ELR + 4`), so whatever it would have loaded is garbage.
pub fn expect_abort(f: impl FnOnce()) -> Option<TakenException> {
    RECORD.set(None);
    ARMED.set(true);
    f();
    ARMED.set(false);
    RECORD.get()
}

unsafe extern "C" {
    fn stratum_run_on_sp_el0(f: extern "C" fn(usize), arg: usize, stack_top: usize);
}

/// Runs `f(arg)` at EL1 with `SPSel = 0` (on `SP_EL0`), on the stack whose
/// highest address is `stack_top`, then switches back to `SP_EL1`.
///
/// # Safety
/// `stack_top` must be the 16-byte-aligned end of memory that nothing else
/// uses while `f` runs, large enough for `f`.
pub unsafe fn run_on_sp_el0(f: extern "C" fn(usize), arg: usize, stack_top: usize) {
    // SAFETY: the caller provides a private, aligned stack; the trampoline saves
    // its link register on SP_EL1, which `f` does not touch.
    unsafe { stratum_run_on_sp_el0(f, arg, stack_top) }
}

/// Rust side of the vectors. `frame` is the saved state on the SP_EL1 stack.
///
/// # Safety
/// Only the vector code calls this, with `frame` pointing at the live frame.
#[unsafe(no_mangle)]
unsafe extern "C" fn stratum_exception(frame: *mut ExceptionFrame, vector_offset: u64) {
    // SAFETY: the vector passes a pointer to the frame it just built on the
    // stack; nothing else refers to it until the handler returns.
    let frame = unsafe { &mut *frame };
    let taken = TakenException {
        esr: sysreg::esr_el1(),
        far: sysreg::far_el1(),
        elr: frame.elr,
        spsr: frame.spsr,
        vector_offset,
    };
    let synchronous = vector_offset & 0x180 == 0;
    // IRQ from the current EL (SP_EL0 or SP_ELx): the GIC driver's business.
    if vector_offset == VECTOR_CURRENT_SP0_IRQ || vector_offset == VECTOR_CURRENT_SPX_IRQ {
        IRQ_ENTRY_COUNTER.set(cpu_slot(), frame.entry_counter);
        crate::irq::dispatch();
        return;
    }
    if vector_offset == VECTOR_LOWER_A64_SYNC
        && let Some(hook) = LOWER_EL_HOOK.get()
        && hook(frame, &taken)
    {
        return;
    }
    if synchronous && ARMED.get() {
        ARMED.set(false);
        RECORD.set(Some(taken));
        frame.elr = frame.elr.wrapping_add(4);
        return;
    }
    crate::report::fail(format_args!(
        "unexpected exception ESR={:#x} ELR={:#x} FAR={:#x} SPSR={:#x} vector=+{:#05x}",
        taken.esr, taken.elr, taken.far, taken.spsr, taken.vector_offset
    ))
}
