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
                    c.call(
                        Method::POST,
                        &format!("/api/flows/{flow_id}/run"),
                        Some(json!({"inputs": map, "timeout": timeout})),
                    )
                    .await
                }
            }
        }),
    }
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
    println!("{}", serde_json::to_string_pretty(&data)?);
    Ok(())
}
