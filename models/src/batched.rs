//! SmolLM2 on llama.cpp (the `llama-cpp-2` binding), with continuous
//! batching: one engine thread owns one llama.cpp context whose KV cache
//! holds a sequence per slot, and every step decodes one token of every
//! running generation in a single batch. A request that arrives while others
//! decode takes a free slot at the next step (its prompt is prefilled in the
//! same batch), so eight questions in flight cost about one forward pass a
//! token, not eight.
//!
//! Why llama.cpp and not candle: measured on the same GGUF (docs/benchmarks.md),
//! llama.cpp's Q4_1 kernels are about twice as fast on one thread as candle
//! on Q8_0, and candle's `quantized_llama` has no batched forward over
//! several sequences with their own positions.
//!
//! Text stays exactly as the candle path makes it: prompts are encoded and
//! answers decoded with the same Hugging Face tokenizer (SmolLM2's own
//! pre-tokenizer, ChatML); llama.cpp only runs the forward pass and
//! samples. A slow stream reader never stalls the batch: pieces it has not
//! taken yet wait in its slot and go out with the next ones.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokenizers::Tokenizer;
use tokio::sync::mpsc::error::TrySendError;

use crate::pool::Job;
use crate::smollm::{Generation, ModelError, Shown, SmolLm};

/// How the batched engine runs.
#[derive(Debug, Clone, Copy)]
pub struct BatchedOptions {
    /// Generations decoded together (KV-cache sequences).
    pub slots: usize,
    /// Threads of the forward pass.
    pub threads: usize,
    /// Tokens a slot holds: prompt plus generation.
    pub window: usize,
    /// Engines, each a thread with a context of its own and its share of
    /// the slots, taking requests from one queue.
    pub engines: usize,
}

impl Default for BatchedOptions {
    /// Eight slots on the threads `--model-threads` names (one unless set),
    /// in the engines `--model-engines` names (unless set, one a core, at
    /// most two: [`default_engines`]).
    ///
    /// One thread by default: the pipeline shares the machine (broker,
    /// SmartModules, HTTP), and llama.cpp's OpenMP threads spin at every
    /// operation's barrier, so a second thread that must wait for a busy
    /// core costs far more than it gives (measured: docs/benchmarks.md).
    /// A second core is better used by a second engine of one thread: the
    /// two never wait for each other.
    fn default() -> Self {
        Self {
            slots: 8,
            threads: model_threads(),
            window: 2048,
            engines: model_engines(),
        }
    }
}

impl BatchedOptions {
    /// The slots of engine `index` (of [`engines`](Self::engines)): the
    /// slots shared out as evenly as they go, at least one each.
    pub fn slots_of(&self, index: usize) -> usize {
        let engines = self.engines.max(1);
        let slots = self.slots.max(engines);
        slots / engines + usize::from(index < slots % engines)
    }
}

/// The KV cache's element type (named as llama.cpp's `--cache-type-k` does).
pub const KV_CACHE_TYPE: &str = "q8_0";

/// The environment variable `--model-threads` sets.
pub const MODEL_THREADS_ENV: &str = "ANSWERLOOP_MODEL_THREADS";

/// The environment variable `--model-engines` sets.
pub const MODEL_ENGINES_ENV: &str = "ANSWERLOOP_MODEL_ENGINES";

/// Threads a generation uses: `ANSWERLOOP_MODEL_THREADS`, else one.
pub fn model_threads() -> usize {
    positive_env(MODEL_THREADS_ENV).unwrap_or(1)
}

/// Engines the local model runs: `ANSWERLOOP_MODEL_ENGINES`, else
/// [`default_engines`].
pub fn model_engines() -> usize {
    positive_env(MODEL_ENGINES_ENV).unwrap_or_else(default_engines)
}

