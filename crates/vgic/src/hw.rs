//! The physical list registers of one CPU, kept as a cache of the model
//! (ADR 0009), over any virtual CPU interface ([`VirtualInterface`]: the
//! real GICv2/GICv3 one in the EL2 glue, a fake in tests).
//!
//! - [`HwLrs::fold`], after an exit: folds back into [`Vgic`] only the LRs
//!   the hardware can have changed since EL2 wrote them — the ones `ELRSR`
//!   reports empty without reading them, the others only if they read
//!   differently from what was written (a shadow copy) — and invalidates
//!   the ones the model takes back.
//! - [`HwLrs::refill`], before an entry: writes the LRs
//!   [`Vgic::refill_with`] says changed, invalidates stale ones, releases
//!   physical interrupts the guest let go of, and turns the underflow
//!   maintenance request on exactly when more is pending than fits.
//! - [`HwLrs::park`]: the vCPU leaves the CPU or waits: every LR goes back
//!   to the model and is invalidated, and physical interrupts it let go of
//!   are deactivated while its state is still this CPU's.
//!
//! The encoding follows the CPU's GIC ([`LrFormat`]); on QEMU's GICv2
//! hardware interrupts are forwarded with an EOI maintenance request
//! instead of the HW link ([`LrFormat::V2EoiForwarding`]), and the fold
//! deactivates the physical interrupt itself.

use crate::{GicVersion, ListRegister, LrFold, LrState, Vgic};

/// Most list registers an implementation has.
pub const MAX_LRS: usize = 16;

/// The hardware operations the list-register cache needs from one CPU's
/// virtual interface.
pub trait VirtualInterface {
    /// `ELRSR`: bit `n` set when LR `n` holds no interrupt.
    fn elrsr(&self) -> u64;
    /// Reads LR `n` (raw, in the format of the CPU's GIC).
    fn read_lr(&self, n: usize) -> u64;
    /// Writes LR `n`.
    fn write_lr(&mut self, n: usize, raw: u64);
    /// Turns the underflow maintenance request on or off (the virtual
    /// interface stays enabled).
    fn set_underflow(&mut self, on: bool);
    /// Deactivates physical interrupt `intid` (no effect when inactive).
    fn deactivate_physical(&mut self, intid: u32);
}

/// Deactivates the physical interrupts the model let go of that this CPU,
/// running vCPU `v`, may deactivate: `v`'s own PPIs and the SPIs
/// ([`Vgic::take_hw_release_of`]).
fn release_physical(hw: &mut impl VirtualInterface, vgic: &mut Vgic, v: usize) {
    while let Some(rel) = vgic.take_hw_release_of(v) {
        hw.deactivate_physical(rel.pintid);
    }
}

/// How list registers are encoded on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrFormat {
    /// GICv3 `ICH_LR<n>_EL2`.
    V3,
    /// GICv2 `GICH_LR<n>`.
    V2,
    /// GICv2, hardware interrupts forwarded with an EOI maintenance
    /// request instead of the HW link (QEMU's GICv2 does not re-signal a
    /// physical interrupt that became pending again while linked).
    V2EoiForwarding,
}

impl LrFormat {
    /// The format for `version`, `eoi_forwarding` on GICv2 only.
    pub fn new(version: GicVersion, eoi_forwarding: bool) -> Self {
        match version {
            GicVersion::V3 => Self::V3,
            GicVersion::V2 if eoi_forwarding => Self::V2EoiForwarding,
            GicVersion::V2 => Self::V2,
        }
    }

    /// `lr` encoded.
    #[inline]
    pub fn encode(self, lr: ListRegister) -> u64 {
        match self {
            Self::V3 => lr.to_v3(),
            Self::V2 => u64::from(lr.to_v2()),
            Self::V2EoiForwarding => u64::from(lr.with_eoi_instead_of_hw().to_v2()),
        }
    }

    /// The state field of a raw LR.
    pub fn state_of(self, raw: u64) -> LrState {
        match self {
            Self::V3 => ListRegister::from_v3(raw).state,
            Self::V2 | Self::V2EoiForwarding => ListRegister::from_v2(raw as u32).state,
        }
    }
}

/// One CPU's list registers as EL2 last wrote them.
#[derive(Clone, Debug)]
pub struct HwLrs {
    format: LrFormat,
    count: usize,
    /// What EL2 last wrote to each LR (raw): an LR that still reads the
    /// same was not touched by the guest.
    shadow: [u64; MAX_LRS],
    /// The LRs written valid and not seen freed (bit `n`: LR `n`).
    in_use: u64,
    /// Whether the underflow maintenance request is on.
    underflow: bool,
}

