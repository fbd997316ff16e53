//! GICv3 driver for EL2: distributor (`GICD`), this CPU's redistributor
//! (`GICR`), the `ICC_*` system-register CPU interface and the `ICH_*_EL2`
//! virtualization control.
//!
//! Register layouts: Arm IHI 0069 (GICv3/v4 architecture specification),
//! chapters 12 (`GICD_*`, `GICR_*`) and 12.2/12.4 (`ICC_*`, `ICH_*`).
//!
//! Security states: on a machine with two security states (`GICD_CTLR.DS
//! == 0`, e.g. behind TF-A) EL2 sees the Non-secure view, where group
//! registers are RAZ/WI and firmware has already made everything Group 1
//! Non-secure. QEMU `virt` without `secure=on` has a single security state
//! (`DS == 1`): EL2 then owns all groups and this driver puts everything in
//! Group 1. Both views keep `ARE` at bit 4 and the Group 1 enable this
//! driver uses at bit 1.

use super::mmio::{read32, read64, write8, write32, write64};
use super::{
    Acked, ActivePriorities, GicError, HcrFlags, MisrFlags, POLL_LIMIT, PRIORITY_MASK_ALL,
    is_special,
};
use crate::{barrier, sysreg};

// Distributor registers (offsets from GICD base).
const GICD_CTLR: usize = 0x0000;
const GICD_TYPER: usize = 0x0004;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_ICENABLER: usize = 0x0180;
const GICD_ISPENDR: usize = 0x0200;
const GICD_ICPENDR: usize = 0x0280;
const GICD_ICACTIVER: usize = 0x0380;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_ICFGR: usize = 0x0c00;
const GICD_IROUTER: usize = 0x6000;

const CTLR_ENABLE_G1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;
const CTLR_RWP: u32 = 1 << 31;

// Redistributor: RD_base frame.
const GICR_CTLR: usize = 0x0000;
const GICR_WAKER: usize = 0x0014;
const GICR_TYPER: usize = 0x0008;
const GICR_CTLR_RWP: u32 = 1 << 3;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const TYPER_VLPIS: u64 = 1 << 1;
const TYPER_LAST: u64 = 1 << 4;
/// RD_base + SGI_base (GICv3); GICv4 with VLPIs adds two more 64 KiB frames.
const GICR_STRIDE: usize = 0x2_0000;
const GICR_STRIDE_VLPI: usize = 0x4_0000;

// Redistributor: SGI_base frame (RD_base + 64 KiB).
const SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = SGI_BASE + 0x0080;
const GICR_ISENABLER0: usize = SGI_BASE + 0x0100;
const GICR_ICENABLER0: usize = SGI_BASE + 0x0180;
const GICR_ISPENDR0: usize = SGI_BASE + 0x0200;
const GICR_ICPENDR0: usize = SGI_BASE + 0x0280;
const GICR_ICACTIVER0: usize = SGI_BASE + 0x0380;
const GICR_ISACTIVER0: usize = SGI_BASE + 0x0300;
const GICD_ISACTIVER: usize = 0x0300;
const GICR_IPRIORITYR: usize = SGI_BASE + 0x0400;
const GICR_IGRPMODR0: usize = SGI_BASE + 0x0d00;

// CPU interface.
const SRE_SRE: u64 = 1 << 0;
const SRE_ENABLE: u64 = 1 << 3;
const ICC_CTLR_EOIMODE: u64 = 1 << 1;
const ID_AA64PFR0_GIC_SHIFT: u32 = 24;

/// Priority given to interrupts the hypervisor has not configured.
const DEFAULT_PRIORITY: u8 = 0xa0;

/// The GICv3 as seen by one CPU.
#[derive(Debug)]
pub struct GicV3 {
    gicd: usize,
    /// This CPU's redistributor (RD_base).
    gicr: usize,
    /// `GICD_IROUTER` value that routes an SPI to this CPU.
    route: u64,
    /// One past the highest SPI INTID the distributor implements.
    spi_end: u32,
    lrs: usize,
    /// `ICH_AP{0,1}R<n>_EL2` implemented per group: 1, 2 or 4.
    apr_words: usize,
}

/// `MPIDR_EL1` affinity packed as `GICR_TYPER.Affinity_Value` (Aff3.Aff2.Aff1.Aff0).
const fn typer_affinity(mpidr: u64) -> u64 {
    ((mpidr >> 8) & 0xff00_0000) | (mpidr & 0x00ff_ffff)
}

/// `MPIDR_EL1` affinity as a `GICD_IROUTER` value (IRM = 0: this CPU only).
const fn irouter_affinity(mpidr: u64) -> u64 {
    mpidr & 0xff_00ff_ffff
}

