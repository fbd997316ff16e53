//! The shape of one guest memory access, shared by the exit decoder, the
//! instruction decoder and the device models.

/// Width of a single memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessSize {
    /// 1 byte.
    Byte,
    /// 2 bytes.
    Half,
    /// 4 bytes.
    Word,
    /// 8 bytes.
    Double,
}

impl AccessSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Byte => 1,
            Self::Half => 2,
            Self::Word => 4,
            Self::Double => 8,
        }
    }

    /// From log2 of the size (the `size`/`SAS` encoding: 0 = byte … 3 = doubleword).
    pub const fn from_log2(log2: u32) -> Option<Self> {
        match log2 {
            0 => Some(Self::Byte),
            1 => Some(Self::Half),
            2 => Some(Self::Word),
            3 => Some(Self::Double),
            _ => None,
        }
    }

    /// A mask of the access's low bits (`0xff` for a byte, …).
    pub const fn mask(self) -> u64 {
        match self {
            Self::Double => u64::MAX,
            _ => (1u64 << (self.bytes() * 8)) - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(AccessSize::from_log2(2), Some(AccessSize::Word));
        assert_eq!(AccessSize::from_log2(4), None);
        assert_eq!(AccessSize::Half.mask(), 0xffff);
        assert_eq!(AccessSize::Double.mask(), u64::MAX);
        assert_eq!(AccessSize::Byte.bytes(), 1);
    }
}
