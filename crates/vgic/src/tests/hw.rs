//! The list-register cache ([`crate::hw::HwLrs`]) against a fake virtual
//! interface whose "guest" takes and completes interrupts as hardware
//! would.

use super::*;
use crate::hw::{HwLrs, LrFormat, VirtualInterface};

/// A virtual interface with `n` LRs, counting what EL2 did to it.
struct FakeInterface {
    format: LrFormat,
    lrs: Vec<u64>,
    writes: usize,
    underflow: bool,
    deactivated: Vec<u32>,
}

impl FakeInterface {
    fn new(format: LrFormat, n: usize) -> Self {
        Self {
            format,
            lrs: vec![0; n],
            writes: 0,
            underflow: false,
            deactivated: Vec::new(),
        }
    }

    fn decode(&self, raw: u64) -> ListRegister {
        match self.format {
            LrFormat::V3 => ListRegister::from_v3(raw),
            _ => ListRegister::from_v2(raw as u32),
        }
    }

    fn encode(&self, lr: ListRegister) -> u64 {
        match self.format {
            LrFormat::V3 => lr.to_v3(),
            _ => u64::from(lr.to_v2()),
        }
    }

    /// The guest acknowledges the interrupt in LR `n` (pending → active).
    fn guest_acks(&mut self, n: usize) -> u32 {
        let mut lr = self.decode(self.lrs[n]);
        assert_eq!(lr.state, LrState::Pending);
        lr.state = LrState::Active;
        self.lrs[n] = self.encode(lr);
        lr.vintid
    }

    /// The guest deactivates the interrupt in LR `n` (active → invalid).
    fn guest_completes(&mut self, n: usize) {
        let mut lr = self.decode(self.lrs[n]);
        assert_eq!(lr.state, LrState::Active);
        lr.state = LrState::Invalid;
        self.lrs[n] = self.encode(lr);
    }

    /// The interrupts the LRs hold, in LR order.
    fn held(&self) -> Vec<(u32, LrState)> {
        self.lrs
            .iter()
            .map(|&raw| self.decode(raw))
            .filter(|lr| lr.state != LrState::Invalid)
            .map(|lr| (lr.vintid, lr.state))
            .collect()
    }
}

impl VirtualInterface for FakeInterface {
    fn elrsr(&self) -> u64 {
        let mut empty = 0;
        for (n, &raw) in self.lrs.iter().enumerate() {
            if self.decode(raw).state == LrState::Invalid {
                empty |= 1 << n;
            }
        }
        empty
    }

    fn read_lr(&self, n: usize) -> u64 {
        self.lrs[n]
    }

    fn write_lr(&mut self, n: usize, raw: u64) {
        self.writes += 1;
        self.lrs[n] = raw;
    }

    fn set_underflow(&mut self, on: bool) {
        self.underflow = on;
    }

    fn deactivate_physical(&mut self, intid: u32) {
        self.deactivated.push(intid);
    }
}

const FORMATS: [LrFormat; 3] = [LrFormat::V3, LrFormat::V2, LrFormat::V2EoiForwarding];

/// A one-vCPU GIC of `format`'s version with its groups on, and a CPU
/// with 4 list registers.
fn rig(format: LrFormat) -> (Vgic, FakeInterface, HwLrs) {
    (
        vgic_for(format),
        FakeInterface::new(format, 4),
        HwLrs::new(format, 4),
    )
}

fn vgic_for(format: LrFormat) -> Vgic {
    let mut g = if format == LrFormat::V3 { v3(1) } else { v2(1) };
    enable_groups(&mut g);
    g
}

#[test]
fn an_spi_goes_into_an_lr_and_comes_back_when_the_guest_is_done() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        enable_spi(&mut g, 40, 0x80);
        g.set_pending(40, 0).unwrap();
        assert!(lrs.refill_needed(&g, 0));
        lrs.refill(&mut hw, &mut g, 0);
        assert_eq!(hw.held(), [(40, LrState::Pending)]);
        assert_eq!(lrs.in_use(), 1);
        assert!(!lrs.refill_needed(&g, 0), "nothing new");

        // An exit with nothing changed: no LR is written.
        let writes = hw.writes;
        lrs.fold(&mut hw, &mut g, 0);
        assert_eq!(hw.writes, writes);
        assert_eq!(lrs.in_use(), 1);

        assert_eq!(hw.guest_acks(0), 40);
        lrs.fold(&mut hw, &mut g, 0);
        assert!(g.is_active(0, 40), "the model sees the guest's ack");
        assert_eq!(lrs.in_use(), 1, "still held");

        hw.guest_completes(0);
        lrs.fold(&mut hw, &mut g, 0);
        assert!(!g.is_active(0, 40) && !g.is_pending(0, 40));
        assert_eq!(lrs.in_use(), 0);
        check_invariants(&g);
    }
}

