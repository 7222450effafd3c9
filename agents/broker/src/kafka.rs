//! The Kafka transport: the broker trait on any Kafka-protocol cluster
//! (Apache Kafka, Redpanda, Tansu, ...) through librdkafka (the `rdkafka`
//! crate, with its bundled librdkafka: the most widely used Kafka client,
//! kept in step with Kafka's protocol, built here from the crate alone).
//!
//! - Topics are created when missing, with the configured partitions and
//!   replication.
//! - Produces are idempotent and acknowledged by every in-sync replica
//!   (`enable.idempotence`, `acks=all`): durable when they return.
//! - Agents consume in consumer groups ([`group`]): several agents share
//!   the partitions without being told which, and a partition revoked in a
//!   rebalance ends its work in flight before it moves.
//! - A Kafka broker runs no code: the SmartModule chains run in the agents,
//!   the same `.wasm` through fluvio-smartengine as the embedded broker
//!   (producer chains before the send, consumer chains on the way out). On
//!   Redpanda, `answer-score` can also run in the broker as a Data
//!   Transform (`answerloop smartmodules export`).

pub mod group;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fluvio_smartengine::SmartEngine;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::wasm_chain::{self, run_chain, ChainCache};
use super::{
    Broker, BrokerError, ChainSpec, Consumer, ConsumerConfig, DeployReport, Record, Registered,
    Registration, TopicLayout,
};
use group::{Group, Slot};
use settings::KafkaSettings;

/// How long connecting waits for the cluster's metadata before it says the
/// bootstrap address is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a metadata or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a produce keeps trying while the cluster recovers.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the cluster is and how topics are laid out.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub settings: KafkaSettings,
    /// Partitions of each topic created here.
    pub partitions: u32,
    /// Replicas of each partition of a topic created here.
    pub replication: u32,
    /// Put before every topic name and consumer group id.
    pub topic_prefix: String,
}

type GroupKey = (String, String);

pub struct KafkaBroker {
    options: KafkaOptions,
    config: ClientConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Reads metadata and log ends (its calls block: run off the executor).
    metadata: Arc<BaseConsumer>,
    chains: ChainCache,
    /// The group member of each (topic, consumer id) in this process, while
    /// an agent reads through it.
    groups: Mutex<HashMap<GroupKey, Weak<Group>>>,
}

fn kafka_error(context: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Kafka(format!("{context}: {e}"))
}

