//! Hot swap through the admin API against the real order handler: no failed
//! requests while it is swapped under load, in-flight requests finish on
//! the version they started on, bad uploads are refused with their reason
//! while the running version keeps serving, rollback, restart, and the
//! hash-chained audit log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{ADMIN_TOKEN, Backend, TestHost, component_bytes, deploy, variant};

fn active_version(host: &TestHost, name: &str) -> String {
    host.runtime.registry().list().into_iter().find(|c| c.name == name).unwrap().version
}

async fn audit_rows(host: &TestHost) -> Vec<switchyard::db::audit::AuditRow> {
    host.db.audit_rows().await.unwrap()
}

async fn swap_under_load(host: &TestHost) {
    let client = TestHost::client();
    host.put_inventory("w", 1_000_000, 1).await;
    let original = component_bytes("order-handler");
    let versions = [original.clone(), variant(&original, "v2")];
    let v1 = active_version(host, "order-handler");

    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            let url = format!("{}/orders", host.url);
            let done = done.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let order = json!({ "customer": format!("c{i}"), "email": "c@example.com", "phone": "1", "items": [{ "sku": "w", "qty": 1 }] });
                // Bounded: the swaps end the loop; the cap guards a hang.
                for _ in 0..100_000 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    let response = client.post(&url).json(&order).send().await.expect("request");
                    let version = response.headers().get("x-switchyard-version").map(|v| v.to_str().unwrap().to_owned());
                    seen.push((response.status(), version));
                }
                seen
            })
        })
        .collect();

    let mut deployed = BTreeSet::new();
    for swap in 0..20 {
        let (status, report) = deploy(host, "order-handler", versions[(swap + 1) % 2].clone()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        deployed.insert(report["version"].as_str().unwrap().to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for client in clients {
        results.extend(client.await.unwrap());
    }
    assert_eq!(deployed.len(), 2, "swapped between two versions: {deployed:?}");
    assert!(deployed.contains(&v1));
    assert_eq!(active_version(host, "order-handler"), v1, "an even number of swaps ends where it began");
    let failed: Vec<_> = results.iter().filter(|(status, _)| *status != StatusCode::CREATED).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    let served_by: BTreeSet<_> =
        results.iter().map(|(_, v)| v.clone().expect("every response names its version")).collect();
    assert!(served_by.is_subset(&deployed), "{served_by:?}");
    assert_eq!(served_by.len(), 2, "both versions served requests: {served_by:?}");
    assert!(results.len() > 20, "load ran throughout: {} requests", results.len());
}
on_both_backends!(swapping_under_load_fails_no_request, swap_under_load);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_its_version() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let old = active_version(&host, "spin");
    let slow = {
        let url = format!("{}/spin?iterations=3000000000", host.url);
        tokio::spawn(async move { TestHost::client().get(url).send().await.unwrap() })
    };
    // Wait until it is being served (the probe itself counts as one).
    common::eventually("the slow request is in flight", std::time::Duration::from_secs(30), || async {
        let text = TestHost::client().get(format!("{}/metrics", host.url)).send().await.unwrap().text().await.unwrap();
        text.lines().any(|l| l.starts_with("http_requests_in_flight ") && l.ends_with(" 2"))
    })
    .await;
    let (status, report) = deploy(&host, "spin", variant(&component_bytes("slow"), "spin-v2")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["previous"], old.as_str());
    let new = report["version"].as_str().unwrap().to_owned();

    let finished = slow.await.unwrap();
    assert_eq!(finished.status(), StatusCode::OK);
    assert_eq!(finished.headers()["x-switchyard-version"], old.as_str(), "finished on the version it started on");
    let next = TestHost::client().get(format!("{}/spin?iterations=1", host.url)).send().await.unwrap();
    assert_eq!(next.headers()["x-switchyard-version"], new.as_str());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_are_refused_with_reasons_and_audited() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let before = active_version(&host, "order-handler");
    let order_handler = component_bytes("order-handler");
    let mut truncated = order_handler.clone();
    truncated.truncate(order_handler.len() / 2);
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("not wasm", b"hello, world".to_vec(), StatusCode::BAD_REQUEST, "not a WebAssembly binary"),
        ("precompiled", b"\x7fELF\x02\x01\x01\x00rest-of-a-cwasm".to_vec(), StatusCode::BAD_REQUEST, "precompiled"),
        ("core module", b"\0asm\x01\0\0\0".to_vec(), StatusCode::BAD_REQUEST, "core WebAssembly module"),
        ("compile failure", truncated, StatusCode::UNPROCESSABLE_ENTITY, "does not compile"),
        (
            "wrong world",
            component_bytes("connector-email"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "does not implement the world switchyard:platform/handler",
        ),
        ("missing export", b"\0asm\x0d\0\x01\0".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "does not implement"),
        ("too large", vec![0u8; 1_048_577], StatusCode::PAYLOAD_TOO_LARGE, "larger than"),
    ];
    for (case, bytes, status, reason) in &cases {
        let (got, body) = deploy(&host, "order-handler", bytes.clone()).await;
        assert_eq!(got, *status, "{case}: {body}");
        assert!(body["error"].as_str().unwrap().contains(reason), "{case}: {body}");
        assert_eq!(active_version(&host, "order-handler"), before, "{case}: the running version stays");
        let hello = TestHost::client().get(format!("{}/orders/ord_1", host.url)).send().await.unwrap();
        assert_eq!(hello.status(), StatusCode::NOT_FOUND, "{case}: still serving");
    }
    let rows = audit_rows(&host).await;
    let rejected: Vec<_> = rows.iter().filter(|r| r.entry.action == "deploy" && r.entry.result == "rejected").collect();
    assert_eq!(rejected.len(), cases.len());
    assert!(
        rejected.iter().all(|r| r.entry.actor == "test-suite" && r.entry.component.as_deref() == Some("order-handler"))
    );
    let (status, _) = deploy(&host, "no-such-component", order_handler).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_refused_and_audited() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let client = TestHost::client();
    let url = format!("{}/admin/components/order-handler", host.url);
    // A small body: the 401 comes before the body is read, and a large one
    // could still be in flight when the server answers.
    let missing = client.put(&url).body(b"\0asm".to_vec()).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let wrong = client.get(format!("{}/admin/components", host.url)).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let rows = audit_rows(&host).await;
    let denied: Vec<_> = rows.iter().filter(|r| r.entry.action == "auth" && r.entry.result == "denied").collect();
    assert_eq!(denied.len(), 2);
    assert!(denied[0].entry.reason.as_deref().unwrap().starts_with("missing token"));
    assert!(denied[1].entry.reason.as_deref().unwrap().starts_with("wrong token"));
    host.stop().await;
}

async fn rollback_and_restart(host: TestHost) -> TestHost {
    let original = active_version(&host, "order-handler");
    let (status, report) = deploy(&host, "order-handler", variant(&component_bytes("order-handler"), "v2")).await;
    assert_eq!(status, StatusCode::OK);
    let v2 = report["version"].as_str().unwrap().to_owned();
    assert_eq!(report["previous"], original.as_str());
    assert_eq!(report["cached"], false, "a new build is compiled");

    // Both versions were compiled in this process: rollbacks reuse the code.
    let (rolled, report) = host.admin(reqwest::Method::POST, "/admin/components/order-handler/rollback").await;
    assert_eq!(rolled, StatusCode::OK);
    assert_eq!(report["cached"], true, "{report}");
    assert_eq!(active_version(&host, "order-handler"), original, "rolled back to the previous version");
    let (to_v2, report) =
        host.admin(reqwest::Method::POST, &format!("/admin/components/order-handler/rollback?version={v2}")).await;
    assert_eq!(to_v2, StatusCode::OK);
    assert_eq!(report["cached"], true, "{report}");
    assert_eq!(active_version(&host, "order-handler"), v2);
    let (_, details) = host.admin(reqwest::Method::GET, "/admin/components/order-handler").await;
    assert_eq!(details["version"], v2.as_str());
    assert_eq!(details["history"].as_array().unwrap().len(), 4, "config, deploy, two rollbacks");

    // A restart serves the last deployed version, not the file's.
    let host = host.restart().await;
    assert_eq!(active_version(&host, "order-handler"), v2);
    let response = TestHost::client().get(format!("{}/orders/x", host.url)).send().await.unwrap();
    assert_eq!(response.headers()["x-switchyard-version"], v2.as_str());
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_and_restart_keeps_the_deployed_version() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let host = rollback_and_restart(host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_and_restart_keeps_the_deployed_version_postgres() {
    let Some(host) = TestHost::start(Backend::Postgres).await else { return };
    let host = rollback_and_restart(host).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_are_checked_against_their_digest() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let original = host.runtime.registry().list().into_iter().find(|c| c.name == "order-handler").unwrap().digest;
    let (status, report) = deploy(&host, "order-handler", variant(&component_bytes("order-handler"), "v2")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let v2 = report["version"].as_str().unwrap().to_owned();

    // The original's stored bytes change behind the host's back.
    let pool = sqlx::sqlite::SqlitePoolOptions::new().connect(&host.config.database.url).await.unwrap();
    let tampered = variant(&component_bytes("order-handler"), "tampered");
    let changed = sqlx::query("UPDATE component_versions SET bytes = ? WHERE digest = ?")
        .bind(&tampered)
        .bind(&original)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    pool.close().await;

    // Even though the original's code is still compiled in memory, the
    // rollback reads its bytes, and refuses them.
    let (status, body) = host.admin(reqwest::Method::POST, "/admin/components/order-handler/rollback").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(active_version(&host, "order-handler"), v2, "the active version serves on");
    let response = TestHost::client().get(format!("{}/orders/x", host.url)).send().await.unwrap();
    assert_eq!(response.headers()["x-switchyard-version"], v2.as_str());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_a_modified_row() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    deploy(&host, "order-handler", variant(&component_bytes("order-handler"), "a")).await;
    deploy(&host, "order-handler", b"junk".to_vec()).await;
    deploy(&host, "order-handler", variant(&component_bytes("order-handler"), "b")).await;
    let database_url = host.config.database.url.clone();
    let verify = || {
        let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["audit", "verify", "--config", "/nonexistent/switchyard.toml", "--database-url", &database_url])
            .output()
            .unwrap();
        (
            output.status.success(),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )
    };
    let (ok, text) = verify();
    assert!(ok, "{text}");
    assert!(text.contains("audit log intact: 3 rows"), "{text}");

    let pool = sqlx::sqlite::SqlitePoolOptions::new().connect(&database_url).await.unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2").execute(&pool).await.unwrap();
    pool.close().await;
    let (ok, text) = verify();
    assert!(!ok, "{text}");
    assert!(text.contains("broken at row 2"), "{text}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deploys_lists_and_rolls_back() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let original = active_version(&host, "hello");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello-v2.wasm");
    std::fs::write(&file, variant(&component_bytes("hello"), "cli")).unwrap();
    let url = host.url.clone();
    let run = move |args: Vec<String>| {
        let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(&args)
            .args(["--url", &url, "--token", ADMIN_TOKEN, "--actor", "cli-test"])
            .output()
            .unwrap();
        (
            output.status.success(),
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        )
    };
    let run = Arc::new(run);
    let call = |args: &[&str]| {
        let run = run.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || run(args))
    };

    let (ok, text) = call(&["deploy", "hello", file.to_str().unwrap()]).await.unwrap();
    assert!(ok, "{text}");
    let deployed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(deployed["previous"], original.as_str());
    assert_eq!(active_version(&host, "hello"), deployed["version"].as_str().unwrap());

    let (ok, text) = call(&["components"]).await.unwrap();
    assert!(ok && text.contains("\"hello\""), "{text}");

    let (ok, text) = call(&["rollback", "hello"]).await.unwrap();
    assert!(ok, "{text}");
    assert_eq!(active_version(&host, "hello"), original);

    let (ok, text) = call(&["deploy", "hello", "/nonexistent.wasm"]).await.unwrap();
    assert!(!ok && text.contains("cannot read /nonexistent.wasm"), "{text}");
    let (ok, text) = call(&["rollback", "hello", "--version", "ffffffff"]).await.unwrap();
    assert!(!ok && text.contains("404"), "{text}");
    let actors: Vec<String> = audit_rows(&host).await.into_iter().map(|r| r.entry.actor).collect();
    assert!(actors.iter().filter(|a| *a == "cli-test").count() >= 3, "{actors:?}");
    host.stop().await;
}

/// `serve --watch`: rewriting a component's file redeploys it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_redeploys_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hello.wasm");
    std::fs::write(&wasm, component_bytes("hello")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}\"\n[components.hello]\npath = \"hello.wasm\"\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/hello\"\ncomponent = \"hello\"\n",
        dir.path().join("watch.db").display()
    );
    std::fs::write(dir.path().join("switchyard.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--watch", "--config"])
        .arg(dir.path().join("switchyard.toml"))
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/hello");
    let version = || async {
        let response = TestHost::client().get(&url).send().await.ok()?;
        Some(response.headers().get("x-switchyard-version")?.to_str().ok()?.to_owned())
    };
    common::eventually("the server answers", std::time::Duration::from_secs(60), || async {
        version().await.is_some()
    })
    .await;
    let before = version().await.unwrap();

    // Written the way build.sh does: a new file renamed into place.
    let staged = dir.path().join("hello.wasm.new");
    std::fs::write(&staged, variant(&component_bytes("hello"), "watched")).unwrap();
    std::fs::rename(&staged, &wasm).unwrap();
    common::eventually("the new version serves", std::time::Duration::from_secs(30), || async {
        version().await.is_some_and(|v| v != before)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}
