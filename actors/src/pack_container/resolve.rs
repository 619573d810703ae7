//! Where a step's `file` lives in its pack: the one resolution of block paths (contract §5.1.3),
//! shared by both sandboxes.

use rumi_domain::run::{ErrorType, StepFailure};
use std::path::{Component, Path};

/// Resolves a block file inside the pack (contract §5.1.3): tries `blocks/<file>`,
/// `backend/blocks/<file>`, `<file>` (a `file` already starting with `blocks/` is not prefixed
/// again); after resolving symlinks the path must lie inside the pack root and be a regular `.py`
/// file. Stops: `../` traversal, absolute paths, and symlinks that point out of the pack
/// (`blocks/x.py -> /etc/...`). Messages name only pack-relative paths, starting with the file as
/// the flow wrote it.
pub fn resolve_block(pack_root: &Path, file: &str) -> Result<String, StepFailure> {
    let reject = |why: String| StepFailure::new(ErrorType::PathRejected, why);
    let rel = Path::new(file);
    if rel.is_absolute()
        || rel.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        })
    {
        return Err(reject(format!("Path outside pack boundary: {file}")));
    }
    let root = pack_root
        .canonicalize()
        .map_err(|_| reject("the pack directory is not readable".into()))?;
    // `blocks/x.py` means the pack's blocks/x.py: never looked up (or reported) as
    // blocks/blocks/x.py, a path the author did not write.
    let candidates = if file.starts_with("blocks/") {
        vec![file.to_string(), format!("backend/{file}")]
    } else {
        vec![
            format!("blocks/{file}"),
            format!("backend/blocks/{file}"),
            file.to_string(),
        ]
    };
    for candidate in &candidates {
        let path = root.join(candidate);
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        let Ok(inside) = real.strip_prefix(&root) else {
            return Err(reject(format!("Path outside pack boundary: {file}")));
        };
        let meta =
            std::fs::metadata(&real).map_err(|_| reject(format!("File not readable: {file}")))?;
        if !meta.is_file() {
            return Err(reject(format!("Not a regular file: {file}")));
        }
        if real.extension().and_then(|e| e.to_str()) != Some("py") {
            return Err(reject(format!("Not a .py file: {file}")));
        }
        return Ok(inside.to_string_lossy().into_owned());
    }
    Err(reject(format!(
        "File not found: {file} (looked for {} in the pack); check the step's `file`",
        candidates.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Hardening defect 14: `file: blocks/x.py` that does not exist was reported as
    /// `blocks/blocks/x.py`, a path the author never wrote.
    #[test]
    fn a_missing_file_is_named_as_written() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("blocks")).unwrap();
        let e = resolve_block(d.path(), "blocks/x.py").unwrap_err();
        assert!(!e.error.contains("blocks/blocks"), "{}", e.error);
        assert!(
            e.error.starts_with("File not found: blocks/x.py"),
            "{}",
            e.error
        );
        fs::create_dir_all(d.path().join("backend/blocks")).unwrap();
        fs::write(d.path().join("backend/blocks/x.py"), "").unwrap();
        assert_eq!(
            resolve_block(d.path(), "blocks/x.py").unwrap(),
            "backend/blocks/x.py"
        );
    }

    #[test]
    fn resolution_and_boundaries() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pack");
        fs::create_dir_all(root.join("blocks/sub")).unwrap();
        fs::write(root.join("blocks/hello.py"), "").unwrap();
        fs::write(root.join("blocks/sub/x.py"), "").unwrap();
        fs::write(root.join("blocks/data.txt"), "").unwrap();
        fs::write(d.path().join("outside.py"), "").unwrap();
        std::os::unix::fs::symlink(d.path().join("outside.py"), root.join("blocks/escape.py"))
            .unwrap();
        std::os::unix::fs::symlink("hello.py", root.join("blocks/alias.py")).unwrap();

        assert_eq!(resolve_block(&root, "hello.py").unwrap(), "blocks/hello.py");
        assert_eq!(
            resolve_block(&root, "blocks/hello.py").unwrap(),
            "blocks/hello.py"
        );
        assert_eq!(resolve_block(&root, "sub/x.py").unwrap(), "blocks/sub/x.py");
        assert_eq!(resolve_block(&root, "alias.py").unwrap(), "blocks/hello.py");
        for (bad, want) in [
            ("../outside.py", "outside pack boundary"),
            ("/etc/passwd", "outside pack boundary"),
            ("blocks/../../outside.py", "outside pack boundary"),
            ("escape.py", "outside pack boundary"),
            ("data.txt", "Not a .py file"),
            ("sub", "Not a regular file"),
            ("nope.py", "File not found: nope.py"),
            ("blocks/nope.py", "File not found: blocks/nope.py"),
        ] {
            let e = resolve_block(&root, bad).unwrap_err();
            assert_eq!(e.error_type, ErrorType::PathRejected);
            assert!(e.error.contains(want), "{bad}: {}", e.error);
            assert!(
                !e.error.contains(d.path().to_str().unwrap()),
                "no host path in {}",
                e.error
            );
        }
    }
}
