//! `answerloop eval scorer`: how close the in-broker semantic score comes to
//! the original metric (cosine of all-MiniLM-L6-v2 embeddings), on answer /
//! reference pairs of four kinds: paraphrases, related-but-wrong answers,
//! the local model's answers, and off-topic answers (another question's
//! reference). The lexical score is measured beside it as the baseline.
//!
//! The static scorer's threshold is calibrated to the exact scorer's 0.4
//! boundary on half of the pairs (even positions) and its agreement is
//! reported on the other half, so the figure is not fitted to itself.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use answerloop_models::{MiniLm, MINILM};
use answerloop_scoring::{lexical, semantic};
use serde_json::json;

use crate::cli::HomeArg;
use crate::traffic::dataset;

/// Paraphrases and related-but-wrong answers written for 160 sample questions.
const PAIRS: &str = include_str!("../../../../data/eval/pairs.csv");
/// SmolLM2-135M-Instruct's first answer to each sample question.
const LOCAL: &str = include_str!("../../../../data/eval/local-answers.csv");

/// The exact scorer's decision threshold (the original project's).
pub const EXACT_THRESHOLD: f32 = 0.4;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    what: EvalWhat,
}

mod carried;
mod regenerate;

#[derive(Debug, clap::Subcommand)]
enum EvalWhat {
    /// Regeneration strategies compared on the same questions: acceptance
    /// and mean score by attempt, and what regenerating added.
    Regenerate(Box<regenerate::RegenerateArgs>),
    /// `--scorer exact`'s carried vectors against `score --exact`: decision
    /// agreement, score error, and the embedding's cost per answer.
    Carried(carried::CarriedArgs),
    /// Fidelity of the semantic and lexical scores to the exact scorer.
    Scorer {
        #[command(flatten)]
        home: HomeArg,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Evaluate this static embedding table instead of the built-in one
        /// (a candidate from `answerloop models distill`).
        #[arg(long, value_name = "FILE")]
        table: Option<std::path::PathBuf>,
        /// Also write every pair's scores to this CSV file (kind, half,
        /// exact, semantic, lexical, answer, reference), to see which pairs
        /// the scorers disagree on.
        #[arg(long, value_name = "FILE")]
        dump: Option<std::path::PathBuf>,
        /// Also report what the best table in `models learn`'s target space
        /// could reach: the teacher's own embeddings of the eval texts,
        /// projected into the space fitted to this training corpus (its
        /// teacher embeddings must be cached beside it, as `models learn`
        /// leaves them).
        #[arg(long, value_name = "CORPUS")]
        ceiling: Option<std::path::PathBuf>,
        /// Centre the ceiling's space, as `models learn --centre` does.
        #[arg(long, requires = "ceiling")]
        centre: bool,
    },
}

/// One answer/reference pair and its three scores.
#[derive(Debug, Clone)]
pub struct Pair {
    pub kind: String,
    pub answer: String,
    pub reference: String,
}

/// Every evaluation pair.
pub fn pairs() -> anyhow::Result<Vec<Pair>> {
    let questions = dataset::sample().questions;
    let reference: HashMap<&str, &str> = questions
        .iter()
        .map(|q| (q.title.as_str(), q.reference.as_str()))
        .collect();
    let mut out = Vec::new();
    for source in [PAIRS, LOCAL] {
        let mut reader = csv::Reader::from_reader(source.as_bytes());
        for row in reader.records() {
            let row = row?;
            let r = reference.get(&row[0]).ok_or_else(|| {
                anyhow::anyhow!("evaluation pair for unknown question {:?}", &row[0])
            })?;
            out.push(Pair {
                kind: row[1].to_string(),
                answer: row[2].to_string(),
                reference: r.to_string(),
            });
        }
    }
    // Off-topic: each question's reference answered with another's, seven on.
    for (i, q) in questions.iter().enumerate() {
        let other = &questions[(i + 7) % questions.len()];
        out.push(Pair {
            kind: "off-topic".into(),
            answer: other.reference.clone(),
            reference: q.reference.clone(),
        });
    }
    Ok(out)
}