impl KafkaBroker {
    /// Connect, and make sure the cluster answers within a few seconds.
    pub async fn connect(options: KafkaOptions) -> Result<Self, BrokerError> {
        let config = options.settings.client_config();
        let mut producer_config = options.settings.non_consumer_config();
        producer_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "delivery.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        let producer: FutureProducer = producer_config
            .create()
            .map_err(|e| kafka_error("cannot create a producer", e))?;
        let admin: AdminClient<DefaultClientContext> = options
            .settings
            .non_consumer_config()
            .create()
            .map_err(|e| kafka_error("cannot create an admin client", e))?;
        let metadata: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("cannot create a metadata client", e))?;
        let broker = Self {
            options,
            config,
            producer,
            admin,
            metadata: Arc::new(metadata),
            chains: ChainCache::new(SmartEngine::new()),
            groups: Mutex::new(HashMap::new()),
        };
        broker.reachable().await?;
        Ok(broker)
    }

    /// The cluster's metadata within [`CONNECT_TIMEOUT`], or an error naming
    /// the bootstrap address.
    async fn reachable(&self) -> Result<(), BrokerError> {
        let started = Instant::now();
        let result = self.blocking(|metadata| {
            metadata
                .fetch_metadata(None, CONNECT_TIMEOUT)
                .map(|m| m.brokers().len())
        });
        match result.await? {
            Ok(brokers) if brokers > 0 => Ok(()),
            Ok(_) => Err(self.unreachable("the cluster listed no brokers".into())),
            Err(e) => {
                Err(self.unreachable(format!("no answer in {:.0?} ({e})", started.elapsed())))
            }
        }
    }

    fn unreachable(&self, reason: String) -> BrokerError {
        BrokerError::Unreachable {
            target: format!("Kafka bootstrap {}", self.options.settings.bootstrap),
            reason,
        }
    }

    /// Run `f` with the metadata client on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BaseConsumer) -> T + Send + 'static,
    ) -> Result<T, BrokerError> {
        let metadata = self.metadata.clone();
        tokio::task::spawn_blocking(move || f(&metadata))
            .await
            .map_err(|e| BrokerError::Task(format!("Kafka request failed: {e}")))
    }

    pub fn topic_name(&self, topic: &str) -> String {
        format!("{}{topic}", self.options.topic_prefix)
    }

    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }

    /// Partitions of `name` (the full name), `None` when it does not exist.
    async fn partition_count(&self, name: String) -> Result<Option<u32>, BrokerError> {
        let metadata = self
            .blocking(move |metadata| {
                metadata
                    .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
                    .map(|m| {
                        m.topics()
                            .first()
                            .filter(|t| t.error().is_none())
                            .map(|t| t.partitions().len() as u32)
                            .filter(|n| *n > 0)
                    })
            })
            .await?;
        metadata.map_err(|e| kafka_error("cannot read the cluster's metadata", e))
    }

    /// The end of `partition` of `name`.
    async fn log_end(&self, name: String, partition: i32) -> Result<u64, BrokerError> {
        let ends = self
            .blocking(move |metadata| metadata.fetch_watermarks(&name, partition, REQUEST_TIMEOUT))
            .await?;
        let (_, high) = ends.map_err(|e| kafka_error("cannot read a log's end", e))?;
        Ok(high.max(0) as u64)
    }

    /// The group member for (`name`, `id`) that has not yet given out
    /// `partition`: this process's member, or a new one.
    fn member(
        &self,
        name: &str,
        id: &str,
        partition: i32,
        partitions: u32,
    ) -> Result<Arc<Group>, BrokerError> {
        let key = (name.to_string(), id.to_string());
        let mut groups = self.groups.lock().expect("group map poisoned");
        if let Some(group) = groups.get(&key).and_then(Weak::upgrade) {
            if group.claim(partition) {
                return Ok(group);
            }
        }
        let group = Group::join(&self.config, name, id, partitions)?;
        group.claim(partition);
        groups.insert(key, Arc::downgrade(&group));
        Ok(group)
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    async fn create_topics(&self, topics: &[&str]) -> Result<(), BrokerError> {
        let names: Vec<String> = topics.iter().map(|t| self.topic_name(t)).collect();
        let mut missing = Vec::new();
        for name in &names {
            if self.partition_count(name.clone()).await?.is_none() {
                missing.push(name.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let replication = self.options.replication as i32;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    self.options.partitions as i32,
                    TopicReplication::Fixed(replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| kafka_error("cannot create topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(kafka_error(&format!("cannot create topic {name}"), code))
                }
            }
        }
        // Wait until the cluster's metadata shows them.
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        for name in missing {
            while self.partition_count(name.clone()).await?.is_none() {
                if Instant::now() > deadline {
                    return Err(BrokerError::Kafka(format!(
                        "topic {name} was created but its partitions did not appear in {REQUEST_TIMEOUT:?}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BrokerError> {
        self.partition_count(self.topic_name(topic))
            .await?
            .ok_or_else(|| BrokerError::UnknownTopic(self.topic_name(topic)))
    }

    async fn deploy(&self, topics: &[&str]) -> Result<DeployReport, BrokerError> {
        let started = Instant::now();
        self.create_topics(topics).await?;
        let mut layout = Vec::new();
        for topic in topics {
            layout.push(TopicLayout {
                name: self.topic_name(topic),
                partitions: self.partitions(topic).await?,
            });
        }
        Ok(DeployReport {
            broker: "kafka".into(),
            topics: layout,
            smartmodules: answerloop_wasm::ALL
                .iter()
                .map(|m| Registered::of(m, Registration::InAgents))
                .collect(),
            ready_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError> {
        let records = match chain {
            Some(spec) => run_chain(self.chains.get(spec)?, records).await?,
            None => records,
        };
        let name = self.topic_name(topic);
        let deliveries: Vec<_> = records
            .iter()
            .map(|record| {
                let mut message = FutureRecord::to(&name).payload(&record.value);
                if let Some(key) = &record.key {
                    message = message.key(key);
                }
                self.producer.send(message, DELIVERY_TIMEOUT)
            })
            .collect();
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| kafka_error(&format!("cannot produce to {name}"), e))?;
        }
        Ok(())
    }

    async fn consumer(
        &self,
        topic: &str,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let name = self.topic_name(topic);
        let partitions = self.partitions(topic).await?;
        if config.partition >= partitions {
            return Err(BrokerError::NoPartition {
                topic: name,
                partition: config.partition,
            });
        }
        let partition = config.partition as i32;
        let chain = match &config.chain {
            Some(spec) => Some(wasm_chain::shared(self.chains.engine(), spec)?),
            None => None,
        };
        let slot = match &config.id {
            Some(id) => {
                let group_id = format!("{}{id}", self.options.topic_prefix);
                Slot::new(
                    self.member(&name, &group_id, partition, partitions)?,
                    partition,
                    chain,
                )
            }
            None => {
                let end = self.log_end(name.clone(), partition).await?;
                Slot::new(
                    Group::scan(&self.config, &name, partition)?,
                    partition,
                    chain,
                )
                .ending_at(end)
            }
        };
        Ok(Box::new(slot))
    }
}
