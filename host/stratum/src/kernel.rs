//! Guest kernels → boot bundle: read each VM's kernel, flatten it if it is an
//! ELF, place it with [`stratum_core::image`], and encode the bundle
//! ([`stratum_abi::bundle`]) that the hypervisor receives as its initrd.

use std::fs;
use std::path::Path;

use stratum_abi::bundle::{self, FLAG_SEMIHOSTING_EXIT, KernelKind, OnCrash, SystemInfo, VmImage};
use stratum_core::image::{self, KernelInfo, Placement};

use crate::config::{Config, VmConfig};
use crate::elf::flatten_elf;
use crate::{Error, Result};

/// A kernel ready for the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedKernel {
    /// How it was prepared.
    pub kind: KernelKind,
    /// The bytes to copy to RAM base + `placement.load_offset`.
    pub bytes: Vec<u8>,
    /// Where it goes and where it starts.
    pub placement: Placement,
}

/// Prepares kernel file contents for a VM with RAM
/// `[ram_base, ram_base + ram_size)`: `Image` and raw binaries are used as
/// they are; ELF files are flattened. `what` names the kernel in errors.
pub fn prepare_kernel(
    bytes: &[u8],
    ram_base: u64,
    ram_size: u64,
    what: &str,
) -> Result<PreparedKernel> {
    let bad = |e: &dyn std::fmt::Display| Error::input(format!("{what}: {e}"));
    let info = image::inspect(bytes).map_err(|e| bad(&e))?;
    let placement = info.place(ram_base, ram_size).map_err(|e| bad(&e))?;
    let (kind, blob) = match info {
        KernelInfo::LinuxImage { .. } => (KernelKind::LinuxImage, bytes.to_vec()),
        KernelInfo::Raw { .. } => (KernelKind::Raw, bytes.to_vec()),
        KernelInfo::Elf(elf) => {
            let flat = flatten_elf(bytes).map_err(|e| bad(&format_args!("{e:#}")))?;
            if flat.base != elf.base() || flat.bytes.len() as u64 != elf.flat_size() {
                return Err(bad(&"ELF readers disagree on the loadable segments"));
            }
            (KernelKind::Elf, flat.bytes)
        }
    };
    Ok(PreparedKernel {
        kind,
        bytes: blob,
        placement,
    })
}

/// Reads the files of every VM in `config` and encodes the boot bundle
/// (with [`FLAG_SEMIHOSTING_EXIT`] set: the tool always enables semihosting,
/// plus `extra_flags`).
pub fn build_bundle(config: &Config, extra_flags: u32) -> Result<Vec<u8>> {
    struct Loaded {
        kernel: PreparedKernel,
        initrd: Option<Vec<u8>>,
    }
    let mut loaded = Vec::with_capacity(config.vms.len());
    for vm in &config.vms {
        let kernel = read(&vm.kernel)?;
        let kernel = prepare_kernel(
            &kernel,
            vm.memory_base,
            vm.memory,
            &vm.kernel.display().to_string(),
        )?;
        let initrd = vm.initrd.as_deref().map(read).transpose()?;
        loaded.push(Loaded { kernel, initrd });
    }
    let images: Vec<VmImage<'_>> = config
        .vms
        .iter()
        .zip(&loaded)
        .map(|(vm, l)| vm_image(vm, &l.kernel, l.initrd.as_deref()))
        .collect();
    let bytes = bundle::encode(
        FLAG_SEMIHOSTING_EXIT | extra_flags,
        SystemInfo::default(),
        &images,
        &[],
        &[],
    );
    // The hypervisor will run exactly this check; fail here, with a clearer
    // exit status, if the tool and the ABI ever disagree.
    bundle::Bundle::parse(&bytes)
        .map_err(|e| Error::input(format!("internal error: the boot bundle is invalid: {e}")))?;
    Ok(bytes)
}

fn vm_image<'a>(vm: &'a VmConfig, k: &'a PreparedKernel, initrd: Option<&'a [u8]>) -> VmImage<'a> {
    VmImage {
        name: &vm.name,
        vcpus: vm.cpus,
        kernel_kind: k.kind,
        mem_base: vm.memory_base,
        mem_size: vm.memory,
        kernel: &k.bytes,
        kernel_load_offset: k.placement.load_offset,
        entry_offset: k.placement.entry_offset,
        kernel_footprint: k.placement.footprint,
        initrd,
        cmdline: &vm.cmdline,
        pinned: true,
        pcpus: core::array::from_fn(|i| if i < vm.cpus as usize { i as u8 } else { 0 }),
        on_crash: OnCrash::Stop,
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::input(format!("{}: cannot read: {e}", path.display())))
}

/// Sizes of one VM's blobs, for [`bundle_size`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobSizes {
    /// Kernel blob (flattened ELF or the file).
    pub kernel: u64,
    /// Initrd, if any.
    pub initrd: Option<u64>,
    /// Command line length in bytes.
    pub cmdline: u64,
}

