//! A warm pip install (contract §9 "pip"): the time from `POST /api/pip/requests/{key}/approve`
//! to its answer `installed`, against the release kernel in permissive mode with a local wheel
//! directory (`RUMI_PIP_FIND_LINKS`): pip's download from the directory, the stdlib installer,
//! the check against the lock, the sync and the atomic swap, the worker's release.
//! `cargo bench --bench pip` (BENCH_PIP_ROUNDS, default 15).

mod support;

use serde_json::{json, Value};
use std::time::Instant;
use support::{pct, Summary};

fn wheel(dir: &std::path::Path) {
    let script = r#"
import sys, zipfile
d = sys.argv[1]
with zipfile.ZipFile(f"{d}/tinypkg-1.0-py3-none-any.whl", "w") as z:
    z.writestr("tinypkg/__init__.py", "VALUE = 42\n")
    z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
    z.writestr("tinypkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("tinypkg-1.0.dist-info/RECORD", "")
"#;
    let ok = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .status()
        .expect("python3")
        .success();
    assert!(ok, "building the wheel failed");
}

fn main() {
    let rounds: usize = std::env::var("BENCH_PIP_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let wheels = tempfile::tempdir().unwrap();
    wheel(wheels.path());
    let home = tempfile::tempdir().unwrap();
    let pack = home.path().join("ecosystem/pip_bench/backend");
    std::fs::create_dir_all(pack.join("blocks")).unwrap();
    std::fs::write(
        pack.join("ecosystem.json"),
        r#"{"pack_id":"pip_bench","pack_identity":"bench:pip"}"#,
    )
    .unwrap();
    std::fs::write(pack.join("requirements.lock"), "tinypkg==1.0\n").unwrap();
    let (kernel, _) = support::start_with(
        home.path(),
        &["--permissive"],
        &[("RUMI_PIP_FIND_LINKS", wheels.path().to_str().unwrap())],
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();
    let base = kernel.base.clone();
    let mut ms: Vec<f64> = rt.block_on(async {
        support::approve(&c, &base, "pip_bench").await;
        let mut ms = Vec::new();
        for round in 0..rounds {
            // A new lock (a changed comment) is a new candidate; re-approving the pack after the
            // change keeps it approved.
            std::fs::write(
                pack.join("requirements.lock"),
                format!("# round {round}\ntinypkg==1.0\n"),
            )
            .unwrap();
            support::approve(&c, &base, "pip_bench").await;
            let scan = support::post(&c, &format!("{base}/api/pip/candidates/scan"), &json!({}))
                .await
                .expect("scan");
            let key = scan["data"]["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["status"] == "pending")
                .map(|c| {
                    c["candidate_key"]
                        .as_str()
                        .unwrap()
                        .replace(':', "%3A")
                        .replace('/', "%2F")
                })
                .expect("a pending candidate");
            let t = Instant::now();
            let v: Value = support::post(
                &c,
                &format!("{base}/api/pip/requests/{key}/approve"),
                &json!({}),
            )
            .await
            .expect("approve");
            let took = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(v["data"]["status"], "installed", "{v}");
            ms.push(took);
        }
        ms
    });
    ms.sort_by(f64::total_cmp);
    let mut summary = Summary::default();
    summary.add("pip_install_rounds", rounds.to_string());
    summary.add(
        "pip_install_approve_to_installed_p50_ms",
        format!("{:.0}", pct(&ms, 0.5)),
    );
    summary.add(
        "pip_install_approve_to_installed_p90_ms",
        format!("{:.0}", pct(&ms, 0.9)),
    );
    summary.add(
        "pip_install_approve_to_installed_max_ms",
        format!("{:.0}", pct(&ms, 1.0)),
    );
    support::finish(
        &summary,
        "pip install (warm, local wheels)",
        "bench-pip.json",
    );
    drop(kernel);
}
