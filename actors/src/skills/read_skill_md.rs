//! The ReadSkillMd Sub Agent (contract §2 L2, §4): loads the whole SKILL.md body once per run,
//! cut at the L2 cap with an in-band marker, and says at once which of the files it names are
//! missing (§11: a missing reference is detected at once). Direct mode only: its one tool
//! (`read_skill_md {}`) has no arguments to delegate.

use super::agent::{blocking, guarded, AgentFailure};
use super::context::{Outcome, RunContext};
use super::workspace::Resolve;
use actix::prelude::*;
use rumi_domain::skill::disclosure::{approx_tokens, cap_l2};
use rumi_domain::skill::frontmatter::{parse_skill_md, MAX_SKILL_MD_BYTES};
use rumi_domain::skill::paths::{read_path, ToolPath};
use rumi_domain::skill::refs::references;
use serde_json::json;
use std::sync::Arc;

/// Load the skill's instructions (L2).
#[derive(Message)]
#[rtype(result = "Result<Outcome, AgentFailure>")]
pub struct ReadSkill;

/// The ReadSkillMd agent of one run.
pub struct ReadSkillMd {
    ctx: Arc<RunContext>,
}

impl ReadSkillMd {
    pub fn new(ctx: Arc<RunContext>) -> Self {
        ReadSkillMd { ctx }
    }
}

impl Actor for ReadSkillMd {
    type Context = Context<Self>;
}

/// Reads SKILL.md afresh (never the copy the catalog parsed: what the model gets is what is on
/// disk now), and answers `{ok, content, truncated, approx_tokens}` — or `already_loaded` when
/// this run already has it.
impl Handler<ReadSkill> for ReadSkillMd {
    type Result = ResponseFuture<Result<Outcome, AgentFailure>>;
    fn handle(&mut self, _: ReadSkill, _: &mut Self::Context) -> Self::Result {
        let ctx = Arc::clone(&self.ctx);
        Box::pin(guarded("ReadSkillMd", async move {
            blocking(move || read_skill(&ctx)).await
        }))
    }
}

/// The work of `read_skill_md`.
pub fn read_skill(ctx: &RunContext) -> Outcome {
    let path = ToolPath {
        area: rumi_domain::skill::paths::Area::Skill,
        rel: "SKILL.md".into(),
    };
    let Resolve::Found(found) = ctx.files.resolve(&path, false) else {
        return Outcome::err("not_found", "SKILL.md is gone from the skill directory");
    };
    let bytes = match ctx.files.read(&found, MAX_SKILL_MD_BYTES) {
        Ok((b, _)) => b,
        Err(_) => return Outcome::err("not_found", "SKILL.md cannot be read"),
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Outcome::err("invalid_arguments", "SKILL.md is not UTF-8 text");
    };
    let dir = ctx.skill_id.rsplit(['/', ':']).next().unwrap_or("");
    let body = match parse_skill_md(&text, dir) {
        Ok(doc) => doc.body,
        Err(e) => {
            return Outcome::err(
                "invalid_arguments",
                format!("SKILL.md no longer parses: {e}"),
            )
        }
    };
    if !ctx.first_load(body.as_bytes()) {
        let mut o = Outcome::ok(json!({"ok": true, "already_loaded": true}));
        o.tally.cache_hits += 1;
        return o;
    }
    let (content, omitted) = cap_l2(&body);
    let missing: Vec<String> = references(&body)
        .into_iter()
        .filter(|r| match read_path(r) {
            // Paths under build/ are outputs the skill asks for, not files it ships.
            Ok(p) if p.area == rumi_domain::skill::paths::Area::Build => false,
            Ok(p) => matches!(ctx.files.resolve(&p, true), Resolve::NotFound),
            Err(_) => false,
        })
        .collect();
    let mut result = json!({
        "ok": true,
        "content": content,
        "truncated": omitted > 0,
        "approx_tokens": approx_tokens(content.len()),
    });
    if !missing.is_empty() {
        result["missing_references"] = json!(missing);
        result["note"] = json!(
            "SKILL.md names files that do not exist: you may make one substitute attempt (write the content yourself), otherwise they are reported as unmet"
        );
    }
    let mut o = Outcome::ok(result).progress();
    o.tally.l2_loads += 1;
    o.tally.cache_misses += 1;
    o.tally.bytes_truncated += omitted as u64;
    o.files.push("SKILL.md".into());
    o.diff_summary = format!(
        "loaded SKILL.md ({} bytes{})",
        content.len(),
        if omitted > 0 { ", truncated" } else { "" }
    );
    o
}