/// Polls `addr` until `mask` is clear.
///
/// # Safety
/// `addr` must be a readable 32-bit GIC register.
unsafe fn wait_clear(addr: usize, mask: u32, err: GicError) -> Result<(), GicError> {
    for _ in 0..POLL_LIMIT {
        // SAFETY: the caller guarantees `addr` is a readable GIC register.
        if unsafe { read32(addr) } & mask == 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(err)
}

impl GicV3 {
    /// Brings up the GICv3 for the calling CPU and returns its driver.
    ///
    /// Finds this CPU's redistributor in `gicr_region` (walking `GICR_TYPER`
    /// by affinity up to the `Last` bit), wakes it, enables the distributor
    /// with affinity routing and Group 1 if it is not yet (so every CPU may
    /// call this; the first does the distributor), puts SGIs/PPIs in Group 1
    /// (PPIs disabled, SGIs enabled), and sets up the CPU interface: system
    /// registers enabled for EL2 and EL1 (`ICC_SRE_EL2 = SRE | Enable`),
    /// priority mask open, binary point 0, split EOI (`EOImode = 1`),
    /// Group 1 enabled.
    ///
    /// # Safety
    /// - `gicd` and `gicr_region`..`+gicr_size` are this machine's GICv3
    ///   distributor and a redistributor region from the host DT, mapped at
    ///   EL2 as device memory.
    /// - `mpidr` is the calling CPU's `MPIDR_EL1`, and each CPU calls this
    ///   once, with no other CPU concurrently bringing up the distributor.
    /// - Physical IRQs are masked at EL2 until the hypervisor's vectors can
    ///   take them.
    pub unsafe fn init_v3(
        gicd: usize,
        gicr_region: usize,
        gicr_size: usize,
        mpidr: u64,
    ) -> Result<Self, GicError> {
        if (sysreg::id_aa64pfr0_el1() >> ID_AA64PFR0_GIC_SHIFT) & 0xf == 0 {
            return Err(GicError::NoSystemRegisterInterface);
        }
        // SAFETY: the region is a redistributor region (caller's contract).
        let gicr = unsafe { find_redistributor(gicr_region, gicr_size, mpidr) }?;
        // SAFETY: `gicd` is the distributor (caller's contract).
        let typer = unsafe { read32(gicd + GICD_TYPER) };
        let spi_end = (32 * ((typer & 0x1f) + 1)).min(1020);
        let mut gic = Self {
            gicd,
            gicr,
            route: irouter_affinity(mpidr),
            spi_end,
            lrs: 0,
            apr_words: 0,
        };
        // SAFETY: caller's contract; the steps follow IHI 0069 §4.
        unsafe {
            gic.wake_redistributor()?;
            gic.enable_distributor()?;
            gic.init_private_interrupts()?;
            gic.init_cpu_interface()?;
        }
        let vtr = sysreg::ich_vtr_el2();
        gic.lrs = (vtr & 0x1f) as usize + 1;
        let pre_bits = ((vtr >> 26) & 0x7) as u32 + 1;
        gic.apr_words = 1 << (pre_bits.clamp(5, 7) - 5);
        Ok(gic)
    }

    /// # Safety
    /// `self.gicr` is this CPU's redistributor.
    unsafe fn wake_redistributor(&self) -> Result<(), GicError> {
        let waker = self.gicr + GICR_WAKER;
        // SAFETY: GICR_WAKER of this CPU's redistributor; clearing
        // ProcessorSleep is the architected wake-up.
        unsafe {
            let v = read32(waker);
            write32(waker, v & !WAKER_PROCESSOR_SLEEP);
            wait_clear(waker, WAKER_CHILDREN_ASLEEP, GicError::RedistributorAsleep)
        }
    }

    /// Enables affinity routing and Group 1 in the distributor, unless a
    /// previous call (another CPU) already did.
    ///
    /// # Safety
    /// `self.gicd` is the distributor; no other CPU runs this concurrently.
    unsafe fn enable_distributor(&self) -> Result<(), GicError> {
        let ctlr_addr = self.gicd + GICD_CTLR;
        // SAFETY: distributor registers (caller's contract).
        unsafe {
            let ctlr = read32(ctlr_addr);
            if ctlr & (CTLR_ARE | CTLR_ENABLE_G1) == CTLR_ARE | CTLR_ENABLE_G1 {
                return Ok(());
            }
            if ctlr & CTLR_ARE == 0 {
                // ARE may only change while every group is disabled. DS
                // is kept: once set, only Secure software may clear it.
                write32(ctlr_addr, ctlr & CTLR_DS);
                self.wait_dist_rwp()?;
                write32(ctlr_addr, (ctlr & CTLR_DS) | CTLR_ARE);
                self.wait_dist_rwp()?;
            }
            // Fresh distributor: every SPI disabled, Group 1, default
            // priority (routing is set when one is enabled).
            let single_security_state = ctlr & CTLR_DS != 0;
            for n in 1..(self.spi_end as usize).div_ceil(32) {
                write32(self.gicd + GICD_ICENABLER + 4 * n, u32::MAX);
                if single_security_state {
                    write32(self.gicd + GICD_IGROUPR + 4 * n, u32::MAX);
                }
            }
            for intid in 32..self.spi_end as usize {
                write8(self.gicd + GICD_IPRIORITYR + intid, DEFAULT_PRIORITY);
            }
            self.wait_dist_rwp()?;
            let keep = read32(ctlr_addr) & !CTLR_RWP;
            write32(ctlr_addr, keep | CTLR_ARE | CTLR_ENABLE_G1);
            self.wait_dist_rwp()
        }
    }

    /// SGIs and PPIs of this CPU: Group 1, default priority, PPIs disabled,
    /// SGIs enabled.
    ///
    /// # Safety
    /// `self.gicr` is this CPU's redistributor.
    unsafe fn init_private_interrupts(&self) -> Result<(), GicError> {
        // SAFETY: SGI_base registers of this CPU's redistributor. In the
        // Non-secure view of a two-security-state GIC the group registers
        // are RAZ/WI, which is harmless.
        unsafe {
            write32(self.gicr + GICR_ICENABLER0, 0xffff_0000);
            self.wait_redist_rwp()?;
            write32(self.gicr + GICR_IGROUPR0, u32::MAX);
            write32(self.gicr + GICR_IGRPMODR0, 0);
            for n in 0..8 {
                write32(
                    self.gicr + GICR_IPRIORITYR + 4 * n,
                    u32::from_ne_bytes([DEFAULT_PRIORITY; 4]),
                );
            }
            write32(self.gicr + GICR_ISENABLER0, 0x0000_ffff);
        }
        Ok(())
    }

    /// # Safety
    /// Runs on the CPU this driver is for, with IRQs masked at EL2.
    unsafe fn init_cpu_interface(&self) -> Result<(), GicError> {
        // SAFETY: enabling the system-register interface (and letting EL1
        // use ICC_SRE_EL1) changes no translation or routing; EL1 accesses
        // go to the virtual interface once HCR_EL2.IMO/FMO are set.
        unsafe { sysreg::set_icc_sre_el2(sysreg::icc_sre_el2() | SRE_SRE | SRE_ENABLE) };
        barrier::isb();
        if sysreg::icc_sre_el2() & SRE_SRE == 0 {
            return Err(GicError::SystemRegisterInterfaceDisabled);
        }
        // SAFETY: the physical CPU interface of this CPU; IRQs are masked
        // at EL2 (caller's contract), so opening the priority mask and
        // enabling Group 1 only lets interrupts exit guests to EL2.
        unsafe {
            sysreg::set_icc_pmr_el1(u64::from(PRIORITY_MASK_ALL));
            sysreg::set_icc_bpr1_el1(0);
            sysreg::set_icc_ctlr_el1(sysreg::icc_ctlr_el1() | ICC_CTLR_EOIMODE);
            sysreg::set_icc_igrpen1_el1(1);
        }
        barrier::isb();
        Ok(())
    }

    fn wait_dist_rwp(&self) -> Result<(), GicError> {
        // SAFETY: GICD_CTLR of the distributor this driver was built for.
        unsafe {
            wait_clear(
                self.gicd + GICD_CTLR,
                CTLR_RWP,
                GicError::RegisterWriteTimeout,
            )
        }
    }

    fn wait_redist_rwp(&self) -> Result<(), GicError> {
        // SAFETY: GICR_CTLR of this CPU's redistributor.
        unsafe {
            wait_clear(
                self.gicr + GICR_CTLR,
                GICR_CTLR_RWP,
                GicError::RegisterWriteTimeout,
            )
        }
    }

    /// Set-/clear-register address and bit for `intid` in a bank of
    /// one-bit-per-interrupt registers (`GICR_*0` for SGIs/PPIs, `GICD_*`
    /// for SPIs).
    fn bit_reg(
        &self,
        gicr_reg: usize,
        gicd_reg: usize,
        intid: u32,
    ) -> Result<(usize, u32), GicError> {
        match intid {
            0..32 => Ok((self.gicr + gicr_reg, 1 << intid)),
            _ if intid < self.spi_end => Ok((
                self.gicd + gicd_reg + 4 * (intid as usize / 32),
                1 << (intid % 32),
            )),
            _ => Err(GicError::InvalidIntId(intid)),
        }
    }

    /// Enables SGI or PPI `intid` (0–31) on this CPU at `priority`.
    pub fn enable_ppi(&self, intid: u32, priority: u8) -> Result<(), GicError> {
        if intid >= 32 {
            return Err(GicError::InvalidIntId(intid));
        }
        // SAFETY: this CPU's redistributor; IPRIORITYR is byte-accessible.
        unsafe {
            write8(self.gicr + GICR_IPRIORITYR + intid as usize, priority);
            write32(self.gicr + GICR_ISENABLER0, 1 << intid);
        }
        Ok(())
    }

    /// Enables SPI `intid`, routed to this CPU, at `priority`.
    pub fn enable_spi(&self, intid: u32, priority: u8, level: bool) -> Result<(), GicError> {
        if !(32..self.spi_end).contains(&intid) {
            return Err(GicError::InvalidIntId(intid));
        }
        let n = intid as usize;
        let (word, bit) = (4 * (n / 32), 1u32 << (n % 32));
        let cfg_addr = self.gicd + GICD_ICFGR + 4 * (n / 16);
        let edge_bit = 1u32 << (2 * (n % 16) + 1);
        // SAFETY: distributor registers for an implemented SPI; the
        // configuration is changed only while it is disabled (IHI 0069
        // §12.9.9); callers serialize distributor configuration.
        unsafe {
            write32(self.gicd + GICD_ICENABLER + word, bit);
            self.wait_dist_rwp()?;
            let g = read32(self.gicd + GICD_IGROUPR + word);
            write32(self.gicd + GICD_IGROUPR + word, g | bit);
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
            write64(self.gicd + GICD_IROUTER + 8 * n, self.route);
            write32(self.gicd + GICD_ISENABLER + word, bit);
        }
        Ok(())
    }

    /// Disables `intid` and waits until the GIC no longer forwards it.
    pub fn disable(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICR_ICENABLER0, GICD_ICENABLER, intid)?;
        // SAFETY: an ICENABLER register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        if intid < 32 {
            self.wait_redist_rwp()
        } else {
            self.wait_dist_rwp()
        }
    }

    /// Makes `intid` pending.
    pub fn set_pending(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICR_ISPENDR0, GICD_ISPENDR, intid)?;
        // SAFETY: an ISPENDR register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Clears the pending state of `intid`.
    pub fn clear_pending(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICR_ICPENDR0, GICD_ICPENDR, intid)?;
        // SAFETY: an ICPENDR register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Raises SGI `intid` (0–15) on the CPU whose `MPIDR_EL1` is `mpidr`
    /// (`ICC_SGI1R_EL1`: its affinity, IRM = 0).
    pub fn send_sgi(&self, intid: u32, mpidr: u64) -> Result<(), GicError> {
        if intid >= 16 {
            return Err(GicError::InvalidIntId(intid));
        }
        let aff0 = mpidr & 0xff;
        let value = (u64::from(intid) << 24)
            | (((mpidr >> 32) & 0xff) << 48) // Aff3
            | (((mpidr >> 16) & 0xff) << 32) // Aff2
            | (((mpidr >> 8) & 0xff) << 16) // Aff1
            | ((aff0 >> 4) << 44) // RS: which 16 Aff0 values
            | (1 << (aff0 & 0xf)); // TargetList
        // SAFETY: raising a hypervisor SGI on one CPU only makes it pending.
        unsafe { sysreg::write_icc_sgi1r_el1(value) };
        Ok(())
    }

    /// Clears the active state of `intid` (`ICACTIVER`: write-1-to-clear, no
    /// effect on an inactive interrupt).
    pub fn clear_active(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICR_ICACTIVER0, GICD_ICACTIVER, intid)?;
        // SAFETY: an ICACTIVER register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Makes `intid` active (`ISACTIVER`, write-1-to-set).
    pub fn set_active(&self, intid: u32) -> Result<(), GicError> {
        let (addr, bit) = self.bit_reg(GICR_ISACTIVER0, GICD_ISACTIVER, intid)?;
        // SAFETY: an ISACTIVER register of this GIC (checked INTID).
        unsafe { write32(addr, bit) };
        Ok(())
    }

    /// Whether `intid` is active (`ISACTIVER` read).
    pub fn is_active(&self, intid: u32) -> Result<bool, GicError> {
        let (addr, bit) = self.bit_reg(GICR_ISACTIVER0, GICD_ISACTIVER, intid)?;
        // SAFETY: an ISACTIVER register of this GIC (checked INTID); reads
        // have no side effects.
        Ok(unsafe { read32(addr) } & bit != 0)
    }

    /// This CPU's active SGIs and PPIs (`GICR_ISACTIVER0`), bit `n` for
    /// INTID `n`.
    pub fn private_active(&self) -> u32 {
        // SAFETY: this CPU's redistributor's ISACTIVER0; reads have no side
        // effects.
        unsafe { read32(self.gicr + GICR_ISACTIVER0) }
    }

    /// Makes this CPU's SGIs and PPIs in `bits` active (`GICR_ISACTIVER0`,
    /// write-1-to-set) and those in `clear` inactive (`GICR_ICACTIVER0`);
    /// an empty set writes nothing.
    pub fn set_private_active(&self, bits: u32, clear: u32) {
        // SAFETY: this CPU's redistributor's ISACTIVER0 and ICACTIVER0,
        // which change only the active state of the bits written.
        unsafe {
            if bits != 0 {
                write32(self.gicr + GICR_ISACTIVER0, bits);
            }
            if clear != 0 {
                write32(self.gicr + GICR_ICACTIVER0, clear);
            }
        }
    }

    /// Acknowledges the highest-priority pending Group 1 interrupt.
    pub fn ack(&self) -> Option<Acked> {
        let intid = (sysreg::icc_iar1_el1() & 0xff_ffff) as u32;
        (!is_special(intid)).then_some(Acked { raw: intid, intid })
    }

    /// Drops the running priority of `irq` (`ICC_EOIR1_EL1`).
    pub fn priority_drop(&self, irq: Acked) {
        // SAFETY: `irq` came from `ack`. A misordered EOI is UNPREDICTABLE
        // only within the GIC's priority state; it cannot touch memory or
        // EL2's configuration.
        unsafe { sysreg::write_icc_eoir1_el1(u64::from(irq.raw)) };
    }

    /// Deactivates `irq` (`ICC_DIR_EL1`; split-EOI mode).
    pub fn deactivate(&self, irq: Acked) {
        // SAFETY: as for `priority_drop`: only the GIC's active state changes.
        unsafe { sysreg::write_icc_dir_el1(u64::from(irq.raw)) };
    }

    /// Number of list registers (`ICH_VTR_EL2.ListRegs + 1`).
    pub fn lr_count(&self) -> usize {
        self.lrs
    }

    #[inline(always)]
    fn check_lr(&self, n: usize) {
        assert!(n < self.lrs, "list register {n} of {} used", self.lrs);
    }

    /// Reads `ICH_LR<n>_EL2`.
    ///
    /// # Panics
    /// If `n >= self.lr_count()`.
    pub fn read_lr(&self, n: usize) -> u64 {
        self.check_lr(n);
        sysreg::ich_lr(n)
    }

    /// Writes `ICH_LR<n>_EL2`.
    ///
    /// # Panics
    /// If `n >= self.lr_count()`.
    #[inline(always)]
    pub fn write_lr(&self, n: usize, raw: u64) {
        self.check_lr(n);
        sysreg::set_ich_lr(n, raw);
    }

    /// The enables in `ICH_HCR_EL2`.
    pub fn hcr(&self) -> HcrFlags {
        HcrFlags::from_raw(sysreg::ich_hcr_el2() as u32)
    }

    /// Writes `ICH_HCR_EL2` from `flags`: no trap bits, `EOIcount` 0.
    pub fn set_hcr(&self, flags: HcrFlags) {
        // SAFETY: `HcrFlags` cannot express the trap bits, so the value
        // only enables the virtual interface and maintenance conditions.
        unsafe { sysreg::set_ich_hcr_el2(u64::from(flags.to_raw())) };
    }

    /// `ICH_HCR_EL2.EOIcount`.
    pub fn eoi_count(&self) -> u32 {
        (sysreg::ich_hcr_el2() as u32) >> super::hcr::EOICOUNT_SHIFT
    }

    /// `ICH_MISR_EL2`, decoded.
    pub fn misr(&self) -> MisrFlags {
        MisrFlags::from_raw(sysreg::ich_misr_el2() as u32)
    }

    #[inline(always)]
    fn lr_mask(&self) -> u64 {
        (1u64 << self.lrs) - 1
    }

    /// `ICH_EISR_EL2`, limited to implemented list registers.
    pub fn eisr(&self) -> u64 {
        sysreg::ich_eisr_el2() & self.lr_mask()
    }

    /// `ICH_ELRSR_EL2`, limited to implemented list registers.
    #[inline(always)]
    pub fn elrsr(&self) -> u64 {
        sysreg::ich_elrsr_el2() & self.lr_mask()
    }

    /// `ICH_VMCR_EL2`.
    pub fn vmcr(&self) -> u32 {
        sysreg::ich_vmcr_el2() as u32
    }

    /// Writes `ICH_VMCR_EL2`.
    pub fn set_vmcr(&self, raw: u32) {
        sysreg::set_ich_vmcr_el2(u64::from(raw));
    }

    /// The guest's priority mask in an `ICH_VMCR_EL2` value: `VPMR`
    /// (bits 31:24), a full 8-bit priority.
    pub const fn vmcr_priority_mask(vmcr: u32) -> u8 {
        (vmcr >> 24) as u8
    }

    /// Saves the implemented `ICH_AP0R<n>_EL2` / `ICH_AP1R<n>_EL2`.
    pub fn save_aprs(&self) -> ActivePriorities {
        let mut a = ActivePriorities::default();
        let ap0 = [
            sysreg::ich_ap0r0_el2,
            sysreg::ich_ap0r1_el2,
            sysreg::ich_ap0r2_el2,
            sysreg::ich_ap0r3_el2,
        ];
        let ap1 = [
            sysreg::ich_ap1r0_el2,
            sysreg::ich_ap1r1_el2,
            sysreg::ich_ap1r2_el2,
            sysreg::ich_ap1r3_el2,
        ];
        for n in 0..self.apr_words {
            a.ap0[n] = ap0[n]() as u32;
            a.ap1[n] = ap1[n]() as u32;
        }
        a
    }

    /// Restores the implemented active-priority registers.
    pub fn restore_aprs(&self, aprs: &ActivePriorities) {
        let ap0 = [
            sysreg::set_ich_ap0r0_el2,
            sysreg::set_ich_ap0r1_el2,
            sysreg::set_ich_ap0r2_el2,
            sysreg::set_ich_ap0r3_el2,
        ];
        let ap1 = [
            sysreg::set_ich_ap1r0_el2,
            sysreg::set_ich_ap1r1_el2,
            sysreg::set_ich_ap1r2_el2,
            sysreg::set_ich_ap1r3_el2,
        ];
        for n in 0..self.apr_words {
            ap0[n](u64::from(aprs.ap0[n]));
            ap1[n](u64::from(aprs.ap1[n]));
        }
    }
}

