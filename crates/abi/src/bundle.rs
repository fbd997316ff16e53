//! The boot bundle: one little-endian blob that carries the system
//! description and every guest image from the host tool to the hypervisor.
//!
//! The host tool passes it as the hypervisor's "initrd" (QEMU `-initrd`, or
//! U-Boot's `booti` initrd argument); the hypervisor finds it through the host
//! device tree's `/chosen/linux,initrd-{start,end}`. It stays in memory as the
//! pristine copy used when a VM restarts.
//!
//! Layout (every integer little-endian; offsets are from the start of the bundle):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"STRATBN1"` |
//! | 8 | 4 | format version ([`VERSION`]) |
//! | 12 | 4 | number of VM records |
//! | 16 | 8 | total size in bytes |
//! | 24 | 4 | flags ([`FLAG_SEMIHOSTING_EXIT`], [`FLAG_SELFTEST_EL2_FAULT`]) |
//! | 28 | 4 | reserved, zero |
//! | 32 | [`VM_RECORD_SIZE`] × n | VM records |
//! | … | | blobs (kernels, initrds, command lines), each at a 4 KiB-aligned offset |
//!
//! A VM record ([`VM_RECORD_SIZE`] bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | name, UTF-8, NUL-padded |
//! | 32 | 4 | vCPU count |
//! | 36 | 4 | kernel kind ([`KernelKind`]) |
//! | 40 | 8 | guest-physical RAM base |
//! | 48 | 8 | RAM size |
//! | 56 | 8 | kernel blob offset |
//! | 64 | 8 | kernel blob size |
//! | 72 | 8 | kernel load offset from the RAM base |
//! | 80 | 8 | entry point offset from the RAM base |
//! | 88 | 8 | kernel footprint: bytes from the load offset the kernel owns (image + bss) |
//! | 96 | 8 | initrd blob offset (0 when absent) |
//! | 104 | 8 | initrd size (0 when absent) |
//! | 112 | 8 | command line offset |
//! | 120 | 8 | command line length (no NUL) |
//! | 128 | 128 | reserved, zero |

use crate::bytes::{le_u32, le_u64};

/// Magic at offset 0.
pub const MAGIC: [u8; 8] = *b"STRATBN1";
/// The only format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Size of the header before the VM records.
pub const HEADER_SIZE: usize = 32;
/// Size of one VM record.
pub const VM_RECORD_SIZE: usize = 256;
/// Alignment of every blob in the bundle.
pub const BLOB_ALIGN: usize = 4096;
/// Longest VM name, in bytes.
pub const NAME_LEN: usize = 32;
/// Most VMs one bundle may describe.
pub const MAX_VMS: usize = 16;
/// Header flag: the hypervisor may stop QEMU with an exit status through
/// semihosting (`HLT #0xF000`). Set by the host tool, which enables semihosting.
pub const FLAG_SEMIHOSTING_EXIT: u32 = 1 << 0;
/// Header flag, self-test: right after the banner the hypervisor takes a
/// deliberate EL2 data abort (a load from an address EL2 does not map), to
/// prove that its own fault vector and the panic epitaph work. Only the host
/// tool sets it (`stratum run --selftest-el2-fault`, hidden from `--help`);
/// nothing a guest does can.
pub const FLAG_SELFTEST_EL2_FAULT: u32 = 1 << 1;

/// How the host tool prepared a kernel (informational for the hypervisor: the
/// load and entry offsets already say everything it needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum KernelKind {
    /// A Linux arm64 `Image` (header honoured).
    LinuxImage = 0,
    /// A raw binary, loaded at RAM + 0x80000.
    Raw = 1,
    /// An ELF whose loadable segments were flattened by the host tool.
    Elf = 2,
}

impl KernelKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::LinuxImage),
            1 => Some(Self::Raw),
            2 => Some(Self::Elf),
            _ => None,
        }
    }
}