/// One engine a core, at most two. Measured on 2 cores of a Zen 4
/// (docs/benchmarks.md): the whole sample in 240 s on two engines against
/// 425 s on one, with the same answers, because llama.cpp's batched
/// kernels there gain little from a second sequence in a batch, while a
/// second engine on the second core nearly doubles the answers a second.
/// More than two is not measured.
pub fn default_engines() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// A positive count from the environment, if set.
fn positive_env(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// llama.cpp's backend may be initialised once a process.
pub(crate) fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| ModelError::Engine(format!("llama.cpp backend: {e}")))
}

/// The model loaded for the engine: llama.cpp's weights plus the tokenizer.
pub struct BatchedModel {
    model: LlamaModel,
    tokenizer: Tokenizer,
    stops: Vec<u32>,
}

impl BatchedModel {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let tokenizer = SmolLm::load_tokenizer(path, true)?;
        let model = LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default())
            .map_err(|e| ModelError::load(path, e.to_string()))?;
        let stops = ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        Ok(Self {
            model,
            tokenizer,
            stops,
        })
    }
}

impl BatchedModel {
    /// The GGUF's file type (`general.file_type`: 2 is Q4_0, 3 is Q4_1).
    pub fn file_type(&self) -> Option<u32> {
        self.model
            .meta_val_str("general.file_type")
            .ok()?
            .parse()
            .ok()
    }

    /// The weights' size in bytes.
    pub fn size(&self) -> u64 {
        self.model.size()
    }
}

/// One generation in a slot.
struct Running {
    job: Job,
    prompt_tokens: usize,
    /// Of them, copied from the prompt cache.
    cached_prompt_tokens: usize,
    generated: Vec<u32>,
    sampler: LlamaSampler,
    shown: Shown,
    /// Pieces the stream reader has not taken yet.
    unsent: String,
    /// Next position in the slot's sequence.
    pos: i32,
    /// Where its logits are in the last batch, when it has any.
    logits: Option<i32>,
    admitted: Instant,
    first_token: Option<Instant>,
    /// Stopped at `<|im_end|>`.
    finished: bool,
}

/// The requests, one queue for every engine of a pool.
#[derive(Clone)]
pub(crate) struct Queue(Arc<Mutex<Receiver<Job>>>);

impl Queue {
    pub(crate) fn new(jobs: Receiver<Job>) -> Self {
        Self(Arc::new(Mutex::new(jobs)))
    }

    /// The next request, waiting for it; `None` once every sender is gone.
    fn wait(&self) -> Option<Job> {
        self.0.lock().expect("request queue poisoned").recv().ok()
    }

    /// A request if one is waiting. While another engine holds the queue
    /// it is idle and waiting for the next request, so that one is its:
    /// this engine, busy, takes nothing.
    fn poll(&self) -> Result<Job, TryRecvError> {
        match self.0.try_lock() {
            Ok(jobs) => jobs.try_recv(),
            Err(TryLockError::WouldBlock) => Err(TryRecvError::Empty),
            Err(TryLockError::Poisoned(_)) => Err(TryRecvError::Disconnected),
        }
    }
}

