//! GICv2 driver for EL2: distributor (`GICD`), memory-mapped CPU interface
//! (`GICC`) and the virtualization extensions' hypervisor control (`GICH`).
//!
//! Register layouts: Arm IHI 0048B (GICv2 architecture specification),
//! chapter 4 (`GICD_*`, `GICC_*`) and chapter 5 (`GICH_*`).
//!
//! Security: with the Security Extensions (`GICD_TYPER.SecurityExtn == 1`)
//! EL2 is Non-secure and sees only Group 1, which firmware has configured;
//! bit 0 of `GICD_CTLR`/`GICC_CTLR` then enables Group 1 and bit 9 is
//! `EOImodeNS`. Without them (QEMU `virt` without `secure=on`) EL2 sees the
//! whole GIC: this driver keeps every interrupt in Group 0, which with
//! `FIQEn == 0` is signalled as IRQ and acknowledged through `GICC_IAR`
//! (Group 1 would need the deprecated `AckCtl`); bit 0 then enables Group 0
//! and bit 9 is `EOImodeS`. So the same register values work in both views.

use super::mmio::{read32, write8, write32};
use super::{Acked, ActivePriorities, GicError, HcrFlags, MisrFlags, is_special};

// Distributor.
const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const GICD_IGROUPR: usize = 0x080;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_ISPENDR: usize = 0x200;
const GICD_ICPENDR: usize = 0x280;
const GICD_ICACTIVER: usize = 0x380;
const GICD_ISACTIVER: usize = 0x300;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xc00;
const GICD_SGIR: usize = 0xf00;
const TYPER_SECURITY_EXTN: u32 = 1 << 10;
/// `GICD_CTLR`: Group 1 enable (Non-secure view) or Group 0 enable.
const GICD_CTLR_ENABLE: u32 = 1 << 0;

// CPU interface.
const GICC_CTLR: usize = 0x0000;
const GICC_PMR: usize = 0x0004;
const GICC_BPR: usize = 0x0008;
const GICC_IAR: usize = 0x000c;
const GICC_EOIR: usize = 0x0010;
const GICC_DIR: usize = 0x1000;
/// `GICC_CTLR`: enable (bit 0) and split EOI (bit 9: `EOImodeNS` in the
/// Non-secure view, `EOImodeS` without Security Extensions).
const GICC_CTLR_VALUE: u32 = (1 << 0) | (1 << 9);

// Hypervisor control.
const GICH_HCR: usize = 0x000;
const GICH_VTR: usize = 0x004;
const GICH_VMCR: usize = 0x008;
const GICH_MISR: usize = 0x010;
const GICH_EISR0: usize = 0x020;
const GICH_EISR1: usize = 0x024;
const GICH_ELRSR0: usize = 0x030;
const GICH_ELRSR1: usize = 0x034;
const GICH_APR: usize = 0x0f0;
const GICH_LR0: usize = 0x100;

const DEFAULT_PRIORITY: u8 = 0xa0;

/// The GICv2 as seen by one CPU.
#[derive(Debug)]
pub struct GicV2 {
    gicd: usize,
    gicc: usize,
    gich: usize,
    /// This CPU interface's bit in `GICD_ITARGETSR` (0 on a uniprocessor
    /// GIC, whose target registers are RAZ/WI).
    cpu_mask: u8,
    /// One past the highest SPI INTID.
    spi_end: u32,
    lrs: usize,
}

