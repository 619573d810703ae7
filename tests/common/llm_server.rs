//! The scripted model server: an OpenAI-compatible (or Anthropic Messages) endpoint on 127.0.0.1
//! that answers **according to the requests it receives**, so tests and benches never need a live
//! model and the token counts follow what the runtime really sent.
//!
//! Included by `tests/*.rs` and `benches/*.rs` with `#[path = "…/llm_server.rs"] mod llm_server;`;
//! it depends on std and serde_json only.
//!
//! # The policy
//! * **Which conversation.** A request whose tool list is empty is a *reflect* call (the
//!   micro-reflect): it gets [`Policy::reflect_text`] as a text-only reply. A request whose tool list
//!   contains `done` is a *sub-agent* conversation, keyed by its first tool name (`fs_read`,
//!   `script_run`, `fs_write`) in [`Policy::agents`]. Any other request is the *supervisor*
//!   conversation ([`Policy::supervisor`]).
//! * **Which move.** Move `k` of the conversation's list, where `k` = the number of assistant
//!   messages with tool calls already in the request's history (a micro-reflect's text-only
//!   answer is not a move). Two concurrent runs each follow their own
//!   conversation; nothing depends on how many requests came before. Past the end of the list (or
//!   for an agent key with no list): a text-only reply `"done"`.
//! * **Conditional move.** [`Move::IfLastError`] looks at the last tool result in the request: if
//!   its JSON has `ok: false` and `error_type` equal to the given one, the `then` turn is played,
//!   else `otherwise`. [`Move::IfLastHas`] plays `then` when the last tool result's JSON has the
//!   given key, neither null nor false (a model that reads what it was told, e.g. a skill memory).
//! * **Tool call ids** are `call_<k>_<i>` (OpenAI) or `toolu_<k>_<i>` (Anthropic), `i` the call's
//!   index in the turn.
//! * **Usage** (when [`Policy::report_usage`]): `input = request body bytes / 4`,
//!   `output = reply body bytes / 4` (the reply measured without its usage object).
//! * **Faults** are the only counter-based part: [`Policy::faults`] `(n, status)` makes the n-th
//!   request (0-based, by arrival) answer `status` (429 with `Retry-After: 0`); the error body
//!   echoes the request's `Authorization` / `x-api-key` header, as a careless proxy might, so tests
//!   can prove the client scrubs the key.
//! * **Strict parsing.** A request that breaks the flavor's wire answers 400 with the reason (and
//!   [`Recorded::answered_status`] shows it): JSON body, model, messages shaped per flavor, tool
//!   results answering earlier tool call ids, tool names matching `^[A-Za-z0-9_-]{1,64}$`,
//!   `temperature: 0`; OpenAI: `seed` present; Anthropic: no `seed`, `max_tokens` present, roles
//!   alternating from the user, `anthropic-version` header present.
//! * [`Policy::delay`] is waited before every answer (time-budget tests).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which wire the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

/// One model turn the plan wants: tool calls (name, args) — or text only.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub text: Option<String>,
    pub calls: Vec<(String, Value)>,
}

impl Turn {
    /// A turn of tool calls.
    pub fn calls(calls: &[(&str, Value)]) -> Turn {
        Turn {
            text: None,
            calls: calls
                .iter()
                .map(|(n, a)| (n.to_string(), a.clone()))
                .collect(),
        }
    }
    /// A text-only turn.
    pub fn text(text: &str) -> Turn {
        Turn {
            text: Some(text.to_string()),
            calls: Vec::new(),
        }
    }
}

/// A step of a scripted conversation.
#[derive(Debug, Clone)]
pub enum Move {
    Turn(Turn),
    /// Choose by the last tool result in the request: if its JSON has ok:false and error_type == e.
    IfLastError {
        error_type: String,
        then: Turn,
        otherwise: Turn,
    },
    /// Choose by the last tool result in the request: if its JSON has `key` (not null or false).
    IfLastHas {
        key: String,
        then: Turn,
        otherwise: Turn,
    },
}

