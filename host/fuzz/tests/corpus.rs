//! Every fuzz target over its committed corpus and past findings
//! (`corpus/TARGET/`, `regressions/TARGET/`), then over seeded mutations of
//! them: not coverage-guided, as `just fuzz` is, but the same checks on
//! every `cargo test`, and the same inputs every time.
//! `FUZZ_MUTATIONS=N` changes how many mutated inputs each seed gets.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

use mutatis::Session;

/// Inputs in a target's seed and regression folders, sorted by name.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = Vec::new();
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("a readable folder").path();
            let bytes = std::fs::read(&path).expect("a readable input");
            inputs.push((path, bytes));
        }
    }
    inputs.sort();
    inputs
}

/// Runs `run` on every input, then on `per_seed` mutations of each (one to
/// four mutations deep), from a fixed seed.
fn exercise(target: &str, per_seed: usize, run: fn(&[u8])) {
    let per_seed = std::env::var("FUZZ_MUTATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(per_seed);
    let seeds = inputs(target);
    assert!(!seeds.is_empty(), "{target} has no corpus");
    let mut session = Session::new().seed(0x5717_c4ad);
    for (path, bytes) in &seeds {
        println!("{target}: {}", path.display());
        run(bytes);
        for round in 0..per_seed {
            let mut mutated = bytes.clone();
            for _ in 0..=(round % 4) {
                session.mutate(&mut mutated).expect("a byte string can always be mutated");
            }
            run(&mutated);
        }
    }
    println!("{target}: {} inputs, {} mutations each", seeds.len(), per_seed);
}

#[test]
fn config() {
    exercise("config", 40, switchyard_fuzz::config);
}

#[test]
fn upload() {
    exercise("upload", 3, switchyard_fuzz::upload);
}

#[test]
fn http() {
    exercise("http", 10, switchyard_fuzz::http);
}

#[test]
fn metrics() {
    exercise("metrics", 40, switchyard_fuzz::metrics);
}
