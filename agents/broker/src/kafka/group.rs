//! Consumer groups: agents share a topic's partitions through Kafka's group
//! coordinator, without being told which are theirs.
//!
//! One librdkafka consumer joins the group for a (topic, consumer id) and a
//! thread of its own polls it, which serves the rebalance callbacks. Each
//! partition's records wait in a queue of their own inside librdkafka (its
//! queue split from the consumer's before the group assigns anything), so
//! librdkafka's prefetch limit holds back each partition by itself and no
//! partition is ever paused: a paused partition was fetched again only at
//! librdkafka's next one-second tick. The agents see one [`Slot`] a
//! partition, the seam's per-partition consumer, which takes records from
//! that queue only while the group has given the partition to this process.
//! A partition that appears after the consumer started (the topic grew) has
//! no queue of its own: its records come through the consumer's queue to
//! the polling thread, which holds them for the slot.
//!
//! A revoked partition ends without loss: its slot stops handing out
//! records, drops the ones it had not handed out (the next owner reads them
//! from the committed position), and the rebalance waits, up to
//! [`DRAIN_TIMEOUT`], until the records it had handed out are done and
//! committed. A commit is never sent behind the position the group had when
//! the partition was assigned, nor for a partition this process no longer
//! owns, so a late commit cannot move another owner's position back.
//!
//! A member never leaves its group in the middle of its first join: closed
//! before the group has given it an assignment, it waits for that first
//! (see [`JoinSettle`]). A broker may keep a member that leaves between its
//! JoinGroup and its SyncGroup as the forming group's leader (Tansu does),
//! and no later member of that group is ever given an assignment.
//!
//! Without a consumer id (a scan) the consumer is assigned the partition
//! from its beginning, joins no group and commits nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::wasm_chain::{chain_output, spawn_chain, ChainTask, SharedChain};
use crate::{Batch, BrokerError, Consumer, Record};

/// How long a rebalance waits for a revoked partition's records in flight,
/// at most; less when the group's rebalance timeout is short (see
/// [`drain_timeout`]).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// librdkafka's default `max.poll.interval.ms`.
const MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// How long a revoked partition may drain: [`DRAIN_TIMEOUT`], or two thirds
/// of the rebalance timeout (`max.poll.interval.ms`) when that is shorter,
/// so a consumer busy draining is never taken for a dead one.
pub fn drain_timeout(config: &ClientConfig) -> Duration {
    let interval = millis(config, "max.poll.interval.ms", MAX_POLL_INTERVAL_MS);
    DRAIN_TIMEOUT.min(Duration::from_millis(interval * 2 / 3))
}

/// librdkafka's default `session.timeout.ms`.
const SESSION_TIMEOUT_MS: u64 = 45_000;

/// How long a member closed before its first assignment waits for it: the
/// group's session timeout, counted from the join. Long enough for Tansu,
/// which holds a new member's JoinGroup for half of it, and for Kafka,
/// which answers within seconds unless the group's other members are slow
/// to join again; past it a broker takes a silent member as gone anyway.
pub fn join_settle_timeout(config: &ClientConfig) -> Duration {
    Duration::from_millis(millis(config, "session.timeout.ms", SESSION_TIMEOUT_MS))
}

/// A property in milliseconds, else librdkafka's `default`.
fn millis(config: &ClientConfig, name: &str, default: u64) -> u64 {
    config
        .get(name)
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(default)
}

/// Records the polling thread holds for a slot (of a partition without a
/// queue of its own) before it pauses the partition.
const SLOT_HIGH_WATER: usize = 2048;
/// How long a poll of the consumer waits, so the thread sees a stop.
const POLL: Duration = Duration::from_millis(100);
/// How long a scan waits for records it knows are there.
const SCAN_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fetch waits at the broker for records when there are none,
/// unless the user set `fetch.wait.max.ms` (librdkafka's default: 500 ms).
/// A record produced in the meantime reaches the consumer at the next
/// fetch on a broker that does not answer a waiting fetch early, and every
/// question crosses three topics.
const FETCH_WAIT_MS: &str = "20";

