#![cfg(feature = "fluvio")]
//! fluvio-profile/ is read by Fluvio's own code: the profile through the
//! `fluvio` crate's config loader, the topic specs through Fluvio's topic
//! config parser. Both must describe what `answerloop deploy` makes.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use answerloop_schema::topics;
use fluvio::config::ConfigFile;
use fluvio_controlplane_metadata::topic::config::TopicConfig;

fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fluvio-profile")
}

#[test]
fn the_profile_points_the_fluvio_client_at_a_local_cluster() {
    let path = profile_dir().join("config.toml");
    let file =
        ConfigFile::load(Some(path.display().to_string())).expect("Fluvio reads the profile");
    let cluster = file
        .config()
        .current_cluster()
        .expect("a current profile with a cluster");
    assert_eq!(cluster.endpoint, "127.0.0.1:9003");
}

#[test]
fn there_is_a_topic_spec_for_every_pipeline_topic() {
    for topic in topics::ALL {
        let path = profile_dir().join("topics").join(format!("{topic}.yaml"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let config = TopicConfig::from_str(&text)
            .unwrap_or_else(|e| panic!("Fluvio cannot parse {}: {e}", path.display()));
        assert_eq!(config.meta.name, topic);
        assert_eq!(config.partition.count, Some(1), "{topic}: deploy's default");
    }
    let specs = std::fs::read_dir(profile_dir().join("topics"))
        .unwrap()
        .count();
    assert_eq!(
        specs,
        topics::ALL.len(),
        "no spec for a topic the pipeline does not use"
    );
}
