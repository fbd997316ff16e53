//! Address newtypes. Host-physical, guest-physical (IPA) and guest-virtual
//! addresses are distinct types; converting between them is always a named,
//! checked operation, never a bare `as`.

use core::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// `self + bytes`, or `None` on overflow.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// Offset of `self` from `base`, or `None` when `self < base`.
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A host-physical address (what the MMU's output is, after stage 2).
    Pa, "PA"
);
address_type!(
    /// An intermediate physical address: what a guest believes is physical.
    Ipa, "IPA"
);
address_type!(
    /// A guest-virtual address (a guest's stage-1 input).
    Gva, "GVA"
);

/// A half-open range `[start, start + size)` of guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpaRange {
    /// First address.
    pub start: Ipa,
    /// Size in bytes.
    pub size: u64,
}

impl IpaRange {
    /// A range; `None` if `start + size` overflows.
    pub const fn new(start: Ipa, size: u64) -> Option<Self> {
        match start.0.checked_add(size) {
            Some(_) => Some(Self { start, size }),
            None => None,
        }
    }
    /// One past the last address.
    pub const fn end(&self) -> Ipa {
        Ipa(self.start.0 + self.size)
    }
    /// Whether `ipa` lies inside.
    pub const fn contains(&self, ipa: Ipa) -> bool {
        ipa.0 >= self.start.0 && ipa.0 - self.start.0 < self.size
    }
    /// Whether `[ipa, ipa + len)` lies wholly inside.
    pub const fn contains_span(&self, ipa: Ipa, len: u64) -> bool {
        match ipa.0.checked_sub(self.start.0) {
            Some(off) => off <= self.size && len <= self.size - off,
            None => false,
        }
    }
    /// Whether two ranges share any address.
    pub const fn overlaps(&self, other: &IpaRange) -> bool {
        self.start.0 < other.end().0 && other.start.0 < self.end().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_math() {
        let r = IpaRange::new(Ipa(0x1000), 0x1000).expect("no overflow");
        assert!(r.contains(Ipa(0x1000)));
        assert!(r.contains(Ipa(0x1fff)));
        assert!(!r.contains(Ipa(0x2000)));
        assert!(!r.contains(Ipa(0xfff)));
        assert!(r.contains_span(Ipa(0x1ff8), 8));
        assert!(!r.contains_span(Ipa(0x1ff8), 9));
        assert!(!r.contains_span(Ipa(0x0), 8));
        assert!(r.overlaps(&IpaRange::new(Ipa(0x1fff), 1).expect("ok")));
        assert!(!r.overlaps(&IpaRange::new(Ipa(0x2000), 1).expect("ok")));
        assert!(IpaRange::new(Ipa(u64::MAX), 2).is_none());
        assert_eq!(Pa(0x1234).align_down(0x1000), Pa(0x1000));
        assert!(Ipa(0x20_0000).is_aligned(0x20_0000));
        assert_eq!(format!("{:?}", Pa(0x10)), "PA:0x10");
    }
}
