//! `just bench-compile`: what compiling a new version of the order handler
//! costs. Cold (the host's engine, nothing compiled before), without
//! optimisation, on one thread; and with Cranelift's incremental cache warm
//! from the previous build, as the host runs it: a new build with the same
//! code, and real builds that differ in some functions (the fault builds).
//! Each setting gets its own engine; rounds interleave the settings. Prints
//! the median and spread of `Component::from_binary` per setting, and the
//! bytes the cache holds for one build. (Winch is not among them: it needs
//! signals-based traps, which the host's engine turns off.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::Component;
use wasmtime::{CacheStore, Engine, OptLevel};

const ROUNDS: usize = 9;

#[derive(Debug, Default)]
struct MemoryStore(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl MemoryStore {
    fn bytes(&self) -> usize {
        self.0.lock().unwrap().iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

impl CacheStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        self.0.lock().unwrap().get(key).map(|v| Cow::Owned(v.clone()))
    }
    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.0.lock().unwrap().insert(key.to_vec(), value);
        true
    }
}

fn build_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../components/build")
}

fn engine(tweak: impl FnOnce(&mut wasmtime::Config)) -> anyhow::Result<Engine> {
    let mut config =
        switchyard::runtime::engine::config(64 << 20, true, switchyard::runtime::engine::Concurrency::Off)?;
    tweak(&mut config);
    Ok(Engine::new(&config)?)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let dir = build_dir();
    let base = std::fs::read(dir.join("order-handler.wasm")).expect("run `just components` first");
    let faults: Vec<(String, Vec<u8>)> = ["slow", "fuel", "trap", "trap-tenth"]
        .iter()
        .filter_map(|f| Some((f.to_string(), std::fs::read(dir.join(format!("faults/order-handler-{f}.wasm"))).ok()?)))
        .collect();
    let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut failures: Vec<String> = Vec::new();
    let mut cached_bytes = 0;
    for round in 0..ROUNDS {
        let tag = format!("round-{round}");
        let variant = switchyard_loadtests::variant::with_custom_section(&base, "bench-compile", tag.as_bytes());
        // The host's engine, nothing compiled before.
        let e = engine(|_| {}).unwrap();
        let t = Instant::now();
        Component::from_binary(&e, &variant).unwrap();
        results.entry("cold").or_default().push(ms(t));
        // Without optimisation.
        let e = engine(|c| {
            c.cranelift_opt_level(OptLevel::None);
        })
        .unwrap();
        let t = Instant::now();
        Component::from_binary(&e, &variant).unwrap();
        results.entry("cold, opt level none").or_default().push(ms(t));
        // One compile thread.
        let e = engine(|c| {
            c.parallel_compilation(false);
        })
        .unwrap();
        let t = Instant::now();
        Component::from_binary(&e, &variant).unwrap();
        results.entry("cold, one compile thread").or_default().push(ms(t));
        // Incremental cache, primed with the base build.
        let store = Arc::new(MemoryStore::default());
        let e = engine(|c| {
            c.enable_incremental_compilation(store.clone()).unwrap();
        })
        .unwrap();
        let t = Instant::now();
        Component::from_binary(&e, &base).unwrap();
        results.entry("cold, into an empty cache").or_default().push(ms(t));
        cached_bytes = store.bytes();
        let t = Instant::now();
        Component::from_binary(&e, &variant).unwrap();
        results.entry("warm cache: same code, new digest").or_default().push(ms(t));
        for (name, bytes) in &faults {
            let store = Arc::new(MemoryStore::default());
            let e = engine(|c| {
                c.enable_incremental_compilation(store.clone()).unwrap();
            })
            .unwrap();
            Component::from_binary(&e, &base).unwrap();
            let t = Instant::now();
            Component::from_binary(&e, bytes).unwrap();
            let key: &'static str = Box::leak(format!("warm cache: fault build {name}").into_boxed_str());
            results.entry(key).or_default().push(ms(t));
        }
        eprintln!("round {}/{ROUNDS}", round + 1);
    }
    failures.dedup();
    for f in &failures {
        println!("- {f}");
    }
    let mut names: Vec<_> = results.keys().copied().collect();
    names.sort();
    println!("- the cache holds {:.1} MB for one build of the order handler", cached_bytes as f64 / 1e6);
    println!("| setting | median ms | min | max |");
    println!("|---|---:|---:|---:|");
    for name in names {
        let mut v = results[name].clone();
        v.sort_by(f64::total_cmp);
        println!("| {name} | {:.1} | {:.1} | {:.1} |", v[v.len() / 2], v[0], v[v.len() - 1]);
    }
}
