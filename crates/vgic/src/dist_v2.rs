//! The GICv2 distributor (`GICD_*`, IHI 0048B §4.1.2 Table 4-1, §4.3),
//! 4 KiB of registers in a 64 KiB frame.
//!
//! A GIC without Security Extensions: `GICD_CTLR` has EnableGrp0 (bit 0)
//! and EnableGrp1 (bit 1), `NSACR` is RAZ/WI. The SGI/PPI rows
//! (`IGROUPR0`, `ISENABLER0`…, `IPRIORITYR0-7`, `ITARGETSR0-7`, `ICFGR0-1`)
//! are banked per accessing vCPU. As on a GIC-400 (DDI 0471B): SGIs are
//! permanently enabled, SGI configuration is read-only (edge), the ID
//! registers carry the GIC-400 values, and the implementation-defined
//! `PPISR`/`SPISR` block at `0xD00` reads as zero.

use crate::dist_v3::IIDR;
use crate::regs::{BitReg, check_access};
use crate::{AccessSize, PRIVATE_IRQS, Vgic, VgicError};

/// `GICD_PIDR4..7, PIDR0..3, CIDR0..3` at `0xFD0..0xFFC`, GIC-400 values
/// (PIDR2 = 0x2B: ArchRev 2).
const ID_REGS_V2: [u32; 12] = [
    0x04, 0x00, 0x00, 0x00, 0x90, 0xb4, 0x2b, 0x00, 0x0d, 0xf0, 0x05, 0xb1,
];

impl Vgic {
    /// `GICD_TYPER` (IHI 0048B §4.3.2): ITLinesNumber, CPUNumber = vCPUs − 1,
    /// no Security Extensions, LSPI 0.
    pub(crate) fn typer_v2(&self) -> u32 {
        let it_lines = self.nr_irqs() / 32 - 1;
        it_lines | ((self.nr_vcpus as u32 - 1) << 5)
    }

    #[inline(always)]
    pub(crate) fn dist_read_v2(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        let value = match offset {
            0x000..0x080 => {
                check_access(offset, size, false, false)?;
                match offset {
                    0x000 => u64::from(self.ctlr),
                    0x004 => u64::from(self.typer_v2()),
                    0x008 => u64::from(IIDR),
                    _ => 0,
                }
            }
            0x080..0x400 => {
                check_access(offset, size, false, false)?;
                match BitReg::decode(offset) {
                    Some((reg, word)) if word <= self.spi_words() => {
                        u64::from(self.bits_read(vcpu, word, reg))
                    }
                    _ => 0,
                }
            }
            0x400..0x800 => {
                check_access(offset, size, true, false)?;
                let intid = (offset - 0x400) as u32;
                if intid < self.nr_irqs() {
                    self.priority_read(vcpu, intid, size)
                } else {
                    0
                }
            }
            0x800..0xc00 => {
                check_access(offset, size, true, false)?;
                let first = (offset - 0x800) as u32;
                (0..size.bytes() as u32).fold(0, |acc, i| {
                    acc | u64::from(self.target_byte(vcpu, first + i)) << (8 * i)
                })
            }
            0xc00..0xd00 => {
                check_access(offset, size, false, false)?;
                let n = ((offset - 0xc00) / 4) as usize;
                if n / 2 <= self.spi_words() {
                    u64::from(self.config_read(vcpu, n))
                } else {
                    0
                }
            }
            0xf10..0xf30 => {
                check_access(offset, size, true, false)?;
                // Byte k of either block is SGI k (IHI 0048B §4.3.16–17).
                let first = ((offset - 0xf10) % 0x10) as usize;
                let vcpus = self.vcpu_bits();
                (0..size.bytes() as usize).fold(0, |acc, i| {
                    let src = self.sgi_sources(vcpu, first + i) & vcpus;
                    acc | u64::from(src) << (8 * i)
                })
            }
            0xfd0..0x1000 => {
                check_access(offset, size, false, false)?;
                u64::from(ID_REGS_V2[((offset - 0xfd0) / 4) as usize])
            }
            // PPISR/SPISR, NSACR, SGIR (write-only), reserved: RAZ/WI.
            _ if offset < 0x1_0000 => {
                check_access(offset, size, false, false)?;
                0
            }
            _ => return Err(VgicError::OutOfFrame),
        };
        Ok(value)
    }

    pub(crate) fn dist_write_v2(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), VgicError> {
        match offset {
            0x000..0x080 => {
                check_access(offset, size, false, false)?;
                if offset == 0 {
                    self.write_ctlr(value as u32 & 0b11);
                }
            }
            0x080..0x400 => {
                check_access(offset, size, false, false)?;
                if let Some((reg, word)) = BitReg::decode(offset)
                    && word <= self.spi_words()
                {
                    self.bits_write(vcpu, word, reg, value as u32);
                }
            }
            0x400..0x800 => {
                check_access(offset, size, true, false)?;
                let intid = (offset - 0x400) as u32;
                if intid < self.nr_irqs() {
                    self.priority_write(vcpu, intid, size, value);
                }
            }
            0x800..0xc00 => {
                check_access(offset, size, true, false)?;
                let first = (offset - 0x800) as u32;
                for i in 0..size.bytes() as u32 {
                    self.write_target_byte(first + i, (value >> (8 * i)) as u8);
                }
            }
            0xc00..0xd00 => {
                check_access(offset, size, false, false)?;
                let n = ((offset - 0xc00) / 4) as usize;
                if n / 2 <= self.spi_words() {
                    self.config_write(vcpu, n, value as u32);
                }
            }
            0xf00 => {
                check_access(offset, size, false, false)?;
                self.sgir_write(vcpu, value as u32);
            }
            0xf10..0xf30 => {
                check_access(offset, size, true, false)?;
                let set = offset >= 0xf20;
                let first = ((offset - 0xf10) % 0x10) as usize;
                for i in 0..size.bytes() as usize {
                    self.write_sgi_sources(vcpu, first + i, (value >> (8 * i)) as u8, set);
                }
            }
            _ if offset < 0x1_0000 => check_access(offset, size, false, false)?,
            _ => return Err(VgicError::OutOfFrame),
        }
        Ok(())
    }

    /// `GICD_ITARGETSR` byte for `intid` (IHI 0048B §4.3.12): the SGI/PPI
    /// rows read as the accessing CPU's own bit; a uniprocessor GIC has
    /// them all RAZ/WI; unimplemented INTIDs RAZ.
    fn target_byte(&self, vcpu: usize, intid: u32) -> u8 {
        if self.nr_vcpus == 1 || intid >= self.nr_irqs() {
            0
        } else if intid < PRIVATE_IRQS {
            1 << vcpu
        } else {
            self.spi_targets[(intid - PRIVATE_IRQS) as usize]
        }
    }

    /// Writes an SPI's `ITARGETSR` byte; bits of absent CPUs are RAZ/WI,
    /// SGI/PPI rows are read-only.
    fn write_target_byte(&mut self, intid: u32, value: u8) {
        if self.nr_vcpus == 1 || intid < PRIVATE_IRQS || intid >= self.nr_irqs() {
            return;
        }
        let spi = (intid - PRIVATE_IRQS) as usize;
        self.spi_targets[spi] = value & self.vcpu_bits();
        self.retarget_spi(spi);
    }
}
