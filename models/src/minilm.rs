//! The exact reference scorer: all-MiniLM-L6-v2 sentence embeddings (mean
//! pooling over the attention mask, L2-normalised), compared by cosine, as
//! the original project scored answers. Native only: 90 MB of weights and a
//! transformer per record cannot run inside a SmartModule.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::cache::{ModelCache, MINILM};
use crate::smollm::ModelError;

/// sentence-transformers' max_seq_length for this model.
const MAX_TOKENS: usize = 256;

pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    hidden_size: usize,
}

impl MiniLm {
    /// Load from the cache (see [`MINILM`]).
    pub fn load(cache: &ModelCache) -> Result<Self, ModelError> {
        let file = |name: &str| cache.root().join(MINILM.name).join(name);
        Self::load_from(
            &file("model.safetensors"),
            &file("config.json"),
            &file("tokenizer.json"),
        )
    }

    pub fn load_from(weights: &Path, config: &Path, tokenizer: &Path) -> Result<Self, ModelError> {
        let text =
            std::fs::read_to_string(config).map_err(|e| ModelError::load(config, e.to_string()))?;
        let config_value: Config =
            serde_json::from_str(&text).map_err(|e| ModelError::load(config, e.to_string()))?;
        // Safety: the file is mapped read-only; the cache never rewrites an
        // installed file in place (installs rename a new file over it).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DTYPE, &Device::Cpu)? };
        let model = BertModel::load(vb, &config_value)?;
        let hidden_size = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["hidden_size"].as_u64())
            .unwrap_or(384) as usize;
        let mut tokenizer = Tokenizer::from_file(tokenizer)
            .map_err(|e| ModelError::load(tokenizer, e.to_string()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        Ok(Self {
            model,
            tokenizer,
            hidden_size,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Mean-pooled outputs (not normalised) of unpadded `ids` (batch, seq).
    pub fn pooled(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let hidden = self.model.forward(ids, &ids.zeros_like()?, None)?;
        Ok(hidden.mean(1)?)
    }

    /// Unit-length sentence embeddings, one row a text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let device = Device::Cpu;
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let stack = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, ModelError> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &device))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        let ids = stack(&|e| e.get_ids())?;
        let mask = stack(&|e| e.get_attention_mask())?;
        let hidden = self.model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        let mask = mask.to_dtype(DTYPE)?.unsqueeze(2)?;
        let pooled = hidden
            .broadcast_mul(&mask)?
            .sum(1)?
            .broadcast_div(&mask.sum(1)?)?;
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        Ok(pooled.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }

    /// The original metric: cosine of the two embeddings, clamped to [0, 1]
    /// like every answerloop score. Empty text scores 0.
    pub fn score(&self, answer: &str, reference: &str) -> Result<f32, ModelError> {
        if answer.trim().is_empty() || reference.trim().is_empty() {
            return Ok(0.0);
        }
        let v = self.embed(&[answer, reference])?;
        let cosine: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
        Ok(cosine.clamp(0.0, 1.0))
    }
}