/// Why a bundle was rejected. The variant docs are the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The bundle is shorter than its header or than the size it declares.
    Truncated,
    /// The bundle does not start with the Stratum magic.
    BadMagic,
    /// The bundle's format version is not one this hypervisor reads.
    UnsupportedVersion(u32),
    /// The bundle describes no VM, or more than `MAX_VMS`.
    BadVmCount(u32),
    /// A VM record points outside the bundle.
    BlobOutOfBounds {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM name is empty, too long, or not UTF-8.
    BadName {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM record names an unknown kernel kind.
    BadKernelKind {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM record has zero vCPUs or zero memory.
    BadResources {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM's kernel (load offset + footprint) does not fit in its memory, or
    /// the entry point lies outside the loaded kernel.
    KernelDoesNotFit {
        /// Index of the VM record.
        vm: usize,
    },
    /// A VM's command line is not UTF-8.
    BadCmdline {
        /// Index of the VM record.
        vm: usize,
    },
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "boot bundle truncated"),
            Self::BadMagic => write!(f, "boot bundle has a bad magic (not a Stratum bundle)"),
            Self::UnsupportedVersion(v) => write!(f, "boot bundle version {v} is not supported"),
            Self::BadVmCount(n) => write!(f, "boot bundle describes {n} VMs (1..={MAX_VMS})"),
            Self::BlobOutOfBounds { vm } => write!(f, "VM {vm}: a blob lies outside the bundle"),
            Self::BadName { vm } => write!(f, "VM {vm}: bad name"),
            Self::BadKernelKind { vm } => write!(f, "VM {vm}: unknown kernel kind"),
            Self::BadResources { vm } => write!(f, "VM {vm}: zero vCPUs or zero memory"),
            Self::KernelDoesNotFit { vm } => write!(f, "VM {vm}: kernel does not fit in memory"),
            Self::BadCmdline { vm } => write!(f, "VM {vm}: command line is not UTF-8"),
        }
    }
}

/// A parsed, validated view of a bundle. Borrowed: nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    flags: u32,
    vm_count: usize,
}

/// One VM as the bundle describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmImage<'a> {
    /// The VM's name.
    pub name: &'a str,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// How the kernel was prepared.
    pub kernel_kind: KernelKind,
    /// Guest-physical base of RAM.
    pub mem_base: u64,
    /// RAM size in bytes.
    pub mem_size: u64,
    /// The kernel bytes to copy to `mem_base + kernel_load_offset`.
    pub kernel: &'a [u8],
    /// Offset of the kernel's load address from the RAM base.
    pub kernel_load_offset: u64,
    /// Offset of the entry point from the RAM base.
    pub entry_offset: u64,
    /// Bytes from the load offset that the kernel owns (image plus bss).
    pub kernel_footprint: u64,
    /// The initrd, if any.
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line.
    pub cmdline: &'a str,
}

fn blob(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    b.get(off..off.checked_add(len)?)
}

