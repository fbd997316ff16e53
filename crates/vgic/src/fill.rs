//! List-register allocation: which of a vCPU's interrupts go into its LRs
//! before it runs ([`Vgic::fill_lrs`]), and how the LRs' state flows back
//! after it exits ([`Vgic::fold_lrs`]).
//!
//! # Ownership protocol
//! Filling *moves* state into the LRs: an interrupt placed pending gives up
//! its pending latch (edges, `ISPENDR`, SGIs; a level line stays in the
//! model, being an input), one placed active gives up its active bit; both
//! are recorded (`in_lr`, `lr_pending`, `lr_active` and the vCPU's `placed`
//! list). Until the fold the LR is the truth for that part of the state:
//! - new edges, `ISPENDR`/`ISACTIVER` writes land in the model and are
//!   merged (OR) at the fold, so nothing is lost (an edge that arrives
//!   while the interrupt sits pending in an LR coalesces with it, as on a
//!   GIC; one that arrives after the guest acknowledged it makes it
//!   pending again);
//! - `ICPENDR`/`ICACTIVER` writes (or `CPENDSGIR`) from another vCPU set
//!   `cancel_*`, and the fold drops that part of the LR state;
//! - the interrupt is never placed in a second LR: another vCPU's fill
//!   skips SPIs in an LR, and a vCPU's own fill first returns whatever is
//!   still recorded as placed (a fill without a fold loses nothing).
//!
//! Folding an LR that the guest completed (`Invalid`) leaves the
//! interrupt inactive; a level-sensitive one is pending again at once if
//! its line is still high (that is the re-sampling the LR's EOI
//! maintenance interrupt provokes). A HW-linked interrupt is forgotten when
//! its LR comes back `Invalid` (the guest's deactivation reached the
//! physical interrupt), or handed to [`Vgic::take_hw_release`] when the
//! guest cleared it by register writes.
//!
//! # Incremental refill
//! A vCPU is *exact* when its LRs hold what a full refill would place,
//! except interrupts named in its *fresh* set (`fresh_private`, `fresh`)
//! that may have become candidates since. A raise of an interrupt in no LR
//! and not active only makes it fresh for its target; any other change
//! that could alter an LR's content makes every vCPU inexact
//! ([`Vgic::touch`]); an unplaced interrupt is fresh again for its vCPU
//! (and an SPI for its target). [`Vgic::refill`] then writes nothing,
//! places the fresh candidates into free LRs, or refills in full (which
//! makes the vCPU exact when every candidate fits). [`Vgic::fold_lr`] folds
//! one LR: a completed or cancelled one goes back to the model, an
//! acknowledged one stays with its state recorded. The property tests
//! compare every incremental refill with a full one (ADR 0009).
//!
//! # Choice
//! Candidates for vCPU `v`: its SGIs/PPIs and the SPIs targeting it that
//! are pending, enabled and in a Group the distributor enables, plus
//! everything active on `v` (an active SPI stays with the vCPU that
//! acknowledged it). Active ones go first so they are never dropped, then
//! by priority (lower value first), then by INTID. A GICv2 SGI occupies
//! one LR per INTID: one source at a time, the others wait and the LR asks
//! for EOI maintenance so the next goes in as soon as it is done. HW LRs are
//! never pending-and-active: the extra pending state waits in the model.

use crate::lr::{ListRegister, LrState};
use crate::regs::{BitIter, BitIter64};
use crate::state::{NO_VCPU, Placed};
use crate::{GicVersion, MAX_LRS, PRIVATE_IRQS, Vgic};

/// The outcome of [`Vgic::fill_lrs`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LrFill {
    /// LRs filled, from index 0; the others were set invalid.
    pub used: usize,
    /// More candidates than LRs: ask for an underflow (or no-pending)
    /// maintenance interrupt so they are placed once LRs free up.
    pub overflow: bool,
}

/// The outcome of [`Vgic::refill`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LrRefill {
    /// The list registers to write: bit `n` set, write `lrs[n]` (possibly
    /// invalid) to LR `n`. The others keep what they hold.
    pub write: u64,
    /// Whether the refill was a full one (every candidate reconsidered).
    pub full: bool,
    /// More candidates than LRs: ask for an underflow maintenance
    /// interrupt so they are placed once LRs free up.
    pub overflow: bool,
}

/// What [`Vgic::fold_lr`] did with one list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrFold {
    /// The LR still holds its interrupt, whose state the model now
    /// records: leave it as it is.
    Kept,
    /// The interrupt went back to the model; the LR is free. `completed`
    /// is the physical INTID of a hardware-linked interrupt the guest
    /// completed (its deactivation reached the physical one, which the
    /// hypervisor may check).
    Freed {
        /// See above.
        completed: Option<u32>,
    },
    /// The model records nothing in this LR (it is stale: write it
    /// invalid before it could be taken for a live one).
    Unused,
}

