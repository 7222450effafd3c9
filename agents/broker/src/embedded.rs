//! The embedded broker: Fluvio's topic and offset semantics on one machine,
//! with nothing installed.
//!
//! Each topic is a sled tree keyed by big-endian offset; consumer offsets sit
//! in their own tree under `topic/consumer-id`. Every produce and every commit
//! is flushed before it returns, so a killed process loses nothing that was
//! acknowledged. SmartModule chains run through fluvio-smartengine, the engine
//! of Fluvio's SPU, with the `.wasm` files the binary carries: produce chains
//! before the append (the pipeline uses none), consume chains on the way out.
//!
//! sled allows one process per database: agents in other processes reach the
//! embedded broker through the process that owns it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fluvio_smartengine::SmartEngine;
use tokio::sync::Notify;

use answerloop_schema::clock::now_ms;

use super::wasm_chain::{
    self, chain_output, run_chain, spawn_chain, ChainCache, ChainTask, SharedChain,
};
use super::{
    Batch, Broker, BrokerError, ChainSpec, Consumer, ConsumerConfig, DeployReport, Record,
    Registered, Registration, TopicLayout,
};

const TOPIC_PREFIX: &str = "topic/";
const OFFSETS: &str = "consumer-offsets";
/// sled's page cache (its default is 1 GiB). Consumers read near the log's
/// end, which this holds many times over (about 6,000 answer records).
/// 32 MB before: side by side over 20,000 questions, the page cache
/// dropped before each run, the broker server peaked at 117-122 MB with 16
/// against 125-131 MB with 32, at the same rate within the machine's noise
/// (docs/benchmarks.md).
const CACHE_BYTES: u64 = 16 << 20;

pub struct EmbeddedBroker {
    db: sled::Db,
    offsets: sled::Tree,
    topics: Mutex<HashMap<String, Arc<TopicLog>>>,
    /// Produce chains, built once and shared by every producer of a topic;
    /// its engine also builds each consumer's own chain.
    chains: ChainCache,
}

struct TopicLog {
    tree: sled::Tree,
    /// The offset the next record gets; held while a batch is appended so
    /// offsets are dense and in order.
    next: Mutex<u64>,
    /// Woken after every append, so idle consumers need not poll.
    appended: Notify,
}

impl TopicLog {
    /// The offset the next record gets.
    fn end(&self) -> u64 {
        *self.next.lock().expect("offset lock poisoned")
    }
}

