//! The caches' pure rules (contract §10, §15 "Memo across runs"): the skill tree hash, the
//! AttemptMemo's keys and records, and the *skill memory* that makes a second run cheaper.
//!
//! * **Skill tree hash** — every file of the skill by path, content and permission bits, every
//!   directory by path: touching a file (mtime alone) changes nothing, any change of a byte, a
//!   name, a mode or an empty directory changes it. A link counts by its target, and — when it
//!   leads out of the skill — by the content it leads to (the runtime's `workspace.rs`).
//! * **AttemptMemo** — `(action, inputs hash, skill tree hash)` → the tool result, failures too,
//!   with the files a script wrote (by content digest, so a hit restores them).
//! * **Skill memory** — what the last validated run of the same skill, goal, inputs and expected
//!   outputs read, did and produced. A second run gets it, compact, in place of the full
//!   `SKILL.md` and of the references the first run read; `validate` fills the expected outputs
//!   still missing from `build/` with the remembered ones. Asking again for a file gives its
//!   full content.
//!
//! Nothing here touches files: the runtime's cache (`rumi-actors`, `skills/cache.rs`) stores and
//! checks, and calls these.

use super::act::ActInput;
use super::paths::build_path;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Most files a remembered run or a memo record carries.
pub const MAX_MEMORY_FILES: usize = 64;
/// Most reads a skill memory lists.
pub const MAX_MEMORY_READS: usize = 64;
/// Most steps a skill memory lists.
pub const MAX_MEMORY_STEPS: usize = 32;
/// Longest step line kept.
const MAX_STEP_CHARS: usize = 160;

fn hex32(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// One entry of a skill's tree: its path relative to the skill root and what it holds (a
/// file's content digest, or a link's target).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeEntry {
    pub path: String,
    pub what: TreeWhat,
}

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TreeWhat {
    /// A regular file: its content digest and permission bits.
    File([u8; 32], u32),
    Link(String),
    Dir,
}

