//! The semantic score that runs inside WASM: static token embeddings
//! distilled from all-MiniLM-L6-v2 and fitted to its sentence embeddings
//! (see `answerloop models distill`, `models learn` and docs/scoring.md). A text's vector is the importance-weighted sum of its
//! WordPiece tokens' vectors; the score is the cosine of the answer's and the
//! reference's vectors, clamped to [0, 1].
//!
//! Tokenisation follows BERT's uncased tokenizer closely enough for the
//! table's vocabulary: lower-case, common Latin accents stripped, words are
//! runs of letters and digits (punctuation never counts, so it cannot move a
//! score), then greedy longest-match WordPiece. A word with no WordPiece
//! split is left out, as BERT maps it to `[UNK]`.

use std::sync::OnceLock;

use crate::classify::{next_clear, next_set, ByteClasses, PADDING};
use crate::table::{RowRef, Table, TableError};
use crate::vocab::head_mask;
use crate::vocab::Vocab;

/// The committed table (about 3.9 MB), built into every binary that scores.
static TABLE: &[u8] = include_bytes!("../data/static-embedding.bin");

/// The table's size budget: it is baked into `answer_score.wasm`, which a
/// broker loads (and Fluvio stores) whole, so it stays under 4 MB.
pub const TABLE_BUDGET_BYTES: usize = 4_000_000;

/// BERT gives words longer than this `[UNK]`.
const MAX_WORD_CHARS: usize = 100;

pub struct StaticModel<'a> {
    table: Table<'a>,
    /// Word-initial pieces.
    words: Vocab<'a>,
    /// Continuation pieces, without their `##`.
    pieces: Vocab<'a>,
    /// The longest piece, in bytes: no match is tried beyond it.
    max_piece: usize,
    /// A hash of the table's bytes, in hex: which table a carried vector
    /// was made with (see [`crate::carried`]).
    fingerprint: String,
}

/// Buffers reused from text to text, so that scoring a record allocates
/// nothing once they have grown.
#[derive(Debug, Default)]
pub struct Scratch {
    ids: Vec<u32>,
    rows: Vec<RowRef>,
    word: String,
    classes: ByteClasses,
}

/// A text's vector with its squared norm: all the cosine needs of one side,
/// so a reference's can be kept and reused.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub norm2: f64,
}

/// The built-in model, parsed on first use.
pub fn model() -> &'static StaticModel<'static> {
    static MODEL: OnceLock<StaticModel<'static>> = OnceLock::new();
    MODEL.get_or_init(|| {
        StaticModel::parse(TABLE).expect("the committed table parses (a test checks it)")
    })
}

/// The semantic score of `answer` against `reference`, in [0, 1].
pub fn score(answer: &str, reference: &str) -> f32 {
    model().score(answer, reference)
}

