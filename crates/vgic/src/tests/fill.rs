//! List-register allocation, folding, priorities, level re-sampling and
//! HW-linked interrupts.

use super::*;

fn lrs() -> [ListRegister; 4] {
    [ListRegister::INVALID; 4]
}

fn intids(lrs: &[ListRegister], used: usize) -> Vec<u32> {
    lrs[..used].iter().map(|lr| lr.vintid).collect()
}

#[test]
fn pending_spi_is_delivered_only_when_deliverable() {
    for mut g in [v3(2), v2(2)] {
        let mut l = lrs();
        g.set_pending(40, 0).unwrap();
        assert_eq!(g.fill_lrs(0, &mut l).used, 0, "disabled");
        enable_spi(&mut g, 40, 0x80);
        assert_eq!(g.fill_lrs(0, &mut l).used, 0, "groups disabled");
        enable_groups(&mut g);
        assert!(g.has_pending(0, 0xff));
        assert!(!g.has_pending(1, 0xff), "targets vCPU 0");
        assert!(!g.has_pending(0, 0x80), "masked by the PMR");
        assert_eq!(g.fill_lrs(1, &mut l).used, 0);
        let fill = g.fill_lrs(0, &mut l);
        assert_eq!(
            fill,
            LrFill {
                used: 1,
                overflow: false
            }
        );
        assert_eq!(l[0].vintid, 40);
        assert_eq!(l[0].state, LrState::Pending);
        assert_eq!(l[0].priority, 0x80);
        assert_eq!(l[0].pintid, None);
        assert_eq!(l[0].group1, g.version() == GicVersion::V3);
        assert!(l[0].eoi_maintenance, "level-sensitive by default");
        assert!(l[1..].iter().all(|lr| *lr == ListRegister::INVALID));
        assert!(g.is_pending(0, 40), "the LR's pending state shows in reads");
        assert_eq!(g.in_lr_count(0), 1);
        assert!(!g.has_pending(0, 0xff), "already in an LR");
        g.fold_lrs(0, &guest_done(&l));
        assert!(!g.is_pending(0, 40));
        assert_eq!(g.fill_lrs(0, &mut l).used, 0);
        check_invariants(&g);
    }
}

/// The LRs after the guest handled every one of them.
fn guest_done(l: &[ListRegister]) -> Vec<ListRegister> {
    let mut l = l.to_vec();
    guest_completes_all(&mut l);
    l
}

#[test]
fn overflow_delivers_highest_priority_first_then_the_rest_once() {
    let mut g = v3(1);
    enable_groups(&mut g);
    let prios = [
        (33, 0x50),
        (34, 0x10),
        (35, 0x40),
        (36, 0x30),
        (37, 0x20),
        (38, 0x60),
    ];
    for (intid, p) in prios {
        enable_spi(&mut g, intid, p);
        wr(&mut g, 0, 0xc08, 0xaaaa_aaaa); // edge
        g.set_pending(intid, 0).unwrap();
    }
    let mut l = lrs();
    let fill = g.fill_lrs(0, &mut l);
    assert_eq!(
        fill,
        LrFill {
            used: 4,
            overflow: true
        }
    );
    assert_eq!(intids(&l, 4), [34, 37, 36, 35]);
    assert!(l.iter().all(|lr| !lr.eoi_maintenance), "edge-triggered");
    let mut delivered = guest_completes_all(&mut l);
    g.fold_lrs(0, &l);
    let fill = g.fill_lrs(0, &mut l);
    assert_eq!(
        fill,
        LrFill {
            used: 2,
            overflow: false
        }
    );
    assert_eq!(intids(&l, 2), [33, 38]);
    delivered.extend(guest_completes_all(&mut l));
    g.fold_lrs(0, &l);
    assert_eq!(g.fill_lrs(0, &mut l).used, 0);
    delivered.sort_unstable();
    assert_eq!(delivered, [33, 34, 35, 36, 37, 38]);
    check_invariants(&g);
}

