//! Reading one day of the audit log for `GET /api/audit` (§13) without loading it. Each category's
//! file is read backwards from its end (or forwards from an `after` cursor) in 64 KiB chunks, the
//! files are merged by `ts`, and reading stops as soon as `limit` entries are found: `limit=1` on
//! a 168 MB day reads a few kilobytes. This is plain blocking file I/O; the HTTP edge runs it on a
//! blocking thread, never on the disk arbiter, whose writes (and so every acknowledged run) it
//! would otherwise stall.
//!
//! Order: within a file, entries are in the order they were written; files are merged by `ts`
//! (ties by category). Cursors are exact positions, not timestamps: many entries share a
//! millisecond, so a `ts` cursor would skip or repeat entries at page boundaries. A [`Cursor`] is
//! the day and, per category file, the byte offset of a line start; the text form
//! `<date>~<category index>.<offset>~…` is opaque to clients, who pass back what a page returned.
//!
//! Torn lines: an unreadable line (not JSON, cut by a crash, longer than [`MAX_LINE_BYTES`]) is
//! skipped and counted in [`AuditPage::skipped_lines`]; it never fails the day. Bytes after the
//! last newline are a line still being written and are left for the next read (the writer
//! terminates a crash's torn last line when it starts, see `fsutil::terminate_last_line`).

use crate::audit::{valid_date, AuditError, Category};
use serde_json::Value;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of one read.
const CHUNK: u64 = 64 * 1024;
/// A line longer than this is skipped without being kept in memory (entries are ~1 KiB), so a
/// corrupt file cannot make a query allocate without bound.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The most entry bytes one page holds (the first entry always fits): a thousand entries of up to
/// a mebibyte each would otherwise be held, parsed, per request. A page cut short carries the
/// cursor of the rest, as a page cut by `limit` does.
pub const MAX_PAGE_BYTES: u64 = 8 << 20;
/// A cursor longer than this is refused before it is parsed.
const MAX_CURSOR_LEN: usize = 512;

/// A position in a day of the audit log: for each category file, the byte offset of a line start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    date: String,
    positions: Vec<(Category, u64)>,
}

impl Cursor {
    /// Parses the text form. Only the syntax is checked here; [`query`] checks the positions
    /// against the files.
    pub fn parse(text: &str) -> Result<Cursor, AuditError> {
        let bad = |why: &str| AuditError::BadCursor(why.to_string());
        if text.is_empty() || text.len() > MAX_CURSOR_LEN {
            return Err(bad("it is empty or too long"));
        }
        let mut parts = text.split('~');
        let date = parts.next().unwrap_or_default();
        if !valid_date(date) {
            return Err(bad("it does not start with a YYYY-MM-DD day"));
        }
        let mut positions: Vec<(Category, u64)> = Vec::new();
        for part in parts {
            let (index, offset) = part
                .split_once('.')
                .ok_or_else(|| bad("a position is not <category>.<offset>"))?;
            let category = index
                .parse::<usize>()
                .ok()
                .and_then(|i| Category::ALL.get(i).copied())
                .ok_or_else(|| bad("it names an unknown category"))?;
            // Digits only: `+5` or ` 5` would parse, and cursors have one spelling.
            if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("an offset is not a number"));
            }
            let offset = offset
                .parse::<u64>()
                .map_err(|_| bad("an offset is out of range"))?;
            if positions.iter().any(|(c, _)| *c == category) {
                return Err(bad("it names a category twice"));
            }
            positions.push((category, offset));
        }
        if positions.is_empty() {
            return Err(bad("it holds no position"));
        }
        Ok(Cursor {
            date: date.to_string(),
            positions,
        })
    }

    /// The day this cursor belongs to.
    pub fn date(&self) -> &str {
        &self.date
    }

    fn position(&self, category: Category) -> Option<u64> {
        self.positions
            .iter()
            .find(|(c, _)| *c == category)
            .map(|(_, p)| *p)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.date)?;
        for (c, p) in &self.positions {
            write!(f, "~{}.{p}", c.index())?;
        }
        Ok(())
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub category: Option<Category>,
    /// `YYYY-MM-DD`; else the cursor's day; else today (UTC).
    pub date: Option<String>,
    pub limit: usize,
    /// Entries older than this position (the newest `limit` of them).
    pub before: Option<Cursor>,
    /// Entries from this position on (the oldest `limit` of them).
    pub after: Option<Cursor>,
}

