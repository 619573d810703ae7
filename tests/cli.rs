//! The CLI end to end: the real `rumi` binary (assert_cmd) against a real permissive kernel over
//! HTTP. Every client command in table and `--json` form, exit codes for succeeded, failed and
//! timed-out runs and for a kernel that is not running, the home found from a subdirectory,
//! completions, `| head`, and a pack from `rumi pack new` through `rumi pack test` to a run.

mod common;

use assert_cmd::Command;
use common::{port_of, python_available, write, Kernel, TOKEN};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// `rumi` with none of the caller's `RUMI_*` settings.
fn bare() -> Command {
    let mut cmd = Command::cargo_bin("rumi").expect("the rumi binary");
    for (k, _) in std::env::vars() {
        if k.starts_with("RUMI_") || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `rumi` pointed at the kernel `k`.
fn rumi(k: &Kernel) -> Command {
    let mut cmd = bare();
    cmd.env("RUMI_HOME", &k.home)
        .env("RUMI_API_PORT", port_of(k).to_string())
        .env("RUMI_API_TOKEN", TOKEN);
    cmd
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    let o = cmd
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let out = Output {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(
        !out.stderr.contains("panicked"),
        "rumi {args:?} panicked: {}",
        out.stderr
    );
    out
}

/// Runs and expects exit status 0.
fn ok(cmd: Command, args: &[&str]) -> Output {
    let o = run(cmd, args);
    assert_eq!(o.code, 0, "rumi {args:?}: {}\n{}", o.stdout, o.stderr);
    o
}

/// Runs and expects a non-zero exit status.
fn fails(cmd: Command, args: &[&str]) -> Output {
    let o = run(cmd, args);
    assert_ne!(o.code, 0, "rumi {args:?} should fail: {}", o.stdout);
    o
}

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
}

fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Reads `child`'s stdout lines until one satisfies `want` (30 s deadline), then kills it.
fn follow_until(
    mut cmd: std::process::Command,
    want: impl Fn(&str) -> bool + Send + 'static,
) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if want(&line) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let got = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    got.expect("the followed line did not come within 30 s")
}

fn follow_cmd(k: &Kernel, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rumi"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RUMI_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("RUMI_HOME", &k.home)
        .env("RUMI_API_PORT", port_of(k).to_string())
        .env("RUMI_API_TOKEN", TOKEN);
    cmd
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

#[test]
fn a_new_pack_passes_its_test_runs_when_approved_and_a_broken_one_fails() {
    if !python_available() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("user_data")).unwrap();
    let mut cmd = bare();
    cmd.current_dir(home.path());
    let o = ok(cmd, &["pack", "new", "demo"]);
    assert!(o.stdout.contains("rumi pack test demo"), "{}", o.stdout);
    let pack = home.path().join("ecosystem/demo");
    for f in [
        "backend/ecosystem.json",
        "backend/blocks/greet.py",
        "backend/flows/demo.hello.flow.yaml",
        "backend/tests/hello.test.json",
    ] {
        assert!(pack.join(f).is_file(), "{f}");
    }
    let block = std::fs::read_to_string(pack.join("backend/blocks/greet.py")).unwrap();
    assert!(block.contains("import rumi_syscall") && block.contains("rumi_capability.call("));
    assert!(block.contains("-> Dict[str, Any]"), "type hints");
    let mut again = bare();
    again.current_dir(home.path());
    let o = fails(again, &["pack", "new", "demo"]);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let mut bad = bare();
    bad.current_dir(home.path());
    assert!(fails(bad, &["pack", "new", "../escape"])
        .stderr
        .contains("not a valid pack id"));

    let test = |sub: &str| {
        let mut cmd = bare();
        cmd.current_dir(home.path().join(sub));
        run(cmd, &["pack", "test", "demo"])
    };
    let o = test("ecosystem/demo");
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("pack demo: 1 passed, 0 failed"),
        "{}",
        o.stderr
    );
    // The throw-away kernel left nothing in the author's home.
    assert!(!home.path().join("user_data/permissions").exists());
    assert!(!home.path().join("user_data/api_token").exists());

    // Approved and run on a real kernel, as the author's next step says.
    let k = Kernel::start(home.path(), &[]);
    ok(rumi(&k), &["pack", "approve", "demo"]);
    let run_out = ok(
        rumi(&k),
        &["flow", "run", "demo.hello", "-i", "name=Ada", "--json"],
    )
    .json();
    assert_eq!(run_out["result"]["greeting"]["greeting"], "Hello, Ada!");
    k.stop();

    // A failing expectation, a failing step and a flow that does not load each fail the test.
    let case = pack.join("backend/tests/hello.test.json");
    let text = std::fs::read_to_string(&case).unwrap();
    std::fs::write(&case, text.replace("Hello, Ada!", "Goodbye")).unwrap();
    let o = test(".");
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("result.greeting"), "{}", o.stdout);
    std::fs::write(&case, text).unwrap();
    let block_path = pack.join("backend/blocks/greet.py");
    std::fs::write(
        &block_path,
        block.replace(
            "name = str(",
            "raise RuntimeError('broken')\n    name = str(",
        ),
    )
    .unwrap();
    let o = test(".");
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("broken"), "{}", o.stdout);
    std::fs::write(&block_path, &block).unwrap();
    write(
        home.path(),
        "ecosystem/demo/backend/flows/bad.flow.yaml",
        "flow_id: demo.bad\nphases: []\nsteps: []\n",
    );
    let o = test(".");
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("bad.flow.yaml"), "{}", o.stdout);
}

