//! Physical GIC drivers for EL2 and the GIC virtualization interface.
//!
//! One binary drives either a GICv2 (memory-mapped CPU interface `GICC`,
//! hypervisor control `GICH`) or a GICv3 (system-register CPU interface
//! `ICC_*`, hypervisor control `ICH_*_EL2`); which one is decided at boot
//! from the host device tree, and [`PhysGic`] hides the difference from the
//! hypervisor.
//!
//! # What the hypervisor does with it
//! - Its own physical interrupts (UART, EL2 timer, SGIs between CPUs) run in
//!   split-EOI mode (`EOImode = 1`): [`PhysGic::ack`] activates,
//!   [`PhysGic::priority_drop`] lowers the running priority at once, and
//!   [`PhysGic::deactivate`] ends the interrupt later. A physical interrupt
//!   forwarded to a guest through a hardware-linked list register is only
//!   priority-dropped: the guest's virtual EOI deactivates it.
//! - Virtual interrupts reach the running vCPU through the list registers
//!   ([`PhysGic::write_lr`]); the guest acknowledges and EOIs them through
//!   the virtual CPU interface without trapping.
//!
//! # Maintenance interrupt
//! The virtual interface signals list-register underflow, EOIs with the
//! EOI bit, "no pending" and group-enable changes (see [`HcrFlags`]) through
//! the **maintenance interrupt: PPI 9, INTID [`MAINTENANCE_INTID`] (25)**, in
//! both GIC versions. The drivers do not enable it: the hypervisor must call
//! [`PhysGic::enable_ppi`]`(MAINTENANCE_INTID, …)` on every CPU before it
//! sets any [`HcrFlags`] condition, and read [`PhysGic::misr`] when it fires.
//!
//! # GICv2 virtual CPU interface
//! On GICv2 the guest's CPU interface is the `GICV` frame (QEMU `virt`:
//! `0x0804_0000`), which the hypervisor maps into the guest's stage 2 at the
//! guest's `GICC` address (`0x0801_0000`); this module only drives `GICH`.
//!
//! # Concurrency
//! Each CPU owns its own driver value (redistributor, banked registers and
//! the CPU interface are per CPU). The distributor is shared: configuring
//! SPIs ([`PhysGic::enable_spi`], [`PhysGic::disable`] for SPIs) does
//! read-modify-write of shared registers, so callers serialize it (a lock,
//! or one CPU doing it).

mod mmio;
pub mod v2;
pub mod v3;

#[cfg(not(target_arch = "aarch64"))]
pub use mmio::fake;
pub use v2::GicV2;
pub use v3::GicV3;

/// INTID of the GIC maintenance interrupt (PPI 9), both GIC versions.
pub const MAINTENANCE_INTID: u32 = 25;

/// Lowest priority value written to the priority mask: every priority
/// the GIC implements is unmasked.
pub const PRIORITY_MASK_ALL: u8 = 0xff;

/// How many times a driver polls a "register write pending" or "wake"
/// status bit before giving up with an error (QEMU completes at once;
/// hardware takes at most microseconds).
const POLL_LIMIT: u32 = 1_000_000;

/// Why a GIC could not be brought up or configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicError {
    /// The CPU has no GICv3 system-register interface (`ID_AA64PFR0_EL1.GIC == 0`).
    NoSystemRegisterInterface,
    /// `ICC_SRE_EL2.SRE` stayed 0 after being set: firmware at EL3 does not let EL2 use the system-register interface.
    SystemRegisterInterfaceDisabled,
    /// No redistributor in the given region has this CPU's affinity.
    RedistributorNotFound {
        /// `MPIDR_EL1` of the CPU that looked.
        mpidr: u64,
    },
    /// The redistributor did not wake up (`GICR_WAKER.ChildrenAsleep` stayed 1).
    RedistributorAsleep,
    /// The distributor or redistributor did not complete a register write (`RWP` stayed 1).
    RegisterWriteTimeout,
    /// The INTID is not of the kind the call configures, or beyond what this GIC implements.
    InvalidIntId(u32),
}

