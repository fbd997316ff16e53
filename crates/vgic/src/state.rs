//! The interrupt state of one VM and the device inputs that change it.
//!
//! State is kept as 32-interrupt *banks* of bitmaps, the same shape as the
//! GIC's bit-per-interrupt registers (IHI 0069 §12.9, §12.11; IHI 0048B
//! §4.3): bank 0 is a vCPU's SGIs/PPIs (INTIDs 0..=31, one bank per vCPU,
//! as a redistributor banks them), bank `n >= 1` holds INTIDs `32n..32n+31`
//! and is shared. Invariants:
//! - `in_lr` bits are set exactly for the interrupts recorded in some vCPU's
//!   `placed` slots (slot `n` is list register `n`, occupied where
//!   `lr_mask` has bit `n`); `lr_pending`/`lr_active`/`cancel_*` are
//!   subsets of it;
//! - a vCPU in `exact` has every interrupt a full refill would add to its
//!   list registers in its `fresh` list (see `fill.rs`, "Incremental
//!   refill");
//! - for a GICv2 SGI, the latch bit equals `sgi_src != 0`;
//! - `hw` bits mark interrupts whose pending/active state belongs to a
//!   physical interrupt the hypervisor forwarded ([`Vgic::set_hw_pending`]);
//! - `spi_target_mask[v]` has bit `n` set iff SPI `n` targets vCPU `v`.

use crate::regs::BitIter64;
use crate::{GicVersion, MAX_LRS, MAX_SPIS, MAX_VCPUS, PRIVATE_IRQS, VgicError};

/// Banks of SPIs.
pub(crate) const SPI_WORDS: usize = MAX_SPIS as usize / 32;
/// "No vCPU" in the byte-sized vCPU fields.
pub(crate) const NO_VCPU: u8 = u8::MAX;
/// The affinity bits of an MPIDR / `GICD_IROUTER`: Aff3 (39:32), Aff2..Aff0 (23:0).
pub(crate) const AFFINITY_MASK: u64 = 0xff_00ff_ffff;
/// The SGIs of a bank.
pub(crate) const SGI_BITS: u32 = 0xffff;
/// How many fresh SPIs a vCPU tracks before it falls back to a full
/// refill.
pub(crate) const FRESH: usize = 8;

/// 32 interrupts' state, one bit each (bit `i` is INTID `32 * bank + i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bank {
    /// Group 1 (else Group 0).
    pub group: u32,
    /// Enabled (forwarded to the CPU interface when pending).
    pub enabled: u32,
    /// Pending latch: edges, `ISPENDR` writes, SGIs.
    pub latch: u32,
    /// Input line level (only meaningful when level-sensitive).
    pub line: u32,
    /// Active (outside any LR).
    pub active: u32,
    /// Edge-triggered (else level-sensitive).
    pub edge: u32,
    /// Linked to a physical interrupt (`pintid`).
    pub hw: u32,
    /// Forgotten HW links whose physical interrupt the hypervisor must
    /// deactivate ([`Vgic::take_hw_release`]).
    pub release: u32,
    /// In a list register right now.
    pub in_lr: u32,
    /// Placed in its LR as pending.
    pub lr_pending: u32,
    /// Placed in its LR as active.
    pub lr_active: u32,
    /// The guest cleared the pending state while in an LR.
    pub cancel_pending: u32,
    /// The guest cleared the active state while in an LR.
    pub cancel_active: u32,
    /// Priorities (low 3 bits always 0).
    pub priority: [u8; 32],
    /// Physical INTIDs of HW-linked interrupts.
    pub pintid: [u16; 32],
}

impl Bank {
    const ZERO: Self = Self {
        group: 0,
        enabled: 0,
        latch: 0,
        line: 0,
        active: 0,
        edge: 0,
        hw: 0,
        release: 0,
        in_lr: 0,
        lr_pending: 0,
        lr_active: 0,
        cancel_pending: 0,
        cancel_active: 0,
        priority: [0; 32],
        pintid: [0; 32],
    };

