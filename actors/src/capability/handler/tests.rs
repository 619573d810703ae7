//! The handler actor with a real Python worker: calls, exceptions, hangs, crashes, the queue, the
//! scrubbed environment, and stopping.

use super::*;
use std::path::Path;
use std::time::Instant;

/// The interpreter for these tests; `None` (skipped, loudly) when there is none, a failure in CI.
/// The real executable (not a version manager's shim, whose script adds variables of its own).
pub(crate) fn python() -> Option<PathBuf> {
    let found = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is required for the capability handler tests"
        );
        eprintln!("SKIPPED: python3 not found; the capability handler tests need it");
    }
    found
}

/// A spec for `source`, with the host installed under `dir`.
pub(crate) fn spec(dir: &Path, python: PathBuf, source: &str) -> HandlerSpec {
    let runtime = dir.join("runtime");
    crate::blockhost::install(&runtime).unwrap();
    let handler_dir = dir.join("handlers/h");
    std::fs::create_dir_all(&handler_dir).unwrap();
    HandlerSpec {
        handler_id: "h".into(),
        permission_id: "test.echo".into(),
        python,
        host_script: runtime.join("rumi_handlerhost.py"),
        handler_dir,
        home: dir.join("homes/h"),
        source: Arc::from(source),
        function: "execute".into(),
        redactor: None,
    }
}

fn call(args: Value, secs: f64) -> Execute {
    Execute {
        context: json!({"principal_id": "p", "permission_id": "test.echo"}),
        args: args.as_object().cloned().unwrap_or_default(),
        timeout: Duration::from_secs_f64(secs),
    }
}

const SOURCE: &str = r#"
import os, time
def execute(context, args):
    what = args.get("do")
    if what == "raise":
        raise ValueError("bad " + "x" * 5000)
    if what == "hang":
        time.sleep(600)
    if what == "exit":
        os._exit(3)
    if what == "env":
        return dict(os.environ)
    if what == "print":
        print("to stdout, never into the protocol")
    return {"context": context, "args": args, "pid": os.getpid()}
"#;

#[actix_rt::test]
async fn calls_errors_hangs_and_crashes() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let addr = CapabilityHandler::new(spec(dir.path(), py, SOURCE)).start();

    let ok = addr
        .send(call(json!({"x": 1}), 30.0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok["args"]["x"], 1);
    assert_eq!(ok["context"]["principal_id"], "p");
    let pid = ok["pid"].as_i64().unwrap();

    // Printing does not corrupt the protocol; the same warm worker answers.
    let printed = addr
        .send(call(json!({"do": "print"}), 30.0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(printed["pid"].as_i64(), Some(pid), "one warm worker");

    // The handler's exception: handler_error, clipped, the worker kept.
    let err = addr
        .send(call(json!({"do": "raise"}), 30.0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.error_type, "handler_error");
    assert!(err.error.starts_with("ValueError: bad"), "{}", err.error);
    assert!(err.error.len() <= MAX_ERROR_BYTES);
    let after = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    assert_eq!(after["pid"].as_i64(), Some(pid));

    // A hang: timeout, the tree killed, and the next call works on a fresh worker.
    let started = Instant::now();
    let err = addr
        .send(call(json!({"do": "hang"}), 0.5))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.error_type, "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    let fresh = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    assert_ne!(fresh["pid"].as_i64(), Some(pid));

    // A crash: handler_crashed, replaced.
    let err = addr
        .send(call(json!({"do": "exit"}), 30.0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.error_type, "handler_crashed");
    let again = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    assert!(again["pid"].is_i64());
    let stats = addr.send(GetStats).await.unwrap();
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.restarts, 2);

    // Stopping the actor kills its worker.
    let last = again["pid"].as_i64().unwrap() as i32;
    addr.send(Stop).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !zombie_or_gone(last) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(zombie_or_gone(last), "the worker dies with its actor");
}

fn zombie_or_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[actix_rt::test]
async fn the_worker_sees_no_kernel_variable() {
    let Some(py) = python() else { return };
    // SAFETY: set before the worker is spawned; tests reading it do not race on its value.
    unsafe { std::env::set_var("RUMI_API_TOKEN_TEST_LEAK", "leaked") };
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), py, SOURCE);
    let home = spec.home.clone();
    let addr = CapabilityHandler::new(spec).start();
    let env = addr
        .send(call(json!({"do": "env"}), 30.0))
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<&String> = env.as_object().unwrap().keys().collect();
    for k in &keys {
        assert!(
            [
                "PATH",
                "LANG",
                "HOME",
                "PYTHONDONTWRITEBYTECODE",
                "LC_CTYPE"
            ]
            .contains(&k.as_str()),
            "unexpected variable {k} in {keys:?}"
        );
    }
    assert_eq!(env["HOME"], json!(home.to_string_lossy()));
}

#[actix_rt::test]
async fn a_handler_that_fails_to_load_answers_handler_error_every_call() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let addr =
        CapabilityHandler::new(spec(dir.path(), py, "raise RuntimeError('at import')\n")).start();
    for _ in 0..2 {
        let err = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap_err();
        assert_eq!(err.error_type, "handler_error");
        assert!(err.error.contains("at import"), "{}", err.error);
    }
    let dir2 = tempfile::tempdir().unwrap();
    let addr = CapabilityHandler::new(spec(dir2.path(), python().unwrap(), "x = 1\n")).start();
    let err = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap_err();
    assert!(err.error.contains("no execute"), "{}", err.error);
}

