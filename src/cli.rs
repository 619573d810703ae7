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
        /// In strict mode, build the pack runtime image first when it is missing.
        #[arg(long)]
        build_image: bool,
    },
    /// The pack runtime image (strict mode).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Check Docker, the image, the socket directories and the security mode.
    Doctor,
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
pub enum ImageCommand {
    /// Build the image locally (debootstrap + import; no registry). Skipped when present.
    Build {
        /// The Debian mirror to bootstrap from.
        #[arg(
            long,
            env = "RUMI_DEBIAN_MIRROR",
            default_value = "http://deb.debian.org/debian"
        )]
        mirror: String,
    },
    /// Print the image the kernel uses and whether it is present (exit code 3 when missing).
    Show,
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