/// Run engine `index` of `options.engines` on this thread until every
/// sender of `jobs` is gone.
pub(crate) fn run(
    model: Arc<BatchedModel>,
    options: BatchedOptions,
    index: usize,
    jobs: Queue,
) -> Result<(), ModelError> {
    let slots = options.slots_of(index);
    // One sequence a slot, and one more for the prompt cache.
    let cache_seq = slots;
    let n_ctx = (options.window * (slots + 1)) as u32;
    // The KV cache in Q8_0 with flash attention: on the CPU, attention over
    // an F16 cache costs more than the weights once a sequence holds a few
    // hundred tokens (eight sequences at 150 tokens: 40 ms a step in F16,
    // 24 ms in Q8_0, docs/benchmarks.md). Each sequence has its own stream
    // (not unified), so its attention spans only its own cells.
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch((options.window + slots) as u32)
        .with_n_ubatch(512)
        .with_n_seq_max((slots + 1) as u32)
        .with_kv_unified(false)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED)
        .with_type_k(KvCacheType::Q8_0)
        .with_type_v(KvCacheType::Q8_0)
        .with_n_threads(options.threads as i32)
        .with_n_threads_batch(options.threads as i32);
    let mut context = model
        .model
        .new_context(backend()?, params)
        .map_err(|e| ModelError::Engine(format!("llama.cpp context: {e}")))?;
    let mut batch = LlamaBatch::new(options.window + slots, slots as i32);
    warm_up(&mut context, &mut batch)?;
    let mut running: Vec<Option<Running>> = (0..slots).map(|_| None).collect();
    let mut cache = PromptCache::new(cache_seq);
    loop {
        batch.clear();
        // Tokens of the generations under way first, one each.
        for (seq, slot) in running.iter_mut().enumerate() {
            if let Some(r) = slot {
                let last = *r.generated.last().expect("a running slot has a token");
                r.logits = Some(batch.n_tokens());
                add(&mut batch, last, r.pos, seq)?;
                r.pos += 1;
            }
        }
        // Then new requests, while a slot and room in the batch are free.
        let idle = running.iter().all(Option::is_none);
        let mut block = idle;
        while let Some(seq) = running.iter().position(Option::is_none) {
            let job = if block {
                match jobs.wait() {
                    Some(job) => job,
                    None => return Ok(()),
                }
            } else {
                match jobs.poll() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if idle => return Ok(()),
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            if job.reply.is_closed() {
                continue; // the caller gave up while it waited
            }
            block = false;
            match admit(
                &model,
                &options,
                job,
                &mut context,
                &mut batch,
                seq,
                &mut cache,
            ) {
                Ok(Some(r)) => running[seq] = Some(r),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            // The batch holds `window + slots` tokens; the next prompt may
            // take a whole window, so it waits a step unless that is free.
            if batch.n_tokens() as usize > slots {
                break;
            }
        }
        if batch.n_tokens() == 0 {
            continue;
        }
        if let Err(e) = context.decode(&mut batch) {
            cache.forget();
            for slot in running.iter_mut() {
                if let Some(r) = slot.take() {
                    let _ = r
                        .job
                        .reply
                        .send(Err(ModelError::Engine(format!("llama.cpp decode: {e}"))));
                }
            }
            continue;
        }
        // Before any slot of this step is cleared: its prompt is in the KV.
        cache.keep(&mut context)?;
        for (seq, slot) in running.iter_mut().enumerate() {
            let Some(r) = slot else { continue };
            let Some(at) = r.logits.take() else { continue };
            let token = r.sampler.sample(&context, at).0 as u32;
            if step(&model, r, token)? {
                let r = slot.take().expect("checked above");
                context
                    .clear_kv_cache_seq(Some(seq as u32), None, None)
                    .ok();
                finish(&model, r, index);
            }
        }
    }
}

/// One decode before the first request, as llama-server does at start: the
/// first decode of a context allocates its compute buffers and faults in
/// the weights, which would otherwise land on the first question.
fn warm_up(context: &mut LlamaContext, batch: &mut LlamaBatch) -> Result<(), ModelError> {
    batch.clear();
    add(batch, 0, 0, 0)?;
    context
        .decode(batch)
        .map_err(|e| ModelError::Engine(format!("llama.cpp warm-up decode: {e}")))?;
    context
        .clear_kv_cache_seq(Some(0), None, None)
        .map_err(kv_error)?;
    batch.clear();
    Ok(())
}

fn kv_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::Engine(format!("llama.cpp KV cache: {e}"))
}

fn add(batch: &mut LlamaBatch, token: u32, pos: i32, seq: usize) -> Result<(), ModelError> {
    batch
        .add(LlamaToken(token as i32), pos, &[seq as i32], true)
        .map_err(|e| ModelError::Engine(format!("llama.cpp batch: {e}")))
}

/// The KV of an earlier prompt, kept in a sequence of its own, so that a
/// prompt starting the same way copies that start instead of computing it:
/// every question shares the system prompt and the question marker, and
/// the draws of best of n share their whole prompt. A copy between
/// sequences moves a whole stream (a few milliseconds); computing the
/// system prompt's 35 tokens again takes tens.
struct PromptCache {
    seq: usize,
    /// The prompt whose KV the cache sequence holds.
    tokens: Vec<u32>,
    /// A slot whose prompt, computed whole this step, becomes the cache.
    next: Option<(usize, Vec<u32>)>,
}

