//! Decoding of A64 load/store instructions, for Data Aborts that carry no
//! instruction syndrome (`ESR_EL2.ISV == 0`): pairs, writeback forms,
//! register offsets and other accesses the CPU does not describe in
//! `ESR_EL2`.
//!
//! Only general-purpose register transfers that a guest can reasonably
//! direct at MMIO are decoded into a [`MemInsn`]:
//!
//! - single register loads/stores of every size, zero- and sign-extending,
//!   with unsigned scaled immediate, unscaled immediate (`LDUR`/`STUR`),
//!   pre-index, post-index and register offset addressing, plus `LDR`
//!   (literal);
//! - unprivileged `LDTR`/`STTR` and their sized forms, decoded as plain
//!   accesses: the stage-1 permission check they change has already passed
//!   when a stage-2 fault is taken, and the access itself is identical;
//! - pairs: `LDP`/`STP` (W and X), `LDPSW`, `LDNP`/`STNP` and the FEAT_LSUI
//!   unprivileged pairs `LDTP`/`STTP` (X), with signed offset, pre- and
//!   post-index;
//! - load-acquire/store-release singles without writeback (`LDAR`, `STLR`,
//!   `LDLAR`, `STLLR`, `LDAPR`, `LDAPUR*`, `STLUR*`), decoded as plain
//!   accesses with `acquire_release` set.
//!
//! Everything else in the load/store space returns
//! [`InsnError::Unsupported`] with the class, or [`InsnError::Unallocated`];
//! anything outside it returns [`InsnError::NotLoadStore`]. Prefetches
//! (`PRFM`, `PRFUM`) are reported as unsupported and never as an access.
//!
//! Encodings follow the Arm ARM (DDI 0487, issue K.a), C4.1 "A64
//! instruction set encoding", section "Loads and Stores" and the
//! instruction pages in C6.2. Fields marked "should be one" (`Rs`/`Rt2` of
//! `LDAR` and friends, `Rs` of `LDAPR`) must hold 0b11111: other values are
//! CONSTRAINED UNPREDICTABLE, and this decoder treats them as unallocated.
//!
//! CONSTRAINED UNPREDICTABLE register overlaps (a load's `Rt` equal to a
//! written-back base, `LDP` with `Rt == Rt2`) are decoded as they are
//! encoded; how they execute is chosen in [`crate::mmio`].

use crate::access::AccessSize;

#[cfg(test)]
mod tests;

/// A decoded load or store of general-purpose registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemInsn {
    /// One register, one element.
    Single(SingleAccess),
    /// Two registers, two consecutive elements of the same size.
    Pair(PairAccess),
}

/// A single-register load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SingleAccess {
    /// Transfer register `Rt`; 31 means XZR/WZR (a store writes zero, a
    /// load's result is discarded).
    pub rt: u8,
    /// Size of the memory access.
    pub size: AccessSize,
    /// A load sign-extends the value (`LDRSB`, `LDRSH`, `LDRSW`, …).
    pub sign_extend: bool,
    /// The register is an X register. For a load this is the destination
    /// width: a W destination has bits \[63:32\] cleared. For a store only
    /// the low `size` bytes of the register are used either way.
    pub dest_64: bool,
    /// The instruction is a store.
    pub store: bool,
    /// Load-acquire or store-release semantics.
    pub acquire_release: bool,
    /// How the address is formed.
    pub addr: Addressing,
}

/// A register-pair load or store: `rt` transfers the element at the lower
/// address, `rt2` the one `size` bytes above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairAccess {
    /// First transfer register `Rt`; 31 means XZR/WZR.
    pub rt: u8,
    /// Second transfer register `Rt2`; 31 means XZR/WZR.
    pub rt2: u8,
    /// Size of each of the two elements.
    pub size: AccessSize,
    /// A load sign-extends each element (`LDPSW`).
    pub sign_extend: bool,
    /// The registers are X registers (see [`SingleAccess::dest_64`]).
    pub dest_64: bool,
    /// The instruction is a store.
    pub store: bool,
    /// Load-acquire or store-release semantics. Always false: the
    /// FEAT_LRCPC3 pairs (`LDIAPP`, `STILP`) are not decoded.
    pub acquire_release: bool,
    /// How the address is formed.
    pub addr: Addressing,
}

