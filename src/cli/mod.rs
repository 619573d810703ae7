//! Command-line interface (clap). `serve`, `image`, `doctor` and `token` work on the home
//! directly; every other command is a client of the running kernel (`client.rs`) and prints a
//! table for people, or the API's `data` with `--json` for scripts. One module per resource:
//! `packs.rs`, `flows.rs` (flows and runs), `network.rs`, `audit.rs` (audit and diagnostics);
//! `output.rs` renders, `scaffold.rs` writes a new pack, `pack_test.rs` tests one.
//! `capability.rs` (capability grants), `secrets.rs` (secrets and stores), `routes.rs` (pack
//! routes), `schedules.rs` (flow schedules).

pub mod audit;
pub mod capability;
pub mod capability_handlers;
pub mod extras;
pub mod flows;
pub mod network;
pub mod output;
pub mod pack_import;
pub mod pack_test;
pub mod packs;
pub mod pip;
pub mod routes;
pub mod scaffold;
pub mod schedules;
pub mod secrets;
pub mod skills;
pub mod throwaway;

use clap::{Args, Parser, Subcommand};

/// Rumi: a kernel that runs third-party packs safely.
///
/// The CLI finds its home from RUMI_HOME, else the nearest enclosing directory that holds
/// `user_data/` (as git finds `.git`), else the current directory.
#[derive(Parser)]
#[command(name = "rumi", version, about, propagate_version = true)]
pub struct Cli {
    /// Print the API's JSON instead of tables (client commands).
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Check the home, the kernel, Docker, the image and the socket directories.
    Doctor,
    /// Print the API token.
    Token,
    /// Load problems, runtime events and the kernel's counters.
    Diagnostics,
    /// Packs: list, inspect, approve, reject, and write or test your own.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Flows: list, inspect, reload and run.
    Flow {
        #[command(subcommand)]
        command: FlowCommand,
    },
    /// Recorded runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Flow schedules: expression or interval, time zone, next fire, last run, skipped ticks and
    /// problems.
    Schedules,
    /// Network grants of packs (the egress proxy's allow-list).
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Capabilities: grants of permissions to principals, third-party handler candidates and
    /// their trust.
    Capability {
        #[command(subcommand)]
        command: CapabilityCommand,
    },
    /// pip dependencies of packs: requirements.lock candidates, their review and offline install.
    Pip {
        #[command(subcommand)]
        command: pip::PipCommand,
    },
    /// Secrets: write-only values packs read through secrets.get.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Stores: key-value stores packs use through store.get|set|delete|list.
    Stores {
        #[command(subcommand)]
        command: StoresCommand,
    },
    /// The approved packs' vocabulary (groups of synonyms) and converters.
    Vocab,
    /// Agent Skills: the catalog, runs and their artifacts.
    Skill {
        #[command(subcommand)]
        command: skills::SkillCommand,
    },
    /// Pack routes: the table (default) and its reload.
    Routes {
        #[command(subcommand)]
        command: Option<RoutesCommand>,
    },
    /// The audit log (one day, newest entries last).
    Audit(AuditArgs),
    /// Print a shell completion script (e.g. `rumi completions bash > ~/.local/share/bash-completion/completions/rumi`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
pub enum PackCommand {
    /// List packs in load order with their approval states.
    List,
    /// One pack: its state, identity, hash and what changed since approval.
    Show { pack_id: String },
    /// Look for new, changed and removed packs now.
    Scan,
    /// Approve a pack (records the SHA-256 of every file).
    Approve { pack_id: String },
    /// Reject a pack (it stays blocked until approved again).
    Reject {
        pack_id: String,
        /// Why, for the audit log and the pack's listing.
        #[arg(long)]
        reason: Option<String>,
    },
    /// What changed in a pack's files since it was approved.
    Diff { pack_id: String },
    /// Uninstall a pack: stop it, remove its approval and its network and capability grants.
    /// Its files stay (it shows `installed`) unless --purge.
    Uninstall {
        pack_id: String,
        /// Remove its files and its data directory too.
        #[arg(long)]
        purge: bool,
    },
    /// Run the pack's lib script now (install, or update after a first success); exit 1 when
    /// it fails.
    LibRun { pack_id: String },
    /// Stage a pack from a folder, .zip or .rumipack (nothing of it runs); `apply` installs it.
    Import {
        /// A folder (sent as its absolute path: the kernel runs on this machine) or an archive
        /// (uploaded, with a progress bar when large).
        path: std::path::PathBuf,
    },
    /// Install or update a pack from a staged import (the old pack is backed up first).
    Apply { staging_id: String },
    /// Write a working pack skeleton to `ecosystem/<pack_id>/` under the home.
    New { pack_id: String },
    /// Run every flow of a pack in a throw-away permissive kernel; non-zero exit when a step
    /// fails (fail-soft steps included), a flow fails to load or an expectation is not met.
    ///
    /// Permissive mode runs the pack's code as you, without isolation: test only packs you
    /// trust, or use --strict.
    Test {
        pack_id: String,
        /// Run the pack in containers (strict mode: needs Docker and `rumi image build`).
        #[arg(long)]
        strict: bool,
        /// Seconds each flow may run.
        #[arg(long, default_value_t = 60.0, value_parser = seconds)]
        timeout: f64,
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
    /// One flow with its effective steps in execution order.
    Show { flow_id: String },
    /// Reload flows from disk and print the problems found.
    Reload,
    /// Run a flow, print its steps and a one-line summary; exit 1 unless it succeeded.
    Run {
        flow_id: String,
        /// An input as key=value (value parsed as JSON when it is valid JSON). Repeatable.
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// Run deadline in seconds (1..600).
        #[arg(long, value_parser = seconds)]
        timeout: Option<f64>,
    },
}

#[derive(Subcommand)]
pub enum RoutesCommand {
    /// The routes that serve, then clashes and refused routes (exit 1 when there are any).
    List,
    /// Re-read every approved pack's routes.json and print the new table.
    Reload,
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Recorded runs, newest first.
    List {
        /// Only runs of this flow.
        #[arg(long = "flow")]
        flow_id: Option<String>,
        /// How many (1..1000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Keep printing runs as they are recorded (Ctrl-C ends).
        #[arg(long)]
        follow: bool,
    },
    /// One run with its steps; exit 1 unless it succeeded.
    Show {
        run_id: String,
        /// Wait until the run is recorded (it may still be running).
        #[arg(long)]
        follow: bool,
        /// With --follow: give up after this many seconds.
        #[arg(long, default_value_t = 600.0, value_parser = seconds)]
        wait: f64,
    },
}

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Allow a pack to reach these domains on these ports (replaces its grant).
    Grant {
        pack_id: String,
        /// A domain (`api.example.com`, `*.example.com`). Repeatable.
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        /// A port. Repeatable.
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// A note kept with the grant.
        #[arg(long)]
        notes: Option<String>,
    },
    /// Take a pack's grant away.
    Revoke {
        pack_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Every grant.
    List,
    /// Would the proxy let this pack reach domain:port, and why.
    Check {
        pack_id: String,
        domain: String,
        port: u16,
    },
}

#[derive(Subcommand)]
pub enum CapabilityCommand {
    /// Grant a permission to a principal (a pack id; `parent__child` for a sub-principal),
    /// replacing its earlier grant of it.
    Grant {
        principal_id: String,
        /// e.g. store.get, store.set, secrets.get.
        permission_id: String,
        /// The grant config as JSON, e.g. '{"allowed_keys": ["API_KEY"]}' (default {}).
        #[arg(long)]
        config: Option<String>,
    },
    /// Revoke a principal's grant of a permission.
    Revoke {
        principal_id: String,
        permission_id: String,
    },
    /// The grants (of one principal with --principal).
    Grants {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Capability handler candidates shipped by packs, with their status.
    Candidates {
        /// pending, rejected, blocked, installed, failed or all (default).
        #[arg(long)]
        status: Option<String>,
    },
    /// Look for handler candidates in every pack now; new ones are pending.
    Scan,
    /// Trust a candidate: re-hash it, install it, start its handler (grants nothing).
    Approve {
        /// pack_id:slug:handler_id:sha256, as `rumi capability candidates` shows it.
        candidate_key: String,
        /// A note kept with the trust record.
        #[arg(long)]
        notes: Option<String>,
    },
    /// Reject a candidate for an hour; the third rejection blocks it.
    Reject {
        candidate_key: String,
        /// Why, for the audit log and the listing.
        #[arg(long)]
        reason: String,
    },
    /// Blocked candidates.
    Blocked,
    /// Unblock a candidate: pending again, its rejection count reset.
    Unblock {
        candidate_key: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Set a secret; the value comes from --value or standard input and is never printed.
    Set {
        /// ^[A-Z0-9_]{1,64}$
        key: String,
        /// The value (visible in your shell's history and process list: prefer standard input).
        #[arg(long)]
        value: Option<String>,
    },
    /// Delete a secret.
    Delete { key: String },
    /// Every secret's key and times (never a value).
    List,
}

#[derive(Subcommand)]
pub enum StoresCommand {
    /// Create a store whose root is a directory inside user_data/stores/.
    Create {
        store_id: String,
        /// Relative to the home (default user_data/stores/<store_id>).
        root_path: Option<String>,
    },
    /// Every store.
    List,
}

#[derive(Args)]
pub struct AuditArgs {
    /// Only this category (flow_execution, python_file_call, approval, permission, network,
    /// security, system, modifier_application).
    #[arg(long)]
    pub category: Option<String>,
    /// The day, YYYY-MM-DD (UTC; default today).
    #[arg(long)]
    pub date: Option<String>,
    /// How many of the newest entries (1..1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Keep printing entries as they are written (Ctrl-C ends).
    #[arg(long)]
    pub follow: bool,
}

/// A number of seconds: finite, 0 to a day.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && (0.0..=86_400.0).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}