/// Fewer shared tokens than this are computed rather than copied.
const MIN_CACHED_TOKENS: usize = 16;

impl PromptCache {
    fn new(seq: usize) -> Self {
        Self {
            seq,
            tokens: Vec::new(),
            next: None,
        }
    }

    /// How many of `prompt`'s first tokens to copy (the last is always
    /// computed: its logits are the first token's).
    fn reusable(&self, prompt: &[u32]) -> usize {
        let shared = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        if shared >= MIN_CACHED_TOKENS {
            shared
        } else {
            0
        }
    }

    /// After a successful decode: the prompt computed whole becomes the
    /// cache. llama.cpp copies the stream at the next decode, before it
    /// computes anything, and in order with the copies out of the cache.
    fn keep(&mut self, context: &mut LlamaContext) -> Result<(), ModelError> {
        let Some((seq, tokens)) = self.next.take() else {
            return Ok(());
        };
        context
            .copy_kv_cache_seq(seq as i32, self.seq as i32, None, None)
            .map_err(kv_error)?;
        self.tokens = tokens;
        Ok(())
    }

    /// After a failed decode nothing in the KV is trusted.
    fn forget(&mut self) {
        self.tokens.clear();
        self.next = None;
    }
}

/// Put `job`'s prompt into `batch` as sequence `seq` (its cached start
/// copied, the rest computed); None when the job was answered at once (a
/// prompt too long, nothing to generate).
fn admit(
    model: &BatchedModel,
    options: &BatchedOptions,
    job: Job,
    context: &mut LlamaContext,
    batch: &mut LlamaBatch,
    seq: usize,
    cache: &mut PromptCache,
) -> Result<Option<Running>, ModelError> {
    let prompt = match model.tokenizer.encode(job.prompt.as_str(), false) {
        Ok(encoding) => encoding.get_ids().to_vec(),
        Err(e) => {
            let _ = job.reply.send(Err(ModelError::Tokenizer(e.to_string())));
            return Ok(None);
        }
    };
    if prompt.is_empty() || prompt.len() + job.options.max_tokens > options.window {
        let _ = job.reply.send(Err(ModelError::PromptTooLong {
            prompt: prompt.len(),
            max_tokens: job.options.max_tokens,
            limit: options.window,
        }));
        return Ok(None);
    }
    context
        .clear_kv_cache_seq(Some(seq as u32), None, None)
        .map_err(kv_error)?;
    let reused = cache.reusable(&prompt);
    if reused > 0 {
        context
            .copy_kv_cache_seq(cache.seq as i32, seq as i32, None, None)
            .map_err(kv_error)?;
        context
            .clear_kv_cache_seq(Some(seq as u32), Some(reused as u32), None)
            .map_err(kv_error)?;
    } else if cache.next.is_none() {
        cache.next = Some((seq, prompt.clone()));
    }
    let admitted = Instant::now();
    for (i, &token) in prompt.iter().enumerate().skip(reused) {
        let last = i + 1 == prompt.len();
        batch
            .add(LlamaToken(token as i32), i as i32, &[seq as i32], last)
            .map_err(|e| ModelError::Engine(format!("llama.cpp batch: {e}")))?;
    }
    let sampler = sampler(model, &job);
    Ok(Some(Running {
        prompt_tokens: prompt.len(),
        cached_prompt_tokens: reused,
        pos: prompt.len() as i32,
        logits: Some(batch.n_tokens() - 1),
        generated: Vec::new(),
        sampler,
        shown: Shown::default(),
        unsent: String::new(),
        admitted,
        first_token: None,
        finished: false,
        job,
    }))
}

