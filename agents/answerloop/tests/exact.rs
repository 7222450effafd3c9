//! `--scorer exact`: the agents carry all-MiniLM-L6-v2 vectors and
//! `answer-score` takes their cosine. Against the yardstick, `answerloop
//! score --exact` (`MiniLm::score`): on the eval pairs, and on a whole run.
//! Needs the cached model (`.ci/run` fetches it and sets
//! ANSWERLOOP_REQUIRE_MODEL).

mod common;

use answerloop_models::{MiniLm, ModelCache, MINILM};
use answerloop_storage::Store;
use common::{binary, installed_or_skip, json_from};

fn with_models(cache: &ModelCache) -> std::process::Command {
    let mut command = binary();
    command.env("ANSWERLOOP_MODELS_DIR", cache.root());
    command
}

#[test]
fn carried_exact_vectors_decide_as_score_exact_on_at_least_99_percent_of_the_eval_pairs() {
    let Some(cache) = installed_or_skip(&MINILM) else {
        return;
    };
    let v = json_from(with_models(&cache).args(["eval", "carried", "--json", "--single", "4"]));
    assert_eq!(v["pairs"].as_u64().unwrap() as usize, 760, "{v}");
    let written = v["written_width"].as_str().unwrap();
    for (width, figures) in v["widths"].as_object().unwrap() {
        eprintln!(
            "{width}: agreement {}, max |Δscore| {}, mean |Δscore| {}, {} characters",
            figures["agreement"],
            figures["max_abs_delta"],
            figures["mean_abs_delta"],
            figures["vector_chars"]
        );
    }
    let figures = &v["widths"][written];
    let agreement = figures["agreement"].as_f64().unwrap();
    assert!(agreement >= 0.99, "agreement {agreement}: {figures}");
    let worst = figures["max_abs_delta"].as_f64().unwrap();
    assert!(worst < 1e-3, "max |Δscore| {worst}: {figures}");
    assert!(v["embed"]["batched_ms_per_text"].as_f64().unwrap() > 0.0);
}

/// `run --scorer exact`: every stored score is the original metric's on
/// the stored answer and its reference, within quantisation (and the
/// difference of embedding a text alone or in a batch); the static scorer
/// would have given other numbers.
#[test]
fn a_run_with_the_exact_scorer_stores_the_original_metric() {
    let Some(cache) = installed_or_skip(&MINILM) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let limit = 12;
    let v = json_from(with_models(&cache).args([
        "run", "--llm", "sim", "--scorer", "exact", "--json", "--limit", "12", "--home", home,
    ]));
    assert_eq!(v["questions"], limit, "{v}");
    assert_eq!(v["dead_letters"], 0, "{v}");
    let model = MiniLm::load(&cache).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let (mut stored, mut unlike_static, mut worst) = (0, 0, 0.0f32);
    for answer in store.answers() {
        let answer = answer.unwrap();
        let exact = model.score(&answer.answer, &answer.reference).unwrap();
        let delta = (answer.score - exact).abs();
        assert!(
            delta < 1e-3,
            "{}: stored {} against score --exact {exact}",
            answer.id,
            answer.score
        );
        worst = worst.max(delta);
        let static_score = answerloop_scoring::semantic::score(&answer.answer, &answer.reference);
        unlike_static += usize::from((answer.score - static_score).abs() > 0.01);
        stored += 1;
    }
    eprintln!("{stored} stored answers, max |Δscore| against score --exact {worst}");
    assert_eq!(stored, v["stored"].as_u64().unwrap() as usize);
    assert!(stored > 0);
    assert!(
        unlike_static > 0,
        "the scores are the exact scorer's, not the static one's"
    );
}

#[test]
fn an_unknown_scorer_is_refused_by_name() {
    let out = binary()
        .args(["run", "--llm", "sim", "--scorer", "minilm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("minilm") && err.contains("exact"), "{err}");
}

/// `bench score --scorer exact` runs the chain over records carrying both
/// exact vectors, and checks that the chain scored them by their cosine.
#[test]
fn bench_score_measures_the_chain_on_records_carrying_exact_vectors() {
    let Some(cache) = installed_or_skip(&MINILM) else {
        return;
    };
    let v = json_from(with_models(&cache).args([
        "bench",
        "score",
        "--scorer",
        "exact",
        "--records",
        "300",
        "--batch",
        "100",
        "--text-bytes",
        "120",
        "--exact-pairs",
        "1",
    ]));
    assert_eq!(v["scorer"], "exact", "{v}");
    assert_eq!(v["records"], 300, "{v}");
    let (carried, plain) = (
        v["record_bytes"].as_u64().unwrap(),
        v["uncarried_record_bytes"].as_u64().unwrap(),
    );
    assert!(
        carried > plain + 2_000,
        "two exact vectors: {carried} against {plain}"
    );
}
