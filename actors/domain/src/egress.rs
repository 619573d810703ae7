//! Egress policy (contract §6): what a pack's frame on its egress socket may ask for, and the
//! per-hop decisions of steps 1 (validation) and 2 (grant). Step 3 (addresses) is [`crate::net`];
//! the proxy in the runtime crate does the I/O around these and applies them on every hop.
//!
//! Attacks stopped here:
//! * naming another pack in the payload: `owner_pack` (or anything else unknown) is ignored, the
//!   socket alone identifies the pack;
//! * internal hosts spelled as numbers (`2130706433`, `127.1`, `0x7f000001`) — URLs are parsed the
//!   WHATWG way, which turns those spellings into the address they mean, so the address check sees
//!   `127.0.0.1`;
//! * smuggling a different `Host` than the URL's (the grant would be checked against one name and
//!   the upstream would serve another) — a `Host` header is refused;
//! * header and body floods — counts and sizes are bounded before anything is sent.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
pub use url;

/// Largest request frame a pack may send (1 MiB).
pub const MAX_REQUEST_FRAME: usize = 1024 * 1024;
/// Header limits of step 1.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_NAME: usize = 256;
pub const MAX_HEADER_VALUE: usize = 8192;
/// Largest `timeout_seconds`.
pub const MAX_TIMEOUT_SECS: f64 = 120.0;
pub const DEFAULT_TIMEOUT_SECS: f64 = 30.0;
/// Redirects followed for GET and HEAD.
pub const MAX_REDIRECTS: u32 = 3;
/// Marks a base64 body, in a request's headers and in a response's.
pub const BODY_ENCODING_HEADER: &str = "x-proxy-body-encoding";

/// The methods of step 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
        }
    }
    /// Redirects are followed only for these.
    pub fn follows_redirects(self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }
}

/// Where one hop goes, from a parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: Host,
    pub port: u16,
}

/// A hop's host: a name to resolve once, or an address literal (any spelling, already decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lower-case ASCII (IDNA applied), without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The text a grant's `allowed_domains` is matched against.
    pub fn grant_name(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// Checks a URL (step 1 for one hop) and tells where it goes.
pub fn target(url: &url::Url) -> Result<Target, String> {
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("scheme {other:?} is not allowed (http or https)")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed; send an Authorization header".into());
    }
    let host = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() {
                return Err("the URL has no host".into());
            }
            Host::Name(d)
        }
        Some(url::Host::Ipv4(v4)) => Host::Ip(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Host::Ip(IpAddr::V6(v6)),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "the URL has no port".to_string())?;
    if port == 0 {
        return Err("port 0 is not a destination".into());
    }
    Ok(Target { https, host, port })
}

/// Parses a URL the WHATWG way (numeric IPv4 spellings become addresses).
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    if text.len() > 8192 {
        return Err("the URL is longer than 8192 bytes".into());
    }
    url::Url::parse(text).map_err(|e| format!("the URL is invalid ({e})"))
}

/// A validated HTTP request from a pack (step 1 passed for its first hop).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    pub url: url::Url,
    /// Names as sent (validated), without the body-encoding marker.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

/// What a frame on the egress socket asks for.
#[derive(Debug, Clone)]
pub enum EgressRequest {
    Http(HttpRequest),
    /// `network_check(domain, port)`: the grant check alone, nothing is sent.
    Check {
        domain: String,
        port: u16,
    },
}

/// A refused frame: `protocol_error` when it is not a JSON object, `validation` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error_type: &'static str,
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal {
        error_type: "validation",
        reason: reason.into(),
    }
}