    /// Pending in the model (outside the LRs).
    pub(crate) fn pending(&self) -> u32 {
        self.latch | (self.line & !self.edge)
    }

    /// Pending as the guest's register reads see it, LRs included.
    pub(crate) fn pending_view(&self) -> u32 {
        self.pending() | (self.lr_pending & !self.cancel_pending)
    }

    /// Active as the guest's register reads see it, LRs included.
    pub(crate) fn active_view(&self) -> u32 {
        self.active | (self.lr_active & !self.cancel_active)
    }

    /// Drops HW links whose interrupt is now neither pending, active nor in
    /// an LR because the guest cleared its state by register writes: the
    /// physical interrupt is still active and must be released.
    pub(crate) fn settle_hw(&mut self) {
        let orphan = self.hw & !self.in_lr & !self.latch & !self.active;
        self.hw &= !orphan;
        self.release |= orphan;
    }
}

/// One interrupt recorded as placed in a vCPU's list registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Its INTID.
    pub intid: u16,
    /// GICv2 SGI: the source CPU of the instance in the LR.
    pub source: u8,
    /// The pending latch was moved into the LR.
    pub took_latch: bool,
    /// Placed hardware-linked (the LR has `HW = 1`).
    pub hw: bool,
}

/// A set of vCPUs (bit `i` = vCPU `i`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMask(pub u8);

impl VcpuMask {
    /// Whether vCPU `vcpu` is in the set.
    pub fn contains(self, vcpu: usize) -> bool {
        vcpu < MAX_VCPUS && self.0 & (1 << vcpu) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The vCPUs in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_VCPUS).filter(move |&v| self.contains(v))
    }
}

/// A physical interrupt the hypervisor must deactivate itself: the guest
/// dropped the virtual interrupt linked to it (e.g. cleared its pending
/// state through `ICPENDR`) so no guest deactivation will ever reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwRelease {
    /// The vCPU it was forwarded to (for a PPI: deactivate on the physical
    /// CPU that runs it).
    pub vcpu: usize,
    /// The virtual INTID it was linked to.
    pub vintid: u32,
    /// The physical INTID to deactivate.
    pub pintid: u32,
}

/// The virtual GIC of one VM. See the crate docs.
#[derive(Clone, Debug)]
pub struct Vgic {
    pub(crate) version: GicVersion,
    pub(crate) nr_vcpus: usize,
    pub(crate) mpidrs: [u64; MAX_VCPUS],
    pub(crate) nr_spis: u32,
    /// `GICD_CTLR` bit 0 EnableGrp0, bit 1 EnableGrp1 (same bits in v2 and
    /// in v3 with DS == 1).
    pub(crate) ctlr: u32,
    pub(crate) private: [Bank; MAX_VCPUS],
    pub(crate) spis: [Bank; SPI_WORDS],
    /// GICv3 `GICD_IROUTER` per SPI (affinity bits and IRM).
    pub(crate) spi_route: [u64; MAX_SPIS as usize],
    /// GICv2 `GICD_ITARGETSR` byte per SPI.
    pub(crate) spi_targets: [u8; MAX_SPIS as usize],
    /// The vCPU a pending SPI is delivered to, or `NO_VCPU`.
    pub(crate) spi_target: [u8; MAX_SPIS as usize],
    pub(crate) spi_target_mask: [[u32; SPI_WORDS]; MAX_VCPUS],
    /// The vCPU that acknowledged an active SPI.
    pub(crate) spi_owner: [u8; MAX_SPIS as usize],
    /// GICv2: pending sources per SGI, per target vCPU.
    pub(crate) sgi_src: [[u8; 16]; MAX_VCPUS],
    /// GICv2: source of the active instance per SGI, per target vCPU.
    pub(crate) sgi_active_src: [[u8; 16]; MAX_VCPUS],
    /// GICv3 `GICR_WAKER.ProcessorSleep` per redistributor.
    pub(crate) processor_sleep: [bool; MAX_VCPUS],
    /// Per vCPU, what each list register holds (slot `n` = LR `n`), valid
    /// where `lr_mask` has bit `n`.
    pub(crate) placed: [[Placed; MAX_LRS]; MAX_VCPUS],
    /// Per vCPU, the occupied slots of `placed`.
    pub(crate) lr_mask: [u64; MAX_VCPUS],
    /// vCPUs whose list registers are exact up to `fresh` (bit `v`): what
    /// they hold is what a full refill would place, except interrupts
    /// named in `fresh[v]` that may have become candidates since.
    pub(crate) exact: u8,
    /// Per vCPU, its SGIs and PPIs that may have become candidates since
    /// its last refill (bit `i`: INTID `i`; meaningful only while the
    /// vCPU is in `exact`).
    pub(crate) fresh_private: [u32; MAX_VCPUS],
    /// Per vCPU, the SPIs that may have become candidates since its last
    /// refill (likewise).
    pub(crate) fresh: [[u16; FRESH]; MAX_VCPUS],
    /// How many of `fresh[v]` are set.
    pub(crate) fresh_len: [u8; MAX_VCPUS],
    pub(crate) kicks: u8,
    /// Bumped by every change that can alter what [`Vgic::fill_lrs`] would
    /// place for some vCPU (see [`Vgic::generation`]).
    pub(crate) generation: u64,
}

