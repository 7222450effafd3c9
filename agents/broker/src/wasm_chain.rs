//! A SmartModule chain as the embedded broker runs it: built from the
//! `.wasm` bytes the binary carries and run through fluvio-smartengine.
//!
//! A chain is built once and kept. It used to be rebuilt after every 32 MB
//! of output, because the code `#[smartmodule(...)]` generates leaked each
//! call's output into the module's memory; our modules now enter through
//! `answerloop-smartmodule-entry`, which frees it, and a kept instance stays
//! flat (`tests/smartmodule_memory.rs`). A rebuild compiled the module
//! again: half a second for `answer-score`.
//!
//! Modules compile on [`compile_pool`], one thread a core: wasmtime
//! compiles a module's functions in parallel on the rayon pool it is called
//! from, and the global pool is sized for the local model's threads
//! (`--model-threads`, one by default), which left every chain to compile
//! on one core while the pipeline waited for it.

use fluvio_smartengine::{
    SmartEngine, SmartModuleChainBuilder, SmartModuleChainInstance, SmartModuleConfig,
};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;

use super::{BrokerError, ChainSpec, Record};
use answerloop_smartmodule_entry::wire;
use answerloop_telemetry::metrics::{metrics, smartmodule};

/// The SmartModule API version the chains are called with (Fluvio's current).
const SMARTMODULE_VERSION: i16 = 21;

pub struct WasmChain {
    spec: ChainSpec,
    instance: SmartModuleChainInstance,
}

impl WasmChain {
    pub fn build(engine: &SmartEngine, spec: &ChainSpec) -> Result<Self, BrokerError> {
        let instance = instantiate(engine, spec).map_err(|reason| BrokerError::Chain {
            chain: spec.describe(),
            reason,
        })?;
        Ok(Self {
            instance,
            spec: spec.clone(),
        })
    }

    /// Run `records` through the chain. CPU work: call off the executor.
    pub fn process(&mut self, records: Vec<Record>) -> Result<Vec<Record>, BrokerError> {
        self.run(records).map_err(|reason| BrokerError::Chain {
            chain: self.spec.describe(),
            reason,
        })
    }

    fn run(&mut self, records: Vec<Record>) -> Result<Vec<Record>, String> {
        let input: Vec<fluvio_smartmodule::Record> = records
            .into_iter()
            .map(|r| match r.key {
                Some(key) => fluvio_smartmodule::Record::new_key_value(key, r.value),
                None => fluvio_smartmodule::Record::new(r.value),
            })
            .collect();
        // Encoded as `SmartModuleInput::try_from_records` encodes them, the
        // values written as slices rather than a byte at a time.
        let mut raw = Vec::with_capacity(4 + wire::encoded_size(&input));
        wire::encode_records(&input, &mut raw, SMARTMODULE_VERSION)
            .map_err(|e| format!("cannot encode the chain's input: {e}"))?;
        let input = SmartModuleInput::new(raw, 0, 0);
        let output = self.instance.process(input).map_err(|e| format!("{e:#}"));
        count_chain(self.instance.metrics_export());
        let output = output?;
        if let Some(err) = output.error {
            return Err(format!("a SmartModule returned an error: {err:?}"));
        }
        Ok(output
            .successes
            .into_iter()
            .map(|r| Record {
                key: r.key.map(|k| k.as_ref().to_vec()),
                value: r.value.as_ref().to_vec(),
            })
            .collect())
    }
}

/// A chain shared by the tasks that run records through it.
pub type SharedChain = std::sync::Arc<std::sync::Mutex<WasmChain>>;

/// A batch going through a chain on a blocking thread.
pub type ChainTask = tokio::task::JoinHandle<Result<Vec<Record>, BrokerError>>;

/// A chain of `spec` to share.
pub fn shared(engine: &SmartEngine, spec: &ChainSpec) -> Result<SharedChain, BrokerError> {
    Ok(std::sync::Arc::new(std::sync::Mutex::new(
        WasmChain::build(engine, spec)?,
    )))
}

/// Chains built once and shared by every caller with the same spec: the
/// produce chains of a broker that runs them in-process.
pub struct ChainCache {
    engine: SmartEngine,
    chains: std::sync::Mutex<std::collections::HashMap<ChainSpec, SharedChain>>,
}

impl ChainCache {
    pub fn new(engine: SmartEngine) -> Self {
        Self {
            engine,
            chains: Default::default(),
        }
    }

    /// The engine the chains run on, for chains that are not shared.
    pub fn engine(&self) -> &SmartEngine {
        &self.engine
    }