/// Parses and validates one request frame (the frame's length was checked by the reader).
pub fn parse_request(frame: &[u8]) -> Result<EgressRequest, Refusal> {
    let value: Value = serde_json::from_slice(frame).map_err(|_| Refusal {
        error_type: "protocol_error",
        reason: "the frame is not UTF-8 JSON".into(),
    })?;
    let Value::Object(mut map) = value else {
        return Err(Refusal {
            error_type: "protocol_error",
            reason: "the frame is not a JSON object".into(),
        });
    };
    match map.get("op").map(|v| v.as_str()) {
        None | Some(Some("http_request")) => {}
        Some(Some("network_check")) => {
            let (domain, port) =
                check_target(map.get("domain"), map.get("port")).map_err(invalid)?;
            return Ok(EgressRequest::Check { domain, port });
        }
        Some(_) => return Err(invalid("op must be \"http_request\" or \"network_check\"")),
    }
    let method = map
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = Method::parse(&method).ok_or_else(|| {
        invalid(format!(
            "method {method:?} is not allowed (GET, HEAD, POST, PUT, DELETE, PATCH)"
        ))
    })?;
    let url_text = map
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("url must be a string"))?;
    let url = parse_url(url_text).map_err(invalid)?;
    target(&url).map_err(invalid)?;
    let (headers, base64_body) = parse_headers(map.get("headers"))?;
    // Moved out of the frame, not copied (up to 1 MiB).
    let body = match map.remove("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if base64_body => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| invalid("the body is marked base64 but is not valid base64"))?,
        Some(Value::String(s)) => s.into_bytes(),
        Some(_) => return Err(invalid("body must be a string (base64 for binary data)")),
    };
    let secs = match map.get("timeout_seconds") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECS,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid("timeout_seconds must be a number"))?,
    };
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(invalid(format!(
            "timeout_seconds must be in (0, {MAX_TIMEOUT_SECS}]"
        )));
    }
    Ok(EgressRequest::Http(HttpRequest {
        method,
        url,
        headers,
        body,
        timeout: Duration::from_secs_f64(secs),
    }))
}

/// The `(domain, port)` of a `network_check` (from a pack's frame or `POST /api/network/check`),
/// normalised as hosts are for the grant check: lower case, no trailing dot.
pub fn check_target(domain: Option<&Value>, port: Option<&Value>) -> Result<(String, u16), String> {
    let domain = match domain.and_then(Value::as_str) {
        Some(d) if !d.is_empty() && d.len() <= 253 => d.trim_end_matches('.').to_ascii_lowercase(),
        _ => return Err("domain must be a host name of 1 to 253 characters".into()),
    };
    let port = port
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| "port must be an integer in 1..=65535".to_string())?;
    Ok((domain, port as u16))
}

/// Header names a pack may not set: `Host` (never overridable) and the hop-by-hop headers the
/// proxy owns (framing smuggling).
const FORBIDDEN_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

fn parse_headers(v: Option<&Value>) -> Result<(Vec<(String, String)>, bool), Refusal> {
    let map = match v {
        None | Some(Value::Null) => return Ok((Vec::new(), false)),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("headers must be an object of strings")),
    };
    if map.len() > MAX_HEADERS {
        return Err(invalid(format!("more than {MAX_HEADERS} headers")));
    }
    let mut out = Vec::with_capacity(map.len());
    let mut base64_body = false;
    for (name, value) in map {
        let Value::String(value) = value else {
            return Err(invalid(format!("header {name:?} must have a string value")));
        };
        if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_token_byte) {
            return Err(invalid(format!(
                "header name {:?} is not a valid name of at most {MAX_HEADER_NAME} bytes",
                truncate(name, 64)
            )));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(invalid(format!(
                "header {name:?} is longer than {MAX_HEADER_VALUE} bytes"
            )));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid(format!(
                "header {name:?} contains a line break or NUL"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if lower == "host" {
            return Err(invalid(
                "the Host header cannot be overridden; it comes from the URL",
            ));
        }
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
            return Err(invalid(format!(
                "header {name:?} is managed by the proxy and cannot be set"
            )));
        }
        if lower == BODY_ENCODING_HEADER {
            if !value.eq_ignore_ascii_case("base64") {
                return Err(invalid("X-Proxy-Body-Encoding must be \"base64\""));
            }
            base64_body = true;
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    Ok((out, base64_body))
}

/// RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

// ---- grants ----------------------------------------------------------------------------------

/// A pack's network grant (the signed content of its grant file).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkGrant {
    pub pack_id: String,
    pub enabled: bool,
    pub allowed_domains: Vec<String>,
    pub allowed_ports: Vec<u16>,
    #[serde(default)]
    pub notes: String,
    pub granted_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub revoke_reason: Option<String>,
}

/// Most entries in one grant list.
pub const MAX_GRANT_ENTRIES: usize = 256;

/// Checks and normalises the lists of a grant request (`POST /api/network/grant`).
pub fn normalise_grant_lists(
    domains: &[String],
    ports: &[i64],
) -> Result<(Vec<String>, Vec<u16>), String> {
    if domains.len() > MAX_GRANT_ENTRIES || ports.len() > MAX_GRANT_ENTRIES {
        return Err(format!(
            "a grant holds at most {MAX_GRANT_ENTRIES} domains and {MAX_GRANT_ENTRIES} ports"
        ));
    }
    let mut out_domains = Vec::with_capacity(domains.len());
    for d in domains {
        let raw = d.trim();
        let d = raw.trim_end_matches('.').to_ascii_lowercase();
        let body = d.strip_prefix("*.").unwrap_or(&d);
        let valid = (d == "*" && raw == "*")
            || (!body.is_empty()
                && body.len() <= 253
                && !body.contains('*')
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':'));
        if !valid {
            return Err(format!(
                "allowed_domains entry {:?} is not a host name, an address, \"*.domain\" or \"*\"",
                truncate(&d, 64)
            ));
        }
        if !out_domains.contains(&d) {
            out_domains.push(d);
        }
    }
    let mut out_ports = Vec::with_capacity(ports.len());
    for &p in ports {
        let p = u16::try_from(p)
            .map_err(|_| format!("allowed_ports entry {p} is not a port (0 = any, 1..=65535)"))?;
        if !out_ports.contains(&p) {
            out_ports.push(p);
        }
    }
    Ok((out_domains, out_ports))
}

