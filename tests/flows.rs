//! The flow engine end to end (contract §3, §5.2): variables, ordering, conditions, handlers,
//! abort, fail-soft and fail-hard, step and run deadlines, nested flows, load errors — through the
//! real binary, real HTTP and real Python workers.

mod common;

use common::*;
use serde_json::json;
use std::time::Instant;

const ECHO: &str = "def run(input_data, context=None):\n    return {'input': input_data}\n";

fn engine_home() -> tempfile::TempDir {
    let home = fresh_home();
    make_pack(
        home.path(),
        "tools",
        &[
            ("echo.py", ECHO),
            ("one_arg.py", "def run(input_data):\n    return {'one': input_data}\n"),
            ("ctx.py", "def run(input_data, context=None):\n    c = dict(context)\n    c.pop('network_check'); c.pop('http_request')\n    return {'ctx': c, 'callable': callable(context['http_request'])}\n"),
            ("boom.py", "def run(input_data, context=None):\n    print('about to fail')\n    raise ValueError('boom')\n"),
            ("abort.py", "def run(input_data, context=None):\n    return {'__flow_control': 'abort', 'reason': 'Invalid input'}\n"),
            ("sleep.py", "import time\ndef run(input_data, context=None):\n    time.sleep(float(input_data.get('s', 30)))\n    return {'slept': True}\n"),
            ("pid.py", "import os\ndef run(input_data, context=None):\n    return {'pid': os.getpid()}\n"),
            ("noisy.py", "import os\ndef run(input_data, context=None):\n    print('to the log')\n    os.write(1, b'raw')\n    return {'clean': True}\n"),
            ("env.py", "import os\ndef run(input_data, context=None):\n    return {'env': dict(os.environ)}\n"),
            ("fork.py", "import os, time\ndef run(input_data, context=None):\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n    time.sleep(60)\n"),
            ("crash.py", "import os\ndef run(input_data, context=None):\n    os._exit(3)\n"),
            ("notjson.py", "def run(input_data, context=None):\n    return {1, 2}\n"),
            ("net.py", "def run(input_data, context=None):\n    return {'check': context['network_check']('example.com', 443), 'req': context['http_request']('GET', 'https://example.com')}\n"),
        ],
    );
    home
}

fn flow(home: &std::path::Path, name: &str, text: &str) {
    write(
        home,
        &format!("user_data/shared/flows/{name}.flow.yaml"),
        text,
    );
}

#[tokio::test]
async fn variables_resolve_exactly_as_specified() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(
        home.path(),
        "vars",
        r#"
flow_id: vars
phases: [m]
steps:
  - id: a
    phase: m
    type: python_file_call
    owner_pack: tools
    file: echo.py
    input:
      whole_num: "${ctx.n}"
      whole_obj: "${ctx.obj}"
      whole_list: "${ctx.list}"
      nested: "${ctx.obj.inner.deep}"
      index: "${ctx.list.1}"
      index_obj: "${ctx.list.2.k}"
      missing: "${ctx.nope.x}"
      embedded: "n=${ctx.n} s=${ctx.s} o=${ctx.obj.inner} m=${ctx.nope}"
      user_text: "${ctx.sneaky}"
      user_embedded: "said ${ctx.sneaky}"
      literal: "${HOME} stays"
      keys: {"${ctx.s}": 1}
      not_a_string: 42
    output: out
"#,
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    let (_, run) = k
        .run("vars", json!({"n": 5, "s": "txt", "obj": {"inner": {"deep": true}}, "list": [10, 20, {"k": "v"}], "sneaky": "${ctx.secret}", "secret": "s3cr3t"}))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let i = &run["result"]["out"]["input"];
    assert_eq!(i["whole_num"], json!(5));
    assert_eq!(i["whole_obj"], json!({"inner": {"deep": true}}));
    assert_eq!(i["whole_list"], json!([10, 20, {"k": "v"}]));
    assert_eq!(i["nested"], json!(true));
    assert_eq!(i["index"], json!(20));
    assert_eq!(i["index_obj"], json!("v"));
    assert_eq!(i["missing"], json!(null));
    assert_eq!(i["embedded"], json!("n=5 s=txt o={\"deep\":true} m=null"));
    assert_eq!(
        i["user_text"],
        json!("${ctx.secret}"),
        "input text is data, never expanded again"
    );
    assert_eq!(i["user_embedded"], json!("said ${ctx.secret}"));
    assert_eq!(i["literal"], json!("${HOME} stays"));
    assert_eq!(i["keys"], json!({"${ctx.s}": 1}));
    assert_eq!(i["not_a_string"], json!(42));
}