/// The RD_base of the redistributor whose `GICR_TYPER` affinity is `mpidr`'s.
///
/// # Safety
/// `region`..`region + size` is a GICv3 redistributor region mapped at EL2.
unsafe fn find_redistributor(region: usize, size: usize, mpidr: u64) -> Result<usize, GicError> {
    let want = typer_affinity(mpidr);
    let mut off = 0;
    while off + GICR_STRIDE <= size {
        // SAFETY: `off` lies inside the region and on a redistributor
        // boundary; GICR_TYPER allows 64-bit reads.
        let typer = unsafe { read64(region + off + GICR_TYPER) };
        if typer >> 32 == want {
            return Ok(region + off);
        }
        if typer & TYPER_LAST != 0 {
            break;
        }
        off += if typer & TYPER_VLPIS != 0 {
            GICR_STRIDE_VLPI
        } else {
            GICR_STRIDE
        };
    }
    Err(GicError::RedistributorNotFound { mpidr })
}

#[cfg(test)]
mod tests {
    use super::super::fake;
    use super::*;
    use crate::sysreg::{Reg, fake as regs};

    const GICD: usize = 0x0800_0000;
    const GICR: usize = 0x080a_0000;

    /// A 4-CPU QEMU-like GICv3: redistributors for Aff0 = 0..4, the last
    /// one flagged `Last`; DS = 1; 5 priority bits, 4 list registers.
    fn qemu_like() {
        fake::reset();
        regs::set(Reg::ID_AA64PFR0_EL1, 1 << 24);
        regs::set(Reg::ICH_VTR_EL2, (4 << 29) | (4 << 26) | 3);
        regs::set(Reg::ICC_SRE_EL2, 0);
        regs::set(Reg::ICC_CTLR_EL1, 0);
        fake::poke32(GICD + GICD_CTLR, CTLR_DS);
        fake::poke32(GICD + GICD_TYPER, 2); // 96 interrupt lines
        for cpu in 0..4u64 {
            let last = if cpu == 3 { TYPER_LAST } else { 0 };
            fake::poke64(
                GICR + cpu as usize * GICR_STRIDE + GICR_TYPER,
                cpu << 32 | last,
            );
            fake::poke32(
                GICR + cpu as usize * GICR_STRIDE + GICR_WAKER,
                WAKER_PROCESSOR_SLEEP,
            );
        }
    }

