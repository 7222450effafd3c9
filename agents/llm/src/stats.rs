//! What the LLM calls came to, counted once.
//!
//! [`LlmStats`] is the only count of LLM events: calls by outcome and error
//! class, retries, parked questions, dead letters. A run's summary reads the
//! stats its agent was given; the process's `/metrics` page reads the sum of
//! every `LlmStats` the process made, through a [`Collector`] registered
//! with the telemetry registry when the first is made (a process that makes
//! no LLM calls shows no LLM families). So the page and the summary cannot disagree,
//! and no call site counts an event twice. (Durations are distributions, not
//! counts: they stay histograms in the registry.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use answerloop_schema::FailureClass;
use answerloop_telemetry::metrics::{metrics, Collector};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::circuit::{Circuit, CircuitSnapshot};
use crate::ErrorClass;

/// The failure classes a dead letter can have, in counting order.
const LETTER_CLASSES: [FailureClass; 5] = [
    FailureClass::Overload,
    FailureClass::Quota,
    FailureClass::Permanent,
    FailureClass::Cap,
    FailureClass::Invalid,
];

/// What the calls of one agent did, for summaries, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct LlmStats {
    calls: AtomicU64,
    answers: AtomicU64,
    /// Failed calls by [`ErrorClass`], in [`ErrorClass::ALL`] order.
    failures_by_class: [AtomicU64; 4],
    retries: AtomicU64,
    /// Sum of the backoff delays slept, in milliseconds.
    retry_delay_ms: AtomicU64,
    deferred: AtomicU64,
    /// Dead letters written, in [`LETTER_CLASSES`] order.
    dead_letters_by_class: [AtomicU64; 5],
    /// Tokens of answered calls as the provider reported them.
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Answered calls whose provider reported no usage.
    answers_without_usage: AtomicU64,
    /// The circuits of the providers these calls went to.
    circuits: Mutex<Vec<Arc<Circuit>>>,
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn letter_index(class: FailureClass) -> usize {
    LETTER_CLASSES
        .iter()
        .position(|c| *c == class)
        .expect("every failure class is listed")
}

impl LlmStats {
    /// New stats, shown on the process's metrics page from now on.
    pub fn new() -> Arc<Self> {
        let stats = Arc::new(Self::default());
        let live = live();
        live.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats.clone());
        stats
    }

    /// A call is about to be made.
    pub(crate) fn called(&self) {
        add(&self.calls, 1);
    }

    /// A call was answered, after `took`.
    pub(crate) fn answered(&self, took: Duration) {
        add(&self.answers, 1);
        metrics().llm_call_seconds.observe(took.as_secs_f64());
    }

    /// A call failed with `class`, after `took`.
    pub(crate) fn failed(&self, class: ErrorClass, took: Duration) {
        add(&self.failures_by_class[class.index()], 1);
        metrics().llm_call_seconds.observe(took.as_secs_f64());
    }

    /// The usage an answered call's provider reported.
    pub(crate) fn used_tokens(&self, completion: &crate::Completion) {
        match (completion.prompt_tokens, completion.completion_tokens) {
            (Some(prompt), Some(reply)) => {
                add(&self.prompt_tokens, u64::from(prompt));
                add(&self.completion_tokens, u64::from(reply));
            }
            _ => add(&self.answers_without_usage, 1),
        }
    }

    /// A failed call will be retried after `delay`.
    pub(crate) fn retrying(&self, delay: Duration) {
        add(&self.retries, 1);
        add(&self.retry_delay_ms, delay.as_millis() as u64);
        metrics()
            .llm_retry_delay_seconds
            .observe(delay.as_secs_f64());
    }

    /// A question was parked on `deferred` after a quota error.
    pub fn parked(&self) {
        add(&self.deferred, 1);
    }

    /// A question became a dead letter of `class`.
    pub fn dead_lettered(&self, class: FailureClass) {
        add(&self.dead_letters_by_class[letter_index(class)], 1);
    }

    pub fn calls(&self) -> u64 {
        get(&self.calls)
    }

    pub fn answers(&self) -> u64 {
        get(&self.answers)
    }

    /// Prompt tokens of answered calls, by the provider's count.
    pub fn prompt_tokens(&self) -> u64 {
        get(&self.prompt_tokens)
    }

    /// Completion tokens of answered calls, by the provider's count.
    pub fn completion_tokens(&self) -> u64 {
        get(&self.completion_tokens)
    }

    /// Answered calls that came with no usage (charged their estimate).
    pub fn answers_without_usage(&self) -> u64 {
        get(&self.answers_without_usage)
    }

    pub fn retries(&self) -> u64 {
        get(&self.retries)
    }

    pub fn retry_delay_ms(&self) -> u64 {
        get(&self.retry_delay_ms)
    }

    pub fn deferred(&self) -> u64 {
        get(&self.deferred)
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead_letters_by_class.iter().map(get).sum()
    }

    pub fn failures_of(&self, class: ErrorClass) -> u64 {
        get(&self.failures_by_class[class.index()])
    }

    /// Failed calls by class name, every class.
    pub fn failure_counts(&self) -> Vec<(&'static str, u64)> {
        ErrorClass::ALL
            .iter()
            .map(|c| (c.as_str(), self.failures_of(*c)))
            .collect()
    }

    /// Failed calls of every class.
    pub fn failures(&self) -> u64 {
        self.failures_by_class.iter().map(get).sum()
    }

    /// Show `circuit` with these stats, from now on.
    pub fn watch_circuit(&self, circuit: Arc<Circuit>) {
        self.circuits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(circuit);
    }

    /// Every circuit's state, openings and time open, now.
    pub fn circuits(&self) -> Vec<CircuitSnapshot> {
        let circuits = self.circuits.lock().unwrap_or_else(|e| e.into_inner());
        circuits.iter().map(|c| c.snapshot()).collect()
    }

    /// Time any circuit was open or half-open, summed over providers.
    pub fn circuit_open_time(&self) -> Duration {
        self.circuits().iter().map(|c| c.open_time).sum()
    }

    /// Times any circuit opened.
    pub fn circuit_openings(&self) -> u64 {
        self.circuits().iter().map(|c| c.opened).sum()
    }
}

