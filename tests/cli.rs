//! The CLI end to end: the real `rumi` binary (assert_cmd) against a real permissive kernel over
//! HTTP. Every client command in table and `--json` form, exit codes for succeeded, failed and
//! timed-out runs and for a kernel that is not running, the home found from a subdirectory,
//! completions and `| head`. (A pack author's commands: pack_author.rs; attacks on the CLI:
//! cli_safety.rs.)

mod common;

use common::cli::*;
use common::{port_of, python_available, write, Kernel, TOKEN};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A pack whose blocks succeed, fail and sleep, with one flow for each.
fn outcomes_pack(home: &Path) {
    common::make_pack(
        home,
        "outcomes",
        &[
            (
                "fine.py",
                "def run(d, c=None):\n    return {'v': d.get('v', 1)}\n",
            ),
            (
                "boom.py",
                "def run(d, c=None):\n    raise ValueError('boom on purpose')\n",
            ),
            (
                "slow.py",
                "import time\ndef run(d, c=None):\n    time.sleep(30)\n    return {}\n",
            ),
        ],
    );
    // `soft` fails a step under the default fail-soft and goes on; `boom` stops at it.
    for (flow, file, soft) in [
        ("fine", "fine.py", true),
        ("boom", "boom.py", false),
        ("soft", "boom.py", true),
        ("slow", "slow.py", true),
    ] {
        write(
            home,
            &format!("ecosystem/outcomes/backend/flows/{flow}.flow.yaml"),
            &format!(
                "flow_id: outcomes.{flow}\nphases: [main]\ndefaults: {{fail_soft: {soft}}}\nsteps:\n  - id: only\n    phase: main\n    type: python_file_call\n    file: {file}\n    input: {{v: \"${{ctx.v}}\"}}\n    output: out\n"
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_daily_command_prints_a_table_and_json() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    outcomes_pack(home.path());
    let k = Kernel::start(home.path(), &[]);

    // Packs.
    let o = ok(rumi(&k), &["pack", "list"]);
    assert!(o.stdout.starts_with("PACK"), "a table: {}", o.stdout);
    assert!(o.stdout.contains("text_tools") && o.stdout.contains("installed"));
    let packs = ok(rumi(&k), &["pack", "list", "--json"]).json();
    assert!(packs
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pack_id"] == "outcomes"));
    let o = ok(rumi(&k), &["pack", "scan"]);
    assert!(o.stdout.contains("outcomes"));
    let o = ok(rumi(&k), &["pack", "diff", "outcomes"]);
    assert!(o.stdout.contains("never been approved"), "{}", o.stdout);
    let o = ok(rumi(&k), &["pack", "approve", "outcomes"]);
    assert!(
        o.stdout.starts_with("approved outcomes: 8 file(s)"),
        "{}",
        o.stdout
    );
    let v = ok(rumi(&k), &["pack", "approve", "text_tools", "--json"]).json();
    assert_eq!(v["state"], "approved");
    let o = ok(rumi(&k), &["pack", "show", "outcomes"]);
    assert!(
        o.stdout.contains("state:") && o.stdout.contains("approved"),
        "{}",
        o.stdout
    );
    assert_eq!(
        ok(rumi(&k), &["pack", "show", "outcomes", "--json"]).json()["pack_id"],
        "outcomes"
    );
    let o = ok(rumi(&k), &["pack", "diff", "outcomes"]);
    assert!(o.stdout.contains("no change"), "{}", o.stdout);
    write(
        k.home.as_path(),
        "ecosystem/my_pack/backend/extra.txt",
        "new",
    );
    ok(rumi(&k), &["pack", "approve", "my_pack"]);
    write(
        k.home.as_path(),
        "ecosystem/my_pack/backend/extra.txt",
        "changed",
    );
    let o = ok(rumi(&k), &["pack", "diff", "my_pack"]);
    assert!(o.stdout.contains("~ backend/extra.txt"), "{}", o.stdout);
    let d = ok(rumi(&k), &["pack", "diff", "my_pack", "--json"]).json();
    assert_eq!(d["changes"]["changed"][0], "backend/extra.txt");
    let o = ok(
        rumi(&k),
        &["pack", "reject", "my_pack", "--reason", "not today"],
    );
    assert!(
        o.stdout.contains("rejected my_pack: not today"),
        "{}",
        o.stdout
    );
    assert_eq!(
        ok(rumi(&k), &["pack", "show", "my_pack", "--json"]).json()["state"],
        "blocked"
    );

    // Flows.
    let o = ok(rumi(&k), &["flow", "list"]);
    assert!(o.stdout.starts_with("FLOW") && o.stdout.contains("outcomes.fine"));
    let flows = ok(rumi(&k), &["flow", "list", "--json"]).json();
    assert!(flows
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["flow_id"] == "text_tools.report"));
    let o = ok(rumi(&k), &["flow", "show", "text_tools.report"]);
    assert!(
        o.stdout.contains("STEP") && o.stdout.contains("normalize"),
        "{}",
        o.stdout
    );
    let f = ok(rumi(&k), &["flow", "show", "text_tools.report", "--json"]).json();
    assert_eq!(f["flow_id"], "text_tools.report");
    let o = ok(rumi(&k), &["flow", "reload"]);
    assert!(o.stdout.contains("flow(s) loaded"), "{}", o.stdout);
    assert!(
        ok(rumi(&k), &["flow", "reload", "--json"]).json()["flows"]
            .as_u64()
            .unwrap()
            >= 4
    );

    // A flow file that fails to load: reload exits 1 naming the file and line, a run of it names
    // the file and `rumi diagnostics`, approving its pack warns.
    write(
        k.home.as_path(),
        "ecosystem/outcomes/backend/flows/broken.flow.yaml",
        "flow_id: outcomes.broken\nphases: []\nsteps: []\n",
    );
    let o = ok(rumi(&k), &["pack", "approve", "outcomes"]);
    assert!(
        o.stderr
            .contains("warning: ecosystem/outcomes/backend/flows/broken.flow.yaml:2: phases"),
        "{}",
        o.stderr
    );
    let o = fails(rumi(&k), &["flow", "reload"]);
    assert!(
        o.stderr.contains("broken.flow.yaml:2:") && o.stderr.contains("rumi diagnostics"),
        "{}",
        o.stderr
    );
    let o = fails(rumi(&k), &["flow", "run", "outcomes.broken"]);
    assert!(
        o.stderr.contains("failed to load")
            && o.stderr.contains("broken.flow.yaml:2")
            && o.stderr.contains("rumi diagnostics"),
        "{}",
        o.stderr
    );
    let o = ok(rumi(&k), &["diagnostics"]);
    assert!(o.stdout.contains("broken.flow.yaml:2"), "{}", o.stdout);
    std::fs::remove_file(
        k.home
            .join("ecosystem/outcomes/backend/flows/broken.flow.yaml"),
    )
    .unwrap();
    ok(rumi(&k), &["pack", "approve", "outcomes"]);
    ok(rumi(&k), &["flow", "reload"]);

    // Runs: succeeded, failed, timed out.
    let o = ok(rumi(&k), &["flow", "run", "outcomes.fine", "-i", "v=7"]);
    assert!(
        o.stdout.contains("STEP") && o.stdout.contains("\"v\": 7"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr.contains("(outcomes.fine): succeeded in"),
        "{}",
        o.stderr
    );
    let fine = ok(rumi(&k), &["flow", "run", "outcomes.fine", "--json"]).json();
    assert_eq!(fine["status"], "succeeded");
    let o = fails(rumi(&k), &["flow", "run", "outcomes.boom"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("failed in")
            && o.stderr.contains("only (block_error)")
            && o.stderr.contains("boom on purpose"),
        "{}",
        o.stderr
    );
    let failed = fails(rumi(&k), &["flow", "run", "outcomes.boom", "--json"]).json();
    assert_eq!(failed["status"], "failed");
    let o = ok(rumi(&k), &["flow", "run", "outcomes.soft"]);
    assert!(
        o.stderr.contains("succeeded in")
            && o.stderr
                .contains("1 step(s) failed and the run went on: only"),
        "{}",
        o.stderr
    );
    let o = fails(
        rumi(&k),
        &["flow", "run", "outcomes.slow", "--timeout", "1"],
    );
    assert!(o.stderr.contains("timed_out"), "{}", o.stderr);
    let o = fails(rumi(&k), &["flow", "run", "no.such.flow"]);
    assert!(o.stderr.contains("rumi diagnostics"), "{}", o.stderr);

    let o = ok(rumi(&k), &["runs", "list"]);
    assert!(
        o.stdout.starts_with("RUN") && o.stdout.contains("outcomes.boom"),
        "{}",
        o.stdout
    );
    let runs = ok(
        rumi(&k),
        &["runs", "list", "--flow", "outcomes.fine", "--json"],
    )
    .json();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    let id = fine["run_id"].as_str().unwrap();
    let o = ok(rumi(&k), &["runs", "show", id]);
    assert!(
        o.stderr
            .contains(&format!("run {id} (outcomes.fine): succeeded")),
        "{}",
        o.stderr
    );
    assert_eq!(
        ok(rumi(&k), &["runs", "show", id, "--json"]).json()["run_id"],
        id
    );
    let failed_id = failed["run_id"].as_str().unwrap();
    assert_eq!(fails(rumi(&k), &["runs", "show", failed_id]).code, 1);
    let o = fails(
        rumi(&k),
        &[
            "runs",
            "show",
            "0123456789abcdef",
            "--follow",
            "--wait",
            "1",
        ],
    );
    assert!(o.stderr.contains("was not recorded within"), "{}", o.stderr);

    // Network.
    let o = ok(
        rumi(&k),
        &[
            "network",
            "grant",
            "outcomes",
            "--domain",
            "example.com",
            "--port",
            "443",
        ],
    );
    assert!(
        o.stdout
            .contains("granted outcomes to reach example.com on port(s) 443"),
        "{}",
        o.stdout
    );
    let o = ok(rumi(&k), &["network", "list"]);
    assert!(
        o.stdout.starts_with("PACK") && o.stdout.contains("example.com"),
        "{}",
        o.stdout
    );
    let grants = ok(rumi(&k), &["network", "list", "--json"]).json();
    assert_eq!(grants[0]["pack_id"], "outcomes");
    let o = fails(
        rumi(&k),
        &["network", "check", "outcomes", "other.example", "443"],
    );
    assert!(o.stdout.starts_with("denied"), "{}", o.stdout);
    let v = fails(
        rumi(&k),
        &[
            "network",
            "check",
            "outcomes",
            "other.example",
            "443",
            "--json",
        ],
    )
    .json();
    assert_eq!(v["allowed"], false);
    let o = ok(
        rumi(&k),
        &["network", "revoke", "outcomes", "--reason", "done"],
    );
    assert!(o.stdout.contains("revoked"), "{}", o.stdout);

    // Audit and diagnostics.
    let o = ok(rumi(&k), &["audit", "--category", "approval"]);
    assert!(
        o.stdout.starts_with("TIME") && o.stdout.contains("pack_approved"),
        "{}",
        o.stdout
    );
    let entries = ok(rumi(&k), &["audit", "--category", "network", "--json"]).json();
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "network_grant"),
        "{entries}"
    );
    let o = fails(rumi(&k), &["audit", "--category", "nonsense"]);
    assert!(o.stderr.contains("unknown category"), "{}", o.stderr);
    let o = ok(rumi(&k), &["diagnostics"]);
    assert!(
        o.stdout.contains("mode:") && o.stdout.contains("permissive"),
        "{}",
        o.stdout
    );
    assert_eq!(
        ok(rumi(&k), &["diagnostics", "--json"]).json()["mode"],
        "permissive"
    );

    // Colours on a terminal only, and never with NO_COLOR: `script` gives the command a pty.
    if which("script") {
        let tty = |no_color: bool| {
            let env = follow_cmd(&k, &[]);
            let line = format!(
                "'{}' pack list",
                assert_cmd::cargo::cargo_bin("rumi").display()
            );
            let mut cmd = {
                let mut c = std::process::Command::new("script");
                c.args(["-qec", &line, "/dev/null"]);
                for (key, value) in env.get_envs() {
                    match value {
                        Some(v) => c.env(key, v),
                        None => c.env_remove(key),
                    };
                }
                c
            };
            cmd.env_remove("NO_COLOR");
            if no_color {
                cmd.env("NO_COLOR", "1");
            }
            String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
        };
        let coloured = tty(false);
        assert!(
            coloured.contains("\x1b[") && coloured.contains("approved"),
            "{coloured:?}"
        );
        let plain = tty(true);
        assert!(
            !plain.contains("\x1b[") && plain.contains("approved"),
            "{plain:?}"
        );
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the colour check needs `script` (util-linux) in CI");
    } else {
        eprintln!("SKIPPED the colour check: `script` (util-linux) is not installed");
    }
    assert!(
        !ok(rumi(&k), &["pack", "list"]).stdout.contains('\x1b'),
        "no colour in a pipe"
    );

    // Doctor and token.
    let o = run(rumi(&k), &["doctor"]);
    assert!(
        o.stdout.contains(&format!("running at {}", k.base)),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("token is accepted"), "{}", o.stdout);
    let checks = run(rumi(&k), &["doctor", "--json"]).json();
    assert!(checks
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "kernel"));
    assert_eq!(ok(rumi(&k), &["token"]).stdout.trim(), TOKEN);

    // Uninstall, then purge.
    let o = ok(rumi(&k), &["pack", "uninstall", "my_pack"]);
    assert!(
        o.stdout.contains("my_pack uninstalled; its files stay"),
        "{}",
        o.stdout
    );
    assert_eq!(
        ok(rumi(&k), &["pack", "show", "my_pack", "--json"]).json()["state"],
        "installed"
    );
    let u = ok(
        rumi(&k),
        &["pack", "uninstall", "outcomes", "--purge", "--json"],
    )
    .json();
    assert_eq!(u["purged"], true, "{u}");
    let o = run(rumi(&k), &["pack", "show", "outcomes"]);
    assert_ne!(o.code, 0, "a purged pack is unknown: {}", o.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_what_happens_after_it_started() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    outcomes_pack(home.path());
    let k = Kernel::start(home.path(), &[]);
    k.approve("outcomes").await;

    // `runs list --follow` prints the runs recorded after it started; a background task keeps
    // starting runs until the line is seen, so no sleep guesses when the follower is ready.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runner = {
        let stop = stop.clone();
        let base = k.base.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = http
                    .post(format!("{base}/api/flows/outcomes.fine/run"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"inputs": {"v": 5}}))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let line = tokio::task::spawn_blocking({
        let cmd = follow_cmd(&k, &["runs", "list", "--follow", "--flow", "outcomes.fine"]);
        move || follow_until(cmd, |l| l.contains("(outcomes.fine): succeeded"))
    })
    .await
    .unwrap();
    assert!(line.starts_with("run "), "{line}");
    // `audit --follow --json` prints one entry per line, including entries written after it
    // started.
    let line = tokio::task::spawn_blocking({
        let cmd = follow_cmd(
            &k,
            &[
                "audit",
                "--follow",
                "--json",
                "--category",
                "flow_execution",
                "--limit",
                "1",
            ],
        );
        move || {
            follow_until(cmd, |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|e| e["flow_id"] == "outcomes.fine")
            })
        }
    })
    .await
    .unwrap();
    assert!(line.starts_with('{'), "{line}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    runner.await.unwrap();
}

#[test]
fn the_home_is_found_from_a_subdirectory_and_a_missing_kernel_is_named() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    let k = Kernel::start(home.path(), &[]);
    // The kernel was given its token in the environment; an operator's home holds it in a file.
    std::fs::write(k.home.join("user_data/api_token"), TOKEN).unwrap();
    let sub = k.home.join("ecosystem/text_tools/backend/blocks");
    let mut cmd = bare();
    cmd.current_dir(&sub)
        .env("RUMI_API_PORT", port_of(&k).to_string());
    let packs = ok(cmd, &["pack", "list", "--json"]).json();
    assert!(packs
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["pack_id"] == "text_tools"));

    // No token: the error says which home was searched and how to point elsewhere. (RUMI_HOME
    // names it: discovery from a temporary directory could find a `user_data/` in /tmp itself.)
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = bare();
    cmd.env("RUMI_HOME", empty.path());
    let o = fails(cmd, &["pack", "list"]);
    assert!(o.stderr.contains("RUMI_HOME"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&empty.path().canonicalize().unwrap().display().to_string()),
        "{}",
        o.stderr
    );

    // No kernel at the address: every client command fails and names the address.
    let port = port_of(&k);
    k.stop();
    for args in [
        &["pack", "list"][..],
        &["flow", "run", "text_tools.report"],
        &["runs", "list"],
        &["network", "list"],
        &["audit"],
        &["diagnostics"],
    ] {
        let mut cmd = bare();
        cmd.env("RUMI_HOME", home.path())
            .env("RUMI_API_TOKEN", TOKEN)
            .env("RUMI_API_PORT", port.to_string());
        let o = fails(cmd, args);
        assert!(
            o.stderr.contains(&format!("http://127.0.0.1:{port}")),
            "rumi {args:?}: {}",
            o.stderr
        );
    }
}