/// How much a partition's queue prefetches, at most (plus the fetch under
/// way), unless the user set `queued.max.messages.kbytes`: librdkafka's
/// default, 64 MB, is more than an agent with three consumers should hold
/// for each partition. Measured on the pipeline (5,000 questions on Tansu,
/// side by side): 1 MB took 1.6 to 1.8 times as long as 4 MB, and 16 MB
/// was no faster than 4 MB.
const PREFETCH_KBYTES: &str = "4096";

/// How long a consumer whose prefetch is full waits before it fetches
/// again, unless the user set `fetch.queue.backoff.ms`. librdkafka's
/// default (1 s) left a scan idle for most of each second: a fetch from one
/// broker can be larger than the prefetch cap, and the records are taken
/// out of librdkafka's queue within milliseconds.
const FETCH_QUEUE_BACKOFF_MS: &str = "5";

/// `config` with [`FETCH_WAIT_MS`], [`PREFETCH_KBYTES`] and
/// [`FETCH_QUEUE_BACKOFF_MS`] unless the user chose otherwise.
fn low_latency(config: &ClientConfig) -> ClientConfig {
    let mut config = config.clone();
    for (name, value) in [
        ("fetch.wait.max.ms", FETCH_WAIT_MS),
        ("queued.max.messages.kbytes", PREFETCH_KBYTES),
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
    ] {
        if config.get(name).is_none() {
            config.set(name, value);
        }
    }
    config
}

/// Where a partition stands for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    Owned,
    /// Revoked: its records in flight may still be committed.
    Draining,
    NotOwned,
}

struct SlotState {
    ownership: Ownership,
    /// Records the polling thread took from the consumer's queue.
    queue: VecDeque<(i64, Record)>,
    /// The offset after the last record handed out.
    handed: Option<i64>,
    /// The position the group held when the partition was assigned (the
    /// first record's offset): commits never go behind it.
    floor: Option<i64>,
    committed: Option<i64>,
    paused: bool,
    arrived: Arc<Notify>,
}

impl SlotState {
    fn new(ownership: Ownership) -> Self {
        Self {
            ownership,
            queue: VecDeque::new(),
            handed: None,
            floor: None,
            committed: None,
            paused: false,
            arrived: Arc::new(Notify::new()),
        }
    }

    /// Every record handed out is committed.
    fn drained(&self) -> bool {
        match self.handed {
            Some(handed) => self.committed.is_some_and(|c| c >= handed),
            None => true,
        }
    }
}

/// What the polling thread, the rebalance callbacks and the slots share.
struct Shared {
    topic: String,
    slots: Mutex<HashMap<i32, SlotState>>,
    /// Signalled when a commit lands, for a rebalance waiting on a drain.
    committed: Condvar,
    stop: AtomicBool,
    /// Partitions already handed to an agent as a slot.
    claimed: Mutex<Vec<i32>>,
    /// Whether the group has given this member its first assignment.
    joined: JoinSettle,
}

/// Whether a member's first join has finished, for a close to wait on.
#[derive(Default)]
struct JoinSettle {
    joined: Mutex<bool>,
    changed: Condvar,
}

impl JoinSettle {
    fn set(&self) {
        *self.joined.lock().expect("join lock poisoned") = true;
        self.changed.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.joined.lock().expect("join lock poisoned")
    }

    /// Wait until the first join has finished or `deadline` has passed;
    /// whether it finished.
    fn wait_until(&self, deadline: Instant) -> bool {
        let joined = self.joined.lock().expect("join lock poisoned");
        let left = deadline.saturating_duration_since(Instant::now());
        let (joined, _) = self
            .changed
            .wait_timeout_while(joined, left, |joined| !*joined)
            .expect("join lock poisoned");
        *joined
    }
}

impl Shared {
    fn with_slot<T>(&self, partition: i32, f: impl FnOnce(&mut SlotState) -> T) -> T {
        let mut slots = self.slots.lock().expect("slot lock poisoned");
        let slot = slots
            .entry(partition)
            .or_insert_with(|| SlotState::new(Ownership::NotOwned));
        f(slot)
    }
}