impl GicV2 {
    /// Brings up the GICv2 for the calling CPU and returns its driver.
    ///
    /// Enables the distributor if it is not yet (the first CPU also
    /// disables every SPI and gives it the default priority), disables this
    /// CPU's PPIs and enables its SGIs, and enables the CPU interface with
    /// split EOI (`EOImode = 1`), priority mask `0xff` and binary point 0.
    ///
    /// # Safety
    /// - `gicd`, `gicc` and `gich` are this machine's GICv2 distributor, CPU
    ///   interface and hypervisor-control frames from the host DT, mapped at
    ///   EL2 as device memory (`gicc` spans 8 KiB: `GICC_DIR` is at 0x1000).
    /// - Each CPU calls this once, with no other CPU concurrently bringing
    ///   up the distributor.
    /// - Physical IRQs are masked at EL2 until the hypervisor's vectors can
    ///   take them.
    pub unsafe fn init_v2(gicd: usize, gicc: usize, gich: usize) -> Result<Self, GicError> {
        // SAFETY: the frames are the GIC's (caller's contract); every access
        // is to an architected register of the stated width.
        unsafe {
            let typer = read32(gicd + GICD_TYPER);
            let security_extn = typer & TYPER_SECURITY_EXTN != 0;
            let spi_end = (32 * ((typer & 0x1f) + 1)).min(1020);
            // GICD_ITARGETSR0..7 are banked: each byte reads as this CPU's mask.
            let cpu_mask = (0..8)
                .map(|n| read32(gicd + GICD_ITARGETSR + 4 * n).to_le_bytes())
                .fold(0u8, |m, b| m | b[0] | b[1] | b[2] | b[3]);
            let gic = Self {
                gicd,
                gicc,
                gich,
                cpu_mask,
                spi_end,
                lrs: (read32(gich + GICH_VTR) & 0x3f) as usize + 1,
            };
            if read32(gicd + GICD_CTLR) & GICD_CTLR_ENABLE == 0 {
                for n in 1..(spi_end as usize).div_ceil(32) {
                    write32(gicd + GICD_ICENABLER + 4 * n, u32::MAX);
                    if !security_extn {
                        write32(gicd + GICD_IGROUPR + 4 * n, 0);
                    }
                }
                for intid in 32..spi_end as usize {
                    write8(gicd + GICD_IPRIORITYR + intid, DEFAULT_PRIORITY);
                }
                write32(gicd + GICD_CTLR, GICD_CTLR_ENABLE);
            }
            // Banked SGI/PPI registers of this CPU.
            write32(gicd + GICD_ICENABLER, 0xffff_0000);
            if !security_extn {
                write32(gicd + GICD_IGROUPR, 0);
            }
            for n in 0..8 {
                write32(
                    gicd + GICD_IPRIORITYR + 4 * n,
                    u32::from_ne_bytes([DEFAULT_PRIORITY; 4]),
                );
            }
            write32(gicd + GICD_ISENABLER, 0x0000_ffff);
            write32(gicc + GICC_PMR, u32::from(super::PRIORITY_MASK_ALL));
            write32(gicc + GICC_BPR, 0);
            write32(gicc + GICC_CTLR, GICC_CTLR_VALUE);
            Ok(gic)
        }
    }

    fn bit_reg(&self, reg: usize, intid: u32) -> Result<(usize, u32), GicError> {
        if intid >= self.spi_end {
            return Err(GicError::InvalidIntId(intid));
        }
        Ok((
            self.gicd + reg + 4 * (intid as usize / 32),
            1 << (intid % 32),
        ))
    }

    /// Enables SGI or PPI `intid` (0–31) on this CPU at `priority`.
    pub fn enable_ppi(&self, intid: u32, priority: u8) -> Result<(), GicError> {
        if intid >= 32 {
            return Err(GicError::InvalidIntId(intid));
        }
        // SAFETY: banked distributor registers of this CPU; IPRIORITYR is
        // byte-accessible.
        unsafe {
            write8(self.gicd + GICD_IPRIORITYR + intid as usize, priority);
            write32(self.gicd + GICD_ISENABLER, 1 << intid);
        }
        Ok(())
    }

    /// Enables SPI `intid`, targeted at this CPU interface, at `priority`.
    pub fn enable_spi(&self, intid: u32, priority: u8, level: bool) -> Result<(), GicError> {
        if !(32..self.spi_end).contains(&intid) {
            return Err(GicError::InvalidIntId(intid));
        }
        let n = intid as usize;
        let (word, bit) = (4 * (n / 32), 1u32 << (n % 32));
        let cfg_addr = self.gicd + GICD_ICFGR + 4 * (n / 16);
        let edge_bit = 1u32 << (2 * (n % 16) + 1);
        // SAFETY: distributor registers of an implemented SPI, configured
        // while it is disabled; callers serialize distributor configuration.
        unsafe {
            write32(self.gicd + GICD_ICENABLER + word, bit);
            let cfg = read32(cfg_addr);
            write32(
                cfg_addr,
                if level {
                    cfg & !edge_bit
                } else {
                    cfg | edge_bit
                },
            );
            write8(self.gicd + GICD_IPRIORITYR + n, priority);
            write8(self.gicd + GICD_ITARGETSR + n, self.cpu_mask);
            write32(self.gicd + GICD_ISENABLER + word, bit);
        }
        Ok(())
    }