/// One page of entries, oldest first.
#[derive(Debug)]
pub struct AuditPage {
    pub entries: Vec<Value>,
    /// Where the next older page starts; `None` when nothing older is left.
    pub before: Option<Cursor>,
    /// Where entries newer than this page start (poll with it to follow the log).
    pub after: Cursor,
    /// Unreadable lines met while reading this page.
    pub skipped_lines: u64,
    /// Bytes read from disk for this page.
    pub bytes_read: u64,
}

/// Reads one page (see the module docs). The day is validated before it names a file, so a
/// query cannot reach another file.
pub fn query(dir: &Path, q: &AuditQuery) -> Result<AuditPage, AuditError> {
    let date = day_of(q)?;
    let categories: Vec<Category> = match q.category {
        Some(c) => vec![c],
        None => Category::ALL.to_vec(),
    };
    let forward = q.after.is_some();
    let mut sources = Vec::with_capacity(categories.len());
    for c in categories {
        let path = dir.join(format!("{}_{}.jsonl", c.as_str(), date));
        let file = match File::open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let len = match &file {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        let at = |cursor: &Option<Cursor>| -> Result<Option<u64>, AuditError> {
            match cursor {
                None => Ok(None),
                Some(cur) => {
                    let p = cur.position(c).ok_or_else(|| {
                        AuditError::BadCursor(
                            "it was made for other categories; pass it back with the same category"
                                .into(),
                        )
                    })?;
                    check_position(file.as_ref(), len, p, c)?;
                    Ok(Some(p))
                }
            }
        };
        let lo = at(&q.after)?.unwrap_or(0);
        let hi = match at(&q.before)? {
            Some(p) => p,
            None => match &file {
                Some(f) => complete_end(f, lo, len)?,
                None => 0,
            },
        };
        let hi = hi.max(lo);
        sources.push(Source::new(c, file, lo, hi, forward));
    }
    let mut skipped = 0;
    for s in &mut sources {
        s.fill(&mut skipped)?;
    }
    let mut taken = Vec::new();
    let mut page_bytes = 0u64;
    while taken.len() < q.limit {
        // Backwards: the newest head; forwards: the oldest (ties by category order).
        let pick = sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.head
                    .as_ref()
                    .map(|h| (i, h.ts.as_str(), s.category.index()))
            })
            .reduce(|a, b| {
                let newer = (b.1, b.2) > (a.1, a.2);
                if newer != forward {
                    b
                } else {
                    a
                }
            });
        let Some((i, _, _)) = pick else { break };
        let s = &mut sources[i];
        let size = s.head.as_ref().map_or(0, |h| h.end - h.start);
        if !taken.is_empty() && page_bytes + size > MAX_PAGE_BYTES {
            break; // left as the head: the page's cursor points at it
        }
        page_bytes += size;
        let head = s.head.take().expect("picked a source with a head");
        s.oldest_taken = Some(if forward {
            s.oldest_taken.unwrap_or(head.start)
        } else {
            head.start
        });
        s.newest_taken_end = Some(if forward {
            head.end
        } else {
            s.newest_taken_end.unwrap_or(head.end)
        });
        taken.push(head.entry);
        s.fill(&mut skipped)?;
    }
    if !forward {
        taken.reverse();
    }
    let more_older = if forward {
        sources.iter().any(|s| s.oldest_taken.unwrap_or(s.lo) > 0)
    } else {
        sources.iter().any(|s| s.head.is_some())
    };
    let cursor = |pos: &dyn Fn(&Source) -> u64| Cursor {
        date: date.clone(),
        positions: sources.iter().map(|s| (s.category, pos(s))).collect(),
    };
    let before = more_older
        .then(|| cursor(&|s: &Source| s.oldest_taken.unwrap_or(if forward { s.lo } else { s.hi })));
    let after = cursor(&|s: &Source| {
        if forward {
            s.newest_taken_end.unwrap_or(s.lo)
        } else {
            s.hi
        }
    });
    Ok(AuditPage {
        entries: taken,
        before,
        after,
        skipped_lines: skipped,
        bytes_read: sources.iter().map(|s| s.lines.bytes_read()).sum(),
    })
}