struct GroupContext {
    shared: Arc<Shared>,
    drain_timeout: Duration,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked = partitions_of(list, &self.shared.topic);
        tracing::info!(topic = %self.shared.topic, ?revoked, "partitions revoked");
        let mut slots = self.shared.slots.lock().expect("slot lock poisoned");
        for partition in &revoked {
            let slot = slots
                .entry(*partition)
                .or_insert_with(|| SlotState::new(Ownership::NotOwned));
            slot.ownership = Ownership::Draining;
            slot.queue.clear();
            slot.arrived.notify_waiters();
        }
        let deadline = Instant::now() + self.drain_timeout;
        while !self.shared.stop.load(Ordering::Relaxed)
            && revoked.iter().any(|p| !slots[p].drained())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    topic = %self.shared.topic,
                    "records of revoked partitions still in flight after {:?}; their next owner may answer them again",
                    self.drain_timeout
                );
                break;
            }
            slots = self
                .shared
                .committed
                .wait_timeout(slots, left)
                .expect("slot lock poisoned")
                .0;
        }
        for partition in &revoked {
            if let Some(slot) = slots.get_mut(partition) {
                slot.ownership = Ownership::NotOwned;
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else {
            return;
        };
        let assigned = partitions_of(list, &self.shared.topic);
        tracing::info!(topic = %self.shared.topic, ?assigned, "partitions assigned");
        // Called after every finished join, with an empty list too.
        self.shared.joined.set();
        for partition in assigned {
            self.shared.with_slot(partition, |slot| {
                slot.ownership = Ownership::Owned;
                slot.floor = None;
                slot.paused = false;
            });
        }
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

type GroupConsumer = BaseConsumer<GroupContext>;

/// A partition's own queue inside librdkafka, and what wakes its slot.
struct OwnQueue {
    queue: PartitionQueue<GroupContext>,
    /// Signalled when the queue turns from empty to not empty.
    arrived: Arc<Notify>,
}

/// One librdkafka consumer and the thread that polls it.
pub struct Group {
    shared: Arc<Shared>,
    /// Each partition's own queue, split before anything was assigned.
    queues: HashMap<i32, Arc<OwnQueue>>,
    consumer: Arc<GroupConsumer>,
    committing: bool,
    /// For a group member: until when a close waits for its first join.
    join_deadline: Option<Instant>,
    thread: Option<JoinHandle<()>>,
}

impl Group {
    /// Join group `id` on `topic`, which has `partitions` partitions.
    pub fn join(
        config: &ClientConfig,
        topic: &str,
        id: &str,
        partitions: u32,
    ) -> Result<Arc<Self>, BrokerError> {
        let mut config = low_latency(config);
        config
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky");
        let all: Vec<i32> = (0..partitions as i32).collect();
        let group = Self::start(config, topic, true, &all, |consumer| {
            consumer.subscribe(&[topic])
        })?;
        Ok(group)
    }

    /// Read `partition` of `topic` from its beginning, in no group.
    pub fn scan(
        config: &ClientConfig,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Self>, BrokerError> {
        let mut config = low_latency(config);
        config
            .set("group.id", "answerloop-scan")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        Self::start(config, topic, false, &[partition], |consumer| {
            consumer.context().shared.with_slot(partition, |slot| {
                slot.ownership = Ownership::Owned;
            });
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic, partition, Offset::Beginning)?;
            consumer.assign(&list)
        })
    }

    fn start(
        config: ClientConfig,
        topic: &str,
        committing: bool,
        partitions: &[i32],
        begin: impl FnOnce(&GroupConsumer) -> rdkafka::error::KafkaResult<()>,
    ) -> Result<Arc<Self>, BrokerError> {
        let shared = Arc::new(Shared {
            topic: topic.to_string(),
            slots: Mutex::new(HashMap::new()),
            committed: Condvar::new(),
            stop: AtomicBool::new(false),
            claimed: Mutex::new(Vec::new()),
            joined: JoinSettle::default(),
        });
        let join_deadline = committing.then(|| Instant::now() + join_settle_timeout(&config));
        let context = GroupContext {
            shared: shared.clone(),
            drain_timeout: drain_timeout(&config),
        };
        let consumer: GroupConsumer = config
            .create_with_context(context)
            .map_err(|e| kafka_error("cannot create a consumer", e))?;
        let consumer = Arc::new(consumer);
        // Split before the first assignment: librdkafka then keeps every
        // later fetch of the partition in its own queue.
        let mut queues = HashMap::new();
        for &partition in partitions {
            let Some(mut queue) = consumer.split_partition_queue(topic, partition) else {
                return Err(BrokerError::Kafka(format!(
                    "cannot give {topic} partition {partition} a queue of its own"
                )));
            };
            let arrived = Arc::new(Notify::new());
            let wake = arrived.clone();
            queue.set_nonempty_callback(move || wake.notify_one());
            queues.insert(partition, Arc::new(OwnQueue { queue, arrived }));
        }
        begin(&consumer).map_err(|e| kafka_error(&format!("cannot read {topic}"), e))?;
        let thread = {
            let consumer = consumer.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("kafka-{topic}"))
                .spawn(move || poll_loop(&consumer, &shared))
                .map_err(|e| BrokerError::Task(format!("cannot start a consumer thread: {e}")))?
        };
        Ok(Arc::new(Self {
            shared,
            queues,
            consumer,
            committing,
            join_deadline,
            thread: Some(thread),
        }))
    }

    /// Claim `partition` for one agent's consumer; `false` when this group
    /// already gave it out (a second agent in the process needs a group
    /// member of its own).
    pub fn claim(&self, partition: i32) -> bool {
        let mut claimed = self.shared.claimed.lock().expect("claim lock poisoned");
        if claimed.contains(&partition) {
            return false;
        }
        claimed.push(partition);
        true
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The polling thread serves the rebalance that ends the join.
        if let Some(deadline) = self.join_deadline {
            if !self.shared.joined.is_set() {
                say_join_wait(deadline);
            }
            if !self.shared.joined.wait_until(deadline) {
                tracing::warn!(
                    topic = %self.shared.topic,
                    "leaving a group that never gave this member an assignment"
                );
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The queues hold the consumer: let them go first, so the consumer
        // closes (and leaves its group) with the last of them.
        self.queues.clear();
    }
}

/// Say once a process, where a command's user sees it, why a close
/// pauses: a `run` stopped seconds after it started otherwise sits silent
/// until its groups have formed (on Tansu up to half the session timeout).
fn say_join_wait(deadline: Instant) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "waiting up to {}s for Kafka consumer groups still joining before leaving them \
             (a member that leaves mid-join can leave its group with a leader that never syncs)",
            deadline.saturating_duration_since(Instant::now()).as_secs()
        );
    }
}

