//! Token ids by text: an open-addressing table built once from the static
//! table's vocabulary, read for every word the scorer sees.
//!
//! Why not a `HashMap<&str, u32>`: a lookup there hashes the key, probes,
//! then calls `memcmp`; in WASM (no SIMD group probing, a byte-loop
//! `memcmp`) the tokeniser spent most of its time there. Here a slot holds
//! the key's length and first eight bytes beside its id, so a probe for a
//! word of up to eight bytes (most words) is one load of one slot, and
//! settles the lookup without touching the key's bytes elsewhere: the
//! cache miss on the slot is the only one. A longer key compares the rest
//! of its bytes too. The answer is the map's: a hit is confirmed on the
//! key's bytes, never on the hash.

const EMPTY: u32 = u32::MAX;

/// One key of the table: its length, its first eight bytes and its id,
/// sixteen bytes side by side.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Slot {
    head: u64,
    len: u32,
    id: u32,
}

const VACANT: Slot = Slot {
    head: 0,
    len: 0,
    id: EMPTY,
};

#[derive(Debug, Clone)]
pub struct Vocab<'a> {
    slots: Vec<Slot>,
    /// Per slot: the key's bytes after its first eight (empty for most).
    tails: Vec<&'a [u8]>,
    mask: usize,
}

/// The bits of a key's first eight bytes that a key of `len` bytes has:
/// what masks eight bytes read from a longer text down to its head.
#[inline]
pub fn head_mask(len: usize) -> u64 {
    if len >= 8 {
        !0
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// A key's first eight bytes (fewer, zero-padded) as one number.
#[inline]
fn head(bytes: &[u8]) -> u64 {
    match bytes.get(..8) {
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("eight bytes")),
        None => tail(bytes),
    }
}

/// The key from its head on, eight bytes at a time (most words are one
/// step), each step a rotate, an xor and a multiply; the slot index is the
/// product's top bits.
#[inline]
fn hash(head: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    let mut h = (((bytes.len() as u64).rotate_left(26)) ^ head).wrapping_mul(K);
    if bytes.len() > 8 {
        let mut chunks = bytes[8..].chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            h = (h.rotate_left(26) ^ word).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            h = (h.rotate_left(26) ^ tail(rest)).wrapping_mul(K);
        }
    }
    h
}

impl<'a> Vocab<'a> {
    /// A table of `(key, id)` pairs, at most half full. A repeated key takes
    /// the later id, as `HashMap::insert` does.
    pub fn new(entries: &[(&'a [u8], u32)]) -> Self {
        let size = (entries.len() * 2).max(16).next_power_of_two();
        let mut vocab = Vocab {
            slots: vec![VACANT; size],
            tails: vec![&[][..]; size],
            mask: size - 1,
        };
        for &(key, id) in entries {
            let first = head(key);
            let mut slot = vocab.slot(hash(first, key));
            while vocab.slots[slot].id != EMPTY && !vocab.holds(slot, first, key) {
                slot = (slot + 1) & vocab.mask;
            }
            vocab.slots[slot] = Slot {
                head: first,
                len: key.len() as u32,
                id,
            };
            vocab.tails[slot] = key.get(8..).unwrap_or_default();
        }
        vocab
    }

    #[inline]
    fn slot(&self, h: u64) -> usize {
        (h >> 40) as usize & self.mask
    }

    /// Whether `slot` holds `key` (whose head is `first`).
    #[inline(always)]
    fn holds(&self, slot: usize, first: u64, key: &[u8]) -> bool {
        let s = self.slots[slot];
        s.head == first
            && s.len as usize == key.len()
            && (key.len() <= 8 || same_bytes(self.tails[slot], &key[8..]))
    }

    /// The id of `key`, if it is in the table.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        self.get_by_head(head(key), key)
    }

    /// [`Vocab::get`] for a key whose head (its first eight bytes, fewer
    /// zero-padded, as one little-endian number) the caller read already.
    #[inline]
    pub fn get_by_head(&self, first: u64, key: &[u8]) -> Option<u32> {
        debug_assert_eq!(first, head(key));
        let mut slot = self.slot(hash(first, key));
        loop {
            let id = self.slots[slot].id;
            if id == EMPTY {
                return None;
            }
            if self.holds(slot, first, key) {
                return Some(id);
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

/// Up to seven bytes as one number, in at most three loads, not a loop.
#[inline]
fn tail(rest: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut at = 0;
    if rest.len() & 4 != 0 {
        word = u64::from(u32::from_le_bytes(rest[..4].try_into().expect("4")));
        at = 4;
    }
    if rest.len() & 2 != 0 {
        word |= u64::from(u16::from_le_bytes(rest[at..at + 2].try_into().expect("2"))) << (8 * at);
        at += 2;
    }
    if rest.len() & 1 != 0 {
        word |= u64::from(rest[at]) << (8 * at);
    }
    word
}

/// Slice equality eight bytes at a time, without a `memcmp` call: the keys
/// are a few bytes long.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        let eight = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("eight bytes"));
        if eight(p) != eight(q) {
            return false;
        }
    }
    tail(x.remainder()) == tail(y.remainder())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_nothing_else() {
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let entries: Vec<(&[u8], u32)> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.as_bytes(), i as u32))
            .collect();
        let vocab = Vocab::new(&entries);
        for (key, id) in &entries {
            assert_eq!(vocab.get(key), Some(*id));
        }
        for miss in ["", "w", "w5000", "x1", "w12 ", "W1"] {
            assert_eq!(vocab.get(miss.as_bytes()), None, "{miss:?}");
        }
    }

    #[test]
    fn a_repeated_key_takes_the_later_id_as_a_map_does() {
        let vocab = Vocab::new(&[(b"ice", 1), (b"ice", 7)]);
        assert_eq!(vocab.get(b"ice"), Some(7));
    }
}
