//! The training corpus for `answerloop models learn`: general English text
//! kept apart from the evaluation pairs and the sample (no question,
//! reference or answer of the data set is ever in it), so that a table
//! fitted to it is measured on text it has not seen.
//!
//! The source is WordNet 3.0's data files (Debian package `wordnet-base`,
//! `data.noun`, `data.verb`, `data.adj`, `data.adv`): for every synset, its
//! words and definition as one text (`"ice, water ice: water frozen in the
//! solid state"`) and each quoted example sentence as another. Fortune
//! files (`%`-separated, Debian `fortunes-min`) can be added for more
//! conversational text. The corpus is a plain file, one text a line, so the
//! teacher's embeddings of it can be cached against its bytes.

use std::path::Path;

/// WordNet's part-of-speech data files, in the order they are read.
pub const WORDNET_FILES: [&str; 4] = ["data.noun", "data.verb", "data.adj", "data.adv"];

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a WordNet data line (no ` | ` before the gloss)")]
    NotWordNet { path: String, line: usize },
}

/// The texts of WordNet's data files under `dir`, in file order.
pub fn wordnet(dir: &Path) -> Result<Vec<String>, CorpusError> {
    let mut texts = Vec::new();
    for name in WORDNET_FILES {
        let path = dir.join(name);
        let data = std::fs::read_to_string(&path).map_err(|source| CorpusError::Read {
            path: path.display().to_string(),
            source,
        })?;
        for (n, line) in data.lines().enumerate() {
            // The licence header's lines start with two spaces.
            if line.starts_with("  ") || line.trim().is_empty() {
                continue;
            }
            let synset = synset(line).ok_or_else(|| CorpusError::NotWordNet {
                path: path.display().to_string(),
                line: n + 1,
            })?;
            texts.extend(synset);
        }
    }
    Ok(texts)
}

/// One data line's texts: "words: definition", then each example.
fn synset(line: &str) -> Option<Vec<String>> {
    let (fields, gloss) = line.split_once(" | ")?;
    // offset lex_filenum ss_type w_cnt (hex) then w_cnt × (word lex_id).
    let fields: Vec<&str> = fields.split(' ').collect();
    let count = usize::from_str_radix(fields.get(3)?, 16).ok()?;
    let words: Vec<String> = (0..count)
        .filter_map(|i| fields.get(4 + 2 * i))
        .map(|w| lemma(w))
        .collect();
    let mut definition = Vec::new();
    let mut examples = Vec::new();
    for part in gloss.trim().split("; ") {
        let part = part.trim();
        match part.strip_prefix('"') {
            Some(quoted) => {
                let example = quoted.split('"').next().unwrap_or_default().trim();
                if !example.is_empty() {
                    examples.push(example.to_string());
                }
            }
            None if !part.is_empty() => definition.push(part),
            None => {}
        }
    }
    let mut out = Vec::with_capacity(1 + examples.len());
    if !definition.is_empty() {
        out.push(format!("{}: {}", words.join(", "), definition.join("; ")));
    }
    out.extend(examples);
    Some(out)
}

/// A WordNet word as text: `at_peace(p)` is "at peace".
fn lemma(word: &str) -> String {
    let word = match word.find('(') {
        Some(at) if word.ends_with(')') => &word[..at],
        _ => word,
    };
    word.replace('_', " ")
}

/// The texts of a fortune file: `%` lines separate them; each is joined
/// into one line.
pub fn fortunes(path: &Path) -> Result<Vec<String>, CorpusError> {
    let data = std::fs::read_to_string(path).map_err(|source| CorpusError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(data
        .split("\n%\n")
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty() && t != "%")
        .collect())
}

/// Texts as a corpus file: one a line, whitespace runs made single spaces,
/// exact repeats after the first left out.
pub fn to_lines(texts: &[String]) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::new();
    for text in texts {
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !line.is_empty() && seen.insert(line.clone()) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synset_gives_its_words_with_the_definition_and_each_example() {
        let line = "00095873 00 s 02 asleep(p) 0 at_peace(p) 2 003 & 00095280 a 0000 | dead; \"he is deceased\"; \"our dear departed friend\"  ";
        assert_eq!(
            synset(line).unwrap(),
            vec![
                "asleep, at peace: dead",
                "he is deceased",
                "our dear departed friend"
            ]
        );
    }

    #[test]
    fn an_attributed_example_keeps_only_the_quotation() {
        let line = "00096239 00 s 01 bloodless 0 001 & 00095280 a 0000 | destitute of blood or apparently so; \"the bloodless carcass of my Hector sold\"- John Dryden  ";
        assert_eq!(
            synset(line).unwrap(),
            vec![
                "bloodless: destitute of blood or apparently so",
                "the bloodless carcass of my Hector sold"
            ]
        );
    }

    #[test]
    fn the_word_count_is_hexadecimal() {
        let words: Vec<String> = (0..11).map(|i| format!("w{i} 0")).collect();
        let line = format!("00000001 03 n 0b {} 000 | a gloss", words.join(" "));
        let texts = synset(&line).unwrap();
        assert!(texts[0].starts_with("w0, w1,") && texts[0].contains("w10: a gloss"));
    }

    #[test]
    fn a_line_without_a_gloss_is_named_with_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for name in WORDNET_FILES {
            std::fs::write(dir.path().join(name), "  licence text\n").unwrap();
        }
        std::fs::write(
            dir.path().join("data.verb"),
            "  licence\n00000001 29 v 01 breathe 0 000\n",
        )
        .unwrap();
        let err = wordnet(dir.path()).unwrap_err().to_string();
        assert!(err.contains("data.verb:2"), "{err}");
    }

    #[test]
    fn fortunes_are_split_on_percent_lines_and_repeats_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "One\nfortune.\n%\nTwo.\n%\nOne fortune.\n%\n").unwrap();
        let texts = fortunes(&path).unwrap();
        assert_eq!(texts, vec!["One fortune.", "Two.", "One fortune."]);
        assert_eq!(to_lines(&texts), "One fortune.\nTwo.\n");
    }
}
