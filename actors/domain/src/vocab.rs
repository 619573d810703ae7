//! Vocabulary and converters (contract §9): every approved pack's `vocab.txt` (lines of
//! comma-separated synonyms, the first term preferred) merged into groups, and the converters
//! packs offer (`converters/<from>_to_<to>.py`), keyed by the normalised terms.
//!
//! Rules (pure; the runtime reads the files and calls these):
//! * A term is trimmed and lower-cased; empty terms are dropped; a term longer than
//!   [`MAX_TERM_CHARS`] characters or holding a control character is refused (reported).
//! * Blank lines and lines starting with `#` are ignored. A file over [`MAX_VOCAB_BYTES`] is not
//!   read; past [`MAX_TERMS_PER_FILE`] terms the rest of a file is ignored (reported), and past
//!   [`MAX_TERMS_TOTAL`] terms over all packs the rest of the packs' lines are (reported).
//! * Lines sharing a term merge into one group (union-find). The preferred term of a group is
//!   the first term of its earliest line, lines ordered by the packs' load order, then by line
//!   number: the same files in the same order always give the same groups. Within a group the
//!   preferred term comes first, then the others in the order they were first seen.
//! * A converter's file stem is split at its first `_to_`: `celsius_to_fahrenheit` converts
//!   `celsius` to `fahrenheit`. Both terms are normalised through the vocabulary. Two or more
//!   packs offering the same (from, to) is a *conflict*: the pair is refused for all of them (no
//!   converter runs; load order is self-declared, so "the earliest wins" would let any pack take
//!   a common pair over) and reported, until only one pack offers it. One pack offering a pair
//!   twice (through synonyms) keeps its first file.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Largest `vocab.txt` read.
pub const MAX_VOCAB_BYTES: usize = 256 * 1024;
/// Most terms read from one file.
pub const MAX_TERMS_PER_FILE: usize = 10_000;
/// Most terms over every pack.
pub const MAX_TERMS_TOTAL: usize = 100_000;
/// Longest term (characters).
pub const MAX_TERM_CHARS: usize = 128;
/// Most converters kept.
pub const MAX_CONVERTERS: usize = 10_000;

/// The canonical spelling of a term: trimmed and lower-cased.
pub fn clean(term: &str) -> String {
    term.trim().to_lowercase()
}

/// One pack's `vocab.txt`, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VocabFile {
    /// Lines of synonyms (each non-empty, cleaned, without duplicates), the preferred first.
    pub lines: Vec<Vec<String>>,
    /// What was refused or ignored, with the line number.
    pub problems: Vec<String>,
}

/// Parses a `vocab.txt` (see the module docs).
pub fn parse_vocab(text: &str) -> VocabFile {
    let mut out = VocabFile::default();
    let mut count = 0usize;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut terms: Vec<String> = Vec::new();
        for raw in t.split(',') {
            let term = clean(raw);
            if term.is_empty() || terms.contains(&term) {
                continue;
            }
            if term.chars().count() > MAX_TERM_CHARS || term.chars().any(char::is_control) {
                out.problems.push(format!(
                    "vocab.txt:{}: a term longer than {MAX_TERM_CHARS} characters or holding a control character was ignored",
                    n + 1
                ));
                continue;
            }
            if count >= MAX_TERMS_PER_FILE {
                out.problems.push(format!(
                    "vocab.txt:{}: more than {MAX_TERMS_PER_FILE} terms; the rest of the file was ignored",
                    n + 1
                ));
                if !terms.is_empty() {
                    out.lines.push(terms);
                }
                return out;
            }
            count += 1;
            terms.push(term);
        }
        if !terms.is_empty() {
            out.lines.push(terms);
        }
    }
    out
}

