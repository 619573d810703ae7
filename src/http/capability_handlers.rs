//! Third-party capability handler candidates (contract §7.2, §16 "Capability candidates"): scan,
//! list, approve, reject, the blocked list and unblock. The workflow itself is
//! `rumi_actors::capability::workflow`; these handlers parse, run it off the HTTP threads, audit
//! every decision (`approval` category, refusals included) and map its errors.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::audit::{AuditEntry, RecordDurable};
use rumi_actors::capability::workflow::{
    refused_entry, CandidateItem, CandidateList, ScanReport, WorkflowError,
};
use rumi_actors::Kernel;
use rumi_domain::capability::candidate::CandidateStatus;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::BadKey(_) => ApiError::bad_request(e.to_string()),
            WorkflowError::NotFound(_) => ApiError::not_found(e.to_string()),
            WorkflowError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            WorkflowError::Storage => ApiError::internal(e),
        }
    }
}

/// The body of `POST /api/capability/requests/{candidate_key}/approve` (may be empty).
#[derive(ToSchema)]
pub struct ApproveRequest {
    /// Kept with the trust record and in the audit (at most 500 characters).
    #[schema(required = false, nullable = true)]
    pub notes: String,
}

/// The body of `.../reject` and `.../unblock` (may be empty).
#[derive(ToSchema)]
pub struct ReasonRequest {
    /// Kept with the candidate and in the audit (at most 500 characters).
    #[schema(required = false, nullable = true)]
    pub reason: String,
}

/// The query of `GET /api/capability/requests`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// `pending`, `rejected`, `blocked`, `installed`, `failed` or `all` (the default).
    pub status: Option<String>,
}

fn text_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
    }
}

/// The key from the path. actix decodes the segment; a `%3A` left encoded by a client that
/// encoded twice is decoded too (a valid key never holds `%`).
fn key(raw: &str) -> String {
    raw.replace("%3A", ":").replace("%3a", ":")
}

/// Writes a workflow step's audit entry durably, then the pending summary (its `capability` and
/// `pip` sections count the candidates), before the step is answered.
pub(super) async fn audit(k: &Kernel, entry: AuditEntry) {
    if !matches!(k.audit.send(RecordDurable(entry)).await, Ok(Ok(_))) {
        tracing::error!("an audit entry could not be written durably");
    }
    let _ = k.registry.send(rumi_actors::registry::RefreshSummary).await;
}

/// Runs blocking workflow code (file reads, hashes, fsyncs, the records' lock) off the HTTP
/// threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WorkflowError> + Send + 'static,
) -> Result<T, WorkflowError> {
    web::block(f).await.map_err(|_| WorkflowError::Storage)?
}

/// `POST /api/capability/candidates/scan`
#[utoipa::path(
    post,
    operation_id = "capability_candidates_scan",
    path = "/api/capability/candidates/scan",
    tag = "capabilities",
    summary = "Find the capability handler candidates every pack ships and record new ones as pending",
    responses(
        (status = 200, description = "the candidates found (new ones pending) and the invalid ones with their reasons", body = Envelope<ScanReport>),
        (status = 500, description = "the records could not be written", body = ErrorBody),
    )
)]
pub async fn scan(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let table = k.capabilities.handlers.clone();
    let (report, entry) = blocking(move || table.scan()).await?;
    audit(&k, entry).await;
    Ok(ok(report))
}

/// `GET /api/capability/requests?status=`
#[utoipa::path(
    get,
    operation_id = "capability_requests",
    path = "/api/capability/requests",
    tag = "capabilities",
    summary = "The capability handler candidates, by status",
    params(RequestsQuery),
    responses(
        (status = 200, description = "the candidates", body = Envelope<CandidateList>),
        (status = 400, description = "an unknown status", body = ErrorBody),
    )
)]
pub async fn requests(
    k: web::Data<Kernel>,
    q: web::Query<RequestsQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => CandidateStatus::parse_filter(s).map_err(ApiError::bad_request)?,
    };
    let table = k.capabilities.handlers.clone();
    Ok(ok(blocking(move || Ok(table.list(status))).await?))
}

