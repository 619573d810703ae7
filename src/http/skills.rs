//! Skill runs (SkillRuntime contract §13, §15): the L1 catalog, starting a run (waiting for its
//! ActResult, or `?async=true` for its id), a run's state, and its artifacts as raw bytes.
//!
//! A run that started answers 200 with its ActResult whatever its `exit_reason`; 4xx only when
//! no run starts (a bad ActInput or no model configured: 400; an unknown skill: 404; too many
//! runs at once: 429).

use super::body::json_object;
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rumi_actors::skills::catalog::SkillSummary;
use rumi_actors::skills::runtime::ArtifactError;
use rumi_actors::skills::StartError;
use rumi_actors::Kernel;
use rumi_domain::skill::act::{ActInput, ActResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// `GET /api/skills`
#[utoipa::path(
    get,
    operation_id = "skills_list",
    path = "/api/skills",
    tag = "skills",
    summary = "The skills (L1 catalog: id, name, description) with their warnings; skipped skills are in diagnostics",
    responses(
        (status = 200, description = "the skills, by id", body = Envelope<Vec<SkillSummary>>),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let skills = std::sync::Arc::clone(&k.skills);
    let catalog = web::block(move || skills.catalog().summaries())
        .await
        .map_err(ApiError::internal)?;
    Ok(ok(catalog))
}

/// Query of `POST /api/skills/run`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// `true`: answer 202 with the run id at once instead of waiting for the ActResult.
    #[serde(rename = "async")]
    #[param(rename = "async")]
    run_async: Option<bool>,
}

/// `POST /api/skills/run?async=true`
#[derive(Serialize, ToSchema)]
pub struct RunStarted {
    run_id: String,
    /// Always `running`.
    status: &'static str,
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::BadInput(_) | StartError::NotConfigured(_) => {
                ApiError::bad_request(e.to_string())
            }
            StartError::UnknownSkill(_) => ApiError::not_found(e.to_string()),
            StartError::Busy(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            StartError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// `POST /api/skills/run`
#[utoipa::path(
    post,
    operation_id = "skills_run",
    path = "/api/skills/run",
    tag = "skills",
    summary = "Run a skill: waits for the ActResult (up to its time budget), or answers 202 with the run id (?async=true)",
    params(RunQuery),
    request_body(content = ActInput, description = "the ActInput: skill_id, goal, constraints, inputs, budgets, expected_outputs"),
    responses(
        (status = 200, description = "the run's ActResult, whatever its exit_reason (status is succeeded iff exit_reason is validated)", body = Envelope<ActResult>),
        (status = 202, description = "the run started (async)", body = Envelope<RunStarted>),
        (status = 400, description = "a bad ActInput, or no model configured (the message says how to configure one)", body = ErrorBody),
        (status = 404, description = "no such skill", body = ErrorBody),
        (status = 413, description = "the body is too large", body = ErrorBody),
        (status = 429, description = "too many skill runs at once", body = ErrorBody),
    )
)]
pub async fn run(
    k: web::Data<Kernel>,
    req: HttpRequest,
    body: web::Payload,
    q: web::Query<RunQuery>,
) -> Result<HttpResponse, ApiError> {
    let input = Value::Object(json_object(&req, body).await?);
    let skills = std::sync::Arc::clone(&k.skills);
    let started = web::block(move || skills.start(&input, None))
        .await
        .map_err(ApiError::internal)??;
    if q.run_async.unwrap_or(false) {
        return Ok(HttpResponse::build(StatusCode::ACCEPTED).json(Envelope {
            success: true,
            data: Some(RunStarted {
                run_id: started.run_id,
                status: "running",
            }),
            error: None,
        }));
    }
    let run_id = started.run_id.clone();
    match started.result.await {
        Ok(result) => Ok(ok(result)),
        // The runtime always answers; if it could not, the run's state is still readable.
        Err(_) => match k.skills.status(&run_id) {
            Some(r) => Ok(ok(r)),
            None => Err(ApiError::internal("a skill run ended without a result")),
        },
    }
}

/// `GET /api/skills/runs/{run_id}`
#[utoipa::path(
    get,
    operation_id = "skills_run_get",
    path = "/api/skills/runs/{run_id}",
    tag = "skills",
    summary = "A skill run's ActResult (exit_reason null while it runs)",
    params(("run_id" = String, Path, description = "the run id")),
    responses(
        (status = 200, description = "the run's state", body = Envelope<ActResult>),
        (status = 404, description = "no such run", body = ErrorBody),
    )
)]
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let run_id = path.into_inner();
    let skills = std::sync::Arc::clone(&k.skills);
    let id = run_id.clone();
    match web::block(move || skills.status(&id))
        .await
        .map_err(ApiError::internal)?
    {
        Some(r) => Ok(ok(r)),
        None => Err(ApiError::not_found(format!("no skill run {run_id:?}"))),
    }
}

/// The media type an artifact is served with: text types as themselves, except markup a
/// browser would render (HTML, SVG, XML), which is served as plain text so an artifact a model
/// wrote can never run script on the API's origin.
fn media_type(path: &str) -> &'static str {
    match rumi_domain::skill::disclosure::mime_for(path) {
        "text/html"
        | "image/svg+xml"
        | "application/xml"
        | "text/xml"
        | "application/xhtml+xml" => "text/plain; charset=utf-8",
        m if m.starts_with("text/") => m,
        "application/json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// `GET /api/skills/runs/{run_id}/artifacts/{path}`
#[utoipa::path(
    get,
    operation_id = "skills_artifact_get",
    path = "/api/skills/runs/{run_id}/artifacts/{path}",
    tag = "skills",
    summary = "An artifact's raw bytes (no envelope), by its artifacts[].path (build/…)",
    params(
        ("run_id" = String, Path, description = "the run id"),
        ("path" = String, Path, description = "the artifact's path as artifacts[].path gives it, e.g. build/report.md"),
    ),
    responses(
        (status = 200, description = "the artifact's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "not an artifact path (it must start with build/ and stay inside it)", body = ErrorBody),
        (status = 404, description = "no such run or artifact", body = ErrorBody),
    )
)]
pub async fn artifact(
    k: web::Data<Kernel>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (run_id, file) = path.into_inner();
    let skills = std::sync::Arc::clone(&k.skills);
    let f = file.clone();
    let (f, len) = web::block(move || skills.artifact(&run_id, &f))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            ArtifactError::BadPath(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::not_found(e.to_string()),
        })?;
    // Streamed in 64 KiB chunks: an artifact may be as large as the run's disk budget.
    let body = tokio::fs::File::from_std(f);
    let chunks = futures_util::stream::unfold(Some(body), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(web::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(media_type(&file))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Content-Security-Policy", "sandbox; default-src 'none'"))
        .no_chunking(len)
        .streaming(chunks))
}
