//! What a reload costs: 1 000 flows, 1 000 modifiers and 200 pack routes.
//!
//! * `catalog::build` alone (pure: precedence, modifiers, routes, schedules), criterion;
//! * `POST /api/flows/reload` through the release kernel: read, hash-check, parse and build, until
//!   the new catalog is published (target ≤ 300 ms);
//! * the hot path's latency (a one-step flow over HTTP) idle and while reloads run back to back
//!   (target: p99 unchanged).
//!
//! `cargo bench --bench catalog`

mod support;

use rumi_domain::catalog::modifier::{ModifierFile, ModifierOrigin};
use rumi_domain::catalog::routes::RoutesFile;
use rumi_domain::catalog::{build, Sources};
use rumi_domain::flow::{parse_flow, FlowOrigin, SourceRank};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const FLOWS: usize = 1000;
const MODIFIERS: usize = 1000;
const PACKS: usize = 10;
const ROUTES_PER_PACK: usize = 20;

fn flow_text(i: usize) -> String {
    let mut t = format!("flow_id: f{i}\nphases: [pre, main, post]\nsteps:\n");
    for (s, phase) in ["pre", "main", "main", "post"].iter().enumerate() {
        t.push_str(&format!(
            "  - {{id: s{s}, phase: {phase}, type: set, input: {{key: k{s}, value: \"${{ctx.name}}\"}}}}\n"
        ));
    }
    t
}

fn modifier_text(i: usize) -> String {
    // Mostly exact targets, a few patterns, every action.
    let target = if i % 100 == 0 {
        format!("\"f{}*\"", i % 10)
    } else {
        format!("f{}", i % FLOWS)
    };
    let (action, extra) = match i % 5 {
        0 => ("inject_before", "target_step_id: s1\n"),
        1 => ("inject_after", "target_step_id: s1\n"),
        2 => ("append", ""),
        3 => ("replace", "target_step_id: s2\n"),
        _ => ("remove", "target_step_id: s2\n"),
    };
    let step = if action == "remove" {
        String::new()
    } else {
        format!("step: {{id: m{i}, type: set, input: {{key: m{i}, value: 1}}}}\n")
    };
    format!("modifier_id: m{i}\ntarget_flow_id: {target}\nphase: main\npriority: {}\naction: {action}\n{extra}{step}", i % 7)
}

fn routes_text(pack: usize) -> String {
    let routes: Vec<_> = (0..ROUTES_PER_PACK)
        .map(|r| {
            json!({"method": "GET", "path": format!("/api/p{pack}/r{r}/{{id}}"), "flow_id": format!("f{}", pack * ROUTES_PER_PACK + r), "description": "bench"})
        })
        .collect();
    json!({ "routes": routes }).to_string()
}

fn sources() -> Sources {
    let flows = (0..FLOWS)
        .map(|i| {
            parse_flow(
                &flow_text(i),
                FlowOrigin {
                    rank: SourceRank::Shared,
                    path: format!("user_data/shared/flows/f{i}.flow.yaml"),
                    pack_id: None,
                },
            )
        })
        .collect();
    let modifiers = (0..MODIFIERS)
        .map(|i| ModifierFile {
            origin: ModifierOrigin {
                rank: SourceRank::Shared,
                path: format!("user_data/shared/flows/modifiers/m{i}.modifier.yaml"),
                pack_id: None,
            },
            bytes: Ok(modifier_text(i).into_bytes()),
        })
        .collect();
    let routes = (0..PACKS)
        .map(|p| RoutesFile {
            pack_id: format!("pack{p}"),
            file: format!("ecosystem/pack{p}/routes.json"),
            bytes: Ok(routes_text(p).into_bytes()),
        })
        .collect();
    Sources {
        flows,
        modifiers,
        routes,
        unapproved_routes: Vec::new(),
        environment: Default::default(),
    }
}

