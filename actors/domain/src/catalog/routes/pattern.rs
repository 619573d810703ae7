//! Route methods and path patterns: parsing (every limit of a pack's `routes.json` path), matching
//! a request path, and the overlap rule that keeps a pack from shadowing a kernel endpoint.
//!
//! A pattern is `/api/` then segments, each a literal or a `{param}`. Two patterns *overlap* when
//! some request path matches both: same segment count, and at each position two literals are
//! equal (a parameter matches any segment). A literal beats a parameter, compared from the left.

use std::fmt;

/// Longest route path, bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Most segments after `/api/`.
pub const MAX_SEGMENTS: usize = 16;
/// Longest parameter name.
pub const MAX_PARAM_NAME: usize = 64;

/// The kernel's own endpoints (method, path), exactly `src/http/table.rs`: the domain cannot see
/// that table, so a test of the edge (`src/http/routes.rs`) compares the two both ways and this
/// list can never drift. A pack route that overlaps any of these paths is refused, whatever its
/// method (the kernel answers its own paths first; a route there would never run, or would run
/// for some requests only).
pub const KERNEL_ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/api/flows/{id}/run"),
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/diagnostics"),
    ("GET", "/api/audit"),
    ("GET", "/api/packs"),
    ("GET", "/api/packs/pending"),
    ("POST", "/api/packs/scan"),
    ("POST", "/api/packs/import"),
    ("POST", "/api/packs/apply"),
    ("GET", "/api/packs/{id}"),
    ("GET", "/api/packs/{id}/status"),
    ("POST", "/api/packs/{id}/approve"),
    ("POST", "/api/packs/{id}/reject"),
    ("DELETE", "/api/packs/{id}"),
    ("GET", "/api/flows"),
    ("POST", "/api/flows/reload"),
    ("GET", "/api/flows/{id}"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/{run_id}"),
    ("GET", "/api/schedules"),
    ("POST", "/api/network/grant"),
    ("POST", "/api/network/revoke"),
    ("POST", "/api/network/check"),
    ("GET", "/api/network/list"),
    ("GET", "/api/docker/status"),
    ("GET", "/api/containers"),
    ("DELETE", "/api/containers/{id}"),
    ("POST", "/api/containers/{id}/start"),
    ("POST", "/api/containers/{id}/stop"),
    ("POST", "/api/capability/grants/grant"),
    ("POST", "/api/capability/grants/revoke"),
    ("GET", "/api/capability/grants"),
    ("POST", "/api/secrets/set"),
    ("POST", "/api/secrets/delete"),
    ("GET", "/api/secrets"),
    ("POST", "/api/stores/create"),
    ("GET", "/api/stores"),
    ("POST", "/api/capability/candidates/scan"),
    ("GET", "/api/capability/requests"),
    ("POST", "/api/capability/requests/{candidate_key}/approve"),
    ("POST", "/api/capability/requests/{candidate_key}/reject"),
    ("GET", "/api/capability/blocked"),
    ("POST", "/api/capability/blocked/{candidate_key}/unblock"),
    ("GET", "/api/routes"),
    ("POST", "/api/routes/reload"),
    ("POST", "/api/packs/{id}/lib/run"),
    ("POST", "/api/pip/candidates/scan"),
    ("GET", "/api/pip/requests"),
    ("POST", "/api/pip/requests/{candidate_key}/approve"),
    ("POST", "/api/pip/requests/{candidate_key}/reject"),
    ("GET", "/api/pip/blocked"),
    ("POST", "/api/pip/blocked/{candidate_key}/unblock"),
    ("GET", "/api/vocab"),
    ("GET", "/api/skills"),
    ("POST", "/api/skills/run"),
    ("GET", "/api/skills/runs/{run_id}"),
    ("GET", "/api/skills/runs/{run_id}/artifacts/{path}"),
];

