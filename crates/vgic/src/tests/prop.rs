//! Property tests: random register accesses, SGIs, device inputs and
//! guest runs (fill, guest acknowledge/complete, fold) from random vCPUs,
//! on both versions, never panic and keep the model's invariants; and
//! whatever state they leave, repeated fill/fold with a guest that handles
//! everything delivers every deliverable interrupt and then goes quiet.
//!
//! Each runs twice: with the full fold and refill on every exit and entry
//! ([`Vgic::fold_lrs`], [`Vgic::fill_lrs`]), and with the incremental
//! protocol the hypervisor uses ([`Vgic::fold_lr`] for the LRs whose
//! content changed since they were written, [`Vgic::refill`]), where every
//! refill is checked against a full refill of a copy of the model taken
//! just before it: the same interrupts in the same states, so the same
//! delivery in the same priority order.

use super::*;
use crate::harness::{Harness, LRS, MPIDRS, VCPUS, enable_all};
use crate::regs::BitIter;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    DistWrite(usize, u64, AccessSize, u64),
    DistRead(usize, u64, AccessSize),
    RedistWrite(usize, usize, u64, AccessSize, u64),
    RedistRead(usize, usize, u64, AccessSize),
    Sgi(usize, u64, u8),
    Level(u32, usize, bool),
    Edge(u32, usize),
    Hw(usize, u32, u32),
    /// A HW-linked PPI fires for a vCPU, forwarded as the timer path does.
    HwDirect(usize, u32),
    /// A guest timer's tick: forwarded as the timer path does and, when
    /// placed, taken and completed by the guest at once.
    Tick(usize, u32),
    /// A running vCPU is kicked: its one fresh SGI or PPI placed directly.
    Kick(usize),
    /// A HW-linked source drops its lines (e.g. a guest timer disabled).
    Retire(usize, u32),
    EnableAll,
    Enter(usize),
    Guest(usize, usize, u8),
    Exit(usize),
    Park(usize),
}

fn size() -> impl Strategy<Value = AccessSize> {
    prop_oneof![
        4 => Just(Word),
        1 => Just(Byte),
        1 => Just(Half),
        1 => Just(Double),
    ]
}

fn dist_offset() -> impl Strategy<Value = u64> {
    let bases = [
        0x0, 0x80, 0x100, 0x180, 0x200, 0x280, 0x300, 0x380, 0x400, 0x800, 0xc00, 0xf00, 0xf10,
        0xf20, 0x6100, 0xffd0,
    ];
    prop_oneof![
        4 => (proptest::sample::select(bases.to_vec()), 0u64..80).prop_map(|(b, i)| b + i),
        1 => 0u64..0x1_0000,
        1 => any::<u64>(),
    ]
}

fn redist_offset() -> impl Strategy<Value = u64> {
    let bases = [
        0x0, 0x8, 0x14, 0x1_0080, 0x1_0100, 0x1_0180, 0x1_0200, 0x1_0280, 0x1_0300, 0x1_0380,
        0x1_0400, 0x1_0c00,
    ];
    prop_oneof![
        4 => (proptest::sample::select(bases.to_vec()), 0u64..36).prop_map(|(b, i)| b + i),
        1 => 0u64..0x2_0000,
        1 => any::<u64>(),
    ]
}

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), any::<u64>(), 0u64..16]
}

fn op() -> impl Strategy<Value = Op> {
    let vcpu = 0..VCPUS + 1;
    let intid = prop_oneof![16u32..32, 32u32..96, 0u32..300];
    prop_oneof![
        4 => (vcpu.clone(), dist_offset(), size(), value())
            .prop_map(|(v, o, s, x)| Op::DistWrite(v, o, s, x)),
        1 => (vcpu.clone(), dist_offset(), size()).prop_map(|(v, o, s)| Op::DistRead(v, o, s)),
        3 => (vcpu.clone(), vcpu.clone(), redist_offset(), size(), value())
            .prop_map(|(a, r, o, s, x)| Op::RedistWrite(a, r, o, s, x)),
        1 => (vcpu.clone(), vcpu.clone(), redist_offset(), size())
            .prop_map(|(a, r, o, s)| Op::RedistRead(a, r, o, s)),
        2 => (vcpu.clone(), any::<u64>(), 0u8..3).prop_map(|(v, x, k)| Op::Sgi(v, x & 0x00ff_1fff_0fff_ffff, k)),
        2 => (intid.clone(), vcpu.clone(), any::<bool>()).prop_map(|(i, v, l)| Op::Level(i, v, l)),
        2 => (intid.clone(), vcpu.clone()).prop_map(|(i, v)| Op::Edge(i, v)),
        1 => (vcpu.clone(), intid, 0u32..1100).prop_map(|(v, i, p)| Op::Hw(v, i, p)),
        4 => (vcpu.clone(), prop_oneof![Just(27u32), Just(30), 16u32..32]).prop_map(|(v, i)| Op::HwDirect(v, i)),
        4 => (vcpu.clone(), prop_oneof![Just(27u32), Just(30)]).prop_map(|(v, i)| Op::Tick(v, i)),
        3 => vcpu.clone().prop_map(Op::Kick),
        1 => (vcpu.clone(), any::<u32>()).prop_map(|(v, bits)| Op::Retire(v, bits)),
        1 => Just(Op::EnableAll),
        3 => vcpu.clone().prop_map(Op::Enter),
        4 => (vcpu.clone(), 0..LRS + 1, 0u8..3).prop_map(|(v, l, a)| Op::Guest(v, l, a)),
        2 => vcpu.clone().prop_map(Op::Exit),
        1 => vcpu.prop_map(Op::Park),
    ]
}

