//! `answerloop report`: one self-contained HTML page about a home's run:
//! headline numbers and SVG plots of scores and acceptance by attempt, LLM
//! latency, failed calls by error class and dead letters by reason.
//!
//! Final answers and dead letters come from the answer store. Every scored
//! answer, weak ones included, comes from the embedded broker's `answers`
//! topic when it can be opened, read through `answer-score` with the run's
//! scoring params (a replayed answer counts once); otherwise
//! the per-attempt plots use the final answers and the page says so.

pub mod svg;

use std::collections::BTreeMap;

use answerloop_broker::select::BrokerArgs;
use answerloop_schema::{DeadLetter, Verdict};
use answerloop_scoring::Params;
use answerloop_storage::{Store, StoredAnswer};
use serde::Serialize;

use crate::home::Home;
use crate::pipeline::CircuitSummary;
use crate::tally::{self, first_attempts, share, ScoredAttempt, Tally};
use svg::{bar_chart, escape, Chart, Series};

/// What the report reads of the last run's summary.
#[derive(serde::Deserialize)]
struct LastRun {
    #[serde(default)]
    circuits: Vec<CircuitSummary>,
}

/// A final answer as a scored attempt, when the topic cannot be read.
fn of_final(answer: &StoredAnswer) -> ScoredAttempt {
    ScoredAttempt {
        id: answer.id.clone(),
        attempt: answer.attempt,
        score: answer.score,
        verdict: answer.verdict,
        latency_ms: answer.latency_ms,
    }
}

pub struct ReportData {
    /// What the store's final states come to.
    pub tally: Tally,
    pub stored: Vec<StoredAnswer>,
    pub dead_letters: Vec<DeadLetter>,
    /// Every scored answer from the broker's topic; the final answers when
    /// the topic could not be read.
    pub scored: Vec<ScoredAttempt>,
    /// Why the topic could not be read.
    pub scored_note: Option<String>,
    /// The circuits of the last `answerloop run` in this home, when it
    /// left its summary.
    pub circuits: Option<Vec<CircuitSummary>>,
}

/// The headline numbers, also printed by `report --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    pub questions_final: usize,
    pub stored: usize,
    pub accepted: usize,
    pub exhausted: usize,
    pub dead_letters: usize,
    pub scored_answers: usize,
    pub first_attempt_acceptance: Option<f64>,
    pub mean_score_first_attempt: Option<f64>,
    pub mean_score_stored: Option<f64>,
    pub llm_latency_p50_ms: Option<u64>,
    pub llm_latency_p95_ms: Option<u64>,
    pub end_to_end_p50_ms: Option<u64>,
    pub end_to_end_p95_ms: Option<u64>,
    pub llm_calls: u64,
    pub failed_calls: u64,
    /// Stored answers by `provider/model`.
    pub stored_by_model: BTreeMap<String, usize>,
    /// Stored answers of questions redriven after a dead letter.
    pub stored_redriven: usize,
    /// Seconds the last run's circuits were open, summed over providers.
    pub circuit_open_s: Option<f64>,
    pub circuit_openings: Option<u64>,
}

