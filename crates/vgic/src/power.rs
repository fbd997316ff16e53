//! A vCPU's power cycle (PSCI `CPU_OFF`, then `CPU_ON`).
//!
//! A powered-down CPU loses its interrupts in flight: the pending and active
//! state of its SGIs and PPIs, and the hardware links of forwarded ones (the
//! hypervisor clears the physical side on that CPU). Their configuration —
//! group, enable, priority, trigger — lives in the redistributor (or the
//! distributor's banked rows) and stays. Without this, a timer interrupt
//! forwarded just before `CPU_OFF` would stay "in flight" in the model, and
//! the restarted vCPU would never receive its timer again.

use crate::Vgic;

impl Vgic {
    /// Forgets vCPU `vcpu`'s private interrupts in flight (see the module
    /// docs). SPIs recorded in its list registers go back to the
    /// distributor unchanged. Call with the vCPU stopped and its list
    /// registers folded or discarded.
    pub fn reset_vcpu(&mut self, vcpu: usize) {
        if vcpu >= self.nr_vcpus {
            return;
        }
        self.touch();
        for n in crate::regs::BitIter64(self.lr_mask[vcpu]) {
            let p = self.placed[vcpu][n];
            let intid = u32::from(p.intid);
            if intid < 32 {
                continue;
            }
            let spi = (intid - 32) as usize;
            let bank = &mut self.spis[spi / 32];
            let bit = 1u32 << (spi % 32);
            bank.in_lr &= !bit;
            bank.lr_pending &= !bit;
            bank.lr_active &= !bit;
            if p.took_latch {
                bank.latch |= bit;
            }
        }
        self.lr_mask[vcpu] = 0;
        let b = &mut self.private[vcpu];
        b.latch = 0;
        b.active = 0;
        b.hw = 0;
        b.release = 0;
        b.in_lr = 0;
        b.lr_pending = 0;
        b.lr_active = 0;
        b.cancel_pending = 0;
        b.cancel_active = 0;
        self.sgi_src[vcpu] = [0; 16];
        self.sgi_active_src[vcpu] = [0; 16];
    }
}

#[cfg(test)]
mod tests {
    use crate::{ListRegister, LrState, Vgic};
    use stratum_core::access::AccessSize;
    use stratum_core::platform::GicVersion;

    #[test]
    fn a_power_cycled_vcpu_takes_its_timer_again() {
        for version in [GicVersion::V2, GicVersion::V3] {
            let mut g = Vgic::new(version, &[0, 1], 64).expect("a vGIC");
            // Enable both groups and PPI 27 for vCPU 1 (v2: distributor
            // banked row; v3: vCPU 1's redistributor SGI frame).
            g.dist_write(1, 0x000, AccessSize::Word, 0b11)
                .expect("CTLR");
            match version {
                GicVersion::V2 => {
                    g.dist_write(1, 0x080, AccessSize::Word, u64::MAX)
                        .expect("IGROUPR0");
                    g.dist_write(1, 0x100, AccessSize::Word, 1 << 27)
                        .expect("ISENABLER0");
                }
                GicVersion::V3 => {
                    g.redist_write(1, 1, 0x1_0080, AccessSize::Word, u64::MAX)
                        .expect("IGROUPR0");
                    g.redist_write(1, 1, 0x1_0100, AccessSize::Word, 1 << 27)
                        .expect("ISENABLER0");
                }
            }
            assert_eq!(g.set_hw_pending(1, 27, 27), Ok(true));
            let mut lrs = [ListRegister::INVALID; 4];
            assert_eq!(g.fill_lrs(1, &mut lrs).used, 1);
            // The guest acknowledges it, then powers the vCPU off mid-handler.
            lrs[0].state = LrState::Active;
            g.fold_lrs(1, &lrs[..1]);
            assert_eq!(g.set_hw_pending(1, 27, 27), Ok(false), "still in flight");
            g.reset_vcpu(1);
            assert!(!g.is_active(1, 27) && !g.is_pending(1, 27));
            assert!(g.is_enabled(1, 27), "configuration survives");
            assert_eq!(g.set_hw_pending(1, 27, 27), Ok(true), "forwarded again");
            assert_eq!(g.fill_lrs(1, &mut lrs).used, 1);
            assert_eq!(lrs[0].vintid, 27);
        }
    }

    #[test]
    fn out_of_range_vcpu_is_ignored() {
        let mut g = Vgic::new(GicVersion::V3, &[0], 64).expect("a vGIC");
        g.reset_vcpu(5);
    }
}
