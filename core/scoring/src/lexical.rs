//! Lexical similarity: the cosine of the term-frequency vectors of the answer
//! and the reference, over lower-cased alphanumeric words with common English
//! stop words removed.
//!
//! Cheap and total (any input gives a number in `[0, 1]`, empty text gives 0),
//! but blind to synonyms and paraphrase: a correct answer in other words
//! scores low. It is the baseline that a semantic score must beat.

/// Words that carry no topic and would make every pair look alike.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "get",
    "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "just", "may", "me", "more", "most", "my", "no", "not", "of", "on", "one", "or", "other",
    "our", "out", "she", "so", "some", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "to", "up", "us", "very", "was", "we", "were", "what", "when",
    "which", "who", "why", "will", "with", "would", "you", "your",
];

/// Similarity of `answer` to `reference` in `[0, 1]`.
pub fn score(answer: &str, reference: &str) -> f32 {
    let a = term_counts(answer);
    let b = term_counts(reference);
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut dot, mut i, mut j) = (0u64, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += u64::from(a[i].1) * u64::from(b[j].1);
                i += 1;
                j += 1;
            }
        }
    }
    let norm = |v: &[(u64, u32)]| {
        v.iter()
            .map(|&(_, c)| (c as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let cosine = dot as f64 / (norm(&a) * norm(&b));
    cosine.clamp(0.0, 1.0) as f32
}

/// Sorted `(word hash, count)` pairs of the text's content words.
fn term_counts(text: &str) -> Vec<(u64, u32)> {
    let mut hashes: Vec<u64> = words(text)
        .filter(|w| !is_stop_word(w))
        .map(|w| fnv1a(w.as_bytes()))
        .collect();
    hashes.sort_unstable();
    let mut counts: Vec<(u64, u32)> = Vec::with_capacity(hashes.len());
    for h in hashes {
        match counts.last_mut() {
            Some((last, n)) if *last == h => *n += 1,
            _ => counts.push((h, 1)),
        }
    }
    counts
}

/// Lower-cased runs of alphanumeric characters.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn identical_text_scores_one_and_disjoint_text_zero() {
        let r = "Water expands when it freezes, so ice is less dense and floats.";
        assert!((score(r, r) - 1.0).abs() < 1e-6);
        assert_eq!(score("Bananas taste sweet", r), 0.0);
    }

    #[test]
    fn case_and_punctuation_do_not_change_the_score() {
        let r = "Ice floats because it is less dense than water.";
        assert_eq!(
            score("ICE floats; less DENSE!", r),
            score("ice floats less dense", r)
        );
    }

    #[test]
    fn empty_or_stop_word_only_text_scores_zero() {
        assert_eq!(score("", "ice floats"), 0.0);
        assert_eq!(score("ice floats", ""), 0.0);
        assert_eq!(score("the and of", "the and of"), 0.0);
    }

    #[test]
    fn more_overlap_scores_higher() {
        let r = "Ice floats because frozen water is less dense than liquid water.";
        let close = score(
            "Frozen water is less dense than liquid water, so ice floats.",
            r,
        );
        let partial = score("Ice floats on lakes in winter.", r);
        let off = score("Interest rates affect mortgage payments.", r);
        assert!(close > partial && partial > off, "{close} {partial} {off}");
    }
}