/// Poll until stopped: serve the rebalance callbacks; records of a
/// partition without a queue of its own to its slot, the partition paused
/// while its slot is full and resumed once the slot has room.
fn poll_loop(consumer: &GroupConsumer, shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        match consumer.poll(POLL) {
            None => {}
            Some(Err(e)) => tracing::warn!(topic = %shared.topic, "Kafka consumer: {e}"),
            Some(Ok(message)) => {
                let record = record_of(&message);
                let (partition, offset) = (message.partition(), message.offset());
                let pause = shared.with_slot(partition, |slot| {
                    if slot.ownership != Ownership::Owned
                        || slot.handed.is_some_and(|handed| offset < handed)
                    {
                        return false;
                    }
                    slot.floor.get_or_insert(offset);
                    slot.queue.push_back((offset, record));
                    slot.arrived.notify_waiters();
                    let full = slot.queue.len() >= SLOT_HIGH_WATER && !slot.paused;
                    slot.paused |= full;
                    full
                });
                if pause {
                    let _ = consumer.pause(&one(&shared.topic, partition));
                }
            }
        }
        let resume: Vec<i32> = {
            let mut slots = shared.slots.lock().expect("slot lock poisoned");
            slots
                .iter_mut()
                .filter(|(_, s)| s.paused && s.queue.len() < SLOT_HIGH_WATER / 2)
                .map(|(p, s)| {
                    s.paused = false;
                    *p
                })
                .collect()
        };
        for partition in resume {
            let _ = consumer.resume(&one(&shared.topic, partition));
        }
    }
}

fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}

fn kafka_error(context: &str, e: KafkaError) -> BrokerError {
    BrokerError::Kafka(format!("{context}: {e}"))
}

/// One partition of a group's topic, as the seam's consumer.
pub struct Slot {
    group: Arc<Group>,
    partition: i32,
    chain: Option<SharedChain>,
    /// A batch going through the chain: its next position and the task.
    running: Option<(u64, ChainTask)>,
    /// The end of the log when a scan opened (where it stops).
    scan_end: Option<u64>,
    position: u64,
}

impl Slot {
    pub fn new(group: Arc<Group>, partition: i32, chain: Option<SharedChain>) -> Self {
        Self {
            group,
            partition,
            chain,
            running: None,
            scan_end: None,
            position: 0,
        }
    }

    /// A scan that stops at `end`, the log's end when it opened.
    pub fn ending_at(mut self, end: u64) -> Self {
        self.scan_end = Some(end);
        self
    }

    /// Take up to `max` records when the partition is this process's: those
    /// the polling thread holds first (they were fetched before any in the
    /// partition's own queue), then from that queue.
    fn take(&self, max: usize) -> Vec<(i64, Record)> {
        let own = self.group.queues.get(&self.partition);
        self.group.shared.with_slot(self.partition, |slot| {
            if slot.ownership != Ownership::Owned {
                return Vec::new();
            }
            let max = max.max(1);
            let n = slot.queue.len().min(max);
            let mut taken: Vec<(i64, Record)> = slot.queue.drain(..n).collect();
            if let Some(own) = own {
                let mut after = taken.last().map(|(o, _)| o + 1).or(slot.handed);
                while taken.len() < max {
                    let Some(polled) = own.queue.poll(Duration::ZERO) else {
                        break;
                    };
                    let message = match polled {
                        Ok(message) => message,
                        Err(e) => {
                            tracing::warn!(topic = %self.group.shared.topic, "Kafka consumer: {e}");
                            continue;
                        }
                    };
                    let offset = message.offset();
                    // Fetched again after a rebalance: already handed out.
                    if after.is_some_and(|next| offset < next) {
                        continue;
                    }
                    slot.floor.get_or_insert(offset);
                    taken.push((offset, record_of(&message)));
                    after = Some(offset + 1);
                }
            }
            if let Some((last, _)) = taken.last() {
                slot.handed = Some(last + 1);
            }
            taken
        })
    }

    /// What signals that records may have arrived: the partition's own
    /// queue's (which keeps one signal when nobody waits), and the polling
    /// thread's.
    fn arrivals(&self) -> (Option<Arc<Notify>>, Arc<Notify>) {
        let own = self
            .group
            .queues
            .get(&self.partition)
            .map(|own| own.arrived.clone());
        let held = self
            .group
            .shared
            .with_slot(self.partition, |slot| slot.arrived.clone());
        (own, held)
    }
}

fn record_of(message: &impl Message) -> Record {
    Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().unwrap_or_default().to_vec(),
    }
}

