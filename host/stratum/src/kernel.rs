//! Guest kernels → boot bundle: read each VM's kernel, flatten it if it is an
//! ELF, place it with [`stratum_core::image`], and encode the bundle
//! ([`stratum_abi::bundle`]) that the hypervisor receives as its initrd.

use std::fs;
use std::path::Path;

use stratum_abi::bundle::{
    self, Channel, ChannelEnd, Device, FLAG_QEMU_GIC, FLAG_SEMIHOSTING_EXIT, KernelKind,
    SystemInfo, VmImage,
};
use stratum_abi::limits;
use stratum_core::image::{self, KernelInfo, Placement};

use crate::config::{
    ChannelConfig, ChannelEndConfig, Config, CpuPlacement, DeviceConfig, VmConfig,
};
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
/// (with [`FLAG_SEMIHOSTING_EXIT`] and [`FLAG_QEMU_GIC`] set: the tool always
/// runs QEMU, with semihosting; plus `extra_flags`).
pub fn build_bundle(config: &Config, extra_flags: u32, entropy: [u8; 16]) -> Result<Vec<u8>> {
    build_bundle_with_flags(
        config,
        FLAG_SEMIHOSTING_EXIT | FLAG_QEMU_GIC | extra_flags,
        entropy,
    )
}

/// [`build_bundle`] with exactly the header flags `flags`.
pub fn build_bundle_with_flags(config: &Config, flags: u32, entropy: [u8; 16]) -> Result<Vec<u8>> {
    struct Loaded {
        kernel: PreparedKernel,
        initrd: Option<Vec<u8>>,
        dt_fragment: Option<Vec<u8>>,
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
        let mut initrd = vm.initrd.as_deref().map(read).transpose()?;
        // An exec'd command rides in a second cpio archive after the first
        // (the kernel unpacks them in order).
        if let (Some(initrd), Some(command)) = (initrd.as_mut(), vm.exec.as_deref()) {
            initrd.extend(crate::linux::initramfs::exec_overlay(command));
        }
        let dt_fragment = vm.dt_fragment.as_deref().map(read).transpose()?;
        loaded.push(Loaded {
            kernel,
            initrd,
            dt_fragment,
        });
    }
    let images: Vec<VmImage<'_>> = config
        .vms
        .iter()
        .zip(&loaded)
        .map(|(vm, l)| {
            vm_image(vm, &l.kernel, l.initrd.as_deref()).map(|image| VmImage {
                dt_fragment: l.dt_fragment.as_deref(),
                ..image
            })
        })
        .collect::<Result<_>>()?;
    let compatibles: Vec<Vec<u8>> = config
        .vms
        .iter()
        .flat_map(|vm| vm.devices.iter().map(DeviceConfig::compatible_bytes))
        .collect();
    let devices: Vec<Device<'_>> = config
        .vms
        .iter()
        .enumerate()
        .flat_map(|(i, vm)| vm.devices.iter().map(move |d| (i, d)))
        .zip(&compatibles)
        .map(|((i, d), compatible)| device(i, d, compatible))
        .collect::<Result<_>>()?;
    let channels: Vec<Channel<'_>> = config.channels.iter().map(channel).collect::<Result<_>>()?;
    let system = SystemInfo {
        slice_us: config.system.slice_us,
        stop: config.system.stop,
        entropy,
    };
    let virtio = config.virtio_devices();
    let bytes = bundle::encode_with_virtio(flags, system, &images, &devices, &channels, &virtio);
    // The hypervisor will run exactly this check; fail here, with a clearer
    // exit status, if the tool and the ABI ever disagree.
    bundle::Bundle::parse(&bytes)
        .map_err(|e| Error::input(format!("internal error: the boot bundle is invalid: {e}")))?;
    Ok(bytes)
}

/// A value the validated config guarantees fits the bundle field; an
/// internal error (not a panic) if it ever does not.
fn narrow<T: TryFrom<u64>>(v: impl Into<u64>, what: &str) -> Result<T> {
    let v = v.into();
    T::try_from(v).map_err(|_| {
        Error::input(format!(
            "internal error: {what} {v} does not fit the boot bundle"
        ))
    })
}

