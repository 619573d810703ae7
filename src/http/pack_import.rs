//! Pack import and apply (contract §2.4): `POST /api/packs/import` stages a folder or archive
//! named by path, or an archive sent as the body, streamed to a file (never whole in memory);
//! `POST /api/packs/apply` swaps a staged import in for the pack (through the Registry, which
//! runs one apply at a time). The rules and the disk work are `rumi_actors::lifecycle`.

use super::body::{json_object, BodyLimit};
use super::error::{ok, ApiError, Envelope, ErrorBody};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rumi_actors::audit::{AuditEntry, Category, Record};
use rumi_actors::lifecycle::{self, ImportError, Staged, UploadFile};
use rumi_actors::registry::{AppliedPack, ApplyStaged};
use rumi_actors::Kernel;
use rumi_domain::archive::MAX_ARCHIVE_BYTES;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

/// Imports at once: each may hold an upload of 500 MiB and its extraction of 500 MiB on disk.
pub const MAX_CONCURRENT_IMPORTS: usize = 2;
/// The whole upload's deadline (a slow client holds an import slot at most this long).
pub const UPLOAD_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Uploads received at once (each may hold 500 MiB on disk until its extraction).
pub const MAX_CONCURRENT_UPLOADS: usize = 2;
/// After this long, an upload arriving slower than [`MIN_UPLOAD_BYTES_PER_SEC`] on average is
/// cut off: a client trickling bytes must not hold an upload slot for the whole deadline.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(10);
/// The slowest average rate an upload may keep after [`UPLOAD_GRACE`] (500 MiB in the 30-minute
/// deadline needs about 280 KiB/s anyway).
pub const MIN_UPLOAD_BYTES_PER_SEC: u64 = 64 * 1024;

/// The import slots, as app data: `work` for staging (extraction or a folder copy), `uploads`
/// for receiving archive bodies. An upload takes a work slot only once its body has arrived, so
/// slow uploads never lock `{path}` imports out.
#[derive(Clone)]
pub struct ImportSlots {
    pub work: Arc<tokio::sync::Semaphore>,
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl Default for ImportSlots {
    fn default() -> Self {
        ImportSlots {
            work: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_IMPORTS)),
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_UPLOADS)),
        }
    }
}

/// 429 with `Retry-After` when every slot of `slots` is taken.
fn busy(what: &str, n: usize) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("{n} {what} are already running; retry when one ends"),
    );
    e.retry_after = Some(5);
    e
}

/// The JSON body of `POST /api/packs/import`.
#[derive(ToSchema)]
pub struct ImportRequest {
    /// An absolute path on the kernel's machine: a folder, a `.zip` or a `.rumipack` file.
    pub path: String,
}

/// The body of `POST /api/packs/apply`.
#[derive(ToSchema)]
pub struct ApplyRequest {
    /// The `staging_id` an import answered (16 lowercase hex digits).
    pub staging_id: String,
}

/// `POST /api/packs/import`
#[utoipa::path(
    post,
    operation_id = "packs_import",
    path = "/api/packs/import",
    tag = "packs",
    summary = "Stage a pack from a folder or archive on the kernel's machine, or an uploaded zip",
    request_body(
        content(
            (ImportRequest = "application/json"),
            (Vec<u8> = "application/zip"),
        ),
        description = "`{path}` as JSON, or the archive itself (`Content-Type: application/zip`, \
                       at most 500 MiB, streamed to disk)"
    ),
    responses(
        (status = 200, description = "the staged import: apply it with its `staging_id`", body = Envelope<Staged>),
        (status = 400, description = "a rule was broken (named with the entry): a bad entry name, a symlink entry, more than 2000 files, not exactly one top-level directory, no valid ecosystem.json, ...; nothing was kept", body = ErrorBody),
        (status = 408, description = "the body stopped arriving", body = ErrorBody),
        (status = 413, description = "the archive is over 500 MiB, or its files over 500 MiB unpacked", body = ErrorBody),
        (status = 429, description = "two imports are already running; retry", body = ErrorBody),
        (status = 500, description = "the kernel's disk failed; nothing was kept", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn import(
    k: web::Data<Kernel>,
    slots: web::Data<ImportSlots>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let layout = k.layout.clone();
    let (source, staged) = match content_type.as_str() {
        "application/zip" | "application/x-zip-compressed" => {
            let Ok(_receiving) = slots.uploads.clone().try_acquire_owned() else {
                return Err(busy("uploads", MAX_CONCURRENT_UPLOADS));
            };
            let upload = receive(&req, payload, &k).await?;
            let Ok(_slot) = slots.work.clone().try_acquire_owned() else {
                return Err(busy("imports", MAX_CONCURRENT_IMPORTS));
            };
            let staged = web::block(move || lifecycle::import_upload(&layout, upload))
                .await
                .map_err(ApiError::internal)?;
            ("upload", staged)
        }
        "" | "application/json" => {
            let body = json_object(&req, payload).await?;
            let ImportRequest { path } = match body.get("path") {
                Some(Value::String(p)) => ImportRequest { path: p.clone() },
                _ => {
                    return Err(ApiError::bad_request(
                        "path (a string: an absolute folder, .zip or .rumipack path on the \
                         kernel's machine) is required, or send the archive as the body with \
                         Content-Type: application/zip",
                    ))
                }
            };
            let Ok(_slot) = slots.work.clone().try_acquire_owned() else {
                return Err(busy("imports", MAX_CONCURRENT_IMPORTS));
            };
            let staged = web::block(move || lifecycle::import_path(&layout, &path))
                .await
                .map_err(ApiError::internal)?;
            ("path", staged)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "Content-Type {other:?} is not accepted: send JSON {{path}} or the archive as \
                 application/zip"
            )))
        }
    };
    match staged {
        Ok(s) => {
            k.audit.do_send(Record(
                AuditEntry::new(Category::Approval, "pack_imported", true)
                    .pack(&s.pack_id)
                    .details(json!({
                        "staging_id": s.staging_id, "source": source, "files": s.files.len(),
                        "bytes": s.bytes, "pack_identity": s.pack_identity, "version": s.version,
                        "skipped": s.skipped.len(),
                    })),
            ));
            Ok(ok(s))
        }
        Err(e) => {
            if !matches!(e, ImportError::Storage(_)) {
                k.audit.do_send(Record(
                    AuditEntry::new(Category::Security, "pack_import_refused", false)
                        .details(json!({"source": source}))
                        .error(&e.to_string(), Some("import_refused")),
                ));
            }
            Err(e.into())
        }
    }
}

