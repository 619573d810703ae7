//! Runs the block host's own Python tests (`actors/python/tests`) as part of `cargo test`, so the
//! one test command covers the Python side of the pack interface too.

mod common;

#[test]
fn python_block_host_unit_tests_pass() {
    if !common::python_available() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("actors/python");
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests", "-v"])
        .current_dir(&dir)
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the block host's Python tests failed:\n{report}"
    );
    assert!(report.contains("OK"), "{report}");
    let ran: usize = report
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    assert!(
        ran >= 13,
        "expected the block host's tests to run, saw {ran}: {report}"
    );
}