fn vm_image<'a>(
    vm: &'a VmConfig,
    k: &'a PreparedKernel,
    initrd: Option<&'a [u8]>,
) -> Result<VmImage<'a>> {
    let mut pcpus = [0u8; limits::VCPUS_PER_VM as usize];
    if vm.pcpus.len() > pcpus.len() {
        return Err(Error::input(format!(
            "internal error: VM {:?} has {} vCPUs",
            vm.name,
            vm.pcpus.len()
        )));
    }
    for (slot, &cpu) in pcpus.iter_mut().zip(&vm.pcpus) {
        *slot = narrow(cpu, "physical CPU")?;
    }
    Ok(VmImage {
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
        dt_fragment: None,
        cmdline: &vm.cmdline,
        pinned: vm.placement == CpuPlacement::Pinned,
        pcpus,
        on_crash: vm.on_crash,
        identity: vm.identity,
        firmware: vm.firmware,
        service: vm.service,
    })
}

fn device<'a>(vm: usize, d: &'a DeviceConfig, compatible: &'a [u8]) -> Result<Device<'a>> {
    let mut irqs = [0u32; limits::IRQS_PER_DEVICE];
    if d.interrupts.len() > irqs.len() {
        return Err(Error::input(format!(
            "internal error: device {:?} has {} interrupts",
            d.name,
            d.interrupts.len()
        )));
    }
    irqs[..d.interrupts.len()].copy_from_slice(&d.interrupts);
    Ok(Device {
        vm: narrow(vm as u64, "VM index")?,
        name: &d.name,
        compatible,
        base: d.base,
        size: d.size,
        irqs,
        irq_count: narrow(d.interrupts.len() as u64, "interrupt count")?,
    })
}

fn channel(c: &ChannelConfig) -> Result<Channel<'_>> {
    let end = |e: &ChannelEndConfig| -> Result<ChannelEnd> {
        Ok(ChannelEnd {
            vm: narrow(e.vm as u64, "VM index")?,
            id: e.id,
            ipa: e.ipa,
            spi: e.spi,
        })
    };
    Ok(Channel {
        name: &c.name,
        size: c.size,
        ends: [end(&c.ends[0])?, end(&c.ends[1])?],
    })
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
    /// Extra DT fragment, if any.
    pub dt_fragment: Option<u64>,
}

