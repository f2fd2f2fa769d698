//! `switchyard check` accepts a good app and rejects bad ones before
//! serving, naming the file and the problem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(config)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run switchyard");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

#[test]
fn check_accepts_the_reference_app() {
    let components = common::components_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        &format!(
            "[components.order-handler]\npath = \"{}\"\n[[routes]]\nmethod = \"POST\"\npath = \"/orders\"\ncomponent = \"order-handler\"\n",
            components.join("order-handler.wasm").display()
        ),
    );
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    assert!(text.contains("ok  order-handler"), "{text}");
}

#[test]
fn check_rejects_bad_apps_naming_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("garbage.wasm"), b"not wasm at all").expect("write");
    // A core module: valid wasm, but not a component.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").expect("write");
    // An empty component: well-formed, but exports nothing.
    std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").expect("write");
    let cases = [
        ("[server]\nlisen = 1\n", "unknown field `lisen`"),
        ("[components.a]\npath = \"missing.wasm\"\n", "missing.wasm"),
        ("[components.a]\npath = \"garbage.wasm\"\n", "garbage.wasm: not a WebAssembly binary"),
        ("[components.a]\npath = \"core.wasm\"\n", "core.wasm: a core WebAssembly module, not a component"),
        ("[components.a]\npath = \"empty.wasm\"\n", "does not implement the world switchyard:platform/handler"),
        (
            "[components.a]\npath = \"h.wasm\"\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\ncomponent = \"a\"\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\ncomponent = \"a\"\n",
            "duplicate route GET /x",
        ),
    ];
    for (body, needle) in cases {
        let config = write_config(dir.path(), body);
        let (ok, text) = check(&config);
        assert!(!ok, "{body}");
        assert!(text.contains(needle), "expected {needle:?} in: {text}");
        assert!(text.contains("switchyard.toml"), "names the file: {text}");
    }
}
