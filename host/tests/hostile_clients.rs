//! Hostile clients against a running host, written byte for byte on raw
//! sockets: request smuggling shapes, invalid methods and targets, header
//! floods, slow headers and bodies, idle connections, and clients that leave
//! in the middle of a request or response. Each shape gets an exact answer
//! (a status, or a closed connection, or both), and after each a
//! well-behaved client is served normally.
//!
//! Who answers what, and the limits behind it:
//!
//! - hyper refuses what it cannot frame unambiguously with 400 and closes:
//!   two different `Content-Length`s, a `Transfer-Encoding` whose last coding
//!   is not `chunked`, a method that is not a token, a target with control
//!   bytes. A request with both `Content-Length` and `Transfer-Encoding:
//!   chunked` is read as chunked (RFC 9112 §6.3) and its connection closed
//!   after the answer, so nothing after it on that connection is ever read.
//! - A request head over `[server] max_header_bytes` + 72 KiB, or with more
//!   headers than hyper parses (100 unless `[server] max_headers` asks for
//!   more), gets hyper's 431 and a close; a target over 65,534 bytes, 414 and
//!   a close. Under those, the router's own limits (`max_headers` 64,
//!   `max_header_bytes` 16 KiB by default) answer 431 with a JSON body and
//!   keep the connection.
//! - A request head must arrive within `[server] header_read_timeout_ms`
//!   (30 s by default) of the connection opening or of the previous answer,
//!   or the connection is closed without one: slow headers, silent
//!   connections and idle keep-alive connections alike.
//! - A body must arrive within `[server] request_timeout_ms` (30 s by
//!   default), which bounds the whole request: 408, then a close.
//! - A client that leaves before or during its answer gives back its
//!   admission slot and its transaction (rolled back), and its call is no
//!   verdict on the component for the breaker.
//!
//! Timeouts here are configured short and the tests wait for what the host
//! does, never for a time: a wall-clock bound ([`HANG_GUARD`]) only turns a
//! hang into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use switchyard::db::outbox::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Backend, TestHost, eventually};

/// The longest any single exchange may take before the test calls it a
/// hang. Far above anything the host needs; nothing is asserted on it.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Pause between the bytes of a trickled request.
const TRICKLE_PAUSE: Duration = Duration::from_millis(20);

/// An order of one widget.
const ORDER: &str = r#"{"customer":"Ada Lovelace","email":"ada@example.com","phone":"+44 20 7946 0000","items":[{"sku":"widget","qty":1}]}"#;

/// hello-http behind a catch-all route, with a deadline far longer than any
/// test and room for two invocations and no queue: a slot that leaked would
/// turn the next request into a 503.
const LINGERING_HELLO_HTTP: &str = r#"
    [components.hello-http]
    path = "hello-http.wasm"
    world = "wasi-http"
    limits = { timeout_ms = 600_000 }
    admission = { max_concurrency = 2, max_queue = 0 }

    [[routes]]
    method = "*"
    path = "/http/{*rest}"
    component = "hello-http"
"#;

/// Short connection and request timeouts, so that slow clients are cut off
/// within a test; hello-http serves a route whose body streams to the guest.
const SHORT_TIMEOUTS: &str = r#"
    [server]
    header_read_timeout_ms = 500
    request_timeout_ms = 2_000

    [components.hello-http]
    path = "hello-http.wasm"
    world = "wasi-http"

    [[routes]]
    method = "*"
    path = "/http/{*rest}"
    component = "hello-http"
"#;

/// One parsed HTTP/1.1 response.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client that writes exactly the bytes it is given and reads responses
/// off the socket itself.
struct Raw {
    stream: TcpStream,
    /// Read but not yet taken as a response.
    buffered: Vec<u8>,
    /// The host closed (or reset) the connection.
    eof: bool,
}

impl Raw {
    async fn connect(host: &TestHost) -> Raw {
        let stream = TcpStream::connect(host.url.trim_start_matches("http://")).await.expect("connect");
        Raw { stream, buffered: Vec::new(), eof: false }
    }