#[tokio::test]
async fn ordering_conditions_set_if_and_handlers() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(
        home.path(),
        "order",
        r#"
flow_id: order
phases: [prepare, main, finish]
steps:
  - {id: z_last, phase: finish, type: set, input: {key: trail, value: "${ctx.trail}>z"}}
  - {id: b, phase: main, priority: 5, type: set, input: {key: trail, value: "${ctx.trail}>b"}}
  - {id: a, phase: main, priority: 5, type: set, input: {key: trail, value: "${ctx.trail}>a"}}
  - {id: c, phase: main, priority: 1, type: set, input: {key: trail, value: "${ctx.trail}>c"}}
  - {id: start, phase: prepare, type: set, input: {key: trail, value: "start"}}
  - {id: check, phase: main, priority: 50, type: if, input: {condition: "${ctx.mode} == fast"}, output: is_fast}
  - {id: fast, phase: main, priority: 60, type: set, when: "${ctx.is_fast}", input: {key: path, value: fast}}
  - {id: slow, phase: main, priority: 60, type: set, when: "${ctx.is_fast} != true", input: {key: path, value: slow}}
  - {id: never, phase: main, priority: 61, type: python_file_call, owner_pack: tools, file: boom.py, when: "${ctx.empty_list}"}
  - {id: get, phase: finish, priority: 1, type: handler, input: {handler: "kernel:ctx.get", args: {key: "obj.k", default: "d"}}, output: got}
  - {id: copy, phase: finish, priority: 2, type: handler, input: {handler: "kernel:ctx.copy", args: {from_key: got, to_key: copied}}}
  - {id: hide, phase: finish, priority: 3, type: handler, input: {handler: "kernel:ctx.set", args: {key: _private, value: 1}}}
  - {id: emit, phase: finish, priority: 4, type: handler, input: {handler: "kernel:emit", args: {event: done}}, output: emitted}
  - {id: one, phase: finish, priority: 5, type: python_file_call, owner_pack: tools, file: one_arg.py, input: "${ctx.path}", output: one}
"#,
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    let (_, run) = k
        .run(
            "order",
            json!({"mode": "fast", "obj": {"k": "v"}, "empty_list": []}),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let r = &run["result"];
    assert_eq!(r["trail"], "start>c>a>b>z", "phase, then priority, then id");
    assert_eq!(r["is_fast"], true);
    assert_eq!(r["path"], "fast");
    assert_eq!(r["got"], "v");
    assert_eq!(r["copied"], "v");
    assert!(
        r.get("_private").is_none(),
        "keys starting with _ are not in the result"
    );
    assert_eq!(r["emitted"], json!({"event": "done", "emitted": true}));
    assert_eq!(
        r["one"],
        json!({"one": "fast"}),
        "run(input_data) with one argument works"
    );
    assert_eq!(step(&run, "slow")["status"], "skipped");
    assert_eq!(step(&run, "never")["status"], "skipped");
    let ids: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[..5], ["start", "c", "a", "b", "check"]);

    let (_, run) = k.run("order", json!({"mode": "slow"})).await;
    assert_eq!(run["result"]["path"], "slow");
    assert_eq!(run["result"]["got"], "d", "ctx.get default");
    let (_, f) = k.get("/api/flows/order").await;
    let steps = f["data"]["steps"].as_array().unwrap();
    let slow = steps.iter().find(|s| s["id"] == "slow").unwrap();
    assert_eq!(
        slow["when"], "${ctx.is_fast} != true",
        "the API shows the condition"
    );
}

