//! The egress check as the operator and a block's `network_check` ask it: the grant step (the
//! same policy every request passes), then the address step — the name resolved and each address
//! classified, as a request would be. Without the address step the check said `allowed` for a
//! granted name that resolves to an internal address, and every request to it then failed with
//! only "Request blocked by security policy" to go on.

use super::Proxy;
use crate::egress::grants::ALLOWED;
use rumi_domain::net;
use serde::Serialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long the address step may wait for the resolver.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

/// How often one (pack, host) may log the "resolves to a blocked address" warning.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Warnings remembered at most (a hostile pack asking for endless names cannot grow the map).
const WARNED_MAX: usize = 1024;

/// The verdict of a check, step by step.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct CheckVerdict {
    pub allowed: bool,
    /// Why, in one sentence: the first step that said no, or "allowed".
    pub reason: String,
    /// The grant step: approval, grant, domain and port.
    pub grant: StepVerdict,
    /// The address step; absent when the grant step already refused.
    pub address: Option<AddressCheck>,
}

/// One step's answer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct StepVerdict {
    pub allowed: bool,
    pub reason: String,
}

/// The address step: what the name resolved to and whether each address may be reached. A name
/// that does not resolve is not a refusal of the policy (`allowed` stays true, `resolved` is
/// false): a request to it would fail with `dns_error`, not be blocked.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct AddressCheck {
    pub allowed: bool,
    pub resolved: bool,
    pub reason: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub addresses: Vec<IpAddr>,
}

impl Proxy {
    /// Checks `pack_id` reaching `domain:port`: the grant, then the addresses the name resolves to
    /// (the operator-opened `RUMI_EGRESS_ALLOW_CIDRS` included), exactly as a request would be
    /// checked. A tampered grant is audited as at a request.
    pub async fn check(&self, pack_id: &str, domain: &str, port: u16) -> CheckVerdict {
        let grant = match self.policy.check(pack_id, domain, port) {
            Ok(()) => StepVerdict {
                allowed: true,
                reason: ALLOWED.to_string(),
            },
            Err(d) => {
                self.audit_tampered(pack_id, d.tampered);
                let grant = StepVerdict {
                    allowed: false,
                    reason: d.reason,
                };
                return CheckVerdict {
                    allowed: false,
                    reason: grant.reason.clone(),
                    grant,
                    address: None,
                };
            }
        };
        let address = self.check_address(domain, port).await;
        CheckVerdict {
            allowed: address.allowed,
            reason: if address.allowed {
                grant.reason.clone()
            } else {
                address.reason.clone()
            },
            grant,
            address: Some(address),
        }
    }

    async fn check_address(&self, domain: &str, port: u16) -> AddressCheck {
        let unresolved = |reason: String| AddressCheck {
            allowed: true,
            resolved: false,
            reason: format!("{reason}; a request would fail with dns_error"),
            addresses: Vec::new(),
        };
        let host = domain.trim_start_matches('[').trim_end_matches(']');
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let lookup = (self.resolver)(host.to_string(), port);
                match tokio::time::timeout(RESOLVE_DEADLINE, lookup).await {
                    Ok(Ok(ips)) if !ips.is_empty() => ips,
                    Ok(_) => return unresolved(format!("{host} did not resolve")),
                    Err(_) => {
                        return unresolved(format!(
                            "{host} did not resolve within {RESOLVE_DEADLINE:?}"
                        ))
                    }
                }
            }
        };
        match net::first_blocked(&ips, &self.allow) {
            Some((ip, why)) => {
                let explanation = net::blocked_explanation(host, ip, why);
                self.warn_blocked(&explanation);
                AddressCheck {
                    allowed: false,
                    resolved: true,
                    reason: explanation,
                    addresses: ips,
                }
            }
            None => AddressCheck {
                allowed: true,
                resolved: true,
                reason: ALLOWED.to_string(),
                addresses: ips,
            },
        }
    }

    /// Logs why a granted name cannot be reached, at most once a minute per message, so the
    /// operator sees the range and the setting; the pack only ever sees the short refusal.
    pub(super) fn warn_blocked(&self, explanation: &str) {
        let now = Instant::now();
        {
            let mut warned = self.warned.lock();
            if warned
                .get(explanation)
                .is_some_and(|t| now.duration_since(*t) < WARN_EVERY)
            {
                return;
            }
            if warned.len() >= WARNED_MAX {
                warned.retain(|_, t| now.duration_since(*t) < WARN_EVERY);
                if warned.len() >= WARNED_MAX {
                    return;
                }
            }
            warned.insert(explanation.to_string(), now);
        }
        tracing::warn!("egress: {explanation}");
    }
}
