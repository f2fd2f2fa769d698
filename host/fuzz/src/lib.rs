//! Fuzz targets for the host's input boundaries, each a function from
//! arbitrary bytes to "nothing panicked, and what came out keeps its
//! promise":
//!
//! - [`config`]: config text → parsed and validated, or refused with a
//!   message; an accepted config builds the server it describes.
//! - [`upload`]: arbitrary bytes, or a real component with bytes changed or
//!   cut off → deployed, or refused as a bad component (never a storage or
//!   host error); an unchanged real component is always accepted.
//! - [`http`]: raw bytes on a connection to a running host serving the
//!   reference app → well-framed responses, each with a request id (or
//!   hyper's own refusal), the connection closed in bounded time, and the
//!   host still answering its health probe. This reaches request ids,
//!   header limits, route matching and every route handler.
//! - [`metrics`]: component-emitted metric names, labels and values → a
//!   Prometheus exposition that still parses, with at most the series cap
//!   of series per component.
//!
//! `cargo fuzz` (`just fuzz`) runs them under libFuzzer through
//! `fuzz_targets/`; `cargo test` runs them over the committed corpus and
//! seeded mutations of it (`tests/corpus.rs`). A panic on the calling
//! thread or on one of the host's, in a task it spawned, fails the input.

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a fuzz target reports what it finds by panicking"
)]

mod exposition;
mod host;
mod responses;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Bytes;
use switchyard::config::Config;
use switchyard::runtime::DeployError;
use switchyard::server::{ConnectionLimits, RateLimits};
use switchyard::telemetry::metrics::{AppMetricKind, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Panics seen on the host's own threads: a panic in a task the host
/// spawned would otherwise be swallowed by tokio. (A panic on the calling
/// thread fails the input by unwinding; one on another caller's thread is
/// that caller's.)
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some(host::THREAD_NAME) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Runs one input and fails it if anything panicked meanwhile.
fn no_panics(target: &str, run: impl FnOnce()) {
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    run();
    let after = PANICS.load(Ordering::SeqCst);
    assert_eq!(after, before, "{target}: a host thread panicked while this input ran");
}

/// Config text: accepted and buildable, or refused with a reason.
pub fn config(data: &[u8]) {
    no_panics("config", || {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let host = host::get();
        let config = match Config::parse(text, host.base_dir.clone()) {
            Ok(config) => config,
            Err(err) => {
                assert!(!format!("{err:#}").trim().is_empty(), "a refusal without a reason");
                return;
            }
        };
        // What `check` accepts, `serve` must be able to start: every
        // derived value computes, the rate limiters build, and the router
        // takes the route table.
        for component in config.components.values() {
            let _ = config.limits_for(component);
            let _ = config.admission_for(component);
            let _ = config.component_path(component);
        }
        let _ = ConnectionLimits::from_config(&config.server);
        if let Err(err) = RateLimits::from_config(&config) {
            panic!("an accepted config whose rate limits cannot be built: {err:#}");
        }
        let _guard = host.runtime.enter();
        let _app = switchyard::server::app(&config, host.state.clone());
    });
}

/// An upload: the first byte picks the component (its low bits) and how the
/// rest is read (its high bit): as the whole upload, or as edits of that
/// component's real build, three bytes each (a position scaled to the
/// length, and the byte to put there), with two bytes left over cutting
/// the build off at a scaled position.
pub fn upload(data: &[u8]) {
    no_panics("upload", || {
        let Some((&selector, rest)) = data.split_first() else { return };
        let host = host::get();
        let target = &host.upload_targets[usize::from(selector & 0x7f) % host.upload_targets.len()];
        let bytes = if selector & 0x80 != 0 { rest.to_vec() } else { edited(&target.bytes, rest) };
        let unchanged = bytes == *target.bytes;
        let result = host.runtime.block_on(host.state.runtime.deploy(target.name, Bytes::from(bytes), "fuzz"));
        match result {
            Ok(report) => assert_eq!(report.name, target.name),
            Err(DeployError::Rejected(err)) => {
                assert!(!unchanged, "{}: its own real build was refused: {err}", target.name);
                assert!(!err.to_string().trim().is_empty(), "a refusal without a reason");
            }
            Err(other) => panic!("{}: an upload failed other than as a bad component: {other}", target.name),
        }
    });
}

fn edited(base: &[u8], script: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    let scaled = |hi: u8, lo: u8, len: usize| (usize::from(u16::from_be_bytes([hi, lo])) * len) >> 16;
    let mut chunks = script.chunks_exact(3);
    for chunk in &mut chunks {
        let at = scaled(chunk[0], chunk[1], bytes.len());
        if let Some(byte) = bytes.get_mut(at) {
            *byte = chunk[2];
        }
    }
    if let [hi, lo] = *chunks.remainder() {
        bytes.truncate(scaled(hi, lo, bytes.len()));
    }
    bytes
}

/// Longest a connection may take to answer and close, after which the
/// input counts as a hang. Far above the host's own request and header
/// timeouts (`host.rs`), which are what end a stalled request.
const CONNECTION_LIMIT: Duration = Duration::from_secs(20);

/// Sent after every input on the same connection: when the input left the
/// connection in step, this ends it; when it did not, the host's timeouts do.
const CLOSING_REQUEST: &[u8] = b"GET /health/live HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n\r\n";

/// Raw bytes on a connection to the running host.
pub fn http(data: &[u8]) {
    no_panics("http", || {
        let host = host::get();
        let answer = host.runtime.block_on(async {
            let mut stream = TcpStream::connect(host.addr).await.expect("the host accepts connections");
            let exchange = async {
                // The host may close the connection before reading it all.
                if stream.write_all(data).await.is_ok() {
                    let _ = stream.write_all(CLOSING_REQUEST).await;
                }
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer).await;
                answer
            };
            tokio::time::timeout(CONNECTION_LIMIT, exchange).await
        });
        let Ok(answer) = answer else {
            panic!("the connection neither answered nor closed within {CONNECTION_LIMIT:?}");
        };
        if let Err(problem) = responses::check(&answer) {
            panic!("{problem}\nanswer: {:?}", String::from_utf8_lossy(&answer));
        }
        host.runtime.block_on(host.assert_live());
    });
}

