//! docker-compose.yml cannot run here (no Docker), so it is checked against
//! what it must say: the official Fluvio image for the SC and SPU, the
//! repository's image for deploy and the agents, and commands and
//! environment variables that this binary's command line accepts.

use std::collections::BTreeMap;
use std::path::Path;

use answerloop::cli::Cli;
use clap::{CommandFactory, Parser};
use serde_yaml::Value;

fn repo_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

fn compose() -> BTreeMap<String, Value> {
    let text =
        std::fs::read_to_string(repo_file("docker-compose.yml")).expect("docker-compose.yml");
    let mut value: Value = serde_yaml::from_str(&text).expect("valid YAML");
    value.apply_merge().expect("merge keys resolve");
    let services = value.get("services").expect("a services section").clone();
    let services: BTreeMap<String, Value> =
        serde_yaml::from_value(services).expect("services is a map");
    let mut merged = BTreeMap::new();
    for (name, mut service) in services {
        service.apply_merge().expect("nested merge keys resolve");
        merged.insert(name, service);
    }
    merged
}

fn image(service: &Value) -> &str {
    service.get("image").and_then(Value::as_str).unwrap_or("")
}

fn command(service: &Value) -> Vec<String> {
    match service.get("command") {
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| v.as_str().expect("command items are strings").to_string())
            .collect(),
        Some(Value::String(line)) => line.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The service's environment with values (pass-through names have none).
fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
    let Some(Value::Mapping(env)) = service.get("environment") else {
        return BTreeMap::new();
    };
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(serde_yaml::to_string(other).unwrap().trim().to_string()),
            };
            (k.as_str().expect("string keys").to_string(), value)
        })
        .collect()
}

/// `--flag` for every environment variable the subcommand at `path` reads.
fn env_flags(path: &[String]) -> BTreeMap<String, String> {
    let mut command = Cli::command();
    command.build();
    let mut flags = BTreeMap::new();
    let mut collect = |cmd: &clap::Command| {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                flags.insert(env.to_string_lossy().into_owned(), format!("--{long}"));
            }
        }
    };
    collect(&command);
    let mut current = &command;
    for word in path {
        match current.find_subcommand(word) {
            Some(sub) => {
                collect(sub);
                current = sub;
            }
            None => break,
        }
    }
    for (env, flag) in answerloop_broker::select::FLAG_ENV {
        flags.insert(env.to_string(), flag.to_string());
    }
    flags
}

#[test]
fn the_cluster_runs_on_the_official_fluvio_image() {
    let services = compose();
    for name in ["sc", "spu"] {
        let service = &services[name];
        assert!(
            image(service).starts_with("infinyon/fluvio:"),
            "{name} uses {:?}",
            image(service)
        );
        assert_eq!(command(service)[0], "./fluvio-run", "{name}");
    }
    assert_eq!(command(&services["sc"])[1], "sc");
    let spu = command(&services["spu"]);
    assert_eq!(spu[1], "spu");
    // The SPU the deploy service registers is the one that runs.
    let id = spu[spu.iter().position(|w| w == "-i").unwrap() + 1].clone();
    let deploy = command(&services["deploy"]);
    let registered = &deploy[deploy.iter().position(|w| w == "--register-spu").unwrap() + 1];
    assert_eq!(&id, registered);
}

#[test]
fn deploy_and_the_agents_run_this_repository_s_image_with_commands_it_accepts() {
    let services = compose();
    assert!(
        repo_file("Dockerfile").is_file(),
        "the compose file builds from the Dockerfile"
    );
    let ours: Vec<&str> = ["deploy", "traffic", "llm", "store"].to_vec();
    let built = services["deploy"].get("build").and_then(Value::as_str);
    assert_eq!(
        built,
        Some("."),
        "deploy builds the image from the repository"
    );
    for name in &ours {
        let service = &services[*name];
        assert_eq!(
            image(service),
            image(&services["deploy"]),
            "{name} shares the image"
        );
        let words = command(service);
        let env = environment(service);
        assert_eq!(
            env.get("ANSWERLOOP_BROKER"),
            Some(&Some("fluvio".to_string())),
            "{name} runs on the cluster"
        );
        let flags = env_flags(&words);
        let mut argv = vec!["answerloop".to_string()];
        argv.extend(words.iter().cloned());
        for (var, value) in &env {
            if matches!(
                var.as_str(),
                "RUST_LOG" | "OPENAI_API_KEY" | "GEMINI_API_KEY"
            ) {
                continue;
            }
            let flag = flags
                .get(var)
                .unwrap_or_else(|| panic!("{name}: no flag of `{}` reads {var}", words.join(" ")));
            if let Some(value) = value {
                argv.push(flag.clone());
                argv.push(value.clone());
            }
        }
        if let Err(e) = Cli::try_parse_from(&argv) {
            panic!(
                "{name}: `{}` is not a valid command line: {e}",
                argv.join(" ")
            );
        }
    }
    for name in ["traffic", "llm", "store"] {
        let depends = services[name].get("depends_on").expect("depends_on");
        let condition = depends
            .get("deploy")
            .and_then(|d| d.get("condition"))
            .and_then(Value::as_str);
        assert_eq!(condition, Some("service_completed_successfully"), "{name}");
    }
}

#[test]
fn the_llm_agent_takes_its_provider_from_the_environment() {
    let services = compose();
    let env = environment(&services["llm"]);
    for var in [
        "ANSWERLOOP_LLM",
        "ANSWERLOOP_BASE_URL",
        "ANSWERLOOP_MODEL",
        "OPENAI_API_KEY",
    ] {
        assert!(env.contains_key(var), "llm passes {var} through");
    }
    // Keys are passed through from the caller's environment, never written here.
    assert_eq!(env["OPENAI_API_KEY"], None);
    assert_eq!(env["GEMINI_API_KEY"], None);
    let ollama = &services["ollama"];
    assert!(image(ollama).starts_with("ollama/ollama"));
    let profiles = ollama
        .get("profiles")
        .expect("ollama is optional (a profile)");
    assert!(profiles.as_sequence().is_some_and(|p| !p.is_empty()));
}
