//! Hierarchical principals and effective grant configs (contract §7.3).
//!
//! OWNER: the stores/secrets/grants work. The signatures are fixed (the broker uses them).

/// `a__b__c` → `["a", "a__b", "a__b__c"]`: the principal and every ancestor, root first.
pub fn principal_chain(principal: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = principal[at..].find("__") {
        out.push(principal[..at + i].to_string());
        at += i + 2;
    }
    out.push(principal.to_string());
    out
}
