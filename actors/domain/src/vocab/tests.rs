use super::*;
use proptest::prelude::*;

fn pack(id: &str, text: &str, converters: &[&str]) -> PackVocab {
    PackVocab {
        pack_id: id.into(),
        vocab: parse_vocab(text),
        converters: converters
            .iter()
            .map(|s| (s.to_string(), format!("converters/{s}.py")))
            .collect(),
    }
}

#[test]
fn parse_cleans_and_skips() {
    let f = parse_vocab("# comment\n\n Car , AUTOMOBILE,car,, auto \ncolour,color\n");
    assert_eq!(
        f.lines,
        vec![vec!["car", "automobile", "auto"], vec!["colour", "color"]]
    );
    let long = "x".repeat(MAX_TERM_CHARS + 1);
    let f = parse_vocab(&format!("a,{long},b\nc,d\u{7}e"));
    assert_eq!(f.lines, vec![vec!["a", "b"], vec!["c"]]);
    assert_eq!(f.problems.len(), 2);
}

#[test]
fn groups_merge_and_the_earliest_line_is_preferred() {
    let v = Vocab::build(&[
        pack("a", "celsius, c\nkm, kilometre", &[]),
        pack("b", "centigrade, celsius\nkilometer, kilometre", &[]),
    ]);
    assert_eq!(
        v.groups(),
        &[
            vec!["celsius".to_string(), "c".into(), "centigrade".into()],
            vec!["km".to_string(), "kilometre".into(), "kilometer".into()],
        ]
    );
    assert_eq!(v.normalize("Centigrade"), "celsius");
    assert_eq!(v.normalize("Unknown Term"), "Unknown Term");
}

#[test]
fn a_late_line_joining_two_groups_keeps_the_earliest_preferred() {
    let v = Vocab::build(&[pack("a", "x, y\np, q\nq, y", &[])]);
    assert_eq!(v.groups().len(), 1);
    assert_eq!(v.groups()[0][0], "x");
    assert_eq!(v.normalize("p"), "x");
}

#[test]
fn converters_are_normalised_and_a_pair_of_two_packs_is_refused_for_both() {
    let v = Vocab::build(&[
        pack(
            "a",
            "celsius, c\nfahrenheit, f",
            &["c_to_f", "bad-name", "m_to_n"],
        ),
        pack("b", "", &["celsius_to_fahrenheit", "km_to_mi"]),
        pack("c", "", &["c_to_f"]),
    ]);
    assert!(v.converter("Celsius", "F").is_none());
    assert_eq!(
        v.conflict("C", "fahrenheit").unwrap(),
        &["a".to_string(), "b".into(), "c".into()]
    );
    let m = v.converter("M", "n").unwrap();
    assert_eq!(
        (m.pack_id.as_str(), m.file.as_str()),
        ("a", "converters/m_to_n.py")
    );
    assert_eq!(v.converter("km", "mi").unwrap().pack_id, "b");
    assert!(v.converter("mi", "km").is_none() && v.conflict("km", "mi").is_none());
    assert_eq!(v.conflicts().count(), 1);
    assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
    // One pack offering a pair twice (through synonyms) keeps its first file.
    let v = Vocab::build(&[pack("a", "celsius, c", &["c_to_f", "celsius_to_f"])]);
    assert_eq!(v.converter("c", "f").unwrap().file, "converters/c_to_f.py");
    assert!(v.conflict("c", "f").is_none());
    assert_eq!(
        parse_converter_stem("a_to_b_to_c"),
        Some(("a".into(), "b_to_c".into()))
    );
    assert_eq!(parse_converter_stem("_to_b"), None);
    assert_eq!(parse_converter_stem("a/b_to_c"), None);
}

#[test]
fn caps_hold() {
    let big: String = (0..MAX_TERMS_PER_FILE + 5)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let f = parse_vocab(&big);
    assert_eq!(
        f.lines.iter().map(Vec::len).sum::<usize>(),
        MAX_TERMS_PER_FILE
    );
    assert!(!f.problems.is_empty());
}

fn term() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h", " A ", "B"])
        .prop_map(String::from)
}

