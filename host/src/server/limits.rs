//! HTTP-layer limits: header count and size (431), API keys and their rate
//! limits (401, 429 with `Retry-After`), and per-client-IP limits on keyless
//! routes.
//!
//! Each configured key has its own GCRA limiter (the `governor` crate), so a
//! key that floods only exhausts its own quota. `Retry-After` is the
//! limiter's own answer to "when would this request have been allowed",
//! rounded up to whole seconds.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Config, Quota as QuotaConfig};
use crate::error::AppError;
use crate::telemetry::metrics::{ADMISSION_REJECTED, Metrics};

/// Header carrying an API key (a bearer token works too).
pub const API_KEY_HEADER: &str = "x-api-key";

/// Header bounds, checked before anything else looks at the request.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    pub max_headers: usize,
    pub max_bytes: usize,
}

impl HeaderLimits {
    /// The 431 response for headers over the limits, if they are.
    pub fn check(&self, headers: &HeaderMap) -> Option<Response> {
        let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
        if headers.len() <= self.max_headers && bytes <= self.max_bytes {
            return None;
        }
        Some(AppError::HeadersTooLarge { max_headers: self.max_headers, max_bytes: self.max_bytes }.into_response())
    }
}

/// API keys and the limiters behind them.
pub struct RateLimits {
    /// Key → (owner's name, its limiter).
    keys: HashMap<String, (String, DefaultDirectRateLimiter)>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(NonZeroU32::new(burst).unwrap_or(per_second))
}

fn quota_of(config: QuotaConfig) -> Quota {
    quota(config.per_second, config.burst)
}

impl RateLimits {
    /// Builds the limiters; fails if a key's environment variable is unset.
    pub fn from_config(config: &Config) -> anyhow::Result<RateLimits> {
        let mut keys = HashMap::new();
        for key in &config.api_keys {
            let secret = match (&key.key, &key.key_env) {
                (Some(secret), _) => secret.clone(),
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| anyhow::anyhow!("api key {:?}: environment variable {var} is not set", key.name))?,
                (None, None) => anyhow::bail!("api key {:?} has no key", key.name),
            };
            let default = config.rate_limits.default;
            let limiter = RateLimiter::direct(quota(
                key.per_second.unwrap_or(default.per_second),
                key.burst.unwrap_or(default.burst),
            ));
            keys.insert(secret, (key.name.clone(), limiter));
        }
        let per_ip = config.rate_limits.per_ip.map(|q| RateLimiter::keyed(quota_of(q)));
        Ok(RateLimits { keys, per_ip, clock: DefaultClock::default() })
    }

    /// `Retry-After` seconds for a refusal that clears at `earliest`.
    fn retry_after(&self, wait: std::time::Duration) -> u64 {
        wait.as_millis().div_ceil(1_000).max(1) as u64
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()).or_else(|| {
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    })
}

fn too_many(retry_after_secs: u64, who: String) -> Response {
    AppError::RateLimited { who, retry_after_secs }.into_response()
}

impl RateLimits {
    /// Whether a route needs the rate-limit middleware at all.
    pub fn applies(&self, key_required: bool) -> bool {
        key_required || self.per_ip.is_some()
    }
}

/// Route middleware: `key_required` comes from the route's `api_key`.
pub async fn rate_limit(
    State((metrics, limits, key_required)): State<(Arc<Metrics>, Arc<RateLimits>, bool)>,
    request: Request,
    next: Next,
) -> Response {
    let rejected = |reason: &'static str| metrics.counter(ADMISSION_REJECTED, &[("reason", reason)]).increment(1);
    if key_required {
        let known = presented_key(request.headers()).and_then(|key| limits.keys.get(key));
        let Some((name, limiter)) = known else {
            rejected("unknown_key");
            let message = "a valid API key is required (x-api-key or bearer)";
            return AppError::Unauthorized { message, bearer: false }.into_response();
        };
        if let Err(not_until) = limiter.check() {
            rejected("rate_limited");
            let wait = not_until.wait_time_from(limits.clock.now());
            return too_many(limits.retry_after(wait), format!("key {name}"));
        }
    } else if let Some(per_ip) = &limits.per_ip {
        let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        if let Some(ip) = ip
            && let Err(not_until) = per_ip.check_key(&ip)
        {
            rejected("rate_limited");
            let wait = not_until.wait_time_from(limits.clock.now());
            return too_many(limits.retry_after(wait), "this client".to_owned());
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_come_from_headers_or_bearer() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(presented_key(&headers), Some("abc"));
        headers.insert(API_KEY_HEADER, HeaderValue::from_static("xyz"));
        assert_eq!(presented_key(&headers), Some("xyz"), "x-api-key wins");
    }

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let limiter = RateLimiter::direct(quota(1, 2));
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let refused = limiter.check().expect_err("burst exhausted");
        let wait = refused.wait_time_from(DefaultClock::default().now());
        assert!(wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_secs(1), "{wait:?}");
    }
}
