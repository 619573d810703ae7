//! Run history endpoints.

use super::error::{ok, ApiError};
use super::flows::{run_body, RunView};
use actix_web::{web, HttpResponse};
use rumi_actors::run_history::{GetRun, ListRuns};
use rumi_actors::Kernel;
use serde::Deserialize;

/// Query of `GET /api/runs`.
#[derive(Deserialize)]
pub struct RunsQuery {
    limit: Option<usize>,
    flow_id: Option<String>,
}

/// `GET /api/runs?limit=&flow_id=`: newest first.
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
        .map(|r| RunView::new(&k, r, &r.result, false))
        .collect::<Vec<_>>()))
}

/// `GET /api/runs/{run_id}`
pub async fn get(k: web::Data<Kernel>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let r =
        k.history.send(GetRun(path.clone())).await?.ok_or_else(|| {
            ApiError::not_found(format!("no run {:?} is recorded", path.as_str()))
        })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(run_body(&k, &r, true, None, true)))
}
