//! The GICv3 distributor (`GICD_*`, IHI 0069 §12.9), 64 KiB frame.
//!
//! The view is a GIC with a single security state (`GICD_CTLR.DS == 1`)
//! and affinity routing always enabled (`ARE` RAO/WI), the configuration
//! KVM and QEMU's TCG GICv3 (with `DS` set) present to guests. Consequences,
//! per the register descriptions:
//! - the SGI/PPI words and bytes of `IGROUPR`…`ICFGR` (INTIDs 0–31) are
//!   RAZ/WI: the redistributors own them;
//! - `ITARGETSR`, `SGIR`, `CPENDSGIR`/`SPENDSGIR` are RES0 (RAZ/WI);
//! - `IGRPMODR` and `NSACR` are RAZ/WI (`DS == 1`);
//! - SPIs are routed by the 64-bit `IROUTER<n>` at `0x6000 + 8n`.
//!
//! No LPIs, ITS, message-based SPIs or extended SPI range: `TYPER` says so
//! and `SETSPI_*`, `TYPER2`, `STATUSR` are RAZ/WI.

use crate::regs::{BitReg, check_access, read_part, write_part};
use crate::state::AFFINITY_MASK;
use crate::{AccessSize, PRIVATE_IRQS, Vgic, VgicError};

/// `GICD_CTLR` bits (DS == 1 layout).
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

/// `GICD_IIDR` / `GICR_IIDR`: Implementer 0x43B (the JEP106 code of Arm,
/// whose architecture this models), ProductID 0x53 ('S', Stratum), which
/// no Arm GIC uses, so guests apply no hardware errata workarounds.
pub(crate) const IIDR: u32 = 0x5300_043b;

/// `GICD_PIDR2`/`GICR_PIDR2`: ArchRev 3 (bits 7:4), JEDEC (bit 3), JEP106
/// designer bits 6:4 = 0b011 (Arm).
pub(crate) const PIDR2_V3: u32 = 0x3b;

/// The CoreSight component ID registers at `0xFFF0..0xFFFC`.
pub(crate) const CIDR: [u32; 4] = [0x0d, 0xf0, 0x05, 0xb1];

/// Reads an ID register at `offset` within `0xFFD0..0x10000` of a GICv3
/// frame: `PIDR2` and the component IDs; the others RAZ.
pub(crate) fn id_read_v3(offset: u64) -> u64 {
    match offset {
        0xffe8 => u64::from(PIDR2_V3),
        0xfff0..=0xfffc => u64::from(CIDR[((offset - 0xfff0) / 4) as usize]),
        _ => 0,
    }
}

impl Vgic {
    /// `GICD_TYPER` (IHI 0069 §12.9.38): ITLinesNumber from the SPI count;
    /// CPUNumber 0 (ARE is always on); IDbits 9 (10-bit INTIDs: without
    /// LPIs the distributor implements at most 10 bits, §2.2.1); A3V and
    /// RSS set (Aff3 and the SGI range selector are honoured); no LPIs,
    /// MBIS, DVIS, ESPI; No1N 0 (1-of-N SPIs supported).
    pub(crate) fn typer_v3(&self) -> u32 {
        let it_lines = self.nr_irqs() / 32 - 1;
        it_lines | (9 << 19) | (1 << 24) | (1 << 26)
    }

