//! Model workers: each on its own thread with its own session, fed through a
//! bounded queue. Generation is seconds of CPU work; it never runs on the
//! async executor, and a full queue is refused at once (the caller answers
//! 503 or backs off), never buffered without bound.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::smollm::{GenerateOptions, Generation, ModelError, SmolLm};

struct Job {
    prompt: String,
    options: GenerateOptions,
    reply: oneshot::Sender<Result<Generation, ModelError>>,
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
                        let _ = job.reply.send(session.generate(&job.prompt, &job.options));
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

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queue a generation; refused at once when the queue is full.
    pub async fn generate(
        &self,
        prompt: String,
        options: GenerateOptions,
    ) -> Result<Result<Generation, ModelError>, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job {
                prompt,
                options,
                reply,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => PoolError::Full(self.queue),
                TrySendError::Disconnected(_) => PoolError::Stopped,
            })?;
        answer.await.map_err(|_| PoolError::Stopped)
    }
}