/// The day to read: the query's, else a cursor's, and all of them must agree.
fn day_of(q: &AuditQuery) -> Result<String, AuditError> {
    if let Some(d) = &q.date {
        if !valid_date(d) {
            return Err(AuditError::BadDate);
        }
    }
    let mut day = q.date.clone();
    for c in [&q.before, &q.after].into_iter().flatten() {
        match &day {
            Some(d) if d != c.date() => {
                return Err(AuditError::BadCursor(
                    "it was made for another day than the one asked".into(),
                ))
            }
            Some(_) => {}
            None => day = Some(c.date().to_string()),
        }
    }
    Ok(day.unwrap_or_else(|| crate::clock::now_rfc3339()[..10].to_string()))
}

/// A cursor position must be the start of a line of the file: a forged offset would otherwise
/// start reading in the middle of an entry.
fn check_position(file: Option<&File>, len: u64, p: u64, c: Category) -> Result<(), AuditError> {
    if p == 0 {
        return Ok(());
    }
    let bad = |why: String| AuditError::BadCursor(why);
    let Some(f) = file.filter(|_| p <= len) else {
        return Err(bad(format!(
            "it points past the end of the day's {} entries",
            c.as_str()
        )));
    };
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, p - 1)?;
    if byte[0] != b'\n' {
        return Err(bad(format!(
            "it does not point at the start of a {} entry",
            c.as_str()
        )));
    }
    Ok(())
}

/// The end of the last complete line at or after `lo` (bytes after it are still being written).
fn complete_end(f: &File, lo: u64, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > lo {
        let from = end.saturating_sub(CHUNK).max(lo);
        let part = &mut buf[..(end - from) as usize];
        f.read_exact_at(part, from)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(lo)
}

/// One parsed entry and where its line is.
struct Head {
    start: u64,
    end: u64,
    ts: String,
    entry: Value,
}

/// One category's file in the merge.
struct Source {
    category: Category,
    lines: Lines,
    head: Option<Head>,
    lo: u64,
    hi: u64,
    oldest_taken: Option<u64>,
    newest_taken_end: Option<u64>,
}

impl Source {
    fn new(category: Category, file: Option<File>, lo: u64, hi: u64, forward: bool) -> Source {
        let lines = match file {
            None => Lines::Empty,
            Some(f) if forward => Lines::Forward(Forward::new(f, lo, hi)),
            Some(f) => Lines::Backward(Backward::new(f, lo, hi)),
        };
        Source {
            category,
            lines,
            head: None,
            lo,
            hi,
            oldest_taken: None,
            newest_taken_end: None,
        }
    }

    /// Reads lines until one parses (counting those that do not) or the range ends.
    fn fill(&mut self, skipped: &mut u64) -> io::Result<()> {
        while self.head.is_none() {
            let Some(line) = self.lines.next()? else {
                return Ok(());
            };
            match line.bytes.as_deref().and_then(parse_entry) {
                Some((ts, entry)) => {
                    self.head = Some(Head {
                        start: line.start,
                        end: line.end,
                        ts,
                        entry,
                    })
                }
                None => *skipped += 1,
            }
        }
        Ok(())
    }
}

/// An entry is a JSON object; its `ts` orders the merge (RFC 3339 UTC sorts as text).
fn parse_entry(bytes: &[u8]) -> Option<(String, Value)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if !v.is_object() {
        return None;
    }
    let ts = v["ts"].as_str().unwrap_or_default().to_string();
    Some((ts, v))
}