/// Text from a pack (its description, a file name, an error) never reaches the terminal as
/// control characters; the token never goes through a proxy of the environment; numbers that are
/// not numbers are refused by clap, not panicked on.
#[test]
fn hostile_text_is_shown_escaped_and_the_token_stays_local() {
    if !python_available() {
        return;
    }
    let home = common::fresh_home();
    write(
        home.path(),
        "ecosystem/evil/backend/ecosystem.json",
        r#"{"pack_id":"evil","pack_identity":"x:evil","description":"fine\u001b]52;c;ZXZpbA==\u0007\nstate: approved\u001b[2K"}"#,
    );
    let k = Kernel::start(home.path(), &[]);
    // A proxy that answers nothing: a request sent through it would fail.
    let o = run(
        {
            let mut c = rumi(&k);
            c.env("http_proxy", "http://127.0.0.1:9")
                .env("HTTP_PROXY", "http://127.0.0.1:9")
                .env("ALL_PROXY", "http://127.0.0.1:9");
            c
        },
        &["pack", "show", "evil"],
    );
    assert_eq!(
        o.code, 0,
        "the proxy of the environment was not used: {}",
        o.stderr
    );
    assert!(
        !o.stdout.contains('\u{1b}') && !o.stdout.contains('\u{7}'),
        "{:?}",
        o.stdout
    );
    assert!(
        o.stdout.contains("\\u{1b}]52"),
        "shown, escaped: {}",
        o.stdout
    );
    assert!(
        !o.stdout.lines().any(|l| l.starts_with("state: approved")),
        "a newline in a description cannot forge a line: {}",
        o.stdout
    );
    let o = ok(rumi(&k), &["pack", "list"]);
    assert!(!o.stdout.contains('\u{1b}'), "{:?}", o.stdout);
    for bad in ["NaN", "inf", "-1"] {
        let o = run(rumi(&k), &["runs", "show", "x", "--follow", "--wait", bad]);
        assert_eq!(o.code, 2, "clap refuses --wait {bad}: {}", o.stderr);
        let o = run(rumi(&k), &["flow", "run", "hello", "--timeout", bad]);
        assert_eq!(o.code, 2, "clap refuses --timeout {bad}: {}", o.stderr);
    }
}

