//! The SkillRuntime's model providers: one [`LlmClient`] per run speaks to an OpenAI-compatible Chat
//! Completions endpoint ([`openai`]), the Anthropic Messages API ([`anthropic`]) or a recorded file
//! ([`replay`]), behind one request/response shape ([`ChatRequest`] → [`ChatResponse`]).
//!
//! The Supervisor and its Sub Agents call [`LlmClient::chat`] once per model turn. The client owns
//! what every provider needs the same way: `temperature: 0`, retries of 429/5xx and connection errors
//! with exponential backoff (Retry-After honoured) that never outlive the caller's deadline, a per-call
//! timeout, caps on what a reply may allocate (8 MiB body, 32 tool calls), and a usage estimate when
//! the provider reports none. Settings come from [`load_config`] (environment over `llm.json`).
//!
//! The API key is a [`SecretValue`]: it goes into one request header and nowhere else. Every error the
//! client returns is scrubbed of it (a proxy or a misconfigured server may echo the header back).

pub mod anthropic;
pub mod openai;
pub mod replay;

use crate::capability::secrets::SecretValue;
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// A tool offered to the model (the domain's list of §14).
pub use rumi_domain::skill::tools::ToolSpec;

/// Which wire the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, LM Studio…).
    OpenAi,
    /// The Anthropic Messages API.
    Anthropic,
    /// A recorded exchange played back in order (demos, tests); see [`replay`].
    Replay,
}

impl Provider {
    fn parse(s: &str) -> Option<Provider> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Some(Provider::OpenAi),
            "anthropic" => Some(Provider::Anthropic),
            "replay" => Some(Provider::Replay),
            _ => None,
        }
    }
}

/// Default per-attempt timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// Largest `llm.json` read.
pub const MAX_SETTINGS_BYTES: u64 = 64 * 1024;
/// Largest reply body read from a provider; a bigger one is refused (streamed and counted, never
/// trusting Content-Length).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;
/// Most tool calls accepted in one model turn.
pub const MAX_TOOL_CALLS: usize = 32;
/// Longest provider error text kept in [`LlmError::Http`].
pub const MAX_ERROR_CHARS: usize = 512;
/// Longest raw (unparsable) tool-call arguments kept.
pub const MAX_RAW_ARGUMENTS: usize = 4 * 1024;

/// How to reach the model of a run. Debug prints the key as `[redacted]`.
#[derive(Debug)]
pub struct LlmConfig {
    pub provider: Provider,
    /// OpenAI: the URL ending in `/v1`; Anthropic: the host (requests go to `<base>/v1/messages`).
    /// Stored without a trailing `/`.
    pub base_url: String,
    pub model: String,
    /// Redacted in Debug, zeroized on drop; never logged or serialized.
    pub api_key: Option<SecretValue>,
    /// The recorded exchange, for [`Provider::Replay`].
    pub replay_file: Option<PathBuf>,
    /// Per-attempt timeout (each attempt also stops at the caller's deadline).
    pub call_timeout: Duration,
    /// Retries after the first attempt (429, 5xx, connection errors, per-call timeouts).
    pub max_retries: u32,
}

impl Clone for LlmConfig {
    /// A copy for another run's client (the key is copied into a new zeroized-on-drop value).
    fn clone(&self) -> LlmConfig {
        LlmConfig {
            provider: self.provider,
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            api_key: self
                .api_key
                .as_ref()
                .map(|k| SecretValue::new(k.expose().to_string())),
            replay_file: self.replay_file.clone(),
            call_timeout: self.call_timeout,
            max_retries: self.max_retries,
        }
    }
}

/// The answer when no model is configured (a run fails at once with it).
pub const NOT_CONFIGURED: &str = "no model configured: set RUMI_LLM_PROVIDER (openai|anthropic|replay), \
RUMI_LLM_BASE_URL (OpenAI-compatible: the URL ending in /v1, e.g. http://127.0.0.1:11434/v1; Anthropic: \
https://api.anthropic.com), RUMI_LLM_MODEL and RUMI_LLM_API_KEY, or write user_data/settings/llm.json like \
{\"provider\": \"openai\", \"base_url\": \"https://api.openai.com/v1\", \"model\": \"gpt-4o-mini\", \
\"api_key_secret\": \"OPENAI_API_KEY\"} (api_key_secret names a key in the secrets store); to play a recorded \
exchange instead, set RUMI_LLM_PROVIDER=replay and RUMI_LLM_REPLAY=<file.json>";

