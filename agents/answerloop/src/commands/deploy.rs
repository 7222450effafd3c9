//! `answerloop deploy`: make a broker ready for the pipeline. On Fluvio:
//! the topics (created when missing), the three SmartModules (registered by
//! name, replaced when the wasm changed) and a wait until the SPUs run
//! them. On Kafka: the topics; the agents run the SmartModules. Safe to
//! run again.

use std::process::ExitCode;
use std::sync::Arc;

use answerloop_broker::select::{BrokerArgs, BrokerKind};
use answerloop_broker::{Broker, DeployReport};
use answerloop_schema::topics;

use crate::cli::HomeArg;
use crate::config::FileConfig;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    home: HomeArg,
    #[command(flatten)]
    broker: BrokerArgs,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Register a custom SPU with this id first (clusters started without the
    /// fluvio CLI, e.g. docker compose); needs --spu-public and --spu-private.
    #[arg(long, value_name = "ID", requires_all = ["spu_public", "spu_private"])]
    register_spu: Option<i32>,
    /// The SPU's public address, where clients reach it.
    #[arg(long, value_name = "HOST:PORT")]
    spu_public: Option<String>,
    /// The SPU's private address, where the SC reaches it.
    #[arg(long, value_name = "HOST:PORT")]
    spu_private: Option<String>,
}

pub async fn execute(mut args: DeployArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.home.as_deref())?;
    FileConfig::load(args.home.config.as_deref(), home.root())?.onto(&mut args.broker);
    // --register-spu is a Fluvio option like --sc: alone, it selects Fluvio.
    let kind = match (args.broker.broker, args.register_spu, args.broker.kind()?) {
        (None, Some(_), BrokerKind::Embedded) => BrokerKind::Fluvio,
        (_, _, kind) => kind,
    };
    let broker: Arc<dyn Broker> = match kind {
        BrokerKind::Embedded | BrokerKind::Remote | BrokerKind::Kafka => {
            anyhow::ensure!(
                args.register_spu.is_none(),
                "--register-spu is an option for fluvio, but the broker is {}: drop it, or use --broker fluvio",
                kind.name()
            );
            if kind == BrokerKind::Embedded {
                home.prepare()?;
            }
            args.broker.connect(&home.broker()).await?
        }
        BrokerKind::Fluvio => fluvio_cluster(&args).await?,
    };
    let report = broker.deploy(&topics::ALL).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The Fluvio cluster, with the custom SPU registered first when asked.
#[cfg(feature = "fluvio")]
async fn fluvio_cluster(args: &DeployArgs) -> anyhow::Result<Arc<dyn Broker>> {
    use answerloop_broker::fluvio::spu::{self, CustomSpu};
    use answerloop_broker::fluvio::FluvioBroker;
    /// How long a newly registered SPU may take to come online.
    const SPU_ONLINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    let cluster = FluvioBroker::connect(args.broker.fluvio_options()).await?;
    if let Some(id) = args.register_spu {
        let spu = CustomSpu {
            id,
            public: args.spu_public.clone().unwrap_or_default(),
            private: args.spu_private.clone().unwrap_or_default(),
        };
        spu::register(cluster.client(), &spu, SPU_ONLINE_TIMEOUT).await?;
    }
    Ok(Arc::new(cluster))
}

#[cfg(not(feature = "fluvio"))]
async fn fluvio_cluster(_: &DeployArgs) -> anyhow::Result<Arc<dyn Broker>> {
    anyhow::bail!("this answerloop was built without the `fluvio` feature")
}

fn print_report(report: &DeployReport) {
    println!("deployed on {}", report.broker);
    for topic in &report.topics {
        println!(
            "  topic        {:<14} {} partition(s)",
            topic.name, topic.partitions
        );
    }
    for module in &report.smartmodules {
        println!(
            "  smartmodule  {:<14} {:<9} {} bytes, sha256 {}",
            module.name,
            format!("{:?}", module.registration).to_lowercase(),
            module.bytes,
            &module.sha256[..16]
        );
    }
    println!("  ready after  {} ms", report.ready_ms);
}