    #[inline(always)]
    pub(crate) fn dist_read_v3(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        let value = match offset {
            0x0000..0x0080 => {
                check_access(offset, size, false, false)?;
                match offset {
                    0x0000 => u64::from(self.ctlr | CTLR_ARE | CTLR_DS),
                    0x0004 => u64::from(self.typer_v3()),
                    0x0008 => u64::from(IIDR),
                    // TYPER2, STATUSR, SETSPI/CLRSPI and reserved: RAZ.
                    _ => 0,
                }
            }
            0x0080..0x0400 => {
                check_access(offset, size, false, false)?;
                match BitReg::decode(offset) {
                    Some((reg, word)) if word >= 1 && word <= self.spi_words() => {
                        u64::from(self.bits_read(vcpu, word, reg))
                    }
                    _ => 0,
                }
            }
            0x0400..0x0800 => {
                check_access(offset, size, true, false)?;
                let intid = (offset - 0x400) as u32;
                if self.spi_range(intid) {
                    self.priority_read(vcpu, intid, size)
                } else {
                    0
                }
            }
            0x0c00..0x0d00 => {
                check_access(offset, size, false, false)?;
                let n = ((offset - 0xc00) / 4) as usize;
                if n >= 2 && n / 2 <= self.spi_words() {
                    u64::from(self.config_read(vcpu, n))
                } else {
                    0
                }
            }
            // ITARGETSR, CPENDSGIR and SPENDSGIR are byte-accessible RES0.
            0x0800..0x0c00 | 0x0f10..0x0f30 => {
                check_access(offset, size, true, false)?;
                0
            }
            0x6000..0x8000 => {
                check_access(offset, size, false, true)?;
                let intid = ((offset - 0x6000) / 8) as u32;
                if intid >= PRIVATE_IRQS && intid < self.nr_irqs() {
                    let route = self.spi_route[(intid - PRIVATE_IRQS) as usize];
                    read_part(route, offset, size)
                } else {
                    0
                }
            }
            0xffd0..0x1_0000 => {
                check_access(offset, size, false, false)?;
                id_read_v3(offset)
            }
            // IGRPMODR, NSACR, SGIR, extended ranges, reserved: RAZ/WI.
            _ if offset < 0x1_0000 => {
                check_access(offset, size, false, false)?;
                0
            }
            _ => return Err(VgicError::OutOfFrame),
        };
        Ok(value)
    }

    pub(crate) fn dist_write_v3(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), VgicError> {
        match offset {
            0x0000..0x0080 => {
                check_access(offset, size, false, false)?;
                if offset == 0 {
                    self.write_ctlr(value as u32 & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1));
                }
            }
            0x0080..0x0400 => {
                check_access(offset, size, false, false)?;
                if let Some((reg, word)) = BitReg::decode(offset)
                    && word >= 1
                    && word <= self.spi_words()
                {
                    self.bits_write(vcpu, word, reg, value as u32);
                }
            }
            0x0400..0x0800 => {
                check_access(offset, size, true, false)?;
                let intid = (offset - 0x400) as u32;
                if self.spi_range(intid) {
                    self.priority_write(vcpu, intid, size, value);
                }
            }
            0x0c00..0x0d00 => {
                check_access(offset, size, false, false)?;
                let n = ((offset - 0xc00) / 4) as usize;
                if n >= 2 && n / 2 <= self.spi_words() {
                    self.config_write(vcpu, n, value as u32);
                }
            }
            0x0800..0x0c00 | 0x0f10..0x0f30 => check_access(offset, size, true, false)?,
            0x6000..0x8000 => {
                check_access(offset, size, false, true)?;
                let intid = ((offset - 0x6000) / 8) as u32;
                if intid >= PRIVATE_IRQS && intid < self.nr_irqs() {
                    let spi = (intid - PRIVATE_IRQS) as usize;
                    let route = write_part(self.spi_route[spi], offset, size, value);
                    // IRM (bit 31) and the affinity fields; the rest RES0.
                    self.spi_route[spi] = route & (AFFINITY_MASK | 1 << 31);
                    self.retarget_spi(spi);
                }
            }
            _ if offset < 0x1_0000 => check_access(offset, size, false, false)?,
            _ => return Err(VgicError::OutOfFrame),
        }
        Ok(())
    }

    /// Whether `size` bytes' worth of byte-per-INTID register from `intid`
    /// covers implemented SPIs (the access never straddles a bank: it is
    /// naturally aligned and at most a word).
    fn spi_range(&self, intid: u32) -> bool {
        intid >= PRIVATE_IRQS && intid < self.nr_irqs()
    }

    /// Writes the Group enable bits of `GICD_CTLR` (same bits on v2).
    pub(crate) fn write_ctlr(&mut self, enables: u32) {
        let newly = enables & !self.ctlr;
        self.ctlr = enables;
        if newly != 0 {
            self.kicks |= self.vcpu_bits();
        }
    }
}