/// `POST /api/capability/requests/{candidate_key}/approve {notes}`
#[utoipa::path(
    post,
    operation_id = "capability_request_approve",
    path = "/api/capability/requests/{candidate_key}/approve",
    tag = "capabilities",
    summary = "Trust a candidate: re-hash it, install it and start its handler (grants nothing)",
    params(("candidate_key" = String, Path, description = "pack_id:slug:handler_id:sha256, URL-encoded")),
    request_body(content = ApproveRequest),
    responses(
        (status = 200, description = "the candidate, installed", body = Envelope<CandidateItem>),
        (status = 400, description = "a malformed key or body", body = ErrorBody),
        (status = 404, description = "no such candidate (scan first)", body = ErrorBody),
        (status = 409, description = "the pack is not approved, the candidate is blocked or installed, its files changed since the scan, or its slug or permission is taken by another handler; nothing was installed", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the handler could not be installed (the candidate is `failed`)", body = ErrorBody),
    )
)]
pub async fn approve(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let r = ApproveRequest {
        notes: text_field(&body, "notes")?,
    };
    let key = key(&path);
    let table = k.capabilities.handlers.clone();
    let k2 = key.clone();
    match blocking(move || table.approve(&k2, &r.notes)).await {
        Ok((decision, permission_id)) => {
            audit(&k, decision.audit).await;
            // Warm its actor now: the first call should not pay for Python's start.
            let _ = k.capabilities.handlers.lookup(&permission_id);
            Ok(ok(decision.item))
        }
        Err(e) => {
            audit(
                &k,
                refused_entry("capability_handler_approve_refused", &key, &e),
            )
            .await;
            Err(e.into())
        }
    }
}

/// `POST /api/capability/requests/{candidate_key}/reject {reason}`
#[utoipa::path(
    post,
    operation_id = "capability_request_reject",
    path = "/api/capability/requests/{candidate_key}/reject",
    tag = "capabilities",
    summary = "Reject a candidate for an hour; the third rejection blocks it",
    params(("candidate_key" = String, Path, description = "pack_id:slug:handler_id:sha256, URL-encoded")),
    request_body(content = ReasonRequest),
    responses(
        (status = 200, description = "the candidate, rejected or blocked", body = Envelope<CandidateItem>),
        (status = 400, description = "a malformed key or body", body = ErrorBody),
        (status = 404, description = "no such candidate", body = ErrorBody),
        (status = 409, description = "the candidate is blocked or installed", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the decision could not be recorded", body = ErrorBody),
    )
)]
pub async fn reject(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let r = ReasonRequest {
        reason: text_field(&body, "reason")?,
    };
    let key = key(&path);
    let table = k.capabilities.handlers.clone();
    let k2 = key.clone();
    let outcome = blocking(move || table.reject(&k2, &r.reason)).await;
    decided(&k, &key, "capability_handler_reject_refused", outcome).await
}

/// `GET /api/capability/blocked`
#[utoipa::path(
    get,
    operation_id = "capability_blocked",
    path = "/api/capability/blocked",
    tag = "capabilities",
    summary = "The blocked capability handler candidates",
    responses((status = 200, description = "the blocked candidates", body = Envelope<CandidateList>))
)]
pub async fn blocked(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let table = k.capabilities.handlers.clone();
    let list = blocking(move || Ok(table.list(Some(CandidateStatus::Blocked)))).await?;
    Ok(ok(list))
}

/// `POST /api/capability/blocked/{candidate_key}/unblock {reason}`
#[utoipa::path(
    post,
    operation_id = "capability_blocked_unblock",
    path = "/api/capability/blocked/{candidate_key}/unblock",
    tag = "capabilities",
    summary = "Unblock a candidate: pending again, its rejection count reset",
    params(("candidate_key" = String, Path, description = "pack_id:slug:handler_id:sha256, URL-encoded")),
    request_body(content = ReasonRequest),
    responses(
        (status = 200, description = "the candidate, pending", body = Envelope<CandidateItem>),
        (status = 400, description = "a malformed key or body", body = ErrorBody),
        (status = 404, description = "no such candidate", body = ErrorBody),
        (status = 409, description = "the candidate is not blocked", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the decision could not be recorded", body = ErrorBody),
    )
)]
pub async fn unblock(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let r = ReasonRequest {
        reason: text_field(&body, "reason")?,
    };
    let key = key(&path);
    let table = k.capabilities.handlers.clone();
    let k2 = key.clone();
    let outcome = blocking(move || table.unblock(&k2, &r.reason)).await;
    decided(&k, &key, "capability_handler_unblock_refused", outcome).await
}

/// Audits a decision (or its refusal) and answers it.
async fn decided(
    k: &Kernel,
    key: &str,
    refused: &str,
    outcome: Result<rumi_actors::capability::workflow::Decision, WorkflowError>,
) -> Result<HttpResponse, ApiError> {
    match outcome {
        Ok(d) => {
            audit(k, d.audit).await;
            Ok(ok(d.item))
        }
        Err(e) => {
            audit(k, refused_entry(refused, key, &e)).await;
            Err(e.into())
        }
    }
}
