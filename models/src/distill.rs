//! Distil a static embedding table from all-MiniLM-L6-v2, in the manner of
//! Model2Vec: embed every vocabulary token on its own through the model,
//! reduce the vectors with PCA, weight each token by its importance (SIF:
//! `a / (a + p(token))`, frequent tokens count less), and quantise to int8
//! with a per-token scale. The result is what the `answer-score`
//! SmartModule scores with.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};

use crate::minilm::MiniLm;
use crate::smollm::ModelError;

#[derive(Debug, Clone)]
pub struct DistillOptions {
    /// Dimensions kept by PCA.
    pub dims: usize,
    /// SIF smoothing: a token of corpus frequency `p` weighs `a / (a + p)`.
    pub sif_a: f64,
    /// Tokens embedded per forward pass.
    pub batch: usize,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            dims: 124,
            sif_a: 1e-3,
            batch: 512,
        }
    }
}

/// A distilled table, ready for `answerloop_scoring::table::write`.
pub struct Distilled {
    pub tokens: Vec<String>,
    pub scales: Vec<f32>,
    pub vectors: Vec<i8>,
    pub dims: usize,
    /// Share of the variance the kept dimensions explain.
    pub explained: f64,
}

/// Distil from `model`; `corpus` gives the token frequencies for the weights.
pub fn distill(
    model: &MiniLm,
    corpus: &[&str],
    options: &DistillOptions,
) -> Result<Distilled, ModelError> {
    let vocab = model.vocabulary();
    let (cls, sep) = (vocab["[CLS]"], vocab["[SEP]"]);
    let mut tokens: Vec<(String, u32)> = vocab
        .iter()
        .filter(|(t, _)| !(t.starts_with('[') && t.ends_with(']')))
        .map(|(t, id)| (t.clone(), *id))
        .collect();
    tokens.sort_by_key(|(_, id)| *id);

    // 1. Each token alone through the model: [CLS] token [SEP], mean-pooled.
    let hidden = model.hidden_size();
    let mut raw = Vec::with_capacity(tokens.len() * hidden);
    for chunk in tokens.chunks(options.batch.max(1)) {
        let ids: Vec<u32> = chunk.iter().flat_map(|(_, id)| [cls, *id, sep]).collect();
        let input = Tensor::from_vec(ids, (chunk.len(), 3), &Device::Cpu)?;
        raw.extend(model.pooled(&input)?.flatten_all()?.to_vec1::<f32>()?);
    }

    // 2. PCA to `dims`.
    let n = tokens.len();
    let data = DMatrix::from_row_slice(
        n,
        hidden,
        &raw.iter().map(|x| f64::from(*x)).collect::<Vec<_>>(),
    );
    let mean = data.row_mean();
    let centred = DMatrix::from_fn(n, hidden, |r, c| data[(r, c)] - mean[c]);
    let covariance = (centred.transpose() * &centred) / (n as f64 - 1.0);
    let eigen = SymmetricEigen::new(covariance);
    let mut order: Vec<usize> = (0..hidden).collect();
    order.sort_by(|a, b| eigen.eigenvalues[*b].total_cmp(&eigen.eigenvalues[*a]));
    let dims = options.dims.min(hidden);
    let basis = DMatrix::from_fn(hidden, dims, |r, c| eigen.eigenvectors[(r, order[c])]);
    let total: f64 = eigen.eigenvalues.iter().sum();
    let explained = order[..dims]
        .iter()
        .map(|i| eigen.eigenvalues[*i])
        .sum::<f64>()
        / total;
    let reduced = centred * basis;

    // 3. SIF weights from the corpus, tokenised as the model tokenises.
    let counts = model.token_counts(corpus)?;
    let total_count: u64 = counts.values().sum::<u64>().max(1);
    let weights: Vec<f64> = tokens
        .iter()
        .map(|(_, id)| {
            let p = counts.get(id).copied().unwrap_or(0) as f64 / total_count as f64;
            options.sif_a / (options.sif_a + p)
        })
        .collect();

    // 4. SIF's common component: the direction every sentence vector shares.
    // Removing it from each token vector removes it from every sum.
    let reduced = remove_common_component(model, corpus, &tokens, &weights, reduced)?;

    // 5. Quantise each row to int8 with its own scale, importance folded in.
    let mut scales = Vec::with_capacity(n);
    let mut vectors = Vec::with_capacity(n * dims);
    for (row, weight) in weights.iter().enumerate() {
        let max = (0..dims)
            .map(|c| reduced[(row, c)].abs())
            .fold(0.0, f64::max)
            .max(1e-12);
        let step = max / 127.0;
        scales.push((step * weight) as f32);
        vectors.extend(
            (0..dims).map(|c| (reduced[(row, c)] / step).round().clamp(-127.0, 127.0) as i8),
        );
    }
    Ok(Distilled {
        tokens: tokens.into_iter().map(|(t, _)| t).collect(),
        scales,
        vectors,
        dims,
        explained,
    })
}

/// Project the first principal direction of the corpus's sentence vectors
/// out of every token vector.
fn remove_common_component(
    model: &MiniLm,
    corpus: &[&str],
    tokens: &[(String, u32)],
    weights: &[f64],
    mut reduced: DMatrix<f64>,
) -> Result<DMatrix<f64>, ModelError> {
    let row_of: HashMap<u32, usize> = tokens
        .iter()
        .enumerate()
        .map(|(row, (_, id))| (*id, row))
        .collect();
    let dims = reduced.ncols();
    let mut sentences = DMatrix::<f64>::zeros(corpus.len(), dims);
    for (s, text) in corpus.iter().enumerate() {
        let encoding = model
            .tokenizer()
            .encode(*text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        for row in encoding.get_ids().iter().filter_map(|id| row_of.get(id)) {
            for c in 0..dims {
                sentences[(s, c)] += weights[*row] * reduced[(*row, c)];
            }
        }
    }
    let gram = sentences.transpose() * &sentences;
    let eigen = SymmetricEigen::new(gram);
    let top = (0..dims)
        .max_by(|a, b| eigen.eigenvalues[*a].total_cmp(&eigen.eigenvalues[*b]))
        .unwrap_or(0);
    let u = eigen.eigenvectors.column(top).into_owned();
    for r in 0..reduced.nrows() {
        let along: f64 = (0..dims).map(|c| reduced[(r, c)] * u[c]).sum();
        for c in 0..dims {
            reduced[(r, c)] -= along * u[c];
        }
    }
    Ok(reduced)
}

impl MiniLm {
    /// Token → id of the model's WordPiece vocabulary.
    pub fn vocabulary(&self) -> HashMap<String, u32> {
        self.tokenizer().get_vocab(false)
    }

    /// How often each token id occurs in `corpus`.
    pub fn token_counts(&self, corpus: &[&str]) -> Result<HashMap<u32, u64>, ModelError> {
        let mut counts = HashMap::new();
        for text in corpus {
            let encoding = self
                .tokenizer()
                .encode(*text, false)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            for id in encoding.get_ids() {
                *counts.entry(*id).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
}
