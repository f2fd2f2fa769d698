//! `wasi:http@0.3` components behind routes, against the real
//! `hello-http-p3` fixture (a wit-bindgen async export of
//! `wasi:http/handler`): status, headers, bodies streamed both ways,
//! trailers, a trap, a timeout, fuel exhaustion, outgoing requests allowed
//! and denied, reuse of an instance, swaps between a 0.2 and a 0.3
//! version of one component under load, and the refusals of bad uploads.
//!
//! As with 0.2 components, the response is returned while the guest still
//! runs (a 0.3 guest writes its body from a task of its own after `handle`
//! has returned), and the invocation is recorded when every task of the
//! guest has ended. Metric assertions first wait for the invocations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Backend, TestHost, component_bytes, deploy, sample as value};
use common::{
    active_version_of as version_of, invocations_of as invocations, patterned, settled_invocations as settled,
};

/// How long a raw client waits for its whole response.
const SETTLE: Duration = Duration::from_secs(10);

/// The 0.3 fixture on a catch-all route, with limits small enough for its
/// trap, timeout and fuel cases to end quickly.
fn app(allowed_hosts: &str) -> String {
    format!(
        r#"
    [components.p3]
    path = "hello-http-p3.wasm"
    world = "wasi-http"
    allowed_hosts = [{allowed_hosts}]
    limits = {{ timeout_ms = 1_000, fuel = 50_000_000 }}

    [[routes]]
    method = "*"
    path = "/p3/{{*rest}}"
    component = "p3"
"#
    )
}

