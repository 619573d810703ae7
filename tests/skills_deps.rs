//! Dependency environments of skill scripts (SkillRuntime contract §8 "Dependencies", §10):
//! pip wheels from a local find-links directory and npm tarballs from a local directory,
//! installed offline into environments built once and reused; the call's lists, the skill's
//! `requirements.txt` / `package.json` and a PEP 723 header all count; a failed install reaches
//! the agent with its log; bad specs are refused before anything runs. Real binary, scripted
//! model; the strict test needs Docker and the image.

mod common;

use common::deps::*;
use common::llm_server::{Flavor, ScriptedModel};
use common::skills::{kernel_with, policy, run, sent_to_model, KEY};
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Sources {
    wheels: tempfile::TempDir,
    tarballs: tempfile::TempDir,
}

fn sources(home: &Path) -> Sources {
    let s = Sources {
        wheels: tempfile::tempdir().unwrap(),
        tarballs: tempfile::tempdir().unwrap(),
    };
    wheels(s.wheels.path());
    tarballs(s.tarballs.path(), &home.join("postinstall-ran"));
    s
}

fn env_vars(s: &Sources) -> Vec<(&'static str, String)> {
    vec![
        (
            "RUMI_SKILL_FIND_LINKS",
            s.wheels.path().display().to_string(),
        ),
        (
            "RUMI_SKILL_NPM_TARBALLS",
            s.tarballs.path().display().to_string(),
        ),
    ]
}

fn permissive(home: &Path, model: &ScriptedModel, s: &Sources) -> Kernel {
    let vars = env_vars(s);
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    kernel_with(home, model, "openai", &extra)
}

/// The time each `run_script` call of a run took, as its evidence records it (ms).
fn script_call_ms(home: &Path, run: &Value) -> Vec<u64> {
    let id = run["run_id"].as_str().unwrap();
    std::fs::read_to_string(home.join(format!("user_data/skill_runs/{id}/evidence.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["tool"] == "run_script")
        .map(|e| e["cost"]["time_ms"].as_u64().unwrap())
        .collect()
}

fn empty_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
}

/// Every directory 0755 and file 0644 (or 0755), none writable by others; no leftovers.
fn check_env_tree(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp-"), "a build left {name}");
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            assert!(!m.file_type().is_symlink(), "{name} is a link");
            let mode = m.mode() & 0o7777;
            if m.is_dir() {
                if name != ".work" {
                    assert_eq!(mode, 0o755, "{}", e.path().display());
                    stack.push(e.path());
                }
            } else if name != "builds.jsonl" {
                files += 1;
                assert!(
                    mode == 0o644 || mode == 0o755,
                    "{} {mode:o}",
                    e.path().display()
                );
            }
        }
    }
    assert!(files > 0);
}

