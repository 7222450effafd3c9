//! The Fluvio transport: the broker trait on a real Fluvio cluster through
//! the `fluvio` client crate.
//!
//! - Topics are created when missing, with the configured partitions and
//!   replication.
//! - SmartModules are registered in the cluster by name ([`smartmodules`]);
//!   chains name them, so the SPU runs them. The pipeline runs them all on
//!   consumer streams, whose chain the SPU builds once; a producer chain,
//!   which the trait still allows, is built by the SPU for every request.
//! - An SPU going away (restarted, a leader moving) is waited out: produces
//!   are retried, streams reopened, failed commits made good by the next.
//! - Consumer offsets are stored in the cluster under the agent's stable
//!   consumer id (`OffsetManagementStrategy::Manual`) and written only when
//!   the agent commits, i.e. after the work is durable.
//!
//! The client commits "the last record this stream yielded", but an agent
//! commits a position behind records still in flight. So each committed
//! consumer keeps a second, plain stream under the same id (the committer)
//! that it advances to the record before the position and commits there.

pub mod cursor;
pub mod smartmodules;
pub mod spu;
mod tcp;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::fluvio::consumer::{ConsumerConfigExt, ConsumerStream, OffsetManagementStrategy};
use ::fluvio::dataplane::link::ErrorCode;
use ::fluvio::metadata::partition::PartitionSpec;
use ::fluvio::metadata::topic::TopicSpec;
use ::fluvio::{
    Fluvio, FluvioClusterConfig, Isolation, Offset, RecordKey, SmartModuleContextData,
    SmartModuleExtraParams, SmartModuleInvocation, SmartModuleInvocationWasm, SmartModuleKind,
    TopicProducerConfigBuilder, TopicProducerPool,
};
use async_trait::async_trait;
use fluvio_future::net::DomainConnector;
use futures::{FutureExt, StreamExt};
use tokio::sync::Mutex;

use super::{
    Batch, Broker, BrokerError, ChainSpec, Consumer, ConsumerConfig, DeployReport, Record,
    TopicLayout,
};
use cursor::{committer_step, CommitterStep, Cursor, Event, ReadPlan, Step, REOPEN_DELAY};
use tcp::LowLatency;

