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

/// The whole-file parser as it was before the reader streamed: the oracle
/// the stream must agree with.
fn whole_file(input: &[u8], limit: Option<usize>) -> Result<Dataset, String> {
    let mut input = input;
    if input.starts_with(&[0]) || input[..input.len().min(4096)].contains(&0) {
        return Err("binary".into());
    }
    if let Some(rest) = input.strip_prefix(b"\xef\xbb\xbf") {
        input = rest;
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut report = ReadReport::default();
    let mut seen = std::collections::HashSet::new();
    let mut questions = Vec::new();
    for row in reader.byte_records() {
        if limit.is_some_and(|limit| questions.len() >= limit) {
            break;
        }
        report.rows += 1;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                report.malformed.push(RowError {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        match parse_row(&row) {
            Ok(Row::Question(q)) => {
                if seen.insert(q.id.clone()) {
                    questions.push(*q);
                } else {
                    report.duplicates += 1;
                }
            }
            Ok(Row::NoQuestion) => report.no_question += 1,
            Ok(Row::NoReference) => report.no_reference += 1,
            Err(reason) => report.malformed.push(RowError { line, reason }),
        }
    }
    if questions.is_empty() {
        return Err("no question".into());
    }
    Ok(Dataset { questions, report })
}

/// Inputs a user or an attacker might hand the reader.
fn hostile_inputs() -> Vec<Vec<u8>> {
    let long = "x".repeat(MAX_FIELD_BYTES + 1);
    let mut inputs: Vec<Vec<u8>> = vec![
        SAMPLE_CSV.as_bytes().to_vec(),
        [b"\xef\xbb\xbf".as_slice(), SAMPLE_CSV.as_bytes()].concat(),
        b"1,\"unclosed quote,\"\",\"a\"\n2,\"q?\",\"\",\"a\"\n".to_vec(),
        format!("1,\"{long}\",\"\",\"a\"\n2,\"fine?\",\"\",\"yes\"\n").into_bytes(),
        b"2,\"a\",\"b\",\"c\",\"d\"\n\n\n3,\"q\"\n1,\"ok?\",\"\",\"ok\"\r\n1,\"ok?\",\"\",\"again\"\r\n"
            .to_vec(),
        b"0,\"class zero\",\"\",\"a\"\n10,\"class ten\",\"\",\"a\"\n 7 ,\"spaced\",\"\",\"a\"\n"
            .to_vec(),
        b"\"1\",\"\",\"\",\"\"\n\"1\",\"\",\"c\",\"\"\n\"1\",\"t\",\"\",\"r\"".to_vec(),
        b"1,\"caf\xc3\xa9?\",\"\",\"\xe2\x98\x95\"\n1,\"bad \xff\",\"\",\"x\"\n".to_vec(),
        b"{\"questions\": [1, 2, 3]}\n".to_vec(),
        Vec::new(),
    ];
    // Every row the sample has, twice over, with its lines shuffled by a
    // fixed rule: duplicates far apart.
    let lines: Vec<&str> = SAMPLE_CSV.lines().collect();
    let mut shuffled = String::new();
    for i in 0..2 * lines.len() {
        shuffled.push_str(lines[(i * 7) % lines.len()]);
        shuffled.push('\n');
    }
    inputs.push(shuffled.into_bytes());
    inputs
}

#[test]
fn the_stream_gives_what_the_whole_file_parser_gave() {
    for (i, input) in hostile_inputs().iter().enumerate() {
        for limit in [None, Some(1), Some(3), Some(50)] {
            let expected = whole_file(input, limit);
            let mut stream = match Questions::new(input.as_slice(), "t", limit) {
                Ok(stream) => stream,
                Err(e) => {
                    assert!(expected.is_err(), "input {i}: {e}, expected questions");
                    continue;
                }
            };
            let got: Result<Vec<Question>, DataError> = stream.by_ref().collect();
            match (expected, got) {
                (Ok(expected), Ok(got)) => {
                    assert_eq!(got, expected.questions, "input {i}, limit {limit:?}");
                    assert_eq!(
                        stream.report(),
                        &expected.report,
                        "input {i}, limit {limit:?}"
                    );
                    assert_eq!(stream.ids().len(), got.len());
                }
                (Err(_), Err(e)) => {
                    assert!(matches!(e, DataError::NotCsv { .. }), "input {i}: {e}");
                    assert!(stream.next().is_none(), "the error ends the stream");
                }
                (expected, got) => panic!(
                    "input {i}, limit {limit:?}: expected {:?}, got {:?}",
                    expected.map(|d| d.questions.len()),
                    got.map(|q| q.len())
                ),
            }
        }
    }
}

#[test]
fn the_report_grows_as_the_stream_is_read_with_line_numbers() {
    let text = concat!(
        "\"1\",\"Fine?\",\"\",\"Yes.\"\n",
        "\"11\",\"Bad class\",\"\",\"x\"\n",
        "\"2\",\"Also fine?\",\"\",\"Yes.\"\n",
        "\"2\",\"Too few fields\"\n",
    );
    let mut stream = Questions::new(text.as_bytes(), "t", None).unwrap();
    stream.next().unwrap().unwrap();
    assert_eq!(stream.report().rows, 1);
    assert!(stream.report().malformed.is_empty());
    assert_eq!(stream.next().unwrap().unwrap().title, "Also fine?");
    let lines: Vec<u64> = stream.report().malformed.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2]);
    assert!(stream.next().is_none());
    let lines: Vec<u64> = stream.report().malformed.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 4]);
}

