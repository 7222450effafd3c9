//! Which bytes of a text are ASCII letters or digits and which are not
//! ASCII, one bit a byte, so that the tokeniser finds a word's ends with a
//! bit scan instead of a test a byte; and the text with its ASCII capitals
//! lowered, so that a word is looked up where it lies.
//!
//! Why: inside the broker the SmartModules run with fuel metering on, so
//! every WASM instruction a byte costs counts. With WASM SIMD, sixteen bytes
//! are classified in a dozen instructions; elsewhere a plain loop gives the
//! same bits.

/// Bit `i` of word `i / 64` stands for byte `i` of the text.
#[derive(Debug, Default)]
pub struct ByteClasses {
    pub alphanumeric: Vec<u64>,
    pub non_ascii: Vec<u64>,
    /// The text's bytes, `A`-`Z` lowered, then [`PADDING`] zero bytes, so
    /// that eight bytes can be read from any position of the text.
    pub lower: Vec<u8>,
    /// Whether any byte is not ASCII.
    pub any_non_ascii: bool,
}

/// Zero bytes after the text in [`ByteClasses::lower`].
pub const PADDING: usize = 8;

impl ByteClasses {
    /// Classify `bytes`, reusing the bitmaps' memory.
    pub fn fill(&mut self, bytes: &[u8]) {
        let words = bytes.len().div_ceil(64);
        for map in [&mut self.alphanumeric, &mut self.non_ascii] {
            map.clear();
            map.resize(words, 0);
        }
        self.lower.clear();
        self.lower.resize(bytes.len() + PADDING, 0);
        // Advanced only by the SIMD loop, which only WASM has.
        #[cfg_attr(
            not(all(target_arch = "wasm32", target_feature = "simd128")),
            allow(unused_mut)
        )]
        let mut at = 0;
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        while at + 16 <= bytes.len() {
            let (alnum, high) = simd::classify16(&bytes[at..at + 16], &mut self.lower[at..at + 16]);
            let (word, shift) = (at / 64, at % 64);
            self.alphanumeric[word] |= u64::from(alnum) << shift;
            self.non_ascii[word] |= u64::from(high) << shift;
            at += 16;
        }
        for (i, &b) in bytes.iter().enumerate().skip(at) {
            let bit = 1u64 << (i % 64);
            if b.is_ascii_alphanumeric() {
                self.alphanumeric[i / 64] |= bit;
            }
            if !b.is_ascii() {
                self.non_ascii[i / 64] |= bit;
            }
            self.lower[i] = b.to_ascii_lowercase();
        }
        self.any_non_ascii = self.non_ascii.iter().any(|w| *w != 0);
    }
}

/// The first set bit of `map` at or after `from`, or `len` if none.
#[inline]
pub fn next_set(map: &[u64], from: usize, len: usize) -> usize {
    next_where(map, from, len, 0)
}

/// The first clear bit of `map` at or after `from`, or `len` if none.
#[inline]
pub fn next_clear(map: &[u64], from: usize, len: usize) -> usize {
    next_where(map, from, len, !0)
}

/// The first bit at or after `from` that is set in `map ^ flip`.
#[inline(always)]
fn next_where(map: &[u64], from: usize, len: usize, flip: u64) -> usize {
    let mut word = from / 64;
    if word >= map.len() {
        return len;
    }
    let mut bits = (map[word] ^ flip) & (!0u64 << (from % 64));
    loop {
        if bits != 0 {
            return (word * 64 + bits.trailing_zeros() as usize).min(len);
        }
        word += 1;
        if word >= map.len() {
            return len;
        }
        bits = map[word] ^ flip;
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// Bitmasks of the sixteen bytes (ASCII alphanumeric, not ASCII), and
    /// the bytes with `A`-`Z` lowered into `lower`.
    #[inline]
    pub fn classify16(bytes: &[u8], lower: &mut [u8]) -> (u16, u16) {
        let chunk: &[u8; 16] = bytes.try_into().expect("sixteen bytes");
        let v = u8x16(
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
            chunk[8], chunk[9], chunk[10], chunk[11], chunk[12], chunk[13], chunk[14], chunk[15],
        );
        let in_range =
            |lo: u8, hi: u8| v128_and(u8x16_ge(v, u8x16_splat(lo)), u8x16_le(v, u8x16_splat(hi)));
        let upper = in_range(b'A', b'Z');
        let alnum = v128_or(v128_or(upper, in_range(b'a', b'z')), in_range(b'0', b'9'));
        let lowered = u8x16_add(v, v128_and(upper, u8x16_splat(0x20)));
        let lower: &mut [u8; 16] = lower.try_into().expect("sixteen bytes");
        // SAFETY: `lower` is sixteen writable bytes, all a v128 store
        // writes, and the store has no alignment requirement.
        unsafe { v128_store(lower.as_mut_ptr().cast::<v128>(), lowered) };
        (u8x16_bitmask(alnum), u8x16_bitmask(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_mark_the_classes_and_scans_find_them() {
        let text = "Ab9 ,é-Z".repeat(20);
        let len = text.len();
        let mut classes = ByteClasses::default();
        classes.fill(text.as_bytes());
        for (i, b) in text.bytes().enumerate() {
            let bit = |map: &[u64]| map[i / 64] >> (i % 64) & 1 == 1;
            assert_eq!(bit(&classes.alphanumeric), b.is_ascii_alphanumeric(), "{i}");
            assert_eq!(bit(&classes.non_ascii), !b.is_ascii(), "{i}");
            assert_eq!(classes.lower[i], b.to_ascii_lowercase(), "{i}");
        }
        assert_eq!(classes.lower[len..], [0; PADDING]);
        assert!(classes.any_non_ascii);
        assert_eq!(next_set(&classes.alphanumeric, 0, len), 0);
        assert_eq!(next_clear(&classes.alphanumeric, 0, len), 3);
        assert_eq!(next_set(&classes.non_ascii, 0, len), 5);
        assert_eq!(next_set(&classes.non_ascii, len, len), len);
    }
}
