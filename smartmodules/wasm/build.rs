//! Compiles the SmartModule crates for `wasm32-unknown-unknown`, and the
//! Redpanda Data Transform `answer-score-transform` for `wasm32-wasip1`,
//! whenever this crate is built, in the manner of substrate's wasm-builder: a
//! nested cargo with its own target directory (so it never waits on the outer
//! build's lock), then the `.wasm` files are copied into `OUT_DIR` for
//! `include_bytes!`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const SMARTMODULES: [&str; 3] = ["answer-score", "regenerate", "quality-gate"];
/// Redpanda Data Transforms are WASI preview 1 programs.
const TRANSFORM_TARGET: &str = "wasm32-wasip1";
const TRANSFORMS: [&str; 1] = ["answer-score-transform"];
/// Crates whose sources end up in the `.wasm` (relative to the workspace):
/// a change to any rebuilds them.
const WASM_SOURCES: [&str; 7] = [
    "core/schema",
    "core/scoring",
    "smartmodules/entry",
    "smartmodules/answer-score",
    "smartmodules/regenerate",
    "smartmodules/quality-gate",
    "smartmodules/answer-score-transform",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let smartmodules_dir = manifest_dir.parent().expect("smartmodules/").to_path_buf();
    let workspace = smartmodules_dir
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));

    for name in WASM_SOURCES {
        println!("cargo:rerun-if-changed={}", workspace.join(name).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    require_target(&rustc, WASM_TARGET, "SmartModules");
    require_target(&rustc, TRANSFORM_TARGET, "Redpanda Data Transform");

    // <target>/<profile>/build/<crate>-<hash>/out ->
    // <target>/<profile>/smartmodules-<workspace>: one a checkout. The
    // nested cargo copies each module to a fixed path in its target
    // directory only when it builds it, so two checkouts sharing one
    // target directory (a clone for CI beside the working tree) would
    // otherwise each take whichever modules the other built last.
    let nested = format!(
        "smartmodules-{:016x}",
        fnv1a(workspace.as_os_str().as_encoded_bytes())
    );
    let target_dir = out_dir
        .ancestors()
        .nth(3)
        .map(|profile_dir| profile_dir.join(&nested))
        .unwrap_or_else(|| out_dir.join(&nested));

    // Two nested builds, one a target: the transform's crate is a WASI
    // program, and the SmartModules are not.
    for (target, crates) in [
        (WASM_TARGET, &SMARTMODULES[..]),
        (TRANSFORM_TARGET, &TRANSFORMS[..]),
    ] {
        build(&cargo, &workspace, &target_dir, target, crates);
        let built = target_dir.join(target).join("wasm");
        for name in crates {
            // cargo names a cdylib with underscores, a binary as its crate.
            let built_name = if target == WASM_TARGET {
                name.replace('-', "_")
            } else {
                name.to_string()
            };
            copy(
                &built.join(format!("{built_name}.wasm")),
                &out_dir.join(format!("{}.wasm", name.replace('-', "_"))),
            );
        }
    }
}

fn build(cargo: &str, workspace: &Path, target_dir: &Path, target: &str, crates: &[&str]) {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--profile", "wasm", "--target", target])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    for name in crates {
        cmd.args(["-p", name]);
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // WASM SIMD (enabled by default in wasmtime, and so in Fluvio's SPU and
    // in Redpanda's transform engine) lets the scorer sum its int8 vectors
    // four lanes at a time.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run {cargo} to build {crates:?} for {target}: {e}"));
    if !status.success() {
        panic!("building {crates:?} for {target} failed (see the errors above)");
    }
}

/// Fail with the command that fixes it when a target's standard library is absent.
fn require_target(rustc: &str, target: &str, what: &str) {
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let has_core = libdir
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .is_some_and(|mut entries| {
            entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        });
    if !has_core {
        panic!(
            "\n\nThe Rust target {target} is not installed, and answerloop builds its {what} \
             for it.\nFix: rustup target add {target}\n\n"
        );
    }
}

/// FNV-1a: a name for the checkout that stays the same from build to build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| {
        panic!("{} was not built: {e}", from.display());
    });
}
