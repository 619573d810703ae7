//! The end-to-end harness: a real `rumi` binary in a temporary `RUMI_HOME`, spoken to over real
//! HTTP. Each test gets its own kernel (its own port, files and workers), so tests run in
//! parallel and never share state.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Python is needed for blocks: in CI its absence fails loudly, locally the test is skipped.
pub fn python_available() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("python3 is required for the end-to-end tests and is missing in CI");
        }
        eprintln!("SKIPPED: python3 is not installed; blocks cannot run");
    }
    ok
}

/// Copies the repository's example packs and shared flows into a fresh home.
pub fn fresh_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&repo.join("ecosystem"), &dir.path().join("ecosystem"));
    copy_dir(
        &repo.join("user_data/shared"),
        &dir.path().join("user_data/shared"),
    );
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Writes `text` to `home/rel`, creating directories.
pub fn write(home: &Path, rel: &str, text: &str) {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Creates a pack with the given blocks (name → code).
pub fn make_pack(home: &Path, id: &str, blocks: &[(&str, &str)]) {
    write(
        home,
        &format!("ecosystem/{id}/backend/ecosystem.json"),
        &format!(r#"{{"pack_id":"{id}","pack_identity":"test:{id}"}}"#),
    );
    for (name, code) in blocks {
        write(home, &format!("ecosystem/{id}/backend/blocks/{name}"), code);
    }
}

/// A running kernel.
pub struct Kernel {
    pub home: PathBuf,
    pub base: String,
    pub child: Child,
    pub http: reqwest::Client,
    pub stderr_log: PathBuf,
}

impl Kernel {
    /// Starts `rumi serve --permissive` in `home` with extra environment variables.
    pub fn start(home: &Path, env: &[(&str, &str)]) -> Kernel {
        Self::start_mode(home, env, true)
    }

    pub fn start_mode(home: &Path, env: &[(&str, &str)], permissive: bool) -> Kernel {
        let log = home.join("kernel-stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rumi"));
        cmd.arg("serve");
        if permissive {
            cmd.arg("--permissive");
        }
        // The test's own RUMI_* settings never leak into the kernel under test.
        for (k, _) in std::env::vars() {
            if k.starts_with("RUMI_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUMI_HOME", home)
            .env("RUMI_API_PORT", "0")
            .env("RUMI_API_TOKEN", TOKEN)
            .env("RUMI_HTTP_WORKERS", "2")
            .env("RUMI_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start rumi");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("rumi listening on ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the kernel did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Kernel {
            home: home.to_path_buf(),
            base,
            child,
            http: reqwest::Client::new(),
            stderr_log: log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with the token; returns (status, body as JSON).
    pub async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req("POST", path, Some(body)).await
    }

    pub async fn approve(&self, pack: &str) {
        let (s, v) = self
            .post(&format!("/api/packs/{pack}/approve"), json!({}))
            .await;
        assert_eq!(s, 200, "approve {pack}: {v}");
        assert_eq!(v["data"]["state"], "approved");
    }

    /// Runs a flow; returns (status, data).
    pub async fn run(&self, flow: &str, inputs: Value) -> (u16, Value) {
        let (s, v) = self
            .post(&format!("/api/flows/{flow}/run"), json!({"inputs": inputs}))
            .await;
        (s, v["data"].clone())
    }

    pub async fn reload(&self) {
        let (s, _) = self.post("/api/flows/reload", json!({})).await;
        assert_eq!(s, 200);
    }

    /// Stops the kernel (SIGTERM) and waits.
    pub fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and error_type of a run's step.
pub fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}