#[test]
fn equal_priorities_go_by_intid_and_unacked_ones_stay() {
    let mut g = v3(1);
    enable_groups(&mut g);
    for intid in [45, 33, 40] {
        enable_spi(&mut g, intid, 0x20);
        g.set_pending(intid, 0).unwrap();
    }
    let mut l = [ListRegister::INVALID; 2];
    assert_eq!(
        g.fill_lrs(0, &mut l),
        LrFill {
            used: 2,
            overflow: true
        }
    );
    assert_eq!(intids(&l, 2), [33, 40]);
    // The guest handles only the first; the second is still pending.
    l[0].state = LrState::Invalid;
    g.fold_lrs(0, &l);
    g.fill_lrs(0, &mut l);
    assert_eq!(intids(&l, 2), [40, 45]);
}

#[test]
fn active_interrupts_are_never_dropped() {
    let mut g = v3(1);
    enable_groups(&mut g);
    for intid in 33..38 {
        enable_spi(&mut g, intid, 0x80);
        g.set_pending(intid, 0).unwrap();
    }
    let mut l = lrs();
    g.fill_lrs(0, &mut l);
    // The guest acknowledges all four and exits before completing them.
    for lr in &mut l {
        lr.state = LrState::Active;
    }
    g.fold_lrs(0, &l);
    // A higher-priority interrupt arrives.
    enable_spi(&mut g, 60, 0x00);
    g.set_pending(60, 0).unwrap();
    let fill = g.fill_lrs(0, &mut l);
    assert_eq!(
        fill,
        LrFill {
            used: 4,
            overflow: true
        }
    );
    assert!(l.iter().all(|lr| lr.state == LrState::Active));
    assert_eq!(intids(&l, 4), [33, 34, 35, 36]);
    g.fold_lrs(0, &guest_done(&l));
    g.fill_lrs(0, &mut l);
    assert_eq!(intids(&l, 2), [60, 37]);
}

#[test]
fn largest_intid_is_preserved() {
    let mut g = Vgic::new(GicVersion::V3, &[0], 256).unwrap();
    enable_groups(&mut g);
    enable_spi(&mut g, 287, 0x08);
    g.set_pending(287, 0).unwrap();
    let mut l = lrs();
    g.fill_lrs(0, &mut l);
    assert_eq!(l[0].vintid, 287);
    assert_eq!(ListRegister::from_v3(l[0].to_v3()).vintid, 287);
    let mut g = Vgic::new(GicVersion::V2, &[0], 256).unwrap();
    enable_groups(&mut g);
    enable_spi(&mut g, 287, 0x08);
    g.set_pending(287, 0).unwrap();
    g.fill_lrs(0, &mut l);
    assert_eq!(ListRegister::from_v2(l[0].to_v2()).vintid, 287);
}

#[test]
fn level_interrupt_is_resampled_after_eoi() {
    let mut g = v3(1);
    enable_groups(&mut g);
    enable_spi(&mut g, 33, 0x80);
    g.set_level(33, 0, true).unwrap();
    let mut l = lrs();
    g.fill_lrs(0, &mut l);
    assert_eq!((l[0].vintid, l[0].state), (33, LrState::Pending));
    assert!(l[0].eoi_maintenance);
    // The guest acknowledges and EOIs without quietening the device: the
    // EOI maintenance exit folds, and the line is still high.
    g.fold_lrs(0, &guest_done(&l));
    assert!(g.is_pending(0, 33));
    assert_eq!(g.fill_lrs(0, &mut l).used, 1);
    assert_eq!(l[0].state, LrState::Pending);
    // Now the handler quietens the device (an MMIO exit, folded first)...
    l[0].state = LrState::Active;
    g.fold_lrs(0, &l);
    g.set_level(33, 0, false).unwrap();
    g.fill_lrs(0, &mut l);
    assert_eq!(l[0].state, LrState::Active);
    // ...and EOIs: nothing more.
    g.fold_lrs(0, &guest_done(&l));
    assert_eq!(g.fill_lrs(0, &mut l).used, 0);
    assert!(!g.is_pending(0, 33) && !g.is_active(0, 33));
}

