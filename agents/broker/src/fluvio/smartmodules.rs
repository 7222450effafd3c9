//! The SmartModules in a Fluvio cluster: registered by name, replaced when
//! the wasm changed (compared by SHA-256), and waited for until the SPU can
//! run them.
//!
//! An SPU learns of a new SmartModule from the SC a moment after it is
//! registered; until then a stream that invokes it is refused
//! (`SmartModuleNotFound`). `deploy` therefore probes: it produces one
//! record through the whole chain to each partition of a probe topic and
//! retries until every SPU that leads one accepts it.

use std::io::Read;
use std::time::{Duration, Instant};

use ::fluvio::metadata::smartmodule::{SmartModuleSpec, SmartModuleWasm};
use ::fluvio::{Fluvio, FluvioAdmin, RecordKey, TopicProducerConfigBuilder};
use answerloop_scoring::Params;
use answerloop_wasm::SmartModule;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::{fluvio_error, invocations};
use crate::chain::{ChainSpec, ChainStep};
use crate::{BrokerError, Registered, Registration};

/// The topic `deploy` probes SmartModules on; it holds only probe records.
pub const PROBE_TOPIC: &str = "answerloop-probe";
/// How long SPUs are given to drop a deleted SmartModule before the new
/// one is registered under the same name.
const SPU_SYNC_PAUSE: Duration = Duration::from_secs(1);

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(bytes).read_to_end(&mut out).ok()?;
    Some(out)
}

/// Register `modules` in the cluster by name: created when missing,
/// replaced when the registered wasm differs (or always, with `force`),
/// left alone otherwise.
pub async fn register(
    client: &Fluvio,
    modules: &[SmartModule],
    force: bool,
) -> Result<Vec<Registered>, BrokerError> {
    let admin = client.admin().await;
    let mut done = Vec::with_capacity(modules.len());
    for module in modules {
        let mut entry = Registered::of(module, Registration::Unchanged);
        entry.registration = match registered_hash(&admin, module.name).await? {
            Some(theirs) if theirs == entry.sha256 && !force => Registration::Unchanged,
            Some(_) => {
                remove(&admin, module.name).await?;
                Registration::Replaced
            }
            None => Registration::Created,
        };
        if entry.registration != Registration::Unchanged {
            let spec = SmartModuleSpec {
                meta: None,
                summary: None,
                wasm: SmartModuleWasm::from_compressed_gzip(gzip(module.wasm)),
            };
            admin
                .create(module.name.to_string(), false, spec)
                .await
                .map_err(|e| {
                    fluvio_error(&format!("registering SmartModule {}", module.name), e)
                })?;
        }
        done.push(entry);
    }
    Ok(done)
}

/// The SHA-256 of the wasm registered as `name` (an unreadable payload
/// hashes as empty, so it is replaced).
async fn registered_hash(admin: &FluvioAdmin, name: &str) -> Result<Option<String>, BrokerError> {
    let found = admin
        .list::<SmartModuleSpec, _>(vec![name.to_string()])
        .await
        .map_err(|e| fluvio_error("listing SmartModules", e))?
        .into_iter()
        .find(|m| m.name == name);
    Ok(found.map(|m| {
        gunzip(m.spec.wasm.payload.as_ref())
            .map(|w| answerloop_wasm::sha256_hex(&w))
            .unwrap_or_default()
    }))
}

/// Whether the SC lists `name` (a summary listing: no wasm is sent).
async fn is_listed(admin: &FluvioAdmin, name: &str) -> Result<bool, BrokerError> {
    Ok(admin
        .list_with_params::<SmartModuleSpec, _>(vec![name.to_string()], true)
        .await
        .map_err(|e| fluvio_error("listing SmartModules", e))?
        .iter()
        .any(|m| m.name == name))
}

/// Delete `name` and wait until the SC no longer lists it, then a moment
/// for the SPUs to hear of it. Fluvio 0.18 SPUs that see a delete and a
/// create of the same name close together can end up without the module.
async fn remove(admin: &FluvioAdmin, name: &str) -> Result<(), BrokerError> {
    admin
        .delete::<SmartModuleSpec>(name.to_string())
        .await
        .map_err(|e| fluvio_error(&format!("removing the old SmartModule {name}"), e))?;
    let started = Instant::now();
    while is_listed(admin, name).await? {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(BrokerError::Fluvio(format!(
                "the SC still lists SmartModule {name} 30s after deleting it"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SPU_SYNC_PAUSE).await;
    Ok(())
}

/// Wait until every SPU leading a partition of `probe_topic` runs the
/// whole chain of `modules`, or fail after `timeout`.
pub async fn wait_until_usable(
    client: &Fluvio,
    probe_topic: &str,
    modules: &[SmartModule],
    partitions: u32,
    timeout: Duration,
) -> Result<Duration, BrokerError> {
    let started = Instant::now();
    let chain = ChainSpec {
        steps: modules
            .iter()
            .map(|m| ChainStep {
                name: m.name.to_string(),
                params: Params::default().to_map(),
            })
            .collect(),
    };
    for partition in 0..partitions.max(1) {
        let mut config = TopicProducerConfigBuilder::default();
        config
            .smartmodules(invocations(&chain))
            .set_specific_partitioner(partition);
        let config = config
            .build()
            .map_err(|e| fluvio_error("probe producer configuration", e))?;
        loop {
            let probe = async {
                let producer = client
                    .topic_producer_with_config(probe_topic, config.clone())
                    .await?;
                let output = producer.send(RecordKey::NULL, "probe").await?;
                producer.flush().await?;
                output.wait().await?;
                Ok::<_, anyhow::Error>(())
            };
            let last_error = match tokio::time::timeout(Duration::from_secs(5), probe).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => "no answer within 5s".to_string(),
            };
            if started.elapsed() > timeout {
                return Err(BrokerError::Fluvio(format!(
                    "the SmartModules are registered but partition {partition} of {probe_topic} \
                     still cannot run them after {}s: {last_error}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(started.elapsed())
}