/// `<from>_to_<to>` (a converter's file stem) → the cleaned (from, to), or `None` when the stem
/// has no `_to_` with a term on each side.
pub fn parse_converter_stem(stem: &str) -> Option<(String, String)> {
    let (from, to) = stem.split_once("_to_")?;
    let (from, to) = (clean(from), clean(to));
    let ok = |t: &str| {
        !t.is_empty()
            && t.chars().count() <= MAX_TERM_CHARS
            && t.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    (ok(&from) && ok(&to)).then_some((from, to))
}

/// A converter a pack offers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Converter {
    /// The preferred term of the source (after normalisation).
    pub from: String,
    /// The preferred term of the target.
    pub to: String,
    pub pack_id: String,
    /// The file relative to the pack subdir (`converters/<stem>.py`).
    #[serde(skip)]
    pub file: String,
}

/// A (from, to) pair offered by more than one pack: refused for all of them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConverterConflict {
    pub from: String,
    pub to: String,
    /// The packs offering it, in load order.
    pub pack_ids: Vec<String>,
}

/// The merged vocabulary and the converters (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocab {
    /// Groups, each with its preferred term first; in the order their preferred term was seen.
    groups: Vec<Vec<String>>,
    /// term → index in `groups`.
    index: HashMap<String, usize>,
    /// (from, to) → converter.
    converters: BTreeMap<(String, String), Converter>,
    /// (from, to) → the packs offering it, when more than one does (refused).
    conflicts: BTreeMap<(String, String), Vec<String>>,
    /// What was refused while building (clashes, caps), for diagnostics.
    pub problems: Vec<String>,
}

/// One pack's contribution, in load order.
#[derive(Debug, Clone, Default)]
pub struct PackVocab {
    pub pack_id: String,
    pub vocab: VocabFile,
    /// Converter file stems (`celsius_to_fahrenheit`) with their file.
    pub converters: Vec<(String, String)>,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

impl Vocab {
    /// Merges `packs` (in load order; see the module docs).
    pub fn build(packs: &[PackVocab]) -> Vocab {
        let mut v = Vocab::default();
        // Terms in first-seen order; each line's first term; union-find over term ids.
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut terms: Vec<String> = Vec::new();
        let mut parent: Vec<usize> = Vec::new();
        // For every term: the order of the earliest line whose *first* term it is.
        let mut first_rank: Vec<Option<usize>> = Vec::new();
        let mut line_rank = 0usize;
        'packs: for p in packs {
            for problem in &p.vocab.problems {
                v.problems.push(format!("pack {:?}: {problem}", p.pack_id));
            }
            for line in &p.vocab.lines {
                if terms.len() + line.len() > MAX_TERMS_TOTAL {
                    v.problems.push(format!(
                        "pack {:?}: the vocabulary holds {MAX_TERMS_TOTAL} terms at most; the rest was ignored",
                        p.pack_id
                    ));
                    break 'packs;
                }
                let mut line_ids = Vec::with_capacity(line.len());
                for t in line {
                    let id = *ids.entry(t.clone()).or_insert_with(|| {
                        terms.push(t.clone());
                        parent.push(terms.len() - 1);
                        first_rank.push(None);
                        terms.len() - 1
                    });
                    line_ids.push(id);
                }
                if let Some(&head) = line_ids.first() {
                    first_rank[head].get_or_insert(line_rank);
                    for &other in &line_ids[1..] {
                        let (a, b) = (find(&mut parent, head), find(&mut parent, other));
                        if a != b {
                            parent[b] = a;
                        }
                    }
                }
                line_rank += 1;
            }
        }
        // Each root's preferred term: the term with the smallest first_rank in its group.
        let mut best: HashMap<usize, (usize, usize)> = HashMap::new(); // root → (rank, term)
        for (t, rank) in first_rank.iter().enumerate() {
            if let Some(rank) = *rank {
                let root = find(&mut parent, t);
                let e = best.entry(root).or_insert((rank, t));
                if rank < e.0 {
                    *e = (rank, t);
                }
            }
        }
        let mut group_of_root: HashMap<usize, usize> = HashMap::new();
        let mut order: Vec<(usize, usize)> =
            best.iter().map(|(&r, &(rank, _))| (rank, r)).collect();
        order.sort_unstable();
        for (_, root) in order {
            group_of_root.insert(root, v.groups.len());
            v.groups.push(vec![terms[best[&root].1].clone()]);
        }
        for (t, term) in terms.iter().enumerate() {
            let root = find(&mut parent, t);
            let g = group_of_root[&root];
            if v.groups[g][0] != *term {
                v.groups[g].push(term.clone());
            }
            v.index.insert(term.clone(), g);
        }
        for p in packs {
            for (stem, file) in &p.converters {
                let Some((from, to)) = parse_converter_stem(stem) else {
                    v.problems.push(format!(
                        "pack {:?}: {file}: a converter is named <from>_to_<to>.py (terms of letters, digits, _ - .); ignored",
                        p.pack_id
                    ));
                    continue;
                };
                let key = (v.preferred(&from).to_string(), v.preferred(&to).to_string());
                if let Some(owners) = v.conflicts.get_mut(&key) {
                    if !owners.contains(&p.pack_id) {
                        owners.push(p.pack_id.clone());
                    }
                    continue;
                }
                if let Some(kept) = v.converters.get(&key) {
                    if kept.pack_id == p.pack_id {
                        v.problems.push(format!(
                            "pack {:?}: {file}: the converter {} → {} is offered twice by this pack; {} is kept",
                            p.pack_id, key.0, key.1, kept.file
                        ));
                        continue;
                    }
                    let kept = kept.pack_id.clone();
                    v.converters.remove(&key);
                    v.conflicts.insert(key, vec![kept, p.pack_id.clone()]);
                    continue;
                }
                if v.converters.len() >= MAX_CONVERTERS {
                    v.problems.push(format!(
                        "pack {:?}: more than {MAX_CONVERTERS} converters; the rest were ignored",
                        p.pack_id
                    ));
                    break;
                }
                v.converters.insert(
                    key.clone(),
                    Converter {
                        from: key.0,
                        to: key.1,
                        pack_id: p.pack_id.clone(),
                        file: file.clone(),
                    },
                );
            }
        }
        for ((from, to), owners) in &v.conflicts {
            v.problems.push(format!(
                "the converter {from} → {to} is offered by packs {owners:?}: refused for all of them until only one pack offers it"
            ));
        }
        v
    }