/// Repeat penalty over the generated tokens, then greedy or seeded sampling.
fn sampler(model: &BatchedModel, job: &Job) -> LlamaSampler {
    let o = &job.options;
    let penalties = LlamaSampler::penalties(
        model.model.n_vocab(),
        o.repeat_last_n as i32,
        o.repeat_penalty,
        0.0,
        0.0,
    );
    if o.temperature <= 0.0 {
        LlamaSampler::chain_simple([penalties, LlamaSampler::greedy()])
    } else {
        LlamaSampler::chain_simple([
            penalties,
            LlamaSampler::temp(o.temperature as f32),
            LlamaSampler::dist(o.seed as u32),
        ])
    }
}

/// Take the sampled `token`; true when the generation is over.
fn step(model: &BatchedModel, r: &mut Running, token: u32) -> Result<bool, ModelError> {
    if r.first_token.is_none() {
        r.first_token = Some(Instant::now());
    }
    if model.stops.contains(&token) {
        r.finished = true;
        return Ok(true);
    }
    r.generated.push(token);
    if let Some(pieces) = &r.job.pieces {
        let unsent = &mut r.unsent;
        r.shown
            .more(&model.tokenizer, &r.generated, &mut |piece: &str| {
                unsent.push_str(piece);
                true
            })?;
        if !r.unsent.is_empty() {
            match pieces.try_send(std::mem::take(&mut r.unsent)) {
                Ok(()) => {}
                Err(TrySendError::Full(piece)) => r.unsent = piece,
                Err(TrySendError::Closed(_)) => return Ok(true), // the reader has gone
            }
        }
    }
    Ok(r.generated.len() >= r.job.options.max_tokens)
}

/// Answer the job of a generation `engine` finished.
fn finish(model: &BatchedModel, r: Running, engine: usize) {
    let now = Instant::now();
    let first = r.first_token.unwrap_or(now);
    let result = model
        .tokenizer
        .decode(&r.generated, true)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))
        .map(|text| Generation {
            text: text.trim().to_string(),
            prompt_tokens: r.prompt_tokens,
            cached_prompt_tokens: r.cached_prompt_tokens,
            completion_tokens: r.generated.len(),
            prompt_time: first - r.admitted,
            generation_time: now.checked_duration_since(first).unwrap_or(Duration::ZERO),
            finished: r.finished,
            engine,
        });
    if let Some(pieces) = &r.job.pieces {
        if !r.unsent.is_empty() {
            // The last pieces: wait for the reader rather than lose them.
            let _ = pieces.blocking_send(r.unsent);
        }
    }
    let _ = r.job.reply.send(result);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, TryRecvError};

    use super::{BatchedOptions, Queue};

    fn shares(slots: usize, engines: usize) -> Vec<usize> {
        let options = BatchedOptions {
            slots,
            threads: 1,
            window: 64,
            engines,
        };
        (0..engines.max(1)).map(|i| options.slots_of(i)).collect()
    }

    #[test]
    fn slots_are_shared_out_evenly_and_every_engine_has_one() {
        assert_eq!(shares(8, 1), [8]);
        assert_eq!(shares(8, 2), [4, 4]);
        assert_eq!(shares(7, 2), [4, 3]);
        assert_eq!(shares(8, 3), [3, 3, 2]);
        assert_eq!(shares(1, 2), [1, 1], "at least one slot an engine");
        assert_eq!(shares(0, 0), [1], "at least one engine and one slot");
    }

    #[test]
    fn a_queue_whose_engine_panicked_holding_it_is_closed_to_the_others() {
        let (_requests, jobs) = channel();
        let queue = Queue::new(jobs);
        assert!(
            matches!(queue.poll(), Err(TryRecvError::Empty)),
            "open and empty"
        );
        let held = Queue(queue.0.clone());
        let panicked = std::thread::spawn(move || {
            let _jobs = held.0.lock().unwrap();
            panic!("an engine fails while it waits for a request");
        })
        .join();
        assert!(panicked.is_err());
        assert!(
            matches!(queue.poll(), Err(TryRecvError::Disconnected)),
            "a poisoned queue reads as closed, so a busy engine finishes and stops"
        );
    }
}
