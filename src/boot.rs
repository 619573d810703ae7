//! The composition root: tracing, the kernel's actors, the token, the HTTP server, and an orderly
//! shutdown (sandboxes stopped, audit synced, trace flushed).

use crate::config::Settings;
use crate::http;
use crate::http::auth::ApiToken;
use crate::http::body::BodyLimit;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::{anyhow, Context, Result};
use rumi_actors::affinity::CpuPolicy;
use rumi_actors::{Kernel, Layout, SecurityMode};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber and, with `RUMI_TRACE=chrome:<file>`, a Chrome/Perfetto trace layer.
/// The returned guard flushes the trace file when dropped.
fn init_tracing(settings: &Settings) -> Result<Option<tracing_chrome::FlushGuard>> {
    let filter = EnvFilter::try_new(&settings.log_filter)
        .with_context(|| format!("RUMI_LOG={:?} is not a valid filter", settings.log_filter))?;
    // Colours only for a person at a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(filter);
    match &settings.trace {
        Some(file) => {
            let (chrome, guard) = tracing_chrome::ChromeLayerBuilder::new()
                .file(file)
                .include_args(true)
                .build();
            tracing_subscriber::registry().with(fmt).with(chrome).init();
            Ok(Some(guard))
        }
        None => {
            tracing_subscriber::registry().with(fmt).init();
            Ok(None)
        }
    }
}

use tracing_subscriber::Layer;

/// `rumi serve`: runs the kernel until SIGINT/SIGTERM.
pub fn serve(mut settings: Settings) -> Result<()> {
    // Before any thread exists (the trace writer, the runtime, the HTTP workers), so that all of
    // them and every pack worker inherit it. See actors/src/affinity.rs for the measurements.
    let confined = match settings.cpu_policy {
        CpuPolicy::Half => rumi_actors::affinity::confine_to_upper_half(),
        CpuPolicy::Pack | CpuPolicy::Off => None,
    };
    rumi_actors::affinity::keep_freed_memory();
    let guard = init_tracing(&settings)?;
    if let Some(confined) = &confined {
        tracing::info!(
            cpus = ?confined.kept,
            "kernel confined to these CPUs (RUMI_CPU_AFFINITY=half)"
        );
        // Spill workers run there: a pack's calls that overlap are served beside the kernel
        // instead of taking turns with it on its CPU (see `pack_container`).
        if settings.pack_spill {
            settings.runtime.spill_cpus = confined.left.clone();
        }
    }
    let layout = settings.layout();
    let result = actix_rt::System::new().block_on(run(settings, layout));
    drop(guard);
    result
}

