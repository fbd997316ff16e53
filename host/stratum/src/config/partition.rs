//! How the machine is divided among the VMs: the `[system]` settings, where
//! each vCPU runs (`placement`, `pcpus`), what a crash does (`on_crash`),
//! passthrough devices (`[[vm.device]]`) and shared-memory channels
//! (`[[channel]]`).
//!
//! Three steps, each reporting every problem with its location: each item on
//! its own ([`system`], [`vm_plan`], [`super::channels::channel_plans`]);
//! then, once every VM is valid, the rules between items and the resolution
//! of defaults ([`resolve_cpus`], [`super::devices::check_devices`],
//! [`super::channels::resolve_channels`]); and last, once host RAM is known,
//! [`super::devices::check_devices_against_host_ram`]. Devices live in
//! [`super::devices`], channels in [`super::channels`]; this module holds
//! the system settings, each VM's plan and the CPU assignment.
//!
//! Resolution rules:
//! - pinned VM without `pcpus`: the lowest physical CPUs that no `pcpus`
//!   list names and no earlier pinned VM took; shared VM without `pcpus`:
//!   the last physical CPU Stratum uses; vCPU *i* of a shared VM runs on
//!   `pcpus[i % len]`;
//! - channels: numbered per VM in config order from 0; each VM's channel
//!   memory is laid out in config order from the start of
//!   [`bundle::CHANNEL_WINDOW`]; the doorbell of number *n* is SPI 48 + *n*.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use stratum_abi::bundle::{self, OnCrash, StopPolicy};
use stratum_abi::limits;
use toml::Spanned;

use super::devices::{PlannedDevice, device};
use super::raw::{Diagnostics, RawSystem, RawVm};
use super::*;

pub(super) type Span = Option<Range<usize>>;

pub(super) fn span_of<T>(v: &Option<Spanned<T>>) -> Span {
    v.as_ref().map(Spanned::span)
}

