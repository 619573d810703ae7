//! Flow endpoints: list, one flow with its effective steps, run, reload.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::kernel::RunError;
use rumi_actors::registry::{FlowsReloaded, Reload};
use rumi_actors::{Kernel, SecurityMode};
use rumi_domain::catalog::modifier::Application;
use rumi_domain::flow::{Defaults, OnError, SourceRank, Step, StepKind};
use rumi_domain::run::{RunRecord, RunStatus, StepRecord};
use rumi_domain::Flow;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::Instrument;
use utoipa::ToSchema;

/// A flow as `GET /api/flows` lists it.
#[derive(Serialize, ToSchema)]
pub struct FlowSummary<'a> {
    flow_id: &'a str,
    description: Option<&'a str>,
    /// Where the file comes from (the lower rank wins a `flow_id` clash).
    source: SourceRank,
    /// The file, relative to `RUMI_HOME`.
    path: &'a str,
    /// The pack whose file it is (pack flows only).
    pack_id: Option<&'a str>,
    /// The flow's `inputs` as written (null when absent).
    inputs: &'a Value,
    /// The flow's `outputs` as written (null when absent).
    outputs: &'a Value,
    phases: &'a [String],
    step_count: usize,
    /// The flow's `schedule` as written (nothing fires it yet).
    schedule: Option<&'a Value>,
}

impl<'a> FlowSummary<'a> {
    fn new(f: &'a Flow) -> Self {
        FlowSummary {
            flow_id: &f.flow_id,
            description: f.description.as_deref(),
            source: f.origin.rank,
            path: &f.origin.path,
            pack_id: f.origin.pack_id.as_deref(),
            inputs: &f.inputs,
            outputs: &f.outputs,
            phases: &f.phases,
            step_count: f.steps.len(),
            schedule: f.schedule.as_ref(),
        }
    }
}

/// One flow as `GET /api/flows/{id}` shows it: the summary's fields, its defaults and its
/// effective steps in execution order.
#[derive(Serialize, ToSchema)]
pub struct FlowDetail<'a> {
    #[serde(flatten)]
    summary: FlowSummary<'a>,
    defaults: Defaults,
    steps: Vec<StepView<'a>>,
    /// Every modifier that targets this flow, in the order they were applied: applied, or
    /// skipped with the reason.
    modifiers_applied: &'a [Application],
    /// The first modifier applied to the flow (null: none). An official flow a modifier changed
    /// has no administrative rights: its administrative steps are denied.
    modified_by: Option<&'a str>,
}

impl<'a> FlowDetail<'a> {
    fn new(f: &'a Flow, modifiers: &'a [Application]) -> Self {
        FlowDetail {
            summary: FlowSummary::new(f),
            defaults: f.defaults,
            steps: f.steps.iter().map(StepView::new).collect(),
            modifiers_applied: modifiers,
            modified_by: f.modified_by.as_deref(),
        }
    }
}

/// The type of a step.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    PythonFileCall,
    Handler,
    Set,
    If,
}

/// An effective step. `owner_pack`, `file` and `input` are present for `python_file_call`
/// steps, `handler` and `args` for `handler` steps, `key` and `value` for `set` steps.
#[derive(Serialize, ToSchema)]
pub struct StepView<'a> {
    id: &'a str,
    phase: &'a str,
    priority: f64,
    #[serde(rename = "type")]
    step_type: StepType,
    /// The condition, as text.
    when: Option<String>,
    output: Option<&'a str>,
    timeout_seconds: u32,
    on_error: OnError,
    /// The source of the file that placed the step.
    origin: SourceRank,
    /// The modifier that placed the step (null: the flow's own step).
    placed_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_pack: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    /// The block's input as written (references resolved when it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handler: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a Value>,
    /// The key a `set` step stores under (null: the step's `output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    key: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
}

