//! Pack import over HTTP (not a timed test): a 200 MiB zip of 2 000 files (100 KiB of
//! incompressible bytes each, stored) uploaded as the body of `POST /api/packs/import` to the
//! release kernel. It reports the wall time of the upload and extraction, the kernel's RSS when
//! idle and at its highest while the upload runs (sampled from /proc every 5 ms: the upload is
//! streamed to disk, so the peak must stay within 64 MiB of idle), then the time of the apply
//! and of the approval (which hashes all 200 MiB).
//!
//! `cargo bench --bench pack_import`

mod support;

use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Summary;

const FILES: usize = 2000;
const FILE_BYTES: usize = 100 * 1024;
const PACK: &str = "bench_import";

/// Writes the archive: `bench_import/ecosystem.json` and 1 999 files of xorshift bytes.
fn write_archive(path: &std::path::Path) -> u64 {
    let f = std::fs::File::create(path).expect("archive file");
    let mut z = zip::ZipWriter::new(std::io::BufWriter::new(f));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file(format!("{PACK}/ecosystem.json"), opts)
        .unwrap();
    z.write_all(
        format!(r#"{{"pack_id":"{PACK}","pack_identity":"bench:import","version":"1.0.0"}}"#)
            .as_bytes(),
    )
    .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; FILE_BYTES];
    for i in 1..FILES {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        z.start_file(format!("{PACK}/data/d{}/f{i}.bin", i % 20), opts)
            .unwrap();
        z.write_all(&buf).unwrap();
    }
    z.finish().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn main() {
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir_all(home.path().join("ecosystem")).unwrap();
    let work = tempfile::tempdir().expect("work dir");
    let archive = work.path().join("bench.zip");
    let size = write_archive(&archive);
    let mut summary = Summary::default();
    summary.add(
        "archive",
        format!("{:.1} MiB, {FILES} files (stored)", size as f64 / 1048576.0),
    );

    let (kernel, _) = support::start_with(home.path(), &["--permissive"], &[], None);
    let pid = kernel.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = kernel.base.clone();
    // Idle: after one request, so the server's lazy state is counted.
    rt.block_on(async {
        client
            .get(format!("{base}/api/packs"))
            .bearer_auth(support::TOKEN)
            .send()
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let idle = support::rss_kib(pid);

    let peak = Arc::new(AtomicU64::new(idle));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running) = (peak.clone(), running.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(support::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    let staged = rt.block_on(async {
        let file = tokio::fs::File::open(&archive).await.unwrap();
        let stream = futures_util::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let r = client
            .post(format!("{base}/api/packs/import"))
            .bearer_auth(support::TOKEN)
            .header("content-type", "application/zip")
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .expect("upload");
        let v: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(v["success"], true, "{v}");
        v
    });
    let import_time = t.elapsed();
    running.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    summary.add(
        "import (upload + extraction)",
        format!(
            "{:.2} s ({:.0} MiB/s), {} files staged",
            import_time.as_secs_f64(),
            size as f64 / 1048576.0 / import_time.as_secs_f64(),
            staged["data"]["files"].as_array().map_or(0, Vec::len)
        ),
    );
    summary.add(
        "kernel RSS",
        format!(
            "idle {:.1} MiB, peak during the import {:.1} MiB (+{:.1} MiB; bound +64 MiB)",
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            (peak.saturating_sub(idle)) as f64 / 1024.0
        ),
    );
    let sid = staged["data"]["staging_id"].as_str().unwrap().to_string();
    rt.block_on(async {
        let t = Instant::now();
        let v = support::post(
            &client,
            &format!("{base}/api/packs/apply"),
            &json!({"staging_id": sid}),
        )
        .await
        .expect("apply");
        assert_eq!(v["data"]["pack"]["state"], "installed", "{v}");
        summary.add(
            "apply (new pack, rescan)",
            format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0),
        );
        let t = Instant::now();
        support::approve(&client, &base, PACK).await;
        summary.add(
            "approve (hashes 200 MiB, 2000 files)",
            format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0),
        );
    });
    assert!(
        peak.saturating_sub(idle) <= 64 * 1024,
        "the import held more than 64 MiB: not streamed"
    );
    drop(kernel);
    support::finish(&summary, "pack import", "bench-pack-import.json");
}
