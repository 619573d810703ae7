//! The SkillRuntime's caches on disk (contract §10): `user_data/skill_cache/<skill>/`, one
//! directory per skill (named by a digest of its id; `skill.json` says which), holding
//! * `skill.json` — the skill's id, its last tree hash and each file's content digest (the read
//!   cache's digests, persisted so a later run can tell what it already knows);
//! * `memo/<key>.json` — AttemptMemo records: `(action, inputs hash, skill tree hash)` → the
//!   result, failures too, with the files a script wrote kept by digest;
//! * `memory/<run key>.json` — the skill memory of the last validated run of one run key
//!   (what it read, did and produced);
//! * `blobs/<sha256>` — file contents, by digest, shared by records and memories.
//!
//! Every file lands by an atomic rename; a record is written after its blobs, and a lookup
//! checks each blob's digest before anything is restored, so a kill at any point, a deleted
//! blob or a corrupted file gives a miss, never a wrong file. Caps: records per skill, memories
//! per skill, bytes per record, bytes of blobs per skill (past it, blobs no record names go, then
//! the oldest records). One lock orders stores and collections within the kernel (two kernels
//! never share a home, see `home_lock.rs`).

use parking_lot::Mutex;
use rumi_domain::skill::memo::{
    is_sha256_hex, memo_name, KeptFile, MemoRecord, SkillMemory, TreeEntry, TreeWhat,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most memo records kept per skill (the oldest go first).
pub const MAX_RECORDS: usize = 512;
/// Most skill memories kept per skill (one per run key).
pub const MAX_MEMORIES: usize = 32;
/// Most bytes of files one record or memory keeps (a bigger one is not kept).
pub const MAX_KEPT_BYTES: u64 = 16 * 1024 * 1024;
/// Most bytes of blobs per skill.
pub const MAX_BLOB_BYTES: u64 = 256 * 1024 * 1024;
/// Largest record or memory file read back.
const MAX_RECORD_FILE: u64 = 4 * 1024 * 1024;

/// The caches of every skill.
pub struct SkillCache {
    root: PathBuf,
    lock: Mutex<()>,
}

/// A memo hit: the record and the contents of its files (checked against their digests).
pub struct Hit {
    pub record: MemoRecord,
    pub files: Vec<(String, Vec<u8>)>,
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a regular file of the cache, at most `cap` bytes: never through a link, never blocking
/// on something planted in its place (a FIFO, a device).
fn read_capped(path: &Path, cap: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= cap).then_some(buf)
}

impl SkillCache {
    pub fn new(root: PathBuf) -> SkillCache {
        SkillCache {
            root,
            lock: Mutex::new(()),
        }
    }

    /// The skill's directory.
    pub fn dir(&self, skill_id: &str) -> PathBuf {
        self.root
            .join(hex::encode(&Sha256::digest(skill_id.as_bytes())[..16]))
    }

    fn blob_path(&self, skill_id: &str, sha: &str) -> PathBuf {
        self.dir(skill_id).join("blobs").join(sha)
    }

    /// The bytes of a blob, when present and still what its name says.
    pub fn blob(&self, skill_id: &str, sha: &str) -> Option<Vec<u8>> {
        if !is_sha256_hex(sha) {
            return None;
        }
        let bytes = read_capped(
            &self.blob_path(skill_id, sha),
            crate::skills::MAX_ARTIFACT_BYTES as u64,
        )?;
        (sha_hex(&bytes) == sha).then_some(bytes)
    }

    fn has_blob(&self, skill_id: &str, f: &KeptFile) -> bool {
        std::fs::metadata(self.blob_path(skill_id, &f.sha256))
            .map(|m| m.is_file() && m.len() == f.bytes)
            .unwrap_or(false)
    }

    /// The record of `(action, inputs, tree)` with its files, or None (absent, damaged, or a
    /// blob missing).
    pub fn lookup(&self, skill_id: &str, action: &str, inputs: &str, tree: &str) -> Option<Hit> {
        let path = self
            .dir(skill_id)
            .join("memo")
            .join(format!("{}.json", memo_name(action, inputs, tree)));
        let bytes = read_capped(&path, MAX_RECORD_FILE)?;
        let record: MemoRecord = serde_json::from_slice(&bytes).ok()?;
        if !record.answers(action, inputs, tree) {
            return None;
        }
        let mut files = Vec::with_capacity(record.files.len());
        for f in &record.files {
            let rel = f.build_rel()?;
            files.push((rel, self.blob(skill_id, &f.sha256)?));
        }
        Some(Hit { record, files })
    }

    /// Keeps `contents` as blobs and returns their [`KeptFile`]s; None past [`MAX_KEPT_BYTES`]
    /// or when a write fails.
    fn keep(&self, skill_id: &str, contents: &[(String, Vec<u8>)]) -> Option<Vec<KeptFile>> {
        let total: u64 = contents.iter().map(|(_, b)| b.len() as u64).sum();
        if total > MAX_KEPT_BYTES || contents.len() > rumi_domain::skill::memo::MAX_MEMORY_FILES {
            return None;
        }
        let blobs = self.dir(skill_id).join("blobs");
        crate::fsutil::ensure_dir(&blobs, 0o700).ok()?;
        let mut kept = Vec::with_capacity(contents.len());
        for (rel, bytes) in contents {
            let sha = sha_hex(bytes);
            let path = blobs.join(&sha);
            if !path.is_file() {
                crate::fsutil::write_atomic(&path, bytes, 0o600).ok()?;
            }
            kept.push(KeptFile {
                path: format!("build/{rel}"),
                sha256: sha,
                bytes: bytes.len() as u64,
            });
        }
        Some(kept)
    }

    fn write_json(path: &Path, v: &impl serde::Serialize) -> bool {
        let Ok(bytes) = serde_json::to_vec(v) else {
            return false;
        };
        if bytes.len() as u64 > MAX_RECORD_FILE {
            return false;
        }
        if let Some(parent) = path.parent() {
            if crate::fsutil::ensure_dir(parent, 0o700).is_err() {
                return false;
            }
        }
        crate::fsutil::write_atomic(path, &bytes, 0o600).is_ok()
    }

    fn note_skill(&self, skill_id: &str) {
        let path = self.dir(skill_id).join("skill.json");
        if !path.is_file() {
            Self::write_json(&path, &serde_json::json!({"skill_id": skill_id}));
        }
    }

    /// Stores a record (its files' contents given in the record's order as `(rel, bytes)`).
    pub fn store(&self, skill_id: &str, mut record: MemoRecord, contents: &[(String, Vec<u8>)]) {
        let _g = self.lock.lock();
        self.note_skill(skill_id);
        let Some(kept) = self.keep(skill_id, contents) else {
            return;
        };
        record.files = kept;
        let name = memo_name(&record.action, &record.inputs, &record.tree);
        let path = self.dir(skill_id).join("memo").join(format!("{name}.json"));
        if Self::write_json(&path, &record) {
            self.collect(skill_id);
        }
    }

    /// The memory of `run_key` for `tree`, when well-formed and every artifact's blob is there.
    pub fn memory(&self, skill_id: &str, run_key: &str, tree: &str) -> Option<SkillMemory> {
        if !run_key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self
            .dir(skill_id)
            .join("memory")
            .join(format!("{run_key}.json"));
        let bytes = read_capped(&path, MAX_RECORD_FILE)?;
        let m: SkillMemory = serde_json::from_slice(&bytes).ok()?;
        (m.answers(run_key, tree) && m.artifacts.iter().all(|f| self.has_blob(skill_id, f)))
            .then_some(m)
    }

    /// Saves the memory of a validated run: `artifacts` are `(rel under build/, bytes)`.
    pub fn save_memory(&self, skill_id: &str, mut m: SkillMemory, artifacts: &[(String, Vec<u8>)]) {
        if !m.run_key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return;
        }
        let _g = self.lock.lock();
        self.note_skill(skill_id);
        let Some(kept) = self.keep(skill_id, artifacts) else {
            return;
        };
        m.artifacts = kept;
        let path = self
            .dir(skill_id)
            .join("memory")
            .join(format!("{}.json", m.run_key));
        if Self::write_json(&path, &m) {
            self.collect(skill_id);
        }
    }

    /// Persists the skill's file digests (the read cache's, §10) with its tree hash.
    pub fn save_digests(&self, skill_id: &str, tree: &str, entries: &[TreeEntry]) {
        let path = self.dir(skill_id).join("skill.json");
        let known = read_capped(&path, MAX_RECORD_FILE)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.get("tree").and_then(|t| t.as_str()) == Some(tree));
        if known {
            return;
        }
        let files: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .take(rumi_domain::skill::memo::MAX_MEMORY_READS * 64)
            .map(|e| {
                let v = match &e.what {
                    TreeWhat::File(d, mode) => format!("{}:{mode:o}", hex::encode(d)),
                    TreeWhat::Link(t) => format!("link:{t}"),
                    TreeWhat::Dir => "dir".to_string(),
                };
                (e.path.clone(), serde_json::Value::String(v))
            })
            .collect();
        let _g = self.lock.lock();
        Self::write_json(
            &path,
            &serde_json::json!({"skill_id": skill_id, "tree": tree, "files": files}),
        );
    }

    /// Keeps the caps: the oldest records and memories past their counts go; then, while the
    /// blobs pass their byte cap, blobs no record or memory names go, then the oldest records
    /// and memories (memories too: their outputs count) with the blobs only they named. Called
    /// under the lock.
    fn collect(&self, skill_id: &str) {
        let dir = self.dir(skill_id);
        let listed = |sub: &str| -> Vec<(std::time::SystemTime, PathBuf)> {
            let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
                return Vec::new();
            };
            let mut v: Vec<_> = rd
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            v.sort();
            v
        };
        for (sub, cap) in [("memo", MAX_RECORDS), ("memory", MAX_MEMORIES)] {
            let list = listed(sub);
            if list.len() > cap {
                for (_, p) in &list[..list.len() - cap] {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let Ok(rd) = std::fs::read_dir(dir.join("blobs")) else {
            return;
        };
        let blobs: HashMap<String, u64> = rd
            .flatten()
            .filter_map(|e| {
                Some((
                    e.file_name().to_str()?.to_string(),
                    e.metadata().ok()?.len(),
                ))
            })
            .collect();
        let mut total: u64 = blobs.values().sum();
        if total <= MAX_BLOB_BYTES {
            return;
        }
        // Every record and memory, oldest first, with the blobs it names.
        let mut owners: Vec<(std::time::SystemTime, PathBuf, Vec<String>)> = Vec::new();
        for sub in ["memo", "memory"] {
            for (t, p) in listed(sub) {
                let named = read_capped(&p, MAX_RECORD_FILE)
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .map(|v| {
                        ["files", "artifacts"]
                            .iter()
                            .flat_map(|k| v.get(*k).and_then(|f| f.as_array()).cloned())
                            .flatten()
                            .filter_map(|f| f.get("sha256")?.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                owners.push((t, p, named));
            }
        }
        owners.sort_by_key(|o| o.0);
        let mut refs: HashMap<String, usize> = HashMap::new();
        for (_, _, named) in &owners {
            for n in named {
                *refs.entry(n.clone()).or_default() += 1;
            }
        }
        let blob_dir = dir.join("blobs");
        let drop_blob = |name: &str, total: &mut u64| {
            if let Some(len) = blobs.get(name) {
                if std::fs::remove_file(blob_dir.join(name)).is_ok() {
                    *total = total.saturating_sub(*len);
                }
            }
        };
        for name in blobs.keys() {
            if !refs.contains_key(name) {
                drop_blob(name, &mut total);
            }
        }
        for (_, path, named) in owners {
            if total <= MAX_BLOB_BYTES {
                break;
            }
            let _ = std::fs::remove_file(&path);
            for n in named {
                if let Some(c) = refs.get_mut(&n) {
                    *c -= 1;
                    if *c == 0 {
                        drop_blob(&n, &mut total);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(inputs: &str) -> MemoRecord {
        MemoRecord {
            action: "run_script".into(),
            inputs: inputs.into(),
            tree: "t".into(),
            result: json!({"ok": true, "exit_code": 0}),
            files: Vec::new(),
            removed: Vec::new(),
        }
    }

    #[test]
    fn a_stored_record_comes_back_with_its_files_and_a_damaged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let c = SkillCache::new(dir.path().to_path_buf());
        c.store("s", record("i"), &[("out/a.txt".into(), b"hello".to_vec())]);
        let hit = c.lookup("s", "run_script", "i", "t").expect("a hit");
        assert_eq!(
            hit.files,
            vec![("out/a.txt".to_string(), b"hello".to_vec())]
        );
        assert!(
            c.lookup("s", "run_script", "i", "u").is_none(),
            "another tree"
        );
        assert!(
            c.lookup("other", "run_script", "i", "t").is_none(),
            "another skill"
        );
        // A blob changed on disk: a miss, never a wrong file.
        let sha = &hit.record.files[0].sha256;
        std::fs::write(c.blob_path("s", sha), b"HELLO").unwrap();
        assert!(c.lookup("s", "run_script", "i", "t").is_none());
        // A record cut short (a kill mid-write cannot do it — the rename is atomic — but a
        // disk can): a miss.
        c.store("s", record("j"), &[]);
        let name = memo_name("run_script", "j", "t");
        let p = c.dir("s").join("memo").join(format!("{name}.json"));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(c.lookup("s", "run_script", "j", "t").is_none());
    }

    #[test]
    fn records_past_the_cap_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = SkillCache::new(dir.path().to_path_buf());
        for i in 0..(MAX_RECORDS + 5) {
            c.store("s", record(&format!("i{i}")), &[]);
        }
        let n = std::fs::read_dir(c.dir("s").join("memo")).unwrap().count();
        assert_eq!(n, MAX_RECORDS);
        assert!(c
            .lookup("s", "run_script", &format!("i{}", MAX_RECORDS + 4), "t")
            .is_some());
    }

    /// Outside review, finding 7: `collect` never removes a blob a skill memory names, and a
    /// memory is evicted only by count (32 per skill), each keeping up to 16 MiB. Validated runs
    /// with different goals or inputs therefore hold up to 512 MiB of blobs per skill — twice
    /// the "bytes of blobs per skill" cap — and once memories alone pass the cap, every new
    /// record's collection finds nothing unnamed to remove and halves the memo records instead:
    /// the AttemptMemo of that skill is wiped store after store.
    #[test]
    fn the_blob_cap_holds_and_the_memo_survives_when_memories_are_large() {
        let dir = tempfile::tempdir().unwrap();
        let c = SkillCache::new(dir.path().to_path_buf());
        let each = (MAX_KEPT_BYTES - 4096) as usize;
        let n = (MAX_BLOB_BYTES / each as u64) as usize + 3;
        assert!(n <= MAX_MEMORIES);
        for i in 0..n {
            let m = SkillMemory {
                run_key: format!("{i:032x}"),
                tree: "t".into(),
                run_id: format!("r{i}"),
                artifacts: Vec::new(),
                reads: Vec::new(),
                steps: Vec::new(),
            };
            c.save_memory("s", m, &[("out.bin".into(), vec![i as u8; each])]);
        }
        for j in 0..4 {
            c.store("s", record(&format!("after{j}")), &[]);
        }
        let blob_bytes: u64 = std::fs::read_dir(c.dir("s").join("blobs"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let records_left = (0..4)
            .filter(|j| {
                c.lookup("s", "run_script", &format!("after{j}"), "t")
                    .is_some()
            })
            .count();
        eprintln!(
            "blobs: {} MiB (cap {} MiB); records of 4 left: {records_left}",
            blob_bytes >> 20,
            MAX_BLOB_BYTES >> 20
        );
        assert!(
            blob_bytes <= MAX_BLOB_BYTES,
            "{} MiB of blobs for one skill, the cap is {} MiB",
            blob_bytes >> 20,
            MAX_BLOB_BYTES >> 20
        );
        assert_eq!(
            records_left, 4,
            "small records were removed to make room that memories took"
        );
    }

    /// Seeded stress: writers store records sharing blobs while readers look them up; every hit
    /// carries exactly the bytes its record names.
    #[test]
    fn concurrent_stores_and_lookups_never_give_a_wrong_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = std::sync::Arc::new(SkillCache::new(dir.path().to_path_buf()));
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let c = std::sync::Arc::clone(&c);
            threads.push(std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for _ in 0..200 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let k = seed % 16;
                    let content = format!("content {k}").into_bytes();
                    if seed % 3 == 0 {
                        c.store("s", record(&format!("k{k}")), &[("f.txt".into(), content)]);
                    } else if let Some(hit) = c.lookup("s", "run_script", &format!("k{k}"), "t") {
                        assert_eq!(hit.files[0].1, content);
                    }
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}
