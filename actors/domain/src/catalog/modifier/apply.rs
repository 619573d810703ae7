//! Applying modifiers to the flows they target (contract §4, §16).
//!
//! Per target flow, the modifiers are sorted by (phase index in the flow, priority, modifier_id)
//! and applied in four passes: every `replace` and `remove`, then `inject_before` (right before
//! the target; several in sorted order), then `inject_after` (right after the target; several in
//! sorted order), then `append` (end of the phase). The result is not re-sorted. Every modifier
//! that concerns a flow leaves one entry in the report: applied, or skipped with the reason.
//!
//! Skips: a phase the flow does not have, an unmet `requires`, a missing target step (or, when the
//! target flow says `on_missing_step: error`, the flow is refused), a target step in another
//! phase, a step id the flow already has (two steps of one id would make the record, `when`
//! references and the administrative check of a step ambiguous).

use super::{parse_all, Action, Modifier, ModifierFile, Refusal};
use crate::catalog::Environment;
use crate::flow::{
    quoted, Flow, FlowError, OnError, OnMissingStep, SourceRank, Step, StepKind, MAX_STEPS,
};
use crate::handler::KernelHandler;
use crate::sources::{FlowProblem, FlowTable};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Interfaces the kernel itself offers, which any modifier may require.
pub const KERNEL_INTERFACES: &[&str] = &[
    "kernel.flows",
    "kernel.capabilities",
    "kernel.secrets",
    "kernel.stores",
    "kernel.network",
    "kernel.schedules",
    "kernel.routes",
    "kernel.vocab",
];

/// Most (flow, modifier) pairs one catalog applies: a few `*` modifiers over thousands of flows
/// must not make the catalog (and its report) grow without bound. Pairs beyond it are skipped,
/// with the reason.
pub const MAX_APPLICATIONS: usize = 200_000;

/// Most bytes of steps that modifiers place in one catalog (each flow a modifier targets holds a
/// copy of its step); placements beyond are skipped, with the reason.
pub const MAX_ADDED_STEP_BYTES: usize = 64 * 1024 * 1024;

/// Most steps of pattern matching one catalog spends on `target_flow_id` patterns (a match costs
/// up to len(pattern) × len(flow id) steps; thousands of hostile patterns over thousands of flows
/// must not keep a load busy for minutes). Patterns not yet decided when it runs out are refused.
pub const MAX_MATCH_STEPS: u64 = 50_000_000;

/// Applied or skipped.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Applied,
    Skipped,
}

/// What one modifier did to one flow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Application {
    pub modifier_id: String,
    pub action: Action,
    pub target_step_id: Option<String>,
    /// `shared` or `pack`: where the modifier file lives.
    pub source: SourceRank,
    /// The modifier file, relative to `RUMI_HOME`.
    pub file: String,
    pub pack_id: Option<String>,
    pub status: Status,
    /// Why it was skipped (null when applied).
    pub reason: Option<String>,
}

/// What the modifiers did: per flow, in application order; the modifiers that matched no flow;
/// the files refused.
#[derive(Debug, Clone, Default)]
pub struct ModifierReport {
    pub by_flow: BTreeMap<String, Vec<Application>>,
    /// Modifiers whose `target_flow_id` matches no loaded flow.
    pub unmatched: Vec<Refusal>,
    pub refused: Vec<Refusal>,
}

impl ModifierReport {
    /// Every skip, for diagnostics: `(flow_id, application)`.
    pub fn skipped(&self) -> impl Iterator<Item = (&str, &Application)> {
        self.by_flow.iter().flat_map(|(flow, apps)| {
            apps.iter()
                .filter(|a| a.status == Status::Skipped)
                .map(move |a| (flow.as_str(), a))
        })
    }
}

/// Applies every modifier file to the flows it targets: returns the effective table (a flow
/// refused by `on_missing_step: error` leaves it, with a load problem) and the report.
pub fn apply_all(
    table: FlowTable,
    files: Vec<ModifierFile>,
    env: &Environment,
) -> (FlowTable, ModifierReport) {
    apply_within(table, files, env, MAX_APPLICATIONS, MAX_MATCH_STEPS)
}

