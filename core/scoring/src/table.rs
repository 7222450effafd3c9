//! The static embedding table: one int8 vector a WordPiece token, with a
//! per-token scale that also carries the token's importance weight.
//!
//! Layout (little-endian):
//!
//! ```text
//! "ALSE" magic, u32 version (1)
//! u32 n, then n bytes of UTF-8 JSON: how the table was made
//! u32 dims, u32 tokens
//! tokens × (u8 length, UTF-8 bytes)      WordPiece tokens, "##" for continuations
//! tokens × f32                           scale (quantisation step × importance)
//! tokens × dims × i8                     vectors
//! ```
//!
//! Parsing borrows from the bytes, so a table baked into a SmartModule is
//! read in place.

pub const MAGIC: &[u8; 4] = b"ALSE";
pub const VERSION: u32 = 1;

/// A parsed table, borrowing the bytes.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    pub provenance: &'a str,
    pub dims: usize,
    pub tokens: Vec<&'a str>,
    /// Per token, decoded once: read for every token of every text.
    scales: Vec<f32>,
    vectors: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad static embedding table: {}", self.0)
    }
}

impl std::error::Error for TableError {}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TableError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| TableError(format!("truncated in the {what}")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, TableError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl<'a> Table<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TableError> {
        let mut c = Cursor { bytes, at: 0 };
        if c.take(4, "magic")? != MAGIC {
            return Err(TableError("not a table (wrong magic)".into()));
        }
        let version = c.u32("version")?;
        if version != VERSION {
            return Err(TableError(format!("version {version}, expected {VERSION}")));
        }
        let n = c.u32("provenance length")? as usize;
        let provenance = core::str::from_utf8(c.take(n, "provenance")?)
            .map_err(|_| TableError("provenance is not UTF-8".into()))?;
        let dims = c.u32("dims")? as usize;
        let count = c.u32("token count")? as usize;
        let mut tokens = Vec::with_capacity(count);
        for _ in 0..count {
            let len = c.take(1, "token length")?[0] as usize;
            let token = core::str::from_utf8(c.take(len, "tokens")?)
                .map_err(|_| TableError("a token is not UTF-8".into()))?;
            tokens.push(token);
        }
        let scales = c
            .take(count * 4, "scales")?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let vectors = c.take(count * dims, "vectors")?;
        if c.at != bytes.len() {
            return Err(TableError(format!(
                "{} bytes after the vectors",
                bytes.len() - c.at
            )));
        }
        Ok(Self {
            provenance,
            dims,
            tokens,
            scales,
            vectors,
        })
    }

    pub fn scale(&self, id: usize) -> f32 {
        self.scales[id]
    }

    /// Add `scale × vector` of token `id` into `sum`.
    pub fn accumulate(&self, id: usize, sum: &mut [f32]) {
        let scale = self.scale(id);
        let row = &self.vectors[id * self.dims..(id + 1) * self.dims];
        for (s, &q) in sum.iter_mut().zip(row) {
            *s += scale * f32::from(q as i8);
        }
    }

    /// Set `sum` (`dims` long) to the sum of `scale × vector` over `ids`:
    /// the very additions, in the same order for each dimension, as
    /// [`Table::accumulate`] for each id in turn from zero, so the same
    /// bits. It goes a block of dimensions at a time, the block's sums held
    /// in registers across all the tokens, instead of loading and storing
    /// every sum for every token; each token's row and scale are looked up
    /// once into `rows`, not once a block.
    pub fn sum_rows(&self, ids: &[u32], rows: &mut Vec<RowRef>, sum: &mut [f32]) {
        rows.clear();
        rows.extend(ids.iter().map(|&id| {
            let id = id as usize;
            RowRef {
                at: (id * self.dims) as u32,
                scale: self.scales[id],
            }
        }));
        let mut start = 0;
        while start < self.dims {
            start += match self.dims - start {
                32.. => self.sum_block::<32>(rows, start, sum),
                16.. => self.sum_block::<16>(rows, start, sum),
                8.. => self.sum_block::<8>(rows, start, sum),
                4.. => self.sum_block::<4>(rows, start, sum),
                _ => self.sum_block::<1>(rows, start, sum),
            };
        }
    }

    /// [`Table::sum_rows`] for dimensions `start..start + W`; returns `W`.
    #[inline(always)]
    fn sum_block<const W: usize>(&self, rows: &[RowRef], start: usize, sum: &mut [f32]) -> usize {
        let mut acc = [0.0f32; W];
        for row in rows {
            let at = row.at as usize + start;
            let block: &[u8; W] = self.vectors[at..at + W]
                .try_into()
                .expect("a block lies within its row");
            for (a, &q) in acc.iter_mut().zip(block) {
                *a += row.scale * f32::from(q as i8);
            }
        }
        sum[start..start + W].copy_from_slice(&acc);
        W
    }
}

/// Where a token's vector starts in the table, and its scale: what each
/// block of [`Table::sum_rows`] reads a token.
#[derive(Debug, Clone, Copy)]
pub struct RowRef {
    at: u32,
    scale: f32,
}

/// Serialise a table (used by `answerloop models distill`).
pub fn write(
    provenance: &str,
    dims: usize,
    tokens: &[String],
    scales: &[f32],
    vectors: &[i8],
) -> Vec<u8> {
    assert_eq!(scales.len(), tokens.len());
    assert_eq!(vectors.len(), tokens.len() * dims);
    let mut out = Vec::with_capacity(16 + provenance.len() + tokens.len() * (dims + 12));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(provenance.len() as u32).to_le_bytes());
    out.extend_from_slice(provenance.as_bytes());
    out.extend_from_slice(&(dims as u32).to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    for token in tokens {
        let bytes = token.as_bytes();
        assert!(bytes.len() <= 255, "token too long: {token}");
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    for s in scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend(vectors.iter().map(|v| *v as u8));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_round_trips_and_damage_is_named() {
        let tokens = vec!["ice".to_string(), "##s".to_string()];
        let bytes = write(
            "{\"made\":\"test\"}",
            2,
            &tokens,
            &[0.5, 2.0],
            &[1, -2, 3, 4],
        );
        let t = Table::parse(&bytes).unwrap();
        assert_eq!(
            (t.dims, t.tokens.clone(), t.provenance),
            (2, vec!["ice", "##s"], "{\"made\":\"test\"}")
        );
        let mut sum = [0.0; 2];
        t.accumulate(1, &mut sum);
        assert_eq!(sum, [6.0, 8.0]);
        assert!(Table::parse(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .0
            .contains("truncated"));
        assert!(Table::parse(b"NOPE").unwrap_err().0.contains("magic"));
    }
}
