//! Lexical rules for every path a skill tool takes (contract §5, §8, §15).
//!
//! The model chooses these paths, and the model reads text written by whoever wrote the skill
//! and its inputs, so every path is hostile. The rules here stop path traversal before any file
//! is touched: no absolute path, no `..` component anywhere (not even one that would cancel out,
//! like `build/../x`, so no normalisation trick can land outside), no `~`, no backslash (a second
//! separator on some tools), no NUL or control characters (truncation and log forging), and
//! length caps. The runtime adds what only the file system can tell: symlinks, checked after
//! resolving.

/// Which directory a tool path lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The skill directory (read-only).
    Skill,
    /// The run's `build/` (the only place writes go).
    Build,
}

/// A checked path: an area and a normalised relative path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPath {
    pub area: Area,
    /// Normalised, `/`-joined, no `.` or empty components; `""` is the area's root.
    pub rel: String,
}

impl ToolPath {
    /// The path as the model writes it: `build/x` for the build area, `x` for the skill.
    pub fn display(&self) -> String {
        match (self.area, self.rel.is_empty()) {
            (Area::Build, true) => "build".into(),
            (Area::Build, false) => format!("build/{}", self.rel),
            (Area::Skill, true) => ".".into(),
            (Area::Skill, false) => self.rel.clone(),
        }
    }
}

/// Why a path was refused (the message names the rule; it never echoes a host path).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathRejected(pub String);

/// Longest tool path (bytes).
const MAX_PATH_BYTES: usize = 1024;
/// Deepest tool path (components).
const MAX_PATH_COMPONENTS: usize = 32;
/// The directory name writes go to.
const BUILD: &str = "build";

/// A read or list path: `build/x` or `build` is in the build area, anything else in the skill.
/// Refused: empty, absolute, any `..` component, NUL or control characters, a backslash, a `~`
/// component start, more than 1024 bytes or 32 components.
pub fn read_path(p: &str) -> Result<ToolPath, PathRejected> {
    let parts = components(p)?;
    match parts.split_first() {
        Some((first, rest)) if *first == BUILD => Ok(ToolPath {
            area: Area::Build,
            rel: rest.join("/"),
        }),
        _ => Ok(ToolPath {
            area: Area::Skill,
            rel: parts.join("/"),
        }),
    }
}

/// A write path, relative to `build/` (a leading `build/` is tolerated and stripped). The same
/// refusals as [`read_path`], and also: nothing left after stripping, or a trailing `/` (a write
/// names a file).
pub fn build_path(p: &str) -> Result<String, PathRejected> {
    if p.ends_with('/') {
        return Err(PathRejected(format!(
            "`{}` ends with '/'; a write path names a file under build/",
            shown(p)
        )));
    }
    let parts = components(p)?;
    let rest: &[&str] = match parts.split_first() {
        Some((first, rest)) if *first == BUILD => rest,
        _ => &parts,
    };
    if rest.is_empty() {
        return Err(PathRejected(
            "write path names no file; give a path relative to build/, e.g. `notes/outline.md`"
                .into(),
        ));
    }
    Ok(rest.join("/"))
}

/// An argv item as the script sees it (working directory = the skill root, `build/` inside it).
/// Refused when it is a path that leaves the skill root: absolute, `~`-prefixed, or climbing out
/// with `..` after normalising, also as the value of a `--flag=` / `-f=` prefix. Plain words pass.
pub fn check_argv_item(item: &str) -> Result<(), PathRejected> {
    if item.contains('\0') {
        return Err(PathRejected("argument contains a NUL byte".into()));
    }
    // `--out=/etc/x` or `out=../x`: the value after the first '=' is what a script opens, so it
    // is checked as well as (for non-flags) the whole item.
    if let Some((_, value)) = item.split_once('=') {
        check_argv_value(item, value)?;
    }
    if let Some(long) = item.strip_prefix("--") {
        // `--out/../x`: a long option's name ends where a path character starts.
        let name_end = long
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(long.len());
        let value = &long[name_end..];
        if value.starts_with(['/', '.', '~']) {
            check_argv_value(item, value)?;
        }
        return Ok(());
    }
    if let Some(flag) = item.strip_prefix('-') {
        // `-o/etc/x`, `-o../x`, `-I~/x`, `-obuild/out.md`: a short option is one character,
        // and what follows it is its value.
        let value = flag.get(1..).unwrap_or("");
        if value.contains('/') || value.starts_with(['.', '~']) {
            check_argv_value(item, value)?;
        }
        return Ok(());
    }
    check_argv_value(item, item)
}

