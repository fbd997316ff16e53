//! Passthrough devices (`[[vm.device]]`): each checked on its own (name,
//! compatible list, `reg`, interrupts), then against everything else once
//! every VM is valid: no region overlaps another device, its VM's RAM, the
//! GIC and UART, the channel window or host RAM; no SPI goes to two devices.

use stratum_abi::bundle;
use stratum_abi::limits;
use toml::Spanned;

use super::partition::{Span, VmPlan, check_name, overlaps, window};
use super::raw::{Diagnostics, RawDevice};
use super::validate::size_field;
use super::*;

/// A passthrough device as written, checked on its own.
pub(super) struct PlannedDevice {
    pub(super) config: DeviceConfig,
    pub(super) field: String,
    pub(super) reg_span: Span,
    pub(super) irq_spans: Vec<Range<usize>>,
}

/// Checks one `[[vm.device]]` on its own.
pub(super) fn device(
    d: &mut Diagnostics<'_>,
    field: &str,
    raw: &Spanned<RawDevice>,
) -> Option<PlannedDevice> {
    let f = |key: &str| format!("{field}.{key}");
    let table = Some(raw.span());
    let dev = raw.get_ref();
    let errors = d.messages.len();

    let name = match &dev.name {
        None => {
            d.push(
                table.clone(),
                &f("name"),
                "missing: every device needs a name (its device tree node name)",
            );
            String::new()
        }
        Some(v) => {
            if check_name(d, v, &f("name"), "device", ",.+")
                && !v.get_ref().starts_with(|c: char| c.is_ascii_alphabetic())
            {
                d.at(
                    v,
                    &f("name"),
                    format!(
                        "{:?} must start with a letter (a device tree node name)",
                        v.get_ref()
                    ),
                );
            }
            v.get_ref().clone()
        }
    };

    let compatible = match &dev.compatible {
        None => {
            d.push(
                table.clone(),
                &f("compatible"),
                "missing: every device needs a compatible string (or list)",
            );
            Vec::new()
        }
        Some(v) => {
            let list = &v.get_ref().0;
            let bytes: usize = list.iter().map(|c| c.len() + 1).sum();
            if list.is_empty() {
                d.at(
                    v,
                    &f("compatible"),
                    "empty: give at least one compatible string",
                );
            } else if let Some(c) = list
                .iter()
                .find(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_graphic()))
            {
                d.at(
                    v,
                    &f("compatible"),
                    format!(
                        "{c:?}: a compatible string is non-empty printable ASCII without spaces"
                    ),
                );
            } else if bytes > bundle::COMPATIBLE_LEN {
                d.at(
                    v,
                    &f("compatible"),
                    format!(
                        "{bytes} bytes with their NULs: a compatible list has at most {}",
                        bundle::COMPATIBLE_LEN
                    ),
                );
            }
            list.clone()
        }
    };

    let reg = match &dev.reg {
        None => {
            d.push(
                table.clone(),
                &f("reg"),
                "missing: every device needs reg = [base, size]",
            );
            None
        }
        Some(v) if v.get_ref().len() != 2 => {
            d.at(
                v,
                &f("reg"),
                format!(
                    "{} values: reg is [base, size], both 4 KiB aligned",
                    v.get_ref().len()
                ),
            );
            None
        }
        Some(v) => {
            let base = size_field(d, &v.get_ref()[0], &f("reg"));
            let size = size_field(d, &v.get_ref()[1], &f("reg"));
            match (base, size) {
                (Some(base), Some(size)) => {
                    if !base.is_multiple_of(bundle::PAGE_SIZE) {
                        d.at(v, &f("reg"), format!("base {base:#x} is not 4 KiB aligned"));
                        None
                    } else if size == 0 || !size.is_multiple_of(bundle::PAGE_SIZE) {
                        d.at(
                            v,
                            &f("reg"),
                            format!("size {size:#x}: must be a non-zero multiple of 4 KiB"),
                        );
                        None
                    } else if base.checked_add(size).is_none() {
                        d.at(
                            v,
                            &f("reg"),
                            format!("[{base:#x}, +{size:#x}) wraps around the address space"),
                        );
                        None
                    } else {
                        Some((base, size, v.span()))
                    }
                }
                _ => None,
            }
        }
    };

    let mut interrupts = Vec::new();
    let mut irq_spans = Vec::new();
    if let Some(list) = &dev.interrupts {
        if list.get_ref().len() > limits::IRQS_PER_DEVICE {
            d.at(
                list,
                &f("interrupts"),
                format!(
                    "{} interrupts: a device has at most {}",
                    list.get_ref().len(),
                    limits::IRQS_PER_DEVICE
                ),
            );
        }
        for v in list.get_ref() {
            let n = *v.get_ref();
            match u32::try_from(n) {
                Ok(spi) if spi == bundle::UART_SPI => d.at(
                    v,
                    &f("interrupts"),
                    format!("SPI {spi} is the VM's UART: passthrough devices use SPIs 0 and 2 to 47"),
                ),
                Ok(spi) if spi < bundle::DOORBELL_SPI_BASE => {
                    if interrupts.contains(&spi) {
                        d.at(v, &f("interrupts"), format!("SPI {spi} is listed twice"));
                    }
                    interrupts.push(spi);
                    irq_spans.push(v.span());
                }
                _ => d.at(
                    v,
                    &f("interrupts"),
                    format!(
                        "SPI {n}: passthrough devices use SPIs 0 and 2 to 47 (48 and up are channel doorbells)"
                    ),
                ),
            }
        }
    }

    if d.messages.len() != errors {
        return None;
    }
    let (base, size, reg_span) = reg?;
    Some(PlannedDevice {
        config: DeviceConfig {
            name,
            compatible,
            base,
            size,
            interrupts,
        },
        field: field.to_owned(),
        reg_span: Some(reg_span),
        irq_spans,
    })
}

