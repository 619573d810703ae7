//! Hostile blocks against a permissive worker's hygiene (README, "Workers"): a block that floods
//! stderr, leaves processes behind or returns a result nested too deep must not grow the kernel's
//! memory, leave processes running after its call, or cost the pack its worker. Through the real
//! binary, real HTTP and real Python workers.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes raw bytes to fd 2 (the worker's stderr pipe, which the kernel reads), never a newline.
const FLOOD: &str = "import os\ndef run(input_data, context=None):\n    chunk = b'x' * (1 << 20)\n    for _ in range(int(input_data['mib'])):\n        os.write(2, chunk)\n    return {'flooded': int(input_data['mib'])}\n";

/// Leaves three processes behind and returns their pids: one in a new session
/// (`start_new_session=True`, out of the worker's process group), a forked child that never
/// returns into the host, and the grandchild of a double fork whose middle process called setsid
/// and exited (so its parent is gone before the call ends).
const LEAVE: &str = r#"import os, subprocess, time
def run(input_data, context=None):
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    detached = subprocess.Popen(['sleep', '300'], start_new_session=True, **quiet)
    child = os.fork()
    if child == 0:
        time.sleep(300)
        os._exit(0)
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            time.sleep(300)
            os._exit(0)
        os.write(w, str(grandchild).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(middle, 0)
    grandchild = int(os.read(r, 32))
    if input_data.get('then_sleep'):
        with open('left.json', 'w') as f:
            f.write(str([detached.pid, child, grandchild]))
        time.sleep(300)
    return {'pids': [detached.pid, child, grandchild], 'worker': os.getpid()}
"#;

const DEEP: &str = "def run(input_data, context=None):\n    v = 'bottom'\n    for _ in range(int(input_data['depth'])):\n        v = [v]\n    return v\n";

const PID: &str =
    "import os\ndef run(input_data, context=None):\n    return {'pid': os.getpid()}\n";

fn home_with(blocks: &[(&str, &str)]) -> tempfile::TempDir {
    let home = fresh_home();
    make_pack(home.path(), "hostile", blocks);
    for (name, _) in blocks {
        let id = name.trim_end_matches(".py");
        write(
            home.path(),
            &format!("user_data/shared/flows/{id}.flow.yaml"),
            &format!("flow_id: {id}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: hostile, file: {name}, input: \"${{ctx.input}}\", timeout_seconds: 120, output: out}}\n"),
        );
    }
    home
}

/// The kernel's resident memory in KiB (`VmRSS` of /proc/<pid>/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("kernel status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// True while `pid` exists, zombies included (a zombie is a process nobody reaped).
fn exists(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until every pid is gone from /proc, up to `limit`; returns those still there.
async fn gone_within(pids: &[i64], limit: Duration) -> Vec<i64> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<i64> = pids.iter().copied().filter(|p| exists(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("no pids in {v}"))
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

async fn pack_counters(k: &Kernel) -> Value {
    counters_of(k, "hostile").await
}

async fn counters_of(k: &Kernel, pack: &str) -> Value {
    let (_, d) = k.get("/api/diagnostics").await;
    d["data"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["pack_id"] == pack)
        .cloned()
        .unwrap_or_else(|| panic!("no counters for pack {pack} in {d}"))
}

#[tokio::test]
async fn a_stderr_flood_without_newlines_does_not_grow_the_kernel() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("flood.py", FLOOD)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("flood", json!({"input": {"mib": 1}})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let pid = k.child.id();
    let before = rss_kib(pid);
    let (_, run) = k.run("flood", json!({"input": {"mib": 256}})).await;
    assert_eq!(run["result"]["out"]["flooded"], 256, "{run}");
    let after = rss_kib(pid);
    assert!(
        after <= before + 32 * 1024,
        "256 MiB on stderr without a newline grew the kernel from {before} KiB to {after} KiB"
    );
    let (_, run) = k.run("flood", json!({"input": {"mib": 0}})).await;
    assert_eq!(
        run["status"], "succeeded",
        "the kernel still answers: {run}"
    );
}

#[tokio::test]
async fn processes_a_block_leaves_behind_are_killed_after_a_successful_call() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("leave.py", LEAVE), ("pid.py", PID)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("leave", json!({"input": {}})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = &run["result"]["out"];
    let pids = pids_of(&out["pids"]);
    let left = gone_within(&pids, Duration::from_secs(10)).await;
    assert!(
        left.is_empty(),
        "processes the block left ({pids:?}: new session, fork, double fork) still exist: {left:?}"
    );
    let log = step(&run, "s")["log"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        log.contains("killed 3 process(es) the block left running"),
        "the step's log says what was done: {log:?}"
    );
    // The worker was cleaned, not replaced: the next call runs in the same process.
    let (_, run) = k.run("pid", json!({"input": {}})).await;
    assert_eq!(run["result"]["out"]["pid"], out["worker"], "{run}");
    assert_eq!(pack_counters(&k).await["restarts"], 0);
}

#[tokio::test]
async fn processes_a_timed_out_block_left_are_killed_with_its_worker() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("leave.py", LEAVE), ("pid.py", PID)]);
    write(
        home.path(),
        "user_data/shared/flows/leave.flow.yaml",
        "flow_id: leave\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, owner_pack: hostile, file: leave.py, input: {then_sleep: true}, timeout_seconds: 3, output: out}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("leave", json!({})).await;
    assert_eq!(step(&run, "s")["error_type"], "timeout", "{run}");
    let written = std::fs::read_to_string(home.path().join("user_data/packs/hostile/left.json"))
        .expect("the block wrote its pids before it overran");
    let pids = pids_of(&serde_json::from_str(&written).unwrap());
    let left = gone_within(&pids, Duration::from_secs(10)).await;
    assert!(
        left.is_empty(),
        "processes of the timed-out block ({pids:?}) still exist: {left:?}"
    );
    let (_, run) = k.run("pid", json!({"input": {}})).await;
    assert!(run["result"]["out"]["pid"].is_i64(), "{run}");
}

#[tokio::test]
async fn a_result_nested_too_deep_is_invalid_and_the_worker_stays() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("deep.py", DEEP), ("pid.py", PID)]);
    let k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("pid", json!({"input": {}})).await;
    let worker = run["result"]["out"]["pid"].clone();
    assert!(worker.is_i64(), "{run}");

    // Deep, but within the limit: returned as it is.
    let (_, run) = k.run("deep", json!({"input": {"depth": 90}})).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let (_, run) = k.run("deep", json!({"input": {"depth": 200}})).await;
    let s = step(&run, "s");
    assert_eq!(s["error_type"], "invalid_result", "{run}");
    assert!(
        s["error"].as_str().unwrap().contains("nested"),
        "the error says what was wrong: {s}"
    );

    let (_, run) = k.run("pid", json!({"input": {}})).await;
    assert_eq!(
        run["result"]["out"]["pid"], worker,
        "the same worker answers: {run}"
    );
    let counters = pack_counters(&k).await;
    assert_eq!(counters["restarts"], 0, "{counters}");
}

