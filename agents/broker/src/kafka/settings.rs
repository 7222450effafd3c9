//! How the Kafka transport reaches a cluster: the bootstrap address and the
//! librdkafka properties a Kafka user would give (`security.protocol`,
//! `sasl.*`, `ssl.*`, ...), from `answerloop.toml`'s `[kafka]` section and
//! the environment.
//!
//! Secrets never come from argv or the configuration file: a secret
//! property (`sasl.password`, `ssl.key.password`, ...) is taken from the
//! environment (`KAFKA_SASL_PASSWORD`) or from a file the configuration
//! names (`"sasl.password.file" = "/run/secrets/kafka"`), and shows as
//! `****` wherever the settings are printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::BrokerError;

/// Where `--broker kafka` connects unless told otherwise.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// Properties whose values are secrets.
pub const SECRET_PROPERTIES: [&str; 6] = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.truststore.password",
    "sasl.oauthbearer.client.secret",
    "ssl.key.pem",
];

/// The families of properties read from `KAFKA_*` environment variables:
/// `KAFKA_SECURITY_PROTOCOL` is `security.protocol`,
/// `KAFKA_SESSION_TIMEOUT_MS` is `session.timeout.ms`. Others (KAFKA_HOME,
/// KAFKA_OPTS, ...) belong to Kafka's own scripts and are left alone.
const ENV_FAMILIES: [&str; 7] = [
    "security.",
    "sasl.",
    "ssl.",
    "client.",
    "session.timeout.",
    "heartbeat.interval.",
    "max.poll.interval.",
];

/// Properties only consumers take (librdkafka warns when a producer or an
/// admin client is given them).
pub const CONSUMER_ONLY: [&str; 3] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
];

/// What goes in `[kafka]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    /// `HOST:PORT[,HOST:PORT...]` (else `--bootstrap`, KAFKA_BOOTSTRAP_SERVERS).
    pub bootstrap: Option<String>,
    /// Consumer group timing, in milliseconds (librdkafka's defaults when
    /// unset: 45,000, 3,000 and 300,000). A broker that waits out a member
    /// gone without leaving for the whole rebalance timeout
    /// (`max.poll.interval.ms`) rather than its session (Tansu does) holds
    /// up every rebalance of that group for as long.
    pub session_timeout_ms: Option<u32>,
    pub heartbeat_interval_ms: Option<u32>,
    pub max_poll_interval_ms: Option<u32>,
    /// librdkafka properties, by their own names. A secret's value is not
    /// accepted here; name a file holding it with `<property>.file`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// The settings the transport runs with.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    pub bootstrap: String,
    /// Every property, secrets included (masked by `Debug` and `describe`).
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// `bootstrap` (the flag, else the file, else KAFKA_BOOTSTRAP_SERVERS,
    /// else 127.0.0.1:9092) and the properties of `file` and of the
    /// environment `env` (the environment wins over the file).
    pub fn resolve(
        bootstrap: Option<&str>,
        file: &KafkaFile,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, BrokerError> {
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(name, value)| name.starts_with("KAFKA_") && !value.is_empty())
            .collect();
        let bootstrap = bootstrap
            .map(str::to_string)
            .or_else(|| file.bootstrap.clone())
            .or_else(|| env.get("KAFKA_BOOTSTRAP_SERVERS").cloned())
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_string());
        let mut properties = BTreeMap::new();
        if let Some(ms) = file.session_timeout_ms {
            properties.insert("session.timeout.ms".to_string(), ms.to_string());
        }
        if let Some(ms) = file.heartbeat_interval_ms {
            properties.insert("heartbeat.interval.ms".to_string(), ms.to_string());
        }
        if let Some(ms) = file.max_poll_interval_ms {
            properties.insert("max.poll.interval.ms".to_string(), ms.to_string());
        }
        for (name, value) in &file.properties {
            if let Some(secret) = name.strip_suffix(".file") {
                properties.insert(secret.to_string(), read_secret_file(name, value)?);
            } else if is_secret(name) {
                return Err(BrokerError::Usage(format!(
                    "[kafka.properties] {name:?}: a secret is not taken from the configuration \
                     file; set {} or name a file holding it with \"{name}.file\"",
                    env_name(name)
                )));
            } else if name == "bootstrap.servers" {
                return Err(BrokerError::Usage(
                    "[kafka.properties] \"bootstrap.servers\": give it as [kafka] bootstrap".into(),
                ));
            } else {
                properties.insert(name.clone(), value.clone());
            }
        }
        for (var, value) in env {
            let name = var["KAFKA_".len()..].to_ascii_lowercase().replace('_', ".");
            if ENV_FAMILIES.iter().any(|family| name.starts_with(family)) {
                properties.insert(name, value);
            }
        }
        Ok(Self {
            bootstrap,
            properties,
        })
    }

    /// A producer's or admin client's configuration: the consumer-only
    /// properties left out.
    pub fn non_consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        for name in CONSUMER_ONLY {
            config.remove(name);
        }
        config
    }

    /// The client configuration: the bootstrap, answerloop's settings for
    /// every client, then the user's properties (which win).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config.set("client.id", "answerloop");
        for (name, value) in &self.properties {
            config.set(name, value);
        }
        config
    }

    /// One line for logs and errors, secrets masked.
    pub fn describe(&self) -> String {
        let properties: Vec<String> = self
            .properties
            .iter()
            .map(|(name, value)| format!("{name}={}", shown(name, value)))
            .collect();
        if properties.is_empty() {
            self.bootstrap.clone()
        } else {
            format!("{} ({})", self.bootstrap, properties.join(", "))
        }
    }
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(name, value)| (name.as_str(), shown(name, value)))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &properties)
            .finish()
    }
}

