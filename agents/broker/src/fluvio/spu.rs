//! Registering a custom SPU, for clusters started without the `fluvio` CLI
//! (docker compose: an SC and an SPU from the official image, and
//! `answerloop deploy --register-spu` in place of `fluvio cluster spu register`).

use std::time::{Duration, Instant};

use ::fluvio::metadata::customspu::CustomSpuSpec;
use ::fluvio::metadata::spu::SpuSpec;
use ::fluvio::Fluvio;
use fluvio_controlplane_metadata::spu::{Endpoint, IngressPort};

use super::fluvio_error;
use crate::BrokerError;

/// A custom SPU as `fluvio cluster spu register` takes it.
#[derive(Debug, Clone)]
pub struct CustomSpu {
    pub id: i32,
    /// Where clients reach it, `HOST:PORT`.
    pub public: String,
    /// Where the SC reaches it, `HOST:PORT`.
    pub private: String,
}

fn host_port(flag: &str, value: &str) -> Result<(String, u16), BrokerError> {
    let bad = || {
        BrokerError::Fluvio(format!(
            "{flag} {value:?} is not HOST:PORT (for example spu:9010)"
        ))
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

impl CustomSpu {
    fn spec(&self) -> Result<CustomSpuSpec, BrokerError> {
        let (public_host, public_port) = host_port("--spu-public", &self.public)?;
        let (private_host, private_port) = host_port("--spu-private", &self.private)?;
        Ok(CustomSpuSpec {
            id: self.id,
            public_endpoint: IngressPort::from_port_host(public_port, public_host),
            private_endpoint: Endpoint {
                port: private_port,
                host: private_host,
                ..Default::default()
            },
            rack: None,
            public_endpoint_local: None,
        })
    }

    fn name(&self) -> String {
        format!("custom-spu-{}", self.id)
    }
}

/// Register `spu` unless an SPU with its id exists, then wait until it is
/// online (topics cannot be placed before).
pub async fn register(
    client: &Fluvio,
    spu: &CustomSpu,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let spec = spu.spec()?;
    let admin = client.admin().await;
    let started = Instant::now();
    let mut registered = false;
    loop {
        let spus = admin
            .all::<SpuSpec>()
            .await
            .map_err(|e| fluvio_error("listing SPUs", e))?;
        match spus.iter().find(|s| s.spec.id == spu.id) {
            Some(found) if found.status.is_online() => return Ok(()),
            None if !registered => {
                admin
                    .create(spu.name(), false, spec.clone())
                    .await
                    .map_err(|e| fluvio_error(&format!("registering SPU {}", spu.id), e))?;
                registered = true;
            }
            _ => {}
        }
        if started.elapsed() > timeout {
            return Err(BrokerError::Fluvio(format!(
                "SPU {} is registered but not online after {}s: is it running and reachable at {}?",
                spu.id,
                timeout.as_secs(),
                spu.private
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_host_and_port() {
        let spu = |public: &str| CustomSpu {
            id: 5001,
            public: public.into(),
            private: "spu:9011".into(),
        };
        assert!(spu("spu:9010").spec().is_ok());
        for bad in ["spu", ":9010", "spu:port", "spu:99999"] {
            let err = spu(bad).spec().unwrap_err().to_string();
            assert!(err.contains("--spu-public") && err.contains(bad), "{err}");
        }
    }
}
