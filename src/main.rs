//! The `rumi` binary: the edge of the kernel (CLI, HTTP, boot). See README.md for the map.

mod boot;
mod cli;
mod client;
mod config;
mod docker_cli;
mod http;
mod token;

use anyhow::{anyhow, Result};
use clap::Parser;
use cli::{Cli, Command, FlowCommand, ImageCommand, PackCommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        // A client command whose reader went away (`rumi pack list | head`) ends quietly, as
        // Unix tools do, instead of panicking in `println!`. The server keeps Rust's default
        // (SIGPIPE ignored): a peer closing a socket must never kill the kernel.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Err(e) = dispatch(cli) {
        eprintln!("rumi: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            permissive,
            build_image,
        } => {
            let settings = config::load(permissive)?;
            if build_image && settings.runtime.mode == rumi_actors::SecurityMode::Strict {
                docker_cli::build_image(&settings, None)?;
            }
            boot::serve(settings)
        }
        Command::Image { command } => {
            let settings = config::load(false)?;
            match command {
                ImageCommand::Build { mirror } => docker_cli::build_image(&settings, Some(mirror)),
                ImageCommand::Show => docker_cli::show_image(&settings),
            }
        }
        Command::Doctor => docker_cli::doctor(),
        Command::Token => {
            let home = config::home()?;
            let t = token::read(&rumi_actors::Layout::new(home).api_token())
                .ok_or_else(|| anyhow!("no token yet: start the kernel once with `rumi serve`"))?;
            println!("{t}");
            Ok(())
        }
        Command::Pack { command } => client_command(move |c| async move {
            match command {
                PackCommand::List => c.call(Method::GET, "/api/packs", None).await,
                PackCommand::Approve { pack_id } => {
                    c.call(Method::POST, &format!("/api/packs/{pack_id}/approve"), None)
                        .await
                }
                PackCommand::Reject { pack_id, reason } => {
                    c.call(
                        Method::POST,
                        &format!("/api/packs/{pack_id}/reject"),
                        Some(json!({"reason": reason})),
                    )
                    .await
                }
            }
        }),
        Command::Flow { command } => client_command(move |c| async move {
            match command {
                FlowCommand::List => c.call(Method::GET, "/api/flows", None).await,
                FlowCommand::Run {
                    flow_id,
                    inputs,
                    timeout,
                } => {
                    let mut map = Map::new();
                    for kv in inputs {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| anyhow!("--input {kv:?}: use key=value"))?;
                        let value = serde_json::from_str::<Value>(v)
                            .unwrap_or_else(|_| Value::String(v.to_string()));
                        map.insert(k.to_string(), value);
                    }
                    let run = c
                        .call(
                            Method::POST,
                            &format!("/api/flows/{flow_id}/run"),
                            Some(json!({"inputs": map, "timeout": timeout})),
                        )
                        .await?;
                    println!("{}", serde_json::to_string_pretty(&run)?);
                    let (line, ok) = run_summary(&run);
                    eprintln!("{line}");
                    if !ok {
                        std::process::exit(1);
                    }
                    Ok(Value::Null)
                }
            }
        }),
    }
}

/// One line about a run for the terminal, and whether it succeeded: `run <id>: succeeded in 12
/// ms`, or the status with the step that failed and why. Steps that failed under fail-soft are
/// counted even when the run succeeded.
fn run_summary(run: &Value) -> (String, bool) {
    let status = run["status"].as_str().unwrap_or("unknown");
    let id = run["run_id"].as_str().unwrap_or("?");
    let ms = run["execution_time_ms"]
        .as_f64()
        .map(|t| format!(" in {t:.0} ms"))
        .unwrap_or_default();
    let steps = run["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let failed: Vec<&Value> = steps.iter().filter(|s| s["status"] == "failed").collect();
    let mut line = format!("run {id}: {status}{ms}");
    if status == "succeeded" {
        if !failed.is_empty() {
            line.push_str(&format!(
                " ({} step(s) failed and the run went on: {})",
                failed.len(),
                failed
                    .iter()
                    .map(|s| s["id"].as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return (line, true);
    }
    if let Some(step) = failed.last() {
        line.push_str(&format!(
            "; step {} failed ({}): {}",
            step["id"].as_str().unwrap_or("?"),
            step["error_type"].as_str().unwrap_or("error"),
            step["error"].as_str().unwrap_or("")
        ));
    } else if let Some(reason) = run["reason"].as_str() {
        line.push_str(&format!(": {reason}"));
    }
    (line, false)
}

fn client_command<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce(client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<Value>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let data = rt.block_on(async { f(client::Client::from_env()?).await })?;
    if !data.is_null() {
        println!("{}", serde_json::to_string_pretty(&data)?);
    }
    Ok(())
}
