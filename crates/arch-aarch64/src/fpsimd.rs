//! A guest's FP/SIMD register file (V0–V31, FPCR, FPSR), saved and restored
//! by EL2 when two vCPUs share a physical CPU.
//!
//! EL2 is built soft-float and never uses these registers itself, so a
//! vCPU's FP state stays live in the CPU until another vCPU on the same CPU
//! touches FP (trapped through `CPTR_EL2.TFP`): only then is it switched.

/// V0–V31, FPSR and FPCR.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct FpState {
    /// V0–V31, 16 bytes each.
    pub v: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

const _: () = assert!(core::mem::size_of::<FpState>() == 32 * 16 + 16);

/// Saves the CPU's FP/SIMD registers into `state`. FP must not be trapped at
/// EL2 (`CPTR_EL2.TFP` clear) when this runs.
pub fn save(state: &mut FpState) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: stores 528 bytes into `state`, which is exactly that large and
    // 16-byte aligned; reads only FP registers, which EL2 does not use.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "stp q0, q1, [{p}, #0]",
            "stp q2, q3, [{p}, #32]",
            "stp q4, q5, [{p}, #64]",
            "stp q6, q7, [{p}, #96]",
            "stp q8, q9, [{p}, #128]",
            "stp q10, q11, [{p}, #160]",
            "stp q12, q13, [{p}, #192]",
            "stp q14, q15, [{p}, #224]",
            "stp q16, q17, [{p}, #256]",
            "stp q18, q19, [{p}, #288]",
            "stp q20, q21, [{p}, #320]",
            "stp q22, q23, [{p}, #352]",
            "stp q24, q25, [{p}, #384]",
            "stp q26, q27, [{p}, #416]",
            "stp q28, q29, [{p}, #448]",
            "stp q30, q31, [{p}, #480]",
            "mrs {t}, fpsr",
            "str {t}, [{p}, #512]",
            "mrs {t}, fpcr",
            "str {t}, [{p}, #520]",
            p = in(reg) core::ptr::from_mut(state),
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake::save(state);
}

/// Loads `state` into the CPU's FP/SIMD registers. FP must not be trapped at
/// EL2 when this runs.
pub fn restore(state: &FpState) {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: loads 528 bytes from `state`; writes only FP registers, which
    // EL2 does not use (the guest's own state).
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "ldp q0, q1, [{p}, #0]",
            "ldp q2, q3, [{p}, #32]",
            "ldp q4, q5, [{p}, #64]",
            "ldp q6, q7, [{p}, #96]",
            "ldp q8, q9, [{p}, #128]",
            "ldp q10, q11, [{p}, #160]",
            "ldp q12, q13, [{p}, #192]",
            "ldp q14, q15, [{p}, #224]",
            "ldp q16, q17, [{p}, #256]",
            "ldp q18, q19, [{p}, #288]",
            "ldp q20, q21, [{p}, #320]",
            "ldp q22, q23, [{p}, #352]",
            "ldp q24, q25, [{p}, #384]",
            "ldp q26, q27, [{p}, #416]",
            "ldp q28, q29, [{p}, #448]",
            "ldp q30, q31, [{p}, #480]",
            "ldr {t}, [{p}, #512]",
            "msr fpsr, {t}",
            "ldr {t}, [{p}, #520]",
            "msr fpcr, {t}",
            p = in(reg) core::ptr::from_ref(state),
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
    #[cfg(not(target_arch = "aarch64"))]
    fake::restore(state);
}

#[cfg(not(target_arch = "aarch64"))]
mod fake {
    use super::FpState;

    std::thread_local! {
        static LIVE: core::cell::RefCell<FpState> = core::cell::RefCell::new(FpState::default());
    }

    pub fn save(state: &mut FpState) {
        LIVE.with(|l| *state = *l.borrow());
    }

    pub fn restore(state: &FpState) {
        LIVE.with(|l| *l.borrow_mut() = *state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_then_save_round_trips() {
        let mut a = FpState::default();
        for (i, v) in a.v.iter_mut().enumerate() {
            *v = (i as u128) << 64 | 0xabcd;
        }
        a.fpsr = 0x1f;
        a.fpcr = 0x0300_0000;
        restore(&a);
        let mut b = FpState::default();
        save(&mut b);
        assert_eq!(a.v, b.v);
        assert_eq!((a.fpsr, a.fpcr), (b.fpsr, b.fpcr));
    }
}
