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

    async fn capability_act(
        &self,
        _handler: AdminHandler,
        _args: &Map<String, Value>,
    ) -> Result<Value, String> {
        let _ = &self.capabilities;
        Err("not available yet".into())
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