pub(super) fn window(w: &Range<u64>) -> String {
    format!("[{:#x}, {:#x})", w.start, w.end)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Validates `[system]`.
pub(super) fn system(d: &mut Diagnostics<'_>, raw: Option<&RawSystem>) -> SystemConfig {
    let slice_us = raw
        .and_then(|s| s.slice.as_ref())
        .and_then(|v| match parse_slice(v.get_ref()) {
            Ok(us) => Some(us),
            Err(e) => {
                d.at(v, "system.slice", e);
                None
            }
        })
        .unwrap_or(bundle::DEFAULT_SLICE_US);
    let stop = match raw.and_then(|s| s.stop.as_ref()) {
        None => StopPolicy::All,
        Some(v) => match v.get_ref().as_str() {
            "all" => StopPolicy::All,
            "any" => StopPolicy::Any,
            other => {
                d.at(
                    v,
                    "system.stop",
                    format!("unknown stop policy {other:?}: expected \"all\" or \"any\""),
                );
                StopPolicy::All
            }
        },
    };
    SystemConfig { slice_us, stop }
}

/// Parses a time slice (`"10ms"`, `"500us"`, `"1s"`) into microseconds.
fn parse_slice(text: &str) -> std::result::Result<u32, String> {
    let bad = || {
        format!(
            "bad time slice {text:?}: expected a whole number and a unit, \"us\", \"ms\" or \"s\" (like \"10ms\")"
        )
    };
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        _ => return Err(bad()),
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    number
        .checked_mul(scale)
        .and_then(|us| u32::try_from(us).ok())
        .filter(|us| (bundle::SLICE_US_MIN..=bundle::SLICE_US_MAX).contains(us))
        .ok_or_else(|| format!("time slice {text:?} is outside 100us to 1s"))
}

/// A VM's partition settings as written, checked on their own.
pub(super) struct VmPlan {
    pub(super) placement: CpuPlacement,
    /// Explicit `pcpus`, each with its span.
    pub(super) pcpus: Option<Vec<(u32, Range<usize>)>>,
    /// Where to point at when a default placement is the problem.
    default_span: Span,
    /// Where the VM's RAM is set (for the channel-window rule).
    pub(super) ram_span: Span,
    pub(super) ram_field: String,
    pub(super) on_crash: OnCrash,
    pub(super) devices: Vec<PlannedDevice>,
}

/// A name: 1 to 31 bytes of `[A-Za-z0-9_-]`, plus `extra` characters.
pub(super) fn check_name(
    d: &mut Diagnostics<'_>,
    v: &Spanned<String>,
    field: &str,
    what: &str,
    extra: &str,
) -> bool {
    let name = v.get_ref();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        d.at(
            v,
            field,
            format!(
                "{name:?} is {} bytes long: a {what} name has 1 to {MAX_NAME_LEN}",
                name.len()
            ),
        );
        return false;
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra.contains(c);
    if let Some(c) = name.chars().find(|&c| !ok(c)) {
        d.at(
            v,
            field,
            format!("{name:?} contains {c:?}: use only A-Z, a-z, 0-9, '_', '-'{extra}"),
        );
        return false;
    }
    true
}

/// Checks a VM's `placement`, `pcpus`, `on_crash` and devices on their own.
/// `cpus` is its vCPU count, when valid.
pub(super) fn vm_plan(
    d: &mut Diagnostics<'_>,
    i: usize,
    raw: &Spanned<RawVm>,
    cpus: Option<u32>,
) -> VmPlan {
    let f = |key: &str| format!("vm[{i}].{key}");
    let table = Some(raw.span());
    let vm = raw.get_ref();

    let placement = match &vm.placement {
        None => CpuPlacement::Pinned,
        Some(v) => match v.get_ref().as_str() {
            "pinned" => CpuPlacement::Pinned,
            "shared" => CpuPlacement::Shared,
            other => {
                d.at(
                    v,
                    &f("placement"),
                    format!("unknown placement {other:?}: expected \"pinned\" or \"shared\""),
                );
                CpuPlacement::Pinned
            }
        },
    };
    let on_crash = match &vm.on_crash {
        None => OnCrash::Stop,
        Some(v) => match v.get_ref().as_str() {
            "stop" => OnCrash::Stop,
            "restart" => OnCrash::Restart,
            other => {
                d.at(
                    v,
                    &f("on_crash"),
                    format!("unknown crash policy {other:?}: expected \"stop\" or \"restart\""),
                );
                OnCrash::Stop
            }
        },
    };

    let pcpus = vm.pcpus.as_ref().and_then(|list| {
        let errors = d.messages.len();
        let mut out: Vec<(u32, Range<usize>)> = Vec::new();
        for v in list.get_ref() {
            match u32::try_from(*v.get_ref()) {
                Ok(c) if c < limits::PHYSICAL_CPUS => {
                    if out.iter().any(|(seen, _)| *seen == c) {
                        d.at(v, &f("pcpus"), format!("physical CPU {c} is listed twice"));
                    }
                    out.push((c, v.span()));
                }
                _ => d.at(
                    v,
                    &f("pcpus"),
                    format!(
                        "physical CPU {}: Stratum runs vCPUs on physical CPUs 0 to {}",
                        v.get_ref(),
                        limits::PHYSICAL_CPUS - 1
                    ),
                ),
            }
        }
        if list.get_ref().is_empty() {
            d.at(list, &f("pcpus"), "empty: list at least one physical CPU");
        } else if let (CpuPlacement::Pinned, Some(n)) = (placement, cpus)
            && list.get_ref().len() != n as usize
        {
            d.at(
                list,
                &f("pcpus"),
                format!(
                    "{} physical CPUs for {n} pinned vCPU{}: a pinned VM lists exactly one per vCPU (or use placement = \"shared\")",
                    list.get_ref().len(),
                    if n == 1 { "" } else { "s" }
                ),
            );
        }
        (d.messages.len() == errors).then_some(out)
    });

    if vm.device.len() > limits::DEVICES_PER_VM {
        d.at(
            &vm.device[limits::DEVICES_PER_VM],
            &f(&format!("device[{}]", limits::DEVICES_PER_VM)),
            format!(
                "{} passthrough devices: a VM has at most {}",
                vm.device.len(),
                limits::DEVICES_PER_VM
            ),
        );
    }
    let mut devices: Vec<PlannedDevice> = Vec::new();
    for (j, raw) in vm.device.iter().enumerate() {
        let field = f(&format!("device[{j}]"));
        if let Some(dev) = device(d, &field, raw) {
            if let Some(first) = devices
                .iter()
                .position(|o| o.config.name == dev.config.name)
            {
                let span = span_of(&raw.get_ref().name);
                d.push(
                    span,
                    &format!("{field}.name"),
                    format!(
                        "duplicate device name {:?} (also vm[{i}].device[{first}])",
                        dev.config.name
                    ),
                );
            }
            devices.push(dev);
        }
    }

    let ram_field = if vm.memory_base.is_some() {
        f("memory_base")
    } else {
        f("memory")
    };
    VmPlan {
        placement,
        pcpus,
        default_span: span_of(&vm.placement)
            .or_else(|| span_of(&vm.cpus))
            .or(table.clone()),
        ram_span: span_of(&vm.memory_base)
            .or_else(|| span_of(&vm.memory))
            .or(table),
        ram_field,
        on_crash,
        devices,
    }
}

/// Assigns every vCPU its physical CPU and checks that no pinned vCPU shares
/// one, nor any vCPU names a CPU the machine lacks. `explicit_cpus` is
/// `[machine] cpus` when given. Returns the machine's CPU count.
pub(super) fn resolve_cpus(
    d: &mut Diagnostics<'_>,
    vms: &mut [VmConfig],
    plans: &[VmPlan],
    explicit_cpus: Option<u32>,
    gic: Gic,
) -> u32 {
    let named: BTreeSet<u32> = plans
        .iter()
        .flat_map(|p| p.pcpus.iter().flatten().map(|(c, _)| *c))
        .collect();
    let cpus = explicit_cpus.unwrap_or_else(|| {
        let pinned: u32 = vms
            .iter()
            .zip(plans)
            .filter(|(_, p)| p.placement == CpuPlacement::Pinned)
            .map(|(v, _)| v.cpus)
            .sum();
        let shared_default = plans
            .iter()
            .any(|p| p.placement == CpuPlacement::Shared && p.pcpus.is_none());
        let biggest = vms.iter().map(|v| v.cpus).max().unwrap_or(1);
        let highest = named.last().map_or(0, |c| c + 1);
        biggest.max(pinned + u32::from(shared_default)).max(highest)
    });
    if explicit_cpus.is_none() && cpus > gic.max_cpus() {
        d.push(
            None,
            "",
            format!(
                "the VMs need {cpus} physical CPUs, but QEMU virt with GICv{} takes 1 to {}",
                gic.number(),
                gic.max_cpus()
            ),
        );
        return cpus;
    }
    let usable = cpus.min(limits::PHYSICAL_CPUS);
    let last = usable.saturating_sub(1);
    let mut taken = named.clone();
    for (i, (vm, plan)) in vms.iter_mut().zip(plans).enumerate() {
        let n = vm.cpus as usize;
        vm.pcpus = match (&plan.pcpus, plan.placement) {
            (Some(list), _) => {
                for (c, span) in list {
                    if *c >= cpus {
                        d.push(
                            Some(span.clone()),
                            &format!("vm[{i}].pcpus"),
                            format!(
                                "physical CPU {c} does not exist: the machine has {cpus} (machine.cpus)"
                            ),
                        );
                    }
                }
                (0..n).map(|v| list[v % list.len()].0).collect()
            }
            (None, CpuPlacement::Shared) => vec![last; n],
            (None, CpuPlacement::Pinned) => {
                let free: Vec<u32> = (0..usable).filter(|c| !taken.contains(c)).take(n).collect();
                if free.len() < n {
                    d.push(
                        plan.default_span.clone(),
                        &format!("vm[{i}].pcpus"),
                        format!(
                            "{n} pinned vCPU{} need{} as many free physical CPUs, but only {} of CPUs 0 to {last} {} free: raise machine.cpus, list pcpus, or use placement = \"shared\"",
                            plural(n),
                            if n == 1 { "s" } else { "" },
                            free.len(),
                            if free.len() == 1 { "is" } else { "are" },
                        ),
                    );
                }
                taken.extend(&free);
                free
            }
        };
    }

    // Every vCPU on each physical CPU.
    let mut users: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
    for (i, vm) in vms.iter().enumerate() {
        for (v, &c) in vm.pcpus.iter().enumerate() {
            users.entry(c).or_default().push((i, v));
        }
    }
    for (i, (vm, plan)) in vms.iter().zip(plans).enumerate() {
        if plan.placement != CpuPlacement::Pinned {
            continue;
        }
        for (v, &c) in vm.pcpus.iter().enumerate() {
            let Some(&(oi, ov)) = users[&c].iter().find(|&&u| u != (i, v)) else {
                continue;
            };
            let span = plan
                .pcpus
                .as_ref()
                .and_then(|l| l.get(v))
                .map(|(_, s)| s.clone())
                .or_else(|| plan.default_span.clone());
            d.push(
                span,
                &format!("vm[{i}].pcpus"),
                format!(
                    "physical CPU {c} is over-committed: pinned vCPU {v} of {:?} owns it, but vCPU {ov} of {:?} also runs there",
                    vm.name, vms[oi].name
                ),
            );
        }
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::parse_slice;

    #[test]
    fn time_slices() {
        assert_eq!(parse_slice("10ms"), Ok(10_000));
        assert_eq!(parse_slice("100us"), Ok(100));
        assert_eq!(parse_slice("1s"), Ok(1_000_000));
        assert_eq!(parse_slice("250ms"), Ok(250_000));
        for bad in ["10", "ms", "10 ms", "1.5ms", "-1ms", "10m", ""] {
            let e = parse_slice(bad).expect_err(bad);
            assert!(e.starts_with("bad time slice"), "{bad}: {e}");
        }
        for out in ["99us", "2s", "0ms", "99999999999999999999s"] {
            let e = parse_slice(out).expect_err(out);
            assert!(
                e.contains("is outside 100us to 1s") || e.starts_with("bad"),
                "{out}: {e}"
            );
        }
        assert!(parse_slice("2s").is_err_and(|e| e.contains("outside")));
    }
}
