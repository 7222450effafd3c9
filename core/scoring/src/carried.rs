//! A text's vector carried in its record, so that the broker does not
//! embed the same text again, or could not embed it at all.
//!
//! A carried vector is one JSON string, `<kind>:<model>:<base64>`:
//!
//! - `static:<table>:…` — the static table's vector of a reference,
//!   computed once by the traffic agent; `answer-score` then embeds only the
//!   answer. `<table>` names the table it was computed with (a hash of its
//!   bytes), so a vector from another table is never mixed with this one's.
//! - `exact:all-MiniLM-L6-v2:…` — the transformer's sentence embedding
//!   (`--scorer exact`), computed natively by the traffic agent for the
//!   reference and by the LLM agent for the answer: a transformer cannot run
//!   per record inside a SmartModule, but the cosine of two carried vectors
//!   can. See [`exact_score`].
//!
//! The base64 holds the vector's scale (f32) and its components as 16- or
//! 8-bit integers (`component ≈ q × scale`, `scale = max |component| /
//! steps`); which width is told by the length, the dimensions being the
//! model's. With 16 bits a component moves by at most half a step, 1/65534
//! of the largest one, so a cosine moves by less than 1e-4 (a test bounds
//! it on the eval pairs and the sample). A string that is not one of these
//! (another table or model, damaged, made by hand) is ignored, and the
//! score falls back to the static scorer on the texts.

use crate::semantic::{norm2, Embedding, StaticModel};

/// What a carried static vector starts with.
const STATIC: &str = "static";

/// What a carried exact vector starts with.
pub const EXACT: &str = "exact";

/// The one model exact vectors are read for, and its dimensions.
pub const EXACT_MODEL: &str = "all-MiniLM-L6-v2";
pub const EXACT_DIMS: usize = 384;

/// How wide a carried component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    I8,
    I16,
}

impl Width {
    fn bytes(self) -> usize {
        match self {
            Width::I8 => 1,
            Width::I16 => 2,
        }
    }

    /// Largest quantised component.
    fn steps(self) -> f32 {
        match self {
            Width::I8 => 127.0,
            Width::I16 => 32767.0,
        }
    }
}

/// The width exact vectors are written with: 16 bits, so that the score is
/// the original metric's to within 6e-6 on the eval pairs (smaller than
/// embedding a text alone or in a batch moves it). 8 bits halve the string
/// (520 characters against 1,030) and decided the same on all 760 pairs,
/// but moved scores by up to 1.6e-3 (`answerloop eval carried`,
/// docs/scoring.md).
pub const EXACT_WIDTH: Width = Width::I16;

/// `vector` as it is carried: `<kind>:<model>:<base64>`, components
/// quantised to `width`.
pub fn encode(kind: &str, model: &str, vector: &[f32], width: Width) -> String {
    let max = vector.iter().fold(
        0.0f32,
        |m, x| if x.is_finite() { m.max(x.abs()) } else { m },
    );
    let steps = width.steps();
    let scale = if max > 0.0 { max / steps } else { 0.0 };
    let mut bytes = Vec::with_capacity(4 + width.bytes() * vector.len());
    bytes.extend_from_slice(&scale.to_le_bytes());
    for x in vector {
        let q = if scale > 0.0 && x.is_finite() {
            (x / scale).round().clamp(-steps, steps)
        } else {
            0.0
        };
        match width {
            Width::I8 => bytes.push(q as i8 as u8),
            Width::I16 => bytes.extend_from_slice(&(q as i16).to_le_bytes()),
        }
    }
    format!("{kind}:{model}:{}", base64::encode(&bytes))
}

/// A carried vector's scale and raw components (`dims` of them, 8 or 16
/// bits each), decoded into `bytes`, if it is `<kind>:<model>:` and whole.
fn decode<'b>(
    carried: &str,
    kind: &str,
    model: &str,
    dims: usize,
    bytes: &'b mut Vec<u8>,
) -> Option<Quantised<'b>> {
    let rest = carried.strip_prefix(kind)?.strip_prefix(':')?;
    let data = rest.strip_prefix(model)?.strip_prefix(':')?;
    base64::decode_into(data, bytes)?;
    let width = match bytes.len().checked_sub(4)? {
        n if n == dims => Width::I8,
        n if n == 2 * dims => Width::I16,
        _ => return None,
    };
    let scale = f32::from_le_bytes(bytes[..4].try_into().ok()?);
    if !scale.is_finite() || scale < 0.0 {
        return None;
    }
    Some(Quantised {
        scale,
        width,
        data: &bytes[4..],
    })
}

