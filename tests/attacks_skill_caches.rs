//! Outside review of the skill caches and dependency environments (issue 15): the model is
//! hostile, so are skill authors and package authors, and runs happen concurrently. Every test
//! here is one of its findings (numbered as reported), each failing on the code as reviewed and
//! passing since its fix; they stay as regression tests. Real binary,
//! scripted model server, real Python; no sleeps-and-hope (conditions are waited for, with
//! deadlines).

mod common;

use common::deps::{wheels, SilentIndex};
use common::llm_server::{Flavor, ScriptedModel};
use common::skills::{calls, kernel_with, policy, run};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A user skill `id` whose SKILL.md says little, with `files` (relative to the skill).
fn skill(home: &Path, id: &str, files: &[(&str, &str)]) {
    let base = format!("user_data/skills/{id}");
    write(
        home,
        &format!("{base}/SKILL.md"),
        &format!(
            "---\nname: {id}\ndescription: A skill of the cache attacks.\n---\nRun the scripts.\n"
        ),
    );
    for (rel, text) in files {
        write(home, &format!("{base}/{rel}"), text);
    }
}

fn input(skill: &str, goal: &str, budgets: Option<Value>) -> Value {
    let mut v = json!({
        "skill_id": skill,
        "goal": goal,
        "expected_outputs": [{"path": "build/out.txt", "kind": "text"}],
    });
    if let Some(b) = budgets {
        v["budgets"] = b;
    }
    v
}

/// The tool results of the run whose goal is `goal` (from its last supervisor request).
fn results_of(model: &ScriptedModel, goal: &str) -> Vec<Value> {
    model
        .requests()
        .iter()
        .rfind(|r| {
            !r.is_sub_agent() && !r.tool_names().is_empty() && r.system_prompt().contains(goal)
        })
        .map(|r| r.tool_results())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Finding 1: the AttemptMemo keys a script run without the disk budget it ran under, although
// the runner caps the size of every file the script writes at the budget left (RLIMIT_FSIZE).
// A run with a small `disk_write_limit_mb` (a hostile caller, or a run that already wrote a
// lot) stores the script's EFBIG failure; every later run of the skill from the same build/
// state — whatever its budget, goal or inputs — gets that failure from the memo and the script
// never runs again, until a file of the skill changes.

const BIG_PY: &str = r#"import os, sys
try:
    with open('build/big.bin', 'wb') as f:
        f.write(b'x' * (3 * 1024 * 1024))
except OSError as e:
    try:
        os.remove('build/big.bin')
    except OSError:
        pass
    print('write failed: ' + type(e).__name__, file=sys.stderr)
    sys.exit(4)
open('build/out.txt', 'w').write('big written')
print('{"written": true}')
"#;

#[tokio::test]
async fn a_small_disk_budget_does_not_poison_the_memo_for_later_runs() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    skill(home.path(), "big", &[("scripts/big.py", BIG_PY)]);
    let plan = vec![calls(&[("run_script", json!({"path": "scripts/big.py"}))])];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);

    // Run 1: 1 MB of disk; the 3 MB write fails (EFBIG under RLIMIT_FSIZE).
    let (status, r1) = run(
        &k,
        input(
            "big",
            "tiny budget",
            Some(json!({"disk_write_limit_mb": 1})),
        ),
    )
    .await;
    assert_eq!(status, 200, "{r1}");
    let res1 = results_of(&model, "tiny budget");
    assert_eq!(res1[0]["ok"], false, "{:#}", res1[0]);
    assert_eq!(res1[0]["from_memo"], false, "{:#}", res1[0]);

    // Run 2: the default 50 MB; the script fits and must run.
    let (status, r2) = run(&k, input("big", "default budget", None)).await;
    assert_eq!(status, 200, "{r2}");
    let res2 = results_of(&model, "default budget");
    assert_eq!(
        res2[0]["from_memo"], false,
        "run 2 was answered with run 1's budget failure: {:#}",
        res2[0]
    );
    assert_eq!(res2[0]["ok"], true, "{:#}", res2[0]);
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 2: the digest of build/ that keys a script run lists files only: an empty directory
// (or a file's mode) is not part of the state. A script that creates a directory changes what
// the next script sees without changing the digest, so the memo answers the next script with a
// result from a different build/ state — within one run, and across runs.