    /// Writes `bytes`; false when the host had already closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads what is there, waiting for at least one byte or the end; false
    /// at the end (a close or a reset).
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(HANG_GUARD, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("the host neither answered nor closed; read so far: {}", self.shown()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next whole response, or `None` when the connection ends before
    /// one begins.
    async fn next(&mut self) -> Option<Answer> {
        loop {
            if let Some((answer, used)) = parse(&self.buffered) {
                self.buffered.drain(..used);
                return Some(answer);
            }
            if !self.fill().await {
                assert!(self.buffered.is_empty(), "the connection ended inside a response: {}", self.shown());
                return None;
            }
        }
    }

    /// The next whole response; fails the test if the connection ends first.
    async fn answer(&mut self) -> Answer {
        self.next().await.expect("an answer before the connection closed")
    }

    /// Reads until `needle` has arrived (a response still streaming).
    async fn read_until(&mut self, needle: &str) {
        while !String::from_utf8_lossy(&self.buffered).contains(needle) {
            assert!(self.fill().await, "closed before {needle:?} arrived: {}", self.shown());
        }
    }

    /// Fails unless the connection ends with nothing more to read.
    async fn assert_closed(&mut self, what: &str) {
        let more = self.fill().await;
        assert!(!more && self.buffered.is_empty(), "{what}: expected a close, got {}", self.shown());
    }

    /// Sends `bytes` one at a time, a pause apart, until the host answers
    /// or closes; how many were sent.
    async fn trickle(&mut self, bytes: &[u8]) -> usize {
        for (sent, byte) in bytes.iter().enumerate() {
            if !self.send(std::slice::from_ref(byte)).await {
                return sent;
            }
            if tokio::time::timeout(TRICKLE_PAUSE, self.fill()).await.is_ok() {
                return sent + 1;
            }
        }
        bytes.len()
    }

    fn shown(&self) -> String {
        let text = String::from_utf8_lossy(&self.buffered);
        text.chars().take(400).collect()
    }
}

/// A whole response at the start of `buf` and the bytes it took, if it is
/// all there. Bodies are framed by `content-length` or chunked, as every
/// answer of this host is.
fn parse(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("response head is text");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "not a response: {status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let mut at = end + 4;
    let body = if let Some(length) = find("content-length") {
        let length: usize = length.parse().unwrap();
        let body = buf.get(at..at + length)?.to_vec();
        at += length;
        body
    } else {
        assert_eq!(find("transfer-encoding").as_deref(), Some("chunked"), "an unframed body: {head}");
        let mut body = Vec::new();
        loop {
            let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&buf[at..line_end]).unwrap(), 16).unwrap();
            let data = line_end + 2;
            if size == 0 {
                // No trailers: the last chunk is followed by an empty line.
                buf.get(data..data + 2)?;
                at = data + 2;
                break;
            }
            body.extend_from_slice(buf.get(data..data + size)?);
            buf.get(data + size..data + size + 2)?;
            at = data + size + 2;
        }
        body
    };
    Some((Answer { status, headers, body }, at))
}

/// A well-behaved request on a connection of its own is served normally.
async fn still_served(host: &TestHost, after: &str) {
    let response = TestHost::client()
        .get(format!("{}/hello", host.url))
        .send()
        .await
        .unwrap_or_else(|err| panic!("after {after}: {err}"));
    assert_eq!(response.status(), StatusCode::OK, "after {after}");
    assert_eq!(response.text().await.unwrap(), "hello", "after {after}");
}

/// The widget's stock and the pending outbox messages: what an order
/// changes.
async fn order_effects(host: &TestHost) -> (u64, i64) {
    let raw = host.db.kv_get("order-handler", "orders", "inventory/widget").await.unwrap().expect("inventory row");
    let stock = serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["stock"].as_u64().unwrap();
    (stock, host.db.outbox_count(Status::Pending).await.unwrap())
}

/// A complete `POST /orders` carrying [`ORDER`].
fn order_request() -> String {
    format!(
        "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ORDER}",
        ORDER.len()
    )
}

