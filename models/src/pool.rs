//! Model workers: each on its own thread with its own session, fed through a
//! bounded queue. Generation is seconds of CPU work; it never runs on the
//! async executor, and a full queue is refused at once (the caller answers
//! 503 or backs off), never buffered without bound.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::batched::{BatchedModel, BatchedOptions};
use crate::smollm::{GenerateOptions, Generation, ModelError, SmolLm};

pub(crate) struct Job {
    pub(crate) prompt: String,
    pub(crate) options: GenerateOptions,
    pub(crate) reply: oneshot::Sender<Result<Generation, ModelError>>,
    /// Where the text goes piece by piece, for a streamed generation.
    pub(crate) pieces: Option<mpsc::Sender<String>>,
}

/// Text pieces of a generation still running, bounded: a slow reader slows
/// its worker rather than buffering without limit.
const STREAM_BUFFER: usize = 32;

/// A generation under way: its text piece by piece, then the whole.
pub struct Streaming {
    pub pieces: mpsc::Receiver<String>,
    pub done: oneshot::Receiver<Result<Generation, ModelError>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the local model's queue is full ({0} waiting)")]
    Full(usize),
    #[error("the local model's workers have stopped")]
    Stopped,
}

#[derive(Clone)]
pub struct ModelPool {
    jobs: SyncSender<Job>,
    queue: usize,
    workers: usize,
}

impl ModelPool {
    /// Start `workers` threads (at least one) sharing `model`, with room for
    /// `queue` waiting jobs.
    pub fn start(model: Arc<SmolLm>, workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for i in 0..workers {
            let (model, receiver) = (model.clone(), receiver.clone());
            std::thread::Builder::new()
                .name(format!("model-worker-{i}"))
                .spawn(move || {
                    let mut session = model.session();
                    loop {
                        let job = match receiver.lock().expect("queue poisoned").recv() {
                            Ok(job) => job,
                            Err(_) => return, // every sender is gone
                        };
                        if job.reply.is_closed() {
                            continue; // the caller gave up while it waited
                        }
                        let result = match &job.pieces {
                            Some(pieces) => {
                                let mut send =
                                    |piece: &str| pieces.blocking_send(piece.into()).is_ok();
                                session.generate_with(&job.prompt, &job.options, Some(&mut send))
                            }
                            None => session.generate(&job.prompt, &job.options),
                        };
                        let _ = job.reply.send(result);
                    }
                })
                .expect("spawning a model worker");
        }
        Self {
            jobs,
            queue,
            workers,
        }
    }

    /// Start the batched llama.cpp engines (`options.engines`, a thread
    /// each), decoding up to `options.slots` generations together between
    /// them, with room for `queue` waiting jobs beyond those.
    pub fn batched(model: Arc<BatchedModel>, options: BatchedOptions, queue: usize) -> Self {
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = crate::batched::Queue::new(receiver);
        for index in 0..options.engines.max(1) {
            let (model, receiver) = (model.clone(), receiver.clone());
            std::thread::Builder::new()
                .name(format!("model-engine-{index}"))
                .spawn(move || {
                    if let Err(e) = crate::batched::run(model, options, index, receiver) {
                        tracing::error!(error = %e, "the local model's engine {index} stopped");
                    }
                })
                .expect("spawning a model engine");
        }
        Self {
            jobs,
            queue,
            workers: options.slots.max(options.engines).max(1),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queue a generation; refused at once when the queue is full.
    pub async fn generate(
        &self,
        prompt: String,
        options: GenerateOptions,
    ) -> Result<Result<Generation, ModelError>, PoolError> {
        let answer = self.submit(prompt, options, None)?;
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// Queue a generation whose text comes piece by piece; refused at once
    /// when the queue is full. Dropping the pieces' receiver stops it.
    pub fn stream(&self, prompt: String, options: GenerateOptions) -> Result<Streaming, PoolError> {
        let (sender, pieces) = mpsc::channel(STREAM_BUFFER);
        let done = self.submit(prompt, options, Some(sender))?;
        Ok(Streaming { pieces, done })
    }

    fn submit(
        &self,
        prompt: String,
        options: GenerateOptions,
        pieces: Option<mpsc::Sender<String>>,
    ) -> Result<oneshot::Receiver<Result<Generation, ModelError>>, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                prompt,
                options,
                reply,
                pieces,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => PoolError::Full(self.queue),
                TrySendError::Disconnected(_) => PoolError::Stopped,
            })?;
        Ok(answer)
    }
}
