//! The `rumi` binary: the edge of the kernel (CLI, HTTP, boot). See README.md for the map.

mod boot;
mod cli;
mod client;
mod config;
mod docker_cli;
mod http;
mod token;

use anyhow::{anyhow, Result};
use clap::{CommandFactory, Parser};
use cli::flows::Failed;
use cli::output::Out;
use cli::{Cli, Command, ImageCommand, PackCommand};

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        // The kernel keeps no descriptor of whoever started it (a shell's open files would
        // otherwise reach every worker, and so every permissive block).
        // SAFETY: closes descriptors this process has not used yet; no thread exists.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        }
    } else {
        // A client command whose reader went away (`rumi pack list | head`) ends quietly, as
        // Unix tools do, instead of panicking in `println!`. The server keeps Rust's default
        // (SIGPIPE ignored): a peer closing a socket must never kill the kernel.
        // SAFETY: setting a signal disposition before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match dispatch(cli) {
        Ok(None) => {}
        // The command did its work and printed why the outcome is a failure.
        Ok(Some(Failed)) => std::process::exit(1),
        Err(e) => {
            eprintln!("rumi: {}", cli::output::clean(&format!("{e:#}")));
            let interrupted = e.downcast_ref::<cli::throwaway::Interrupted>().is_some();
            std::process::exit(if interrupted { 130 } else { 1 });
        }
    }
}

fn dispatch(cli: Cli) -> Result<Option<Failed>> {
    let out = Out::new(cli.json);
    match cli.command {
        Command::Serve {
            permissive,
            build_image,
        } => {
            let settings = config::load(permissive)?;
            if build_image && settings.runtime.mode == rumi_actors::SecurityMode::Strict {
                docker_cli::build_image(&settings, None)?;
            }
            boot::serve(settings).map(|_| None)
        }
        Command::Image { command } => {
            let settings = config::load(false)?;
            match command {
                ImageCommand::Build { mirror } => docker_cli::build_image(&settings, Some(mirror)),
                ImageCommand::Show => docker_cli::show_image(&settings),
            }
            .map(|_| None)
        }
        Command::Doctor => Ok((!docker_cli::doctor(&out)?).then_some(Failed)),
        Command::Token => {
            let (home, source) = config::find_home()?;
            let path = rumi_actors::Layout::new(home.clone()).api_token();
            let t = token::read(&path).ok_or_else(|| {
                anyhow!(
                    "no token in {} (home {}, {}): start the kernel there once with `rumi serve`, \
                     or set RUMI_HOME to the kernel's home",
                    path.display(),
                    home.display(),
                    source.describe()
                )
            })?;
            println!("{t}");
            Ok(None)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rumi", &mut std::io::stdout());
            Ok(None)
        }
        Command::Pack {
            command: PackCommand::New { pack_id },
        } => {
            let home = config::home()?;
            let dir = cli::scaffold::new_pack(&home, &pack_id)?;
            if out.json {
                out.print_json(&serde_json::json!({"pack_id": pack_id, "path": dir}));
            } else {
                println!("{}", cli::scaffold::next_steps(&pack_id, &dir));
            }
            Ok(None)
        }
        Command::Pack {
            command:
                PackCommand::Test {
                    pack_id,
                    timeout,
                    strict,
                },
        } => Ok((!cli::pack_test::run(&pack_id, timeout, strict, &out)?).then_some(Failed)),
        command => client_command(|c| async move {
            match command {
                Command::Pack { command } => cli::packs::run(&c, &out, command).await.map(|_| None),
                Command::Flow { command } => cli::flows::flow(&c, &out, command).await,
                Command::Runs { command } => cli::flows::runs(&c, &out, command).await,
                Command::Schedules => cli::schedules::list(&c, &out).await,
                Command::Network { command } => cli::network::run(&c, &out, command).await,
                Command::Capability { command } => cli::capability::run(&c, &out, command).await,
                Command::Pip { command } => cli::pip::run(&c, &out, command).await,
                Command::Secrets { command } => cli::secrets::secrets(&c, &out, command).await,
                Command::Stores { command } => cli::secrets::stores(&c, &out, command).await,
                Command::Routes { command } => cli::routes::run(&c, &out, command).await,
                Command::Vocab => cli::extras::vocab(&c, &out).await.map(|_| None),
                Command::Skill { command } => cli::skills::run(&c, &out, command).await,
                Command::Audit(args) => cli::audit::audit(&c, &out, args).await.map(|_| None),
                Command::Diagnostics => cli::audit::diagnostics(&c, &out).await.map(|_| None),
                _ => unreachable!("handled above"),
            }
        }),
    }
}

/// Runs a client command on a one-thread runtime.
fn client_command<F, Fut>(f: F) -> Result<Option<Failed>>
where
    F: FnOnce(client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Failed>>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async { f(client::Client::connect()?).await })
}
