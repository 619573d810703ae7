//! pip dependencies of packs (contract §9 "pip", §16 "pip"): scan, list, approve (download and
//! install offline), reject, the blocked list and unblock. The workflow is
//! `rumi_actors::pip`; these handlers parse, run it off the HTTP threads, audit every decision
//! (`approval` category, refusals included), restart the pack's sandbox after an install (so
//! its next call sees the packages) and map the errors.

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::pip::{refused_entry, Decision, PipError, PipItem, PipList, PipScanReport};
use rumi_actors::{Kernel, SecurityMode};
use rumi_domain::capability::candidate::CandidateStatus;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

impl From<PipError> for ApiError {
    fn from(e: PipError) -> Self {
        match e {
            PipError::BadRequest(_) => ApiError::bad_request(e.to_string()),
            PipError::NotFound(_) => ApiError::not_found(e.to_string()),
            PipError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            PipError::Storage => ApiError::internal(e),
        }
    }
}

/// The body of `POST /api/pip/requests/{candidate_key}/approve` (may be empty). The schema only:
/// the handler reads the fields one by one, so each refusal names the field.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct PipApproveRequest {
    /// Must be false (the default): building an sdist runs its `setup.py`, which never runs on
    /// the host, and the pack runtime image has no pip to build it in; only wheels are installed.
    #[schema(required = false)]
    pub allow_sdist: bool,
    /// An https index (`https://host/simple`) with a public host; default: the machine's pip
    /// configuration. Refused when `RUMI_PIP_FIND_LINKS` is set (the kernel installs only from
    /// that directory).
    #[schema(required = false, nullable = true)]
    pub index_url: Option<String>,
}

/// The body of `.../reject` and `.../unblock` (may be empty; the schema only).
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct PipReasonRequest {
    /// Kept with the candidate and in the audit (at most 500 characters).
    #[schema(required = false, nullable = true)]
    pub reason: String,
}

/// The query of `GET /api/pip/requests`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PipRequestsQuery {
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

/// The key from the path (a `%3A` left encoded by a client that encoded twice is decoded too;
/// `%2F` likewise, for `backend/requirements.lock`).
fn key(raw: &str) -> String {
    raw.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2F", "/")
        .replace("%2f", "/")
}

// A decision's audit entry, then the pending summary (its `pip` section), before the answer.
use super::capability_handlers::audit;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PipError> + Send + 'static,
) -> Result<T, PipError> {
    web::block(f).await.map_err(|_| PipError::Storage)?
}

/// `POST /api/pip/candidates/scan`
#[utoipa::path(
    post,
    operation_id = "pip_candidates_scan",
    path = "/api/pip/candidates/scan",
    tag = "pip",
    summary = "Find every pack's requirements.lock and record the valid ones as pending",
    responses(
        (status = 200, description = "the candidates found (new ones pending) and every refused line of the invalid locks", body = Envelope<PipScanReport>),
        (status = 500, description = "the records could not be written", body = ErrorBody),
    )
)]
pub async fn scan(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let pip = k.pip.clone();
    let (report, entry) = blocking(move || pip.scan()).await?;
    audit(&k, entry).await;
    Ok(ok(report))
}

/// `GET /api/pip/requests?status=`
#[utoipa::path(
    get,
    operation_id = "pip_requests",
    path = "/api/pip/requests",
    tag = "pip",
    summary = "The pip candidates, by status",
    params(PipRequestsQuery),
    responses(
        (status = 200, description = "the candidates", body = Envelope<PipList>),
        (status = 400, description = "an unknown status", body = ErrorBody),
    )
)]
pub async fn requests(
    k: web::Data<Kernel>,
    q: web::Query<PipRequestsQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => CandidateStatus::parse_filter(s).map_err(ApiError::bad_request)?,
    };
    let pip = k.pip.clone();
    Ok(ok(blocking(move || Ok(pip.list(status))).await?))
}

/// Parses and checks an approval's body (400 on anything wrong; nothing changed).
async fn approval_body(k: &Kernel, body: &Map<String, Value>) -> Result<Option<String>, PipError> {
    for name in body.keys() {
        if name != "allow_sdist" && name != "index_url" {
            return Err(PipError::BadRequest(format!(
                "unknown field {:?}; the body is {{allow_sdist, index_url}}",
                name.chars().take(40).collect::<String>()
            )));
        }
    }
    match body.get("allow_sdist") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(PipError::BadRequest(
                "allow_sdist is not supported: building an sdist runs its setup.py, which never runs on the host, and the pack runtime image has no pip to build it in a container; ask the pack's author for wheels (pip download --only-binary=:all: must find every pin)".into(),
            ))
        }
        Some(_) => return Err(PipError::BadRequest("allow_sdist must be a boolean".into())),
    }
    match body.get("index_url") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            if k.config.pip_find_links.is_some() {
                return Err(PipError::BadRequest(
                    "this kernel installs pip packages only from RUMI_PIP_FIND_LINKS (no index); omit index_url".into(),
                ));
            }
            rumi_actors::pip::index::check_index_url(s)
                .await
                .map(Some)
                .map_err(PipError::BadRequest)
        }
        Some(_) => Err(PipError::BadRequest("index_url must be a string".into())),
    }
}

