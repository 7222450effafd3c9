//! SmolLM2-135M-Instruct in-process, with candle's quantized llama.
//!
//! Three fixes over a plain load, each of which matters:
//! - The GGUF stores its layer matrices as Q4_1, for which candle has no SIMD
//!   kernel; they are requantised to Q8_0 (AVX2 kernels) at load.
//! - candle's tokenizer-from-GGUF falls back to a ByteLevel pre-tokenizer that
//!   adds a prefix space, so every piece after a special token would start
//!   with `Ġ`; SmolLM2's own pre-tokenizer (single digits, then ByteLevel
//!   without the prefix space) is put back.
//! - Prompts use the model's ChatML template and generation stops at
//!   `<|im_end|>`.

use std::collections::HashMap;
use std::io::{BufReader, Cursor};
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read the model {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Engine(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("the prompt has {prompt} tokens; with {max_tokens} to generate it exceeds the model's {limit}-token window")]
    PromptTooLong {
        prompt: usize,
        max_tokens: usize,
        limit: usize,
    },
}

/// A short lower-case name for a tensor dtype (`q4_1`, `q8_0`, `f32`).
pub trait GgmlDTypeName {
    fn name(&self) -> String;
}

impl GgmlDTypeName for GgmlDType {
    fn name(&self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// How a model is loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Requantise Q4_1 tensors to Q8_0 (much faster on x86).
    pub requantize: bool,
    /// Use SmolLM2's own pre-tokenizer instead of candle's fallback.
    pub fix_tokenizer: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            requantize: true,
            fix_tokenizer: true,
        }
    }
}

/// How one answer is generated.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    /// Seed for sampling when the temperature is above 0.
    pub seed: u64,
    /// Penalty on tokens seen in the last `repeat_last_n` (1 = none).
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            seed: 299_792_458,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
        }
    }
}

/// One answer, with its token counts and timings.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    /// Of the prompt tokens, those whose KV was copied from an earlier
    /// prompt rather than computed (the batched engine's prompt cache).
    pub cached_prompt_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_time: Duration,
    pub generation_time: Duration,
    /// Whether generation stopped at `<|im_end|>` rather than at `max_tokens`.
    pub finished: bool,
    /// The engine of the batched pool that decoded it (0 on candle).
    pub engine: usize,
}

impl ModelError {
    /// [`ModelError::Load`] for the file at `path`.
    pub fn load(path: &Path, detail: impl Into<String>) -> Self {
        Self::Load {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }
}

/// The loaded model: weights (shared by every session) and tokenizer.
pub struct SmolLm {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    stops: Vec<u32>,
    /// Dtypes of the layer matrices after loading, for checks and reports.
    pub matrix_dtypes: Vec<GgmlDType>,
}

impl SmolLm {
    pub fn load(path: &Path, options: LoadOptions) -> Result<Self, ModelError> {
        let fail = |detail: String| ModelError::load(path, detail);
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| fail(e.to_string()))?;
        let tokenizer = tokenizer(&content, options.fix_tokenizer)?;
        let device = Device::Cpu;
        let (weights, matrix_dtypes) = if options.requantize {
            let (content, data, dtypes) = requantized(content, &mut reader, &device)?;
            (
                ModelWeights::from_gguf(content, &mut Cursor::new(data), &device)?,
                dtypes,
            )
        } else {
            let dtypes = content
                .tensor_infos
                .values()
                .map(|t| t.ggml_dtype)
                .collect();
            (
                ModelWeights::from_gguf(content, &mut reader, &device)?,
                dtypes,
            )
        };
        let stops = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        Ok(Self {
            weights,
            tokenizer,
            stops,
            matrix_dtypes,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Just the tokenizer of the GGUF at `path` (reads the header only).
    pub fn load_tokenizer(path: &Path, fix: bool) -> Result<Tokenizer, ModelError> {
        let fail = |detail: String| ModelError::load(path, detail);
        let mut file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| fail(e.to_string()))?;
        tokenizer(&content, fix)
    }

    /// Token ids of `text`, special tokens recognised, no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// A generation session with its own KV cache (the weights are shared).
    pub fn session(&self) -> Session<'_> {
        Session {
            model: self,
            weights: self.weights.clone(),
        }
    }
}

/// The ChatML prompt for `(role, content)` messages, ending with the
/// assistant's turn.
pub fn chat_prompt<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut prompt = String::new();
    for (role, content) in messages {
        prompt.push_str("<|im_start|>");
        prompt.push_str(role);
        prompt.push('\n');
        prompt.push_str(content);
        prompt.push_str("<|im_end|>\n");
    }
    prompt.push_str("<|im_start|>assistant\n");
    prompt
}

/// Generation state for one worker.
pub struct Session<'a> {
    model: &'a SmolLm,
    weights: ModelWeights,
}

