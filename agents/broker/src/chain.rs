//! A SmartModule chain as the agents name it: SmartModules by registered name,
//! each with its params. The embedded broker looks the bytes up in the
//! binary; a Fluvio cluster looks the names up in its SmartModule registry.

use std::collections::BTreeMap;

use answerloop_scoring::Params;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChainStep {
    pub name: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChainSpec {
    pub steps: Vec<ChainStep>,
}

impl ChainSpec {
    /// A chain of one SmartModule taking the scoring params.
    pub fn single(name: &str, params: &Params) -> Self {
        Self::of(&[name], params)
    }

    /// A chain of `names` in order, each taking the scoring params.
    pub fn of(names: &[&str], params: &Params) -> Self {
        Self {
            steps: names
                .iter()
                .map(|name| ChainStep {
                    name: name.to_string(),
                    params: params.to_map(),
                })
                .collect(),
        }
    }

    /// Human-readable, for errors and logs: `answer-score(max_attempts=3,threshold=0.4)`.
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                let params: Vec<String> =
                    s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}({})", s.name, params.join(","))
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}
