//! A driver for randomized tests of the vGIC: the hypervisor and the guest
//! around a [`Vgic`] of [`VCPUS`] vCPUs with [`LRS`] list registers each,
//! shared by the crate's property tests and the `vgic` fuzz target
//! (`fuzz/`, which enables the `harness` feature), so both exercise the
//! same protocol with the same checks.
//!
//! [`Harness::enter`] fills a vCPU's LRs, with the full protocol
//! ([`Vgic::fill_lrs`]/[`Vgic::fold_lrs`]) or the hypervisor's incremental
//! one ([`Vgic::refill`], [`Vgic::fold_lr`] for the LRs whose content
//! changed), where every refill is checked against a full refill of a copy
//! of the model taken just before it; [`Harness::guest`] plays the guest
//! on one LR; [`Harness::exit`] and [`Harness::park`] fold them back.
//! [`Harness::settle`] checks, after any operation, what must always hold;
//! [`Harness::quiesce`] and [`Harness::deliver_all`] end a run: every line
//! low, a guest that handles everything, until nothing is left.

use std::vec::Vec;

use crate::AccessSize::Word;
use crate::{GicVersion, ListRegister, LrFill, LrFold, LrRefill, LrState, Vgic};

/// vCPUs of the harness's VM.
pub const VCPUS: usize = 3;
/// List registers per vCPU.
pub const LRS: usize = 4;
/// The vCPUs' MPIDRs (affinities 0.0.0.0, 0.0.0.1, 0.0.1.0).
pub const MPIDRS: [u64; VCPUS] = [0x0, 0x1, 0x100];

/// The hardware and guest side of the test: each vCPU's LRs while it runs.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The model under test (64 SPIs).
    pub g: Vgic,
    /// The LRs as the guest sees and changes them.
    pub lrs: [[ListRegister; LRS]; VCPUS],
    /// Full protocol: LRs `0..used` were filled.
    used: [usize; VCPUS],
    running: [bool; VCPUS],
    /// The incremental protocol instead of the full one.
    incremental: bool,
    /// Incremental: what the hypervisor last wrote to each LR.
    shadow: [[ListRegister; LRS]; VCPUS],
    /// Incremental: the LRs the hypervisor wrote valid and has not seen
    /// freed.
    occupied: [u64; VCPUS],
}

/// The valid LRs, as a sorted list (the hardware's choice among them
/// depends on their content, not their index).
fn valid_set(lrs: &[ListRegister]) -> Vec<ListRegister> {
    let mut v: Vec<ListRegister> = lrs
        .iter()
        .copied()
        .filter(|l| l.state != LrState::Invalid)
        .collect();
    v.sort_by_key(|l| (l.priority, l.vintid, l.state.bits()));
    v
}

/// Every LR the model writes survives the hardware encoding.
fn check_encoding(version: GicVersion, lr: &ListRegister) {
    match version {
        GicVersion::V3 => assert_eq!(ListRegister::from_v3(lr.to_v3()), *lr, "v3 LR round trip"),
        GicVersion::V2 => assert_eq!(ListRegister::from_v2(lr.to_v2()), *lr, "v2 LR round trip"),
    }
}

impl Harness {
    /// A VM of [`VCPUS`] vCPUs ([`MPIDRS`]) and 64 SPIs, driven with the
    /// incremental protocol or the full one.
    pub fn new(version: GicVersion, incremental: bool) -> Self {
        Self {
            g: Vgic::new(version, &MPIDRS, 64).expect("a valid vGIC"),
            lrs: [[ListRegister::INVALID; LRS]; VCPUS],
            used: [0; VCPUS],
            running: [false; VCPUS],
            incremental,
            shadow: [[ListRegister::INVALID; LRS]; VCPUS],
            occupied: [0; VCPUS],
        }
    }

    /// The LRs the guest may take (the full protocol's `0..used`; every
    /// LR for the incremental one).
    pub fn live(&self, v: usize) -> usize {
        if self.incremental { LRS } else { self.used[v] }
    }