#[tokio::test]
async fn pip_and_npm_environments_are_built_offline_once_and_reused() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let s = sources(home.path());
    skill(home.path(), "base", USE_PY, &[]);
    skill(
        home.path(),
        "hdr",
        &format!("# /// script\n# requires-python = \">=3.8\"\n# dependencies = [\n#   \"HdrPkg>=2\",  # from the header\n# ]\n# ///\n{USE_PY}"),
        &[],
    );
    skill(
        home.path(),
        "reqs",
        USE_PY,
        &[
            ("requirements.txt", "# the skill's own\nreqpkg==3.0\n"),
            (
                "package.json",
                r#"{"name": "reqs", "dependencies": {"padder": "1.0.0"}}"#,
            ),
        ],
    );
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan()));
    let k = permissive(home.path(), &model, &s);

    // Run 1 builds both environments: tinypkg and its dependency tinydep (resolved by pip);
    // left-pad at the highest matching version and its dependency @t/util at ~2.0.0.
    let (status, r) = run(&k, input("base", "run one")).await;
    assert_eq!(status, 200, "{r}");
    let cold = script_call_ms(home.path(), &r);
    let res = results_of(&model, "run one");
    assert_eq!(r["exit_reason"], "validated", "{r:#}\n{res:#?}");
    assert_eq!(res[0]["ok"], true, "{}", res[0]);
    assert_eq!(res[0]["stdout_json"]["value"], 42);
    assert_eq!(
        res[0]["stdout_json"]["x"], 7,
        "the transitive wheel is installed"
    );
    assert_eq!(res[0]["isolation"], "host");
    assert_eq!(
        res[1]["stdout_json"]["out"], "PAD2-x",
        "@t/util ~2.0.0, not 3.0.0"
    );
    assert_eq!(
        res[1]["stdout_json"]["version"], "1.3.0",
        "the highest match"
    );
    assert!(
        !home.path().join("postinstall-ran").exists(),
        "an npm lifecycle script ran"
    );
    let b = builds(home.path());
    eprintln!(
        "permissive builds (cold): {b:?}; run 1 script ms: {} {}",
        res[0]["duration_ms"], res[1]["duration_ms"]
    );
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(b.iter().all(|x| x["ok"] == true), "{b:?}");
    let envs = home.path().join("user_data/skill_envs");
    check_env_tree(&envs);
    let py_env = envs.join("python").join(
        b.iter().find(|x| x["runtime"] == "python").unwrap()["hash"]
            .as_str()
            .unwrap(),
    );
    assert!(py_env.join("tinydep/__init__.py").is_file());
    let node_env = envs.join("node").join(
        b.iter().find(|x| x["runtime"] == "node").unwrap()["hash"]
            .as_str()
            .unwrap(),
    );
    assert!(node_env.join("node_modules/@t/util/package.json").is_file());

    // Run 2 needs the same sets: nothing is downloaded (the sources are gone) or built.
    empty_dir(s.wheels.path());
    empty_dir(s.tarballs.path());
    let (_, r) = run(&k, input("base", "run two")).await;
    let res = results_of(&model, "run two");
    assert_eq!(r["exit_reason"], "validated", "{r:#}\n{res:#?}");
    eprintln!(
        "run_script calls (py, js), ms: cold {cold:?}, reused {:?}",
        script_call_ms(home.path(), &r)
    );
    assert_eq!(res[0]["stdout_json"]["value"], 42);
    assert_eq!(
        builds(home.path()).len(),
        2,
        "a reused environment is not rebuilt"
    );

    // The PEP 723 header and requirements.txt / package.json add to the call's sets.
    wheels(s.wheels.path());
    tarballs(s.tarballs.path(), &home.path().join("postinstall-ran"));
    let (_, r) = run(&k, input("hdr", "run hdr")).await;
    let res = results_of(&model, "run hdr");
    assert_eq!(r["exit_reason"], "validated", "{r:#}\n{res:#?}");
    assert_eq!(res[0]["stdout_json"]["hdrpkg"], "from-header");
    assert!(res[0]["stdout_json"].get("reqpkg").is_none());
    let (_, r) = run(&k, input("reqs", "run reqs")).await;
    let res = results_of(&model, "run reqs");
    assert_eq!(r["exit_reason"], "validated", "{r:#}\n{res:#?}");
    assert_eq!(res[0]["stdout_json"]["reqpkg"], "from-requirements");
    assert_eq!(res[1]["stdout_json"]["padder"], "padder-ok");
    // hdr: a new python set (its node set is run 1's); reqs: a new python and node set.
    assert_eq!(builds(home.path()).len(), 5, "{:?}", builds(home.path()));
    check_env_tree(&envs);
}

#[tokio::test]
async fn two_concurrent_runs_needing_one_environment_build_it_once() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let s = sources(home.path());
    skill(home.path(), "base", USE_PY, &[]);
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan()));
    let k = permissive(home.path(), &model, &s);
    let (s1, a) = k
        .post("/api/skills/run?async=true", input("base", "first"))
        .await;
    let (s2, b) = k
        .post("/api/skills/run?async=true", input("base", "second"))
        .await;
    assert_eq!((s1, s2), (202, 202), "{a} {b}");
    for body in [a, b] {
        let id = body["data"]["run_id"].as_str().unwrap().to_string();
        let r = common::skills::await_run(&k, &id).await;
        assert_eq!(r["exit_reason"], "validated", "{r:#}");
    }
    let b = builds(home.path());
    assert_eq!(
        b.len(),
        2,
        "one build per environment (python, node), shared by both runs: {b:?}"
    );
    for name in ["first", "second"] {
        assert_eq!(results_of(&model, name)[0]["stdout_json"]["value"], 42);
    }
}