pub async fn execute(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let (home, json, table, dump, ceiling) = match args.what {
        EvalWhat::Regenerate(args) => return regenerate::execute(*args).await,
        EvalWhat::Carried(args) => return carried::execute(args),
        EvalWhat::Scorer {
            home,
            json,
            table,
            dump,
            ceiling,
            centre,
        } => (home, json, table, dump, ceiling.map(|c| (c, centre))),
    };
    let candidate: &'static semantic::StaticModel<'static> = match table {
        Some(path) => {
            let bytes: &'static [u8] = Box::leak(std::fs::read(&path)?.into_boxed_slice());
            Box::leak(Box::new(semantic::StaticModel::parse(bytes)?))
        }
        None => semantic::model(),
    };
    let cache = super::models::cache(&home);
    crate::providers::ensure_model(&cache, &MINILM)?;
    let model = MiniLm::load(&cache)?;
    let pairs = pairs()?;

    let started = Instant::now();
    let vectors = exact_vectors(&model, &pairs)?;
    let exact = pair_scores(&vectors, &pairs, |a, r| {
        a.iter()
            .zip(r)
            .map(|(x, y)| x * y)
            .sum::<f32>()
            .clamp(0.0, 1.0)
    });
    let exact_secs = started.elapsed().as_secs_f64();
    let projected = match &ceiling {
        Some((corpus, centre)) => Some(ceiling_scores(corpus, *centre, &vectors, &pairs)?),
        None => None,
    };
    let started = Instant::now();
    let fast: Vec<f32> = pairs
        .iter()
        .map(|p| candidate.score(&p.answer, &p.reference))
        .collect();
    let fast_secs = started.elapsed().as_secs_f64();
    let words: Vec<f32> = pairs
        .iter()
        .map(|p| lexical::score(&p.answer, &p.reference))
        .collect();

    let report = |scores: &[f32]| {
        let threshold = calibrate(&exact, scores, |i| i % 2 == 0);
        json!({
            "spearman": spearman(&exact, scores),
            "agreement": agreement(&exact, scores, threshold, |i| i % 2 == 1),
            "agreement_all_pairs": agreement(&exact, scores, threshold, |_| true),
            "threshold": threshold,
        })
    };
    let mut kinds: Vec<&str> = pairs.iter().map(|p| p.kind.as_str()).collect();
    kinds.dedup();
    let by_kind: serde_json::Map<String, serde_json::Value> = kinds
        .iter()
        .map(|kind| {
            let idx: Vec<usize> = (0..pairs.len()).filter(|i| pairs[*i].kind == *kind).collect();
            let mean = |s: &[f32]| idx.iter().map(|i| f64::from(s[*i])).sum::<f64>() / idx.len() as f64;
            (kind.to_string(), json!({"pairs": idx.len(), "exact": mean(&exact), "semantic": mean(&fast), "lexical": mean(&words)}))
        })
        .collect();
    if let Some(path) = dump {
        write_dump(&path, &pairs, &exact, &fast, &words)?;
    }
    let semantic_report = report(&fast);
    let mut result = json!({
        "pairs": pairs.len(),
        "exact_threshold": EXACT_THRESHOLD,
        "spearman": semantic_report["spearman"],
        "agreement": semantic_report["agreement"],
        "agreement_all_pairs": semantic_report["agreement_all_pairs"],
        "threshold": semantic_report["threshold"],
        "lexical": report(&words),
        "by_kind": by_kind,
        "exact_pairs_per_sec": pairs.len() as f64 / exact_secs,
        "semantic_pairs_per_sec": pairs.len() as f64 / fast_secs.max(1e-9),
    });
    if let Some(projected) = projected {
        result["ceiling"] = report(&projected);
    }
    if json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Every pair's scores as CSV; `half` says whether the pair calibrates the
/// threshold (even positions) or is held out (odd).
fn write_dump(
    path: &std::path::Path,
    pairs: &[Pair],
    exact: &[f32],
    semantic: &[f32],
    lexical: &[f32],
) -> anyhow::Result<()> {
    let mut out = csv::Writer::from_path(path)?;
    out.write_record([
        "kind",
        "half",
        "exact",
        "semantic",
        "lexical",
        "answer",
        "reference",
    ])?;
    for (i, p) in pairs.iter().enumerate() {
        let half = if i % 2 == 0 {
            "calibration"
        } else {
            "held-out"
        };
        out.write_record([
            p.kind.as_str(),
            half,
            &exact[i].to_string(),
            &semantic[i].to_string(),
            &lexical[i].to_string(),
            &p.answer,
            &p.reference,
        ])?;
    }
    out.flush()?;
    Ok(())
}

/// The teacher's embedding of every distinct text of the pairs.
fn exact_vectors<'a>(
    model: &MiniLm,
    pairs: &'a [Pair],
) -> anyhow::Result<HashMap<&'a str, Vec<f32>>> {
    let mut texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.answer.as_str(), p.reference.as_str()])
        .collect();
    texts.sort_unstable();
    texts.dedup();
    let mut vectors = HashMap::new();
    for chunk in texts.chunks(32) {
        for (text, v) in chunk.iter().zip(model.embed(chunk)?) {
            vectors.insert(*text, v);
        }
    }
    Ok(vectors)
}

