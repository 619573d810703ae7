//! `rumi image build|show` and `rumi doctor`: the Docker side of strict mode from the command
//! line, without a running kernel.

use crate::cli::output::Out;
use crate::config::{self, Settings};
use anyhow::{anyhow, bail, Result};
use rumi_actors::docker::image::{self, BuildOptions, Built};
use rumi_actors::docker::{instance_id, ContainerSettings, DockerEngine};
use rumi_actors::sockets::bind_unix;
use rumi_actors::SecurityMode;
use std::sync::Arc;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn engine(settings: &Settings) -> Arc<DockerEngine> {
    DockerEngine::new(
        settings.runtime.container.clone(),
        instance_id(&settings.home),
    )
}

/// `rumi image build`: builds the default image unless present, printing progress.
pub fn build_image(settings: &Settings, mirror: Option<String>) -> Result<()> {
    let tag = settings.runtime.container.image.clone();
    if tag != image::default_tag() {
        // A custom image is the operator's to provide; only check it.
        return show_image(settings);
    }
    let mirror = mirror
        .or_else(|| std::env::var("RUMI_DEBIAN_MIRROR").ok())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let layout = settings.layout();
    let options = BuildOptions {
        tag: tag.clone(),
        mirror,
        work_dir: layout.user_data().join("runtime").join("image-build"),
    };
    let engine = engine(settings);
    runtime()?.block_on(async {
        let client = engine.client().await.map_err(|why| anyhow!("{why}"))?;
        let mut progress = |line: &str| println!("[image] {line}");
        match image::build(&client, &options, &mut progress).await {
            Ok(Built::AlreadyPresent) | Ok(Built::Imported) => Ok(()),
            Err(why) => bail!("building {tag} failed: {why}"),
        }
    })
}

/// `rumi image show`: the image in use and whether it is present (exit code 3 when missing).
pub fn show_image(settings: &Settings) -> Result<()> {
    let engine = engine(settings);
    let status = runtime()?.block_on(engine.status());
    println!("image: {}", status.image);
    match status.image_present {
        Some(true) => {
            println!("present: yes");
            Ok(())
        }
        Some(false) => {
            println!("present: no ({})", image::missing_message(&status.image));
            std::process::exit(3);
        }
        None => bail!(
            "{}",
            status
                .reason
                .unwrap_or_else(|| "the Docker daemon is not reachable".into())
        ),
    }
}