#[tokio::test]
async fn a_failed_install_reaches_the_agent_with_its_log_and_the_run_goes_on() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let s = sources(home.path());
    skill(
        home.path(),
        "missing",
        USE_PY,
        &[("requirements.txt", "nosuchpkg==9.9\n")],
    );
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan()));
    let k = permissive(home.path(), &model, &s);
    let (status, r) = run(&k, input("missing", "run missing")).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "run missing");
    let py = &res[0];
    assert_eq!(py["ok"], false, "{py}");
    assert_eq!(py["error_type"], "script_failed", "{py}");
    assert!(
        py["error"]
            .as_str()
            .unwrap()
            .starts_with("installing the dependencies failed"),
        "{py}"
    );
    let log = py["install_log"].as_str().unwrap();
    assert!(log.contains("nosuchpkg"), "{log}");
    // The run went on: the .js script ran and validate was called.
    assert_eq!(res[1]["ok"], true, "{}", res[1]);
    assert!(res[2].get("passed").is_some(), "{}", res[2]);
    // (the last script succeeded, so the run ends on its unmet output, not `script_failed`)
    assert_eq!(r["unmet"][0]["item"], "build/py.txt", "{r:#}");
    let sent = sent_to_model(&model);
    for private in [
        home.path().display().to_string(),
        s.wheels.path().display().to_string(),
        KEY.to_string(),
    ] {
        assert!(!sent.contains(&private), "{private} reached the model");
    }
    let b = builds(home.path());
    assert!(
        b.iter()
            .any(|x| x["ok"] == false && x["runtime"] == "python"),
        "{b:?}"
    );
    // Nothing half-built stays, and the failed set has no environment.
    let py_dir = home.path().join("user_data/skill_envs/python");
    let left: Vec<String> = std::fs::read_dir(&py_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn bad_specs_are_refused_by_name_before_anything_is_installed() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let s = sources(home.path());
    skill(
        home.path(),
        "badreq",
        USE_PY,
        &[(
            "requirements.txt",
            "tinypkg\n--index-url http://evil.example/simple\n",
        )],
    );
    skill(
        home.path(),
        "badhdr",
        &format!(
            "# /// script\n# dependencies = [\"git+https://github.com/a/b\"]\n# ///\n{USE_PY}"
        ),
        &[],
    );
    skill(
        home.path(),
        "badnpm",
        USE_PY,
        &[("package.json", r#"{"dependencies": {"x": "file:../x"}}"#)],
    );
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan()));
    let k = permissive(home.path(), &model, &s);
    let expect = |res: &Vec<Value>, i: usize, says: &str| {
        let r = &res[i];
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error_type"], "invalid_arguments", "{r}");
        assert!(r["error"].as_str().unwrap().contains(says), "{r}");
    };
    run(&k, input("badreq", "run badreq")).await;
    let res = results_of(&model, "run badreq");
    expect(&res, 0, "requirements.txt line 2");
    expect(&res, 0, "--index-url");
    assert_eq!(
        res[1]["ok"], true,
        "requirements.txt is not the .js script's: {}",
        res[1]
    );
    run(&k, input("badhdr", "run badhdr")).await;
    let res = results_of(&model, "run badhdr");
    expect(&res, 0, "/// script header");
    expect(&res, 0, "URL");
    assert_eq!(
        res[1]["ok"], true,
        "the .js script has no header: {}",
        res[1]
    );
    run(&k, input("badnpm", "run badnpm")).await;
    let res = results_of(&model, "run badnpm");
    expect(&res, 1, "package.json dependencies");
    expect(&res, 1, "file:");
    // The refused scripts built nothing: only the .js scripts of badreq and badhdr (one node
    // set) and badnpm's .py script (one python set) needed environments.
    let b = builds(home.path());
    assert_eq!(b.len(), 2, "{b:?}");
}