/// [`apply_all`] with at most `budget` (flow, modifier) pairs and `match_steps` steps of
/// pattern matching.
pub(super) fn apply_within(
    mut table: FlowTable,
    files: Vec<ModifierFile>,
    env: &Environment,
    budget: usize,
    match_steps: u64,
) -> (FlowTable, ModifierReport) {
    let (modifiers, refused) = parse_all(&files);
    let mut report = ModifierReport {
        refused,
        ..Default::default()
    };
    // Exact targets by id; patterns are tried on every flow.
    let mut exact: HashMap<&str, Vec<&Modifier>> = HashMap::new();
    let mut patterns: Vec<&Modifier> = Vec::new();
    for m in &modifiers {
        match &m.target {
            super::Target::Exact(id) => exact.entry(id.as_str()).or_default().push(m),
            super::Target::Pattern(..) => patterns.push(m),
        }
    }
    let mut matched: HashMap<&str, bool> = HashMap::new();
    let ids: Vec<String> = table.flows.keys().cloned().collect();
    // Which pattern modifiers target which flow, within the matching budget; past it no pattern
    // modifier applies anywhere (never to some of its flows only).
    let mut match_steps = match_steps;
    let mut hits: Vec<Vec<&Modifier>> = Vec::with_capacity(ids.len());
    let mut out_of_steps = false;
    'flows: for flow_id in &ids {
        let mut here = Vec::new();
        for m in &patterns {
            if let super::Target::Pattern(_, p) = &m.target {
                match p.matches_within(flow_id, &mut match_steps) {
                    Some(true) => here.push(*m),
                    Some(false) => {}
                    None => {
                        out_of_steps = true;
                        break 'flows;
                    }
                }
            }
        }
        hits.push(here);
    }
    if out_of_steps {
        hits.clear();
    }
    hits.resize_with(ids.len(), Vec::new);
    let mut budget = budget;
    let mut bytes_left = MAX_ADDED_STEP_BYTES;
    for (flow_id, pattern_hits) in ids.into_iter().zip(hits) {
        let mut targeting: Vec<&Modifier> =
            exact.get(flow_id.as_str()).cloned().unwrap_or_default();
        targeting.extend(pattern_hits);
        if targeting.is_empty() {
            continue;
        }
        for m in &targeting {
            matched.insert(m.modifier_id.as_str(), true);
        }
        let over = targeting.len().saturating_sub(budget);
        budget = budget.saturating_sub(targeting.len());
        let mut beyond = Vec::new();
        if over > 0 {
            targeting.sort_by(|a, b| a.modifier_id.cmp(&b.modifier_id));
            for m in targeting.split_off(targeting.len() - over) {
                beyond.push(entry(
                    m,
                    Status::Skipped,
                    Some(format!(
                        "the catalog holds {MAX_APPLICATIONS} modifier applications already (at most) — narrow the target_flow_id patterns"
                    )),
                ));
            }
        }
        let flow = Arc::clone(&table.flows[&flow_id]);
        let (result, mut apps) = apply_to(&flow, targeting, env, &mut bytes_left);
        apps.extend(beyond);
        match result {
            Ok(effective) => {
                table.flows.insert(flow_id.clone(), Arc::new(effective));
            }
            Err(error) => {
                table.flows.remove(&flow_id);
                table.problems.push(FlowProblem::LoadError { error });
            }
        }
        report.by_flow.insert(flow_id, apps);
    }
    if out_of_steps {
        // Deterministic, but partial: every pattern modifier is refused rather than applied to
        // some of the flows it targets.
        for m in &patterns {
            report.refused.push(Refusal {
                modifier_id: Some(m.modifier_id.clone()),
                file: m.origin.path.clone(),
                line: m.line,
                reason: format!(
                    "matching the target_flow_id patterns of every modifier against every flow took more than {MAX_MATCH_STEPS} steps; pattern modifiers are not applied — use exact flow ids or simpler patterns (fewer `*`)"
                ),
            });
        }
    }
    for m in &modifiers {
        let refused = out_of_steps && matches!(m.target, super::Target::Pattern(..));
        if !refused && !matched.contains_key(m.modifier_id.as_str()) {
            report.unmatched.push(Refusal {
                modifier_id: Some(m.modifier_id.clone()),
                file: m.origin.path.clone(),
                line: m.line,
                reason: format!(
                    "target_flow_id {} matches no loaded flow — check the flow id (and that its pack is approved)",
                    quoted(m.target.text())
                ),
            });
        }
    }
    (table, report)
}