const ENV_PROVIDER: &str = "RUMI_LLM_PROVIDER";
const ENV_BASE_URL: &str = "RUMI_LLM_BASE_URL";
const ENV_MODEL: &str = "RUMI_LLM_MODEL";
const ENV_API_KEY: &str = "RUMI_LLM_API_KEY";
const ENV_REPLAY: &str = "RUMI_LLM_REPLAY";
const SETTINGS_FILE: &str = "llm.json";

/// The settings file's fields (all optional; the environment fills or overrides each).
#[derive(Default)]
struct FileSettings {
    provider: Option<String>,
    base_url: Option<String>,
    model: Option<String>,
    api_key_secret: Option<String>,
}

/// Where the settings come from (§12): env `RUMI_LLM_PROVIDER` / `RUMI_LLM_BASE_URL` /
/// `RUMI_LLM_MODEL` / `RUMI_LLM_API_KEY` (env wins key by key) over `<settings_dir>/llm.json`
/// `{provider, base_url, model, api_key_secret}` (a secret's KEY, read through `secret(name)`);
/// `RUMI_LLM_REPLAY` for the replay file. `Ok(None)` = nothing configured. `Err` = configured but wrong
/// (unknown provider, base_url not http(s), llm.json unparsable/too big (64 KiB), api_key_secret names
/// a missing secret, no model); the message says what to fix and never contains the key.
///
/// Empty environment values count as unset. Without a base_url, OpenAI defaults to
/// `https://api.openai.com/v1` and Anthropic to `https://api.anthropic.com`. Without a provider but
/// with `RUMI_LLM_REPLAY`, the provider is `replay`.
pub fn load_config(
    env: &dyn Fn(&str) -> Option<String>,
    settings_dir: &Path,
    secret: &dyn Fn(&str) -> Option<SecretValue>,
) -> Result<Option<LlmConfig>, String> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let file = read_settings(&settings_dir.join(SETTINGS_FILE))?;
    let file_present = file.is_some();
    let file = file.unwrap_or_default();

    let env_provider = env(ENV_PROVIDER);
    let env_base = env(ENV_BASE_URL);
    let env_model = env(ENV_MODEL);
    let env_key = env(ENV_API_KEY);
    let env_replay = env(ENV_REPLAY);
    let anything = file_present
        || env_provider.is_some()
        || env_base.is_some()
        || env_model.is_some()
        || env_key.is_some()
        || env_replay.is_some();
    if !anything {
        return Ok(None);
    }

    let (provider_text, provider_source) = match (&env_provider, &file.provider) {
        (Some(p), _) => (Some(p.clone()), ENV_PROVIDER),
        (None, Some(p)) => (Some(p.clone()), "\"provider\" in llm.json"),
        (None, None) => (None, ""),
    };
    let provider = match provider_text {
        Some(p) => Provider::parse(&p).ok_or_else(|| {
            format!(
                "{provider_source} must be openai, anthropic or replay (got an unknown provider)"
            )
        })?,
        None if env_replay.is_some() => Provider::Replay,
        None => {
            return Err(format!(
                "a model is partly configured but the provider is missing: set {ENV_PROVIDER} \
                 (openai|anthropic|replay) or \"provider\" in user_data/settings/llm.json"
            ))
        }
    };

    if provider == Provider::Replay {
        let Some(replay_path) = env_replay else {
            return Err(format!(
                "the replay provider needs a recorded exchange: set {ENV_REPLAY}=<file.json>"
            ));
        };
        return Ok(Some(LlmConfig {
            provider,
            base_url: String::new(),
            model: env_model.or(file.model).unwrap_or_else(|| "replay".into()),
            api_key: None,
            replay_file: Some(PathBuf::from(replay_path)),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
        }));
    }

    let (base_raw, base_source) = match (env_base, file.base_url) {
        (Some(b), _) => (b, ENV_BASE_URL),
        (None, Some(b)) => (b, "\"base_url\" in llm.json"),
        (None, None) => match provider {
            Provider::Anthropic => ("https://api.anthropic.com".to_string(), ""),
            _ => ("https://api.openai.com/v1".to_string(), ""),
        },
    };
    let base_url = check_base_url(&base_raw).map_err(|why| {
        format!("{base_source} must be an http(s) URL such as http://127.0.0.1:8080/v1 ({why})")
    })?;

    let model = env_model.or(file.model).ok_or_else(|| {
        format!("no model name: set {ENV_MODEL} or \"model\" in user_data/settings/llm.json")
    })?;
    let model = model.trim().to_string();
    if model.len() > 256 || model.chars().any(char::is_control) {
        return Err(format!(
            "the model name must be at most 256 printable characters; fix {ENV_MODEL} or \"model\" in llm.json"
        ));
    }

    let api_key = match (env_key, file.api_key_secret) {
        (Some(k), _) => Some(SecretValue::new(k)),
        (None, Some(name)) => Some(secret(&name).ok_or_else(|| {
            format!(
                "llm.json's api_key_secret names the secret {name:?}, which is not in the secrets store: \
                 set it (rumi secret set {name}) or fix api_key_secret"
            )
        })?),
        (None, None) => None,
    };

    Ok(Some(LlmConfig {
        provider,
        base_url,
        model,
        api_key,
        replay_file: None,
        call_timeout: DEFAULT_CALL_TIMEOUT,
        max_retries: DEFAULT_MAX_RETRIES,
    }))
}

