//! Replays the fuzzing inputs on stable through the fuzz harness itself (`fuzz/src/lib.rs`),
//! so `cargo test` runs every seed and every minimized finding the way the fuzzer did.
//!
//! - `fuzz/seeds/<target>/`: the seeds. A name says what the input must come to: `ok_…`
//!   renders, `refused_…` is refused before rendering, `failed_…` fails a render stage.
//! - `mcp-sidecar/tests/fixtures/fuzz/<target>/`: inputs that once crashed, hung or ran out of
//!   memory under the fuzzer, minimized. They must now end without a panic, in any outcome.
//!   A target without findings needs no folder, but the folder as a whole must hold at least
//!   one fixture and nothing but targets' folders: a missing, misplaced or emptied folder fails
//!   the test instead of letting it pass having replayed nothing.

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::Outcome;
use mcp_sidecar::render::Renderer;

type Target = fn(&Renderer, &[u8]) -> Outcome;

const TARGETS: [(&str, Target); 2] = [
    ("render_spec", harness::render_spec),
    ("svg", harness::render_svg),
];

/// The files directly in `directory`, sorted; none when it does not exist.
fn inputs(directory: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => panic!("{}: {error}", directory.display()),
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

/// The minimized findings under `root`, each with the target that replays it; an error saying
/// what is wrong when there are none to replay, or when something there would never be replayed.
fn fixtures(root: &Path) -> Result<Vec<(Target, PathBuf)>, String> {
    let entries = std::fs::read_dir(root).map_err(|error| {
        format!(
            "the fuzz fixtures folder {} cannot be read ({error}); it holds the minimized \
             fuzz findings this test replays, one folder per target ({})",
            root.display(),
            target_names()
        )
    })?;
    for entry in entries {
        let path = entry.map_err(|error| error.to_string())?.path();
        let known = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| TARGETS.iter().any(|(target, _)| *target == name));
        if !known || !path.is_dir() {
            return Err(format!(
                "{} is not a target's folder, so nothing in it is replayed; fixtures go in \
                 one folder per target ({})",
                path.display(),
                target_names()
            ));
        }
    }
    let found: Vec<(Target, PathBuf)> = TARGETS
        .iter()
        .flat_map(|(target, run)| {
            inputs(&root.join(target))
                .into_iter()
                .map(|path| (*run, path))
        })
        .collect();
    if found.is_empty() {
        return Err(format!(
            "the fuzz fixtures folder {} holds no fixtures; it should hold the minimized fuzz \
             findings this test replays",
            root.display()
        ));
    }
    Ok(found)
}

fn target_names() -> String {
    TARGETS.map(|(target, _)| target).join(", ")
}

#[test]
fn minimized_fuzz_findings_end_without_a_panic() {
    let renderer = Renderer::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let findings = fixtures(&root).unwrap_or_else(|problem| panic!("{problem}"));
    for (run, path) in findings {
        // A panic fails the test naming the input; any outcome with a message passes.
        let (kind, message) = describe(&run(&renderer, &std::fs::read(&path).unwrap()));
        println!("{}: {kind}: {message}", path.display());
    }
}

/// The replay cannot pass having replayed nothing: no folder, no fixtures, or fixtures where
/// no target looks are each an error that says so.
#[test]
fn a_missing_empty_or_misfiled_fixtures_folder_is_an_error_not_a_pass() {
    let root = std::env::temp_dir().join(format!("fuzz-fixtures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);

    let missing = fixtures(&root).unwrap_err();
    std::fs::create_dir_all(root.join("svg")).unwrap();
    let empty = fixtures(&root).unwrap_err();
    std::fs::write(root.join("crash-1234"), b"{}").unwrap();
    let misfiled = fixtures(&root).unwrap_err();
    std::fs::remove_file(root.join("crash-1234")).unwrap();
    std::fs::write(root.join("svg/finding.svg"), b"<svg/>").unwrap();
    let one = fixtures(&root).unwrap();
    std::fs::remove_dir_all(&root).unwrap();

    assert!(missing.contains("cannot be read"), "{missing}");
    assert!(empty.contains("holds no fixtures"), "{empty}");
    assert!(misfiled.contains("is not a target's folder"), "{misfiled}");
    assert_eq!(one.len(), 1);
}