impl Session<'_> {
    /// Generate an answer to the ChatML `prompt`.
    pub fn generate(
        &mut self,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<Generation, ModelError> {
        self.generate_with(prompt, options, None)
    }

    /// Generate an answer, handing each new piece of its text to `on_text`
    /// as it is decoded (the pieces add up to [`Generation::text`]);
    /// `on_text` returning false stops the generation there (its reader has
    /// gone).
    pub fn generate_with(
        &mut self,
        prompt: &str,
        options: &GenerateOptions,
        mut on_text: Option<&mut dyn FnMut(&str) -> bool>,
    ) -> Result<Generation, ModelError> {
        let prompt_ids = self.model.encode(prompt)?;
        if prompt_ids.len() + options.max_tokens > MAX_SEQ_LEN {
            return Err(ModelError::PromptTooLong {
                prompt: prompt_ids.len(),
                max_tokens: options.max_tokens,
                limit: MAX_SEQ_LEN,
            });
        }
        let sampling = if options.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            Sampling::All {
                temperature: options.temperature,
            }
        };
        let mut sampler = LogitsProcessor::from_sampling(options.seed, sampling);
        let device = Device::Cpu;

        let started = Instant::now();
        let input = Tensor::new(prompt_ids.as_slice(), &device)?.unsqueeze(0)?;
        let logits = self.weights.forward(&input, 0)?.squeeze(0)?;
        let mut next = sampler.sample(&logits)?;
        let prompt_time = started.elapsed();

        let started = Instant::now();
        let mut generated: Vec<u32> = Vec::new();
        let mut finished = false;
        let mut shown = Shown::default();
        while generated.len() < options.max_tokens {
            if self.model.stops.contains(&next) {
                finished = true;
                break;
            }
            generated.push(next);
            if let Some(on_text) = on_text.as_mut() {
                if !shown.more(&self.model.tokenizer, &generated, on_text)? {
                    break;
                }
            }
            if generated.len() == options.max_tokens {
                break;
            }
            let input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
            let logits = self
                .weights
                .forward(&input, prompt_ids.len() + generated.len() - 1)?
                .squeeze(0)?;
            let logits = if options.repeat_penalty == 1.0 {
                logits
            } else {
                let start = generated.len().saturating_sub(options.repeat_last_n);
                candle_transformers::utils::apply_repeat_penalty(
                    &logits,
                    options.repeat_penalty,
                    &generated[start..],
                )?
            };
            next = sampler.sample(&logits)?;
        }
        let text = self
            .model
            .tokenizer
            .decode(&generated, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Generation {
            text: text.trim().to_string(),
            prompt_tokens: prompt_ids.len(),
            cached_prompt_tokens: 0,
            completion_tokens: generated.len(),
            prompt_time,
            generation_time: started.elapsed(),
            finished,
            engine: 0,
        })
    }
}

/// The text handed out so far while streaming. Pieces are cut so that they
/// add up to the final, trimmed text: leading and trailing whitespace and a
/// partly decoded character (U+FFFD) wait until text follows them.
#[derive(Default)]
pub(crate) struct Shown {
    text: String,
}

impl Shown {
    /// Hand out what `generated` adds to the text shown; false when the
    /// reader has gone.
    pub(crate) fn more(
        &mut self,
        tokenizer: &Tokenizer,
        generated: &[u32],
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<bool, ModelError> {
        let text = tokenizer
            .decode(generated, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let visible = text.trim_start().trim_end_matches('\u{FFFD}').trim_end();
        if visible.len() <= self.text.len() || !visible.starts_with(self.text.as_str()) {
            return Ok(true);
        }
        let piece = &visible[self.text.len()..];
        let going_on = on_text(piece);
        self.text.push_str(piece);
        Ok(going_on)
    }
}

/// The tokenizer from the GGUF metadata, with SmolLM2's pre-tokenizer put
/// back when `fix` is set.
fn tokenizer(content: &gguf_file::Content, fix: bool) -> Result<Tokenizer, ModelError> {
    let mut tokenizer = Tokenizer::from_gguf(content)?;
    if fix {
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
    }
    Ok(tokenizer)
}

/// Every tensor read; Q4_1 ones requantised to Q8_0; laid out in one buffer
/// with a `Content` that points into it.
fn requantized(
    content: gguf_file::Content,
    reader: &mut BufReader<std::fs::File>,
    device: &Device,
) -> Result<(gguf_file::Content, Vec<u8>, Vec<GgmlDType>), ModelError> {
    let mut data: Vec<u8> = Vec::new();
    let mut infos = HashMap::new();
    let mut dtypes = Vec::new();
    for (name, info) in &content.tensor_infos {
        let mut tensor = info.read(reader, content.tensor_data_offset, device)?;
        if tensor.dtype() == GgmlDType::Q4_1 {
            tensor = QTensor::quantize(&tensor.dequantize(device)?, GgmlDType::Q8_0)?;
        }
        let offset = data.len() as u64;
        data.extend_from_slice(&tensor.data()?);
        while !data.len().is_multiple_of(32) {
            data.push(0);
        }
        dtypes.push(tensor.dtype());
        let info = gguf_file::TensorInfo {
            ggml_dtype: tensor.dtype(),
            shape: tensor.shape().clone(),
            offset,
        };
        infos.insert(name.clone(), info);
    }
    let requantized = gguf_file::Content {
        magic: content.magic,
        metadata: content.metadata,
        tensor_infos: infos,
        tensor_data_offset: 0,
    };
    Ok((requantized, data, dtypes))
}
