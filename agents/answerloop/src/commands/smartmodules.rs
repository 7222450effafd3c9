//! `answerloop smartmodules list|export DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct SmartmodulesArgs {
    #[command(subcommand)]
    command: SmartmodulesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SmartmodulesCommand {
    /// Name, kind, size and SHA-256 of each SmartModule (deploy compares the hash).
    List,
    /// Write the .wasm files into DIR, for `fluvio smartmodule create NAME --wasm-file DIR/NAME.wasm`.
    Export { dir: PathBuf },
}

pub fn execute(args: SmartmodulesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SmartmodulesCommand::List => {
            for sm in answerloop_wasm::ALL {
                println!(
                    "{:<14} {:<10} {:>8} bytes  sha256 {}",
                    sm.name,
                    format!("{:?}", sm.kind),
                    sm.wasm.len(),
                    sm.sha256_hex()
                );
            }
        }
        SmartmodulesCommand::Export { dir } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for sm in answerloop_wasm::ALL {
                let path = dir.join(format!("{}.wasm", sm.name));
                std::fs::write(&path, sm.wasm)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