impl<'a> Bundle<'a> {
    /// Parses and validates a bundle. Every record is checked here, so
    /// [`Bundle::vm`] cannot fail afterwards.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() < HEADER_SIZE {
            return Err(BundleError::Truncated);
        }
        if bytes[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = le_u32(bytes, 8).ok_or(BundleError::Truncated)?;
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let count = le_u32(bytes, 12).ok_or(BundleError::Truncated)?;
        if count == 0 || count as usize > MAX_VMS {
            return Err(BundleError::BadVmCount(count));
        }
        let total = le_u64(bytes, 16).ok_or(BundleError::Truncated)?;
        let total = usize::try_from(total).map_err(|_| BundleError::Truncated)?;
        if total > bytes.len() || total < HEADER_SIZE + count as usize * VM_RECORD_SIZE {
            return Err(BundleError::Truncated);
        }
        let flags = le_u32(bytes, 24).ok_or(BundleError::Truncated)?;
        let bundle = Self {
            bytes: &bytes[..total],
            flags,
            vm_count: count as usize,
        };
        for i in 0..bundle.vm_count {
            bundle.decode_vm(i)?;
        }
        Ok(bundle)
    }

    /// Header flags (`FLAG_*`).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.vm_count
    }

    /// The whole bundle's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// VM `i`, or `None` when `i >= vm_count()`.
    pub fn vm(&self, i: usize) -> Option<VmImage<'a>> {
        if i >= self.vm_count {
            return None;
        }
        self.decode_vm(i).ok()
    }

    fn decode_vm(&self, i: usize) -> Result<VmImage<'a>, BundleError> {
        let b = self.bytes;
        let r = HEADER_SIZE + i * VM_RECORD_SIZE;
        let oob = BundleError::BlobOutOfBounds { vm: i };
        let u64_at = |o: usize| le_u64(b, r + o).ok_or(oob);
        let u32_at = |o: usize| le_u32(b, r + o).ok_or(oob);

        let raw_name = b.get(r..r + NAME_LEN).ok_or(oob)?;
        let name_len = raw_name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let name = core::str::from_utf8(&raw_name[..name_len])
            .map_err(|_| BundleError::BadName { vm: i })?;
        if name.is_empty() {
            return Err(BundleError::BadName { vm: i });
        }
        let vcpus = u32_at(32)?;
        let kernel_kind =
            KernelKind::from_u32(u32_at(36)?).ok_or(BundleError::BadKernelKind { vm: i })?;
        let mem_base = u64_at(40)?;
        let mem_size = u64_at(48)?;
        if vcpus == 0 || mem_size == 0 || mem_base.checked_add(mem_size).is_none() {
            return Err(BundleError::BadResources { vm: i });
        }
        let kernel = blob(b, u64_at(56)?, u64_at(64)?).ok_or(oob)?;
        let kernel_load_offset = u64_at(72)?;
        let entry_offset = u64_at(80)?;
        let kernel_footprint = u64_at(88)?;
        let end = kernel_load_offset
            .checked_add(kernel_footprint)
            .ok_or(BundleError::KernelDoesNotFit { vm: i })?;
        if kernel_footprint < kernel.len() as u64
            || end > mem_size
            || entry_offset < kernel_load_offset
            || entry_offset >= end
        {
            return Err(BundleError::KernelDoesNotFit { vm: i });
        }
        let (initrd_off, initrd_len) = (u64_at(96)?, u64_at(104)?);
        let initrd = if initrd_len == 0 {
            None
        } else {
            Some(blob(b, initrd_off, initrd_len).ok_or(oob)?)
        };
        let cmdline_bytes = blob(b, u64_at(112)?, u64_at(120)?).ok_or(oob)?;
        let cmdline =
            core::str::from_utf8(cmdline_bytes).map_err(|_| BundleError::BadCmdline { vm: i })?;
        Ok(VmImage {
            name,
            vcpus,
            kernel_kind,
            mem_base,
            mem_size,
            kernel,
            kernel_load_offset,
            entry_offset,
            kernel_footprint,
            initrd,
            cmdline,
        })
    }
}

