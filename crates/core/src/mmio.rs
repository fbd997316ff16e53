//! Emulation of a guest's trapped MMIO access: turn a decoded Data Abort
//! into an [`MmioPlan`] (which device accesses to make, with which store
//! values), and after the device model has run, [`complete`] the
//! instruction (write loaded values to registers, write back the base).
//!
//! Two ways in:
//! - [`plan_from_syndrome`] for aborts with a valid instruction syndrome
//!   (`ESR_EL2.ISV == 1`, see [`crate::esr::AccessSyndrome`]): one access
//!   at the faulting IPA;
//! - [`plan_from_insn`] for aborts without one (`ISV == 0`), from the guest
//!   instruction decoded by [`crate::insn::decode`] (A64 only: an AArch32
//!   guest's instruction must not be passed to that decoder).
//!
//! The plan carries everything needed to finish the instruction (which
//! registers receive loaded values and how they are extended, and the base
//! register writeback), so the glue only performs the accesses in order and
//! hands the loaded values back. Advancing the PC past the instruction (by
//! 4; `ESR_EL2.IL`) stays with the caller.
//!
//! Guest input is an allegation: the instruction was read from guest memory
//! after the fault and may not be the one that faulted. [`plan_from_insn`]
//! therefore checks that `FAR_EL2` lies within the span the instruction
//! accesses, and only ever produces IPAs inside the 4 KiB page of the
//! hardware-reported faulting IPA.
//!
//! CONSTRAINED UNPREDICTABLE cases (Arm ARM DDI 0487 K.a, appendix K1
//! "Architectural Constraints on UNPREDICTABLE Behaviors", and the
//! pseudocode of the load/store instruction pages in C6.2), resolved as
//! several CPUs do:
//! - a load with writeback whose `Rt` (or `Rt2`) is the base register
//!   (`Unpredictable_WBOVERLAPLD`): *the load wins*, the writeback is
//!   suppressed (`Constraint_WBSUPPRESS`);
//! - a store with writeback whose `Rt`/`Rt2` is the base
//!   (`Unpredictable_WBOVERLAPST`): the register's value *before* the
//!   writeback is stored (`Constraint_NONE`);
//! - `LDP` with `Rt == Rt2` (`Unpredictable_LDPOVERLAP`): the register is
//!   UNKNOWN; it receives the second element (`Rt2` is written last).

use crate::access::AccessSize;
use crate::addr::{Gva, Ipa};
use crate::esr::AccessSyndrome;
use crate::insn::{Addressing, MemInsn};

/// The guest registers an MMIO emulation reads and writes: the current
/// vCPU's saved context at the time of the exit.
pub trait GuestRegs {
    /// `Xn` for `n` in 0..=30; `n == 31` must return 0 (XZR).
    fn x(&self, n: u8) -> u64;
    /// Sets `Xn` for `n` in 0..=30; `n == 31` (XZR) must discard the value.
    fn set_x(&mut self, n: u8, v: u64);
    /// The stack pointer the guest was using (`SP_EL0` or `SP_EL1`, by
    /// `SPSR_EL2.M[0]`).
    fn sp(&self) -> u64;
    /// Sets that same stack pointer.
    fn set_sp(&mut self, v: u64);
    /// Address of the faulting instruction (`ELR_EL2` at the exit).
    fn pc(&self) -> u64;
}

/// One device access to perform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// Guest-physical address of the first byte.
    pub ipa: Ipa,
    /// Width of the access.
    pub size: AccessSize,
    /// For a store, the value to write (already truncated to `size`);
    /// `None` for a load.
    pub store_value: Option<u64>,
}

/// Where a loaded element goes and how it is extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LoadTarget {
    reg: u8,
    size: AccessSize,
    sign_extend: bool,
    dest_64: bool,
}

impl LoadTarget {
    /// The register value for a loaded element; bits of `value` above
    /// `size` are ignored.
    const fn extend(&self, value: u64) -> u64 {
        let value = value & self.size.mask();
        let value = if self.sign_extend {
            let shift = 64 - 8 * self.size.bytes() as u32;
            (((value << shift) as i64) >> shift) as u64
        } else {
            value
        };
        if self.dest_64 {
            value
        } else {
            value & 0xffff_ffff
        }
    }
}

