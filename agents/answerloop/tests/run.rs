//! End-to-end: `answerloop run` on the embedded broker with the real
//! SmartModules, against llm-sim over real HTTP on loopback.

mod common;

use std::time::Duration;

use answerloop::llm_agent::LlmAgentConfig;
use answerloop::pipeline;
use answerloop::traffic::dataset;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm_sim::{Quality, SimConfig};
use answerloop_schema::Verdict;
use answerloop_storage::Store;
use common::{binary, error_of, json_of, sim, sim_run};

/// Every question of the sample is final exactly once: stored or
/// dead-lettered, never both, never neither.
fn assert_each_final_once(store: &Store, ids: &[String]) {
    for id in ids {
        let stored = store.get(id).unwrap().is_some();
        let dead = store.dead_letter(id).unwrap().is_some();
        assert!(
            stored ^ dead,
            "question {id}: stored={stored} dead-lettered={dead}"
        );
    }
}

fn sample_ids(limit: usize) -> Vec<String> {
    dataset::sample()
        .questions
        .into_iter()
        .take(limit)
        .map(|q| q.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_runs_to_the_end_and_a_second_run_calls_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let summary = pipeline::run(sim_run(dir.path(), SimConfig::default(), None))
        .await
        .unwrap();
    let total = dataset::sample().questions.len();
    assert!(total >= 200);
    assert_eq!(summary.questions, total);
    assert_eq!(summary.stored + summary.dead_letters, total);
    assert_eq!(summary.stored, summary.accepted + summary.exhausted);
    assert_eq!(summary.dead_letters, 0, "no faults were injected");
    assert!(
        summary.exhausted > 0 && summary.accepted > 0,
        "the feedback loop had work: {summary:?}"
    );
    assert!(
        summary.llm_calls as usize > total,
        "some answers were regenerated"
    );
    assert_eq!(
        summary.stored_by_attempt.iter().sum::<usize>(),
        summary.stored
    );
    let first = summary.mean_score_first_attempt.unwrap();
    let stored = summary.mean_score_stored.unwrap();
    assert!(
        stored > first,
        "regeneration keeps the best: first {first}, stored {stored}"
    );

    let again = pipeline::run(sim_run(dir.path(), SimConfig::default(), None))
        .await
        .unwrap();
    assert_eq!(again.llm_calls, 0);
    assert_eq!((again.already_final, again.sent), (total, 0));
    assert_eq!(again.stored, summary.stored);

    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(store.answer_count(), summary.stored);
    assert_each_final_once(&store, &sample_ids(total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_run_on_the_same_file_sends_only_the_questions_not_yet_final() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("q.csv");
    // The sample with every row twice: repeats are left out by id.
    std::fs::write(
        &data,
        format!("{}{}", dataset::SAMPLE_CSV, dataset::SAMPLE_CSV),
    )
    .unwrap();
    let home = dir.path().join("home");
    let options = |limit| pipeline::RunOptions {
        data: Some(data.clone()),
        ..sim_run(&home, sim(Quality::Fixed(1.0)), Some(limit))
    };
    let first = pipeline::run(options(5)).await.unwrap();
    assert_eq!((first.questions, first.sent, first.stored), (5, 5, 5));
    assert_eq!(first.rows, 5, "a limit reads only as far as it needs");
    let second = pipeline::run(options(12)).await.unwrap();
    assert_eq!(
        (second.questions, second.already_final, second.sent),
        (12, 5, 7)
    );
    assert_eq!(second.stored, 12);
    assert_eq!(second.llm_calls, 7, "one accepted answer a new question");
    let total = dataset::sample().questions.len();
    let all = pipeline::run(options(10_000)).await.unwrap();
    assert_eq!((all.questions, all.already_final), (total, 12));
    assert_eq!(all.rows_skipped, total, "each repeat counted once");
    let store = Store::open(&home.join("store")).unwrap();
    assert_eq!(store.answer_count(), total);
    assert_each_final_once(&store, &sample_ids(total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_30_percent_mixed_faults_every_question_ends_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig {
        fail_rate: 0.3,
        hang: Duration::from_secs(5),
        retry_after: Duration::from_millis(20),
        ..SimConfig::default()
    };
    let mut options = sim_run(dir.path(), config, Some(120));
    options.provider = ProviderSpec::new(
        ProviderKind::Sim,
        None,
        None,
        None,
        Duration::from_millis(300),
    );
    options.agent.retry.base = Duration::from_millis(5);
    options.agent.retry.cap = Duration::from_millis(50);
    let summary = pipeline::run(options).await.unwrap();
    assert_eq!(summary.stored + summary.dead_letters, 120, "{summary:?}");
    assert!(
        summary.llm_failures > 0 && summary.llm_retries > 0,
        "{summary:?}"
    );
    assert!(
        summary.llm_deferred > 0,
        "quota faults park questions: {summary:?}"
    );
    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_each_final_once(&store, &sample_ids(120));
    for letter in store.dead_letters() {
        let letter = letter.unwrap();
        assert!(!letter.reason.is_empty());
        assert!(
            letter.question.is_some(),
            "the question travels with its dead letter"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_answers_are_regenerated_and_exhausted_questions_keep_their_best() {
    let dir = tempfile::tempdir().unwrap();
    let summary = pipeline::run(sim_run(dir.path(), sim(Quality::Fixed(0.0)), Some(30)))
        .await
        .unwrap();
    assert_eq!(summary.exhausted, 30, "{summary:?}");
    // Three scored attempts a question, no more; each regenerated attempt
    // is the best of `regenerate_candidates` draws, a call each.
    let draws = u64::from(LlmAgentConfig::default().regenerate_candidates);
    assert_eq!(
        summary.llm_calls,
        30 * (1 + 2 * draws),
        "three scored attempts a question, no more"
    );
    let store = Store::open(&dir.path().join("store")).unwrap();
    for answer in store.answers() {
        let answer = answer.unwrap();
        assert_eq!(answer.verdict, Verdict::Exhausted);
        assert_eq!(answer.attempts, 3);
        assert!((1..=3).contains(&answer.attempt));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_answers_are_accepted_at_the_first_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let summary = pipeline::run(sim_run(dir.path(), sim(Quality::Fixed(1.0)), Some(30)))
        .await
        .unwrap();
    assert_eq!((summary.accepted, summary.llm_calls), (30, 30));
    assert_eq!(summary.stored_by_attempt, vec![30]);
}

#[test]
fn run_json_prints_one_object_on_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let v = json_of([
        "run", "--llm", "sim", "--json", "--limit", "20", "--home", home,
    ]);
    for key in [
        "questions",
        "stored",
        "accepted",
        "exhausted",
        "dead_letters",
        "llm_calls",
        "mean_score_first_attempt",
        "mean_score_stored",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["questions"], 20);
    assert_eq!(
        v["stored"].as_u64().unwrap() + v["dead_letters"].as_u64().unwrap(),
        20
    );
}

#[test]
fn a_home_holding_other_data_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = error_of(["run".as_ref(), "--home".as_ref(), dir.path().as_os_str()]);
    assert!(
        err.contains("refusing to use") && err.contains("not empty"),
        "{err}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}

#[test]
fn a_file_that_is_not_csv_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("questions.json");
    std::fs::write(&data, "{\"a\": [1, 2, 3]}\n{\"b\": 2}\n").unwrap();
    let home = dir.path().join("home");
    let err = error_of([
        "run".as_ref(),
        "--home".as_ref(),
        home.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    assert!(
        err.contains("questions.json is not a Yahoo! Answers CSV"),
        "{err}"
    );
    assert!(
        !dir.path().join("home").exists(),
        "nothing written for a bad input"
    );
}

#[test]
fn malformed_rows_are_reported_with_line_numbers_and_the_rest_answered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("q.csv");
    std::fs::write(
        &data,
        "\"1\",\"Is tea healthy?\",\"\",\"Tea has antioxidants and little caffeine.\"\n\
         \"12\",\"Bad class?\",\"\",\"x\"\n\
         \"2\",\"Why is the sea salty?\",\"\",\"Rivers carry dissolved salts into it.\"\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    let v = json_of([
        "run".as_ref(),
        "--llm".as_ref(),
        "sim".as_ref(),
        "--json".as_ref(),
        "--home".as_ref(),
        home.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    assert_eq!(v["questions"], 2);
    assert_eq!(v["rows_malformed"], 1);
    assert!(
        v["malformed_examples"][0]
            .as_str()
            .unwrap()
            .starts_with("line 2:"),
        "{v}"
    );
}

#[test]
fn a_broker_in_use_by_another_process_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let first = binary()
        .args(["run", "--llm", "sim", "--limit", "1", "--home"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(first.status.success());
    // Hold the home's broker in this process, then start a second run.
    let _held =
        answerloop_broker::embedded::EmbeddedBroker::open(&dir.path().join("broker")).unwrap();
    let err = error_of([
        "run".as_ref(),
        "--llm".as_ref(),
        "sim".as_ref(),
        "--home".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(
        err.contains("in use by another answerloop process"),
        "{err}"
    );
}

/// `eval regenerate` runs each strategy through the whole pipeline on a
/// home of its own; its figures agree with one another and with the store.
#[test]
fn best_of_three_draws_three_answers_a_regenerated_attempt_and_keeps_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let out = json_of([
        "eval",
        "regenerate",
        "--home",
        dir.path().to_str().unwrap(),
        "--llm",
        "sim",
        "--strategies",
        "plain@0.7,plain@0.7x3",
        "--json",
    ]);
    let outcomes = out.as_array().expect("one object a strategy");
    let answers = |o: &serde_json::Value, attempt: usize| {
        o["by_attempt"].as_array().unwrap()[attempt]["answers"]
            .as_u64()
            .unwrap()
    };
    let later = |o: &serde_json::Value| -> u64 {
        (1..o["by_attempt"].as_array().unwrap().len())
            .map(|a| answers(o, a))
            .sum()
    };
    let (single, best) = (&outcomes[0], &outcomes[1]);
    assert_eq!(best["strategy"], "plain@0.7x3");
    assert!(later(single) > 10 && later(best) > 10, "{out}");
    // One call an answer; three for each regenerated attempt's answer.
    assert_eq!(
        single["llm_calls"].as_u64().unwrap(),
        answers(single, 0) + later(single)
    );
    assert_eq!(
        best["llm_calls"].as_u64().unwrap(),
        answers(best, 0) + 3 * later(best)
    );
    // The simulator's answers are independent draws of quality: the best
    // of three regenerated answers scores above a single one.
    let mean = |o: &serde_json::Value| o["by_attempt"][1]["mean_score"].as_f64().unwrap();
    assert!(mean(best) > mean(single), "{out}");
}

#[test]
fn eval_regenerate_compares_strategies_on_the_same_questions() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("runs");
    let home = dir.path().join("home");
    let limit = 24;
    let out = json_of([
        "eval",
        "regenerate",
        "--home",
        home.to_str().unwrap(),
        "--keep",
        keep.to_str().unwrap(),
        "--llm",
        "sim",
        "--limit",
        &limit.to_string(),
        "--strategies",
        "feedback@0,revise@0.7",
        "--json",
    ]);
    let outcomes = out.as_array().expect("one object a strategy");
    assert_eq!(outcomes.len(), 2);
    for (o, name) in outcomes.iter().zip(["feedback@0", "revise@0.7"]) {
        assert_eq!(o["strategy"], name);
        assert_eq!(o["questions"], limit);
        let stored: u64 = o["stored_by_attempt"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(stored, o["stored"].as_u64().unwrap());
        assert_eq!(
            o["stored"].as_u64().unwrap() + o["dead_letters"].as_u64().unwrap(),
            limit as u64
        );
        let attempts = o["by_attempt"].as_array().unwrap();
        assert_eq!(attempts[0]["attempt"], 1);
        assert_eq!(
            attempts[0]["answers"], limit,
            "every question answered once first"
        );
        // A later attempt is asked only of questions rejected before it.
        for pair in attempts.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let rejected =
                before["answers"].as_u64().unwrap() - before["accepted"].as_u64().unwrap();
            assert!(after["answers"].as_u64().unwrap() <= rejected, "{o}");
        }
        let first = o["mean_score_first_attempt"].as_f64().unwrap();
        assert!((first - attempts[0]["mean_score"].as_f64().unwrap()).abs() < 1e-9);
        let lift = o["lift"].as_f64().unwrap();
        let stored_mean = o["mean_score_stored"].as_f64().unwrap();
        assert!((lift - (stored_mean - first)).abs() < 1e-9);
        // Keeping the best attempt can only raise the mean over the first.
        assert!(lift >= -1e-9, "{o}");
    }
    // Each strategy's run stays behind as a home of its own.
    let store = Store::open(&keep.join("1-revise@0.7").join("store")).unwrap();
    assert_eq!(
        store.answer_count() as u64,
        outcomes[1]["stored"].as_u64().unwrap()
    );
    // A strategy that is not PROMPT@TEMPERATURE is refused by name.
    let err = error_of([
        "eval",
        "regenerate",
        "--llm",
        "sim",
        "--strategies",
        "revise",
    ]);
    assert!(err.contains("PROMPT@TEMPERATURE"), "{err}");
}
