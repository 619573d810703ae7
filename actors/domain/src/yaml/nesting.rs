//! A linear bound on how deeply a YAML document nests, computed before any parser sees it.
//!
//! Why it exists: serde_yaml's scanner (libyaml) keeps one "simple key" slot per open flow
//! collection and looks at the slots for every token, so a file of n `[` costs O(n²) before the
//! parser reports anything (40 000 `[` took 6 s; a 1 MiB file, minutes). A depth check on the
//! parsed value comes too late to stop that, so this pass walks the text once and refuses a
//! document as soon as its nesting reaches the limit.
//!
//! Counting `[` is not enough: a bracket inside a quoted scalar, a comment, a block scalar (`|`,
//! `>`) or the middle of a plain scalar is text, and an attacker who could make this pass read a
//! region differently from the parser could hide nesting in it (a quote this pass believes open
//! while the parser believes it closed turns the parser's `]]]]` into text here). So the walk
//! follows libyaml's own rules for where tokens start (its `fetch_next_token`, `scan_plain_scalar`,
//! `scan_block_scalar`, `scan_tag` and the simple-key bookkeeping that decides block indentation),
//! and counts what libyaml would push: flow collections, block collections (including a sequence
//! written at its mapping's indentation, which libyaml does not push), tags (serde_yaml wraps a
//! tagged node in one more level) and the mappings libyaml starts only at a `:` — around a
//! collection used as a block key (`{a}: b`) and around a flow sequence's `key: value` entry
//! (`[a: [b]]`), one level deeper than the text before the `:` showed. Where libyaml would stop with an error, nothing after matters:
//! the parser never reads it.
//!
//! The bound is conservative: a tag counts for the rest of its enclosing collection, and an
//! indentation-less sequence for the rest of its mapping. Aliases are not expanded here; the
//! depth of the expanded value is checked after parsing (see `yaml.rs`).

/// Block collection kinds, as libyaml's `roll_indent` pushes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Mapping,
}

/// An open block collection: its indentation column and how many levels it stands for.
#[derive(Debug)]
struct Block {
    column: usize,
    kind: Kind,
    weight: usize,
    /// A sequence already sits at this mapping's indentation (counted once).
    indentless: bool,
}

/// A possible simple key of the block context (libyaml keeps one per flow level; only the block
/// level's decides indentation).
#[derive(Debug, Clone, Copy, Default)]
struct SimpleKey {
    possible: bool,
    line: usize,
    index: usize,
    column: usize,
    /// The most collections open at once since the key began: a block mapping that starts at
    /// this key wraps everything the key opened in one more level.
    peak: usize,
}

/// An open flow collection.
#[derive(Debug)]
struct Flow {
    /// How many levels it stands for (1, plus tags and an implicit pair mapping).
    weight: usize,
    /// A flow sequence, where `key: value` makes an implicit single-pair mapping.
    sequence: bool,
    /// The most collections open at once since the current entry began.
    peak: usize,
    /// The current entry already made its implicit mapping.
    paired: bool,
}

/// How far a simple key may be from its `:` (libyaml's limit, in characters).
const SIMPLE_KEY_REACH: usize = 1024;

/// Walks `text` the way libyaml tokenizes it and returns the most collections open at once.
/// Returns `Err(line)` (1-based) at the first point where `limit` collections are open.
#[cfg(test)]
pub(crate) fn max_nesting(text: &str, limit: usize) -> Result<usize, usize> {
    Scanner::new(text, limit).run().map(|s| s.max)
}

/// What one walk found: the most collections open at once, and the alias tokens (`*name`) as
/// libyaml's scanner sees them — inside a plain word (`it's`) or after a multi-line quoted string
/// a `*` is text, and only a token-starting one is an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scan {
    pub max: usize,
    pub aliases: usize,
}

/// [`max_nesting`] with the alias count.
pub(crate) fn scan(text: &str, limit: usize) -> Result<Scan, usize> {
    Scanner::new(text, limit).run()
}

struct Scanner<'a> {
    text: &'a str,
    /// Byte offset of the current character.
    pos: usize,
    /// Characters consumed (libyaml's `mark.index`, which bounds a simple key's reach).
    index: usize,
    line: usize,
    column: usize,
    /// The open flow collections, innermost last.
    flow: Vec<Flow>,
    block: Vec<Block>,
    /// Levels added outside any collection (a tag on the root node).
    base: usize,
    open: usize,
    max: usize,
    /// Alias tokens seen.
    aliases: usize,
    limit: usize,
    simple_key_allowed: bool,
    key: SimpleKey,
}