#[test]
fn more_pending_than_lrs_asks_for_underflow_and_places_the_rest_later() {
    for format in FORMATS {
        let mut g = vgic_for(format);
        let mut hw = FakeInterface::new(format, 2);
        let mut lrs = HwLrs::new(format, 2);
        for intid in 40..44 {
            enable_spi(&mut g, intid, 0x80);
            g.set_pending(intid, 0).unwrap();
        }
        lrs.refill(&mut hw, &mut g, 0);
        assert_eq!(hw.held().len(), 2);
        assert!(hw.underflow, "{format:?}: two more wait");
        let mut delivered = Vec::new();
        for _round in 0..4 {
            for n in 0..2 {
                if hw.held().iter().any(|&(_, s)| s == LrState::Pending)
                    && hw.decode(hw.lrs[n]).state == LrState::Pending
                {
                    delivered.push(hw.guest_acks(n));
                    hw.guest_completes(n);
                }
            }
            lrs.fold(&mut hw, &mut g, 0);
            if lrs.refill_needed(&g, 0) {
                lrs.refill(&mut hw, &mut g, 0);
            }
        }
        delivered.sort_unstable();
        assert_eq!(delivered, [40, 41, 42, 43], "{format:?}: each exactly once");
        assert!(!hw.underflow, "the request goes off when all fit");
        check_invariants(&g);
    }
}

#[test]
fn a_completed_hardware_interrupt_is_deactivated_on_gicv2_only() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        // The virtual timer's PPI, forwarded from physical 27.
        wr(&mut g, 0, 0x100, 1 << 27); // GICD_ISENABLER0 (v2)
        if format == LrFormat::V3 {
            rwr(&mut g, 0, 0x1_0100, 1 << 27); // GICR_ISENABLER0
        }
        assert!(g.set_hw_pending(0, 27, 27).unwrap());
        lrs.refill(&mut hw, &mut g, 0);
        let lr = hw.decode(hw.lrs[0]);
        assert_eq!(lr.vintid, 27);
        match format {
            LrFormat::V2EoiForwarding => {
                assert_eq!(lr.pintid, None, "linked by EOI maintenance instead");
                assert!(lr.eoi_maintenance);
            }
            _ => assert_eq!(lr.pintid, Some(27)),
        }
        hw.guest_acks(0);
        hw.guest_completes(0);
        lrs.fold(&mut hw, &mut g, 0);
        let expected: &[u32] = if format == LrFormat::V3 { &[] } else { &[27] };
        assert_eq!(hw.deactivated, expected, "{format:?}");
        assert_eq!(lrs.in_use(), 0);
    }
}

#[test]
fn parking_returns_every_lr_to_the_model() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        for intid in [40, 41] {
            enable_spi(&mut g, intid, 0x80);
            g.set_pending(intid, 0).unwrap();
        }
        lrs.refill(&mut hw, &mut g, 0);
        let n = hw
            .lrs
            .iter()
            .position(|&raw| hw.decode(raw).vintid == 41)
            .expect("41 is in an LR");
        hw.guest_acks(n);
        lrs.park(&mut hw, &mut g, 0);
        assert!(hw.held().is_empty(), "every LR invalid");
        assert_eq!(lrs.in_use(), 0);
        assert!(g.is_pending(0, 40), "still pending, in the model");
        assert!(g.is_active(0, 41), "the guest's ack was folded first");
        // Back on the CPU, both come back.
        lrs.refill(&mut hw, &mut g, 0);
        let mut held = hw.held();
        held.sort_unstable_by_key(|&(i, _)| i);
        assert_eq!(held, [(40, LrState::Pending), (41, LrState::Active)]);
        check_invariants(&g);
    }
}

