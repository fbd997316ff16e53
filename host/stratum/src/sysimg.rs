//! System images: the hypervisor and its boot bundle in one arm64 `Image`
//! file ([`stratum_abi::sysimg`] has the layout). `stratum build` writes one
//! ([`system_image`]), `stratum run` boots one, and `stratum inspect` says
//! what is inside ([`inspect`]).

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use stratum_abi::bundle::{self, Bundle};
use stratum_abi::sysimg::{self, Header};

use crate::hypervisor::HypervisorSource;
use crate::kernel::build_bundle_with_flags;
use crate::run::{ScratchDir, write_system_image};
use crate::{Config, Error, ErrorKind, Result};

/// The system image made of the plain hypervisor `Image` `hypervisor` and
/// the boot bundle `bundle`: the hypervisor padded to its footprint, the
/// bundle, zeros to the next 2 MiB, and the header saying where the bundle is.
pub fn system_image(hypervisor: &[u8], bundle: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: sysimg::SysImgError| {
        Error::new(
            ErrorKind::Environment,
            anyhow::anyhow!("the hypervisor Image cannot take a bundle: {e}"),
        )
    };
    let header = Header::parse(hypervisor).map_err(bad)?;
    if hypervisor.len() as u64 > header.image_size {
        return Err(Error::environment(format!(
            "the hypervisor Image is {} bytes, more than the {} its header declares",
            hypervisor.len(),
            header.image_size
        )));
    }
    let layout = sysimg::layout(&header, bundle.len() as u64).map_err(bad)?;
    let total = usize::try_from(layout.image_size)
        .map_err(|_| Error::input("the system image would not fit in memory"))?;
    let mut image = vec![0u8; total];
    image[..hypervisor.len()].copy_from_slice(hypervisor);
    let at = layout.bundle_offset as usize;
    image[at..at + bundle.len()].copy_from_slice(bundle);
    sysimg::patch_header(&mut image, &layout);
    Ok(image)
}

/// Builds the system image of `config` into `out`, with the hypervisor
/// `hypervisor` names (or built with cargo): semihosting exit only when
/// `semihosting`, no entropy (see `stratum build --help`). Returns what
/// [`inspect`] says of the file written.
pub fn build(
    config: &Config,
    hypervisor: Option<&Path>,
    semihosting: bool,
    out: &Path,
) -> Result<String> {
    config.check_supported()?;
    if !config.disks.is_empty() {
        return Err(Error::input(format!(
            "{}: a system image cannot bring its disks: they are QEMU virtio-blk devices that `stratum run` \
             attaches to the machine for the service VM, and a board has no such devices; run the system \
             with `stratum run`, or build it without [[vm.disk]] and --disk",
            config
                .source
                .as_ref()
                .map_or_else(|| "--disk".to_owned(), |p| p.display().to_string())
        )));
    }
    if config.uplink.is_some() {
        return Err(Error::input(format!(
            "{}: a system image cannot bring its uplink: it is a QEMU virtio-net device on QEMU's user-mode \
             network that `stratum run` attaches to the machine for the service VM, and a board has no such \
             device; run the system with `stratum run`, or build it without uplink = true and --net user",
            config
                .source
                .as_ref()
                .map_or_else(|| "--net".to_owned(), |p| p.display().to_string())
        )));
    }
    let mut flags = bundle::FLAG_QEMU_GIC;
    if semihosting {
        flags |= bundle::FLAG_SEMIHOSTING_EXIT;
    }
    let bundle = build_bundle_with_flags(config, flags, [0; 16])?;
    if let Some(warning) = config.identity_warning() {
        eprintln!("stratum: {warning}");
    }
    let scratch = ScratchDir::new()?;
    let plain = HypervisorSource::choose(hypervisor, true).resolve(scratch.path())?;
    let image = write_system_image(&plain, &bundle, out)?;
    inspect(&out.display().to_string(), &image)
}

/// The first 16 hex digits of the SHA-256 of `bytes`, and its size.
fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{:>10} B  sha256 {hex}", bytes.len())
}