/// A worker dies with its kernel, even one the kernel had just stopped (SIGSTOP of the worker is
/// the first step of its kill walk, and a kernel can be SIGKILLed in the middle of it). Workers
/// carry `PR_SET_PDEATHSIG(SIGKILL)`, which reaches a stopped process. (The orphaned-process-group
/// rule, SIGHUP + SIGCONT, covers this plain case too, so this test documents the behaviour rather
/// than catching the old code; the walks now kill each process as they find it, so no
/// descendant outside the worker's group — `setsid` — can be left stopped either.)
#[tokio::test]
async fn a_stopped_worker_dies_with_its_kernel() {
    if !python_available() {
        return;
    }
    let home = home_with(&[("pid.py", PID)]);
    let mut k = Kernel::start(home.path(), &[]);
    k.approve("hostile").await;
    let (_, run) = k.run("pid", json!({"input": {}})).await;
    let worker = run["result"]["out"]["pid"]
        .as_i64()
        .expect("the worker's pid");
    // SAFETY: signals to processes this test started.
    unsafe { libc::kill(worker as i32, libc::SIGSTOP) };
    k.child.kill().unwrap(); // SIGKILL: no orderly shutdown
    k.child.wait().unwrap();
    let left = gone_within(&[worker], Duration::from_secs(10)).await;
    if !left.is_empty() {
        unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "the stopped worker outlived its kernel");
}

