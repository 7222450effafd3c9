//! Any bytes as a question file: a data set whose questions all have a
//! title, a reference and bounded fields, or an error that says why.
#![no_main]

use answerloop_dataset::{parse, MAX_FIELD_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data, "fuzz.csv") {
        Ok(set) => {
            assert!(!set.questions.is_empty());
            for q in &set.questions {
                assert!(!q.title.is_empty() && !q.reference.is_empty());
                assert!(q.reference.len() <= MAX_FIELD_BYTES && q.title.len() <= MAX_FIELD_BYTES);
                assert_eq!(q.id.len(), 16);
            }
            for row in &set.report.malformed {
                assert!(!row.reason.is_empty());
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.csv")),
    }
});