impl Vgic {
    /// A VM's GIC at reset. `vcpu_mpidrs[i]` is vCPU `i`'s affinity (as in
    /// `MPIDR_EL1`: Aff3 in 39:32, Aff2..Aff0 in 23:0); `nr_spis` a multiple
    /// of 32 up to [`MAX_SPIS`].
    pub fn new(version: GicVersion, vcpu_mpidrs: &[u64], nr_spis: u32) -> Result<Self, VgicError> {
        if vcpu_mpidrs.is_empty() || vcpu_mpidrs.len() > MAX_VCPUS {
            return Err(VgicError::BadVcpuCount);
        }
        if !nr_spis.is_multiple_of(32) || nr_spis > MAX_SPIS {
            return Err(VgicError::BadSpiCount);
        }
        let mut mpidrs = [0; MAX_VCPUS];
        for (i, &m) in vcpu_mpidrs.iter().enumerate() {
            if m & !AFFINITY_MASK != 0 {
                return Err(VgicError::BadMpidr);
            }
            if vcpu_mpidrs[..i].contains(&m) {
                return Err(VgicError::DuplicateMpidr);
            }
            mpidrs[i] = m;
        }
        let (group, sgi_enable) = match version {
            // v3: Group 1 at reset, so a guest that never writes IGROUPR
            // (it is IMPLEMENTATION DEFINED, IHI 0069 §12.9.15) still gets
            // Group 1 NS interrupts. SGIs start disabled (GICR_ISENABLER0).
            GicVersion::V3 => (u32::MAX, 0),
            // v2: Group 0 at reset (IHI 0048B §4.3.6, no Security
            // Extensions); SGIs permanently enabled, as on a GIC-400
            // (IHI 0048B §4.3.5: IMPLEMENTATION DEFINED).
            GicVersion::V2 => (0, SGI_BITS),
        };
        let private = Bank {
            group,
            enabled: sgi_enable,
            edge: SGI_BITS,
            ..Bank::ZERO
        };
        let spi = Bank {
            group,
            ..Bank::ZERO
        };
        let mut vgic = Self {
            version,
            nr_vcpus: vcpu_mpidrs.len(),
            mpidrs,
            nr_spis,
            ctlr: 0,
            private: [private; MAX_VCPUS],
            spis: [spi; SPI_WORDS],
            spi_route: [0; MAX_SPIS as usize],
            spi_targets: [0; MAX_SPIS as usize],
            spi_target: [NO_VCPU; MAX_SPIS as usize],
            spi_target_mask: [[0; SPI_WORDS]; MAX_VCPUS],
            spi_owner: [NO_VCPU; MAX_SPIS as usize],
            sgi_src: [[0; 16]; MAX_VCPUS],
            sgi_active_src: [[0; 16]; MAX_VCPUS],
            processor_sleep: [true; MAX_VCPUS],
            placed: [[Placed::default(); MAX_LRS]; MAX_VCPUS],
            lr_mask: [0; MAX_VCPUS],
            exact: 0,
            fresh_private: [0; MAX_VCPUS],
            fresh: [[0; FRESH]; MAX_VCPUS],
            fresh_len: [0; MAX_VCPUS],
            kicks: 0,
            generation: 0,
        };
        for spi in 0..nr_spis as usize {
            vgic.retarget_spi(spi);
        }
        Ok(vgic)
    }

