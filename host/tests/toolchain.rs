//! What a fresh machine meets first: `components/build.sh` finds each linker
//! in its documented order, or names the command that provides it (never a
//! compiler's "linker not found"), and `just doctor` reports a tool missing
//! from PATH and fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository").to_path_buf()
}

/// A directory of links to every program on the current PATH except
/// `hidden`, to stand for a machine that lacks those programs.
fn path_without(links: &Path, hidden: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let target = entry.path();
            let executable =
                std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            let hide = hidden.iter().any(|h| name == *h);
            let link = links.join(&name);
            // The first directory on PATH wins, as it does for the shell.
            if executable && !hide && std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(&target, &link).expect("link a program");
            }
        }
    }
    links.to_path_buf()
}

fn joined(dirs: &[&Path]) -> OsString {
    std::env::join_paths(dirs).expect("PATH")
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn build_sh_tools(path: &OsString, tools_dir: &Path, install: bool) -> Output {
    Command::new("bash")
        .arg(repo().join("components/build.sh"))
        .arg("--tools")
        .env("PATH", path)
        .env("SWITCHYARD_TOOLS_DIR", tools_dir)
        .env("SWITCHYARD_NO_INSTALL", if install { "0" } else { "1" })
        // Installing Debian packages is not what these tests are about.
        .env("SWITCHYARD_NO_APT", "1")
        .env_remove("SWITCHYARD_GUEST_ROUTE")
        .output()
        .expect("run build.sh")
}

/// The bin directory of the rustup toolchain's sysroot, when rustup is here.
fn rustup_tools_dir() -> Option<PathBuf> {
    let rustc = Command::new("rustup").args(["which", "rustc"]).output().ok().filter(|o| o.status.success())?;
    let rustc = String::from_utf8(rustc.stdout).ok()?;
    let sysroot = Command::new(rustc.trim()).args(["--print", "sysroot"]).output().ok()?;
    let verbose = Command::new(rustc.trim()).arg("-vV").output().ok()?;
    let verbose = String::from_utf8(verbose.stdout).ok()?;
    let host = verbose.lines().find_map(|l| l.strip_prefix("host: "))?;
    let dir = Path::new(String::from_utf8(sysroot.stdout).ok()?.trim()).join("lib/rustlib").join(host).join("bin");
    dir.is_dir().then_some(dir)
}

#[test]
fn without_any_wasm_component_ld_build_sh_names_the_install_command() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let links = scratch.path().join("bin");
    std::fs::create_dir(&links).unwrap();
    // No wasm-component-ld on PATH, no rustup (so neither its target nor
    // its sysroot copy), and an empty tools cache.
    let path = joined(&[&path_without(&links, &["wasm-component-ld", "rustup"])]);
    let output = build_sh_tools(&path, &scratch.path().join("tools"), false);
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("no rustup on PATH"), "the standard route is ruled out and says why: {text}");
    assert!(
        text.contains("install it with: cargo install wasm-component-ld --locked --version"),
        "the missing linker is named with the command that provides it: {text}"
    );
    assert!(!text.contains("linker `wasm-component-ld` not found"), "{text}");
}

#[test]
fn without_path_or_rustup_copies_build_sh_installs_wasm_component_ld_with_cargo() {
    let Some(rustup_dir) = rustup_tools_dir() else {
        eprintln!("skipping: no rustup toolchain to provide wasm-ld and cargo");
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let links = scratch.path().join("bin");
    std::fs::create_dir(&links).unwrap();
    // wasm-ld stays findable on PATH (the rustup toolchain's, by its real
    // path); wasm-component-ld is on neither PATH nor a visible rustup, so
    // only the pinned cargo install is left. It is kept in the shared tools
    // cache, so only the first run on a machine compiles it.
    let gcc_ld = rustup_dir.join("gcc-ld");
    let path = joined(&[&path_without(&links, &["wasm-component-ld", "rustup", "wasm-ld"]), &gcc_ld]);
    let tools_dir = std::env::var_os("SWITCHYARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/switchyard/tools"));
    let output = build_sh_tools(&path, &tools_dir, true);
    let text = output_text(&output);
    let installed = tools_dir.join("bin/wasm-component-ld");
    assert!(
        text.contains(&format!("wasm-component-ld: {} (cargo install, version", installed.display())),
        "the cargo-installed linker is used and named: {text}"
    );
    assert!(text.contains(&format!("wasm-ld: {} (PATH)", gcc_ld.join("wasm-ld").display())), "{text}");
    assert!(!text.contains("not found"), "{text}");
    let version = Command::new(&installed).arg("--version").output().expect("run the installed linker");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("wasm-component-ld 0.5."), "{version:?}");
}

#[test]
fn an_unknown_guest_route_is_refused_by_name() {
    let output = Command::new("bash")
        .arg(repo().join("components/build.sh"))
        .arg("--tools")
        .env("SWITCHYARD_GUEST_ROUTE", "sideways")
        .env("SWITCHYARD_NO_INSTALL", "1")
        .output()
        .expect("run build.sh");
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("SWITCHYARD_GUEST_ROUTE must be auto, standard or fallback, not 'sideways'"), "{text}");
}

fn doctor(path: &OsString) -> Output {
    Command::new("bash").arg(repo().join("scripts/doctor.sh")).env("PATH", path).output().expect("run doctor")
}

#[test]
fn doctor_reports_a_tool_missing_from_path_and_fails() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let links = scratch.path().join("bin");
    std::fs::create_dir(&links).unwrap();
    let output = doctor(&joined(&[&path_without(&links, &["promtool"])]));
    let text = output_text(&output);
    assert!(!output.status.success(), "promtool is needed by just test: {text}");
    let line = text.lines().find(|l| l.contains(" promtool ")).unwrap_or_else(|| panic!("no promtool line: {text}"));
    assert!(line.contains("MISSING") && line.contains("apt-get install prometheus"), "{line}");

    // With the machine's own PATH the same tool is found, with its version.
    if std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("promtool").is_file())) {
        let output = doctor(&std::env::var_os("PATH").unwrap());
        let text = output_text(&output);
        let line =
            text.lines().find(|l| l.contains(" promtool ")).unwrap_or_else(|| panic!("no promtool line: {text}"));
        assert!(line.trim_start().starts_with("ok") && line.contains("promtool, version"), "{line}");
    }
}
