//! Which function of a pack file a call runs: a block's `run` (contract §5.2), a component's
//! `setup` or a converter's `convert` (§9). All three go through the same queue, checks and
//! sandbox; only the file's place in the pack and the Python function differ.

use rumi_domain::run::{ErrorType, StepFailure};
use std::path::Path;

/// The entry point of a call (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Entry {
    /// `run(input_data, context=None)` of a block, resolved as §5.1.3 says.
    #[default]
    Block,
    /// `setup(context=None)` of `components/<component_id>/setup.py`.
    Setup { component_id: String },
    /// `convert(data, context=None)` of `converters/<from>_to_<to>.py`.
    Convert { from: String, to: String },
}

impl Entry {
    /// The block host's name for it (`entry` in the call frame).
    pub fn wire_name(&self) -> &'static str {
        match self {
            Entry::Block => "run",
            Entry::Setup { .. } => "setup",
            Entry::Convert { .. } => "convert",
        }
    }
}

/// Resolves a component's or converter's file: exactly `file` under the pack subdir (no search
/// path), with the checks of a block file (inside the pack after symlinks, a regular `.py`).
pub fn resolve_exact(pack_root: &Path, file: &str) -> Result<String, StepFailure> {
    let reject = |why: String| StepFailure::new(ErrorType::PathRejected, why);
    let rel = Path::new(file);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(reject(format!("Path outside pack boundary: {file}")));
    }
    let root = pack_root
        .canonicalize()
        .map_err(|_| reject("the pack directory is not readable".into()))?;
    let real = root
        .join(rel)
        .canonicalize()
        .map_err(|_| reject(format!("File not found: {file}")))?;
    let inside = real
        .strip_prefix(&root)
        .map_err(|_| reject(format!("Path outside pack boundary: {file}")))?;
    let meta =
        std::fs::metadata(&real).map_err(|_| reject(format!("File not readable: {file}")))?;
    if !meta.is_file() || real.extension().and_then(|e| e.to_str()) != Some("py") {
        return Err(reject(format!("Not a regular .py file: {file}")));
    }
    Ok(inside.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_resolution_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pack");
        std::fs::create_dir_all(root.join("converters")).unwrap();
        std::fs::write(root.join("converters/a_to_b.py"), "").unwrap();
        std::fs::write(d.path().join("out.py"), "").unwrap();
        std::os::unix::fs::symlink(d.path().join("out.py"), root.join("converters/x_to_y.py"))
            .unwrap();
        assert_eq!(
            resolve_exact(&root, "converters/a_to_b.py").unwrap(),
            "converters/a_to_b.py"
        );
        for bad in [
            "converters/x_to_y.py",
            "../out.py",
            "/etc/passwd",
            "converters/none.py",
        ] {
            let e = resolve_exact(&root, bad).unwrap_err();
            assert_eq!(e.error_type, ErrorType::PathRejected, "{bad}");
            assert!(!e.error.contains(d.path().to_str().unwrap()));
        }
    }
}
