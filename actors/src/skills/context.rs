//! What the actors of one skill run share (contract §4): the run's files, its blackboard, the
//! read cache, the BudgetGuard's address, the model client and the script runner — and what a
//! Sub Agent answers the Supervisor ([`Outcome`]).
//!
//! The context is built once per run by the runtime and handed, behind an `Arc`, to each agent
//! at its construction; agents never hold each other's addresses.

use super::blackboard::Blackboard;
use super::budget_guard::{AdmitToolCall, BudgetGuard, ChargeTokens};
use super::llm::{ChatRequest, ChatResponse, LlmClient, LlmError};
use super::script::ScriptRunner;
use super::workspace::RunFiles;
use actix::Addr;
use parking_lot::Mutex;
use rumi_domain::skill::act::{ActInput, ExitReason};
use rumi_domain::skill::budget::{Budgets, Which};
use rumi_domain::skill::frontmatter::SkillDoc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::Instrument;

/// Everything the actors of one run share.
pub struct RunContext {
    pub run_id: String,
    /// As the run names it (`x` or `<pack>:x`).
    pub skill_id: String,
    pub skill: SkillDoc,
    pub files: RunFiles,
    pub blackboard: Blackboard,
    /// Content hashes already given to the model in this run (`already_loaded`, §10).
    pub loaded: Mutex<HashSet<[u8; 32]>>,
    /// The AttemptMemo, the read memo and the skill memory of this run (§10).
    pub caches: super::memo::RunCaches,
    /// The latest version number of each file under `build/`.
    pub versions: Mutex<BTreeMap<String, u32>>,
    /// Which file each artifact name belongs to: `a/b.md` and `a.b.md` would both be
    /// `act.a.b`; the first keeps the name and the other is refused (or, written by a script,
    /// not versioned).
    pub owners: Mutex<std::collections::HashMap<String, String>>,
    /// Grows whenever a file under `build/` changes (a passing `validate` is tied to one).
    pub build_generation: AtomicU64,
    pub guard: Addr<BudgetGuard>,
    pub llm: Arc<LlmClient>,
    pub scripts: Arc<dyn ScriptRunner>,
    /// The kernel's dependency environments (shared by every run).
    pub envs: Arc<super::envs::SkillEnvs>,
    pub input: ActInput,
    pub budgets: Budgets,
    /// The time budget as a deadline: model calls, scripts and agent answers race it.
    pub deadline: tokio::time::Instant,
    /// The run's seed (OpenAI requests carry it on every call).
    pub seed: u64,
    /// Scripts started so far (numbers their containers and stdin files).
    pub scripts_started: std::sync::atomic::AtomicU32,
    /// The last script run failed (the next one counts as a retry).
    pub last_script_failed: std::sync::atomic::AtomicBool,
    /// Whether the skill may still be used: a pack's skill stops when its pack is no longer
    /// approved (modified, rejected, uninstalled) — checked before every tool call.
    pub still_approved: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl RunContext {
    /// Marks `content` as given to the model; false when it already was.
    pub fn first_load(&self, content: &[u8]) -> bool {
        self.loaded.lock().insert(Sha256::digest(content).into())
    }

    /// Admits one tool call with the guard.
    pub async fn admit(&self, tool: &str) -> Result<(), Which> {
        let span = tracing::info_span!(
            "skill.message",
            to = "BudgetGuard",
            message = "AdmitToolCall",
            tool
        );
        self.guard
            .send(AdmitToolCall {
                tool: tool.to_string(),
            })
            .instrument(span)
            .await
            .unwrap_or(Err(Which::Time))
    }

    /// One model call raced against the run's deadline, its tokens charged to the guard.
    /// `Err(Ok(which))` = a budget ended the run; `Err(Err(e))` = the model failed.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        tally: &mut Tally,
    ) -> Result<ChatResponse, Result<Which, LlmError>> {
        // The request's size is known before it is sent: refuse one the token budget cannot
        // pay for (a huge tool result would otherwise go out whole and be charged after).
        let estimate = request_tokens(req);
        let fits = self
            .guard
            .send(super::budget_guard::AdmitRequest { tokens: estimate })
            .await
            .unwrap_or(Err(Which::Time));
        if let Err(which) = fits {
            return Err(Ok(which));
        }
        let span = tracing::info_span!("skill.model_call", tools = req.tools.len());
        let answer = tokio::time::timeout_at(self.deadline, self.llm.chat(req, self.deadline))
            .instrument(span)
            .await;
        let resp = match answer {
            Err(_) | Ok(Err(LlmError::Timeout)) => return Err(Ok(Which::Time)),
            Ok(Err(e)) => return Err(Err(e)),
            Ok(Ok(r)) => r,
        };
        tally.model_calls += 1;
        tally.input_tokens += resp.usage.input_tokens;
        tally.output_tokens += resp.usage.output_tokens;
        let charged = self
            .guard
            .send(ChargeTokens {
                input: resp.usage.input_tokens,
                output: resp.usage.output_tokens,
            })
            .instrument(tracing::info_span!(
                "skill.message",
                to = "BudgetGuard",
                message = "ChargeTokens"
            ))
            .await
            .unwrap_or(Err(Which::Time));
        match charged {
            Ok(()) => Ok(resp),
            Err(which) => Err(Ok(which)),
        }
    }