/// A decoded carried vector, still quantised.
struct Quantised<'b> {
    scale: f32,
    width: Width,
    data: &'b [u8],
}

impl Quantised<'_> {
    /// The integer components.
    fn components(&self) -> impl Iterator<Item = i32> + '_ {
        let width = self.width.bytes();
        self.data.chunks_exact(width).map(move |q| match q {
            [b] => i32::from(*b as i8),
            [lo, hi] => i32::from(i16::from_le_bytes([*lo, *hi])),
            _ => unreachable!("chunks of one or two bytes"),
        })
    }
}

impl StaticModel<'_> {
    /// `text`'s vector as it is carried in a record.
    pub fn carried_vector(&self, text: &str) -> String {
        encode(STATIC, self.fingerprint(), &self.embed(text), Width::I16)
    }

    /// The [`Embedding`] a carried vector stands for, if it was made with
    /// this table and is whole; `None` for anything else.
    pub fn read_carried(&self, carried: &str, bytes: &mut Vec<u8>) -> Option<Embedding> {
        let mut vector = Vec::new();
        let norm2 = self.read_carried_into(carried, bytes, &mut vector)?;
        Some(Embedding { vector, norm2 })
    }

    /// [`read_carried`](Self::read_carried) into a buffer the caller keeps:
    /// the vector is written into `vector`, its squared norm returned.
    pub fn read_carried_into(
        &self,
        carried: &str,
        bytes: &mut Vec<u8>,
        vector: &mut Vec<f32>,
    ) -> Option<f64> {
        let dims = self.table().dims;
        let quantised = decode(carried, STATIC, self.fingerprint(), dims, bytes)?;
        vector.clear();
        vector.extend(quantised.components().map(|q| q as f32 * quantised.scale));
        Some(norm2(vector))
    }
}

/// A sentence embedding of [`EXACT_MODEL`] as it is carried in a record.
pub fn exact_vector(vector: &[f32]) -> String {
    encode(EXACT, EXACT_MODEL, vector, EXACT_WIDTH)
}

/// The exact scorer's score from two carried vectors: the cosine of the
/// answer's and the reference's embeddings, clamped to [0, 1] as
/// `MiniLm::score` clamps it; 0 when either is the zero vector (an empty
/// text). `None` unless both are whole [`EXACT_MODEL`] vectors: the caller
/// then scores with the static table.
///
/// The scales cancel in a cosine, so it is computed from the integer
/// components, summed exactly in 64 bits: the same number on every
/// platform, in WASM and natively.
pub fn exact_score(answer: &str, reference: &str, bytes: &mut ExactBuffers) -> Option<f32> {
    if answer.is_empty() || reference.is_empty() {
        return None;
    }
    let a = decode(answer, EXACT, EXACT_MODEL, EXACT_DIMS, &mut bytes.answer)?;
    let r = decode(
        reference,
        EXACT,
        EXACT_MODEL,
        EXACT_DIMS,
        &mut bytes.reference,
    )?;
    let (mut dot, mut na, mut nr) = (0i64, 0i64, 0i64);
    for (x, y) in a.components().zip(r.components()) {
        let (x, y) = (i64::from(x), i64::from(y));
        dot += x * y;
        na += x * x;
        nr += y * y;
    }
    if na == 0 || nr == 0 || a.scale == 0.0 || r.scale == 0.0 {
        return Some(0.0);
    }
    let cosine = dot as f64 / ((na as f64).sqrt() * (nr as f64).sqrt());
    Some(cosine.clamp(0.0, 1.0) as f32)
}

