//! The three answerloop SmartModules (and `answer-score` as a Redpanda Data
//! Transform) as `.wasm` bytes, built by `build.rs`
//! from the crates beside this one, so the `answerloop` binary carries the
//! very modules it registers with Fluvio or runs in its embedded broker.

/// What a SmartModule does to the records that pass through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Map,
    FilterMap,
    Filter,
}

/// One compiled SmartModule.
#[derive(Debug, Clone, Copy)]
pub struct SmartModule {
    /// The name it is registered under, in Fluvio and in the embedded broker.
    pub name: &'static str,
    pub kind: Kind,
    pub wasm: &'static [u8],
}

impl SmartModule {
    /// The lowercase hex SHA-256 of the `.wasm`: how `deploy` tells whether
    /// the cluster runs this very build, and what `smartmodules list` shows.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(self.wasm)
    }
}

/// The lowercase hex SHA-256 of a `.wasm` (ours, or one a cluster holds).
pub fn sha256_hex(wasm: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub const ANSWER_SCORE: SmartModule = SmartModule {
    name: "answer-score",
    kind: Kind::Map,
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/answer_score.wasm")),
};

pub const REGENERATE: SmartModule = SmartModule {
    name: "regenerate",
    kind: Kind::FilterMap,
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/regenerate.wasm")),
};

pub const QUALITY_GATE: SmartModule = SmartModule {
    name: "quality-gate",
    kind: Kind::Filter,
    wasm: include_bytes!(concat!(env!("OUT_DIR"), "/quality_gate.wasm")),
};

pub const ALL: [SmartModule; 3] = [ANSWER_SCORE, REGENERATE, QUALITY_GATE];

/// The SmartModule registered under `name`, if it is one of ours.
pub fn by_name(name: &str) -> Option<SmartModule> {
    ALL.into_iter().find(|sm| sm.name == name)
}

/// The name `answer-score` goes by as a Redpanda Data Transform (and the
/// `.wasm` file `rpk transform deploy` looks for beside `transform.yaml`).
pub const ANSWER_SCORE_TRANSFORM_NAME: &str = "answer-score-transform";

/// `answer-score` as a Redpanda Data Transform: a `wasm32-wasip1` program
/// on Redpanda's transform ABI that scores each record with the very code of
/// the SmartModule. Params come from its environment (`THRESHOLD`,
/// `MAX_ATTEMPTS`, optional `INVALID_TOPIC`); see
/// `smartmodules/answer-score-transform`.
pub const ANSWER_SCORE_TRANSFORM: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/answer_score_transform.wasm"));
