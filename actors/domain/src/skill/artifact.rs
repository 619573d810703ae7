//! Artifact names (contract §7, §15): `act.<path under build/, '/' → '.', extension dropped>@vN`.
//! Every rewrite of a file gets the next version, so a diff between versions is always possible.

/// `"notes/outline.md"` → `"act.notes.outline"`: '/' becomes '.', the last extension is dropped.
pub fn artifact_name(rel_under_build: &str) -> String {
    let (dir, file) = match rel_under_build.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, rel_under_build),
    };
    // A dotfile (`.env`) has no extension to drop.
    let stem = match file.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => file,
    };
    match dir {
        Some(d) => format!("act.{}.{stem}", d.replace('/', ".")),
        None => format!("act.{stem}"),
    }
}

/// `("act.notes.outline", 2)` → `"act.notes.outline@2"`.
///
/// Note: §7 writes versions as `act.note.outline@2` while §15 says `@vN`; the brief fixed `@N`
/// and [`parse_versioned`] accepts both spellings.
pub fn versioned(name: &str, version: u32) -> String {
    format!("{name}@{version}")
}

/// `"act.x@3"` (or `"act.x@v3"`) → `("act.x", 3)`. `None` when it is not an `act.` name with a
/// version ≥ 1.
pub fn parse_versioned(s: &str) -> Option<(String, u32)> {
    let (name, v) = s.rsplit_once('@')?;
    let v = v.strip_prefix('v').unwrap_or(v);
    if !name.starts_with("act.")
        || name.len() <= 4
        || v.is_empty()
        || !v.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let version: u32 = v.parse().ok()?;
    (version >= 1).then(|| (name.to_string(), version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(artifact_name("notes/outline.md"), "act.notes.outline");
        assert_eq!(artifact_name("report.json"), "act.report");
        assert_eq!(artifact_name("a/b/c.tar.gz"), "act.a.b.c.tar");
        assert_eq!(artifact_name("noext"), "act.noext");
        assert_eq!(artifact_name("d.x/.env"), "act.d.x..env");
    }

    #[test]
    fn versions_round_trip() {
        assert_eq!(versioned("act.notes.outline", 2), "act.notes.outline@2");
        assert_eq!(parse_versioned("act.x@3"), Some(("act.x".into(), 3)));
        assert_eq!(parse_versioned("act.x@v3"), Some(("act.x".into(), 3)));
        assert_eq!(
            parse_versioned(&versioned("act.a.b", 17)),
            Some(("act.a.b".into(), 17))
        );
        for bad in [
            "act.x",
            "act.x@",
            "act.x@0",
            "act.x@-1",
            "x@1",
            "act.@1",
            "act.x@1a",
            "act.x@99999999999",
            "build/x.md",
        ] {
            assert_eq!(parse_versioned(bad), None, "{bad}");
        }
    }
}