impl Vgic {
    /// Fills `lrs` (as many as the hardware has) with `vcpu`'s interrupts
    /// before it runs, from scratch: everything in its LRs goes back to the
    /// model first (as recorded), then the best candidates are placed in
    /// LRs `0..used`; see the module docs. Entries beyond `used` are set
    /// invalid. An invalid `vcpu` gets all-invalid LRs.
    pub fn fill_lrs(&mut self, vcpu: usize, lrs: &mut [ListRegister]) -> LrFill {
        lrs.fill(ListRegister::INVALID);
        if vcpu >= self.nr_vcpus {
            return LrFill::default();
        }
        let cap = lrs.len().min(MAX_LRS);
        let (used, overflow) = self.full_fill(vcpu, cap, |n, lr| lrs[n] = lr);
        LrFill { used, overflow }
    }

    /// The refill before `vcpu` runs again, given its LRs as the model
    /// records them (fold every LR the hardware may have changed first,
    /// [`Vgic::fold_lr`]): the shortest of
    /// - nothing, when nothing changed for `vcpu` since its last refill;
    /// - placing the interrupts that became candidates since into free
    ///   LRs, when its LRs held every candidate then and the new ones fit
    ///   (the LRs then hold every candidate, as a full refill's would);
    /// - a full refill ([`Vgic::fill_lrs`], but as a list of writes)
    ///   otherwise.
    ///
    /// `lrs` has as many entries as the hardware has LRs; only those named
    /// in [`LrRefill::write`] are meaningful. An invalid `vcpu` gets no
    /// writes.
    pub fn refill(&mut self, vcpu: usize, lrs: &mut [ListRegister]) -> LrRefill {
        let cap = lrs.len();
        self.refill_with(vcpu, cap, |n, lr| lrs[n] = lr)
    }

    /// [`Vgic::refill`] for a CPU with `cap` list registers, handing each
    /// LR to write to `emit` (its index and content) instead of filling an
    /// array.
    pub fn refill_with(
        &mut self,
        vcpu: usize,
        cap: usize,
        mut emit: impl FnMut(usize, ListRegister),
    ) -> LrRefill {
        if vcpu >= self.nr_vcpus {
            return LrRefill::default();
        }
        let cap = cap.min(MAX_LRS);
        if self.exact & (1 << vcpu) != 0 {
            let private = self.fresh_private[vcpu];
            let n = usize::from(self.fresh_len[vcpu]);
            if private == 0 && n == 0 {
                return LrRefill::default();
            }
            let mut free = !self.lr_mask[vcpu] & slots(cap);
            let mut write = 0;
            let mut fits = true;
            let mut private = private;
            while private != 0 {
                let intid = private.trailing_zeros();
                private &= private - 1;
                if !self.place_fresh(vcpu, intid, &mut free, &mut write, &mut emit) {
                    fits = false;
                    break;
                }
            }
            for k in 0..n {
                if !fits {
                    break;
                }
                let intid = u32::from(self.fresh[vcpu][k]);
                fits = self.place_fresh(vcpu, intid, &mut free, &mut write, &mut emit);
            }
            if fits {
                self.fresh_private[vcpu] = 0;
                self.fresh_len[vcpu] = 0;
                if write != 0 {
                    self.generation += 1;
                }
                return LrRefill {
                    write,
                    full: false,
                    overflow: false,
                };
            }
        }
        let old = self.lr_mask[vcpu];
        let (_, overflow) = self.full_fill(vcpu, cap, &mut emit);
        LrRefill {
            write: old | self.lr_mask[vcpu],
            full: true,
            overflow,
        }
    }

