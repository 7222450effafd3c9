//! API keys: read from the environment or a file, never from the command
//! line, and never printed. `Debug` and `Display` show a placeholder, and
//! [`Secret::redact`] masks the key wherever a server echoes it back.

use std::fmt;
use std::path::Path;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

const MASK: &str = "[redacted]";

impl Secret {
    /// A secret from text; surrounding white space (a file's newline) is dropped.
    pub fn new(value: impl AsRef<str>) -> Option<Self> {
        let value = value.as_ref().trim();
        (!value.is_empty()).then(|| Self(value.to_string()))
    }

    /// The key in environment variable `var`, if set and not empty.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var).ok().and_then(Self::new)
    }

    /// The key in the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        Self::new(text).ok_or_else(|| format!("the key file {} is empty", path.display()))
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key masked.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, MASK)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let s = Secret::new("sk-test-123\n").unwrap();
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "sk-test-123");
        assert_eq!(
            s.redact("bad key sk-test-123 given"),
            "bad key [redacted] given"
        );
        assert!(Secret::new("  ").is_none());
    }
}
