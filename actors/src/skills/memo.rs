//! The caches of one run (contract §10, §15 "Memo across runs"), over the kernel's
//! [`SkillCache`]:
//! * **AttemptMemo** — a script run is keyed by `(run_script, inputs hash, skill tree hash)`,
//!   the inputs being the script, argv, args, dependencies, timeout, isolation and the digest of
//!   `build/` it starts from (a script reads what earlier steps wrote). A hit answers the kept
//!   result (failures too) with `from_memo: true`, restores the files the original wrote into
//!   this run's `build/`, and is counted in `tool_calls_from_memo`, not run. An identical read
//!   in the same run (same tool and arguments) is answered from the run's memo the same way.
//! * **Skill memory** — when the last validated run of the same run key (skill, skill tree,
//!   goal, constraints, inputs, expected outputs, isolation) is remembered, the first
//!   `read_skill_md` answers `{ok, already_loaded: true, memory}` (a short text naming the kept
//!   outputs) in place of SKILL.md — unless SKILL.md is shorter than that text —, a reference that run read answers `already_loaded`, and
//!   `validate` fills the expected outputs missing from `build/` with the kept ones. Asking
//!   again gives the full content. A validated run saves its memory.
//!
//! The skill tree hash covers every file's path and content: any change makes every key new.

use super::cache::{Hit, SkillCache};
use super::context::{Outcome, RunContext};
use parking_lot::Mutex;
use rumi_domain::skill::memo::{value_digest, KeptRead, SkillMemory, MAX_MEMORY_READS};
use rumi_domain::skill::paths::{read_path, Area};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The caches as one run sees them.
pub struct RunCaches {
    pub store: Arc<SkillCache>,
    /// The skill tree hash; `None` (a skill past the walk caps): no memo, no memory.
    pub tree: Option<String>,
    /// The memory of the last validated run with this run's key.
    pub memory: Option<SkillMemory>,
    /// This run's key (for saving its memory).
    pub run_key: Option<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The memory was given to the model (so `validate` may fill in from it).
    delivered: bool,
    /// `(tool, path)` answered with a memory stub: the next identical call gets the content.
    stubbed: HashSet<(String, String)>,
    restored: bool,
    /// In-run read memo: `tool + args digest` → the repeat answer.
    reads: HashMap<String, Value>,
    /// Full contents given to the model in this run.
    given: Vec<KeptRead>,
}

impl RunCaches {
    pub fn new(
        store: Arc<SkillCache>,
        tree: Option<String>,
        memory: Option<SkillMemory>,
        run_key: Option<String>,
    ) -> RunCaches {
        RunCaches {
            store,
            tree,
            memory,
            run_key,
            state: Mutex::default(),
        }
    }

    /// Caches that keep nothing (tests of single agents).
    pub fn off(store: Arc<SkillCache>) -> RunCaches {
        RunCaches::new(store, None, None, None)
    }
}

fn from_memo(result: Value) -> Outcome {
    let mut o = Outcome::ok(result);
    o.tally.tool_calls_from_memo = 1;
    o
}

/// The path a read names, when the read is of the skill's own files (reads of `build/` change
/// with the run and are never memoised).
fn skill_read_path(tool: &str, args: &Value) -> Option<String> {
    match tool {
        "read_skill_md" => Some("SKILL.md".into()),
        "read_ref" => {
            let raw = args.get("path")?.as_str()?;
            let p = read_path(raw).ok()?;
            (p.area == Area::Skill).then(|| raw.to_string())
        }
        _ => None,
    }
}

/// Answers a read from the run's memo or the skill memory, before it runs.
pub fn before_read(ctx: &RunContext, tool: &str, args: &Value) -> Option<Outcome> {
    let c = &ctx.caches;
    let path = skill_read_path(tool, args)?;
    let key = format!("{tool}:{}", value_digest(args));
    let mut st = c.state.lock();
    if let Some(v) = st.reads.get(&key) {
        let mut o = from_memo(v.clone());
        o.diff_summary = format!("{tool} {path}: answered from the run's memo");
        return Some(o);
    }
    let m = c.memory.as_ref()?;
    let stub_key = (tool.to_string(), path.clone());
    if st.stubbed.contains(&stub_key) {
        return None;
    }
    // Short stubs: `already_loaded` (by the last validated run), the memory itself once.
    let result = if tool == "read_skill_md" {
        let text = m.text();
        // Only in place of a longer SKILL.md: a tiny one is simply read (the memory would cost
        // more than it saves).
        if m.read_of(tool, "SKILL.md")
            .is_some_and(|r| r.bytes <= text.len() as u64)
        {
            return None;
        }
        json!({"ok": true, "already_loaded": true, "memory": text})
    } else {
        m.read_of(tool, &path)?;
        json!({"ok": true, "path": path, "resolved_path": path, "already_loaded": true})
    };
    st.stubbed.insert(stub_key);
    st.delivered = true;
    let mut o = from_memo(result).progress();
    o.diff_summary = format!("{tool} {path}: the skill memory of run {}", m.run_id);
    Some(o)
}