impl core::fmt::Display for GicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoSystemRegisterInterface => {
                f.write_str("CPU has no GICv3 system-register interface")
            }
            Self::SystemRegisterInterfaceDisabled => {
                f.write_str("firmware keeps ICC_SRE_EL2.SRE at 0")
            }
            Self::RedistributorNotFound { mpidr } => {
                write!(f, "no GICv3 redistributor for MPIDR {mpidr:#x}")
            }
            Self::RedistributorAsleep => f.write_str("GICv3 redistributor did not wake up"),
            Self::RegisterWriteTimeout => f.write_str("GIC register write did not complete"),
            Self::InvalidIntId(id) => write!(f, "INTID {id} cannot be configured this way"),
        }
    }
}

/// An interrupt acknowledged by [`PhysGic::ack`]: active on this CPU until
/// deactivated. Hand it back to [`PhysGic::priority_drop`] and
/// [`PhysGic::deactivate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    /// The value the acknowledge register returned (on GICv2 it carries the
    /// source CPU of an SGI in bits 12:10, which EOI/DIR must echo).
    raw: u32,
    intid: u32,
}

impl Acked {
    /// The interrupt's INTID.
    pub const fn intid(self) -> u32 {
        self.intid
    }

    /// The raw acknowledge value (INTID plus, on GICv2 SGIs, the source CPU).
    pub const fn raw(self) -> u32 {
        self.raw
    }
}

/// INTIDs 1020–1023 are special (spurious, or "no interrupt for this group").
const fn is_special(intid: u32) -> bool {
    intid >= 1020 && intid <= 1023
}

/// Enables of the virtual CPU interface and its maintenance-interrupt
/// conditions (`ICH_HCR_EL2` / `GICH_HCR` bits 7:0).
///
/// GICv2 and GICv3 lay these bits out identically (checked by a unit test
/// and the `const` asserts below); the GICv3-only trap bits (`TC`, `TALL0`,
/// `TALL1`, `TDIR`, …) are deliberately not expressible here, so setting
/// these flags cannot change what the guest traps on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcrFlags {
    /// `En`: the virtual CPU interface is enabled.
    pub enable: bool,
    /// `UIE`: maintenance interrupt when at most one list register holds a
    /// valid interrupt (underflow: time to refill).
    pub underflow: bool,
    /// `LRENPIE`: maintenance interrupt while `EOIcount != 0` (the guest
    /// EOIed an interrupt not in any list register).
    pub lr_entry_not_present: bool,
    /// `NPIE`: maintenance interrupt when no list register is pending.
    pub no_pending: bool,
    /// `VGrp0EIE`: maintenance interrupt while the guest has Group 0 enabled.
    pub vgrp0_enabled: bool,
    /// `VGrp0DIE`: maintenance interrupt while the guest has Group 0 disabled.
    pub vgrp0_disabled: bool,
    /// `VGrp1EIE`: maintenance interrupt while the guest has Group 1 enabled.
    pub vgrp1_enabled: bool,
    /// `VGrp1DIE`: maintenance interrupt while the guest has Group 1 disabled.
    pub vgrp1_disabled: bool,
}

/// Bit positions shared by `ICH_HCR_EL2` and `GICH_HCR`.
pub mod hcr {
    /// `En`.
    pub const EN: u32 = 1 << 0;
    /// `UIE`.
    pub const UIE: u32 = 1 << 1;
    /// `LRENPIE`.
    pub const LRENPIE: u32 = 1 << 2;
    /// `NPIE`.
    pub const NPIE: u32 = 1 << 3;
    /// `VGrp0EIE`.
    pub const VGRP0EIE: u32 = 1 << 4;
    /// `VGrp0DIE`.
    pub const VGRP0DIE: u32 = 1 << 5;
    /// `VGrp1EIE`.
    pub const VGRP1EIE: u32 = 1 << 6;
    /// `VGrp1DIE`.
    pub const VGRP1DIE: u32 = 1 << 7;
    /// `EOIcount` (bits 31:27): EOIs the guest did for interrupts not in a
    /// list register.
    pub const EOICOUNT_SHIFT: u32 = 27;
}

