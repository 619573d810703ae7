//! The load order of packs (contract §2.3, §16 "Load order"). Packs with `load_order` come first
//! (ascending, ties by id); the rest follow in a topological order in which a provider of a
//! service comes before the packs requiring it, ties broken by id (Kahn's algorithm over a
//! min-ordered ready set). A `requires` no pack provides and a dependency cycle are reported,
//! per pack; the packs concerned still load (fail-soft): the unmet requirement is ignored, and
//! packs caught in or behind a cycle come last, in id order.
//!
//! The order governs component setup, lib runs and which pack keeps a clashing route.

use super::PackMeta;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What is wrong with a pack's place in the order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadProblemKind {
    /// It requires a service no pack provides.
    UnmetRequires,
    /// It is part of a dependency cycle (or between two).
    Cycle,
    /// It requires a service only packs in a cycle provide.
    BehindCycle,
}

/// One problem of one pack's place in the order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadProblem {
    pub pack_id: String,
    /// `unmet_requires`, `cycle` or `behind_cycle`.
    #[serde(rename = "problem")]
    pub kind: LoadProblemKind,
    /// The service concerned (unmet requirements).
    pub service: Option<String>,
    /// The packs of the cycle (cycles).
    pub packs: Vec<String>,
    /// What is wrong and what happens now.
    pub message: String,
}

/// The load order and what was wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadOrder {
    /// Every pack id given, each once.
    pub order: Vec<String>,
    /// Unmet requirements and cycles, by pack; the packs still load.
    pub problems: Vec<LoadProblem>,
}

impl LoadOrder {
    /// The problems of one pack, as messages.
    pub fn problems_of(&self, pack_id: &str) -> Vec<String> {
        self.problems
            .iter()
            .filter(|p| p.pack_id == pack_id)
            .map(|p| p.message.clone())
            .collect()
    }
}

/// Orders `packs` (see the module docs). Deterministic: the same packs in any input order give
/// the same answer. Costs O((packs + edges) · log packs); the edges are bounded by the services
/// each pack may declare (`MAX_SERVICES`).
pub fn load_order(packs: &[PackMeta]) -> LoadOrder {
    let mut out = LoadOrder::default();
    // One entry per id (the Registry never passes two; a duplicate is ignored here).
    let mut by_id: BTreeMap<&str, &PackMeta> = BTreeMap::new();
    for p in packs {
        by_id.entry(p.pack_id.as_str()).or_insert(p);
    }
    let mut explicit: Vec<&PackMeta> = by_id
        .values()
        .copied()
        .filter(|p| p.load_order.is_some())
        .collect();
    explicit.sort_by(|a, b| {
        a.load_order
            .cmp(&b.load_order)
            .then_with(|| a.pack_id.cmp(&b.pack_id))
    });
    out.order.extend(explicit.iter().map(|p| p.pack_id.clone()));

    let mut providers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in by_id.values() {
        for s in &p.connectivity.provides {
            providers
                .entry(s.as_str())
                .or_default()
                .insert(p.pack_id.as_str());
        }
    }
    // Unmet requirements, for every pack (an explicit place does not make a service appear).
    for p in by_id.values() {
        let mut seen = BTreeSet::new();
        for s in &p.connectivity.requires {
            if !providers.contains_key(s.as_str()) && seen.insert(s.as_str()) {
                out.problems.push(LoadProblem {
                    pack_id: p.pack_id.clone(),
                    kind: LoadProblemKind::UnmetRequires,
                    service: Some(s.clone()),
                    packs: Vec::new(),
                    message: format!(
                        "requires service {s:?}, which no pack provides; loaded without it"
                    ),
                });
            }
        }
    }

    // The rest: before[p] = packs among the rest that must come before p; after[q] the reverse.
    let rest: BTreeSet<&str> = by_id
        .values()
        .filter(|p| p.load_order.is_none())
        .map(|p| p.pack_id.as_str())
        .collect();
    let mut before: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut after: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for id in &rest {
        let entry = before.entry(id).or_default();
        for s in &by_id[id].connectivity.requires {
            for provider in providers.get(s.as_str()).into_iter().flatten() {
                if provider != id && rest.contains(provider) {
                    entry.insert(provider);
                    after.entry(provider).or_default().insert(id);
                }
            }
        }
    }
    let mut waiting: BTreeMap<&str, usize> = before.iter().map(|(k, v)| (*k, v.len())).collect();
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while let Some(id) = ready.pop_first() {
        placed.insert(id);
        out.order.push(id.to_string());
        for next in after.get(id).into_iter().flatten() {
            if let Some(n) = waiting.get_mut(next) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(next);
                }
            }
        }
    }
    let stuck: BTreeSet<&str> = rest.difference(&placed).copied().collect();
    if !stuck.is_empty() {
        // Trim the stuck packs that only wait on a cycle (nothing stuck waits on them): what
        // remains is in a cycle or between two.
        // (Kahn's algorithm again, backwards: peel the stuck packs no stuck pack waits on.)
        let mut core = stuck.clone();
        let mut waited_on: BTreeMap<&str, usize> = stuck
            .iter()
            .map(|id| {
                let n = after
                    .get(id)
                    .into_iter()
                    .flatten()
                    .filter(|n| stuck.contains(*n))
                    .count();
                (*id, n)
            })
            .collect();
        let mut leaves: Vec<&str> = waited_on
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        while let Some(leaf) = leaves.pop() {
            core.remove(leaf);
            for b in before.get(leaf).into_iter().flatten() {
                if let Some(n) = waited_on.get_mut(b) {
                    *n -= 1;
                    if *n == 0 {
                        leaves.push(b);
                    }
                }
            }
        }
        let members: Vec<String> = core.iter().map(|s| s.to_string()).collect();
        for id in &stuck {
            let (kind, message) = if core.contains(id) {
                (
                    LoadProblemKind::Cycle,
                    format!(
                        "dependency cycle among packs {members:?}; they load after the others, in id order"
                    ),
                )
            } else {
                (
                    LoadProblemKind::BehindCycle,
                    format!(
                        "requires a service provided only by packs in a dependency cycle ({members:?}); loads after the others, in id order"
                    ),
                )
            };
            out.problems.push(LoadProblem {
                pack_id: id.to_string(),
                kind,
                service: None,
                packs: members.clone(),
                message,
            });
        }
        out.order.extend(stuck.iter().map(|s| s.to_string()));
    }
    out.problems
        .sort_by(|a, b| a.pack_id.cmp(&b.pack_id).then(a.message.cmp(&b.message)));
    out
}