    /// A hardware-linked private interrupt `intid` (a guest timer's PPI,
    /// physical INTID `pintid`) fired for `vcpu`, whose LRs are folded and
    /// about to be resumed: forwards it and places it in one step, when
    /// that is all [`Vgic::set_hw_pending`] followed by
    /// [`Vgic::refill_with`] would do. That is the case when `vcpu` is
    /// exact with nothing fresh but `intid`, the interrupt is idle (not
    /// pending, active, in an LR, linked or awaiting release), enabled, in
    /// a Group the distributor forwards, of a priority below `pmr` (256:
    /// any), and one of the `cap` LRs is free. Then the model ends exactly
    /// as those two calls leave it, except that no kick is recorded for
    /// `vcpu` itself (it runs on the caller's CPU), and the LR to write is
    /// returned with its index. Otherwise nothing changes and `None` says
    /// to take the general way (a property test pins the two together).
    /// A guest timer's tick takes this step when [`Vgic::refire_direct`]
    /// cannot; it is the timer path's short cut past the general fill
    /// (ADR 0021).
    #[inline]
    pub fn forward_private_direct(
        &mut self,
        vcpu: usize,
        intid: u32,
        pintid: u32,
        cap: usize,
        pmr: u16,
    ) -> Option<(usize, ListRegister)> {
        // The INTIDs `set_hw_pending` takes (v2 LRs carry 10 bits).
        if vcpu >= self.nr_vcpus
            || !(16..PRIVATE_IRQS).contains(&intid)
            || !(16..1020).contains(&pintid)
        {
            return None;
        }
        let i = intid as usize;
        let bit = 1u32 << i;
        if !self.exact_but(vcpu, bit) {
            return None;
        }
        let free = !self.lr_mask[vcpu] & slots(cap.min(MAX_LRS));
        let groups = groups_on(self.ctlr, self.private[vcpu].group);
        let bank = &mut self.private[vcpu];
        let busy = bank.hw | bank.release | bank.in_lr | bank.active | bank.pending();
        let ready = bank.enabled & groups & !busy;
        let priority = bank.priority[i];
        if ready & bit == 0 || u16::from(priority) >= pmr || free == 0 {
            return None;
        }
        let slot = free.trailing_zeros() as usize;
        // `set_hw_pending` links and latches it; the placement moves the
        // latch into the LR.
        bank.hw |= bit;
        bank.pintid[i] = pintid as u16;
        bank.lr_pending |= bit;
        bank.in_lr |= bit;
        bank.cancel_pending &= !bit;
        bank.cancel_active &= !bit;
        let group1 = bank.group & bit != 0;
        self.placed[vcpu][slot] = Placed {
            intid: intid as u16,
            source: 0,
            took_latch: true,
            hw: true,
        };
        self.lr_mask[vcpu] |= 1 << slot;
        self.fresh_private[vcpu] = 0;
        // One for the raise, one for the placement.
        self.generation += 2;
        Some((slot, hw_pending_lr(intid, pintid, priority, group1)))
    }

    /// Whether (valid) `vcpu` is exact with nothing fresh but some of its
    /// private interrupts `bits`: the state in which the direct steps
    /// below may stand in for the general refill.
    #[inline(always)]
    fn exact_but(&self, vcpu: usize, bits: u32) -> bool {
        self.exact & (1 << vcpu) != 0
            && self.fresh_private[vcpu] & !bits == 0
            && self.fresh_len[vcpu] == 0
    }

    /// A guest timer's steady state, in one step: `vcpu`'s only LR in use,
    /// `old`, holds the previous hardware-linked instance of private
    /// interrupt `intid` and came back empty (the guest completed it), and
    /// `intid` fired again (physical INTID the same, as for the timers).
    /// Does what [`Vgic::fold_lr`] of `old` as `Invalid` followed by
    /// [`Vgic::forward_private_direct`] would do, under the same
    /// conditions, and returns the LR to write (always LR 0: the lowest
    /// one free). `None` changes nothing: fold, then take the other ways.
    /// A property test pins it to the general fold, forward and refill.
    ///
    /// Fewer checks than the two steps need: `vcpu` exact with nothing
    /// fresh means nothing that could change its LRs' content happened
    /// since `intid` was placed (a change to its enable, group, priority
    /// or the distributor's groups makes the vCPU inexact), and it was a
    /// candidate then; what is left to check is that the completion is a
    /// plain one and nothing else (a latch, an active or cancelled state,
    /// a release) is owed. It also declines unless `intid` is the vCPU's
    /// only hardware-linked private interrupt, so that afterwards the
    /// caller has no other forward whose source may have dropped.
    #[inline]
    pub fn refire_direct(
        &mut self,
        vcpu: usize,
        old: usize,
        intid: u32,
        pmr: u16,
    ) -> Option<(usize, ListRegister)> {
        if vcpu >= self.nr_vcpus || old >= MAX_LRS || intid & !0xf != 16 {
            return None;
        }
        let i = intid as usize;
        let bit = 1u32 << i;
        let p = self.placed[vcpu][old];
        if self.lr_mask[vcpu] != 1 << old
            || u32::from(p.intid) != intid
            || !p.hw
            || !self.exact_but(vcpu, bit)
        {
            return None;
        }
        let bank = &mut self.private[vcpu];
        let owed =
            bank.cancel_pending | bank.cancel_active | bank.release | bank.active | bank.pending();
        let priority = bank.priority[i];
        if owed & bit != 0 || bank.hw != bit || u16::from(priority) >= pmr {
            return None;
        }
        // The fold ends the link and frees the LR; the forward links,
        // latches and places it again: what changes is only the LR's
        // acknowledged state, the physical INTID and the slot.
        bank.lr_active &= !bit;
        bank.lr_pending |= bit;
        bank.in_lr |= bit;
        bank.hw |= bit;
        bank.pintid[i] = intid as u16;
        let group1 = bank.group & bit != 0;
        self.placed[vcpu][0] = Placed {
            intid: intid as u16,
            source: 0,
            took_latch: true,
            hw: true,
        };
        self.lr_mask[vcpu] = 1;
        self.fresh_private[vcpu] = 0;
        // The fold, the raise and the placement.
        self.generation += 3;
        Some((0, hw_pending_lr(intid, intid, priority, group1)))
    }

