//! `GET /api/schedules` (contract §10, §16 "Scheduler"): every flow's schedule with its next fire
//! time, last scheduled run and problems, as the `Scheduler` actor holds them.

use super::error::{ok, ApiError, Envelope};
use actix_web::{web, HttpResponse};
use rumi_actors::scheduler::{GetSchedules, ScheduleInfo};
use rumi_actors::Kernel;
use serde::Serialize;
use utoipa::ToSchema;

/// `{schedules: [...]}`.
#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    /// One per flow that has a `schedule`, valid or not, sorted by flow id.
    pub schedules: Vec<ScheduleInfo>,
}

/// `GET /api/schedules`
#[utoipa::path(
    get,
    operation_id = "schedules_list",
    path = "/api/schedules",
    tag = "schedules",
    summary = "Every flow's schedule: expression or interval, time zone, next fire, last run, problems",
    responses(
        (status = 200, description = "the schedules, sorted by flow id", body = Envelope<ScheduleList>),
        (status = 500, description = "the scheduler did not answer", body = super::error::ErrorBody),
    )
)]
pub async fn list(k: web::Data<Kernel>) -> Result<HttpResponse, ApiError> {
    let schedules = k.scheduler.send(GetSchedules).await?;
    Ok(ok(ScheduleList { schedules }))
}
