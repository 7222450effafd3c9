//! `answerloop models corpus` and `models learn`: the static table's
//! vectors fitted to the teacher's sentence embeddings of a corpus that
//! holds none of the evaluation data (see `answerloop_models::learn`).
//!
//! `learn` reports, each epoch, how the table does on the corpus's held-out
//! texts: the mean cosine with the teacher's (projected) embedding, and, on
//! pairs of neighbouring held-out texts, the rank correlation with the
//! teacher's cosine and the agreement at its 0.4 boundary, calibrated and
//! measured as `eval scorer` does. Settings are chosen on these, not on the
//! evaluation pairs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use answerloop_models::learn::{self, held_out, LearnOptions, Problem};
use answerloop_models::{corpus as wordnet, teacher, MiniLm, ModelCache, MINILM};
use answerloop_scoring::semantic::{self, StaticModel};

use super::file_name;
use crate::commands::eval::{agreement, calibrate, spearman};

#[derive(Debug, clap::Args)]
pub struct CorpusArgs {
    /// WordNet's dictionary directory (data.noun, data.verb, data.adj,
    /// data.adv), as Debian's `wordnet-base` installs it.
    #[arg(long, value_name = "DIR")]
    wordnet: PathBuf,
    /// Fortune files (`%`-separated texts) to add.
    #[arg(long, value_name = "FILE")]
    fortunes: Vec<PathBuf>,
    /// Keep one text in N (the first, the N+1st, ...), to bound the time
    /// the teacher takes to embed the corpus.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// Where to write the corpus (one text a line).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LearnArgs {
    /// The corpus: one text a line (`models corpus` writes one).
    #[arg(long, value_name = "FILE")]
    corpus: PathBuf,
    /// The table to start from (a distilled one); its vocabulary is kept.
    #[arg(long, value_name = "TABLE")]
    from: PathBuf,
    /// Where to write the learned table.
    #[arg(long)]
    out: PathBuf,
    /// Where the teacher's embeddings of the corpus are cached
    /// (default: the corpus file's name with `.teacher` added).
    #[arg(long, value_name = "FILE")]
    teacher_cache: Option<PathBuf>,
    /// Use only the corpus's first N texts.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = LearnOptions::default().epochs)]
    epochs: usize,
    /// Adam's step size.
    #[arg(long, default_value_t = LearnOptions::default().lr)]
    lr: f32,
    /// Pull toward the start table.
    #[arg(long, default_value_t = LearnOptions::default().l2)]
    l2: f32,
    /// Texts a mini-batch.
    #[arg(long, default_value_t = LearnOptions::default().batch)]
    batch: usize,
    /// Centre the teacher's embeddings before projecting them (learn
    /// what distinguishes texts, not what they all share).
    #[arg(long)]
    centre: bool,
    /// Hold out one block of 64 texts in N (0: none).
    #[arg(long, default_value_t = LearnOptions::default().holdout_every)]
    holdout_every: usize,
}

/// The corpus file's texts, one a line, blank lines left out.
pub fn read_corpus(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the corpus {}: {e}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(!lines.is_empty(), "the corpus {} is empty", path.display());
    Ok(lines)
}

pub fn corpus(args: &CorpusArgs) -> anyhow::Result<()> {
    let mut texts = wordnet::wordnet(&args.wordnet)?;
    let from_wordnet = texts.len();
    for path in &args.fortunes {
        texts.extend(wordnet::fortunes(path)?);
    }
    let all = wordnet::to_lines(&texts);
    let distinct = all.lines().count();
    let lines: String = all
        .lines()
        .step_by(args.every as usize)
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(&args.out, &lines)?;
    println!(
        "{} texts kept of {distinct} distinct ({from_wordnet} from WordNet, {} from fortune files), {} bytes: {}",
        lines.lines().count(),
        texts.len() - from_wordnet,
        lines.len(),
        args.out.display()
    );
    Ok(())
}