/// A line of a file: where it starts and ends (after its newline), and its bytes without the
/// newline (`None` when it was too long to keep).
struct Line {
    start: u64,
    end: u64,
    bytes: Option<Vec<u8>>,
}

enum Lines {
    Empty,
    Backward(Backward),
    Forward(Forward),
}

impl Lines {
    fn next(&mut self) -> io::Result<Option<Line>> {
        match self {
            Lines::Empty => Ok(None),
            Lines::Backward(b) => b.next(),
            Lines::Forward(f) => f.next(),
        }
    }
    fn bytes_read(&self) -> u64 {
        match self {
            Lines::Empty => 0,
            Lines::Backward(b) => b.bytes_read,
            Lines::Forward(f) => f.bytes_read,
        }
    }
}

/// The lines of `[lo, hi)`, newest first; `lo` and `hi` are line starts.
struct Backward {
    file: File,
    lo: u64,
    /// Bytes of the file from `start`, not yet returned (all of `[start, end)` unless the line
    /// being assembled outgrew [`MAX_LINE_BYTES`]).
    window: Vec<u8>,
    start: u64,
    /// Everything from here on has been returned; a line start.
    end: u64,
    bytes_read: u64,
}

impl Backward {
    fn new(file: File, lo: u64, hi: u64) -> Backward {
        Backward {
            file,
            lo,
            window: Vec::new(),
            start: hi,
            end: hi,
            bytes_read: 0,
        }
    }

    fn next(&mut self) -> io::Result<Option<Line>> {
        if self.end <= self.lo {
            return Ok(None);
        }
        let newline = self.end - 1;
        let mut dropped = false;
        loop {
            let searchable = (self.window.len() as u64).min(newline.saturating_sub(self.start));
            let searchable = searchable as usize;
            if let Some(i) = self.window[..searchable].iter().rposition(|&b| b == b'\n') {
                let line_start = self.start + i as u64 + 1;
                let bytes = (!dropped).then(|| self.window[i + 1..searchable].to_vec());
                self.window.truncate(i + 1);
                let line = Line {
                    start: line_start,
                    end: self.end,
                    bytes,
                };
                self.end = line_start;
                return Ok(Some(line));
            }
            if self.start <= self.lo {
                let bytes = (!dropped).then(|| self.window[..searchable].to_vec());
                let line = Line {
                    start: self.lo,
                    end: self.end,
                    bytes,
                };
                self.window.clear();
                self.end = self.lo;
                return Ok(Some(line));
            }
            let from = self.start.saturating_sub(CHUNK).max(self.lo);
            let mut chunk = vec![0u8; (self.start - from) as usize];
            self.file.read_exact_at(&mut chunk, from)?;
            self.bytes_read += chunk.len() as u64;
            if dropped || self.window.len() > MAX_LINE_BYTES {
                // The line is too long to keep: remember only that it is being skipped.
                dropped = true;
                self.window = chunk;
            } else {
                chunk.extend_from_slice(&self.window);
                self.window = chunk;
            }
            self.start = from;
        }
    }
}

/// The lines of `[lo, hi)`, oldest first; `lo` and `hi` are line starts.
struct Forward {
    file: File,
    hi: u64,
    /// Bytes of the file from `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    /// Where the next line starts.
    line_start: u64,
    bytes_read: u64,
}

impl Forward {
    fn new(file: File, lo: u64, hi: u64) -> Forward {
        Forward {
            file,
            hi,
            buf: Vec::new(),
            buf_start: lo,
            line_start: lo,
            bytes_read: 0,
        }
    }