    /// The refill of an exact `vcpu` whose only fresh interrupt is one of
    /// its SGIs or PPIs, not hardware-linked (an IPI it was kicked for):
    /// places it into the lowest free of `cap` LRs, exactly as
    /// [`Vgic::refill_with`] would, when it is a candidate of a priority
    /// below `pmr` (256: any) and an LR is free; `None` changes nothing.
    /// GICv2 SGIs, which carry their sources, are left to the refill. A
    /// property test pins it to the refill.
    #[inline]
    pub fn place_fresh_direct(
        &mut self,
        vcpu: usize,
        cap: usize,
        pmr: u16,
    ) -> Option<(usize, ListRegister)> {
        if vcpu >= self.nr_vcpus {
            return None;
        }
        let fresh = self.fresh_private[vcpu];
        if fresh == 0 || fresh & (fresh - 1) != 0 || !self.exact_but(vcpu, fresh) {
            return None;
        }
        let intid = fresh.trailing_zeros();
        if self.version == GicVersion::V2 && intid < 16 {
            return None;
        }
        let bank = &self.private[vcpu];
        let free = !self.lr_mask[vcpu] & slots(cap.min(MAX_LRS));
        if bank.hw & fresh != 0
            || self.signalled(vcpu, 0) & fresh == 0
            || u16::from(bank.priority[intid as usize]) >= pmr
            || free == 0
        {
            return None;
        }
        let slot = free.trailing_zeros() as usize;
        let lr = self.place(vcpu, intid, slot);
        self.fresh_private[vcpu] = 0;
        self.generation += 1;
        Some((slot, lr))
    }

    /// Places fresh `intid` into the lowest of the `free` LRs (taking it
    /// off `free`, adding it to `write`) if it is a candidate of `vcpu`;
    /// false when it is one and no LR is free.
    #[inline(always)]
    fn place_fresh(
        &mut self,
        vcpu: usize,
        intid: u32,
        free: &mut u64,
        write: &mut u64,
        emit: &mut impl FnMut(usize, ListRegister),
    ) -> bool {
        if !self.is_candidate(vcpu, intid) {
            return true;
        }
        if *free == 0 {
            return false;
        }
        let slot = free.trailing_zeros() as usize;
        *free &= *free - 1;
        emit(slot, self.place(vcpu, intid, slot));
        *write |= 1 << slot;
        true
    }

    /// The full refill: folds `vcpu`'s LRs as recorded, places the best
    /// candidates into LRs `0..` and invalidates the other LRs it held
    /// (all through `emit`), and makes `vcpu` exact when all of them fit.
    /// Returns how many were placed and whether some did not fit.
    fn full_fill(
        &mut self,
        vcpu: usize,
        cap: usize,
        mut emit: impl FnMut(usize, ListRegister),
    ) -> (usize, bool) {
        let old = self.lr_mask[vcpu] & slots(cap);
        self.fold_lrs(vcpu, &[]);
        // Keep only as many best keys as there are LRs (4 on QEMU, at most
        // 16 on GICv3): a small buffer is cheaper to clear on every entry.
        let mut small = [0u32; 16];
        let mut large;
        let best: &mut [u32] = if cap <= small.len() {
            &mut small[..cap]
        } else {
            large = [0u32; MAX_LRS];
            &mut large[..cap]
        };
        let (kept, n) = self.candidates(vcpu, best);
        for (slot, &key) in best[..kept].iter().enumerate() {
            emit(slot, self.place(vcpu, key & 0xffff, slot));
        }
        for n in BitIter64(old & !slots(kept)) {
            emit(n, ListRegister::INVALID);
        }
        if kept > 0 {
            self.generation += 1;
        }
        self.fresh_private[vcpu] = 0;
        self.fresh_len[vcpu] = 0;
        if n <= cap {
            self.exact |= 1 << vcpu;
        } else {
            self.exact &= !(1 << vcpu);
        }
        (n.min(cap), n > cap)
    }

    /// Takes back `vcpu`'s LRs after an exit: `lrs[n]` must be what was
    /// read from LR `n` (at least up to the highest one in use). An
    /// interrupt whose LR is missing keeps the state it was placed with.
    /// Every LR is given back to the model, which is the truth again.
    pub fn fold_lrs(&mut self, vcpu: usize, lrs: &[ListRegister]) {
        if vcpu >= self.nr_vcpus {
            return;
        }
        let mask = self.lr_mask[vcpu];
        if mask != 0 {
            self.generation += 1;
        }
        for n in BitIter64(mask) {
            let p = self.placed[vcpu][n];
            let intid = u32::from(p.intid);
            let state = match lrs.get(n) {
                Some(lr) if lr.vintid == intid => Some(lr.state),
                _ => BitIter64(mask)
                    .filter_map(|m| lrs.get(m))
                    .find(|lr| lr.vintid == intid)
                    .map(|lr| lr.state),
            };
            self.unplace(vcpu, p, state);
        }
        self.lr_mask[vcpu] = 0;
    }