/// How long `deploy` waits for the SPUs to run the SmartModules before it
/// registers them afresh, and after that.
const FIRST_READY_TIMEOUT: Duration = Duration::from_secs(15);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The most a produce request carries (Fluvio's default request limit).
const PRODUCE_BATCH_BYTES: usize = 1 << 20;
/// How long a produce keeps trying while the cluster recovers (an SPU
/// restarting, a new leader being elected), and its first wait.
const PRODUCE_RETRY_BUDGET: Duration = Duration::from_secs(120);
const PRODUCE_RETRY_START: Duration = Duration::from_millis(250);
/// How long commits may keep failing before the consumer gives up.
const COMMIT_FAILURE_BUDGET: Duration = Duration::from_secs(120);
/// How long to wait for the cluster before saying it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the cluster is and how topics are laid out.
#[derive(Debug, Clone)]
pub struct FluvioOptions {
    /// The SC's public address (`HOST:PORT`); `None` uses the active profile.
    pub sc: Option<String>,
    /// Partitions of each topic created here.
    pub partitions: u32,
    /// Replicas of each partition of a topic created here.
    pub replication: u32,
    /// Put before every topic name, so that several pipelines (or test runs)
    /// share one cluster without sharing topics or consumer offsets.
    pub topic_prefix: String,
}

impl Default for FluvioOptions {
    fn default() -> Self {
        Self {
            sc: None,
            partitions: 1,
            replication: 1,
            topic_prefix: String::new(),
        }
    }
}

type StreamItem = Result<::fluvio::consumer::Record, ErrorCode>;
type Stream = Pin<Box<dyn ConsumerStream<Item = StreamItem> + Send>>;

/// A stream item as the cursor sees it.
fn event(item: Option<StreamItem>) -> Event {
    match item {
        Some(Ok(record)) => Event::Record {
            offset: record.offset(),
            record: Record {
                key: record.key().map(<[u8]>::to_vec),
                value: record.value().to_vec(),
            },
        },
        Some(Err(code)) => Event::Error {
            transient: is_transient(&code),
            code: code.to_string(),
        },
        None => Event::Closed,
    }
}

/// A producer serves one topic with one produce chain.
type ProducerKey = (String, Option<ChainSpec>);

pub struct FluvioBroker {
    client: Arc<Fluvio>,
    options: FluvioOptions,
    /// Producers by (topic, chain), created on first use.
    producers: Mutex<HashMap<ProducerKey, Arc<TopicProducerPool>>>,
}

fn fluvio_error(context: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Fluvio(format!("{context}: {e:#}"))
}

impl FluvioBroker {
    /// Connect to the cluster at `options.sc`, or through the active Fluvio
    /// profile (`~/.fluvio/config`) when none is given.
    pub async fn connect(options: FluvioOptions) -> Result<Self, BrokerError> {
        let (target, config) = match &options.sc {
            Some(sc) => (
                format!("the Fluvio SC at {sc}"),
                Ok(FluvioClusterConfig::new(sc.clone())),
            ),
            None => (
                "the Fluvio cluster of the active profile".to_string(),
                FluvioClusterConfig::load(),
            ),
        };
        let unreachable = |reason: String| BrokerError::Unreachable {
            target: target.clone(),
            reason,
        };
        let config = config.map_err(|e| unreachable(format!("{e:#}")))?;
        let connector = DomainConnector::try_from(config.tls.clone())
            .map_err(|e| unreachable(format!("{e:#}")))?;
        let connect = Fluvio::connect_with_connector(Box::new(LowLatency(connector)), &config);
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unreachable(format!("{e:#}"))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        Ok(Self {
            client: Arc::new(client),
            options,
            producers: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &Fluvio {
        &self.client
    }

    /// The cluster's name for the pipeline's `topic`.
    pub fn topic_name(&self, topic: &str) -> String {
        format!("{}{topic}", self.options.topic_prefix)
    }

    async fn producer(
        &self,
        topic: &str,
        chain: Option<&ChainSpec>,
    ) -> Result<Arc<TopicProducerPool>, BrokerError> {
        let key = (topic.to_string(), chain.cloned());
        let mut producers = self.producers.lock().await;
        if let Some(producer) = producers.get(&key) {
            return Ok(producer.clone());
        }
        let mut config = TopicProducerConfigBuilder::default();
        // Acknowledged only once replicated: the agents commit behind it.
        config.isolation(Isolation::ReadCommitted);
        // One produce call, one request: `produce` flushes when it has sent
        // its records, so lingering adds no latency. It matters because the
        // SPU builds a producer chain afresh for every request (about 0.2 s
        // on the development machine); with the client's default zero
        // linger every record paid that on its own.
        config
            .linger(Duration::from_secs(1))
            .batch_size(PRODUCE_BATCH_BYTES)
            .max_request_size(PRODUCE_BATCH_BYTES);
        if let Some(chain) = chain {
            config.smartmodules(invocations(chain));
        }
        let config = config
            .build()
            .map_err(|e| fluvio_error("producer configuration", e))?;
        let producer = self
            .client
            .topic_producer_with_config(topic, config)
            .await
            .map_err(|e| fluvio_error(&format!("producer for {topic:?}"), e))?;
        let producer = Arc::new(producer);
        producers.insert(key, producer.clone());
        Ok(producer)
    }
}

/// A chain as the SPU takes it: registered SmartModules by name.
pub fn invocations(chain: &ChainSpec) -> Vec<SmartModuleInvocation> {
    chain
        .steps
        .iter()
        .map(|step| SmartModuleInvocation {
            wasm: SmartModuleInvocationWasm::Predefined(step.name.clone()),
            kind: SmartModuleKind::Generic(SmartModuleContextData::None),
            params: SmartModuleExtraParams::from(step.params.clone()),
            name: Some(step.name.clone()),
        })
        .collect()
}

#[async_trait]
impl Broker for FluvioBroker {
    async fn create_topics(&self, topics: &[&str]) -> Result<(), BrokerError> {
        let admin = self.client.admin().await;
        let existing: Vec<String> = admin
            .all::<TopicSpec>()
            .await
            .map_err(|e| fluvio_error("listing topics", e))?
            .into_iter()
            .map(|t| t.name)
            .collect();
        for topic in topics {
            let topic = &self.topic_name(topic);
            if existing.iter().any(|t| t == topic) {
                continue;
            }
            let spec =
                TopicSpec::new_computed(self.options.partitions, self.options.replication, None);
            if let Err(e) = admin.create(topic.to_string(), false, spec).await {
                // Another agent may have created it meanwhile.
                let now: Vec<String> = admin
                    .list::<TopicSpec, _>(vec![topic.to_string()])
                    .await
                    .map_err(|e| fluvio_error("listing topics", e))?
                    .into_iter()
                    .map(|t| t.name)
                    .collect();
                if now.is_empty() {
                    return Err(fluvio_error(&format!("creating topic {topic:?}"), e));
                }
            }
        }
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BrokerError> {
        let topic = &self.topic_name(topic);
        let admin = self.client.admin().await;
        let found = admin
            .list::<TopicSpec, _>(vec![topic.to_string()])
            .await
            .map_err(|e| fluvio_error("listing topics", e))?;
        found
            .into_iter()
            .find(|t| &t.name == topic)
            .map(|t| t.spec.partitions())
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))
    }

    async fn deploy(&self, topics: &[&str]) -> Result<DeployReport, BrokerError> {
        let mut all = topics.to_vec();
        all.push(smartmodules::PROBE_TOPIC);
        self.create_topics(&all).await?;
        let mut layout = Vec::with_capacity(topics.len());
        for topic in topics {
            layout.push(TopicLayout {
                name: self.topic_name(topic),
                partitions: self.partitions(topic).await?,
            });
        }
        let mut registered =
            smartmodules::register(&self.client, &answerloop_wasm::ALL, false).await?;
        let probe_topic = self.topic_name(smartmodules::PROBE_TOPIC);
        let probe_partitions = self.partitions(smartmodules::PROBE_TOPIC).await?;
        let wait = |timeout| {
            smartmodules::wait_until_usable(
                &self.client,
                &probe_topic,
                &answerloop_wasm::ALL,
                probe_partitions,
                timeout,
            )
        };
        let ready = match wait(FIRST_READY_TIMEOUT).await {
            Ok(ready) => ready,
            Err(e) => {
                // The SC has them but an SPU does not: register them afresh.
                tracing::warn!(error = %e, "the SPUs do not run the SmartModules; registering them again");
                registered =
                    smartmodules::register(&self.client, &answerloop_wasm::ALL, true).await?;
                wait(READY_TIMEOUT).await?
            }
        };
        Ok(DeployReport {
            broker: match &self.options.sc {
                Some(sc) => format!("fluvio at {sc}"),
                None => "fluvio (active profile)".to_string(),
            },
            topics: layout,
            smartmodules: registered,
            ready_ms: ready.as_millis() as u64,
        })
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError> {
        if records.is_empty() {
            return Ok(());
        }
        let topic = &self.topic_name(topic);
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            match self.produce_once(topic, records.clone(), chain).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // An SPU that went away, a partition changing leader:
                    // the cluster recovers, so wait for it within a budget.
                    // A retried batch may land twice; the agents absorb
                    // repeats (the store keeps one entry a question).
                    let wait = PRODUCE_RETRY_START * 2u32.pow(attempt.min(5));
                    if started.elapsed() + wait > PRODUCE_RETRY_BUDGET {
                        return Err(e);
                    }
                    tracing::warn!(topic = %topic, error = %e, wait_ms = wait.as_millis() as u64, "produce failed; trying again");
                    // The producer may be bound to a leader that is gone.
                    self.producers
                        .lock()
                        .await
                        .remove(&(topic.to_string(), chain.cloned()));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn consumer(
        &self,
        topic: &str,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let topic = self.topic_name(topic);
        let mut consumer = FluvioConsumer {
            client: self.client.clone(),
            cursor: Cursor::new(&topic, config),
            topic,
            stream: None,
            committer: None,
            failing_since: None,
        };
        match consumer.open(None).await {
            Ok(stream) => consumer.stream = Some(stream),
            // Opened again on the first read, within the reopen limit.
            Err(e) => {
                tracing::warn!(consumer = %consumer.cursor.name(), error = %e, "cannot open the stream yet")
            }
        }
        Ok(Box::new(consumer))
    }
}

impl FluvioBroker {
    /// One try at appending `records` to the cluster's `topic`.
    async fn produce_once(
        &self,
        topic: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError> {
        let producer = self.producer(topic, chain).await?;
        let context = format!("producing to {topic:?}");
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let key = match record.key {
                Some(key) => RecordKey::from(key),
                None => RecordKey::NULL,
            };
            pending.push(
                producer
                    .send(key, record.value)
                    .await
                    .map_err(|e| fluvio_error(&context, e))?,
            );
        }
        producer
            .flush()
            .await
            .map_err(|e| fluvio_error(&context, e))?;
        for output in pending {
            output.wait().await.map_err(|e| fluvio_error(&context, e))?;
        }
        Ok(())
    }
}

/// A consumer's I/O: its streams and the SC. What to do with what they
/// yield is the [`Cursor`]'s to decide.
struct FluvioConsumer {
    client: Arc<Fluvio>,
    topic: String,
    cursor: Cursor,
    stream: Option<Stream>,
    /// A plain stream under the same consumer id, advanced to the record
    /// before a commit position and committed there.
    committer: Option<(Stream, i64)>,
    /// Since when commits have been failing, if they are.
    failing_since: Option<tokio::time::Instant>,
}

impl FluvioConsumer {
    /// Ask the SC for the partition's high watermark when the cursor wants
    /// it. The SC's figure trails the SPU's by its status interval, so the
    /// lag it gives is approximate.
    async fn refresh_log_end(&mut self) {
        let now = tokio::time::Instant::now();
        if !self.cursor.log_end_due(now) {
            return;
        }
        let name = format!("{}-{}", self.topic, self.cursor.config().partition);
        let admin = self.client.admin().await;
        let end = match admin.list::<PartitionSpec, _>(vec![name.clone()]).await {
            Ok(found) => found
                .into_iter()
                .find(|p| p.name == name)
                .map(|p| p.status.leader.hw.max(0) as u64),
            Err(e) => {
                tracing::debug!(partition = %name, error = %e, "cannot read the log end");
                None
            }
        };
        self.cursor.set_log_end(end, now);
    }

    /// A stream from `start`, or from the committed offset (the beginning
    /// for a new consumer).
    fn open(
        &self,
        start: Option<u64>,
    ) -> impl std::future::Future<Output = Result<Stream, BrokerError>> + Send + 'static {
        open_stream(
            self.client.clone(),
            self.topic.clone(),
            self.cursor.config().clone(),
            start,
        )
    }

    /// Take one event from the stream to the cursor; `false` when a scan's
    /// stream ended. The client reconnects a continuous stream by itself;
    /// this reopens it after errors the cluster recovers from (a
    /// SmartModule the SPU has not loaded yet).
    async fn pull(&mut self) -> Result<bool, BrokerError> {
        let opened = match self.stream {
            Some(_) => None,
            None => match self.open(self.cursor.resume_from()).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    None
                }
                // An SPU that is down, a leader not elected yet: counted as
                // a refusal, tried again after a delay.
                Err(e) => Some(Event::Error {
                    code: format!("opening the stream: {e}"),
                    transient: true,
                }),
            },
        };
        let event = match opened {
            Some(failed) => failed,
            None => match self.cursor.take_stashed() {
                Some(event) => event,
                None => event(self.stream.as_mut().expect("opened above").next().await),
            },
        };
        match self.cursor.on_event(event) {
            Step::Continue => Ok(true),
            Step::Ended => Ok(false),
            Step::Fail(e) => Err(e),
            Step::Reopen { refusal } => {
                tracing::warn!(consumer = %self.cursor.name(), refusal, "opening the stream again");
                self.stream = None;
                tokio::time::sleep(REOPEN_DELAY).await;
                Ok(true)
            }
            Step::Resync { from, to } => {
                self.resync(from, to);
                Ok(true)
            }
        }
    }

    /// The stream skipped the records `from..to` (the client's loss, see
    /// [`cursor`]): drop it, so the next read opens it again at `from`.
    fn resync(&mut self, from: u64, to: u64) {
        tracing::warn!(
            consumer = %self.cursor.name(),
            from,
            to,
            "the client skipped records; reading them again"
        );
        self.stream = None;
    }

    /// Take whatever the stream has ready, without waiting.
    fn pull_ready(&mut self, max: usize) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        while self.cursor.wants_more(max) {
            let Some(item) = stream.next().now_or_never() else {
                break;
            };
            match event(item) {
                Event::Record { offset, record } => {
                    if let Step::Resync { from, to } = self.cursor.take_record(offset, record) {
                        self.resync(from, to);
                        return;
                    }
                }
                other => self.cursor.stash(other),
            }
        }
    }

    /// Commit so that a restart begins at offset `target + 1`.
    async fn commit_at(&mut self, target: i64) -> Result<(), BrokerError> {
        let name = self.cursor.name().to_string();
        let fail = |e: &dyn std::fmt::Display| fluvio_error(&format!("committing {name}"), e);
        if self.committer.is_none() {
            let config = committer_config(self.cursor.config());
            let stream = open_stream(self.client.clone(), self.topic.clone(), config, None).await?;
            self.committer = Some((stream, -1));
        }
        let (stream, seen) = self.committer.as_mut().expect("opened above");
        loop {
            match committer_step(*seen, target) {
                CommitterStep::AlreadyPast => return Ok(()),
                CommitterStep::Commit => break,
                CommitterStep::Advance => match stream.next().await {
                    Some(Ok(record)) if cursor::skipped(*seen, record.offset()) => {
                        // Never commit past what the client skipped: read
                        // on from the first record it lost.
                        let from = (*seen + 1) as u64;
                        *stream = open_stream(
                            self.client.clone(),
                            self.topic.clone(),
                            committer_config(self.cursor.config()),
                            Some(from),
                        )
                        .await?;
                    }
                    Some(Ok(record)) => *seen = record.offset(),
                    Some(Err(code)) => return Err(fail(&code)),
                    None => return Err(fail(&"the committer's stream ended")),
                },
            }
        }
        stream.offset_commit().await.map_err(|code| fail(&code))?;
        stream.offset_flush().await.map_err(|code| fail(&code))?;
        Ok(())
    }
}

/// The committer's stream: the consumer's id without its chain, so every
/// record shows.
fn committer_config(consumer: &ConsumerConfig) -> ConsumerConfig {
    ConsumerConfig {
        chain: None,
        ..consumer.clone()
    }
}

/// A stream of `topic` as `config` says, from `start` or from the committed
/// offset (the beginning for a new consumer).
async fn open_stream(
    client: Arc<Fluvio>,
    topic: String,
    config: ConsumerConfig,
    start: Option<u64>,
) -> Result<Stream, BrokerError> {
    let mut builder = ConsumerConfigExt::builder();
    builder
        .topic(topic.clone())
        .partition(config.partition)
        .offset_start(match start {
            Some(at) => {
                Offset::absolute(at as i64).map_err(|e| fluvio_error("consumer offset", e))?
            }
            None => Offset::beginning(),
        })
        .smartmodule(config.chain.as_ref().map(invocations).unwrap_or_default());
    if let Some(id) = &config.id {
        builder
            .offset_consumer(id.clone())
            .offset_strategy(OffsetManagementStrategy::Manual);
    }
    if config.id.is_none() && config.chain.is_none() {
        // A scan without a chain: the stream ends at the end of the log
        // (see `Cursor::ends_at_the_end`).
        builder.disable_continuous(true);
    }
    let ext = builder
        .build()
        .map_err(|e| fluvio_error("consumer configuration", e))?;
    let stream = client
        .consumer_with_config(ext)
        .await
        .map_err(|e| fluvio_error(&format!("consuming {topic:?}"), e))?;
    Ok(Box::pin(stream) as Stream)
}

/// Errors after which the same stream request succeeds a moment later.
fn is_transient(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SmartModuleNotFound { .. }
            | ErrorCode::SpuNotFound
            | ErrorCode::PartitionNotLeader
            | ErrorCode::NotLeaderForPartition
    )
}

