//! The connector's settings, from its `[components.NAME.config]` table
//! through the `config` import, read again on every delivery (a lookup in
//! the host's memory, no I/O):
//!
//! - `url` (required): the provider endpoint, `http://` or `https://`.
//! - `timeout_ms` (optional, default [`DEFAULT_TIMEOUT_MS`]): applied to
//!   connecting, to the first response byte and between response bytes.
//!
//! A missing or invalid setting fails the delivery permanently: retrying
//! cannot fix it, an operator has to.

use crate::bindings::switchyard::platform::config;
use crate::bindings::wasi::http::types::Scheme;
use crate::outcome::Failure;

/// Timeout of each phase of the request when `timeout_ms` is unset.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

const NANOS_PER_MILLI: u64 = 1_000_000;

pub(crate) struct Settings {
    /// Where every request of this connector goes.
    pub endpoint: Endpoint,
    /// In nanoseconds, the unit of wasi:http's `request-options`.
    pub timeout_ns: u64,
}

impl Settings {
    pub fn load() -> Result<Self, Failure> {
        let url = config::get("url").ok_or_else(|| Failure::misconfigured("`url` is not set"))?;
        let endpoint = Endpoint::parse(&url).map_err(Failure::misconfigured)?;
        let timeout_ms = match config::get("timeout_ms") {
            None => DEFAULT_TIMEOUT_MS,
            Some(value) => parse_timeout_ms(&value).map_err(Failure::misconfigured)?,
        };
        // Bounded by parse_timeout_ms, so this cannot overflow.
        Ok(Settings { endpoint, timeout_ns: timeout_ms.saturating_mul(NANOS_PER_MILLI) })
    }
}

/// A positive number of milliseconds, small enough to fit in nanoseconds.
fn parse_timeout_ms(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(ms) if ms > 0 && ms <= u64::MAX / NANOS_PER_MILLI => Ok(ms),
        _ => Err(format!("`timeout_ms` must be a positive number of milliseconds, not {value:?}")),
    }
}

/// The parts of the `url` setting, as wasi:http sets them on a request.
pub(crate) struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`; also what a denied request names.
    pub authority: String,
    /// Without the query; may be empty.
    path: String,
    /// Including its `?`, or empty.
    query: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("`url` {url:?} {why}");
        if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must be a non-empty URL without spaces"));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("has no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(invalid("must be http:// or https://")),
        };
        // A fragment never reaches the server.
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, path_and_query) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if !valid_authority(authority) {
            return Err(invalid("must name a host, and a port below 65536 if any (no user info)"));
        }
        let (path, query) = path_and_query.split_at(path_and_query.find('?').unwrap_or(path_and_query.len()));
        Ok(Endpoint { scheme, authority: authority.to_owned(), path: path.to_owned(), query: query.to_owned() })
    }

    /// The request target: the URL's path with `suffix` appended (one `/`
    /// between them), then the URL's query.
    pub fn path_with_query(&self, suffix: &str) -> String {
        let base = if suffix.is_empty() { self.path.as_str() } else { self.path.trim_end_matches('/') };
        let path = format!("{base}{suffix}");
        let path = if path.is_empty() { "/" } else { path.as_str() };
        format!("{path}{}", self.query)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; user info is refused because
/// credentials do not belong in a URL that is logged.
fn valid_authority(authority: &str) -> bool {
    if authority.is_empty() || authority.contains('@') {
        return false;
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => !host.is_empty() && port.parse::<u16>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn target(url: &str, suffix: &str) -> String {
        Endpoint::parse(url).unwrap().path_with_query(suffix)
    }

    #[test]
    fn splits_a_url_into_request_parts() {
        let endpoint = Endpoint::parse("http://127.0.0.1:9090/email?key=1#top").unwrap();
        assert!(matches!(endpoint.scheme, Scheme::Http));
        assert_eq!(endpoint.authority, "127.0.0.1:9090");
        assert_eq!(endpoint.path_with_query(""), "/email?key=1");
        assert!(matches!(Endpoint::parse("HTTPS://[::1]:443").unwrap().scheme, Scheme::Https));
    }

    #[test]
    fn joins_a_webhook_path_with_one_slash() {
        assert_eq!(target("http://h/webhook", "/fulfilment"), "/webhook/fulfilment");
        assert_eq!(target("http://h/webhook/", "/fulfilment"), "/webhook/fulfilment");
        assert_eq!(target("http://h", "/fulfilment"), "/fulfilment");
        assert_eq!(target("http://h?a=b", ""), "/?a=b");
    }

    #[test]
    fn refuses_what_is_not_an_http_url() {
        for url in
            ["", "127.0.0.1:9090/email", "ftp://h/", "http:///path", "http://h:99999/", "http://u:p@h/", "http://h /"]
        {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn timeout_is_positive_milliseconds() {
        assert_eq!(parse_timeout_ms(" 250 "), Ok(250));
        assert!(parse_timeout_ms("0").is_err());
        assert!(parse_timeout_ms("5s").is_err());
        assert!(parse_timeout_ms(&u64::MAX.to_string()).is_err());
    }
}
