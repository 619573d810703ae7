//! The processes under a host worker, and how they are stopped (permissive mode).
//!
//! A worker is made a *child subreaper* before its interpreter starts ([`become_subreaper`]), so
//! whatever a block starts stays under it: a process whose parent exits (a double fork, or
//! `start_new_session=True` and then the parent's exit) is re-parented to the worker instead of
//! init, and the worker's process group no longer bounds what a block started. The block host
//! kills and reaps its descendants after every call; the kernel kills the whole tree with the
//! worker whenever it kills a worker ([`kill_tree`]).
//!
//! Why a subreaper and not a PID namespace or a cgroup per worker: it needs no privilege (a PID
//! namespace needs CAP_SYS_ADMIN or an unprivileged user namespace, which many distributions
//! disable; a cgroup needs delegation) and no kernel option (`/proc/<pid>/task/*/children` needs
//! CONFIG_PROC_CHILDREN, missing on this project's VM), so it behaves the same as root and not.
//! What it cannot stop: a block clearing the flag with `prctl` from its own interpreter and then
//! double-forking, or a process of another user (a setuid program); permissive mode is not
//! isolation, strict mode's containers are.

use std::time::{Duration, Instant};

/// Makes the calling process the child subreaper of its descendants. Meant for `pre_exec`: one
/// system call, async-signal-safe; the flag survives `execve`.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on the calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Everything a worker needs between fork and exec, for `pre_exec`: the subreaper flag, and
/// SIGKILL when the kernel's thread that started it ends (`PR_SET_PDEATHSIG`). The second stops a
/// worker outliving a kernel killed with SIGKILL — in particular one the kernel had just sent
/// SIGSTOP in [`kill_tree`] and never got to kill, which would stay stopped forever. Workers are
/// started on a pack arbiter's thread, which lives as long as the kernel. `kernel_pid` is the
/// kernel's pid, read before the fork: if the kernel is already gone the worker exits at once.
/// Async-signal-safe system calls only.
pub fn prepare_worker(kernel_pid: i32) -> std::io::Result<()> {
    become_subreaper()?;
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets the signal delivered to this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != kernel_pid {
        return Err(std::io::Error::other(
            "the kernel exited while starting a worker",
        ));
    }
    Ok(())
}

/// One process as /proc shows it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    ppid: i32,
    state: u8,
}

impl Proc {
    /// Stopped, or already dead: it can start nothing more.
    fn is_inert(&self) -> bool {
        matches!(self.state, b'T' | b't' | b'Z' | b'X')
    }

    /// Dead (a zombie until its reaper collects it).
    fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }
}

/// Every process on the machine with its parent and state (one `/proc/<pid>/stat` each).
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read(e.path().join("stat")).ok()?;
        parse_stat(pid, &stat)
    })
    .collect()
}

/// `pid (comm) S ppid …`: the command may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(pid: i32, stat: &[u8]) -> Option<Proc> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat.get(close + 2..)?.split(|&b| b == b' ');
    let state = *fields.next()?.first()?;
    let ppid = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some(Proc { pid, ppid, state })
}