    /// The hypervisor's entry of vCPU `v` (any index: one the VM does not
    /// have gets nothing): folds it first if it was running, then fills.
    pub fn enter(&mut self, v: usize) -> LrFill {
        self.exit(v);
        if self.incremental && v < VCPUS {
            return self.enter_incremental(v);
        }
        let mut scratch = [ListRegister::INVALID; LRS];
        let lrs = if v < VCPUS {
            &mut self.lrs[v]
        } else {
            &mut scratch
        };
        let fill = self.g.fill_lrs(v, lrs);
        if v < VCPUS {
            assert!(fill.used <= LRS);
            for lr in &self.lrs[v][..fill.used] {
                check_encoding(self.g.version(), lr);
            }
            self.used[v] = fill.used;
            self.running[v] = true;
        } else {
            assert_eq!(fill, LrFill::default());
        }
        fill
    }

    /// The hypervisor's entry: the incremental refill, checked against a
    /// full one on a copy.
    fn enter_incremental(&mut self, v: usize) -> LrFill {
        let mut reference = self.g.clone();
        let mut expected = [ListRegister::INVALID; LRS];
        let full = reference.fill_lrs(v, &mut expected);
        let mut out = [ListRegister::INVALID; LRS];
        let refill = self.g.refill(v, &mut out);
        for (n, &lr) in out.iter().enumerate() {
            if refill.write & (1 << n) != 0 {
                check_encoding(self.g.version(), &lr);
                self.lrs[v][n] = lr;
                self.shadow[v][n] = lr;
                if lr.state == LrState::Invalid {
                    self.occupied[v] &= !(1 << n);
                } else {
                    self.occupied[v] |= 1 << n;
                }
            }
        }
        assert_eq!(self.occupied[v], self.g.lr_slots(v), "the LRs in use");
        assert_eq!(
            valid_set(&self.lrs[v]),
            valid_set(&expected),
            "vCPU {v}: the incremental refill ({refill:?}) differs from a full one"
        );
        assert_eq!(refill.overflow, full.overflow);
        self.running[v] = true;
        LrFill {
            used: self.occupied[v].count_ones() as usize,
            overflow: refill.overflow,
        }
    }

    /// The guest on LR `l` of running vCPU `v`: `a % 3` is 0 acknowledge,
    /// 1 deactivate (the pending part stays), 2 acknowledge and complete.
    /// Nothing for a vCPU that is not running or an LR it may not take.
    pub fn guest(&mut self, v: usize, l: usize, a: u8) {
        if v < VCPUS && self.running[v] && l < self.live(v) {
            let lr = &mut self.lrs[v][l];
            lr.state = match (a % 3, lr.state) {
                (0, LrState::Pending) => LrState::Active,
                (1, LrState::Active) => LrState::Invalid,
                (1, LrState::PendingActive) => LrState::Pending,
                (2, LrState::Pending | LrState::Active) => LrState::Invalid,
                (_, s) => s,
            };
        }
    }

    /// The hypervisor's exit of vCPU `v`, if it runs: folds its LRs.
    pub fn exit(&mut self, v: usize) {
        if v < VCPUS && self.running[v] {
            if self.incremental {
                self.fold_changed(v);
            } else {
                self.g.fold_lrs(v, &self.lrs[v][..self.used[v]]);
            }
            self.running[v] = false;
        }
    }

    /// The incremental exit: folds the LRs whose content changed.
    fn fold_changed(&mut self, v: usize) {
        for n in 0..LRS {
            if self.occupied[v] & (1 << n) == 0 || self.lrs[v][n] == self.shadow[v][n] {
                continue;
            }
            match self.g.fold_lr(v, n, self.lrs[v][n].state) {
                LrFold::Kept => self.shadow[v][n] = self.lrs[v][n],
                LrFold::Freed { completed } => {
                    assert_eq!(
                        completed.is_some(),
                        self.lrs[v][n].pintid.is_some() && self.lrs[v][n].state == LrState::Invalid
                    );
                    // As the hypervisor does (`hw::HwLrs`): an LR the
                    // model freed while the guest still held it (an
                    // interrupt cancelled through the distributor) is
                    // cleared; an invalid one already is.
                    self.lrs[v][n] = ListRegister::INVALID;
                    self.occupied[v] &= !(1 << n);
                }
                LrFold::Unused => {
                    self.lrs[v][n] = ListRegister::INVALID;
                    self.occupied[v] &= !(1 << n);
                }
            }
        }
    }