    /// The architecture version presented to the guest.
    pub fn version(&self) -> GicVersion {
        self.version
    }

    /// Number of vCPUs.
    pub fn nr_vcpus(&self) -> usize {
        self.nr_vcpus
    }

    /// Number of SPIs.
    pub fn nr_spis(&self) -> u32 {
        self.nr_spis
    }

    /// One past the highest implemented INTID.
    pub fn nr_irqs(&self) -> u32 {
        PRIVATE_IRQS + self.nr_spis
    }

    /// A number that changes whenever the model changes in a way that can
    /// alter what [`Vgic::fill_lrs`] would place for any vCPU: register
    /// writes, SGIs, inputs, folds and fills that moved state, vCPU resets.
    /// While it stays the same, a vCPU whose last fill placed nothing still
    /// has nothing to place (a property test checks this), so the
    /// hypervisor can skip the fill on the exit path.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The vCPUs whose deliverable interrupts may have changed since the
    /// last call (kick a running one so it refills its LRs; wake a blocked
    /// one if [`Vgic::has_pending`]). Clears the set.
    pub fn take_kicks(&mut self) -> VcpuMask {
        VcpuMask(core::mem::take(&mut self.kicks))
    }

    /// Takes one physical interrupt the hypervisor must deactivate itself
    /// (see [`HwRelease`]), of any vCPU; call until `None`.
    pub fn take_hw_release(&mut self) -> Option<HwRelease> {
        (0..self.nr_vcpus)
            .find_map(|vcpu| self.take_private_release(vcpu))
            .or_else(|| self.take_spi_release())
    }

    /// [`Vgic::take_hw_release`] for the CPU that runs vCPU `vcpu`: its own
    /// PPIs' releases (a PPI is deactivated on the CPU whose PPI it is,
    /// while that vCPU's physical interrupt state is loaded there) and the
    /// SPIs'. Another vCPU's PPIs wait for that vCPU's turn.
    pub fn take_hw_release_of(&mut self, vcpu: usize) -> Option<HwRelease> {
        if vcpu < self.nr_vcpus
            && let Some(rel) = self.take_private_release(vcpu)
        {
            return Some(rel);
        }
        self.take_spi_release()
    }

    /// Whether vCPU `vcpu` has PPI releases waiting
    /// ([`Vgic::take_hw_release_of`]).
    #[inline]
    pub fn has_private_release(&self, vcpu: usize) -> bool {
        self.private.get(vcpu).is_some_and(|b| b.release != 0)
    }

    fn take_private_release(&mut self, vcpu: usize) -> Option<HwRelease> {
        let bank = &mut self.private[vcpu];
        if bank.release == 0 {
            return None;
        }
        let i = bank.release.trailing_zeros();
        bank.release &= !(1 << i);
        Some(HwRelease {
            vcpu,
            vintid: i,
            pintid: u32::from(bank.pintid[i as usize]),
        })
    }