#[test]
fn completions_are_generated_and_a_closed_pipe_ends_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let o = ok(bare(), &["completions", shell]);
        assert!(o.stdout.contains("rumi"), "{shell}");
        assert!(
            o.stdout.contains("approve"),
            "{shell}: the subcommands are completed"
        );
    }
    // `head` closes the pipe after one line; rumi must end without a panic message.
    let bin = assert_cmd::cargo::cargo_bin("rumi");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' completions zsh | head -n 1 >/dev/null; echo ${{PIPESTATUS[0]}}",
            bin.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    let code: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // 141 = killed by SIGPIPE, as `yes | head` ends; 0 when all was written before the close.
    assert!(code == 141 || code == 0, "exit {code}");
}

/// `rumi routes` (table and `--json`), `rumi routes reload`; a refused route makes it exit 1
/// with the reason on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_lists_and_reloads_pack_routes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    common::make_pack(home, "web", &[]);
    write(
        home,
        "ecosystem/web/backend/flows/hi.flow.yaml",
        "flow_id: web.hi\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: hi, value: 1}}\n",
    );
    write(
        home,
        "ecosystem/web/backend/routes.json",
        r#"{"routes": [{"method": "GET", "path": "/api/web/hi", "flow_id": "web.hi", "description": "says hi"}]}"#,
    );
    let k = Kernel::start(home, &[]);
    let o = ok(rumi(&k), &["routes"]);
    assert!(o.stdout.contains("no pack routes"), "{}", o.stdout);
    ok(rumi(&k), &["pack", "approve", "web"]);
    let o = ok(rumi(&k), &["routes", "reload"]);
    assert!(
        o.stdout.contains("/api/web/hi") && o.stdout.contains("says hi"),
        "{}",
        o.stdout
    );
    let o = ok(rumi(&k), &["routes", "--json"]);
    let v = o.json();
    assert_eq!(v["routes"][0]["flow_id"], "web.hi");
    assert_eq!(v["clashes"], serde_json::json!([]));
    k.stop();

    // A route that shadows a kernel endpoint: listed as refused, exit 1.
    write(
        home,
        "ecosystem/web/backend/routes.json",
        r#"{"routes": [{"method": "GET", "path": "/api/health", "flow_id": "web.hi"}]}"#,
    );
    let k = Kernel::start(home, &[]);
    ok(rumi(&k), &["pack", "approve", "web"]);
    let o = fails(rumi(&k), &["routes"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("refused:") && o.stderr.contains("kernel endpoint"),
        "{}",
        o.stderr
    );
    k.stop();
}