    /// The chain of `spec`, built on first use.
    pub fn get(&self, spec: &ChainSpec) -> Result<SharedChain, BrokerError> {
        let mut chains = self.chains.lock().expect("chain map poisoned");
        if let Some(chain) = chains.get(spec) {
            return Ok(chain.clone());
        }
        let chain = shared(&self.engine, spec)?;
        chains.insert(spec.clone(), chain.clone());
        Ok(chain)
    }
}

/// Run `records` through a chain off the async executor (wasm is CPU work).
pub async fn run_chain(
    chain: SharedChain,
    records: Vec<Record>,
) -> Result<Vec<Record>, BrokerError> {
    chain_output(&mut spawn_chain(chain, records)).await
}

/// Start `records` through a chain on a blocking thread.
pub fn spawn_chain(chain: SharedChain, records: Vec<Record>) -> ChainTask {
    tokio::task::spawn_blocking(move || chain.lock().expect("chain poisoned").process(records))
}

/// What a chain task output. Awaits the handle, not the task: cancel-safe.
pub async fn chain_output(task: &mut ChainTask) -> Result<Vec<Record>, BrokerError> {
    task.await
        .map_err(|e| BrokerError::Task(format!("chain task failed: {e}")))?
}

/// A fresh instance of `spec`'s modules; the error is the reason alone.
fn instantiate(engine: &SmartEngine, spec: &ChainSpec) -> Result<SmartModuleChainInstance, String> {
    let mut builder = SmartModuleChainBuilder::default();
    for step in &spec.steps {
        let module = answerloop_wasm::by_name(&step.name)
            .ok_or_else(|| format!("no SmartModule named {:?}", step.name))?;
        let mut config = SmartModuleConfig::builder();
        config.smartmodule_names(vec![step.name.clone()]);
        for (k, v) in &step.params {
            config.param(k.clone(), v.clone());
        }
        let config = config.build().map_err(|e| e.to_string())?;
        builder.add_smart_module(config, module.wasm.to_vec());
    }
    let instance = compile_pool().install(|| builder.initialize(engine));
    release_freed_memory();
    instance.map_err(|e| format!("{e:#}"))
}

/// Hand the compiler's freed memory back to the system. Each compiling
/// thread allocates from an arena of its own, which glibc keeps for reuse;
/// without this, a broker that compiled its chains once held about 10 MB
/// more for the rest of its life (`bench pipeline`'s peaks).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The threads chains compile on: one a core.
fn compile_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores)
            .thread_name(|i| format!("wasm-compile-{i}"))
            .build()
            .expect("a thread pool of one thread a core")
    })
}

/// Add up, in the process's metrics, what fluvio-smartengine counted for a
/// chain since the last call.
fn count_chain(
    exported: std::collections::HashMap<
        String,
        fluvio_smartengine::metrics::SmartModuleChainMetrics,
    >,
) {
    let m = metrics();
    for (name, counted) in exported {
        let labels = smartmodule(&name);
        m.smartmodule_invocations
            .get_or_create(&labels)
            .inc_by(counted.invocation_count());
        m.smartmodule_bytes_in
            .get_or_create(&labels)
            .inc_by(counted.bytes_in());
        m.smartmodule_records_out
            .get_or_create(&labels)
            .inc_by(counted.records_out());
        m.smartmodule_records_err
            .get_or_create(&labels)
            .inc_by(counted.records_err());
        m.smartmodule_fuel_used
            .get_or_create(&labels)
            .inc_by(counted.fuel_used());
        m.smartmodule_cpu_seconds
            .get_or_create(&labels)
            .inc_by(counted.cpu_ms() as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use answerloop_schema::{Answer, Question};
    use answerloop_scoring::Params;

    fn answers(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let q = Question::new(format!("Question {i}?"), "", "The reference answer.", 1);
                let a = Answer::new(q, format!("An answer, number {i}."), "m", 1);
                Record::keyed(format!("k{i}"), serde_json::to_vec(&a).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_kept_chain_gives_what_a_fresh_one_gives() {
        let spec = ChainSpec::single(answerloop_wasm::ANSWER_SCORE.name, &Params::default());
        let engine = SmartEngine::new();
        let mut kept = WasmChain::build(&engine, &spec).unwrap();
        for round in 0..3 {
            let batch = answers(5 + round);
            let mut fresh = WasmChain::build(&engine, &spec).unwrap();
            assert_eq!(
                kept.process(batch.clone()).unwrap(),
                fresh.process(batch).unwrap()
            );
        }
    }

    #[test]
    fn an_unknown_smartmodule_is_named() {
        let mut spec = ChainSpec::single("no-such-module", &Params::default());
        spec.steps[0].params.clear();
        let err = match WasmChain::build(&SmartEngine::new(), &spec) {
            Ok(_) => panic!("built a chain of a module that does not exist"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no-such-module"), "{err}");
    }
}
