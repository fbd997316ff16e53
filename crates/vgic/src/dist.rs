//! The distributor entry points: validate the access, then decode by
//! architecture version (`dist_v2.rs`, `dist_v3.rs`).

use crate::{AccessSize, GicVersion, Vgic, VgicError};

/// Size of the distributor frame (64 KiB on both versions).
const DIST_SIZE: u64 = 0x1_0000;
/// GICv2 `GICD_SGIR`.
const SGIR: u64 = 0xf00;

impl Vgic {
    /// A guest read of the distributor register at `offset` (from the
    /// frame base) by `vcpu`. Banked SGI/PPI rows are `vcpu`'s.
    #[inline(always)]
    pub fn dist_read(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        self.check_dist(vcpu, offset)?;
        match self.version {
            GicVersion::V2 => self.dist_read_v2(vcpu, offset, size),
            GicVersion::V3 => self.dist_read_v3(vcpu, offset, size),
        }
    }

    /// A guest write of `value` (the low `size` bytes count) to the
    /// distributor register at `offset` by `vcpu`.
    pub fn dist_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), VgicError> {
        self.check_dist(vcpu, offset)?;
        let value = value & size.mask();
        if self.version == GicVersion::V2 && offset == SGIR {
            // An SGI only raises: `sgir_write` records it per target.
            self.generation += 1;
        } else {
            self.touch();
        }
        match self.version {
            GicVersion::V2 => self.dist_write_v2(vcpu, offset, size, value),
            GicVersion::V3 => self.dist_write_v3(vcpu, offset, size, value),
        }
    }

    #[inline(always)]
    fn check_dist(&self, vcpu: usize, offset: u64) -> Result<(), VgicError> {
        if vcpu >= self.nr_vcpus {
            return Err(VgicError::NoSuchVcpu);
        }
        if offset >= DIST_SIZE {
            return Err(VgicError::OutOfFrame);
        }
        Ok(())
    }
}
