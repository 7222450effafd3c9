//! A text's static vector carried in its record, so that the broker does
//! not embed the same text again: the traffic agent embeds each question's
//! reference once, natively, and every attempt's answer record brings it to
//! `answer-score`, which then embeds only the answer.
//!
//! The vector travels as one JSON string, `static:<table>:<base64>`:
//! `<table>` names the table it was computed with (a hash of its bytes), so
//! a vector from another table is never mixed with this one's; the base64
//! holds the vector's scale (f32) and its components as 16-bit integers
//! (`component ≈ q × scale`, `scale = max |component| / 32767`). A
//! component moves by at most half a step, 1/65534 of the largest one, so a
//! cosine moves by less than 1e-4 (a test bounds it on the eval pairs and
//! the sample). A string that is not one of these (another table, damaged,
//! made by hand) is ignored, and the reference is embedded from its text.

use crate::semantic::{norm2, Embedding, StaticModel};

/// What a carried static vector starts with.
const KIND: &str = "static";

/// Largest quantised component.
const STEPS: f32 = 32767.0;

impl StaticModel<'_> {
    /// `text`'s vector as it is carried in a record.
    pub fn carried_vector(&self, text: &str) -> String {
        let vector = self.embed(text);
        let max = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / STEPS } else { 0.0 };
        let mut bytes = Vec::with_capacity(4 + 2 * vector.len());
        bytes.extend_from_slice(&scale.to_le_bytes());
        for x in &vector {
            let q = if scale > 0.0 {
                (x / scale).round()
            } else {
                0.0
            };
            bytes.extend_from_slice(&(q.clamp(-STEPS, STEPS) as i16).to_le_bytes());
        }
        format!("{KIND}:{}:{}", self.fingerprint(), base64::encode(&bytes))
    }

    /// The [`Embedding`] a carried vector stands for, if it was made with
    /// this table and is whole; `None` for anything else.
    pub fn read_carried(&self, carried: &str, bytes: &mut Vec<u8>) -> Option<Embedding> {
        let rest = carried.strip_prefix(KIND)?.strip_prefix(':')?;
        let (table, data) = rest.split_once(':')?;
        if table != self.fingerprint() {
            return None;
        }
        base64::decode_into(data, bytes)?;
        let dims = self.table().dims;
        if bytes.len() != 4 + 2 * dims {
            return None;
        }
        let scale = f32::from_le_bytes(bytes[..4].try_into().ok()?);
        if !scale.is_finite() || scale < 0.0 {
            return None;
        }
        let vector: Vec<f32> = bytes[4..]
            .chunks_exact(2)
            .map(|q| f32::from(i16::from_le_bytes([q[0], q[1]])) * scale)
            .collect();
        Some(Embedding {
            norm2: norm2(&vector),
            vector,
        })
    }
}

/// A table's name in carried vectors: 32 bits of a hash of its bytes, in
/// hex, the same on every platform (WASM's `usize` hashers are not).
pub fn fingerprint(table: &[u8]) -> String {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = table.chunks_exact(8);
    let mut h = table.len() as u64;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        h = (h.rotate_left(23) ^ word).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(23) ^ u64::from(b)).wrapping_mul(K);
    }
    format!("{:08x}", (h >> 32) as u32)
}

/// Base64 (the standard alphabet, no padding), all the carried vectors
/// need: a few hundred bytes each way.
mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    /// Each byte's six bits, or [`NOT`]: one load a character.
    const NOT: u8 = 0xff;
    const VALUES: [u8; 256] = {
        let mut values = [NOT; 256];
        let mut i = 0;
        while i < 64 {
            values[ALPHABET[i] as usize] = i as u8;
            i += 1;
        }
        values
    };

    /// Decode `text` into `out` (cleared first); `None` if it is not
    /// unpadded base64.
    pub fn decode_into(text: &str, out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        let mut chunks = text.as_bytes().chunks_exact(4);
        for chunk in &mut chunks {
            let [a, b, c, d] = [0, 1, 2, 3].map(|i| VALUES[chunk[i] as usize]);
            if (a | b | c | d) == NOT {
                return None;
            }
            let n = u32::from(a) << 18 | u32::from(b) << 12 | u32::from(c) << 6 | u32::from(d);
            out.extend_from_slice(&n.to_be_bytes()[1..]);
        }
        let rest = chunks.remainder();
        if rest.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in rest.iter().enumerate() {
            let v = VALUES[c as usize];
            if v == NOT {
                return None;
            }
            n |= u32::from(v) << (18 - 6 * i);
        }
        for i in 0..rest.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        Some(())
    }

    #[cfg(test)]
    #[test]
    fn round_trips_every_length_and_refuses_junk() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        for len in 0..40 {
            let text = encode(&bytes[..len]);
            assert!(!text.contains('='));
            decode_into(&text, &mut out).unwrap();
            assert_eq!(out, &bytes[..len]);
        }
        assert_eq!(encode(b"Man"), "TWFu");
        for junk in ["A", "TWFu=", "TW u", "TWFuA"] {
            assert!(decode_into(junk, &mut out).is_none(), "{junk}");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::semantic::{cosine_with_norms, model};

    fn texts() -> Vec<&'static str> {
        [
            include_str!("../../../data/eval/pairs.csv"),
            include_str!("../../../data/sample.csv"),
        ]
        .iter()
        .flat_map(|file| file.lines())
        .collect()
    }

    #[test]
    fn a_carried_vector_scores_within_1e_4_of_the_text() {
        let m = model();
        let mut bytes = Vec::new();
        let mut worst = 0.0f32;
        for pair in texts().windows(2) {
            let (answer, reference) = (m.embed(pair[0]), m.embed(pair[1]));
            let exact = m.score(pair[0], pair[1]);
            let carried = m
                .read_carried(&m.carried_vector(pair[1]), &mut bytes)
                .unwrap();
            let score = cosine_with_norms(
                &answer,
                crate::semantic::norm2(&answer),
                &carried.vector,
                carried.norm2,
            );
            assert_eq!(reference.len(), carried.vector.len());
            worst = worst.max((score - exact).abs());
        }
        assert!(worst < 1e-4, "largest change {worst}");
    }

    #[test]
    fn a_vector_of_another_table_or_damaged_is_not_read() {
        let m = model();
        let mut bytes = Vec::new();
        let good = m.carried_vector("Ice floats because it is less dense.");
        assert!(m.read_carried(&good, &mut bytes).is_some());
        let other_table = good.replacen(m.fingerprint(), "00000000", 1);
        let cut = &good[..good.len() - 4];
        let longer = format!("{good}AAAA");
        let junk = good.replace('A', "*");
        for bad in [
            "",
            "static",
            "static::",
            "exact:x:AAAA",
            other_table.as_str(),
            cut,
            longer.as_str(),
            junk.as_str(),
        ] {
            assert!(m.read_carried(bad, &mut bytes).is_none(), "{bad:.40}");
        }
        let empty = m.carried_vector("");
        let read = m.read_carried(&empty, &mut bytes).unwrap();
        assert_eq!(read.norm2, 0.0, "no tokens: the zero vector, scored 0");
    }
}
