//! CPU placement of pack sandboxes, and background threads ([`background_thread`]).
//!
//! A block call is a synchronous request/response between a `PackContainer`'s arbiter thread and
//! the pack's worker process. On a virtual machine (this project's 2-vCPU Firecracker host) a
//! wake-up across CPUs costs an inter-processor interrupt and a VM exit: measured here, one
//! in-process `ExecuteBlock` round trip took ~185 µs with the two on different CPUs and ~64 µs on
//! the same one (`cargo bench --bench actors`). So each pack arbiter thread is pinned to one CPU
//! and the workers it spawns inherit that affinity: the pair never pays the cross-CPU wake-up.
//! The rest of the kernel (HTTP workers, other actors) stays free to use every CPU. The cost: all
//! blocks of the packs on one arbiter share that CPU, so a CPU-heavy block slows its neighbours;
//! operators who prefer spreading over latency choose another policy.
//!
//! Policies (`RUMI_CPU_AFFINITY`):
//! * `half` (default): the whole kernel process — HTTP workers, actors, pack workers — is confined
//!   to the upper half of the CPUs it may use (at least one), and pack arbiters are pinned inside
//!   that set, so every kernel-internal hand-off is a same-CPU wake-up. The lower half is left to
//!   clients, containers and everything else on the machine. Measured back to back on the 2-vCPU
//!   host, bench client on the same machine: 1-step block flow p50 0.41 ms (`pack`: 0.51), `set`
//!   p50 0.20–0.22 ms (0.27), and the same throughput (5.8–6.1k flows/s), because per-request
//!   kernel work is small enough for one CPU. When that set is one CPU (and so the kernel serves
//!   HTTP on one worker), the pack sandboxes live on the HTTP worker's own arbiter, which removes
//!   the HTTP worker ↔ pack arbiter hand-off of every block call
//!   ([`crate::registry::ContainerHost`]). Calls of a pack that overlap run on spill workers
//!   confined to the lower half (`RUMI_PACK_SPILL`, see [`crate::pack_container`]).
//! * `pack`: only pack arbiters and their workers are pinned; the rest of the kernel uses every CPU.
//!   For machines where the kernel's own CPU work is the bottleneck.
//! * `off`: nothing is pinned.

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`. Returns false when the OS refuses (the thread then simply
/// stays unpinned).
pub fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: as above; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPU placement policy (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPolicy {
    Half,
    Pack,
    Off,
}

/// Where [`confine_to_upper_half`] put the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confined {
    /// The kernel's CPUs (the upper half).
    pub kept: Vec<usize>,
    /// The CPUs it was allowed and left (the lower half).
    pub left: Vec<usize>,
}

/// Confines the calling thread — call it before any other thread exists, so every thread and
/// child process inherits it — to the upper half of the allowed CPUs. Returns the CPUs kept and
/// left, or `None` when there is nothing to confine (one CPU) or the OS refused.
pub fn confine_to_upper_half() -> Option<Confined> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return None;
    }
    let split = cpus.len() - cpus.len().div_ceil(2);
    let (left, keep) = (cpus[..split].to_vec(), cpus[split..].to_vec());
    let set = cpu_set(&keep);
    // SAFETY: as above; pid 0 is the calling thread.
    let ok =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 };
    ok.then_some(Confined { kept: keep, left })
}

/// The CPU set of `cpus` (numbers past the set's size are ignored).
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it for numbers below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

/// Confines the calling process (thread) to `set`. One system call, no allocation: usable between
/// `fork` and `exec`.
pub fn confine_current(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: sched_setaffinity reads at most the set's size; pid 0 is the caller.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs to pin `n` pack arbiters to: the highest-numbered allowed CPUs (CPU 0 tends to take
/// most interrupts), one each.
pub fn pack_cpus(n: usize) -> Vec<usize> {
    let cpus = allowed_cpus();
    cpus.iter().rev().take(n).copied().collect()
}

/// Makes the calling thread background work: nice 19, so a thread at the default priority wakes
/// up ahead of it and gets almost all of a contended CPU. Used for catalog loads and frees: a
/// reload must not take the CPU from runs (`benches/catalog.rs`: the hot path's p99 during
/// back-to-back reloads was 1.2 ms at nice 10, 0.43 ms at nice 19, idle 0.45 ms), yet must still
/// finish when the CPUs are busy — Linux's `SCHED_IDLE` class measured as well but would starve
/// it behind CPU-bound blocks, and an approval waits for its reload.
pub fn background_thread() {
    // SAFETY: setpriority only changes the calling thread's nice value (who = 0 is this thread
    // on Linux, where it is a per-thread attribute); no memory is touched.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Keeps memory the kernel frees for reuse instead of returning it to the system at once (glibc:
/// blocks under 32 MiB come from the heap, and up to 128 MiB free at a heap's top is kept).
/// A reload of a large catalog allocates and frees ~100 MB; given back and taken again, every
/// `munmap`/`brk` and the page faults after it take the process's memory-map lock, and runs in
/// flight waited behind a background loader holding it (`benches/catalog.rs`: the hot path's p99
/// during reloads went from 1.3 ms to 0.42 ms, idle 0.41 ms). The cost: up to that much freed
/// memory stays in the process's RSS after a burst.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes the allocator's tuning parameters; called before the
    // kernel's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_a_thread_restricts_it_and_its_children() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let target = *cpus.last().unwrap();
        std::thread::spawn(move || {
            assert!(pin_current_thread(target));
            assert_eq!(allowed_cpus(), vec![target]);
            let out = std::process::Command::new("cat")
                .arg("/proc/self/status")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .unwrap();
            assert_eq!(
                line.split_whitespace().nth(1).unwrap(),
                target.to_string(),
                "children inherit the CPU"
            );
        })
        .join()
        .unwrap();
    }
}
