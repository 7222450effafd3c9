//! The broker seam: topics, produce with an optional SmartModule chain,
//! consume from a committed offset with an optional chain, commit.
//!
//! Agents see only [`Broker`] and [`Consumer`], never a transport, so the
//! embedded broker and a Fluvio cluster run the same agents. This crate is
//! the seam and every transport behind it; it knows records only as bytes
//! (the SmartModules read them), and nothing of LLMs, the answer store or
//! the command line but the `--broker` flags. The Fluvio and Kafka
//! transports, whose clients are the heaviest dependencies of the build,
//! are behind the `fluvio` and `kafka` cargo features (on by default).
//!
//! - [`embedded`]: durable topics in a local sled database, chains run by
//!   fluvio-smartengine in-process.
//! - [`fluvio`]: a Fluvio cluster through the `fluvio` client; the SPU runs
//!   the chains.
//! - [`kafka`]: a Kafka-protocol cluster through librdkafka, the agents
//!   sharing partitions in consumer groups; the agents run the chains.
//! - [`server`], [`remote`] and [`wire`]: the embedded broker served to
//!   agents in other processes (`answerloop broker serve`, `--broker remote`).
//! - [`select`]: `--broker embedded|remote|fluvio` and its connection options.
//! - [`wasm_chain`]: a chain as the embedded broker runs it, rebuilt
//!   before fluvio-smartengine's output leak grows it.
//! - [`chain`]: which SmartModules a chain runs, with which params.
//! - [`commit`]: commit positions for records finished out of order.
//! - [`member`]: `--member K/M`, agents splitting a topic's records by key.
//! - [`metered`]: counts what any transport moves, for the metrics.
//! - [`producer`]: batches single records into one durable produce.

pub mod chain;
pub mod commit;
pub mod embedded;
#[cfg(feature = "fluvio")]
pub mod fluvio;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod member;
pub mod metered;
pub mod producer;
pub mod remote;
pub mod select;
pub mod server;
pub mod wasm_chain;
pub mod wire;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use chain::ChainSpec;
pub use member::Member;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker storage error: {0}")]
    Storage(#[from] sled::Error),
    #[error("cannot open the embedded broker at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    NoPartition { topic: String, partition: u32 },
    #[error("SmartModule chain [{chain}] failed: {reason}")]
    Chain { chain: String, reason: String },
    #[error("corrupt record at {topic}@{offset}: {reason}")]
    Corrupt {
        topic: String,
        offset: u64,
        reason: String,
    },
    #[error("broker task failed: {0}")]
    Task(String),
    #[error("cannot reach {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("Fluvio: {0}")]
    Fluvio(String),
    #[error("Kafka: {0}")]
    Kafka(String),
    /// Broker flags that do not go together.
    #[error("{0}")]
    Usage(String),
    /// An error the broker server reported for a request.
    #[error("broker server: {0}")]
    Served(String),
}

/// What `deploy` did to a SmartModule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Created,
    Replaced,
    Unchanged,
    /// Carried by the binary (the embedded broker): nothing to register.
    Builtin,
    /// Run by the agents, client-side: the broker runs no code (Kafka).
    #[serde(rename = "in-agents")]
    InAgents,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub name: String,
    pub sha256: String,
    pub bytes: usize,
    pub registration: Registration,
}

impl Registered {
    /// What `registration` did to `module`, with its hash and size.
    pub fn of(module: &answerloop_wasm::SmartModule, registration: Registration) -> Self {
        Self {
            name: module.name.to_string(),
            sha256: module.sha256_hex(),
            bytes: module.wasm.len(),
            registration,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicLayout {
    pub name: String,
    pub partitions: u32,
}

/// What `deploy` found and made: the topics, the SmartModules, and how long
/// the cluster took to run them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployReport {
    pub broker: String,
    pub topics: Vec<TopicLayout>,
    pub smartmodules: Vec<Registered>,
    pub ready_ms: u64,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.into()),
            value: value.into(),
        }
    }
}

/// A batch a consumer read. `records` are what came out of the consume chain
/// (possibly none); `next` is the position after the last record read, the
/// one to commit once every record of this batch and of earlier ones is done.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub next: u64,
    /// The position after each record, when the transport knows it (empty
    /// otherwise: a chain that filters hides where its outputs came from).
    /// Lets a consumer commit record by record instead of batch by batch.
    pub positions: Vec<u64>,
    /// The end of the log when the batch was read, when the transport knows
    /// it: `end - next` is the consumer's lag.
    pub end: Option<u64>,
}

/// Where a consumer starts when it has no committed offset of its own.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Stable id under which offsets are committed; `None` reads from the
    /// beginning and commits nothing (a scan).
    pub id: Option<String>,
    pub chain: Option<ChainSpec>,
    /// The partition read (the embedded broker has only partition 0).
    pub partition: u32,
}