fn check_argv_value(item: &str, value: &str) -> Result<(), PathRejected> {
    if value.starts_with('/') {
        return Err(PathRejected(format!(
            "argument `{}` is an absolute path; use a path inside the skill or build/",
            shown(item)
        )));
    }
    if value.starts_with('~') {
        return Err(PathRejected(format!(
            "argument `{}` points into a home directory; use a path inside the skill or build/",
            shown(item)
        )));
    }
    // Never `..`, even one that stays inside: in a permissive run's view `build` is a link to
    // the workspace's build/, so `build/..` is the workspace itself.
    if value.split('/').any(|c| c == "..") {
        return Err(PathRejected(format!(
            "argument `{}` contains `..`; name paths inside the skill or build/ directly",
            shown(item)
        )));
    }
    Ok(())
}

/// Splits and checks a tool path; drops empty and `.` components.
fn components(p: &str) -> Result<Vec<&str>, PathRejected> {
    if p.is_empty() {
        return Err(PathRejected("path is empty".into()));
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(PathRejected(format!(
            "path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    if p.chars().any(char::is_control) {
        return Err(PathRejected(
            "path contains a NUL or control character".into(),
        ));
    }
    if p.contains('\\') {
        return Err(PathRejected(format!(
            "`{}` contains a backslash; separate components with '/'",
            shown(p)
        )));
    }
    if p.starts_with('/') {
        return Err(PathRejected(format!(
            "`{}` is absolute; give a path relative to the skill (or build/)",
            shown(p)
        )));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(PathRejected(format!(
                    "`{}` contains '..'; paths stay inside the skill and build/",
                    shown(p)
                )))
            }
            c if c.starts_with('~') => {
                return Err(PathRejected(format!(
                    "`{}` starts a component with '~'; paths stay inside the skill and build/",
                    shown(p)
                )))
            }
            c => parts.push(c),
        }
    }
    if parts.len() > MAX_PATH_COMPONENTS {
        return Err(PathRejected(format!(
            "path has more than {MAX_PATH_COMPONENTS} components"
        )));
    }
    Ok(parts)
}

/// Messages quote at most 120 characters of a path.
fn shown(p: &str) -> String {
    if p.chars().count() <= 120 {
        p.to_string()
    } else {
        let cut: String = p.chars().take(120).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(area: Area, rel: &str) -> ToolPath {
        ToolPath {
            area,
            rel: rel.into(),
        }
    }

    #[test]
    fn read_paths_pick_their_area() {
        assert_eq!(read_path("SKILL.md"), Ok(tp(Area::Skill, "SKILL.md")));
        assert_eq!(
            read_path("./references//a.md"),
            Ok(tp(Area::Skill, "references/a.md"))
        );
        assert_eq!(read_path("build/x/y.md"), Ok(tp(Area::Build, "x/y.md")));
        assert_eq!(read_path("build"), Ok(tp(Area::Build, "")));
        assert_eq!(read_path("build/"), Ok(tp(Area::Build, "")));
        assert_eq!(read_path("."), Ok(tp(Area::Skill, "")));
        assert_eq!(read_path("builds/x"), Ok(tp(Area::Skill, "builds/x")));
        assert_eq!(read_path("build/x").unwrap().display(), "build/x");
    }

    #[test]
    fn read_path_refusals() {
        let long = "a/".repeat(600);
        let deep = "a/".repeat(33);
        let cases = [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("build/../x", "'..'"),
            ("a/..", "'..'"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("a\\b", "backslash"),
            ("..\\x", "backslash"),
            (long.as_str(), "longer"),
            (deep.as_str(), "components"),
            ("~", "'~'"),
            ("~/x", "'~'"),
            ("a/~root", "'~'"),
        ];
        for (p, want) in cases {
            let e = read_path(p).expect_err(p);
            assert!(e.0.contains(want), "{p:?}: {e}");
        }
    }

    #[test]
    fn build_paths() {
        assert_eq!(
            build_path("notes/outline.md").as_deref(),
            Ok("notes/outline.md")
        );
        assert_eq!(
            build_path("build/notes/outline.md").as_deref(),
            Ok("notes/outline.md")
        );
        assert_eq!(build_path("./a.md").as_deref(), Ok("a.md"));
        for (p, want) in [
            ("build", "names no file"),
            ("build/", "ends with '/'"),
            ("dir/", "ends with '/'"),
            ("", "empty"),
            ("/tmp/x", "absolute"),
            ("../x", "'..'"),
            ("build/../../x", "'..'"),
            ("a\\b", "backslash"),
        ] {
            let e = build_path(p).expect_err(p);
            assert!(e.0.contains(want), "{p:?}: {e}");
        }
    }

    #[test]
    fn argv_items() {
        for ok in [
            "--verbose",
            "hello world",
            "build/out.json",
            "--out=build/x.pptx",
            "-obuild/out.md",
            "-Ireferences/inc",
            "-n",
            "3",
            "s/a/b/",
            "",
        ] {
            assert_eq!(check_argv_item(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../b",
            "build/../versions/act.x@1",
            "build/../../x",
            "--out=/etc/x",
            "--out=../../x",
            "-o=../x",
            "~/x",
            "--cfg=~/.ssh/id",
            "a/../../b",
            "x\0y",
        ] {
            assert!(check_argv_item(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn accepted_read_paths_stay_inside(p in "[a-z./~\\\\]{0,40}") {
            if let Ok(t) = read_path(&p) {
                prop_assert!(!t.rel.starts_with('/'));
                prop_assert!(!t.rel.split('/').any(|c| c == ".." || c == "."));
                prop_assert!(!t.rel.contains("//"));
            }
        }

        #[test]
        fn build_paths_never_escape(p in "(build/)?[a-z./]{0,40}") {
            if let Ok(rel) = build_path(&p) {
                prop_assert!(!rel.is_empty());
                prop_assert!(!rel.starts_with('/'));
                prop_assert!(!rel.split('/').any(|c| c == ".." || c == "." || c.is_empty()));
            }
        }

        #[test]
        fn accepted_argv_items_do_not_climb_out(item in "(--o=|o=)?[a./]{0,20}") {
            if check_argv_item(&item).is_ok() {
                let value = item.split_once('=').map_or(item.as_str(), |(_, v)| v);
                prop_assert!(!value.starts_with('/'));
                let mut depth = 0i64;
                for c in value.split('/') {
                    match c { "" | "." => {}, ".." => depth -= 1, _ => depth += 1 }
                    prop_assert!(depth >= 0);
                }
            }
        }
    }

    #[test]
    fn an_option_with_its_path_attached_is_checked() {
        for bad in ["-o/etc/x", "-o../x", "-I~/x", "--out/../../x"] {
            assert!(check_argv_item(bad).is_err(), "{bad}");
        }
        for ok in [
            "-v",
            "-ofile.txt",
            "-o./build/x",
            "--mode=fast",
            "-n3",
            "--",
            "-",
        ] {
            assert!(check_argv_item(ok).is_ok(), "{ok}");
        }
    }
}