/// A base-register writeback: `base` (31 = SP) receives `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Writeback {
    base: u8,
    value: u64,
}

/// The device accesses for one trapped instruction, in order, and how to
/// finish the instruction once they are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioPlan {
    accesses: [MmioAccess; 2],
    /// `Some` for each access of a load.
    targets: [Option<LoadTarget>; 2],
    /// 1 or 2.
    count: usize,
    writeback: Option<Writeback>,
}

impl MmioPlan {
    /// The accesses to perform, in order (one, or two for a pair, the lower
    /// address first).
    pub fn accesses(&self) -> &[MmioAccess] {
        self.accesses.get(..self.count).unwrap_or_default()
    }

    /// Whether the accesses are loads, whose values [`complete`] expects.
    pub const fn is_load(&self) -> bool {
        self.targets[0].is_some()
    }
}

/// Why an instruction-decoded access cannot be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// FAR_EL2 does not lie within the bytes the instruction accesses: the
    /// instruction read from guest memory is not the one that faulted.
    FarMismatch,
    /// The access spans more than the 4 KiB page of the faulting IPA.
    CrossesPage,
    /// Address arithmetic on the faulting IPA overflowed.
    Overflow,
}

/// Why [`complete`] rejected its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompleteError {
    /// The number of loaded values does not match the plan (its load
    /// accesses, or none for a store).
    LoadedCount {
        /// Values the plan needs.
        expected: usize,
        /// Values given.
        got: usize,
    },
}

const PAGE_SHIFT: u32 = 12;
/// Bits \[55:0\] of a virtual address: bits \[63:56\] may hold a tag under
/// Top Byte Ignore, and FAR_EL2\[63:56\] may then differ from it.
const VA_MASK: u64 = (1 << 56) - 1;

/// `Xn`, with 31 read as XZR whatever the `GuestRegs` implementation does.
fn read_x(regs: &impl GuestRegs, n: u8) -> u64 {
    if n == 31 { 0 } else { regs.x(n) }
}

/// `Xn` or SP as a base register (31 = SP).
fn read_base(regs: &impl GuestRegs, n: u8) -> u64 {
    if n == 31 { regs.sp() } else { regs.x(n) }
}

/// The register value a load described by syndrome `s` puts into `Xt`,
/// from the `SAS` bytes the device returned (extended as `SSE` and `SF`
/// say; bits above the access are ignored).
#[inline]
pub const fn syndrome_load_value(s: &AccessSyndrome, value: u64) -> u64 {
    LoadTarget {
        reg: s.reg,
        size: s.size,
        sign_extend: s.sign_extend,
        dest_64: s.sixty_four,
    }
    .extend(value)
}

/// Plans the single access described by a valid instruction syndrome
/// (`ESR_EL2.ISV == 1`, so no writeback). `write` is `ESR_EL2.WnR`;
/// `fault_ipa` is [`crate::esr::fault_ipa`]. A store writes the low `size`
/// bytes of `Xt` (0 for XZR).
pub fn plan_from_syndrome(
    s: &AccessSyndrome,
    write: bool,
    fault_ipa: Ipa,
    regs: &impl GuestRegs,
) -> MmioPlan {
    let store_value = if write {
        Some(read_x(regs, s.reg) & s.size.mask())
    } else {
        None
    };
    let target = if write {
        None
    } else {
        Some(LoadTarget {
            reg: s.reg,
            size: s.size,
            sign_extend: s.sign_extend,
            dest_64: s.sixty_four,
        })
    };
    let access = MmioAccess {
        ipa: fault_ipa,
        size: s.size,
        store_value,
    };
    MmioPlan {
        accesses: [access; 2],
        targets: [target, None],
        count: 1,
        writeback: None,
    }
}

