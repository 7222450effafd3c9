//! The answerloop home: one directory for all state (the embedded broker's
//! topics, the answer store, the model cache when `--home` is given). A marker file says a
//! directory is ours; a non-empty directory without it is refused, never
//! written into.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The file that marks a directory as an answerloop home.
pub const MARKER: &str = "answerloop.home";
const MARKER_TEXT: &str = "answerloop home, layout 1\n";
/// The home's model cache (see `answerloop_models::ModelCache::locate`).
const MODELS: &str = "models";

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `--home`, else `ANSWERLOOP_HOME` (clap fills both), else the user's
    /// data directory.
    pub fn resolve(explicit: Option<&Path>) -> anyhow::Result<Self> {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_root().context(
                "no home directory: pass --home DIR or set ANSWERLOOP_HOME (HOME is not set either)",
            )?,
        };
        Ok(Self { root })
    }

    /// Create the home if needed, or check that an existing one is ours.
    pub fn prepare(&self) -> anyhow::Result<()> {
        let marker = self.root.join(MARKER);
        if marker.is_file() {
            return Ok(());
        }
        if self.root.exists() {
            if !self.root.is_dir() {
                bail!(
                    "refusing to use {} as the answerloop home: it is not a directory",
                    self.root.display()
                );
            }
            let entries = std::fs::read_dir(&self.root)
                .with_context(|| format!("cannot read {}", self.root.display()))?;
            // A `models/` folder alone is the model cache that `models fetch
            // --home` left before it marked the home itself.
            let mut others = entries
                .filter_map(Result::ok)
                .filter(|e| !(e.file_name() == MODELS && e.path().is_dir()));
            if others.next().is_some() {
                bail!(
                    "refusing to use {} as the answerloop home: it is not empty and has no {MARKER} \
                     marker, so it may hold other data. Choose a new or empty directory.",
                    self.root.display()
                );
            }
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create the home {}", self.root.display()))?;
        std::fs::write(&marker, MARKER_TEXT)
            .with_context(|| format!("cannot write {}", marker.display()))?;
        Ok(())
    }

    /// Check that the home exists and is ours, for commands that only read.
    pub fn existing(&self) -> anyhow::Result<()> {
        if !self.root.join(MARKER).is_file() {
            bail!(
                "{} is not an answerloop home (no {MARKER}): run `answerloop run --home {}` first",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The embedded broker's database.
    pub fn broker(&self) -> PathBuf {
        self.root.join("broker")
    }

    /// The answer store's database.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The last `run`'s summary (JSON): what the report knows of the LLM
    /// calls' circuits, which no topic or store records.
    pub fn last_run(&self) -> PathBuf {
        self.root.join("last-run.json")
    }
}

fn default_root() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("answerloop"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_empty_directory_becomes_a_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(&dir.path().join("new"))).unwrap();
        home.prepare().unwrap();
        home.existing().unwrap();
        home.prepare().unwrap();
        let empty = Home::resolve(Some(dir.path())).unwrap();
        std::fs::remove_dir_all(dir.path().join("new")).unwrap();
        empty.prepare().unwrap();
    }

    #[test]
    fn a_directory_holding_other_data_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thesis.tex"), "precious").unwrap();
        let home = Home::resolve(Some(dir.path())).unwrap();
        let err = home.prepare().unwrap_err().to_string();
        assert!(
            err.contains("refusing") && err.contains("not empty"),
            "{err}"
        );
        assert!(!dir.path().join(MARKER).exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(home.existing().is_err());
    }

    /// Regression: `models fetch --home DIR` left DIR holding `models/` and
    /// no marker, and `run --home DIR` then refused it.
    #[test]
    fn a_directory_holding_only_a_model_cache_becomes_a_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(MODELS)).unwrap();
        let home = Home::resolve(Some(dir.path())).unwrap();
        home.prepare().unwrap();
        home.existing().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::remove_file(dir.path().join(MARKER)).unwrap();
        assert!(home.prepare().is_err(), "other data still refuses it");
    }

    #[test]
    fn a_file_is_not_a_home() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(Home::resolve(Some(&file)).unwrap().prepare().is_err());
    }
}