/// Whether `host` (lower-case, no trailing dot) matches one `allowed_domains` entry.
pub fn domain_matches(entry: &str, host: &str) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some(base) = entry.strip_prefix("*.") {
        return host == base
            || (host.len() > base.len()
                && host.ends_with(base)
                && host.as_bytes()[host.len() - base.len() - 1] == b'.');
    }
    entry == host
}

/// Step 2: may the pack reach `host:port`? `Err` carries the reason.
pub fn grant_allows(grant: &NetworkGrant, host: &str, port: u16) -> Result<(), String> {
    if !grant.enabled {
        return Err("the pack's network grant is revoked".into());
    }
    if grant.allowed_domains.is_empty() {
        return Err("the grant allows no domains".into());
    }
    if grant.allowed_ports.is_empty() {
        return Err("the grant allows no ports".into());
    }
    if !grant
        .allowed_domains
        .iter()
        .any(|e| domain_matches(e, host))
    {
        return Err(format!("{host} is not in the pack's allowed domains"));
    }
    if !grant.allowed_ports.iter().any(|&p| p == 0 || p == port) {
        return Err(format!("port {port} is not in the pack's allowed ports"));
    }
    Ok(())
}

// ---- responses ------------------------------------------------------------------------------

/// The response frame of §6.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProxyResponse {
    pub success: bool,
    pub status_code: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub latency_ms: f64,
    pub redirect_hops: u32,
    pub bytes_read: u64,
    pub final_url: String,
}

impl ProxyResponse {
    /// A refusal with the short error the pack sees.
    pub fn failure(error_type: &str, error: impl Into<String>) -> ProxyResponse {
        ProxyResponse {
            success: false,
            error: Some(error.into()),
            error_type: Some(error_type.to_string()),
            ..ProxyResponse::default()
        }
    }

    /// Sets the body: UTF-8 text as is, anything else base64 with the marker header. Text that
    /// JSON would escape to more than twice its size (control characters become `\u00XX`) is
    /// sent as base64 too, so a reply frame is never more than about twice its body.
    pub fn set_body(&mut self, bytes: Vec<u8>) {
        let bytes = match String::from_utf8(bytes) {
            Ok(text) if json_escaped_len(text.as_bytes()) <= 2 * text.len() => {
                self.body = text;
                return;
            }
            Ok(text) => text.into_bytes(),
            Err(e) => e.into_bytes(),
        };
        self.body = base64::engine::general_purpose::STANDARD.encode(&bytes);
        self.headers
            .insert(BODY_ENCODING_HEADER.to_string(), "base64".to_string());
    }
}