    fn next(&mut self) -> io::Result<Option<Line>> {
        let mut dropped = false;
        loop {
            let from = if dropped {
                0
            } else {
                (self.line_start - self.buf_start) as usize
            };
            if let Some(j) = self.buf[from..].iter().position(|&b| b == b'\n') {
                let nl = from + j;
                let end = self.buf_start + nl as u64 + 1;
                let bytes = (!dropped).then(|| self.buf[from..nl].to_vec());
                let line = Line {
                    start: self.line_start,
                    end,
                    bytes,
                };
                self.line_start = end;
                return Ok(Some(line));
            }
            let buf_end = self.buf_start + self.buf.len() as u64;
            if buf_end >= self.hi {
                return Ok(None);
            }
            // Keep only the unfinished line, then read the next chunk after it.
            if dropped || self.buf.len() - from > MAX_LINE_BYTES {
                dropped = true;
                self.buf.clear();
            } else {
                self.buf.drain(..from);
            }
            self.buf_start = buf_end - self.buf.len() as u64;
            let size = CHUNK.min(self.hi - buf_end) as usize;
            let old = self.buf.len();
            self.buf.resize(old + size, 0);
            self.file.read_exact_at(&mut self.buf[old..], buf_end)?;
            self.bytes_read += size as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(ts: &str, n: usize) -> String {
        format!("{{\"ts\":\"{ts}\",\"category\":\"system\",\"action\":\"a{n}\"}}\n")
    }

    fn day(dir: &Path, category: &str, lines: &[String]) {
        let mut f = File::create(dir.join(format!("{category}_2026-01-01.jsonl"))).unwrap();
        for l in lines {
            f.write_all(l.as_bytes()).unwrap();
        }
    }

    fn q(limit: usize, before: Option<&Cursor>, after: Option<&Cursor>) -> AuditQuery {
        AuditQuery {
            category: None,
            date: Some("2026-01-01".into()),
            limit,
            before: before.cloned(),
            after: after.cloned(),
        }
    }

    fn actions(p: &AuditPage) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pages_backwards_and_forwards_over_merged_files_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        // Two files interleaved in time, with ties on the millisecond.
        let sys: Vec<String> = (0..25)
            .map(|i| entry(&format!("2026-01-01T00:00:{:02}.000Z", i * 2), i))
            .collect();
        let sec: Vec<String> = (0..25)
            .map(|i| {
                entry(
                    &format!("2026-01-01T00:00:{:02}.000Z", i * 2 + (i % 2)),
                    100 + i,
                )
            })
            .collect();
        day(dir.path(), "system", &sys);
        day(dir.path(), "security", &sec);
        let newest = query(dir.path(), &q(1000, None, None)).unwrap();
        assert_eq!(newest.entries.len(), 50);
        assert!(newest.before.is_none());

        let mut back = Vec::new();
        let mut cursor: Option<Cursor> = None;
        for _ in 0..20 {
            let page = query(dir.path(), &q(7, cursor.as_ref(), None)).unwrap();
            let mut a = actions(&page);
            a.extend(back);
            back = a;
            match page.before {
                Some(c) => cursor = Some(Cursor::parse(&c.to_string()).unwrap()),
                None => break,
            }
        }
        assert_eq!(back, actions(&newest), "backwards pages join up exactly");

        let mut fwd = Vec::new();
        let mut cursor = Cursor::parse("2026-01-01~0.0~1.0~2.0~3.0~4.0~5.0~6.0~7.0").unwrap();
        for _ in 0..20 {
            let page = query(dir.path(), &q(6, None, Some(&cursor))).unwrap();
            if page.entries.is_empty() {
                break;
            }
            fwd.extend(actions(&page));
            cursor = page.after;
        }
        assert_eq!(fwd, actions(&newest), "forward pages join up exactly");
    }

    /// Review finding: a page of a thousand near-mebibyte entries held about a gigabyte. Pages
    /// stop at `MAX_PAGE_BYTES`, and their cursors continue exactly where they stopped.
    #[test]
    fn a_page_holds_at_most_max_page_bytes_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let pad = "p".repeat(600 << 10);
        let lines: Vec<String> = (0..20)
            .map(|i| {
                let e = entry(&format!("2026-01-01T00:00:{i:02}.000Z"), i);
                e.replacen("{", &format!("{{\"pad\":\"{pad}\","), 1)
            })
            .collect();
        day(dir.path(), "system", &lines);
        let first = query(dir.path(), &q(1000, None, None)).unwrap();
        let held: usize = first.entries.iter().map(|e| e.to_string().len()).sum();
        assert!(held as u64 <= MAX_PAGE_BYTES, "{held} bytes in one page");
        assert!(first.entries.len() < 20);
        let mut all = actions(&first);
        let mut cursor = first.before;
        while let Some(c) = cursor {
            let page = query(dir.path(), &q(1000, Some(&c), None)).unwrap();
            let mut a = actions(&page);
            a.extend(all);
            all = a;
            cursor = page.before;
        }
        let want: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
        assert_eq!(all, want, "the pages join up");
    }