#[test]
fn an_edge_configured_line_latches_on_its_rising_edge_only() {
    for mut g in [v3(1), v2(1)] {
        enable_groups(&mut g);
        enable_spi(&mut g, 50, 0x80);
        // GICD_ICFGR3: INTID 50 is field 2 of the word for 48..63.
        wr(&mut g, 0, 0xc0c, 0b10 << 4);
        g.set_level(50, 0, true).unwrap();
        assert!(g.is_pending(0, 50), "the rising edge latches it");
        let mut l = lrs();
        g.fill_lrs(0, &mut l);
        assert_eq!((l[0].vintid, l[0].state), (50, LrState::Pending));
        assert!(!l[0].eoi_maintenance, "edge: no EOI resampling");
        g.fold_lrs(0, &guest_done(&l));
        // The line is still high: no new edge, nothing pending.
        g.set_level(50, 0, true).unwrap();
        assert!(!g.is_pending(0, 50));
        assert_eq!(g.fill_lrs(0, &mut l).used, 0);
        // Low, then high again: a second edge.
        g.set_level(50, 0, false).unwrap();
        assert!(!g.is_pending(0, 50));
        g.set_level(50, 0, true).unwrap();
        assert!(g.is_pending(0, 50));
        check_invariants(&g);
    }
}

#[test]
fn level_line_dropping_while_in_lr_retracts_it() {
    let mut g = v3(1);
    enable_groups(&mut g);
    enable_spi(&mut g, 33, 0x80);
    g.set_level(33, 0, true).unwrap();
    let mut l = lrs();
    g.fill_lrs(0, &mut l);
    g.set_level(33, 0, false).unwrap();
    g.fold_lrs(0, &l);
    assert!(!g.is_pending(0, 33));
    assert_eq!(g.fill_lrs(0, &mut l).used, 0);
}

#[test]
fn edges_while_in_an_lr_coalesce_or_repend() {
    let mut g = v3(1);
    enable_groups(&mut g);
    enable_spi(&mut g, 33, 0x80);
    wr(&mut g, 0, 0xc08, 0b1000);
    let mut l = lrs();
    g.set_pending(33, 0).unwrap();
    g.fill_lrs(0, &mut l);
    g.set_pending(33, 0).unwrap();
    g.fold_lrs(0, &l);
    assert_eq!(g.fill_lrs(0, &mut l).used, 1, "coalesced");
    assert_eq!(l[0].state, LrState::Pending);
    // Acknowledged, then another edge: pending and active.
    l[0].state = LrState::Active;
    g.set_pending(33, 0).unwrap();
    g.fold_lrs(0, &l);
    g.fill_lrs(0, &mut l);
    assert_eq!(l[0].state, LrState::PendingActive);
}

#[test]
fn fill_without_fold_loses_nothing() {
    let mut g = v3(1);
    enable_groups(&mut g);
    enable_spi(&mut g, 33, 0x80);
    enable_spi(&mut g, 34, 0x40);
    wr(&mut g, 0, 0xc08, 0b1010 << 2);
    g.set_pending(33, 0).unwrap();
    g.set_pending(34, 0).unwrap();
    let mut a = lrs();
    let mut b = lrs();
    g.fill_lrs(0, &mut a);
    g.fill_lrs(0, &mut b);
    assert_eq!(a, b);
    check_invariants(&g);
    assert_eq!(g.in_lr_count(0), 2);
}

#[test]
fn an_spi_is_never_in_two_vcpus_lrs() {
    let mut g = v3(2);
    enable_groups(&mut g);
    enable_spi(&mut g, 40, 0x80);
    g.set_pending(40, 0).unwrap();
    let (mut l0, mut l1) = (lrs(), lrs());
    assert_eq!(g.fill_lrs(0, &mut l0).used, 1);
    // Retargeted to vCPU 1 while in vCPU 0's LR.
    g.dist_write(0, 0x6000 + 8 * 40, Double, 1).unwrap();
    assert_eq!(g.fill_lrs(1, &mut l1).used, 0);
    check_invariants(&g);
    // vCPU 0 acknowledged it: it stays active on vCPU 0.
    l0[0].state = LrState::Active;
    g.fold_lrs(0, &l0);
    assert_eq!(g.fill_lrs(1, &mut l1).used, 0);
    assert_eq!(g.fill_lrs(0, &mut l0).used, 1);
    assert_eq!(l0[0].state, LrState::Active);
    // Pending again while active on vCPU 0: it goes to vCPU 0 as
    // pending-and-active, not to its new target.
    g.set_pending(40, 0).unwrap();
    g.fold_lrs(0, &l0);
    assert_eq!(g.fill_lrs(1, &mut l1).used, 0);
    g.fill_lrs(0, &mut l0);
    assert_eq!(l0[0].state, LrState::PendingActive);
    // Completed: now the pending one goes to the new target.
    l0[0].state = LrState::Pending;
    g.fold_lrs(0, &l0);
    assert_eq!(g.fill_lrs(0, &mut l0).used, 0);
    assert_eq!(g.fill_lrs(1, &mut l1).used, 1);
    check_invariants(&g);
}

