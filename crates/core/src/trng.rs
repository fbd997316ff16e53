//! The per-VM random number generator behind SMCCC TRNG (`TRNG_RND32`,
//! `TRNG_RND64`): ChaCha20 (RFC 8439) as a deterministic random bit
//! generator with fast key erasure.
//!
//! The source is documented, not hardware: each VM's generator is keyed
//! at every boot from the host's entropy (16 bytes the host tool draws
//! from the kernel's CSPRNG into the boot bundle; zero under
//! `--deterministic`, so runs repeat), the VM's index, its boot count and
//! the physical counter at load. Every request first draws a fresh key
//! from the stream and discards the old one, so a guest that learns the
//! state cannot recover earlier outputs (backtracking resistance); VMs
//! never share a state. The loader's `/chosen/rng-seed` is folded into the
//! bundle's bytes ([`fold_seed`]), so a system image built once (which
//! carries no entropy) still gets fresh entropy at every boot. A host with
//! a firmware TRNG would feed it here too.

use core::fmt;

/// `entropy` with every byte of `seed` XORed in, byte `i` of the seed into
/// byte `i % 16`: a seed longer than 16 bytes keeps all its bits' effect,
/// an absent or empty one changes nothing.
pub fn fold_seed(mut entropy: [u8; 16], seed: &[u8]) -> [u8; 16] {
    for (i, b) in seed.iter().enumerate() {
        entropy[i % 16] ^= b;
    }
    entropy
}

/// One ChaCha20 block of `key` at block counter `counter` (nonce 0).
fn chacha20_block(key: &[u32; 8], counter: u64) -> [u32; 16] {
    // "expand 32-byte k".
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    init[4..12].copy_from_slice(key);
    init[12] = counter as u32;
    init[13] = (counter >> 32) as u32;
    let mut x = init;
    fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    }
    for _ in 0..10 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    for (o, i) in x.iter_mut().zip(init) {
        *o = o.wrapping_add(i);
    }
    x
}

/// A VM's generator.
#[derive(Clone)]
pub struct Trng {
    key: [u32; 8],
}

impl fmt::Debug for Trng {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Trng { .. }")
    }
}

