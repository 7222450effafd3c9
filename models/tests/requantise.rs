//! `--model-weights q4_0` and `q8_0`: the packaged Q4_1 weights
//! requantised by llama.cpp, made once, made again when the package is newer, and a
//! clear error (with nothing left behind) for a file that is not a model.

use std::path::{Path, PathBuf};

mod common;
use answerloop_models::batched::BatchedModel;
use answerloop_models::requantise::{derived_file, EngineWeights, Quant};
use answerloop_models::SMOLLM2;
use common::installed_or_skip;

fn q4_0_file(packaged: &Path) -> Result<PathBuf, answerloop_models::ModelError> {
    derived_file(packaged, Quant::Q4_0)
}

/// A copy of the installed package in `dir`, or None (the test skips) when
/// the model is not installed.
fn package_copy(dir: &Path) -> Option<PathBuf> {
    let cache = installed_or_skip(&SMOLLM2)?;
    let packaged = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::copy(cache.main_file(&SMOLLM2), &packaged).unwrap();
    Some(packaged)
}

#[test]
fn the_engine_runs_q4_0_weights_made_once_from_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let Some(packaged) = package_copy(dir.path()) else {
        return;
    };

    let derived = q4_0_file(&packaged).unwrap();
    assert_eq!(
        derived.file_name().unwrap(),
        "SmolLM2-135M-Instruct.Q4_0.gguf"
    );
    let source = BatchedModel::load(&packaged).unwrap();
    let engine = BatchedModel::load(&derived).unwrap();
    assert_eq!(source.file_type(), Some(3), "the package is Q4_1");
    assert_eq!(engine.file_type(), Some(2), "the engine's file is Q4_0");
    assert!(engine.size() < source.size());

    let made = modified(&derived);
    assert_eq!(q4_0_file(&packaged).unwrap(), derived);
    assert_eq!(modified(&derived), made, "a fresh file is not made again");

    // A package fetched again is newer than what was made from it.
    let later = made + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&packaged)
        .unwrap()
        .set_modified(later)
        .unwrap();
    q4_0_file(&packaged).unwrap();
    assert!(
        modified(&derived) > made,
        "made again from the newer package"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 2, "no partial file left: {left:?}");
}

#[test]
fn q8_0_weights_are_made_beside_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let Some(packaged) = package_copy(dir.path()) else {
        return;
    };
    let derived = EngineWeights::parse("q8_0")
        .unwrap()
        .file(&packaged)
        .unwrap();
    assert_eq!(
        derived.file_name().unwrap(),
        "SmolLM2-135M-Instruct.Q8_0.gguf"
    );
    let source = BatchedModel::load(&packaged).unwrap();
    let engine = BatchedModel::load(&derived).unwrap();
    assert_eq!(engine.file_type(), Some(7), "the engine's file is Q8_0");
    assert!(engine.size() > source.size());
}

#[test]
fn a_file_that_is_not_a_model_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.Q4_1.gguf");
    std::fs::write(&bogus, b"not a gguf").unwrap();
    let err = q4_0_file(&bogus).unwrap_err().to_string();
    assert!(err.contains("bogus.Q4_1.gguf"), "{err}");
    assert!(err.contains("requantise"), "{err}");
    let missing = q4_0_file(&dir.path().join("missing.gguf")).unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the bogus file: {left:?}");
}

#[test]
fn the_package_runs_unless_q4_0_is_asked_for_and_a_wrong_name_is_refused() {
    let source = Path::new("models/x.Q4_1.gguf");
    assert_eq!(EngineWeights::parse("").unwrap(), EngineWeights::Packaged);
    assert_eq!(EngineWeights::Packaged.file(source).unwrap(), source);
    assert_eq!(EngineWeights::parse("q4_0").unwrap(), EngineWeights::Q4_0);
    let err = EngineWeights::parse("q5").unwrap_err().to_string();
    assert_eq!(EngineWeights::parse("q8_0").unwrap(), EngineWeights::Q8_0);
    assert!(
        err.contains("\"q5\"") && err.contains("packaged, q4_0, q8_0"),
        "{err}"
    );
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}