#[tokio::test]
async fn a_directory_made_by_a_script_is_part_of_the_state_the_memo_keys() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        "flags",
        &[
            (
                "scripts/check.py",
                "import json, os\nprint(json.dumps({'flag': os.path.isdir('build/flag')}))\n",
            ),
            (
                "scripts/mk.py",
                "import os\nos.mkdir('build/flag')\nprint('{\"made\": true}')\n",
            ),
        ],
    );
    let plan = vec![
        calls(&[("run_script", json!({"path": "scripts/check.py"}))]),
        calls(&[("run_script", json!({"path": "scripts/mk.py"}))]),
        calls(&[("run_script", json!({"path": "scripts/check.py"}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, input("flags", "flag dance", None)).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "flag dance");
    assert_eq!(res[0]["stdout_json"]["flag"], false, "{:#}", res[0]);
    assert_eq!(res[1]["ok"], true, "{:#}", res[1]);
    let run_id = r["run_id"].as_str().unwrap();
    assert!(home
        .path()
        .join(format!("user_data/skill_runs/{run_id}/build/flag"))
        .is_dir());
    assert_eq!(
        res[2]["stdout_json"]["flag"], true,
        "build/flag exists, yet the memo answered the first check: {:#}",
        res[2]
    );
    assert_eq!(res[2]["from_memo"], false, "{:#}", res[2]);
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 3: an environment build runs in a task of its own that outlives the run which asked
// for it (up to BUILD_DEADLINE = 600 s), and nothing caps how many such builds run at once.
// A caller that starts short runs, each naming a different dependency set, leaves one pip
// download (or, in strict mode, a builder container) behind per run: RUMI_MAX_SKILL_RUNS caps
// the runs, not the builds. Measured against a package index that accepts and never answers.

#[tokio::test]
async fn builds_left_behind_by_ended_runs_are_capped() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let index = SilentIndex::start();
    let url = format!("http://127.0.0.1:{}/simple", index.port);
    let k_env = [
        ("PIP_INDEX_URL", url.as_str()),
        ("PIP_FIND_LINKS", ""),
        ("PIP_RETRIES", "0"),
        ("PIP_DEFAULT_TIMEOUT", "300"),
        ("RUMI_MAX_SKILL_RUNS", "1"),
    ];
    const RUNS: usize = 5;
    // One kernel, one scripted model: every run makes the same call, and each run's skill names
    // its own package in its requirements.txt (a model could as well name it in the call).
    for i in 0..RUNS {
        skill(
            home.path(),
            &format!("deps{i}"),
            &[
                ("scripts/use.py", "print('{\"ran\": true}')\n"),
                ("requirements.txt", &format!("slowpkg{i}\n")),
            ],
        );
    }
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![calls(&[(
            "run_script",
            json!({"path": "scripts/use.py"}),
        )])]),
    );
    let k = kernel_with(home.path(), &model, "openai", &k_env);
    for i in 0..RUNS {
        let started = Instant::now();
        let (status, r) = run(
            &k,
            input(
                &format!("deps{i}"),
                &format!("short run {i}"),
                Some(json!({"time_budget_ms": 2500})),
            ),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run {i} took {:?}",
            started.elapsed()
        );
        assert!(r["exit_reason"].is_string(), "run {i} ended: {r:#}");
    }
    // Every run has ended (RUMI_MAX_SKILL_RUNS = 1, one after the other). Wait until the index
    // has seen every package asked for (or 20 s), then count the downloads still going.
    let deadline = Instant::now() + Duration::from_secs(20);
    while index.names.lock().unwrap().len() < RUNS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = index.open.load(Ordering::SeqCst);
    let names = index.names.lock().unwrap().clone();
    eprintln!("downloads still going after every run ended: {still}; asked: {names:?}");
    assert!(
        still <= 2,
        "{still} environment builds (pip downloads) still run after their {RUNS} runs ended, with RUMI_MAX_SKILL_RUNS=1: {names:?}"
    );
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 4: environments are capped by count (MAX_ENVS = 256 per runtime), never by bytes, and
// never collected. Each spelling of a requirement (`tinydep>=0.1`, `tinydep>=0.2`, `tinydep!=9`,
// …) is a new dependency set with a full copy of the same packages, so one model (max_tool_calls
// goes to 1000) fills the store; from then on every other skill's new environment is refused
// for good ("remove old ones"), and the disk holds 256 full copies.
//
// The test makes three such environments through the model for real, then adds the other 253 as
// copies of those (what 253 more calls of the same model would leave — each takes a pip run),
// and asks for an honest environment in another skill.

#[tokio::test]
async fn a_model_cannot_fill_the_environment_store_for_every_other_skill() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let wheel_dir = tempfile::tempdir().unwrap();
    wheels(wheel_dir.path());
    skill(
        home.path(),
        "filler",
        &[(
            "scripts/use.py",
            "import tinydep\nprint('{\"x\": %d}' % tinydep.X)\n",
        )],
    );
    skill(
        home.path(),
        "honest",
        &[(
            "scripts/use.py",
            "import tinypkg\nopen('build/out.txt', 'w').write(str(tinypkg.VALUE))\nprint('{\"v\": %d}' % tinypkg.VALUE)\n",
        )],
    );
    let variants = ["tinydep>=0.1", "tinydep>=0.2", "tinydep!=9"];
    let turns: Vec<_> = variants
        .iter()
        .map(|v| {
            calls(&[(
                "run_script",
                json!({"path": "scripts/use.py", "dependencies": {"pip": [v]}}),
            )])
        })
        .collect();
    let honest_turn = calls(&[(
        "run_script",
        json!({"path": "scripts/use.py", "dependencies": {"pip": ["tinypkg==1.0"]}}),
    )]);
    let model = ScriptedModel::start(Flavor::OpenAi, policy(turns));
    let fl = wheel_dir.path().display().to_string();
    let k = kernel_with(
        home.path(),
        &model,
        "openai",
        &[("RUMI_SKILL_FIND_LINKS", fl.as_str())],
    );
    let (status, r) = run(&k, input("filler", "fill the store", None)).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "fill the store");
    for (i, x) in res.iter().enumerate() {
        assert_eq!(x["ok"], true, "variant {i}: {x:#}");
    }
    let py = home.path().join("user_data/skill_envs/python");
    let made: Vec<std::path::PathBuf> = std::fs::read_dir(&py)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(
        made.len(),
        3,
        "three spellings of one requirement, three full environments: {made:?}"
    );
    // What 253 more calls of the same model leave.
    let mut n = 0u32;
    let envs_now = || {
        std::fs::read_dir(&py)
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    while envs_now() < 256 {
        let to = py.join(format!("{:032x}", 0xfeed_0000u64 + u64::from(n)));
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(&made[n as usize % 3])
            .arg(&to)
            .status()
            .unwrap();
        assert!(ok.success());
        n += 1;
    }
    k.stop();

    // Another skill, another caller, an honest dependency set.
    let model = ScriptedModel::start(Flavor::OpenAi, policy(vec![honest_turn]));
    let k = kernel_with(
        home.path(),
        &model,
        "openai",
        &[("RUMI_SKILL_FIND_LINKS", fl.as_str())],
    );
    let (status, r) = run(&k, input("honest", "honest run", None)).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "honest run");
    assert_eq!(
        res[0]["ok"], true,
        "an honest skill's environment is refused because one model filled the store: {:#}",
        res[0]
    );
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 5: the npm unpacker (`rumi_npm_install.py`) caps file bytes and entry counts, but not
// the metadata records tarfile reads whole into memory: a GNU long-name ('L') or pax ('x')
// header declares its own size (up to 8 GiB in octal, more in base-256), and a gzip of zeros
// makes it tiny on disk. The kernel's own scan stops at `package/package.json`, so a record
// placed after it reaches the unpacker: on the host (permissive mode, no memory limit) it
// allocates the declared size twice over; under a memory limit (the builder container) it dies
// with an uncaught MemoryError whose traceback (interpreter paths, stack frames) is what the
// install log gives the agent.

