//! `answerloop deploy`: make a broker ready for the pipeline. On Fluvio:
//! the topics (created when missing), the three SmartModules (registered by
//! name, replaced when the wasm changed) and a wait until the SPUs run
//! them. Safe to run again.

use std::process::ExitCode;

use answerloop_schema::topics;

use crate::broker::select::BrokerArgs;
use crate::broker::DeployReport;
use crate::cli::HomeArg;
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
}

pub async fn execute(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.home.as_deref())?;
    if args.broker.broker == crate::broker::select::BrokerKind::Embedded {
        home.prepare()?;
    }
    let broker = args.broker.connect(&home).await?;
    let report = broker.deploy(&topics::ALL).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
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
