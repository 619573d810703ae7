//! A pack's doors to the host: its egress socket and its capability socket (with the broker
//! behind it). Both exist exactly while the pack is approved; both live on the arbiter of the
//! pack's sandbox; a dead one is replaced by the Registry's supervision.

use super::Registry;
use crate::capability::broker::{capability_listener, CapabilityBroker, CapabilityListener};
use crate::capability::peers::PeerRule;
use crate::capability::CapabilitySettings;
use crate::config::SecurityMode;
use crate::egress::listener::{egress_listener, EgressListener};
use crate::socket_server::StopListener;
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

/// The listeners of one approved pack.
#[derive(Default)]
pub(super) struct Doors {
    pub egress: Option<Addr<EgressListener>>,
    pub capability: Option<(Addr<CapabilityBroker>, Addr<CapabilityListener>)>,
}

impl Doors {
    /// Stops every listener (the sockets are removed) and the broker.
    pub fn close(&mut self) {
        if let Some(l) = self.egress.take() {
            l.do_send(StopListener);
        }
        // The broker stops once its listener and connections have let go of its address.
        if let Some((_, l)) = self.capability.take() {
            l.do_send(StopListener);
        }
    }

    /// Forgets listeners whose actor died; answers whether any did.
    pub fn forget_dead(&mut self) -> bool {
        let mut died = false;
        if self.egress.as_ref().is_some_and(|a| !a.connected()) {
            self.egress = None;
            died = true;
        }
        if self
            .capability
            .as_ref()
            .is_some_and(|(b, l)| !b.connected() || !l.connected())
        {
            if let Some((_, l)) = self.capability.take() {
                l.do_send(StopListener);
            }
            died = true;
        }
        died
    }

    pub fn any_dead(&self) -> bool {
        self.egress.as_ref().is_some_and(|a| !a.connected())
            || self
                .capability
                .as_ref()
                .is_some_and(|(b, l)| !b.connected() || !l.connected())
    }
}

/// Where a pack's capability socket lives: its socket directory, or its own directory under
/// `RUMI_CAPABILITY_SOCK_DIR`.
pub fn capability_dir(
    settings: &CapabilitySettings,
    pack_sockets: PathBuf,
    pack_id: &str,
) -> PathBuf {
    match &settings.sock_dir {
        Some(dir) => dir.join(pack_id),
        None => pack_sockets,
    }
}

impl Registry {
    /// Opens the doors an approved pack lacks.
    pub(super) fn open_doors(&mut self, id: &str) {
        let slot = self.slot(id);
        let arbiter = self.sandbox.arbiters[slot].clone();
        let Some(entry) = self.packs.get(id) else {
            return;
        };
        let want_egress = entry.doors.egress.is_none();
        let want_capability = entry.doors.capability.is_none();
        let egress = want_egress.then(|| {
            let (pid, dir, access, proxy, settings) = (
                id.to_string(),
                self.layout.pack_sockets(id),
                self.config.socket_access(),
                Arc::clone(&self.sandbox.proxy),
                self.config.egress.clone(),
            );
            EgressListener::start_in_arbiter(&arbiter, move |_| {
                egress_listener(pid, dir, access, proxy, &settings)
            })
        });
        let capability = want_capability.then(|| {
            let settings = self.config.capability.clone();
            let (pid, caps, view, audit) = (
                id.to_string(),
                Arc::clone(&self.sandbox.capabilities),
                Arc::clone(&self.view),
                self.audit.clone(),
            );
            let s = settings.clone();
            let broker = CapabilityBroker::start_in_arbiter(&arbiter, move |_| {
                CapabilityBroker::new(pid, caps, view, audit, &s)
            });
            let dir = capability_dir(&self.config.capability, self.layout.pack_sockets(id), id);
            let access = self.config.capability_socket_access();
            let peers = match self.config.mode {
                SecurityMode::Strict => PeerRule::ContainerUser(crate::docker::sandbox::PACK_UID),
                SecurityMode::Permissive => {
                    PeerRule::PackProcess(Arc::clone(&self.sandbox.processes))
                }
            };
            let (pid, b) = (id.to_string(), broker.clone());
            let listener = CapabilityListener::start_in_arbiter(&arbiter, move |_| {
                capability_listener(pid, dir, access, b, peers, &settings)
            });
            (broker, listener)
        });
        if let Some(entry) = self.packs.get_mut(id) {
            if let Some(e) = egress {
                entry.doors.egress = Some(e);
            }
            if let Some(c) = capability {
                entry.doors.capability = Some(c);
            }
        }
    }
}
