//! Register semantics shared by the GICv2 distributor, the GICv3
//! distributor and the GICv3 redistributor: the bit-per-interrupt registers
//! (`IGROUPR`, `IS/ICENABLER`, `IS/ICPENDR`, `IS/ICACTIVER`), the
//! byte-per-interrupt `IPRIORITYR` and the two-bits-per-interrupt `ICFGR`,
//! plus access-width checks.
//!
//! The frame decoders locate the bank; these helpers apply the
//! architecture's rules (IHI 0069 §12.9 and §12.11; IHI 0048B §4.3): W1S/W1C
//! for the set/clear pairs, priority bits beyond [`crate::PRIORITY_BITS`]
//! RAZ/WI, SGIs always edge-triggered, and on GICv2 SGI enables RAO/WI and
//! SGI pending bits read-only (set and cleared through `SPENDSGIR` /
//! `CPENDSGIR`, IHI 0048B §4.3.7–8).

use crate::state::{NO_VCPU, SGI_BITS};
use crate::{AccessSize, GicVersion, PRIORITY_MASK, Vgic, VgicError};

/// A bit-per-interrupt register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitReg {
    /// `IGROUPR`: read/write, 1 = Group 1.
    Group,
    /// `ISENABLER`: write 1 to enable.
    SetEnable,
    /// `ICENABLER`: write 1 to disable.
    ClearEnable,
    /// `ISPENDR`: write 1 to make pending.
    SetPending,
    /// `ICPENDR`: write 1 to clear pending.
    ClearPending,
    /// `ISACTIVER`: write 1 to activate.
    SetActive,
    /// `ICACTIVER`: write 1 to deactivate.
    ClearActive,
}

impl BitReg {
    /// The register at `offset` in the `0x080..0x400` block shared by the
    /// GICD and the GICR SGI frame, with the word index within it.
    pub(crate) fn decode(offset: u64) -> Option<(Self, usize)> {
        let reg = match offset & !0x7f {
            0x080 => Self::Group,
            0x100 => Self::SetEnable,
            0x180 => Self::ClearEnable,
            0x200 => Self::SetPending,
            0x280 => Self::ClearPending,
            0x300 => Self::SetActive,
            0x380 => Self::ClearActive,
            _ => return None,
        };
        Some((reg, ((offset & 0x7f) / 4) as usize))
    }
}

/// Checks an access: naturally aligned; words always allowed, bytes only
/// where `byte_ok`, doublewords only where `dword_ok`, halfwords never
/// (IHI 0069 §12.1.3; IHI 0048B §4.1.4).
#[inline(always)]
pub(crate) fn check_access(
    offset: u64,
    size: AccessSize,
    byte_ok: bool,
    dword_ok: bool,
) -> Result<(), VgicError> {
    // The common case first: an aligned word, which every register takes.
    if size == AccessSize::Word && offset & 3 == 0 {
        return Ok(());
    }
    if !offset.is_multiple_of(size.bytes()) {
        return Err(VgicError::Misaligned);
    }
    match size {
        AccessSize::Word => Ok(()),
        AccessSize::Byte if byte_ok => Ok(()),
        AccessSize::Double if dword_ok => Ok(()),
        _ => Err(VgicError::BadWidth),
    }
}

/// A 32-bit read of a 64-bit register `value` at byte `offset` (0 or 4)
/// within it, or the whole of it.
pub(crate) fn read_part(value: u64, offset: u64, size: AccessSize) -> u64 {
    match size {
        AccessSize::Double => value,
        _ => (value >> ((offset & 4) * 8)) & 0xffff_ffff,
    }
}

/// Writes `value` into the part of 64-bit `old` an access addresses.
pub(crate) fn write_part(old: u64, offset: u64, size: AccessSize, value: u64) -> u64 {
    match size {
        AccessSize::Double => value,
        _ => {
            let shift = (offset & 4) * 8;
            (old & !(0xffff_ffff << shift)) | ((value & 0xffff_ffff) << shift)
        }
    }
}

impl Vgic {
    /// Bits of bank 0 a GICv2 guest cannot change through `reg`.
    fn fixed_bits(&self, word: usize, reg: BitReg) -> u32 {
        match (self.version, word, reg) {
            (
                GicVersion::V2,
                0,
                BitReg::SetEnable | BitReg::ClearEnable | BitReg::SetPending | BitReg::ClearPending,
            ) => SGI_BITS,
            _ => 0,
        }
    }

    /// Reads bit register `reg`, bank `word`, as `vcpu` sees it.
    pub(crate) fn bits_read(&self, vcpu: usize, word: usize, reg: BitReg) -> u32 {
        let bank = self.bank(vcpu, word);
        let value = match reg {
            BitReg::Group => bank.group,
            BitReg::SetEnable | BitReg::ClearEnable => bank.enabled,
            BitReg::SetPending | BitReg::ClearPending => bank.pending_view(),
            BitReg::SetActive | BitReg::ClearActive => bank.active_view(),
        };
        value & self.implemented(word)
    }