impl ConsumerConfig {
    /// A consumer whose offsets are committed under `id`.
    pub fn committed(id: &str, chain: Option<ChainSpec>) -> Self {
        Self {
            id: Some(id.to_string()),
            chain,
            partition: 0,
        }
    }

    /// The same consumer on another partition. Offsets are kept per
    /// partition under the one id.
    pub fn on_partition(mut self, partition: u32) -> Self {
        self.partition = partition;
        self
    }

    /// A consumer that reads everything from the beginning and commits nothing.
    pub fn scan() -> Self {
        Self {
            id: None,
            chain: None,
            partition: 0,
        }
    }

    /// A scan whose records pass through `chain` on the way out.
    pub fn scan_through(chain: Option<ChainSpec>) -> Self {
        Self {
            chain,
            ..Self::scan()
        }
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Create the topics that do not exist yet.
    async fn create_topics(&self, topics: &[&str]) -> Result<(), BrokerError>;

    /// How many partitions `topic` has.
    async fn partitions(&self, topic: &str) -> Result<u32, BrokerError>;

    /// Make the broker ready for the pipeline: `topics` exist and the
    /// SmartModules can run. Idempotent.
    async fn deploy(&self, topics: &[&str]) -> Result<DeployReport, BrokerError>;

    /// Append `records` to `topic`, through `chain` first when given. Durable
    /// when it returns.
    async fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError>;

    /// A consumer of `topic` starting at its committed offset (or the
    /// beginning: a new consumer never skips the backlog).
    async fn consumer(
        &self,
        topic: &str,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, BrokerError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// The next records after the current position, waiting up to `wait` for
    /// some to arrive; an empty batch when none did. Cancel-safe: dropping the
    /// future loses no records.
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError>;

    /// Record that everything before `next` is done: a restarted consumer
    /// with the same id starts there. Durable when it returns.
    async fn commit(&mut self, next: u64) -> Result<(), BrokerError>;
}

/// A committed consumer for each partition of `topic`, reading through
/// `chain` and yielding only `member`'s records, under `member`'s id for
/// `id`.
pub async fn consumers(
    broker: &dyn Broker,
    topic: &str,
    id: &str,
    chain: Option<&ChainSpec>,
    member: Member,
) -> Result<Vec<Box<dyn Consumer>>, BrokerError> {
    let id = member.consumer_id(id);
    let mut consumers = Vec::new();
    for partition in 0..broker.partitions(topic).await? {
        let config = ConsumerConfig::committed(&id, chain.cloned()).on_partition(partition);
        consumers.push(member.filter(broker.consumer(topic, config).await?));
    }
    Ok(consumers)
}

/// How long a scan through a chain waits for more records before it takes
/// the log to have ended: a chain that filters hides where the log ends.
pub const CHAIN_SCAN_WAIT: Duration = Duration::from_secs(1);

/// How many records `topic` holds, across its partitions, as the transport
/// reports the end of each log (0 for a partition whose transport does not
/// say). Reads no record.
pub async fn records_in(broker: &dyn Broker, topic: &str) -> Result<u64, BrokerError> {
    let mut total = 0;
    for partition in 0..broker.partitions(topic).await? {
        let config = ConsumerConfig::scan().on_partition(partition);
        let mut consumer = broker.consumer(topic, config).await?;
        total += consumer
            .next_batch(1, Duration::ZERO)
            .await?
            .end
            .unwrap_or(0);
    }
    Ok(total)
}

/// Hand every record of every partition of `topic` (through `chain`) to
/// `each`, committing nothing. Returns, for each partition, the position
/// after the last record read (0 when none was).
pub async fn scan(
    broker: &dyn Broker,
    topic: &str,
    chain: Option<&ChainSpec>,
    mut each: impl FnMut(Record),
) -> Result<Vec<u64>, BrokerError> {
    let wait = if chain.is_some() {
        CHAIN_SCAN_WAIT
    } else {
        Duration::ZERO
    };
    let mut ends = Vec::new();
    for partition in 0..broker.partitions(topic).await? {
        let config = ConsumerConfig::scan_through(chain.cloned()).on_partition(partition);
        let mut consumer = broker.consumer(topic, config).await?;
        let (mut end, mut position) = (0, 0);
        loop {
            let batch = consumer.next_batch(1024, wait).await?;
            // Where the transport says where the log ended when the scan
            // opened, the scan stops there at once (a chain that filters
            // may leave a read empty before it); elsewhere, when a read
            // finds nothing more.
            let at_end = batch.end.is_some_and(|log_end| batch.next >= log_end);
            if batch.records.is_empty() {
                if at_end || batch.end.is_none() || batch.next <= position {
                    break;
                }
                position = batch.next;
                continue;
            }
            (end, position) = (batch.next, batch.next);
            batch.records.into_iter().for_each(&mut each);
            if at_end {
                break;
            }
        }
        ends.push(end);
    }
    Ok(ends)
}