/// The methods a pack route may use.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Patch,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
        }
    }

    /// A method as written in `routes.json` (any case) or as a request carries it (upper case).
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed route path (the segments after `/api/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a route path; the error says what is wrong and what to write instead.
    pub fn parse(path: &str) -> Result<Pattern, String> {
        if path.len() > MAX_PATH_BYTES {
            return Err(format!(
                "the path is {} bytes; the limit is {MAX_PATH_BYTES} — shorten it",
                path.len()
            ));
        }
        let Some(rest) = path.strip_prefix("/api/") else {
            return Err("the path must start with /api/ (e.g. /api/my-pack/items)".into());
        };
        if rest.is_empty() {
            return Err("the path needs at least one segment after /api/".into());
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > MAX_SEGMENTS {
            return Err(format!(
                "the path has {} segments after /api/; the limit is {MAX_SEGMENTS}",
                parts.len()
            ));
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            segments.push(segment(part)?);
        }
        let mut names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) => Some(n.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "the parameter {{{}}} appears twice in the path — give each parameter its own name",
                w[0]
            ));
        }
        Ok(Pattern { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when some request path matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.pairwise(other, |a, b| match (a, b) {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            _ => true,
        })
    }

    /// True when both patterns have the same shape: the same literals at the same places and
    /// parameters at the same places (parameter names aside). Such patterns match exactly the
    /// same request paths.
    pub fn equivalent(&self, other: &Pattern) -> bool {
        self.pairwise(other, |a, b| match (a, b) {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Param(_), Segment::Param(_)) => true,
            _ => false,
        })
    }

    /// Both patterns have as many segments, and `same` holds for each pair of them.
    fn pairwise(&self, other: &Pattern, same: impl Fn(&Segment, &Segment) -> bool) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| same(a, b))
    }

    /// Matches the decoded segments of a request path (after `/api/`); the parameters' values
    /// in the order of the pattern.
    pub fn matches(&self, request: &[String]) -> Option<Vec<(String, String)>> {
        if request.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (s, r) in self.segments.iter().zip(request) {
            match s {
                Segment::Literal(l) if l == r => {}
                Segment::Literal(_) => return None,
                Segment::Param(n) => params.push((n.clone(), r.clone())),
            }
        }
        Some(params)
    }

    /// The specificity key: true for a literal, per segment; the larger key wins (a literal
    /// beats a parameter, compared from the left).
    pub fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|s| matches!(s, Segment::Literal(_)))
            .collect()
    }
}

/// Parses one segment: a literal of unreserved URL characters, or `{name}`.
fn segment(part: &str) -> Result<Segment, String> {
    if part.is_empty() {
        return Err(
            "the path has an empty segment (a doubled or trailing /) — remove it".to_string(),
        );
    }
    if let Some(inner) = part.strip_prefix('{') {
        let Some(name) = inner.strip_suffix('}') else {
            return Err(format!(
                "the segment {part:?} opens a parameter without closing it — write {{name}}"
            ));
        };
        if !valid_param_name(name) {
            return Err(format!(
                "the parameter name {name:?} is not valid — use 1 to {MAX_PARAM_NAME} lower-case \
                 letters, digits and _, starting with a letter (names starting with _ are the \
                 kernel's)"
            ));
        }
        return Ok(Segment::Param(name.to_string()));
    }
    if part == "." || part == ".." {
        return Err(format!("the segment {part:?} is not allowed — use a name"));
    }
    // Only unreserved characters: a literal compares equal to a request segment without any
    // question of encoding (`%2F`, `%20`, case of hex digits).
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(format!(
            "the segment {part:?} may hold only letters, digits, -, _, . and ~ (or be a {{param}})"
        ));
    }
    Ok(Segment::Literal(part.to_string()))
}

/// A parameter name: it becomes an input key, so it must not start with `_` (the kernel's
/// `_raw_body`, `_headers`, … would be overwritten by a path segment of the caller's choosing).
pub fn valid_param_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PARAM_NAME
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// The decoded segments after `/api/` of a request path as received (percent-encoded, no query);
/// `None` when the path is not under `/api/` or a segment is not valid UTF-8 once decoded.
pub fn request_segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("/api/")?;
    if rest.split('/').count() > MAX_SEGMENTS {
        return None;
    }
    rest.split('/').map(percent_decode).collect()
}

/// Percent-decodes a path segment (`+` stays `+`: it means a space only in a query).
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The kernel endpoint a pattern would shadow, if any (see [`KERNEL_ENDPOINTS`]).
pub fn shadowed_kernel_endpoint(p: &Pattern) -> Option<&'static str> {
    KERNEL_ENDPOINTS
        .iter()
        .map(|(_, path)| *path)
        .find(|path| Pattern::parse_kernel(path).is_some_and(|k| k.overlaps(p)))
}

impl Pattern {
    /// A kernel path (its parameter names may hold `_`).
    fn parse_kernel(path: &str) -> Option<Pattern> {
        let rest = path.strip_prefix("/api/")?;
        Some(Pattern {
            segments: rest
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(n) => Segment::Param(n.to_string()),
                        None => Segment::Literal(s.to_string()),
                    },
                )
                .collect(),
        })
    }
}