/// How a load/store forms its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `[base, #imm]`: address = base + imm, no writeback.
    Offset {
        /// Base register `Rn`; 31 means SP.
        base: u8,
        /// Byte offset, already scaled.
        imm: i64,
    },
    /// `[base, #imm]!`: address = base + imm, then base = address.
    PreIndex {
        /// Base register `Rn`; 31 means SP.
        base: u8,
        /// Byte offset, already scaled.
        imm: i64,
    },
    /// `[base], #imm`: address = base, then base = base + imm.
    PostIndex {
        /// Base register `Rn`; 31 means SP.
        base: u8,
        /// Byte offset, already scaled.
        imm: i64,
    },
    /// `[base, index{, extend {#shift}}]`: address = base +
    /// (extend(index) << shift), no writeback.
    Register {
        /// Base register `Rn`; 31 means SP.
        base: u8,
        /// Index register `Rm`; 31 means XZR.
        index: u8,
        /// How the index is extended.
        extend: Extend,
        /// Left shift applied after extension: 0 or log2 of the access size.
        shift: u8,
    },
    /// PC-relative: address = address of this instruction + `pc_offset`.
    Literal {
        /// Byte offset from the instruction, already scaled.
        pc_offset: i64,
    },
}

impl Addressing {
    /// The base register whose value is written back, if any (31 = SP).
    pub const fn writeback_base(&self) -> Option<u8> {
        match *self {
            Self::PreIndex { base, .. } | Self::PostIndex { base, .. } => Some(base),
            _ => None,
        }
    }
}

/// Extension applied to a register-offset index (`option` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// `UXTW`: the low 32 bits, zero-extended.
    Uxtw,
    /// `LSL` (`UXTX`): the 64-bit register unchanged.
    Lsl,
    /// `SXTW`: the low 32 bits, sign-extended.
    Sxtw,
    /// `SXTX`: the 64-bit register unchanged.
    Sxtx,
}

impl Extend {
    /// Applies the extension to an index register's value.
    pub const fn apply(self, value: u64) -> u64 {
        match self {
            Self::Uxtw => value & 0xffff_ffff,
            Self::Sxtw => value as u32 as i32 as i64 as u64,
            Self::Lsl | Self::Sxtx => value,
        }
    }
}

impl MemInsn {
    /// Size of each element.
    pub const fn size(&self) -> AccessSize {
        match self {
            Self::Single(s) => s.size,
            Self::Pair(p) => p.size,
        }
    }

    /// Whether the instruction stores.
    pub const fn store(&self) -> bool {
        match self {
            Self::Single(s) => s.store,
            Self::Pair(p) => p.store,
        }
    }

    /// How the address is formed.
    pub const fn addr(&self) -> Addressing {
        match self {
            Self::Single(s) => s.addr,
            Self::Pair(p) => p.addr,
        }
    }

    /// Number of elements transferred: 1 or 2.
    pub const fn elements(&self) -> u64 {
        match self {
            Self::Single(_) => 1,
            Self::Pair(_) => 2,
        }
    }

    /// Total bytes accessed, starting at the computed address.
    pub const fn span(&self) -> u64 {
        self.size().bytes() * self.elements()
    }
}

/// Why a word was not decoded into a [`MemInsn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsnError {
    /// The instruction is not a load or store.
    NotLoadStore,
    /// The load/store class is not emulated for MMIO.
    Unsupported {
        /// Which class.
        what: UnsupportedKind,
    },
    /// The encoding is unallocated or CONSTRAINED UNPREDICTABLE in the
    /// load/store space.
    Unallocated,
}

/// Load/store classes that are recognised but not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsupportedKind {
    /// Transfers SIMD&FP, SVE or SME registers.
    SimdFp,
    /// Load/store exclusive (`LDXR`, `STXR`, `LDAXP`, FEAT_LSUI `LDTXR`, …).
    Exclusive,
    /// Atomic read-modify-write (`CAS`, `CASP`, `SWP`, `LDADD`, FEAT_LSE128,
    /// FEAT_THE `RCW*`, …).
    Atomic,
    /// Single-copy atomic 64-byte access (`LD64B`, `ST64B`, `ST64BV`,
    /// `ST64BV0`).
    SixtyFourByte,
    /// Memory tagging (`STG`, `LDG`, `STGP`, …).
    MemoryTag,
    /// A prefetch hint (`PRFM`, `PRFUM`): it performs no data access.
    Prefetch,
    /// FEAT_MOPS memory copy or set (`CPY*`, `SET*`).
    MemoryCopySet,
    /// Pointer-authenticated load (`LDRAA`, `LDRAB`).
    PointerAuth,
    /// FEAT_LRCPC3 writeback and pair forms (`LDIAPP`, `STILP`, `LDAPR`
    /// post-index, `STLR` pre-index).
    Rcpc3,
    /// Guarded control stack store (`GCSSTR`, `GCSSTTR`).
    GuardedControlStack,
}

