//! The model as exit handling sees it: [`Vgic`] is a device on the VM's MMIO
//! bus ([`MmioDevice`]), answering two windows — the distributor
//! ([`REGION_DIST`]) and the GICv3 redistributors ([`REGION_REDIST`], one
//! bank per vCPU) — and takes trapped SGI-register writes
//! ([`Vgic::sgi_register_write`]), so `core`'s exit policy reaches it
//! without depending on this crate.
//!
//! The model's other effects (vCPUs to kick, a changed generation to
//! refill list registers for) stay in the model and are read by the glue
//! after the exit ([`Vgic::take_kicks`], [`Vgic::generation`]).

use stratum_core::bus::{AccessRefused, DeviceAccess, Effects, MmioDevice};
use stratum_core::vmexit::SgiRegister;

use crate::Vgic;

/// The bus region tags this device answers (the machine's, ADR 0007):
/// the distributor, and the GICv3 redistributors (banked, one per vCPU).
pub use stratum_core::machine::{REGION_DIST, REGION_REDIST};

impl MmioDevice for Vgic {
    #[inline(always)]
    fn read(&mut self, access: &DeviceAccess, _fx: &mut Effects) -> Result<u64, AccessRefused> {
        match access.region {
            REGION_DIST => self.dist_read(access.vcpu, access.offset, access.size),
            _ => self.redist_read(
                access.vcpu,
                access.bank as usize,
                access.offset,
                access.size,
            ),
        }
        .map_err(|_| AccessRefused)
    }

    #[inline(always)]
    fn write(
        &mut self,
        access: &DeviceAccess,
        value: u64,
        _fx: &mut Effects,
    ) -> Result<(), AccessRefused> {
        match access.region {
            REGION_DIST => self.dist_write(access.vcpu, access.offset, access.size, value),
            _ => self.redist_write(
                access.vcpu,
                access.bank as usize,
                access.offset,
                access.size,
                value,
            ),
        }
        .map_err(|_| AccessRefused)
    }
}

impl Vgic {
    /// A trapped write of the GICv3 SGI-generation register `which` by
    /// `vcpu`.
    pub fn sgi_register_write(&mut self, vcpu: usize, which: SgiRegister, value: u64) {
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
    use stratum_core::access::AccessSize;
    use stratum_core::platform::GicVersion;

    fn access(region: u8, bank: u32, offset: u64, size: AccessSize) -> DeviceAccess {
        DeviceAccess {
            vcpu: 0,
            region,
            bank,
            offset,
            size,
        }
    }

    #[test]
    fn the_bus_reaches_the_model() {
        let mut g = Vgic::new(GicVersion::V3, &[0], 64).expect("a vGIC");
        let mut fx = Effects::default();
        let dev: &mut dyn MmioDevice = &mut g;
        // GICD_PIDR2 reads ArchRev 3.
        let pidr2 = dev
            .read(&access(REGION_DIST, 0, 0xffe8, AccessSize::Word), &mut fx)
            .expect("PIDR2");
        assert_eq!((pidr2 >> 4) & 0xf, 3);
        // A redistributor that does not exist is refused, not a panic.
        assert_eq!(
            dev.read(&access(REGION_REDIST, 5, 0x8, AccessSize::Double), &mut fx),
            Err(AccessRefused)
        );
        // GICR_TYPER of redistributor 0 names the last one (bit 4).
        let typer = dev
            .read(&access(REGION_REDIST, 0, 0x8, AccessSize::Double), &mut fx)
            .expect("GICR_TYPER");
        assert_ne!(typer & (1 << 4), 0);
        assert!(fx.is_empty(), "the vGIC keeps its effects in the model");
        // ICC_SGI1R_EL1: SGI 7 to Aff0 = 0 (TargetList bit 0) becomes pending.
        g.sgi_register_write(0, SgiRegister::Sgi1r, (7 << 24) | 1);
        assert!(g.is_pending(0, 7));
    }
}