/// The bytes of two carried vectors, reused from record to record.
#[derive(Debug, Default)]
pub struct ExactBuffers {
    answer: Vec<u8>,
    reference: Vec<u8>,
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
        let bad = ["", "static", "static::", "exact:x:AAAA", &other_table];
        for bad in bad.into_iter().map(str::to_string).chain(damaged(&good)) {
            assert!(m.read_carried(&bad, &mut bytes).is_none(), "{bad:.40}");
        }
        let empty = m.carried_vector("");
        let read = m.read_carried(&empty, &mut bytes).unwrap();
        assert_eq!(read.norm2, 0.0, "no tokens: the zero vector, scored 0");
    }
    /// A good carried vector cut short, made longer, and with junk in it.
    fn damaged(good: &str) -> [String; 3] {
        [
            good[..good.len() - 4].to_string(),
            format!("{good}AAAA"),
            good.replace('A', "*"),
        ]
    }

    /// Unit vectors of the exact model's size, made up but not regular:
    /// each a different mix of a few frequencies.
    fn unit_vectors(n: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|k| {
                let v: Vec<f32> = (0..super::EXACT_DIMS)
                    .map(|i| {
                        let (i, k) = (i as f32, k as f32);
                        (i * 0.37 + k).sin() + 0.5 * (i * (0.11 + k * 0.013)).cos()
                    })
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    #[test]
    fn an_exact_score_is_the_cosine_of_the_vectors_within_1e_4() {
        let vectors = unit_vectors(40);
        let mut buffers = super::ExactBuffers::default();
        let mut worst = 0.0f32;
        for pair in vectors.windows(2) {
            let plain = crate::semantic::cosine(&pair[0], &pair[1]);
            let (a, r) = (super::exact_vector(&pair[0]), super::exact_vector(&pair[1]));
            assert!(a.starts_with("exact:all-MiniLM-L6-v2:"), "{a:.30}");
            let carried = super::exact_score(&a, &r, &mut buffers).unwrap();
            worst = worst.max((carried - plain).abs());
        }
        assert!(worst < 1e-4, "largest change {worst}");
        assert!(worst > 0.0, "the vectors are quantised");
        let v = &vectors[0];
        let same = super::exact_vector(v);
        let score = super::exact_score(&same, &same, &mut buffers).unwrap();
        assert!((score - 1.0).abs() < 1e-6, "{score}");
        let opposite = super::exact_vector(&v.iter().map(|x| -x).collect::<Vec<_>>());
        assert_eq!(
            super::exact_score(&opposite, &same, &mut buffers),
            Some(0.0)
        );
    }

    #[test]
    fn eight_bit_exact_vectors_are_read_and_score_close() {
        let vectors = unit_vectors(2);
        let mut buffers = super::ExactBuffers::default();
        let narrow = |v: &[f32]| super::encode("exact", "all-MiniLM-L6-v2", v, super::Width::I8);
        let (a, r) = (narrow(&vectors[0]), narrow(&vectors[1]));
        assert!(a.len() < super::exact_vector(&vectors[0]).len() * 6 / 10);
        let score = super::exact_score(&a, &r, &mut buffers).unwrap();
        let plain = crate::semantic::cosine(&vectors[0], &vectors[1]);
        assert!((score - plain).abs() < 1e-2, "{score} {plain}");
    }

    #[test]
    fn an_empty_text_vector_scores_0() {
        let mut buffers = super::ExactBuffers::default();
        let zero = super::exact_vector(&[0.0; super::EXACT_DIMS]);
        let some = super::exact_vector(&unit_vectors(1)[0]);
        assert_eq!(super::exact_score(&zero, &some, &mut buffers), Some(0.0));
        assert_eq!(super::exact_score(&some, &zero, &mut buffers), Some(0.0));
    }

    #[test]
    fn an_exact_vector_of_another_model_or_damaged_is_not_scored() {
        let mut buffers = super::ExactBuffers::default();
        let v = &unit_vectors(1)[0];
        let good = super::exact_vector(v);
        assert!(super::exact_score(&good, &good, &mut buffers).is_some());
        let other_model = good.replacen("all-MiniLM-L6-v2", "all-MiniLM-L12-v2", 1);
        let other_dims = super::encode("exact", "all-MiniLM-L6-v2", &v[..100], super::Width::I16);
        let static_one = crate::semantic::model().carried_vector("Ice floats.");
        let nan_scale = {
            let mut bytes = f32::NAN.to_le_bytes().to_vec();
            bytes.extend(std::iter::repeat_n(1u8, 2 * super::EXACT_DIMS));
            format!("exact:all-MiniLM-L6-v2:{}", super::base64::encode(&bytes))
        };
        let bad = [
            "",
            "exact",
            "exact::",
            "exact:all-MiniLM-L6-v2:",
            "exact:all-MiniLM-L6-v2",
            &other_model,
            &other_dims,
            &static_one,
            &nan_scale,
        ];
        for bad in bad.into_iter().map(str::to_string).chain(damaged(&good)) {
            assert_eq!(
                super::exact_score(&bad, &good, &mut buffers),
                None,
                "{bad:.40}"
            );
            assert_eq!(
                super::exact_score(&good, &bad, &mut buffers),
                None,
                "{bad:.40}"
            );
        }
    }
}