#[test]
fn a_stale_lr_is_invalidated_and_clear_forgets_everything() {
    let format = LrFormat::V3;
    let (mut g, mut hw, mut lrs) = rig(format);
    enable_spi(&mut g, 40, 0x80);
    g.set_pending(40, 0).unwrap();
    lrs.refill(&mut hw, &mut g, 0);
    // The guest cancels it through the distributor (GICD_ICPENDR1): the
    // model drops it, and the LR must not deliver it.
    wr(&mut g, 0, 0x284, 1 << 8);
    lrs.fold(&mut hw, &mut g, 0);
    if lrs.refill_needed(&g, 0) {
        lrs.refill(&mut hw, &mut g, 0);
    }
    assert!(hw.held().is_empty(), "{:?}", hw.held());
    hw.underflow = true;
    lrs.set_underflow(&mut hw, true);
    lrs.clear(&mut hw);
    assert!(!hw.underflow);
    assert!(hw.lrs.iter().all(|&raw| raw == 0));
    assert_eq!(lrs.in_use(), 0);
}

/// Enables the timer PPIs 27 and 30 of vCPU 0 (v2 distributor bank 0, or
/// the v3 redistributor's SGI frame).
fn enable_timer_ppis(g: &mut Vgic, format: LrFormat) {
    let bits = (1 << 27) | (1 << 30);
    if format == LrFormat::V3 {
        rwr(g, 0, 0x1_0100, bits); // GICR_ISENABLER0
    } else {
        wr(g, 0, 0x100, bits); // GICD_ISENABLER0
    }
}

/// `ISPENDR0` of vCPU 0 as the guest reads it.
fn ispendr0(g: &mut Vgic, format: LrFormat) -> u64 {
    if format == LrFormat::V3 {
        rrd(g, 0, 0x1_0200)
    } else {
        rd(g, 0, 0x200)
    }
}

#[test]
fn a_timer_whose_line_dropped_leaves_the_lr_the_register_and_the_physical_interrupt() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        enable_timer_ppis(&mut g, format);
        assert!(g.set_hw_pending(0, 27, 27).unwrap());
        lrs.refill(&mut hw, &mut g, 0);
        assert_eq!(hw.held(), [(27, LrState::Pending)]);
        assert_eq!(g.hw_pending_private(0, 1 << 27 | 1 << 30), 1 << 27);
        assert_eq!(ispendr0(&mut g, format) & (1 << 27), 1 << 27);
        // The guest disabled its timer before taking the interrupt; the
        // next exit folds (the LR is untouched) and sees the line low.
        lrs.fold(&mut hw, &mut g, 0);
        assert_eq!(g.retire_hw_pending(0, 1 << 27 | 1 << 30), 1 << 27);
        assert_eq!(ispendr0(&mut g, format) & (1 << 27), 0, "{format:?}");
        assert!(!g.is_pending(0, 27));
        assert!(lrs.refill_needed(&g, 0));
        lrs.refill(&mut hw, &mut g, 0);
        assert!(hw.held().is_empty(), "{format:?}: {:?}", hw.held());
        assert_eq!(
            hw.deactivated,
            [27],
            "{format:?}: the physical PPI is let go"
        );
        assert_eq!(lrs.in_use(), 0);
        // Nothing left to retire; the next rise forwards again.
        assert_eq!(g.retire_hw_pending(0, 1 << 27), 0);
        assert!(g.set_hw_pending(0, 27, 27).unwrap(), "forwardable again");
        lrs.refill(&mut hw, &mut g, 0);
        assert_eq!(hw.held(), [(27, LrState::Pending)]);
        check_invariants(&g);
    }
}

#[test]
fn a_timer_interrupt_the_guest_took_is_not_retired() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        enable_timer_ppis(&mut g, format);
        assert!(g.set_hw_pending(0, 30, 30).unwrap());
        lrs.refill(&mut hw, &mut g, 0);
        hw.guest_acks(0);
        lrs.fold(&mut hw, &mut g, 0);
        assert_eq!(g.hw_pending_private(0, u32::MAX), 0, "active, not pending");
        assert_eq!(g.retire_hw_pending(0, 1 << 30), 0);
        assert!(g.is_active(0, 30));
        // The guest completes it: the physical one is deactivated the
        // usual way (by the HW link, or by the fold on GICv2).
        hw.guest_completes(0);
        lrs.fold(&mut hw, &mut g, 0);
        let expected: &[u32] = if format == LrFormat::V3 { &[] } else { &[30] };
        assert_eq!(hw.deactivated, expected, "{format:?}");
        check_invariants(&g);
    }
}