/// Every `LlmStats` this process made, with the collector that shows their
/// sum registered on first use. Kept for the process's life, so that the
/// page's counters never go down.
fn live() -> &'static Mutex<Vec<Arc<LlmStats>>> {
    static LIVE: OnceLock<Mutex<Vec<Arc<LlmStats>>>> = OnceLock::new();
    LIVE.get_or_init(|| {
        metrics().register_collector(Box::new(LlmCollector));
        Mutex::new(Vec::new())
    })
}

#[derive(Debug)]
struct LlmCollector;

impl LlmCollector {
    fn sum(f: impl Fn(&LlmStats) -> u64) -> u64 {
        let live = live().lock().unwrap_or_else(|e| e.into_inner());
        live.iter().map(|s| f(s)).sum()
    }
}

/// One counter family: a name, its help, and its samples by label set.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Vec<(&'static str, &'static str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let kind = ConstCounter::new(0u64).metric_type();
    // With a full stop, as the registry writes the help of its own metrics.
    let help = format!("{help}.");
    let mut family = encoder.encode_descriptor(name, &help, None, kind)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            ConstCounter::new(value).encode(family)?;
            break;
        }
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for LlmCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut calls = vec![(
            vec![("outcome", "ok"), ("class", "")],
            Self::sum(LlmStats::answers),
        )];
        for class in ErrorClass::ALL {
            calls.push((
                vec![("outcome", "error"), ("class", class.as_str())],
                Self::sum(|s| s.failures_of(class)),
            ));
        }
        family(
            &mut encoder,
            "llm_calls",
            "LLM calls by outcome and error class",
            calls,
        )?;
        family(
            &mut encoder,
            "llm_retries",
            "LLM calls retried after a failure",
            vec![(vec![], Self::sum(LlmStats::retries))],
        )?;
        family(
            &mut encoder,
            "llm_deferred",
            "Questions parked after a quota error",
            vec![(vec![], Self::sum(LlmStats::deferred))],
        )?;
        let letters = LETTER_CLASSES
            .iter()
            .map(|class| {
                let i = letter_index(*class);
                (
                    vec![("class", class.as_str())],
                    Self::sum(|s| get(&s.dead_letters_by_class[i])),
                )
            })
            .collect();
        family(
            &mut encoder,
            "llm_dead_letters",
            "Dead letters written by the LLM agent, by failure class",
            letters,
        )?;
        encode_circuits(&mut encoder)
    }
}

/// The circuit families, one sample a provider: its state (0 closed,
/// 1 open, 2 half-open), the seconds it was open and how often it opened.
fn encode_circuits(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut by_label: BTreeMap<String, CircuitSnapshot> = BTreeMap::new();
    for stats in live().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        for snapshot in stats.circuits() {
            match by_label.get_mut(&snapshot.label) {
                Some(seen) => {
                    seen.opened += snapshot.opened;
                    seen.open_time += snapshot.open_time;
                    seen.state = snapshot.state;
                }
                None => {
                    by_label.insert(snapshot.label.clone(), snapshot);
                }
            }
        }
    }
    if by_label.is_empty() {
        return Ok(());
    }
    let mut state = encoder.encode_descriptor(
        "llm_circuit_state",
        "Each provider's circuit: 0 closed, 1 open, 2 half-open.",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (label, c) in &by_label {
        let labels = [("provider", label.as_str())];
        ConstGauge::new(c.state.gauge()).encode(state.encode_family(&labels)?)?;
    }
    let mut open = encoder.encode_descriptor(
        "llm_circuit_open_seconds",
        "Seconds each provider's circuit was open or half-open.",
        None,
        ConstCounter::new(0f64).metric_type(),
    )?;
    for (label, c) in &by_label {
        let labels = [("provider", label.as_str())];
        ConstCounter::new(c.open_time.as_secs_f64()).encode(open.encode_family(&labels)?)?;
    }
    let mut opened = encoder.encode_descriptor(
        "llm_circuit_openings",
        "Times each provider's circuit opened.",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for (label, c) in &by_label {
        let labels = [("provider", label.as_str())];
        ConstCounter::new(c.opened).encode(opened.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(page: &str, name: &str) -> f64 {
        page.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    }

    #[test]
    fn the_metrics_page_shows_the_sum_of_every_agents_stats() {
        let (a, b) = (LlmStats::new(), LlmStats::new());
        let before = metrics().encode();
        let ok = r#"answerloop_llm_calls_total{outcome="ok",class=""}"#;
        let quota = r#"answerloop_llm_dead_letters_total{class="quota"}"#;
        let (ok_before, quota_before) = (sample(&before, ok), sample(&before, quota));
        a.answered(Duration::ZERO);
        b.answered(Duration::ZERO);
        b.dead_lettered(FailureClass::Quota);
        let page = metrics().encode();
        assert_eq!(sample(&page, ok) - ok_before, 2.0, "{page}");
        assert_eq!(sample(&page, quota) - quota_before, 1.0, "{page}");
        assert_eq!((a.answers(), b.dead_letters()), (1, 1));
    }
}
