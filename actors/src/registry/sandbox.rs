//! A pack's sandbox, for the [`Registry`](super::Registry): started (with its doors) while the
//! pack is approved, stopped otherwise, placed on its host (see [`ContainerHost`]), and replaced
//! when its actor died (supervision).

use super::{doors, Registry};
use crate::approval::ManifestVerifier;
use crate::audit::{AuditEntry, Category, Record, Severity};
use crate::docker::PackSpec;
use crate::pack_container::worker::WorkerSpec;
use crate::pack_container::{self, Backend, PackContainer};
use crate::view::PackState;
use actix::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Where the pack sandboxes (the `PackContainer` actors) live; their doors (egress and capability
/// listeners) always live on the pack arbiters.
///
/// A flow run lives on the HTTP worker that received its request, and each of its block calls
/// is a message to the pack's `PackContainer`: on another thread, that is two thread hand-offs
/// per call (there and back), which on one CPU cost more than the work on either side. When the
/// kernel serves HTTP on one worker thread and runs on one CPU (`RUMI_CPU_AFFINITY=half` on a
/// machine of one or two CPUs), the sandboxes live on that worker's arbiter instead, so a block
/// call is a message on the run's own thread and only the pipe to Python crosses threads
/// (measured in the README, "The block path at the physical floor"). A pack with more than
/// [`HOSTED_MAX_ENTRIES`] files and directories stays on the pack arbiters: its check before
/// every call (a stat of each) must not hold the HTTP thread.
#[derive(Clone)]
pub enum ContainerHost {
    /// On the pack arbiters, by a hash of the pack id.
    Arbiters,
    /// On the arbiter [`HostContainers`] names (the HTTP worker's, known only once the HTTP
    /// server has started, after the kernel booted): no sandbox, and no component setup, starts
    /// before it arrives; after `wait` without it (a kernel embedded without HTTP) they start on
    /// the pack arbiters.
    Awaiting { wait: Duration },
    /// On this arbiter; the pack arbiters take over if it stops.
    On(ArbiterHandle),
}

/// Largest pack (files and directories its verifier stats before every call) whose sandbox may
/// live on the HTTP worker: a few hundred microseconds of `statx` at most.
pub const HOSTED_MAX_ENTRIES: usize = 1000;

/// Names the arbiter the sandboxes live on (see [`ContainerHost::Awaiting`]); the sandboxes
/// waiting for it start there. Ignored unless the registry is waiting for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HostContainers(pub ArbiterHandle);

/// Whether the pack sandboxes have their host yet. The HTTP gate waits for it (a few
/// milliseconds after the server starts, at most [`SandboxesPlaced::wait`]'s bound), so no
/// request — a run of an approved pack's flow above all — meets a pack without its sandbox.
#[derive(Debug, Default)]
pub struct SandboxesPlaced {
    done: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl SandboxesPlaced {
    /// Already placed (the sandboxes live on the pack arbiters from the start).
    pub fn placed() -> Arc<Self> {
        let p = SandboxesPlaced::default();
        p.set();
        Arc::new(p)
    }

    pub fn set(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns once the sandboxes are placed, or after `max`.
    pub async fn wait(&self, max: Duration) {
        if self.is_set() {
            return;
        }
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_set() {
            return;
        }
        let _ = tokio::time::timeout(max, notified).await;
    }
}

impl Handler<HostContainers> for Registry {
    type Result = ();

    fn handle(&mut self, msg: HostContainers, _: &mut Self::Context) {
        if self.sandboxes_wait_for_host() {
            self.sandbox.container_host = ContainerHost::On(msg.0);
            self.start_waiting_sandboxes();
        }
    }
}

impl Registry {
    pub(super) fn sandboxes_wait_for_host(&self) -> bool {
        matches!(self.sandbox.container_host, ContainerHost::Awaiting { .. })
    }

    /// At start: while the sandboxes wait for their host, a deadline sends them to the pack
    /// arbiters should it never be named.
    pub(super) fn await_container_host(&mut self, ctx: &mut Context<Self>) {
        if let ContainerHost::Awaiting { wait } = self.sandbox.container_host {
            ctx.run_later(wait, |act, _| {
                if act.sandboxes_wait_for_host() {
                    tracing::info!("no arbiter was named for the pack sandboxes; they run on the pack arbiters");
                    act.sandbox.container_host = ContainerHost::Arbiters;
                    act.start_waiting_sandboxes();
                }
            });
        } else {
            self.sandbox.placed.set();
        }
    }

    /// Starts the sandboxes that waited for their host, then the setups that waited for them.
    fn start_waiting_sandboxes(&mut self) {
        let waiting: Vec<String> = self
            .packs
            .iter()
            .filter(|(_, e)| e.state == PackState::Approved && e.container.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            self.reconcile_container(&id);
        }
        self.sandbox.placed.set();
        if let Some(addr) = &self.self_addr {
            addr.do_send(super::extras::PumpExtras);
        }
    }

    /// The arbiter a new sandbox of pack `id` starts on; `None` while its host is not known yet.
    /// A host arbiter that stopped (its thread ended) hands over to the pack arbiters. (`spawn`
    /// answers false once the arbiter's thread has ended; between a stop request and then it
    /// still answers true, and a sandbox started in that gap dies with the arbiter: the next
    /// supervision pass, within a second, replaces it here.)
    fn sandbox_arbiter(&mut self, id: &str) -> Option<ArbiterHandle> {
        match &self.sandbox.container_host {
            ContainerHost::Awaiting { .. } => return None,
            ContainerHost::On(_) if self.pack_entries(id) > HOSTED_MAX_ENTRIES => {}
            ContainerHost::On(host) if host.spawn(async {}) => return Some(host.clone()),
            ContainerHost::On(_) => {
                tracing::warn!("the arbiter hosting the pack sandboxes stopped; they now run on the pack arbiters");
                self.sandbox.container_host = ContainerHost::Arbiters;
            }
            ContainerHost::Arbiters => {}
        }
        Some(self.sandbox.arbiters[self.slot(id)].clone())
    }

    /// Starts the sandbox and the egress listener of an approved pack, stops both for any other
    /// state.
    pub(super) fn reconcile_container(&mut self, id: &str) {
        let Some(entry) = self.packs.get_mut(id) else {
            return;
        };
        let wanted = entry.state == PackState::Approved;
        if !wanted {
            entry.warm = None;
        }
        if wanted {
            self.open_doors(id);
        } else {
            entry.doors.close();
        }
        self.follow_watch(id);
        let slot = self.slot(id);
        let running = self.packs.get(id).is_some_and(|e| e.container.is_some());
        let host = match (wanted, running) {
            (true, false) => match self.sandbox_arbiter(id) {
                Some(host) => Some(host),
                None => return, // started once its host is known
            },
            _ => None,
        };
        let Some(entry) = self.packs.get_mut(id) else {
            return;
        };
        match (wanted, host) {
            (true, Some(host)) => {
                let warm = entry.warm.take();
                let manifest = entry
                    .record
                    .as_ref()
                    .map(|r| r.manifest.clone())
                    .unwrap_or_default();
                // Strict mode is exactly "the kernel booted a Docker engine".
                let backend = match &self.sandbox.docker {
                    None => Backend::HostWorkers {
                        spec: WorkerSpec {
                            pack_id: id.to_string(),
                            python: self.config.python.clone(),
                            host_script: self.sandbox.host_script.clone(),
                            modules_dir: self.sandbox.modules_dir.clone(),
                            pack_root: entry.subdir.clone(),
                            data_dir: self.layout.pack_data(id),
                            max_frame: self.config.max_response_bytes,
                            egress_socket: Some(
                                self.layout
                                    .pack_sockets(id)
                                    .join(crate::egress::SOCKET_NAME),
                            ),
                            capability_socket: Some(
                                doors::capability_dir(
                                    &self.config.capability,
                                    self.layout.pack_sockets(id),
                                    id,
                                )
                                .join(crate::capability::SOCKET_NAME),
                            ),
                            processes: Some(Arc::clone(&self.sandbox.processes)),
                            redactor: Some(Arc::clone(&self.sandbox.capabilities.redactor)),
                        },
                        pool: self.config.workers_per_pack.max(1),
                        spill: self.spill_pool.clone(),
                    },
                    Some(engine) => Backend::Docker {
                        engine: Arc::clone(engine),
                        spec: PackSpec {
                            pack_id: id.to_string(),
                            pack_root: entry.subdir.clone(),
                            data_dir: self.layout.pack_data(id),
                            site_packages: self.layout.pack_site_packages(id),
                            socket_dir: self.layout.pack_sockets(id),
                            runtime_dir: self.sandbox.modules_dir.clone(),
                            capability_dir: self
                                .config
                                .capability
                                .sock_dir
                                .as_ref()
                                .map(|d| d.join(id)),
                            max_frame: self.config.max_response_bytes,
                            cpuset: self
                                .sandbox
                                .arbiter_cpus
                                .get(slot)
                                .copied()
                                .flatten()
                                .map(|c| c.to_string()),
                        },
                        eager: self.config.container_start_eager,
                    },
                };
                let verifier = warm
                    .filter(|v| *v.manifest() == manifest)
                    .unwrap_or_else(|| ManifestVerifier::new(entry.dir.clone(), manifest))
                    .holding_dirs();
                let (pid, root, limit) = (
                    id.to_string(),
                    entry.subdir.clone(),
                    self.config.pack_queue_limit,
                );
                let audit = self.sandbox.audit_queue.clone();
                let registry = self.self_addr.clone().expect("set in started").recipient();
                let addr = PackContainer::start_in_arbiter(&host, move |_| {
                    PackContainer::new(pid, root, backend, verifier, limit, registry, audit)
                });
                entry.container = Some(addr.clone());
                self.view.set_container(id, Some(addr));
            }
            (false, _) => {
                let stopped = entry.container.take();
                if stopped.is_some() {
                    // The pack's new state is published before its sandbox leaves the view and
                    // stops: a run that still reaches the sandbox meets its pre-call check, and
                    // one that finds it gone or stopped is refused for the state
                    // (`hash_verification_failed` for a modified pack), never told a worker is
                    // merely starting.
                    self.publish_states();
                }
                self.view.set_container(id, None);
                if let Some(c) = stopped {
                    c.do_send(pack_container::Stop);
                }
            }
            _ => {}
        }
    }

    /// What the pack's verifier stats before every call, counted up to one past
    /// [`HOSTED_MAX_ENTRIES`]: every file and directory under the pack's directory (links not
    /// followed), empty directories included, which the manifest does not list.
    fn pack_entries(&self, id: &str) -> usize {
        let Some(e) = self.packs.get(id) else {
            return 0;
        };
        let mut count = 0;
        let mut dirs = vec![e.dir.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(listing) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in listing.flatten() {
                count += 1;
                if count > HOSTED_MAX_ENTRIES {
                    return count;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        count
    }

    /// The arbiter a pack's actors live on: a hash of its id.
    pub(super) fn slot(&self, id: &str) -> usize {
        id.bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
            % self.sandbox.arbiters.len().max(1)
    }

    /// Supervision: a sandbox actor that died (a panic in a handler ends its task) is replaced
    /// from the same factory (`reconcile_container`), and the restart is audited. actix does not
    /// restart a panicked actor by itself, and a dead address in the view would fail every call of
    /// the pack until the next approval.
    pub(super) fn restart_dead_sandboxes(&mut self, only: Option<&str>) {
        if self.stopping {
            return;
        }
        fn dead<A: Actor>(a: &Option<Addr<A>>) -> bool {
            a.as_ref().is_some_and(|a| !a.connected())
        }
        let dead: Vec<(String, bool, bool)> = self
            .packs
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == id.as_str()))
            .map(|(id, e)| (id.clone(), dead(&e.container), e.doors.any_dead()))
            .filter(|(_, container, egress)| *container || *egress)
            .collect();
        for (id, container, egress) in dead {
            if let Some(e) = self.packs.get_mut(&id) {
                if container {
                    e.container = None;
                }
                if egress {
                    e.doors.forget_dead();
                }
            }
            // A dead egress listener is replaced quietly: requests that met the gap were refused
            // by the missing socket, never let through.
            if egress {
                tracing::error!(pack_id = %id, "a pack's egress or capability listener died; starting a new one");
            }
            if container {
                tracing::error!(pack_id = %id, "a pack sandbox died; starting a new one");
                self.view.set_container(&id, None);
            }
            self.reconcile_container(&id);
            if container {
                self.audit.do_send(Record(
                    AuditEntry::new(Category::System, "sandbox_restarted", false)
                        .severity(Severity::Error)
                        .pack(&id)
                        .error(
                            "the pack's sandbox actor stopped unexpectedly and was replaced",
                            None,
                        ),
                ));
                self.event(json!({"pack_id": id, "event": "sandbox_restarted"}));
            }
        }
    }
}
