//! Ordering: when each node was started and done (compounds: over their children), and the
//! ordering edges of the tree checked on those steps.

use crate::FailureClass;
use crate::checks::CheckOutcome;
use emrgym_scenario::htn::library::{Check, Library};
use emrgym_scenario::htn::plan::{Tree, checks};

/// Fail every node that started before a node that must come first was done; the step at
/// which each node was done.
pub(crate) fn check_ordering(lib: &Library, tree: &Tree, outcomes: &mut [Option<CheckOutcome>]) -> Vec<Option<usize>> {
    let n = tree.nodes.len();
    // when each node was started and done (compounds: over their children)
    let mut done_at: Vec<Option<usize>> = outcomes.iter().map(|o| o.as_ref().and_then(|o| o.done_at)).collect();
    // a node starts at its first action (a write or the answer): reads may come in any order,
    // so an ordering edge constrains when the dependent node acts, not when it reads
    let acts = |i: usize| {
        tree.nodes[i].kind == "primitive"
            && checks(lib, &tree.nodes[i])
                .iter()
                .any(|c| matches!(c, Check::Answer { .. }) || matches!(c, Check::Select { count, .. } if *count > 0))
    };
    let mut started_at: Vec<Option<usize>> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| if acts(i) { o.as_ref().and_then(|o| o.started_at) } else { None })
        .collect();
    for i in (0..n).rev() {
        for k in tree.nodes[i].children.clone() {
            done_at[i] = match (done_at[i], done_at[k]) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            started_at[i] = match (started_at[i], started_at[k]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    // ordering edges: a must be done before b starts
    for (a, b) in &tree.before {
        if let (Some(ta), Some(tb)) = (done_at[*a], started_at[*b])
            && ta > tb
            && let Some(o) = outcomes[*b].as_mut()
        {
            o.ok = false;
            o.class.get_or_insert(FailureClass::Ordering);
            o.reasons.push(format!(
                "started at step {tb}, before '{}' was done (step {ta}), which must come first",
                tree.nodes[*a].path
            ));
        }
    }
    done_at
}