    /// A hardware-linked PPI `intid` fires for vCPU `v` (physical INTID
    /// the same). Running incrementally, as the hypervisor's timer path
    /// does: when the vCPU's only LR came back empty,
    /// [`Vgic::refire_direct`] is tried before any fold; else (or where it
    /// declines) its LRs are folded and [`Vgic::forward_private_direct`]
    /// is tried; where that declines too, the general
    /// [`Vgic::set_hw_pending`] is used. Where a direct step places the
    /// interrupt, the model must end exactly as the general fold, forward
    /// and refill leave a copy taken before, and the one LR it writes must
    /// be the one the refill writes. Returns whether one placed it.
    pub fn forward_hw(&mut self, v: usize, intid: u32) -> bool {
        if !(self.incremental && v < VCPUS && self.running[v]) {
            let _ = self.g.set_hw_pending(v, intid, intid);
            return false;
        }
        let mut reference = self.clone();
        let occupied = self.occupied[v];
        let old = occupied.trailing_zeros() as usize;
        let one_done = occupied.count_ones() == 1 && self.lrs[v][old].state == LrState::Invalid;
        let mut placed = None;
        if one_done {
            placed = self.g.refire_direct(v, old, intid, 256);
            if placed.is_some() {
                // As the fold would: the empty LR is no longer in use.
                self.lrs[v][old] = ListRegister::INVALID;
                self.occupied[v] = 0;
            }
        }
        if placed.is_none() {
            self.fold_changed(v);
            placed = self.g.forward_private_direct(v, intid, intid, LRS, 256);
        }
        let Some((slot, lr)) = placed else {
            let _ = self.g.set_hw_pending(v, intid, intid);
            return false;
        };
        reference.fold_changed(v);
        let r = &mut reference.g;
        assert_eq!(
            r.set_hw_pending(v, intid, intid),
            Ok(true),
            "forwarded directly what the general path refuses"
        );
        // The direct steps record no kick for the vCPU they run on: that
        // bit is left out of the comparison.
        r.kicks = r.kicks & !(1 << v) | self.g.kicks & (1 << v);
        let what = std::format!("the direct forward of INTID {intid} (refire: {one_done})");
        self.placed_as_refill(r, v, slot, lr, &what);
        assert_eq!(self.occupied[v], reference.occupied[v] | 1 << slot);
        true
    }

    /// A kick of running vCPU `v` (incremental): its LRs are folded and
    /// [`Vgic::place_fresh_direct`] is tried; where it places, the model
    /// must end exactly as the refill of a copy taken before leaves it, and
    /// the one LR it writes must be the refill's. Returns whether it placed.
    pub fn kick_direct(&mut self, v: usize) -> bool {
        if !(self.incremental && v < VCPUS && self.running[v]) {
            return false;
        }
        self.fold_changed(v);
        let mut reference = self.g.clone();
        let Some((slot, lr)) = self.g.place_fresh_direct(v, LRS, 256) else {
            return false;
        };
        let refill = self.placed_as_refill(&mut reference, v, slot, lr, "the direct placement");
        assert!(!refill.full);
        true
    }

    /// A direct step placed `lr` into LR `slot` of running vCPU `v`: the
    /// refill of `reference` (the model as the general path left it up to
    /// the refill) must write exactly that LR, without overflow, and leave
    /// the same model as the direct step (`what`); then the LR is taken in
    /// use as the hypervisor writes it. Returns the reference's refill.
    fn placed_as_refill(
        &mut self,
        reference: &mut Vgic,
        v: usize,
        slot: usize,
        lr: ListRegister,
        what: &str,
    ) -> LrRefill {
        let mut out = [ListRegister::INVALID; LRS];
        let refill = reference.refill(v, &mut out);
        assert_eq!(refill.write, 1 << slot, "the refill writes other LRs");
        assert_eq!(out[slot], lr, "the refill writes another LR");
        assert!(!refill.overflow);
        assert_eq!(
            std::format!("{:?}", self.g),
            std::format!("{reference:?}"),
            "{what} left another model"
        );
        check_encoding(self.g.version(), &lr);
        self.lrs[v][slot] = lr;
        self.shadow[v][slot] = lr;
        self.occupied[v] |= 1 << slot;
        refill
    }

