//! Skill discovery (contract §1): every directory with a `SKILL.md` under `user_data/skills/`
//! and under the `skills/` folder of every approved pack (listed as `<pack_id>:<skill_id>`).
//!
//! Loading is lenient the way real skills need (the domain's `parse_skill_md` turns a name
//! mismatch or unknown keys into warnings) and a broken skill is skipped with a diagnostic,
//! never a reason to hide the others. A skill id never escapes its root: ids are checked by
//! the domain's rules, directories are walked without following links, and a linked skill
//! directory counts only when its real path is inside the same root.

use rumi_domain::skill::frontmatter::{parse_skill_md, SkillDoc, MAX_SKILL_MD_BYTES};
use rumi_domain::skill::id::{check_skill_id, parse_skill_ref, SkillRef};
use serde::Serialize;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most directories one root's walk visits.
pub const MAX_DIRS: usize = 10_000;
/// Most skills one root may list.
pub const MAX_SKILLS: usize = 1_000;
/// Deepest skill id, in directories.
pub const MAX_DEPTH: usize = 8;

/// One listed skill.
#[derive(Debug, Clone)]
pub struct SkillEntry {
    /// As listed and as a run names it: `brand-guidelines` or `<pack_id>:<skill_id>`.
    pub skill_id: String,
    pub pack_id: Option<String>,
    /// The skill's canonical directory.
    pub root: PathBuf,
    pub doc: SkillDoc,
}

/// The L1 line of a listed skill (`GET /api/skills`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct SkillSummary {
    pub skill_id: String,
    pub name: String,
    pub description: String,
    pub warnings: Vec<String>,
}

/// A skill that could not be loaded (a diagnostics entry `{source: "skills", skill_id, error}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct SkippedSkill {
    pub source: &'static str,
    pub skill_id: String,
    pub error: String,
}

/// Everything discovery found.
#[derive(Debug, Default)]
pub struct SkillCatalog {
    pub skills: Vec<SkillEntry>,
    pub skipped: Vec<SkippedSkill>,
}

impl SkillCatalog {
    /// The L1 catalog.
    pub fn summaries(&self) -> Vec<SkillSummary> {
        self.skills
            .iter()
            .map(|s| SkillSummary {
                skill_id: s.skill_id.clone(),
                name: s.doc.name.clone(),
                description: s.doc.description.clone(),
                warnings: s.doc.warnings.clone(),
            })
            .collect()
    }
}

/// The roots skills are found in: the user's, and each approved pack's `skills/`.
#[derive(Debug, Clone)]
pub struct Roots {
    pub user: PathBuf,
    /// (pack id, the pack's `skills/` directory) of approved packs only.
    pub packs: Vec<(String, PathBuf)>,
}

/// Walks every root.
pub fn discover(roots: &Roots) -> SkillCatalog {
    let mut cat = SkillCatalog::default();
    walk_root(&roots.user, None, &mut cat);
    for (pack_id, dir) in &roots.packs {
        walk_root(dir, Some(pack_id), &mut cat);
    }
    cat.skills.sort_by(|a, b| a.skill_id.cmp(&b.skill_id));
    cat
}

/// Why a named skill could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    BadId(String),
    #[error("no skill {0:?}: see GET /api/skills (or `rumi skill list`) for the skills there are")]
    Unknown(String),
    #[error("skill {id:?} cannot be loaded: {error}")]
    Broken { id: String, error: String },
}

/// Finds one skill by the id a run names (`x/y` or `<pack_id>:x/y`) without walking the others.
pub fn lookup(roots: &Roots, id: &str) -> Result<SkillEntry, LookupError> {
    let (root, pack_id, skill_id) = match parse_skill_ref(id).map_err(LookupError::BadId)? {
        SkillRef::User { skill_id } => (roots.user.clone(), None, skill_id),
        SkillRef::Pack { pack_id, skill_id } => {
            let Some((_, dir)) = roots.packs.iter().find(|(p, _)| p == pack_id) else {
                return Err(LookupError::Unknown(id.to_string()));
            };
            (dir.clone(), Some(pack_id.to_string()), skill_id)
        }
    };
    let Ok(real_root) = fs::canonicalize(&root) else {
        return Err(LookupError::Unknown(id.to_string()));
    };
    let dir = root.join(skill_id);
    let Ok(real) = fs::canonicalize(&dir) else {
        return Err(LookupError::Unknown(id.to_string()));
    };
    if !real.starts_with(&real_root) || real == real_root || !real.is_dir() {
        return Err(LookupError::Unknown(id.to_string()));
    }
    match load(&real, skill_id) {
        Some(Ok(doc)) => Ok(SkillEntry {
            skill_id: id.to_string(),
            pack_id,
            root: real,
            doc,
        }),
        Some(Err(error)) => Err(LookupError::Broken {
            id: id.to_string(),
            error,
        }),
        None => Err(LookupError::Unknown(id.to_string())),
    }
}

/// Loads `<dir>/SKILL.md`: None when there is none (not a skill), Err when it cannot be used.
fn load(dir: &Path, skill_id: &str) -> Option<Result<SkillDoc, String>> {
    let path = dir.join("SKILL.md");
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() {
        return Some(Err(
            "SKILL.md is not a regular file (a link or a directory); make it a plain file".into(),
        ));
    }
    if meta.len() > MAX_SKILL_MD_BYTES as u64 {
        return Some(Err(format!(
            "SKILL.md is {} bytes; the limit is {MAX_SKILL_MD_BYTES}: move detail into references/",
            meta.len()
        )));
    }
    let mut text = String::new();
    let read = fs::File::open(&path).and_then(|f| {
        f.take(MAX_SKILL_MD_BYTES as u64 + 1)
            .read_to_string(&mut text)
    });
    if read.is_err() {
        return Some(Err("SKILL.md cannot be read as UTF-8 text".into()));
    }
    let dir_name = skill_id.rsplit('/').next().unwrap_or(skill_id);
    Some(parse_skill_md(&text, dir_name))
}

