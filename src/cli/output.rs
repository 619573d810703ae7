//! How client commands print: tables and `key: value` blocks for people, the API's `data` as
//! JSON with `--json`. Colours only when stdout is a terminal and `NO_COLOR` is unset or empty.

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde_json::Value;
use std::io::IsTerminal;

/// The printer of one command.
pub struct Out {
    pub json: bool,
    pub color: bool,
}

impl Out {
    pub fn new(json: bool) -> Out {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Out {
            json,
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// Pretty JSON on stdout.
    pub fn print_json(&self, v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    }

    /// A table with upper-case headers, no borders (as kubectl and docker print), wrapped to the
    /// terminal's width on a terminal and never wrapped in a pipe.
    pub fn table(&self, headers: &[&str], rows: Vec<Vec<Cell>>) {
        if rows.is_empty() {
            return;
        }
        let mut t = Table::new();
        t.load_preset(presets::NOTHING);
        // Wrapped to the terminal's width only when it is known and usable: a pty that reports
        // no size (`script`, some CI runners) would otherwise get one character per column.
        if std::io::stdout().is_terminal() && t.width().is_some_and(|w| w >= 40) {
            t.set_content_arrangement(ContentArrangement::Dynamic);
        }
        if self.color {
            t.enforce_styling();
        } else {
            t.force_no_tty();
        }
        t.set_header(headers.iter().map(|h| Cell::new(h.to_uppercase())));
        for r in rows {
            t.add_row(r);
        }
        // `NOTHING` pads each side with a space; trim the left margin of every line.
        for line in t.lines() {
            println!("{}", line.strip_prefix(' ').unwrap_or(&line).trim_end());
        }
    }

    /// `key: value` lines, keys aligned. Values must be [`clean`] already (from [`text`], or
    /// coloured by [`Out::paint_status`]).
    pub fn fields(&self, pairs: &[(&str, String)]) {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in pairs {
            println!("{:<width$}  {v}", format!("{k}:"), width = width + 1);
        }
    }

    /// A cell coloured by what a status word means.
    pub fn status_cell(&self, status: &str) -> Cell {
        self.paint_cell(status, status)
    }

    /// A cell of `text` coloured by what the status word `status` means.
    pub fn paint_cell(&self, status: &str, text: &str) -> Cell {
        let cell = Cell::new(clean(text));
        match status_color(status) {
            Some(c) if self.color => cell.fg(c),
            _ => cell,
        }
    }

    /// `text` coloured by what the status word `status` means (terminals only).
    pub fn paint_status(&self, status: &str, text: &str) -> String {
        let text = clean(text);
        match status_color(status) {
            Some(c) if self.color => format!("\x1b[{}m{text}\x1b[0m", ansi(c)),
            _ => text,
        }
    }
}

fn status_color(status: &str) -> Option<Color> {
    match status {
        "succeeded" | "approved" | "ok" | "allowed" | "true" | "applied" => Some(Color::Green),
        "failed" | "timed_out" | "blocked" | "error" | "denied" | "false" | "aborted" => {
            Some(Color::Red)
        }
        "modified" | "installed" | "pending" | "skipped" | "running" | "warning" => {
            Some(Color::Yellow)
        }
        _ => None,
    }
}

fn ansi(c: Color) -> u8 {
    match c {
        Color::Green => 32,
        Color::Red => 31,
        Color::Yellow => 33,
        _ => 39,
    }
}

/// `s` safe to print on a terminal: control characters (C0 but tab, DEL, C1) are shown as
/// `\u{..}` instead of being sent, so text from a pack (a description, an error, a file name)
/// cannot move the cursor, erase lines, set the title or write the clipboard, and a newline cannot
/// forge an extra line. `--json` needs none of this: JSON escapes them itself.
pub fn clean(s: &str) -> String {
    if !s.chars().any(is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_control(c: char) -> bool {
    c != '\t' && c.is_control()
}

/// A JSON value as table text: strings bare (and [`clean`]), null as `-`, others as compact JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// `text` cut to `max` characters (tables stay readable; `--json` has everything).
pub fn short(v: &Value, max: usize) -> String {
    clip(&text(v), max)
}

pub fn clip(s: &str, max: usize) -> String {
    let one_line = clean(&s.replace(['\n', '\r'], " "));
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// A cell of `text(v)`.
pub fn cell(v: &Value) -> Cell {
    Cell::new(text(v))
}

/// Milliseconds as people read them.
pub fn millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// An RFC 3339 timestamp without sub-seconds, for tables.
pub fn when(v: &Value) -> String {
    match v.as_str() {
        Some(ts) => match ts.split_once('.') {
            Some((head, _)) => format!("{head}Z"),
            None => ts.to_string(),
        },
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(clean("plain\ttext"), "plain\ttext");
        assert_eq!(
            clean("a\u{1b}]52;c;ZXZpbA==\u{7}b"),
            "a\\u{1b}]52;c;ZXZpbA==\\u{7}b"
        );
        assert_eq!(clean("x\nstate: approved"), "x\\u{a}state: approved");
        assert_eq!(clean("\u{9b}2J\u{7f}"), "\\u{9b}2J\\u{7f}");
        assert_eq!(text(&Value::String("\u{1b}[2K".into())), "\\u{1b}[2K");
        assert_eq!(clip("a\u{1b}[1Ab", 100), "a\\u{1b}[1Ab");
    }
}
