//! Replays the fuzzing inputs on stable through the fuzz harness itself (`fuzz/src/lib.rs`),
//! so `cargo test` runs every seed and every minimized finding the way the fuzzer did.
//!
//! - `fuzz/seeds/<target>/`: the seeds. A name says what the input must come to: `ok_…`
//!   renders, `refused_…` is refused before rendering, `failed_…` fails a render stage.
//! - `mcp-sidecar/tests/fixtures/fuzz/<target>/`: inputs that once crashed, hung or ran out of
//!   memory under the fuzzer, minimized. They must now end without a panic, in any outcome.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::Outcome;
use mcp_sidecar::render::Renderer;

type Target = fn(&Renderer, &[u8]) -> Outcome;

const TARGETS: [(&str, Target); 2] = [
    ("render_spec", harness::render_spec),
    ("svg", harness::render_svg),
];

fn inputs(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The outcome's kind and its message, which must say something.
fn describe(outcome: &Outcome) -> (&'static str, String) {
    let (kind, message) = match outcome {
        Outcome::Rendered { output, bytes } => ("ok", format!("{bytes} bytes of {output:?}")),
        Outcome::Refused(message) => ("refused", message.clone()),
        Outcome::Failed(error) => ("failed", error.to_string()),
    };
    assert!(!message.trim().is_empty(), "{kind} without a message");
    (kind, message)
}

#[test]
fn every_seed_comes_to_the_outcome_its_name_promises() {
    let renderer = Renderer::new();
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, run) in TARGETS {
        let files = inputs(&seeds.join(target));
        assert!(files.len() >= 10, "{target}: only {} seeds", files.len());
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let expected = name.split('_').next().unwrap();
            let (kind, message) = describe(&run(&renderer, &std::fs::read(&path).unwrap()));
            assert_eq!(kind, expected, "{target}/{name}: {message}");
        }
    }
}

#[test]
fn minimized_fuzz_findings_end_without_a_panic() {
    let renderer = Renderer::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    for (target, run) in TARGETS {
        for path in inputs(&fixtures.join(target)) {
            // A panic fails the test naming the input; any outcome with a message passes.
            let (kind, message) = describe(&run(&renderer, &std::fs::read(&path).unwrap()));
            println!("{}: {kind}: {message}", path.display());
        }
    }
}