    fn take_spi_release(&mut self) -> Option<HwRelease> {
        for w in 0..self.spi_words() {
            let bank = &mut self.spis[w];
            if bank.release != 0 {
                let i = bank.release.trailing_zeros();
                bank.release &= !(1 << i);
                let spi = w * 32 + i as usize;
                let owner = self.spi_owner[spi];
                return Some(HwRelease {
                    vcpu: if owner == NO_VCPU {
                        0
                    } else {
                        usize::from(owner)
                    },
                    vintid: PRIVATE_IRQS + spi as u32,
                    pintid: u32::from(bank.pintid[i as usize]),
                });
            }
        }
        None
    }

    /// Drives an interrupt input line: a PPI of `vcpu` or an SPI (`vcpu`
    /// ignored). While the interrupt is configured level-sensitive
    /// (`ICFGR`) it is pending as long as the line is high; configured
    /// edge-triggered, a rising edge of the line latches it pending, as
    /// the GIC's own inputs behave.
    pub fn set_level(&mut self, intid: u32, vcpu: usize, level: bool) -> Result<(), VgicError> {
        let (word, bit) = self.input(intid, vcpu)?;
        let bank = self.bank_mut(vcpu, word);
        let was = bank.line & bit != 0;
        if level {
            bank.line |= bit;
            if !was && bank.edge & bit != 0 {
                bank.latch |= bit;
            }
            self.kick_bits(vcpu, word, bit);
        } else {
            bank.line &= !bit;
        }
        match (was, level) {
            (false, true) => self.note_raise(vcpu, word, bit),
            // A level that drops can take back what an LR holds.
            (true, false) => self.touch(),
            _ => {}
        }
        Ok(())
    }

    /// An edge on a PPI of `vcpu` or an SPI (`vcpu` ignored): sets the
    /// pending latch.
    pub fn set_pending(&mut self, intid: u32, vcpu: usize) -> Result<(), VgicError> {
        let (word, bit) = self.input(intid, vcpu)?;
        self.bank_mut(vcpu, word).latch |= bit;
        self.kick_bits(vcpu, word, bit);
        self.note_raise(vcpu, word, bit);
        Ok(())
    }

    /// Forwards physical interrupt `pintid`, which the hypervisor
    /// acknowledged and priority-dropped but left active, as virtual
    /// `vintid` (a PPI of `vcpu`, or an SPI) linked to it: its LR will carry
    /// `HW = 1` so the guest's deactivation deactivates `pintid`.
    ///
    /// Returns `Ok(false)`, changing nothing, while a previous forward of
    /// `vintid` is still pending, active or in an LR (or awaits
    /// [`Vgic::take_hw_release`]): it is never forwarded twice.
    pub fn set_hw_pending(
        &mut self,
        vcpu: usize,
        vintid: u32,
        pintid: u32,
    ) -> Result<bool, VgicError> {
        // 16..=1019: PPIs and SPIs; v2 LRs carry a 10-bit PhysicalID.
        if !(16..1020).contains(&pintid) {
            return Err(VgicError::BadIntid);
        }
        let (word, bit) = self.input(vintid, vcpu)?;
        let bank = self.bank_mut(vcpu, word);
        if (bank.hw | bank.release) & bit != 0 {
            return Ok(false);
        }
        bank.hw |= bit;
        bank.latch |= bit;
        bank.pintid[(vintid % 32) as usize] = pintid as u16;
        self.kick_bits(vcpu, word, bit);
        self.note_raise(vcpu, word, bit);
        Ok(true)
    }

    /// `vcpu`'s private interrupts (bit `i`: INTID `i`) linked to a
    /// physical interrupt ([`Vgic::set_hw_pending`]) and not completed yet:
    /// pending, active or in an LR. One load, for the exit path's quick
    /// test; 0 for a bad `vcpu`.
    #[inline(always)]
    pub fn hw_linked_private(&self, vcpu: usize) -> u32 {
        self.private.get(vcpu).map_or(0, |bank| bank.hw)
    }

