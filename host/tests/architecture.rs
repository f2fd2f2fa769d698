//! Modules depend one way: no cycle between the crate's top-level modules
//! (`server → runtime → capabilities → db`, with `config` below the
//! runtime), and none between the files of one module (`runtime/invoke`
//! and `runtime/registry`, `runtime/state` and `runtime/outbound`, …).
//!
//! The graph is read from the source: a file depends on every module it
//! names through `crate::…` or `super::…` paths (comments ignored). A
//! module's own `mod.rs` and its files are parent and children, not
//! siblings, so `super::Runtime` in `runtime/invoke.rs` is no edge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every module of `src/` with its source, comments removed.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code: Vec<&str> = text.lines().map(|line| line.split("//").next().unwrap_or("")).collect();
            found.insert(module, code.join("\n"));
        }
    }
    found
}

/// The first identifiers of each path after `prefix` (`crate::` or
/// `super::`), including each member of a `{…}` group.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|seg| seg.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
            .take_while(|seg| !seg.is_empty())
            .take(2)
            .collect()
    };
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        // `xcrate::` or `a_super::` are other names.
        if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            paths.extend(inner.split(',').map(ident).filter(|p| !p.is_empty()));
        } else {
            let path = ident(rest);
            if !path.is_empty() {
                paths.push(path);
            }
        }
    }
    paths
}

/// Edges between top-level modules, and between sibling files of a module.
fn edges(modules: &BTreeMap<Module, String>) -> BTreeSet<(Module, Module)> {
    let mut edges = BTreeSet::new();
    for (module, code) in modules {
        let mut targets: Vec<Module> = paths_after(code, "crate::");
        if let Some((_, parent)) = module.split_last() {
            for path in paths_after(code, "super::") {
                targets.push(parent.iter().cloned().chain(path).collect());
            }
        }
        for target in targets {
            // The longest prefix that is a module: `crate::db::outbox::Status` → db/outbox.
            let Some(target) = (1..=target.len()).rev().map(|n| target[..n].to_vec()).find(|m| modules.contains_key(m))
            else {
                continue;
            };
            if let (Some(from), Some(to)) = (module.first(), target.first())
                && from != to
            {
                edges.insert((vec![from.clone()], vec![to.clone()]));
            }
            if module.len() >= 2 && target.len() >= 2 && module[0] == target[0] && module[1] != target[1] {
                edges.insert((module[..2].to_vec(), target[..2].to_vec()));
            }
        }
    }
    edges
}

/// Every cycle's modules (strongly connected components of two or more).
fn cycles(edges: &BTreeSet<(Module, Module)>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&Module> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for (a, b) in edges {
                if *a == node && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&Module, BTreeSet<Module>> = nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut cycles: BTreeSet<Vec<String>> = BTreeSet::new();
    for node in &nodes {
        let members: Vec<String> = nodes
            .iter()
            .filter(|other| reach[node].contains(**other) && reach[**other].contains(*node))
            .map(|m| m.join("/"))
            .collect();
        if members.len() > 1 {
            cycles.insert(members);
        }
    }
    cycles.into_iter().collect()
}

#[test]
fn modules_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let edges = edges(&modules);
    // The graph is read, not empty: the dependencies the design names are there.
    for (from, to) in
        [("server", "runtime"), ("runtime", "capabilities"), ("capabilities", "db"), ("runtime", "config")]
    {
        assert!(edges.contains(&(vec![from.to_owned()], vec![to.to_owned()])), "{from} → {to} not found");
    }
    assert_eq!(cycles(&edges), Vec::<Vec<String>>::new(), "modules that depend on each other");
}

#[test]
fn a_cycle_is_found() {
    let mut modules = BTreeMap::new();
    modules.insert(vec!["a".to_owned()], "use crate::b::Thing;".to_owned());
    modules.insert(vec!["b".to_owned()], "fn f() { crate::a::g() }".to_owned());
    modules.insert(vec!["c".to_owned(), "x".to_owned()], "use super::{y::Y, z};".to_owned());
    modules.insert(vec!["c".to_owned(), "y".to_owned()], "use super::x; // super::z".to_owned());
    modules.insert(vec!["c".to_owned(), "z".to_owned()], "use crate::config;".to_owned());
    assert_eq!(
        cycles(&edges(&modules)),
        vec![vec!["a".to_owned(), "b".to_owned()], vec!["c/x".to_owned(), "c/y".to_owned()]]
    );
}