/// The skill tree hash: order-independent over the entries, each by path and content.
pub fn tree_hash(entries: &[TreeEntry]) -> String {
    let mut sorted: Vec<&TreeEntry> = entries.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(b"rumi-skill-tree-1\n");
    for e in sorted {
        h.update((e.path.len() as u64).to_le_bytes());
        h.update(e.path.as_bytes());
        match &e.what {
            TreeWhat::File(d, mode) => {
                h.update(b"f");
                h.update(d);
                h.update(mode.to_le_bytes());
            }
            TreeWhat::Dir => h.update(b"d"),
            TreeWhat::Link(t) => {
                h.update(b"l");
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// The digest of any JSON value (object keys are sorted by serde_json's map).
pub fn value_digest(v: &Value) -> String {
    hex32(serde_json::to_string(v).unwrap_or_default().as_bytes())
}

/// The memo's file name of `(action, inputs, tree)`.
pub fn memo_name(action: &str, inputs: &str, tree: &str) -> String {
    hex32(format!("{action}\n{inputs}\n{tree}").as_bytes())
}

/// The key of a run for the skill memory: same skill, skill tree, goal, constraints, inputs,
/// expected outputs and isolation. Budgets are not part of it (a run with more room gets the
/// same result).
pub fn run_key(input: &ActInput, tree: &str, isolation: &str) -> String {
    let v = serde_json::json!([
        input.skill_id,
        tree,
        input.goal,
        input.constraints,
        input.inputs,
        input.expected_outputs,
        isolation,
    ]);
    value_digest(&v)
}

/// A file kept by content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptFile {
    /// `build/<rel>`.
    pub path: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub bytes: u64,
}

impl KeptFile {
    /// The path under `build/` when it is a proper one (a record read back from disk is checked
    /// before anything is restored from it).
    pub fn build_rel(&self) -> Option<String> {
        let rel = self.path.strip_prefix("build/")?;
        let checked = build_path(rel).ok()?;
        (checked == rel && is_sha256_hex(&self.sha256)).then_some(checked)
    }
}

/// 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One AttemptMemo record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoRecord {
    pub action: String,
    pub inputs: String,
    pub tree: String,
    /// The tool result as the model got it (without `from_memo`/`isolation`, set on a hit).
    pub result: Value,
    /// The files the attempt wrote under `build/`, restored on a hit.
    #[serde(default)]
    pub files: Vec<KeptFile>,
    /// The files the attempt removed (paths under `build/`), removed again on a hit.
    #[serde(default)]
    pub removed: Vec<String>,
}

impl MemoRecord {
    /// The record answers `(action, inputs, tree)` and every file in it is well-formed.
    pub fn answers(&self, action: &str, inputs: &str, tree: &str) -> bool {
        self.action == action
            && self.inputs == inputs
            && self.tree == tree
            && self.result.is_object()
            && self.files.len() <= MAX_MEMORY_FILES
            && self.files.iter().all(|f| f.build_rel().is_some())
            && self.removed.len() <= MAX_MEMORY_FILES
            && self
                .removed
                .iter()
                .all(|r| build_path(r).ok().as_deref() == Some(r.as_str()))
    }
}

/// A read the remembered run gave the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRead {
    /// `read_skill_md` or `read_ref`.
    pub tool: String,
    /// The path as the call gave it (`SKILL.md` for `read_skill_md`).
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What the last validated run of one run key did and produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillMemory {
    pub run_key: String,
    pub tree: String,
    pub run_id: String,
    /// The validated outputs, restored by `validate` when missing.
    pub artifacts: Vec<KeptFile>,
    pub reads: Vec<KeptRead>,
    /// The steps that worked, in order (`tool target → ok`).
    pub steps: Vec<String>,
}

impl SkillMemory {
    /// Well-formed and for this run key and tree.
    pub fn answers(&self, run_key: &str, tree: &str) -> bool {
        self.run_key == run_key
            && self.tree == tree
            && !self.artifacts.is_empty()
            && self.artifacts.len() <= MAX_MEMORY_FILES
            && self.reads.len() <= MAX_MEMORY_READS
            && self.steps.len() <= MAX_MEMORY_STEPS
            && self.artifacts.iter().all(|f| f.build_rel().is_some())
    }

    /// A step line as kept (capped).
    pub fn step_line(tool: &str, target: &str, ok: bool) -> String {
        let mut line = format!("{tool} {target}");
        line = line.chars().take(MAX_STEP_CHARS).collect();
        format!("{} → {}", line.trim_end(), if ok { "ok" } else { "failed" })
    }

    /// The remembered read of `path` by `tool`, if any.
    pub fn read_of(&self, tool: &str, path: &str) -> Option<&KeptRead> {
        self.reads.iter().find(|r| r.tool == tool && r.path == path)
    }

    /// The memory as `read_skill_md` gives it the first time in a run (in place of SKILL.md):
    /// short, because it is what a second run pays for instead of the content.
    pub fn text(&self) -> String {
        let outputs: Vec<&str> = self.artifacts.iter().map(|a| a.path.as_str()).collect();
        format!(
            "Validated before with the same goal, inputs and skill files; kept outputs: {}. validate restores those missing from build/; then finish. read_skill_md again gives SKILL.md.",
            outputs.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, content: &[u8]) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            what: TreeWhat::File(Sha256::digest(content).into(), 0o644),
        }
    }

    proptest! {
        #[test]
        fn the_tree_hash_ignores_order_and_sees_every_byte_and_name(
            files in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,4})?", proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            pick in any::<prop::sample::Index>(),
            flip in any::<u8>(),
        ) {
            let entries: Vec<TreeEntry> = files.iter().map(|(p, c)| file(p, c)).collect();
            let mut reversed = entries.clone();
            reversed.reverse();
            let h = tree_hash(&entries);
            prop_assert_eq!(&h, &tree_hash(&reversed));
            let i = pick.index(entries.len());
            let (path, content) = files.iter().nth(i).unwrap();
            let mut changed = content.clone();
            changed.push(flip);
            let mut other = entries.clone();
            other[i] = file(path, &changed);
            prop_assert_ne!(&h, &tree_hash(&other));
            let mut renamed = entries.clone();
            renamed[i] = file(&format!("{path}x"), content);
            if !files.contains_key(&format!("{path}x")) {
                prop_assert_ne!(&h, &tree_hash(&renamed));
            }
        }

        #[test]
        fn a_kept_file_outside_build_is_never_restored(path in ".{0,40}") {
            let f = KeptFile { path: path.clone(), sha256: "a".repeat(64), bytes: 1 };
            if let Some(rel) = f.build_rel() {
                prop_assert!(path.starts_with("build/"));
                prop_assert!(!rel.split('/').any(|c| c == ".." || c == "." || c.is_empty()));
            }
        }
    }

    #[test]
    fn path_and_content_are_not_confused() {
        // "ab" + content "c" vs "a" + content "bc": different trees.
        let a = tree_hash(&[file("ab", b"c")]);
        let b = tree_hash(&[file("a", b"bc")]);
        assert_ne!(a, b);
        let link = tree_hash(&[TreeEntry {
            path: "x".into(),
            what: TreeWhat::Link("y".into()),
        }]);
        assert_ne!(link, tree_hash(&[file("x", b"y")]));
        let dir = tree_hash(&[
            file("a", b"1"),
            TreeEntry {
                path: "d".into(),
                what: TreeWhat::Dir,
            },
        ]);
        assert_ne!(
            dir,
            tree_hash(&[file("a", b"1")]),
            "an empty directory counts"
        );
        let exec = tree_hash(&[TreeEntry {
            path: "a".into(),
            what: TreeWhat::File(Sha256::digest(b"1").into(), 0o755),
        }]);
        assert_ne!(exec, tree_hash(&[file("a", b"1")]), "the mode counts");
    }

    #[test]
    fn the_run_key_follows_goal_inputs_and_outputs_not_budgets() {
        let v = serde_json::json!({"skill_id": "s", "goal": "g", "inputs": {"a": 1},
            "expected_outputs": [{"path": "build/x.md"}]});
        let (a, _) = ActInput::parse(&v).unwrap();
        let mut b = a.clone();
        b.budgets = Some(serde_json::json!({"token_budget": 5}));
        assert_eq!(run_key(&a, "t", "host"), run_key(&b, "t", "host"));
        let mut c = a.clone();
        c.goal = "h".into();
        assert_ne!(run_key(&a, "t", "host"), run_key(&c, "t", "host"));
        let mut d = a.clone();
        d.inputs.insert("a".into(), serde_json::json!(2));
        assert_ne!(run_key(&a, "t", "host"), run_key(&d, "t", "host"));
        assert_ne!(run_key(&a, "t", "host"), run_key(&a, "u", "host"));
        assert_ne!(run_key(&a, "t", "host"), run_key(&a, "t", "container"));
    }

    #[test]
    fn a_memory_for_another_key_or_with_bad_paths_answers_nothing() {
        let m = SkillMemory {
            run_key: "k".into(),
            tree: "t".into(),
            run_id: "r".into(),
            artifacts: vec![KeptFile {
                path: "build/a.md".into(),
                sha256: "b".repeat(64),
                bytes: 3,
            }],
            reads: vec![],
            steps: vec![SkillMemory::step_line("read_skill_md", "", true)],
        };
        assert!(m.answers("k", "t"));
        assert!(!m.answers("k", "u"));
        let mut bad = m.clone();
        bad.artifacts[0].path = "build/../x".into();
        assert!(!bad.answers("k", "t"));
        let text = m.text();
        assert!(text.contains("build/a.md") && text.contains("validate"));
        assert!(text.len() < 200, "short: {text}");
    }
}