    /// Notes that `build/` changed.
    pub fn build_changed(&self) {
        self.build_generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a request will cost at least, in the runtime's estimate (bytes/4 of the text it carries).
pub fn request_tokens(req: &ChatRequest) -> u64 {
    use super::llm::ChatMessage;
    let mut bytes = req.system.len();
    for m in &req.messages {
        bytes += match m {
            ChatMessage::User(t) => t.len(),
            ChatMessage::Assistant { text, tool_calls } => {
                text.as_ref().map_or(0, String::len)
                    + tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.to_string().len())
                        .sum::<usize>()
            }
            ChatMessage::ToolResult { content, .. } => content.len(),
        };
    }
    for t in &req.tools {
        bytes += t.name.len() + t.description.len() + t.parameters.to_string().len();
    }
    rumi_domain::skill::disclosure::approx_tokens(bytes)
}

/// Counters an agent's work adds to the run's metrics.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub model_calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub tool_calls_from_memo: u64,
    pub script_runs: u64,
    pub script_failures: u64,
    pub script_retries: u64,
    pub l2_loads: u64,
    pub l3_reads: u64,
    pub l3_exec: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub bytes_truncated: u64,
    /// Paths read and not found (`missing_refs`, §15).
    pub missing: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.model_calls += o.model_calls;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.tool_calls_from_memo += o.tool_calls_from_memo;
        self.script_runs += o.script_runs;
        self.script_failures += o.script_failures;
        self.script_retries += o.script_retries;
        self.l2_loads += o.l2_loads;
        self.l3_reads += o.l3_reads;
        self.l3_exec += o.l3_exec;
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        self.bytes_truncated += o.bytes_truncated;
        for m in &o.missing {
            if !self.missing.contains(m) && self.missing.len() < 64 {
                self.missing.push(m.clone());
            }
        }
    }
}

/// One tool call a delegated agent made inside its own loop (for evidence and metrics).
#[derive(Debug, Clone)]
pub struct InnerStep {
    pub tool: String,
    pub inputs_digest: String,
    pub ok: bool,
    pub tokens: u64,
    pub time_ms: u64,
    pub files: Vec<String>,
}

/// What a Sub Agent answers for one tool call.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The tool result the model sees (`{ok: true, …}` or `{ok: false, error, error_type}`).
    pub result: Value,
    /// New content loaded, an artifact created or changed, or a script that succeeded (§15).
    pub progress: bool,
    pub tally: Tally,
    /// Files the call read or wrote (evidence `file_ids`).
    pub files: Vec<String>,
    /// Files under `build/` the call created or changed (to version).
    pub written: Vec<String>,
    /// Files under `build/` the call removed (a script's; kept by the memo).
    pub removed: Vec<String>,
    pub diff_summary: String,
    /// The call ends the run (a sandbox violation, a budget passed inside a delegated loop).
    pub end: Option<ExitReason>,
    /// A script ran and failed (or timed out).
    pub script_failed: bool,
    pub inner: Vec<InnerStep>,
}

impl Outcome {
    /// A successful result.
    pub fn ok(result: Value) -> Outcome {
        Outcome {
            result,
            progress: false,
            tally: Tally::default(),
            files: Vec::new(),
            written: Vec::new(),
            removed: Vec::new(),
            diff_summary: String::new(),
            end: None,
            script_failed: false,
            inner: Vec::new(),
        }
    }

    /// A refusal: `{ok: false, error, error_type}`.
    pub fn err(error_type: &str, error: impl Into<String>) -> Outcome {
        Outcome::ok(failure(error_type, error))
    }

    pub fn progress(mut self) -> Outcome {
        self.progress = true;
        self
    }

    pub fn ending(mut self, why: ExitReason) -> Outcome {
        self.end = Some(why);
        self
    }
}

/// `{ok: false, error, error_type}`.
pub fn failure(error_type: &str, error: impl Into<String>) -> Value {
    json!({"ok": false, "error": error.into(), "error_type": error_type})
}

/// A short, stable digest of a tool's arguments (evidence `inputs_digest`).
pub fn digest(args: &Value) -> String {
    let text = serde_json::to_string(args).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// The string argument `key`, or an `invalid_arguments` refusal naming it.
pub fn arg_str<'a>(args: &'a Value, key: &str) -> Result<&'a str, Outcome> {
    args.get(key).and_then(Value::as_str).ok_or_else(|| {
        Outcome::err(
            "invalid_arguments",
            format!("the argument {key:?} (a string) is missing"),
        )
    })
}
