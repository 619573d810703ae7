//! Parsing one pack's `routes.json {routes: [{method, path, flow_id, description, timeout}]}`.
//! The file is hostile input: every size is capped, every field checked, and a route that is
//! wrong is refused alone with a reason that says what to do; a file that is not valid JSON (or
//! too large) is refused whole and changes nothing else.

use super::pattern::{Method, Pattern};
use super::{Refusal, Route, RoutesFile};
use crate::flow::valid_flow_id;
use serde_json::Value;

/// Largest `routes.json`, bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Most routes one pack declares.
pub const MAX_ROUTES_PER_PACK: usize = 100;
/// Longest description, characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// The range of a route's `timeout`, seconds (the run request's range).
pub const TIMEOUT_RANGE: (f64, f64) = (1.0, 600.0);
/// How much of a path or method as written a refusal repeats.
const CLIP: usize = 300;

/// The routes a file declares that are well formed, and those refused.
#[derive(Debug, Default)]
pub struct Parsed {
    pub routes: Vec<Route>,
    pub refused: Vec<Refusal>,
}

/// Parses one file (see the module docs).
pub fn parse(f: &RoutesFile) -> Parsed {
    let mut out = Parsed::default();
    let whole = |reason: String| Refusal {
        pack_id: f.pack_id.clone(),
        method: String::new(),
        path: String::new(),
        reason: format!("{}: {reason}", f.file),
    };
    let bytes = match &f.bytes {
        Ok(b) => b,
        Err(why) => {
            out.refused.push(whole(why.clone()));
            return out;
        }
    };
    if bytes.len() > MAX_FILE_BYTES {
        out.refused.push(whole(format!(
            "the file is {} bytes; the limit is {MAX_FILE_BYTES} — declare fewer routes",
            bytes.len()
        )));
        return out;
    }
    // serde_json refuses nesting past 128 levels, so a deep file cannot exhaust the stack.
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            out.refused.push(whole(format!(
                "not valid JSON ({e}) — no route of this pack is loaded until it is fixed"
            )));
            return out;
        }
    };
    let Some(list) = doc.get("routes").and_then(Value::as_array) else {
        out.refused.push(whole(
            "the file must be an object with a \"routes\" array: {\"routes\": [{\"method\", \
             \"path\", \"flow_id\"}]}"
                .to_string(),
        ));
        return out;
    };
    if list.len() > MAX_ROUTES_PER_PACK {
        out.refused.push(whole(format!(
            "the file declares {} routes; only the first {MAX_ROUTES_PER_PACK} are read — \
             declare fewer",
            list.len()
        )));
    }
    for item in list.iter().take(MAX_ROUTES_PER_PACK) {
        match route(&f.pack_id, item) {
            Ok(r) => out.routes.push(r),
            Err(r) => out.refused.push(r),
        }
    }
    out
}

fn clip(s: &str) -> String {
    s.chars().take(CLIP).collect()
}

/// One route entry, checked.
fn route(pack_id: &str, item: &Value) -> Result<Route, Refusal> {
    let text = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .map(clip)
            .unwrap_or_default()
    };
    let refuse = |reason: String| Refusal {
        pack_id: pack_id.to_string(),
        method: text("method"),
        path: text("path"),
        reason,
    };
    let Some(obj) = item.as_object() else {
        return Err(refuse(
            "a route must be an object {method, path, flow_id, description, timeout}".into(),
        ));
    };
    if let Some(k) = obj.keys().find(|k| {
        !matches!(
            k.as_str(),
            "method" | "path" | "flow_id" | "description" | "timeout"
        )
    }) {
        return Err(refuse(format!(
            "unknown key {:?} — a route has only method, path, flow_id, description and timeout",
            clip(k)
        )));
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => Method::parse(m)
            .ok_or_else(|| refuse("method must be one of GET, POST, PUT, DELETE, PATCH".into()))?,
        _ => {
            return Err(refuse(
                "method is missing — write one of GET, POST, PUT, DELETE, PATCH".into(),
            ))
        }
    };
    let path = match obj.get("path") {
        Some(Value::String(p)) => p.clone(),
        _ => return Err(refuse("path is missing — write a path under /api/".into())),
    };
    let pattern = Pattern::parse(&path).map_err(refuse)?;
    let flow_id = match obj.get("flow_id") {
        Some(Value::String(id)) if valid_flow_id(id) => id.clone(),
        Some(Value::String(_)) => {
            return Err(refuse(
                "flow_id is not a valid flow id (1 to 128 letters, digits, _ . : -)".into(),
            ))
        }
        _ => {
            return Err(refuse(
                "flow_id is missing — name the flow the route runs".into(),
            ))
        }
    };
    let description = match obj.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION_CHARS => Some(d.clone()),
        Some(Value::String(_)) => {
            return Err(refuse(format!(
                "description is longer than {MAX_DESCRIPTION_CHARS} characters — shorten it"
            )))
        }
        Some(_) => return Err(refuse("description must be a string".into())),
    };
    let (lo, hi) = TIMEOUT_RANGE;
    let timeout = match obj.get("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if (lo..=hi).contains(&t) => Some(t),
            _ => {
                return Err(refuse(format!(
                    "timeout must be a number of seconds from {lo} to {hi}"
                )))
            }
        },
        Some(_) => {
            return Err(refuse(format!(
                "timeout must be a number of seconds from {lo} to {hi}"
            )))
        }
    };
    Ok(Route {
        method,
        path,
        pattern,
        flow_id,
        pack_id: pack_id.to_string(),
        description,
        timeout,
    })
}