    /// Folds LR `slot` of `vcpu` after an exit, given the state the
    /// hardware shows for it (`Invalid` for an LR it reports empty). The
    /// caller folds only LRs whose content changed since it wrote them:
    /// an unchanged one holds what the model records already.
    ///
    /// A completed interrupt (or one whose state the guest cleared or
    /// cancelled through the distributor meanwhile) goes back to the
    /// model and frees the LR; one the guest acknowledged stays, with its
    /// new state recorded.
    pub fn fold_lr(&mut self, vcpu: usize, slot: usize, state: LrState) -> LrFold {
        if vcpu >= self.nr_vcpus || slot >= MAX_LRS || self.lr_mask[vcpu] & (1 << slot) == 0 {
            return LrFold::Unused;
        }
        let p = self.placed[vcpu][slot];
        let intid = u32::from(p.intid);
        let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
        let bank = self.bank_mut(vcpu, word);
        let cancelled = (bank.cancel_pending | bank.cancel_active) & bit != 0;
        // A HW forward that arrived while the interrupt sat in an LR
        // without HW: the general merge keeps it.
        let late_hw = !p.hw && bank.hw & bit != 0;
        if state == LrState::Invalid && !cancelled && !late_hw {
            // Completed (the common case, what `merge_lr` does for it):
            // neither pending nor active, a HW link ends. A level input
            // still high, or a v2 SGI's next source, makes it a candidate
            // again.
            let completed =
                p.hw.then_some(u32::from(bank.pintid[(intid % 32) as usize]));
            bank.in_lr &= !bit;
            bank.lr_pending &= !bit;
            bank.lr_active &= !bit;
            bank.hw &= !bit;
            self.generation += 1;
            self.lr_mask[vcpu] &= !(1 << slot);
            self.after_unplace(vcpu, intid);
            return LrFold::Freed { completed };
        }
        let bank = self.bank(vcpu, word);
        if state == LrState::Invalid || cancelled {
            let pintid = u32::from(bank.pintid[(intid % 32) as usize]);
            self.generation += 1;
            self.lr_mask[vcpu] &= !(1 << slot);
            self.unplace(vcpu, p, Some(state));
            return LrFold::Freed {
                completed: (p.hw && state == LrState::Invalid).then_some(pintid),
            };
        }
        let was_pending = bank.lr_pending & bit != 0;
        let was_active = bank.lr_active & bit != 0;
        if (was_pending, was_active) == (state.is_pending(), state.is_active()) {
            return LrFold::Kept;
        }
        self.generation += 1;
        let bank = self.bank_mut(vcpu, word);
        bank.lr_pending = (bank.lr_pending & !bit) | if state.is_pending() { bit } else { 0 };
        bank.lr_active = (bank.lr_active & !bit) | if state.is_active() { bit } else { 0 };
        // A level-sensitive interrupt acknowledged while its line is still
        // high: a full refill would place it pending and active, this LR
        // holds it active (with EOI maintenance, which re-samples the
        // line). Both deliver the same, but they differ: refill in full.
        let level_again = bank.hw & bit == 0 && bank.edge & bit == 0 && bank.pending() & bit != 0;
        if state.is_active() && level_again {
            self.exact &= !(1 << vcpu);
        }
        LrFold::Kept
    }

    /// Whether `intid` is one of `vcpu`'s candidates (see
    /// [`Vgic::for_each_candidate`]).
    fn is_candidate(&self, vcpu: usize, intid: u32) -> bool {
        let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
        if self.signalled(vcpu, word) & bit != 0 {
            return true;
        }
        let bank = self.bank(vcpu, word);
        bank.active & !bank.in_lr & bit != 0
            && (word == 0 || usize::from(self.spi_owner[intid as usize - 32]) == vcpu)
    }

    /// Whether `vcpu` has an interrupt its CPU interface would signal with
    /// priority mask `pmr`: pending, not active, enabled, group enabled,
    /// priority higher (numerically lower) than `pmr`. To wake a vCPU
    /// waiting in WFI. (Plain loops: with `any` closures around the inlined
    /// [`Vgic::signalled`] the closure is called out of line.)
    ///
    /// For an exact vCPU only its fresh interrupts can be candidates, so
    /// only they are looked at; otherwise every bank is.
    pub fn has_pending(&self, vcpu: usize, pmr: u8) -> bool {
        if vcpu >= self.nr_vcpus {
            return false;
        }
        if self.exact & (1 << vcpu) == 0 {
            return self.has_pending_scan(vcpu, pmr);
        }
        // Nothing fresh (an idle vCPU's wake-up check, most often): no
        // bank to look at.
        let fresh = self.fresh_private[vcpu];
        let private = if fresh == 0 {
            0
        } else {
            fresh & self.signalled(vcpu, 0)
        };
        for i in BitIter(private) {
            if self.private[vcpu].priority[i] < pmr {
                return true;
            }
        }
        for k in 0..usize::from(self.fresh_len[vcpu]) {
            let intid = usize::from(self.fresh[vcpu][k]);
            let (word, i) = (intid / 32, intid % 32);
            if self.signalled(vcpu, word) & (1 << i) != 0 && self.spis[word - 1].priority[i] < pmr {
                return true;
            }
        }
        false
    }