#[tokio::test]
async fn strict_mode_unpacks_in_the_builder_and_mounts_the_environments_read_only() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    let s = sources(home.path());
    skill(home.path(), "base", USE_PY, &[]);
    let model = ScriptedModel::start(Flavor::OpenAi, policy(plan()));
    let base = model.base_url();
    let vars = env_vars(&s);
    let mut env: Vec<(&str, &str)> = vec![
        ("RUMI_LLM_PROVIDER", "openai"),
        ("RUMI_LLM_BASE_URL", &base),
        ("RUMI_LLM_MODEL", "scripted"),
    ];
    env.extend(vars.iter().map(|(k, v)| (*k, v.as_str())));
    let k = Kernel::start_mode(home.path(), &env, false);
    let (status, r) = run(&k, input("base", "strict one")).await;
    assert_eq!(status, 200, "{r}");
    let res = results_of(&model, "strict one");
    assert_eq!(r["exit_reason"], "validated", "{r:#}\n{res:#?}");
    assert_eq!(res[0]["isolation"], "container");
    let py = &res[0]["stdout_json"];
    assert_eq!(py["value"], 42);
    assert_eq!(py["env_in_container"], true, "{py}");
    assert_ne!(
        py["env_write"], "ok",
        "the script wrote into its environment: {py}"
    );
    assert_eq!(res[1]["stdout_json"]["out"], "PAD2-x");
    assert!(!home.path().join("postinstall-ran").exists());
    let envs = home.path().join("user_data/skill_envs");
    check_env_tree(&envs);
    // Owned by the kernel's user again after the builder (which runs as the pack user when
    // the kernel is root).
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    for e in std::fs::read_dir(envs.join("python")).unwrap().flatten() {
        assert_eq!(e.metadata().unwrap().uid(), me);
    }
    eprintln!("strict builds (cold): {:?}", builds(home.path()));
    assert_eq!(builds(home.path()).len(), 2);
    // A second run reuses them (no builder container, no download).
    empty_dir(s.wheels.path());
    empty_dir(s.tarballs.path());
    let (_, r) = run(&k, input("base", "strict two")).await;
    assert_eq!(r["exit_reason"], "validated", "{r:#}");
    assert_eq!(builds(home.path()).len(), 2);
    // No builder container stays (another test of this file may be building at the same time:
    // its builders go with its runs, so the condition is waited for).
    until(60, "no builder container left", || async {
        container_names(&["name=rumi-pip-skill-env"])
            .is_empty()
            .then_some(())
    })
    .await;
}

