//! The SkillRuntime's pure rules: reading `SKILL.md`, skill ids and references, progressive
//! disclosure, tool paths, artifact names, budgets, the run's input and result shapes, the
//! validation gate, small text tools and the model-facing tool list.
//!
//! Nothing here touches files, processes or clocks: the actors in `rumi-actors` hold state and do
//! the I/O, and call these functions for every decision (paths, budgets, validation).

pub mod act;
pub mod artifact;
pub mod budget;
pub mod deps;
pub mod disclosure;
pub mod frontmatter;
pub mod glob;
pub mod id;
pub mod memo;
pub mod paths;
pub mod prompt;
pub mod refs;
pub mod text;
pub mod tools;
pub mod validate;

pub use act::{
    ActInput, ActResult, ArtifactInfo, Cost, Detail, Evidence, ExitReason, ExpectedOutput, Metrics,
    OutputKind, Unmet, Validation,
};
pub use artifact::{artifact_name, parse_versioned, versioned};
pub use budget::{Budgets, Ledger, RemainingBudgets, Which};
pub use disclosure::{
    approx_tokens, cap_l2, is_binary, l1_line, l1_tokens, mime_for, L2_CAP_BYTES,
};
pub use frontmatter::{parse_skill_md, SkillDoc, MAX_SKILL_MD_BYTES};
pub use id::{check_skill_id, parse_skill_ref, SkillRef, MAX_SKILL_ID_CHARS};
pub use paths::{build_path, check_argv_item, read_path, Area, PathRejected, ToolPath};
pub use refs::{references, MAX_REFS};
pub use text::{expand_template, line_diff, summarize};
pub use tools::{agent_tools, supervisor_tools, valid_tool_name, AgentKind, ToolSpec};
pub use validate::{validate, BuildView, Report};
