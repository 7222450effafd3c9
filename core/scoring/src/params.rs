//! The SmartModules' init parameters. All three take the same two, and the
//! pipeline passes the same values to all three, so that `regenerate` and
//! `quality-gate` split every scored record exactly one way.

use std::collections::BTreeMap;
use std::fmt;

/// Default decision threshold: the original project's cosine cut-off.
pub const DEFAULT_THRESHOLD: f32 = 0.4;
/// Default cap on scored answers a question: the original project's.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// An answer scoring at or above this is accepted.
    pub threshold: f32,
    /// At most this many scored answers a question.
    pub max_attempts: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// A parameter that is present but unusable.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamsError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SmartModule parameter {}={:?} is not valid: expected {}",
            self.name, self.value, self.expected
        )
    }
}

impl std::error::Error for ParamsError {}

impl Params {
    /// Read `threshold` and `max_attempts` from key/value params.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, ParamsError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Read `threshold` and `max_attempts` through `get`; a missing one takes
    /// its default, an unusable one is an error naming it.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ParamsError> {
        let mut params = Params::default();
        if let Some(raw) = get("threshold") {
            params.threshold = raw
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or(ParamsError {
                    name: "threshold",
                    value: raw,
                    expected: "a number from 0 to 1",
                })?;
        }
        if let Some(raw) = get("max_attempts") {
            params.max_attempts =
                raw.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(ParamsError {
                        name: "max_attempts",
                        value: raw,
                        expected: "a whole number of at least 1",
                    })?;
        }
        Ok(params)
    }

    /// The params as key/value pairs, the form Fluvio and the engine take.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("threshold".to_string(), self.threshold.to_string()),
            ("max_attempts".to_string(), self.max_attempts.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_params_take_the_defaults() {
        assert_eq!(Params::from_map(&map(&[])).unwrap(), Params::default());
    }

    #[test]
    fn params_round_trip_through_the_map_form() {
        let p = Params {
            threshold: 0.55,
            max_attempts: 5,
        };
        assert_eq!(Params::from_map(&p.to_map()).unwrap(), p);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let err = Params::from_map(&map(&[("threshold", "1.5")])).unwrap_err();
        assert_eq!(err.name, "threshold");
        assert!(err.to_string().contains("threshold=\"1.5\""), "{err}");
        let err = Params::from_map(&map(&[("max_attempts", "0")])).unwrap_err();
        assert_eq!(err.name, "max_attempts");
        assert!(Params::from_map(&map(&[("threshold", "NaN")])).is_err());
    }
}