/// `dir/<file>`: `package/package.json` of `name@version`, then a GNU long-name record that
/// declares `declared` bytes (zeros), then a file.
fn long_name_bomb(dir: &Path, file: &str, name: &str, version: &str, declared: u64) {
    let script = r#"
import gzip, sys, tarfile, io
path, name, version, declared = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def block(data):
    return data + b"\0" * ((512 - len(data) % 512) % 512)
with gzip.open(path, "wb", compresslevel=9) as gz:
    meta = ('{"name": "%s", "version": "%s"}' % (name, version)).encode()
    ti = tarfile.TarInfo("package/package.json"); ti.size = len(meta)
    gz.write(ti.tobuf(format=tarfile.USTAR_FORMAT)); gz.write(block(meta))
    ln = tarfile.TarInfo("././@LongLink"); ln.type = tarfile.GNUTYPE_LONGNAME; ln.size = declared
    gz.write(ln.tobuf(format=tarfile.GNU_FORMAT))
    zeros = b"\0" * (1 << 20)
    left = declared
    while left > 0:
        n = min(left, len(zeros)); gz.write(zeros[:n]); left -= n
    gz.write(b"\0" * ((512 - declared % 512) % 512))
    body = b"x"
    ti = tarfile.TarInfo("package/index.js"); ti.size = 1
    gz.write(ti.tobuf(format=tarfile.USTAR_FORMAT)); gz.write(block(body))
    gz.write(b"\0" * 1024)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.join(file))
        .arg(name)
        .arg(version)
        .arg(declared.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_npm_unpacker_caps_the_metadata_records_it_reads() {
    if !python_available() {
        return;
    }
    let input = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    long_name_bomb(input.path(), "bomb-1.0.0.tgz", "bomb", "1.0.0", 768 << 20);
    let size = std::fs::metadata(input.path().join("bomb-1.0.0.tgz"))
        .unwrap()
        .len();
    assert!(size < 4 << 20, "the tarball is small on disk: {size}");
    std::fs::write(
        input.path().join("plan.json"),
        r#"[{"name": "bomb", "file": "bomb-1.0.0.tgz"}]"#,
    )
    .unwrap();
    let unpacker = Path::new(env!("CARGO_MANIFEST_DIR")).join("actors/python/rumi_npm_install.py");
    // 512 MiB of address space: more than the unpacker needs for any honest tarball (it
    // streams files in 64 KiB chunks), less than this record declares.
    let wrapper = r#"
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"#;
    let started = Instant::now();
    let out = std::process::Command::new("python3")
        .args(["-I", "-S", "-B", "-c", wrapper])
        .arg(&unpacker)
        .arg(input.path())
        .arg(target.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "unpacker: {:?} in {:?}; stderr tail: {}",
        out.status.code(),
        started.elapsed(),
        stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
    assert!(
        !stderr.contains("Traceback") && !stderr.contains("File \""),
        "a traceback (paths, frames) is what the install log would carry: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refusal naming the record: {stderr}"
    );
    assert!(stderr.starts_with("refused:"), "{stderr}");
}

/// The same tarball through the kernel in permissive mode: the unpacker runs as a host process
/// with no memory limit and takes what the record declares.
#[tokio::test]
async fn a_hostile_npm_tarball_cannot_make_the_host_unpacker_allocate_gigabytes() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let tarballs = tempfile::tempdir().unwrap();
    long_name_bomb(
        tarballs.path(),
        "bomb-1.0.0.tgz",
        "bomb",
        "1.0.0",
        768 << 20,
    );
    skill(
        home.path(),
        "npmbomb",
        &[(
            "scripts/use.js",
            "console.log(JSON.stringify({ran: true}));\n",
        )],
    );
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![calls(&[(
            "run_script",
            json!({"path": "scripts/use.js", "dependencies": {"npm": ["bomb@1.0.0"]}}),
        )])]),
    );
    let t = tarballs.path().display().to_string();
    let k = kernel_with(
        home.path(),
        &model,
        "openai",
        &[("RUMI_SKILL_NPM_TARBALLS", t.as_str())],
    );
    // Watch the unpacker's resident memory while the run goes.
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    if !String::from_utf8_lossy(&cmd).contains("rumi_npm_install.py") {
                        continue;
                    }
                    let status =
                        std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                    for l in status.lines() {
                        if let Some(kb) = l.strip_prefix("VmHWM:") {
                            let kb: usize =
                                kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                            peak.fetch_max(kb * 1024, Ordering::SeqCst);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (status, r) = run(&k, input("npmbomb", "npm bomb", None)).await;
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "npm bomb");
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "unpacker peak RSS: {} MiB; result: {}",
        peak >> 20,
        res.first().cloned().unwrap_or_default()
    );
    assert!(
        peak < 256 << 20,
        "the host unpacker reached {} MiB of resident memory for a {} KiB tarball",
        peak >> 20,
        std::fs::metadata(tarballs.path().join("bomb-1.0.0.tgz"))
            .unwrap()
            .len()
            >> 10
    );
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 6: the cache reads its files with a plain open, which blocks on a FIFO. A FIFO (or a
// link to one) at `skill_cache/<skill>/skill.json` — the one path every run of the skill reads
// at its start — hangs `POST /api/skills/run` for ever, holding a run slot and a blocking
// thread; with RUMI_MAX_SKILL_RUNS such starts jam every skill. (The workspace's own reads open
// with O_NONBLOCK and refuse what is not a regular file; the cache's do not.) Who can plant it:
// anything that writes under user_data (a host script in permissive mode, a restored backup).

#[tokio::test]
async fn a_planted_fifo_in_the_cache_does_not_hang_the_run() {
    use sha2::{Digest, Sha256};
    if !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        "fifo",
        &[("scripts/x.py", "open('build/out.txt', 'w').write('x')\n")],
    );
    let dir = home
        .path()
        .join("user_data/skill_cache")
        .join(hex::encode(&Sha256::digest(b"fifo")[..16]));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("skill.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![calls(&[(
            "run_script",
            json!({"path": "scripts/x.py"}),
        )])]),
    );
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let req = k
        .http
        .post(k.url("/api/skills/run?async=true"))
        .bearer_auth(TOKEN)
        .json(&input("fifo", "fifo run", None))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    let answered = req.is_ok();
    // Let the stuck open go (so the kernel can stop cleanly).
    let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    assert!(
        answered,
        "POST /api/skills/run did not answer within 15 s: the run's start blocks on the FIFO at skill_cache/<skill>/skill.json ({:?})",
        req.err()
    );
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 8: a memo hit restores the files the original script wrote, but not what it removed:
// the build/ a hit leaves is not the build/ the script would have left. Here `finalize.py`
// turns build/draft.txt into build/out.txt and removes the draft; in run 2 (same build/ state,
// so a hit) the draft stays — a later script, `list_files` or a validation that looks at
// build/ sees a state no real run produces.