impl HcrFlags {
    /// The register value (same for `ICH_HCR_EL2` and `GICH_HCR`), with
    /// `EOIcount` and every trap bit zero.
    pub const fn to_raw(self) -> u32 {
        const fn bit(on: bool, mask: u32) -> u32 {
            if on { mask } else { 0 }
        }
        bit(self.enable, hcr::EN)
            | bit(self.underflow, hcr::UIE)
            | bit(self.lr_entry_not_present, hcr::LRENPIE)
            | bit(self.no_pending, hcr::NPIE)
            | bit(self.vgrp0_enabled, hcr::VGRP0EIE)
            | bit(self.vgrp0_disabled, hcr::VGRP0DIE)
            | bit(self.vgrp1_enabled, hcr::VGRP1EIE)
            | bit(self.vgrp1_disabled, hcr::VGRP1DIE)
    }

    /// The flags in a register value (other bits ignored).
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            enable: raw & hcr::EN != 0,
            underflow: raw & hcr::UIE != 0,
            lr_entry_not_present: raw & hcr::LRENPIE != 0,
            no_pending: raw & hcr::NPIE != 0,
            vgrp0_enabled: raw & hcr::VGRP0EIE != 0,
            vgrp0_disabled: raw & hcr::VGRP0DIE != 0,
            vgrp1_enabled: raw & hcr::VGRP1EIE != 0,
            vgrp1_disabled: raw & hcr::VGRP1DIE != 0,
        }
    }
}

/// Why the maintenance interrupt fired (`ICH_MISR_EL2` / `GICH_MISR`, same
/// layout in both versions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MisrFlags {
    /// `EOI`: a list register with the EOI-maintenance bit was EOIed (see
    /// [`PhysGic::eisr`] for which).
    pub eoi: bool,
    /// `U`: underflow (requested by [`HcrFlags::underflow`]).
    pub underflow: bool,
    /// `LRENP`: EOI for an interrupt not in a list register.
    pub lr_entry_not_present: bool,
    /// `NP`: no list register is pending.
    pub no_pending: bool,
    /// `VGrp0E`: Group 0 enabled.
    pub vgrp0_enabled: bool,
    /// `VGrp0D`: Group 0 disabled.
    pub vgrp0_disabled: bool,
    /// `VGrp1E`: Group 1 enabled.
    pub vgrp1_enabled: bool,
    /// `VGrp1D`: Group 1 disabled.
    pub vgrp1_disabled: bool,
}

impl MisrFlags {
    /// Decodes a `ICH_MISR_EL2` / `GICH_MISR` value.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            eoi: raw & (1 << 0) != 0,
            underflow: raw & (1 << 1) != 0,
            lr_entry_not_present: raw & (1 << 2) != 0,
            no_pending: raw & (1 << 3) != 0,
            vgrp0_enabled: raw & (1 << 4) != 0,
            vgrp0_disabled: raw & (1 << 5) != 0,
            vgrp1_enabled: raw & (1 << 6) != 0,
            vgrp1_disabled: raw & (1 << 7) != 0,
        }
    }
}

/// Active-priority state of the virtual CPU interface, saved and restored
/// with a vCPU.
///
/// GICv3: `ICH_AP0R<n>_EL2` in `ap0[n]`, `ICH_AP1R<n>_EL2` in `ap1[n]`, for
/// the `n` the CPU implements (1, 2 or 4 per `ICH_VTR_EL2.PREbits`; the
/// rest stay 0). GICv2: the single `GICH_APR` in `ap0[0]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActivePriorities {
    /// Group 0 words (GICv2: `GICH_APR` in word 0).
    pub ap0: [u32; 4],
    /// Group 1 words (GICv2: unused).
    pub ap1: [u32; 4],
}

/// How to name one physical CPU as an SGI target (each CPU records its own
/// at bring-up, for the others to use).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SgiTarget {
    /// Its `MPIDR_EL1` (GICv3).
    pub mpidr: u64,
    /// Its CPU-interface bit (GICv2).
    pub v2_mask: u8,
}

/// The physical GIC of this machine, for this CPU.
#[derive(Debug)]
pub enum PhysGic {
    /// GICv2 with virtualization extensions.
    V2(GicV2),
    /// GICv3 (system-register interface).
    V3(GicV3),
}

macro_rules! dispatch {
    ($self:ident, $g:ident => $e:expr) => {
        match $self {
            PhysGic::V2($g) => $e,
            PhysGic::V3($g) => $e,
        }
    };
}