impl<'a> StepView<'a> {
    fn new(s: &'a Step) -> Self {
        let mut v = StepView {
            id: &s.id,
            phase: &s.phase,
            priority: s.priority,
            step_type: StepType::If,
            when: s.when.as_ref().map(ToString::to_string),
            output: s.output.as_deref(),
            timeout_seconds: s.timeout_seconds,
            on_error: s.on_error,
            origin: s.origin,
            placed_by: s.placed_by.as_deref(),
            owner_pack: None,
            file: None,
            input: None,
            handler: None,
            args: None,
            key: None,
            value: None,
        };
        match &s.kind {
            StepKind::Block {
                owner_pack,
                file,
                input,
                ..
            } => {
                v.step_type = StepType::PythonFileCall;
                v.owner_pack = Some(owner_pack);
                v.file = Some(file);
                v.input = Some(input);
            }
            StepKind::Handler { handler, args } => {
                v.step_type = StepType::Handler;
                v.handler = Some(handler.name());
                v.args = Some(args);
            }
            StepKind::Set { key, value } => {
                v.step_type = StepType::Set;
                v.key = Some(key.as_deref());
                v.value = Some(value);
            }
            StepKind::If { .. } => {}
        }
        v
    }
}

/// `GET /api/flows`
#[utoipa::path(
    get,
    operation_id = "flows_list",
    path = "/api/flows",
    tag = "flows",
    summary = "List the loaded flows",
    responses(
        (status = 200, description = "every flow that loaded", body = Envelope<Vec<FlowSummary>>),
    )
)]
pub async fn list(k: web::Data<Kernel>) -> HttpResponse {
    let table = k.view.flows();
    ok(table
        .flows
        .values()
        .map(|f| FlowSummary::new(f))
        .collect::<Vec<_>>())
}

/// `GET /api/flows/{id}`: the flow with its effective steps in execution order.
#[utoipa::path(
    get,
    operation_id = "flows_get",
    path = "/api/flows/{id}",
    tag = "flows",
    summary = "One flow with its effective steps in execution order",
    params(("id" = String, Path, description = "the flow id")),
    responses(
        (status = 200, description = "the flow", body = Envelope<FlowDetail>),
        (status = 404, description = "no flow with this id is loaded", body = ErrorBody),
    )
)]
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    // The flow and what the modifiers did come from one catalog.
    let catalog = k.view.catalog();
    let f = catalog
        .flows
        .flows
        .get(path.as_str())
        .ok_or_else(|| ApiError::from(RunError::missing_flow(&k.view, &path)))?;
    let modifiers = catalog
        .modifiers
        .by_flow
        .get(path.as_str())
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(ok(FlowDetail::new(f, modifiers)))
}

/// `POST /api/flows/reload`
#[utoipa::path(
    post,
    operation_id = "flows_reload",
    path = "/api/flows/reload",
    tag = "flows",
    summary = "Re-read every flow file; answers once the new table is published",
    responses(
        (status = 200, description = "the number of flows loaded and the problems met", body = Envelope<FlowsReloaded>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn reload(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.registry.send(Reload).await?))
}

/// The run as the API answers it, borrowed from the record (serialized once). `trigger`,
/// `started`, `ended` and `inputs_digest` are given by `GET /api/runs/{run_id}`; `warnings` in
/// permissive mode.
#[derive(Serialize, ToSchema)]
pub struct RunView<'a> {
    run_id: &'a str,
    flow_id: &'a str,
    status: RunStatus,
    /// The final context without keys starting with `_`, or `{_truncated: true, _keys: [...]}`
    /// when it would make the answer larger than `RUMI_MAX_RESPONSE_BYTES`.
    result: &'a Value,
    steps: &'a [StepRecord],
    /// Seconds.
    execution_time: f64,
    execution_time_ms: f64,
    execution_mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    warnings: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<&'a str>,
    /// RFC 3339 UTC; null while the run is recorded as running.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs_digest: Option<&'a str>,
}

impl<'a> RunView<'a> {
    /// The view of a run; `detail` adds the record's trigger, times and inputs digest.
    pub fn new(k: &Kernel, r: &'a RunRecord, result: &'a Value, detail: bool) -> Self {
        RunView {
            run_id: &r.run_id,
            flow_id: &r.flow_id,
            status: r.status,
            result,
            steps: &r.steps,
            execution_time: r.execution_time_ms / 1000.0,
            execution_time_ms: r.execution_time_ms,
            execution_mode: &r.execution_mode,
            reason: r.reason.as_deref(),
            failed_step: r.failed_step.as_deref(),
            warnings: (k.config.mode == SecurityMode::Permissive).then_some([
                "permissive mode: blocks ran as host processes without container isolation",
            ]),
            trigger: detail.then_some(r.trigger.as_str()),
            started: detail.then_some(r.started.as_str()),
            ended: if detail { r.ended.as_deref() } else { None },
            inputs_digest: detail.then_some(r.inputs_digest.as_str()),
        }
    }
}

