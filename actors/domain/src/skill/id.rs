//! Skill ids and references (contract §1).
//!
//! A `skill_id` is the skill directory's path relative to its root (`brand-guidelines`,
//! `document-skills/pptx`). It is joined onto a root directory by the runtime, so the rules here
//! stop the path-traversal attack lexically: no `..`, no absolute path, no hidden component, no
//! separator other than `/`. (The runtime still resolves symlinks and checks the result.)

/// Longest skill id accepted.
pub const MAX_SKILL_ID_CHARS: usize = 200;
/// Deepest skill id accepted (components).
const MAX_SKILL_ID_COMPONENTS: usize = 8;

/// Checks a skill id: a relative path of `/`-separated components of `[A-Za-z0-9._-]`, none empty,
/// none starting with `.` (which also refuses `.` and `..`), at most 8 components and
/// [`MAX_SKILL_ID_CHARS`] characters.
pub fn check_skill_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("skill id is empty; give the skill's directory relative to its root, e.g. `brand-guidelines`".into());
    }
    if id.len() > MAX_SKILL_ID_CHARS {
        return Err(format!(
            "skill id is longer than {MAX_SKILL_ID_CHARS} characters"
        ));
    }
    if id.starts_with('/') || id.ends_with('/') {
        return Err("skill id must be a relative path without a leading or trailing '/'".into());
    }
    let components: Vec<&str> = id.split('/').collect();
    if components.len() > MAX_SKILL_ID_COMPONENTS {
        return Err(format!(
            "skill id has more than {MAX_SKILL_ID_COMPONENTS} components"
        ));
    }
    for c in components {
        if c.is_empty() {
            return Err("skill id has an empty component ('//')".into());
        }
        // A leading '.' refuses "." and ".." (escaping the root) and hidden directories.
        if c.starts_with('.') {
            return Err(
                "skill id components must not start with '.' (no '.', '..' or hidden directories)"
                    .into(),
            );
        }
        if !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(
                "skill id may hold only letters, digits, '.', '_', '-' and '/' between components"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Where a skill lives: the user's skills, or a pack's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkillRef<'a> {
    /// `user_data/skills/<skill_id>`.
    User { skill_id: &'a str },
    /// `<pack subdir>/skills/<skill_id>` of an approved pack, written `<pack_id>:<skill_id>`.
    Pack { pack_id: &'a str, skill_id: &'a str },
}

/// Parses `skill_id` or `<pack_id>:<skill_id>` (one ':' at most), checking both parts.
pub fn parse_skill_ref(s: &str) -> Result<SkillRef<'_>, String> {
    match s.split_once(':') {
        None => {
            check_skill_id(s)?;
            Ok(SkillRef::User { skill_id: s })
        }
        Some((pack_id, skill_id)) => {
            if skill_id.contains(':') {
                return Err(
                    "skill reference has more than one ':'; write `<pack_id>:<skill_id>`".into(),
                );
            }
            if !crate::pack::valid_pack_id(pack_id) {
                return Err("pack id before ':' is not valid (letters, digits, '_' or '-', starting with a letter or digit, at most 64)".into());
            }
            check_skill_id(skill_id)?;
            Ok(SkillRef::Pack { pack_id, skill_id })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_ids() {
        for id in [
            "brand-guidelines",
            "document-skills/pptx",
            "a.b_c-D9",
            "a/b/c/d/e/f/g/h",
        ] {
            assert_eq!(check_skill_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn every_refusal() {
        let long = "a".repeat(201);
        let cases = [
            ("", "empty"),
            (long.as_str(), "longer"),
            ("/abs", "relative"),
            ("a/", "trailing"),
            ("a/b/c/d/e/f/g/h/i", "components"),
            ("a//b", "empty component"),
            ("..", "'.'"),
            ("a/../b", "'.'"),
            ("./a", "'.'"),
            (".hidden", "'.'"),
            ("a\\b", "only letters"),
            ("a b", "only letters"),
            ("a\0b", "only letters"),
            ("~", "only letters"),
        ];
        for (id, want) in cases {
            let e = check_skill_id(id).expect_err(id);
            assert!(e.contains(want), "{id:?}: {e}");
        }
    }

    #[test]
    fn refs() {
        assert_eq!(
            parse_skill_ref("a/b"),
            Ok(SkillRef::User { skill_id: "a/b" })
        );
        assert_eq!(
            parse_skill_ref("my_pack:docs/pptx"),
            Ok(SkillRef::Pack {
                pack_id: "my_pack",
                skill_id: "docs/pptx"
            })
        );
        assert!(parse_skill_ref("a:b:c")
            .unwrap_err()
            .contains("more than one"));
        assert!(parse_skill_ref(":b").unwrap_err().contains("pack id"));
        assert!(parse_skill_ref("packs:b").unwrap_err().contains("pack id"));
        assert!(parse_skill_ref("../x:b").unwrap_err().contains("pack id"));
        assert!(parse_skill_ref("p:../b").is_err());
        assert!(parse_skill_ref("p:").is_err());
    }
}