    /// The implemented INTIDs of bank `word` (all 32 today: SPIs come in
    /// whole banks).
    fn implemented(&self, word: usize) -> u32 {
        if word <= self.spi_words() {
            u32::MAX
        } else {
            0
        }
    }

    /// Writes bit register `reg`, bank `word`, from `vcpu`.
    pub(crate) fn bits_write(&mut self, vcpu: usize, word: usize, reg: BitReg, value: u32) {
        let value = value & self.implemented(word) & !self.fixed_bits(word, reg);
        let bank = self.bank_mut(vcpu, word);
        let wake = match reg {
            BitReg::Group => {
                let changed = bank.group ^ value;
                bank.group = value;
                changed
            }
            BitReg::SetEnable => {
                let newly = value & !bank.enabled;
                bank.enabled |= value;
                newly
            }
            BitReg::ClearEnable => {
                bank.enabled &= !value;
                0
            }
            BitReg::SetPending => {
                bank.latch |= value;
                value
            }
            BitReg::ClearPending => {
                bank.latch &= !value;
                bank.cancel_pending |= value & bank.lr_pending;
                bank.settle_hw();
                0
            }
            BitReg::SetActive => {
                bank.active |= value;
                0
            }
            BitReg::ClearActive => {
                bank.active &= !value;
                bank.cancel_active |= value & bank.lr_active;
                bank.settle_hw();
                // A pending interrupt blocked by its active state may go.
                value
            }
        };
        if reg == BitReg::SetActive && word > 0 {
            // The activating vCPU, if the SPI has no target, owns it.
            for i in BitIter(value) {
                let spi = (word - 1) * 32 + i;
                let target = self.spi_target[spi];
                self.spi_owner[spi] = if target == NO_VCPU {
                    vcpu as u8
                } else {
                    target
                };
            }
        }
        if reg == BitReg::SetActive && word == 0 && self.version == GicVersion::V2 {
            for i in BitIter(value & SGI_BITS) {
                self.sgi_active_src[vcpu][i] = vcpu as u8;
            }
        }
        self.kick_bits(vcpu, word, wake);
    }

    /// Reads `size` priority bytes starting at `intid` (all implemented,
    /// within one bank), little-endian.
    pub(crate) fn priority_read(&self, vcpu: usize, intid: u32, size: AccessSize) -> u64 {
        let bank = self.bank(vcpu, (intid / 32) as usize);
        let first = (intid % 32) as usize;
        (0..size.bytes() as usize).fold(0, |acc, i| {
            acc | u64::from(bank.priority[first + i]) << (8 * i)
        })
    }

    /// Writes `size` priority bytes starting at `intid`.
    pub(crate) fn priority_write(&mut self, vcpu: usize, intid: u32, size: AccessSize, value: u64) {
        let word = (intid / 32) as usize;
        let first = (intid % 32) as usize;
        let bank = self.bank_mut(vcpu, word);
        let mut bits = 0;
        for i in 0..size.bytes() as usize {
            bank.priority[first + i] = (value >> (8 * i)) as u8 & PRIORITY_MASK;
            bits |= 1 << (first + i);
        }
        // A higher priority may now beat the guest's priority mask.
        self.kick_bits(vcpu, word, bits);
    }

    /// Reads `ICFGR<n>` (16 interrupts from INTID `16n`): bit `2i + 1` set
    /// for edge-triggered, bit `2i` RES0.
    pub(crate) fn config_read(&self, vcpu: usize, n: usize) -> u32 {
        let bank = self.bank(vcpu, n / 2);
        let edge = bank.edge >> (16 * (n % 2));
        (0..16).fold(0, |acc, i| acc | ((edge >> i) & 1) << (2 * i + 1))
    }

    /// Writes `ICFGR<n>`; SGI configuration (`n == 0`) is read-only.
    pub(crate) fn config_write(&mut self, vcpu: usize, n: usize, value: u32) {
        if n == 0 {
            return;
        }
        let edge = (0..16).fold(0u32, |acc, i| acc | ((value >> (2 * i + 1)) & 1) << i);
        let shift = 16 * (n % 2);
        let bank = self.bank_mut(vcpu, n / 2);
        bank.edge = (bank.edge & !(0xffff << shift)) | (edge << shift);
    }
}

/// The indices of the set bits of a word, lowest first.
pub(crate) struct BitIter(pub u32);

impl Iterator for BitIter {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let mut mask = u64::from(self.0);
        let next = BitIter64::next_of(&mut mask);
        self.0 = mask as u32;
        next
    }
}

/// The set bits of a 64-bit mask (list-register slots), lowest first.
pub(crate) struct BitIter64(pub u64);

impl BitIter64 {
    /// Takes the lowest set bit out of `mask`, giving its index.
    fn next_of(mask: &mut u64) -> Option<usize> {
        if *mask == 0 {
            return None;
        }
        let i = mask.trailing_zeros();
        *mask &= *mask - 1;
        Some(i as usize)
    }
}

impl Iterator for BitIter64 {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        Self::next_of(&mut self.0)
    }
}