#[test]
fn hw_linked_interrupt_is_not_forwarded_twice() {
    let mut g = v3(1);
    enable_groups(&mut g);
    rwr(&mut g, 0, 0x1_0100, 1 << 27);
    g.redist_write(0, 0, 0x1_041b, Byte, 0xa0).unwrap();
    assert_eq!(g.set_hw_pending(0, 27, 27), Ok(true));
    assert_eq!(g.set_hw_pending(0, 27, 27), Ok(false));
    let mut l = lrs();
    assert_eq!(g.fill_lrs(0, &mut l).used, 1);
    assert_eq!(l[0].pintid, Some(27));
    assert!(!l[0].eoi_maintenance, "no EOI bit with HW");
    assert_eq!(g.set_hw_pending(0, 27, 27), Ok(false), "in an LR");
    l[0].state = LrState::Active;
    g.fold_lrs(0, &l);
    assert_eq!(g.set_hw_pending(0, 27, 27), Ok(false), "active");
    // A guest ISPENDR while active: the HW LR stays merely active.
    rwr(&mut g, 0, 0x1_0200, 1 << 27);
    g.fill_lrs(0, &mut l);
    assert_eq!((l[0].state, l[0].pintid), (LrState::Active, Some(27)));
    // The guest deactivates: the physical interrupt is deactivated by the
    // hardware and the model forgets the link.
    g.fold_lrs(0, &guest_done(&l));
    assert_eq!(g.take_hw_release(), None);
    g.fill_lrs(0, &mut l);
    assert_eq!(
        (l[0].state, l[0].pintid),
        (LrState::Pending, None),
        "the SW pend"
    );
    g.fold_lrs(0, &guest_done(&l));
    assert_eq!(g.set_hw_pending(0, 27, 27), Ok(true));
    check_invariants(&g);
}

#[test]
fn hw_link_cleared_by_the_guest_is_released() {
    let mut g = v3(2);
    enable_groups(&mut g);
    rwr(&mut g, 0, 0x1_0100, 1 << 27);
    // Cleared while pending in the model.
    assert_eq!(g.set_hw_pending(0, 27, 27), Ok(true));
    rwr(&mut g, 0, 0x1_0280, 1 << 27);
    assert_eq!(
        g.take_hw_release(),
        Some(crate::HwRelease {
            vcpu: 0,
            vintid: 27,
            pintid: 27
        })
    );
    assert_eq!(g.take_hw_release(), None);
    // Cleared (by another vCPU) while pending in an LR.
    assert_eq!(g.set_hw_pending(0, 27, 26), Ok(true));
    let mut l = lrs();
    g.fill_lrs(0, &mut l);
    g.redist_write(1, 0, 0x1_0280, Word, 1 << 27).unwrap();
    assert!(!g.is_pending(0, 27));
    g.fold_lrs(0, &l);
    assert_eq!(g.take_hw_release().map(|r| r.pintid), Some(26));
    // An SPI's release names its vCPU.
    enable_spi(&mut g, 50, 0);
    assert_eq!(g.set_hw_pending(1, 50, 100), Ok(true));
    g.fill_lrs(0, &mut l);
    l[0].state = LrState::Active;
    g.fold_lrs(0, &l);
    wr(&mut g, 1, 0x384, 1 << 18);
    assert_eq!(
        g.take_hw_release(),
        Some(crate::HwRelease {
            vcpu: 0,
            vintid: 50,
            pintid: 100
        })
    );
    check_invariants(&g);
}