impl PhysGic {
    /// Enables SGI or PPI `intid` (0–31) on this CPU at `priority`.
    pub fn enable_ppi(&self, intid: u32, priority: u8) -> Result<(), GicError> {
        dispatch!(self, g => g.enable_ppi(intid, priority))
    }

    /// Enables SPI `intid`, routed to this CPU, at `priority`;
    /// level-sensitive if `level`, else edge-triggered.
    pub fn enable_spi(&self, intid: u32, priority: u8, level: bool) -> Result<(), GicError> {
        dispatch!(self, g => g.enable_spi(intid, priority, level))
    }

    /// Disables `intid` (SGI/PPI on this CPU, or SPI).
    pub fn disable(&self, intid: u32) -> Result<(), GicError> {
        dispatch!(self, g => g.disable(intid))
    }

    /// Makes `intid` pending (SGI/PPI on this CPU, or SPI).
    pub fn set_pending(&self, intid: u32) -> Result<(), GicError> {
        dispatch!(self, g => g.set_pending(intid))
    }

    /// Clears the pending state of `intid`.
    pub fn clear_pending(&self, intid: u32) -> Result<(), GicError> {
        dispatch!(self, g => g.clear_pending(intid))
    }

    /// Acknowledges the highest-priority pending interrupt, if any.
    pub fn ack(&self) -> Option<Acked> {
        dispatch!(self, g => g.ack())
    }

    /// Drops the running priority of an acknowledged interrupt (EOI).
    pub fn priority_drop(&self, irq: Acked) {
        dispatch!(self, g => g.priority_drop(irq))
    }

    /// Raises SGI `intid` on another physical CPU, named by its `MPIDR_EL1`
    /// (GICv3) or its CPU-interface mask (GICv2): [`SgiTarget`].
    pub fn send_sgi(&self, intid: u32, target: SgiTarget) -> Result<(), GicError> {
        match self {
            PhysGic::V2(g) => g.send_sgi(intid, target.v2_mask),
            PhysGic::V3(g) => g.send_sgi(intid, target.mpidr),
        }
    }

    /// How other CPUs name this one as an SGI target.
    pub fn sgi_target(&self, mpidr: u64) -> SgiTarget {
        SgiTarget {
            mpidr,
            v2_mask: match self {
                PhysGic::V2(g) => g.cpu_mask(),
                PhysGic::V3(_) => 0,
            },
        }
    }

    /// Clears the active state of `intid` without an acknowledge in hand —
    /// for a hardware-linked interrupt a guest left active when its VM is
    /// reset. No effect on an inactive interrupt.
    pub fn clear_active(&self, intid: u32) -> Result<(), GicError> {
        dispatch!(self, g => g.clear_active(intid))
    }

    /// Makes `intid` active (restoring a switched-in vCPU's hardware-linked
    /// interrupt in flight).
    pub fn set_active(&self, intid: u32) -> Result<(), GicError> {
        dispatch!(self, g => g.set_active(intid))
    }

    /// Whether `intid` is active.
    pub fn is_active(&self, intid: u32) -> Result<bool, GicError> {
        dispatch!(self, g => g.is_active(intid))
    }

    /// This CPU's active SGIs and PPIs, bit `n` for INTID `n` (one
    /// register read).
    pub fn private_active(&self) -> u32 {
        dispatch!(self, g => g.private_active())
    }

    /// Makes this CPU's SGIs and PPIs in `bits` active and those in `clear`
    /// inactive (at most one register write each).
    pub fn set_private_active(&self, bits: u32, clear: u32) {
        dispatch!(self, g => g.set_private_active(bits, clear))
    }

    /// Deactivates an acknowledged, priority-dropped interrupt.
    pub fn deactivate(&self, irq: Acked) {
        dispatch!(self, g => g.deactivate(irq))
    }

    /// Number of list registers.
    pub fn lr_count(&self) -> usize {
        dispatch!(self, g => g.lr_count())
    }

    /// Reads list register `n` (GICv2: the 32-bit `GICH_LR<n>` in the low bits).
    ///
    /// # Panics
    /// If `n >= self.lr_count()` (a broken hypervisor invariant).
    pub fn read_lr(&self, n: usize) -> u64 {
        dispatch!(self, g => g.read_lr(n))
    }

