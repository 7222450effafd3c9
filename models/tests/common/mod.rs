//! Helpers for the tests that need a cached model.

use answerloop_models::cache::locate_installed;
use answerloop_models::{ModelCache, ModelPackage};

/// The cache when `package` is installed. Otherwise the test fails when
/// `ANSWERLOOP_REQUIRE_MODEL` is set (CI fetches the models first, so a
/// test must never skip there), or says why it skips and returns `None`.
pub fn installed_or_skip(package: &ModelPackage) -> Option<ModelCache> {
    match locate_installed(package) {
        Ok(cache) => Some(cache),
        Err(why) if std::env::var_os("ANSWERLOOP_REQUIRE_MODEL").is_some() => panic!("{why}"),
        Err(why) => {
            // Straight to stderr: the test harness hides `eprintln!` of passing tests.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: {why}");
            None
        }
    }
}
