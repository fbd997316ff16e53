//! GICv3 redistributors (`GICR_*`, IHI 0069 §12.10–12.11): one per vCPU,
//! each 128 KiB — the `RD_base` frame at offset 0 and the `SGI_base` frame
//! at `0x1_0000` — laid out contiguously in vCPU order, so redistributor
//! `i` is vCPU `i`'s and the last one has `GICR_TYPER.Last` set.
//!
//! No LPIs: `GICR_CTLR` is RAZ/WI (EnableLPIs RAZ/WI, RWP 0), the LPI
//! registers (`SETLPIR`, `PROPBASER`, `PENDBASER`, …) are RAZ/WI, and
//! `TYPER.PLPIS`/`DirectLPI` are 0. `GICR_WAKER` models the power handshake
//! of §12.11.44 instantly: clearing ProcessorSleep clears ChildrenAsleep,
//! setting it sets ChildrenAsleep, so a guest's wait loop ends at once.
//!
//! Any vCPU may access any redistributor (the accessing vCPU only has to
//! exist).

use crate::dist_v3::{IIDR, id_read_v3};
use crate::regs::{BitReg, check_access, read_part};
use crate::{AccessSize, GicVersion, Vgic, VgicError};

/// Offset of the `SGI_base` frame.
const SGI_BASE: u64 = 0x1_0000;
/// Size of one redistributor's two frames.
const REDIST_SIZE: u64 = 0x2_0000;
/// `GICR_WAKER` bits.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

impl Vgic {
    /// Reads a register of redistributor `redist` (the vCPU it belongs
    /// to), at `offset` within its 128 KiB, on behalf of `accessing_vcpu`.
    pub fn redist_read(
        &mut self,
        accessing_vcpu: usize,
        redist: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        self.check_redist(accessing_vcpu, redist, offset)?;
        if offset >= SGI_BASE {
            return self.sgi_frame_read(redist, offset - SGI_BASE, size);
        }
        if offset == 0x0008 || offset == 0x000c {
            check_access(offset, size, false, true)?;
            return Ok(read_part(self.gicr_typer(redist), offset, size));
        }
        check_access(offset, size, false, is_rd_dword(offset))?;
        Ok(match offset {
            0x0004 => u64::from(IIDR),
            0x0014 => u64::from(if self.processor_sleep[redist] {
                WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
            } else {
                0
            }),
            0xffd0..SGI_BASE => id_read_v3(offset),
            // CTLR, STATUSR, LPI registers, reserved: RAZ.
            _ => 0,
        })
    }

    /// Writes a register of redistributor `redist`; see
    /// [`Vgic::redist_read`].
    pub fn redist_write(
        &mut self,
        accessing_vcpu: usize,
        redist: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), VgicError> {
        self.check_redist(accessing_vcpu, redist, offset)?;
        let value = value & size.mask();
        self.touch();
        if offset >= SGI_BASE {
            return self.sgi_frame_write(redist, offset - SGI_BASE, size, value);
        }
        let dword = is_rd_dword(offset) || offset == 0x0008 || offset == 0x000c;
        check_access(offset, size, false, dword)?;
        if offset == 0x0014 {
            self.processor_sleep[redist] = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
        }
        Ok(())
    }

    /// `GICR_TYPER` (IHI 0069 §12.11.40): Affinity_Value (63:32) =
    /// Aff3.Aff2.Aff1.Aff0, Processor_Number (23:8) = the vCPU index,
    /// Last (4) on the last redistributor; no PLPIS/VLPIS/DirectLPI.
    pub(crate) fn gicr_typer(&self, redist: usize) -> u64 {
        let m = self.mpidrs[redist];
        let affinity = ((m >> 32) & 0xff) << 24 | (m & 0xff_ffff);
        let last = if redist + 1 == self.nr_vcpus {
            1 << 4
        } else {
            0
        };
        affinity << 32 | (redist as u64) << 8 | last
    }

    fn check_redist(&self, accessing: usize, redist: usize, offset: u64) -> Result<(), VgicError> {
        if self.version != GicVersion::V3 {
            return Err(VgicError::WrongVersion);
        }
        if accessing >= self.nr_vcpus || redist >= self.nr_vcpus {
            return Err(VgicError::NoSuchVcpu);
        }
        if offset >= REDIST_SIZE {
            return Err(VgicError::OutOfFrame);
        }
        Ok(())
    }

    /// The `SGI_base` frame (§12.10): SGI/PPI state of vCPU `redist`.
    fn sgi_frame_read(
        &self,
        redist: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        if (0x400..0x420).contains(&offset) {
            check_access(offset, size, true, false)?;
            return Ok(self.priority_read(redist, (offset - 0x400) as u32, size));
        }
        check_access(offset, size, false, false)?;
        Ok(match (offset, BitReg::decode(offset)) {
            (_, Some((reg, 0))) => u64::from(self.bits_read(redist, 0, reg)),
            (0xc00, _) => u64::from(self.config_read(redist, 0)),
            (0xc04, _) => u64::from(self.config_read(redist, 1)),
            // IGRPMODR0 and NSACR (DS == 1), reserved: RAZ.
            _ => 0,
        })
    }

    fn sgi_frame_write(
        &mut self,
        redist: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), VgicError> {
        if (0x400..0x420).contains(&offset) {
            check_access(offset, size, true, false)?;
            self.priority_write(redist, (offset - 0x400) as u32, size, value);
            return Ok(());
        }
        check_access(offset, size, false, false)?;
        match (offset, BitReg::decode(offset)) {
            (_, Some((reg, 0))) => self.bits_write(redist, 0, reg, value as u32),
            // ICFGR0 (SGIs) is read-only; ICFGR1 configures the PPIs.
            (0xc04, _) => self.config_write(redist, 1, value as u32),
            _ => {}
        }
        Ok(())
    }
}

/// The 64-bit LPI registers of `RD_base` (RAZ/WI here) that accept
/// doubleword accesses: `SETLPIR`, `CLRLPIR`, `PROPBASER`, `PENDBASER`,
/// `INVLPIR`, `INVALLR`.
fn is_rd_dword(offset: u64) -> bool {
    matches!(offset & !7, 0x40 | 0x48 | 0x70 | 0x78 | 0xa0 | 0xb0)
}
