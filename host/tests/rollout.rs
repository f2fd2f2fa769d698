//! Canary rollouts and the watch after a plain deploy, with real components
//! and the injected clock: a step ends only when a test moves the clock.
//! Stable `svc` is the `hello` fixture; canaries are the `trap` fixture
//! (traps on every call), `slow` (answers after `?iterations=N` loops:
//! fuel-hungry, and slow) and `hello` itself with an extra custom section
//! (a different build that behaves the same).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use common::{Backend, TestHost, component_bytes, deploy, eventually};

/// `svc` with three steps; `watch` for the plain-deploy watch; `lenient`
/// judges latency only (fuel and memory ratios out of reach).
const APP: &str = r#"
    [components.svc]
    path = "hello.wasm"
    limits = { fuel = 10_000_000_000 }
    [components.svc.rollout]
    steps = [50, 100]
    step_ms = 10_000
    min_invocations = 20
    max_extensions = 1
    watch_ms = 0

    [components.watched]
    path = "hello.wasm"
    [components.watched.rollout]
    watch_ms = 60_000
    min_invocations = 20

    [components.lenient]
    path = "hello.wasm"
    limits = { fuel = 10_000_000_000 }
    [components.lenient.rollout]
    min_invocations = 20
    max_fuel_ratio = 1e12
    max_memory_ratio = 1e12
    watch_ms = 0

    [[routes]]
    method = "GET"
    path = "/svc"
    component = "svc"
    [[routes]]
    method = "GET"
    path = "/watched"
    component = "watched"
    [[routes]]
    method = "GET"
    path = "/lenient"
    component = "lenient"
"#;

const STEP: i64 = 10_000;
const LIMIT: Duration = Duration::from_secs(60);

async fn start() -> TestHost {
    TestHost::start_with_toml(Backend::Sqlite, APP).await.expect("host")
}