/// Marks that it started (`mark`), holds until `path` exists (at most 110 s, past every wait of
/// the test), then says where it ran.
const HOLD: &str = "import os, time\ndef run(input_data, context=None):\n    if input_data.get('mark'):\n        open(input_data['mark'], 'w').close()\n    end = time.time() + 110\n    while input_data.get('path') and not os.path.exists(input_data['path']) and time.time() < end:\n        time.sleep(0.01)\n    return {'pid': os.getpid(), 'cpus': sorted(os.sched_getaffinity(0))}\n";

/// The CPUs this process may use (the kernel it starts inherits them).
fn allowed_cpus() -> Vec<i64> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(a.parse::<i64>().unwrap()..=b.parse::<i64>().unwrap());
    }
    cpus
}

/// Starts a `hold` run that waits for `home/release{name}` and returns once it has started
/// (its mark exists) with the release file and the run's task.
async fn hold(
    k: &std::sync::Arc<Kernel>,
    home: &Path,
    name: &str,
) -> (std::path::PathBuf, tokio::task::JoinHandle<(u16, Value)>) {
    hold_in(k, home, "hold", name).await
}

/// Starts a `hold` run through `flow` that waits for `home/release{name}`, without waiting for it
/// to start (it may queue): its release file and task.
fn hold_in_background(
    k: &std::sync::Arc<Kernel>,
    flow: &str,
    home: &Path,
    name: &str,
) -> (std::path::PathBuf, tokio::task::JoinHandle<(u16, Value)>) {
    let release = home.join(format!("release{name}"));
    let (kc, flow) = (k.clone(), flow.to_string());
    let input = json!({"input": {"path": release}});
    (
        release,
        tokio::spawn(async move { kc.run(&flow, input).await }),
    )
}

