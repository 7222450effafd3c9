//! The teacher's sentence embeddings of a training corpus, cached in a
//! file: embedding a hundred thousand texts through all-MiniLM-L6-v2 takes
//! many minutes on one core, fitting a table to them seconds, so a rerun
//! with other settings reads them back. The cache is keyed by a hash of the
//! corpus's texts and of the teacher's weights, so a changed corpus or
//! model is never matched with stale vectors.
//!
//! Layout (little-endian): `"ALTE"`, u32 version, 32 bytes of key, u32
//! texts, u32 dims, then texts × dims × f32.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::minilm::MiniLm;
use crate::smollm::ModelError;

const MAGIC: &[u8; 4] = b"ALTE";
const VERSION: u32 = 1;

/// Texts embedded a forward pass. They are sorted by length first, so a
/// batch pads little.
const BATCH: usize = 64;

/// Unit-length teacher embeddings, one row (`dims` long) a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub dims: usize,
    pub rows: Vec<f32>,
}

impl Embeddings {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dims..(i + 1) * self.dims]
    }

    pub fn len(&self) -> usize {
        self.rows.len() / self.dims.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The cache key: the texts and the teacher's weights' checksum.
pub fn key(texts: &[&str], teacher_sha256: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(teacher_sha256.as_bytes());
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    h.finalize().into()
}

/// Embed `texts` with `model`, `progress(done)` called after each batch.
pub fn embed(
    model: &MiniLm,
    texts: &[&str],
    mut progress: impl FnMut(usize),
) -> Result<Embeddings, ModelError> {
    let dims = model.hidden_size();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|i| texts[*i].len());
    let mut rows = vec![0.0f32; texts.len() * dims];
    let mut done = 0;
    for chunk in order.chunks(BATCH) {
        let batch: Vec<&str> = chunk.iter().map(|i| texts[*i]).collect();
        for (i, v) in chunk.iter().zip(model.embed(&batch)?) {
            rows[i * dims..(i + 1) * dims].copy_from_slice(&v);
        }
        done += chunk.len();
        progress(done);
    }
    Ok(Embeddings { dims, rows })
}

/// Read a cache file; `None` when it is missing or was made for another key.
pub fn read(path: &Path, key: &[u8; 32]) -> Result<Option<Embeddings>, ModelError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ModelError::load(path, e.to_string())),
    };
    let header = 4 + 4 + 32 + 4 + 4;
    if bytes.len() < header || &bytes[..4] != MAGIC {
        return Err(ModelError::load(path, "not a teacher embedding cache"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(4) != VERSION || bytes[8..40] != key[..] {
        return Ok(None);
    }
    let (n, dims) = (u32_at(40) as usize, u32_at(44) as usize);
    if bytes.len() != header + n * dims * 4 {
        return Err(ModelError::load(
            path,
            format!("{} bytes for {n} × {dims}", bytes.len()),
        ));
    }
    let rows = bytes[header..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok(Some(Embeddings { dims, rows }))
}

/// Write a cache file (through a temporary file renamed into place).
pub fn write(path: &Path, key: &[u8; 32], embeddings: &Embeddings) -> Result<(), ModelError> {
    let mut out = Vec::with_capacity(48 + embeddings.rows.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(embeddings.len() as u32).to_le_bytes());
    out.extend_from_slice(&(embeddings.dims as u32).to_le_bytes());
    for x in &embeddings.rows {
        out.extend_from_slice(&x.to_le_bytes());
    }
    let part = path.with_extension("part");
    std::fs::write(&part, &out).map_err(|e| ModelError::load(&part, e.to_string()))?;
    std::fs::rename(&part, path).map_err(|e| ModelError::load(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_reads_back_only_under_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        let e = Embeddings {
            dims: 2,
            rows: vec![0.6, 0.8, 1.0, 0.0],
        };
        let k = key(&["a", "b"], "sha");
        assert_eq!(read(&path, &k).unwrap(), None, "missing file");
        write(&path, &k, &e).unwrap();
        assert_eq!(read(&path, &k).unwrap(), Some(e));
        assert_eq!(read(&path, &key(&["a", "c"], "sha")).unwrap(), None);
        assert_eq!(read(&path, &key(&["a", "b"], "other")).unwrap(), None);
        assert_ne!(key(&["ab", ""], "s"), key(&["a", "b"], "s"));
        std::fs::write(&path, b"ALTE").unwrap();
        assert!(read(&path, &k).is_err(), "a truncated file is an error");
    }
}
