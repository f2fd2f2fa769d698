//! What a guest writes to stdout becomes a JSON log line of the host, under
//! the component's name and the request id, as a component written for
//! `wasmtime serve` expects its prints to show up somewhere: through
//! `wasi:cli/stdout@0.2` from a 0.2 component, and through its 0.3 stream
//! from a 0.3 one. Alone in its test binary: it installs the global
//! subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use switchyard::telemetry::{self, LogFormat};

use common::{Backend, HELLO_HTTP, LogCapture, TestHost, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stdout_is_logged_with_the_request_id() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    telemetry::init_with_writer(LogFormat::Json, move || writer.clone(), None);
    let toml = format!(
        "{HELLO_HTTP}\n[components.p3]\npath = \"hello-http-p3.wasm\"\nworld = \"wasi-http\"\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/p3\"\ncomponent = \"p3\"\n"
    );
    let host = TestHost::start_with_toml(Backend::Sqlite, &toml).await.expect("host");

    for (component, path) in [("hello-http", "/http/x"), ("p3", "/p3")] {
        let text = format!("printed-by-{component}");
        let request_id = format!("req-stdout-{component}");
        let response = TestHost::client()
            .get(format!("{}{path}?print={text}", host.url))
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), "hello");
        let printed = |line: &serde_json::Value| line["message"] == text.as_str();
        eventually("the guest's line is logged", Duration::from_secs(10), || async {
            capture.json_lines().iter().any(printed)
        })
        .await;

        let lines: Vec<_> = capture.json_lines().into_iter().filter(printed).collect();
        assert_eq!(lines.len(), 1, "one line per line printed: {lines:#?}");
        let line = &lines[0];
        assert_eq!(line["target"], "component");
        assert_eq!(line["component"], component);
        assert_eq!(line["request_id"], request_id.as_str());
        assert_eq!(line["stream"], "stdout");
    }
    host.stop().await;
    // The default filter writes no line per invocation: the metrics count them.
    assert!(!capture.json_lines().iter().any(|l| l["message"] == "invocation"), "{}", capture.text());
}