/// [`hold`] through the flow `flow`.
async fn hold_in(
    k: &std::sync::Arc<Kernel>,
    home: &Path,
    flow: &str,
    name: &str,
) -> (std::path::PathBuf, tokio::task::JoinHandle<(u16, Value)>) {
    let (mark, release) = (
        home.join(format!("started{name}")),
        home.join(format!("release{name}")),
    );
    let (kc, flow) = (k.clone(), flow.to_string());
    let input = json!({"input": {"mark": mark, "path": release}});
    let task = tokio::spawn(async move { kc.run(&flow, input).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mark.exists() {
        assert!(
            Instant::now() < deadline,
            "held call {name} never started: no worker took it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (release, task)
}

/// The CPUs the kernel (`half` policy) leaves and keeps, the kernel's spill budget (two per CPU
/// left, four in all) and a pack's share of it (half, at least one) — none on a machine of one
/// CPU, where the kernel leaves no CPU.
fn spill_share() -> (Vec<i64>, Vec<i64>, usize, usize) {
    let cpus = allowed_cpus();
    let split = cpus.len() - cpus.len().div_ceil(2);
    let limit = (2 * split).min(4);
    let share = if limit == 0 { 0 } else { (limit / 2).max(1) };
    (cpus[..split].to_vec(), cpus[split..].to_vec(), limit, share)
}

/// Waits until the pack's counters satisfy `done` (at most `secs`), and returns them.
async fn counters_until(
    k: &Kernel,
    pack: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let c = counters_of(k, pack).await;
        if done(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "{what}: {c}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Under the default CPU policy (`half`) the kernel keeps the upper half of the CPUs; a pack's
/// lone calls run on its warm worker there. Calls that overlap run on spill workers confined to
/// the lower half, started while every worker is busy, up to the kernel's whole budget (two per
/// CPU left, four in all) while no other pack waits for its share; beyond it a call waits. A call
/// with nothing else in flight takes the warm worker; an overlapping one takes an idle spill
/// worker before starting another; a spill worker idle for `RUMI_PACK_SPILL_IDLE` is stopped.
#[tokio::test]
async fn overlapping_calls_run_on_spill_workers_up_to_the_limit() {
    if !python_available() {
        return;
    }
    // (One CPU: nothing may spill, and the call past the warm worker waits: checked the same way.)
    let (left, kept, limit, _) = spill_share();
    let home = home_with(&[("hold.py", HOLD)]);
    let k = std::sync::Arc::new(Kernel::start(home.path(), &[("RUMI_PACK_SPILL_IDLE", "8")]));
    k.approve("hostile").await;
    let (_, run) = k.run("hold", json!({"input": {}})).await;
    let warm = run["result"]["out"].clone();
    let on = |v: &Value| -> Vec<i64> {
        v["cpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .collect()
    };
    assert!(
        on(&warm).iter().all(|c| kept.contains(c)),
        "the warm worker runs on the kernel's CPUs {kept:?}: {run}"
    );

    // One held call on the warm worker, then `limit` more, each started before the next: alone,
    // the pack may take the kernel's whole budget.
    let mut held = Vec::new();
    for i in 0..=limit {
        held.push(hold(&k, home.path(), &i.to_string()).await);
    }
    let c = pack_counters(&k).await;
    assert_eq!(c["workers"], 1 + limit as u64, "{c}");
    assert_eq!(c["spill_workers"], limit as u64, "{c}");
    // Every worker busy and the budget spent: the next call waits in the pack's queue.
    let mut waiting = Some({
        let kc = k.clone();
        tokio::spawn(async move { kc.run("hold", json!({"input": {}})).await })
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = pack_counters(&k).await;
        if c["queued"] == 1 {
            assert_eq!(
                c["workers"],
                1 + limit as u64,
                "no spill worker past the limit: {c}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call past the limit never queued: {c}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The warm worker's call ends first and takes the waiting call; then the spill workers'.
    let mut spills = Vec::new();
    for (i, (release, task)) in held.into_iter().enumerate() {
        std::fs::write(&release, b"").unwrap();
        let (_, run) = task.await.unwrap();
        let out = &run["result"]["out"];
        if i == 0 {
            assert_eq!(out["pid"], warm["pid"], "{run}");
            let (_, run) = waiting.take().unwrap().await.unwrap();
            assert_eq!(
                run["result"]["out"]["pid"], warm["pid"],
                "the waiting call took the first worker free: {run}"
            );
            continue;
        }
        assert_ne!(
            out["pid"], warm["pid"],
            "an overlapping call waited for the busy warm worker: {run}"
        );
        assert_eq!(
            on(out),
            left,
            "a spill worker runs on the CPUs the kernel left: {run}"
        );
        spills.push(out["pid"].as_i64().unwrap());
    }
    let Some(&last_back) = spills.last() else {
        assert_eq!(limit, 0, "no call ran on a spill worker");
        return; // one CPU: nothing spilled, and the call past the warm worker waited (above)
    };
    spills.sort_unstable();
    spills.dedup();
    assert_eq!(
        spills.len(),
        limit,
        "each held call had its own spill worker"
    );
    // All idle, a spill worker the last one back: a lone call takes the warm worker ...
    let (_, run) = k.run("hold", json!({"input": {}})).await;
    assert_eq!(run["result"]["out"]["pid"], warm["pid"], "{run}");
    // ... and a call overlapping a held one takes the idle spill worker last back, starting none
    // (the ones idle longest are the first stopped).
    let (release, task) = hold(&k, home.path(), "w").await;
    let (_, run) = k.run("hold", json!({"input": {}})).await;
    assert_eq!(run["result"]["out"]["pid"], last_back, "{run}");
    assert_eq!(pack_counters(&k).await["workers"], 1 + limit as u64);
    std::fs::write(&release, b"").unwrap();
    let (_, run) = task.await.unwrap();
    assert_eq!(run["result"]["out"]["pid"], warm["pid"], "{run}");
    // No other pack waits: those past the pack's share stay, like the rest, until they idle 8 s.
    let c = pack_counters(&k).await;
    assert_eq!(c["spill_workers"], limit as u64, "{c}");
    // Idle for 8 s, the spill workers are stopped; the warm one stays.
    assert!(
        gone_within(&spills, Duration::from_secs(40))
            .await
            .is_empty(),
        "idle spill workers {spills:?} still run"
    );
    let counters = pack_counters(&k).await;
    assert_eq!(counters["workers"], 1, "{counters}");
    assert_eq!(counters["spill_workers"], 0, "{counters}");
    assert_eq!(counters["restarts"], 0, "{counters}");
    let (_, run) = k.run("hold", json!({"input": {}})).await;
    assert_eq!(run["result"]["out"]["pid"], warm["pid"], "{run}");
}

/// The spill budget is the kernel's, not each pack's: one pack alone may take all of it, but a
/// pack below its share (half) that finds it spent makes a pack past its share stop a spill
/// worker as one comes back from its call, and start none; the waiting pack's queued call takes
/// the freed slot by itself.
#[tokio::test]
async fn the_spill_budget_is_shared_by_every_pack() {
    if !python_available() {
        return;
    }
    // (One CPU: no pack may spill; the second pack's call waits all the same.)
    let (_, _, limit, share) = spill_share();
    let home = fresh_home();
    let packs = ["spa", "spb"];
    for id in packs {
        make_pack(home.path(), id, &[("hold.py", HOLD)]);
        write(
            home.path(),
            &format!("user_data/shared/flows/hold_{id}.flow.yaml"),
            &format!("flow_id: hold_{id}\nphases: [m]\nsteps:\n  - {{id: s, phase: m, type: python_file_call, owner_pack: {id}, file: hold.py, input: \"${{ctx.input}}\", timeout_seconds: 120, output: out}}\n"),
        );
    }
    let k = std::sync::Arc::new(Kernel::start(home.path(), &[]));
    for id in packs {
        k.approve(id).await;
    }
    // The first pack: a call on the warm worker, then the whole budget on spill workers.
    let mut first = Vec::new();
    for i in 0..=limit {
        first.push(hold_in(&k, home.path(), "hold_spa", &format!("a{i}")).await);
    }
    let c = counters_of(&k, "spa").await;
    assert_eq!(c["spill_workers"], limit as u64, "{c}");
    // The second: its warm worker busy, its overlapping call finds the budget spent and waits.
    let second = vec![hold_in(&k, home.path(), "hold_spb", "b0").await];
    let waiting = {
        let (kc, mark, release) = (
            k.clone(),
            home.path().join("startedb1"),
            home.path().join("releaseb1"),
        );
        let task = tokio::spawn(async move {
            kc.run(
                "hold_spb",
                json!({"input": {"mark": mark, "path": release}}),
            )
            .await
        });
        (
            home.path().join("startedb1"),
            home.path().join("releaseb1"),
            task,
        )
    };
    let c = counters_until(&k, "spb", 20, "the second pack's call never queued", |c| {
        c["queued"] == 1
    })
    .await;
    assert_eq!(
        c["spill_workers"], 0,
        "a pack spilled past the kernel's budget: {c}"
    );
    assert_eq!(c["workers"], 1, "{c}");
    if limit > 0 {
        // The first pack's last spill call ends: past its share while the second pack wants one,
        // its worker is stopped instead of kept idle.
        let (release, task) = first.pop().unwrap();
        std::fs::write(&release, b"").unwrap();
        let (_, run) = task.await.unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
        // (Stopped in the turn that answered the call, before the run could end: read at once; the
        // half-second idle check would stop it too, but seldom in the few ms of this round trip.)
        let c = counters_of(&k, "spa").await;
        assert_eq!(
            c["spill_workers"],
            (limit - 1) as u64,
            "the first pack kept its spill worker past its share: {c}"
        );
        assert!(
            limit > share,
            "it gives back only what is past its share: {c}"
        );
        // A new overlapping call of the first pack does not take the slot back: at its share while
        // the second waits, it queues.
        let again = hold_in_background(&k, "hold_spa", home.path(), "a_again");
        counters_until(
            &k,
            "spa",
            20,
            "the first pack's new call never queued",
            |c| c["queued"] == 1,
        )
        .await;
        // The second pack's waiting call starts on a spill worker in the freed slot, by itself (its
        // pack retries while it waits for its share).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !waiting.0.exists() {
            assert!(
                Instant::now() < deadline,
                "the waiting call never started on the freed slot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = counters_of(&k, "spb").await;
        assert_eq!(
            (c["spill_workers"].as_u64(), c["workers"].as_u64()),
            (Some(1), Some(2)),
            "{c}"
        );
        let c = counters_of(&k, "spa").await;
        assert_eq!(
            c["spill_workers"],
            (limit - 1) as u64,
            "the first pack took the slot back: {c}"
        );
        assert_eq!(c["queued"], 1, "{c}");
        std::fs::write(&waiting.1, b"").unwrap();
        first.push(again);
    } else {
        std::fs::write(&waiting.1, b"").unwrap();
    }
    for (release, task) in first.into_iter().chain(second) {
        let _ = std::fs::write(&release, b"");
        let (_, run) = task.await.unwrap();
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let (_, run) = waiting.2.await.unwrap();
    assert_eq!(run["status"], "succeeded", "the waiting call ran: {run}");
}