/// What the server plays (see the module doc).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Supervisor conversation: the move for assistant turn k is supervisor[k], where k = the number
    /// of assistant messages with tool calls already in the request's history. Past the end: a
    /// text-only "done".
    pub supervisor: Vec<Move>,
    /// Delegated sub-agent conversations (tool list containing `done`), keyed by the agent's first
    /// tool name ("fs_read" / "script_run" / "fs_write"), same indexing.
    pub agents: HashMap<String, Vec<Move>>,
    /// Tool-less requests (the micro-reflect) get this text.
    pub reflect_text: String,
    /// Faults by request arrival: [(0, 429), (1, 500)] → the 1st request answers 429 (with
    /// Retry-After: 0), the 2nd 500, then normal.
    pub faults: Vec<(usize, u16)>,
    /// false → no usage object (the runtime must estimate).
    pub report_usage: bool,
    /// Waited before each answer.
    pub delay: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            supervisor: Vec::new(),
            agents: HashMap::new(),
            reflect_text: "reflected".into(),
            faults: Vec::new(),
            report_usage: true,
            delay: Duration::ZERO,
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The parsed body (`Null` when it was not JSON).
    pub body: Value,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub path: String,
    pub answered_status: u16,
    /// The raw body's length in bytes.
    pub body_len: usize,
}

impl Recorded {
    fn is_openai(&self) -> bool {
        self.path.ends_with("/chat/completions")
    }

    /// A header's value (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The system prompt (OpenAI: the system message; Anthropic: `system`).
    pub fn system_prompt(&self) -> String {
        if self.is_openai() {
            self.messages()
                .iter()
                .find(|m| m["role"] == "system")
                .map(|m| text_of(&m["content"]))
                .unwrap_or_default()
        } else {
            text_of(&self.body["system"])
        }
    }

    /// The parsed JSON of each tool result in the request, in order (a non-JSON result is a string).
    pub fn tool_results(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for m in self.messages() {
            if self.is_openai() {
                if m["role"] == "tool" {
                    out.push(parse_result(&text_of(&m["content"])));
                }
            } else if let Some(blocks) = m["content"].as_array() {
                for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
                    out.push(parse_result(&text_of(&b["content"])));
                }
            }
        }
        out
    }

    /// The names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        tool_names(
            &self.body,
            if self.is_openai() {
                Flavor::OpenAi
            } else {
                Flavor::Anthropic
            },
        )
    }

    /// Whether this is a delegated sub-agent conversation (its tools include `done`).
    pub fn is_sub_agent(&self) -> bool {
        self.tool_names().iter().any(|n| n == "done")
    }

    /// The request body's size in bytes.
    pub fn input_bytes(&self) -> usize {
        self.body_len
    }

    /// The number of assistant messages with tool calls in the history (the move index).
    pub fn assistant_turns(&self) -> usize {
        self.messages().iter().filter(|m| is_tool_turn(m)).count()
    }

    fn messages(&self) -> Vec<Value> {
        self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// An assistant message that called tools (OpenAI `tool_calls`, Anthropic `tool_use` blocks):
/// the text-only answer of a micro-reflect is not a move of the plan.
fn is_tool_turn(m: &Value) -> bool {
    m["role"] == "assistant"
        && (m["tool_calls"].as_array().is_some_and(|c| !c.is_empty())
            || m["content"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_use")))
}

fn parse_result(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// A string, or the concatenated `text` of content blocks.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn tool_names(body: &Value, flavor: Flavor) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| match flavor {
                    Flavor::OpenAi => t["function"]["name"].as_str(),
                    Flavor::Anthropic => t["name"].as_str(),
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

struct Shared {
    flavor: Flavor,
    policy: Policy,
    arrivals: AtomicUsize,
    recorded: Mutex<Vec<Recorded>>,
    stop: AtomicBool,
}

/// The running server. Dropping it stops it.
pub struct ScriptedModel {
    shared: Arc<Shared>,
    port: u16,
    acceptor: Option<JoinHandle<()>>,
}

impl ScriptedModel {
    /// Listens on 127.0.0.1:0; a thread per connection, keep-alive.
    pub fn start(flavor: Flavor, policy: Policy) -> ScriptedModel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            flavor,
            policy,
            arrivals: AtomicUsize::new(0),
            recorded: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(stream, &s));
                }
            }
        });
        ScriptedModel {
            shared,
            port,
            acceptor: Some(acceptor),
        }
    }

    /// OpenAI: "http://127.0.0.1:P/v1"; Anthropic: "http://127.0.0.1:P".
    pub fn base_url(&self) -> String {
        match self.shared.flavor {
            Flavor::OpenAi => format!("http://127.0.0.1:{}/v1", self.port),
            Flavor::Anthropic => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Serves one connection until it closes or the server stops.
fn serve(mut stream: TcpStream, s: &Shared) {
    // Short read timeouts let an idle keep-alive connection notice the stop flag.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some((method, path, headers, body)) = read_request(&mut stream, &mut buf, s) else {
            return;
        };
        let (status, extra, reply) = answer(s, &method, &path, &headers, &body);
        let close = headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reason(status),
            reply.len()
        );
        for (n, v) in extra {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(if close {
            "connection: close\r\n\r\n"
        } else {
            "\r\n"
        });
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&reply).is_err() {
            return;
        }
        if close {
            return;
        }
    }
}

