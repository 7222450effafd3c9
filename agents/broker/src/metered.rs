//! A broker that counts what the broker under it moves: records produced
//! by topic, records consumed and lag by topic, partition and consumer.
//! Every transport is wrapped in it, so the metrics mean the same on all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{
    Batch, Broker, BrokerError, ChainSpec, Consumer, ConsumerConfig, DeployReport, Record,
};
use answerloop_telemetry::metrics::{metrics, topic};

pub struct MeteredBroker {
    inner: Arc<dyn Broker>,
}

impl MeteredBroker {
    pub fn wrap(inner: Arc<dyn Broker>) -> Arc<dyn Broker> {
        Arc::new(Self { inner })
    }
}

#[async_trait]
impl Broker for MeteredBroker {
    async fn create_topics(&self, topics: &[&str]) -> Result<(), BrokerError> {
        self.inner.create_topics(topics).await
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BrokerError> {
        self.inner.partitions(topic).await
    }

    async fn deploy(&self, topics: &[&str]) -> Result<DeployReport, BrokerError> {
        self.inner.deploy(topics).await
    }

    async fn produce(
        &self,
        topic_name: &str,
        records: Vec<Record>,
        chain: Option<&ChainSpec>,
    ) -> Result<(), BrokerError> {
        let n = records.len() as u64;
        self.inner.produce(topic_name, records, chain).await?;
        metrics()
            .records_produced
            .get_or_create(&topic(topic_name))
            .inc_by(n);
        Ok(())
    }

    async fn consumer(
        &self,
        topic_name: &str,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        // Scans are tools' reads, not the pipeline's work: not counted.
        let Some(id) = config.id.clone() else {
            return self.inner.consumer(topic_name, config).await;
        };
        let partition = config.partition.to_string();
        let consumed = metrics()
            .records_consumed
            .get_or_create(&[
                ("topic", topic_name.to_string()),
                ("partition", partition.clone()),
            ])
            .clone();
        let lag = metrics()
            .consumer_lag
            .get_or_create(&[
                ("topic", topic_name.to_string()),
                ("partition", partition),
                ("consumer", id),
            ])
            .clone();
        Ok(Box::new(MeteredConsumer {
            inner: self.inner.consumer(topic_name, config).await?,
            consumed,
            lag,
        }))
    }
}

struct MeteredConsumer {
    inner: Box<dyn Consumer>,
    consumed: Counter,
    lag: Gauge,
}

#[async_trait]
impl Consumer for MeteredConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Batch, BrokerError> {
        let batch = self.inner.next_batch(max, wait).await?;
        self.consumed.inc_by(batch.records.len() as u64);
        if let Some(end) = batch.end {
            self.lag.set(end.saturating_sub(batch.next) as i64);
        }
        Ok(batch)
    }

    async fn commit(&mut self, next: u64) -> Result<(), BrokerError> {
        self.inner.commit(next).await
    }
}
