//! `--broker embedded|remote|fluvio|kafka`: which transport a command runs
//! on, and how it reaches a served embedded broker or a cluster.

use std::path::Path;
use std::sync::Arc;

use super::embedded::EmbeddedBroker;
#[cfg(feature = "fluvio")]
use super::fluvio::{FluvioBroker, FluvioOptions};
#[cfg(feature = "kafka")]
use super::kafka::{
    settings::{KafkaFile, KafkaSettings},
    KafkaBroker, KafkaOptions,
};
use super::metered::MeteredBroker;
use super::remote::RemoteBroker;
use super::{Broker, BrokerError};

/// Where `answerloop broker serve` listens and `--broker remote` connects
/// unless told otherwise.
pub const DEFAULT_BROKER_ADDR: &str = "127.0.0.1:9250";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// Topics in a sled database in the home; nothing to install.
    #[default]
    Embedded,
    /// The embedded broker of another process (`answerloop broker serve`),
    /// at --broker-addr.
    Remote,
    /// A Fluvio cluster: the active profile, or --sc / FLUVIO_SC.
    Fluvio,
    /// A Kafka-protocol cluster (Kafka, Redpanda, ...): --bootstrap /
    /// KAFKA_BOOTSTRAP_SERVERS.
    Kafka,
}

/// The environment variables a broker's flags fall back to, with their
/// flags. Unlike the flags, they are read only for the broker already
/// chosen and never choose one: a FLUVIO_SC left in the environment does
/// not move `answerloop run` off the embedded broker.
pub const FLAG_ENV: [(&str, &str); 4] = [
    ("ANSWERLOOP_BROKER_ADDR", "--broker-addr"),
    ("FLUVIO_SC", "--sc"),
    ("ANSWERLOOP_TOPIC_PREFIX", "--topic-prefix"),
    ("KAFKA_BOOTSTRAP_SERVERS", "--bootstrap"),
];

#[derive(Debug, Clone, Default, clap::Args)]
pub struct BrokerArgs {
    /// The broker to run on [default: embedded, or fluvio when a Fluvio
    /// option is given, kafka when --bootstrap is, remote when
    /// --broker-addr is].
    #[arg(long, value_enum, env = "ANSWERLOOP_BROKER", global = true)]
    pub broker: Option<BrokerKind>,
    /// With --broker remote: where `answerloop broker serve` listens
    /// [env: ANSWERLOOP_BROKER_ADDR; default: 127.0.0.1:9250].
    #[arg(long, value_name = "HOST:PORT", global = true)]
    pub broker_addr: Option<String>,
    /// Fluvio SC public address [env: FLUVIO_SC, read with --broker fluvio;
    /// default: the active Fluvio profile].
    #[arg(long, value_name = "HOST:PORT", global = true)]
    pub sc: Option<String>,
    /// Kafka bootstrap servers [env: KAFKA_BOOTSTRAP_SERVERS, read with
    /// --broker kafka; default: answerloop.toml's [kafka] bootstrap, else
    /// 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT[,...]", global = true)]
    pub bootstrap: Option<String>,
    /// Partitions of each topic created on a cluster [default: 1].
    #[arg(long, value_name = "N", global = true)]
    pub topic_partitions: Option<u32>,
    /// Replicas of each partition of a topic created on a cluster [default: 1].
    #[arg(long, value_name = "N", global = true)]
    pub topic_replication: Option<u32>,
    /// Put before every topic name (and, on Kafka, consumer group id), so
    /// several pipelines share a cluster [env: ANSWERLOOP_TOPIC_PREFIX, read
    /// with --broker fluvio or kafka].
    #[arg(long, value_name = "PREFIX", global = true)]
    pub topic_prefix: Option<String>,
    /// answerloop.toml's `[kafka]` section, set by the command that read it.
    #[cfg(feature = "kafka")]
    #[arg(skip)]
    pub kafka_file: KafkaFile,
}

impl BrokerArgs {
    /// The embedded broker.
    pub fn embedded() -> Self {
        Self {
            broker: Some(BrokerKind::Embedded),
            ..Self::default()
        }
    }

    /// The options given on the command line, by flag name, each with the
    /// brokers it is an option for.
    fn given_flags(&self) -> Vec<(&'static str, &'static [BrokerKind])> {
        const CLUSTERS: &[BrokerKind] = &[BrokerKind::Fluvio, BrokerKind::Kafka];
        [
            (
                "--broker-addr",
                self.broker_addr.is_some(),
                &[BrokerKind::Remote][..],
            ),
            ("--sc", self.sc.is_some(), &[BrokerKind::Fluvio][..]),
            (
                "--bootstrap",
                self.bootstrap.is_some(),
                &[BrokerKind::Kafka][..],
            ),
            (
                "--topic-partitions",
                self.topic_partitions.is_some(),
                CLUSTERS,
            ),
            (
                "--topic-replication",
                self.topic_replication.is_some(),
                CLUSTERS,
            ),
            ("--topic-prefix", self.topic_prefix.is_some(), CLUSTERS),
        ]
        .into_iter()
        .filter_map(|(flag, given, brokers)| given.then_some((flag, brokers)))
        .collect()
    }

