//! The API token (contract §12): `RUMI_API_TOKEN`, else `user_data/api_token` (0600 from the first
//! byte), generated on first start. Compared in constant time so response timing reveals nothing
//! of it.

use anyhow::{Context, Result};
use rumi_actors::fsutil;
use std::path::Path;
use subtle::ConstantTimeEq;

/// The most bytes a token file may hold (a token is 64 hex characters).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// What the token file holds.
enum Stored {
    Missing,
    Token(String),
    /// Not a regular file, too large, or unreadable: never read further (a FIFO would block the
    /// reader for good, a link to `/dev/zero` would fill its memory).
    Invalid(String),
}

fn stored(path: &Path) -> Stored {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stored::Missing,
        Err(e) => {
            return Stored::Invalid(format!("it cannot be opened ({e}; a symlink is refused)"))
        }
    };
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() <= MAX_TOKEN_FILE_BYTES => {}
        Ok(m) if m.is_file() => {
            return Stored::Invalid(format!("it is larger than {MAX_TOKEN_FILE_BYTES} bytes"))
        }
        Ok(_) => return Stored::Invalid("it is not a regular file".into()),
        Err(e) => return Stored::Invalid(e.to_string()),
    }
    let mut text = String::new();
    match file.take(MAX_TOKEN_FILE_BYTES).read_to_string(&mut text) {
        Ok(_) if text.trim().is_empty() => Stored::Missing,
        Ok(_) => Stored::Token(text.trim().to_string()),
        Err(e) => Stored::Invalid(e.to_string()),
    }
}

/// Loads the token, creating it when missing. Returns it and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<(String, bool)> {
    match stored(path) {
        Stored::Token(t) => return Ok((t, false)),
        Stored::Invalid(why) => anyhow::bail!(
            "user_data/api_token is not a token file: {why}; remove it and start again (a new token is made)"
        ),
        Stored::Missing => {}
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).context("no randomness for the API token")?;
    let token = hex::encode(bytes);
    fsutil::write_atomic(path, token.as_bytes(), 0o600)
        .context("cannot write user_data/api_token")?;
    Ok((token, true))
}

/// Reads the token without creating it (the CLI client): `RUMI_API_TOKEN`, else the file.
pub fn read(path: &Path) -> Option<String> {
    std::env::var("RUMI_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| match stored(path) {
            Stored::Token(t) => Some(t),
            Stored::Missing | Stored::Invalid(_) => None,
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

/// A challenge the CLI may send to `GET /api/health`: 32 to 128 hex characters.
pub fn valid_challenge(c: &str) -> bool {
    (32..=128).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The kernel's proof that it knows `token`, for `challenge`: HMAC-SHA256 keyed by the token over
/// a domain-separated message, hex. The CLI checks it before it sends the token anywhere, so a
/// program that took the kernel's port while the kernel was down never receives it. The token is
/// used as a key for nothing else, and a MAC reveals nothing of its key.
pub fn proof(token: &str, challenge: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(b"rumi-kernel-proof:");
    mac.update(challenge.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the proof of `token` for `challenge` (constant time).
pub fn proof_matches(token: &str, challenge: &str, given: &str) -> bool {
    proof(token, challenge)
        .as_bytes()
        .ct_eq(given.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_needs_the_token_and_the_challenge() {
        let c = "0123456789abcdef0123456789abcdef";
        assert!(valid_challenge(c));
        assert!(!valid_challenge("short") && !valid_challenge(&"g".repeat(32)));
        let p = proof("token-a", c);
        assert!(proof_matches("token-a", c, &p));
        assert!(!proof_matches("token-b", c, &p));
        assert!(!proof_matches("token-a", &c.replace('0', "1"), &p));
        assert!(!proof_matches("token-a", c, ""));
    }

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
