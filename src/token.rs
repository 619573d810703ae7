//! The API token (contract §12): `RUMI_API_TOKEN`, else `user_data/api_token` (0600 from the first
//! byte), generated on first start. Compared in constant time so response timing reveals nothing
//! of it.

use anyhow::{Context, Result};
use rumi_actors::fsutil;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Loads the token, creating it when missing. Returns it and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), false)),
        _ => {}
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).context("no randomness for the API token")?;
    let token = hex::encode(bytes);
    fsutil::write_atomic(path, token.as_bytes(), 0o600)
        .context("cannot write user_data/api_token")?;
    Ok((token, true))
}

/// Reads the token without creating it (the CLI client).
pub fn read(path: &Path) -> Option<String> {
    std::env::var("RUMI_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        })
}

/// Checks an `Authorization` header value against the token in constant time.
pub fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else { return false };
    let Some(given) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    // ct_eq is constant-time for equal lengths; unequal lengths are rejected by it too.
    given.ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        let t = "abc123";
        assert!(authorized(Some(b"Bearer abc123"), t));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"bearer abc123",
            b"Basic abc123",
            b"Bearer abc1234",
            b"Bearer abc12",
            b"Bearer  abc123",
            b"Bearer abc123 ",
            b"abc123",
        ] {
            assert!(
                !authorized(Some(bad), t),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!authorized(None, t));
    }
}