    /// The broker these flags select: `--broker` (or ANSWERLOOP_BROKER)
    /// when given, else the one whose options were given, else embedded
    /// (options shared by Fluvio and Kafka alone select Fluvio, as before
    /// Kafka). Options of another broker than the one chosen are an error,
    /// not silently ignored.
    pub fn kind(&self) -> Result<BrokerKind, BrokerError> {
        let given = self.given_flags();
        let chosen = match self.broker {
            Some(kind) => kind,
            None => {
                // The brokers that take every option given.
                let fits: Vec<BrokerKind> = BrokerKind::ALL
                    .into_iter()
                    .filter(|kind| given.iter().all(|(_, brokers)| brokers.contains(kind)))
                    .collect();
                match (given.is_empty(), fits.first()) {
                    (true, _) => BrokerKind::Embedded,
                    (false, Some(kind)) => *kind,
                    (false, None) => {
                        let flags: Vec<String> = given
                            .iter()
                            .map(|(flag, brokers)| format!("{flag} ({})", names(brokers)))
                            .collect();
                        return Err(BrokerError::Usage(format!(
                            "{} select different brokers: choose one with --broker",
                            flags.join(", ")
                        )));
                    }
                }
            }
        };
        let foreign: Vec<&(&str, &[BrokerKind])> = given
            .iter()
            .filter(|(_, brokers)| !brokers.contains(&chosen))
            .collect();
        if let Some((_, brokers)) = foreign.first() {
            let flags: Vec<&str> = foreign
                .iter()
                .filter(|(_, b)| b == brokers)
                .map(|(flag, _)| *flag)
                .collect();
            let theirs = names(brokers);
            let use_them = brokers
                .iter()
                .map(|b| format!("--broker {}", b.name()))
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(BrokerError::Usage(format!(
                "{} {} for {theirs}, but the broker is {}: drop {}, or use {use_them}",
                flags.join(", "),
                if flags.len() == 1 {
                    "is an option"
                } else {
                    "are options"
                },
                chosen.name(),
                if flags.len() == 1 { "it" } else { "them" },
            )));
        }
        Ok(chosen)
    }

    /// Where a served embedded broker listens.
    pub fn remote_addr(&self) -> String {
        self.broker_addr
            .clone()
            .or_else(|| env_value(FLAG_ENV[0].0))
            .unwrap_or_else(|| DEFAULT_BROKER_ADDR.to_string())
    }

    /// The Fluvio SC's address: `--sc`, else FLUVIO_SC; `None` for the
    /// active profile.
    pub fn fluvio_sc(&self) -> Option<String> {
        self.sc.clone().or_else(|| env_value(FLAG_ENV[1].0))
    }

    /// What goes before every topic name on Fluvio: `--topic-prefix`, else
    /// ANSWERLOOP_TOPIC_PREFIX.
    pub fn topic_prefix(&self) -> String {
        self.topic_prefix
            .clone()
            .or_else(|| env_value(FLAG_ENV[2].0))
            .unwrap_or_default()
    }

    /// The Kafka settings: `--bootstrap`, answerloop.toml's `[kafka]`, the
    /// environment.
    #[cfg(feature = "kafka")]
    pub fn kafka_options(&self) -> Result<KafkaOptions, BrokerError> {
        Ok(KafkaOptions {
            settings: KafkaSettings::resolve(
                self.bootstrap.as_deref(),
                &self.kafka_file,
                std::env::vars(),
            )?,
            partitions: self.topic_partitions.unwrap_or(1).max(1),
            replication: self.topic_replication.unwrap_or(1).max(1),
            topic_prefix: self.topic_prefix(),
        })
    }

    #[cfg(feature = "fluvio")]
    pub fn fluvio_options(&self) -> FluvioOptions {
        FluvioOptions {
            sc: self.fluvio_sc(),
            partitions: self.topic_partitions.unwrap_or(1).max(1),
            replication: self.topic_replication.unwrap_or(1).max(1),
            topic_prefix: self.topic_prefix(),
        }
    }

