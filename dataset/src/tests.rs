use super::*;
use answerloop_schema::question_id;

fn parse_str(text: &str) -> Result<Dataset, DataError> {
    parse(text.as_bytes(), "test.csv")
}

#[test]
fn reads_quoted_fields_escaped_quotes_and_newlines() {
    let d = parse_str(
        "\"2\",\"Why is \"\"ice\"\" slippery?\",\"Asking for a friend, really\",\"A thin film\\nof water.\"\n",
    )
    .unwrap();
    let q = &d.questions[0];
    assert_eq!(q.title, "Why is \"ice\" slippery?");
    assert_eq!(q.content, "Asking for a friend, really");
    assert_eq!(q.reference, "A thin film\nof water.");
    assert_eq!(q.category, 2);
    assert_eq!(
        q.id,
        question_id("Why is \"ice\" slippery?\nAsking for a friend, really")
    );
}

#[test]
fn empty_content_leaves_the_title_as_the_question() {
    let d = parse_str("\"3\",\"Is coffee bad for you?\",\"\",\"In moderation, no.\"\n").unwrap();
    assert_eq!(d.questions[0].text(), "Is coffee bad for you?");
}

#[test]
fn rows_without_question_or_reference_are_counted_and_skipped() {
    let d = parse_str(
        "\"1\",\"\",\"\",\"An answer\"\n\"1\",\"A question?\",\"\",\"\"\n\"1\",\"Good?\",\"\",\"Yes.\"\n",
    )
    .unwrap();
    assert_eq!(d.questions.len(), 1);
    assert_eq!(
        (d.report.rows, d.report.no_question, d.report.no_reference),
        (3, 1, 1)
    );
}

#[test]
fn a_title_less_row_uses_its_content_as_the_question() {
    let d = parse_str("\"1\",\"\",\"What is rent?\",\"Money for a home.\"\n").unwrap();
    assert_eq!(d.questions[0].title, "What is rent?");
}

#[test]
fn duplicate_questions_are_sent_once() {
    let d = parse_str("\"1\",\"Same?\",\"\",\"A\"\n\"1\",\"same? \",\"\",\"B\"\n").unwrap();
    assert_eq!(d.questions.len(), 1);
    assert_eq!(d.report.duplicates, 1);
}

#[test]
fn malformed_rows_are_reported_with_line_numbers_and_the_rest_load() {
    let d = parse_str(concat!(
        "\"1\",\"Fine?\",\"\",\"Yes.\"\n",
        "\"11\",\"Bad class\",\"\",\"x\"\n",
        "\"2\",\"Too few fields\"\n",
        "\"2\",\"Also fine?\",\"\",\"Yes.\"\n",
    ))
    .unwrap();
    assert_eq!(d.questions.len(), 2);
    let lines: Vec<u64> = d.report.malformed.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3]);
    assert!(
        d.report.malformed[0].reason.contains("class \"11\""),
        "{}",
        d.report.malformed[0]
    );
    assert!(d.report.malformed[1].reason.contains("expected 4 fields"));
}

#[test]
fn invalid_utf8_is_reported_not_fatal() {
    let mut bytes = b"\"1\",\"Fine?\",\"\",\"Yes.\"\n\"1\",\"Bad ".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\",\"\",\"x\"\n");
    let d = parse(bytes.as_slice(), "t").unwrap();
    assert_eq!(d.questions.len(), 1);
    assert!(d.report.malformed[0].reason.contains("UTF-8"));
    assert_eq!(d.report.malformed[0].line, 2);
}

#[test]
fn a_file_that_is_not_csv_is_a_clear_error() {
    let err = parse_str("{\"questions\": [1, 2, 3]}\n{\"more\": true}\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("test.csv is not a Yahoo! Answers CSV"),
        "{text}"
    );
    assert!(text.contains("line 1"), "{text}");
    let err = parse(&[0x7f, b'E', b'L', b'F', 0, 0, 1][..], "a.out").unwrap_err();
    assert!(err.to_string().contains("binary"), "{err}");
}

#[test]
fn a_file_with_nothing_to_answer_is_an_error_saying_so() {
    let err = parse_str("").unwrap_err().to_string();
    assert!(err.contains("no question to answer (0 rows"), "{err}");
    let err = parse_str("1,\"a question\",\"\",\"\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 without a best answer"), "{err}");
}

/// A reader that fails once anyone reads past `good`.
struct FailsAfter {
    good: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.good.read(buf)? {
            0 => Err(std::io::Error::other("read past the rows asked for")),
            n => Ok(n),
        }
    }
}

#[test]
fn the_first_n_questions_are_read_without_reading_the_rest() {
    let mut good = String::new();
    // The first question twice: a duplicate is not one of the first N.
    good.push_str("1,\"q0\",\"\",\"a\"\n1,\"q0\",\"\",\"a\"\n");
    for i in 1..12000 {
        good.push_str(&format!(
            "2,\"question {i}\",\"some content\",\"an answer\"\n"
        ));
    }
    assert!(good.len() > 3 * 64 * 1024, "more than the read-ahead");
    let input = || FailsAfter {
        good: std::io::Cursor::new(good.clone().into_bytes()),
    };
    let d = parse_first(input(), "t", Some(3)).unwrap();
    let titles: Vec<&str> = d.questions.iter().map(|q| q.title.as_str()).collect();
    assert_eq!(titles, ["q0", "question 1", "question 2"]);
    assert_eq!((d.report.rows, d.report.duplicates), (4, 1));
    // Asked for everything, it reads to the end, where this reader fails.
    match parse_first(input(), "t", None) {
        Err(err) => assert!(
            err.to_string().contains("read past the rows asked for"),
            "{err}"
        ),
        Ok(d) => panic!("read to the end without an error: {:?}", d.report),
    }
}