/// `POST /api/pip/requests/{candidate_key}/approve {allow_sdist, index_url}`
#[utoipa::path(
    post,
    operation_id = "pip_request_approve",
    path = "/api/pip/requests/{candidate_key}/approve",
    tag = "pip",
    summary = "Download a lock's wheels and install them offline into the pack's site-packages",
    params(("candidate_key" = String, Path, description = "pack_id:relpath:sha256, URL-encoded")),
    request_body(content = PipApproveRequest),
    responses(
        (status = 200, description = "the candidate after the install: `installed` with its distributions, or `failed` with the reason (the pack's previous packages are kept)", body = Envelope<PipItem>),
        (status = 400, description = "a malformed key or body, allow_sdist, or an index_url that is not https or whose host is internal", body = ErrorBody),
        (status = 404, description = "no such candidate (scan first)", body = ErrorBody),
        (status = 409, description = "the pack is not approved, the candidate is blocked or installed, the lock changed since the scan, or an install of the pack is under way; nothing was installed", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the outcome could not be recorded", body = ErrorBody),
    )
)]
pub async fn approve(
    k: web::Data<Kernel>,
    path: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, body).await?;
    let key = key(&path);
    let outcome = async {
        let index_url = approval_body(&k, &body).await?;
        let pip = k.pip.clone();
        let k2 = key.clone();
        let approval = blocking(move || pip.begin(&k2, index_url)).await?;
        // The install runs as a task of its own: a client that goes away does not cancel it
        // half-way (its outcome is recorded and the pack's install slot given back).
        let kernel = k.get_ref().clone();
        let task = actix_web::rt::spawn(async move {
            let decision = kernel.pip.install(&approval).await?;
            if decision.item.status == CandidateStatus::Installed {
                restart_sandbox(&kernel, &approval.pack_id).await;
            }
            audit(&kernel, decision.audit).await;
            Ok::<_, PipError>(decision.item)
        });
        task.await.map_err(|_| PipError::Storage)?
    }
    .await;
    match outcome {
        Ok(item) => Ok(ok(item)),
        Err(e) => {
            audit(&k, refused_entry("pip_request_approve_refused", &key, &e)).await;
            Err(e.into())
        }
    }
}

/// Lets go of the pack's idle sandbox so its next call starts one that sees the new packages
/// (a container mounts `/pip-packages` when it starts; a worker reads its path when it starts).
async fn restart_sandbox(k: &Kernel, pack_id: &str) {
    match k.config.mode {
        SecurityMode::Strict => {
            if let Err(e) = k.stop_container(pack_id, false).await {
                tracing::warn!(pack_id, error = %e, "the pack's container could not be stopped after a pip install; restart it to see the packages");
            }
        }
        SecurityMode::Permissive => {
            if let Some(addr) = k.view.container(pack_id) {
                let _ = addr.send(rumi_actors::pack_container::ReleaseSandbox).await;
            }
        }
    }
}

/// `POST /api/pip/requests/{candidate_key}/reject {reason}`
#[utoipa::path(
    post,
    operation_id = "pip_request_reject",
    path = "/api/pip/requests/{candidate_key}/reject",
    tag = "pip",
    summary = "Reject a pip candidate for an hour; the third rejection blocks it",
    params(("candidate_key" = String, Path, description = "pack_id:relpath:sha256, URL-encoded")),
    request_body(content = PipReasonRequest),
    responses(
        (status = 200, description = "the candidate, rejected or blocked", body = Envelope<PipItem>),
        (status = 400, description = "a malformed key or body", body = ErrorBody),
        (status = 404, description = "no such candidate", body = ErrorBody),
        (status = 409, description = "the candidate is blocked or installed, or its pack's install is under way", body = ErrorBody),
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
    let reason = text_field(&body, "reason")?;
    let key = key(&path);
    let pip = k.pip.clone();
    let k2 = key.clone();
    let outcome = blocking(move || pip.reject(&k2, &reason)).await;
    decided(&k, &key, "pip_request_reject_refused", outcome).await
}

/// `GET /api/pip/blocked`
#[utoipa::path(
    get,
    operation_id = "pip_blocked",
    path = "/api/pip/blocked",
    tag = "pip",
    summary = "The blocked pip candidates",
    responses((status = 200, description = "the blocked candidates", body = Envelope<PipList>))
)]
pub async fn blocked(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let pip = k.pip.clone();
    let list = blocking(move || Ok(pip.list(Some(CandidateStatus::Blocked)))).await?;
    Ok(ok(list))
}

/// `POST /api/pip/blocked/{candidate_key}/unblock {reason}`
#[utoipa::path(
    post,
    operation_id = "pip_blocked_unblock",
    path = "/api/pip/blocked/{candidate_key}/unblock",
    tag = "pip",
    summary = "Unblock a pip candidate: pending again, its rejection count reset",
    params(("candidate_key" = String, Path, description = "pack_id:relpath:sha256, URL-encoded")),
    request_body(content = PipReasonRequest),
    responses(
        (status = 200, description = "the candidate, pending", body = Envelope<PipItem>),
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
    let reason = text_field(&body, "reason")?;
    let key = key(&path);
    let pip = k.pip.clone();
    let k2 = key.clone();
    let outcome = blocking(move || pip.unblock(&k2, &reason)).await;
    decided(&k, &key, "pip_request_unblock_refused", outcome).await
}

/// Audits a decision (or its refusal) and answers it.
async fn decided(
    k: &Kernel,
    key: &str,
    refused: &str,
    outcome: Result<Decision, PipError>,
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