/// The operations on top of the shared [`Harness`].
trait Apply {
    fn apply(&mut self, op: &Op);
    fn apply_op(&mut self, op: &Op);
}

impl Apply for Harness {
    /// One operation, with the generation check around it.
    fn apply(&mut self, op: &Op) {
        // What every vCPU that is not running would get placed now.
        let before: Vec<Vec<u32>> = (0..VCPUS)
            .map(|v| {
                let mut keys = Vec::new();
                self.g.for_each_candidate(v, |k| keys.push(k));
                keys
            })
            .collect();
        let generation = self.g.generation();
        self.apply_op(op);
        // The generation is the hypervisor's licence to skip a fill: if it
        // did not move, no vCPU's candidates may have changed.
        if self.g.generation() == generation {
            for (v, keys) in before.iter().enumerate() {
                let mut now = Vec::new();
                self.g.for_each_candidate(v, |k| now.push(k));
                assert_eq!(
                    &now, keys,
                    "vCPU {v}'s candidates changed under {op:?} with the same generation"
                );
            }
        }
    }

    fn apply_op(&mut self, op: &Op) {
        let g = &mut self.g;
        match *op {
            Op::DistWrite(v, o, s, x) => drop(g.dist_write(v, o, s, x)),
            Op::DistRead(v, o, s) => {
                if let Ok(x) = g.dist_read(v, o, s) {
                    assert_eq!(x & !s.mask(), 0, "read wider than the access");
                }
            }
            Op::RedistWrite(a, r, o, s, x) => drop(g.redist_write(a, r, o, s, x)),
            Op::RedistRead(a, r, o, s) => {
                if let Ok(x) = g.redist_read(a, r, o, s) {
                    assert_eq!(x & !s.mask(), 0);
                }
            }
            Op::Sgi(v, x, k) => drop(match k {
                0 => g.sgi1r_write(v, x),
                1 => g.sgi0r_write(v, x),
                _ => g.asgi1r_write(v, x),
            }),
            Op::Level(i, v, l) => drop(g.set_level(i, v, l)),
            Op::Edge(i, v) => drop(g.set_pending(i, v)),
            Op::Hw(v, i, p) => drop(g.set_hw_pending(v, i, p)),
            Op::HwDirect(v, i) => drop(self.forward_hw(v, i)),
            Op::Kick(v) => drop(self.kick_direct(v)),
            Op::Tick(v, i) => {
                if self.forward_hw(v, i) {
                    self.complete(v, i);
                }
            }
            Op::Retire(v, bits) => {
                let retired = g.retire_hw_pending(v, bits);
                assert_eq!(retired & !bits, 0, "retired only what was asked");
                for i in BitIter(retired) {
                    // Unless a level-sensitive input of its own still holds it.
                    let bank = &g.private[v];
                    let level = bank.line & !bank.edge & (1 << i) != 0;
                    assert!(
                        level || !g.is_pending(v, i as u32),
                        "INTID {i} still pending"
                    );
                }
            }
            Op::EnableAll => enable_all(g),
            Op::Enter(v) => drop(self.enter(v)),
            // The guest: 0 acknowledges, 1 deactivates (the pending part
            // stays), 2 acknowledges and completes.
            Op::Guest(v, l, a) => self.guest(v, l, a),
            Op::Exit(v) => self.exit(v),
            Op::Park(v) => self.park(v),
        }
        self.settle();
    }
}

