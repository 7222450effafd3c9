//! Any two texts get a score in [0, 1] from both scorers, and any bytes
//! given as an embedding table are parsed or refused, never a panic.
#![no_main]

use answerloop_scoring::{lexical, semantic, table::Table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0 {
        let _ = Table::parse(rest);
        return;
    }
    let split = rest
        .iter()
        .position(|&b| b == 0xff)
        .unwrap_or(rest.len() / 2);
    let answer = String::from_utf8_lossy(&rest[..split]);
    let reference = String::from_utf8_lossy(&rest[(split + 1).min(rest.len())..]);
    for score in [
        semantic::score(&answer, &reference),
        lexical::score(&answer, &reference),
    ] {
        assert!(score.is_finite() && (0.0..=1.0).contains(&score), "{score}");
    }
});
