//! Flow endpoints: list, one flow with its effective steps, run, reload.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::registry::Reload;
use rumi_actors::{Kernel, SecurityMode};
use rumi_domain::flow::{Step, StepKind};
use rumi_domain::run::{RunRecord, RunStatus, StepRecord};
use rumi_domain::Flow;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument;

fn summary(f: &Flow) -> Value {
    json!({
        "flow_id": f.flow_id,
        "description": f.description,
        "source": f.origin.rank.as_str(),
        "path": f.origin.path,
        "pack_id": f.origin.pack_id,
        "inputs": f.inputs,
        "outputs": f.outputs,
        "phases": f.phases,
        "step_count": f.steps.len(),
        "schedule": f.schedule,
    })
}

fn step_json(s: &Step) -> Value {
    let mut v = json!({
        "id": s.id,
        "phase": s.phase,
        "priority": s.priority,
        "type": s.kind.type_name(),
        "when": s.when.as_ref().map(ToString::to_string),
        "output": s.output,
        "timeout_seconds": s.timeout_seconds,
        "on_error": s.on_error,
        "origin": s.origin.as_str(),
    });
    match &s.kind {
        StepKind::Block {
            owner_pack,
            file,
            input,
            ..
        } => {
            v["owner_pack"] = json!(owner_pack);
            v["file"] = json!(file);
            v["input"] = input.clone();
        }
        StepKind::Handler { handler, args } => {
            v["handler"] = json!(handler.name());
            v["args"] = args.clone();
        }
        StepKind::Set { key, value } => {
            v["key"] = json!(key);
            v["value"] = value.clone();
        }
        StepKind::If { .. } => {}
    }
    v
}

/// `GET /api/flows`
pub async fn list(k: web::Data<Kernel>) -> HttpResponse {
    let table = k.view.flows();
    ok(table.flows.values().map(|f| summary(f)).collect::<Vec<_>>())
}

/// `GET /api/flows/{id}`: the flow with its effective steps in execution order.
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let f = k
        .view
        .flow(&path)
        .ok_or_else(|| ApiError::not_found(format!("no flow {:?} is loaded", path.as_str())))?;
    let mut v = summary(&f);
    v["defaults"] = json!(f.defaults);
    v["steps"] = Value::Array(f.steps.iter().map(step_json).collect());
    v["modifiers_applied"] = json!([]);
    Ok(ok(v))
}

/// `POST /api/flows/reload`
pub async fn reload(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    Ok(ok(k.registry.send(Reload).await?))
}

/// The run as the API answers it, borrowed from the record (serialized once).
#[derive(Serialize)]
pub struct RunView<'a> {
    run_id: &'a str,
    flow_id: &'a str,
    status: RunStatus,
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
    warnings: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<&'a str>,
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

/// `POST /api/flows/{id}/run {inputs, timeout}`
pub async fn run(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let inputs = match body.get("inputs") {
        None | Some(Value::Null) => serde_json::Map::new(),
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
    let span = tracing::info_span!("http.flow_run", method = "POST", flow_id = %path.as_str());
    let record = k
        .run_flow(&path, inputs, timeout, "api")
        .instrument(span)
        .await?;
    let (status, success, error) = match record.status {
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
    };
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(run_body(&k, &record, success, error, false)))
}
