//! Progressive disclosure (contract §2, §15): the L1 catalog line, the L2 cap on the `SKILL.md`
//! body, and how L3 files are presented (binary files are described, never inlined).

/// Largest L2 body sent to the model (bytes); beyond it the content is cut with a marker.
pub const L2_CAP_BYTES: usize = 20_000;
/// How much of a file is searched for a NUL byte when deciding whether it is binary.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// Caps an L2 body at [`L2_CAP_BYTES`]: cuts at the char boundary at or below the cap and appends
/// `"\n[truncated: X bytes omitted]"`. Returns the text and X (0 when nothing was cut).
pub fn cap_l2(body: &str) -> (String, usize) {
    if body.len() <= L2_CAP_BYTES {
        return (body.to_string(), 0);
    }
    let mut cut = L2_CAP_BYTES;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    let omitted = body.len() - cut;
    (
        format!("{}\n[truncated: {omitted} bytes omitted]", &body[..cut]),
        omitted,
    )
}

/// Binary = a NUL byte in the first 8 KiB, or not UTF-8 (§15).
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0) || std::str::from_utf8(bytes).is_err()
}

/// [`is_binary`] for the first bytes of a longer file: a multi-byte character cut at the end
/// of the prefix is not a reason to call it binary.
pub fn is_binary_prefix(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0)
        || matches!(std::str::from_utf8(bytes), Err(e) if e.error_len().is_some())
}

/// The MIME type of a path by its extension (case-insensitive); `application/octet-stream` when
/// unknown.
pub fn mime_for(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "md" | "markdown" => "text/markdown",
        "txt" | "text" | "log" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "json" => "application/json",
        "jsonl" => "application/jsonl",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "js" | "mjs" => "text/javascript",
        "ts" => "text/typescript",
        "py" => "text/x-python",
        "sh" => "text/x-shellscript",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// A token estimate: bytes / 4, rounded up.
pub fn approx_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// The L1 line of a skill: `"<name>: <description>"`.
pub fn l1_line(name: &str, description: &str) -> String {
    format!("{name}: {description}")
}

/// Tokens of the L1 line, as the `l1_tokens` metric counts them (§15: bytes/4, rounded up).
pub fn l1_tokens(name: &str, description: &str) -> u64 {
    approx_tokens(l1_line(name, description).len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_bodies_are_untouched() {
        let body = "a".repeat(L2_CAP_BYTES);
        assert_eq!(cap_l2(&body), (body.clone(), 0));
    }

    #[test]
    fn large_bodies_are_cut_with_a_marker() {
        let body = "a".repeat(L2_CAP_BYTES + 5);
        let (text, omitted) = cap_l2(&body);
        assert_eq!(omitted, 5);
        assert!(text.ends_with("\n[truncated: 5 bytes omitted]"));
        assert_eq!(
            text.len(),
            L2_CAP_BYTES + "\n[truncated: 5 bytes omitted]".len()
        );
    }

    #[test]
    fn the_cut_respects_char_boundaries() {
        // 'é' is 2 bytes; 19_999 ASCII bytes put one straddling the cap.
        let body = format!("{}{}", "a".repeat(L2_CAP_BYTES - 1), "é".repeat(10));
        let (text, omitted) = cap_l2(&body);
        assert_eq!(omitted, 20);
        assert!(text.starts_with(&"a".repeat(L2_CAP_BYTES - 1)));
        assert!(text.contains("[truncated: 20 bytes omitted]"));
    }

    #[test]
    fn binary_detection() {
        assert!(!is_binary(b"hello\n"));
        assert!(!is_binary("héllo".as_bytes()));
        assert!(!is_binary(b""));
        assert!(is_binary(b"a\0b"));
        assert!(is_binary(&[0xff, 0xfe, b'a']));
        // NUL is valid UTF-8, so a NUL past the sniffed window does not make a file binary.
        let mut late = vec![b'a'; BINARY_SNIFF_BYTES];
        late.push(0);
        assert!(!is_binary(&late));
    }

    #[test]
    fn mimes() {
        assert_eq!(mime_for("a/b.PNG"), "image/png");
        assert_eq!(mime_for("x.md"), "text/markdown");
        assert_eq!(mime_for("x"), "application/octet-stream");
        assert_eq!(mime_for(".bashrc"), "application/octet-stream");
        assert_eq!(mime_for("x.unknown"), "application/octet-stream");
        assert_eq!(mime_for("dir.d/file"), "application/octet-stream");
    }

    #[test]
    fn tokens_and_l1() {
        assert_eq!(approx_tokens(0), 0);
        assert_eq!(approx_tokens(1), 1);
        assert_eq!(approx_tokens(4), 1);
        assert_eq!(approx_tokens(5), 2);
        assert_eq!(l1_line("pdf", "Reads PDFs."), "pdf: Reads PDFs.");
        assert_eq!(l1_tokens("pdf", "Reads PDFs."), 4); // 16 bytes
    }

    proptest! {
        #[test]
        fn cap_keeps_a_prefix_within_the_cap(body in "[aé€😀]{0,12000}") {
            let (text, omitted) = cap_l2(&body);
            if body.len() <= L2_CAP_BYTES {
                prop_assert_eq!(&text, &body);
                prop_assert_eq!(omitted, 0);
            } else {
                let kept = body.len() - omitted;
                prop_assert!(kept <= L2_CAP_BYTES && kept + 4 > L2_CAP_BYTES);
                prop_assert!(body.is_char_boundary(kept));
                prop_assert_eq!(&text[..kept], &body[..kept]);
                let marker = format!("\n[truncated: {omitted} bytes omitted]");
                prop_assert_eq!(&text[kept..], marker.as_str());
            }
        }
    }
}
