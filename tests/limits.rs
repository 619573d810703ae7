//! Resource abuse end to end (hardening): a flow that tries to grow the kernel's memory without
//! bound is stopped by the context limits, with a clear error, and the kernel stays small.

mod common;

use common::*;
use serde_json::json;

/// The kernel's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("kernel status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS")
}

/// Hardening defect 2: 39 `set` steps each doubling `"${ctx.k(n-1)}${ctx.k(n-1)}"` grew one value
/// to gigabytes and got the kernel OOM-killed (the chain is synchronous, so no deadline stopped
/// it). Now the step that would pass `RUMI_MAX_RESPONSE_BYTES` fails with `context_limit`, the
/// run ends, and the kernel's memory stays within a few MiB of where it was.
#[tokio::test]
async fn a_doubling_flow_is_stopped_by_the_context_limits() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let mut text = String::from("flow_id: grow\nphases: [m]\nsteps:\n  - {id: s00, phase: m, type: set, input: {key: k0, value: \"0123456789abcdef\"}}\n");
    for n in 1..40 {
        text.push_str(&format!(
            "  - {{id: s{n:02}, phase: m, type: set, input: {{key: k{n}, value: \"${{ctx.k{p}}}${{ctx.k{p}}}\"}}}}\n",
            p = n - 1
        ));
    }
    write(home.path(), "user_data/shared/flows/grow.flow.yaml", &text);
    let k = Kernel::start(home.path(), &[("RUMI_MAX_RESPONSE_BYTES", "1048576")]);
    let before = rss_kib(k.child.id());
    for _ in 0..3 {
        let (s, run) = k.run("grow", json!({})).await;
        assert_eq!(s, 200, "{run}");
        // Fail-soft by default: the refused step fails, later steps see a missing key.
        let refused = step(&run, "s16");
        assert_eq!(refused["status"], "failed", "{refused}");
        assert_eq!(refused["error_type"], "context_limit");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("RUMI_MAX_RESPONSE_BYTES"),
            "the error names the limit: {refused}"
        );
        assert_eq!(step(&run, "s15")["status"], "succeeded");
        assert!(run["result"].get("k16").is_none());
    }
    let after = rss_kib(k.child.id());
    assert!(
        after < before + 32 * 1024,
        "kernel RSS grew from {before} KiB to {after} KiB"
    );
    // A bad limit stops start-up and names the variable.
    k.stop();
    let err = serve_refused(home.path(), &[("RUMI_MAX_CONTEXT_BYTES", "2048")]);
    assert!(err.contains("RUMI_MAX_CONTEXT_BYTES"), "{err}");
}

/// Second review: every nested run had budgets of its own, so a flow calling `kernel:flow.run`
/// again and again multiplied them (gigabytes of events into the audit, a history flooded with
/// child records). A run's whole tree may start at most 100 nested runs, and an emitted payload
/// too large for the audit is recorded by its size.
#[tokio::test]
async fn a_run_tree_shares_its_budgets() {
    if !python_available() {
        return;
    }
    let home = fresh_home();
    let mut parent = String::from("flow_id: fan\nphases: [m]\nsteps:\n  - {id: e, phase: m, type: handler, input: {handler: \"kernel:emit\", args: {event: big, payload: \"${ctx.big}\"}}}\n");
    for n in 0..110 {
        parent.push_str(&format!(
            "  - {{id: c{n:03}, phase: m, type: handler, input: {{handler: \"kernel:flow.run\", args: {{flow_id: leaf}}}}}}\n"
        ));
    }
    write(home.path(), "user_data/shared/flows/fan.flow.yaml", &parent);
    write(
        home.path(),
        "user_data/shared/flows/leaf.flow.yaml",
        "flow_id: leaf\nphases: [m]\nsteps:\n  - {id: s, phase: m, type: set, input: {key: x, value: 1}}\n",
    );
    // A long chain of synchronous steps runs in slices (the kernel yields between them).
    let mut long = String::from("flow_id: long\nphases: [m]\nsteps:\n");
    for n in 0..300 {
        long.push_str(&format!(
            "  - {{id: s{n:03}, phase: m, type: set, input: {{key: k, value: {n}}}}}\n"
        ));
    }
    write(home.path(), "user_data/shared/flows/long.flow.yaml", &long);
    let k = Kernel::start(home.path(), &[]);
    let (s, run) = k.run("long", json!({})).await;
    assert_eq!((s, &run["result"]["k"]), (200, &json!(299)), "{run}");
    assert_eq!(run["steps"].as_array().unwrap().len(), 300);
    let (s, run) = k.run("fan", json!({"big": "b".repeat(200 * 1024)})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(step(&run, "c099")["status"], "succeeded");
    let refused = step(&run, "c100");
    assert_eq!(refused["error_type"], "recursion_refused", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("at most 100"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, audit) = k.get("/api/audit?category=system&limit=1000").await;
        let event = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "flow_event")
            .cloned();
        if let Some(e) = event {
            assert_eq!(e["details"]["payload"]["_omitted"], true, "{e}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the event is audited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