fn run(version: GicVersion, incremental: bool, ops: &[Op]) {
    let mut h = Harness::new(version, incremental);
    for op in ops {
        h.apply(op);
    }
    h.quiesce();
    let mut expected = Vec::new();
    for v in 0..VCPUS {
        h.g.for_each_candidate(v, |k| expected.push((v, k & 0xffff)));
    }
    let delivered = h.deliver_all();
    for (v, intid) in expected {
        assert!(
            delivered.contains(&(v, intid)),
            "INTID {intid} never delivered to vCPU {v}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_v3(ops in proptest::collection::vec(op(), 0..80)) {
        run(GicVersion::V3, false, &ops);
    }

    #[test]
    fn random_operations_v2(ops in proptest::collection::vec(op(), 0..80)) {
        run(GicVersion::V2, false, &ops);
    }

    #[test]
    fn incremental_matches_full_v3(ops in proptest::collection::vec(op(), 0..80)) {
        run(GicVersion::V3, true, &ops);
    }

    /// Timer ticks and IPIs among everything else, from a state where
    /// every interrupt is enabled and every vCPU runs: the direct steps of
    /// the timer path (`forward_hw`) and of a kick (`kick_direct`) take
    /// the steady state often, and each time must match the general fold,
    /// forward and refill.
    #[test]
    fn timer_ticks_match_the_general_path(
        ops in proptest::collection::vec(op(), 0..80),
        version in prop_oneof![Just(GicVersion::V2), Just(GicVersion::V3)],
    ) {
        let start = [Op::EnableAll, Op::Enter(0), Op::Enter(1), Op::Enter(2)];
        // vCPU 0's timer, vCPU 1's timer, and an IPI from vCPU 0 to vCPU 1
        // (SGI 3, target list {1}) that vCPU 1 is kicked for and handles.
        let ticks = [
            Op::Tick(0, 27),
            Op::Sgi(0, (3 << 24) | 0b10, 0),
            Op::Kick(1),
            Op::Tick(1, 30),
            Op::Guest(1, 0, 2),
            Op::Guest(1, 1, 2),
        ];
        let mut all: Vec<Op> = start.to_vec();
        for (k, op) in ops.into_iter().enumerate() {
            all.push(op);
            all.push(ticks[k % ticks.len()].clone());
        }
        run(version, true, &all);
    }

    #[test]
    fn incremental_matches_full_v2(ops in proptest::collection::vec(op(), 0..80)) {
        run(GicVersion::V2, true, &ops);
    }

    /// Edge SPIs spread over the vCPUs, while vCPUs run concurrently
    /// (LRs held between fill and fold), the guest handles only some LRs,
    /// and SPIs are retargeted mid-flight: each is delivered exactly once.
    #[test]
    fn edges_are_delivered_exactly_once(
        spis in proptest::collection::btree_set(32u32..96, 1..40),
        prios in proptest::collection::vec(any::<u8>(), 64),
        version in prop_oneof![Just(GicVersion::V2), Just(GicVersion::V3)],
        incremental in any::<bool>(),
        schedule in proptest::collection::vec(
            (0..VCPUS, 0..LRS + 1, proptest::option::of((32u32..96, 0..VCPUS))),
            0..60,
        ),
    ) {
        let mut h = Harness::new(version, incremental);
        enable_all(&mut h.g);
        for &intid in &spis {
            let g = &mut h.g;
            let prio = u64::from(prios[intid as usize - 32]);
            g.dist_write(0, 0x400 + u64::from(intid), Byte, prio).unwrap();
            route(g, intid, intid as usize % 3);
            let cfg = 0xc00 + u64::from(intid / 16) * 4;
            let old = g.dist_read(0, cfg, Word).unwrap();
            g.dist_write(0, cfg, Word, old | 2 << (2 * (intid % 16))).unwrap();
            g.set_pending(intid, 0).unwrap();
        }
        let mut delivered = Vec::new();
        for (v, handled, retarget) in schedule {
            if let Some((intid, t)) = retarget {
                route(&mut h.g, intid, t);
            }
            let fill = h.enter(v);
            if !incremental {
                let prios: Vec<u8> = h.lrs[v][..fill.used].iter().map(|l| l.priority).collect();
                prop_assert!(prios.windows(2).all(|w| w[0] <= w[1]), "priority order");
            }
            // The guest takes the highest-priority ones (the incremental
            // refill's LR set is checked against the full one's).
            let mut order: Vec<usize> = (0..h.live(v)).filter(|&n| h.lrs[v][n].state != LrState::Invalid).collect();
            order.sort_by_key(|&n| (h.lrs[v][n].priority, h.lrs[v][n].vintid));
            for &n in order.iter().take(handled) {
                delivered.extend(guest_completes_all(&mut h.lrs[v][n..n + 1]));
            }
            // No exit: the vCPU keeps running with its LRs.
            check_invariants(&h.g);
        }
        for _ in 0..40 {
            for v in 0..VCPUS {
                h.enter(v);
                let live = h.live(v);
                for lr in h.lrs[v][..live].iter().filter(|l| l.state != LrState::Invalid) {
                    prop_assert_eq!(h.g.spi_target(lr.vintid), Some(v), "delivered to its target");
                }
                delivered.extend(guest_completes_all(&mut h.lrs[v][..live]));
                h.exit(v);
            }
        }
        delivered.sort_unstable();
        prop_assert_eq!(delivered, spis.into_iter().collect::<Vec<_>>());
    }
}

/// Routes SPI `intid` to vCPU `t` of the harness.
fn route(g: &mut Vgic, intid: u32, t: usize) {
    if g.version() == GicVersion::V2 {
        g.dist_write(0, 0x800 + u64::from(intid), Byte, 1 << t)
            .unwrap();
    } else {
        let mpidr = MPIDRS[t];
        g.dist_write(0, 0x6000 + 8 * u64::from(intid), Double, mpidr)
            .unwrap();
    }
}