impl EmbeddedBroker {
    /// Open (or create) the broker's database in the directory `path`.
    pub fn open(path: &Path) -> Result<Self, BrokerError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| BrokerError::Open {
                path: path.display().to_string(),
                // sled says so with an I/O error from its file lock.
                reason: if matches!(&e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
                {
                    "it is in use by another answerloop process".to_string()
                } else {
                    e.to_string()
                },
            })?;
        let offsets = db.open_tree(OFFSETS)?;
        let broker = Self {
            db,
            offsets,
            topics: Mutex::new(HashMap::new()),
            chains: ChainCache::new(SmartEngine::new()),
        };
        for name in broker.db.tree_names() {
            if let Some(topic) = name.strip_prefix(TOPIC_PREFIX.as_bytes()) {
                let topic = String::from_utf8_lossy(topic).into_owned();
                broker.load_topic(&topic)?;
            }
        }
        Ok(broker)
    }

    fn load_topic(&self, topic: &str) -> Result<Arc<TopicLog>, BrokerError> {
        let mut topics = self.topics.lock().expect("topic map poisoned");
        if let Some(log) = topics.get(topic) {
            return Ok(log.clone());
        }
        let tree = self.db.open_tree(format!("{TOPIC_PREFIX}{topic}"))?;
        let next = match tree.last()? {
            Some((key, _)) => decode_offset(&key) + 1,
            None => 0,
        };
        let log = Arc::new(TopicLog {
            tree,
            next: Mutex::new(next),
            appended: Notify::new(),
        });
        topics.insert(topic.to_string(), log.clone());
        Ok(log)
    }

    fn topic(&self, topic: &str) -> Result<Arc<TopicLog>, BrokerError> {
        self.topics
            .lock()
            .expect("topic map poisoned")
            .get(topic)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))
    }

    /// The number of records in `topic` (its next offset).
    pub fn topic_len(&self, topic: &str) -> Result<u64, BrokerError> {
        Ok(self.topic(topic)?.end())
    }

    /// The committed position of consumer `id` on `topic`, if any.
    pub fn committed(&self, topic: &str, id: &str) -> Result<Option<u64>, BrokerError> {
        Ok(self
            .offsets
            .get(offset_key(topic, id))?
            .map(|v| decode_offset(&v)))
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn create_topics(&self, topics: &[&str]) -> Result<(), BrokerError> {
        for topic in topics {
            self.load_topic(topic)?;
        }
        self.db.flush_async().await?;
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BrokerError> {
        self.topic(topic)?;
        Ok(1)
    }

    async fn deploy(&self, topics: &[&str]) -> Result<DeployReport, BrokerError> {
        self.create_topics(topics).await?;
        Ok(DeployReport {
            broker: "embedded".into(),
            topics: topics
                .iter()
                .map(|t| TopicLayout {
                    name: t.to_string(),
                    partitions: 1,
                })
                .collect(),
            smartmodules: answerloop_wasm::ALL
                .iter()
                .map(|m| Registered::of(m, Registration::Builtin))
                .collect(),
            ready_ms: 0,
        })
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError> {
        let log = self.topic(topic)?;
        let records = match chain {
            Some(spec) => run_chain(self.chains.get(spec)?, records).await?,
            None => records,
        };
        if records.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        {
            let mut next = log.next.lock().expect("offset lock poisoned");
            let mut batch = sled::Batch::default();
            let mut offset = *next;
            for record in &records {
                batch.insert(&offset.to_be_bytes(), encode_record(now, record));
                offset += 1;
            }
            log.tree.apply_batch(batch)?;
            *next = offset;
        }
        self.db.flush_async().await?;
        log.appended.notify_waiters();
        Ok(())
    }

    async fn consumer(
        &self,
        topic: &str,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let log = self.topic(topic)?;
        if config.partition != 0 {
            return Err(BrokerError::NoPartition {
                topic: topic.to_string(),
                partition: config.partition,
            });
        }
        let offset_key = config.id.as_deref().map(|id| offset_key(topic, id));
        let position = match &offset_key {
            Some(key) => self
                .offsets
                .get(key)?
                .map(|v| decode_offset(&v))
                .unwrap_or(0),
            None => 0,
        };
        let chain = match &config.chain {
            Some(spec) => Some(wasm_chain::shared(self.chains.engine(), spec)?),
            None => None,
        };
        Ok(Box::new(EmbeddedConsumer {
            topic: topic.to_string(),
            log,
            db: self.db.clone(),
            offsets: self.offsets.clone(),
            offset_key,
            position,
            chain,
            running: None,
        }))
    }
}

struct EmbeddedConsumer {
    topic: String,
    log: Arc<TopicLog>,
    db: sled::Db,
    offsets: sled::Tree,
    offset_key: Option<Vec<u8>>,
    /// The next offset to read; moves ahead of the committed offset.
    position: u64,
    chain: Option<SharedChain>,
    /// A batch going through the chain: the offset of its last record and
    /// the task running it. Kept across a cancelled read, so the next read
    /// takes its output instead of running the chain over it again.
    running: Option<(u64, ChainTask)>,
}

impl EmbeddedConsumer {
    fn read(&self, max: usize) -> Result<Vec<(u64, Record)>, BrokerError> {
        let mut out = Vec::new();
        for entry in self.log.tree.range(self.position.to_be_bytes()..).take(max) {
            let (key, value) = entry?;
            let offset = decode_offset(&key);
            let record = decode_record(&value).ok_or_else(|| BrokerError::Corrupt {
                topic: self.topic.clone(),
                offset,
                reason: "record envelope is truncated".into(),
            })?;
            out.push((offset, record));
        }
        Ok(out)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((last, task)) = self.running.as_mut() {
                let output = chain_output(task).await;
                let last = *last;
                self.running = None;
                self.position = last + 1;
                return Ok(Batch {
                    records: output?,
                    next: self.position,
                    positions: Vec::new(),
                    end: Some(self.log.end()),
                });
            }
            let notified = self.log.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let raw = self.read(max.max(1))?;
            if let Some(&(last, _)) = raw.last() {
                let (offsets, records): (Vec<u64>, Vec<Record>) = raw.into_iter().unzip();
                if let Some(chain) = &self.chain {
                    self.running = Some((last, spawn_chain(chain.clone(), records)));
                    continue;
                }
                let positions = offsets.iter().map(|o| o + 1).collect();
                // No await since the read: a dropped future moves nothing.
                self.position = last + 1;
                return Ok(Batch {
                    records,
                    next: self.position,
                    positions,
                    end: Some(self.log.end()),
                });
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Batch {
                    next: self.position,
                    end: Some(self.log.end()),
                    ..Batch::default()
                });
            }
        }
    }

    async fn commit(&mut self, next: u64) -> Result<(), BrokerError> {
        if let Some(key) = &self.offset_key {
            self.offsets.insert(key.as_slice(), &next.to_be_bytes())?;
            self.db.flush_async().await?;
        }
        Ok(())
    }
}

fn offset_key(topic: &str, id: &str) -> Vec<u8> {
    format!("{topic}/{id}").into_bytes()
}

fn decode_offset(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

/// `[timestamp ms: u64 LE][key length: u32 LE, u32::MAX for none][key][value]`
fn encode_record(timestamp_ms: u64, record: &Record) -> Vec<u8> {
    let key = record.key.as_deref();
    let mut out = Vec::with_capacity(12 + key.map_or(0, <[u8]>::len) + record.value.len());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    match key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    out.extend_from_slice(&record.value);
    out
}

fn decode_record(bytes: &[u8]) -> Option<Record> {
    let key_len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    let (key, rest) = if key_len == u32::MAX {
        (None, bytes.get(12..)?)
    } else {
        let end = 12usize.checked_add(key_len as usize)?;
        (Some(bytes.get(12..end)?.to_vec()), bytes.get(end..)?)
    };
    Some(Record {
        key,
        value: rest.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_envelope_round_trips() {
        for record in [
            Record {
                key: None,
                value: b"v".to_vec(),
            },
            Record::keyed("k", "value"),
            Record::keyed("", ""),
        ] {
            assert_eq!(decode_record(&encode_record(7, &record)), Some(record));
        }
        assert_eq!(decode_record(b"short"), None);
        let mut bad = encode_record(1, &Record::keyed("key", "v"));
        bad[8] = 200;
        assert_eq!(decode_record(&bad), None, "a key longer than the record");
    }
}
