//! Eight-bytes-at-a-time scanning ("SIMD within a register") for the two inner loops that
//! dominate JSON cost: finding the end of a string in the reader, and finding bytes that need
//! escaping in the writer. Plain integer arithmetic on `u64`, no `unsafe`, no platform code.
//!
//! Each test answers "does this word contain such a byte?" exactly (the classic bit tricks
//! are exact for the "any" question, only imprecise about *which* byte); callers then look at
//! the bytes of that word one by one.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Non-zero iff some byte of `x` is zero.
#[inline(always)]
const fn has_zero(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Non-zero iff some byte of `x` equals `b`.
#[inline(always)]
pub(crate) const fn has_byte(x: u64, b: u8) -> u64 {
    has_zero(x ^ (LO * b as u64))
}

/// Non-zero iff some byte of `x` is below `n` (exact for `n <= 128`).
#[inline(always)]
pub(crate) const fn has_less(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * n as u64) & !x & HI
}

/// Non-zero if some byte of `x` is >= 0x7F (may also report a byte that follows 0xFF:
/// callers re-check byte by byte, so a false positive only costs time).
#[inline(always)]
pub(crate) const fn has_del_or_high(x: u64) -> u64 {
    (x | x.wrapping_add(LO)) & HI
}

/// The 8 bytes at `i` as a little-endian word, if there are 8.
#[inline(always)]
pub(crate) fn word_at(b: &[u8], i: usize) -> Option<u64> {
    b.get(i..)
        .and_then(|r| r.first_chunk::<8>())
        .map(|c| u64::from_le_bytes(*c))
}

/// True iff the word holds a byte that ends or interrupts a JSON string: `"`, `\` or a
/// control character.
#[inline(always)]
pub(crate) fn string_stop(x: u64) -> bool {
    has_byte(x, b'"') | has_byte(x, b'\\') | has_less(x, 0x20) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_are_exact_for_any_byte_position() {
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let x = u64::from_le_bytes(w);
                assert_eq!(
                    string_stop(x),
                    b == b'"' || b == b'\\' || b < 0x20,
                    "{b:#x}@{pos}"
                );
                assert_eq!(has_less(x, 0x20) != 0, b < 0x20);
                if b >= 0x7F {
                    assert!(has_del_or_high(x) != 0, "{b:#x}");
                }
            }
        }
        // Neighbouring values that could disturb the borrow trick.
        let x = u64::from_le_bytes([0x21, 0x20, 0x23, 0x5B, 0x5D, 0xFF, 0x80, 0x7E]);
        assert!(!string_stop(x));
        assert_eq!(word_at(b"1234567", 0), None);
        assert_eq!(
            word_at(b"12345678", 0),
            Some(u64::from_le_bytes(*b"12345678"))
        );
    }
}