    /// [`Vgic::has_pending`] by looking at every bank.
    pub(crate) fn has_pending_scan(&self, vcpu: usize, pmr: u8) -> bool {
        for word in 0..=self.spi_words() {
            let bank = self.bank(vcpu, word);
            for i in BitIter(self.signalled(vcpu, word)) {
                if bank.priority[i] < pmr {
                    return true;
                }
            }
        }
        false
    }

    /// How many interrupts [`Vgic::fill_lrs`] would place for `vcpu` now
    /// (pending and deliverable, or active), LRs not counted.
    pub fn candidate_count(&self, vcpu: usize) -> usize {
        if vcpu >= self.nr_vcpus {
            return 0;
        }
        self.candidates(vcpu, &mut []).1
    }

    /// How many interrupts sit in `vcpu`'s LRs (filled, not yet folded).
    pub fn in_lr_count(&self, vcpu: usize) -> usize {
        self.lr_mask
            .get(vcpu)
            .map_or(0, |m| m.count_ones() as usize)
    }

    /// The list registers the model records as holding `vcpu`'s
    /// interrupts (bit `n`: LR `n`).
    pub fn lr_slots(&self, vcpu: usize) -> u64 {
        self.lr_mask.get(vcpu).copied().unwrap_or(0)
    }

    /// Whether `vcpu` is exact with nothing fresh: its next
    /// [`Vgic::refill`] writes nothing.
    pub fn refill_is_empty(&self, vcpu: usize) -> bool {
        vcpu < self.nr_vcpus
            && self.exact & (1 << vcpu) != 0
            && self.fresh_private[vcpu] == 0
            && self.fresh_len[vcpu] == 0
    }

    /// Pending, deliverable, not active, not in an LR: signalled to `vcpu`.
    /// Always inlined into its two callers, the refill and the wake check:
    /// left to itself LLVM may call it out of line, which costs 70 to 80
    /// instructions per refill (seen in the bench when unrelated code grew).
    #[inline(always)]
    fn signalled(&self, vcpu: usize, word: usize) -> u32 {
        let bank = self.bank(vcpu, word);
        let ready = bank.pending()
            & bank.enabled
            & self.group_enabled(bank.group)
            & !bank.active
            & !bank.in_lr;
        match word {
            0 => ready,
            w => ready & self.spi_target_mask[vcpu][w - 1],
        }
    }

    /// Calls `f` with the key (active first, then priority, then INTID:
    /// lower sorts first) of each of `vcpu`'s candidates.
    pub(crate) fn for_each_candidate(&self, vcpu: usize, mut f: impl FnMut(u32)) {
        for word in 0..=self.spi_words() {
            let bank = self.bank(vcpu, word);
            let mut active = bank.active & !bank.in_lr;
            if word > 0 {
                for i in BitIter(active) {
                    if usize::from(self.spi_owner[(word - 1) * 32 + i]) != vcpu {
                        active &= !(1 << i);
                    }
                }
            }
            for i in BitIter(self.signalled(vcpu, word) | active) {
                let not_active = u32::from(active & (1 << i) == 0);
                let intid = (word * 32 + i) as u32;
                f(not_active << 24 | u32::from(bank.priority[i]) << 16 | intid);
            }
        }
    }

    /// Finds `vcpu`'s candidates: the [`MAX_LRS`] best keys go to `best` in
    /// ascending order. Returns how many were kept and how many there are.
    /// (No list of every candidate: this runs before every guest entry, and
    /// there are at most as many LRs to fill as `best` holds.)
    pub(crate) fn candidates(&self, vcpu: usize, best: &mut [u32]) -> (usize, usize) {
        let cap = best.len();
        let mut n = 0;
        let mut kept = 0;
        self.for_each_candidate(vcpu, |key| {
            n += 1;
            // Insertion into the sorted best-of list.
            if kept < cap {
                kept += 1;
            } else if cap == 0 || key >= best[cap - 1] {
                return;
            }
            let mut j = kept - 1;
            while j > 0 && best[j - 1] > key {
                best[j] = best[j - 1];
                j -= 1;
            }
            best[j] = key;
        });
        (kept, n)
    }