impl ReportData {
    /// Read the home's store and, when it can be opened, its broker, whose
    /// answers are scored with `params`.
    pub async fn load(home: &Home, params: &Params) -> anyhow::Result<Self> {
        home.existing()?;
        let store = Store::open(&home.store())?;
        let tally = Tally::count(&store, None, u32::MAX)?;
        let stored = store.answers().collect::<Result<Vec<_>, _>>()?;
        let dead_letters = store.dead_letters().collect::<Result<Vec<_>, _>>()?;
        // The home's own broker: the embedded one, whoever served it.
        let (scored, scored_note) = match BrokerArgs::default().connect(&home.broker()).await {
            Ok(broker) => (tally::scored_attempts(broker.as_ref(), params, None).await?, None),
            Err(e) => (
                stored.iter().map(of_final).collect(),
                Some(format!(
                    "the broker's answers topic could not be read ({e}); plots by attempt show final answers only"
                )),
            ),
        };
        let circuits = std::fs::read(home.last_run())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<LastRun>(&bytes).ok())
            .map(|run| run.circuits);
        Ok(Self {
            tally,
            stored,
            dead_letters,
            scored,
            scored_note,
            circuits,
        })
    }

    pub fn headline(&self) -> Headline {
        let t = &self.tally;
        let (first_attempt_acceptance, mean_score_first_attempt) = first_attempts(&self.scored);
        let mut latencies: Vec<u64> = self.scored.iter().map(|s| s.latency_ms).collect();
        let mut end_to_end: Vec<u64> = self.stored.iter().map(|a| a.end_to_end_ms).collect();
        Headline {
            questions_final: t.finals(),
            stored: t.stored,
            accepted: t.accepted,
            exhausted: t.exhausted,
            dead_letters: t.dead_letters,
            scored_answers: self.scored.len(),
            first_attempt_acceptance,
            mean_score_first_attempt,
            mean_score_stored: t.mean_score_stored,
            llm_latency_p50_ms: percentile(&mut latencies, 0.5),
            llm_latency_p95_ms: percentile(&mut latencies, 0.95),
            end_to_end_p50_ms: percentile(&mut end_to_end, 0.5),
            end_to_end_p95_ms: percentile(&mut end_to_end, 0.95),
            llm_calls: t.llm_calls,
            failed_calls: t.failed_calls.values().sum(),
            stored_by_model: t.stored_by_model.clone(),
            stored_redriven: t.stored_redriven,
            circuit_open_s: self
                .circuits
                .as_ref()
                .map(|c| c.iter().map(|c| c.open_s).sum()),
            circuit_openings: self
                .circuits
                .as_ref()
                .map(|c| c.iter().map(|c| c.openings).sum()),
        }
    }

    pub fn charts(&self) -> Vec<Chart> {
        let scorings = &self.scored;
        let attempts: Vec<u32> = scorings
            .iter()
            .map(|s| s.attempt)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let bins: Vec<String> = (0..10)
            .map(|b| format!("{:.1}", f64::from(b) / 10.0))
            .collect();
        let score_series = attempts
            .iter()
            .map(|attempt| {
                let mut values = vec![0.0; 10];
                for s in scorings.iter().filter(|s| s.attempt == *attempt) {
                    values[((s.score.clamp(0.0, 1.0) * 10.0) as usize).min(9)] += 1.0;
                }
                Series {
                    name: format!("attempt {attempt}"),
                    values,
                }
            })
            .collect();
        let acceptance = attempts
            .iter()
            .map(|attempt| {
                let at: Vec<&ScoredAttempt> =
                    scorings.iter().filter(|s| s.attempt == *attempt).collect();
                let accepted = at.iter().filter(|s| s.verdict == Verdict::Accept).count();
                share(accepted, at.len()).unwrap_or(0.0)
            })
            .collect();
        let latency_edges = [50u64, 100, 200, 500, 1_000, 2_000, 5_000, 10_000];
        let mut latency = vec![0.0; latency_edges.len() + 1];
        for s in scorings {
            let bin = latency_edges
                .iter()
                .position(|edge| s.latency_ms < *edge)
                .unwrap_or(latency_edges.len());
            latency[bin] += 1.0;
        }
        let mut latency_labels: Vec<String> = latency_edges
            .iter()
            .map(|e| format!("<{}", ms(*e)))
            .collect();
        latency_labels.push(format!("≥{}", ms(latency_edges[latency_edges.len() - 1])));
        let failed = &self.tally.failed_calls;
        let mut letters: BTreeMap<String, f64> = BTreeMap::new();
        for letter in &self.dead_letters {
            *letters
                .entry(letter.class.as_str().to_string())
                .or_default() += 1.0;
        }
        vec![
            Chart {
                id: "score-by-attempt",
                title: "Score distribution by attempt".into(),
                y_label: "answers".into(),
                categories: bins,
                series: score_series,
                percent: false,
            },
            Chart {
                id: "acceptance-by-attempt",
                title: "Acceptance by attempt".into(),
                y_label: "accepted".into(),
                categories: attempts.iter().map(|a| format!("attempt {a}")).collect(),
                series: vec![Series {
                    name: "accepted".into(),
                    values: acceptance,
                }],
                percent: true,
            },
            Chart {
                id: "latency",
                title: "LLM latency of scored answers".into(),
                y_label: "answers".into(),
                categories: latency_labels,
                series: vec![Series {
                    name: "answers".into(),
                    values: latency,
                }],
                percent: false,
            },
            Chart {
                id: "failed-calls",
                title: "Failed LLM calls by error class (retried or parked)".into(),
                y_label: "calls".into(),
                categories: failed.keys().cloned().collect(),
                series: vec![Series {
                    name: "calls".into(),
                    values: failed.values().map(|n| *n as f64).collect(),
                }],
                percent: false,
            },
            Chart {
                id: "dead-letters",
                title: "Dead letters by reason".into(),
                y_label: "questions".into(),
                categories: letters.keys().cloned().collect(),
                series: vec![Series {
                    name: "questions".into(),
                    values: letters.values().copied().collect(),
                }],
                percent: false,
            },
        ]
    }

    /// Each provider's circuit in the last run, as one line.
    fn circuits_line(&self) -> String {
        match &self.circuits {
            None => "– (no summary of a run in this home)".into(),
            Some(circuits) => circuits
                .iter()
                .map(|c| {
                    format!(
                        "{}: open {:.1} s, {} openings",
                        c.provider, c.open_s, c.openings
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// The page.
    pub fn html(&self, title: &str) -> String {
        let h = self.headline();
        let opt = |v: Option<f64>, pct: bool| match v {
            Some(v) if pct => format!("{:.1}%", v * 100.0),
            Some(v) => format!("{v:.3}"),
            None => "–".into(),
        };
        let opt_ms = |v: Option<u64>| v.map_or("–".into(), ms);
        let numbers = [
            ("questions final", h.questions_final.to_string()),
            (
                "stored",
                format!(
                    "{} ({} accepted, {} exhausted)",
                    h.stored, h.accepted, h.exhausted
                ),
            ),
            ("dead letters", h.dead_letters.to_string()),
            ("scored answers", h.scored_answers.to_string()),
            (
                "first-attempt acceptance",
                opt(h.first_attempt_acceptance, true),
            ),
            (
                "mean score",
                format!(
                    "{} first attempt, {} stored",
                    opt(h.mean_score_first_attempt, false),
                    opt(h.mean_score_stored, false)
                ),
            ),
            (
                "LLM latency",
                format!(
                    "p50 {}, p95 {}",
                    opt_ms(h.llm_latency_p50_ms),
                    opt_ms(h.llm_latency_p95_ms)
                ),
            ),
            (
                "question to stored answer",
                format!(
                    "p50 {}, p95 {}",
                    opt_ms(h.end_to_end_p50_ms),
                    opt_ms(h.end_to_end_p95_ms)
                ),
            ),
            (
                "LLM calls",
                format!("{} ({} failed)", h.llm_calls, h.failed_calls),
            ),
            (
                "answers by model",
                h.stored_by_model
                    .iter()
                    .map(|(model, n)| format!("{model}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("redriven and stored", h.stored_redriven.to_string()),
            ("circuits open (last run)", self.circuits_line()),
        ];
        let mut page = String::new();
        page.push_str(&format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
            escape(title),
            escape(title)
        ));
        page.push_str("<table class=\"headline\">");
        for (name, value) in numbers {
            page.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(name),
                escape(&value)
            ));
        }
        page.push_str("</table>");
        if let Some(note) = &self.scored_note {
            page.push_str(&format!("<p class=\"note\">{}</p>", escape(note)));
        }
        page.push_str("<div class=\"plots\">");
        for chart in self.charts() {
            page.push_str(&bar_chart(&chart));
        }
        page.push_str("</div>");
        page.push_str(&self.reasons_table());
        page.push_str("</body></html>\n");
        page
    }

    /// The most frequent dead-letter reasons, word for word.
    fn reasons_table(&self) -> String {
        let mut reasons: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for letter in &self.dead_letters {
            *reasons
                .entry((letter.class.as_str(), letter.reason.as_str()))
                .or_default() += 1;
        }
        if reasons.is_empty() {
            return String::new();
        }
        let mut rows: Vec<_> = reasons.into_iter().collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.1));
        let mut out = String::from(
            "<h2>Dead-letter reasons</h2><table class=\"reasons\"><tr><th>class</th><th>reason</th><th>questions</th></tr>",
        );
        for ((class, reason), n) in rows.into_iter().take(20) {
            let reason: String = reason.chars().take(300).collect();
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
                escape(class),
                escape(&reason)
            ));
        }
        out.push_str("</table>");
        out
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:16px}\
table{border-collapse:collapse;margin:12px 0}th,td{padding:3px 10px;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}\
.plots{display:flex;flex-wrap:wrap;gap:16px}svg.plot{border:1px solid #e4e4e4;background:#fff}\
svg .title{font-size:14px;font-weight:600}svg .tick{font-size:11px;fill:#444}svg .axis{font-size:12px;fill:#444}\
svg .grid{stroke:#eee}svg .empty{fill:#999}.note{color:#8a5a00}";

/// The nearest-rank percentile.
fn percentile(values: &mut [u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn ms(v: u64) -> String {
    if v >= 1_000 {
        format!("{}s", v as f64 / 1000.0)
    } else {
        format!("{v}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50));
        assert_eq!(percentile(&mut v, 0.95), Some(95));
        assert_eq!(percentile(&mut [], 0.5), None);
        assert_eq!(percentile(&mut [7], 0.95), Some(7));
    }
}
