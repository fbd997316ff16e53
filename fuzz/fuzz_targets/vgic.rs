//! The virtual GIC (`stratum_vgic`): sequences of distributor and
//! redistributor accesses at every width and offset, SGI-register writes,
//! device inputs (levels, edges, hardware-linked interrupts) and guest
//! runs (fill the list registers, the guest acknowledges and completes,
//! fold them back), from any vCPU, on GICv2 or GICv3, with the full
//! protocol (`fill_lrs`/`fold_lrs`) or the hypervisor's incremental one
//! (`refill`/`fold_lr`).
//!
//! Checked after every operation: a read is no wider than its access; no
//! INTID sits twice in one vCPU's list registers and no SPI in two vCPUs';
//! the model's count of placed LRs matches the LRs in use; an incremental
//! refill places what a full refill of a copy would; every LR the model
//! writes survives the hardware encoding (`to_v3`/`from_v3`,
//! `to_v2`/`from_v2`). At the end, with every line low, a guest that
//! handles everything drains every vCPU: nothing stays pending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stratum_fuzz::Input;
use stratum_vgic::{AccessSize, GicVersion, ListRegister, LrFold, LrState, Vgic};

const VCPUS: usize = 3;
const LRS: usize = 4;
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

struct Harness {
    g: Vgic,
    lrs: [[ListRegister; LRS]; VCPUS],
    used: [usize; VCPUS],
    running: [bool; VCPUS],
    incremental: bool,
    shadow: [[ListRegister; LRS]; VCPUS],
    occupied: [u64; VCPUS],
}

fn valid_set(lrs: &[ListRegister]) -> Vec<ListRegister> {
    let mut v: Vec<ListRegister> = lrs
        .iter()
        .copied()
        .filter(|l| l.state != LrState::Invalid)
        .collect();
    v.sort_by_key(|l| (l.priority, l.vintid, l.state.bits()));
    v
}

fn check_encoding(version: GicVersion, lr: &ListRegister) {
    match version {
        GicVersion::V3 => assert_eq!(ListRegister::from_v3(lr.to_v3()), *lr, "v3 LR round trip"),
        GicVersion::V2 => assert_eq!(ListRegister::from_v2(lr.to_v2()), *lr, "v2 LR round trip"),
    }
}

impl Harness {
    fn live(&self, v: usize) -> usize {
        if self.incremental { LRS } else { self.used[v] }
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

    fn check(&self) {
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

    fn exit(&mut self, v: usize) {
        if v < VCPUS && self.running[v] {
            if self.incremental {
                self.fold_changed(v);
            } else {
                self.g.fold_lrs(v, &self.lrs[v][..self.used[v]]);
            }
            self.running[v] = false;
        }
    }

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
                    self.occupied[v] &= !(1 << n);
                }
                LrFold::Unused => {
                    self.lrs[v][n] = ListRegister::INVALID;
                    self.occupied[v] &= !(1 << n);
                }
            }
        }
    }

    fn park(&mut self, v: usize) {
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

    fn enter(&mut self, v: usize) {
        self.exit(v);
        let version = self.g.version();
        if v >= VCPUS {
            // A vCPU the VM does not have gets nothing.
            let mut scratch = [ListRegister::INVALID; LRS];
            let fill = self.g.fill_lrs(v, &mut scratch);
            assert_eq!(fill.used, 0);
            return;
        }
        if self.incremental {
            let mut reference = self.g.clone();
            let mut expected = [ListRegister::INVALID; LRS];
            let full = reference.fill_lrs(v, &mut expected);
            let mut out = [ListRegister::INVALID; LRS];
            let refill = self.g.refill(v, &mut out);
            for (n, &lr) in out.iter().enumerate() {
                if refill.write & (1 << n) != 0 {
                    check_encoding(version, &lr);
                    self.lrs[v][n] = lr;
                    self.shadow[v][n] = lr;
                    if lr.state == LrState::Invalid {
                        self.occupied[v] &= !(1 << n);
                    } else {
                        self.occupied[v] |= 1 << n;
                    }
                }
            }
            assert_eq!(
                valid_set(&self.lrs[v]),
                valid_set(&expected),
                "vCPU {v}: the incremental refill differs from a full one"
            );
            assert_eq!(refill.overflow, full.overflow);
        } else {
            let fill = self.g.fill_lrs(v, &mut self.lrs[v]);
            assert!(fill.used <= LRS);
            for lr in &self.lrs[v][..fill.used] {
                check_encoding(version, lr);
            }
            self.used[v] = fill.used;
        }
        self.running[v] = true;
    }

    fn guest(&mut self, v: usize, l: usize, a: u8) {
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
}

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

fn enable_all(g: &mut Vgic) {
    let all = u64::from(u32::MAX);
    g.dist_write(0, 0, AccessSize::Word, 0b11).expect("CTLR");
    for w in 0..=(g.nr_spis() as u64).div_ceil(32) {
        let _ = g.dist_write(0, 0x100 + 4 * w, AccessSize::Word, all);
    }
    if g.version() == GicVersion::V3 {
        for r in 0..g.nr_vcpus() {
            g.redist_write(0, r, 0x1_0100, AccessSize::Word, all)
                .expect("ISENABLER0");
        }
    } else {
        for v in 0..g.nr_vcpus() {
            g.dist_write(v, 0x100, AccessSize::Word, all)
                .expect("ISENABLER0");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let head = input.u8();
    let version = if head & 1 == 0 {
        GicVersion::V3
    } else {
        GicVersion::V2
    };
    let mut h = Harness {
        g: Vgic::new(version, &[0x0, 0x1, 0x100], 64).expect("a valid vGIC"),
        lrs: [[ListRegister::INVALID; LRS]; VCPUS],
        used: [0; VCPUS],
        running: [false; VCPUS],
        incremental: head & 2 != 0,
        shadow: [[ListRegister::INVALID; LRS]; VCPUS],
        occupied: [0; VCPUS],
    };
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
                let _ = h.g.set_hw_pending(v, i, p);
            }
            12 => enable_all(&mut h.g),
            13 => h.enter(v),
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
        let _ = h.g.take_kicks();
        while h.g.take_hw_release().is_some() {}
        h.check();
    }

    // Drain: every vCPU leaves its CPU, every line drops, then a guest that
    // handles everything runs until nothing is left.
    for v in 0..VCPUS {
        h.park(v);
        for i in 16..h.g.nr_irqs() {
            h.g.set_level(i, v, false).expect("a line of the VM");
        }
    }
    for _round in 0..200 {
        if (0..VCPUS).all(|v| h.g.candidate_count(v) == 0) {
            break;
        }
        for v in 0..VCPUS {
            h.enter(v);
            let live = h.live(v);
            for lr in h.lrs[v][..live].iter_mut() {
                lr.state = LrState::Invalid;
            }
            h.exit(v);
            while h.g.take_hw_release().is_some() {}
            h.check();
        }
    }
    for v in 0..VCPUS {
        assert_eq!(h.g.candidate_count(v), 0, "vCPU {v} still has work");
        assert!(
            !h.g.has_pending(v, 0xff),
            "vCPU {v} still has a pending interrupt"
        );
    }
});
