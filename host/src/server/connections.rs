//! Accepting connections and speaking HTTP/1 on them, with the bounds a
//! client meets before it has sent a whole request: how long the request
//! head may take to arrive, and how large it may grow.
//!
//! `axum::serve` would do the accepting, but it gives hyper's connections
//! no timer, and without one hyper silently skips its header read timeout:
//! a client that sent half a request line, or nothing at all, or went quiet
//! between keep-alive requests held its connection for as long as it liked
//! (the request timeout cannot help, as no request exists yet). Every
//! connection here has the timer.
//!
//! Only HTTP/1 is spoken. hyper-util's automatic protocol detection for
//! cleartext HTTP/2 reads the connection preface with no deadline, no client
//! of the host speaks HTTP/2 without TLS, and `docs/performance.md` measured
//! hyper's HTTP/1 connection against the detecting one at the same cost.
//!
//! This module owns sockets and connections. What happens to a request is
//! [`super::app`]'s business.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

use crate::config::ServerConfig;

/// Room in a request head for what `[server] max_header_bytes` does not
/// count: the request line, whose target hyper refuses above 65,534 bytes
/// (414), and the `: ` and CRLF framing each header adds.
const HEAD_FRAMING_ALLOWANCE: usize = 72 * 1024;

/// hyper parses up to this many headers in a buffer on the stack; a larger
/// limit moves that buffer to the heap for every request, so it is only
/// asked for when the config needs it.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// How long to wait after an accept error that is not about one connection
/// (out of file descriptors, say) before accepting again, so the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Bounds on a connection, applied by hyper before a request reaches the
/// router.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a request head may take to arrive, counted from the
    /// connection's start or the end of the previous response: bounds
    /// slow headers, silent connections and idle keep-alive alike. Past it
    /// the connection is closed without an answer.
    pub header_read_timeout: Duration,
    /// Most bytes of a request head hyper buffers (431 and close above).
    /// The router's own header limits answer smaller floods with a 431 that
    /// keeps the connection; this bounds the memory a slow client can make
    /// a connection hold while it sends them.
    pub max_head_bytes: usize,
    /// Most headers hyper parses (431 and close above).
    pub max_headers: usize,
}

impl ConnectionLimits {
    pub fn from_config(server: &ServerConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_head_bytes: server.max_header_bytes.saturating_add(HEAD_FRAMING_ALLOWANCE),
            // One more than the router accepts, so the router's 431 (with a
            // JSON body and the connection kept) is what a client over the
            // limit by a little sees.
            max_headers: server.max_headers.saturating_add(1).max(HYPER_DEFAULT_MAX_HEADERS),
        }
    }

    fn builder(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_header_size(self.max_head_bytes);
        if self.max_headers > HYPER_DEFAULT_MAX_HEADERS {
            builder.max_headers(self.max_headers);
        }
        builder
    }
}

/// Serves `app` on every connection `listener` accepts until `shutdown`
/// resolves; then stops accepting and waits for open connections to finish
/// their requests (the caller bounds that wait).
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let builder = limits.builder();
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_about_one_connection(&err) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot accept connections; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // No Nagle delay: a streamed response is written in several small
        // segments, and the last would otherwise wait for the client's
        // delayed acknowledgement of the first.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        // Adds the peer address (per-IP rate limits read it); never fails.
        let Ok(make) = ServiceExt::<SocketAddr>::ready(&mut make_service).await;
        let Ok(service) = make.call(remote).await;
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Timeouts, resets and malformed requests end here; hyper has
            // already answered what deserved an answer.
            if let Err(err) = connection.await {
                tracing::debug!(%remote, error = %err, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Errors of one connection that was gone before it was accepted; the
/// listener itself is fine.
fn is_about_one_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_config() {
        let server = ServerConfig::default();
        let limits = ConnectionLimits::from_config(&server);
        assert_eq!(limits.header_read_timeout, Duration::from_millis(server.header_read_timeout_ms));
        assert!(limits.max_head_bytes > server.max_header_bytes, "the router's limit is reached first");
        assert_eq!(limits.max_headers, HYPER_DEFAULT_MAX_HEADERS, "64 headers fit hyper's default");

        let many = ServerConfig { max_headers: 500, ..ServerConfig::default() };
        assert_eq!(ConnectionLimits::from_config(&many).max_headers, 501);
    }
}