/// Streams the body to an upload file under `pack_staging/`, within the archive cap, an idle
/// deadline per chunk (`RUMI_BODY_READ_TIMEOUT`) and [`UPLOAD_DEADLINE`] for the whole. On any
/// failure the file is removed (dropping the [`UploadFile`]).
async fn receive(
    req: &HttpRequest,
    mut payload: web::Payload,
    k: &Kernel,
) -> Result<UploadFile, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the archive is larger than {} MiB; a pack archive may be at most that",
                MAX_ARCHIVE_BYTES >> 20
            ),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_ARCHIVE_BYTES) {
        return Err(too_large());
    }
    let idle = req
        .app_data::<BodyLimit>()
        .map(|l| l.read_timeout)
        .unwrap_or(Duration::from_secs(30));
    let layout = k.layout.clone();
    let (upload, file) = web::block(move || UploadFile::create(&layout))
        .await
        .map_err(ApiError::internal)??;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file));
    let started = Instant::now();
    let mut total: u64 = 0;
    loop {
        let left = UPLOAD_DEADLINE.saturating_sub(started.elapsed());
        let next = tokio::time::timeout(idle.min(left), payload.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the archive stopped arriving (nothing for {:.0} s, or over {} min in \
                         all); send it again",
                        idle.as_secs_f64(),
                        UPLOAD_DEADLINE.as_secs() / 60
                    ),
                )
            })?;
        let Some(chunk) = next else { break };
        let elapsed = started.elapsed();
        if elapsed > UPLOAD_GRACE
            && total < MIN_UPLOAD_BYTES_PER_SEC.saturating_mul(elapsed.as_secs())
        {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the archive arrives slower than {} KiB/s; send it again over a faster link \
                     (or import it by path on the kernel's machine)",
                    MIN_UPLOAD_BYTES_PER_SEC / 1024
                ),
            ));
        }
        let chunk =
            chunk.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
        total += chunk.len() as u64;
        if total > MAX_ARCHIVE_BYTES {
            return Err(too_large());
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    if total == 0 {
        return Err(ApiError::bad_request("the archive is empty"));
    }
    Ok(upload)
}

/// `POST /api/packs/apply {staging_id}`
#[utoipa::path(
    post,
    operation_id = "packs_apply",
    path = "/api/packs/apply",
    tag = "packs",
    summary = "Install or update a pack from a staged import (the old one is backed up)",
    request_body(content = ApplyRequest, description = "the staging id an import answered"),
    responses(
        (status = 200, description = "the pack after the rescan (`installed` when new, `modified` when it replaced an approved pack) and the old pack's backup", body = Envelope<AppliedPack>),
        (status = 400, description = "staging_id missing or not 16 lowercase hex digits", body = ErrorBody),
        (status = 404, description = "no such staged import (applied already, evicted, or never made)", body = ErrorBody),
        (status = 409, description = "`pack_identity mismatch` with the installed pack, or a pack that cannot be replaced; nothing was changed", body = ErrorBody),
        (status = 413, description = "the body is larger than `RUMI_MAX_BODY_BYTES`", body = ErrorBody),
        (status = 500, description = "the kernel's disk failed", body = ErrorBody),
        (status = 503, description = "the kernel is not ready", body = ErrorBody),
    )
)]
pub async fn apply(
    k: web::Data<Kernel>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = json_object(&req, payload).await?;
    let ApplyRequest { staging_id } = match body.get("staging_id") {
        Some(Value::String(s)) => ApplyRequest {
            staging_id: s.clone(),
        },
        _ => {
            return Err(ApiError::bad_request(
                "staging_id (a string: the staging_id POST /api/packs/import answered) is \
                 required",
            ))
        }
    };
    let applied: AppliedPack = k.registry.send(ApplyStaged { staging_id }).await??;
    Ok(ok(applied))
}