/// Reads `llm.json` if it exists: at most 64 KiB, a JSON object of string fields.
fn read_settings(path: &Path) -> Result<Option<FileSettings>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read user_data/settings/llm.json ({})",
                e.kind()
            ))
        }
    };
    let mut bytes = Vec::new();
    // Read one byte past the cap instead of trusting the file's size (it may grow while read).
    file.take(MAX_SETTINGS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read user_data/settings/llm.json ({})", e.kind()))?;
    if bytes.len() as u64 > MAX_SETTINGS_BYTES {
        return Err(
            "user_data/settings/llm.json is larger than 64 KiB; it holds four short fields".into(),
        );
    }
    // Parsed as a Value first so no serde message can quote a field's value back (a key pasted into
    // the wrong field must not reach an error).
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "user_data/settings/llm.json is not valid JSON (line {}, column {}); expected \
             {{\"provider\", \"base_url\", \"model\", \"api_key_secret\"}}",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err("user_data/settings/llm.json must be a JSON object {provider, base_url, model, api_key_secret}".into());
    };
    let mut out = FileSettings::default();
    for (k, v) in map {
        let slot = match k.as_str() {
            "provider" => &mut out.provider,
            "base_url" => &mut out.base_url,
            "model" => &mut out.model,
            "api_key_secret" => &mut out.api_key_secret,
            "api_key" => {
                return Err("user_data/settings/llm.json must not hold the key itself: store it with \
                            `rumi secret set <NAME>` and put \"api_key_secret\": \"<NAME>\" instead"
                    .into())
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(format!(
                    "user_data/settings/llm.json has an unknown field {shown:?}; the fields are provider, \
                     base_url, model, api_key_secret"
                ));
            }
        };
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) if s.trim().is_empty() => {}
            serde_json::Value::String(s) => *slot = Some(s),
            _ => {
                return Err(format!(
                    "user_data/settings/llm.json: {k:?} must be a string"
                ))
            }
        }
    }
    Ok(Some(out))
}

/// An http(s) URL with a host, no query or fragment; returned without a trailing `/`.
fn check_base_url(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw).map_err(|_| "not a URL")?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("the scheme is not http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("no query or fragment allowed");
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The parsed JSON object; when the model sent unparsable (or non-object) arguments,
    /// `Value::String(raw)` capped at 4 KiB, so the runtime can answer `invalid_arguments`.
    pub arguments: serde_json::Value,
}

/// One message of the conversation after the system prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    User(String),
    Assistant {
        text: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    ToolResult {
        call_id: String,
        name: String,
        /// JSON text.
        content: String,
    },
}

/// One model turn's request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<ChatMessage>,
    /// May be empty: a tool-less call (the micro-reflect).
    pub tools: Vec<ToolSpec>,
    /// OpenAI only; Anthropic sends none (§15).
    pub seed: Option<u64>,
    pub max_tokens: u32,
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// The local estimate when a provider reports none: bytes/4 of what was sent and received.
    pub fn estimate(request_bytes: usize, reply_bytes: usize) -> Usage {
        Usage {
            input_tokens: (request_bytes / 4) as u64,
            output_tokens: (reply_bytes / 4) as u64,
        }
    }
}