/// Exact size [`bundle::encode_with_virtio`] produces for VMs with these
/// blobs, `devices` passthrough devices, `channels` channels and `virtio`
/// virtio devices.
pub fn bundle_size(
    vms: impl IntoIterator<Item = BlobSizes>,
    devices: usize,
    channels: usize,
    virtio: usize,
) -> u64 {
    let vms: Vec<BlobSizes> = vms.into_iter().collect();
    let blobs = vms
        .iter()
        .flat_map(|vm| [Some(vm.kernel), vm.initrd, Some(vm.cmdline), vm.dt_fragment])
        .flatten();
    bundle::encoded_size(
        vms.len(),
        devices,
        channels,
        virtio,
        blobs.collect::<Vec<_>>(),
    )
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
            debian: false,
            exec: None,
            disks: Vec::new(),
        })
        .expect("valid config");
        assert_eq!(config.bundle_size(), {
            let b = build_bundle(&config, 0, [0; 16]).expect("bundle");
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
        let bytes = build_bundle(&config, 0, [0; 16]).expect("bundle");
        let b = Bundle::parse(&bytes).expect("valid bundle");
        // The tool always runs QEMU: semihosting, and QEMU's GIC model.
        assert_eq!(b.flags(), FLAG_SEMIHOSTING_EXIT | FLAG_QEMU_GIC);
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
        let bytes = build_bundle(&config, 0, [0; 16]).expect("bundle");
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
        let bytes = build_bundle(&config, 0, [0; 16]).expect("bundle");
        let vm = Bundle::parse(&bytes).expect("valid").vm(0).expect("vm");
        assert_eq!(vm.kernel_kind, KernelKind::LinuxImage);
        assert_eq!(vm.kernel, &img[..]);
        assert_eq!(vm.kernel_load_offset, 0x20_0000);
        assert_eq!(vm.entry_offset, 0x20_0000);
        assert_eq!(vm.kernel_footprint, 0x80_0000);
    }

    #[test]
    fn multi_vm_bundle_carries_the_resolved_system() {
        use stratum_abi::bundle::{ChannelEnd, FLAG_CONSOLE_COLOR, OnCrash, StopPolicy};
        let dir = TestDir::new("bundle-multi");
        dir.write("k.bin", &[0x1f, 0x20, 0x03, 0xd5]);
        let text = r#"
[system]
slice = "2ms"
stop = "any"
[[vm]]
name = "a"
kernel = "k.bin"
memory = "8M"
cpus = 2
[[vm]]
name = "b"
kernel = "k.bin"
memory = "8M"
placement = "shared"
on_crash = "restart"
[[vm.device]]
name = "rtc"
compatible = ["arm,pl031", "arm,primecell"]
reg = [0x09010000, 0x1000]
interrupts = [2]
[[channel]]
name = "ping"
vms = ["b", "a"]
size = "8K"
"#;
        let config = Config::parse(text, &dir.path().join("x.toml")).expect("valid");
        let bytes =
            build_bundle(&config, FLAG_CONSOLE_COLOR, *b"host entropy 16!").expect("bundle");
        assert_eq!(config.bundle_size(), bytes.len() as u64);
        let b = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(
            b.flags(),
            FLAG_SEMIHOSTING_EXIT | FLAG_QEMU_GIC | FLAG_CONSOLE_COLOR
        );
        assert_eq!(
            b.system(),
            SystemInfo {
                slice_us: 2000,
                stop: StopPolicy::Any,
                entropy: *b"host entropy 16!",
            }
        );
        let a = b.vm(0).expect("vm a");
        assert_eq!((a.name, a.pinned, a.on_crash), ("a", true, OnCrash::Stop));
        assert_eq!(a.pcpus, [0, 1, 0, 0, 0, 0, 0, 0]);
        let vb = b.vm(1).expect("vm b");
        assert_eq!(
            (vb.name, vb.pinned, vb.on_crash),
            ("b", false, OnCrash::Restart)
        );
        assert_eq!(vb.pcpus, [2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b.device_count(), 1);
        let rtc = b.device(0).expect("rtc");
        assert_eq!(
            (rtc.vm, rtc.name, rtc.compatible, rtc.base, rtc.size),
            (
                1,
                "rtc",
                &b"arm,pl031\0arm,primecell\0"[..],
                0x0901_0000,
                0x1000
            )
        );
        assert_eq!(rtc.spis(), [2]);
        assert_eq!(b.channel_count(), 1);
        let ch = b.channel(0).expect("ping");
        assert_eq!((ch.name, ch.size), ("ping", 0x2000));
        let end = |vm| ChannelEnd {
            vm,
            id: 0,
            ipa: 0x0B00_0000,
            spi: 48,
        };
        assert_eq!(ch.ends, [end(1), end(0)]);
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
        let f = [3u8; 4100];
        let image = |initrd, cmdline, dt_fragment| VmImage {
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
            dt_fragment,
            cmdline,
            pinned: false,
            pcpus: [0; 8],
            on_crash: bundle::OnCrash::Stop,
            identity: false,
            firmware: false,
            service: false,
        };
        let vms = [
            image(Some(&i[..]), "x", None),
            image(None, "", Some(&f[..])),
            image(Some(&[][..]), "", None),
        ];
        let sizes = [
            BlobSizes {
                kernel: 5000,
                initrd: Some(10),
                cmdline: 1,
                dt_fragment: None,
            },
            BlobSizes {
                kernel: 5000,
                initrd: None,
                cmdline: 0,
                dt_fragment: Some(4100),
            },
            BlobSizes {
                kernel: 5000,
                initrd: Some(0),
                cmdline: 0,
                dt_fragment: None,
            },
        ];
        for n in 1..=3 {
            let encoded = bundle::encode(0, SystemInfo::default(), &vms[..n], &[], &[]);
            assert_eq!(
                bundle_size(sizes[..n].iter().copied(), 0, 0, 0),
                encoded.len() as u64
            );
        }
    }
}
