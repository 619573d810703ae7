//! The README's first-run commands, run as written: every `rumi …` line of the "First run" section
//! (the example packs, then "Your own pack in five minutes"), in bash, from a directory inside a fresh home (the CLI
//! must find the home itself), against a real permissive kernel. A line whose comment starts with
//! `exit 1` must fail; every other line must succeed (`rumi doctor` excepted: its status says
//! whether Docker and the image are ready, which is this machine's business).

mod common;

use common::{port_of, python_available, Kernel, TOKEN};
use std::path::Path;
use std::process::Command;

/// The `sh` code blocks of the README section that starts with `heading`.
fn commands_of(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no section {heading:?}"));
    let rest = &readme[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in rest[..end].lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        if in_block && line.starts_with("rumi ") {
            lines.push(line.to_string());
        }
    }
    lines
}

fn run_line(line: &str, cwd: &Path, port: u16) -> (i32, String) {
    let bin = assert_cmd::cargo::cargo_bin("rumi");
    let script = format!("rumi() {{ '{}' \"$@\"; }}\n{line}", bin.display());
    let mut cmd = Command::new("bash");
    for (k, _) in std::env::vars() {
        if k.starts_with("RUMI_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("RUMI_API_PORT", port.to_string())
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_first_run_commands_work_as_written() {
    if !python_available() {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    // The section holds both blocks: the example packs, then "Your own pack in five minutes".
    let first = commands_of(&readme, "### First run");
    assert!(
        first.len() >= 9,
        "the first-run section lists its commands: {first:?}"
    );
    assert!(
        first.iter().any(|l| l.starts_with("rumi pack new")),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("rumi skill run release-notes")),
        "{first:?}"
    );
    assert!(
        !readme[readme.find("### First run").unwrap()..readme.find("## Documentation").unwrap()]
            .contains("curl"),
        "the first run needs no curl"
    );

    let home = common::fresh_home();
    // The first skill run: the shipped skills and recorded exchange, the kernel started as the
    // README says (RUMI_LLM_PROVIDER=replay with the replay file, relative to the home).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::copy_dir(
        &repo.join("user_data/skills"),
        &home.path().join("user_data/skills"),
    );
    common::copy_dir(
        &repo.join("user_data/replays"),
        &home.path().join("user_data/replays"),
    );
    assert!(readme
        .contains("RUMI_LLM_PROVIDER=replay RUMI_LLM_REPLAY=user_data/replays/release-notes.json"));
    let k = Kernel::start(
        home.path(),
        &[
            ("RUMI_LLM_PROVIDER", "replay"),
            ("RUMI_LLM_REPLAY", "user_data/replays/release-notes.json"),
        ],
    );
    // An operator's kernel keeps its token in the home, where the CLI finds it.
    std::fs::write(k.home.join("user_data/api_token"), TOKEN).unwrap();
    let cwd = k.home.join("ecosystem");
    let port = port_of(&k);
    for line in &first {
        let (code, text) = run_line(line, &cwd, port);
        assert!(!text.contains("panicked"), "{line}: {text}");
        if line.starts_with("rumi doctor") {
            assert!(text.contains("kernel"), "{line}: {text}");
            continue;
        }
        let want_failure = line
            .split_once('#')
            .is_some_and(|(_, c)| c.trim_start().starts_with("exit 1"));
        assert_eq!(code != 0, want_failure, "{line} exited {code}: {text}");
    }
}