/// Checks passthrough devices against each other and the fixed map: no
/// region overlaps another device, its VM's RAM, the GIC and UART, or the
/// channel window; no SPI is assigned twice.
pub(super) fn check_devices(d: &mut Diagnostics<'_>, vms: &[VmConfig], plans: &[VmPlan]) {
    let all: Vec<(usize, &PlannedDevice)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.devices.iter().map(move |dev| (i, dev)))
        .collect();
    for (k, &(i, dev)) in all.iter().enumerate() {
        let c = &dev.config;
        let region = c.base..c.base + c.size;
        let reg_field = format!("{}.reg", dev.field);
        let here = format!("[{:#x}, {:#x})", region.start, region.end);
        let vm = &vms[i];
        // A virtio device reads and writes its driver's buffers itself: at
        // guest-physical addresses, which only an identity-mapped VM's are
        // in host memory too. Anywhere else it would write over whatever
        // host RAM sits there (the hypervisor's, on `virt`).
        if !vm.identity && c.compatible.iter().any(|s| s == "virtio,mmio") {
            d.push(
                dev.reg_span.clone(),
                &dev.field,
                format!(
                    "a \"virtio,mmio\" device DMAs to its driver's buffers, so VM {:?} must be identity-mapped (identity = true)",
                    vm.name
                ),
            );
        }
        let ram = vm.memory_base..vm.memory_base + vm.memory;
        if overlaps(&region, &ram) {
            d.push(
                dev.reg_span.clone(),
                &reg_field,
                format!("{here} overlaps the VM's RAM {}", window(&ram)),
            );
        }
        if overlaps(&region, &bundle::RESERVED_WINDOW) {
            d.push(
                dev.reg_span.clone(),
                &reg_field,
                format!(
                    "{here} overlaps the GIC and UART at {} (the VM's emulated ones and the hypervisor's own)",
                    window(&bundle::RESERVED_WINDOW)
                ),
            );
        }
        if overlaps(&region, &bundle::CHANNEL_WINDOW) {
            d.push(
                dev.reg_span.clone(),
                &reg_field,
                format!(
                    "{here} overlaps the channel window {}",
                    window(&bundle::CHANNEL_WINDOW)
                ),
            );
        }
        for &(oi, other) in &all[..k] {
            let o = &other.config;
            if overlaps(&region, &(o.base..o.base + o.size)) {
                d.push(
                    dev.reg_span.clone(),
                    &reg_field,
                    format!(
                        "{here} overlaps {} {:?} of {:?} at [{:#x}, {:#x})",
                        other.field,
                        o.name,
                        vms[oi].name,
                        o.base,
                        o.base + o.size
                    ),
                );
            }
            for (spi, span) in c.interrupts.iter().zip(&dev.irq_spans) {
                if o.interrupts.contains(spi) {
                    d.push(
                        Some(span.clone()),
                        &format!("{}.interrupts", dev.field),
                        format!(
                            "SPI {spi} is assigned twice: {} {:?} of {:?} has it too",
                            other.field, o.name, vms[oi].name
                        ),
                    );
                }
            }
        }
    }
}

/// No passthrough region may overlap host RAM, `host_memory` bytes from
/// `ram_base` (it would hand the guest memory the hypervisor or another VM
/// owns).
pub(super) fn check_devices_against_host_ram(
    d: &mut Diagnostics<'_>,
    plans: &[VmPlan],
    ram_base: u64,
    host_memory: u64,
) {
    let host = ram_base..ram_base.saturating_add(host_memory);
    for dev in plans.iter().flat_map(|p| &p.devices) {
        let c = &dev.config;
        let region = c.base..c.base + c.size;
        if overlaps(&region, &host) {
            d.push(
                dev.reg_span.clone(),
                &format!("{}.reg", dev.field),
                format!(
                    "[{:#x}, {:#x}) overlaps the machine's RAM {}: a passthrough region must be a device",
                    region.start,
                    region.end,
                    window(&host)
                ),
            );
        }
    }
}