/// `score` of each pair's two vectors; an empty answer scores 0.
fn pair_scores(
    vectors: &HashMap<&str, Vec<f32>>,
    pairs: &[Pair],
    score: impl Fn(&[f32], &[f32]) -> f32,
) -> Vec<f32> {
    pairs
        .iter()
        .map(|p| {
            if p.answer.trim().is_empty() {
                return 0.0;
            }
            score(&vectors[p.answer.as_str()], &vectors[p.reference.as_str()])
        })
        .collect()
}

/// The pairs scored by the teacher's embeddings in `models learn`'s target
/// space for `corpus`: the best any table in that space could do.
fn ceiling_scores(
    corpus: &std::path::Path,
    centre: bool,
    vectors: &HashMap<&str, Vec<f32>>,
    pairs: &[Pair],
) -> anyhow::Result<Vec<f32>> {
    use answerloop_models::{learn, teacher};
    let lines = super::models::read_corpus(corpus)?;
    let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut cache = corpus.as_os_str().to_owned();
    cache.push(".teacher");
    let key = teacher::key(&texts, MINILM.artifacts[0].sha256);
    let embeddings = teacher::read(std::path::Path::new(&cache), &key)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no teacher embeddings of {} cached beside it: run `models learn` on it first",
            corpus.display()
        )
    })?;
    let train: Vec<usize> = (0..embeddings.len())
        .filter(|i| !learn::held_out(*i, learn::LearnOptions::default().holdout_every))
        .collect();
    let dims = semantic::model().table().dims;
    let space = learn::TargetSpace::fit(&embeddings.rows, embeddings.dims, &train, dims, centre);
    Ok(pair_scores(vectors, pairs, |a, r| {
        semantic::cosine(&space.project(a), &space.project(r))
    }))
}

/// Spearman's rank correlation (ties get their mean rank).
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|x, y| values[*x].total_cmp(&values[*y]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = mean_rank;
        }
        i = j + 1;
    }
    ranks
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt())
}

/// Share of the pairs chosen by `take` on which `scores >= threshold`
/// decides as the exact scorer's 0.4 boundary does.
pub fn agreement(
    exact: &[f32],
    scores: &[f32],
    threshold: f32,
    take: impl Fn(usize) -> bool,
) -> f64 {
    let chosen: Vec<usize> = (0..exact.len()).filter(|i| take(*i)).collect();
    let agree = chosen
        .iter()
        .filter(|i| (exact[**i] >= EXACT_THRESHOLD) == (scores[**i] >= threshold))
        .count();
    agree as f64 / chosen.len().max(1) as f64
}

/// The threshold for `scores` that best agrees with the exact boundary on
/// the pairs chosen by `take` (candidates: every observed score, in steps of
/// 0.005).
pub fn calibrate(exact: &[f32], scores: &[f32], take: impl Fn(usize) -> bool + Copy) -> f32 {
    (0..=200)
        .map(|i| i as f32 * 0.005)
        .max_by(|a, b| {
            agreement(exact, scores, *a, take)
                .total_cmp(&agreement(exact, scores, *b, take))
                .then(b.total_cmp(a))
        })
        .unwrap_or(EXACT_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_is_one_for_any_monotone_map_and_minus_one_reversed() {
        let a = [0.1, 0.5, 0.3, 0.9];
        let b: Vec<f32> = a.iter().map(|x| x * x).collect();
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        let c: Vec<f32> = a.iter().map(|x| -x).collect();
        assert!((spearman(&a, &c) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_share_their_mean_rank() {
        assert_eq!(ranks(&[0.5, 0.1, 0.5]), vec![2.5, 1.0, 2.5]);
    }

    #[test]
    fn calibration_finds_the_boundary_of_a_shifted_score() {
        let exact: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let shifted: Vec<f32> = exact.iter().map(|x| (x + 0.2).min(1.0)).collect();
        let t = calibrate(&exact, &shifted, |_| true);
        assert!((t - 0.6).abs() < 0.011, "{t}");
        assert_eq!(agreement(&exact, &shifted, t, |_| true), 1.0);
    }

    #[test]
    fn the_evaluation_set_has_enough_pairs_of_every_kind() {
        let pairs = pairs().unwrap();
        assert!(pairs.len() >= 500);
        for kind in ["paraphrase", "wrong", "local", "off-topic"] {
            assert!(
                pairs.iter().filter(|p| p.kind == kind).count() >= 150,
                "{kind}"
            );
        }
    }
}