impl HwLrs {
    /// The cache of a CPU with `count` LRs (at most [`MAX_LRS`] are used),
    /// all invalid, with the underflow request off.
    pub fn new(format: LrFormat, count: usize) -> Self {
        Self {
            format,
            count: count.min(MAX_LRS),
            shadow: [0; MAX_LRS],
            in_use: 0,
            underflow: false,
        }
    }

    /// How this CPU's LRs are encoded.
    pub fn format(&self) -> LrFormat {
        self.format
    }

    /// How many LRs are used.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The LRs in use (bit `n`: LR `n`).
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    fn write(&mut self, hw: &mut impl VirtualInterface, n: usize, raw: u64) {
        hw.write_lr(n, raw);
        self.shadow[n] = raw;
    }

    /// Turns the underflow request on or off, touching the hardware only
    /// when it changes.
    pub fn set_underflow(&mut self, hw: &mut impl VirtualInterface, on: bool) {
        if self.underflow != on {
            self.underflow = on;
            hw.set_underflow(on);
        }
    }

    /// After an exit of vCPU `v`: folds the LRs the hardware can have
    /// changed into `vgic` ([`Vgic::fold_lr`]). An LR the model takes back
    /// is invalidated unless it is empty already.
    pub fn fold(&mut self, hw: &mut impl VirtualInterface, vgic: &mut Vgic, v: usize) {
        let in_use = self.in_use;
        if in_use == 0 {
            return;
        }
        let empty = hw.elrsr() & in_use;
        if empty == in_use && in_use.is_power_of_two() {
            // One LR in use, and the hardware emptied it (the guest
            // completed its interrupt): the common fold, without the loop.
            let n = in_use.trailing_zeros() as usize;
            self.fold_one(hw, vgic, v, n, true);
            return;
        }
        let mut mask = in_use;
        while mask != 0 {
            let n = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.fold_one(hw, vgic, v, n, empty & (1u64 << n) != 0);
        }
    }

    /// [`HwLrs::fold`]'s step for LR `n`, which the hardware reports
    /// empty (`empty`) or which holds what was written (`false`: then it
    /// reads it). Takes `n` off the LRs in use when the model frees it.
    #[inline(always)]
    fn fold_one(
        &mut self,
        hw: &mut impl VirtualInterface,
        vgic: &mut Vgic,
        v: usize,
        n: usize,
        empty: bool,
    ) {
        let (state, raw) = if empty {
            (LrState::Invalid, 0)
        } else {
            let raw = hw.read_lr(n);
            if raw == self.shadow[n] {
                return;
            }
            (self.format.state_of(raw), raw)
        };
        let bit = 1u64 << n;
        match vgic.fold_lr(v, n, state) {
            LrFold::Kept => self.shadow[n] = raw,
            LrFold::Freed { completed } => {
                self.in_use &= !bit;
                // The guest's deactivation should have reached the
                // physical interrupt through the HW bit; on GICv2 make
                // sure it did (QEMU's has been seen to leave the timer
                // PPI active; with EOI forwarding this is the
                // deactivation). No effect when it already is inactive.
                if let Some(pintid) = completed
                    && self.format != LrFormat::V3
                {
                    hw.deactivate_physical(pintid);
                }
                // Still valid (the guest cancelled it through the
                // distributor), or invalid with an EOI maintenance
                // request pending: clear it.
                if !empty {
                    self.write(hw, n, 0);
                }
            }
            LrFold::Unused => {
                self.in_use &= !bit;
                self.write(hw, n, 0);
            }
        }
    }

    /// Whether vCPU `v` needs [`HwLrs::refill`]: the model has something
    /// new for it, or its LRs are not the ones the model records.
    pub fn refill_needed(&self, vgic: &Vgic, v: usize) -> bool {
        !vgic.refill_is_empty(v) || self.in_use != vgic.lr_slots(v)
    }

    /// Before vCPU `v` runs: writes the LRs the model says changed,
    /// invalidates any LR the model does not record, releases physical
    /// interrupts the guest let go of (after a full refill) and sets the
    /// underflow request.
    pub fn refill(&mut self, hw: &mut impl VirtualInterface, vgic: &mut Vgic, v: usize) {
        let format = self.format;
        let r = vgic.refill_with(v, self.count, |n, lr| {
            let raw = format.encode(lr);
            hw.write_lr(n, raw);
            self.shadow[n] = raw;
        });
        if r.full {
            release_physical(hw, vgic, v);
        }
        let want = vgic.lr_slots(v);
        let mut stale = self.in_use & !want & !r.write;
        while stale != 0 {
            let n = stale.trailing_zeros() as usize;
            stale &= stale - 1;
            self.write(hw, n, 0);
        }
        self.in_use = want;
        self.set_underflow(hw, r.overflow);
    }

