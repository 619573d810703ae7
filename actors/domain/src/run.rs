//! Run records (contract §3.7) and the error types steps fail with.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// How a run ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Aborted,
    TimedOut,
    Rejected,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Rejected => "rejected",
        }
    }
}

/// How a step ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    /// Its `when` was false.
    Skipped,
    /// It returned `__flow_control: abort`.
    Aborted,
}

/// Why a step failed. The names are part of the API (`error_type`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The step's `timeout_seconds` passed; the worker was killed and replaced.
    Timeout,
    /// The run's deadline passed during the step.
    RunTimeout,
    /// The owner pack is not approved (installed, blocked, modified, unknown).
    ApprovalRejected,
    /// The pack's files no longer match its approved manifest.
    HashVerificationFailed,
    /// The block file was not found or lies outside the pack.
    PathRejected,
    /// Strict mode without a usable Docker backend.
    DockerRequired,
    /// The block used more memory than its sandbox allows; the sandbox was replaced.
    MemoryLimit,
    /// The block left processes running (a fork storm meets the pids limit); the sandbox was
    /// replaced.
    ProcessLimit,
    /// The block raised an exception.
    BlockError,
    /// The block returned something that is not JSON.
    InvalidResult,
    /// The block's worker died or broke the protocol.
    WorkerCrashed,
    /// The pack's worker could not be started.
    WorkerUnavailable,
    /// The pack's queue of pending calls is full.
    Busy,
    /// A handler refused its arguments.
    HandlerError,
    /// A handler the kernel knows but cannot serve yet.
    HandlerUnavailable,
    /// `kernel:flow.run` named an unknown flow.
    FlowNotFound,
    /// `kernel:flow.run` would recurse or nest deeper than allowed.
    RecursionRefused,
    /// A value or the run's whole context would pass its byte limit.
    ContextLimit,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Timeout => "timeout",
            ErrorType::RunTimeout => "run_timeout",
            ErrorType::ApprovalRejected => "approval_rejected",
            ErrorType::HashVerificationFailed => "hash_verification_failed",
            ErrorType::PathRejected => "path_rejected",
            ErrorType::DockerRequired => "docker_required",
            ErrorType::MemoryLimit => "memory_limit",
            ErrorType::ProcessLimit => "process_limit",
            ErrorType::BlockError => "block_error",
            ErrorType::InvalidResult => "invalid_result",
            ErrorType::WorkerCrashed => "worker_crashed",
            ErrorType::WorkerUnavailable => "worker_unavailable",
            ErrorType::Busy => "busy",
            ErrorType::HandlerError => "handler_error",
            ErrorType::HandlerUnavailable => "handler_unavailable",
            ErrorType::FlowNotFound => "flow_not_found",
            ErrorType::RecursionRefused => "recursion_refused",
            ErrorType::ContextLimit => "context_limit",
        }
    }

    /// Refusals that are security decisions and go to the `security` audit.
    pub fn is_security(self) -> bool {
        matches!(
            self,
            ErrorType::ApprovalRejected
                | ErrorType::HashVerificationFailed
                | ErrorType::PathRejected
                | ErrorType::DockerRequired
        )
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed step: a message safe to show and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    pub error: String,
    pub error_type: ErrorType,
    /// What the block printed before failing (run log only, never the context).
    #[serde(skip)]
    pub log: Option<String>,
}

impl StepFailure {
    pub fn new(error_type: ErrorType, error: impl Into<String>) -> Self {
        StepFailure {
            error: error.into(),
            error_type,
            log: None,
        }
    }
}

/// One step in a run record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub phase: String,
    #[serde(rename = "type")]
    pub step_type: String,
    pub status: StepStatus,
    /// RFC 3339 UTC.
    pub started: String,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_type: Option<ErrorType>,
    /// What the block printed (truncated); never part of the result.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub log: Option<String>,
}

/// The whole run record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub flow_id: String,
    pub trigger: String,
    /// SHA-256 of the inputs' JSON, so records never keep input values.
    pub inputs_digest: String,
    pub started: String,
    pub ended: Option<String>,
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failed_step: Option<String>,
    pub steps: Vec<StepRecord>,
    pub result: Value,
    pub execution_time_ms: f64,
    pub execution_mode: String,
    /// The final context's `_http` (a pack route's status and headers); never stored or shown.
    #[serde(skip)]
    pub http: Option<Value>,
}
