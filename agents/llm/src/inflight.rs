//! Requests in flight at one server, kept past the caller's time-out.
//!
//! Some servers queue instead of refusing: llama.cpp's `llama-server` takes
//! every request, serves `--parallel` of them at once and never answers 503.
//! A client that gave up on a slow request, dropped it and sent it again
//! would put a second copy of the work behind the first (llama-server only
//! notices a closed connection when it next polls, about a second later,
//! and a queued copy may start meanwhile), and under a time-out shorter than
//! a generation no attempt would ever finish. So here a time-out ends the
//! caller's wait, not the request:
//!
//! - the request stays in flight until the server answers, or until
//!   `abandon` has passed (then its connection is closed, which a server
//!   that polls for it takes as a cancel);
//! - a retry of the same request (the same body: the same question, attempt
//!   and seed) waits for that answer instead of sending a copy, and a
//!   finished answer nobody has taken yet is kept as long for the retry
//!   that takes it (an answer taken is let go at once: kept for minutes,
//!   every reply of a busy agent would pile up in memory);
//! - requests in flight, those whose caller stopped waiting included, can
//!   be capped (`max`, `--max-in-flight`): set to the server's
//!   `--parallel`, the server never queues ours at all. No cap by default:
//!   a server that hangs single requests while it answers others (as
//!   llm-sim's `timeout` fault does) would otherwise hold the capped places
//!   and stall every other question until it answers.
//!
//! What it must never do: send one request twice while the first is still
//! at the server, or hold more than `max` at the server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

/// Caps and times of requests kept past their caller's time-out.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InFlightConfig {
    /// Requests at the server at once, abandoned ones included; `None` is
    /// no cap.
    pub max: Option<usize>,
    /// How long a request may stay at the server in all; `None` is four
    /// times the caller's time-out.
    pub abandon: Option<Duration>,
}

impl InFlightConfig {
    /// The abandon time for a caller's time-out of `timeout`.
    pub fn abandon_after(&self, timeout: Duration) -> Duration {
        self.abandon.unwrap_or(timeout * 4).max(timeout)
    }
}

/// By key: which request it is (a number of its own) and its answer.
type Running<T> = Mutex<HashMap<String, (u64, watch::Receiver<Option<T>>)>>;

/// The requests in flight at one server, by key (the request body).
pub struct InFlight<T> {
    /// A place at the server each, when capped.
    permits: Option<Arc<Semaphore>>,
    running: Arc<Running<T>>,
    /// How long a finished answer waits for a retry to take it.
    keep: Duration,
    /// The number the next request started gets.
    next: std::sync::atomic::AtomicU64,
}

impl<T: Clone + Send + Sync + 'static> InFlight<T> {
    pub fn new(max: Option<usize>, keep: Duration) -> Self {
        Self {
            permits: max.map(|max| Arc::new(Semaphore::new(max.max(1)))),
            running: Arc::default(),
            keep,
            next: Default::default(),
        }
    }

    /// The answer to the request `key`: the one already in flight, or a new
    /// one made by `send` (once fewer than `max` are in flight, if capped). Waits at most
    /// `wait`; `None` when that passed first, and the request goes on.
    pub async fn run<F, Fut>(&self, key: String, wait: Duration, send: F) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (request, mut answer) = self.join_or_start(&key, send);
        let value = match tokio::time::timeout(wait, answer.wait_for(Option::is_some)).await {
            Ok(Ok(value)) => value.clone(),
            // The wait passed, or the task ended without an answer (the
            // runtime is stopping).
            Ok(Err(_)) | Err(_) => return None,
        };
        forget(&self.running, &key, request);
        value
    }

    /// Requests in flight now, for tests and logs.
    pub fn in_flight(&self) -> usize {
        self.running.lock().expect("in-flight map poisoned").len()
    }

    /// The request for `key` (its number and its answer to come): the one
    /// in flight, or one started now.
    fn join_or_start<F, Fut>(&self, key: &str, send: F) -> (u64, watch::Receiver<Option<T>>)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut running = self.running.lock().expect("in-flight map poisoned");
        if let Some((request, answer)) = running.get(key) {
            tracing::debug!("a retry waits for its request still in flight");
            return (*request, answer.clone());
        }
        let (sender, answer) = watch::channel(None);
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running.insert(key.to_string(), (number, answer.clone()));
        let (permits, map, keep) = (self.permits.clone(), self.running.clone(), self.keep);
        let (key, request) = (key.to_string(), send());
        tokio::spawn(async move {
            let permit = match permits {
                Some(permits) => Some(permits.acquire_owned().await.expect("never closed")),
                None => None,
            };
            let value = request.await;
            drop(permit);
            let _ = sender.send(Some(value));
            // Kept until a caller took it (then no receiver is left: the
            // map's went with `forget`, the caller's when it returned) or
            // `keep` passed.
            tokio::select! {
                _ = tokio::time::sleep(keep) => {}
                _ = sender.closed() => {}
            }
            forget(&map, &key, number);
        });
        (number, answer)
    }
}

