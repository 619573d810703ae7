//! The SkillRuntime: skills run by a model-driven Supervisor and its Sub Agents.

pub mod llm;