/// Records what a read gave: its repeat answer for the run's memo, and a full content for the
/// memory this run may save.
pub fn after_read(ctx: &RunContext, tool: &str, args: &Value, o: &Outcome) {
    let Some(path) = skill_read_path(tool, args) else {
        return;
    };
    if o.end.is_some() {
        return;
    }
    let mut repeat = o.result.clone();
    if let Some(m) = repeat.as_object_mut() {
        if let Some(content) = m.remove("content") {
            let text = content.as_str().unwrap_or_default();
            let mut st = ctx.caches.state.lock();
            if st.given.len() < MAX_MEMORY_READS && !st.given.iter().any(|g| g.path == path) {
                st.given.push(KeptRead {
                    tool: tool.to_string(),
                    path: path.clone(),
                    sha256: hex::encode(Sha256::digest(text.as_bytes())),
                    bytes: text.len() as u64,
                });
            }
            m.retain(|k, _| matches!(k.as_str(), "ok" | "path" | "resolved_path"));
            m.insert("already_loaded".into(), Value::Bool(true));
        }
    }
    let key = format!("{tool}:{}", value_digest(args));
    ctx.caches.state.lock().reads.insert(key, repeat);
}

/// The memo inputs of a script run, or None when the caches are off for it.
pub fn script_inputs(ctx: &RunContext, parts: Value) -> Option<String> {
    ctx.caches.tree.as_ref()?;
    let build = ctx.files.build_digest()?;
    Some(value_digest(&json!([parts, build])))
}

/// A kept script result, with its files, when the memo has one.
pub fn script_hit(ctx: &RunContext, inputs: &str) -> Option<Hit> {
    let tree = ctx.caches.tree.as_deref()?;
    ctx.caches
        .store
        .lookup(&ctx.skill_id, "run_script", inputs, tree)
}

/// Keeps a script's result and the files it wrote (`written`: paths under `build/`).
pub fn script_store(
    ctx: &RunContext,
    inputs: &str,
    result: &Value,
    written: &[String],
    removed: &[String],
) {
    let Some(tree) = ctx.caches.tree.clone() else {
        return;
    };
    let mut contents = Vec::with_capacity(written.len());
    for rel in written {
        match ctx.files.read_build(rel) {
            Ok(bytes) => contents.push((rel.clone(), bytes)),
            Err(_) => return, // gone already, or too large: not kept
        }
    }
    let mut result = result.clone();
    if let Some(m) = result.as_object_mut() {
        m.remove("from_memo");
        m.remove("isolation");
    }
    let record = rumi_domain::skill::memo::MemoRecord {
        action: "run_script".into(),
        inputs: inputs.to_string(),
        tree,
        result,
        files: Vec::new(),
        removed: removed.to_vec(),
    };
    ctx.caches.store.store(&ctx.skill_id, record, &contents);
}

/// Before `validate`: once the memory was given, fills each kept output missing from `build/`
/// (within the disk budget). Answers the paths restored.
pub async fn restore_for_validate(ctx: &Arc<RunContext>) -> Vec<String> {
    let Some(m) = ctx.caches.memory.clone() else {
        return Vec::new();
    };
    {
        let mut st = ctx.caches.state.lock();
        if !st.delivered || st.restored {
            return Vec::new();
        }
        st.restored = true;
    }
    let c = Arc::clone(ctx);
    let wanted: Vec<(String, Vec<u8>)> = super::agent::blocking(move || {
        let mut out = Vec::new();
        for f in &m.artifacts {
            let Some(rel) = f.build_rel() else { continue };
            if c.files.read_build(&rel).is_ok() {
                continue; // the run wrote its own: it takes precedence
            }
            if let Some(bytes) = c.caches.store.blob(&c.skill_id, &f.sha256) {
                out.push((rel, bytes));
            }
        }
        out
    })
    .await;
    restore_files(ctx, wanted).await.unwrap_or_default()
}

/// Writes kept files into `build/` after admitting their bytes with the BudgetGuard; None when
/// the budget refuses them or a write fails (what was written is removed again).
pub async fn restore_files(
    ctx: &Arc<RunContext>,
    files: Vec<(String, Vec<u8>)>,
) -> Option<Vec<String>> {
    if files.is_empty() {
        return Some(Vec::new());
    }
    let bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    ctx.guard
        .send(super::budget_guard::ChargeDisk { bytes })
        .await
        .ok()?
        .ok()?;
    let c = Arc::clone(ctx);
    let done = super::agent::blocking(move || {
        let mut written: Vec<String> = Vec::new();
        for (rel, bytes) in &files {
            if c.files.write_build(rel, bytes).is_err() {
                for w in &written {
                    c.files.remove_build_file(w);
                }
                return None;
            }
            written.push(rel.to_string());
        }
        Some(written)
    })
    .await?;
    ctx.build_changed();
    Some(done)
}

/// After a validated run: saves its memory (the outputs by content, the reads, the steps).
pub fn save_memory(ctx: &RunContext, artifacts: &[String], steps: Vec<String>) {
    let (Some(tree), Some(run_key)) = (ctx.caches.tree.clone(), ctx.caches.run_key.clone()) else {
        return;
    };
    let mut contents = Vec::with_capacity(artifacts.len());
    for path in artifacts {
        let Some(rel) = path.strip_prefix("build/") else {
            continue;
        };
        match ctx.files.read_build(rel) {
            Ok(bytes) => contents.push((rel.to_string(), bytes)),
            Err(_) => return,
        }
    }
    if contents.is_empty() {
        return;
    }
    let reads = ctx.caches.state.lock().given.clone();
    let m = SkillMemory {
        run_key,
        tree,
        run_id: ctx.run_id.clone(),
        artifacts: Vec::new(),
        reads,
        steps: steps
            .into_iter()
            .take(rumi_domain::skill::memo::MAX_MEMORY_STEPS)
            .collect(),
    };
    ctx.caches.store.save_memory(&ctx.skill_id, m, &contents);
}