/// Remove `key` if it is still the request numbered `request`.
fn forget<T>(running: &Running<T>, key: &str, request: u64) {
    let mut running = running.lock().expect("in-flight map poisoned");
    if running
        .get(key)
        .is_some_and(|(number, _)| *number == request)
    {
        running.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    /// A server that counts the requests it got and answers each when told.
    #[derive(Default)]
    struct Server {
        got: AtomicUsize,
        release: Notify,
    }

    impl Server {
        fn request(self: &Arc<Self>, answer: u32) -> impl Future<Output = u32> + Send + 'static {
            let server = self.clone();
            async move {
                server.got.fetch_add(1, Ordering::SeqCst);
                server.release.notified().await;
                answer
            }
        }

        fn got(&self) -> usize {
            self.got.load(Ordering::SeqCst)
        }
    }

    const WAIT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_a_time_out_waits_for_the_request_instead_of_resending() {
        let server = Arc::new(Server::default());
        let in_flight = InFlight::new(None, Duration::from_secs(60));
        let first = in_flight.run("q1".into(), WAIT, || server.request(7)).await;
        assert_eq!(first, None, "the server has not answered");
        let again = in_flight.run("q1".into(), WAIT, || server.request(7)).await;
        assert_eq!(again, None);
        assert_eq!(server.got(), 1, "the retry joined, it sent nothing");
        server.release.notify_waiters();
        tokio::task::yield_now().await;
        let answered = in_flight.run("q1".into(), WAIT, || server.request(7)).await;
        assert_eq!(answered, Some(7), "the retry takes the late answer");
        assert_eq!(server.got(), 1);
        assert_eq!(in_flight.in_flight(), 0, "a taken answer is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_whose_caller_gave_up_still_count_against_the_cap() {
        let server = Arc::new(Server::default());
        let in_flight = InFlight::new(Some(1), Duration::from_secs(60));
        assert_eq!(
            in_flight.run("q1".into(), WAIT, || server.request(1)).await,
            None
        );
        assert_eq!(
            in_flight.run("q2".into(), WAIT, || server.request(2)).await,
            None
        );
        assert_eq!(server.got(), 1, "q2 waits for q1's place at the server");
        server.release.notify_waiters();
        tokio::task::yield_now().await;
        let answer = in_flight.run("q2".into(), WAIT, || server.request(2));
        let release = async {
            while server.got() < 2 {
                tokio::task::yield_now().await;
            }
            server.release.notify_waiters();
        };
        let (answer, ()) = tokio::join!(answer, release);
        assert_eq!(answer, Some(2));
        assert_eq!(server.got(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_cap_a_held_request_holds_up_no_other() {
        let server = Arc::new(Server::default());
        let in_flight = InFlight::new(None, Duration::from_secs(60));
        let first = in_flight.run("q1".into(), WAIT, || server.request(1)).await;
        assert_eq!(first, None);
        let second = in_flight.run("q2".into(), WAIT, || server.request(2)).await;
        assert_eq!(second, None);
        assert_eq!(server.got(), 2, "q2 went to the server beside q1");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_taken_is_let_go_at_once_not_kept_for_keep() {
        let in_flight = InFlight::new(None, Duration::from_secs(600));
        let reply = Arc::new(vec![0u8; 4096]);
        let kept = Arc::downgrade(&reply);
        let answered = in_flight
            .run("q1".into(), WAIT, move || async move { reply })
            .await;
        assert_eq!(answered.as_deref().map(Vec::len), Some(4096));
        drop(answered);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(kept.upgrade().is_none(), "the reply is still held");
        assert_eq!(in_flight.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_no_retry_takes_is_forgotten_after_keep() {
        let server = Arc::new(Server::default());
        let in_flight = InFlight::new(None, Duration::from_secs(5));
        assert_eq!(
            in_flight.run("q1".into(), WAIT, || server.request(1)).await,
            None
        );
        server.release.notify_waiters();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(in_flight.in_flight(), 0);
    }
}