    /// Open the embedded broker whose database is the directory `embedded`,
    /// or connect to a served one or to the cluster; counted for the metrics
    /// either way.
    pub async fn connect(&self, embedded: &Path) -> Result<Arc<dyn Broker>, BrokerError> {
        let broker: Arc<dyn Broker> = match self.kind()? {
            BrokerKind::Embedded => Arc::new(EmbeddedBroker::open(embedded)?),
            BrokerKind::Remote => Arc::new(RemoteBroker::connect(&self.remote_addr()).await?),
            #[cfg(feature = "fluvio")]
            BrokerKind::Fluvio => Arc::new(FluvioBroker::connect(self.fluvio_options()).await?),
            #[cfg(not(feature = "fluvio"))]
            BrokerKind::Fluvio => {
                return Err(BrokerError::Fluvio(
                    "this answerloop was built without the `fluvio` feature".into(),
                ))
            }
            #[cfg(feature = "kafka")]
            BrokerKind::Kafka => Arc::new(KafkaBroker::connect(self.kafka_options()?).await?),
            #[cfg(not(feature = "kafka"))]
            BrokerKind::Kafka => {
                return Err(BrokerError::Kafka(
                    "this answerloop was built without the `kafka` feature".into(),
                ))
            }
        };
        Ok(MeteredBroker::wrap(broker))
    }
}

impl BrokerKind {
    /// Every broker, in the order options select them.
    pub const ALL: [BrokerKind; 4] = [
        BrokerKind::Embedded,
        BrokerKind::Remote,
        BrokerKind::Fluvio,
        BrokerKind::Kafka,
    ];

    /// As `--broker` spells it.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded",
            BrokerKind::Remote => "remote",
            BrokerKind::Fluvio => "fluvio",
            BrokerKind::Kafka => "kafka",
        }
    }
}

/// `fluvio`, `fluvio or kafka`.
fn names(brokers: &[BrokerKind]) -> String {
    brokers
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// An environment variable's value, when set and not empty.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn kind(args: &[&str]) -> Result<BrokerKind, String> {
        let cli = Cli::try_parse_from(std::iter::once("answerloop").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.broker.kind().map_err(|e| e.to_string())
    }

    #[test]
    fn a_brokers_own_option_selects_it() {
        assert_eq!(kind(&[]), Ok(BrokerKind::Embedded));
        assert_eq!(kind(&["--sc", "127.0.0.1:9003"]), Ok(BrokerKind::Fluvio));
        assert_eq!(kind(&["--topic-partitions", "4"]), Ok(BrokerKind::Fluvio));
        assert_eq!(
            kind(&["--broker-addr", "127.0.0.1:1"]),
            Ok(BrokerKind::Remote)
        );
        assert_eq!(
            kind(&["--broker", "fluvio", "--sc", "127.0.0.1:9003"]),
            Ok(BrokerKind::Fluvio)
        );
        assert_eq!(
            kind(&["--bootstrap", "127.0.0.1:9092"]),
            Ok(BrokerKind::Kafka)
        );
        assert_eq!(
            kind(&["--bootstrap", "127.0.0.1:9092", "--topic-partitions", "4"]),
            Ok(BrokerKind::Kafka)
        );
        assert_eq!(
            kind(&["--broker", "kafka", "--topic-prefix", "a-"]),
            Ok(BrokerKind::Kafka)
        );
    }

    #[test]
    fn another_brokers_options_are_refused_by_name() {
        let error = kind(&["--broker", "embedded", "--sc", "127.0.0.1:9003"]).unwrap_err();
        assert_eq!(
            error,
            "--sc is an option for fluvio, but the broker is embedded: drop it, or use --broker fluvio"
        );
        let error = kind(&[
            "--broker",
            "remote",
            "--topic-prefix",
            "a-",
            "--topic-replication",
            "2",
        ])
        .unwrap_err();
        assert!(
            error.starts_with("--topic-replication, --topic-prefix are options for fluvio or kafka, but the broker is remote"),
            "{error}"
        );
        let error = kind(&["--broker", "fluvio", "--broker-addr", "127.0.0.1:1"]).unwrap_err();
        assert!(
            error.contains("--broker-addr is an option for remote"),
            "{error}"
        );
        let error = kind(&["--sc", "127.0.0.1:9003", "--broker-addr", "127.0.0.1:1"]).unwrap_err();
        assert!(error.contains("select different brokers"), "{error}");
        let error = kind(&["--sc", "127.0.0.1:9003", "--bootstrap", "127.0.0.1:9092"]).unwrap_err();
        assert!(error.contains("select different brokers"), "{error}");
        let error = kind(&["--broker", "kafka", "--sc", "127.0.0.1:9003"]).unwrap_err();
        assert_eq!(
            error,
            "--sc is an option for fluvio, but the broker is kafka: drop it, or use --broker fluvio"
        );
        let error = kind(&["--broker", "embedded", "--topic-partitions", "4"]).unwrap_err();
        assert_eq!(
            error,
            "--topic-partitions is an option for fluvio or kafka, but the broker is embedded: drop it, or use --broker fluvio or --broker kafka"
        );
    }
}
