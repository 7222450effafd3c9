//! `--broker embedded|remote|fluvio`: which transport a command runs on,
//! and how it reaches a served embedded broker or a Fluvio cluster.

use std::path::Path;
use std::sync::Arc;

use super::embedded::EmbeddedBroker;
#[cfg(feature = "fluvio")]
use super::fluvio::{FluvioBroker, FluvioOptions};
use super::metered::MeteredBroker;
use super::remote::RemoteBroker;
use super::{Broker, BrokerError};

/// Where `answerloop broker serve` listens and `--broker remote` connects
/// unless told otherwise.
pub const DEFAULT_BROKER_ADDR: &str = "127.0.0.1:9250";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BrokerKind {
    /// Topics in a sled database in the home; nothing to install.
    #[default]
    Embedded,
    /// The embedded broker of another process (`answerloop broker serve`),
    /// at --broker-addr.
    Remote,
    /// A Fluvio cluster: the active profile, or --sc / FLUVIO_SC.
    Fluvio,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// The broker to run on.
    #[arg(
        long,
        value_enum,
        env = "ANSWERLOOP_BROKER",
        default_value = "embedded",
        global = true
    )]
    pub broker: BrokerKind,
    /// With --broker remote: where `answerloop broker serve` listens.
    #[arg(
        long,
        env = "ANSWERLOOP_BROKER_ADDR",
        value_name = "HOST:PORT",
        default_value = DEFAULT_BROKER_ADDR,
        global = true
    )]
    pub broker_addr: String,
    /// Fluvio SC public address (HOST:PORT); default: the active Fluvio profile.
    #[arg(long, env = "FLUVIO_SC", value_name = "HOST:PORT", global = true)]
    pub sc: Option<String>,
    /// Partitions of each topic created on Fluvio.
    #[arg(long, default_value_t = 1, global = true)]
    pub topic_partitions: u32,
    /// Replicas of each partition of a topic created on Fluvio.
    #[arg(long, default_value_t = 1, global = true)]
    pub topic_replication: u32,
    /// Put before every topic name on Fluvio, so several pipelines share a cluster.
    #[arg(
        long,
        env = "ANSWERLOOP_TOPIC_PREFIX",
        default_value = "",
        global = true
    )]
    pub topic_prefix: String,
}

impl Default for BrokerArgs {
    /// The embedded broker.
    fn default() -> Self {
        Self {
            broker: BrokerKind::Embedded,
            broker_addr: DEFAULT_BROKER_ADDR.into(),
            sc: None,
            topic_partitions: 1,
            topic_replication: 1,
            topic_prefix: String::new(),
        }
    }
}

impl BrokerArgs {
    #[cfg(feature = "fluvio")]
    pub fn fluvio_options(&self) -> FluvioOptions {
        FluvioOptions {
            sc: self.sc.clone(),
            partitions: self.topic_partitions.max(1),
            replication: self.topic_replication.max(1),
            topic_prefix: self.topic_prefix.clone(),
        }
    }

    /// Open the embedded broker whose database is the directory `embedded`,
    /// or connect to a served one or to the cluster; counted for the metrics
    /// either way.
    pub async fn connect(&self, embedded: &Path) -> Result<Arc<dyn Broker>, BrokerError> {
        let broker: Arc<dyn Broker> = match self.broker {
            BrokerKind::Embedded => Arc::new(EmbeddedBroker::open(embedded)?),
            BrokerKind::Remote => Arc::new(RemoteBroker::connect(&self.broker_addr).await?),
            #[cfg(feature = "fluvio")]
            BrokerKind::Fluvio => Arc::new(FluvioBroker::connect(self.fluvio_options()).await?),
            #[cfg(not(feature = "fluvio"))]
            BrokerKind::Fluvio => {
                return Err(BrokerError::Fluvio(
                    "this answerloop was built without the `fluvio` feature".into(),
                ))
            }
        };
        Ok(MeteredBroker::wrap(broker))
    }
}