#[test]
fn a_timer_pending_outside_the_lrs_is_retired_too() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        // Forwarded while the PPI is disabled: pending in the model only.
        assert!(g.set_hw_pending(0, 27, 27).unwrap());
        lrs.refill(&mut hw, &mut g, 0);
        assert!(hw.held().is_empty());
        assert_eq!(ispendr0(&mut g, format) & (1 << 27), 1 << 27);
        assert_eq!(g.retire_hw_pending(0, 1 << 27), 1 << 27);
        assert_eq!(ispendr0(&mut g, format) & (1 << 27), 0);
        lrs.refill(&mut hw, &mut g, 0);
        assert_eq!(hw.deactivated, [27], "{format:?}");
        // Enabling it later delivers nothing stale.
        enable_timer_ppis(&mut g, format);
        lrs.refill(&mut hw, &mut g, 0);
        assert!(hw.held().is_empty());
        check_invariants(&g);
    }
}

#[test]
fn retiring_ignores_what_is_not_a_forward_and_bad_vcpus() {
    let format = LrFormat::V3;
    let mut g = vgic_for(format);
    enable_timer_ppis(&mut g, format);
    // A software-pended PPI (ISPENDR write) is the guest's own state.
    rwr(&mut g, 0, 0x1_0200, 1 << 27);
    assert_eq!(g.hw_pending_private(0, u32::MAX), 0);
    assert_eq!(g.retire_hw_pending(0, 1 << 27), 0);
    assert!(g.is_pending(0, 27));
    assert_eq!(g.hw_pending_private(7, u32::MAX), 0);
    assert_eq!(g.retire_hw_pending(7, u32::MAX), 0);
}

#[test]
fn a_retired_timer_interrupt_does_not_end_a_wait() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        enable_timer_ppis(&mut g, format);
        assert!(g.set_hw_pending(0, 27, 27).unwrap());
        lrs.refill(&mut hw, &mut g, 0);
        // A WFI exit: fold, retire (the guest disabled the timer), park.
        lrs.fold(&mut hw, &mut g, 0);
        assert_eq!(g.retire_hw_pending(0, 1 << 27), 1 << 27);
        lrs.park(&mut hw, &mut g, 0);
        assert!(!g.has_pending(0, 0xff), "{format:?}: nothing to wake for");
        assert!(hw.held().is_empty());
    }
}

#[test]
fn a_release_is_deactivated_by_its_own_vcpu_only() {
    // Two vCPUs time-sharing one CPU: vCPU 0 retires its timer forward and
    // waits (park); vCPU 1's refill must not deactivate vCPU 0's PPI 27,
    // which is vCPU 1's own physical PPI while vCPU 1 runs.
    let format = LrFormat::V3;
    let mut g = v3(2);
    enable_groups(&mut g);
    let mut hw = FakeInterface::new(format, 4);
    let mut lrs = HwLrs::new(format, 4);
    for r in 0..2 {
        rwr(&mut g, r, 0x1_0100, 1 << 27); // GICR_ISENABLER0
    }
    assert!(g.set_hw_pending(0, 27, 27).unwrap());
    lrs.refill(&mut hw, &mut g, 0);
    lrs.fold(&mut hw, &mut g, 0);
    assert_eq!(g.retire_hw_pending(0, 1 << 27), 1 << 27);
    // vCPU 0 waits: its LRs are parked, and its release is done here.
    lrs.park(&mut hw, &mut g, 0);
    assert_eq!(hw.deactivated, [27], "released while vCPU 0 is loaded");
    // vCPU 1 runs with a forward of its own in flight.
    hw.deactivated.clear();
    assert!(g.set_hw_pending(1, 27, 27).unwrap());
    lrs.refill(&mut hw, &mut g, 1);
    assert!(hw.deactivated.is_empty(), "{:?}", hw.deactivated);
    // A release of vCPU 0 left queued is never taken by vCPU 1's refills.
    g.private[0].release |= 1 << 30;
    g.private[0].pintid[30] = 30;
    g.touch();
    lrs.refill(&mut hw, &mut g, 1);
    assert!(hw.deactivated.is_empty(), "{:?}", hw.deactivated);
    assert_eq!(g.take_hw_release_of(0).map(|r| r.pintid), Some(30));
}