#[tokio::test]
async fn block_context_prints_and_results() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(
        home.path(),
        "ctx",
        r#"
flow_id: ctx
phases: [main]
steps:
  - {id: c, phase: main, type: python_file_call, owner_pack: tools, file: ctx.py, output: c}
  - {id: noisy, phase: main, type: python_file_call, owner_pack: tools, file: noisy.py, output: noisy}
  - {id: bad, phase: main, type: python_file_call, owner_pack: tools, file: notjson.py, output: bad}
  - {id: net, phase: main, type: python_file_call, owner_pack: tools, file: net.py, output: net}
"#,
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    let (_, run) = k.run("ctx", json!({"who": "me"})).await;
    let c = &run["result"]["c"]["ctx"];
    assert_eq!(c["flow_id"], "ctx");
    assert_eq!(c["run_id"], run["run_id"]);
    assert_eq!(c["step_id"], "c");
    assert_eq!(c["phase"], "main");
    assert_eq!(c["owner_pack"], "tools");
    assert_eq!(c["inputs"], json!({"who": "me"}));
    assert!(c["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(run["result"]["c"]["callable"], true);
    assert_eq!(
        run["result"]["noisy"],
        json!({"clean": true}),
        "prints never reach the result"
    );
    assert!(step(&run, "noisy")["log"]
        .as_str()
        .unwrap()
        .contains("to the log"));
    assert_eq!(step(&run, "bad")["error_type"], "invalid_result");
    let net = &run["result"]["net"];
    assert_eq!(
        net["check"]["allowed"], false,
        "network_check asks the real grant check: no grant, no access"
    );
    assert!(net["check"]["reason"]
        .as_str()
        .unwrap()
        .contains("no network grant"));
    assert_eq!(net["req"]["success"], false);
    assert_eq!(net["req"]["error_type"], "access_denied");
    assert_eq!(
        net["req"]["error"],
        "Network access denied: the pack has no network grant"
    );
}

#[tokio::test]
async fn fail_soft_fail_hard_and_abort() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    let steps = r#"
steps:
  - {id: a, phase: m, priority: 1, type: python_file_call, owner_pack: tools, file: boom.py, output: a}
  - {id: b, phase: m, priority: 2, type: set, input: {key: after, value: "${ctx.a.error_type}"}}
"#;
    flow(
        home.path(),
        "soft",
        &format!("flow_id: soft\nphases: [m]\n{steps}"),
    );
    flow(
        home.path(),
        "hard",
        &format!("flow_id: hard\nphases: [m]\ndefaults: {{fail_soft: false}}\n{steps}"),
    );
    flow(
        home.path(),
        "abort",
        r#"
flow_id: abort
phases: [m]
steps:
  - {id: stop, phase: m, priority: 1, type: python_file_call, owner_pack: tools, file: abort.py, output: stop}
  - {id: later, phase: m, priority: 2, type: set, input: {key: later, value: 1}}
"#,
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;

    let (s, run) = k.run("soft", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["result"]["a"],
        json!({"error": "ValueError: boom", "error_type": "block_error"})
    );
    assert_eq!(run["result"]["after"], "block_error", "the flow went on");
    assert!(step(&run, "a")["log"]
        .as_str()
        .unwrap()
        .contains("about to fail"));

    let (s, run) = k.run("hard", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["failed_step"], "a");
    assert!(
        run["result"].get("after").is_none(),
        "later steps did not run"
    );

    let (s, run) = k.run("abort", json!({})).await;
    assert_eq!(s, 200, "abort is not an HTTP error");
    assert_eq!(run["status"], "aborted");
    assert_eq!(run["reason"], "Invalid input");
    assert_eq!(run["result"]["stop"]["__flow_control"], "abort");
    assert!(run["result"].get("later").is_none());
}

#[tokio::test]
async fn step_timeout_kills_the_worker_and_the_pack_works_afterwards() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(
        home.path(),
        "slow",
        r#"
flow_id: slow
phases: [m]
steps:
  - {id: before, phase: m, priority: 1, type: python_file_call, owner_pack: tools, file: pid.py, output: before}
  - {id: sleep, phase: m, priority: 2, type: python_file_call, owner_pack: tools, file: sleep.py, input: {s: 30}, timeout_seconds: 1, output: sleep}
  - {id: after, phase: m, priority: 3, type: python_file_call, owner_pack: tools, file: pid.py, output: after}
"#,
    );
    flow(
        home.path(),
        "forker",
        "flow_id: forker\nphases: [m]\nsteps:\n  - {id: f, phase: m, type: python_file_call, owner_pack: tools, file: fork.py, timeout_seconds: 1, output: f}\n",
    );
    flow(home.path(), "crash", "flow_id: crash\nphases: [m]\nsteps:\n  - {id: c, phase: m, type: python_file_call, owner_pack: tools, file: crash.py, output: c}\n");
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    let t = Instant::now();
    let (_, run) = k.run("slow", json!({})).await;
    assert!(
        t.elapsed().as_secs_f64() < 10.0,
        "the block was stopped at its timeout"
    );
    assert_eq!(step(&run, "sleep")["error_type"], "timeout");
    assert_eq!(run["status"], "succeeded", "fail-soft: the flow went on");
    let (before, after) = (
        run["result"]["before"]["pid"].as_i64().unwrap(),
        run["result"]["after"]["pid"].as_i64().unwrap(),
    );
    assert_ne!(
        before, after,
        "the timed-out worker was replaced by a fresh one"
    );
    assert!(!process_alive(before), "the old worker is gone");

    // A block that forks: the whole process group is killed at the timeout.
    let (_, run) = k.run("forker", json!({})).await;
    assert_eq!(step(&run, "f")["error_type"], "timeout");
    let (_, run) = k.run("crash", json!({})).await;
    assert_eq!(step(&run, "c")["error_type"], "worker_crashed");
    let (_, run) = k.run("slow", json!({})).await;
    assert!(
        run["result"]["after"]["pid"].is_i64(),
        "the pack still answers: {run}"
    );
}

fn process_alive(pid: i64) -> bool {
    // A zombie still answers kill(0); read its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn run_deadline_answers_408_and_the_pack_recovers() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(
        home.path(),
        "long",
        "flow_id: long\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: python_file_call, owner_pack: tools, file: sleep.py, input: {s: 30}, output: s}\n  - {id: never, phase: m, priority: 200, type: set, input: {key: never, value: 1}}\n",
    );
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    let t = Instant::now();
    let (s, v) = k
        .post("/api/flows/long/run", json!({"inputs": {}, "timeout": 1}))
        .await;
    assert!(t.elapsed().as_secs_f64() < 8.0);
    assert_eq!(s, 408, "{v}");
    assert_eq!(v["success"], false);
    assert_eq!(v["data"]["status"], "timed_out");
    assert_eq!(step(&v["data"], "s")["error_type"], "run_timeout");
    assert!(v["data"]["result"].get("never").is_none());
    let (s, v) = k
        .post(
            "/api/flows/long/run",
            json!({"inputs": {"s": 0}, "timeout": 5}),
        )
        .await;
    assert_eq!(s, 408, "input s is not the step's input; still sleeps: {v}");
    // The pack answers again after the killed worker.
    flow(home.path(), "quick", "flow_id: quick\nphases: [m]\nsteps:\n  - {id: p, phase: m, type: python_file_call, owner_pack: tools, file: pid.py, output: p}\n");
    k.reload().await;
    let (s, run) = k.run("quick", json!({})).await;
    assert_eq!(s, 200);
    assert!(run["result"]["p"]["pid"].is_i64());
    let (_, runs) = k.get("/api/runs?flow_id=long").await;
    assert_eq!(runs["data"][0]["status"], "timed_out");
}