/// Applies `modifiers` (all targeting `flow`) in the order of §4.
pub fn apply_to(
    flow: &Flow,
    mut modifiers: Vec<&Modifier>,
    env: &Environment,
    bytes_left: &mut usize,
) -> (Result<Flow, FlowError>, Vec<Application>) {
    let phase_index = |p: &str| {
        flow.phases
            .iter()
            .position(|x| x == p)
            .unwrap_or(usize::MAX)
    };
    modifiers.sort_by(|a, b| {
        phase_index(&a.phase)
            .cmp(&phase_index(&b.phase))
            .then(a.priority.total_cmp(&b.priority))
            .then_with(|| a.modifier_id.cmp(&b.modifier_id))
    });
    let mut apps = Vec::new();
    let mut live: Vec<&Modifier> = Vec::new();
    let administers = administers(flow);
    for m in modifiers {
        let reason = if let Some(step) = administers {
            // A step placed around an administrative one could steer it without naming an
            // administrative handler (rewrite the context it reads, replace its guard, remove a
            // revocation): no modifier (none is official) changes such a flow.
            Some(format!(
                "flow {} is an official flow with an administrative step ({}); modifiers never change such a flow — ask the operator to change the flow itself",
                quoted(&flow.flow_id),
                quoted(step)
            ))
        } else if phase_index(&m.phase) == usize::MAX {
            Some(format!(
                "phase {} is not one of flow {}'s phases — use one of [{}]",
                quoted(&m.phase),
                quoted(&flow.flow_id),
                flow.phases
                    .iter()
                    .take(8)
                    .map(|p| quoted(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            unmet(m, env)
        };
        match reason {
            Some(r) => apps.push(entry(m, Status::Skipped, Some(r))),
            None => live.push(m),
        }
    }
    let mut steps = flow.steps.clone();
    // The last step injected after each target, so the next one goes after it.
    let mut after_tail: HashMap<String, String> = HashMap::new();
    let passes: [&[Action]; 4] = [
        &[Action::Replace, Action::Remove],
        &[Action::InjectBefore],
        &[Action::InjectAfter],
        &[Action::Append],
    ];
    for pass in passes {
        for m in live.iter().filter(|m| pass.contains(&m.action)) {
            match place(flow, &mut steps, m, &mut after_tail, bytes_left) {
                Ok(()) => apps.push(entry(m, Status::Applied, None)),
                Err(Skip::Missing(reason))
                    if flow.defaults.on_missing_step == OnMissingStep::Error =>
                {
                    apps.push(entry(m, Status::Skipped, Some(reason.clone())));
                    let error = FlowError::new(
                        m.origin.path.clone(),
                        m.line,
                        format!(
                            "modifier {}: {reason}, and flow {} sets `on_missing_step: error`, so the flow is not loaded — fix target_step_id, or set `on_missing_step: skip` in the flow's defaults",
                            quoted(&m.modifier_id),
                            quoted(&flow.flow_id)
                        ),
                    )
                    .of_flow(Some(flow.flow_id.clone()));
                    return (Err(error), apps);
                }
                Err(Skip::Missing(reason) | Skip::Other(reason)) => {
                    apps.push(entry(m, Status::Skipped, Some(reason)))
                }
            }
        }
    }
    let mut effective = flow.clone();
    effective.steps = steps;
    effective.modified_by = flow.modified_by.clone().or_else(|| {
        apps.iter()
            .find(|a| a.status == Status::Applied)
            .map(|a| a.modifier_id.clone())
    });
    (Ok(effective), apps)
}

enum Skip {
    /// The target step is not in the flow (`on_missing_step` decides).
    Missing(String),
    Other(String),
}

/// Places one modifier's effect in `steps`.
fn place(
    flow: &Flow,
    steps: &mut Vec<Step>,
    m: &Modifier,
    after_tail: &mut HashMap<String, String>,
    bytes_left: &mut usize,
) -> Result<(), Skip> {
    let position = |steps: &[Step], id: &str| steps.iter().position(|s| s.id == id);
    let new_step = m.step.as_ref().map(|s| {
        let mut s = s.clone();
        if !m.step_on_error_given {
            s.on_error = if flow.defaults.fail_soft {
                OnError::Continue
            } else {
                OnError::Abort
            };
        }
        s
    });
    let target_index = match &m.target_step_id {
        None => None,
        Some(target) => {
            let Some(i) = position(steps, target) else {
                return Err(Skip::Missing(format!(
                    "target step {} is not in flow {}",
                    quoted(target),
                    quoted(&flow.flow_id)
                )));
            };
            if steps[i].phase != m.phase {
                return Err(Skip::Other(format!(
                    "target step {} is in phase {}, not in the modifier's phase {} — set `phase: {}`",
                    quoted(target),
                    quoted(&steps[i].phase),
                    quoted(&m.phase),
                    steps[i].phase
                )));
            }
            Some(i)
        }
    };
    if new_step.is_some() && m.step_bytes > *bytes_left {
        return Err(Skip::Other(format!(
            "the steps modifiers placed in this catalog hold {MAX_ADDED_STEP_BYTES} bytes already (at most) — narrow the target_flow_id patterns or make the steps smaller"
        )));
    }
    if new_step.is_some() && m.action != Action::Replace && steps.len() >= MAX_STEPS {
        return Err(Skip::Other(format!(
            "flow {} would have more than {MAX_STEPS} steps",
            quoted(&flow.flow_id)
        )));
    }
    if let Some(new) = &new_step {
        let replaced = matches!(m.action, Action::Replace)
            .then(|| target_index)
            .flatten();
        if steps
            .iter()
            .enumerate()
            .any(|(i, s)| s.id == new.id && Some(i) != replaced)
        {
            return Err(Skip::Other(format!(
                "flow {} already has a step {} — give the modifier's step its own id",
                quoted(&flow.flow_id),
                quoted(&new.id)
            )));
        }
    }
    match (m.action, target_index, new_step) {
        (Action::Remove, Some(i), _) => {
            steps.remove(i);
        }
        (Action::Replace, Some(i), Some(new)) => steps[i] = new,
        (Action::InjectBefore, Some(i), Some(new)) => steps.insert(i, new),
        (Action::InjectAfter, Some(i), Some(new)) => {
            let target = steps[i].id.clone();
            let at = after_tail
                .get(&target)
                .and_then(|tail| position(steps, tail))
                .unwrap_or(i)
                + 1;
            after_tail.insert(target, new.id.clone());
            steps.insert(at, new);
        }
        (Action::Append, None, Some(new)) => {
            let phase_index = |p: &str| {
                flow.phases
                    .iter()
                    .position(|x| x == p)
                    .unwrap_or(usize::MAX)
            };
            let mine = phase_index(&m.phase);
            // After the last step of this phase or of an earlier one.
            let at = steps
                .iter()
                .rposition(|s| phase_index(&s.phase) <= mine)
                .map_or(0, |i| i + 1);
            steps.insert(at, new);
        }
        // parse_modifier guarantees the combinations above.
        _ => return Err(Skip::Other("the modifier is incomplete".into())),
    }
    if m.step.is_some() {
        *bytes_left -= m.step_bytes;
    }
    Ok(())
}

/// The first step of an official flow that administers or may pass that right on (an
/// administrative handler, or `kernel:flow.run` of another flow).
fn administers(flow: &Flow) -> Option<&str> {
    if flow.origin.rank != SourceRank::Official {
        return None;
    }
    flow.steps
        .iter()
        .find(|s| {
            matches!(
                s.kind,
                StepKind::Handler {
                    handler: KernelHandler::Admin(_) | KernelHandler::FlowRun,
                    ..
                }
            )
        })
        .map(|s| s.id.as_str())
}

/// Why `m`'s requirements are not met, if they are not.
fn unmet(m: &Modifier, env: &Environment) -> Option<String> {
    if let Some(i) = m
        .requires_interfaces
        .iter()
        .find(|i| !env.interfaces.contains(*i) && !KERNEL_INTERFACES.contains(&i.as_str()))
    {
        return Some(format!(
            "requires interface {} which no approved pack provides — approve a pack whose ecosystem.json provides it",
            quoted(i)
        ));
    }
    if let Some(c) = m
        .requires_capabilities
        .iter()
        .find(|c| !env.capabilities.contains(*c))
    {
        return Some(format!(
            "requires capability {} which has no installed handler — install (trust) a handler for it",
            quoted(c)
        ));
    }
    None
}

fn entry(m: &Modifier, status: Status, reason: Option<String>) -> Application {
    Application {
        modifier_id: m.modifier_id.clone(),
        action: m.action,
        target_step_id: m.target_step_id.clone(),
        source: m.origin.rank,
        file: m.origin.path.clone(),
        pack_id: m.origin.pack_id.clone(),
        status,
        reason,
    }
}
