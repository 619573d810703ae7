//! `rumi pack import <folder|archive>` and `rumi pack apply <staging_id>` (contract §2.4). A
//! folder is sent as its absolute path (the CLI and the kernel share the machine, and the kernel
//! copies it without following links); an archive is uploaded as the request body, streamed from
//! disk with a progress bar on a terminal.

use super::output::{text, Out};
use crate::client::Client;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The kernel refuses archives over this; the CLI says so before sending a byte.
const MAX_ARCHIVE_BYTES: u64 = 500 << 20;
/// How long an upload may take in all (the kernel's own deadline is 30 minutes).
const UPLOAD_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Archives at least this large get a progress bar.
const PROGRESS_FROM: u64 = 4 << 20;
const CHUNK: usize = 256 * 1024;

pub async fn import(c: &Client, out: &Out, path: &Path) -> Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{} cannot be read", path.display()))?;
    let staged = if meta.is_dir() {
        let abs = std::fs::canonicalize(path)
            .with_context(|| format!("{} cannot be resolved", path.display()))?;
        let Some(abs) = abs.to_str() else {
            bail!("{} is not a UTF-8 path", abs.display());
        };
        c.post("/api/packs/import", json!({ "path": abs })).await?
    } else {
        upload(c, path, meta.len()).await?
    };
    if out.json {
        out.print_json(&staged);
        return Ok(());
    }
    println!(
        "staged {} {} ({}): {} file(s), {} bytes",
        text(&staged["pack_id"]),
        staged["version"]
            .as_str()
            .map_or_else(|| "(no version)".to_string(), super::output::clean),
        text(&staged["pack_identity"]),
        staged["files"].as_array().map_or(0, Vec::len),
        text(&staged["bytes"]),
    );
    for s in staged["skipped"].as_array().into_iter().flatten() {
        eprintln!("skipped {}: {}", text(&s["path"]), text(&s["reason"]));
    }
    println!(
        "staging id {}; install it with: rumi pack apply {}",
        text(&staged["staging_id"]),
        text(&staged["staging_id"])
    );
    Ok(())
}

/// Streams the archive as the body, with a progress bar for large ones (hidden off a terminal).
async fn upload(c: &Client, path: &Path, len: u64) -> Result<Value> {
    if len > MAX_ARCHIVE_BYTES {
        bail!(
            "{} is larger than {} MiB, the most the kernel accepts for a pack archive",
            path.display(),
            MAX_ARCHIVE_BYTES >> 20
        );
    }
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("{} cannot be opened", path.display()))?;
    let bar = if len >= PROGRESS_FROM {
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "uploading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = bar.clone();
    let stream = futures_util::stream::unfold((file, progress), |(mut f, bar)| async move {
        let mut buf = vec![0u8; CHUNK];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                bar.inc(n as u64);
                Some((Ok::<_, std::io::Error>(buf), (f, bar)))
            }
            Err(e) => Some((Err(e), (f, bar))),
        }
    });
    let answer = c
        .upload(
            "/api/packs/import",
            reqwest::Body::wrap_stream(stream),
            "application/zip",
            len,
            UPLOAD_DEADLINE,
        )
        .await;
    bar.finish_and_clear();
    answer
}

pub async fn apply(c: &Client, out: &Out, staging_id: &str) -> Result<()> {
    let a = c
        .post("/api/packs/apply", json!({ "staging_id": staging_id }))
        .await?;
    if out.json {
        out.print_json(&a);
        return Ok(());
    }
    let state = a["pack"]["state"].as_str().unwrap_or("unknown");
    println!(
        "{} {}: {}",
        if a["replaced"] == true {
            "updated"
        } else {
            "installed"
        },
        text(&a["pack_id"]),
        out.paint_status(state, state),
    );
    if let Some(b) = a["backup"].as_str() {
        println!("the previous version is kept in {b}");
    }
    println!(
        "nothing of it runs until you approve it: rumi pack approve {}",
        text(&a["pack_id"])
    );
    Ok(())
}
