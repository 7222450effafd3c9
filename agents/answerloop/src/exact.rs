//! `--scorer exact`: the original metric scored in the broker. A
//! transformer cannot run per record inside a SmartModule, but the cosine of
//! two vectors can: the agents compute all-MiniLM-L6-v2 sentence embeddings
//! natively (the traffic agent each reference, the LLM agent each answer)
//! and carry them quantised in the records (`answerloop_scoring::carried`);
//! `answer-score` takes their cosine.
//!
//! The transformer runs on a thread of its own, never on the async
//! executor, behind a bounded queue. Each forward pass takes every request
//! waiting when it starts (up to [`MAX_BATCH`] texts), so answers that
//! arrive together are embedded together.

use std::sync::Arc;

use answerloop_models::{MiniLm, ModelCache, ModelError, MINILM};
use answerloop_scoring::carried;
use tokio::sync::{mpsc, oneshot};

/// Texts a forward pass at most: batching amortises the pass, but every
/// text is padded to the longest of its batch.
pub const MAX_BATCH: usize = 32;

/// Requests waiting for the embedding thread.
const QUEUE: usize = 256;

/// Which scorer `answer-score` uses for the records the agents write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ScorerKind {
    /// The static embedding, computed in the SmartModule (the default).
    #[default]
    Static,
    /// all-MiniLM-L6-v2, computed by the agents and carried in the records.
    Exact,
}

/// `--scorer`, for the commands whose agents write records to score.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScorerArg {
    /// How answer-score scores: `static`, the embedding table in the
    /// SmartModule; or `exact`, all-MiniLM-L6-v2 sentence embeddings
    /// computed natively by the traffic agent (references) and the LLM agent
    /// (answers), carried in the records, their cosine taken in the broker
    /// (the model is fetched on first use).
    #[arg(long, value_enum, env = "ANSWERLOOP_SCORER", default_value = "static")]
    pub scorer: ScorerKind,
}

impl ScorerArg {
    /// The embedder `--scorer exact` needs, loaded (fetched first if the
    /// cache lacks it); `None` for the static scorer.
    pub fn embedder(&self, models: &ModelCache) -> anyhow::Result<Option<Arc<ExactEmbedder>>> {
        match self.scorer {
            ScorerKind::Static => Ok(None),
            ScorerKind::Exact => Ok(Some(ExactEmbedder::load(models)?)),
        }
    }
}

/// The texts' carried exact vectors (`exact:all-MiniLM-L6-v2:…`), embedded
/// in forward passes of at most [`MAX_BATCH`] texts of similar length. An
/// empty (or blank) text is carried as the zero vector, which scores 0, as
/// `MiniLm::score` scores an empty text.
pub fn carried_vectors(model: &MiniLm, texts: &[&str]) -> Result<Vec<String>, ModelError> {
    Ok(embed(model, texts)?
        .iter()
        .map(|v| carried::exact_vector(v))
        .collect())
}

/// The texts' sentence embeddings as [`carried_vectors`] computes them,
/// before quantisation: the zero vector for a blank text.
pub fn embed(model: &MiniLm, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut order: Vec<usize> = (0..texts.len())
        .filter(|i| !texts[*i].trim().is_empty())
        .collect();
    // Texts of a length together: less padding in each pass.
    order.sort_by_key(|i| texts[*i].len());
    let mut out = vec![vec![0.0; carried::EXACT_DIMS]; texts.len()];
    for chunk in order.chunks(MAX_BATCH) {
        let batch: Vec<&str> = chunk.iter().map(|i| texts[*i]).collect();
        for (i, vector) in chunk.iter().zip(model.embed(&batch)?) {
            out[*i] = vector;
        }
    }
    Ok(out)
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<String>, String>>,
}

/// all-MiniLM-L6-v2 on its own thread, turning texts into carried vectors.
pub struct ExactEmbedder {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for ExactEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExactEmbedder(all-MiniLM-L6-v2)")
    }
}

impl ExactEmbedder {
    /// Fetch all-MiniLM-L6-v2 into `cache` unless it is there, load it and
    /// start its thread.
    pub fn load(cache: &ModelCache) -> anyhow::Result<Arc<Self>> {
        crate::providers::ensure_model(cache, &MINILM)?;
        Ok(Self::start(MiniLm::load(cache)?))
    }

    /// Start the embedding thread; it stops once every handle is dropped.
    pub fn start(model: MiniLm) -> Arc<Self> {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("exact-embedder".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut jobs = vec![first];
                    let mut texts = jobs[0].texts.len();
                    while texts < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => {
                                texts += job.texts.len();
                                jobs.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    embed_jobs(&model, jobs);
                }
            })
            .expect("spawning the exact embedder");
        Arc::new(Self { jobs })
    }

    /// The texts' carried vectors, in order.
    pub async fn vectors(&self, texts: Vec<String>) -> anyhow::Result<Vec<String>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { texts, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the exact embedder has stopped"))?;
        finish(answer.await)
    }

    /// [`ExactEmbedder::vectors`] from a blocking thread (never from the
    /// async executor).
    pub fn vectors_blocking(&self, texts: Vec<String>) -> anyhow::Result<Vec<String>> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .blocking_send(Job { texts, reply })
            .map_err(|_| anyhow::anyhow!("the exact embedder has stopped"))?;
        finish(answer.blocking_recv())
    }
}

fn finish(
    answer: Result<Result<Vec<String>, String>, oneshot::error::RecvError>,
) -> anyhow::Result<Vec<String>> {
    match answer {
        Ok(Ok(vectors)) => Ok(vectors),
        Ok(Err(e)) => Err(anyhow::anyhow!("all-MiniLM-L6-v2 failed to embed: {e}")),
        Err(_) => Err(anyhow::anyhow!("the exact embedder has stopped")),
    }
}

/// Embed the texts of `jobs` together and give each job its vectors.
fn embed_jobs(model: &MiniLm, jobs: Vec<Job>) {
    let texts: Vec<&str> = jobs
        .iter()
        .flat_map(|job| job.texts.iter().map(String::as_str))
        .collect();
    match carried_vectors(model, &texts) {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for job in jobs {
                let mine = vectors.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
    }
}
