//! What the fuzz targets share: [`Input`], a cursor that turns libFuzzer's
//! bytes into the small integers, sizes and choices a target's operations
//! take. Every read succeeds: past the end it yields zeros, so any input is
//! a valid (if short) program and libFuzzer's mutations stay meaningful.
//! And [`Regs`], a vCPU's registers for the decoders and the exit policy,
//! and [`gic_version`].
//!
//! The targets themselves live in `fuzz_targets/`; `cargo xtask fuzz` runs
//! them (docs/testing.md, "Fuzzing").

use stratum_core::access::AccessSize;
use stratum_core::mmio::GuestRegs;
use stratum_core::platform::GicVersion;

/// A vCPU's general registers, SP and PC, as the decoders and the exit
/// policy see them ([`GuestRegs`]); writing a register that does not exist
/// (above X31) is a bug of the code under test.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// X0-X30.
    pub x: [u64; 31],
    /// The stack pointer.
    pub sp: u64,
    /// The program counter.
    pub pc: u64,
}

impl GuestRegs for Regs {
    fn x(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }
    fn set_x(&mut self, n: u8, v: u64) {
        assert!(n <= 31, "register X{n} does not exist");
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }
    fn sp(&self) -> u64 {
        self.sp
    }
    fn set_sp(&mut self, v: u64) {
        self.sp = v;
    }
    fn pc(&self) -> u64 {
        self.pc
    }
}

/// A GIC version from the low bit of `byte` (0: GICv3, 1: GICv2), for the
/// targets that take the machine's from their first byte.
pub fn gic_version(byte: u8) -> GicVersion {
    if byte & 1 == 0 {
        GicVersion::V3
    } else {
        GicVersion::V2
    }
}

/// A little-endian reader over a fuzz input.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    /// The next byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }

    /// A bool from the low bit of the next byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value below `n` (`n` > 0), from one byte.
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }

    /// An access width, from one byte.
    pub fn size(&mut self) -> AccessSize {
        match self.u8() & 3 {
            0 => AccessSize::Byte,
            1 => AccessSize::Half,
            2 => AccessSize::Word,
            _ => AccessSize::Double,
        }
    }

    /// An interesting 64-bit value: 0, all ones, a small number, or any.
    pub fn value(&mut self) -> u64 {
        match self.u8() & 3 {
            0 => 0,
            1 => u64::MAX,
            2 => u64::from(self.u8()),
            _ => self.u64(),
        }
    }

    fn le(&mut self, n: usize) -> u64 {
        let mut buf = [0u8; 8];
        let got = self.take(n);
        buf[..got.len()].copy_from_slice(got);
        u64::from_le_bytes(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::Input;

    #[test]
    fn reads_little_endian_then_zeros() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0201);
        assert_eq!(i.u32(), 3);
        assert!(i.is_empty());
        assert_eq!(i.u64(), 0);
        assert_eq!(i.below(7), 0);
    }
}
