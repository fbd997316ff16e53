//! Shared-memory channels (`[[channel]]`): each checked on its own (name,
//! size, two different known VMs), then numbered per VM in config order,
//! placed in each VM's channel window (packed from its start), given the
//! doorbell SPI 48 + number, and checked against duplicates, the per-VM
//! limit, the window's size and the VMs' RAM.

use std::collections::HashMap;

use stratum_abi::bundle;
use stratum_abi::limits;
use toml::Spanned;

use super::partition::{Span, VmPlan, check_name, overlaps, span_of, window};
use super::raw::{Diagnostics, RawChannel};
use super::validate::size_field;
use super::*;

/// A `[[channel]]` as written, checked on its own.
pub(super) struct ChannelPlan {
    name: String,
    size: u64,
    vms: [usize; 2],
    name_span: Span,
    vms_span: Span,
    size_span: Span,
}

/// Checks each `[[channel]]` on its own; `names` are the VM names (by index).
pub(super) fn channel_plans(
    d: &mut Diagnostics<'_>,
    raw: &[Spanned<RawChannel>],
    names: &[String],
) -> Vec<ChannelPlan> {
    let mut plans = Vec::new();
    for (k, ch) in raw.iter().enumerate() {
        let f = |key: &str| format!("channel[{k}].{key}");
        let table = Some(ch.span());
        let ch = ch.get_ref();
        let errors = d.messages.len();
        let name = match &ch.name {
            None => {
                d.push(
                    table.clone(),
                    &f("name"),
                    "missing: every channel needs a name",
                );
                String::new()
            }
            Some(v) => {
                check_name(d, v, &f("name"), "channel", "");
                v.get_ref().clone()
            }
        };
        let size = match &ch.size {
            None => Some(DEFAULT_CHANNEL_SIZE),
            Some(v) => size_field(d, v, &f("size")).and_then(|size| {
                let ok = (bundle::CHANNEL_SIZE_MIN..=bundle::CHANNEL_SIZE_MAX).contains(&size)
                    && size.is_multiple_of(bundle::PAGE_SIZE);
                if !ok {
                    d.at(
                        v,
                        &f("size"),
                        format!("{size:#x} bytes: a channel is a multiple of 4 KiB from 4K to 2M"),
                    );
                }
                ok.then_some(size)
            }),
        };
        let mut ends = Vec::new();
        match &ch.vms {
            None => d.push(
                table.clone(),
                &f("vms"),
                "missing: a channel connects two VMs, vms = [\"a\", \"b\"]",
            ),
            Some(list) if list.get_ref().len() != 2 => d.at(
                list,
                &f("vms"),
                format!(
                    "{} VMs: a channel connects exactly two",
                    list.get_ref().len()
                ),
            ),
            Some(list) => {
                for v in list.get_ref() {
                    match names.iter().position(|n| n == v.get_ref()) {
                        Some(vm) => ends.push(vm),
                        None => d.at(
                            v,
                            &f("vms"),
                            format!(
                                "unknown VM {:?}: the VMs are {}",
                                v.get_ref(),
                                names
                                    .iter()
                                    .map(|n| format!("{n:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    }
                }
                if let [a, b] = ends[..]
                    && a == b
                {
                    d.at(
                        &list.get_ref()[1],
                        &f("vms"),
                        format!(
                            "a channel from {:?} to itself: it connects two different VMs",
                            names[a]
                        ),
                    );
                }
            }
        }
        if d.messages.len() == errors
            && let (Some(size), &[a, b]) = (size, &ends[..])
        {
            plans.push(ChannelPlan {
                name,
                size,
                vms: [a, b],
                name_span: span_of(&ch.name),
                vms_span: span_of(&ch.vms),
                size_span: span_of(&ch.size).or(table),
            });
        }
    }
    plans
}

/// Numbers channels per VM, places their memory in each VM's channel
/// window and checks duplicates, per-VM limits and RAM overlap.
pub(super) fn resolve_channels(
    d: &mut Diagnostics<'_>,
    vms: &[VmConfig],
    vm_plans: &[VmPlan],
    plans: &[ChannelPlan],
) -> Vec<ChannelConfig> {
    let mut next_id = vec![0u32; vms.len()];
    let mut next_ipa = vec![bundle::CHANNEL_WINDOW.start; vms.len()];
    let mut seen: HashMap<(usize, usize, &str), usize> = HashMap::new();
    let mut out = Vec::new();
    for (k, p) in plans.iter().enumerate() {
        let key = (
            p.vms[0].min(p.vms[1]),
            p.vms[0].max(p.vms[1]),
            p.name.as_str(),
        );
        if let Some(first) = seen.insert(key, k) {
            d.push(
                p.name_span.clone(),
                &format!("channel[{k}].name"),
                format!(
                    "duplicate channel {:?} between {:?} and {:?} (also channel[{first}])",
                    p.name, vms[key.0].name, vms[key.1].name
                ),
            );
        }
        let ends = p.vms.map(|vm| {
            let id = next_id[vm];
            let ipa = next_ipa[vm];
            next_id[vm] += 1;
            next_ipa[vm] = ipa + p.size;
            if id as usize == limits::CHANNELS_PER_VM {
                d.push(
                    p.vms_span.clone(),
                    &format!("channel[{k}].vms"),
                    format!(
                        "{:?} is an end of more than {} channels",
                        vms[vm].name,
                        limits::CHANNELS_PER_VM
                    ),
                );
            } else if ipa <= bundle::CHANNEL_WINDOW.end && ipa + p.size > bundle::CHANNEL_WINDOW.end
            {
                d.push(
                    p.size_span.clone(),
                    &format!("channel[{k}].size"),
                    format!(
                        "the channels of {:?} need more than its 16 MiB channel window {}",
                        vms[vm].name,
                        window(&bundle::CHANNEL_WINDOW)
                    ),
                );
            }
            ChannelEndConfig {
                vm,
                id,
                ipa,
                spi: bundle::DOORBELL_SPI_BASE + id,
            }
        });
        out.push(ChannelConfig {
            name: p.name.clone(),
            size: p.size,
            ends,
        });
    }
    for (i, (vm, plan)) in vms.iter().zip(vm_plans).enumerate() {
        let ram = vm.memory_base..vm.memory_base + vm.memory;
        if next_id[i] > 0 && overlaps(&ram, &bundle::CHANNEL_WINDOW) {
            d.push(
                plan.ram_span.clone(),
                &plan.ram_field,
                format!(
                    "RAM {} overlaps the channel window {} where this VM's channels are mapped",
                    window(&ram),
                    window(&bundle::CHANNEL_WINDOW)
                ),
            );
        }
    }
    out
}