fn is_secret(name: &str) -> bool {
    SECRET_PROPERTIES.contains(&name) || name == "sasl.jaas.config"
}

fn shown<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret(name) {
        "****"
    } else {
        value
    }
}

/// The environment variable a property is read from.
pub fn env_name(property: &str) -> String {
    format!("KAFKA_{}", property.to_ascii_uppercase().replace('.', "_"))
}

fn read_secret_file(name: &str, path: &str) -> Result<String, BrokerError> {
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BrokerError::Usage(format!(
            "[kafka.properties] {name:?}: cannot read {}: {e}",
            path.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sasl_ssl_reaches_the_client_complete_and_its_secrets_masked() {
        let dir = tempfile::tempdir().unwrap();
        let key_password = dir.path().join("key-password");
        std::fs::write(&key_password, "k3y-s3cret\n").unwrap();
        let file = KafkaFile {
            bootstrap: Some("kafka-1.example:9093,kafka-2.example:9093".into()),
            session_timeout_ms: Some(6000),
            heartbeat_interval_ms: None,
            max_poll_interval_ms: None,
            properties: BTreeMap::from([
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanisms".into(), "SCRAM-SHA-512".into()),
                ("ssl.ca.location".into(), "/etc/answerloop/ca.pem".into()),
                (
                    "ssl.key.password.file".into(),
                    key_password.display().to_string(),
                ),
            ]),
        };
        let settings = KafkaSettings::resolve(
            None,
            &file,
            env(&[
                ("KAFKA_SASL_USERNAME", "answerloop"),
                ("KAFKA_SASL_PASSWORD", "pa55-w0rd"),
                ("KAFKA_HOME", "/opt/kafka"),
                ("KAFKA_OPTS", "-Xmx1g"),
            ]),
        )
        .unwrap();
        let config = settings.client_config();
        for (name, value) in [
            (
                "bootstrap.servers",
                "kafka-1.example:9093,kafka-2.example:9093",
            ),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "answerloop"),
            ("sasl.password", "pa55-w0rd"),
            ("ssl.ca.location", "/etc/answerloop/ca.pem"),
            ("ssl.key.password", "k3y-s3cret"),
            ("session.timeout.ms", "6000"),
        ] {
            assert_eq!(config.get(name), Some(value), "{name}");
        }
        assert_eq!(config.get("home"), None, "KAFKA_HOME is not a property");
        assert_eq!(config.get("opts"), None, "KAFKA_OPTS is not a property");
        // librdkafka accepts the whole configuration (it was built with SSL).
        config
            .create_native_config()
            .expect("librdkafka takes every property");
        for shown in [
            settings.describe(),
            format!("{settings:?}"),
            format!("{config:?}"),
        ] {
            assert!(!shown.contains("pa55-w0rd"), "{shown}");
            assert!(!shown.contains("k3y-s3cret"), "{shown}");
            assert!(shown.contains("SASL_SSL"), "{shown}");
        }
        assert!(settings.describe().contains("sasl.password=****"));
    }

    #[test]
    fn a_secret_in_the_file_is_refused_with_where_it_belongs() {
        let file = KafkaFile {
            properties: BTreeMap::from([("sasl.password".into(), "in-the-file".into())]),
            ..KafkaFile::default()
        };
        let error = KafkaSettings::resolve(None, &file, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KAFKA_SASL_PASSWORD"), "{error}");
        assert!(error.contains("sasl.password.file"), "{error}");
        assert!(!error.contains("in-the-file"), "{error}");
    }

    #[test]
    fn the_bootstrap_comes_from_the_flag_then_the_file_then_the_environment() {
        let file = KafkaFile {
            bootstrap: Some("file:9092".into()),
            ..KafkaFile::default()
        };
        let vars = env(&[("KAFKA_BOOTSTRAP_SERVERS", "env:9092")]);
        let resolve = |flag, file: &KafkaFile| {
            KafkaSettings::resolve(flag, file, vars.clone())
                .unwrap()
                .bootstrap
        };
        assert_eq!(resolve(Some("flag:9092"), &file), "flag:9092");
        assert_eq!(resolve(None, &file), "file:9092");
        assert_eq!(resolve(None, &KafkaFile::default()), "env:9092");
        let none = KafkaSettings::resolve(None, &KafkaFile::default(), env(&[])).unwrap();
        assert_eq!(none.bootstrap, DEFAULT_BOOTSTRAP);
    }
}