    fn init(mpidr: u64) -> Result<GicV3, GicError> {
        // SAFETY: host fake: no hardware is touched.
        unsafe { GicV3::init_v3(GICD, GICR, 4 * GICR_STRIDE, mpidr) }
    }

    #[test]
    fn init_finds_this_cpus_redistributor_and_enables_everything() {
        qemu_like();
        let gic = init(0x8000_0002).expect("QEMU-like GICv3 initializes");
        assert_eq!(gic.gicr, GICR + 2 * GICR_STRIDE);
        assert_eq!(gic.route, 2);
        assert_eq!(gic.spi_end, 96);
        assert_eq!(
            fake::peek32(gic.gicr + GICR_WAKER) & WAKER_PROCESSOR_SLEEP,
            0
        );
        assert_eq!(
            fake::peek32(GICD + GICD_CTLR),
            CTLR_DS | CTLR_ARE | CTLR_ENABLE_G1
        );
        assert_eq!(fake::peek32(gic.gicr + GICR_IGROUPR0), u32::MAX);
        assert_eq!(fake::peek32(GICD + GICD_IGROUPR + 4), u32::MAX);
        assert_eq!(fake::peek32(gic.gicr + GICR_ISENABLER0), 0xffff);
        assert_eq!(regs::get(Reg::ICC_SRE_EL2), SRE_SRE | SRE_ENABLE);
        assert_eq!(regs::get(Reg::ICC_PMR_EL1), 0xff);
        assert_eq!(regs::get(Reg::ICC_BPR1_EL1), 0);
        assert_eq!(regs::get(Reg::ICC_CTLR_EL1), ICC_CTLR_EOIMODE);
        assert_eq!(regs::get(Reg::ICC_IGRPEN1_EL1), 1);
        assert_eq!(gic.lr_count(), 4);
        assert_eq!(gic.apr_words, 1);
    }

