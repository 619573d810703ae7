//! Warm script containers in strict mode (issue 15, item 2): a run's scripts share one
//! container, started at its first script and removed when the run ends, and each script still
//! gets everything a container of its own gave it — nothing of it outlives it, its timeout, its
//! file-size limit from the disk budget left at its start, a fresh container after a stop, and a
//! crashed kernel's containers swept at the next boot. Needs Docker and the image (`rumi image
//! build`): skipped locally without them, a failure in CI.

mod common;

use common::llm_server::{Flavor, Policy, ScriptedModel};
use common::skills::calls;
use common::warm::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

const WHO: &str = "import json, os, socket, sys\nargs = json.load(sys.stdin)\n\
mark = os.path.exists('/tmp/mark')\nopen('/tmp/mark', 'w').write('x')\n\
print(json.dumps({'host': socket.gethostname(), 'args': args, 'argv': sys.argv[1:], 'cwd': os.getcwd(), 'saw_mark': mark}))\n";

#[tokio::test]
async fn scripts_of_a_run_share_one_container_that_goes_with_the_run() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("who.py", WHO)]);
    let plan = vec![
        calls(&[(
            "run_script",
            json!({"path": "scripts/who.py", "args": {"n": 1}, "argv": ["a"]}),
        )]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/who.py", "args": {"n": 2}, "argv": ["b", "c"]}),
        )]),
        script("scripts/who.py"),
    ];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    let out: Vec<&Value> = results.iter().take(3).map(|r| &r["stdout_json"]).collect();
    // One container: the same host name for all three.
    assert!(out[0]["host"].is_string(), "{results:#?}");
    assert_eq!(out[0]["host"], out[1]["host"], "{results:#?}");
    assert_eq!(out[1]["host"], out[2]["host"], "{results:#?}");
    // Each its own stdin, argv and working directory.
    assert_eq!(out[0]["args"], json!({"n": 1}));
    assert_eq!(out[1]["args"], json!({"n": 2}));
    assert_eq!(out[0]["argv"], json!(["a"]));
    assert_eq!(out[1]["argv"], json!(["b", "c"]));
    assert_eq!(out[2]["cwd"], "/skill");
    // /tmp is scratch per script (as a host script's HOME): the mark never carries over.
    for o in &out {
        assert_eq!(o["saw_mark"], false, "{results:#?}");
    }
}

/// Starts writers that append to build/<name> every 10 ms — one in a session of its own, one
/// double-forked under nohup, one holding the script's stdout — and returns at once.
const SPAWN: &str = "import json, subprocess\n\
loop = 'while :; do echo x >> build/{0}; sleep 0.01; done'\n\
subprocess.Popen(['sh', '-c', loop.format('a')], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
subprocess.Popen(['sh', '-c', '(nohup sh -c \"' + loop.format('b') + '\" >/dev/null 2>&1 &) &'])\n\
subprocess.Popen(['sh', '-c', loop.format('c')])\n\
print(json.dumps({'spawned': 3}))\n";

const GROWTH: &str = "import json, os, time\n\
def sizes():\n    return [os.path.getsize('build/' + n) if os.path.exists('build/' + n) else -1 for n in 'abc']\n\
first = sizes()\ntime.sleep(0.4)\nprint(json.dumps({'first': first, 'then': sizes()}))\n";