fn walk_root(root: &Path, pack_id: Option<&String>, cat: &mut SkillCatalog) {
    let Ok(real_root) = fs::canonicalize(root) else {
        return;
    };
    let listed = |id: &str| match pack_id {
        Some(p) => format!("{p}:{id}"),
        None => id.to_string(),
    };
    let mut stack: Vec<(PathBuf, String)> = vec![(real_root.clone(), String::new())];
    let (mut dirs, mut skills) = (0usize, 0usize);
    while let Some((dir, id)) = stack.pop() {
        dirs += 1;
        if dirs > MAX_DIRS {
            cat.skipped.push(SkippedSkill {
                source: "skills",
                skill_id: listed(&id),
                error: format!("the skill root has more than {MAX_DIRS} directories; the rest was not searched"),
            });
            return;
        }
        if !id.is_empty() {
            if let Some(found) = load(&dir, &id) {
                let skill_id = listed(&id);
                match (check_skill_id(&id), found) {
                    (Err(e), _) | (Ok(()), Err(e)) => cat.skipped.push(SkippedSkill {
                        source: "skills",
                        skill_id,
                        error: e,
                    }),
                    (Ok(()), Ok(doc)) => {
                        skills += 1;
                        if skills > MAX_SKILLS {
                            cat.skipped.push(SkippedSkill {
                                source: "skills",
                                skill_id,
                                error: format!("more than {MAX_SKILLS} skills in one root; the rest are not listed"),
                            });
                            return;
                        }
                        cat.skills.push(SkillEntry {
                            skill_id,
                            pack_id: pack_id.cloned(),
                            root: dir.clone(),
                            doc,
                        });
                    }
                }
                continue; // a skill's subdirectories are its files, not other skills
            }
        }
        if id.split('/').count() >= MAX_DEPTH {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut subs: Vec<(String, PathBuf)> = Vec::new();
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(t) = e.file_type() else { continue };
            let child = if id.is_empty() {
                name.clone()
            } else {
                format!("{id}/{name}")
            };
            if t.is_dir() {
                subs.push((child, e.path()));
            } else if t.is_symlink() {
                match fs::canonicalize(e.path()) {
                    Ok(real)
                        if real.is_dir() && real.starts_with(&real_root) && real != real_root =>
                    {
                        subs.push((child, real))
                    }
                    Ok(real) if !real.is_dir() => {}
                    _ => {
                        if e.path().join("SKILL.md").exists() {
                            cat.skipped.push(SkippedSkill {
                                source: "skills",
                                skill_id: listed(&child),
                                error: "the skill directory is a symbolic link to a place outside the skill root; copy the skill in instead".into(),
                            });
                        }
                    }
                }
            }
        }
        subs.sort();
        // Reverse so the stack pops them in order.
        stack.extend(subs.into_iter().rev().map(|(id, p)| (p, id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(root: &Path, id: &str, md: &str) {
        fs::create_dir_all(root.join(id)).unwrap();
        fs::write(root.join(id).join("SKILL.md"), md).unwrap();
    }

    #[test]
    fn finds_nested_skills_warns_and_skips() {
        let t = tempfile::tempdir().unwrap();
        let user = t.path().join("skills");
        skill(
            &user,
            "good",
            "---\nname: good\ndescription: Does good things.\n---\n# Good\n",
        );
        skill(
            &user,
            "docs/pptx",
            "---\nname: pptx\ndescription: Slides.\n---\nbody",
        );
        skill(&user, "mismatch", "---\nname: other\ndescription: d\n---\n");
        skill(&user, "nodesc", "---\nname: nodesc\n---\n");
        skill(&user, "badyaml", "---\nname: [\n---\n");
        let outside = t.path().join("outside");
        skill(&outside, "evil", "---\nname: evil\ndescription: e\n---\n");
        std::os::unix::fs::symlink(outside.join("evil"), user.join("evil")).unwrap();
        let cat = discover(&Roots {
            user: user.clone(),
            packs: vec![("p1".into(), t.path().join("nope"))],
        });
        let ids: Vec<_> = cat.skills.iter().map(|s| s.skill_id.as_str()).collect();
        assert_eq!(ids, ["docs/pptx", "good", "mismatch"]);
        assert!(!cat.skills[2].doc.warnings.is_empty());
        let skipped: Vec<_> = cat.skipped.iter().map(|s| s.skill_id.as_str()).collect();
        assert!(
            skipped.contains(&"nodesc")
                && skipped.contains(&"badyaml")
                && skipped.contains(&"evil"),
            "{skipped:?}"
        );
        let roots = Roots {
            user,
            packs: vec![],
        };
        assert!(lookup(&roots, "good").is_ok());
        assert!(lookup(&roots, "docs/pptx").is_ok());
        for bad in ["../outside/evil", "/etc", "evil", "good/../good", "nodesc"] {
            assert!(lookup(&roots, bad).is_err(), "{bad}");
        }
    }
}