#[tokio::test]
async fn nested_flows_and_recursion() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(
        home.path(),
        "parent",
        r#"
flow_id: parent
phases: [m]
steps:
  - {id: child, phase: m, type: handler, input: {handler: "kernel:flow.run", args: {flow_id: child, inputs: {v: "${ctx.v}"}}}, output: child}
  - {id: missing, phase: m, priority: 200, type: handler, input: {handler: "kernel:flow.run", args: {flow_id: nope}}, output: missing}
"#,
    );
    flow(
        home.path(),
        "child",
        "flow_id: child\nphases: [m]\nsteps:\n  - {id: e, phase: m, type: python_file_call, owner_pack: tools, file: echo.py, input: {got: \"${ctx.v}\"}, output: e}\n",
    );
    flow(
        home.path(),
        "loop",
        "flow_id: loop\nphases: [m]\nsteps:\n  - {id: again, phase: m, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: loop}}, output: again}\n",
    );
    let k = Kernel::start(home.path(), &[("RUMI_MAX_CONCURRENT_FLOWS", "1")]);
    k.approve("tools").await;
    // With one slot, a nested run must run inside its parent's slot or this would deadlock.
    let (s, run) = k.run("parent", json!({"v": 7})).await;
    assert_eq!(s, 200);
    assert_eq!(run["result"]["child"]["e"]["input"]["got"], 7, "{run}");
    assert_eq!(run["result"]["missing"]["error_type"], "flow_not_found");
    let (_, run) = k.run("loop", json!({})).await;
    assert_eq!(
        run["result"]["again"]["error_type"], "recursion_refused",
        "{run}"
    );
    assert!(
        run["result"]["again"]["error"]
            .as_str()
            .unwrap()
            .contains("recursion"),
        "{run}"
    );
}

