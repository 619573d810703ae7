//! The kernel's administrative acts shared by the HTTP API and the administrative handlers of
//! official flows (`kernel:network.grant|revoke`, `kernel:capability.grant|revoke`): each one is
//! made, made durable, and audited durably before it is acknowledged, whoever asked.
//!
//! Only official flows (`flows/`) may name these handlers: the flow loader refuses them in pack
//! and shared flows and in steps a modifier injected (see `rumi_domain::handler`), because the
//! original kernel let any flow call them and so any pack could grant itself network or secrets.

use crate::audit::{AuditEntry, AuditWriter, Category, RecordDurable};
use crate::capability::Capabilities;
use crate::egress::grants::{GrantError, NetworkPolicy};
use actix::Addr;
use rumi_domain::egress::NetworkGrant;
use rumi_domain::engine::AdminCall;
use rumi_domain::handler::AdminHandler;
use rumi_domain::run::{ErrorType, StepFailure};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What the administrative acts change.
pub struct AdminServices {
    pub network: Arc<NetworkPolicy>,
    pub capabilities: Arc<Capabilities>,
    pub audit: Addr<AuditWriter>,
}

impl AdminServices {
    /// Writes `entry` and waits until it is on disk (an acknowledged act is never lost).
    pub async fn audit_durably(&self, entry: AuditEntry) {
        if !matches!(self.audit.send(RecordDurable(entry)).await, Ok(Ok(_))) {
            tracing::error!("an audit entry could not be written durably");
        }
    }

    /// Replaces the pack's network lists and enables its grant.
    pub async fn grant_network(
        &self,
        pack_id: &str,
        domains: &[String],
        ports: &[i64],
        notes: &str,
    ) -> Result<NetworkGrant, GrantError> {
        let grant = self.network.grant(pack_id, domains, ports, notes)?;
        self.audit_durably(
            AuditEntry::new(Category::Network, "network_grant", true)
                .pack(pack_id)
                .details(json!({"allowed_domains": grant.allowed_domains, "allowed_ports": grant.allowed_ports})),
        )
        .await;
        Ok(grant)
    }

    /// Disables the pack's network grant.
    pub async fn revoke_network(
        &self,
        pack_id: &str,
        reason: &str,
    ) -> Result<NetworkGrant, GrantError> {
        let grant = self.network.revoke(pack_id, reason)?;
        self.audit_durably(
            AuditEntry::new(Category::Network, "network_revoke", true)
                .pack(pack_id)
                .details(json!({"reason": grant.revoke_reason})),
        )
        .await;
        Ok(grant)
    }

    /// Performs an administrative handler step of an official flow.
    pub async fn execute(&self, call: AdminCall) -> Result<Value, StepFailure> {
        let name = rumi_domain::handler::KernelHandler::Admin(call.handler).name();
        let fail =
            |why: String| StepFailure::new(ErrorType::HandlerError, format!("{name}: {why}"));
        let args = &call.args;
        match call.handler {
            AdminHandler::NetworkGrant => {
                let pack = text(args, "pack_id").map_err(fail)?;
                let domains = list(args, "allowed_domains", Value::as_str, |s| s.to_string())
                    .map_err(fail)?;
                let ports = list(args, "allowed_ports", Value::as_i64, |p| p).map_err(fail)?;
                let notes = optional_text(args, "notes").map_err(fail)?;
                let grant = self
                    .grant_network(&pack, &domains, &ports, &notes)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                serde_json::to_value(grant).map_err(|e| fail(e.to_string()))
            }
            AdminHandler::NetworkRevoke => {
                let pack = text(args, "pack_id").map_err(fail)?;
                let reason = optional_text(args, "reason").map_err(fail)?;
                let grant = self
                    .revoke_network(&pack, &reason)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                serde_json::to_value(grant).map_err(|e| fail(e.to_string()))
            }
            AdminHandler::CapabilityGrant | AdminHandler::CapabilityRevoke => {
                self.capability_act(call.handler, args).await.map_err(fail)
            }
            other => Err(StepFailure::new(
                ErrorType::HandlerUnavailable,
                format!(
                    "{} is not available in this kernel build",
                    rumi_domain::handler::KernelHandler::Admin(other).name()
                ),
            )),
        }
    }

    /// Grants `permission` to `principal` (replacing an earlier grant of it): signed, durable and
    /// durably audited before it answers. Bad input is `ErrorKind::InvalidInput`.
    pub async fn grant_capability(
        &self,
        principal: &str,
        permission: &str,
        config: Value,
    ) -> std::io::Result<crate::capability::grants::GrantRecord> {
        let grants = Arc::clone(&self.capabilities.grants);
        let (p, perm) = (principal.to_string(), permission.to_string());
        let record = tokio::task::spawn_blocking(move || grants.grant(&p, &perm, config))
            .await
            .map_err(std::io::Error::other)??;
        self.audit_durably(
            AuditEntry::new(Category::Permission, "capability_grant", true)
                .pack(principal)
                .permission(principal, permission)
                .details(json!({
                    "config_keys": record.config.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()),
                })),
        )
        .await;
        Ok(record)
    }

    /// Revokes `principal`'s grant of `permission`; `false` when it held none (nothing written).
    pub async fn revoke_capability(
        &self,
        principal: &str,
        permission: &str,
    ) -> std::io::Result<bool> {
        let grants = Arc::clone(&self.capabilities.grants);
        let (p, perm) = (principal.to_string(), permission.to_string());
        let had = tokio::task::spawn_blocking(move || grants.revoke(&p, &perm))
            .await
            .map_err(std::io::Error::other)??;
        if had {
            self.audit_durably(
                AuditEntry::new(Category::Permission, "capability_revoke", true)
                    .pack(principal)
                    .permission(principal, permission),
            )
            .await;
        }
        Ok(had)
    }

    /// `kernel:capability.grant {principal_id, permission_id, config}` and
    /// `kernel:capability.revoke {principal_id, permission_id}`: the grants API's acts.
    async fn capability_act(
        &self,
        handler: AdminHandler,
        args: &Map<String, Value>,
    ) -> Result<Value, String> {
        let principal = text(args, "principal_id")?;
        let permission = text(args, "permission_id")?;
        if handler == AdminHandler::CapabilityGrant {
            let config = match args.get("config") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(c @ Value::Object(_)) => c.clone(),
                Some(_) => return Err("args.config must be an object".into()),
            };
            let record = self
                .grant_capability(&principal, &permission, config)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_value(record).map_err(|e| e.to_string())
        } else {
            match self.revoke_capability(&principal, &permission).await {
                Ok(true) => Ok(
                    json!({"principal_id": principal, "permission_id": permission, "revoked": true}),
                ),
                Ok(false) => Err(format!("{principal:?} holds no grant of {permission:?}")),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

fn text(args: &Map<String, Value>, name: &str) -> Result<String, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("args.{name} (a non-empty string) is required")),
    }
}

fn optional_text(args: &Map<String, Value>, name: &str) -> Result<String, String> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("args.{name} must be a string")),
    }
}

fn list<'a, T, U>(
    args: &'a Map<String, Value>,
    name: &str,
    item: impl Fn(&'a Value) -> Option<T>,
    into: impl Fn(T) -> U,
) -> Result<Vec<U>, String> {
    match args.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| item(v).map(&into))
            .collect::<Option<Vec<U>>>()
            .ok_or_else(|| format!("args.{name} has an item of the wrong type")),
        _ => Err(format!("args.{name} (a list) is required")),
    }
}