    /// Moves `intid`'s state into list register `slot` (free) of `vcpu`.
    #[inline(always)]
    fn place(&mut self, vcpu: usize, intid: u32, slot: usize) -> ListRegister {
        if self.version == GicVersion::V2 && intid < 16 {
            return self.place_v2_sgi(vcpu, intid, slot);
        }
        let (word, i) = ((intid / 32) as usize, (intid % 32) as usize);
        let bit = 1u32 << i;
        let ctlr = self.ctlr;
        let bank = self.bank_mut(vcpu, word);
        let group_ok = groups_on(ctlr, bank.group) & bit != 0;
        let active = bank.active & bit != 0;
        let hw = bank.hw & bit != 0;
        let level = bank.edge & bit == 0;
        let pending = bank.pending() & bank.enabled & bit != 0 && group_ok && !(active && hw);
        let took_latch = pending && bank.latch & bit != 0;
        if pending {
            bank.latch &= !bit;
            bank.lr_pending |= bit;
        }
        if active {
            bank.lr_active |= bit;
        }
        bank.active &= !bit;
        bank.in_lr |= bit;
        bank.cancel_pending &= !bit;
        bank.cancel_active &= !bit;
        let lr = ListRegister {
            vintid: intid,
            pintid: hw.then_some(u32::from(bank.pintid[i])),
            priority: bank.priority[i],
            state: LrState::from_flags(pending, active),
            group1: bank.group & bit != 0,
            eoi_maintenance: !hw && level && intid >= 16,
            source_cpu: 0,
        };
        self.placed[vcpu][slot] = Placed {
            intid: intid as u16,
            source: 0,
            took_latch,
            hw,
        };
        self.lr_mask[vcpu] |= 1 << slot;
        lr
    }

    /// [`Vgic::place`] for a GICv2 SGI: one source at a time (the LR's
    /// CPUID), EOI maintenance while more sources wait.
    fn place_v2_sgi(&mut self, vcpu: usize, intid: u32, slot: usize) -> ListRegister {
        let i = intid as usize;
        let bit = 1u32 << i;
        let bank = &self.private[vcpu];
        let group_ok = groups_on(self.ctlr, bank.group) & bit != 0;
        let active = bank.active & bit != 0;
        let pending = bank.pending() & bank.enabled & bit != 0 && group_ok && !active;
        let mut source = 0;
        let mut took_latch = false;
        if active {
            source = self.sgi_active_src[vcpu][i];
        } else if pending {
            source = self.sgi_src[vcpu][i].trailing_zeros() as u8;
            self.sgi_src[vcpu][i] &= !(1 << source);
            self.sync_sgi_latch(vcpu, i);
            took_latch = true;
        }
        // More sources waiting: come back when this one is done.
        let eoi_maintenance = self.sgi_src[vcpu][i] != 0;
        let bank = &mut self.private[vcpu];
        bank.active &= !bit;
        bank.in_lr |= bit;
        if pending {
            bank.lr_pending |= bit;
        }
        if active {
            bank.lr_active |= bit;
        }
        bank.cancel_pending &= !bit;
        bank.cancel_active &= !bit;
        let lr = ListRegister {
            vintid: intid,
            pintid: None,
            priority: bank.priority[i],
            state: LrState::from_flags(pending, active),
            group1: bank.group & bit != 0,
            eoi_maintenance,
            source_cpu: source,
        };
        self.placed[vcpu][slot] = Placed {
            intid: intid as u16,
            source,
            took_latch,
            hw: false,
        };
        self.lr_mask[vcpu] |= 1 << slot;
        lr
    }

    /// Merges the state an LR came back with (`None`: as placed) into the
    /// model (the caller clears the slot). The interrupt may be a
    /// candidate again: of `vcpu`, or of the vCPU an SPI now targets.
    fn unplace(&mut self, vcpu: usize, p: Placed, state: Option<LrState>) {
        self.merge_lr(vcpu, p, state);
        self.after_unplace(vcpu, u32::from(p.intid));
    }

    /// `intid` left `vcpu`'s LRs: it may be a candidate again, unless it is
    /// neither pending nor active now (the guest completed it), which
    /// makes it no vCPU's candidate: then nothing is fresh, and a vCPU's
    /// next refill has nothing to look at for it.
    fn after_unplace(&mut self, vcpu: usize, intid: u32) {
        let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
        let bank = self.bank(vcpu, word);
        if (bank.pending() | bank.active) & bit == 0 {
            return;
        }
        self.push_fresh(vcpu, intid);
        if intid >= PRIVATE_IRQS {
            let t = self.spi_target[(intid - PRIVATE_IRQS) as usize];
            if t != NO_VCPU && usize::from(t) != vcpu {
                self.push_fresh(usize::from(t), intid);
            }
        }
    }