/// The size of `text` inside a JSON string (serde_json's escapes).
fn json_escaped_len(text: &[u8]) -> usize {
    text.iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// The short error texts of §6.
pub const BLOCKED: &str = "Request blocked by security policy";

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(domains: &[&str], ports: &[u16]) -> NetworkGrant {
        NetworkGrant {
            pack_id: "p".into(),
            enabled: true,
            allowed_domains: domains.iter().map(|s| s.to_string()).collect(),
            allowed_ports: ports.to_vec(),
            notes: String::new(),
            granted_at: String::new(),
            revoked_at: None,
            revoke_reason: None,
        }
    }

    fn http(frame: &str) -> Result<HttpRequest, Refusal> {
        match parse_request(frame.as_bytes())? {
            EgressRequest::Http(r) => Ok(r),
            other => panic!("not http: {other:?}"),
        }
    }

    #[test]
    fn numeric_spellings_become_addresses() {
        for spelling in [
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.0.0.1./",
        ] {
            let t = target(&parse_url(spelling).unwrap()).unwrap();
            assert_eq!(t.host, Host::Ip("127.0.0.1".parse().unwrap()), "{spelling}");
        }
        let t = target(&parse_url("http://[::ffff:7f00:1]:8080/").unwrap()).unwrap();
        assert_eq!(t.host, Host::Ip("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(t.port, 8080);
        let t = target(&parse_url("https://Example.COM./x").unwrap()).unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 443);
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let cases = [
            (r#"{"method":"TRACE","url":"http://a.com/"}"#, "method"),
            (r#"{"url":"ftp://a.com/"}"#, "scheme"),
            (r#"{"url":"file:///etc/passwd"}"#, "scheme"),
            (r#"{"url":"http://u:p@a.com/"}"#, "credentials"),
            (r#"{"url":"http://a.com/","timeout_seconds":0}"#, "timeout"),
            (
                r#"{"url":"http://a.com/","timeout_seconds":121}"#,
                "timeout",
            ),
            (
                r#"{"url":"http://a.com/","timeout_seconds":"x"}"#,
                "timeout",
            ),
            (
                r#"{"url":"http://a.com/","headers":{"Host":"b.com"}}"#,
                "Host",
            ),
            (
                r#"{"url":"http://a.com/","headers":{"hOsT":"b.com"}}"#,
                "Host",
            ),
            (
                r#"{"url":"http://a.com/","headers":{"Transfer-Encoding":"chunked"}}"#,
                "managed",
            ),
            (
                r#"{"url":"http://a.com/","headers":{"X":"a\r\nB: c"}}"#,
                "line break",
            ),
            (
                r#"{"url":"http://a.com/","headers":{"bad name":"v"}}"#,
                "header name",
            ),
            (r#"{"url":"http://a.com/","body":5}"#, "body"),
            (
                r#"{"url":"http://a.com/","body":"!!","headers":{"X-Proxy-Body-Encoding":"base64"}}"#,
                "base64",
            ),
            (r#"{"url":7}"#, "url"),
            (r#"{"url":"http:///"}"#, "URL"),
            (r#"{"op":"rm -rf"}"#, "op"),
        ];
        for (frame, needle) in cases {
            let err = http(frame).unwrap_err();
            assert_eq!(err.error_type, "validation", "{frame}");
            assert!(err.reason.contains(needle), "{frame}: {}", err.reason);
        }
        let many: serde_json::Map<String, Value> = (0..101)
            .map(|i| (format!("x-h{i}"), Value::String("v".into())))
            .collect();
        let frame = serde_json::json!({"url": "http://a.com/", "headers": many}).to_string();
        assert!(http(&frame).unwrap_err().reason.contains("100 headers"));
        let long = "v".repeat(MAX_HEADER_VALUE + 1);
        let frame = serde_json::json!({"url": "http://a.com/", "headers": {"x": long}}).to_string();
        assert!(http(&frame).unwrap_err().reason.contains("longer"));
        for bad in ["not json", "[1,2]", "\"s\""] {
            assert_eq!(
                parse_request(bad.as_bytes()).unwrap_err().error_type,
                "protocol_error"
            );
        }
    }

    #[test]
    fn bodies_and_ignored_fields() {
        let r = http(
            r#"{"method":"post","url":"http://a.com/","owner_pack":"other","body":"AAEC/w==","headers":{"X-Proxy-Body-Encoding":"base64","X-A":"1"}}"#,
        )
        .unwrap();
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.body, vec![0, 1, 2, 255]);
        assert_eq!(r.headers, vec![("X-A".to_string(), "1".to_string())]);
        assert_eq!(r.timeout, Duration::from_secs(30));
        let mut resp = ProxyResponse::default();
        resp.set_body(vec![0xff, 0]);
        assert_eq!(resp.body, "/wA=");
        assert_eq!(resp.headers[BODY_ENCODING_HEADER], "base64");
        let mut resp = ProxyResponse::default();
        resp.set_body("héllo".as_bytes().to_vec());
        assert_eq!(resp.body, "héllo");
        assert!(resp.headers.is_empty());
        // Quotes at most double the frame: still text. Control characters would grow it six-fold.
        for (body, base64) in [
            (vec![b'"'; 1000], false),
            (b"{\"a\":\"b\"}\n".repeat(100), false),
            (vec![1u8; 1000], true),
            ([b"ab\x01".as_slice(); 100].concat(), true),
        ] {
            let mut resp = ProxyResponse::default();
            resp.set_body(body.clone());
            assert_eq!(resp.headers.contains_key(BODY_ENCODING_HEADER), base64);
            let frame = serde_json::to_string(&resp).unwrap();
            assert!(frame.len() < 2 * body.len() + 300, "{} bytes", frame.len());
            if base64 {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(&resp.body)
                    .unwrap();
                assert_eq!(decoded, body);
            }
        }
    }

    #[test]
    fn grant_matching() {
        let g = grant(&["*.example.com", "api.test"], &[443]);
        assert!(grant_allows(&g, "example.com", 443).is_ok());
        assert!(grant_allows(&g, "a.b.example.com", 443).is_ok());
        assert!(grant_allows(&g, "api.test", 443).is_ok());
        assert!(grant_allows(&g, "badexample.com", 443).is_err());
        assert!(grant_allows(&g, "example.com.evil.net", 443).is_err());
        assert!(grant_allows(&g, "x.api.test", 443).is_err());
        assert!(grant_allows(&g, "api.test", 80)
            .unwrap_err()
            .contains("port 80"));
        let any = grant(&["*"], &[0]);
        assert!(grant_allows(&any, "anything.net", 1).is_ok());
        assert!(grant_allows(&grant(&[], &[0]), "a.com", 1)
            .unwrap_err()
            .contains("no domains"));
        assert!(grant_allows(&grant(&["*"], &[]), "a.com", 1)
            .unwrap_err()
            .contains("no ports"));
        let mut off = any.clone();
        off.enabled = false;
        assert!(grant_allows(&off, "a.com", 1)
            .unwrap_err()
            .contains("revoked"));
    }

    #[test]
    fn grant_lists_are_normalised_and_checked() {
        let (d, p) = normalise_grant_lists(
            &[
                "API.Example.com.".into(),
                "*.x.org".into(),
                "*".into(),
                "api.example.com".into(),
            ],
            &[443, 0, 443],
        )
        .unwrap();
        assert_eq!(d, vec!["api.example.com", "*.x.org", "*"]);
        assert_eq!(p, vec![443, 0]);
        for bad in ["a*.com", "*.*.com", "exa mple.com", "", "*."] {
            assert!(normalise_grant_lists(&[bad.into()], &[]).is_err(), "{bad}");
        }
        assert!(normalise_grant_lists(&[], &[70000]).is_err());
        assert!(normalise_grant_lists(&[], &[-1]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// However an IPv4 address is spelled in a URL (dotted, one decimal number, hex, octal
        /// octets, IPv4-mapped IPv6), the target is that address, so the address check judges it.
        #[test]
        fn every_ipv4_spelling_decodes_to_its_address(raw in proptest::prelude::any::<u32>()) {
            let ip = std::net::Ipv4Addr::from(raw);
            let o = ip.octets();
            let spellings = [
                format!("http://{ip}/"),
                format!("http://{raw}/"),
                format!("http://{raw:#x}/"),
                format!("http://0{:o}.0{:o}.0{:o}.0{:o}/", o[0], o[1], o[2], o[3]),
            ];
            for text in spellings {
                let t = target(&parse_url(&text).unwrap()).unwrap();
                proptest::prop_assert_eq!(t.host, Host::Ip(IpAddr::V4(ip)), "{}", text);
            }
            let mapped = format!("http://[::ffff:{ip}]/");
            let t = target(&parse_url(&mapped).unwrap()).unwrap();
            proptest::prop_assert_eq!(t.host, Host::Ip(IpAddr::V6(ip.to_ipv6_mapped())));
        }
    }

    #[test]
    fn network_check_frames() {
        match parse_request(br#"{"op":"network_check","domain":"API.a.com","port":443}"#).unwrap() {
            EgressRequest::Check { domain, port } => {
                assert_eq!(domain, "api.a.com");
                assert_eq!(port, 443);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_request(br#"{"op":"network_check","domain":"a.com","port":0}"#).is_err());
    }
}
