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