    /// The guest of running vCPU `v` takes and completes `intid` if one of
    /// its LRs holds it.
    pub fn complete(&mut self, v: usize, intid: u32) {
        if v >= VCPUS || !self.running[v] {
            return;
        }
        let live = self.live(v);
        if let Some(lr) = self.lrs[v][..live]
            .iter_mut()
            .find(|l| l.vintid == intid && l.state != LrState::Invalid)
        {
            lr.state = LrState::Invalid;
        }
    }

    /// Parks `v` (it leaves its CPU): every LR goes back to the model.
    pub fn park(&mut self, v: usize) {
        if v >= VCPUS {
            return;
        }
        if self.incremental {
            if self.running[v] {
                self.fold_changed(v);
                self.running[v] = false;
            }
            self.g.fold_lrs(v, &self.lrs[v]);
            self.lrs[v] = [ListRegister::INVALID; LRS];
            self.occupied[v] = 0;
        } else {
            self.exit(v);
        }
        assert_eq!(self.g.in_lr_count(v), 0, "a parked vCPU holds no LR");
    }

    /// The LRs the model owns now, per vCPU.
    fn owned(&self, v: usize) -> Vec<ListRegister> {
        if self.incremental {
            (0..LRS)
                .filter(|n| self.occupied[v] & (1 << n) != 0)
                .map(|n| self.lrs[v][n])
                .collect()
        } else if self.running[v] {
            self.lrs[v][..self.used[v]].to_vec()
        } else {
            Vec::new()
        }
    }

    /// After any operation: takes the kicks and hardware releases the
    /// hypervisor would act on, then checks the model's invariants
    /// ([`check_invariants`]) and the LRs as the hardware holds them: no
    /// INTID twice in one vCPU's LRs, no SPI in two vCPUs', and the model's
    /// count of placed LRs is the LRs in use.
    pub fn settle(&mut self) {
        let _ = self.g.take_kicks();
        while self.g.take_hw_release().is_some() {}
        check_invariants(&self.g);
        let mut spis: Vec<u32> = Vec::new();
        for v in 0..VCPUS {
            let mut seen: Vec<u32> = Vec::new();
            for lr in self.owned(v).iter().filter(|l| l.state != LrState::Invalid) {
                assert!(
                    !seen.contains(&lr.vintid),
                    "INTID {} twice in vCPU {v}'s LRs",
                    lr.vintid
                );
                seen.push(lr.vintid);
                if lr.vintid >= 32 {
                    assert!(
                        !spis.contains(&lr.vintid),
                        "SPI {} in two vCPUs' LRs",
                        lr.vintid
                    );
                    spis.push(lr.vintid);
                }
            }
            if self.running[v] && !self.incremental {
                assert_eq!(self.g.in_lr_count(v), self.used[v], "vCPU {v}'s placed LRs");
            }
            if self.incremental {
                assert_eq!(self.occupied[v], self.g.lr_slots(v), "vCPU {v}'s LR slots");
            }
        }
    }

    /// Ends a run's activity: every vCPU leaves its CPU and every line
    /// drops.
    pub fn quiesce(&mut self) {
        for v in 0..VCPUS {
            self.park(v);
            for intid in 16..self.g.nr_irqs() {
                self.g.set_level(intid, v, false).expect("a line of the VM");
            }
        }
    }

    /// Then a guest that handles everything runs every vCPU until nothing
    /// is left (at most 200 rounds); returns what it handled, as (vCPU,
    /// INTID), and checks that no vCPU has work or a pending interrupt left.
    pub fn deliver_all(&mut self) -> Vec<(usize, u32)> {
        let mut delivered = Vec::new();
        for _round in 0..200 {
            if (0..VCPUS).all(|v| self.g.candidate_count(v) == 0) {
                break;
            }
            for v in 0..VCPUS {
                self.enter(v);
                let live = self.live(v);
                for vintid in guest_completes_all(&mut self.lrs[v][..live]) {
                    delivered.push((v, vintid));
                }
                self.exit(v);
                self.settle();
            }
        }
        for v in 0..VCPUS {
            assert_eq!(self.g.candidate_count(v), 0, "vCPU {v} still has work");
            assert!(
                !self.g.has_pending(v, 0xff),
                "vCPU {v} still has a pending interrupt"
            );
        }
        delivered
    }
}