    /// Disables `intid`.
    pub fn disable(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICD_ICENABLER, intid)?;
        // SAFETY: an ICENABLER register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Makes `intid` pending. (SGIs are raised through `GICD_SGIR`, not here:
    /// their pending bits are per source CPU.)
    pub fn set_pending(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICD_ISPENDR, intid)?;
        // SAFETY: an ISPENDR register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Clears the pending state of `intid`.
    pub fn clear_pending(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICD_ICPENDR, intid)?;
        // SAFETY: an ICPENDR register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// This CPU interface's target bit (its `GICD_ITARGETSR` mask), which
    /// other CPUs name to send it an SGI.
    pub fn cpu_mask(&self) -> u8 {
        self.cpu_mask
    }

    /// Raises SGI `intid` (0–15) on the CPU interfaces in `targets`
    /// (`GICD_SGIR` with a target list).
    pub fn send_sgi(&self, intid: u32, targets: u8) -> Result<(), GicError> {
        if intid >= 16 {
            return Err(GicError::InvalidIntId(intid));
        }
        // SAFETY: GICD_SGIR of this GIC; the write only makes the SGI pending.
        unsafe { write32(self.gicd + GICD_SGIR, (u32::from(targets) << 16) | intid) };
        Ok(())
    }

    /// Clears the active state of `intid` (`GICD_ICACTIVER`: write-1-to-clear,
    /// no effect on an inactive interrupt; banked for SGIs and PPIs).
    pub fn clear_active(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICD_ICACTIVER, intid)?;
        // SAFETY: an ICACTIVER register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Makes `intid` active (`GICD_ISACTIVER`, write-1-to-set; banked for
    /// SGIs and PPIs).
    pub fn set_active(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICD_ISACTIVER, intid)?;
        // SAFETY: an ISACTIVER register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Whether `intid` is active (`GICD_ISACTIVER` read).
    pub fn is_active(&self, intid: u32) -> Result<bool, GicError> {
        let (addr, bit) = self.bit_reg(GICD_ISACTIVER, intid)?;
        // SAFETY: an ISACTIVER register of this GIC (checked INTID); reads
        // have no side effects.
        Ok(unsafe { read32(addr) } & bit != 0)
    }

    /// This CPU's active SGIs and PPIs (the banked `GICD_ISACTIVER0`), bit
    /// `n` for INTID `n`.
    pub fn private_active(&self) -> u32 {
        // SAFETY: the distributor's ISACTIVER0, banked for this CPU; reads
        // have no side effects.
        unsafe { read32(self.gicd + GICD_ISACTIVER) }
    }

    /// Makes this CPU's SGIs and PPIs in `bits` active (the banked
    /// `GICD_ISACTIVER0`, write-1-to-set) and those in `clear` inactive
    /// (`GICD_ICACTIVER0`); an empty set writes nothing.
    pub fn set_private_active(&self, bits: u32, clear: u32) {
        // SAFETY: the distributor's ISACTIVER0 and ICACTIVER0, banked for
        // this CPU, which change only the active state of the bits written.
        unsafe {
            if bits != 0 {
                write32(self.gicd + GICD_ISACTIVER, bits);
            }
            if clear != 0 {
                write32(self.gicd + GICD_ICACTIVER, clear);
            }
        }
    }

    /// Acknowledges the highest-priority pending interrupt (`GICC_IAR`).
    pub fn ack(&self) -> Option<Acked> {
        // SAFETY: GICC_IAR of this CPU interface; reading activates the
        // returned interrupt, which the caller then owns.
        let raw = unsafe { read32(self.gicc + GICC_IAR) } & 0x1fff;
        let intid = raw & 0x3ff;
        (!is_special(intid)).then_some(Acked { raw, intid })
    }

    /// Drops the running priority of `irq` (`GICC_EOIR`).
    pub fn priority_drop(&self, irq: Acked) {
        // SAFETY: GICC_EOIR with a value `ack` returned; a misordered EOI
        // only affects the GIC's priority state.
        unsafe { write32(self.gicc + GICC_EOIR, irq.raw) };
    }

