//! What a client may read back from the host, whatever it sent: a sequence
//! of well-formed HTTP/1.1 responses, each carrying a sane request id,
//! except the interim `100 Continue` and hyper's own bodiless refusals of
//! requests it could not parse, after which the connection ends.

/// Statuses hyper answers itself, before a request reaches the router.
const HYPER_REFUSALS: [u16; 6] = [400, 413, 414, 431, 501, 505];
const MAX_HEADERS: usize = 128;

pub fn check(mut answer: &[u8]) -> Result<(), String> {
    let mut index = 0;
    while !answer.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(answer) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Err(format!("response {index}: its head is cut off")),
            Err(err) => return Err(format!("response {index}: its head does not parse: {err}")),
        };
        let status = response.code.unwrap_or(0);
        if !(100..600).contains(&status) {
            return Err(format!("response {index}: status {status}"));
        }
        let header =
            |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.to_vec());
        let length = match header("content-length") {
            Some(value) => Some(
                std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| format!("response {index}: content-length {value:?}"))?,
            ),
            None => None,
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        match header("x-request-id") {
            Some(id) if id.is_empty() || id.len() > 128 || !id.iter().all(u8::is_ascii_graphic) => {
                return Err(format!("response {index}: request id {:?}", String::from_utf8_lossy(&id)));
            }
            Some(_) => {}
            None if status == 100 => {}
            None if HYPER_REFUSALS.contains(&status) && length == Some(0) => {
                let rest = &answer[head_len..];
                if !rest.is_empty() {
                    return Err(format!("response {index}: {} bytes follow hyper's refusal", rest.len()));
                }
                return Ok(());
            }
            None => return Err(format!("response {index} ({status}) has no request id")),
        }
        let body = &answer[head_len..];
        let body_len = if status == 100 || status == 204 || status == 304 {
            0
        } else if chunked {
            chunked_length(body).ok_or_else(|| format!("response {index}: its chunked body is malformed"))?
        } else {
            length.unwrap_or(body.len()).min(body.len())
        };
        // A HEAD request's answer has a length but no body: when what the
        // length skips to is not a response, the body was not sent.
        let next = &body[body_len..];
        answer = if next.is_empty() || next.starts_with(b"HTTP/1.1 ") || !body.starts_with(b"HTTP/1.1 ") {
            next
        } else {
            body
        };
        index += 1;
    }
    Ok(())
}

/// Length of a chunked body, trailers included; a body cut off at the end
/// (the response was abandoned mid-stream) counts up to where it stops.
fn chunked_length(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(&body[at..]) else { return Some(body.len()) };
        let line = std::str::from_utf8(&body[at..at + line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find_crlf(&body[at..]) else { return Some(body.len()) };
                at += end + 2;
                if end == 0 {
                    return Some(at);
                }
            }
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > body.len() {
            return Some(body.len());
        }
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn sequences_of_answers_are_read_as_such() {
        let ok = b"HTTP/1.1 200 OK\r\nx-request-id: a1\r\ncontent-length: 2\r\n\r\nhi\
                   HTTP/1.1 404 Not Found\r\nx-request-id: b2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n\
                   HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(check(ok), Ok(()));
        assert!(check(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err(), "no request id");
        assert!(check(b"HTTP/1.1 200 OK\r\nx-request-id: a\r\n").is_err(), "cut-off head");
        assert!(check(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n").is_err());
        let head = b"HTTP/1.1 200 OK\r\nx-request-id: a\r\ncontent-length: 5\r\n\r\n\
                     HTTP/1.1 200 OK\r\nx-request-id: b\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(check(head), Ok(()), "a HEAD answer without its body");
    }
}
