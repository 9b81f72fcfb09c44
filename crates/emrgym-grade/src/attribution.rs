//! Write attribution: the writes of the sandbox's diff, the step that made each, and the node
//! each belongs to: the node whose selector it matches, a choice node whose other branch it
//! belongs to (wrong branch), or none (extraneous).

use crate::checks::CheckOutcome;
use crate::{FailureClass, WriteGrade};
pub use emrgym_core::{Write, WriteKind};
use emrgym_scenario::htn::expr::{self, V};
use emrgym_scenario::htn::library::{Check, Library, Selector};
use emrgym_scenario::htn::plan::Tree;
use emrgym_scenario::trajectory::Trajectory;
use serde_json::Value;

/// What a write is attributed to, once it is: the node's path, and the failure class when the
/// write is one (wrong branch, extraneous).
pub(crate) type Attribution = Option<(String, Option<FailureClass>)>;

pub(crate) fn step_of(w: &Write, t: &Trajectory) -> Option<usize> {
    t.steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.result.ok && matches!(s.call.name.as_str(), "fhir_create" | "fhir_update"))
        .filter(|(_, s)| {
            s.result.content.get("resourceType").and_then(Value::as_str) == Some(w.resource_type.as_str())
                && s.result.content.get("id").and_then(Value::as_str) == Some(w.id.as_str())
        })
        .map(|(i, _)| i)
        .next_back()
}

pub(crate) fn selector_matches(sel: &Selector, w: &Write, tree: &Tree, node: usize) -> bool {
    if w.resource_type != sel.resource_type {
        return false;
    }
    let action_ok = match sel.action.as_str() {
        "create" => w.kind == WriteKind::Create,
        "update" => w.kind == WriteKind::Update,
        _ => w.kind != WriteKind::Delete,
    };
    if !action_ok {
        return false;
    }
    let Some(after) = &w.after else { return false };
    match &sel.where_ {
        None => true,
        Some(e) => {
            let env = tree.scope(node, &[]);
            matches!(expr::truth(e, &V::from_json(after), &env), Ok(Some(true)))
        }
    }
}

pub(crate) fn describe(sel: &Selector) -> String {
    format!(
        "{} {}{}",
        sel.action,
        sel.resource_type,
        sel.where_src.as_ref().map(|w| format!(" where {w}")).unwrap_or_default()
    )
}

/// Attribute the writes no check claimed that belong to a branch the record does not call for
/// to the choice node, and fail it (wrong branch).
pub(crate) fn attribute_wrong_branches(
    lib: &Library,
    tree: &Tree,
    writes: &[Write],
    attributed: &mut [Attribution],
    outcomes: &mut [Option<CheckOutcome>],
) {
    // writes that belong to a branch the record does not call for
    for (ci, cnode) in tree
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, x)| x.kind == "compound" && x.method.is_some())
    {
        let Some(task) = lib.tasks.get(&cnode.task) else { continue };
        for m in task.methods.iter().filter(|m| Some(&m.name) != cnode.method.as_ref()) {
            let sels = branch_selectors(lib, m);
            for (w, a) in attributed.iter_mut().enumerate() {
                if a.is_some() {
                    continue;
                }
                if sels.iter().any(|s| selector_matches(s, &writes[w], tree, ci)) {
                    *a = Some((cnode.path.clone(), Some(FailureClass::WrongBranch)));
                    if let Some(o) = outcomes[ci].as_mut() {
                        o.ok = false;
                        o.class.get_or_insert(FailureClass::WrongBranch);
                        o.reasons.push(format!(
                            "{}/{} belongs to branch '{}', but the record calls for '{}'",
                            writes[w].resource_type,
                            writes[w].id,
                            m.name,
                            cnode.method.clone().unwrap_or_default()
                        ));
                        o.diff.extra.push(format!("{}/{}", writes[w].resource_type, writes[w].id));
                    }
                }
            }
        }
    }
}

/// Selectors that a method's subtree writes (count >= 1), for attributing wrong-branch writes.
fn branch_selectors(lib: &Library, m: &emrgym_scenario::htn::library::Method) -> Vec<Selector> {
    let mut out = Vec::new();
    for c in &m.expect {
        if let Check::Select { selector, count, .. } = c
            && *count > 0
        {
            out.push(selector.clone());
        }
    }
    for s in &m.subtasks {
        for name in lib.reachable(&s.task) {
            if let Some(p) = lib.primitives.get(&name) {
                for c in &p.expect {
                    if let Check::Select { selector, count, .. } = c
                        && *count > 0
                    {
                        // without the other branch's variables, match on type and action only
                        let mut loose = selector.clone();
                        loose.where_ = loose.where_.filter(|w| w.vars().is_empty());
                        out.push(loose);
                    }
                }
            }
            if let Some(t) = lib.tasks.get(&name) {
                for mm in &t.methods {
                    for c in &mm.expect {
                        if let Check::Select { selector, count, .. } = c
                            && *count > 0
                        {
                            out.push(selector.clone());
                        }
                    }
                }
            }
        }
    }
    out
}

/// Every write, attributed; a write attributed to no node is extraneous.
pub(crate) fn write_grades(writes: &[Write], steps: &[Option<usize>], attributed: &[Attribution]) -> Vec<WriteGrade> {
    writes
        .iter()
        .enumerate()
        .map(|(w, x)| {
            let (node, class) = match &attributed[w] {
                Some((p, c)) => (Some(p.clone()), *c),
                None => (None, Some(FailureClass::ExtraneousWrite)),
            };
            WriteGrade {
                resource: format!("{}/{}", x.resource_type, x.id),
                action: x.kind,
                step: steps[w],
                node,
                class,
            }
        })
        .collect()
}