#[tokio::test]
async fn nothing_a_script_starts_outlives_it() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("spawn.py", SPAWN), ("growth.py", GROWTH)]);
    let plan = vec![
        calls(&[(
            "run_script",
            json!({"path": "scripts/spawn.py", "timeout_seconds": 20}),
        )]),
        script("scripts/growth.py"),
    ];
    let (r, results) = strict_run(home.path(), plan, json!({})).await;
    assert_eq!(
        results[0]["stdout_json"],
        json!({"spawned": 3}),
        "{results:#?}"
    );
    // The writer holding stdout did not keep the script "running" until its timeout.
    assert!(
        results[0]["duration_ms"].as_u64().unwrap_or(u64::MAX) < 10_000,
        "{results:#?}"
    );
    let g = &results[1]["stdout_json"];
    assert_eq!(
        g["first"], g["then"],
        "a writer outlived its script: {results:#?}"
    );
    // And on the host, after the run: build/a stays as it is.
    let build = home
        .path()
        .join("user_data/skill_runs")
        .join(r["run_id"].as_str().unwrap())
        .join("build");
    let size = || {
        std::fs::metadata(build.join("a"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let before = size();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(before, size());
}

const SLOW: &str = "import time\ntime.sleep(60)\n";
const OK: &str = "import json, os, socket\n\
others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid())]\n\
print(json.dumps({'ok': True, 'host': socket.gethostname(), 'others': others}))\n";

#[tokio::test]
async fn a_timed_out_script_is_killed_and_the_next_one_runs() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("slow.py", SLOW), ("ok.py", OK)]);
    let plan = vec![
        script("scripts/ok.py"),
        calls(&[(
            "run_script",
            json!({"path": "scripts/slow.py", "timeout_seconds": 1}),
        )]),
        script("scripts/ok.py"),
    ];
    let (_, results) = strict_run(home.path(), plan, json!({})).await;
    assert_eq!(results[1]["error_type"], "timeout", "{results:#?}");
    assert_eq!(results[2]["stdout_json"]["ok"], true, "{results:#?}");
    // The timed-out script is gone: nothing runs beside the runner and the next script.
    assert_eq!(
        results[2]["stdout_json"]["others"],
        json!([]),
        "{results:#?}"
    );
    // The same container: a timeout kills the script, not the container.
    assert_eq!(
        results[0]["stdout_json"]["host"], results[2]["stdout_json"]["host"],
        "{results:#?}"
    );
}

/// Writes `n` bytes to build/<name>; reports the error instead of failing; `keep` false removes
/// the file again.
fn writer(name: &str, n: usize, keep: bool) -> String {
    format!(
        "import json, os\nerr = None\ntry:\n    with open('build/{name}', 'wb') as f:\n        f.write(b'x' * {n})\nexcept OSError as e:\n    err = e.errno\n\
size = os.path.getsize('build/{name}')\n{}print(json.dumps({{'errno': err, 'size': size}}))\n",
        if keep { String::new() } else { format!("os.remove('build/{name}')\n") }
    )
}

#[tokio::test]
async fn the_file_size_limit_is_the_budget_left_at_each_script() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        &[
            ("first.py", &writer("one", 600_000, true)),
            ("second.py", &writer("two", 600_000, false)),
            ("third.py", &writer("three", 100_000, true)),
        ],
    );
    let plan = vec![
        script("scripts/first.py"),
        script("scripts/second.py"),
        script("scripts/third.py"),
    ];
    let (_, results) = strict_run(
        home.path(),
        plan,
        json!({"budgets": {"disk_write_limit_mb": 1}}),
    )
    .await;
    // 600 000 bytes fit the 1 MiB budget; the second script's limit is what was left then
    // (448 576 bytes), so the same write stops there with EFBIG; a later small one still runs.
    assert_eq!(
        results[0]["stdout_json"],
        json!({"errno": null, "size": 600_000}),
        "{results:#?}"
    );
    assert_eq!(results[1]["stdout_json"]["errno"], 27, "{results:#?}");
    assert_eq!(
        results[1]["stdout_json"]["size"],
        1024 * 1024 - 600_000,
        "{results:#?}"
    );
    assert_eq!(
        results[2]["stdout_json"],
        json!({"errno": null, "size": 100_000}),
        "{results:#?}"
    );
}

const FILL: &str = "import time\nfor i in range(40):\n    with open('build/f%d' % i, 'wb') as f:\n        f.write(b'x' * 200000)\n    time.sleep(0.05)\n";

#[tokio::test]
async fn a_script_stopped_by_the_disk_budget_takes_its_container_with_it() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("fill.py", FILL), ("ok.py", OK)]);
    let plan = vec![script("scripts/ok.py"), script("scripts/fill.py")];
    // strict_run checks that no container of the run is left.
    let (r, results) = strict_run(
        home.path(),
        plan,
        json!({"budgets": {"disk_write_limit_mb": 1}}),
    )
    .await;
    assert_eq!(results[0]["stdout_json"]["ok"], true, "{results:#?}");
    assert_eq!(r["exit_reason"], "budget_exceeded:disk", "{r:#}");
    let build = home
        .path()
        .join("user_data/skill_runs")
        .join(r["run_id"].as_str().unwrap())
        .join("build");
    let count = || std::fs::read_dir(&build).map(|d| d.count()).unwrap_or(0);
    let before = count();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(before, count(), "the stopped script still writes");
}