/// `rumi doctor`: the home, the kernel and what strict mode needs, one line each (`--json`: a list
/// of `{check, ok, detail}`); exit code 1 when the configured mode cannot run blocks. A kernel
/// that is not running is reported, not counted: doctor is also the check before the first start.
pub fn doctor(out: &Out) -> Result<bool> {
    let settings = config::load(false)?;
    let mode = settings.runtime.mode;
    let layout = settings.layout();
    let mut checks: Vec<(bool, &str, String)> = Vec::new();
    let mut line = |ok: bool, what: &'static str, text: String| checks.push((ok, what, text));
    let (_, source) = config::find_home()?;
    line(
        true,
        "home",
        format!("{} ({})", settings.home.display(), source.describe()),
    );
    line(true, "security mode", mode.as_str().to_string());
    line(true, "kernel", kernel_line(&settings));
    let engine = engine(&settings);
    let status = runtime()?.block_on(engine.status());
    let strict = mode == SecurityMode::Strict;
    match (&status.version, status.available) {
        (Some(v), true) => line(
            true,
            "docker",
            format!(
                "reachable, version {v} (API {})",
                status.api_version.as_deref().unwrap_or("?")
            ),
        ),
        _ => line(
            !strict,
            "docker",
            status
                .reason
                .clone()
                .unwrap_or_else(|| "not reachable".into()),
        ),
    }
    match status.image_present {
        Some(true) => line(true, "image", format!("{} (present)", status.image)),
        Some(false) => line(!strict, "image", image::missing_message(&status.image)),
        None => line(
            !strict,
            "image",
            format!("{} (unknown: Docker is not reachable)", status.image),
        ),
    }
    let debootstrap = image::find_program("debootstrap");
    line(
        true,
        "debootstrap",
        match debootstrap {
            Some(p) => format!("{} (rumi image build can run)", p.display()),
            None => {
                "not installed (needed only to build the image: apt-get install debootstrap)".into()
            }
        },
    );
    let c: &ContainerSettings = &settings.runtime.container;
    line(
        true,
        "limits",
        format!(
            "memory {} MiB, pids {}, cpus {}, start {}",
            c.memory_bytes >> 20,
            c.pids_limit,
            c.nano_cpus as f64 / 1e9,
            if settings.runtime.container_start_eager {
                "at approval"
            } else {
                "at first call"
            }
        ),
    );
    let sockets = layout.sockets();
    let bindable = std::fs::create_dir_all(&sockets).is_ok() && socket_probe(&sockets).is_ok();
    line(
        bindable,
        "socket dirs",
        format!(
            "{} ({}, group {} mode {:o})",
            sockets.display(),
            if bindable {
                "a socket can be bound there"
            } else {
                "NO socket can be bound there"
            },
            c.socket_gid,
            c.socket_mode,
        ),
    );
    let root = rumi_actors::docker::is_root();
    line(
        root || !strict,
        "socket group",
        if root {
            "the kernel runs as root and can give sockets to the group".into()
        } else {
            format!(
                "the kernel is not root: it must belong to group {} (RUMI_EGRESS_SOCKET_GID)",
                c.socket_gid
            )
        },
    );
    line(
        strict || settings.runtime.python.is_file(),
        "python (host)",
        format!(
            "{} (used in permissive mode only)",
            settings.runtime.python.display()
        ),
    );
    let problems = checks.iter().filter(|(ok, _, _)| !ok).count();
    if out.json {
        out.print_json(&serde_json::Value::Array(
            checks
                .iter()
                .map(
                    |(ok, what, text)| serde_json::json!({"check": what, "ok": ok, "detail": text}),
                )
                .collect(),
        ));
    } else {
        for (ok, what, text) in &checks {
            let mark = if *ok { "ok" } else { "!!" };
            println!(
                "{} {what:<18} {}",
                out.paint_status(if *ok { "ok" } else { "failed" }, &format!("{mark:<3}")),
                crate::cli::output::clean(text)
            );
        }
        if problems > 0 {
            println!("{problems} problem(s): strict mode cannot run blocks until they are fixed");
        } else {
            println!("ready");
        }
    }
    Ok(problems == 0)
}

/// Whether a kernel answers at the configured address, and whether it is this home's: it must
/// prove it holds this home's token before the token is sent (see `client.rs`).
fn kernel_line(settings: &Settings) -> String {
    let base = format!("http://{}:{}", settings.host, settings.port);
    let token = crate::token::read(&settings.layout().api_token());
    let answer = runtime().and_then(|rt| {
        rt.block_on(async {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(5))
                .build()?;
            let health = http.get(format!("{base}/api/health")).send().await?;
            let health: serde_json::Value = health.json().await?;
            let verdict = match &token {
                Some(t) => {
                    let c =
                        crate::client::Client::to(base.clone(), t.clone(), settings.home.clone())?;
                    Some(
                        c.get("/api/packs")
                            .await
                            .map(drop)
                            .map_err(|e| format!("{e:#}")),
                    )
                }
                None => None,
            };
            Ok::<_, anyhow::Error>((health, verdict))
        })
    });
    match answer {
        Ok((h, verdict)) => format!(
            "running at {base} ({} mode, version {}); {}",
            h["data"]["mode"].as_str().unwrap_or("?"),
            h["data"]["version"].as_str().unwrap_or("?"),
            match verdict {
                Some(Ok(())) => "this home's token is accepted".to_string(),
                Some(Err(why)) => format!("this home's token is not accepted: {why}"),
                None => "no token in this home (RUMI_API_TOKEN or user_data/api_token)".into(),
            }
        ),
        Err(_) => format!("not running at {base} (start it with `rumi serve`)"),
    }
}

/// Binds and removes a socket in `dir` the way the kernel binds pack sockets.
fn socket_probe(dir: &std::path::Path) -> Result<()> {
    let name = format!(".doctor-{}.sock", std::process::id());
    runtime()?.block_on(async {
        let bound = bind_unix(dir, &name);
        let _ = std::fs::remove_file(dir.join(&name));
        bound.map(drop).map_err(|e| anyhow!("{e}"))
    })
}