/// One model turn's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// True when the provider gave no usage: [`Usage::estimate`] of request and reply.
    pub usage_estimated: bool,
}

/// Why a model call failed. No variant ever carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model call ran out of time (the run's time budget or the call timeout)")]
    Timeout,
    #[error("the model endpoint answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("the model's reply could not be used: {0}")]
    Protocol(String),
    #[error("cannot reach the model endpoint: {0}")]
    Transport(String),
    #[error("the recorded exchange has no more turns (the run asked for more model turns than were recorded)")]
    ReplayExhausted,
}

/// What one HTTP attempt ended with, before the retry decision.
enum Attempt {
    /// 2xx: the reply body.
    Done(Vec<u8>),
    /// Worth another try (429, 5xx, connection error); `retry_after` from the header.
    Retry {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    /// Final (4xx other than 429, a reply too big…).
    Fail(LlmError),
}

/// First wait between attempts; doubles each retry up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Bytes of an error reply read (the message keeps 512 chars of it).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A model client. One per run: the replay provider keeps its position in it.
pub struct LlmClient {
    config: LlmConfig,
    http: reqwest::Client,
    replay: Option<replay::Replay>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("provider", &self.config.provider)
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .field(
                "api_key",
                &self.config.api_key.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl LlmClient {
    /// Builds the client; for the replay provider, reads and checks the recorded file.
    pub fn new(config: LlmConfig) -> Result<LlmClient, String> {
        if let Some(key) = &config.api_key {
            // A key that cannot be a header value would fail every call with a message that may
            // quote it; refuse it here, without quoting it.
            if reqwest::header::HeaderValue::from_str(key.expose()).is_err() {
                return Err(
                    "the API key contains characters not allowed in an HTTP header (a newline?): \
                            set RUMI_LLM_API_KEY or the secret again"
                        .into(),
                );
            }
        }
        let replay = match config.provider {
            Provider::Replay => {
                let path = config.replay_file.as_deref().ok_or_else(|| {
                    "the replay provider needs RUMI_LLM_REPLAY=<file.json>".to_string()
                })?;
                Some(replay::Replay::load(path)?)
            }
            _ => None,
        };
        let http = reqwest::Client::builder()
            // A redirect would carry the key's header to wherever the endpoint points; a model API
            // never needs one.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(LlmClient {
            config,
            http,
            replay,
        })
    }

    pub fn provider(&self) -> Provider {
        self.config.provider
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// One model turn. temperature 0 always; retries 429 and 5xx (and connection errors) with
    /// exponential backoff (honour Retry-After up to the deadline), never past `deadline`; each
    /// attempt times out at min(call_timeout, deadline). Dropping the future cancels the request
    /// (the BudgetGuard's time budget relies on it).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        self.chat_inner(req, deadline)
            .await
            .map_err(|e| self.scrub_error(e))
    }

    async fn chat_inner(
        &self,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        if let Some(replay) = &self.replay {
            return replay.next(req);
        }
        let (url, body) = match self.config.provider {
            Provider::Anthropic => (
                format!("{}/v1/messages", self.config.base_url),
                anthropic::request_body(&self.config.model, req),
            ),
            _ => (
                format!("{}/chat/completions", self.config.base_url),
                openai::request_body(&self.config.model, req),
            ),
        };
        let body = serde_json::to_vec(&body).map_err(|e| LlmError::Protocol(e.to_string()))?;
        let mut retries = 0u32;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(LlmError::Timeout);
            }
            let attempt_deadline = (now + self.config.call_timeout).min(deadline);
            let outcome =
                match tokio::time::timeout_at(attempt_deadline, self.attempt(&url, &body)).await {
                    Ok(outcome) => outcome,
                    Err(_) if attempt_deadline >= deadline => return Err(LlmError::Timeout),
                    // The call timeout passed but the run has time left: a hung server is worth
                    // another try like a 5xx.
                    Err(_) => Attempt::Retry {
                        error: LlmError::Timeout,
                        retry_after: None,
                    },
                };
            let (error, retry_after) = match outcome {
                Attempt::Done(reply) => {
                    return match self.config.provider {
                        Provider::Anthropic => anthropic::parse_reply(&reply, body.len()),
                        _ => openai::parse_reply(&reply, body.len()),
                    }
                }
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            if retries >= self.config.max_retries {
                return Err(error);
            }
            let backoff = BASE_BACKOFF
                .saturating_mul(1u32 << retries.min(16))
                .min(MAX_BACKOFF);
            let wait = retry_after.unwrap_or(backoff);
            let wake = Instant::now() + wait;
            if wake >= deadline {
                // Waiting would outlive the run's budget: the last error says more than Timeout.
                return Err(error);
            }
            tracing::debug!(retry = retries + 1, wait_ms = wait.as_millis() as u64, error = %self.scrub(&error.to_string()), "model call retried");
            tokio::time::sleep_until(wake).await;
            retries += 1;
        }
    }