    /// Of `vcpu`'s private interrupts in `mask` (bit `i`: INTID `i`), the
    /// forwarded physical ones ([`Vgic::set_hw_pending`]) that are pending
    /// and not active, in the model or in an LR: the forwards a source
    /// that has dropped its line would take back
    /// ([`Vgic::retire_hw_pending`]); 0 for a bad `vcpu`.
    pub fn hw_pending_private(&self, vcpu: usize, mask: u32) -> u32 {
        let Some(bank) = self.private.get(vcpu) else {
            return 0;
        };
        bank.hw & bank.pending_view() & !bank.active_view() & mask
    }

    /// The level-sensitive source of forwarded private interrupts `bits` of
    /// `vcpu` dropped its line (a guest timer that was disabled, masked or
    /// given a compare value in the future): each one that is pending and
    /// not active stops being pending, in the model and (at the next fold
    /// or refill) in its LR, and its physical interrupt is released to the
    /// hypervisor ([`Vgic::take_hw_release`]), so that it is neither taken
    /// nor shown by `ISPENDR`, and fires again when the line rises. One
    /// the guest already acknowledged (active) is left alone: on a GIC the
    /// line no longer matters to it. Returns the bits retired.
    pub fn retire_hw_pending(&mut self, vcpu: usize, bits: u32) -> u32 {
        let retire = self.hw_pending_private(vcpu, bits);
        if retire == 0 {
            return 0;
        }
        let bank = &mut self.private[vcpu];
        bank.latch &= !retire;
        bank.cancel_pending |= retire & bank.lr_pending;
        bank.settle_hw();
        self.touch();
        retire
    }

    /// Whether `intid` is pending (as the guest's `ISPENDR` shows it) for
    /// `vcpu`; `false` for bad arguments.
    pub fn is_pending(&self, vcpu: usize, intid: u32) -> bool {
        if self.version == GicVersion::V2 && intid < 16 && vcpu < self.nr_vcpus {
            return self.sgi_sources(vcpu, intid as usize) != 0;
        }
        self.view(vcpu, intid, Bank::pending_view)
    }

    /// Whether `intid` is active (as `ISACTIVER` shows it) for `vcpu`.
    pub fn is_active(&self, vcpu: usize, intid: u32) -> bool {
        self.view(vcpu, intid, Bank::active_view)
    }

    /// Whether `intid` is enabled for `vcpu`.
    pub fn is_enabled(&self, vcpu: usize, intid: u32) -> bool {
        self.view(vcpu, intid, |b| b.enabled)
    }

    /// The priority of `intid` for `vcpu`.
    pub fn priority(&self, vcpu: usize, intid: u32) -> Option<u8> {
        let (word, bit) = self.locate(vcpu, intid)?;
        Some(self.bank(vcpu, word).priority[bit.trailing_zeros() as usize])
    }

    /// The vCPU SPI `intid` is currently delivered to, if any.
    pub fn spi_target(&self, intid: u32) -> Option<usize> {
        let spi = intid.checked_sub(PRIVATE_IRQS)?;
        if spi >= self.nr_spis {
            return None;
        }
        let t = self.spi_target[spi as usize];
        (t != NO_VCPU).then_some(usize::from(t))
    }

    fn view(&self, vcpu: usize, intid: u32, f: impl Fn(&Bank) -> u32) -> bool {
        match self.locate(vcpu, intid) {
            Some((word, bit)) => f(self.bank(vcpu, word)) & bit != 0,
            None => false,
        }
    }

    /// Records a change that may alter what any vCPU's list registers
    /// should hold: no vCPU is exact any more (their next refill is a
    /// full one).
    pub(crate) fn touch(&mut self) {
        self.generation += 1;
        self.exact = 0;
    }

