//! Helpers of the CLI's end-to-end tests: the real `rumi` binary (assert_cmd) with none of the
//! caller's `RUMI_*` settings, pointed at a test kernel, and its output.

use super::{port_of, Kernel, TOKEN};
use assert_cmd::Command;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// `rumi` with none of the caller's `RUMI_*` settings.
pub fn bare() -> Command {
    let mut cmd = Command::cargo_bin("rumi").expect("the rumi binary");
    for (k, _) in std::env::vars() {
        if k.starts_with("RUMI_") || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `rumi` pointed at the kernel `k`.
pub fn rumi(k: &Kernel) -> Command {
    let mut cmd = bare();
    cmd.env("RUMI_HOME", &k.home)
        .env("RUMI_API_PORT", port_of(k).to_string())
        .env("RUMI_API_TOKEN", TOKEN);
    cmd
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

pub fn run(mut cmd: Command, args: &[&str]) -> Output {
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
pub fn ok(cmd: Command, args: &[&str]) -> Output {
    let o = run(cmd, args);
    assert_eq!(o.code, 0, "rumi {args:?}: {}\n{}", o.stdout, o.stderr);
    o
}

/// Runs and expects a non-zero exit status.
pub fn fails(cmd: Command, args: &[&str]) -> Output {
    let o = run(cmd, args);
    assert_ne!(o.code, 0, "rumi {args:?} should fail: {}", o.stdout);
    o
}

pub fn which(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Reads `child`'s stdout lines until one satisfies `want` (30 s deadline), then kills it.
pub fn follow_until(
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

pub fn follow_cmd(k: &Kernel, args: &[&str]) -> std::process::Command {
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