/// How a run's end is answered: the status, `success` and `error` of the envelope (a run that
/// ended well is 200; a failed one 200 with the reason; one past its deadline 408).
pub fn run_outcome(record: &RunRecord) -> (StatusCode, bool, Option<String>) {
    match record.status {
        RunStatus::Succeeded | RunStatus::Aborted => (StatusCode::OK, true, None),
        RunStatus::TimedOut => (
            StatusCode::REQUEST_TIMEOUT,
            false,
            Some("the run's deadline passed".to_string()),
        ),
        _ => (
            StatusCode::OK,
            false,
            Some(
                record
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("the run {}", record.status.as_str())),
            ),
        ),
    }
}

/// The response body of a run: the envelope serialized once; when the result makes it larger
/// than `RUMI_MAX_RESPONSE_BYTES`, the result is replaced by `{_truncated, _keys}`.
pub fn run_body(
    k: &Kernel,
    r: &RunRecord,
    success: bool,
    error: Option<String>,
    detail: bool,
) -> Vec<u8> {
    let body = serde_json::to_vec(&Envelope {
        success,
        data: Some(RunView::new(k, r, &r.result, detail)),
        error: error.clone(),
    })
    .unwrap_or_default();
    if body.len() <= k.config.max_response_bytes {
        return body;
    }
    let keys: Vec<String> = r
        .result
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let truncated = json!({"_truncated": true, "_keys": keys});
    serde_json::to_vec(&Envelope {
        success,
        data: Some(RunView::new(k, r, &truncated, detail)),
        error,
    })
    .unwrap_or_default()
}

/// The body of `POST /api/flows/{id}/run` (empty: no inputs, the default deadline).
#[derive(ToSchema)]
pub struct RunRequest {
    /// The run's inputs (`ctx.inputs`), nested at most 100 levels.
    #[schema(value_type = Option<Object>)]
    pub inputs: Map<String, Value>,
    /// The run's deadline in seconds (default 300; 1..600).
    pub timeout: Option<f64>,
}

impl RunRequest {
    fn parse(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let inputs = match body.get("inputs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(ApiError::bad_request("inputs must be a JSON object")),
        };
        let timeout = match body.get("timeout") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| ApiError::bad_request("timeout must be a number of seconds"))?,
            ),
            Some(_) => return Err(ApiError::bad_request("timeout must be a number of seconds")),
        };
        Ok(RunRequest { inputs, timeout })
    }
}

/// `POST /api/flows/{id}/run {inputs, timeout}`
#[utoipa::path(
    post,
    operation_id = "flows_run",
    path = "/api/flows/{id}/run",
    tag = "runs",
    summary = "Run a flow and answer with its run record",
    params(("id" = String, Path, description = "the flow id")),
    request_body(content = Option<RunRequest>, description = "inputs and deadline; an empty body is `{}`"),
    responses(
        (status = 200, description = "the run ended: `success` is true when it succeeded or aborted, false with the reason in `error` when it failed", body = Envelope<RunView>),
        (status = 400, description = "malformed JSON, `inputs` not an object or nested too deep, `timeout` not a number", body = ErrorBody),
        (status = 404, description = "no flow with this id is loaded", body = ErrorBody),
        (status = 408, description = "the run's deadline passed (`data` is the run, or `{run_id, status}` when it passed in the queue), or the body did not arrive in time", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 429, description = "too many runs: the queue is full", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds to wait before retrying"))),
        (status = 500, description = "the run's record could not be stored, so it is not acknowledged", body = ErrorBody),
        (status = 503, description = "the kernel is stopping", body = ErrorBody),
    )
)]
pub async fn run(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let RunRequest { inputs, timeout } = RunRequest::parse(&body)?;
    let span = tracing::info_span!("http.flow_run", method = "POST", flow_id = %path.as_str());
    let record = k
        .run_flow(&path, inputs, timeout, "api")
        .instrument(span)
        .await?;
    let (status, success, error) = run_outcome(&record);
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(run_body(&k, &record, success, error, false)))
}