/// A guest timer ticking: each tick's interrupt goes straight into a free
/// LR (the direct forward), the guest completes it, the next exit folds
/// it back, and the next tick takes the direct way again. A tick the model
/// cannot take directly (the PPI disabled) leaves everything unchanged.
#[test]
fn timer_ticks_take_the_direct_forward_every_time() {
    for format in FORMATS {
        let (mut g, mut hw, mut lrs) = rig(format);
        enable_timer_ppis(&mut g, format);
        // The first refill makes the vCPU exact.
        lrs.refill(&mut hw, &mut g, 0);
        for tick in 0..5 {
            // On GICv3 the previous tick's completed LR is taken back and
            // the new one placed in one step; on GICv2 fold first.
            let refired = lrs.one_completed(&hw) && lrs.refire(&mut hw, &mut g, 0, 27, 256);
            assert_eq!(
                refired,
                format == LrFormat::V3 && tick > 0,
                "{format:?}: tick {tick}"
            );
            if !refired {
                lrs.fold(&mut hw, &mut g, 0);
                assert!(
                    lrs.forward_direct(&mut hw, &mut g, 0, 27, 256),
                    "{format:?}: tick {tick}"
                );
            }
            assert!(!lrs.refill_needed(&g, 0), "nothing left for the refill");
            assert_eq!(hw.held(), [(27, LrState::Pending)]);
            assert!(g.is_pending(0, 27));
            // Already linked and in an LR: never forwarded twice.
            assert!(!lrs.forward_direct(&mut hw, &mut g, 0, 27, 256));
            hw.guest_acks(0);
            hw.guest_completes(0);
            check_invariants(&g);
        }
        lrs.fold(&mut hw, &mut g, 0);
        assert_eq!(lrs.in_use(), 0);
        // Below the priority mask: left to the general way.
        assert!(!lrs.forward_direct(&mut hw, &mut g, 0, 27, 0));
        // Disabled (GICR_ICENABLER0 / GICD_ICENABLER0): likewise.
        if format == LrFormat::V3 {
            rwr(&mut g, 0, 0x1_0180, 1 << 27);
        } else {
            wr(&mut g, 0, 0x180, 1 << 27);
        }
        let before = format!("{g:?}");
        assert!(!lrs.forward_direct(&mut hw, &mut g, 0, 27, 256));
        assert_eq!(format!("{g:?}"), before, "a refusal changes nothing");
        assert!(hw.held().is_empty());
    }
}

/// An IPI: vCPU 0 sends SGI 3 to vCPU 1, which is kicked, and the kick
/// places it straight into a free LR (GICv3), as the refill would; the
/// guest completes it and the next fold takes it back. On GICv2 the kick
/// leaves it to the refill (its SGIs carry their sources).
#[test]
fn a_kick_places_the_fresh_sgi_directly_on_gicv3_only() {
    for format in FORMATS {
        let mut g = if format == LrFormat::V3 { v3(2) } else { v2(2) };
        enable_groups(&mut g);
        let (mut hw, mut lrs) = (FakeInterface::new(format, 4), HwLrs::new(format, 4));
        // Enable SGI 3 on vCPU 1 and make it exact with an empty refill.
        if format == LrFormat::V3 {
            rwr(&mut g, 1, 0x1_0100, 1 << 3);
        } else {
            wr(&mut g, 1, 0x100, 1 << 3);
        }
        lrs.refill(&mut hw, &mut g, 1);
        if format == LrFormat::V3 {
            g.sgi1r_write(0, (3 << 24) | 0b10).expect("ICC_SGI1R_EL1");
        } else {
            wr(&mut g, 0, 0xf00, (0b10 << 16) | 3); // GICD_SGIR
        }
        assert!(g.is_pending(1, 3));
        lrs.fold(&mut hw, &mut g, 1);
        let placed = lrs.place_direct(&mut hw, &mut g, 1, 256);
        assert_eq!(placed, format == LrFormat::V3, "{format:?}");
        if !placed {
            lrs.refill(&mut hw, &mut g, 1);
        }
        assert_eq!(hw.held(), [(3, LrState::Pending)], "{format:?}");
        assert!(!lrs.refill_needed(&g, 1));
        hw.guest_acks(0);
        hw.guest_completes(0);
        lrs.fold(&mut hw, &mut g, 1);
        assert_eq!(lrs.in_use(), 0);
        assert!(!g.is_pending(1, 3));
        // Nothing fresh: the kick places nothing.
        assert!(!lrs.place_direct(&mut hw, &mut g, 1, 256));
        check_invariants(&g);
    }
}