    /// A hardware-linked private interrupt fired for vCPU `v`, folded and
    /// about to resume: [`Vgic::forward_private_direct`], and the LR it
    /// places written. False, with nothing changed, where that declines
    /// (then forward it with [`Vgic::set_hw_pending`] and refill).
    pub fn forward_direct(
        &mut self,
        hw: &mut impl VirtualInterface,
        vgic: &mut Vgic,
        v: usize,
        intid: u32,
        pmr: u16,
    ) -> bool {
        // The LRs must be the ones the model records (no refill owed).
        self.in_use == vgic.lr_slots(v)
            && self.take_placed(
                hw,
                vgic.forward_private_direct(v, intid, intid, self.count, pmr),
            )
    }

    /// vCPU `v`, folded and about to resume, was kicked for one fresh
    /// private interrupt (an IPI): [`Vgic::place_fresh_direct`], and the
    /// LR it places written. False, with nothing changed, where that
    /// declines (then refill). GICv3 only: on GICv2 a kick is nearly
    /// always for an SGI, whose sources the refill handles.
    pub fn place_direct(
        &mut self,
        hw: &mut impl VirtualInterface,
        vgic: &mut Vgic,
        v: usize,
        pmr: u16,
    ) -> bool {
        self.format == LrFormat::V3
            && self.in_use == vgic.lr_slots(v)
            && self.take_placed(hw, vgic.place_fresh_direct(v, self.count, pmr))
    }

    /// A direct step's LR (`placed`: its index and content), written and
    /// taken in use; false when the step placed nothing.
    #[inline(always)]
    fn take_placed(
        &mut self,
        hw: &mut impl VirtualInterface,
        placed: Option<(usize, ListRegister)>,
    ) -> bool {
        let Some((slot, lr)) = placed else {
            return false;
        };
        self.write(hw, slot, self.format.encode(lr));
        self.in_use |= 1 << slot;
        true
    }

    /// Whether the only LR in use came back empty: a guest timer's steady
    /// state, which [`HwLrs::refire`] may finish without a fold first.
    /// GICv3 only (on GICv2 the fold deactivates the physical interrupt,
    /// which must happen before the next one is acknowledged).
    #[inline]
    pub fn one_completed(&self, hw: &impl VirtualInterface) -> bool {
        let in_use = self.in_use;
        self.format == LrFormat::V3
            && in_use != 0
            && in_use & (in_use - 1) == 0
            && hw.elrsr() & in_use != 0
    }

    /// After [`HwLrs::one_completed`], hardware-linked private interrupt
    /// `intid` fired again for vCPU `v`: [`Vgic::refire_direct`], and the
    /// LR it places written. False, with nothing changed, where that
    /// declines (then fold, and take the other ways).
    #[inline]
    pub fn refire(
        &mut self,
        hw: &mut impl VirtualInterface,
        vgic: &mut Vgic,
        v: usize,
        intid: u32,
        pmr: u16,
    ) -> bool {
        // The model checks that this is its only LR in use.
        let old = self.in_use.trailing_zeros() as usize;
        let Some((slot, lr)) = vgic.refire_direct(v, old, intid, pmr) else {
            return false;
        };
        // Always LR 0: a constant index is one register write.
        debug_assert_eq!(slot, 0);
        self.write(hw, 0, self.format.encode(lr));
        self.in_use = 1;
        true
    }

    /// Vacates the LRs: every one in use goes back to the model of vCPU
    /// `v` (folded first) and is invalidated; the underflow request goes
    /// off.
    pub fn park(&mut self, hw: &mut impl VirtualInterface, vgic: &mut Vgic, v: usize) {
        self.fold(hw, vgic, v);
        let mut in_use = self.in_use;
        while in_use != 0 {
            let n = in_use.trailing_zeros() as usize;
            in_use &= in_use - 1;
            self.write(hw, n, 0);
        }
        vgic.fold_lrs(v, &[]);
        // While `v`'s physical interrupt state is still this CPU's: a PPI
        // forward let go of now (e.g. a retired timer interrupt) must not
        // wait for `v`'s next full refill. (SPIs may wait: any CPU can
        // deactivate them.)
        if vgic.has_private_release(v) {
            release_physical(hw, vgic, v);
        }
        self.in_use = 0;
        self.set_underflow(hw, false);
    }

    /// Forgets everything (the vCPU stopped, or its VM is reset): every LR
    /// is invalidated and the underflow request goes off.
    pub fn clear(&mut self, hw: &mut impl VirtualInterface) {
        for n in 0..self.count {
            self.write(hw, n, 0);
        }
        self.in_use = 0;
        self.set_underflow(hw, false);
    }
}