/// Series a component may create in the metrics target.
const METRICS_SERIES_CAP: usize = 4;
const METRIC_COMPONENTS: [&str; 3] = ["order-handler", "hello", "connector-email"];

/// Component-emitted metrics, then the exposition they render to. Records
/// are separated by NUL; each is a kind byte (`h` a histogram, anything
/// else a counter), a component byte (its value modulo 3 picks one), then
/// fields separated by 0x01: the name, the value, and labels, each
/// `key 0x02 value`.
pub fn metrics(data: &[u8]) {
    no_panics("metrics", || {
        let metrics = Metrics::new(METRICS_SERIES_CAP);
        for record in data.split(|&b| b == 0).take(256) {
            let Some((&kind, record)) = record.split_first() else { continue };
            let Some((&component, record)) = record.split_first() else { continue };
            let component = METRIC_COMPONENTS[usize::from(component) % METRIC_COMPONENTS.len()];
            let kind = if kind == b'h' { AppMetricKind::Histogram } else { AppMetricKind::Counter };
            let mut fields = record.split(|&b| b == 1).map(String::from_utf8_lossy);
            let name = fields.next().unwrap_or_default();
            let value = fields.next().and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(1.0);
            let labels: Vec<(String, String)> = fields
                .map(|label| match label.split_once('\u{2}') {
                    Some((key, value)) => (key.to_owned(), value.to_owned()),
                    None => (label.into_owned(), String::new()),
                })
                .collect();
            metrics.app_metric(component, kind, &name, value, &labels);
        }
        let text = metrics.render();
        let exposition = match exposition::parse(&text) {
            Ok(exposition) => exposition,
            Err(problem) => panic!("the exposition does not parse: {problem}\n{text}"),
        };
        for component in METRIC_COMPONENTS {
            let series = exposition.app_series(component);
            assert!(series <= METRICS_SERIES_CAP, "{component} has {series} series, over the cap\n{text}");
        }
    });
}
