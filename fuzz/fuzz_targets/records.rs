//! Any bytes as a record on `answers`: decoding never fails, answer-score's
//! record function always yields a record that decodes, and regenerate and
//! quality-gate send each scored record exactly one way.
#![no_main]

use answerloop_schema::Scored;
use answerloop_scoring::{decide, Params};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let params = Params::default();
    let _ = Scored::decode(data);
    let scored = decide::score_record(data, &params);
    match Scored::decode(&scored) {
        Scored::Answer(answer) => {
            let score = answer.score.expect("answer-score sets a score");
            assert!(score.is_finite() && (0.0..=1.0).contains(&score));
        }
        Scored::Invalid(_) => {}
    }
    let regenerated = decide::regenerate_record(&scored, &params).is_some();
    let stored = decide::gate_record(&scored, &params);
    assert!(
        regenerated != stored,
        "regenerate {regenerated}, gate {stored}"
    );
});
