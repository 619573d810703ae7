//! The Python side of the pack interface, embedded in the binary: the block host that runs inside
//! a pack's worker or container, and the `rumi_syscall` / `rumi_capability` modules every block
//! can import. The sources live in `actors/python/` (with their own tests) and are written to
//! `user_data/runtime/python/` at start-up, read-only, so what runs is exactly what was built.

use std::io;
use std::path::{Path, PathBuf};

/// (file name, contents) of every embedded Python file.
pub const FILES: &[(&str, &str)] = &[
    (
        "rumi_blockhost.py",
        include_str!("../python/rumi_blockhost.py"),
    ),
    ("rumi_syscall.py", include_str!("../python/rumi_syscall.py")),
    (
        "rumi_capability.py",
        include_str!("../python/rumi_capability.py"),
    ),
    ("rumi_wire.py", include_str!("../python/rumi_wire.py")),
    (
        "rumi_wheel_install.py",
        include_str!("../python/rumi_wheel_install.py"),
    ),
    (
        "rumi_npm_install.py",
        include_str!("../python/rumi_npm_install.py"),
    ),
    (
        "rumi_handlerhost.py",
        include_str!("../python/rumi_handlerhost.py"),
    ),
];

/// Writes the embedded files into `dir` (replacing stale copies) and returns the host script.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    crate::fsutil::ensure_dir(dir, 0o755)?;
    for (name, text) in FILES {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            crate::fsutil::write_atomic(&path, text.as_bytes(), 0o444)?;
        }
    }
    Ok(dir.join("rumi_blockhost.py"))
}