/// Plans the accesses of a load/store decoded from the guest instruction
/// (`ESR_EL2.ISV == 0`).
///
/// Computes the virtual address the instruction accesses (base register or
/// SP, plus immediate or extended and shifted index; the base itself for
/// post-index; the PC for a literal), checks that `far` (FAR_EL2) lies
/// within the accessed span (ignoring address bits \[63:56\]), and derives
/// the IPA of the first byte as `fault_ipa - (far - va)`. The whole span
/// must lie in the 4 KiB page of `fault_ipa`: beyond it, the VA-to-IPA
/// mapping is unknown. A pair yields two accesses of the element size.
pub fn plan_from_insn(
    insn: &MemInsn,
    regs: &impl GuestRegs,
    far: Gva,
    fault_ipa: Ipa,
) -> Result<MmioPlan, PlanError> {
    let (va, writeback) = match insn.addr() {
        Addressing::Offset { base, imm } => (read_base(regs, base).wrapping_add_signed(imm), None),
        Addressing::PreIndex { base, imm } => {
            let va = read_base(regs, base).wrapping_add_signed(imm);
            (va, Some(Writeback { base, value: va }))
        }
        Addressing::PostIndex { base, imm } => {
            let va = read_base(regs, base);
            let value = va.wrapping_add_signed(imm);
            (va, Some(Writeback { base, value }))
        }
        Addressing::Register {
            base,
            index,
            extend,
            shift,
        } => {
            // shift is 0..=3 by construction; `wrapping_shl` keeps this
            // total for any value.
            let offset = extend
                .apply(read_x(regs, index))
                .wrapping_shl(u32::from(shift));
            (read_base(regs, base).wrapping_add(offset), None)
        }
        Addressing::Literal { pc_offset } => (regs.pc().wrapping_add_signed(pc_offset), None),
    };

    let span = insn.span();
    let offset = far.0.wrapping_sub(va) & VA_MASK;
    if offset >= span {
        return Err(PlanError::FarMismatch);
    }
    let start = fault_ipa.0.checked_sub(offset).ok_or(PlanError::Overflow)?;
    let last = start.checked_add(span - 1).ok_or(PlanError::Overflow)?;
    let page = fault_ipa.0 >> PAGE_SHIFT;
    if start >> PAGE_SHIFT != page || last >> PAGE_SHIFT != page {
        return Err(PlanError::CrossesPage);
    }

    let size = insn.size();
    let (regs_pair, sign_extend, dest_64, store, count) = match *insn {
        MemInsn::Single(s) => ([s.rt, 31], s.sign_extend, s.dest_64, s.store, 1),
        MemInsn::Pair(p) => ([p.rt, p.rt2], p.sign_extend, p.dest_64, p.store, 2),
    };
    let mut accesses = [MmioAccess {
        ipa: Ipa(start),
        size,
        store_value: None,
    }; 2];
    let mut targets = [None; 2];
    let elements = accesses.iter_mut().zip(&mut targets).zip(regs_pair);
    for (i, ((access, target), reg)) in elements.enumerate().take(count) {
        // At most `last`, checked above.
        access.ipa = Ipa(start + i as u64 * size.bytes());
        if store {
            access.store_value = Some(read_x(regs, reg) & size.mask());
        } else {
            *target = Some(LoadTarget {
                reg,
                size,
                sign_extend,
                dest_64,
            });
        }
    }
    Ok(MmioPlan {
        accesses,
        targets,
        count,
        writeback,
    })
}

/// Finishes the instruction after the plan's accesses: writes each loaded
/// value (one per access, in order, for a load; none for a store) to its
/// destination with the instruction's zero/sign extension (a W destination
/// has bits \[63:32\] cleared), then applies the base writeback of a pre- or
/// post-index form (to SP when the base is 31). Writeback is suppressed
/// when the base is also a load destination (see the module docs). Bits of
/// a loaded value above the access size are ignored.
pub fn complete(
    plan: &MmioPlan,
    loaded: &[u64],
    regs: &mut impl GuestRegs,
) -> Result<(), CompleteError> {
    let expected = if plan.is_load() { plan.count } else { 0 };
    if loaded.len() != expected {
        return Err(CompleteError::LoadedCount {
            expected,
            got: loaded.len(),
        });
    }
    for (target, &value) in plan.targets.iter().flatten().zip(loaded) {
        if target.reg != 31 {
            regs.set_x(target.reg, target.extend(value));
        }
    }
    if let Some(wb) = plan.writeback {
        let overlaps_load =
            wb.base != 31 && plan.targets.iter().flatten().any(|t| t.reg == wb.base);
        if wb.base == 31 {
            regs.set_sp(wb.value);
        } else if !overlaps_load {
            regs.set_x(wb.base, wb.value);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_regs;
#[cfg(test)]
mod tests;