const fn unsupported(what: UnsupportedKind) -> InsnError {
    InsnError::Unsupported { what }
}

const fn bit(word: u32, n: u32) -> bool {
    (word >> n) & 1 == 1
}

const fn bits(word: u32, lsb: u32, width: u32) -> u32 {
    (word >> lsb) & ((1 << width) - 1)
}

/// Sign-extends the `width`-bit field at `lsb`.
const fn sbits(word: u32, lsb: u32, width: u32) -> i64 {
    let shift = 64 - width;
    (((bits(word, lsb, width) as u64) << shift) as i64) >> shift
}

const fn reg(word: u32, lsb: u32) -> u8 {
    bits(word, lsb, 5) as u8
}

/// `size` field (two bits) to an access size.
const fn size_of(log2: u32) -> AccessSize {
    match log2 & 3 {
        0 => AccessSize::Byte,
        1 => AccessSize::Half,
        2 => AccessSize::Word,
        _ => AccessSize::Double,
    }
}

/// Decodes an A64 instruction word that caused a Data Abort.
pub fn decode(word: u32) -> Result<MemInsn, InsnError> {
    // C4.1, top-level: op0 = bit 31, op1 = bits [28:25].
    let op1 = bits(word, 25, 4);
    if op1 == 0b0010 || (op1 == 0b0000 && bit(word, 31)) {
        // SVE (op1 = 0010) and SME (op0 = 1, op1 = 0000) encodings,
        // including their loads and stores.
        return Err(unsupported(UnsupportedKind::SimdFp));
    }
    if op1 & 0b0101 != 0b0100 {
        // Loads and stores are op1 = x1x0.
        return Err(InsnError::NotLoadStore);
    }
    let simd = bit(word, 26);
    match bits(word, 28, 2) {
        0b00 => decode_exclusive_ordered(word, simd),
        0b01 if bit(word, 24) => decode_ordered_misc(word, simd),
        0b01 => decode_literal(word, simd),
        0b10 => decode_pair(word, simd),
        _ => decode_single(word, simd),
    }
}

/// Bits \[29:28\] = 00: exclusives, ordered (`LDAR`/`STLR`), compare and
/// swap, FEAT_LSUI exclusives; with bit 26 set, SIMD structure loads.
fn decode_exclusive_ordered(word: u32, simd: bool) -> Result<MemInsn, InsnError> {
    if simd {
        return Err(unsupported(UnsupportedKind::SimdFp));
    }
    let o2 = bit(word, 23);
    if bit(word, 24) {
        // FEAT_LSUI: LDTXR/STTXR family (o2 = 0) and CAST/CASPT (o2 = 1).
        return Err(unsupported(if o2 {
            UnsupportedKind::Atomic
        } else {
            UnsupportedKind::Exclusive
        }));
    }
    let size = bits(word, 30, 2);
    match (o2, bit(word, 21)) {
        (true, false) => {
            // LDAR/STLR (o0 = 1) and LDLAR/STLLR (o0 = 0): Rs and Rt2 are
            // should-be-one fields.
            if reg(word, 16) != 31 || reg(word, 10) != 31 {
                return Err(InsnError::Unallocated);
            }
            let load = bit(word, 22);
            Ok(MemInsn::Single(SingleAccess {
                rt: reg(word, 0),
                size: size_of(size),
                sign_extend: false,
                dest_64: size == 3,
                store: !load,
                acquire_release: true,
                addr: Addressing::Offset {
                    base: reg(word, 5),
                    imm: 0,
                },
            }))
        }
        // CAS (o2 = 1, o1 = 1) and CASP (o2 = 0, o1 = 1, size = 0x).
        (true, true) => Err(unsupported(UnsupportedKind::Atomic)),
        (false, true) if size < 2 => Err(unsupported(UnsupportedKind::Atomic)),
        _ => Err(unsupported(UnsupportedKind::Exclusive)),
    }
}

