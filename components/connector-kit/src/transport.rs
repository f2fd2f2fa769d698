//! One POST through `wasi:http/outgoing-handler`, and its reply read into
//! memory up to [`MAX_REPLY_BYTES`].
//!
//! The host decides which hosts a connector may reach and answers
//! `HTTP-request-denied` for the others; this module only reports what
//! happened. Resources are dropped child first (a stream before its body, a
//! pollable before its future), as wasi:http requires.

use crate::bindings::switchyard::platform::log::{self, Level};
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::outcome::Failure;
use crate::settings::Settings;

/// Replies are only read for an id or an error excerpt; a provider sending
/// more is cut off rather than allowed to fill the guest's memory.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The most `blocking-write-and-flush` accepts in one call.
const WRITE_CHUNK_BYTES: usize = 4096;

/// The status and (the start of) the body of the provider's answer.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The provider sent more than [`MAX_REPLY_BYTES`]; `body` is its start.
    pub truncated: bool,
}

/// POSTs `body` to the configured endpoint, its path extended by `path`.
pub(crate) fn post(settings: &Settings, path: &str, headers: &[(&str, String)], body: &[u8]) -> Result<Reply, Failure> {
    let endpoint = &settings.endpoint;
    let authority = endpoint.authority.as_str();
    let fields: Vec<(String, Vec<u8>)> =
        headers.iter().map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())).collect();
    let fields =
        Fields::from_list(&fields).map_err(|error| Failure::Permanent(format!("invalid request header: {error:?}")))?;
    let request = OutgoingRequest::new(fields);
    request.set_method(&Method::Post).map_err(|()| Failure::Permanent("host refused the POST method".to_owned()))?;
    request
        .set_scheme(Some(&endpoint.scheme))
        .map_err(|()| Failure::misconfigured("the host refused the URL scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| Failure::misconfigured(format!("the host refused the authority {authority:?}")))?;
    request
        .set_path_with_query(Some(&endpoint.path_with_query(path)))
        .map_err(|()| Failure::Permanent("the host refused the request path".to_owned()))?;
    // The body handle must be taken before `handle` consumes the request.
    let outgoing_body = request.body().map_err(|()| Failure::Retryable("request body unavailable".to_owned()))?;

    let future = outgoing_handler::handle(request, Some(request_options(settings.timeout_ns)))
        .map_err(|code| Failure::transport(code, authority))?;
    // Written only after `handle`: the host buffers few body chunks before
    // the request is under way, so writing first could wait forever.
    let written = write_body(outgoing_body, body);

    // The response says more than a failed write (the write fails when the
    // connection does), so it is awaited either way.
    let response = wait(future).map_err(|code| Failure::transport(code, authority))?;
    let status = response.status();
    if let Err(reason) = written {
        // Answered before taking the whole body: only an error status is
        // believable, and it is reported as it is.
        if (200..300).contains(&status) {
            return Err(Failure::Retryable(reason));
        }
    }
    let (body, truncated) = read_body(response);
    Ok(Reply { status, body, truncated })
}

/// Every phase of the request gets the connector's timeout.
fn request_options(timeout_ns: u64) -> RequestOptions {
    let options = RequestOptions::new();
    let accepted = [
        options.set_connect_timeout(Some(timeout_ns)),
        options.set_first_byte_timeout(Some(timeout_ns)),
        options.set_between_bytes_timeout(Some(timeout_ns)),
    ];
    if accepted.iter().any(Result::is_err) {
        log::log(Level::Warn, "the host does not support request timeouts; its defaults apply");
    }
    options
}

fn write_body(outgoing_body: OutgoingBody, body: &[u8]) -> Result<(), String> {
    let stream = outgoing_body.write().map_err(|()| "request body stream unavailable".to_owned())?;
    let written = body.chunks(WRITE_CHUNK_BYTES).try_for_each(|chunk| stream.blocking_write_and_flush(chunk));
    drop(stream);
    written.map_err(|error| format!("writing the request body: {}", describe(error)))?;
    OutgoingBody::finish(outgoing_body, None).map_err(|code| format!("finishing the request body: {code:?}"))
}

fn describe(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".to_owned(),
        StreamError::LastOperationFailed(error) => error.to_debug_string(),
    }
}

fn wait(future: FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    let ready = future.subscribe();
    ready.block();
    drop(ready);
    match future.get() {
        Some(Ok(result)) => result,
        // Neither happens after `block`: not ready, or already taken.
        None | Some(Err(())) => Err(ErrorCode::InternalError(Some("response lost".to_owned()))),
    }
}

/// The reply body, up to [`MAX_REPLY_BYTES`]. Best effort: the status has
/// already decided the outcome, so a body that fails to arrive only costs
/// the provider id or the error excerpt.
fn read_body(response: IncomingResponse) -> (Vec<u8>, bool) {
    let Ok(incoming_body) = response.consume() else {
        return (Vec::new(), false);
    };
    let Ok(stream) = incoming_body.stream() else {
        return (Vec::new(), false);
    };
    let mut body = Vec::new();
    // One byte past the limit tells a reply of exactly the limit from a
    // longer one.
    while body.len() <= MAX_REPLY_BYTES {
        let wanted = MAX_REPLY_BYTES + 1 - body.len();
        match stream.blocking_read(wanted as u64) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed | StreamError::LastOperationFailed(_)) => break,
        }
    }
    drop(stream);
    drop(incoming_body);
    let truncated = body.len() > MAX_REPLY_BYTES;
    body.truncate(MAX_REPLY_BYTES);
    (body, truncated)
}