type Request = (String, String, Vec<(String, String)>, Vec<u8>);

/// Reads one request (head and Content-Length body); None when the connection ends or the server
/// stops.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, s: &Shared) -> Option<Request> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if s.stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return None;
    }
    buf.drain(..head_end + 4);
    while buf.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if s.stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let body: Vec<u8> = buf.drain(..len).collect();
    Some((method, path, headers, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Decides the answer to one request and records it.
fn answer(
    s: &Shared,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let arrival = s.arrivals.fetch_add(1, Ordering::SeqCst);
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (status, extra, reply) = decide(s, arrival, method, path, headers, body, &parsed);
    // Recorded before the delay, so a client that gave up still finds its request here.
    s.recorded.lock().unwrap().push(Recorded {
        body: parsed,
        headers: headers.to_vec(),
        path: path.to_string(),
        answered_status: status,
        body_len: body.len(),
    });
    if !s.policy.delay.is_zero() {
        // In slices, so a stopped server does not hold a thread for the whole delay.
        let until = Instant::now() + s.policy.delay;
        while Instant::now() < until && !s.stop.load(Ordering::SeqCst) {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
    }
    (status, extra, reply)
}

fn error_body(message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        .to_string()
        .into_bytes()
}

fn decide(
    s: &Shared,
    arrival: usize,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    parsed: &Value,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let expected = match s.flavor {
        Flavor::OpenAi => "/v1/chat/completions",
        Flavor::Anthropic => "/v1/messages",
    };
    if method != "POST" || path != expected {
        return (
            404,
            vec![],
            error_body(&format!(
                "no route {method} {path}; expected POST {expected}"
            )),
        );
    }
    if let Some(&(_, status)) = s.policy.faults.iter().find(|(n, _)| *n == arrival) {
        // Echoes the credentials, as a careless proxy might: the client must scrub them.
        let echo: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n == "authorization" || n == "x-api-key")
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let extra = if status == 429 {
            vec![("retry-after".to_string(), "0".to_string())]
        } else {
            vec![]
        };
        return (
            status,
            extra,
            error_body(&format!(
                "scripted fault {status}; you sent {}",
                echo.join(", ")
            )),
        );
    }
    if let Err(why) = check(s.flavor, headers, parsed, body) {
        return (400, vec![], error_body(&why));
    }
    let names = tool_names(parsed, s.flavor);
    let k = parsed["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| is_tool_turn(m)).count())
        .unwrap_or(0);
    let turn = if names.is_empty() {
        Turn::text(&s.policy.reflect_text)
    } else {
        let moves = if names.iter().any(|n| n == "done") {
            s.policy.agents.get(&names[0])
        } else {
            Some(&s.policy.supervisor)
        };
        match moves.and_then(|m| m.get(k)) {
            None => Turn::text("done"),
            Some(Move::Turn(t)) => t.clone(),
            Some(Move::IfLastError {
                error_type,
                then,
                otherwise,
            }) => {
                let last = last_tool_result(s.flavor, parsed);
                let hit = last.as_ref().is_some_and(|r| {
                    r["ok"] == Value::Bool(false) && r["error_type"].as_str() == Some(error_type)
                });
                if hit {
                    then.clone()
                } else {
                    otherwise.clone()
                }
            }
            Some(Move::IfLastHas {
                key,
                then,
                otherwise,
            }) => {
                let last = last_tool_result(s.flavor, parsed);
                let set = |v: &Value| !(v.is_null() || *v == Value::Bool(false));
                if last.is_some_and(|r| set(&r[key.as_str()])) {
                    then.clone()
                } else {
                    otherwise.clone()
                }
            }
        }
    };
    let mut reply = render(s.flavor, k, &turn, parsed);
    if s.policy.report_usage {
        let output = reply.to_string().len() / 4;
        let input = body.len() / 4;
        reply["usage"] = match s.flavor {
            Flavor::OpenAi => json!({"prompt_tokens": input, "completion_tokens": output,
                                     "total_tokens": input + output}),
            Flavor::Anthropic => json!({"input_tokens": input, "output_tokens": output}),
        };
    }
    (200, vec![], reply.to_string().into_bytes())
}

fn last_tool_result(flavor: Flavor, body: &Value) -> Option<Value> {
    let r = Recorded {
        body: body.clone(),
        headers: vec![],
        path: match flavor {
            Flavor::OpenAi => "/v1/chat/completions".into(),
            Flavor::Anthropic => "/v1/messages".into(),
        },
        answered_status: 200,
        body_len: 0,
    };
    r.tool_results().pop()
}

/// The reply body for a turn (without usage).
fn render(flavor: Flavor, k: usize, turn: &Turn, req: &Value) -> Value {
    let model = req["model"].clone();
    match flavor {
        Flavor::OpenAi => {
            let mut message = json!({"role": "assistant", "content": turn.text});
            if !turn.calls.is_empty() {
                message["tool_calls"] = turn
                    .calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, args))| {
                        json!({"id": format!("call_{k}_{i}"), "type": "function",
                               "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
            }
            let finish = if turn.calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            json!({"id": format!("chatcmpl-{k}"), "object": "chat.completion", "model": model,
                   "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
        }
        Flavor::Anthropic => {
            let mut content = Vec::new();
            if let Some(t) = &turn.text {
                content.push(json!({"type": "text", "text": t}));
            }
            for (i, (name, args)) in turn.calls.iter().enumerate() {
                content.push(json!({"type": "tool_use", "id": format!("toolu_{k}_{i}"),
                                    "name": name, "input": args}));
            }
            let stop = if turn.calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            json!({"id": format!("msg_{k}"), "type": "message", "role": "assistant", "model": model,
                   "content": content, "stop_reason": stop})
        }
    }
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Strict per-flavor checks; Err is the 400's reason.
fn check(
    flavor: Flavor,
    headers: &[(String, String)],
    body: &Value,
    raw: &[u8],
) -> Result<(), String> {
    if serde_json::from_slice::<Value>(raw).is_err() {
        return Err("the body is not JSON".into());
    }
    if !body.is_object() {
        return Err("the body must be a JSON object".into());
    }
    if body["model"].as_str().is_none_or(str::is_empty) {
        return Err("model: a non-empty string is required".into());
    }
    if body["temperature"].as_f64() != Some(0.0) {
        return Err(format!(
            "temperature must be 0, got {}",
            body["temperature"]
        ));
    }
    if !body["max_tokens"].is_null() && body["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        return Err("max_tokens must be a positive integer".into());
    }
    let messages = body["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("messages: a non-empty array is required")?;
    if let Some(tools) = body.get("tools") {
        let tools = tools
            .as_array()
            .filter(|t| !t.is_empty())
            .ok_or("tools: when present, a non-empty array")?;
        for (i, t) in tools.iter().enumerate() {
            let (name, schema) = match flavor {
                Flavor::OpenAi => {
                    if t["type"] != "function" {
                        return Err(format!("tools[{i}].type must be \"function\""));
                    }
                    (&t["function"]["name"], &t["function"]["parameters"])
                }
                Flavor::Anthropic => (&t["name"], &t["input_schema"]),
            };
            let name = name.as_str().ok_or(format!("tools[{i}]: name missing"))?;
            if !valid_tool_name(name) {
                return Err(format!(
                    "tools[{i}]: name {name:?} does not match ^[A-Za-z0-9_-]{{1,64}}$"
                ));
            }
            if !schema.is_object() {
                return Err(format!("tools[{i}] ({name}): the schema must be an object"));
            }
        }
    }
    match flavor {
        Flavor::OpenAi => check_openai(body, messages),
        Flavor::Anthropic => check_anthropic(headers, body, messages),
    }
}

fn check_openai(body: &Value, messages: &[Value]) -> Result<(), String> {
    if !body["seed"].is_u64() && !body["seed"].is_i64() {
        return Err("seed: an integer is required (one per run)".into());
    }
    let mut open_ids: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m["role"].as_str() {
            Some("system") | Some("user") => {
                if !m["content"].is_string() {
                    return Err(format!("messages[{i}].content must be a string"));
                }
            }
            Some("assistant") => {
                if !m["content"].is_string() && !m["content"].is_null() {
                    return Err(format!("messages[{i}].content must be a string or null"));
                }
                if let Some(calls) = m.get("tool_calls") {
                    let calls = calls
                        .as_array()
                        .ok_or(format!("messages[{i}].tool_calls must be an array"))?;
                    for c in calls {
                        let id = c["id"]
                            .as_str()
                            .ok_or(format!("messages[{i}]: a tool call has no id"))?;
                        if c["type"] != "function" || !c["function"]["name"].is_string() {
                            return Err(format!(
                                "messages[{i}]: tool call {id} needs type function and a name"
                            ));
                        }
                        if !c["function"]["arguments"].is_string() {
                            return Err(format!(
                                "messages[{i}]: tool call {id}: function.arguments must be a JSON string"
                            ));
                        }
                        open_ids.push(id.to_string());
                    }
                }
            }
            Some("tool") => {
                let id = m["tool_call_id"]
                    .as_str()
                    .ok_or(format!("messages[{i}]: tool_call_id missing"))?;
                if !open_ids.iter().any(|o| o == id) {
                    return Err(format!(
                        "messages[{i}]: tool_call_id {id:?} answers no earlier tool call"
                    ));
                }
                if !m["content"].is_string() {
                    return Err(format!("messages[{i}].content must be a string"));
                }
            }
            other => {
                return Err(format!(
                    "messages[{i}].role {other:?} is not system/user/assistant/tool"
                ))
            }
        }
    }
    Ok(())
}

fn check_anthropic(
    headers: &[(String, String)],
    body: &Value,
    messages: &[Value],
) -> Result<(), String> {
    if !headers.iter().any(|(n, _)| n == "anthropic-version") {
        return Err("the anthropic-version header is required".into());
    }
    if body.get("seed").is_some() {
        return Err("seed: the Messages API has no such field".into());
    }
    if !body["max_tokens"].is_u64() {
        return Err("max_tokens is required".into());
    }
    if !body["system"].is_null() && !body["system"].is_string() && !body["system"].is_array() {
        return Err("system must be a string or text blocks".into());
    }
    let mut previous_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err(format!(
                "messages[{i}].role must be {expected:?}: roles alternate, starting with user"
            ));
        }
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(_) => vec![],
            Value::Array(b) if !b.is_empty() => b.clone(),
            _ => {
                return Err(format!(
                    "messages[{i}].content must be a string or a non-empty array"
                ))
            }
        };
        let mut uses = Vec::new();
        let mut results = Vec::new();
        for b in &blocks {
            match (role, b["type"].as_str()) {
                (_, Some("text")) => {
                    if b["text"].as_str().is_none_or(str::is_empty) {
                        return Err(format!(
                            "messages[{i}]: text content blocks must be non-empty"
                        ));
                    }
                }
                ("assistant", Some("tool_use")) => {
                    let id = b["id"]
                        .as_str()
                        .ok_or(format!("messages[{i}]: tool_use without id"))?;
                    if !b["input"].is_object() || !b["name"].is_string() {
                        return Err(format!(
                            "messages[{i}]: tool_use {id} needs a name and an object input"
                        ));
                    }
                    uses.push(id.to_string());
                }
                ("user", Some("tool_result")) => {
                    let id = b["tool_use_id"]
                        .as_str()
                        .ok_or(format!("messages[{i}]: tool_result without tool_use_id"))?;
                    if !previous_uses.iter().any(|u| u == id) {
                        return Err(format!("messages[{i}]: tool_result {id:?} answers no tool_use of the previous turn"));
                    }
                    results.push(id.to_string());
                }
                (_, t) => {
                    return Err(format!(
                        "messages[{i}]: content block type {t:?} not allowed for {role}"
                    ))
                }
            }
        }
        if role == "user" {
            if let Some(missing) = previous_uses.iter().find(|u| !results.contains(u)) {
                return Err(format!(
                    "messages[{i}]: tool_use {missing:?} has no tool_result in this message"
                ));
            }
        }
        previous_uses = uses;
    }
    Ok(())
}
