//! Software-generated interrupts.
//!
//! GICv3: the trapped `ICC_SGI1R_EL1`, `ICC_ASGI1R_EL1` and
//! `ICC_SGI0R_EL1` writes (IHI 0069 §12.2 register descriptions): TargetList
//! bits 15:0, Aff1 23:16, INTID 27:24, Aff2 39:32, IRM 40, RS 47:44, Aff3
//! 55:48. Target `n` of the list is the PE with affinity
//! `Aff3.Aff2.Aff1.(16 * RS + n)`; IRM = 1 targets every PE but the sender.
//! Targets that match no vCPU are ignored. With `GICD_CTLR.DS == 1`
//! (IHI 0069 "Forwarding an SGI to a target PE", Table 12-14 in §12.1 of
//! issue H, §8.1.10 in older issues): `ICC_SGI1R_EL1` sets the SGI pending
//! whatever its group on the target; `ICC_SGI0R_EL1` only where the SGI is
//! Group 0; `ICC_ASGI1R_EL1` (there is no other Security state) behaves as
//! `ICC_SGI0R_EL1`.
//!
//! GICv2: `GICD_SGIR` (IHI 0048B §4.3.15) with TargetListFilter 0b00
//! (list), 0b01 (all but self), 0b10 (self), 0b11 (reserved: ignored), and
//! the per-source pending state of §4.3.16–17 (`CPENDSGIR`/`SPENDSGIR`):
//! each (SGI, source CPU) pair is pending on its own; the LR's CPUID field
//! carries the source (see `fill.rs`).

use crate::{GicVersion, Vgic, VgicError};

/// Which SGI groups a GICv3 SGI register can set pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SgiGroups {
    /// `ICC_SGI1R_EL1` with DS == 1: either group.
    Any,
    /// `ICC_SGI0R_EL1`, `ICC_ASGI1R_EL1`: Group 0 only.
    Group0,
}

impl Vgic {
    /// A trapped `ICC_SGI1R_EL1` write by `vcpu` (GICv3 only).
    pub fn sgi1r_write(&mut self, vcpu: usize, value: u64) -> Result<(), VgicError> {
        self.generate_sgi_v3(vcpu, value, SgiGroups::Any)
    }

    /// A trapped `ICC_ASGI1R_EL1` write: with a single Security state it
    /// generates only Group 0 SGIs, like `ICC_SGI0R_EL1`.
    pub fn asgi1r_write(&mut self, vcpu: usize, value: u64) -> Result<(), VgicError> {
        self.generate_sgi_v3(vcpu, value, SgiGroups::Group0)
    }

    /// A trapped `ICC_SGI0R_EL1` write: Group 0 SGIs only (a target whose
    /// SGI is configured Group 1 is not affected).
    pub fn sgi0r_write(&mut self, vcpu: usize, value: u64) -> Result<(), VgicError> {
        self.generate_sgi_v3(vcpu, value, SgiGroups::Group0)
    }

    fn generate_sgi_v3(
        &mut self,
        vcpu: usize,
        value: u64,
        groups: SgiGroups,
    ) -> Result<(), VgicError> {
        if self.version != GicVersion::V3 {
            return Err(VgicError::WrongVersion);
        }
        if vcpu >= self.nr_vcpus {
            return Err(VgicError::NoSuchVcpu);
        }
        let target_list = value & 0xffff;
        let aff1 = (value >> 16) & 0xff;
        let sgi = ((value >> 24) & 0xf) as usize;
        let aff2 = (value >> 32) & 0xff;
        let irm = value & (1 << 40) != 0;
        let rs = (value >> 44) & 0xf;
        let aff3 = (value >> 48) & 0xff;
        let cluster = (aff3 << 32) | (aff2 << 16) | (aff1 << 8);
        for t in 0..self.nr_vcpus {
            let mpidr = self.mpidrs[t];
            let hit = if irm {
                t != vcpu
            } else {
                let aff0 = mpidr & 0xff;
                mpidr & !0xff == cluster
                    && aff0 >> 4 == rs
                    && target_list & (1 << (aff0 & 0xf)) != 0
            };
            let bit = 1u32 << sgi;
            let group_ok = match groups {
                SgiGroups::Any => true,
                SgiGroups::Group0 => self.private[t].group & bit == 0,
            };
            if hit && group_ok {
                self.private[t].latch |= bit;
                self.kicks |= 1 << t;
                self.note_raise(t, 0, bit);
            }
        }
        Ok(())
    }

    /// A `GICD_SGIR` write by `vcpu` (GICv2).
    pub(crate) fn sgir_write(&mut self, vcpu: usize, value: u32) {
        let sgi = (value & 0xf) as usize;
        let list = ((value >> 16) & 0xff) as u8;
        let targets = match (value >> 24) & 0b11 {
            0b00 => list,
            0b01 => !(1u8 << vcpu),
            0b10 => 1u8 << vcpu,
            _ => 0,
        } & self.vcpu_bits();
        for t in 0..self.nr_vcpus {
            if targets & (1 << t) != 0 {
                self.sgi_src[t][sgi] |= 1 << vcpu;
                self.sync_sgi_latch(t, sgi);
                self.kicks |= 1 << t;
                self.note_raise(t, 0, 1 << sgi);
            }
        }
    }

    /// A `GICD_SPENDSGIR` (`set`) or `GICD_CPENDSGIR` byte for SGI `sgi`
    /// written by `vcpu`: sets or clears pending per source CPU, on the
    /// accessing CPU's interface only.
    pub(crate) fn write_sgi_sources(&mut self, vcpu: usize, sgi: usize, value: u8, set: bool) {
        let value = value & self.vcpu_bits();
        if set {
            self.sgi_src[vcpu][sgi] |= value;
            if value != 0 {
                self.kicks |= 1 << vcpu;
            }
        } else {
            self.sgi_src[vcpu][sgi] &= !value;
            // The instance sitting pending in an LR, if its source is cleared.
            let bit = 1u32 << sgi;
            if self.private[vcpu].lr_pending & bit != 0
                && let Some(p) = self.placed_entry(vcpu, sgi as u32)
                && value & (1 << p.source) != 0
            {
                self.private[vcpu].cancel_pending |= bit;
            }
        }
        self.sync_sgi_latch(vcpu, sgi);
    }
}
