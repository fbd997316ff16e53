//! The model as exit handling sees it: [`stratum_core::vmexit::VirtualGic`]
//! for [`Vgic`], so `core`'s exit policy can route GIC register accesses and
//! trapped SGI-register writes here without depending on this crate.

use stratum_core::access::AccessSize;
use stratum_core::vmexit::{AccessRefused, SgiRegister, VirtualGic};

use crate::Vgic;

impl VirtualGic for Vgic {
    fn dist_read(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, AccessRefused> {
        Vgic::dist_read(self, vcpu, offset, size).map_err(|_| AccessRefused)
    }

    fn dist_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), AccessRefused> {
        Vgic::dist_write(self, vcpu, offset, size, value).map_err(|_| AccessRefused)
    }

    fn redist_read(
        &mut self,
        vcpu: usize,
        redist: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, AccessRefused> {
        Vgic::redist_read(self, vcpu, redist, offset, size).map_err(|_| AccessRefused)
    }

    fn redist_write(
        &mut self,
        vcpu: usize,
        redist: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), AccessRefused> {
        Vgic::redist_write(self, vcpu, redist, offset, size, value).map_err(|_| AccessRefused)
    }

    fn sgi_write(&mut self, vcpu: usize, which: SgiRegister, value: u64) {
        // The caller's vCPU always exists, the only error the model reports
        // here; a write naming no existing target simply delivers nothing.
        let _ = match which {
            SgiRegister::Sgi1r => self.sgi1r_write(vcpu, value),
            SgiRegister::Asgi1r => self.asgi1r_write(vcpu, value),
            SgiRegister::Sgi0r => self.sgi0r_write(vcpu, value),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_core::platform::GicVersion;

    #[test]
    fn the_trait_reaches_the_model() {
        let mut g = Vgic::new(GicVersion::V3, &[0], 64).expect("a vGIC");
        let gic: &mut dyn VirtualGic = &mut g;
        // GICD_PIDR2 reads ArchRev 3.
        let pidr2 = gic.dist_read(0, 0xffe8, AccessSize::Word).expect("PIDR2");
        assert_eq!((pidr2 >> 4) & 0xf, 3);
        // A redistributor that does not exist is refused, not a panic.
        assert_eq!(
            gic.redist_read(0, 5, 0x8, AccessSize::Double),
            Err(AccessRefused)
        );
        // ICC_SGI1R_EL1: SGI 7 to Aff0 = 0 (TargetList bit 0) becomes pending.
        gic.sgi_write(0, SgiRegister::Sgi1r, (7 << 24) | 1);
        assert!(g.is_pending(0, 7));
    }
}
