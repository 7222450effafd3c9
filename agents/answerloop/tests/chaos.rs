//! The crash test, small: `answerloop chaos` runs the broker server and the
//! traffic, LLM and store agents as separate processes, SIGKILLs each agent
//! three times at random moments under 30% LLM faults, and checks the store
//! question by question. The full run (2,000 questions) is in
//! docs/reliability.md.

mod common;

#[test]
fn killed_agents_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let report = common::json_of([
        "chaos",
        "--questions",
        "150",
        "--kills",
        "3",
        "--fail-rate",
        "0.3",
        "--seed",
        "7",
        "--dir",
        dir.path().join("run").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["questions"], 150);
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["duplicates"], 0, "{report:#}");
    assert_eq!(report["dead_letters_without_reason"], 0);
    let finals = report["stored"].as_u64().unwrap() + report["dead_letters"].as_u64().unwrap();
    assert_eq!(finals, 150, "{report:#}");
    for agent in ["traffic", "llm", "store"] {
        assert_eq!(report["kills"][agent], 3, "{report:#}");
    }
    // The faults and the feedback loop did happen: more answers than
    // questions went through the broker.
    assert!(
        report["answer_records"].as_u64().unwrap() > 150,
        "{report:#}"
    );
    // The agents logged to the run directory, every start of them (a start
    // can be killed before the agent says anything).
    let llm_log = std::fs::read_to_string(dir.path().join("run/logs/llm.log")).unwrap();
    assert_eq!(
        llm_log.matches("--- launcher: start ").count(),
        4,
        "{llm_log}"
    );
    assert!(llm_log.contains("llm agent: llm-sim"), "{llm_log}");
}
