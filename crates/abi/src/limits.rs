//! What this build of the hypervisor can run, so that the host tool rejects
//! a system it cannot run before anything starts (and says why), instead of
//! the hypervisor refusing it at boot.

/// vCPUs one VM may have: one per physical CPU, statically placed.
pub const VCPUS_PER_VM: u32 = 8;
/// VMs one system may run at once in this version (several VMs are planned).
pub const RUNNING_VMS: usize = 1;
