//! Command-line interface (clap): `rumi serve`, `rumi token`, and the client commands.

use clap::{Parser, Subcommand};

/// Rumi: a kernel that runs third-party packs safely.
#[derive(Parser)]
#[command(name = "rumi", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the kernel (strict mode unless --permissive or RUMI_SECURITY_MODE=permissive).
    Serve {
        /// Run blocks as host processes without container isolation.
        #[arg(long)]
        permissive: bool,
    },
    /// Print the API token.
    Token,
    /// Manage packs of the running kernel.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// List and run flows on the running kernel.
    Flow {
        #[command(subcommand)]
        command: FlowCommand,
    },
}

#[derive(Subcommand)]
pub enum PackCommand {
    /// List packs and their approval states.
    List,
    /// Approve a pack (records the SHA-256 of every file).
    Approve { pack_id: String },
    /// Reject a pack.
    Reject {
        pack_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum FlowCommand {
    /// List loaded flows.
    List,
    /// Run a flow and print its result.
    Run {
        flow_id: String,
        /// An input as key=value (value parsed as JSON when it is valid JSON). Repeatable.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// Run deadline in seconds (1..600).
        #[arg(long)]
        timeout: Option<f64>,
    },
}