#[actix_rt::test]
async fn calls_are_serialised_and_the_queue_is_bounded() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source =
        "import time\ndef execute(c, a):\n    time.sleep(a.get('s', 0))\n    return a.get('n')\n";
    let addr = CapabilityHandler::new(spec(dir.path(), py, source)).start();
    // Warm, then one slow call holds the worker; QUEUE_LIMIT more wait; the next is `busy`.
    addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    let first = addr.send(call(json!({"s": 1.0, "n": 0}), 30.0));
    // Sent in order as they are polled (the mailbox is bounded): the last one finds the
    // queue full.
    let mut waiting = Vec::new();
    for n in 1..=QUEUE_LIMIT as i64 {
        waiting.push(addr.send(call(json!({"n": n}), 60.0)));
    }
    waiting.push(addr.send(call(json!({"n": -1}), 30.0)));
    let (first, mut answers) =
        futures_util::future::join(first, futures_util::future::join_all(waiting)).await;
    assert_eq!(first.unwrap().unwrap(), json!(0));
    let busy = answers.pop().unwrap().unwrap().unwrap_err();
    assert_eq!(busy.error_type, "busy");
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(
            a.unwrap().unwrap(),
            json!(i + 1),
            "answered in order, none lost"
        );
    }
}

#[actix_rt::test]
async fn results_that_are_not_json_or_too_large_are_handler_errors_and_the_worker_stays() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = r#"
import os, sys
def execute(context, args):
    what = args.get("do")
    if what == "object":
        return object()
    if what == "nan":
        return float("nan")
    if what == "big":
        return "é" * (3 * 1024 * 1024)
    if what == "exit":
        sys.exit(4)
    return os.getpid()
"#;
    let addr = CapabilityHandler::new(spec(dir.path(), py, source)).start();
    let pid = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    for what in ["object", "nan", "big", "exit"] {
        let err = addr
            .send(call(json!({"do": what}), 30.0))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.error_type, "handler_error", "{what}: {}", err.error);
    }
    let again = addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    assert_eq!(again, pid, "the same worker answers after each");
}

#[actix_rt::test]
async fn waiting_counts_against_a_calls_deadline() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source =
        "import time\ndef execute(c, a):\n    time.sleep(a.get('s', 0))\n    return a.get('n')\n";
    let addr = CapabilityHandler::new(spec(dir.path(), py, source)).start();
    addr.send(call(json!({}), 30.0)).await.unwrap().unwrap();
    // The first holds the worker for 1.5 s; the second may wait only 0.3 s: it never runs.
    let slow = addr.send(call(json!({"s": 1.5, "n": 1}), 30.0));
    let short = addr.send(call(json!({"n": 2}), 0.3));
    let (slow, short) = futures_util::future::join(slow, short).await;
    assert_eq!(slow.unwrap().unwrap(), json!(1));
    assert_eq!(short.unwrap().unwrap_err().error_type, "timeout");
    let stats = addr.send(GetStats).await.unwrap();
    assert_eq!(
        stats.restarts, 0,
        "no worker was killed for a call that never ran"
    );
}
