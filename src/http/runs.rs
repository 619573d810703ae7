//! Run history endpoints.

use super::error::{ok, ApiError, Envelope, ErrorBody};
use super::flows::{run_body, RunView};
use actix_web::{web, HttpResponse};
use rumi_actors::run_history::{GetRun, ListRuns};
use rumi_actors::Kernel;
use serde::Deserialize;
use utoipa::IntoParams;

/// Query of `GET /api/runs`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// At most this many runs (1..1000, default 50).
    limit: Option<usize>,
    /// Only runs of this flow.
    flow_id: Option<String>,
}

/// `GET /api/runs?limit=&flow_id=`: newest first, each with its trigger, times and inputs digest.
#[utoipa::path(
    get,
    operation_id = "runs_list",
    path = "/api/runs",
    tag = "runs",
    summary = "The latest run records, newest first",
    params(RunsQuery),
    responses(
        (status = 200, description = "the runs (their inputs kept only as a digest)", body = Envelope<Vec<RunView>>),
        (status = 400, description = "a malformed query", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn list(
    k: web::Data<Kernel>,
    q: web::Query<RunsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs = k
        .history
        .send(ListRuns {
            limit,
            flow_id: q.flow_id.clone(),
        })
        .await?;
    Ok(ok(runs
        .iter()
        .map(|r| RunView::new(&k, r, &r.result, true))
        .collect::<Vec<_>>()))
}

/// `GET /api/runs/{run_id}`
#[utoipa::path(
    get,
    operation_id = "runs_get",
    path = "/api/runs/{run_id}",
    tag = "runs",
    summary = "One run record, with its trigger, times and inputs digest",
    params(("run_id" = String, Path, description = "the run id")),
    responses(
        (status = 200, description = "the run", body = Envelope<RunView>),
        (status = 404, description = "no run with this id is recorded", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let r =
        k.history.send(GetRun(path.clone())).await?.ok_or_else(|| {
            ApiError::not_found(format!("no run {:?} is recorded", path.as_str()))
        })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(run_body(&k, &r, true, None, true)))
}
