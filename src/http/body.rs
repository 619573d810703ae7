//! Reading JSON bodies ourselves, so every failure gets the envelope and the right status: a body
//! over `RUMI_MAX_BODY_BYTES` is 413 (checked on the declared length first, then while reading,
//! so a lying client cannot make us buffer more), malformed JSON is 400 with the parser's reason,
//! and a body that does not arrive whole within `RUMI_BODY_READ_TIMEOUT` is 408: a client sending
//! a byte now and then cannot hold a connection (and a worker's attention) forever.

use super::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde_json::{Map, Value};

/// The configured body limits, as app data.
#[derive(Clone, Copy)]
pub struct BodyLimit {
    pub max_bytes: usize,
    /// The deadline for the whole body, from the handler's first read.
    pub read_timeout: std::time::Duration,
}

/// Reads the body as a JSON object; an empty body is `{}`.
pub async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Map<String, Value>, ApiError> {
    let body = bytes(req, payload).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// Reads the whole body, any content type, within the size and time limits.
pub async fn bytes(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<web::BytesMut, ApiError> {
    let BodyLimit {
        max_bytes: limit,
        read_timeout,
    } = req.app_data::<BodyLimit>().copied().unwrap_or(BodyLimit {
        max_bytes: 1024 * 1024,
        read_timeout: std::time::Duration::from_secs(30),
    });
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let body = tokio::time::timeout(read_timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:.1} s (RUMI_BODY_READ_TIMEOUT); send \
                     it whole",
                    read_timeout.as_secs_f64()
                ),
            )
        })??;
    Ok(body)
}
