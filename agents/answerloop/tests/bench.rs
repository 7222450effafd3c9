//! `answerloop bench llm` runs and reports its figures as one JSON object.
//! (Its numbers are measured by hand and recorded in docs/benchmarks.md; no
//! test bounds them, since these machines are shared and noisy.)

mod common;

#[test]
fn bench_llm_prints_its_figures_as_json() {
    let v = common::json_of([
        "bench",
        "llm",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0.2",
        "--quota-per-sec",
        "50",
    ]);
    for key in [
        "utilisation",
        "success_per_sec",
        "bound_per_sec",
        "calls",
        "retries",
        "given_up",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert!(v["success_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["bound_per_sec"], 50.0);
}
