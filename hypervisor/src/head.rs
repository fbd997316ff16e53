//! The binary's end of the contract with the entry code and vectors in
//! `stratum_arch` ([`stratum_arch::head`], [`stratum_arch::vectors`]).
//!
//! The assembly there calls this binary's `boot_primary`, `boot_secondary`,
//! `handle_guest_exit` and `hyp_fault` by link name and puts the address of
//! `stratum_telemetry` into the `Image` header. The checks below hold each
//! of those functions to the signature the assembly expects, so a changed
//! parameter list fails to compile instead of corrupting registers. No
//! module uses this one: the rest of the binary names the arch crate's
//! items directly.

const _: stratum_arch::head::BootPrimary = crate::boot_primary;
const _: stratum_arch::head::BootSecondary = crate::boot_secondary;
const _: stratum_arch::vectors::GuestExitHandler<crate::vm::VcpuTag> =
    crate::exit::handle_guest_exit;
const _: stratum_arch::vectors::HypFaultHandler = crate::panic::hyp_fault;