    /// Deactivates `irq` (`GICC_DIR`; split-EOI mode).
    pub fn deactivate(&self, irq: Acked) {
        // SAFETY: GICC_DIR with a value `ack` returned; only the GIC's
        // active state changes.
        unsafe { write32(self.gicc + GICC_DIR, irq.raw) };
    }

    /// Number of list registers (`GICH_VTR.ListRegs + 1`).
    pub fn lr_count(&self) -> usize {
        self.lrs
    }

    fn lr_addr(&self, n: usize) -> usize {
        assert!(n < self.lrs, "list register {n} of {} used", self.lrs);
        self.gich + GICH_LR0 + 4 * n
    }

    /// Reads `GICH_LR<n>` (32 bits, zero-extended).
    ///
    /// # Panics
    /// If `n >= self.lr_count()`.
    pub fn read_lr(&self, n: usize) -> u64 {
        // SAFETY: an implemented GICH_LR of this CPU.
        u64::from(unsafe { read32(self.lr_addr(n)) })
    }

    /// Writes `GICH_LR<n>`.
    ///
    /// # Panics
    /// If `n >= self.lr_count()` or `raw` has bits above 31 (a GICv3-format
    /// value handed to a GICv2).
    pub fn write_lr(&self, n: usize, raw: u64) {
        let v = u32::try_from(raw).expect("GICv2 list registers are 32 bits wide");
        // SAFETY: an implemented GICH_LR of this CPU; list registers only
        // hold virtual-interrupt state.
        unsafe { write32(self.lr_addr(n), v) };
    }

    fn gich_read(&self, off: usize) -> u32 {
        // SAFETY: a readable GICH register of this CPU (callers pass
        // architected offsets).
        unsafe { read32(self.gich + off) }
    }

    fn gich_write(&self, off: usize, v: u32) {
        // SAFETY: a writable GICH register of this CPU; GICH only controls
        // the virtual CPU interface (there are no trap bits in GICv2).
        unsafe { write32(self.gich + off, v) }
    }

    /// The enables in `GICH_HCR`.
    pub fn hcr(&self) -> HcrFlags {
        HcrFlags::from_raw(self.gich_read(GICH_HCR))
    }

    /// Writes `GICH_HCR` from `flags`, `EOICount` 0.
    pub fn set_hcr(&self, flags: HcrFlags) {
        self.gich_write(GICH_HCR, flags.to_raw());
    }

    /// `GICH_HCR.EOICount`.
    pub fn eoi_count(&self) -> u32 {
        self.gich_read(GICH_HCR) >> super::hcr::EOICOUNT_SHIFT
    }

    /// `GICH_MISR`, decoded.
    pub fn misr(&self) -> MisrFlags {
        MisrFlags::from_raw(self.gich_read(GICH_MISR))
    }

    fn lr_mask(&self) -> u64 {
        if self.lrs >= 64 {
            u64::MAX
        } else {
            (1u64 << self.lrs) - 1
        }
    }

    /// `GICH_EISR1:GICH_EISR0`, limited to implemented list registers.
    pub fn eisr(&self) -> u64 {
        let lo = u64::from(self.gich_read(GICH_EISR0));
        let hi = if self.lrs > 32 {
            u64::from(self.gich_read(GICH_EISR1))
        } else {
            0
        };
        (hi << 32 | lo) & self.lr_mask()
    }

    /// `GICH_ELRSR1:GICH_ELRSR0`, limited to implemented list registers.
    pub fn elrsr(&self) -> u64 {
        let lo = u64::from(self.gich_read(GICH_ELRSR0));
        let hi = if self.lrs > 32 {
            u64::from(self.gich_read(GICH_ELRSR1))
        } else {
            0
        };
        (hi << 32 | lo) & self.lr_mask()
    }

    /// `GICH_VMCR`.
    pub fn vmcr(&self) -> u32 {
        self.gich_read(GICH_VMCR)
    }

    /// Writes `GICH_VMCR`.
    pub fn set_vmcr(&self, raw: u32) {
        self.gich_write(GICH_VMCR, raw);
    }

    /// The guest's priority mask in a `GICH_VMCR` value: `VMPriMask`
    /// (bits 31:27) holds the top five bits of an 8-bit priority.
    pub const fn vmcr_priority_mask(vmcr: u32) -> u8 {
        ((vmcr >> 27) as u8) << 3
    }