    /// The preferred term of `term` (cleaned), or the cleaned term itself when no group holds it.
    pub fn preferred<'a>(&'a self, term: &'a str) -> &'a str {
        match self.index.get(term) {
            Some(&g) => &self.groups[g][0],
            None => term,
        }
    }

    /// `kernel:vocab.normalize`: the preferred term of `term`, or `term` unchanged when unknown.
    pub fn normalize(&self, term: &str) -> String {
        match self.index.get(&clean(term)) {
            Some(&g) => self.groups[g][0].clone(),
            None => term.to_string(),
        }
    }

    /// The converter from `from` to `to` (both normalised first).
    pub fn converter(&self, from: &str, to: &str) -> Option<&Converter> {
        let (from, to) = (clean(from), clean(to));
        let key = (
            self.preferred(&from).to_string(),
            self.preferred(&to).to_string(),
        );
        self.converters.get(&key)
    }

    /// The packs that all offer the converter from `from` to `to` (normalised first), when
    /// more than one does: the pair is refused.
    pub fn conflict(&self, from: &str, to: &str) -> Option<&[String]> {
        let (from, to) = (clean(from), clean(to));
        let key = (
            self.preferred(&from).to_string(),
            self.preferred(&to).to_string(),
        );
        self.conflicts.get(&key).map(Vec::as_slice)
    }

    /// Every refused pair, ordered by (from, to).
    pub fn conflicts(&self) -> impl Iterator<Item = ConverterConflict> + '_ {
        self.conflicts
            .iter()
            .map(|((from, to), owners)| ConverterConflict {
                from: from.clone(),
                to: to.clone(),
                pack_ids: owners.clone(),
            })
    }

    /// Every group, preferred term first.
    pub fn groups(&self) -> &[Vec<String>] {
        &self.groups
    }

    /// Every converter, ordered by (from, to).
    pub fn converters(&self) -> impl Iterator<Item = &Converter> {
        self.converters.values()
    }
}

#[cfg(test)]
mod tests;