pub fn learn(cache: &ModelCache, args: &LearnArgs) -> anyhow::Result<()> {
    let mut texts = read_corpus(&args.corpus)?;
    if let Some(limit) = args.limit {
        texts.truncate(limit);
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embeddings = teacher_embeddings(cache, args, &texts)?;

    let bytes = std::fs::read(&args.from)
        .map_err(|e| anyhow::anyhow!("cannot read the table {}: {e}", args.from.display()))?;
    let start_model = StaticModel::parse(&bytes)?;
    let table = start_model.table();
    let dims = table.dims;
    let start: Vec<f32> = (0..table.tokens.len())
        .flat_map(|id| {
            let mut row = vec![0.0; dims];
            table.accumulate(id, &mut row);
            row
        })
        .collect();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| start_model.tokens(t)).collect();

    let options = LearnOptions {
        epochs: args.epochs,
        lr: args.lr,
        l2: args.l2,
        batch: args.batch,
        holdout_every: args.holdout_every,
        centre: args.centre,
        ..LearnOptions::default()
    };
    let problem = Problem {
        start: &start,
        dims,
        texts: &ids,
        teacher: &embeddings.rows,
        teacher_dims: embeddings.dims,
    };
    let pairs = holdout_pairs(&embeddings, texts.len(), options.holdout_every);
    let started = Instant::now();
    let mut last = None;
    let learned = learn::learn(&problem, &options, |report, vectors| {
        let (rho, agree) = pair_fidelity(vectors, dims, &ids, &pairs);
        eprintln!(
            "epoch {}: held-out cosine {:.4} (train {:.4}), held-out pairs: Spearman {rho:.4}, agreement {agree:.4} ({:.0} s)",
            report.epoch,
            report.holdout_cosine,
            report.train_cosine,
            started.elapsed().as_secs_f64()
        );
        last = Some((*report, rho, agree));
    });
    let (report, rho, agree) = last.expect("epoch 0 is always reported");

    let (scales, vectors) = learn::quantise(&learned.vectors, dims);
    let tokens: Vec<String> = table.tokens.iter().map(|t| t.to_string()).collect();
    let provenance = serde_json::json!({
        "teacher": "sentence-transformers/all-MiniLM-L6-v2",
        "teacher_package": MINILM.requirement,
        "teacher_sha256": MINILM.artifacts[0].sha256,
        "licence": MINILM.licence,
        "method": "answerloop models learn (Tokenlearn-style): token vectors fitted by Adam so that their sum's cosine with the teacher's mean-pooled, normalised sentence embedding (PCA of the corpus's embeddings, see centre) is high; started from `start`, mapped by least squares, with an L2 pull to it; int8 per-token scale",
        "start": serde_json::from_str::<serde_json::Value>(table.provenance).ok().and_then(|p| p["command"].as_str().map(str::to_string)),
        "corpus": format!("{}: {} texts, sha256 {}", file_name(&args.corpus), texts.len(), answerloop_models::sha256_hex(texts.join("\n").as_bytes())),
        "dims": dims,
        "centre": args.centre,
        "energy_kept": learned.energy_kept,
        "holdout": {"cosine": report.holdout_cosine, "start_cosine": learned.start_cosine, "pair_spearman": rho, "pair_agreement": agree},
        "command": command_line(args),
    })
    .to_string();
    let out = answerloop_scoring::table::write(&provenance, dims, &tokens, &scales, &vectors);
    StaticModel::parse(&out)?;
    anyhow::ensure!(
        out.len() <= semantic::TABLE_BUDGET_BYTES,
        "the table would be {} bytes, over the SmartModule's budget of {}",
        out.len(),
        semantic::TABLE_BUDGET_BYTES
    );
    std::fs::write(&args.out, &out)?;
    println!(
        "{} tokens x {dims} dims, {} bytes, held-out cosine {:.4} (start {:.4}): {}",
        tokens.len(),
        out.len(),
        report.holdout_cosine,
        learned.start_cosine,
        args.out.display()
    );
    Ok(())
}

