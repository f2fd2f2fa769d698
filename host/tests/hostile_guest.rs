//! A hostile guest (`components/fixtures/hostile`) calls every host import
//! with extreme arguments, one case per request. Each gets a clear refusal
//! or a trap, the next request is served normally, and the host's memory
//! stays bounded. Prints the table of case → answer → resident memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;

use common::{Backend, TestHost, parse_metrics, sample};

const HOSTILE: &str = r#"
    [components.hostile]
    path = "hostile.wasm"
    limits = { memory_bytes = 8_388_608 }
    [[routes]]
    method = "GET"
    path = "/hostile"
    component = "hostile"
"#;

/// Most the process may grow over all the cases: a guest that could make
/// the host keep what it sent (2 MiB values, 320 MB of log lines, 5,000
/// messages) would blow far past it.
const MAX_RSS_GROWTH_BYTES: u64 = 200 << 20;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

async fn call(host: &TestHost, query: &str) -> (StatusCode, String) {
    let response = TestHost::client().get(format!("{}/hostile?{query}", host.url)).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_call_is_refused_or_trapped_and_the_host_serves_on() {
    let host = TestHost::start_with_toml(Backend::Sqlite, HOSTILE).await.expect("sqlite host");
    assert_eq!(call(&host, "case=ok").await, (StatusCode::OK, "ok".to_owned()));
    let before = rss_bytes();
    // (case, status, what the body must say)
    let cases: [(&str, StatusCode, &str); 9] = [
        ("case=big-key", StatusCode::UNPROCESSABLE_ENTITY, "longer than 512 bytes"),
        ("case=big-value", StatusCode::UNPROCESSABLE_ENTITY, "value larger than 1048576 bytes"),
        (
            "case=bad-bucket",
            StatusCode::UNPROCESSABLE_ENTITY,
            "must not be empty\")\nError::Other(\"bucket identifier longer than 512",
        ),
        (
            "case=enqueue-flood",
            StatusCode::UNPROCESSABLE_ENTITY,
            "accepted 1000, then EnqueueError::Invalid(\"more than 1000 messages in one invocation",
        ),
        ("case=log-flood", StatusCode::OK, "logged 20000 lines"),
        ("case=metric-flood", StatusCode::OK, "sent 5005 metric names"),
        ("case=recurse", StatusCode::INTERNAL_SERVER_ERROR, ""),
        ("case=alloc&mb=4", StatusCode::OK, "allocated 4 MiB"),
        ("case=alloc&mb=16", StatusCode::INTERNAL_SERVER_ERROR, ""),
    ];
    let mut table = vec!["| case | status | body | RSS after |".to_owned(), "|---|---:|---|---:|".to_owned()];
    for (query, status, says) in cases {
        let (got, body) = call(&host, query).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
        assert_eq!(call(&host, "case=ok").await, (StatusCode::OK, "ok".to_owned()), "served right after {query}");
        let shown: String = body.chars().take(90).collect();
        table.push(format!(
            "| `{query}` | {} | {} | {} MiB |",
            got.as_u16(),
            shown.replace('\n', "; "),
            rss_bytes() >> 20
        ));
    }
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("{}\nresident memory grew by {} MiB over the cases", table.join("\n"), grown >> 20);
    assert!(grown < MAX_RSS_GROWTH_BYTES, "the host kept {grown} bytes of what the guest sent");

    // Nothing of the refused cases was kept; the flood of metric names
    // stopped at the component's series cap, and the rest were counted.
    let backlog = host.db.outbox_backlog().await.unwrap();
    assert!(backlog.is_empty(), "the refused flood rolled back every message it enqueued: {backlog:?}");
    let text = TestHost::client().get(format!("{}/metrics", host.url)).send().await.unwrap().text().await.unwrap();
    let samples = parse_metrics(&text);
    let dropped = sample(&samples, "component_metric_series_dropped_total", &[("component", "hostile")]).unwrap();
    assert!(dropped >= 4_800.0, "{dropped} metric samples dropped");
    let app_series = samples.keys().filter(|(name, labels)| {
        name.starts_with("app_") && labels.get("component").map(String::as_str) == Some("hostile")
    });
    assert!(app_series.count() <= 200, "the series cap holds");
    host.stop().await;
}