async fn start(extra: &str) -> TestHost {
    TestHost::start_with_toml(Backend::Sqlite, extra).await.expect("sqlite host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_component_answers_with_its_status_headers_and_body() {
    let host = start(&app("")).await;
    let client = TestHost::client();
    let version = version_of(&host, "p3");

    let response = client.get(format!("{}/p3/any/path", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.headers()["x-switchyard-version"], version.as_str());
    assert_eq!(response.text().await.unwrap(), "hello");
    for (status, method) in [(404, "PUT"), (503, "DELETE")] {
        let url = format!("{}/p3/x?status={status}", host.url);
        let response = client.request(method.parse().unwrap(), url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.text().await.unwrap(), "hello");
    }

    let samples = settled(&host, "p3", 3.0).await;
    assert_eq!(invocations(&host, &samples, "p3", "ok"), 2.0, "a 4xx is the caller's problem");
    assert_eq!(invocations(&host, &samples, "p3", "error"), 1.0, "a 5xx is an error");
    assert!(value(&samples, "component_fuel_consumed_total", &[("component", "p3")]).unwrap() > 0.0);
    assert!(value(&samples, "component_memory_peak_bytes", &[("component", "p3")]).unwrap() > 0.0);
    assert_eq!(
        value(
            &samples,
            "component_version_info",
            &[("component", "p3"), ("version", &version), ("export", "wasi:http/handler@0.3")]
        ),
        Some(1.0),
        "the version info names the interface version"
    );

    // The admin API says which interface the component serves with.
    let (status, body) = host.admin(reqwest::Method::GET, "/admin/components").await;
    assert_eq!(status, StatusCode::OK);
    let listed = body["components"].as_array().unwrap().iter().find(|c| c["name"] == "p3").cloned().unwrap();
    assert_eq!(listed["world"], "wasi-http");
    assert_eq!(listed["export"], "wasi:http/handler@0.3");
    let (status, details) = host.admin(reqwest::Method::GET, "/admin/components/p3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["export"], "wasi:http/handler@0.3");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_and_trailers_follow() {
    let host = start(&app("")).await;
    let client = TestHost::client();
    // Many times the host's one-chunk body channel, and not a multiple of
    // the guest's 16 KiB reads.
    for body in [b"a small body".to_vec(), patterned(300 * 1024 + 17), Vec::new()] {
        let response = client.post(format!("{}/p3/echo?echo", host.url)).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{} bytes", body.len());
        let echoed = response.bytes().await.unwrap();
        assert_eq!(echoed.len(), body.len());
        assert!(echoed == body, "{} bytes came back changed", body.len());
    }

    // Trailers go out after a chunked body, to a client that accepts them.
    let address = host.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /p3/t?echo&trailers HTTP/1.1\r\nhost: {address}\r\nte: trailers\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n5\r\nabcde\r\n0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(SETTLE, stream.read_to_end(&mut received)).await.expect("response in time").unwrap();
    let received = String::from_utf8_lossy(&received).to_lowercase();
    assert!(received.starts_with("http/1.1 200"), "{received}");
    assert!(received.contains("transfer-encoding: chunked"), "{received}");
    let (_, after_body) = received.split_once("\r\n0\r\n").unwrap_or_else(|| panic!("no last chunk: {received}"));
    assert!(after_body.contains("x-body-bytes: 5"), "trailer after the body: {received}");

    let samples = settled(&host, "p3", 4.0).await;
    assert_eq!(invocations(&host, &samples, "p3", "ok"), 4.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_a_timeout_and_fuel_exhaustion_are_outcomes() {
    let host = start(&app("")).await;
    let client = TestHost::client();
    let cases = [
        ("trap", StatusCode::INTERNAL_SERVER_ERROR, "trap"),
        // Waits 30 s in a host call, past the 1 s deadline.
        ("sleep_ms=30000", StatusCode::GATEWAY_TIMEOUT, "timeout"),
        // Far more rounds than 50 million fuel pays for.
        ("spin=10000000000", StatusCode::INTERNAL_SERVER_ERROR, "fuel_exhausted"),
    ];
    for (n, (query, status, outcome)) in cases.into_iter().enumerate() {
        let response = client.get(format!("{}/p3/x?{query}", host.url)).send().await.unwrap();
        assert_eq!(response.status(), status, "{query}");
        let samples = settled(&host, "p3", (2 * n + 1) as f64).await;
        assert_eq!(invocations(&host, &samples, "p3", outcome), 1.0, "{query}");
        // The next request is served as usual.
        let response = client.get(format!("{}/p3/x", host.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "after {query}");
        assert_eq!(response.text().await.unwrap(), "hello");
        settled(&host, "p3", (2 * n + 2) as f64).await;
    }
    host.stop().await;
}

/// A one-route HTTP server on loopback answering `pong`.
async fn pong_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route("/ping", axum::routing::get(|| async { (StatusCode::ACCEPTED, "pong") }));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_requests_reach_only_allowed_hosts() {
    let (allowed, server) = pong_server().await;
    let (other, other_server) = pong_server().await;
    let host = start(&app(&format!("{allowed:?}"))).await;
    let client = TestHost::client();

    let response = client.get(format!("{}/p3/x?fetch={allowed}/ping", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "the reply's status is passed on");
    assert_eq!(response.text().await.unwrap(), "pong");

    let response = client.get(format!("{}/p3/x?fetch={other}/ping", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.text().await.unwrap();
    assert!(body.contains("HttpRequestDenied"), "the guest is told why: {body}");

    settled(&host, "p3", 2.0).await;
    host.stop().await;
    server.abort();
    other_server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_serves_one_request_after_another() {
    let toml = format!("{}\n    [components.p3.reuse]\n    max_requests = 3\n", app(""));
    let host = start(&toml).await;
    let client = TestHost::client();
    let mut counts = Vec::new();
    for _ in 0..4 {
        let response = client.get(format!("{}/p3/x?count", host.url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        counts.push(response.text().await.unwrap());
        // The instance is given back only once its guest has ended.
        settled(&host, "p3", counts.len() as f64).await;
    }
    assert_eq!(counts, ["1", "2", "3", "1"], "three requests on one instance, then a new one");
    // A trap retires the instance it ran on.
    let response = client.get(format!("{}/p3/x?trap", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    settled(&host, "p3", 5.0).await;
    let response = client.get(format!("{}/p3/x?count", host.url)).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "1", "a fresh instance after the trap");
    host.stop().await;
}

/// One `wasi-http` component whose versions alternate between the 0.2 and
/// the 0.3 fixture.
const SWAPPED: &str = r#"
    [components.web]
    path = "hello-http.wasm"
    world = "wasi-http"

    [[routes]]
    method = "*"
    path = "/web/{*rest}"
    component = "web"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_between_a_0_2_and_a_0_3_version_fail_no_request() {
    let host = start(SWAPPED).await;
    let p2 = version_of(&host, "web");
    let exports = |host: &TestHost| {
        host.runtime.registry().list().into_iter().find(|c| c.name == "web").map(|c| c.export).unwrap()
    };
    assert_eq!(exports(&host), "wasi:http/incoming-handler@0.2");

    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("{}/web/x?echo", host.url);
            let done = done.clone();
            tokio::spawn(async move {
                let client = TestHost::client();
                let mut seen = Vec::new();
                // Bounded: the swaps end the loop; the cap guards a hang.
                for n in 0..20_000 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = format!("client {i} request {n}");
                    let response = client.post(&url).body(body.clone()).send().await.expect("request");
                    let status = response.status();
                    let version =
                        response.headers().get("x-switchyard-version").map(|v| v.to_str().unwrap().to_owned());
                    let echoed = response.text().await.unwrap_or_default();
                    seen.push((status, version, echoed == body));
                }
                seen
            })
        })
        .collect();

    let versions = [component_bytes("hello-http-p3"), component_bytes("hello-http")];
    let mut deployed = BTreeSet::new();
    for swap in 0..10 {
        let (status, report) = deploy(&host, "web", versions[swap % 2].clone()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        deployed.insert(report["version"].as_str().unwrap().to_owned());
        let expected = if swap % 2 == 0 { "wasi:http/handler@0.3" } else { "wasi:http/incoming-handler@0.2" };
        assert_eq!(exports(&host), expected, "after swap {swap}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for client in clients {
        results.extend(client.await.unwrap());
    }
    assert_eq!(deployed.len(), 2, "{deployed:?}");
    assert!(deployed.contains(&p2));
    assert_eq!(version_of(&host, "web"), p2, "an even number of swaps ends on the 0.2 version");
    let failed: Vec<_> = results.iter().filter(|(status, _, same)| *status != StatusCode::OK || !same).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    let served_by: BTreeSet<_> = results.iter().map(|(_, v, _)| v.clone().expect("names its version")).collect();
    assert_eq!(served_by, deployed, "both versions served requests");
    assert!(results.len() > 20, "load ran throughout: {} requests", results.len());

    // A rollback crosses the interface versions too: back to the 0.3 build.
    let (status, report) = host.admin(reqwest::Method::POST, "/admin/components/web/rollback").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(exports(&host), "wasi:http/handler@0.3");
    let p3 = version_of(&host, "web");
    assert_ne!(p3, p2);
    let response = TestHost::client().post(format!("{}/web/x?echo", host.url)).body("back").send().await.unwrap();
    assert_eq!(response.headers()["x-switchyard-version"], p3.as_str());
    assert_eq!(response.text().await.unwrap(), "back");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_exporting_neither_handler_is_refused_naming_its_exports() {
    let host = start(&app("")).await;
    let p3 = version_of(&host, "p3");
    // The handler-world fixture exports Switchyard's own handler interface.
    let (status, body) = deploy(&host, "p3", component_bytes("hello")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("exports neither wasi:http/incoming-handler@0.2.x nor wasi:http/handler@0.3.x"), "{error}");
    assert!(error.contains("switchyard:platform/"), "names what it does export: {error}");
    assert_eq!(version_of(&host, "p3"), p3, "the old version keeps serving");
    let response = TestHost::client().get(format!("{}/p3/x", host.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_component_deployed_to_another_world_is_refused_saying_what_it_is() {
    let host = start(&app("")).await;
    let hello = version_of(&host, "hello");
    let (status, body) = deploy(&host, "hello", component_bytes("hello-http-p3")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("does not implement the world switchyard:platform/handler"), "{error}");
    assert!(error.contains("it exports wasi:http/handler@0.3.x, as a wasi-http component does"), "{error}");
    assert_eq!(version_of(&host, "hello"), hello);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_client_goes_away_is_stopped() {
    let host = start(&app("").replace("timeout_ms = 1_000", "timeout_ms = 600_000")).await;
    common::assert_stopped_when_the_client_leaves(&host, "/p3/x", "p3").await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_component_importing_what_the_host_lacks_is_refused_naming_the_import() {
    let host = start(&app("")).await;
    let p3 = version_of(&host, "p3");
    // The fixture with one 0.3 import renamed, everywhere it is named, to
    // an interface no host provides.
    let bytes = replace_all(&component_bytes("hello-http-p3"), b"wasi:http/client@0.3.0", b"wasi:http/clienz@0.3.0");
    let (status, body) = deploy(&host, "p3", bytes).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("does not implement the world wasi:http/service"), "{error}");
    assert!(error.contains("`wasi:http/clienz@0.3.0`"), "names the missing import: {error}");
    assert_eq!(version_of(&host, "p3"), p3, "the version serving stays");
    let response = TestHost::client().get(format!("{}/p3/x", host.url)).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "hello");
    host.stop().await;
}

/// `bytes` with every `from` replaced by `to`, of the same length.
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut at = 0;
    let mut replaced = 0;
    while let Some(found) = out[at..].windows(from.len()).position(|window| window == from) {
        out[at + found..at + found + from.len()].copy_from_slice(to);
        at += found + from.len();
        replaced += 1;
    }
    assert!(replaced > 0, "nothing to replace");
    out
}