#[async_trait]
impl Consumer for Slot {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError> {
        let wait = match self.scan_end {
            Some(end) if self.position < end => wait.max(SCAN_FETCH_TIMEOUT),
            _ => wait,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((next, task)) = self.running.as_mut() {
                let output = chain_output(task).await;
                self.position = *next;
                self.running = None;
                return Ok(Batch {
                    records: output?,
                    next: self.position,
                    positions: Vec::new(),
                    end: self.scan_end,
                });
            }
            let (own, held) = self.arrivals();
            let held_arrived = held.notified();
            tokio::pin!(held_arrived);
            held_arrived.as_mut().enable();
            let taken = self.take(max);
            if let Some(&(last, _)) = taken.last() {
                let next = last as u64 + 1;
                let (offsets, records): (Vec<i64>, Vec<Record>) = taken.into_iter().unzip();
                if let Some(chain) = &self.chain {
                    self.running = Some((next, spawn_chain(chain.clone(), records)));
                    continue;
                }
                self.position = next;
                return Ok(Batch {
                    records,
                    next,
                    positions: offsets.iter().map(|o| *o as u64 + 1).collect(),
                    end: self.scan_end,
                });
            }
            let arrived = async {
                match &own {
                    Some(own) => tokio::select! {
                        _ = own.notified() => {}
                        _ = held_arrived => {}
                    },
                    None => held_arrived.await,
                }
            };
            if self.scan_end.is_some_and(|end| self.position >= end)
                || tokio::time::timeout_at(deadline, arrived).await.is_err()
            {
                return Ok(Batch {
                    next: self.position,
                    end: self.scan_end,
                    ..Batch::default()
                });
            }
        }
    }

    async fn commit(&mut self, next: u64) -> Result<(), BrokerError> {
        if !self.group.committing {
            return Ok(());
        }
        let next = next as i64;
        let allowed = self.group.shared.with_slot(self.partition, |slot| {
            slot.ownership != Ownership::NotOwned
                && slot.floor.is_some_and(|floor| next > floor)
                && slot.handed.is_some_and(|handed| next <= handed)
                && slot.committed.is_none_or(|c| next > c)
        });
        if !allowed {
            return Ok(());
        }
        let group = self.group.clone();
        let partition = self.partition;
        let result = tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&group.shared.topic, partition, Offset::Offset(next))?;
            group.consumer.commit(&list, CommitMode::Sync)
        })
        .await
        .map_err(|e| BrokerError::Task(format!("commit task failed: {e}")))?;
        match result {
            Ok(()) => {
                self.group.shared.with_slot(self.partition, |slot| {
                    slot.committed = Some(next);
                });
                self.group.shared.committed.notify_all();
                Ok(())
            }
            // The group moved on: the partition's next owner reads from the
            // last position committed, and the store takes a repeat as one.
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId,
            )) => {
                tracing::info!(
                    topic = %self.group.shared.topic,
                    partition,
                    "commit refused by a rebalance; the partition's next owner repeats from the last commit"
                );
                Ok(())
            }
            // A later commit covers this one.
            Err(e) => {
                tracing::warn!(topic = %self.group.shared.topic, partition, "commit failed: {e}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_partition_drains_within_the_rebalance_timeout() {
        let mut config = ClientConfig::new();
        assert_eq!(drain_timeout(&config), DRAIN_TIMEOUT);
        config.set("max.poll.interval.ms", "9000");
        assert_eq!(drain_timeout(&config), Duration::from_secs(6));
    }

    #[test]
    fn a_close_waits_for_the_first_join_up_to_the_session_timeout() {
        let mut config = ClientConfig::new();
        assert_eq!(join_settle_timeout(&config), Duration::from_secs(45));
        config.set("session.timeout.ms", "6000");
        assert_eq!(join_settle_timeout(&config), Duration::from_secs(6));

        let settle = Arc::new(JoinSettle::default());
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!settle.wait_until(soon), "nobody joined");
        assert!(!settle.is_set());
        let joiner = {
            let settle = settle.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                settle.set();
            })
        };
        let far = Instant::now() + Duration::from_secs(600);
        assert!(settle.wait_until(far), "woken by the join");
        joiner.join().unwrap();
        assert!(settle.is_set(), "stays joined");
    }

    #[test]
    fn a_slot_is_drained_once_what_it_handed_out_is_committed() {
        let mut slot = SlotState::new(Ownership::Owned);
        assert!(slot.drained(), "nothing handed out");
        slot.handed = Some(10);
        assert!(!slot.drained());
        slot.committed = Some(9);
        assert!(!slot.drained());
        slot.committed = Some(10);
        assert!(slot.drained());
    }
}
