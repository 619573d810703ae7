//! The one mapping of errors to HTTP statuses, and the response envelope
//! `{success, data, error}` every JSON response uses (contract §12). Messages never carry a host
//! path, a secret or a stack trace: internal failures are logged and answered with a generic text.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use rumi_actors::kernel::RunError;
use rumi_actors::limiter::LimiterError;
use rumi_actors::registry::RegistryError;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use utoipa::ToSchema;

/// An API failure: a status and a message safe to show.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// The methods a 405 names in `Allow`.
    pub allow: Option<String>,
    pub data: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            allow: None,
            data: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    /// An internal failure: the detail goes to the log, the client gets a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the kernel log",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The envelope of every JSON answer: `success`, the `data` and the `error` message (null when
/// the request succeeded).
#[derive(Serialize, ToSchema)]
pub struct Envelope<T: Serialize> {
    pub success: bool,
    #[schema(required = true)]
    pub data: Option<T>,
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The envelope of a refused request: `success` is false and `error` says why; `data` is null but
/// for a run refused at its deadline (`{run_id, status}`, or the run record).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub success: bool,
    #[schema(required = true)]
    pub data: Option<Value>,
    pub error: String,
}

/// 200 with `data`.
pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope {
        success: true,
        data: Some(data),
        error: None,
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            b.insert_header(("Retry-After", secs.to_string()));
        }
        if let Some(allow) = &self.allow {
            b.insert_header(("Allow", allow.clone()));
        }
        b.json(ErrorBody {
            success: false,
            data: self.data.clone(),
            error: self.message.clone(),
        })
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
            RegistryError::Invalid { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            RegistryError::Storage => ApiError::internal(e),
        }
    }
}

impl From<rumi_actors::lifecycle::ImportError> for ApiError {
    fn from(e: rumi_actors::lifecycle::ImportError) -> Self {
        use rumi_actors::lifecycle::ImportError as E;
        match e {
            E::Refused(m) => ApiError::bad_request(m),
            E::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            E::Storage(_) => ApiError::internal(e),
        }
    }
}

impl From<rumi_actors::lifecycle::ApplyError> for ApiError {
    fn from(e: rumi_actors::lifecycle::ApplyError) -> Self {
        use rumi_actors::lifecycle::ApplyError as E;
        match e {
            E::BadId(m) => ApiError::bad_request(m),
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            E::Storage(_) => ApiError::internal(e),
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::FlowNotFound(_) | RunError::FlowFailedToLoad { .. } => {
                ApiError::not_found(e.to_string())
            }
            RunError::InputsTooDeep => ApiError::bad_request(e.to_string()),
            RunError::Limiter(LimiterError::QueueFull { .. }) => {
                let mut a = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string());
                a.retry_after = Some(1);
                a
            }
            RunError::Limiter(LimiterError::Closed) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            RunError::TimedOutWaiting { ref run_id } => {
                let mut a = ApiError::new(StatusCode::REQUEST_TIMEOUT, e.to_string());
                a.data = Some(serde_json::json!({"run_id": run_id, "status": "timed_out"}));
                a
            }
            RunError::Lost => ApiError::internal(e),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the kernel is not ready ({e})"),
        )
    }
}
