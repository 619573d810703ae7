//! Names a pack or an operator gives: store ids, store keys, secret keys, permission ids
//! (contract §7.1, §8). Pure checks, property-tested.
//!
//! OWNER: the stores/secrets/grants work. The signatures are fixed (the broker uses them).

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`: what a `permission_id` may be.
pub fn valid_permission_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}
