//! A small seeded pseudo-random generator for the hostile test guests
//! (`gichammer`, `adversary`): Marsaglia's xorshift64, so that a failing
//! run repeats exactly from its printed seed.

/// xorshift64 (Marsaglia, 2003). The state must not be 0 ([`XorShift::new`]
/// makes sure of that).
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (0 is replaced by 1: the all-zero
    /// state never moves).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (`n` > 0; a slight modulo bias is fine here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn the_sequence_is_xorshift64_and_repeats_from_its_seed() {
        let mut a = XorShift::new(1);
        // x = 1: x ^= x << 13 → 0x2001; x ^= x >> 7 → 0x2041; x ^= x << 17.
        assert_eq!(a.next_u64(), 0x2041 ^ (0x2041 << 17));
        let mut b = XorShift::new(1);
        b.next_u64();
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(XorShift::new(0).next_u64(), 0, "a zero seed still moves");
    }

    #[test]
    fn below_and_pick_stay_in_range() {
        let mut r = XorShift::new(42);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            assert!([3, 5, 9].contains(&r.pick(&[3, 5, 9])));
        }
    }
}