/// Exact size [`bundle::encode`] produces for VMs with these blobs.
pub fn bundle_size(vms: impl IntoIterator<Item = BlobSizes>) -> u64 {
    let vms: Vec<BlobSizes> = vms.into_iter().collect();
    let blobs = vms
        .iter()
        .flat_map(|vm| [Some(vm.kernel), vm.initrd, Some(vm.cmdline)])
        .flatten();
    bundle::encoded_size(vms.len(), 0, 0, blobs.collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmFlags;
    use crate::testutil::{ElfBuilder, TestDir, linux_image};
    use stratum_abi::bundle::Bundle;

    const RAM: u64 = 0x4000_0000;

    fn one_vm(dir: &TestDir, kernel: &[u8], initrd: Option<&[u8]>) -> Config {
        let kernel = dir.write("kernel.bin", kernel);
        let initrd = initrd.map(|b| dir.write("initrd.img", b));
        let config = Config::from_flags(&VmFlags {
            kernel,
            initrd,
            append: Some("console=ttyAMA0 quiet".into()),
            cpus: Some(2),
            memory: Some("64M".into()),
        })
        .expect("valid config");
        assert_eq!(config.bundle_size(), {
            let b = build_bundle(&config, 0).expect("bundle");
            b.len() as u64
        });
        config
    }

    #[test]
    fn elf_kernel_is_flattened() {
        let dir = TestDir::new("bundle-elf");
        let elf = ElfBuilder::new(RAM + 0x8_0010)
            .segment(RAM + 0x8_0000, &[0xAA; 0x20], 0x20)
            .segment(RAM + 0x8_1000, &[0xBB; 0x10], 0x4000)
            .build();
        let config = one_vm(&dir, &elf, None);
        let bytes = build_bundle(&config, 0).expect("bundle");
        let b = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(b.flags(), FLAG_SEMIHOSTING_EXIT);
        let vm = b.vm(0).expect("one VM");
        assert_eq!(vm.name, "kernel");
        assert_eq!(vm.kernel_kind, KernelKind::Elf);
        assert_eq!(vm.vcpus, 2);
        assert_eq!(vm.mem_base, RAM);
        assert_eq!(vm.mem_size, 64 << 20);
        assert_eq!(vm.kernel_load_offset, 0x8_0000);
        assert_eq!(vm.entry_offset, 0x8_0010);
        assert_eq!(vm.kernel_footprint, 0x5000);
        assert_eq!(vm.kernel.len(), 0x1010);
        assert_eq!(&vm.kernel[..0x20], &[0xAA; 0x20]);
        assert!(vm.kernel[0x20..0x1000].iter().all(|&b| b == 0));
        assert_eq!(&vm.kernel[0x1000..], &[0xBB; 0x10]);
        assert_eq!(vm.initrd, None);
        assert_eq!(vm.cmdline, "console=ttyAMA0 quiet");
    }

    #[test]
    fn raw_kernel_with_initrd() {
        let dir = TestDir::new("bundle-raw");
        let raw = [0x1fu8, 0x20, 0x03, 0xd5].repeat(100);
        let config = one_vm(&dir, &raw, Some(b"070701 cpio"));
        let bytes = build_bundle(&config, 0).expect("bundle");
        let vm = Bundle::parse(&bytes).expect("valid").vm(0).expect("vm");
        assert_eq!(vm.kernel_kind, KernelKind::Raw);
        assert_eq!(vm.kernel, &raw[..]);
        assert_eq!(vm.kernel_load_offset, 0x8_0000);
        assert_eq!(vm.entry_offset, 0x8_0000);
        assert_eq!(vm.kernel_footprint, raw.len() as u64);
        assert_eq!(vm.initrd, Some(&b"070701 cpio"[..]));
    }

    #[test]
    fn linux_image_kernel() {
        let dir = TestDir::new("bundle-image");
        let img = linux_image(0x20_0000, 0x80_0000, 0b10, 0x3000);
        let config = one_vm(&dir, &img, None);
        let bytes = build_bundle(&config, 0).expect("bundle");
        let vm = Bundle::parse(&bytes).expect("valid").vm(0).expect("vm");
        assert_eq!(vm.kernel_kind, KernelKind::LinuxImage);
        assert_eq!(vm.kernel, &img[..]);
        assert_eq!(vm.kernel_load_offset, 0x20_0000);
        assert_eq!(vm.entry_offset, 0x20_0000);
        assert_eq!(vm.kernel_footprint, 0x80_0000);
    }

    #[test]
    fn prepare_kernel_reports_placement_errors() {
        let elf = ElfBuilder::new(0x8000_0000)
            .segment(0x8000_0000, b"x", 1)
            .build();
        let e = prepare_kernel(&elf, RAM, 64 << 20, "k.elf").expect_err("outside RAM");
        assert!(
            e.to_string().starts_with("k.elf: the kernel does not fit"),
            "{e}"
        );
        let e = prepare_kernel(&[], RAM, 64 << 20, "empty").expect_err("empty");
        assert_eq!(e.to_string(), "empty: the kernel file is empty");
    }

    #[test]
    fn bundle_size_matches_encode() {
        let k = [1u8; 5000];
        let i = [2u8; 10];
        let image = |initrd, cmdline| VmImage {
            name: "a",
            vcpus: 1,
            kernel_kind: KernelKind::Raw,
            mem_base: RAM,
            mem_size: 64 << 20,
            kernel: &k,
            kernel_load_offset: 0x8_0000,
            entry_offset: 0x8_0000,
            kernel_footprint: 5000,
            initrd,
            cmdline,
            pinned: false,
            pcpus: [0; 8],
            on_crash: OnCrash::Stop,
        };
        let vms = [
            image(Some(&i[..]), "x"),
            image(None, ""),
            image(Some(&[][..]), ""),
        ];
        let sizes = [
            BlobSizes {
                kernel: 5000,
                initrd: Some(10),
                cmdline: 1,
            },
            BlobSizes {
                kernel: 5000,
                initrd: None,
                cmdline: 0,
            },
            BlobSizes {
                kernel: 5000,
                initrd: Some(0),
                cmdline: 0,
            },
        ];
        for n in 1..=3 {
            let encoded = bundle::encode(0, SystemInfo::default(), &vms[..n], &[], &[]);
            assert_eq!(
                bundle_size(sizes[..n].iter().copied()),
                encoded.len() as u64
            );
        }
    }
}
