//! The weights the llama.cpp engine runs: the package's Q4_1 as it is
//! (the default), or, with `--model-weights q4_0` or `q8_0`, the package
//! requantised by llama.cpp's own quantizer.
//!
//! Why Q4_0 is offered: llama.cpp repacks Q4_0 matrices at load into an
//! interleaved layout whose matrix-matrix kernels reuse every weight load
//! for several rows of the batch; Q4_1 has no such layout, so a batch of
//! eight sequences costs nearly eight one-row products. Measured
//! (docs/benchmarks.md): eight in flight 1.75 times faster than in Q4_1.
//! Why it is not the default: a 4-bit model requantised to another 4-bit
//! format loses a little, and the sample's mean score fell by about 0.035
//! with it. The token embeddings (also the output projection) stay Q8_0,
//! as packaged.
//!
//! Q8_0 is offered as the lossless-in-practice counterpart: 8-bit weights
//! need no 4-bit repacking, so it tells apart what the format costs in
//! speed from what requantising costs in quality.
//!
//! A derived file is made once, beside its source in the model cache,
//! and made again when the source is newer (a package fetched again); it
//! is written to a temporary file and renamed into place.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::smollm::ModelError;

/// The environment variable `--model-weights` sets.
pub const MODEL_WEIGHTS_ENV: &str = "ANSWERLOOP_MODEL_WEIGHTS";

/// The weights the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineWeights {
    /// The package's GGUF as it is (Q4_1).
    #[default]
    Packaged,
    /// The package requantised to Q4_0.
    Q4_0,
    /// The package requantised to Q8_0.
    Q8_0,
}

impl EngineWeights {
    /// Every name `--model-weights` takes.
    pub const NAMES: [&'static str; 3] = ["packaged", "q4_0", "q8_0"];

    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name.trim() {
            "" | "packaged" => Ok(Self::Packaged),
            "q4_0" => Ok(Self::Q4_0),
            "q8_0" => Ok(Self::Q8_0),
            other => Err(ModelError::Engine(format!(
                "unknown model weights {other:?}: use {}",
                Self::NAMES.join(", ")
            ))),
        }
    }

    /// `ANSWERLOOP_MODEL_WEIGHTS`, else the package's.
    pub fn from_env() -> Result<Self, ModelError> {
        Self::parse(&std::env::var(MODEL_WEIGHTS_ENV).unwrap_or_default())
    }

    /// The GGUF to load for the packaged `source`.
    pub fn file(self, source: &Path) -> Result<PathBuf, ModelError> {
        match self {
            Self::Packaged => Ok(source.to_path_buf()),
            Self::Q4_0 => derived_file(source, Quant::Q4_0),
            Self::Q8_0 => derived_file(source, Quant::Q8_0),
        }
    }
}

/// A format the package can be requantised to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    Q4_0,
    Q8_0,
}

impl Quant {
    /// As in GGUF file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q8_0 => "Q8_0",
        }
    }

    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            Self::Q4_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0,
            Self::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
        }
    }
}

/// The GGUF the engine loads for the packaged `source`, as
/// `--model-weights` says.
pub fn engine_file(source: &Path) -> Result<PathBuf, ModelError> {
    EngineWeights::from_env()?.file(source)
}

/// `source` requantised to `quant`, beside it, made now if it is missing
/// or older than `source`.
pub fn derived_file(source: &Path, quant: Quant) -> Result<PathBuf, ModelError> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.trim_end_matches(".gguf");
    let stem = stem.rsplit_once('.').map_or(stem, |(model, _quant)| model);
    let derived = source.with_file_name(format!("{stem}.{}.gguf", quant.name()));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&derived), modified(source)) {
        (Some(derived), Some(source)) => derived >= source,
        _ => false,
    };
    if !fresh {
        requantise(source, &derived, quant)?;
    }
    Ok(derived)
}

/// Write `source`'s weights to `out` in `quant` (token embeddings in Q8_0).
pub fn requantise(source: &Path, out: &Path, quant: Quant) -> Result<(), ModelError> {
    let fail = |detail: String| ModelError::load(source, detail);
    if !source.is_file() {
        return Err(fail("no such file".into()));
    }
    crate::batched::backend()?;
    // Unique to this call: two threads may make the same file at once.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let partial = out.with_extension(format!("partial-{}-{call}", std::process::id()));
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| fail(format!("{} holds a NUL byte", p.display())))
    };
    let (c_source, c_partial) = (c_path(source)?, c_path(&partial)?);
    // SAFETY: the default parameters are a plain struct llama.cpp fills; the
    // pointers it keeps (imatrix, overrides) stay null, and both paths are
    // NUL-terminated strings alive for the call.
    let code = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.nthread = 1;
        params.ftype = quant.ftype();
        params.allow_requantize = true;
        params.token_embedding_type = llama_cpp_sys_2::GGML_TYPE_Q8_0;
        params.output_tensor_type = llama_cpp_sys_2::GGML_TYPE_Q8_0;
        llama_cpp_sys_2::llama_model_quantize(c_source.as_ptr(), c_partial.as_ptr(), &params)
    };
    if code != 0 {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(format!(
            "llama.cpp could not requantise it to {} (code {code})",
            quant.name()
        )));
    }
    std::fs::rename(&partial, out).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        fail(format!("placing {}: {e}", out.display()))
    })
}