    #[test]
    fn a_second_cpu_leaves_an_enabled_distributor_alone() {
        qemu_like();
        init(0).expect("first CPU");
        fake::take_writes();
        init(1).expect("second CPU");
        assert!(
            fake::take_writes()
                .iter()
                .all(|w| w.addr < GICD || w.addr >= GICD + 0x1_0000)
        );
    }

    #[test]
    fn private_active_state_moves_in_one_access_each() {
        qemu_like();
        let gic = init(0).expect("CPU 0");
        fake::poke32(gic.gicr + GICR_ISACTIVER0, 1 << 27 | 1 << 30);
        assert_eq!(gic.private_active(), 1 << 27 | 1 << 30);
        fake::take_writes();
        gic.set_private_active(0, 1 << 27 | 1 << 30);
        gic.set_private_active(1 << 30, 0);
        let w = |addr, value| fake::Write {
            addr,
            width: 4,
            value,
        };
        assert_eq!(
            fake::take_writes(),
            [
                w(gic.gicr + GICR_ICACTIVER0, 1 << 27 | 1 << 30),
                w(gic.gicr + GICR_ISACTIVER0, 1 << 30)
            ]
        );
    }

    #[test]
    fn affinity_is_matched_on_all_levels() {
        qemu_like();
        // Aff1 = 1 is not there, even though Aff0 = 1 is.
        assert_eq!(
            init(0x101).map(|g| g.gicr),
            Err(GicError::RedistributorNotFound { mpidr: 0x101 })
        );
        assert_eq!(typer_affinity(0x12_0034_5678), 0x1234_5678);
        assert_eq!(irouter_affinity(0x12_8034_5678), 0x12_0034_5678);
    }