/// What the system image `bytes` (named `name` in messages) holds: the
/// hypervisor, the bundle's settings, and per VM its placement and each
/// image's size and hash. A file that is not a system image, or whose
/// bundle does not parse, is bad input with the reason.
pub fn inspect(name: &str, bytes: &[u8]) -> Result<String> {
    let bad = |what: &dyn std::fmt::Display| Error::input(format!("{name}: {what}"));
    let header = Header::parse(bytes).map_err(|e| bad(&e))?;
    let hypervisor_end = header
        .bundle_offset
        .min(bytes.len() as u64)
        .max(sysimg::HEADER_SIZE as u64);
    let Some((offset, size)) = header.bundle(header.bundle_offset).map_err(|e| bad(&e))? else {
        return Err(bad(
            &"a plain hypervisor Image, no bundle inside (`stratum build` makes a system image)",
        ));
    };
    let bundle_bytes = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(offset + size).ok())
        .and_then(|(start, end)| bytes.get(start..end))
        .ok_or_else(|| {
            bad(&format!(
                "the header puts the bundle at {offset:#x}..{:#x}, past the file's {} bytes",
                offset + size,
                bytes.len()
            ))
        })?;
    let bundle = Bundle::parse(bundle_bytes).map_err(|e| bad(&format!("the bundle: {e}")))?;
    let mut out = String::new();
    let hyp = &bytes[..hypervisor_end as usize];
    let _ = writeln!(
        out,
        "system image {name}: {} MiB to load anywhere 2 MiB-aligned in RAM",
        header.image_size >> 20
    );
    let _ = writeln!(out, "  hypervisor   {}", digest(hyp));
    let _ = writeln!(
        out,
        "  bundle       {} at {offset:#x}",
        digest(bundle_bytes)
    );
    let system = bundle.system();
    let names: Vec<&str> = [
        (bundle::FLAG_SEMIHOSTING_EXIT, "semihosting exit"),
        (bundle::FLAG_SELFTEST_EL2_FAULT, "EL2-fault self-test"),
        (bundle::FLAG_CONSOLE_COLOR, "colour tags"),
        (bundle::FLAG_QEMU_GIC, "QEMU GIC"),
    ]
    .into_iter()
    .filter(|&(bit, _)| bundle.flags() & bit != 0)
    .map(|(_, name)| name)
    .collect();
    let _ = writeln!(
        out,
        "  time slice {} us, stop when {:?}, flags: {}; entropy: {}",
        system.slice_us,
        system.stop,
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
        if system.entropy == [0; 16] {
            "the boot DT's /chosen/rng-seed only"
        } else {
            "baked in, plus the boot DT's /chosen/rng-seed"
        }
    );
    for i in 0..bundle.vm_count() {
        let Some(vm) = bundle.vm(i) else { continue };
        let cpus: Vec<String> = vm.pcpus[..vm.vcpus as usize]
            .iter()
            .map(u8::to_string)
            .collect();
        let mut traits = vec![if vm.pinned { "pinned" } else { "shared" }];
        traits.extend(vm.identity.then_some("identity"));
        traits.extend(vm.firmware.then_some("firmware"));
        traits.extend(vm.service.then_some("service VM"));
        let _ = writeln!(
            out,
            "vm{i} '{}': {} vCPU on CPU {}, {} MiB at {:#x}, {}, on crash {:?}",
            vm.name,
            vm.vcpus,
            cpus.join(","),
            vm.mem_size >> 20,
            vm.mem_base,
            traits.join(", "),
            vm.on_crash
        );
        let _ = writeln!(
            out,
            "  kernel       {}  ({:?}, at +{:#x})",
            digest(vm.kernel),
            vm.kernel_kind,
            vm.kernel_load_offset
        );
        if let Some(initrd) = vm.initrd {
            let _ = writeln!(out, "  initrd       {}", digest(initrd));
        }
        if let Some(dt) = vm.dt_fragment {
            let _ = writeln!(out, "  DT fragment  {}", digest(dt));
        }
        if !vm.cmdline.is_empty() {
            let _ = writeln!(out, "  cmdline      {}", vm.cmdline);
        }
    }
    let devices = (0..bundle.device_count())
        .filter_map(|i| bundle.device(i))
        .map(|d| {
            format!(
                "passthrough '{}' to vm{}: {:#x}+{:#x}, SPIs {:?}",
                d.name,
                d.vm,
                d.base,
                d.size,
                d.spis()
            )
        });
    let channels = (0..bundle.channel_count())
        .filter_map(|i| bundle.channel(i))
        .map(|c| {
            let (a, b) = (c.ends[0].vm, c.ends[1].vm);
            format!(
                "channel '{}': {} KiB between vm{a} and vm{b}",
                c.name,
                c.size >> 10
            )
        });
    let virtio = (0..bundle.virtio_count())
        .filter_map(|i| bundle.virtio(i))
        .map(|v| {
            let at = bundle::VIRTIO_WINDOW.start + u64::from(v.transport) * 0x200;
            format!(
                "virtio {:?} on vm{} transport {} ({at:#x})",
                v.kind, v.vm, v.transport
            )
        });
    for line in devices.chain(channels).chain(virtio) {
        let _ = writeln!(out, "{line}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::linux_image;

    const MIB: usize = 1 << 20;

    /// A valid bundle of one VM named "tiny" with a 100-byte kernel.
    fn tiny_bundle() -> Vec<u8> {
        let kernel = [0x5Au8; 100];
        let vm = bundle::VmImage {
            name: "tiny",
            vcpus: 1,
            kernel_kind: bundle::KernelKind::Raw,
            mem_base: 0x4000_0000,
            mem_size: 16 << 20,
            kernel: &kernel,
            kernel_load_offset: 0x8_0000,
            entry_offset: 0x8_0000,
            kernel_footprint: 100,
            initrd: None,
            dt_fragment: None,
            cmdline: "",
            pinned: true,
            pcpus: [0; 8],
            on_crash: bundle::OnCrash::Stop,
            identity: false,
            firmware: false,
            service: false,
        };
        let bytes = bundle::encode(0, bundle::SystemInfo::default(), &[vm], &[], &[]);
        Bundle::parse(&bytes).expect("a valid bundle");
        bytes
    }

    /// A plain hypervisor Image of `file` bytes declaring a 4 MiB footprint.
    fn hypervisor(file: usize) -> Vec<u8> {
        let mut h = linux_image(0, 4 * MIB as u64, sysimg::FLAGS, file);
        h[0x100] = 0xAB;
        h
    }

    #[test]
    fn a_system_image_carries_the_bundle_after_the_footprint() {
        let bundle = tiny_bundle();
        let image = system_image(&hypervisor(0x1000), &bundle).expect("built");
        assert_eq!(
            image.len(),
            6 * MIB,
            "4 MiB footprint + bundle, rounded to 2 MiB"
        );
        assert_eq!(image[0x100], 0xAB, "the hypervisor's bytes first");
        assert_eq!(&image[4 * MIB..4 * MIB + bundle.len()], &bundle[..]);
        let header = Header::parse(&image).expect("valid");
        assert_eq!(
            header.bundle(4 * MIB as u64),
            Ok(Some((4 * MIB as u64, bundle.len() as u64)))
        );
        let text = inspect("sys.img", &image).expect("inspects");
        assert!(text.contains("system image sys.img: 6 MiB"), "{text}");
        assert!(text.contains("vm0 'tiny': 1 vCPU on CPU 0"), "{text}");
        let kernel_hash = digest(Bundle::parse(&bundle).unwrap().vm(0).unwrap().kernel);
        assert!(text.contains(&kernel_hash), "{text}");
    }

    #[test]
    fn inspect_names_what_is_wrong() {
        let bundle = tiny_bundle();
        let plain = hypervisor(0x1000);
        let err = inspect("h.img", &plain).expect_err("no bundle").to_string();
        assert!(err.contains("h.img: a plain hypervisor Image"), "{err}");
        let err = inspect("x", b"hello").expect_err("short").to_string();
        assert!(err.contains("shorter than an arm64 Image header"), "{err}");
        let mut image = system_image(&plain, &bundle).expect("built");
        image.truncate(4 * MIB + 10);
        let err = inspect("cut.img", &image).expect_err("cut").to_string();
        assert!(err.contains("past the file's"), "{err}");
        let mut image = system_image(&plain, &bundle).expect("built");
        image[4 * MIB] ^= 0xFF;
        let err = inspect("bad.img", &image)
            .expect_err("bad bundle")
            .to_string();
        assert!(err.contains("bad.img: the bundle:"), "{err}");
        let err = system_image(&system_image(&plain, &bundle).unwrap(), &bundle)
            .expect_err("twice")
            .to_string();
        assert!(err.contains("already holds a bundle"), "{err}");
        let err = system_image(&hypervisor(5 * MIB), &bundle)
            .expect_err("too long")
            .to_string();
        assert!(
            err.contains("more than the 4194304 its header declares"),
            "{err}"
        );
    }
}
