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
//!   finished answer is kept as long for the retry that takes it;
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

type Running<T> = Mutex<HashMap<String, watch::Receiver<Option<T>>>>;

/// The requests in flight at one server, by key (the request body).
pub struct InFlight<T> {
    /// A place at the server each, when capped.
    permits: Option<Arc<Semaphore>>,
    running: Arc<Running<T>>,
    /// How long a finished answer waits for a retry to take it.
    keep: Duration,
}

impl<T: Clone + Send + Sync + 'static> InFlight<T> {
    pub fn new(max: Option<usize>, keep: Duration) -> Self {
        Self {
            permits: max.map(|max| Arc::new(Semaphore::new(max.max(1)))),
            running: Arc::default(),
            keep,
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
        let mut answer = self.join_or_start(&key, send);
        let value = match tokio::time::timeout(wait, answer.wait_for(Option::is_some)).await {
            Ok(Ok(value)) => value.clone(),
            // The wait passed, or the task ended without an answer (the
            // runtime is stopping).
            Ok(Err(_)) | Err(_) => return None,
        };
        forget(&self.running, &key, &answer);
        value
    }

    /// Requests in flight now, for tests and logs.
    pub fn in_flight(&self) -> usize {
        self.running.lock().expect("in-flight map poisoned").len()
    }

    fn join_or_start<F, Fut>(&self, key: &str, send: F) -> watch::Receiver<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut running = self.running.lock().expect("in-flight map poisoned");
        if let Some(answer) = running.get(key) {
            tracing::debug!("a retry waits for its request still in flight");
            return answer.clone();
        }
        let (sender, answer) = watch::channel(None);
        running.insert(key.to_string(), answer.clone());
        let (permits, map, keep) = (self.permits.clone(), self.running.clone(), self.keep);
        let (key, mine, request) = (key.to_string(), answer.clone(), send());
        tokio::spawn(async move {
            let permit = match permits {
                Some(permits) => Some(permits.acquire_owned().await.expect("never closed")),
                None => None,
            };
            let value = request.await;
            drop(permit);
            let _ = sender.send(Some(value));
            tokio::time::sleep(keep).await;
            forget(&map, &key, &mine);
        });
        answer
    }
}

/// Remove `key` if it is still the request `answer` belongs to.
fn forget<T>(running: &Running<T>, key: &str, answer: &watch::Receiver<Option<T>>) {
    let mut running = running.lock().expect("in-flight map poisoned");
    if running.get(key).is_some_and(|a| a.same_channel(answer)) {
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