/// The command that made a table, as recorded in its header.
fn command_line(args: &LearnArgs) -> String {
    let mut line = format!(
        "answerloop models learn --corpus {} --from {} --out {} --epochs {} --lr {} --l2 {} --batch {} --holdout-every {}",
        file_name(&args.corpus),
        file_name(&args.from),
        file_name(&args.out),
        args.epochs,
        args.lr,
        args.l2,
        args.batch,
        args.holdout_every
    );
    if args.centre {
        line.push_str(" --centre");
    }
    if let Some(limit) = args.limit {
        line.push_str(&format!(" --limit {limit}"));
    }
    line
}

/// The teacher's embeddings of the corpus, from the cache file if it was
/// made for these texts, else computed (one forward pass a batch of texts
/// of similar length) and cached.
fn teacher_embeddings(
    cache: &ModelCache,
    args: &LearnArgs,
    texts: &[&str],
) -> anyhow::Result<teacher::Embeddings> {
    let path = args.teacher_cache.clone().unwrap_or_else(|| {
        let mut name = args.corpus.as_os_str().to_owned();
        name.push(".teacher");
        PathBuf::from(name)
    });
    let key = teacher::key(texts, MINILM.artifacts[0].sha256);
    if let Some(embeddings) = teacher::read(&path, &key)? {
        eprintln!("teacher embeddings: {}", path.display());
        return Ok(embeddings);
    }
    crate::providers::ensure_model(cache, &MINILM)?;
    let model = MiniLm::load(cache)?;
    let started = Instant::now();
    let step = (texts.len() / 50).max(1);
    let mut next = step;
    let embeddings = teacher::embed(&model, texts, |done| {
        if done >= next || done == texts.len() {
            next += step;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "teacher: {done} / {} texts embedded, {:.0} texts/s",
                texts.len(),
                done as f64 / secs.max(1e-9)
            );
        }
    })?;
    teacher::write(&path, &key, &embeddings)?;
    eprintln!(
        "teacher embeddings cached in {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(embeddings)
}

/// Pairs of held-out texts with the teacher's score of each: every text
/// with the next (often a definition and its example, or two senses of a
/// word: related) and with the one five on (often unrelated).
fn holdout_pairs(
    embeddings: &teacher::Embeddings,
    n: usize,
    every: usize,
) -> Vec<(usize, usize, f32)> {
    let held: Vec<usize> = (0..n).filter(|i| held_out(*i, every)).collect();
    let mut pairs = Vec::new();
    for (k, &i) in held.iter().enumerate() {
        for gap in [1, 5] {
            if let Some(&j) = held.get(k + gap) {
                let cosine: f32 = embeddings
                    .row(i)
                    .iter()
                    .zip(embeddings.row(j))
                    .map(|(a, b)| a * b)
                    .sum();
                pairs.push((i, j, cosine.clamp(0.0, 1.0)));
            }
        }
    }
    pairs
}

/// Spearman with the teacher and agreement at its boundary (threshold
/// calibrated on the even pairs, agreement on the odd ones) of unquantised
/// `vectors` on `pairs`.
fn pair_fidelity(
    vectors: &[f32],
    dims: usize,
    ids: &[Vec<u32>],
    pairs: &[(usize, usize, f32)],
) -> (f64, f64) {
    let embed = |i: usize| {
        let mut sum = vec![0.0f32; dims];
        for &id in &ids[i] {
            let row = &vectors[id as usize * dims..(id as usize + 1) * dims];
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        sum
    };
    let exact: Vec<f32> = pairs.iter().map(|p| p.2).collect();
    let fast: Vec<f32> = pairs
        .iter()
        .map(|&(i, j, _)| semantic::cosine(&embed(i), &embed(j)))
        .collect();
    let threshold = calibrate(&exact, &fast, |i| i % 2 == 0);
    (
        spearman(&exact, &fast),
        agreement(&exact, &fast, threshold, |i| i % 2 == 1),
    )
}
