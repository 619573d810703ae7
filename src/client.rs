//! The CLI's client of a running kernel: every command but `serve`, `image`, `doctor` and `token`
//! talks to the REST API, with the token from `RUMI_API_TOKEN` or `user_data/api_token` of the
//! home found as `config::find_home` says.

use crate::config::{self, HomeSource};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How long a request may take before the CLI gives up: a run's own deadline is at most 600 s
/// (and it may wait in the queue within it); anything else answers in well under a second.
const RUN_DEADLINE: Duration = Duration::from_secs(660);
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// The largest answer read: a run's result is capped by the kernel at `RUMI_MAX_RESPONSE_BYTES`
/// (4 MiB by default) and an audit page at 8 MiB, so only something that is not the kernel sends
/// more, and it must not make the CLI allocate without bound.
const MAX_REPLY_BYTES: usize = 64 << 20;

/// A client of the local API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    pub home: PathBuf,
    /// Set once the server proved it holds the token (see [`Client::verify`]).
    verified: tokio::sync::OnceCell<()>,
}

/// A refusal of the API: the status and its message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for ApiFailure {}

/// A whole answer: status, headers and the envelope.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Client {
    /// Finds the home, the address and the token; says where it looked when the token is missing.
    pub fn connect() -> Result<Client> {
        let (host, port) = config::api_address()?;
        let (home, source) = config::find_home()?;
        let token = crate::token::read(&rumi_actors::Layout::new(home.clone()).api_token())
            .ok_or_else(|| no_token(&home, source))?;
        Client::to(format!("http://{host}:{port}"), token, home)
    }

    /// A client of the kernel at `base` (`http://host:port`) with `token`.
    pub fn to(base: String, token: String, home: PathBuf) -> Result<Client> {
        // No proxy: the token must go to the kernel only, never through an `http_proxy` of the
        // environment (which reqwest would otherwise honour, even for 127.0.0.1).
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client {
            base,
            token,
            http,
            home,
            verified: tokio::sync::OnceCell::new(),
        })
    }

    /// Asks the server to prove it holds the token (`GET /api/health?challenge=`, no token sent)
    /// before the token goes anywhere: whatever took the kernel's port while the kernel was down
    /// learns nothing.
    async fn verify(&self) -> Result<()> {
        let mut raw = [0u8; 16];
        getrandom::getrandom(&mut raw).context("no randomness for a challenge")?;
        let challenge = hex::encode(raw);
        let resp = self
            .http
            .get(format!("{}/api/health?challenge={challenge}", self.base))
            .timeout(REQUEST_DEADLINE)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let bytes = read_capped(resp).await.unwrap_or_default();
        let health: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let given = health["data"]["proof"].as_str().unwrap_or("");
        if crate::token::proof_matches(&self.token, &challenge, given) {
            return Ok(());
        }
        bail!(
            "the server at {} did not prove that it holds this home's token, so the token was not \
             sent: it is another program, or a kernel of another home (check RUMI_API_PORT and \
             RUMI_HOME; `rumi doctor` shows both)",
            self.base
        )
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the kernel at {} ({}); is `rumi serve` running for the home {}?",
            self.base,
            transport_reason(e),
            self.home.display()
        )
    }

    /// Sends a request; a transport failure names the address tried.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Reply> {
        self.verified.get_or_try_init(|| self.verify()).await?;
        // An approval of pip dependencies downloads and installs before it answers.
        let slow = path.ends_with("/run")
            || (path.starts_with("/api/pip/requests/") && path.ends_with("/approve"));
        let deadline = if slow { RUN_DEADLINE } else { REQUEST_DEADLINE };
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(deadline)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = read_capped(resp).await.map_err(|why| {
            anyhow!(
                "the answer of {} ({status}) could not be read: {why}",
                self.base
            )
        })?;
        let body: Value = serde_json::from_slice(&bytes).with_context(|| {
            format!("the kernel at {} answered {status} without JSON", self.base)
        })?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a request and returns `data` of a successful envelope, else an [`ApiFailure`].
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let reply = self.request(method, path, body).await?;
        into_data(reply)
    }

    /// Posts `body` (a stream) as `content_type`, within `deadline`; answers `data`.
    pub async fn upload(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &str,
        len: u64,
        deadline: Duration,
    ) -> Result<Value> {
        self.verified.get_or_try_init(|| self.verify()).await?;
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(deadline)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = read_capped(resp).await.map_err(|why| {
            anyhow!(
                "the answer of {} ({status}) could not be read: {why}",
                self.base
            )
        })?;
        let body: Value = serde_json::from_slice(&bytes).with_context(|| {
            format!("the kernel at {} answered {status} without JSON", self.base)
        })?;
        into_data(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// GETs raw bytes (an endpoint that answers no envelope, like a skill artifact); a refusal
    /// (an envelope with `success: false`) becomes an error with its message.
    pub async fn get_raw(&self, path: &str) -> Result<Vec<u8>> {
        self.verified.get_or_try_init(|| self.verify()).await?;
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(REQUEST_DEADLINE)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = read_capped(resp).await.map_err(|why| {
            anyhow!(
                "the answer of {} ({status}) could not be read: {why}",
                self.base
            )
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        into_data(Reply {
            status,
            headers,
            body,
        })
        .map(|_| Vec::new())
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }
}

/// The body of `resp`, refused past [`MAX_REPLY_BYTES`].
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_reason(&e).to_string())?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(format!("it is larger than {} MiB", MAX_REPLY_BYTES >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `data` of a successful envelope, else the failure it describes.
pub fn into_data(reply: Reply) -> Result<Value> {
    let env = reply.body;
    if reply.status.is_success() && env["success"] == Value::Bool(true) {
        return Ok(env["data"].clone());
    }
    Err(ApiFailure {
        status: reply.status,
        message: env["error"]
            .as_str()
            .unwrap_or("the kernel refused without a message")
            .to_string(),
    }
    .into())
}

fn no_token(home: &std::path::Path, source: HomeSource) -> anyhow::Error {
    anyhow!(
        "no API token in {} (home {}, {}): start the kernel there once with `rumi serve`, \
         set RUMI_HOME to the kernel's home, or set RUMI_API_TOKEN",
        rumi_actors::Layout::new(home.to_path_buf())
            .api_token()
            .display(),
        home.display(),
        source.describe()
    )
}

fn transport_reason(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection refused"
    } else if e.is_timeout() {
        "no answer in time"
    } else {
        "the connection failed"
    }
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
