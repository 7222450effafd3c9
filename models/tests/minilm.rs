//! The exact reference scorer (all-MiniLM-L6-v2) on known pairs. Needs the
//! cached model (`.ci/run` fetches it and sets ANSWERLOOP_REQUIRE_MODEL).

mod common;
use answerloop_models::{MiniLm, MINILM};
use common::installed_or_skip;

fn model() -> Option<MiniLm> {
    Some(MiniLm::load(&installed_or_skip(&MINILM)?).unwrap())
}

const REFERENCE: &str = "Ice floats because water expands when it freezes, so solid ice is less dense than liquid water.";

#[test]
fn paraphrase_outscores_related_but_wrong_which_outscores_off_topic() {
    let Some(m) = model() else { return };
    let paraphrase = m
        .score("Frozen water takes up more space than liquid water, so ice is lighter and stays on top.", REFERENCE)
        .unwrap();
    let related = m
        .score(
            "Ice sinks to the bottom of lakes because it is heavier than water.",
            REFERENCE,
        )
        .unwrap();
    let off = m
        .score(
            "Index funds are a cheap way to invest in the stock market.",
            REFERENCE,
        )
        .unwrap();
    assert!(
        paraphrase > related && related > off,
        "{paraphrase} {related} {off}"
    );
    assert!(paraphrase > 0.6, "{paraphrase}");
    assert!(off < 0.2, "{off}");
}

#[test]
fn identical_text_scores_one_and_the_score_is_symmetric() {
    let Some(m) = model() else { return };
    assert!((m.score(REFERENCE, REFERENCE).unwrap() - 1.0).abs() < 1e-4);
    let a = "Rayleigh scattering makes the sky blue.";
    assert!((m.score(a, REFERENCE).unwrap() - m.score(REFERENCE, a).unwrap()).abs() < 1e-5);
    assert_eq!(m.score("", REFERENCE).unwrap(), 0.0);
}

#[test]
fn embeddings_are_unit_length_and_batches_match_singles() {
    let Some(m) = model() else { return };
    let texts = [
        "a short one",
        "a somewhat longer sentence about the weather today",
    ];
    let batch = m.embed(&texts).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let single = &m.embed(&[text]).unwrap()[0];
        let norm: f32 = single.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let drift: f32 = single
            .iter()
            .zip(&batch[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            drift < 1e-4,
            "padding changed the embedding of {text:?} by {drift}"
        );
    }
}