#[tokio::test]
async fn a_memo_hit_leaves_build_as_the_script_would() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        "finalize",
        &[(
            "scripts/finalize.py",
            "import os\nd = open('build/draft.txt').read()\nopen('build/out.txt', 'w').write(d.upper())\nos.remove('build/draft.txt')\nprint('{\"final\": true}')\n",
        )],
    );
    let plan = vec![
        calls(&[(
            "write_artifact",
            json!({"path": "draft.txt", "content": "draft text\n"}),
        )]),
        calls(&[("run_script", json!({"path": "scripts/finalize.py"}))]),
    ];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let mut builds = Vec::new();
    for goal in ["finalize one", "finalize two"] {
        let (status, r) = run(&k, input("finalize", goal, None)).await;
        assert_eq!(status, 200, "{r}");
        let res = results_of(&model, goal);
        assert_eq!(res[1]["ok"], true, "{goal}: {:#}", res[1]);
        let run_id = r["run_id"].as_str().unwrap().to_string();
        builds.push((
            res[1]["from_memo"].clone(),
            home.path()
                .join(format!("user_data/skill_runs/{run_id}/build")),
        ));
    }
    assert_eq!(builds[0].0, false);
    assert_eq!(builds[1].0, true, "run 2's script is a memo hit");
    assert!(
        !builds[0].1.join("draft.txt").exists(),
        "the script removed it"
    );
    assert!(builds[1].1.join("out.txt").is_file());
    assert!(
        !builds[1].1.join("draft.txt").exists(),
        "after the memo hit build/draft.txt is still there: the hit restored what the script wrote, not what it removed"
    );
    k.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 9 (permissive mode): the skill tree hash keys a link by its target's *name*, never
