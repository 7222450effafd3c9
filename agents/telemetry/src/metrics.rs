//! Prometheus metrics: one registry a process, served at `/metrics` when an
//! agent is started with `--metrics HOST:PORT`.
//!
//! Every part of the pipeline counts into [`metrics()`] whether or not it is
//! served, so counting never depends on a flag and costs a few atomic adds.
//! Names follow Prometheus conventions: an `answerloop_` prefix, `_total`
//! on counters, seconds for durations. The SmartModule counters are
//! fluvio-smartengine's own chain metrics (invocations, records, fuel, CPU
//! time), added up by the embedded broker after every chain run.
//!
//! A part that already counts its events for its own summary does not count
//! them a second time here: it registers a [`Collector`] that reads its
//! counters when the page is asked for (the LLM calls do), so the page and
//! the summary can never disagree.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
pub use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels<const N: usize> = [(&'static str, String); N];
type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;
type Seconds = Counter<f64, AtomicU64>;

pub struct Metrics {
    /// Behind a lock only so that collectors can be added after start.
    registry: Mutex<Registry>,
    /// Records appended, by topic.
    pub records_produced: Family<Labels<1>, Counter>,
    /// Records read by a committed consumer, by topic and partition.
    pub records_consumed: Family<Labels<2>, Counter>,
    /// Records between a consumer's position and the log's end when it last
    /// read, by topic, partition and consumer id.
    pub consumer_lag: Family<Labels<3>, Gauge>,
    /// LLM call durations. (The LLM counters come from the LLM crate's own
    /// collector.)
    pub llm_call_seconds: Histogram,
    pub llm_retry_delay_seconds: Histogram,
    /// Scores of the final answers the store agent took, by attempt.
    pub final_score: Histograms<1>,
    /// Questions finalised by the store agent, by kind (`stored`,
    /// `dead_letter`) and whether the store already had them (`replay`).
    pub store_writes: Family<Labels<2>, Counter>,
    /// What the answer store holds, by kind, read from the store itself.
    pub store_entries: Family<Labels<1>, Gauge>,
    pub smartmodule_invocations: Family<Labels<1>, Counter>,
    pub smartmodule_bytes_in: Family<Labels<1>, Counter>,
    pub smartmodule_records_out: Family<Labels<1>, Counter>,
    pub smartmodule_records_err: Family<Labels<1>, Counter>,
    pub smartmodule_fuel_used: Family<Labels<1>, Counter>,
    pub smartmodule_cpu_seconds: Family<Labels<1>, Seconds>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Label helpers, so call sites read `metrics().records_produced.get_or_create(&topic(t))`.
pub fn topic(topic: &str) -> Labels<1> {
    [("topic", topic.to_string())]
}

pub fn smartmodule(name: &str) -> Labels<1> {
    [("smartmodule", name.to_string())]
}

fn score_histogram() -> Histogram {
    Histogram::new(linear_buckets(0.1, 0.1, 9))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("answerloop");
        let m = Self {
            records_produced: Family::default(),
            records_consumed: Family::default(),
            consumer_lag: Family::default(),
            llm_call_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            llm_retry_delay_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            final_score: Family::new_with_constructor(score_histogram),
            store_writes: Family::default(),
            store_entries: Family::default(),
            smartmodule_invocations: Family::default(),
            smartmodule_bytes_in: Family::default(),
            smartmodule_records_out: Family::default(),
            smartmodule_records_err: Family::default(),
            smartmodule_fuel_used: Family::default(),
            smartmodule_cpu_seconds: Family::default(),
            registry: Mutex::new(Registry::default()),
        };
        let r = &mut registry;
        r.register(
            "records_produced",
            "Records appended to a topic",
            m.records_produced.clone(),
        );
        r.register(
            "records_consumed",
            "Records read by a committed consumer",
            m.records_consumed.clone(),
        );
        r.register(
            "consumer_lag",
            "Records between a consumer's position and the end of the log at its last read",
            m.consumer_lag.clone(),
        );
        r.register(
            "llm_call_seconds",
            "Duration of LLM calls",
            m.llm_call_seconds.clone(),
        );
        r.register(
            "llm_retry_delay_seconds",
            "Backoff delays slept before a retry",
            m.llm_retry_delay_seconds.clone(),
        );
        r.register(
            "final_score",
            "Scores of final answers taken by the store agent, by attempt",
            m.final_score.clone(),
        );
        r.register(
            "store_writes",
            "Final states the store agent wrote, by kind and whether the store had them already",
            m.store_writes.clone(),
        );
        r.register(
            "store_entries",
            "Entries in the answer store, by kind",
            m.store_entries.clone(),
        );
        r.register(
            "smartmodule_invocations",
            "SmartModule invocations (fluvio-smartengine)",
            m.smartmodule_invocations.clone(),
        );
        r.register(
            "smartmodule_bytes_in",
            "Bytes into a SmartModule (fluvio-smartengine)",
            m.smartmodule_bytes_in.clone(),
        );
        r.register(
            "smartmodule_records_out",
            "Records out of a SmartModule (fluvio-smartengine)",
            m.smartmodule_records_out.clone(),
        );
        r.register(
            "smartmodule_records_err",
            "Records a SmartModule failed on (fluvio-smartengine)",
            m.smartmodule_records_err.clone(),
        );
        r.register(
            "smartmodule_fuel_used",
            "Wasm fuel a SmartModule used (fluvio-smartengine)",
            m.smartmodule_fuel_used.clone(),
        );
        r.register(
            "smartmodule_cpu_seconds",
            "CPU time in a SmartModule (fluvio-smartengine)",
            m.smartmodule_cpu_seconds.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// Add families that `collector` reads from counters kept elsewhere.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.lock().register_collector(collector);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves the registry whole.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.lock()).expect("writing to a String cannot fail");
        out
    }
}

/// `--metrics HOST:PORT`, shared by every long-running command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetricsArg {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
}

impl MetricsArg {
    /// Start serving when asked; the server lives as long as the runtime.
    pub async fn start(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.metrics {
            Some(addr) => Ok(Some(serve(addr).await?)),
            None => Ok(None),
        }
    }
}

/// Serve `/metrics` on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let router = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics().encode(),
            )
                .into_response()
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}
