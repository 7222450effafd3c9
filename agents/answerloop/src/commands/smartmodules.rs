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
    /// Write the .wasm files into DIR, for `fluvio smartmodule create NAME --wasm-file DIR/NAME.wasm`,
    /// and answer-score as a Redpanda Data Transform with its transform.yaml (`cd DIR && rpk transform deploy`).
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
            let name = answerloop_wasm::ANSWER_SCORE_TRANSFORM_NAME;
            for (file, bytes) in [
                (
                    format!("{name}.wasm"),
                    answerloop_wasm::ANSWER_SCORE_TRANSFORM,
                ),
                ("transform.yaml".to_string(), transform_yaml().as_bytes()),
            ] {
                let path = dir.join(file);
                std::fs::write(&path, bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The topic the transform writes scored answers to.
const TRANSFORM_OUTPUT_TOPIC: &str = "answers-scored";

/// `transform.yaml` for `rpk transform deploy` in the export directory:
/// rpk reads it and deploys `<name>.wasm` beside it. The env holds the
/// SmartModule's default params; `--var KEY=VALUE` overrides them.
fn transform_yaml() -> String {
    use answerloop_scoring::params::{DEFAULT_MAX_ATTEMPTS, DEFAULT_THRESHOLD};
    format!(
        "\
# answerloop's answer-score SmartModule as a Redpanda Data Transform.
# Deploy from this directory: rpk transform deploy
# (rpk reads this file and deploys {name}.wasm beside it).
name: {name}
description: Scores each answer against its reference and writes score, verdict and best-so-far into the record.
input-topic: {input}
output-topics:
  - {output}
language: rust
env:
  THRESHOLD: \"{DEFAULT_THRESHOLD}\"
  MAX_ATTEMPTS: \"{DEFAULT_MAX_ATTEMPTS}\"
  # A record that is not an answer goes to the first output topic as an
  # `invalid` tag. To send it unchanged to a topic of its own instead, add
  # that topic under output-topics and name it here:
  # INVALID_TOPIC: answers-invalid
",
        name = answerloop_wasm::ANSWER_SCORE_TRANSFORM_NAME,
        input = answerloop_schema::topics::ANSWERS,
        output = TRANSFORM_OUTPUT_TOPIC,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_yaml_names_the_exported_wasm_and_the_default_params() {
        let yaml = transform_yaml();
        assert!(yaml.contains("\nname: answer-score-transform\n"), "{yaml}");
        assert!(yaml.contains("\ninput-topic: answers\n"), "{yaml}");
        assert!(
            yaml.contains("\noutput-topics:\n  - answers-scored\n"),
            "{yaml}"
        );
        assert!(yaml.contains("\nlanguage: rust\n"), "{yaml}");
        assert!(yaml.contains("  THRESHOLD: \"0.4\"\n"), "{yaml}");
        assert!(yaml.contains("  MAX_ATTEMPTS: \"3\"\n"), "{yaml}");
    }
}