    /// Records that interrupt `bit` of bank `word` (seen from `vcpu`) was
    /// made pending (a latch or a rising line; the state is already
    /// changed). Outside any LR and not active, the only change is that
    /// it may now be a candidate of the vCPU it targets: that vCPU's
    /// fresh list says so. Otherwise it changes what an LR should hold:
    /// [`Vgic::touch`].
    #[inline]
    pub(crate) fn note_raise(&mut self, vcpu: usize, word: usize, bit: u32) {
        self.generation += 1;
        let bank = self.bank(vcpu, word);
        if (bank.in_lr | bank.active) & bit != 0 {
            self.exact = 0;
            return;
        }
        if word == 0 {
            // An SGI or PPI: fresh for its own vCPU.
            self.fresh_private[vcpu] |= bit;
            return;
        }
        let intid = (word * 32) as u32 + bit.trailing_zeros();
        match self.spi_target[intid as usize - PRIVATE_IRQS as usize] {
            NO_VCPU => {}
            t => self.push_fresh(usize::from(t), intid),
        }
    }

    /// Notes that `intid` may have become a candidate of `vcpu`: added to
    /// its fresh list if it is exact (when the list is full, it no longer
    /// is).
    #[inline]
    pub(crate) fn push_fresh(&mut self, vcpu: usize, intid: u32) {
        if intid < PRIVATE_IRQS {
            // Harmless while not exact: a full refill clears it.
            self.fresh_private[vcpu] |= 1 << intid;
            return;
        }
        if self.exact & (1 << vcpu) == 0 {
            return;
        }
        let n = usize::from(self.fresh_len[vcpu]);
        let list = &mut self.fresh[vcpu];
        if list[..n].contains(&(intid as u16)) {
            return;
        }
        if n == FRESH {
            self.exact &= !(1 << vcpu);
            return;
        }
        list[n] = intid as u16;
        self.fresh_len[vcpu] = n as u8 + 1;
    }

    /// Bank index and bit of an implemented INTID seen from a valid vCPU.
    pub(crate) fn locate(&self, vcpu: usize, intid: u32) -> Option<(usize, u32)> {
        (vcpu < self.nr_vcpus && intid < self.nr_irqs())
            .then(|| ((intid / 32) as usize, 1u32 << (intid % 32)))
    }

    /// Validates a device input: a PPI (with its vCPU) or an SPI.
    fn input(&self, intid: u32, vcpu: usize) -> Result<(usize, u32), VgicError> {
        if intid < 16 || intid >= self.nr_irqs() {
            return Err(VgicError::BadIntid);
        }
        if intid < PRIVATE_IRQS && vcpu >= self.nr_vcpus {
            return Err(VgicError::NoSuchVcpu);
        }
        // SPIs ignore `vcpu`: use 0 (always valid) for the bank lookup.
        let vcpu = if intid < PRIVATE_IRQS { vcpu } else { 0 };
        self.locate(vcpu, intid).ok_or(VgicError::BadIntid)
    }

    /// Number of SPI banks.
    pub(crate) fn spi_words(&self) -> usize {
        (self.nr_spis / 32) as usize
    }

    /// Bank `word` as seen by `vcpu` (0 = its SGIs/PPIs). Callers pass a
    /// valid vCPU and `word <= spi_words()`.
    pub(crate) fn bank(&self, vcpu: usize, word: usize) -> &Bank {
        match word {
            0 => &self.private[vcpu],
            w => &self.spis[w - 1],
        }
    }

    /// Mutable [`Vgic::bank`].
    pub(crate) fn bank_mut(&mut self, vcpu: usize, word: usize) -> &mut Bank {
        match word {
            0 => &mut self.private[vcpu],
            w => &mut self.spis[w - 1],
        }
    }

