//! The `handler` step's vocabulary (kernel contract §3.5).
//!
//! A flow may call a small, safe set of kernel handlers. Administrative handlers (grants,
//! approvals, lib records, audit queries) exist only for official flows under `flows/`: the
//! original kernel let any flow call them, so any pack could grant itself network or secrets.
//! The check is made on the *origin of the step* (see [`crate::flow::SourceRank`]), so a step
//! injected into an official flow by an untrusted modifier gets no more rights than its author.

use std::fmt;

/// A handler a flow step may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelHandler {
    Noop,
    CtxGet,
    CtxSet,
    CtxCopy,
    FlowRun,
    Emit,
    SkillRun,
    /// `kernel:vocab.normalize {term}` → `{term, preferred}` (§9).
    VocabNormalize,
    /// `kernel:vocab.convert {from_term, to_term, data}` → the converter's result (§9).
    VocabConvert,
    /// An administrative handler, named by its full text (e.g. `kernel:network.grant`).
    Admin(AdminHandler),
}

/// Handlers that change the kernel's security state; official flows only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminHandler {
    NetworkGrant,
    NetworkRevoke,
    CapabilityGrant,
    CapabilityRevoke,
    PackApprove,
    PackReject,
    LibRecord,
    AuditQuery,
}

const ADMIN: &[(&str, AdminHandler)] = &[
    ("kernel:network.grant", AdminHandler::NetworkGrant),
    ("kernel:network.revoke", AdminHandler::NetworkRevoke),
    ("kernel:capability.grant", AdminHandler::CapabilityGrant),
    ("kernel:capability.revoke", AdminHandler::CapabilityRevoke),
    ("kernel:pack.approve", AdminHandler::PackApprove),
    ("kernel:pack.reject", AdminHandler::PackReject),
    ("kernel:lib.record", AdminHandler::LibRecord),
    ("kernel:audit.query", AdminHandler::AuditQuery),
];

const SAFE: &[(&str, KernelHandler)] = &[
    ("kernel:noop", KernelHandler::Noop),
    ("kernel:ctx.get", KernelHandler::CtxGet),
    ("kernel:ctx.set", KernelHandler::CtxSet),
    ("kernel:ctx.copy", KernelHandler::CtxCopy),
    ("kernel:flow.run", KernelHandler::FlowRun),
    ("kernel:emit", KernelHandler::Emit),
    ("kernel:skill.run", KernelHandler::SkillRun),
    ("kernel:vocab.normalize", KernelHandler::VocabNormalize),
    ("kernel:vocab.convert", KernelHandler::VocabConvert),
];

impl KernelHandler {
    /// Parses a handler name; `None` when the kernel has no such handler.
    pub fn parse(name: &str) -> Option<KernelHandler> {
        SAFE.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, h)| *h)
            .or_else(|| {
                ADMIN
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, a)| KernelHandler::Admin(*a))
            })
    }

    /// The handler's name as written in flows.
    pub fn name(self) -> &'static str {
        match self {
            KernelHandler::Admin(a) => ADMIN.iter().find(|(_, x)| *x == a).map(|(n, _)| *n),
            h => SAFE.iter().find(|(_, x)| *x == h).map(|(n, _)| *n),
        }
        .unwrap_or("kernel:?")
    }

    /// True for handlers only official flows may call.
    pub fn is_administrative(self) -> bool {
        matches!(self, KernelHandler::Admin(_))
    }

    /// Every handler name the kernel knows, for error messages.
    pub fn safe_names() -> impl Iterator<Item = &'static str> {
        SAFE.iter().map(|(n, _)| *n)
    }
}

impl fmt::Display for KernelHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        let names = SAFE
            .iter()
            .map(|(n, _)| *n)
            .chain(ADMIN.iter().map(|(n, _)| *n));
        for name in names {
            let h = KernelHandler::parse(name).unwrap();
            assert_eq!(h.name(), name);
        }
        assert!(KernelHandler::parse("kernel:nope").is_none());
        assert!(KernelHandler::parse("ctx.get").is_none());
        assert!(KernelHandler::parse("kernel:network.grant")
            .unwrap()
            .is_administrative());
        assert!(!KernelHandler::parse("kernel:ctx.set")
            .unwrap()
            .is_administrative());
    }
}