#[test]
fn v2_sgi_sources_take_turns() {
    let mut g = v2(3);
    enable_groups(&mut g);
    // SGI 1 to CPU 0 from CPUs 1 and 2.
    wr(&mut g, 1, 0xf00, 1 << 16 | 1);
    wr(&mut g, 2, 0xf00, 1 << 16 | 1);
    let mut l = lrs();
    assert_eq!(g.fill_lrs(0, &mut l).used, 1, "one LR per SGI");
    assert_eq!((l[0].vintid, l[0].source_cpu), (1, 1));
    assert!(l[0].eoi_maintenance, "another source waits");
    assert_eq!(ListRegister::from_v2(l[0].to_v2()).source_cpu, 1);
    assert_eq!(g.dist_read(0, 0xf21, Byte), Ok(0b110), "both still visible");
    // Acknowledged: active from source 1, source 2 still waits.
    l[0].state = LrState::Active;
    g.fold_lrs(0, &l);
    g.fill_lrs(0, &mut l);
    assert_eq!((l[0].state, l[0].source_cpu), (LrState::Active, 1));
    assert!(l[0].eoi_maintenance);
    g.fold_lrs(0, &guest_done(&l));
    g.fill_lrs(0, &mut l);
    assert_eq!((l[0].state, l[0].source_cpu), (LrState::Pending, 2));
    assert!(!l[0].eoi_maintenance);
    // CPENDSGIR of the source in the LR cancels it.
    g.dist_write(0, 0xf11, Byte, 0b100).unwrap();
    g.fold_lrs(0, &l);
    assert!(!g.is_pending(0, 1));
    assert_eq!(g.fill_lrs(0, &mut l).used, 0);
    check_invariants(&g);
}

#[test]
fn kicks_name_the_vcpus_to_notify() {
    let mut g = v3(3);
    g.take_kicks();
    g.dist_write(0, 0x6000 + 8 * 40, Double, 2).unwrap();
    g.take_kicks();
    g.set_pending(40, 0).unwrap();
    assert_eq!(g.take_kicks(), crate::VcpuMask(0b100));
    assert!(g.take_kicks().is_empty());
    g.set_level(27, 1, true).unwrap();
    assert!(g.take_kicks().contains(1));
    enable_groups(&mut g);
    assert_eq!(g.take_kicks(), crate::VcpuMask(0b111));
}

#[test]
fn ppis_are_per_vcpu() {
    let mut g = v3(2);
    enable_groups(&mut g);
    rwr(&mut g, 1, 0x1_0100, 1 << 30);
    g.set_level(30, 1, true).unwrap();
    g.set_level(30, 0, true).unwrap();
    let mut l = lrs();
    assert_eq!(g.fill_lrs(0, &mut l).used, 0, "disabled on vCPU 0");
    assert_eq!(g.fill_lrs(1, &mut l).used, 1);
    assert_eq!(g.candidate_count(0), 0);
    assert_eq!(g.fill_lrs(5, &mut l), LrFill::default());
    g.fold_lrs(5, &l);
}

#[test]
fn a_level_or_repended_spi_in_one_lr_is_not_given_to_another_vcpu() {
    for level in [true, false] {
        let mut g = v3(2);
        enable_groups(&mut g);
        enable_spi(&mut g, 40, 0x80);
        if level {
            g.set_level(40, 0, true).unwrap();
        } else {
            wr(&mut g, 0, 0xc08, 2 << 16);
            g.set_pending(40, 0).unwrap();
        }
        let (mut l0, mut l1) = (lrs(), lrs());
        assert_eq!(g.fill_lrs(0, &mut l0).used, 1);
        // While vCPU 0 runs with it: retarget, and (edge) a second edge.
        g.dist_write(0, 0x6000 + 8 * 40, Double, 1).unwrap();
        if !level {
            g.set_pending(40, 0).unwrap();
        }
        assert!(!g.has_pending(1, 0xff));
        assert_eq!(g.fill_lrs(1, &mut l1).used, 0, "level = {level}");
        check_invariants(&g);
        // Once vCPU 0 exits without acknowledging it, it moves to vCPU 1.
        g.fold_lrs(0, &l0);
        assert_eq!(g.fill_lrs(0, &mut l0).used, 0);
        assert_eq!(g.fill_lrs(1, &mut l1).used, 1);
        assert_eq!(l1[0].vintid, 40);
    }
}

