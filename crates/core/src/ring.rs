//! A fixed-capacity byte FIFO that never blocks and never allocates: when
//! full, new bytes are dropped and counted (console input the guest does not
//! read must not grow the hypervisor, nor stall it).

/// A FIFO of at most `N` bytes.
#[derive(Clone, Debug)]
pub struct ByteRing<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
    dropped: u64,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// Appends `byte`; when full, drops it (counted) and returns false.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.len == N {
            self.dropped += 1;
            return false;
        }
        self.buf[(self.head + self.len) % N] = byte;
        self.len += 1;
        true
    }

    /// The oldest byte, removed.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(byte)
    }

    /// Bytes held.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the ring holds nothing.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes dropped because the ring was full.
    pub const fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_wraparound_and_overflow() {
        let mut r = ByteRing::<4>::new();
        assert!(r.is_empty());
        for b in b"abc" {
            assert!(r.push(*b));
        }
        assert_eq!(r.pop(), Some(b'a'));
        assert!(r.push(b'd'));
        assert!(r.push(b'e'));
        assert!(!r.push(b'f'), "full");
        assert_eq!(r.dropped(), 1);
        assert_eq!(r.len(), 4);
        let out: Vec<u8> = core::iter::from_fn(|| r.pop()).collect();
        assert_eq!(out, b"bcde");
        assert_eq!(r.pop(), None);
    }
}
