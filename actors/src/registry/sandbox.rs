//! A pack's sandbox, for the [`Registry`](super::Registry): started (with its doors) while the
//! pack is approved, stopped otherwise, placed on an arbiter by a hash of the pack id, and
//! replaced when its actor died (supervision).

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

impl Registry {
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
        let Some(entry) = self.packs.get_mut(id) else {
            return;
        };
        match (wanted, entry.container.is_some()) {
            (true, false) => {
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
                let addr =
                    PackContainer::start_in_arbiter(&self.sandbox.arbiters[slot], move |_| {
                        PackContainer::new(pid, root, backend, verifier, limit, registry, audit)
                    });
                entry.container = Some(addr.clone());
                self.view.set_container(id, Some(addr));
            }
            (false, true) => {
                if let Some(c) = entry.container.take() {
                    c.do_send(pack_container::Stop);
                }
                self.view.set_container(id, None);
            }
            _ => {}
        }
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