/// `http_requests_in_flight`, the scrape that reads it included.
async fn in_flight(host: &TestHost) -> f64 {
    let text = TestHost::client().get(format!("{}/metrics", host.url)).send().await.unwrap().text().await.unwrap();
    common::sample(&common::parse_metrics(&text), "http_requests_in_flight", &[]).expect("in-flight gauge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused_or_end_their_connection() {
    let host = TestHost::start_with_toml(Backend::Sqlite, common::HELLO_HTTP).await.expect("host");
    host.put_inventory("widget", 10, 250).await;
    let before = order_effects(&host).await;

    // Content-Length and chunked together: read as chunked (the length is
    // ignored), answered, and the connection closed after the answer.
    let mut client = Raw::connect(&host).await;
    client
        .send(b"POST /http/x?echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    let answer = client.answer().await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "abc"), "the chunked body is the body");
    assert_eq!(answer.header("connection"), Some("close"));
    client.assert_closed("CL with TE").await;
    still_served(&host, "CL with TE").await;

    // Two different lengths; a list of lengths.
    for (what, lengths) in
        [("two lengths", "content-length: 4\r\ncontent-length: 5"), ("a list", "content-length: 4, 5")]
    {
        let mut client = Raw::connect(&host).await;
        client.send(format!("POST /http/x?echo HTTP/1.1\r\nhost: x\r\n{lengths}\r\n\r\nabcde").as_bytes()).await;
        assert_eq!(client.answer().await.status, 400, "{what}");
        client.assert_closed(what).await;
        still_served(&host, what).await;
    }

    // Transfer-Encoding whose last coding is not chunked: the body's end
    // cannot be known, so the request is refused.
    for coding in ["chunked, gzip", "gzip", "identity", "xchunked", "chunked\r\ntransfer-encoding: identity"] {
        let mut client = Raw::connect(&host).await;
        client
            .send(
                format!("POST /http/x?echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: {coding}\r\n\r\n0\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        assert_eq!(client.answer().await.status, 400, "transfer-encoding: {coding}");
        client.assert_closed(coding).await;
        still_served(&host, coding).await;
    }
    // A space before the colon is a malformed header, not another name.
    let mut client = Raw::connect(&host).await;
    client.send(b"POST /http/x?echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n").await;
    assert_eq!(client.answer().await.status, 400, "space before the colon");
    client.assert_closed("space before the colon").await;

    // CL.TE: a front that honoured the length would pass the whole body on
    // as one request; here the chunked body ends at once, so the order
    // handler sees an empty body, and the order after it would be a second
    // request on the connection, which is closed instead.
    let smuggled = order_request();
    let body = format!("0\r\n\r\n{smuggled}");
    let mut client = Raw::connect(&host).await;
    client
        .send(
            format!(
                "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    let answer = client.answer().await;
    assert_eq!(answer.status, 400, "an empty order: {}", answer.text());
    client.assert_closed("CL.TE").await;

    // TE.CL: the smuggled order is the data of a chunk, which a front that
    // honoured the length would have left for a second request.
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let mut client = Raw::connect(&host).await;
    client
        .send(
            format!(
                "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n{chunked}"
            )
            .as_bytes(),
        )
        .await;
    let answer = client.answer().await;
    assert_eq!(answer.status, 400, "a request line is not an order: {}", answer.text());
    client.assert_closed("TE.CL").await;

    assert_eq!(order_effects(&host).await, before, "no smuggled order was taken");
    // The same order sent plainly is taken, so the check above would have
    // seen a smuggled one.
    let mut client = Raw::connect(&host).await;
    client.send(smuggled.as_bytes()).await;
    let answer = client.answer().await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(order_effects(&host).await, (before.0 - 1, before.1 + 3), "one widget out, three notifications");
    still_served(&host, "smuggling").await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_methods_and_targets_get_exact_answers() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");

    // (what, request head, status, whether the connection stays open)
    let long_path = "a".repeat(20 * 1024);
    let too_long_target = "a".repeat(70 * 1024);
    let cases: Vec<(&str, String, u16, bool)> = vec![
        ("a method that is not a token", "G@T /hello HTTP/1.1\r\nhost: x".into(), 400, false),
        ("an empty method", " /hello HTTP/1.1\r\nhost: x".into(), 400, false),
        ("an unknown method", "BREW /hello HTTP/1.1\r\nhost: x".into(), 405, true),
        ("CONNECT", "CONNECT other.example:443 HTTP/1.1\r\nhost: other.example:443".into(), 404, true),
        ("GET *", "GET * HTTP/1.1\r\nhost: x".into(), 404, true),
        ("OPTIONS *", "OPTIONS * HTTP/1.1\r\nhost: x".into(), 404, true),
        ("a control byte in the target", "GET /hel\x01lo HTTP/1.1\r\nhost: x".into(), 400, false),
        ("DEL in the target", "GET /hel\x7flo HTTP/1.1\r\nhost: x".into(), 400, false),
        ("a space in the target", "GET /hel lo HTTP/1.1\r\nhost: x".into(), 400, false),
        ("a 20 KiB path", format!("GET /{long_path} HTTP/1.1\r\nhost: x"), 404, true),
        ("a target over 65,534 bytes", format!("GET /{too_long_target} HTTP/1.1\r\nhost: x"), 414, false),
        ("an unknown version", "GET /hello HTTP/9.9\r\nhost: x".into(), 400, false),
        ("HTTP/0.9", "GET /hello".into(), 400, false),
        ("a NUL in a header value", "GET /hello HTTP/1.1\r\nhost: x\r\nx-a: b\0c".into(), 400, false),
        ("a folded header", "GET /hello HTTP/1.1\r\nhost: x\r\nx-a: b\r\n c".into(), 400, false),
    ];
    for (what, head, status, kept) in cases {
        let mut client = Raw::connect(&host).await;
        client.send(format!("{head}\r\n\r\n").as_bytes()).await;
        let answer = client.answer().await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        if kept {
            // The router's own answers are JSON and name the request.
            assert!(answer.text().contains("\"request_id\""), "{what}: {}", answer.text());
            client.send(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let next = client.answer().await;
            assert_eq!((next.status, next.text().as_str()), (200, "hello"), "{what}: the connection still serves");
        } else {
            client.assert_closed(what).await;
        }
        still_served(&host, what).await;
    }

    // Absolute form naming another host: the host is no proxy, so it serves
    // its own /hello and contacts nobody.
    let mut client = Raw::connect(&host).await;
    client.send(b"GET http://other.example/hello HTTP/1.1\r\nhost: other.example\r\n\r\n").await;
    let answer = client.answer().await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "hello"));
    assert!(answer.header("x-switchyard-version").is_some(), "answered by the hello component itself");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_431() {
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    let headers = |n: usize| (0..n).map(|i| format!("x-flood-{i}: v\r\n")).collect::<String>();
    let limits = &host.config.server;
    assert_eq!((limits.max_headers, limits.max_header_bytes), (64, 16 * 1024), "the defaults this test is about");

    // Over the router's limits, under hyper's: a JSON 431, and the
    // connection goes on serving.
    for (what, extra) in
        [("65 headers", headers(64)), ("a 20 KiB header", format!("x-big: {}\r\n", "a".repeat(20 * 1024)))]
    {
        let mut client = Raw::connect(&host).await;
        client.send(format!("GET /hello HTTP/1.1\r\nhost: x\r\n{extra}\r\n").as_bytes()).await;
        let answer = client.answer().await;
        assert_eq!(answer.status, 431, "{what}");
        assert!(answer.text().contains("at most 64 headers and 16384 bytes"), "{what}: {}", answer.text());
        client.send(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(client.answer().await.status, 200, "{what}: the connection still serves");
        still_served(&host, what).await;
    }

    // Over hyper's: 431 and a close, before any of it reaches the router.
    for (what, extra) in [
        ("101 headers", headers(100)),
        ("a 100 KiB header", format!("x-big: {}\r\n", "a".repeat(100 * 1024))),
        ("1000 headers of 100 bytes", (0..1000).map(|i| format!("x-{i:04}: {}\r\n", "v".repeat(92))).collect()),
    ] {
        let mut client = Raw::connect(&host).await;
        // The host may close while the rest is still being written.
        client.send(format!("GET /hello HTTP/1.1\r\nhost: x\r\n{extra}\r\n").as_bytes()).await;
        let answer = client.answer().await;
        assert_eq!(answer.status, 431, "{what}");
        client.assert_closed(what).await;
        still_served(&host, what).await;
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off() {
    let host = TestHost::start_with_toml(Backend::Sqlite, SHORT_TIMEOUTS).await.expect("host");
    host.put_inventory("widget", 10, 250).await;
    let before = order_effects(&host).await;

    // Headers a byte at a time: closed without an answer.
    let mut client = Raw::connect(&host).await;
    client.send(b"GET /hello HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    let header = vec![b'a'; 1_000];
    let sent = client.trickle(&header).await;
    assert!(sent < header.len(), "cut off before the headers ended");
    client.assert_closed("slow headers").await;
    still_served(&host, "slow headers").await;

    // A connection that never sends a byte, and one that goes quiet after
    // a request: both closed.
    let mut silent = Raw::connect(&host).await;
    silent.assert_closed("a silent connection").await;
    let mut idle = Raw::connect(&host).await;
    idle.send(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(idle.answer().await.status, 200);
    idle.assert_closed("an idle keep-alive connection").await;
    still_served(&host, "silent connections").await;

    // A body a byte at a time, to a handler and to a proxy component whose
    // guest reads it: 408 within the request timeout, then a close. The
    // order handler never ran, so nothing was ordered.
    for path in ["/orders", "/http/x?echo"] {
        let mut client = Raw::connect(&host).await;
        let body = vec![b' '; 1_000];
        client
            .send(
                format!(
                    "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let sent = client.trickle(&body).await;
        assert!(sent < body.len(), "{path}: answered before the body ended");
        let answer = client.answer().await;
        assert_eq!(answer.status, 408, "{path}: {}", answer.text());
        client.assert_closed(path).await;
        still_served(&host, path).await;
    }
    assert_eq!(order_effects(&host).await, before, "a timed-out order is not taken");
    let gate = host.runtime.admissions().find(|(name, _)| *name == "hello-http").map(|(_, gate)| gate.clone()).unwrap();
    eventually("the timed-out proxy call frees its slot", HANG_GUARD, || async { gate.running() == 0 }).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_starve_a_client() {
    // A few hundred file descriptors on each side: well inside the default
    // soft limit of 1024 that a fresh machine gives the test process.
    const IDLE: usize = 240;
    let host = TestHost::start(Backend::Sqlite).await.expect("host");
    host.put_inventory("widget", 10, 250).await;

    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut client = Raw::connect(&host).await;
        match i % 3 {
            // Silent.
            0 => {}
            // Half a request line.
            1 => assert!(client.send(b"GET /hel").await),
            // A request answered, then nothing (keep-alive).
            _ => {
                client.send(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
                assert_eq!(client.answer().await.status, 200);
            }
        }
        idle.push(client);
    }

    still_served(&host, "opening idle connections").await;
    let response = TestHost::client()
        .post(format!("{}/orders", host.url))
        .header("content-type", "application/json")
        .body(ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "an order is taken beside {IDLE} idle connections");
    assert_eq!(in_flight(&host).await, 1.0, "idle connections hold no request (1 is the scrape)");
    drop(idle);
    still_served(&host, "closing idle connections").await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_free_their_slots() {
    const ROUNDS: usize = 5;
    let host = TestHost::start_with_toml(Backend::Sqlite, LINGERING_HELLO_HTTP).await.expect("host");
    let gate = |name: &str| host.runtime.admissions().find(|(n, _)| *n == name).map(|(_, gate)| gate.clone()).unwrap();
    let hello_http = gate("hello-http");
    let linger = b"GET /http/x?linger_ms=600000 HTTP/1.1\r\nhost: x\r\n\r\n";

    // Both slots held by responses still streaming; each client leaves
    // after the first bytes of its body. Round after round, the slots come
    // back, or the next round would be refused.
    for round in 0..ROUNDS {
        let mut first = Raw::connect(&host).await;
        let mut second = Raw::connect(&host).await;
        for client in [&mut first, &mut second] {
            client.send(linger).await;
            client.read_until("hello").await;
        }
        assert_eq!(hello_http.running(), 2, "round {round}: both responses are streaming");
        if round == 0 {
            // The slots are really held: a third caller is refused now.
            let refused = TestHost::client().get(format!("{}/http/x", host.url)).send().await.unwrap();
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        drop((first, second));
        eventually(&format!("round {round}: the slots are released"), HANG_GUARD, || async {
            hello_http.running() == 0
        })
        .await;
    }
    let served = TestHost::client().get(format!("{}/http/x", host.url)).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.text().await.unwrap(), "hello");

    // A handler whose client leaves before any answer: the invocation is
    // dropped with the request, and its slot with it.
    let spin = gate("spin");
    let mut client = Raw::connect(&host).await;
    client.send(b"GET /spin HTTP/1.1\r\nhost: x\r\n\r\n").await;
    eventually("the slow handler is running", HANG_GUARD, || async { spin.running() == 1 }).await;
    drop(client);
    eventually("the slow handler's slot is released", HANG_GUARD, || async { spin.running() == 0 }).await;

    still_served(&host, "clients leaving").await;
    eventually("no request is left in flight (1 is the scrape)", HANG_GUARD, || async {
        in_flight(&host).await == 1.0
    })
    .await;
    host.stop().await;
}

async fn clients_leaving_mid_transaction(host: &TestHost) {
    // Clients that send a read of an order and leave at once, all at the
    // same time, so some leave while their invocation waits for the write
    // lock, some inside `BEGIN`, some in the middle of the transaction.
    const ROUNDS: usize = 3;
    const LEAVERS: usize = 200;
    const ORDERS_AFTER: usize = 5;
    host.put_inventory("widget", 1_000, 250).await;
    let mut order = Raw::connect(host).await;
    order.send(order_request().as_bytes()).await;
    let created = order.answer().await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = serde_json::from_slice::<serde_json::Value>(&created.body).unwrap()["id"].as_str().unwrap().to_owned();
    let before = order_effects(host).await;

    let read = format!("GET /orders/{id} HTTP/1.1\r\nhost: x\r\n\r\n");
    for round in 0..ROUNDS {
        let leaving: Vec<_> = (0..LEAVERS)
            .map(|i| {
                let (address, read) = (host.url.trim_start_matches("http://").to_owned(), read.clone());
                tokio::spawn(async move {
                    let mut stream = TcpStream::connect(address).await.unwrap();
                    let _ = stream.write_all(read.as_bytes()).await;
                    // Half leave at once, half a moment later.
                    if i % 2 == 0 {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for client in leaving {
            client.await.unwrap();
        }
        // More orders than the breaker's threshold of failures in a row:
        // each is taken.
        for n in 0..ORDERS_AFTER {
            let mut client = Raw::connect(host).await;
            client.send(order_request().as_bytes()).await;
            let answer = client.answer().await;
            assert_eq!(answer.status, 201, "round {round}, order {n} after clients left: {}", answer.text());
        }
    }
    let taken = (ROUNDS * ORDERS_AFTER) as u64;
    assert_eq!(order_effects(host).await, (before.0 - taken, before.1 + 3 * taken as i64), "each order once");
    let breaker = host.runtime.breaker("order-handler").expect("breaker");
    assert_eq!(breaker.trips(), 0, "clients leaving are not the component's failures");
}
on_both_backends!(
    clients_that_leave_mid_transaction_leave_the_database_and_breaker_alone,
    clients_leaving_mid_transaction
);
