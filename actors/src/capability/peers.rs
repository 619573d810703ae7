//! Who is on the other end of a pack's capability socket (`SO_PEERCRED`, contract §16 "Capability
//! calls").
//!
//! The attack: pack A's code connecting to pack B's socket path to act as B. In strict mode the
//! path exists only inside B's container (its socket directory is B's mount), and the peer must be
//! the container's user. In permissive mode every pack runs as the kernel's user, so the path alone
//! proves nothing: the peer's process must be one of B's workers or a descendant of one (workers
//! are child subreapers, so even a double-forked, `setsid` descendant stays under its worker).

use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use tokio::net::unix::UCred;

/// How far up the parent chain a peer is followed before it is refused.
const MAX_ANCESTRY: usize = 64;

/// The live worker processes of each pack (permissive mode).
#[derive(Debug, Default)]
pub struct PackProcesses {
    workers: RwLock<HashMap<String, HashSet<i32>>>,
}

impl PackProcesses {
    /// A worker of `pack_id` started as `pid`.
    pub fn register(&self, pack_id: &str, pid: i32) {
        self.workers
            .write()
            .entry(pack_id.to_string())
            .or_default()
            .insert(pid);
    }

    /// The worker `pid` of `pack_id` is gone.
    pub fn unregister(&self, pack_id: &str, pid: i32) {
        let mut w = self.workers.write();
        if let Some(set) = w.get_mut(pack_id) {
            set.remove(&pid);
            if set.is_empty() {
                w.remove(pack_id);
            }
        }
    }

    /// Whether `pid` is a worker of `pack_id` or runs under one.
    pub fn owns(&self, pack_id: &str, pid: i32) -> Result<(), String> {
        let workers = self.workers.read();
        let Some(mine) = workers.get(pack_id) else {
            return Err(format!("pack {pack_id:?} has no worker running"));
        };
        let mut at = pid;
        for _ in 0..MAX_ANCESTRY {
            if mine.contains(&at) {
                return Ok(());
            }
            if workers.values().any(|other| other.contains(&at)) {
                return Err(format!("process {pid} belongs to another pack"));
            }
            match parent_of(at) {
                Some(p) if p > 1 => at = p,
                _ => break,
            }
        }
        Err(format!(
            "process {pid} is not one of pack {pack_id:?}'s processes"
        ))
    }
}

/// The parent pid from `/proc/<pid>/stat` (the field after the command, which may itself hold
/// spaces and parentheses: the last `)` ends it).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The peer rule of a pack socket.
#[derive(Debug, Clone)]
pub enum PeerRule {
    /// Permissive mode: the peer must be one of the pack's processes.
    PackProcess(std::sync::Arc<PackProcesses>),
    /// Strict mode: the peer must be the container's user (the path is the container's mount).
    ContainerUser(u32),
}

impl PeerRule {
    /// Admits or refuses the peer of a new connection to `pack_id`'s socket.
    pub fn admit(&self, pack_id: &str, peer: Option<UCred>) -> Result<(), String> {
        let Some(peer) = peer else {
            return Err("the peer's credentials cannot be read".into());
        };
        match self {
            PeerRule::ContainerUser(uid) if peer.uid() == *uid => Ok(()),
            PeerRule::ContainerUser(uid) => Err(format!(
                "the peer runs as uid {}, not the pack container's user {uid}",
                peer.uid()
            )),
            PeerRule::PackProcess(procs) => match peer.pid() {
                Some(pid) => procs.owns(pack_id, pid),
                None => Err("the peer's process id is unknown".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_its_packs_only_through_a_registered_ancestor() {
        let p = PackProcesses::default();
        let me = std::process::id() as i32;
        // This test process's parent stands in for a worker: the test process is "under" it.
        let parent = parent_of(me).expect("the test process has a parent");
        assert!(p.owns("a", me).is_err(), "no worker registered");
        p.register("a", parent);
        assert!(p.owns("a", me).is_ok(), "a descendant of a's worker");
        assert!(p.owns("b", me).is_err(), "not b's");
        p.register("b", me);
        assert!(
            p.owns("a", me).unwrap_err().contains("another pack"),
            "a process that is b's worker is never a's"
        );
        p.unregister("b", me);
        p.unregister("a", parent);
        assert!(p.owns("a", me).is_err());
    }

    /// Workers come and go (on several arbiters) while connections are checked: a seeded
    /// interleaving of registrations, removals and checks never lets a pid pass for a pack that
    /// does not hold it, and always lets a registered one pass.
    #[test]
    fn registrations_and_checks_race_without_a_wrong_answer() {
        use std::sync::Arc;
        let procs = Arc::new(PackProcesses::default());
        let me = std::process::id() as i32;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let procs = Arc::clone(&procs);
                std::thread::spawn(move || {
                    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                    for _ in 0..2_000 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Fake pids far above any real one: only this thread's own.
                        let pid = 4_000_000 + (t as i32) * 1_000 + (seed % 50) as i32;
                        let pack = format!("p{t}");
                        procs.register(&pack, pid);
                        assert!(procs.owns(&pack, pid).is_ok(), "a registered pid passes");
                        assert!(procs.owns("nobody", pid).is_err(), "never another pack's");
                        procs.unregister(&pack, pid);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(procs.owns("p0", me).is_err(), "everything unregistered");
    }

    #[test]
    fn parent_of_reads_names_with_parentheses_and_spaces() {
        // The current process's own entry parses whatever its name is.
        assert!(parent_of(std::process::id() as i32).is_some());
        assert_eq!(parent_of(-5), None);
    }
}
