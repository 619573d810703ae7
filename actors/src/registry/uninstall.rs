//! Uninstalling a pack (contract §2.2, §16 "Uninstall"): its container and workers stop, its
//! sockets go, its network grant and capability grants are **removed** (not suspended: a pack
//! installed again under the same id starts with nothing), its approval record is deleted, and
//! its flows, modifiers, routes and schedules leave the catalog. The files stay (the pack shows
//! `installed`) unless `purge` asks for them to go too, with its data directory.
//!
//! Order, for a kill -9 at any point: grants go first, the approval record last, so a crash in
//! between leaves an approved pack without grants (safe; uninstall again), never a pack whose
//! next approval would bring an old grant back. Purging renames the pack directory out of the
//! ecosystem first (one atomic step: the pack is gone for every reader), then deletes it off the
//! Registry's thread.

use super::{PackInfo, Registry, RegistryError};
use crate::audit::{AuditEntry, Category, RecordDurable};
use crate::pack_container;
use actix::prelude::*;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Uninstalls a pack; `purge` removes its files and data too.
#[derive(Message)]
#[rtype(result = "Result<Uninstalled, RegistryError>")]
pub struct Uninstall {
    pub pack_id: String,
    pub purge: bool,
}

/// The answer to [`Uninstall`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct Uninstalled {
    pub pack_id: String,
    /// Whether its files and data were removed (then it is no longer listed).
    pub purged: bool,
    /// Whether a network grant was removed.
    pub network_grant_removed: bool,
    /// How many capability principals (the pack, and `pack__*` principals that are not packs of
    /// their own) lost their grants.
    pub capability_principals_removed: usize,
    /// How many of its trusted capability handlers were removed (their trust records, installed
    /// copies and workers; its candidates are forgotten too).
    pub capability_handlers_removed: usize,
    /// The pack as it is now (`installed`), or null when purged.
    pub pack: Option<PackInfo>,
}

impl Registry {
    /// Every step of an uninstall but the answer (see the module docs for the order).
    fn uninstall(&mut self, id: &str, purge: bool) -> Result<Uninstalled, RegistryError> {
        let Some(entry) = self.packs.get_mut(id) else {
            return Err(RegistryError::NotFound(id.to_string()));
        };
        // 1. Nothing of the pack runs or listens any more.
        if let Some(c) = entry.container.take() {
            c.do_send(pack_container::Stop);
        }
        entry.doors.close();
        entry.warm = None;
        self.view.set_container(id, None);

        // 2. Its grants go, durably (a failure stops here: the pack stays as it was, approved
        //    packs get their sockets back at the next reconcile).
        let network_grant_removed = match self.sandbox.proxy.policy().remove(id) {
            Ok(had) => had,
            Err(e) => {
                tracing::error!(pack_id = id, error = %e, "uninstall: the network grant could not be removed");
                self.reconcile_container(id);
                return Err(RegistryError::Storage);
            }
        };
        let caps = &self.sandbox.capabilities.grants;
        let mut capability_principals_removed = 0;
        for principal in self.own_principals(id) {
            match caps.remove_principal(&principal) {
                Ok(true) => capability_principals_removed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(pack_id = id, error = %e, "uninstall: capability grants could not be removed");
                    self.reconcile_container(id);
                    return Err(RegistryError::Storage);
                }
            }
        }