/// Enables both groups and every interrupt on every vCPU.
pub fn enable_all(g: &mut Vgic) {
    let all = u64::from(u32::MAX);
    g.dist_write(0, 0, Word, 0b11).expect("CTLR");
    for w in 0..=g.spi_words() as u64 {
        g.dist_write(0, 0x100 + 4 * w, Word, all)
            .expect("ISENABLER");
    }
    if g.version() == GicVersion::V3 {
        for r in 0..g.nr_vcpus() {
            g.redist_write(0, r, 0x1_0100, Word, all)
                .expect("ISENABLER0");
        }
    } else {
        for v in 0..g.nr_vcpus() {
            g.dist_write(v, 0x100, Word, all).expect("ISENABLER0");
        }
    }
}

/// The guest acknowledges (Pending → Active) and completes (→ Invalid)
/// every LR; returns the INTIDs it handled.
pub fn guest_completes_all(lrs: &mut [ListRegister]) -> Vec<u32> {
    let mut seen = Vec::new();
    for lr in lrs.iter_mut() {
        if lr.state != LrState::Invalid {
            seen.push(lr.vintid);
            lr.state = LrState::Invalid;
        }
    }
    seen
}

/// Checks the model's bookkeeping invariants (its private state: the LRs
/// it placed, the banks' `in_lr` and list-register bits, the SGI latches,
/// an exact vCPU's fresh list).
pub fn check_invariants(g: &Vgic) {
    let mut spis_in_lrs = Vec::new();
    for v in 0..g.nr_vcpus {
        let placed: Vec<_> = crate::regs::BitIter64(g.lr_mask[v])
            .map(|n| g.placed[v][n])
            .collect();
        let mut private_bits = 0u32;
        for (k, p) in placed.iter().enumerate() {
            assert!(
                !placed[..k].iter().any(|q| q.intid == p.intid),
                "INTID {} twice in vCPU {v}'s LRs",
                p.intid
            );
            if p.intid < 32 {
                private_bits |= 1 << p.intid;
            } else {
                assert!(
                    !spis_in_lrs.contains(&p.intid),
                    "SPI {} in two vCPUs' LRs",
                    p.intid
                );
                spis_in_lrs.push(p.intid);
            }
        }
        let bank = &g.private[v];
        assert_eq!(bank.in_lr, private_bits, "vCPU {v} in_lr");
        if g.version == GicVersion::V2 {
            for sgi in 0..16 {
                assert_eq!(
                    bank.latch & (1 << sgi) != 0,
                    g.sgi_src[v][sgi] != 0,
                    "vCPU {v} SGI {sgi} latch"
                );
            }
        }
    }
    for (w, bank) in g.spis.iter().enumerate() {
        let mut bits = 0u32;
        for &i in &spis_in_lrs {
            if (usize::from(i) - 32) / 32 == w {
                bits |= 1 << (i % 32);
            }
        }
        assert_eq!(bank.in_lr, bits, "SPI bank {w} in_lr");
    }
    // An exact vCPU's LRs miss no candidate but the fresh ones.
    for v in 0..g.nr_vcpus {
        if g.exact & (1 << v) != 0 {
            for pmr in [0xff, 0x80, 0x10] {
                assert_eq!(
                    g.has_pending(v, pmr),
                    g.has_pending_scan(v, pmr),
                    "vCPU {v}: the wake-up check from the fresh list"
                );
            }
            let fresh = &g.fresh[v][..usize::from(g.fresh_len[v])];
            let private = g.fresh_private[v];
            g.for_each_candidate(v, |key| {
                let intid = (key & 0xffff) as u16;
                assert!(
                    fresh.contains(&intid) || (intid < 32 && private & (1 << intid) != 0),
                    "vCPU {v} is exact but candidate {intid} is not fresh ({fresh:?})"
                );
            });
        }
    }
    for bank in g.private.iter().chain(g.spis.iter()) {
        assert_eq!(bank.lr_pending & !bank.in_lr, 0);
        assert_eq!(bank.lr_active & !bank.in_lr, 0);
        assert_eq!(bank.cancel_pending & !bank.in_lr, 0);
        assert_eq!(bank.cancel_active & !bank.in_lr, 0);
        assert_eq!(bank.hw & bank.release, 0);
        for p in bank.priority {
            assert_eq!(p & 7, 0);
        }
    }
}