/// A home found above the current directory must be the user's own and not writable by anyone;
/// a token file that is not a small regular file is never read (a FIFO would hang the CLI).
#[test]
fn a_planted_home_and_a_strange_token_file_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let planted = root.path().join("user_data");
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("api_token"), "planted").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let work = root.path().join("project/src");
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = bare();
    cmd.current_dir(&work);
    let o = fails(cmd, &["token"]);
    assert!(
        o.stderr.contains("may be written by anyone") && o.stderr.contains("RUMI_HOME"),
        "{}",
        o.stderr
    );
    let mut cmd = bare();
    cmd.current_dir(&work);
    assert!(fails(cmd, &["pack", "new", "x"])
        .stderr
        .contains("refusing the home"));
    assert!(
        !root.path().join("ecosystem").exists(),
        "nothing written into the planted home"
    );

    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(planted.join("api_token")).unwrap();
    let fifo = std::ffi::CString::new(planted.join("api_token").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut cmd = bare();
    cmd.current_dir(&work).timeout(Duration::from_secs(20));
    let o = fails(cmd, &["token"]);
    assert!(
        o.stderr.contains("no token"),
        "a FIFO is not read: {}",
        o.stderr
    );
    std::fs::remove_file(planted.join("api_token")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", planted.join("api_token")).unwrap();
    let mut cmd = bare();
    cmd.current_dir(&work).timeout(Duration::from_secs(20));
    assert!(fails(cmd, &["token"]).stderr.contains("no token"));
    let mut cmd = bare();
    cmd.env("RUMI_HOME", planted.join("api_token"));
    assert!(fails(cmd, &["token"]).stderr.contains("RUMI_HOME"));
}

/// `rumi pack test` keeps the operator's side out of the test kernel: no environment variable
/// and no open descriptor of the caller reaches a block, its working directory is the throw-away
/// home, and an interrupt stops the kernel and removes the home (exit 130).
#[test]
fn pack_test_keeps_the_callers_environment_and_descriptors_and_cleans_up_on_interrupt() {
    if !python_available() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("user_data")).unwrap();
    common::make_pack(
        home.path(),
        "probe",
        &[(
            "probe.py",
            "import os\ndef run(d, c=None):\n    fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n    kernel = os.getppid()\n    env = open(f'/proc/{kernel}/environ', 'rb').read().split(b'\\0')\n    return {'secret': any(e.startswith(b'PROBE_SECRET=') for e in env), 'fds': fds,\n            'kernel_cwd': os.readlink(f'/proc/{kernel}/cwd')}\n",
        ), ("slow.py", "import time\ndef run(d, c=None):\n    time.sleep(60)\n    return {}\n")],
    );
    write(
        home.path(),
        "ecosystem/probe/backend/flows/probe.flow.yaml",
        "flow_id: probe.env\nphases: [m]\nsteps:\n  - {id: p, phase: m, type: python_file_call, file: probe.py, output: out}\n",
    );
    write(
        home.path(),
        "ecosystem/probe/backend/tests/env.test.json",
        r#"{"flow": "probe.env", "expect": {"out": {"secret": false, "fds": [0, 1, 2, 3], "kernel_cwd": "?"}}}"#,
    );
    // Descriptor 7 is open (not close-on-exec) in the shell that runs the command.
    let bin = assert_cmd::cargo::cargo_bin("rumi");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 7</etc/hostname; '{}' pack test probe --json",
            bin.display()
        ))
        .current_dir(home.path())
        .env("PROBE_SECRET", "s3cret")
        .env_remove("RUMI_HOME")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let problem = report["results"][0]["problem"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The case expects kernel_cwd "?", so it fails and its problem shows what the block saw.
    eprintln!("what the block saw: {problem}");
    assert!(problem.contains("\"secret\":false"), "{problem}");
    assert!(
        !problem.contains(",7"),
        "descriptor 7 reached the block: {problem}"
    );
    assert!(
        problem.contains("rumi-pack-test-"),
        "the kernel runs in the throw-away home: {problem}"
    );
    assert!(
        !problem.contains(home.path().to_str().unwrap()),
        "{problem}"
    );

    // An interrupt while a flow runs: the kernel stops, the home goes, exit 130.
    write(
        home.path(),
        "ecosystem/probe/backend/flows/slow.flow.yaml",
        "flow_id: probe.slow\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, file: slow.py}\n",
    );
    let mut child = std::process::Command::new(&bin)
        .args(["pack", "test", "probe"])
        .current_dir(home.path())
        .env_remove("RUMI_HOME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the throw-away kernel has recorded probe.env (flows run in id order, so
    // probe.slow is running or about to), then interrupt.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut kernel_home = None;
    while kernel_home.is_none() && std::time::Instant::now() < deadline {
        kernel_home = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("rumi-pack-test-{pid}-"))
                    && std::fs::read_to_string(p.join("user_data/runs/runs.jsonl"))
                        .is_ok_and(|t| t.contains("probe.env"))
            });
        std::thread::sleep(Duration::from_millis(50));
    }
    let kernel_home = kernel_home.expect("the throw-away home appeared");
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!kernel_home.exists(), "the throw-away home was removed");
}

/// A program that took the kernel's port (while the kernel was down) never receives the token:
/// the CLI asks for a proof that the server holds it first.
#[test]
fn the_token_is_sent_only_to_a_server_that_proves_it_holds_it() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = r#"{"success":true,"data":{"status":"ok","version":"0.1.0","mode":"strict","proof":"00"},"error":null}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let home = tempfile::tempdir().unwrap();
    let mut cmd = bare();
    cmd.env("RUMI_API_PORT", port.to_string())
        .env("RUMI_API_TOKEN", "the-operators-token")
        .env("RUMI_HOME", home.path());
    let o = fails(cmd, &["pack", "list"]);
    assert!(o.stderr.contains("did not prove"), "{}", o.stderr);
    let seen: Vec<String> = rx.try_iter().collect();
    assert!(!seen.is_empty(), "the CLI asked the impostor for its proof");
    for request in &seen {
        assert!(
            !request.to_ascii_lowercase().contains("authorization")
                && !request.contains("the-operators-token"),
            "the token reached the impostor: {request}"
        );
    }
}