    #[test]
    fn the_walk_stops_at_last_and_honours_vlpi_frames() {
        qemu_like();
        fake::poke64(GICR + GICR_TYPER, TYPER_LAST);
        assert!(matches!(
            init(1),
            Err(GicError::RedistributorNotFound { .. })
        ));
        qemu_like();
        fake::poke64(GICR + GICR_TYPER, TYPER_VLPIS);
        fake::poke64(GICR + GICR_STRIDE_VLPI + GICR_TYPER, 7 << 32);
        assert_eq!(
            init(7).expect("found after a VLPI stride").gicr,
            GICR + GICR_STRIDE_VLPI
        );
    }

    #[test]
    fn a_sleeping_redistributor_is_an_error_not_a_hang() {
        qemu_like();
        fake::poke32(GICR + GICR_WAKER, WAKER_CHILDREN_ASLEEP);
        assert_eq!(init(0).map(|_| ()), Err(GicError::RedistributorAsleep));
    }

    #[test]
    fn missing_system_registers_are_reported() {
        qemu_like();
        regs::set(Reg::ID_AA64PFR0_EL1, 0);
        assert_eq!(
            init(0).map(|_| ()),
            Err(GicError::NoSystemRegisterInterface)
        );
    }

    #[test]
    fn spis_are_routed_to_this_cpu() {
        qemu_like();
        let gic = init(3).expect("cpu 3");
        gic.enable_spi(33, 0x80, true).expect("SPI 33 exists");
        assert_eq!(fake::peek64(GICD + GICD_IROUTER + 8 * 33), 3);
        assert_eq!(fake::peek8(GICD + GICD_IPRIORITYR + 33), 0x80);
        assert_eq!(fake::peek32(GICD + GICD_ISENABLER + 4), 1 << 1);
        assert_eq!(fake::peek32(GICD + GICD_ICFGR + 8) & (1 << 3), 0, "level");
        gic.enable_spi(34, 0x80, false).expect("SPI 34 exists");
        assert_ne!(fake::peek32(GICD + GICD_ICFGR + 8) & (1 << 5), 0, "edge");
        assert_eq!(gic.enable_spi(96, 0, true), Err(GicError::InvalidIntId(96)));
        assert_eq!(gic.enable_spi(31, 0, true), Err(GicError::InvalidIntId(31)));
        assert_eq!(gic.enable_ppi(32, 0), Err(GicError::InvalidIntId(32)));
        gic.enable_ppi(27, 0x20).expect("PPI 11");
        assert_eq!(fake::peek8(gic.gicr + GICR_IPRIORITYR + 27), 0x20);
        gic.disable(27).expect("PPI 11");
        assert_eq!(fake::peek32(gic.gicr + GICR_ICENABLER0), 1 << 27);
    }