#[cfg(test)]
mod tests {
    use super::super::Connectivity;
    use super::*;
    use proptest::prelude::*;

    fn meta(id: &str, provides: &[&str], requires: &[&str], order: Option<i64>) -> PackMeta {
        PackMeta {
            pack_id: id.into(),
            pack_identity: format!("github:x/{id}"),
            version: None,
            description: None,
            pack_identity_vocabulary: vec![],
            connectivity: Connectivity {
                provides: provides.iter().map(|s| s.to_string()).collect(),
                requires: requires.iter().map(|s| s.to_string()).collect(),
            },
            load_order: order,
        }
    }

    #[test]
    fn explicit_then_topological() {
        let packs = vec![
            meta("client", &[], &["ai.client"], None),
            meta("ai", &["ai.client"], &[], None),
            meta("first", &[], &[], Some(1)),
            meta("zero", &[], &[], Some(0)),
            meta("alone", &[], &[], None),
        ];
        let o = load_order(&packs);
        assert_eq!(o.order, ["zero", "first", "ai", "alone", "client"]);
        assert!(o.problems.is_empty());
    }

    #[test]
    fn cycles_and_unmet_are_reported_per_pack() {
        let packs = vec![
            meta("a", &["sa"], &["sb"], None),
            meta("b", &["sb"], &["sa"], None),
            meta("c", &[], &["missing"], None),
            meta("d", &[], &["sa"], None),
        ];
        let o = load_order(&packs);
        assert_eq!(o.order, ["c", "a", "b", "d"]);
        let kinds: Vec<(&str, LoadProblemKind)> = o
            .problems
            .iter()
            .map(|p| (p.pack_id.as_str(), p.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", LoadProblemKind::Cycle),
                ("b", LoadProblemKind::Cycle),
                ("c", LoadProblemKind::UnmetRequires),
                ("d", LoadProblemKind::BehindCycle),
            ]
        );
        assert_eq!(o.problems[0].packs, ["a", "b"]);
        assert_eq!(o.problems[2].service.as_deref(), Some("missing"));
        assert_eq!(o.problems_of("c").len(), 1);
        assert!(o.problems_of("c")[0].contains("missing"));
    }

