//! Calls to the firmware below EL2 (PSCI and SMCCC), through `SMC` or `HVC`
//! as the host device tree says.

/// How firmware is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `SMC #0` (EL3 firmware).
    Smc,
    /// `HVC #0` (only meaningful below a higher hypervisor; unusual at EL2).
    Hvc,
}

/// Makes an SMCCC call with arguments x0..x3 and returns x0..x3.
pub fn call(conduit: Conduit, args: [u64; 4]) -> [u64; 4] {
    #[cfg(target_arch = "aarch64")]
    {
        let (mut r0, mut r1, mut r2, mut r3) = (args[0], args[1], args[2], args[3]);
        match conduit {
            // SAFETY: an SMCCC call preserves x18-x30 and SP; x4-x17 may be
            // clobbered (SMCCC 1.2), which the clobber list states.
            Conduit::Smc => unsafe {
                core::arch::asm!("smc #0",
                    inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                    out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                    out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                    out("x16") _, out("x17") _, options(nostack));
            },
            // SAFETY: as above.
            Conduit::Hvc => unsafe {
                core::arch::asm!("hvc #0",
                    inout("x0") r0, inout("x1") r1, inout("x2") r2, inout("x3") r3,
                    out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                    out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                    out("x16") _, out("x17") _, options(nostack));
            },
        }
        [r0, r1, r2, r3]
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        let _ = (conduit, args);
        [u64::MAX; 4]
    }
}
