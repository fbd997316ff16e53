//! Arm semihosting, used only to leave QEMU with an exit status.
//!
//! The host tool enables semihosting and says so in the boot bundle; on real
//! hardware `HLT #0xF000` would be undefined, so callers must check first.

/// `ADP_Stopped_ApplicationExit`: the reason code for a normal exit.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;
/// `SYS_EXIT` operation number.
const SYS_EXIT: u64 = 0x18;

/// Asks the debugger (QEMU) to exit with `status`. Returns only if the
/// request was ignored.
///
/// # Safety
/// Semihosting must be enabled (else `HLT` raises an undefined-instruction
/// exception at EL2).
pub unsafe fn exit(status: u32) {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status)];
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller guarantees semihosting is enabled; the parameter
    // block lives on this stack for the duration of the call.
    unsafe {
        core::arch::asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(),
            options(nostack));
    }
    #[cfg(not(target_arch = "aarch64"))]
    let _ = (block, SYS_EXIT);
}
