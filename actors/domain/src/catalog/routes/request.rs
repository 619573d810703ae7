//! A route request's inputs, and the flow's `ctx._http` read back as a status and headers.
//!
//! Inputs, later sources overriding earlier ones: query parameters (URL-decoded; a key given
//! once is a string, repeated a list of strings) ← the JSON body's keys (when the body is sent as
//! JSON) ← path parameters; then the kernel's own `_raw_body` (base64 of the body as received,
//! any content type), `_headers` (lower-case names, `authorization`, `proxy-authorization` and
//! `cookie` removed, repeated headers joined with `, `), `_method` and `_path` (as received,
//! without the query). Keys starting with `_` are the kernel's: a caller's query or body key
//! starting with `_` is dropped (else a body `{"_http": …}` would choose the route's status and
//! headers, which are the flow's to choose), and the kernel's keys are set last.

use base64::Engine;
use serde_json::{Map, Value};

/// Most headers `ctx._http.headers` may set.
pub const MAX_REPLY_HEADERS: usize = 32;
/// Longest header name and value a flow may set.
pub const MAX_HEADER_NAME: usize = 64;
pub const MAX_HEADER_VALUE: usize = 4096;

/// A request as the edge received it.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// As received (percent-encoded), without the query.
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// Names in any case; values as text (bytes that are not UTF-8 are replaced).
    pub headers: Vec<(String, String)>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// True when the content type says JSON (`application/json`, `application/*+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Builds a route run's inputs (see the module docs); the error is a 400's message.
pub fn inputs(
    req: &Request<'_>,
    params: Vec<(String, String)>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (k, v) in url::form_urlencoded::parse(req.query.as_bytes()) {
        if k.starts_with('_') {
            continue;
        }
        let v = Value::String(v.into_owned());
        match out.get_mut(k.as_ref()) {
            None => {
                out.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => {
                let first = first.take();
                out.insert(k.into_owned(), Value::Array(vec![first, v]));
            }
        }
    }
    let json_body =
        req.content_type.is_some_and(is_json) && !req.body.iter().all(u8::is_ascii_whitespace);
    if json_body {
        match serde_json::from_slice::<Value>(req.body) {
            Ok(Value::Object(m)) => out.extend(m.into_iter().filter(|(k, _)| !k.starts_with('_'))),
            Ok(_) => {
                return Err(
                    "a JSON body must be an object (its keys become the flow's inputs)".into(),
                )
            }
            Err(e) => return Err(format!("malformed JSON: {e}")),
        }
    }
    for (k, v) in params {
        out.insert(k, Value::String(v));
    }
    let mut headers = Map::new();
    for (name, value) in &req.headers {
        let name = name.to_ascii_lowercase();
        // The caller's credentials are for the kernel (or for other sites on this host), never
        // for a pack's flow.
        if matches!(
            name.as_str(),
            "authorization" | "proxy-authorization" | "cookie"
        ) {
            continue;
        }
        match headers.get_mut(&name) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(value);
            }
            _ => {
                headers.insert(name, Value::String(value.clone()));
            }
        }
    }
    out.insert(
        "_raw_body".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(req.body)),
    );
    out.insert("_headers".into(), Value::Object(headers));
    out.insert("_method".into(), Value::String(req.method.to_string()));
    out.insert("_path".into(), Value::String(req.path.to_string()));
    Ok(out)
}

/// What `ctx._http` asks of the response, and what of it was refused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// 200..=599; `None`: 200.
    pub status: Option<u16>,
    /// Names lower-case.
    pub headers: Vec<(String, String)>,
    /// One note per refused part: it was dropped, the rest of the response stands.
    pub refused: Vec<String>,
}

/// Headers a flow may never set: hop-by-hop headers belong to the connection, not the response
/// (a `transfer-encoding` or `content-length` of the flow's choosing would desynchronise the
/// client — response splitting or smuggling); `content-type` stays JSON because the body is the
/// envelope (a flow making the kernel's origin serve `text/html` is an XSS); CORS headers are the
/// kernel's gate's to set; `set-cookie` would plant state on the kernel's origin.
pub fn forbidden_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "content-type"
            | "content-encoding"
            | "set-cookie"
            | "host"
            | "date"
            | "server"
    ) || name.starts_with("proxy-")
        || name.starts_with("access-control-")
}

/// An RFC 9110 token: the characters a header name may hold.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Visible ASCII, spaces and tabs only: no CR or LF (header injection), no NUL, no bytes a client
/// might read differently.
fn valid_header_value(v: &str) -> bool {
    v.len() <= MAX_HEADER_VALUE && v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Reads `ctx._http = {status, headers}` (absent: nothing asked).
pub fn reply(http: Option<&Value>) -> Reply {
    let mut out = Reply::default();
    let Some(http) = http else {
        return out;
    };
    let Some(obj) = http.as_object() else {
        out.refused
            .push("ctx._http must be an object {status, headers}; it was ignored".into());
        return out;
    };
    match obj.get("status") {
        None | Some(Value::Null) => {}
        // 204, 205 and 304 carry no body, and a route's answer always has one (the envelope):
        // sent with one, the body would be read as the start of the connection's next response.
        Some(v) => match v
            .as_u64()
            .filter(|s| (200..=599).contains(s) && !matches!(s, 204 | 205 | 304))
        {
            Some(s) => out.status = Some(s as u16),
            None => out.refused.push(format!(
                "ctx._http.status {} is not an integer from 200 to 599 other than 204, 205 and 304 (a route always answers a body); 200 was sent",
                clip(&v.to_string())
            )),
        },
    }
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (i, (name, value)) in h.iter().enumerate() {
                if i >= MAX_REPLY_HEADERS {
                    out.refused.push(format!(
                        "ctx._http.headers sets more than {MAX_REPLY_HEADERS} headers; the rest \
                         were dropped"
                    ));
                    break;
                }
                let lower = name.to_ascii_lowercase();
                let why = if !valid_header_name(name) {
                    Some("is not a valid header name")
                } else if forbidden_header(&lower) {
                    Some("is set by the kernel only (hop-by-hop, framing, content type, CORS or cookie)")
                } else {
                    match value {
                        Value::String(v) if valid_header_value(v) => None,
                        Value::String(_) => {
                            Some("has a value with control or non-ASCII characters, or too long")
                        }
                        _ => Some("has a value that is not a string"),
                    }
                };
                match why {
                    None => out
                        .headers
                        .push((lower, value.as_str().unwrap_or_default().to_string())),
                    Some(why) => out
                        .refused
                        .push(format!("header {:?} {why}; it was dropped", clip(name))),
                }
            }
        }
        Some(_) => out
            .refused
            .push("ctx._http.headers must be an object of strings; it was ignored".into()),
    }
    out
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}