    #[test]
    fn a_long_chain_behind_a_cycle_is_peeled_in_linear_time() {
        let n = 20_000;
        let mut packs = vec![
            meta("a", &["sa"], &["sb"], None),
            meta("b", &["sb"], &["sa"], None),
        ];
        for i in 0..n {
            let req = if i == 0 {
                "sa".to_string()
            } else {
                format!("c{}", i - 1)
            };
            packs.push(meta(
                &format!("c{i:05}"),
                &[&format!("c{i}")],
                &[&req],
                None,
            ));
        }
        let o = load_order(&packs);
        assert_eq!(o.order.len(), n + 2);
        let cycle = o
            .problems
            .iter()
            .filter(|p| p.kind == LoadProblemKind::Cycle)
            .count();
        let behind = o
            .problems
            .iter()
            .filter(|p| p.kind == LoadProblemKind::BehindCycle)
            .count();
        assert_eq!((cycle, behind), (2, n));
    }

    #[test]
    fn a_long_chain_is_ordered_without_recursion() {
        let n = 20_000;
        let packs: Vec<PackMeta> = (0..n)
            .map(|i| {
                let provides = [format!("s{i}")];
                let requires: Vec<String> = if i == 0 {
                    vec![]
                } else {
                    vec![format!("s{}", i - 1)]
                };
                let p: Vec<&str> = provides.iter().map(String::as_str).collect();
                let r: Vec<&str> = requires.iter().map(String::as_str).collect();
                meta(&format!("p{i:05}"), &p, &r, None)
            })
            .rev()
            .collect();
        let o = load_order(&packs);
        assert!(o.problems.is_empty());
        let want: Vec<String> = (0..n).map(|i| format!("p{i:05}")).collect();
        assert_eq!(o.order, want);
    }

    fn arb_packs() -> impl Strategy<Value = Vec<PackMeta>> {
        let service = prop::sample::select(vec!["s0", "s1", "s2", "s3", "s4", "s5"]);
        let pack = (
            prop::collection::vec(service.clone(), 0..3),
            prop::collection::vec(service, 0..3),
            prop::option::weighted(0.2, -3i64..3),
        );
        prop::collection::vec(pack, 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (p, r, o))| meta(&format!("p{i}"), &p, &r, o))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn every_pack_once_and_providers_first(packs in arb_packs(), seed in any::<u64>()) {
            let o = load_order(&packs);
            let mut ids: Vec<&str> = packs.iter().map(|p| p.pack_id.as_str()).collect();
            ids.sort();
            let mut got: Vec<&str> = o.order.iter().map(String::as_str).collect();
            got.sort();
            prop_assert_eq!(&got, &ids);

            let pos = |id: &str| o.order.iter().position(|x| x == id).unwrap();
            // Explicit places first, ascending.
            let n_explicit = packs.iter().filter(|p| p.load_order.is_some()).count();
            for w in o.order[..n_explicit].windows(2) {
                let (a, b) = (&packs[w[0][1..].parse::<usize>().unwrap()], &packs[w[1][1..].parse::<usize>().unwrap()]);
                prop_assert!(a.load_order.is_some() && (a.load_order, &a.pack_id) <= (b.load_order, &b.pack_id));
            }
            // A pack without problems comes after every provider of what it requires (among the rest).
            for p in packs.iter().filter(|p| p.load_order.is_none()) {
                if !o.problems_of(&p.pack_id).is_empty() { continue; }
                for s in &p.connectivity.requires {
                    for q in packs.iter().filter(|q| q.load_order.is_none() && q.pack_id != p.pack_id && q.connectivity.provides.contains(s)) {
                        prop_assert!(pos(&q.pack_id) < pos(&p.pack_id), "{} before {}", q.pack_id, p.pack_id);
                    }
                }
            }
            // An unmet requirement is reported exactly when no pack provides the service.
            for p in &packs {
                for s in &p.connectivity.requires {
                    let provided = packs.iter().any(|q| q.connectivity.provides.contains(s));
                    let reported = o.problems.iter().any(|x| x.pack_id == p.pack_id && x.kind == LoadProblemKind::UnmetRequires && x.service.as_deref() == Some(s.as_str()));
                    prop_assert_eq!(provided, !reported);
                }
            }
            // The input order does not matter.
            let mut shuffled = packs.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(load_order(&shuffled), o);
        }
    }
}