async fn run(settings: Settings, layout: Layout) -> Result<()> {
    // Before anything of the home is touched: the lock (one kernel per home), then the port, so a
    // second `rumi serve` fails without disturbing the running kernel's containers and sockets.
    let mut home_lock =
        rumi_actors::home_lock::HomeLock::acquire(&layout.user_data()).map_err(|e| anyhow!(e))?;
    let listener = std::net::TcpListener::bind((settings.host.as_str(), settings.port))
        .with_context(|| {
            format!(
                "cannot listen on {}:{} (RUMI_API_HOST / RUMI_API_PORT)",
                settings.host, settings.port
            )
        })?;
    // With RUMI_API_PORT=0 the OS picks the port; the banner names the real one (tests read it).
    let port = listener.local_addr()?.port();
    home_lock
        .note(Some(port))
        .context("cannot write user_data/kernel.lock")?;
    // The kernel first: its boot removes what a crash left half-written under user_data/,
    // which must happen before the token (or anything else) is written there.
    let cpus = rumi_actors::affinity::allowed_cpus().len().max(1);
    let http_workers = settings.http_workers.unwrap_or(cpus);
    let mut runtime = settings.runtime.clone();
    // One HTTP worker on the kernel's one CPU: the pack sandboxes live on that worker's thread,
    // so a run's block calls are messages on its own thread (see `registry::ContainerHost`).
    runtime.sandboxes_on_http_worker =
        settings
            .sandbox_host
            .on_http_worker(http_workers, cpus, settings.cpu_policy);
    let kernel = Kernel::boot(layout.clone(), runtime).context("the kernel could not start")?;
    let token = match &settings.token_override {
        Some(t) => t.clone(),
        None => {
            let (t, created) = crate::token::load_or_create(&layout.api_token())?;
            if created {
                println!("API token (shown once; `rumi token` prints it again): {t}");
            }
            t
        }
    };
    kernel.ready().await.context("the registry did not start")?;
    if settings.runtime.mode == SecurityMode::Permissive {
        tracing::warn!("permissive mode: blocks run as host processes WITHOUT container isolation");
    } else if let Some(status) = kernel.docker_status().await {
        match (status.available, status.image_present, &status.reason) {
            (true, Some(true), _) => tracing::info!(
                image = %status.image,
                version = status.version.as_deref().unwrap_or("?"),
                "strict mode: blocks run in one container per pack"
            ),
            (_, _, reason) => {
                let why = reason
                    .clone()
                    .unwrap_or_else(|| "Docker is not usable".into());
                tracing::warn!("strict mode: block calls are refused with docker_required until this is fixed: {why}");
                println!("warning: block calls are refused until this is fixed: {why}");
            }
        }
    }
    let kernel_data = web::Data::new(kernel.clone());
    let token_data = web::Data::new(ApiToken(token));
    let cors_data = web::Data::new(settings.cors_origins.clone());
    let limit = BodyLimit {
        max_bytes: settings.max_body_bytes,
        read_timeout: settings.body_read_timeout,
    };
    let import_slots = web::Data::new(http::pack_import::ImportSlots::default());
    let host_kernel = kernel.clone();
    let hosted = std::sync::Arc::new(std::sync::Once::new());
    let server = HttpServer::new(move || {
        // Runs on each HTTP worker's thread as it starts: the first names its arbiter as the
        // sandboxes' host (a no-op unless the kernel waits for one).
        hosted.call_once(|| host_kernel.host_sandboxes(actix_rt::Arbiter::current()));
        App::new()
            .app_data(kernel_data.clone())
            .app_data(token_data.clone())
            .app_data(limit)
            .app_data(cors_data.clone())
            .app_data(import_slots.clone())
            // CORS, then the token: one layer on every request.
            .wrap(middleware::from_fn(http::auth::gate))
            .configure(http::routes)
    })
    // Signals are ours (see `stop_on_signal`), so the shutdown can release waiting requests first.
    .disable_signals()
    .workers(http_workers)
    .listen(listener)
    .context("the HTTP server could not use its socket")?;
    tracing::info!(host = %settings.host, port, mode = kernel.execution_mode(), "rumi kernel listening");
    println!("rumi home: {}", settings.home.display());
    println!(
        "rumi listening on http://{}:{} ({} mode)",
        settings.host,
        port,
        kernel.execution_mode()
    );
    let server = server.run();
    actix_rt::spawn(stop_on_signal(server.handle(), kernel.clone()));
    server.await.context("the HTTP server failed")?;
    tracing::info!("shutting down");
    kernel.shutdown().await;
    // The workers' trees handed to the reaper thread by now are killed before the process
    // exits (best effort: bounded, and a sandbox still stopping on its arbiter may come later).
    rumi_actors::pack_container::worker::reaped(std::time::Duration::from_secs(2));
    drop(home_lock);
    Ok(())
}

/// On SIGTERM or SIGINT: answers requests that wait for a flow load at once (a parse in progress
/// runs on a detached thread and must not hold the kernel up), then stops the HTTP server
/// gracefully (requests in flight finish, within actix-web's shutdown timeout).
async fn stop_on_signal(server: actix_web::dev::ServerHandle, kernel: Kernel) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop the kernel with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stopping");
    let _ = kernel.registry.send(rumi_actors::registry::Stopping).await;
    server.stop(true).await;
}