/// The processes under `root` in `all` (root excluded), parents before children. One pass over
/// `all` builds the parent → children map, so a tree of thousands costs thousands, not millions.
fn tree(all: &[Proc], root: i32) -> Vec<Proc> {
    let mut children: std::collections::HashMap<i32, Vec<Proc>> = Default::default();
    for p in all.iter().filter(|p| p.pid != root) {
        children.entry(p.ppid).or_default().push(*p);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(parent) = todo.pop() {
        for p in children.remove(&parent).unwrap_or_default() {
            out.push(p);
            todo.push(p.pid);
        }
    }
    out
}

/// Kills `root` and every process under it; returns how many descendants were found.
///
/// Stops: a block's processes outliving the worker that was killed for them (a timeout, a crash
/// or the pack's stop), including those that left the worker's process group (`setsid`,
/// `start_new_session=True`) and so escaped the group kill. The root (the worker, their
/// subreaper) is stopped on every pass (a descendant could send it SIGCONT), so it can neither
/// fork nor reap for long; every live descendant is sent SIGKILL on every pass that sees it (its children come to the stopped root and the next walk finds
/// them), and walks repeat until one finds nothing new with everything found dead, so nothing in
/// the tree can fork past the walk (a fork bomb included). Killing at once instead of stopping
/// all and killing at the end means a kernel that dies in the middle of this leaves nothing
/// stopped for good (the root itself dies with the kernel: `PR_SET_PDEATHSIG`). Bounded by
/// `limit`; the process group is killed as well, whatever the walk found.
pub fn kill_tree(root: i32, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    // Whether the signal could be sent: EPERM (another user's process, a setuid program) means
    // it never will be, so the walk does not wait for that process to die.
    let signal = |pid: i32, sig: i32| -> bool {
        // SAFETY: kill only sends a signal; a pid that exited at worst targets nothing (ESRCH).
        let sent = unsafe { libc::kill(pid, sig) } == 0;
        sent || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
    };
    let mut unkillable = std::collections::HashSet::new();
    let mut found = std::collections::HashSet::new();
    loop {
        // Again on every pass: a process not found yet could have sent the root SIGCONT.
        let _ = signal(root, libc::SIGSTOP);
        let all = processes();
        let under = tree(&all, root);
        let mut new = false;
        for p in under.iter().filter(|p| !p.is_dead()) {
            new |= found.insert(p.pid);
            // Every live one, every pass: a pid found before may be a new process by now.
            if !unkillable.contains(&p.pid) && !signal(p.pid, libc::SIGKILL) {
                unkillable.insert(p.pid);
            }
        }
        let root_inert = all
            .iter()
            .find(|p| p.pid == root)
            .is_none_or(Proc::is_inert);
        let settled = !new
            && root_inert
            && under
                .iter()
                .all(|p| p.is_dead() || unkillable.contains(&p.pid));
        if settled || Instant::now() >= deadline {
            break;
        }
        if !new {
            // Signalled processes die (or stop) when next scheduled; give them the CPU.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    // SAFETY: as above; the group id is the worker's pid, held (unreaped) by its owner.
    unsafe { libc::killpg(root, libc::SIGKILL) };
    let _ = signal(root, libc::SIGKILL);
    if !unkillable.is_empty() {
        tracing::warn!(
            count = unkillable.len(),
            "a block left processes the kernel may not signal (another user's); they keep running"
        );
    }
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    #[test]
    fn stat_lines_with_awkward_names_parse() {
        let p = parse_stat(7, b"7 (a) b (c)) S 3 7 7 0").unwrap();
        assert_eq!((p.pid, p.ppid, p.state), (7, 3, b'S'));
        assert!(parse_stat(7, b"garbage").is_none());
    }

    /// Whether `pid` still runs (a zombie has exited; its parent, the test, reaps it later).
    fn running(pid: i32) -> bool {
        let stat = std::fs::read(format!("/proc/{pid}/stat")).ok();
        stat.and_then(|s| parse_stat(pid, &s))
            .is_some_and(|p| !matches!(p.state, b'Z' | b'X'))
    }

    #[test]
    fn the_whole_tree_dies_even_what_left_the_process_group() {
        // The attack: a shell (own process group, like a worker) with a plain background child
        // and one in a new session, which the group kill alone would miss.
        let mut root = Command::new("sh");
        root.args(["-c", "sleep 60 & setsid sleep 60 & echo ready; wait"])
            .stdout(Stdio::piped())
            .process_group(0);
        // SAFETY: pre_exec runs become_subreaper, one async-signal-safe system call.
        unsafe {
            root.pre_exec(become_subreaper);
        }
        let mut root = root.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(root.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = root.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        let under = loop {
            let under: Vec<i32> = tree(&processes(), pid).iter().map(|p| p.pid).collect();
            if under.len() >= 2 || Instant::now() > deadline {
                break under;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            under.len() >= 2,
            "both sleeps run under the shell: {under:?}"
        );

        assert!(kill_tree(pid, Duration::from_secs(2)) >= 2);
        root.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while under.iter().any(|p| running(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: Vec<i32> = under.into_iter().filter(|p| running(*p)).collect();
        assert!(left.is_empty(), "still running: {left:?}");
    }
}
