//! What this build of the hypervisor can run, so that the host tool rejects
//! a system it cannot run before anything starts (and says why), instead of
//! the hypervisor refusing it at boot. The boot bundle format
//! ([`crate::bundle`]) allows more VMs than [`RUNNING_VMS`]; everything else
//! here is also a bound [`crate::bundle::Bundle::parse`] enforces.

/// vCPUs one VM may have.
pub const VCPUS_PER_VM: u32 = 8;
/// VMs one system may run at once.
pub const RUNNING_VMS: usize = 8;
/// Physical CPUs the hypervisor schedules vCPUs on: indices `0..PHYSICAL_CPUS`
/// (a bundle naming a higher one is rejected).
pub const PHYSICAL_CPUS: u32 = 8;
/// Shared-memory channels one VM may be an end of.
pub const CHANNELS_PER_VM: usize = 16;
/// Passthrough devices one VM may own.
pub const DEVICES_PER_VM: usize = 4;
/// Interrupts (SPIs) one passthrough device may have.
pub const IRQS_PER_DEVICE: usize = 4;