    /// Saves `GICH_APR` (into `ap0[0]`).
    pub fn save_aprs(&self) -> ActivePriorities {
        let mut a = ActivePriorities::default();
        a.ap0[0] = self.gich_read(GICH_APR);
        a
    }

    /// Restores `GICH_APR` from `ap0[0]`.
    pub fn restore_aprs(&self, aprs: &ActivePriorities) {
        self.gich_write(GICH_APR, aprs.ap0[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, Write};
    use super::*;

    const GICD: usize = 0x0800_0000;
    const GICC: usize = 0x0801_0000;
    const GICH: usize = 0x0803_0000;

    /// QEMU `virt`, gic-version=2, no Security Extensions, 64 lines, this
    /// CPU is interface 1, 4 list registers.
    fn qemu_like() -> GicV2 {
        fake::reset();
        fake::poke32(GICD + GICD_TYPER, 1);
        fake::poke32(GICD + GICD_ITARGETSR + 0x1c, 0x0202_0202);
        fake::poke32(GICH + GICH_VTR, (4 << 29) | (4 << 26) | 3);
        // SAFETY: host fake: no hardware is touched.
        unsafe { GicV2::init_v2(GICD, GICC, GICH) }.expect("GICv2 initializes")
    }

    #[test]
    fn init_writes_the_expected_registers() {
        let gic = qemu_like();
        let writes = fake::take_writes();
        let w = |addr, width, value| Write { addr, width, value };
        // Distributor bring-up, in order: SPIs off and Group 0, priorities, enable.
        assert_eq!(writes[0], w(GICD + GICD_ICENABLER + 4, 4, 0xffff_ffff));
        assert_eq!(writes[1], w(GICD + GICD_IGROUPR + 4, 4, 0));
        assert!(writes.contains(&w(GICD + GICD_IPRIORITYR + 63, 1, 0xa0)));
        assert!(!writes.iter().any(|x| x.addr == GICD + GICD_IPRIORITYR + 64));
        let ctlr = writes
            .iter()
            .position(|x| x.addr == GICD + GICD_CTLR)
            .expect("GICD_CTLR");
        assert_eq!(writes[ctlr].value, 1);
        // CPU interface last: PMR, BPR, then CTLR = Enable | EOImode.
        let n = writes.len();
        assert_eq!(
            writes[n - 3..],
            [
                w(GICC + GICC_PMR, 4, 0xff),
                w(GICC + GICC_BPR, 4, 0),
                w(GICC + GICC_CTLR, 4, 0x201)
            ]
        );
        assert_eq!(gic.cpu_mask, 0x02);
        assert_eq!(gic.spi_end, 64);
        assert_eq!(gic.lr_count(), 4);
    }

    #[test]
    fn security_extensions_leave_groups_to_firmware() {
        fake::reset();
        fake::poke32(GICD + GICD_TYPER, TYPER_SECURITY_EXTN | 1);
        // SAFETY: host fake: no hardware is touched.
        unsafe { GicV2::init_v2(GICD, GICC, GICH) }.expect("GICv2 initializes");
        assert!(
            !fake::take_writes()
                .iter()
                .any(|w| (GICD + GICD_IGROUPR..GICD + GICD_ISENABLER).contains(&w.addr))
        );
    }

    #[test]
    fn clear_active_writes_the_banked_icactiver() {
        let gic = qemu_like();
        fake::take_writes();
        gic.clear_active(27).expect("a PPI");
        assert_eq!(
            fake::take_writes(),
            [Write {
                addr: GICD + GICD_ICACTIVER,
                width: 4,
                value: 1 << 27
            }]
        );
        assert!(gic.clear_active(5000).is_err());
    }

    #[test]
    fn private_active_state_moves_in_one_access_each() {
        let gic = qemu_like();
        fake::poke32(GICD + GICD_ISACTIVER, 1 << 27 | 1 << 3);
        assert_eq!(gic.private_active(), 1 << 27 | 1 << 3);
        fake::take_writes();
        gic.set_private_active(1 << 27, 1 << 30);
        let w = |addr, value| Write {
            addr,
            width: 4,
            value,
        };
        assert_eq!(
            fake::take_writes(),
            [
                w(GICD + GICD_ISACTIVER, 1 << 27),
                w(GICD + GICD_ICACTIVER, 1 << 30)
            ]
        );
        // Nothing to set or clear: nothing written.
        gic.set_private_active(0, 0);
        assert_eq!(fake::take_writes(), []);
    }

    #[test]
    fn an_enabled_distributor_is_left_alone() {
        fake::reset();
        fake::poke32(GICD + GICD_TYPER, 1);
        fake::poke32(GICD + GICD_CTLR, 1);
        // SAFETY: host fake: no hardware is touched.
        unsafe { GicV2::init_v2(GICD, GICC, GICH) }.expect("GICv2 initializes");
        assert!(
            !fake::take_writes()
                .iter()
                .any(|w| w.addr == GICD + GICD_ICENABLER + 4)
        );
    }

    #[test]
    fn spis_target_this_cpu_interface() {
        let gic = qemu_like();
        gic.enable_spi(33, 0x80, true).expect("SPI 33");
        assert_eq!(fake::peek8(GICD + GICD_ITARGETSR + 33), 0x02);
        assert_eq!(fake::peek8(GICD + GICD_IPRIORITYR + 33), 0x80);
        assert_eq!(fake::peek32(GICD + GICD_ISENABLER + 4), 1 << 1);
        gic.enable_spi(47, 0x80, false).expect("SPI 47");
        assert_ne!(fake::peek32(GICD + GICD_ICFGR + 8) & (1 << 31), 0);
        assert_eq!(gic.enable_spi(64, 0, true), Err(GicError::InvalidIntId(64)));
        gic.enable_ppi(25, 0x10).expect("maintenance PPI");
        assert_eq!(fake::peek32(GICD + GICD_ISENABLER), 1 << 25);
        assert_eq!(gic.disable(1020), Err(GicError::InvalidIntId(1020)));
    }

    #[test]
    fn ack_maps_special_intids_to_none_and_echoes_the_sgi_source() {
        let gic = qemu_like();
        for special in 1020..=1023 {
            fake::poke32(GICC + GICC_IAR, special);
            assert_eq!(gic.ack(), None);
        }
        // SGI 3 from CPU 2.
        fake::poke32(GICC + GICC_IAR, (2 << 10) | 3);
        let irq = gic.ack().expect("SGI 3");
        assert_eq!(irq.intid(), 3);
        fake::take_writes();
        gic.priority_drop(irq);
        gic.deactivate(irq);
        let writes = fake::take_writes();
        assert_eq!(
            writes[0],
            Write {
                addr: GICC + GICC_EOIR,
                width: 4,
                value: 0x803
            }
        );
        assert_eq!(
            writes[1],
            Write {
                addr: GICC + GICC_DIR,
                width: 4,
                value: 0x803
            }
        );
    }

    #[test]
    fn virtual_interface_registers() {
        let gic = qemu_like();
        gic.write_lr(3, 0x9000_001b);
        assert_eq!(fake::peek32(GICH + GICH_LR0 + 12), 0x9000_001b);
        assert_eq!(gic.read_lr(3), 0x9000_001b);
        let flags = HcrFlags {
            enable: true,
            no_pending: true,
            ..HcrFlags::default()
        };
        gic.set_hcr(flags);
        assert_eq!(fake::peek32(GICH + GICH_HCR), 0b1001);
        assert_eq!(gic.hcr(), flags);
        fake::poke32(GICH + GICH_HCR, (2 << 27) | 1);
        assert_eq!(gic.eoi_count(), 2);
        fake::poke32(GICH + GICH_MISR, 0b10);
        assert!(gic.misr().underflow);
        fake::poke32(GICH + GICH_ELRSR0, u32::MAX);
        fake::poke32(GICH + GICH_ELRSR1, u32::MAX);
        assert_eq!(gic.elrsr(), 0xf);
        gic.restore_aprs(&ActivePriorities {
            ap0: [0x8000_0000, 0, 0, 0],
            ap1: [0; 4],
        });
        assert_eq!(fake::peek32(GICH + GICH_APR), 0x8000_0000);
        assert_eq!(gic.save_aprs().ap0[0], 0x8000_0000);
    }

    #[test]
    #[should_panic(expected = "32 bits")]
    fn a_gicv3_list_register_value_is_a_broken_invariant() {
        qemu_like().write_lr(0, 1 << 60);
    }

    #[test]
    #[should_panic(expected = "list register 4 of 4")]
    fn list_register_beyond_vtr_is_a_broken_invariant() {
        qemu_like().read_lr(4);
    }
}