    #[test]
    fn limit_one_reads_only_the_end_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (0..50_000)
            .map(|i| entry("2026-01-01T00:00:00.000Z", i))
            .collect();
        day(dir.path(), "network", &lines);
        let mut one = q(1, None, None);
        one.category = Some(Category::Network);
        let page = query(dir.path(), &one).unwrap();
        assert_eq!(actions(&page), vec!["a49999"]);
        assert!(page.bytes_read <= 2 * CHUNK, "read {}", page.bytes_read);
    }

    #[test]
    fn torn_and_oversized_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut torn = b"{\"ts\":\"2026-01-01T00:00:01.000Z\",\"action\":\"caf".to_vec();
        torn.push(0xc3);
        torn.push(b'\n');
        let path = dir.path().join("system_2026-01-01.jsonl");
        let mut f = File::create(&path).unwrap();
        f.write_all(entry("2026-01-01T00:00:00.000Z", 1).as_bytes())
            .unwrap();
        f.write_all(&torn).unwrap();
        f.write_all(&vec![b'x'; MAX_LINE_BYTES + 10]).unwrap();
        f.write_all(b"\n[1,2]\n").unwrap();
        f.write_all(entry("2026-01-01T00:00:02.000Z", 2).as_bytes())
            .unwrap();
        f.write_all(b"{\"ts\":\"2026-01-01T00:00:03.000Z\",\"act")
            .unwrap(); // being written
        let page = query(dir.path(), &q(10, None, None)).unwrap();
        assert_eq!(actions(&page), vec!["a1", "a2"]);
        assert_eq!(page.skipped_lines, 3);
        let fwd = Cursor::parse("2026-01-01~7.0").unwrap();
        let mut forward = q(10, None, Some(&fwd));
        forward.category = Some(Category::System);
        let page = query(dir.path(), &forward).unwrap();
        assert_eq!(actions(&page), vec!["a1", "a2"]);
        assert_eq!(page.skipped_lines, 3);
    }

    #[test]
    fn bad_cursors_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        day(
            dir.path(),
            "system",
            &[entry("2026-01-01T00:00:00.000Z", 1)],
        );
        for text in [
            "",
            "bogus",
            "2026-01-01",
            "2026-01-01~",
            "2026-01-01~9.0",
            "2026-01-01~7.-1",
            "2026-01-01~7.+1",
            "2026-01-01~7.0~7.0",
            "2026-01-01~7.99999999999999999999999",
            "../../etc~7.0",
        ] {
            assert!(
                matches!(Cursor::parse(text), Err(AuditError::BadCursor(_))),
                "{text:?}"
            );
        }
        let check = |text: &str, date: Option<&str>| {
            let mut one = q(1, Some(&Cursor::parse(text).unwrap()), None);
            one.category = Some(Category::System);
            one.date = date.map(str::to_string);
            query(dir.path(), &one)
        };
        for (text, date) in [
            ("2026-01-01~7.1", None),               // not a line start
            ("2026-01-01~7.100000", None),          // past the end
            ("2026-01-01~0.0", None),               // other category
            ("2026-01-01~7.0", Some("2026-01-02")), // other day
        ] {
            assert!(
                matches!(check(text, date), Err(AuditError::BadCursor(_))),
                "{text}"
            );
        }
        let len = entry("2026-01-01T00:00:00.000Z", 1).len();
        let page = check(&format!("2026-01-01~7.{len}"), None).unwrap();
        assert_eq!(actions(&page), vec!["a1"]);
        assert_eq!(page.before, None);
    }
}