/// Encodes a bundle (host side).
#[cfg(any(test, feature = "alloc"))]
pub fn encode(flags: u32, vms: &[VmImage<'_>]) -> alloc::vec::Vec<u8> {
    use alloc::vec::Vec;
    fn align(v: &mut Vec<u8>) {
        let padded = v.len().div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
        v.resize(padded, 0);
    }
    fn put(v: &mut Vec<u8>, blob: &[u8]) -> (u64, u64) {
        align(v);
        let off = v.len() as u64;
        v.extend_from_slice(blob);
        (off, blob.len() as u64)
    }
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(vms.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // total, patched below
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.resize(HEADER_SIZE + vms.len() * VM_RECORD_SIZE, 0);
    for (i, vm) in vms.iter().enumerate() {
        let kernel = put(&mut out, vm.kernel);
        let initrd = match vm.initrd {
            Some(bytes) => put(&mut out, bytes),
            None => (0, 0),
        };
        let cmdline = put(&mut out, vm.cmdline.as_bytes());
        let r = HEADER_SIZE + i * VM_RECORD_SIZE;
        let rec = &mut out[r..r + VM_RECORD_SIZE];
        let name = vm.name.as_bytes();
        let n = name.len().min(NAME_LEN);
        rec[..n].copy_from_slice(&name[..n]);
        let fields: [(usize, u64); 13] = [
            (40, vm.mem_base),
            (48, vm.mem_size),
            (56, kernel.0),
            (64, kernel.1),
            (72, vm.kernel_load_offset),
            (80, vm.entry_offset),
            (88, vm.kernel_footprint),
            (96, initrd.0),
            (104, initrd.1),
            (112, cmdline.0),
            (120, cmdline.1),
            (128, 0),
            (136, 0),
        ];
        rec[32..36].copy_from_slice(&vm.vcpus.to_le_bytes());
        rec[36..40].copy_from_slice(&(vm.kernel_kind as u32).to_le_bytes());
        for (at, val) in fields {
            rec[at..at + 8].copy_from_slice(&val.to_le_bytes());
        }
    }
    align(&mut out);
    let total = out.len() as u64;
    out[16..24].copy_from_slice(&total.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(kernel: &'a [u8], initrd: Option<&'a [u8]>) -> VmImage<'a> {
        VmImage {
            name: "linux",
            vcpus: 2,
            kernel_kind: KernelKind::LinuxImage,
            mem_base: 0x4000_0000,
            mem_size: 0x1000_0000,
            kernel,
            kernel_load_offset: 0x20_0000,
            entry_offset: 0x20_0000,
            kernel_footprint: 0x10_0000,
            initrd,
            cmdline: "console=ttyAMA0",
        }
    }

    #[test]
    fn round_trip() {
        let kernel = [0xAAu8; 5000];
        let initrd = [0x55u8; 10];
        let vms = [sample(&kernel, Some(&initrd)), sample(&kernel, None)];
        let bytes = encode(FLAG_SEMIHOSTING_EXIT, &vms);
        assert_eq!(bytes.len() % BLOB_ALIGN, 0);
        let b = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(b.vm_count(), 2);
        assert_eq!(b.flags(), FLAG_SEMIHOSTING_EXIT);
        assert_eq!(b.vm(0), Some(vms[0]));
        assert_eq!(b.vm(1), Some(vms[1]));
        assert_eq!(b.vm(2), None);
    }

    #[test]
    fn rejects_bad_header() {
        let kernel = [1u8; 16];
        let good = encode(0, &[sample(&kernel, None)]);
        assert_eq!(
            Bundle::parse(&good[..10]).unwrap_err(),
            BundleError::Truncated
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::BadMagic);
        let mut bad = good.clone();
        bad[8] = 9;
        assert_eq!(
            Bundle::parse(&bad).unwrap_err(),
            BundleError::UnsupportedVersion(9)
        );
        let mut bad = good.clone();
        bad[12] = 0;
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::BadVmCount(0));
        let mut bad = good.clone();
        bad[16..24].copy_from_slice(&(good.len() as u64 + 1).to_le_bytes());
        assert_eq!(Bundle::parse(&bad).unwrap_err(), BundleError::Truncated);
    }

    #[test]
    fn rejects_bad_records() {
        let kernel = [1u8; 16];
        let good = encode(0, &[sample(&kernel, None)]);
        let rec = HEADER_SIZE;
        let patch = |at: usize, v: u64| {
            let mut b = good.clone();
            b[rec + at..rec + at + 8].copy_from_slice(&v.to_le_bytes());
            Bundle::parse(&b).unwrap_err()
        };
        assert_eq!(patch(56, 1 << 40), BundleError::BlobOutOfBounds { vm: 0 });
        assert_eq!(patch(88, 1 << 40), BundleError::KernelDoesNotFit { vm: 0 });
        assert_eq!(patch(80, 0), BundleError::KernelDoesNotFit { vm: 0 });
        assert_eq!(patch(48, 0), BundleError::BadResources { vm: 0 });
        assert_eq!(patch(40, u64::MAX), BundleError::BadResources { vm: 0 });
        let mut b = good.clone();
        b[rec] = 0;
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::BadName { vm: 0 }
        );
        let mut b = good.clone();
        b[rec + 36] = 7;
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::BadKernelKind { vm: 0 }
        );
    }
}