fn write(home: &Path, rel: &str, text: &str) {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn main() {
    let (mut c, rt) = setup();
    let mut summary = Summary::default();

    // ---- the pure part --------------------------------------------------------------------
    let mut samples = Vec::new();
    c.bench_function(
        "catalog::build (1000 flows, 1000 modifiers, 200 routes)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let s = sources();
                    let t = Instant::now();
                    let catalog = build(s);
                    let d = t.elapsed();
                    assert_eq!(catalog.flows.flows.len(), FLOWS);
                    total += d;
                    samples.push(d.as_secs_f64() * 1000.0);
                }
                total
            })
        },
    );
    samples.sort_by(f64::total_cmp);
    summary.add(
        "catalog::build",
        format!(
            "p50 {:.1} ms, max {:.1} ms",
            pct(&samples, 0.5),
            pct(&samples, 1.0)
        ),
    );

    // ---- through the kernel ---------------------------------------------------------------
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    for i in 0..FLOWS {
        write(
            home,
            &format!("user_data/shared/flows/f{i}.flow.yaml"),
            &flow_text(i),
        );
    }
    for i in 0..MODIFIERS {
        write(
            home,
            &format!("user_data/shared/flows/modifiers/m{i}.modifier.yaml"),
            &modifier_text(i),
        );
    }
    write(
        home,
        "user_data/shared/flows/hot.flow.yaml",
        "flow_id: hot\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: greeting, value: \"hi ${ctx.name}\"}}\n",
    );
    for p in 0..PACKS {
        write(
            home,
            &format!("ecosystem/pack{p}/backend/ecosystem.json"),
            &json!({"pack_id": format!("pack{p}"), "pack_identity": format!("bench:pack{p}")})
                .to_string(),
        );
        write(
            home,
            &format!("ecosystem/pack{p}/backend/routes.json"),
            &routes_text(p),
        );
    }
    let (kernel, _) = start_with(home, &["--permissive"], &[], None);
    let base = kernel.base.clone();
    let client = reqwest::Client::new();
    rt.block_on(async {
        for p in 0..PACKS {
            approve(&client, &base, &format!("pack{p}")).await;
        }
    });
    let reload = |client: &reqwest::Client| {
        let url = format!("{base}/api/flows/reload");
        let client = client.clone();
        async move {
            let t = Instant::now();
            let v = post(&client, &url, &json!({})).await.expect("reload");
            assert!(v["data"]["flows"].as_u64().unwrap() > FLOWS as u64);
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    let mut reloads = Vec::new();
    rt.block_on(async {
        for _ in 0..20 {
            reloads.push(reload(&client).await);
        }
    });
    reloads.sort_by(f64::total_cmp);
    summary.add(
        "POST /api/flows/reload",
        format!(
            "p50 {:.1} ms, max {:.1} ms over {} reloads (target ≤ 300 ms)",
            pct(&reloads, 0.5),
            pct(&reloads, 1.0),
            reloads.len()
        ),
    );

    // The hot path, idle and while reloads run back to back.
    let hot = |client: reqwest::Client, n: usize| {
        let url = format!("{base}/api/flows/hot/run");
        async move {
            let body = json!({"inputs": {"name": "bench"}});
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                post(&client, &url, &body).await.expect("run");
                v.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            v.sort_by(f64::total_cmp);
            v
        }
    };
    let idle = rt.block_on(hot(client.clone(), 3000));
    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let stop = stop.clone();
        let client = client.clone();
        let url = format!("{base}/api/flows/reload");
        rt.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                post(&client, &url, &json!({})).await.expect("reload");
                n += 1;
            }
            n
        })
    };
    let busy = rt.block_on(hot(reqwest::Client::new(), 3000));
    stop.store(true, Ordering::SeqCst);
    let during = rt.block_on(reloader).unwrap();
    for (name, v) in [("hot path idle", &idle), ("hot path during reloads", &busy)] {
        summary.add(
            name,
            format!(
                "p50 {:.3} ms, p99 {:.3} ms over {} runs",
                pct(v, 0.5),
                pct(v, 0.99),
                v.len()
            ),
        );
    }
    summary.add("reloads during the busy run", during.to_string());
    summary.add(
        "kernel RSS after the reloads",
        format!("{} MiB", rss_kib(kernel.child.id()) / 1024),
    );
    drop(kernel);
    finish(&summary, "catalog reload", "bench-catalog.json");
}