/// Bits \[29:27\] = 011, \[25:24\] = 00: load register (literal).
fn decode_literal(word: u32, simd: bool) -> Result<MemInsn, InsnError> {
    if simd {
        return Err(unsupported(UnsupportedKind::SimdFp));
    }
    let (size, sign_extend, dest_64) = match bits(word, 30, 2) {
        0b00 => (AccessSize::Word, false, false),
        0b01 => (AccessSize::Double, false, true),
        0b10 => (AccessSize::Word, true, true), // LDRSW
        _ => return Err(unsupported(UnsupportedKind::Prefetch)),
    };
    Ok(MemInsn::Single(SingleAccess {
        rt: reg(word, 0),
        size,
        sign_extend,
        dest_64,
        store: false,
        acquire_release: false,
        addr: Addressing::Literal {
            pc_offset: sbits(word, 5, 19) * 4,
        },
    }))
}

/// Bits \[29:27\] = 011, \[25:24\] = 01: FEAT_MOPS, FEAT_LRCPC2 unscaled
/// acquire/release, FEAT_LRCPC3, FEAT_GCS stores, memory tagging and the
/// FEAT_LSE128/FEAT_THE/FEAT_LSUI atomics.
fn decode_ordered_misc(word: u32, simd: bool) -> Result<MemInsn, InsnError> {
    let size = bits(word, 30, 2);
    let op = bits(word, 10, 2);
    if !bit(word, 21) && op == 0b01 {
        // MOPS: bit 26 is o0 here, not the SIMD bit.
        return Err(unsupported(UnsupportedKind::MemoryCopySet));
    }
    if simd {
        return Err(unsupported(UnsupportedKind::SimdFp));
    }
    if bit(word, 21) {
        return Err(unsupported(if size == 3 {
            UnsupportedKind::MemoryTag
        } else {
            UnsupportedKind::Atomic
        }));
    }
    match op {
        0b00 => {
            // LDAPUR*/STLUR*: same opc table as LDUR/STUR, never a prefetch.
            let kind = single_kind(size, bits(word, 22, 2), false)?;
            Ok(MemInsn::Single(SingleAccess {
                rt: reg(word, 0),
                size: size_of(size),
                sign_extend: kind.sign_extend,
                dest_64: kind.dest_64,
                store: kind.store,
                acquire_release: true,
                addr: Addressing::Offset {
                    base: reg(word, 5),
                    imm: sbits(word, 12, 9),
                },
            }))
        }
        0b10 if size >= 2 => Err(unsupported(UnsupportedKind::Rcpc3)),
        0b11 if size == 3 => Err(unsupported(UnsupportedKind::GuardedControlStack)),
        _ => Err(InsnError::Unallocated),
    }
}

/// Bits \[29:27\] = 101: load/store pair (no-allocate, post-index, signed
/// offset, pre-index).
fn decode_pair(word: u32, simd: bool) -> Result<MemInsn, InsnError> {
    if simd {
        return Err(unsupported(UnsupportedKind::SimdFp));
    }
    let load = bit(word, 22);
    let mode = bits(word, 23, 2);
    let (size, sign_extend, dest_64) = match (bits(word, 30, 2), load, mode) {
        (0b00, _, _) => (AccessSize::Word, false, false),
        (0b01 | 0b11, _, 0b00) => return Err(InsnError::Unallocated),
        (0b01, true, _) => (AccessSize::Word, true, true), // LDPSW
        (0b01, false, _) => return Err(unsupported(UnsupportedKind::MemoryTag)), // STGP
        // 0b10: LDP/STP X; 0b11: FEAT_LSUI LDTP/STTP X.
        _ => (AccessSize::Double, false, true),
    };
    let imm = sbits(word, 15, 7) * size.bytes() as i64;
    let base = reg(word, 5);
    let addr = match mode {
        0b01 => Addressing::PostIndex { base, imm },
        0b11 => Addressing::PreIndex { base, imm },
        _ => Addressing::Offset { base, imm }, // signed offset, no-allocate
    };
    Ok(MemInsn::Pair(PairAccess {
        rt: reg(word, 0),
        rt2: reg(word, 10),
        size,
        sign_extend,
        dest_64,
        store: !load,
        acquire_release: false,
        addr,
    }))
}

