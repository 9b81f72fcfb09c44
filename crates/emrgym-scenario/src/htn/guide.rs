//! Guidance for guided mode: which steps are done and which come next, from the agent's
//! own trajectory and writes. The planner only knows facts the agent has been shown, and a
//! step counts as done by a *structural* test derived from its checks (a sighting happened,
//! a write of the right kind exists, `finish` was called): guidance tells the agent that a
//! step looks done, never whether it was done right.

use super::expr::{self, V};
use super::library::{Check, Library};
use super::plan::{Status, Tree, checks, fact_revealed};
use crate::trajectory::Step;
use emrgym_core::Write;
use serde::Serialize;
use std::collections::BTreeSet;

/// One step to show the agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuideStep {
    /// Node path.
    pub path: String,
    /// What to do.
    pub instruction: String,
    /// The hint, when hints are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Guidance at one point of an episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Guidance {
    /// Steps that can be done now (in any order).
    pub next: Vec<GuideStep>,
    /// Decisions waiting for data the agent has not looked at yet.
    pub waiting: Vec<String>,
    /// Every step looks done.
    pub complete: bool,
}

fn structurally_done(lib: &Library, tree: &Tree, n: usize, steps: &[Step], writes: &[Write]) -> bool {
    let node = &tree.nodes[n];
    if !matches!(node.status, Status::Ready | Status::Expanded) {
        return false;
    }
    if node.kind == "compound" {
        return node.children.iter().all(|c| structurally_done(lib, tree, *c, steps, writes));
    }
    let cs = checks(lib, node);
    if cs.is_empty() {
        // a step with nothing to check is done once its reference tool was called at all
        return node
            .call
            .as_ref()
            .is_some_and(|c| steps.iter().any(|s| s.call.name == c.name && s.result.ok));
    }
    cs.iter().all(|c| match c {
        Check::Observed => node.fact.as_ref().is_some_and(|f| fact_revealed(f, steps).is_some()),
        Check::Select { selector, count, .. } => {
            if *count == 0 {
                return true;
            }
            let env = tree.scope(n, &[]);
            writes.iter().any(|w| {
                let Some(resource) = w.after.as_deref() else { return false };
                w.resource_type == selector.resource_type
                    && (selector.action == "write" || selector.action == w.kind.as_str())
                    && selector
                        .where_
                        .as_ref()
                        .is_none_or(|e| matches!(expr::truth(e, &V::from_json(resource), &env), Ok(Some(true))))
            })
        }
        Check::Answer { .. } => steps.iter().any(|s| s.call.name == "finish" && s.result.ok),
    })
}

/// Guidance from a tree planned with the facts the agent has seen.
/// `writes` are the sandbox's writes (a deleted resource, with no current version, never
/// makes a step look done).
pub fn guidance(lib: &Library, tree: &Tree, steps: &[Step], writes: &[Write], hints: bool) -> Guidance {
    let n = tree.nodes.len();
    let done: Vec<bool> = (0..n).map(|i| structurally_done(lib, tree, i, steps, writes)).collect();
    // a node is released when its parent is released and every node ordered before it is done
    let mut released = vec![false; n];
    let mut order = vec![0usize];
    let mut k = 0;
    while k < order.len() {
        let i = order[k];
        k += 1;
        let parent_ok = tree.nodes[i].parent.is_none_or(|p| released[p]);
        let preds_ok = tree.before.iter().filter(|(_, b)| *b == i).all(|(a, _)| done[*a]);
        released[i] = parent_ok && preds_ok;
        order.extend(tree.nodes[i].children.iter().copied());
    }
    let mut next = Vec::new();
    let mut waiting = BTreeSet::new();
    for i in tree.linear_all() {
        let node = &tree.nodes[i];
        if !released[i] || done[i] {
            continue;
        }
        match &node.status {
            Status::Deferred { waiting: w } => {
                waiting.insert(format!(
                    "{} (needs {})",
                    node.path,
                    w.iter().map(|v| format!("%{v}")).collect::<Vec<_>>().join(", ")
                ));
            }
            Status::Ready if node.kind == "primitive" => next.push(GuideStep {
                path: node.path.clone(),
                instruction: node.instruction.clone().unwrap_or_default(),
                hint: if hints { node.hint.clone() } else { None },
            }),
            _ => {}
        }
    }
    Guidance {
        complete: done.first().copied().unwrap_or(true),
        next,
        waiting: waiting.into_iter().collect(),
    }
}