/// `hello` as another build: the same code with a custom section appended.
fn hello_rebuilt() -> Vec<u8> {
    let mut bytes = component_bytes("hello");
    let name = b"rebuilt";
    let payload = b"canary";
    bytes.push(0x00);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

/// One GET; its status and the version that answered.
async fn call(host: &TestHost, path: &str, key: Option<&str>) -> (StatusCode, String) {
    let mut request = TestHost::client().get(format!("{}{path}", host.url));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let version = response.headers().get("x-switchyard-version").map(|v| v.to_str().unwrap().to_owned());
    (response.status(), version.unwrap_or_default())
}

async fn rollout(host: &TestHost, name: &str) -> Value {
    let (status, body) = host.admin(Method::GET, &format!("/admin/components/{name}/rollout")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["rollout"].clone()
}

async fn wait_for_state(host: &TestHost, name: &str, state: &str) -> Value {
    eventually(&format!("{name}'s rollout is {state}"), LIMIT, || async {
        rollout(host, name).await["state"] == state
    })
    .await;
    rollout(host, name).await
}

fn version_of(host: &TestHost, name: &str) -> String {
    host.runtime.registry().list().into_iter().find(|c| c.name == name).unwrap().version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_canary_is_rolled_back_and_the_stable_version_never_fails() {
    let host = start().await;
    let stable = version_of(&host, "svc");
    let (status, report) = deploy(&host, "svc?canary=20", component_bytes("trap")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let canary = report["version"].as_str().unwrap().to_owned();
    assert_eq!(rollout(&host, "svc").await["weight"], 20);

    let mut answers: Vec<(StatusCode, String)> = Vec::new();
    for i in 0..400 {
        answers.push(call(&host, "/svc", Some(&format!("order-{i}"))).await);
        if rollout(&host, "svc").await["state"] == "rolled_back" {
            break;
        }
    }
    let status = wait_for_state(&host, "svc", "rolled_back").await;
    assert_eq!(status["last_decision"]["decision"], "rollback");
    assert_eq!(status["last_decision"]["reason"], "error_rate");
    let failed = answers.iter().filter(|(status, _)| !status.is_success()).count();
    assert!(
        answers.iter().filter(|(_, v)| *v == stable).all(|(status, _)| *status == StatusCode::OK),
        "stable never fails"
    );
    assert!(answers.iter().filter(|(status, _)| !status.is_success()).all(|(_, v)| *v == canary));
    assert!(failed >= 3, "the canary was tried: {failed} failures");
    assert!(failed as f64 <= 0.4 * answers.len() as f64 + 3.0, "{failed} of {} failed", answers.len());

    // Rolled back: everything is served by the stable version again.
    for i in 0..20 {
        assert_eq!(call(&host, "/svc", Some(&format!("after-{i}"))).await, (StatusCode::OK, stable.clone()));
    }
    let (_, health) = host.admin(Method::GET, "/health").await;
    let svc = health["components"].as_array().unwrap().iter().find(|c| c["name"] == "svc").unwrap().clone();
    assert_eq!(svc["rollout"]["state"], "rolled_back");
    assert!(svc["canary"].is_null());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_advances_through_every_step_and_is_promoted() {
    let host = start().await;
    let stable = version_of(&host, "svc");
    let (status, report) = deploy(&host, "svc?canary=30", hello_rebuilt()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let canary = report["version"].as_str().unwrap().to_owned();
    assert_ne!(canary, stable);
    assert_eq!(rollout(&host, "svc").await["steps"], serde_json::json!([30, 50, 100]));

    let mut weights = Vec::new();
    for round in 0..4 {
        let status = rollout(&host, "svc").await;
        if status["state"] != "canary" {
            break;
        }
        weights.push(status["weight"].as_u64().unwrap());
        for i in 0..150 {
            assert_eq!(call(&host, "/svc", Some(&format!("r{round}-{i}"))).await.0, StatusCode::OK);
        }
        let step = status["step"].clone();
        host.clock.advance(STEP);
        eventually("the step is judged", LIMIT, || async {
            let now = rollout(&host, "svc").await;
            now["step"] != step || now["state"] != "canary"
        })
        .await;
    }
    assert_eq!(weights, [30, 50]);
    let status = wait_for_state(&host, "svc", "promoted").await;
    assert_eq!(status["last_decision"]["decision"], "promote");
    assert_eq!(status["last_decision"]["reason"], "passed");
    assert_eq!(version_of(&host, "svc"), canary);
    for i in 0..20 {
        assert_eq!(call(&host, "/svc", Some(&format!("after-{i}"))).await, (StatusCode::OK, canary.clone()));
    }
    // The promotion is a deployment: the details show it, and the history.
    let (_, details) = host.admin(Method::GET, "/admin/components/svc").await;
    assert_eq!(details["version"], canary);
    assert_eq!(details["history"][0]["action"], "promote");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_hungry_and_slow_canaries_are_rolled_back_for_their_reason() {
    let host = start().await;
    // `slow` loops before answering; `hello` ignores the query.
    let (status, report) = deploy(&host, "svc?canary=50", component_bytes("slow")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    for i in 0..200 {
        assert_eq!(call(&host, "/svc?iterations=100000", Some(&format!("f{i}"))).await.0, StatusCode::OK);
        if rollout(&host, "svc").await["state"] != "canary" {
            break;
        }
    }
    let status = wait_for_state(&host, "svc", "rolled_back").await;
    assert_eq!(status["last_decision"]["reason"], "fuel", "{status}");

    let (status, report) = deploy(&host, "lenient?canary=50", component_bytes("slow")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    for i in 0..200 {
        assert_eq!(call(&host, "/lenient?iterations=20000000", Some(&format!("s{i}"))).await.0, StatusCode::OK);
        if rollout(&host, "lenient").await["state"] != "canary" {
            break;
        }
    }
    let status = wait_for_state(&host, "lenient", "rolled_back").await;
    assert_eq!(status["last_decision"]["reason"], "p99", "{status}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_meets_one_version_across_the_rollout() {
    let host = start().await;
    let (status, _) = deploy(&host, "svc?canary=30", hello_rebuilt()).await;
    assert_eq!(status, StatusCode::OK);
    let mut seen: HashMap<String, String> = HashMap::new();
    for round in 0..2 {
        for key in 0..40 {
            let key = format!("key-{key}");
            for _ in 0..3 {
                let (status, version) = call(&host, "/svc", Some(&key)).await;
                assert_eq!(status, StatusCode::OK);
                let first = seen.entry(key.clone()).or_insert_with(|| version.clone());
                // A larger canary share only moves keys to the canary.
                if *first != version {
                    assert_eq!(round, 1, "{key} moved within a step");
                    assert_eq!(version, rollout(&host, "svc").await["version"], "{key} moved back to stable");
                    *first = version;
                }
            }
        }
        host.clock.advance(STEP);
        eventually("the step is judged", LIMIT, || async { rollout(&host, "svc").await["step"] == 2 }).await;
    }
    let versions: std::collections::HashSet<&String> = seen.values().collect();
    assert_eq!(versions.len(), 2, "both versions served some keys");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_deploy_that_regresses_is_rolled_back_to_the_previous_version() {
    let host = start().await;
    let previous = version_of(&host, "watched");
    for i in 0..30 {
        assert_eq!(call(&host, "/watched", Some(&format!("before-{i}"))).await.0, StatusCode::OK);
    }
    let (status, report) = deploy(&host, "watched", component_bytes("trap")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(rollout(&host, "watched").await["state"], "watching");
    for i in 0..50 {
        call(&host, "/watched", Some(&format!("after-{i}"))).await;
        if rollout(&host, "watched").await["state"] != "watching" {
            break;
        }
    }
    let status = wait_for_state(&host, "watched", "rolled_back").await;
    assert_eq!(status["last_decision"]["reason"], "error_rate");
    assert_eq!(version_of(&host, "watched"), previous);
    assert_eq!(call(&host, "/watched", None).await, (StatusCode::OK, previous));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_serves_the_stable_version_and_audits_the_abort() {
    let host = start().await;
    let stable = version_of(&host, "svc");
    let (status, _) = deploy(&host, "svc?canary=30", hello_rebuilt()).await;
    assert_eq!(status, StatusCode::OK);
    // The same database, loaded again as a restarted host would.
    let restarted =
        switchyard::prepare_with_clock(&host.config, std::sync::Arc::new(host.clock.clone())).await.unwrap();
    let svc = restarted.runtime.registry().list().into_iter().find(|c| c.name == "svc").unwrap();
    assert_eq!(svc.version, stable);
    assert!(svc.canary.is_none());
    let audit = restarted.db.audit_rows().await.unwrap();
    let last = audit.iter().rev().find(|row| row.entry.component.as_deref() == Some("svc")).unwrap();
    assert_eq!((last.entry.action.as_str(), last.entry.result.as_str()), ("rollout", "abort"));
    assert!(last.entry.reason.as_deref().unwrap().starts_with("restart"));
    assert!(restarted.rollouts.status("svc").await.is_none());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollout_requests_get_their_status_and_change_nothing() {
    let host = start().await;
    let stable = version_of(&host, "svc");
    for share in ["0", "100", "abc", "-5"] {
        let (status, body) = deploy(&host, &format!("svc?canary={share}"), hello_rebuilt()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{share}: {body}");
        assert!(body["error"].as_str().unwrap().contains("from 1 to 99"), "{body}");
    }
    assert_eq!(version_of(&host, "svc"), stable);
    assert!(rollout(&host, "svc").await.is_null(), "no rollout started");
    for action in ["promote", "abort"] {
        let (status, body) = host.admin(Method::POST, &format!("/admin/components/svc/rollout/{action}")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {body}");
    }
    let (status, _) = deploy(&host, "svc?canary=10", hello_rebuilt()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = deploy(&host, "svc?canary=10", component_bytes("trap")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["rollout"]["state"], "canary", "the running rollout is shown: {body}");
    // Manual abort: the stable version serves everything.
    let (status, body) = host.admin(Method::POST, "/admin/components/svc/rollout/abort").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rollout"]["state"], "aborted");
    assert_eq!(body["rollout"]["last_decision"]["reason"], "manual");
    assert!(host.runtime.registry().list().into_iter().find(|c| c.name == "svc").unwrap().canary.is_none());
    host.stop().await;
}