        // Its trusted capability handlers and candidates: a pack installed again under this id
        // (by anyone) must not find a handler trusted for it.
        let handlers_removed = match self.sandbox.capabilities.handlers.forget_pack(id) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(pack_id = id, error = %e, "uninstall: the pack's capability handlers could not be removed");
                self.reconcile_container(id);
                return Err(RegistryError::Storage);
            }
        };

        // 3. The approval record, last.
        if let Err(e) = self.approvals.remove(id) {
            tracing::error!(pack_id = id, error = %e, "uninstall: the approval record could not be removed");
            self.reconcile_container(id);
            return Err(RegistryError::Storage);
        }
        self.modified_verifiers.remove(id);
        self.forget_lib_record(id);
        remove_dir_quietly(&self.layout.pack_sockets(id));
        if let Some(dir) = &self.config.capability.sock_dir {
            remove_dir_quietly(&dir.join(id));
        }

        // 4. Purge: the files leave the ecosystem in one rename, then are deleted off-thread.
        let dir = self.packs.get(id).map(|e| e.dir.clone());
        if purge {
            if let Some(dir) = dir {
                self.discard(&dir, id);
            }
            self.discard(&self.layout.pack_data(id), id);
            self.discard(&crate::lifecycle::backups_root(&self.layout).join(id), id);
            self.packs.remove(id);
        } else if let Some(e) = self.packs.get_mut(id) {
            e.record = None;
            e.changes = None;
            e.state = if e.error.is_some() {
                crate::view::PackState::Error
            } else {
                crate::view::PackState::Installed
            };
        }
        self.follow_watch(id);
        Ok(Uninstalled {
            pack_id: id.to_string(),
            purged: purge,
            network_grant_removed,
            capability_principals_removed,
            capability_handlers_removed: handlers_removed,
            pack: self.info(id),
        })
    }

    /// The capability principals that belong to pack `id`: itself and `id__*` principals that
    /// are not packs of their own (a pack `id__child` keeps its grants).
    fn own_principals(&self, id: &str) -> Vec<String> {
        let below = format!("{id}__");
        let mut out = vec![id.to_string()];
        out.extend(
            self.sandbox
                .capabilities
                .grants
                .principals()
                .into_iter()
                .filter(|p| p.starts_with(&below) && !self.packs.contains_key(p.as_str())),
        );
        out
    }

    /// Moves `path` aside (one rename: it is gone for every reader at once) and deletes it on a
    /// background thread; deletes in place when it cannot be moved.
    fn discard(&self, path: &Path, id: &str) {
        if !path.exists() {
            return;
        }
        let trash = self.layout.user_data().join("pack_trash");
        let _ = crate::fsutil::ensure_dir(&trash, 0o700);
        let aside: PathBuf = trash.join(format!(
            "{id}-{}-{}",
            std::process::id(),
            crate::fsutil::unique_stamp()
        ));
        let target = match std::fs::rename(path, &aside) {
            Ok(()) => aside,
            Err(_) => path.to_path_buf(),
        };
        std::thread::Builder::new()
            .name("rumi-purge".into())
            .spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&target) {
                    tracing::warn!(error = %e, "purge: some files could not be deleted");
                }
            })
            .ok();
    }
}

/// Deletes what purges left in `user_data/pack_trash/` (a kill -9 during a deletion), in the
/// background.
pub(super) fn empty_trash(user_data: &Path) {
    let trash = user_data.join("pack_trash");
    let Ok(entries) = std::fs::read_dir(&trash) else {
        return;
    };
    let left: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    if left.is_empty() {
        return;
    }
    std::thread::Builder::new()
        .name("rumi-purge".into())
        .spawn(move || {
            for p in left {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        })
        .ok();
}

/// Removes a socket directory (its listeners remove their sockets as they stop).
fn remove_dir_quietly(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "uninstall: a socket directory could not be removed"),
    }
}

impl Handler<Uninstall> for Registry {
    type Result = ResponseFuture<Result<Uninstalled, RegistryError>>;

    /// Uninstalls, then answers once the audit entry is on disk and the catalog without the
    /// pack's flows, routes and schedules is published.
    fn handle(&mut self, msg: Uninstall, _: &mut Self::Context) -> Self::Result {
        let done = self.uninstall(&msg.pack_id, msg.purge);
        let Ok(done) = done else {
            return Box::pin(async move { done });
        };
        let reloaded = self.after_decision(&msg.pack_id);
        self.event(
            json!({"pack_id": msg.pack_id, "event": "pack_uninstalled", "purged": msg.purge}),
        );
        let entry = AuditEntry::new(Category::Approval, "pack_uninstalled", true)
            .pack(&msg.pack_id)
            .details(json!({
                "purged": done.purged,
                "network_grant_removed": done.network_grant_removed,
                "capability_principals_removed": done.capability_principals_removed,
                "capability_handlers_removed": done.capability_handlers_removed,
            }));
        let audit = self.audit.clone();
        Box::pin(async move {
            audit
                .send(RecordDurable(entry))
                .await
                .map_err(|_| RegistryError::Storage)?
                .map_err(|_| RegistryError::Storage)?;
            let _ = tokio::time::timeout(super::DECISION_FLOWS_DEADLINE, reloaded).await;
            Ok(done)
        })
    }
}
