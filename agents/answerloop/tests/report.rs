//! `answerloop report`: a run under faults, its report page, and that page
//! rendered by headless Chromium with every plot drawn.
//!
//! Chromium is Debian's `chromium` package (.ci/run installs it). Without
//! it the rendering test skips with a message, unless
//! ANSWERLOOP_REQUIRE_CHROMIUM=1 makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PLOTS: [&str; 5] = [
    "score-by-attempt",
    "acceptance-by-attempt",
    "latency",
    "failed-calls",
    "dead-letters",
];
const QUESTIONS: u64 = 60;

/// A run with faults and a low cap on LLM calls, so every plot has data:
/// retries, regenerations and dead letters.
fn report_of_a_faulty_run(dir: &Path) -> (PathBuf, serde_json::Value) {
    let home = dir.join("home");
    let run = common::json_of([
        "run",
        "--home",
        home.to_str().unwrap(),
        "--llm",
        "sim",
        "--limit",
        &QUESTIONS.to_string(),
        "--sim-fail-rate",
        "0.4",
        "--sim-hang-secs",
        "0.3",
        "--llm-timeout-secs",
        "0.1",
        "--quota-delay-secs",
        "0.2",
        "--retry-cap-ms",
        "50",
        "--max-llm-attempts",
        "3",
        "--json",
    ]);
    assert_eq!(run["questions"], QUESTIONS);
    let page = dir.join("report.html");
    let headline = common::json_of([
        "report",
        "--home",
        home.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
        "--json",
    ]);
    (page, headline)
}

/// An attribute of a tag's text (what follows `<svg`, from its first space).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// `(id, data-marks, data-drawn)` of each plot in serialised HTML.
fn plots(html: &str) -> Vec<(String, String, Option<String>)> {
    html.split("<svg")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .filter(|tag| attr(tag, "class") == Some("plot"))
        .map(|tag| {
            (
                attr(tag, "id").unwrap().to_string(),
                attr(tag, "data-marks").unwrap().to_string(),
                attr(tag, "data-drawn").map(str::to_string),
            )
        })
        .collect()
}

fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("ANSWERLOOP_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

#[test]
fn the_report_has_every_plot_and_is_drawn_by_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (page, headline) = report_of_a_faulty_run(dir.path());

    assert_eq!(headline["questions_final"], QUESTIONS, "{headline:#}");
    assert!(
        headline["dead_letters"].as_u64().unwrap() > 0,
        "{headline:#}"
    );
    assert!(
        headline["failed_calls"].as_u64().unwrap() > 0,
        "{headline:#}"
    );
    assert!(
        headline["scored_answers"].as_u64().unwrap() > headline["stored"].as_u64().unwrap(),
        "regenerations are counted: {headline:#}"
    );

    let html = std::fs::read_to_string(&page).unwrap();
    // One self-contained page: nothing fetched, nothing run.
    for outside in ["<script", " src=", "<link", "http://", "https://"] {
        let allowed = outside == "http://"
            && html.matches(outside).count() == html.matches("http://www.w3.org/2000/svg").count();
        assert!(!html.contains(outside) || allowed, "the page has {outside}");
    }
    let found = plots(&html);
    let ids: Vec<&str> = found.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, PLOTS);
    for (id, marks, _) in &found {
        assert!(marks.parse::<u32>().unwrap() > 0, "{id} has no bars");
    }

    let Some(chromium) = chromium() else {
        let why = "headless Chromium not found (install Debian's chromium package)";
        if std::env::var_os("ANSWERLOOP_REQUIRE_CHROMIUM").is_some() {
            panic!("{why}, and ANSWERLOOP_REQUIRE_CHROMIUM is set");
        }
        eprintln!("SKIPPED rendering the report: {why}");
        return;
    };
    // The test adds a probe that measures every bar as laid out by the
    // browser; the page itself has no script.
    let probe = r#"<script>
for (const svg of document.querySelectorAll('svg.plot')) {
  let drawn = 0;
  for (const mark of svg.querySelectorAll('.mark')) {
    const r = mark.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) drawn++;
  }
  svg.setAttribute('data-drawn', drawn);
}
</script></body>"#;
    let probed = dir.path().join("probed.html");
    std::fs::write(&probed, html.replace("</body>", probe)).unwrap();
    let profile = dir.path().join("chromium-profile");
    let out = common::succeed(
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", probed.display())),
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    let rendered = plots(&dom);
    assert_eq!(rendered.len(), PLOTS.len(), "{dom}");
    for (id, marks, drawn) in rendered {
        assert_eq!(
            drawn.as_deref(),
            Some(marks.as_str()),
            "plot {id}: Chromium drew {drawn:?} of {marks} bars"
        );
    }
}