/// The timer's path: a HW-linked PPI raised on an exact vCPU goes into a
/// free LR without a full refill, comes back completed (its physical
/// INTID named) and frees the LR; an SGI from another vCPU does the same.
#[test]
fn incremental_refill_places_raises_directly() {
    for mut g in [v3(2), v2(2)] {
        enable_groups(&mut g);
        // PPI 27 and SGI 1 enabled on both vCPUs (v2 SGIs always are).
        for v in 0..2 {
            if g.version() == GicVersion::V3 {
                rwr(&mut g, v, 0x1_0100, 1 << 27 | 1 << 1);
            } else {
                wr(&mut g, v, 0x100, 1 << 27);
            }
        }
        let mut l = lrs();
        let first = g.refill(0, &mut l);
        assert!(first.full, "registers were written: a full refill");
        assert_eq!(first.write, 0, "nothing to place, nothing held");
        assert!(g.refill_is_empty(0));
        assert_eq!(g.refill(0, &mut l), LrRefill::default(), "nothing changed");
        for round in 0..3 {
            assert_eq!(g.set_hw_pending(0, 27, 27), Ok(true));
            assert!(!g.refill_is_empty(0));
            let r = g.refill(0, &mut l);
            assert_eq!(
                (r.full, r.overflow, r.write),
                (false, false, 1),
                "round {round}"
            );
            assert_eq!(
                (l[0].vintid, l[0].pintid, l[0].state),
                (27, Some(27), LrState::Pending)
            );
            // The guest acknowledges: the state is recorded, the LR stays.
            assert_eq!(g.fold_lr(0, 0, LrState::Active), LrFold::Kept);
            assert!(g.is_active(0, 27));
            assert_eq!(g.refill(0, &mut l), LrRefill::default());
            // ... and completes it.
            assert_eq!(
                g.fold_lr(0, 0, LrState::Invalid),
                LrFold::Freed {
                    completed: Some(27)
                }
            );
            assert_eq!(g.fold_lr(0, 0, LrState::Invalid), LrFold::Unused);
            assert!(!g.is_active(0, 27));
            assert_eq!(g.in_lr_count(0), 0);
            check_invariants(&g);
        }
        // An SGI from vCPU 1 lands in vCPU 0's first free LR while the
        // timer holds LR 0.
        g.set_hw_pending(0, 27, 27).unwrap();
        assert_eq!(g.refill(0, &mut l).write, 1);
        match g.version() {
            GicVersion::V3 => g.sgi1r_write(1, 1 << 24 | 1).unwrap(),
            GicVersion::V2 => wr(&mut g, 1, 0xf00, 1 << 16 | 1),
        }
        let r = g.refill(0, &mut l);
        assert_eq!((r.full, r.write), (false, 0b10));
        assert_eq!(l[1].vintid, 1);
        assert_eq!(
            l[1].source_cpu,
            if g.version() == GicVersion::V2 { 1 } else { 0 }
        );
        check_invariants(&g);
        // A register write makes the next refill a full one, which keeps
        // what is placed (in priority order, from LR 0).
        g.dist_write(0, 0x400 + 40, Byte, 0x10).unwrap();
        let r = g.refill(0, &mut l);
        assert!(r.full);
        assert_eq!(r.write, 0b11);
        assert_eq!(intids(&l, 2), vec![1, 27]);
        check_invariants(&g);
    }
}

/// More raises than free LRs: the refill turns full and asks for underflow
/// maintenance; a pending interrupt of a lower priority than one that did
/// not fit is never left in an LR in its place.
#[test]
fn incremental_refill_falls_back_when_raises_do_not_fit() {
    let mut g = v3(1);
    enable_groups(&mut g);
    for i in 0..6 {
        enable_spi(&mut g, 40 + i, 0x80 - 8 * i as u8);
        make_edge(&mut g, 40 + i);
    }
    let mut l = lrs();
    g.refill(0, &mut l);
    for i in 0..3 {
        g.set_pending(40 + i, 0).unwrap();
    }
    let r = g.refill(0, &mut l);
    assert_eq!((r.full, r.overflow, r.write), (false, false, 0b111));
    for i in 3..6 {
        g.set_pending(40 + i, 0).unwrap();
    }
    let r = g.refill(0, &mut l);
    assert!(r.full && r.overflow);
    assert_eq!(intids(&l, 4), vec![45, 44, 43, 42]);
    check_invariants(&g);
    // Overflowed: not exact, every refill is full until it fits again.
    assert!(!g.refill_is_empty(0));
    for n in 0..4 {
        assert!(matches!(
            g.fold_lr(0, n, LrState::Invalid),
            LrFold::Freed { .. }
        ));
    }
    let r = g.refill(0, &mut l);
    assert!(r.full && !r.overflow);
    assert_eq!(intids(&l, 2), vec![41, 40]);
    assert!(g.refill_is_empty(0));
}

