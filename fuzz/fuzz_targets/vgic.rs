//! The virtual GIC (`stratum_vgic`): sequences of distributor and
//! redistributor accesses at every width and offset, SGI-register writes,
//! device inputs (levels, edges, hardware-linked interrupts, timer ticks
//! forwarded the timer path's direct way) and guest
//! runs (fill the list registers, the guest acknowledges and completes,
//! fold them back), from any vCPU, on GICv2 or GICv3, with the full
//! protocol (`fill_lrs`/`fold_lrs`) or the hypervisor's incremental one
//! (`refill`/`fold_lr`).
//!
//! The hypervisor and guest around the model are `stratum_vgic::harness`,
//! the driver the crate's property tests use too. Checked after every
//! operation: a read is no wider than its access, and what
//! `Harness::settle` checks (the model's bookkeeping invariants; no INTID
//! twice in one vCPU's list registers and no SPI in two vCPUs'; the
//! model's count of placed LRs matches the LRs in use); on every entry, an
//! incremental refill places what a full refill of a copy would and every
//! LR the model writes survives the hardware encoding. At the end, with
//! every line low, a guest that handles everything drains every vCPU:
//! nothing stays pending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_fuzz::{Input, gic_version};
use stratum_vgic::harness::{Harness, LRS, VCPUS, enable_all};

/// Operations per input, at most.
const MAX_OPS: usize = 256;

const DIST_BASES: [u64; 16] = [
    0x0, 0x80, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0x400, 0x800, 0xc00, 0xf00, 0xf10, 0xf20,
    0x6100, 0xffd0,
];
const REDIST_BASES: [u64; 12] = [
    0x0, 0x8, 0x14, 0x1_0080, 0x1_0100, 0x1_0180, 0x1_0200, 0x1_0280, 0x1_0300, 0x1_0380, 0x1_0400,
    0x1_0c00,
];

fn dist_offset(input: &mut Input<'_>) -> u64 {
    match input.u8() % 6 {
        0..=3 => DIST_BASES[input.below(DIST_BASES.len())] + u64::from(input.u8() % 80),
        4 => u64::from(input.u16()),
        _ => input.u64(),
    }
}

fn redist_offset(input: &mut Input<'_>) -> u64 {
    match input.u8() % 6 {
        0..=3 => REDIST_BASES[input.below(REDIST_BASES.len())] + u64::from(input.u8() % 36),
        4 => u64::from(input.u32() % 0x2_0000),
        _ => input.u64(),
    }
}

fn intid(input: &mut Input<'_>) -> u32 {
    match input.u8() % 3 {
        0 => 16 + u32::from(input.u8() % 16),
        1 => 32 + u32::from(input.u8() % 64),
        _ => u32::from(input.u16() % 300),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let head = input.u8();
    let version = gic_version(head);
    let mut h = Harness::new(version, head & 2 != 0);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let v = input.below(VCPUS + 1);
        match op % 16 {
            0..=3 => {
                let (o, s, x) = (dist_offset(&mut input), input.size(), input.value());
                let _ = h.g.dist_write(v, o, s, x);
            }
            4 => {
                let (o, s) = (dist_offset(&mut input), input.size());
                if let Ok(x) = h.g.dist_read(v, o, s) {
                    assert_eq!(x & !s.mask(), 0, "a read wider than the access");
                }
            }
            5 | 6 => {
                let r = input.below(VCPUS + 1);
                let (o, s, x) = (redist_offset(&mut input), input.size(), input.value());
                let _ = h.g.redist_write(v, r, o, s, x);
            }
            7 => {
                let r = input.below(VCPUS + 1);
                let (o, s) = (redist_offset(&mut input), input.size());
                if let Ok(x) = h.g.redist_read(v, r, o, s) {
                    assert_eq!(x & !s.mask(), 0, "a read wider than the access");
                }
            }
            8 => {
                let x = input.u64() & 0x00ff_1fff_0fff_ffff;
                let _ = match input.u8() % 3 {
                    0 => h.g.sgi1r_write(v, x),
                    1 => h.g.sgi0r_write(v, x),
                    _ => h.g.asgi1r_write(v, x),
                };
            }
            9 => {
                let (i, l) = (intid(&mut input), input.bool());
                let _ = h.g.set_level(i, v, l);
            }
            10 => {
                let _ = h.g.set_pending(intid(&mut input), v);
            }
            11 => {
                let (i, p) = (intid(&mut input), u32::from(input.u16() % 1100));
                // A plain forward, or a PPI forwarded as the timer path
                // does (checked against the general way), then perhaps
                // taken and completed at once (a tick).
                let ppi = 16 + i % 16;
                match p % 3 {
                    0 => drop(h.g.set_hw_pending(v, i, p)),
                    1 => drop(h.forward_hw(v, ppi)),
                    _ => {
                        if h.forward_hw(v, ppi) {
                            h.complete(v, ppi);
                        }
                    }
                }
            }
            12 => enable_all(&mut h.g),
            13 => drop(h.enter(v)),
            14 => {
                let (l, a) = (input.below(LRS + 1), input.u8());
                h.guest(v, l, a);
            }
            _ => {
                if input.bool() {
                    h.park(v);
                } else {
                    h.exit(v);
                }
            }
        }
        h.settle();
    }

    // Drain: every vCPU leaves its CPU, every line drops, then a guest that
    // handles everything runs until nothing is left.
    h.quiesce();
    h.deliver_all();
});