fn is_break(c: Option<char>) -> bool {
    matches!(c, Some('\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
}

fn is_blank(c: Option<char>) -> bool {
    matches!(c, Some(' ' | '\t'))
}

fn is_breakz(c: Option<char>) -> bool {
    c.is_none() || c == Some('\0') || is_break(c)
}

fn is_blankz(c: Option<char>) -> bool {
    is_blank(c) || is_breakz(c)
}

/// libyaml's `IS_ALPHA`: the characters of an anchor or alias name.
fn is_alpha(c: Option<char>) -> bool {
    matches!(c, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str, limit: usize) -> Self {
        Scanner {
            text,
            pos: 0,
            index: 0,
            line: 0,
            column: 0,
            flow: Vec::new(),
            block: Vec::new(),
            base: 0,
            open: 0,
            max: 0,
            aliases: 0,
            limit,
            simple_key_allowed: true,
            key: SimpleKey::default(),
        }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.text[self.pos..].chars().nth(ahead)
    }

    fn cur(&self) -> Option<char> {
        self.peek(0)
    }

    /// Consumes one character; a line break (`\r\n` as one) moves to the next line.
    fn bump(&mut self) {
        let Some(c) = self.cur() else { return };
        self.pos += c.len_utf8();
        self.index += 1;
        if is_break(Some(c)) {
            if c == '\r' && self.cur() == Some('\n') {
                self.pos += 1;
                self.index += 1;
            }
            self.line += 1;
            self.column = 0;
        } else {
            self.column += 1;
        }
    }

    fn in_flow(&self) -> bool {
        !self.flow.is_empty()
    }

    /// libyaml's `parser->indent`: the innermost block collection's column, -1 at the top.
    fn indent(&self) -> isize {
        self.block.last().map_or(-1, |b| b.column as isize)
    }

    fn grew(&mut self, by: usize) -> Result<(), usize> {
        self.open += by;
        self.reached(self.open)
    }

    /// Records that `level` collections were open at once (now, or around a key whose mapping
    /// started after it was read), for the innermost entry or simple key too.
    fn reached(&mut self, level: usize) -> Result<(), usize> {
        self.max = self.max.max(level);
        match self.flow.last_mut() {
            Some(f) => f.peak = f.peak.max(level),
            None if self.key.possible => self.key.peak = self.key.peak.max(level),
            None => {}
        }
        if level >= self.limit {
            Err(self.line + 1)
        } else {
            Ok(())
        }
    }

    /// A flow sequence's entry became a `key: value` pair: libyaml wraps it in a mapping, one
    /// level around the key already read and around the rest of the entry.
    fn pair(&mut self) -> Result<(), usize> {
        let Some(f) = self.flow.last_mut() else {
            return Ok(());
        };
        if !f.sequence || f.paired {
            return Ok(());
        }
        f.paired = true;
        f.weight += 1;
        let key = f.peak + 1;
        self.grew(1)?;
        self.reached(key)
    }

    fn at_document_indicator(&self) -> bool {
        self.column == 0
            && matches!(
                (self.peek(0), self.peek(1), self.peek(2)),
                (Some('-'), Some('-'), Some('-')) | (Some('.'), Some('.'), Some('.'))
            )
            && is_blankz(self.peek(3))
    }

    fn run(mut self) -> Result<Scan, usize> {
        loop {
            self.skip_to_next_token();
            let Some(c) = self.cur() else {
                return Ok(Scan {
                    max: self.max,
                    aliases: self.aliases,
                });
            };
            if self.key.possible
                && (self.key.line < self.line || self.key.index + SIMPLE_KEY_REACH < self.index)
            {
                self.key.possible = false;
            }
            if !self.in_flow() {
                self.unroll(self.column as isize);
            }
            let next = self.peek(1);
            match c {
                '%' if self.column == 0 => {
                    // A directive; its tag prefix may hold any URI character.
                    self.unroll(-1);
                    self.key.possible = false;
                    self.simple_key_allowed = false;
                    while !is_breakz(self.cur()) {
                        self.bump();
                    }
                }
                _ if self.at_document_indicator() => {
                    self.unroll(-1);
                    self.key.possible = false;
                    self.simple_key_allowed = false;
                    for _ in 0..3 {
                        self.bump();
                    }
                }
                '[' | '{' => {
                    self.save_key();
                    self.flow.push(Flow {
                        weight: 1,
                        sequence: c == '[',
                        peak: self.open,
                        paired: false,
                    });
                    self.simple_key_allowed = true;
                    self.bump();
                    self.grew(1)?;
                }
                ']' | '}' => {
                    match self.flow.pop() {
                        Some(f) => {
                            self.open -= f.weight;
                            // What the closed collection reached counts for the entry (or
                            // key) it sits in.
                            self.reached(f.peak)?;
                        }
                        None => self.key.possible = false,
                    }
                    self.simple_key_allowed = false;
                    self.bump();
                }
                ',' => {
                    self.remove_key();
                    if let Some(f) = self.flow.last_mut() {
                        f.peak = self.open;
                        f.paired = false;
                    }
                    self.simple_key_allowed = true;
                    self.bump();
                }
                '-' if is_blankz(next) => {
                    if !self.in_flow() {
                        self.roll(self.column, Kind::Sequence)?;
                    }
                    self.remove_key();
                    self.simple_key_allowed = true;
                    self.bump();
                }
                '?' if self.in_flow() || is_blankz(next) => {
                    if self.in_flow() {
                        self.pair()?;
                    } else {
                        self.roll(self.column, Kind::Mapping)?;
                    }
                    self.remove_key();
                    self.simple_key_allowed = !self.in_flow();
                    self.bump();
                }
                ':' if self.in_flow() || is_blankz(next) => {
                    if self.in_flow() {
                        self.pair()?;
                        self.simple_key_allowed = false;
                    } else if self.key.possible {
                        let key = self.key.peak + 1;
                        if self.roll(self.key.column, Kind::Mapping)? {
                            // The mapping starts before its key: the key's collections sit
                            // one level deeper than they were counted.
                            self.key.possible = false;
                            self.reached(key)?;
                        }
                        self.key.possible = false;
                        self.simple_key_allowed = false;
                    } else {
                        self.roll(self.column, Kind::Mapping)?;
                        self.simple_key_allowed = true;
                    }
                    self.bump();
                }
                '*' | '&' => {
                    if c == '*' {
                        self.aliases += 1;
                    }
                    self.save_key();
                    self.simple_key_allowed = false;
                    self.bump();
                    while is_alpha(self.cur()) {
                        self.bump();
                    }
                }
                '!' => {
                    self.save_key();
                    self.simple_key_allowed = false;
                    self.tag()?;
                }
                '|' | '>' if !self.in_flow() => {
                    self.remove_key();
                    self.simple_key_allowed = true;
                    self.block_scalar();
                }
                '\'' | '"' => {
                    self.save_key();
                    self.simple_key_allowed = false;
                    self.quoted(c);
                }
                _ => {
                    // Anything else starts a plain scalar (or is an error, after which the parser
                    // reads nothing more, so treating it as text is harmless).
                    self.save_key();
                    self.simple_key_allowed = false;
                    let before = self.pos;
                    self.plain();
                    if self.pos == before {
                        // A character no rule consumes (a NUL ends libyaml's input): step over
                        // it, so the walk always advances and stays linear.
                        self.bump();
                    }
                }
            }
        }
    }

    /// libyaml's `scan_to_next_token`: spaces, tabs where allowed, comments and line breaks.
    fn skip_to_next_token(&mut self) {
        loop {
            if self.column == 0 && self.cur() == Some('\u{feff}') {
                self.bump();
            }
            while self.cur() == Some(' ')
                || ((self.in_flow() || !self.simple_key_allowed) && self.cur() == Some('\t'))
            {
                self.bump();
            }
            if self.cur() == Some('#') {
                while !is_breakz(self.cur()) {
                    self.bump();
                }
            }
            if !is_break(self.cur()) {
                return;
            }
            self.bump();
            if !self.in_flow() {
                self.simple_key_allowed = true;
            }
        }
    }

    fn save_key(&mut self) {
        if self.simple_key_allowed && !self.in_flow() {
            self.key = SimpleKey {
                possible: true,
                line: self.line,
                index: self.index,
                column: self.column,
                peak: self.open,
            };
        }
    }

    fn remove_key(&mut self) {
        if !self.in_flow() {
            self.key.possible = false;
        }
    }

    /// libyaml's `unroll_indent`: closes block collections indented deeper than `column`.
    fn unroll(&mut self, column: isize) {
        while let Some(top) = self.block.last() {
            if top.column as isize <= column {
                break;
            }
            self.open -= top.weight;
            self.block.pop();
        }
    }

    /// libyaml's `roll_indent`, plus the level libyaml leaves implicit: a sequence written at
    /// its mapping's own indentation (`key:` then `- item` on the same column).
    /// Returns whether a new collection opened at `column`.
    fn roll(&mut self, column: usize, kind: Kind) -> Result<bool, usize> {
        if self.indent() < column as isize {
            self.block.push(Block {
                column,
                kind,
                weight: 1,
                indentless: false,
            });
            self.grew(1)?;
            return Ok(true);
        }
        if let Some(top) = self.block.last_mut() {
            if kind == Kind::Sequence
                && top.column == column
                && top.kind == Kind::Mapping
                && !top.indentless
            {
                top.indentless = true;
                top.weight += 1;
                self.grew(1)?;
            }
        }
        Ok(false)
    }

    /// A tag wraps the next node in one more level; it is charged to the innermost open
    /// collection for as long as that stays open.
    fn tag(&mut self) -> Result<(), usize> {
        self.bump();
        if self.cur() == Some('<') {
            while !is_breakz(self.cur()) && self.cur() != Some('>') {
                self.bump();
            }
            self.bump();
        }
        while !(is_blankz(self.cur()) || self.in_flow() && self.cur() == Some(',')) {
            self.bump();
        }
        if let Some(f) = self.flow.last_mut() {
            f.weight += 1;
        } else if let Some(b) = self.block.last_mut() {
            b.weight += 1;
        } else {
            self.base += 1;
        }
        self.grew(1)
    }

    /// A single- or double-quoted scalar, across lines: `''` and `\x` do not end it.
    fn quoted(&mut self, quote: char) {
        self.bump();
        loop {
            match self.cur() {
                None => return,
                Some('\'') if quote == '\'' => {
                    self.bump();
                    if self.cur() == Some('\'') {
                        self.bump();
                    } else {
                        return;
                    }
                }
                Some('"') if quote == '"' => {
                    self.bump();
                    return;
                }
                Some('\\') if quote == '"' => {
                    self.bump();
                    self.bump();
                }
                Some(_) => self.bump(),
            }
        }
    }

    /// libyaml's `scan_plain_scalar`: quotes, `[` (in the block context) and `- ` inside it are
    /// text; it continues on the next lines while they are indented deeper than its collection.
    fn plain(&mut self) {
        let indent = self.indent() + 1;
        let mut leading_blanks = false;
        loop {
            if self.at_document_indicator() || self.cur() == Some('#') {
                break;
            }
            while !is_blankz(self.cur()) {
                let c = self.cur();
                if c == Some(':') && is_blankz(self.peek(1)) {
                    break;
                }
                if self.in_flow() && matches!(c, Some(',' | '[' | ']' | '{' | '}')) {
                    break;
                }
                if self.in_flow()
                    && c == Some(':')
                    && matches!(self.peek(1), Some(',' | '?' | '[' | ']' | '{' | '}'))
                {
                    break; // an error in libyaml
                }
                self.bump();
            }
            if !(is_blank(self.cur()) || is_break(self.cur())) {
                break;
            }
            while is_blank(self.cur()) || is_break(self.cur()) {
                if is_break(self.cur()) {
                    leading_blanks = true;
                }
                self.bump();
            }
            if !self.in_flow() && (self.column as isize) < indent {
                break;
            }
        }
        if leading_blanks {
            self.simple_key_allowed = true;
        }
    }

    /// libyaml's `scan_block_scalar`: the header, then every line indented at least as far as
    /// the content (given by an indentation indicator or by the first non-empty line).
    fn block_scalar(&mut self) {
        self.bump();
        let mut increment = 0usize;
        let digit = |c: Option<char>| c.and_then(|c| c.to_digit(10)).map(|d| d as usize);
        if matches!(self.cur(), Some('+' | '-')) {
            self.bump();
            if let Some(d) = digit(self.cur()) {
                increment = d;
                self.bump();
            }
        } else if let Some(d) = digit(self.cur()) {
            increment = d;
            self.bump();
            if matches!(self.cur(), Some('+' | '-')) {
                self.bump();
            }
        }
        while is_blank(self.cur()) {
            self.bump();
        }
        if self.cur() == Some('#') {
            while !is_breakz(self.cur()) {
                self.bump();
            }
        }
        if !is_breakz(self.cur()) {
            return; // an error in libyaml
        }
        self.bump();
        let parent = self.indent();
        let mut indent = match increment {
            0 => 0,
            d if parent >= 0 => parent as usize + d,
            d => d,
        };
        self.block_scalar_breaks(&mut indent, parent);
        while self.column == indent && self.cur().is_some() {
            while !is_breakz(self.cur()) {
                self.bump();
            }
            if self.cur().is_none() {
                return;
            }
            self.bump();
            self.block_scalar_breaks(&mut indent, parent);
        }
    }

    /// libyaml's `scan_block_scalar_breaks`: empty lines and indentation, detecting the
    /// content's indentation when it is not given.
    fn block_scalar_breaks(&mut self, indent: &mut usize, parent: isize) {
        let mut max_indent = 0;
        loop {
            while (*indent == 0 || self.column < *indent) && self.cur() == Some(' ') {
                self.bump();
            }
            max_indent = max_indent.max(self.column);
            if !is_break(self.cur()) {
                break;
            }
            self.bump();
        }
        if *indent == 0 {
            *indent = max_indent.max((parent + 1).max(1) as usize);
        }
    }
}

#[cfg(test)]
mod tests;