/// At most two environment builds run at once in the kernel (the review's finding 3): a run
/// whose build waits for a permit still ends at its own deadline, and never reached the index;
/// once every run has ended nothing is left downloading.
#[tokio::test]
async fn at_most_two_builds_run_at_once_and_a_waiting_run_keeps_its_deadline() {
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
        ("RUMI_MAX_SKILL_RUNS", "4"),
    ];
    for i in 0..3 {
        let base = format!("user_data/skills/held{i}");
        write(
            home.path(),
            &format!("{base}/SKILL.md"),
            &format!("---\nname: held{i}\ndescription: Needs a package.\n---\nRun the script.\n"),
        );
        write(
            home.path(),
            &format!("{base}/scripts/use.py"),
            "print('{\"ran\": true}')\n",
        );
        write(
            home.path(),
            &format!("{base}/requirements.txt"),
            &format!("heldpkg{i}\n"),
        );
    }
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![common::skills::calls(&[(
            "run_script",
            json!({"path": "scripts/use.py"}),
        )])]),
    );
    let k = kernel_with(home.path(), &model, "openai", &k_env);
    let long = |i: usize| {
        run(
            &k,
            limited(&format!("held{i}"), &format!("holding run {i}"), 15000),
        )
    };
    let third = async {
        // Both permits are taken once the index has seen both packages.
        let deadline = Instant::now() + Duration::from_secs(12);
        while index.names.lock().unwrap().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the two builds never reached the index"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let (status, r) = run(&k, limited("held2", "waiting run", 2500)).await;
        let took = started.elapsed();
        let seen = index.names.lock().unwrap().clone();
        let open = index.open.load(Ordering::SeqCst);
        (status, r, took, seen, open)
    };
    let ((s0, r0), (s1, r1), (status, r, took, seen, open)) = tokio::join!(long(0), long(1), third);
    assert_eq!((s0, s1), (200, 200), "{r0} {r1}");
    assert_eq!(status, 200, "{r}");
    assert!(
        took < Duration::from_secs(10),
        "the waiting run took {took:?}"
    );
    assert_eq!(r["exit_reason"], "budget_exceeded:time", "{r:#}");
    assert_eq!(
        seen.len(),
        2,
        "a third build reached the index while two ran: {seen:?}"
    );
    assert!(!seen.iter().any(|n| n.contains("heldpkg2")), "{seen:?}");
    assert_eq!(open, 2, "the two builds still held their downloads");
    // Every run has ended: nothing is left downloading.
    let deadline = Instant::now() + Duration::from_secs(10);
    while index.open.load(Ordering::SeqCst) > 0 {
        assert!(Instant::now() < deadline, "downloads outlived their runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    k.stop();
}

/// A run of skill `id` with `goal` and a time budget of `ms`.
fn limited(id: &str, goal: &str, ms: u64) -> Value {
    json!({
        "skill_id": id,
        "goal": goal,
        "expected_outputs": [{"path": "build/out.txt", "kind": "text"}],
        "budgets": {"time_budget_ms": ms},
    })
}

/// Builder containers (`rumi-pip-skill-env-*`) on the machine now.
fn builder_containers() -> std::collections::BTreeSet<String> {
    container_names(&["name=rumi-pip-skill-env-"])
        .into_iter()
        .collect()
}

/// A strict-mode build nobody waits for any more is stopped (the review's finding 3): the run's
/// deadline passes while the builder container unpacks a tarball of 49 000 files (about 10 s);
/// the container is removed, the temporary directories go, and no environment appears.
#[tokio::test]
async fn a_strict_build_left_by_its_run_is_stopped_and_its_container_removed() {
    if !docker_ready() || !python_available() {
        return;
    }
    let home = fresh_home();
    let tarballs = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz", compresslevel=1) as t:
    meta = b'{"name": "slowunpack", "version": "1.0.0"}'
    ti = tarfile.TarInfo("package/package.json"); ti.size = len(meta); t.addfile(ti, io.BytesIO(meta))
    data = b"\0" * 4096
    for i in range(49000):
        ti = tarfile.TarInfo(f"package/d{i % 100}/f{i}.js"); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
"#,
        )
        .arg(tarballs.path().join("slowunpack-1.0.0.tgz"))
        .status()
        .unwrap();
    assert!(made.success());
    let base = "user_data/skills/slow";
    write(
        home.path(),
        &format!("{base}/SKILL.md"),
        "---\nname: slow\ndescription: Needs a slow package.\n---\nRun the script.\n",
    );
    write(
        home.path(),
        &format!("{base}/scripts/use.js"),
        "console.log(JSON.stringify({ran: true}));\n",
    );
    let model = ScriptedModel::start(
        Flavor::OpenAi,
        policy(vec![common::skills::calls(&[(
            "run_script",
            json!({"path": "scripts/use.js", "dependencies": {"npm": ["slowunpack@1.0.0"]}}),
        )])]),
    );
    let url = model.base_url();
    let t = tarballs.path().display().to_string();
    let env = [
        ("RUMI_LLM_PROVIDER", "openai"),
        ("RUMI_LLM_BASE_URL", url.as_str()),
        ("RUMI_LLM_MODEL", "scripted"),
        ("RUMI_SKILL_NPM_TARBALLS", t.as_str()),
    ];
    let k = Kernel::start_mode(home.path(), &env, false);
    let before = builder_containers();
    // Watch for this kernel's builder container while the run goes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, before) = (std::sync::Arc::clone(&stop), before.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                seen.extend(builder_containers().difference(&before).cloned());
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };
    let (status, r) = run(&k, limited("slow", "slow unpack", 5000)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["exit_reason"], "budget_exceeded:time", "{r:#}");
    assert!(
        !seen.is_empty(),
        "no builder container was seen during the run: the test did not reach the unpack"
    );
    let node = home.path().join("user_data/skill_envs/node");
    let work = home.path().join("user_data/skill_envs/.work");
    let listed = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|l| {
                l.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = builder_containers().intersection(&seen).cloned().collect();
        let tmp = listed(&node);
        let w = listed(&work);
        if left.is_empty() && tmp.is_empty() && w.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: containers {left:?}, node/ {tmp:?}, .work/ {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        builds(home.path()).is_empty(),
        "the build went on after its run ended: {:?}",
        builds(home.path())
    );
    k.stop();
}