// by what it points at. A host script follows the skill's link (`data.txt -> ../../shared.txt`,
// skills that share a data file), so when the shared file changes the memo still answers with
// what the script printed from the old content — the skill's file, as the script reads it, has
// changed, and nothing was invalidated.

#[tokio::test]
async fn a_changed_file_behind_a_skill_link_invalidates_the_memo() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    skill(
        home.path(),
        "linked",
        &[(
            "scripts/show.py",
            "import json\nprint(json.dumps({'data': open('data.txt').read().strip()}))\n",
        )],
    );
    write(home.path(), "user_data/skills/shared.txt", "version one\n");
    std::os::unix::fs::symlink(
        "../shared.txt",
        home.path().join("user_data/skills/linked/data.txt"),
    )
    .unwrap();
    let plan = vec![calls(&[("run_script", json!({"path": "scripts/show.py"}))])];
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan));
    let k = kernel_with(home.path(), &model, "openai", &[]);
    let (status, r) = run(&k, input("linked", "show one", None)).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "show one");
    assert_eq!(res[0]["stdout_json"]["data"], "version one", "{:#}", res[0]);
    write(home.path(), "user_data/skills/shared.txt", "version two\n");
    let (status, r) = run(&k, input("linked", "show two", None)).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "show two");
    assert_eq!(
        res[0]["stdout_json"]["data"], "version two",
        "the memo answered with the old content of the skill's data.txt: {:#}",
        res[0]
    );
    k.stop();
}
