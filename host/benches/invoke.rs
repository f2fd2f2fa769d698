//! `just bench-invoke`: instantiate + call latency of a trivial fixture and
//! of the order handler, through the same `invoke_handler` path requests take
//! (fresh Store, limits, fuel, deadline, unit of work).
//!
//! Prints p50/p99/mean in microseconds and fuel per call. Runs sequentially
//! on one task so the numbers are per-call costs, not throughput.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard::config::Config;
use switchyard::runtime::{HandlerRequest, Outcome, Runtime};

const WARMUP: usize = 500;
const ITERATIONS: usize = 5_000;

fn config(components: &std::path::Path, db: &str) -> Config {
    let text = format!(
        r#"
        [database]
        url = "{db}"
        [components.hello]
        path = "hello.wasm"
        [components.order-handler]
        path = "order-handler.wasm"
        [connectors.email]
        [connectors.sms]
        [connectors.webhook]
        "#
    );
    match Config::parse(&text, components.to_path_buf()) {
        Ok(config) => config,
        Err(err) => panic!("bench config: {err:#}"),
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    fuel: u64,
}

async fn measure(runtime: &Runtime, component: &str, request: impl Fn(usize) -> HandlerRequest) -> Stats {
    let id: Arc<str> = Arc::from("bench");
    for i in 0..WARMUP {
        let _ = runtime.invoke_handler(component, id.clone(), request(i)).await;
    }
    let mut samples = Vec::with_capacity(ITERATIONS);
    let mut fuel = 0;
    for i in 0..ITERATIONS {
        let started = Instant::now();
        let invocation = match runtime.invoke_handler(component, id.clone(), request(WARMUP + i)).await {
            Ok(invocation) => invocation,
            Err(err) => panic!("{component}: {err}"),
        };
        samples.push(started.elapsed());
        assert_eq!(invocation.record.outcome, Outcome::Ok, "{component}");
        fuel = invocation.record.fuel_consumed;
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats { p50: samples[samples.len() / 2], p99: samples[samples.len() * 99 / 100], mean, fuel }
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => panic!("tokio: {err}"),
    };
    runtime.block_on(async {
        let components = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../components/build");
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(err) => panic!("temp dir: {err}"),
        };
        let db = format!("sqlite://{}", dir.path().join("bench.db").display());
        let state = match switchyard::prepare(&config(&components, &db)).await {
            Ok(state) => state,
            Err(err) => panic!("prepare: {err:#}"),
        };
        let runtime = &state.runtime;

        let hello = measure(runtime, "hello", |_| HandlerRequest { method: "GET".into(), path: "/".into(), ..Default::default() }).await;

        let stock = json!({ "stock": 1_000_000_000u64, "price_cents": 100 }).to_string();
        let put = HandlerRequest {
            method: "PUT".into(),
            path: "/inventory/bench".into(),
            params: vec![("sku".into(), "bench".into())],
            body: stock.into_bytes(),
            ..Default::default()
        };
        let _ = runtime.invoke_handler("order-handler", Arc::from("bench"), put).await;
        let order = json!({ "customer": "Bench", "email": "b@example.com", "phone": "1", "items": [{ "sku": "bench", "qty": 1 }] }).to_string();
        let orders = measure(runtime, "order-handler", |_| HandlerRequest {
            method: "POST".into(),
            path: "/orders".into(),
            body: order.clone().into_bytes(),
            ..Default::default()
        })
        .await;

        println!("| invocation | p50 µs | p99 µs | mean µs | fuel/call |");
        println!("|---|---:|---:|---:|---:|");
        for (name, s) in [("hello fixture (instantiate + call)", &hello), ("order handler POST /orders (+ SQLite commit)", &orders)] {
            println!(
                "| {name} | {:.1} | {:.1} | {:.1} | {} |",
                s.p50.as_secs_f64() * 1e6,
                s.p99.as_secs_f64() * 1e6,
                s.mean.as_secs_f64() * 1e6,
                s.fuel
            );
        }
        state.db.close().await;
    });
}