impl Trng {
    /// The generator of boot `boot` of VM `vm`, from the host's `entropy`
    /// and a `salt` (the physical counter at load).
    pub fn new(entropy: &[u8; 16], vm: u64, boot: u64, salt: u64) -> Self {
        let mut key = [0u32; 8];
        for (k, chunk) in key[..4].iter_mut().zip(entropy.chunks_exact(4)) {
            *k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        key[4] = vm as u32;
        key[5] = boot as u32;
        key[6] = salt as u32;
        key[7] = (salt >> 32) as u32;
        // Mix the inputs once so the key is not their plain concatenation.
        let block = chacha20_block(&key, u64::MAX);
        let mut mixed = [0u32; 8];
        mixed.copy_from_slice(&block[..8]);
        Self { key: mixed }
    }

    /// 192 fresh bits as three words (`x1, x2, x3`); the key moves on
    /// first (fast key erasure).
    pub fn next192(&mut self) -> [u64; 3] {
        let block = chacha20_block(&self.key, 0);
        self.key.copy_from_slice(&block[..8]);
        let w = |i: usize| u64::from(block[i]) | u64::from(block[i + 1]) << 32;
        [w(8), w(10), w(12)]
    }

    /// The `TRNG_RND` answer for `bits` bits in registers of `reg_bits`
    /// bits (32 for `RND32`, 64 for `RND64`): `x1..x3` with the `bits`
    /// least significant bits of the value `x1:x2:x3` (`x3` the lowest)
    /// random and every other bit zero, or `None` when `bits` is 0 or more
    /// than three registers hold.
    pub fn rnd(&mut self, bits: u64, reg_bits: u32) -> Option<[u64; 3]> {
        let max = 3 * u64::from(reg_bits);
        if bits == 0 || bits > max {
            return None;
        }
        let raw = self.next192();
        let mut out = [0u64; 3];
        let mut left = bits;
        // x3 holds the lowest bits, then x2, then x1.
        for (slot, value) in out.iter_mut().rev().zip(raw) {
            let take = left.min(u64::from(reg_bits));
            *slot = if take == 64 {
                value
            } else {
                value & ((1u64 << take) - 1)
            };
            left -= take;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaders_seed_is_folded_into_the_bundles_entropy() {
        let bundle = [7u8; 16];
        assert_eq!(fold_seed(bundle, &[]), bundle, "no seed: unchanged");
        let seed: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
        let folded = fold_seed([0; 16], &seed);
        assert_eq!(folded[0], 1 ^ 17);
        assert_eq!(folded[15], 16 ^ 32);
        assert_ne!(fold_seed(bundle, &seed[..3]), bundle);
        assert_eq!(
            fold_seed(fold_seed(bundle, &seed), &seed),
            bundle,
            "XOR undoes itself"
        );
    }

    #[test]
    fn the_block_function_matches_rfc_8439() {
        // RFC 8439 appendix A.1, test vector #1: key 0, nonce 0, block
        // counter 0; the keystream bytes as little-endian words.
        let expected = [
            0xade0_b876,
            0x903d_f1a0,
            0xe56a_5d40,
            0x28bd_8653,
            0xb819_d2bd,
            0x1aed_8da0,
            0xccef_36a8,
            0xc70d_778b,
            0x7c59_41da,
            0x8d48_5751,
            0x3fe0_2477,
            0x374a_d8b8,
            0xf4b8_436a,
            0x1ca1_1815,
            0x69b6_87c3,
            0x8665_eeb2,
        ];
        assert_eq!(chacha20_block(&[0; 8], 0), expected);
        // Vector #2: counter 1.
        assert_eq!(chacha20_block(&[0; 8], 1)[0], 0xbee7_079f);
    }

    #[test]
    fn each_request_moves_the_key_and_vms_differ() {
        let e = [7u8; 16];
        let mut a = Trng::new(&e, 0, 1, 1000);
        let mut a2 = Trng::new(&e, 0, 1, 1000);
        let b = Trng::new(&e, 1, 1, 1000).next192();
        let first = a.next192();
        assert_eq!(first, a2.next192(), "same inputs, same stream");
        assert_ne!(first, a.next192(), "a second request differs");
        assert_ne!(first, b, "another VM differs");
        assert_ne!(
            first,
            Trng::new(&e, 0, 2, 1000).next192(),
            "another boot differs"
        );
        assert_eq!(format!("{a:?}"), "Trng { .. }");
    }

    #[test]
    fn rnd_keeps_exactly_the_requested_low_bits() {
        let mut t = Trng::new(&[1; 16], 3, 1, 5);
        let full = t.rnd(192, 64).unwrap();
        assert!(full.iter().all(|&w| w != 0), "192 random bits: {full:x?}");
        let r = t.rnd(70, 64).unwrap();
        assert_eq!(r[0], 0, "x1 unused");
        assert!(r[1] < 1 << 6, "x2 holds 6 bits: {:#x}", r[1]);
        let r = t.rnd(96, 32).unwrap();
        assert!(
            r.iter().all(|&w| w <= u64::from(u32::MAX)),
            "32-bit registers"
        );
        let r = t.rnd(1, 32).unwrap();
        assert_eq!((r[0], r[1]), (0, 0));
        assert!(r[2] <= 1);
        assert_eq!(t.rnd(0, 64), None);
        assert_eq!(t.rnd(193, 64), None);
        assert_eq!(t.rnd(97, 32), None);
        // Bits are not stuck: over many draws each of the 64 bits of x3
        // is seen set and clear.
        let (mut ones, mut zeros) = (0u64, 0u64);
        for _ in 0..64 {
            let w = t.rnd(64, 64).unwrap()[2];
            ones |= w;
            zeros |= !w;
        }
        assert_eq!((ones, zeros), (u64::MAX, u64::MAX));
    }
}