impl<'a> StaticModel<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TableError> {
        let table = Table::parse(bytes)?;
        let mut words = Vec::new();
        let mut pieces = Vec::new();
        let mut max_piece = 0;
        for (id, token) in table.tokens.iter().enumerate() {
            match token.strip_prefix("##") {
                Some(piece) => pieces.push((piece.as_bytes(), id as u32)),
                None => words.push((token.as_bytes(), id as u32)),
            };
            max_piece = max_piece.max(token.len());
        }
        Ok(Self {
            words: Vocab::new(&words),
            pieces: Vocab::new(&pieces),
            table,
            max_piece,
            fingerprint: crate::carried::fingerprint(bytes),
        })
    }

    pub fn table(&self) -> &Table<'a> {
        &self.table
    }

    /// Which table this is, for vectors carried in records.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The WordPiece token ids of `text`.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        let mut scratch = Scratch::default();
        self.tokens_into(text, &mut scratch);
        scratch.ids
    }

    /// The WordPiece token ids of `text` into `scratch.ids`.
    ///
    /// A word is a run of letters and digits. Runs of ASCII ones (nearly
    /// all of them) are found from the byte classes and looked up where
    /// they lie in the lowered copy of the text, their first eight bytes
    /// read in one load; a run that touches a non-ASCII character goes a
    /// char at a time, as BERT's tokenizer would.
    fn tokens_into(&self, text: &str, scratch: &mut Scratch) {
        let Scratch {
            ids, word, classes, ..
        } = scratch;
        ids.clear();
        let bytes = text.as_bytes();
        let len = bytes.len();
        classes.fill(bytes);
        let any_non_ascii = classes.any_non_ascii;
        let mut at = 0;
        while at < len {
            let start = next_set(&classes.alphanumeric, at, len);
            if any_non_ascii {
                let non_ascii = next_set(&classes.non_ascii, at, start);
                if non_ascii < start {
                    at = self.chars_from(text, non_ascii, word, ids);
                    continue;
                }
            }
            if start == len {
                break;
            }
            let end = next_clear(&classes.alphanumeric, start, len);
            if any_non_ascii && end < len && !bytes[end].is_ascii() {
                at = self.chars_from(text, start, word, ids);
                continue;
            }
            let lowered = &classes.lower[start..end];
            let eight: [u8; 8] = classes.lower[start..start + PADDING]
                .try_into()
                .expect("the lowered text is padded");
            let head = u64::from_le_bytes(eight) & head_mask(end - start);
            match self.words.get_by_head(head, lowered) {
                Some(id) => ids.push(id),
                // An ASCII word outside the vocabulary: split into pieces.
                None => match std::str::from_utf8(lowered) {
                    Ok(lowered) => self.word_pieces(lowered, ids),
                    Err(_) => unreachable!("ASCII letters and digits are UTF-8"),
                },
            }
            at = end;
        }
    }

    /// Tokenise a char at a time from `at` (a char boundary between words)
    /// up to and including the next ASCII separator; where to go on from.
    fn chars_from(&self, text: &str, at: usize, word: &mut String, ids: &mut Vec<u32>) -> usize {
        word.clear();
        for (offset, c) in text[at..].char_indices() {
            if c.is_ascii_alphanumeric() {
                word.push(c.to_ascii_lowercase());
                continue;
            }
            if !c.is_ascii() && c.is_alphanumeric() {
                for lower in c.to_lowercase() {
                    word.push(strip_accent(lower));
                }
                continue;
            }
            if !word.is_empty() {
                self.word_pieces(word, ids);
                word.clear();
            }
            if c.is_ascii() {
                return at + offset + 1;
            }
        }
        if !word.is_empty() {
            self.word_pieces(word, ids);
            word.clear();
        }
        text.len()
    }

    fn word_pieces(&self, word: &str, ids: &mut Vec<u32>) {
        if let Some(id) = self.words.get(word.as_bytes()) {
            ids.push(id);
            return;
        }
        if word.chars().count() > MAX_WORD_CHARS {
            return;
        }
        let start_len = ids.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len().min(start + self.max_piece);
            let found = loop {
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
                if end <= start {
                    break None;
                }
                let vocab = if start == 0 {
                    &self.words
                } else {
                    &self.pieces
                };
                if let Some(id) = vocab.get(&word.as_bytes()[start..end]) {
                    break Some(id);
                }
                end -= 1;
            };
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(start_len); // the whole word is [UNK]
                    return;
                }
            }
        }
    }

    /// The text's vector: the weighted sum of its tokens' vectors.
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut sum = vec![0.0; self.table.dims];
        self.embed_into(text, &mut Scratch::default(), &mut sum);
        sum
    }

    /// [`StaticModel::embed`] into `sum` (`dims` long), reusing `scratch`.
    pub fn embed_into(&self, text: &str, scratch: &mut Scratch, sum: &mut [f32]) {
        self.tokens_into(text, scratch);
        self.table.sum_rows(&scratch.ids, &mut scratch.rows, sum);
    }

    /// The text's [`Embedding`].
    pub fn embedding(&self, text: &str, scratch: &mut Scratch) -> Embedding {
        let mut vector = vec![0.0; self.table.dims];
        self.embed_into(text, scratch, &mut vector);
        Embedding {
            norm2: norm2(&vector),
            vector,
        }
    }

    /// Cosine of the two texts' vectors, clamped to [0, 1]; 0 when either
    /// has no known token.
    pub fn score(&self, answer: &str, reference: &str) -> f32 {
        cosine(&self.embed(answer), &self.embed(reference))
    }
}