    /// [`Vgic::unplace`]'s state merge.
    fn merge_lr(&mut self, vcpu: usize, p: Placed, state: Option<LrState>) {
        let intid = u32::from(p.intid);
        let (word, i) = ((intid / 32) as usize, (intid % 32) as usize);
        let bit = 1u32 << i;
        let v2_sgi = self.version == GicVersion::V2 && intid < 16;
        let bank = self.bank_mut(vcpu, word);
        if bank.in_lr & bit == 0 {
            return;
        }
        let state = state.unwrap_or(LrState::from_flags(
            bank.lr_pending & bit != 0,
            bank.lr_active & bit != 0,
        ));
        let pending = state.is_pending() && bank.cancel_pending & bit == 0;
        let active = state.is_active() && bank.cancel_active & bit == 0;
        bank.in_lr &= !bit;
        bank.lr_pending &= !bit;
        bank.lr_active &= !bit;
        bank.cancel_pending &= !bit;
        bank.cancel_active &= !bit;
        if pending && p.took_latch && !v2_sgi {
            bank.latch |= bit;
        }
        if active {
            bank.active |= bit;
        }
        if bank.hw & bit != 0 {
            if state == LrState::Invalid {
                if p.hw {
                    // The guest deactivated it, and with it the physical one.
                    bank.hw &= !bit;
                } else {
                    // Forwarded while the guest handled an instance without
                    // HW: the forward stays pending (or, if the guest
                    // cleared it meanwhile, is released).
                    bank.settle_hw();
                }
            } else if !pending && !active {
                bank.hw &= !bit;
                bank.release |= bit;
            }
        }
        if v2_sgi {
            if pending && p.took_latch {
                self.sgi_src[vcpu][i] |= 1 << p.source;
                self.sync_sgi_latch(vcpu, i);
            }
            if active {
                self.sgi_active_src[vcpu][i] = p.source;
            }
        }
        if word > 0 && active {
            self.spi_owner[(word - 1) * 32 + i] = vcpu as u8;
        }
    }
}

/// The Group enable bits of `GICD_CTLR` (`ctlr`) applied to a bank's
/// groups: the interrupts whose group the distributor forwards.
#[inline(always)]
pub(crate) fn groups_on(ctlr: u32, group: u32) -> u32 {
    let g1 = if ctlr & 2 != 0 { group } else { 0 };
    let g0 = if ctlr & 1 != 0 { !group } else { 0 };
    g1 | g0
}

/// The LR of a hardware-linked interrupt placed pending (the direct
/// forwards' placement: no EOI maintenance, the HW link does the rest).
#[inline(always)]
const fn hw_pending_lr(vintid: u32, pintid: u32, priority: u8, group1: bool) -> ListRegister {
    ListRegister {
        vintid,
        pintid: Some(pintid),
        priority,
        state: LrState::Pending,
        group1,
        eoi_maintenance: false,
        source_cpu: 0,
    }
}

/// The first `cap` list-register slots.
fn slots(cap: usize) -> u64 {
    if cap >= 64 {
        u64::MAX
    } else {
        (1u64 << cap) - 1
    }
}

#[cfg(test)]
mod best_of_tests {
    use crate::{GicVersion, MAX_LRS, Vgic};
    use stratum_core::access::AccessSize;

    /// The kept keys are exactly the smallest `MAX_LRS` of all candidates,
    /// sorted, and the count is all of them.
    #[test]
    fn keeps_the_best_keys_in_order() {
        const SPIS: u32 = 96;
        let mut g = Vgic::new(GicVersion::V3, &[0], SPIS).expect("a vGIC");
        g.dist_write(0, 0x000, AccessSize::Word, 0b10)
            .expect("CTLR");
        // Every SPI pending and enabled, priorities from a scrambled order.
        for spi in 0..SPIS {
            let intid = 32 + spi;
            let prio = ((spi * 37) % 32) as u8 * 8;
            g.dist_write(
                0,
                0x400 + u64::from(intid),
                AccessSize::Byte,
                u64::from(prio),
            )
            .expect("IPRIORITYR");
        }
        for word in 1..=SPIS / 32 {
            let off = 4 * u64::from(word);
            g.dist_write(0, 0x080 + off, AccessSize::Word, u64::from(u32::MAX))
                .expect("IGROUPR");
            g.dist_write(0, 0x100 + off, AccessSize::Word, u64::from(u32::MAX))
                .expect("ISENABLER");
        }
        for spi in 0..SPIS {
            g.set_pending(32 + spi, 0).expect("pending");
        }
        let mut all = Vec::new();
        g.for_each_candidate(0, |k| all.push(k));
        assert_eq!(all.len(), SPIS as usize);
        all.sort_unstable();
        let mut best = [0u32; MAX_LRS];
        let (kept, n) = g.candidates(0, &mut best[..]);
        assert!(MAX_LRS < SPIS as usize);
        assert_eq!((kept, n), (MAX_LRS, SPIS as usize));
        assert_eq!(&best[..], &all[..MAX_LRS]);
        // As many as a 4-LR machine fills, and none (just the count).
        let mut four = [0u32; 4];
        assert_eq!(g.candidates(0, &mut four), (4, SPIS as usize));
        assert_eq!(&four[..], &all[..4]);
        assert_eq!(g.candidates(0, &mut []), (0, SPIS as usize));
        assert_eq!(g.candidate_count(0), SPIS as usize);
    }
}