    /// Writes list register `n` with a raw value in this GIC's format.
    ///
    /// # Panics
    /// If `n >= self.lr_count()`, or on GICv2 if `raw` does not fit 32 bits.
    #[inline]
    pub fn write_lr(&self, n: usize, raw: u64) {
        dispatch!(self, g => g.write_lr(n, raw))
    }

    /// The virtual interface's enables (see [`HcrFlags`]).
    pub fn hcr(&self) -> HcrFlags {
        dispatch!(self, g => g.hcr())
    }

    /// Sets the virtual interface's enables; clears `EOIcount`.
    pub fn set_hcr(&self, flags: HcrFlags) {
        dispatch!(self, g => g.set_hcr(flags))
    }

    /// `EOIcount`: EOIs the guest did for interrupts in no list register.
    pub fn eoi_count(&self) -> u32 {
        dispatch!(self, g => g.eoi_count())
    }

    /// Why the maintenance interrupt fired.
    pub fn misr(&self) -> MisrFlags {
        dispatch!(self, g => g.misr())
    }

    /// Bit n set: list register n was EOIed and asked for maintenance.
    pub fn eisr(&self) -> u64 {
        dispatch!(self, g => g.eisr())
    }

    /// Bit n set: list register n is empty (free for a new interrupt).
    #[inline]
    pub fn elrsr(&self) -> u64 {
        dispatch!(self, g => g.elrsr())
    }

    /// The guest's virtual CPU interface control, raw (`ICH_VMCR_EL2` or
    /// `GICH_VMCR`; the layouts differ), for save/restore.
    pub fn vmcr(&self) -> u32 {
        dispatch!(self, g => g.vmcr())
    }

    /// Restores a value read by [`Self::vmcr`] on the same GIC.
    pub fn set_vmcr(&self, raw: u32) {
        dispatch!(self, g => g.set_vmcr(raw))
    }

    /// The guest's priority mask (`ICC_PMR_EL1` / `GICC_PMR` as the guest
    /// wrote it, an 8-bit priority) in a value read by [`Self::vmcr`] on
    /// this GIC: interrupts of this priority value or higher are masked.
    pub fn vmcr_priority_mask(&self, vmcr: u32) -> u8 {
        match self {
            PhysGic::V2(_) => GicV2::vmcr_priority_mask(vmcr),
            PhysGic::V3(_) => GicV3::vmcr_priority_mask(vmcr),
        }
    }

    /// Saves the virtual interface's active priorities.
    pub fn save_aprs(&self) -> ActivePriorities {
        dispatch!(self, g => g.save_aprs())
    }

    /// Restores active priorities saved by [`Self::save_aprs`].
    pub fn restore_aprs(&self, aprs: &ActivePriorities) {
        dispatch!(self, g => g.restore_aprs(aprs))
    }
}

