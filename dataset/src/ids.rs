//! Question ids as 64-bit numbers. An id is the 16 hex digits of a 64-bit
//! hash of the question (see `question_id`), so the number is the id
//! itself: a set of them is exact and takes 8 bytes an id (about 14 with a
//! hash table's slack) instead of a string's 40 or more.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The 64-bit number of question id `id`: its 16 hex digits, or a hash of
/// any other text (ids written by hand), the same in every process.
pub fn id_number(id: &str) -> u64 {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u64::from_str_radix(id, 16).expect("16 hex digits are a u64");
    }
    // FNV-1a, as `question_id` hashes, over the raw text.
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A set of question ids, held as their numbers.
#[derive(Debug, Default, Clone)]
pub struct IdSet(HashSet<u64, BuildHasherDefault<Spread>>);

impl IdSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: &str) -> bool {
        self.0.insert(id_number(id))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(&id_number(id))
    }

    /// Takes `id` out; false when it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        self.0.remove(&id_number(id))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> FromIterator<&'a str> for IdSet {
    fn from_iter<I: IntoIterator<Item = &'a str>>(ids: I) -> Self {
        let mut set = Self::new();
        for id in ids {
            set.insert(id);
        }
        set
    }
}

impl<'a> Extend<&'a str> for IdSet {
    fn extend<I: IntoIterator<Item = &'a str>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

/// The hasher of an [`IdSet`]: the numbers are hashes already, but FNV's
/// low bits, which pick the table slot, mix poorly, so they are spread
/// (the splitmix64 finaliser) rather than hashed again.
#[derive(Debug, Default, Clone, Copy)]
pub struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64s are hashed; anything else is folded in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