fn file() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::collection::vec(term(), 1..4), 0..6).prop_map(|lines| {
        lines
            .iter()
            .map(|l| l.join(","))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

proptest! {
    /// Every term is in exactly one group; terms of one line share a group; normalising is
    /// idempotent and lands on a group's first term; the build is deterministic.
    #[test]
    fn merging_is_a_partition(files in prop::collection::vec(file(), 0..4)) {
        let packs: Vec<PackVocab> = files.iter().enumerate().map(|(i, t)| pack(&format!("p{i}"), t, &[])).collect();
        let v = Vocab::build(&packs);
        prop_assert_eq!(&v, &Vocab::build(&packs));
        let mut seen = std::collections::HashSet::new();
        for g in v.groups() {
            for t in g {
                prop_assert!(seen.insert(t.clone()), "{} in two groups", t);
                prop_assert_eq!(v.normalize(t), g[0].clone());
            }
        }
        for p in &packs {
            for line in &p.vocab.lines {
                prop_assert!(seen.contains(&line[0]));
                let head = v.normalize(&line[0]);
                for t in line {
                    prop_assert_eq!(v.normalize(t), head.clone());
                    prop_assert_eq!(v.normalize(&v.normalize(t)), head.clone());
                }
            }
        }
        // The preferred term of a group is the first term of the group's earliest line.
        let mut claimed = std::collections::HashSet::new();
        for p in &packs {
            for line in &p.vocab.lines {
                let g = v.normalize(&line[0]);
                if claimed.insert(g.clone()) {
                    prop_assert_eq!(&g, &line[0]);
                }
            }
        }
    }

    /// A pair has a converter exactly when one pack offers it, and is a conflict (naming every
    /// pack offering it) exactly when more offer it: the load order never decides who owns a
    /// pair, so reordering the packs changes neither.
    #[test]
    fn a_pair_belongs_to_its_only_pack_or_to_none(
        offers in prop::collection::vec(prop::collection::vec((0..4usize, 0..4usize), 0..5), 1..5),
        rotate in 0..5usize,
    ) {
        let stems = |o: &Vec<(usize, usize)>| -> Vec<String> {
            o.iter().map(|(f, t)| format!("t{f}_to_u{t}")).collect()
        };
        let packs: Vec<PackVocab> = offers.iter().enumerate().map(|(i, o)| {
            let s = stems(o);
            pack(&format!("p{i}"), "", &s.iter().map(String::as_str).collect::<Vec<_>>())
        }).collect();
        let mut rotated = packs.clone();
        rotated.rotate_left(rotate % packs.len());
        let v = Vocab::build(&packs);
        let w = Vocab::build(&rotated);
        for f in 0..4 {
            for t in 0..4 {
                let (from, to) = (format!("t{f}"), format!("u{t}"));
                let owners: Vec<String> = offers.iter().enumerate()
                    .filter(|(_, o)| o.contains(&(f, t)))
                    .map(|(i, _)| format!("p{i}"))
                    .collect();
                let got = v.converter(&from, &to).map(|c| c.pack_id.clone());
                prop_assert_eq!(&got, &w.converter(&from, &to).map(|c| c.pack_id.clone()));
                match owners.len() {
                    0 => prop_assert!(got.is_none() && v.conflict(&from, &to).is_none()),
                    1 => {
                        prop_assert_eq!(got, Some(owners[0].clone()));
                        prop_assert!(v.conflict(&from, &to).is_none());
                    }
                    _ => {
                        prop_assert!(got.is_none());
                        let mut named = v.conflict(&from, &to).unwrap().to_vec();
                        named.sort();
                        prop_assert_eq!(named, owners);
                        prop_assert!(w.conflict(&from, &to).is_some());
                    }
                }
            }
        }
    }

    /// Any text parses without panicking, and every term kept is clean.
    #[test]
    fn any_text_parses_to_clean_terms(text in ".{0,400}") {
        let f = parse_vocab(&text);
        for line in &f.lines {
            for t in line {
                prop_assert!(!t.is_empty());
                prop_assert_eq!(t, &clean(t));
            }
        }
    }
}