    /// Records that the interrupts `bits` of bank `word` (seen from `vcpu`)
    /// may have become deliverable.
    pub(crate) fn kick_bits(&mut self, vcpu: usize, word: usize, bits: u32) {
        if bits == 0 {
            return;
        }
        if word == 0 {
            self.kicks |= 1 << vcpu;
            return;
        }
        for t in 0..self.nr_vcpus {
            if self.spi_target_mask[t][word - 1] & bits != 0 {
                self.kicks |= 1 << t;
            }
        }
    }

    /// The Group enable bits of `GICD_CTLR` applied to a bank's groups: the
    /// interrupts whose group the distributor forwards.
    pub(crate) fn group_enabled(&self, group: u32) -> u32 {
        crate::fill::groups_on(self.ctlr, group)
    }

    /// Recomputes SPI `spi`'s target vCPU from its routing: v3 `IROUTER`
    /// (IRM = 1, "any PE": the lowest-numbered vCPU, a valid 1-of-N
    /// choice; else the vCPU whose affinity matches, IHI 0069 §12.9.22),
    /// v2 `ITARGETSR` (the lowest-numbered targeted vCPU; IHI 0048B §4.3.12
    /// leaves the choice among several targets to the implementation).
    pub(crate) fn retarget_spi(&mut self, spi: usize) {
        let target = match self.version {
            GicVersion::V3 => {
                let route = self.spi_route[spi];
                if route & (1 << 31) != 0 {
                    Some(0)
                } else {
                    let aff = route & AFFINITY_MASK;
                    self.mpidrs[..self.nr_vcpus].iter().position(|&m| m == aff)
                }
            }
            GicVersion::V2 if self.nr_vcpus == 1 => Some(0),
            GicVersion::V2 => {
                let t = self.spi_targets[spi] & self.vcpu_bits();
                (t != 0).then(|| t.trailing_zeros() as usize)
            }
        };
        let (word, bit) = (spi / 32, 1u32 << (spi % 32));
        for mask in &mut self.spi_target_mask {
            mask[word] &= !bit;
        }
        match target {
            Some(t) => {
                self.spi_target[spi] = t as u8;
                self.spi_target_mask[t][word] |= bit;
                if self.spis[word].pending() & bit != 0 {
                    self.kicks |= 1 << t;
                }
            }
            None => self.spi_target[spi] = NO_VCPU,
        }
    }

    /// The bits of the existing vCPUs in an 8-bit CPU mask.
    pub(crate) fn vcpu_bits(&self) -> u8 {
        ((1u16 << self.nr_vcpus) - 1) as u8
    }

    /// GICv2: the pending sources of SGI `sgi` on `vcpu`, including the
    /// instance sitting pending in an LR.
    pub(crate) fn sgi_sources(&self, vcpu: usize, sgi: usize) -> u8 {
        let bank = &self.private[vcpu];
        let bit = 1u32 << sgi;
        let mut src = self.sgi_src[vcpu][sgi];
        if bank.lr_pending & !bank.cancel_pending & bit != 0
            && let Some(p) = self.placed_entry(vcpu, sgi as u32)
        {
            src |= 1 << p.source;
        }
        src
    }

    /// The LR record of `intid` in `vcpu`'s list registers.
    pub(crate) fn placed_entry(&self, vcpu: usize, intid: u32) -> Option<Placed> {
        BitIter64(self.lr_mask[vcpu])
            .map(|n| self.placed[vcpu][n])
            .find(|p| u32::from(p.intid) == intid)
    }

    /// GICv2: re-derives SGI `sgi`'s latch bit on `vcpu` from its sources.
    pub(crate) fn sync_sgi_latch(&mut self, vcpu: usize, sgi: usize) {
        let bit = 1u32 << sgi;
        if self.sgi_src[vcpu][sgi] != 0 {
            self.private[vcpu].latch |= bit;
        } else {
            self.private[vcpu].latch &= !bit;
        }
    }
}