    #[test]
    fn ack_maps_special_intids_to_none() {
        qemu_like();
        let gic = init(0).expect("cpu 0");
        for special in 1020..=1023 {
            regs::set(Reg::ICC_IAR1_EL1, special);
            assert_eq!(gic.ack(), None);
        }
        regs::set(Reg::ICC_IAR1_EL1, 27);
        let irq = gic.ack().expect("INTID 27");
        assert_eq!(irq.intid(), 27);
        sysreg::fake_write_only::take();
        gic.priority_drop(irq);
        gic.deactivate(irq);
        assert_eq!(
            sysreg::fake_write_only::take(),
            [
                (sysreg::WriteOnlyReg::IccEoir1El1, 27),
                (sysreg::WriteOnlyReg::IccDirEl1, 27)
            ]
        );
    }

    #[test]
    fn virtual_interface_accessors() {
        qemu_like();
        regs::set(Reg::ICH_VTR_EL2, (6 << 29) | (6 << 26) | 15);
        let gic = init(0).expect("cpu 0");
        assert_eq!(gic.lr_count(), 16);
        assert_eq!(gic.apr_words, 4);
        gic.write_lr(15, 0xa0a0_0000_0000_001b);
        assert_eq!(regs::get(Reg::ICH_LR15_EL2), 0xa0a0_0000_0000_001b);
        assert_eq!(gic.read_lr(15), 0xa0a0_0000_0000_001b);
        let flags = HcrFlags {
            enable: true,
            underflow: true,
            ..HcrFlags::default()
        };
        gic.set_hcr(flags);
        assert_eq!(regs::get(Reg::ICH_HCR_EL2), 0b11);
        assert_eq!(gic.hcr(), flags);
        regs::set(Reg::ICH_HCR_EL2, (3 << 27) | 1);
        assert_eq!(gic.eoi_count(), 3);
        regs::set(Reg::ICH_ELRSR_EL2, 0xffff_ffff);
        assert_eq!(gic.elrsr(), 0xffff);
        let aprs = ActivePriorities {
            ap0: [1, 2, 3, 4],
            ap1: [5, 6, 7, 8],
        };
        gic.restore_aprs(&aprs);
        assert_eq!(regs::get(Reg::ICH_AP1R3_EL2), 8);
        assert_eq!(gic.save_aprs(), aprs);
    }

    #[test]
    fn only_implemented_active_priority_registers_are_touched() {
        qemu_like();
        let gic = init(0).expect("cpu 0");
        regs::set(Reg::ICH_AP0R1_EL2, 0);
        gic.restore_aprs(&ActivePriorities {
            ap0: [1, 2, 3, 4],
            ap1: [5, 6, 7, 8],
        });
        assert_eq!(regs::get(Reg::ICH_AP0R1_EL2), 0);
        assert_eq!(
            gic.save_aprs(),
            ActivePriorities {
                ap0: [1, 0, 0, 0],
                ap1: [5, 0, 0, 0]
            }
        );
    }

    #[test]
    #[should_panic(expected = "list register 4 of 4")]
    fn list_register_beyond_vtr_is_a_broken_invariant() {
        qemu_like();
        init(0).expect("cpu 0").read_lr(4);
    }
}
