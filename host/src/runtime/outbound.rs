//! Outgoing HTTP from connectors: only to the hosts a connector is allowed.
//!
//! A request to any other authority fails at once with wasi:http's
//! `HTTP-request-denied`, which connectors report as a permanent error, and
//! is logged here so the operator sees what was attempted.

use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::capabilities::ComponentContext;

/// The per-invocation hooks wasmtime-wasi-http consults for each request.
pub struct OutboundPolicy {
    /// Its name for the log line of a refused request, and its allowed
    /// authorities (`host:port`, or a host for any port).
    component: Arc<ComponentContext>,
    request_id: Arc<str>,
}

impl OutboundPolicy {
    pub(crate) fn new(component: Arc<ComponentContext>, request_id: Arc<str>) -> Self {
        Self { component, request_id }
    }

    fn allows(&self, uri: &hyper::Uri) -> bool {
        let Some(authority) = uri.authority() else { return false };
        let default_port = if uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS) { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host();
        self.component.allowed_hosts.iter().any(|allowed| match allowed.rsplit_once(':') {
            Some((allowed_host, allowed_port)) => {
                allowed_host.eq_ignore_ascii_case(host) && allowed_port.parse() == Ok(port)
            }
            None => allowed.eq_ignore_ascii_case(host),
        })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (hyper::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            tracing::warn!(
                component = &*self.component.name,
                request_id = &*self.request_id,
                uri = %request.uri(),
                "outgoing request to a host not in allowed_hosts refused"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> OutboundPolicy {
        let component = ComponentContext {
            name: Arc::from("c"),
            config: Default::default(),
            connectors: Default::default(),
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            metrics: crate::telemetry::metrics::Metrics::new(1),
        };
        OutboundPolicy::new(Arc::new(component), Arc::from("r"))
    }

    #[test]
    fn only_listed_authorities_are_allowed() {
        let p = policy(&["127.0.0.1:9090", "api.example.com"]);
        assert!(p.allows(&"http://127.0.0.1:9090/email".parse().unwrap()));
        assert!(!p.allows(&"http://127.0.0.1:9091/email".parse().unwrap()), "other port");
        assert!(!p.allows(&"http://10.0.0.1:9090/".parse().unwrap()), "other host");
        assert!(p.allows(&"https://API.example.com/x".parse().unwrap()), "any port when none listed");
        assert!(!policy(&[]).allows(&"http://127.0.0.1:9090/".parse().unwrap()), "nothing by default");
    }
}