#[tokio::test]
async fn a_crashed_kernels_script_containers_are_removed_at_the_next_boot() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), &[("slow.py", SLOW)]);
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        Policy {
            supervisor: vec![calls(&[(
                "run_script",
                json!({"path": "scripts/slow.py", "timeout_seconds": 120}),
            )])],
            ..Policy::default()
        },
    );
    let mut k = strict_kernel(home.path(), &model);
    let url = k.url("/api/skills/run");
    let http = k.http.clone();
    tokio::spawn(async move {
        let body =
            json!({"skill_id": "warm", "goal": "sleep", "budgets": {"time_budget_ms": 120000}});
        let _ = http.post(url).bearer_auth(TOKEN).json(&body).send().await;
    });
    let instances = [
        instance_of(home.path()),
        instance_of(&home.path().canonicalize().unwrap()),
    ];
    let name = until(60, "the script container to run", || async {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "--filter",
                "label=rumi.role=skill-script",
                "--format",
                "{{.Names}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|n| instances.iter().any(|i| n.ends_with(&format!(".{i}"))))
            .map(str::to_string)
    })
    .await;
    // SIGKILL: no shutdown, no finish.
    k.child.kill().unwrap();
    let _ = k.child.wait();
    let exists = |n: &str| {
        std::process::Command::new("docker")
            .args(["inspect", n])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(exists(&name), "the container went with the kernel already");
    let k2 = strict_kernel(home.path(), &model);
    until(
        30,
        "the leftover script container to be removed",
        || async { (!exists(&name)).then_some(()) },
    )
    .await;
    k2.stop();
}

/// The installation's instance label (`crate::docker::instance_id`).
fn instance_of(home: &Path) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(home.as_os_str().as_encoded_bytes());
    hex::encode(&d[..6])
}

/// A Python script runs in a fork of the runner, and behaves as `python3 script.py` would: it is
/// `__main__`, sees its argv and stdin, imports a module next to it, its exit status is its own
/// (`sys.exit(3)`, an uncaught exception → 1 with the traceback on stderr), a non-daemon thread
/// finishes before the result, and atexit handlers run.
#[tokio::test]
async fn a_python_script_in_a_fork_of_the_runner_behaves_like_a_new_interpreter() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        &[
            ("helper.py", "VALUE = 'from the script directory'\n"),
            (
                "main.py",
                "import atexit, json, sys, threading, time\nimport helper\n\
                 args = json.load(sys.stdin)\n\
                 def late():\n    time.sleep(0.2)\n    open('build/thread.txt', 'w').write('thread done')\n\
                 threading.Thread(target=late).start()\n\
                 atexit.register(lambda: open('build/atexit.txt', 'w').write('atexit ran'))\n\
                 import os\nfds = len(os.listdir('/proc/self/fd'))\n\
                 print(json.dumps({'name': __name__, 'argv': sys.argv, 'args': args, 'helper': helper.VALUE, 'fds': fds}))\n\
                 if args.get('code'):\n    sys.exit(args['code'])\n",
            ),
            ("boom.py", "raise ValueError('kaboom')\n"),
        ],
    );
    let plan = vec![
        calls(&[(
            "run_script",
            json!({"path": "scripts/main.py", "args": {"n": 1}, "argv": ["x", "y"]}),
        )]),
        calls(&[(
            "run_script",
            json!({"path": "scripts/main.py", "args": {"code": 3}}),
        )]),
        script("scripts/boom.py"),
    ];
    let (r, results) = strict_run(home.path(), plan, json!({})).await;
    let first = &results[0];
    assert_eq!(first["exit_code"], 0, "{first:#}");
    assert_eq!(first["stdout_json"]["name"], "__main__");
    assert_eq!(
        first["stdout_json"]["argv"],
        json!(["/skill/scripts/main.py", "x", "y"])
    );
    assert_eq!(first["stdout_json"]["args"], json!({"n": 1}));
    assert_eq!(first["stdout_json"]["helper"], "from the script directory");
    // Its own /proc/self is readable (dumpable, like an exec'd interpreter), and it holds 0, 1,
    // 2 and the listing's own descriptor: nothing of the runner's.
    assert_eq!(first["stdout_json"]["fds"], 4, "{first:#}");
    let written: Vec<&str> = first["files_written"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        written.contains(&"build/thread.txt") && written.contains(&"build/atexit.txt"),
        "the thread finished and atexit ran before the result: {first:#}"
    );
    assert_eq!(results[1]["exit_code"], 3, "{:#}", results[1]);
    assert_eq!(results[2]["exit_code"], 1, "{:#}", results[2]);
    assert!(
        results[2]["stderr_tail"]
            .as_str()
            .is_some_and(|t| t.contains("ValueError: kaboom") && t.contains("boom.py")),
        "{:#}",
        results[2]
    );
    let _ = r;
}