    /// One HTTP exchange; the caller bounds it in time.
    async fn attempt(&self, url: &str, body: &[u8]) -> Attempt {
        let mut rb = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        match self.config.provider {
            Provider::Anthropic => {
                rb = rb.header("anthropic-version", "2023-06-01");
                if let Some(key) = &self.config.api_key {
                    rb = rb.header("x-api-key", sensitive(key.expose()));
                }
            }
            _ => {
                if let Some(key) = &self.config.api_key {
                    rb = rb.header(
                        reqwest::header::AUTHORIZATION,
                        sensitive(&format!("Bearer {}", key.expose())),
                    );
                }
            }
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: LlmError::Transport(describe(&e)),
                    retry_after: None,
                }
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let cap = if status.is_success() {
            MAX_REPLY_BYTES
        } else {
            MAX_ERROR_BODY
        };
        let (bytes, complete) = match read_capped(resp, cap).await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: LlmError::Transport(describe(&e)),
                    retry_after: None,
                }
            }
        };
        if status.is_success() {
            if !complete {
                return Attempt::Fail(LlmError::Protocol(format!(
                    "the reply is larger than {} MiB",
                    MAX_REPLY_BYTES / (1024 * 1024)
                )));
            }
            return Attempt::Done(bytes);
        }
        // Scrubbed before it is cut, so no prefix of the key survives at the cut.
        let text = self.scrub(&String::from_utf8_lossy(&bytes));
        let message: String = text.chars().take(MAX_ERROR_CHARS).collect();
        let error = LlmError::Http {
            status: status.as_u16(),
            message,
        };
        if status.as_u16() == 429 || status.is_server_error() {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Fail(error)
        }
    }

    /// The text with every occurrence of the key replaced.
    fn scrub(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
            _ => text.to_string(),
        }
    }

    fn scrub_error(&self, e: LlmError) -> LlmError {
        match e {
            LlmError::Http { status, message } => LlmError::Http {
                status,
                message: self.scrub(&message),
            },
            LlmError::Protocol(m) => LlmError::Protocol(self.scrub(&m)),
            LlmError::Transport(m) => LlmError::Transport(self.scrub(&m)),
            other => other,
        }
    }
}

/// A header value marked sensitive (hyper keeps it out of its own debug output).
fn sensitive(value: &str) -> reqwest::header::HeaderValue {
    // The key was checked in `LlmClient::new`; an impossible failure sends no header (401) rather
    // than a panic.
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// A reqwest error without its URL, with its causes (which say "connection refused" and the like).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut depth = 0;
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
        depth += 1;
        if depth >= 4 {
            break;
        }
    }
    out.chars().take(MAX_ERROR_CHARS).collect()
}

/// Reads at most `cap` bytes of the body, chunk by chunk; `complete` is false when there was more.
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > cap {
            let room = cap - out.len();
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, true))
}

/// Tool-call arguments as the model sent them in a JSON string (OpenAI): the object, `{}` for
/// nothing, else the raw text capped at 4 KiB.
pub(crate) fn parse_arguments(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(Default::default());
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::String(cap_chars(raw, MAX_RAW_ARGUMENTS)),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn cap_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Checks the tool-call count of a reply.
pub(crate) fn check_tool_calls(count: usize) -> Result<(), LlmError> {
    if count > MAX_TOOL_CALLS {
        return Err(LlmError::Protocol(format!(
            "the model asked for {} tool calls in one turn; at most {MAX_TOOL_CALLS} are accepted",
            count
        )));
    }
    Ok(())
}

/// A reply's text: `None` when empty.
pub(crate) fn non_empty(text: String) -> Option<String> {
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

#[cfg(test)]
mod tests;