/// Cosine in [0, 1]; 0 for a zero vector.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    cosine_with_norms(a, norm2(a), b, norm2(b))
}

/// The squared norm, summed in f64 as [`cosine`] sums it.
pub fn norm2(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .fold(0.0, |s, x| s + x)
}

/// [`cosine`] with both squared norms known (from [`norm2`]): each of the
/// three sums is its own sequence of additions, so splitting them gives the
/// same bits as summing them in one loop.
pub fn cosine_with_norms(a: &[f32], na: f64, b: &[f32], nb: f64) -> f32 {
    let dot = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .fold(0.0, |s, x| s + x);
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(0.0, 1.0) as f32
}

/// The base letter of a lower-case Latin letter with a diacritic, as BERT's
/// uncased tokenizer strips accents.
fn strip_accent(c: char) -> char {
    match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => 'i',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'ŝ' | 'ş' | 'š' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ď' | 'đ' => 'd',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ł' | 'ľ' | 'ĺ' | 'ļ' => 'l',
        'ř' | 'ŕ' | 'ŗ' => 'r',
        'ť' | 'ţ' => 't',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = "Ice floats because water expands when it freezes, so solid ice is less dense than liquid water.";

    #[test]
    fn the_committed_table_parses_and_records_how_it_was_made() {
        let m = model();
        assert!(m.table().tokens.len() > 20_000);
        assert!(m.table().provenance.contains("all-MiniLM-L6-v2"));
        assert!(m.table().provenance.contains("answerloop models distill"));
    }

    #[test]
    fn the_committed_table_stays_within_its_budget() {
        assert!(
            TABLE.len() <= TABLE_BUDGET_BYTES,
            "{} bytes, budget {TABLE_BUDGET_BYTES}",
            TABLE.len()
        );
    }

    #[test]
    fn paraphrase_outscores_related_but_wrong_which_outscores_off_topic() {
        let paraphrase = score("Frozen water takes up more space than liquid water, so ice is lighter and stays on top.", REFERENCE);
        let related = score(
            "Ice sinks to the bottom of lakes because it is heavier than water.",
            REFERENCE,
        );
        let off = score(
            "Index funds are a cheap way to invest in the stock market.",
            REFERENCE,
        );
        assert!(
            paraphrase > related && related > off,
            "{paraphrase} {related} {off}"
        );
    }

    #[test]
    fn case_punctuation_and_accents_do_not_change_a_score() {
        let plain = score("ice is less dense than water", REFERENCE);
        assert_eq!(
            plain,
            score("ICE is LESS dense... than water!!!", REFERENCE)
        );
        assert_eq!(score("cafe ice", REFERENCE), score("Café, ice?", REFERENCE));
    }

    #[test]
    fn empty_huge_and_unknown_inputs_get_a_defined_score() {
        assert_eq!(score("", REFERENCE), 0.0);
        assert_eq!(score(REFERENCE, ""), 0.0);
        assert_eq!(
            score("?!...", REFERENCE),
            0.0,
            "punctuation alone has no tokens"
        );
        let huge = "water ".repeat(200_000);
        let s = score(&huge, REFERENCE);
        assert!((0.0..=1.0).contains(&s));
        let unknown = "x".repeat(150); // longer than a word may be: [UNK], left out
        assert_eq!(score(&unknown, REFERENCE), 0.0);
        assert!((score(REFERENCE, REFERENCE) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn wordpiece_splits_unknown_words_into_known_pieces() {
        let ids = model().tokens("unaffordableness");
        assert!(ids.len() > 1, "{ids:?}");
        let tokens: Vec<&str> = ids
            .iter()
            .map(|i| model().table().tokens[*i as usize])
            .collect();
        assert!(
            tokens[1..].iter().all(|t| t.starts_with("##")),
            "{tokens:?}"
        );
    }
}

/// The tokeniser and the sums as they were before they were made fast:
/// a char at a time, a `HashMap` per lookup, one token's vector added into
/// the sum at a time. The model's answers must stay these, to the bit.
#[cfg(test)]
mod plain {
    use std::collections::HashMap;

    use super::{strip_accent, StaticModel, MAX_WORD_CHARS};

    type Maps = (
        HashMap<&'static str, u32>,
        HashMap<&'static str, u32>,
        usize,
    );

    /// The built-in table's vocabulary as the plain tokeniser had it.
    fn maps() -> &'static Maps {
        static MAPS: std::sync::OnceLock<Maps> = std::sync::OnceLock::new();
        MAPS.get_or_init(|| {
            let tokens = &super::model().table().tokens;
            let mut words = HashMap::new();
            let mut pieces = HashMap::new();
            for (id, token) in tokens.iter().enumerate() {
                match token.strip_prefix("##") {
                    Some(piece) => pieces.insert(piece, id as u32),
                    None => words.insert(*token, id as u32),
                };
            }
            let max_piece = tokens.iter().map(|t| t.len()).max().unwrap();
            (words, pieces, max_piece)
        })
    }

    pub fn tokens(text: &str) -> Vec<u32> {
        let (words, pieces, max_piece) = maps();
        let max_piece = *max_piece;
        let mut ids = Vec::new();
        let mut word = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() {
                word.push(c.to_ascii_lowercase());
            } else if !c.is_ascii() && c.is_alphanumeric() {
                for lower in c.to_lowercase() {
                    word.push(strip_accent(lower));
                }
            } else if !word.is_empty() {
                word_pieces(words, pieces, max_piece, &word, &mut ids);
                word.clear();
            }
        }
        ids
    }

    fn word_pieces(
        words: &HashMap<&str, u32>,
        pieces: &HashMap<&str, u32>,
        max_piece: usize,
        word: &str,
        ids: &mut Vec<u32>,
    ) {
        if let Some(id) = words.get(word) {
            ids.push(*id);
            return;
        }
        if word.chars().count() > MAX_WORD_CHARS {
            return;
        }
        let start_len = ids.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len().min(start + max_piece);
            let found = loop {
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
                if end <= start {
                    break None;
                }
                let map = if start == 0 { words } else { pieces };
                if let Some(id) = map.get(&word[start..end]) {
                    break Some(*id);
                }
                end -= 1;
            };
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(start_len);
                    return;
                }
            }
        }
    }

    pub fn score(model: &StaticModel<'_>, answer: &str, reference: &str) -> f32 {
        let embed = |text: &str| {
            let mut sum = vec![0.0; model.table().dims];
            for id in tokens(text) {
                model.table().accumulate(id as usize, &mut sum);
            }
            sum
        };
        let (a, b) = (embed(answer), embed(reference));
        let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
        for (x, y) in a.iter().zip(&b) {
            dot += f64::from(*x) * f64::from(*y);
            na += f64::from(*x) * f64::from(*x);
            nb += f64::from(*y) * f64::from(*y);
        }
        if na == 0.0 || nb == 0.0 {
            return 0.0;
        }
        (dot / (na.sqrt() * nb.sqrt())).clamp(0.0, 1.0) as f32
    }

    #[test]
    fn tokens_and_scores_are_the_plain_ones_to_the_bit() {
        let m = super::model();
        let mut texts: Vec<&str> = [
            include_str!("../../../data/eval/pairs.csv"),
            include_str!("../../../data/eval/local-answers.csv"),
            include_str!("../../../data/sample.csv"),
        ]
        .iter()
        .flat_map(|file| file.lines())
        .collect();
        let long = "x".repeat(150);
        texts.extend([
            "",
            "Café naïve résumé Ærøskøbing ŁÓDŹ straße İstanbul ǅ ﬁne",
            "日本語のテキスト 中文 한국어 русский текст",
            "emoji 🧊 floats 🧊🧊 \u{200b}zero\u{200b}width",
            "unaffordableness antidisestablishmentarianism",
            long.as_str(),
        ]);
        for pair in texts.windows(2) {
            assert_eq!(m.tokens(pair[0]), tokens(pair[0]), "{:?}", pair[0]);
            assert_eq!(
                m.score(pair[0], pair[1]).to_bits(),
                score(m, pair[0], pair[1]).to_bits(),
                "{:?} / {:?}",
                pair[0],
                pair[1]
            );
        }
    }
}
