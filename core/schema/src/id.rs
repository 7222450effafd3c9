//! Stable question ids: the same question text gets the same id on every
//! machine and in every run, so the store can dedupe and skip answered work.

/// The question text as the id sees it: trimmed, whitespace runs folded to one
/// space, lower-cased. Two rows that differ only in spacing or case are one
/// question.
pub fn normalise_question(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// 16 hex digits of FNV-1a (64-bit) over the normalised text. FNV is fixed by
/// its specification, so ids never change with a library upgrade.
pub fn question_id(text: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = normalise_question(text)
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("{hash:016x}")
}

/// The question id inside a possibly broken JSON record, when the record
/// still shows an `"id":"<16 hex digits>"` field: a damaged answer can then
/// be dead-lettered under its question instead of going missing.
pub fn salvage_id(raw: &str) -> Option<String> {
    let mut rest = raw;
    while let Some(at) = rest.find("\"id\"") {
        rest = &rest[at + 4..];
        let value = rest
            .trim_start()
            .strip_prefix(':')?
            .trim_start()
            .strip_prefix('"')?;
        let id = value.get(..16)?;
        if id.bytes().all(|b| b.is_ascii_hexdigit()) && value[16..].starts_with('"') {
            return Some(id.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ignores_case_and_spacing() {
        assert_eq!(
            question_id("Why is the  sky blue?"),
            question_id(" why is the sky BLUE? ")
        );
        assert_ne!(
            question_id("Why is the sky blue?"),
            question_id("Why is grass green?")
        );
    }

    #[test]
    fn salvage_finds_an_id_in_a_broken_record() {
        let raw = r#"{"question":{"id": "0123456789abcdef","title":"trunc"#;
        assert_eq!(salvage_id(raw).as_deref(), Some("0123456789abcdef"));
        assert_eq!(salvage_id(r#"{"id":"short"}"#), None);
        assert_eq!(salvage_id("no id here"), None);
        assert_eq!(
            salvage_id(r#"{"id":"0123456789abcdef0"}"#),
            None,
            "too long"
        );
    }

    #[test]
    fn id_is_the_published_fnv1a_value() {
        // FNV-1a 64 of the empty string is its offset basis; of "a", a known vector.
        assert_eq!(question_id(""), "cbf29ce484222325");
        assert_eq!(question_id("a"), "af63dc4c8601ec8c");
    }
}