/// A reader that counts the bytes handed out.
struct Counting<'a> {
    inner: &'a [u8],
    read: std::rc::Rc<std::cell::Cell<usize>>,
}

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

#[test]
fn a_limit_reads_one_read_ahead_of_a_large_file_not_the_file() {
    let mut text = String::new();
    for i in 0..100_000 {
        text.push_str(&format!(
            "3,\"question {i}?\",\"its content\",\"its answer\"\n"
        ));
    }
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let input = Counting {
        inner: text.as_bytes(),
        read: read.clone(),
    };
    let got: Vec<Question> = Questions::new(input, "t", Some(10))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 10);
    assert!(
        read.get() <= 2 * 64 * 1024 && read.get() * 20 < text.len(),
        "read {} of {} bytes for 10 questions",
        read.get(),
        text.len()
    );
}

#[test]
fn a_garbage_tail_past_the_limit_is_never_reached() {
    let mut bytes = b"1,\"first?\",\"\",\"a\"\n1,\"second?\",\"\",\"b\"\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 200 * 1024));
    bytes.extend_from_slice(&[0xff, b'"', b'\n', 0]);
    let mut stream = Questions::new(bytes.as_slice(), "t", Some(2)).unwrap();
    let titles: Vec<String> = stream.by_ref().map(|q| q.unwrap().title).collect();
    assert_eq!(titles, ["first?", "second?"]);
    assert!(stream.report().malformed.is_empty());
    // Without the limit the tail is read, and reported.
    let mut stream = Questions::new(bytes.as_slice(), "t", None).unwrap();
    assert_eq!(stream.by_ref().count(), 2);
    let lines: Vec<u64> = stream.report().malformed.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4], "the garbage and the NUL after it");
}

#[test]
fn an_id_set_knows_ids_by_their_number() {
    let a = question_id("What is rent?");
    let b = question_id("What is a lease?");
    assert_eq!(id_number(&a), u64::from_str_radix(&a, 16).unwrap());
    let mut set: IdSet = [a.as_str()].into_iter().collect();
    assert!(set.contains(&a) && !set.contains(&b));
    assert!(!set.insert(&a) && set.insert(&b));
    assert!(set.insert("not-a-hex-id") && set.contains("not-a-hex-id"));
    assert!(!set.contains("not-a-hex-iD"));
    assert!(set.remove(&a) && !set.remove(&a));
    assert_eq!(set.len(), 2);
}

#[test]
fn the_ids_given_are_the_distinct_questions() {
    let text = "1,\"Same?\",\"\",\"A\"\n1,\"same? \",\"\",\"B\"\n1,\"Other?\",\"\",\"C\"\n";
    let mut stream = Questions::new(text.as_bytes(), "t", None).unwrap();
    let questions: Vec<Question> = stream.by_ref().collect::<Result<_, _>>().unwrap();
    let (ids, report) = stream.into_parts();
    assert_eq!(ids.len(), 2);
    assert!(questions.iter().all(|q| ids.contains(&q.id)));
    assert_eq!(report.duplicates, 1);
}

#[test]
fn the_row_index_reads_back_each_question_from_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.csv");
    // A byte order mark, a malformed row and a repeat with another answer.
    let first = SAMPLE_CSV.lines().next().unwrap();
    let text = format!("\u{feff}{SAMPLE_CSV}\"1\",\"Too few\"\n{first}\n");
    std::fs::write(&path, &text).unwrap();
    let expected = parse(text.as_bytes(), "t").unwrap();
    let (index, report) = RowIndex::build(&path, None).unwrap();
    assert_eq!(report, expected.report);
    assert_eq!(index.len(), expected.questions.len());
    // Backwards, then forwards: one reader is moved from row to row.
    for q in expected.questions.iter().rev().chain(&expected.questions) {
        assert_eq!(index.get(&q.id).unwrap().as_ref(), Some(q));
    }
    assert_eq!(index.get(&question_id("not in the file")).unwrap(), None);
}

#[test]
fn the_row_index_keeps_the_first_of_repeated_questions_and_refuses_non_csv() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.csv");
    std::fs::write(
        &path,
        "1,\"Same?\",\"\",\"first\"\n1,\"same?\",\"\",\"second\"\n",
    )
    .unwrap();
    let (index, report) = RowIndex::build(&path, None).unwrap();
    assert_eq!((index.len(), report.duplicates), (1, 1));
    let q = index.get(&question_id("Same?")).unwrap().unwrap();
    assert_eq!(q.reference, "first");
    let (index, _) = RowIndex::build(&path, Some(1)).unwrap();
    assert_eq!(index.len(), 1);
    std::fs::write(&path, "{\"not\": \"csv\"}\n").unwrap();
    let err = RowIndex::build(&path, None).unwrap_err().to_string();
    assert!(err.contains("is not a Yahoo! Answers CSV"), "{err}");
}