/// Bits \[29:27\] = 111: load/store register (every addressing form) and
/// the atomic memory operations.
fn decode_single(word: u32, simd: bool) -> Result<MemInsn, InsnError> {
    if simd {
        return Err(unsupported(UnsupportedKind::SimdFp));
    }
    let size = bits(word, 30, 2);
    let opc = bits(word, 22, 2);
    let base = reg(word, 5);
    let (addr, prefetch_form) = if bit(word, 24) {
        // Unsigned immediate, scaled by the access size.
        let imm = i64::from(bits(word, 10, 12)) << size;
        (Addressing::Offset { base, imm }, true)
    } else if !bit(word, 21) {
        let imm = sbits(word, 12, 9);
        match bits(word, 10, 2) {
            0b00 => (Addressing::Offset { base, imm }, true), // LDUR/STUR/PRFUM
            0b01 => (Addressing::PostIndex { base, imm }, false),
            0b10 => (Addressing::Offset { base, imm }, false), // LDTR/STTR
            _ => (Addressing::PreIndex { base, imm }, false),
        }
    } else {
        match bits(word, 10, 2) {
            0b10 => {
                let extend = match bits(word, 13, 3) {
                    0b010 => Extend::Uxtw,
                    0b011 => Extend::Lsl,
                    0b110 => Extend::Sxtw,
                    0b111 => Extend::Sxtx,
                    _ => return Err(InsnError::Unallocated),
                };
                let shift = if bit(word, 12) { size as u8 } else { 0 };
                let addr = Addressing::Register {
                    base,
                    index: reg(word, 16),
                    extend,
                    shift,
                };
                (addr, true)
            }
            0b00 => return decode_atomic(word),
            // LDRAA/LDRAB.
            _ if size == 3 => return Err(unsupported(UnsupportedKind::PointerAuth)),
            _ => return Err(InsnError::Unallocated),
        }
    };
    let kind = single_kind(size, opc, prefetch_form)?;
    Ok(MemInsn::Single(SingleAccess {
        rt: reg(word, 0),
        size: size_of(size),
        sign_extend: kind.sign_extend,
        dest_64: kind.dest_64,
        store: kind.store,
        acquire_release: false,
        addr,
    }))
}

/// Atomic memory operations (bits \[29:27\] = 111, bit 21 = 1, bits
/// \[11:10\] = 00), of which only `LDAPR` is a plain load.
fn decode_atomic(word: u32) -> Result<MemInsn, InsnError> {
    let size = bits(word, 30, 2);
    let (acquire, release) = (bit(word, 23), bit(word, 22));
    let o3 = bit(word, 15);
    let opc = bits(word, 12, 3);
    if o3 && opc == 0b100 {
        if !acquire || release || reg(word, 16) != 31 {
            return Err(InsnError::Unallocated);
        }
        // LDAPR, LDAPRB, LDAPRH.
        return Ok(MemInsn::Single(SingleAccess {
            rt: reg(word, 0),
            size: size_of(size),
            sign_extend: false,
            dest_64: size == 3,
            store: false,
            acquire_release: true,
            addr: Addressing::Offset {
                base: reg(word, 5),
                imm: 0,
            },
        }));
    }
    if size == 3 && !acquire && !release && o3 && matches!(opc, 0b001 | 0b010 | 0b011 | 0b101) {
        return Err(unsupported(UnsupportedKind::SixtyFourByte));
    }
    Err(unsupported(UnsupportedKind::Atomic))
}

/// What a single-register `(size, opc)` pair does.
struct SingleKind {
    store: bool,
    sign_extend: bool,
    dest_64: bool,
}

/// The shared `size`/`opc` table of the load/store register classes.
/// `prefetch_form` says whether `size = 11, opc = 10` is `PRFM`/`PRFUM`
/// here (unsigned offset, unscaled, register offset) or unallocated
/// (pre/post-index, unprivileged, LRCPC2).
fn single_kind(size: u32, opc: u32, prefetch_form: bool) -> Result<SingleKind, InsnError> {
    let kind = |store, sign_extend, dest_64| {
        Ok(SingleKind {
            store,
            sign_extend,
            dest_64,
        })
    };
    match (size, opc) {
        (_, 0b00) => kind(true, false, size == 3),
        (_, 0b01) => kind(false, false, size == 3),
        (0..=2, 0b10) => kind(false, true, true), // LDRS[BHW] to X
        (_, 0b10) if prefetch_form => Err(unsupported(UnsupportedKind::Prefetch)),
        (0 | 1, 0b11) => kind(false, true, false), // LDRS[BH] to W
        _ => Err(InsnError::Unallocated),
    }
}