const _: () = {
    // Every flag owns a distinct bit, and MISR decodes the same positions.
    let all = HcrFlags {
        enable: true,
        underflow: true,
        lr_entry_not_present: true,
        no_pending: true,
        vgrp0_enabled: true,
        vgrp0_disabled: true,
        vgrp1_enabled: true,
        vgrp1_disabled: true,
    };
    assert!(all.to_raw() == 0xff);
    assert!(MisrFlags::from_raw(0x2).underflow);
    assert!(is_special(1023) && !is_special(1019) && !is_special(1024));
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysreg::{Reg, fake as regs};

    fn v2() -> PhysGic {
        fake::reset();
        fake::poke32(0x0800_0004, 1);
        fake::poke32(0x0803_0004, 3);
        // SAFETY: host fake: no hardware is touched.
        PhysGic::V2(unsafe { GicV2::init_v2(0x0800_0000, 0x0801_0000, 0x0803_0000) }.expect("v2"))
    }

    fn v3() -> PhysGic {
        fake::reset();
        regs::set(Reg::ID_AA64PFR0_EL1, 1 << 24);
        regs::set(Reg::ICH_VTR_EL2, 3);
        fake::poke64(0x080a_0008, 1 << 4);
        // SAFETY: host fake: no hardware is touched.
        PhysGic::V3(unsafe { GicV3::init_v3(0x0800_0000, 0x080a_0000, 0x2_0000, 0) }.expect("v3"))
    }

    #[test]
    fn hcr_flags_encode_identically_for_v2_and_v3() {
        let cases = [
            HcrFlags {
                enable: true,
                ..HcrFlags::default()
            },
            HcrFlags {
                enable: true,
                underflow: true,
                no_pending: true,
                ..HcrFlags::default()
            },
            HcrFlags {
                lr_entry_not_present: true,
                vgrp1_disabled: true,
                ..HcrFlags::default()
            },
            HcrFlags {
                vgrp0_enabled: true,
                vgrp0_disabled: true,
                vgrp1_enabled: true,
                ..HcrFlags::default()
            },
        ];
        for flags in cases {
            let g2 = v2();
            g2.set_hcr(flags);
            let raw2 = fake::peek32(0x0803_0000);
            let g3 = v3();
            g3.set_hcr(flags);
            let raw3 = regs::get(Reg::ICH_HCR_EL2);
            assert_eq!(u64::from(raw2), raw3, "{flags:?}");
            assert_eq!(HcrFlags::from_raw(raw2), flags);
            assert_eq!(g3.hcr(), flags);
        }
        assert_eq!(
            HcrFlags {
                enable: true,
                underflow: true,
                ..HcrFlags::default()
            }
            .to_raw(),
            0b11
        );
        assert_eq!(
            HcrFlags {
                vgrp1_disabled: true,
                ..HcrFlags::default()
            }
            .to_raw(),
            0x80
        );
    }

    #[test]
    fn vmcr_priority_mask_follows_each_versions_layout() {
        // GICv3 VPMR (31:24) = 0xa8, with VENG1 (bit 1) and VBPR1 set.
        let v3_vmcr = (0xa8 << 24) | (3 << 18) | 0b10;
        assert_eq!(v3().vmcr_priority_mask(v3_vmcr), 0xa8);
        assert_eq!(GicV3::vmcr_priority_mask(0xffff_ffff), 0xff);
        // GICv2 VMPriMask (31:27) = 0b10101: priority 0xa8; the low three
        // priority bits are not implemented and read as zero.
        let v2_vmcr = (0b10101 << 27) | (2 << 21) | 0b1;
        assert_eq!(v2().vmcr_priority_mask(v2_vmcr), 0xa8);
        assert_eq!(GicV2::vmcr_priority_mask(0xffff_ffff), 0xf8);
        // The same raw value means different masks on the two GICs.
        assert_eq!(GicV3::vmcr_priority_mask(0x0800_0000), 0x08);
        assert_eq!(GicV2::vmcr_priority_mask(0x0800_0000), 0x08);
        assert_eq!(GicV3::vmcr_priority_mask(0x1000_0000), 0x10);
        assert_eq!(GicV2::vmcr_priority_mask(0x1000_0000), 0x10);
        assert_eq!(GicV3::vmcr_priority_mask(0x0400_0000), 0x04);
        assert_eq!(GicV2::vmcr_priority_mask(0x0400_0000), 0x00);
        assert_eq!(GicV2::vmcr_priority_mask(0x07ff_ffff), 0x00);
    }

    #[test]
    fn dispatch_reaches_the_right_list_registers() {
        let g2 = v2();
        assert_eq!(g2.lr_count(), 4);
        g2.write_lr(1, 0x1234);
        assert_eq!(fake::peek32(0x0803_0104), 0x1234);
        let g3 = v3();
        assert_eq!(g3.lr_count(), 4);
        g3.write_lr(1, 0x5678);
        assert_eq!(regs::get(Reg::ICH_LR1_EL2), 0x5678);
        assert_eq!(g3.read_lr(1), 0x5678);
    }

    #[test]
    fn misr_decodes_each_bit() {
        let all = MisrFlags::from_raw(0xff);
        assert!(all.eoi && all.underflow && all.lr_entry_not_present && all.no_pending);
        assert!(all.vgrp0_enabled && all.vgrp0_disabled && all.vgrp1_enabled && all.vgrp1_disabled);
        assert_eq!(MisrFlags::from_raw(1 << 8), MisrFlags::default());
        assert!(MisrFlags::from_raw(1).eoi);
    }
}