/// Makes SPI `intid` edge-triggered.
fn make_edge(g: &mut Vgic, intid: u32) {
    let cfg = 0xc00 + u64::from(intid / 16) * 4;
    let old = rd(g, 0, cfg);
    wr(g, 0, cfg, old | 2 << (2 * (intid % 16)));
}

/// A level-sensitive interrupt acknowledged while its line stays high: its
/// LR is kept active (with EOI maintenance), and the next refill is a full
/// one, which makes it pending and active as the model has it.
#[test]
fn acknowledged_level_with_line_high_refills_in_full() {
    for mut g in [v3(1), v2(1)] {
        enable_groups(&mut g);
        enable_spi(&mut g, 40, 0x80);
        let mut l = lrs();
        g.refill(0, &mut l);
        g.set_level(40, 0, true).unwrap();
        let r = g.refill(0, &mut l);
        assert_eq!((r.full, r.write), (false, 1));
        assert!(l[0].eoi_maintenance);
        assert_eq!(g.fold_lr(0, 0, LrState::Active), LrFold::Kept);
        let r = g.refill(0, &mut l);
        assert!(r.full);
        assert_eq!(l[0].state, LrState::PendingActive);
        check_invariants(&g);
    }
}

/// A HW forward that arrives while the same INTID sits in an LR without
/// HW (the guest made it pending by `ISPENDR`): the LR's completion does
/// not end the HW link; the forward is delivered after it, HW-linked.
#[test]
fn hw_forward_while_in_a_software_lr_survives_its_completion() {
    for mut g in [v3(1), v2(1)] {
        enable_groups(&mut g);
        enable_spi(&mut g, 40, 0x80);
        make_edge(&mut g, 40);
        let mut l = lrs();
        g.refill(0, &mut l);
        g.set_pending(40, 0).unwrap();
        assert_eq!(g.refill(0, &mut l).write, 1);
        assert_eq!(l[0].pintid, None);
        assert_eq!(g.set_hw_pending(0, 40, 40), Ok(true));
        assert_eq!(
            g.fold_lr(0, 0, LrState::Invalid),
            LrFold::Freed { completed: None }
        );
        let r = g.refill(0, &mut l);
        assert_eq!(r.write & 1, 1);
        assert_eq!(
            (l[0].vintid, l[0].pintid, l[0].state),
            (40, Some(40), LrState::Pending)
        );
        assert_eq!(
            g.fold_lr(0, 0, LrState::Invalid),
            LrFold::Freed {
                completed: Some(40)
            }
        );
        assert_eq!(g.take_hw_release(), None);
        check_invariants(&g);
    }
}

/// An SPI the guest acknowledged is cleared pending through the
/// distributor (by another vCPU) while its vCPU runs, with the other LRs'
/// SPIs: on the next entry the acknowledged one is in exactly one LR,
/// active, and the others are gone (the found-by-fuzzing case: the LR the
/// model frees must be cleared in the hardware too).
#[test]
fn an_acknowledged_spi_cleared_while_its_vcpu_runs_stays_in_one_lr() {
    use crate::harness::{Harness, enable_all};
    for incremental in [false, true] {
        let mut h = Harness::new(GicVersion::V3, incremental);
        h.g.dist_write(0, 0x204, Word, u64::MAX).unwrap();
        enable_all(&mut h.g);
        h.enter(0);
        let vintids: Vec<u32> = h.lrs[0].iter().map(|l| l.vintid).collect();
        assert_eq!(vintids, [32, 33, 34, 35]);
        h.guest(0, 2, 0);
        h.g.dist_write(2, 0x284, Word, u64::MAX).unwrap();
        h.settle();
        h.enter(0);
        let valid: Vec<(u32, LrState)> = h.lrs[0]
            .iter()
            .filter(|l| l.state != LrState::Invalid)
            .map(|l| (l.vintid, l.state))
            .collect();
        assert_eq!(valid, [(34, LrState::Active)], "incremental: {incremental}");
        h.settle();
    }
}