#[async_trait]
impl Consumer for FluvioConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError> {
        let max = max.max(1);
        // Before anything moves, so a dropped call loses nothing.
        self.refresh_log_end().await;
        match self.cursor.read_plan() {
            ReadPlan::Ready => {}
            ReadPlan::UntilEnd => {
                // Until a record or the end: an empty batch ends a scan.
                while self.cursor.read_plan() == ReadPlan::UntilEnd {
                    self.pull().await?;
                }
            }
            ReadPlan::Wait => {
                if let Ok(pulled) = tokio::time::timeout(wait, self.pull()).await {
                    pulled?;
                }
            }
        }
        self.pull_ready(max);
        Ok(self.cursor.take_batch(max))
    }

    /// A commit that fails while the cluster recovers (its SPU restarting)
    /// is dropped with a warning and made good by the next one: the
    /// position only moves forward, and until then a restart would repeat
    /// work, never skip it. Failing for longer than the budget is an error.
    async fn commit(&mut self, next: u64) -> Result<(), BrokerError> {
        let Some(target) = self.cursor.commit_target(next) else {
            return Ok(());
        };
        match self.commit_at(target).await {
            Ok(()) => {
                self.failing_since = None;
                self.cursor.committed_at(next);
                Ok(())
            }
            Err(e) => {
                let now = tokio::time::Instant::now();
                let since = *self.failing_since.get_or_insert(now);
                if now.duration_since(since) > COMMIT_FAILURE_BUDGET {
                    return Err(e);
                }
                tracing::warn!(consumer = %self.cursor.name(), error = %e, "commit failed; the next one makes it good");
                // Its stream may be bound to a leader that is gone.
                self.committer = None;
                Ok(())
            }
        }
    }
}
