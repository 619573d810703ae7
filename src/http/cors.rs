//! CORS (contract §12, §16), looked at before the token check (in the one middleware,
//! `auth::gate`, so the hot path pays one layer) so a preflight needs no token: a preflight
//! from a listed origin answers 204 with that exact origin (never `*`), the methods and the
//! headers the API takes; an unlisted origin gets no `Access-Control-Allow-Origin`, on a
//! preflight (403) or on any other answer. The origins are `RUMI_CORS_ORIGINS` (comma-separated),
//! else the local development servers.

use super::error::ApiError;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse, ResponseError};

/// The allowed origins, as app data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigins(pub Vec<String>);

/// Ports of the local development servers allowed by default.
const DEFAULT_PORTS: [u16; 4] = [3000, 5173, 8080, 8765];
/// Most origins `RUMI_CORS_ORIGINS` may list.
const MAX_ORIGINS: usize = 64;

const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type";
/// Headers a page may read from an answer besides the simple ones.
const EXPOSE_HEADERS: &str =
    "Retry-After, Rumi-Audit-Before, Rumi-Audit-After, Rumi-Audit-Skipped-Lines";
/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECS: &str = "600";

impl CorsOrigins {
    /// `http://localhost:{3000,5173,8080,8765}` and the same for `127.0.0.1`.
    pub fn defaults() -> CorsOrigins {
        CorsOrigins(
            ["localhost", "127.0.0.1"]
                .iter()
                .flat_map(|h| DEFAULT_PORTS.iter().map(move |p| format!("http://{h}:{p}")))
                .collect(),
        )
    }

    /// `RUMI_CORS_ORIGINS`: comma-separated origins (`scheme://host[:port]`, no path, no `*`),
    /// which replace the defaults.
    pub fn parse(raw: &str) -> Result<CorsOrigins, String> {
        let mut out = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(origin(item).ok_or_else(|| {
                format!(
                    "RUMI_CORS_ORIGINS: {item:?} is not an origin; use scheme://host[:port] \
                     (e.g. http://localhost:3000), comma-separated, never *"
                )
            })?);
        }
        if out.is_empty() {
            return Err("RUMI_CORS_ORIGINS is empty; unset it for the defaults".into());
        }
        if out.len() > MAX_ORIGINS {
            return Err(format!(
                "RUMI_CORS_ORIGINS lists {} origins; the limit is {MAX_ORIGINS}",
                out.len()
            ));
        }
        Ok(CorsOrigins(out))
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

/// `item` as an origin as browsers send it (`http://host:port`, lower-case scheme and host).
fn origin(item: &str) -> Option<String> {
    let (scheme, rest) = item.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (host, port) = if rest.starts_with('[') {
        // An IPv6 literal: `[addr]` then `:port` or nothing.
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end + 1);
        let ok = host[1..end]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        if !ok || end == 1 {
            return None;
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?.parse::<u16>().ok()?)),
        }
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        if !ok {
            return None;
        }
        (host, port)
    };
    let host = host.to_ascii_lowercase();
    Some(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// What CORS makes of a request: the answer to a preflight (given before the token check), or the
/// origin whose answer gets `Access-Control-Allow-Origin` (`None`: no origin, or not listed).
pub enum Verdict {
    Preflight(HttpResponse),
    Pass(Option<String>),
}

/// Looks at a request once, before the token check (see `auth::gate`, the one middleware).
pub fn inspect(req: &ServiceRequest) -> Verdict {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return Verdict::Pass(None);
    };
    let allowed = req
        .app_data::<web::Data<CorsOrigins>>()
        .is_some_and(|list| list.allows(origin));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        return Verdict::Pass(allowed.then(|| origin.to_string()));
    }
    let resp = if allowed {
        HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS))
            .insert_header((header::VARY, "Origin"))
            .finish()
    } else {
        let mut r = ApiError::new(
            StatusCode::FORBIDDEN,
            "this origin may not call the API; list it in RUMI_CORS_ORIGINS",
        )
        .error_response();
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        r
    };
    Verdict::Preflight(resp)
}

/// Adds the CORS headers of an answer: `Vary: Origin` always, the origin and the exposed headers
/// when it is listed.
pub fn decorate(headers: &mut actix_web::http::header::HeaderMap, allowed: Option<&str>) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(value) = allowed.and_then(|o| HeaderValue::from_str(o).ok()) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_local_development_servers() {
        let d = CorsOrigins::defaults();
        assert_eq!(d.0.len(), 8);
        assert!(d.allows("http://localhost:5173") && d.allows("http://127.0.0.1:8765"));
        assert!(!d.allows("http://localhost:5174") && !d.allows("https://localhost:3000"));
        assert!(!d.allows("null") && !d.allows("*"));
    }

    #[test]
    fn the_variable_takes_origins_only() {
        let o = CorsOrigins::parse(
            " https://App.Example.com , http://10.0.0.2:8080,http://[::1]:3000,http://[::1]",
        )
        .unwrap();
        assert_eq!(
            o.0,
            [
                "https://app.example.com",
                "http://10.0.0.2:8080",
                "http://[::1]:3000",
                "http://[::1]"
            ]
        );
        for bad in [
            "*",
            "localhost:3000",
            "http://a.com/path",
            "ftp://a.com",
            "http://a.com:99999",
            "http://",
            "",
            " , ",
            "http://a b",
            "http://[]:80",
            "http://[::1]x",
            "http://a.com:",
        ] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad:?}");
        }
        let many = vec!["http://a.com"; MAX_ORIGINS + 1].join(",");
        assert!(CorsOrigins::parse(&many).is_err());
    }
}