#[tokio::test]
async fn load_errors_clashes_and_administrative_handlers() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(home.path(), "dup_a", "flow_id: dup\nphases: [m]\n");
    flow(home.path(), "dup_b", "flow_id: dup\nphases: [m]\n");
    flow(home.path(), "admin", "flow_id: admin\nphases: [m]\nsteps:\n  - {id: g, phase: m, type: handler, input: {handler: \"kernel:network.grant\", args: {pack_id: tools}}}\n");
    flow(home.path(), "broken", "flow_id: broken\nphases: [m]\nsteps:\n  - id: s\n    phase: nope\n    type: set\n    input: {key: k}\n");
    flow(home.path(), "typo", "flow_id: typo\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, wehn: x, input: {key: k}}\n");
    write(
        home.path(),
        "user_data/shared/flows/modifiers/not_a_flow.flow.yaml",
        "flow_id: in_modifiers\nphases: [m]\n",
    );
    write(
        home.path(),
        "ecosystem/tools/backend/flows/hello.flow.yaml",
        "flow_id: hello\nphases: [m]\n",
    );
    let bomb = {
        let mut d = String::from("flow_id: bomb\nphases: [m]\na: &a [x,x,x,x,x,x,x,x,x]\n");
        for (n, p) in [
            ("b", "a"),
            ("c", "b"),
            ("d", "c"),
            ("e", "d"),
            ("f", "e"),
            ("g", "f"),
            ("h", "g"),
            ("i", "h"),
        ] {
            d.push_str(&format!(
                "{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            ));
        }
        d
    };
    flow(home.path(), "bomb", &bomb);
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    for missing in ["dup", "admin", "broken", "typo", "in_modifiers", "bomb"] {
        assert_eq!(
            k.get(&format!("/api/flows/{missing}")).await.0,
            404,
            "{missing} must not load"
        );
    }
    let (_, hello) = k.get("/api/flows/hello").await;
    assert_eq!(
        hello["data"]["source"], "shared",
        "the shared flow outranks the pack's"
    );
    let (_, d) = k.get("/api/diagnostics").await;
    let problems = d["data"]["flow_problems"].to_string();
    assert!(
        problems.contains("dup_a.flow.yaml") && problems.contains("dup_b.flow.yaml"),
        "same-rank clash names both files: {problems}"
    );
    assert!(
        problems.contains("admin.flow.yaml:4") && problems.contains("administrative"),
        "{problems}"
    );
    assert!(
        problems.contains("broken.flow.yaml:4"),
        "errors name file and line: {problems}"
    );
    assert!(problems.contains("wehn"), "{problems}");
    assert!(problems.contains("aliases"), "{problems}");
    assert!(
        problems.contains("ecosystem/tools/backend/flows/hello.flow.yaml"),
        "shadowed pack flow reported: {problems}"
    );
    // A flow deleted from disk disappears on reload; the engine keeps serving.
    std::fs::remove_file(home.path().join("user_data/shared/flows/dup_b.flow.yaml")).unwrap();
    k.reload().await;
    assert_eq!(
        k.get("/api/flows/dup").await.0,
        200,
        "with the clash gone the flow loads"
    );
    let (_, f) = k.get("/api/flows/hello").await;
    assert_eq!(f["data"]["steps"][0]["owner_pack"], "my_pack");
}

/// A flow file that fails to load is named with its file, its line and the fix: in the reload's
/// answer, in the 404 of a run of its flow (found by the flow_id the file declares, or by the
/// file's name when it declares none), in a nested run and in the diagnostics; a good flow runs.
#[tokio::test]
async fn a_flow_that_fails_to_load_says_where_and_what_to_do() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    let k = Kernel::start(home.path(), &[]);
    k.approve("tools").await;
    flow(home.path(), "good", "flow_id: good\nphases: [m]\nsteps:\n  - {id: e, phase: m, type: python_file_call, owner_pack: tools, file: echo.py, input: {x: 1}, output: out}\n");
    flow(home.path(), "greeting", "flow_id: greet\nphases: []\n");
    flow(
        home.path(),
        "typo",
        "flow_id: typo\nphases: [m]\nsteps:\n  - id: s\n    phase: m\n    type: sett\n",
    );
    flow(home.path(), "nameless", "phases: [m]\n");
    flow(home.path(), "caller", "flow_id: caller\nphases: [m]\nsteps:\n  - {id: c, phase: m, type: handler, input: {handler: \"kernel:flow.run\", args: {flow_id: greet}}, output: r}\n");
    let greeting = "user_data/shared/flows/greeting.flow.yaml:2: phases: must be a non-empty list of names — add `phases: [main]`";

    let (s, v) = k.post("/api/flows/reload", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let data = &v["data"];
    let problems: Vec<&str> = data["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(problems.contains(&greeting), "{problems:#?}");
    assert!(
        problems.contains(&"user_data/shared/flows/typo.flow.yaml:4: step \"s\": unknown type \"sett\" — use one of python_file_call, handler, set, if"),
        "{problems:#?}"
    );
    let error = data["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == "user_data/shared/flows/greeting.flow.yaml")
        .unwrap_or_else(|| panic!("a structured error: {data}"));
    assert_eq!(
        *error,
        json!({"kind": "load_error", "file": "user_data/shared/flows/greeting.flow.yaml", "line": 2,
               "message": "phases: must be a non-empty list of names — add `phases: [main]`", "flow_id": "greet"})
    );
    assert_eq!(data["problems_omitted"], 0);
    assert!(
        !v.to_string().contains(home.path().to_str().unwrap()),
        "no host path: {v}"
    );

    // A run of the flow says why it is missing, in words the CLI prints as they are.
    let (s, v) = k.post("/api/flows/greet/run", json!({})).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        v["error"],
        format!("flow \"greet\" failed to load: {greeting}; see `rumi diagnostics`")
    );
    let (s, v) = k.post("/api/flows/nameless/run", json!({})).await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().starts_with(
            "flow \"nameless\" failed to load: user_data/shared/flows/nameless.flow.yaml:1: flow_id is required — add `flow_id: <name>`"
        ),
        "{v}"
    );
    let (s, v) = k.post("/api/flows/nope/run", json!({})).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        v["error"],
        "no flow \"nope\" is loaded; see `rumi flow list` and `rumi diagnostics`"
    );
    // A nested run is told only that the flow is not loaded: why another file failed (its path,
    // values quoted from it) must not reach a flow's context, which pack code reads.
    let (s, run) = k.run("caller", json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(
        step(&run, "c")["error"],
        "kernel:flow.run: no flow \"greet\" is loaded; see `rumi flow list` and `rumi diagnostics`",
        "{run}"
    );
    assert!(!run.to_string().contains(greeting), "{run}");
    let (s, run) = k.run("good", json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");

    let (_, d) = k.get("/api/diagnostics").await;
    assert!(
        d["data"]["flow_problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["message"] == greeting && p["problem"]["error"]["flow_id"] == "greet"),
        "{d}"
    );
    assert_eq!(d["data"]["flow_problems_omitted"], 0);

    // Fixed, reloaded: it runs, and nothing about it is left.
    flow(home.path(), "greeting", "flow_id: greet\nphases: [main]\n");
    let (_, v) = k.post("/api/flows/reload", json!({})).await;
    assert!(!v["data"].to_string().contains("greeting.flow.yaml"), "{v}");
    let (s, run) = k.run("greet", json!({})).await;
    assert_eq!((s, &run["status"]), (200, &json!("succeeded")), "{run}");
}

#[tokio::test]
async fn the_kernel_environment_never_reaches_blocks() {
    if !python_available() {
        return;
    }
    let home = engine_home();
    flow(home.path(), "env", "flow_id: env\nphases: [m]\nsteps:\n  - {id: e, phase: m, type: python_file_call, owner_pack: tools, file: env.py, output: e}\n");
    let k = Kernel::start(home.path(), &[("KERNEL_SECRET_CANARY", "hunter2")]);
    k.approve("tools").await;
    let (_, run) = k.run("env", json!({})).await;
    let env = run["result"]["e"]["env"].as_object().unwrap();
    let text = serde_json::to_string(env).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!env.keys().any(|k| k.starts_with("RUMI_API")), "{text}");
    assert_eq!(env["PYTHONDONTWRITEBYTECODE"], "1");
    assert_eq!(env["RUMI_PACK_ID"], "tools");
    // No bytecode was written into the pack (that would also trip its own manifest).
    let (_, run) = k.run("env", json!({})).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(step(&run, "e")["status"], "succeeded");
}

/// A legitimate flow file of about 1 MiB (a wide `inputs` mapping): seconds of parsing in a debug
/// build, so a reload of a few of them is still running while the test asks other things.
fn wide_flow(id: usize) -> String {
    let mut text = format!("flow_id: wide{id}\nphases: [m]\nsteps: []\ninputs:\n");
    let mut i = 0;
    while text.len() < (1 << 20) - 64 {
        text.push_str(&format!("  field_{i}: [string, \"x]\", 'y}}', {{a: b}}]\n"));
        i += 1;
    }
    text
}

#[tokio::test]
async fn a_deeply_nested_flow_file_freezes_neither_the_registry_nor_the_shutdown() {
    let home = fresh_home();
    let mut k = Kernel::start(home.path(), &[]);
    // Dropped after start: with the file present at boot, the old kernel never began listening.
    flow(home.path(), "deep", &"[".repeat(1 << 20));
    for i in 0..3 {
        flow(home.path(), &format!("wide{i}"), &wide_flow(i));
    }
    let reload = {
        let (http, url) = (k.http.clone(), k.url("/api/flows/reload"));
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(TOKEN).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The Registry answers while the files are read and parsed on another thread.
    let asked = Instant::now();
    let packs = tokio::time::timeout(std::time::Duration::from_secs(3), k.get("/api/packs")).await;
    let took = asked.elapsed();
    assert!(
        matches!(packs, Ok((200, _))),
        "GET /api/packs did not answer within 3 s during a reload"
    );
    eprintln!(
        "GET /api/packs answered in {took:?}; the reload was {}",
        if reload.is_finished() {
            "already done"
        } else {
            "still running"
        }
    );
    let (s, v) = tokio::time::timeout(std::time::Duration::from_secs(120), reload)
        .await
        .expect("the reload answers within its deadline")
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let refusal = "user_data/shared/flows/deep.flow.yaml:1: nesting deeper than 32 levels";
    assert!(
        v["data"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with(refusal)),
        "{v}"
    );
    let (_, diag) = k.get("/api/diagnostics").await;
    assert!(
        diag["data"]["flow_problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["message"].as_str().unwrap().starts_with(refusal)
                && p["problem"]["error"]["file"] == "user_data/shared/flows/deep.flow.yaml"),
        "{diag}"
    );
    assert_eq!(
        k.get("/api/flows/wide0").await.0,
        200,
        "the wide flows load"
    );

    // SIGTERM while a reload parses: the kernel stops without waiting for the parse.
    std::fs::remove_file(home.path().join("user_data/shared/flows/deep.flow.yaml")).unwrap();
    let pending = {
        let (http, url) = (k.http.clone(), k.url("/api/flows/reload"));
        tokio::spawn(async move { http.post(url).bearer_auth(TOKEN).send().await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let signalled = Instant::now();
    unsafe {
        libc::kill(k.child.id() as i32, libc::SIGTERM);
    }
    while k.alive() && signalled.elapsed() < std::time::Duration::from_secs(5) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!k.alive(), "the kernel still runs 5 s after SIGTERM");
    eprintln!(
        "stopped {:?} after SIGTERM; the reload was {}",
        signalled.elapsed(),
        if pending.is_finished() {
            "answered"
        } else {
            "cut off"
        }
    );
}
