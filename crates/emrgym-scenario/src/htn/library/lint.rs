//! Static lints: comparisons whose operand can hold more than one item, and the checks on a
//! loaded network (callees and their arguments, acyclic orders, facts ordered before their
//! use, no recursion).

use super::compiled::Library;
use super::load::LoadError;
use super::locate::locate;
use crate::htn::expr::{Expr, Op};
use petgraph::algo::{has_path_connecting, is_cyclic_directed};
use petgraph::graph::DiGraph;
use std::collections::BTreeSet;

/// Functions that reduce a collection to at most one item.
const REDUCING: &[&str] = &[
    "first",
    "last",
    "single",
    "count",
    "exists",
    "empty",
    "all",
    "allTrue",
    "anyTrue",
    "allFalse",
    "anyFalse",
    "sum",
    "min",
    "max",
    "avg",
    "isDistinct",
    "subsetOf",
    "supersetOf",
    "not",
];

/// Why an operand may hold more than one item: the repeating element it goes through, or
/// `None` when it holds at most one (or cannot be known statically, like a variable).
fn repeating_operand(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(c) if c.len() > 1 => Some("a literal collection".into()),
        Expr::Ident(n) => crate::htn::cardinality::repeats(n).then(|| format!("'{n}'")),
        Expr::Member(base, n) => repeating_operand(base).or_else(|| crate::htn::cardinality::repeats(n).then(|| format!("'{n}'"))),
        Expr::Call(_, f, _) if REDUCING.contains(&f.as_str()) => None,
        Expr::Call(base, _, _) => repeating_operand(base),
        Expr::Bin(Op::Union, _, _) => Some("a union (|)".into()),
        _ => None,
    }
}

/// Comparisons (`=`, `!=`, `~`, `<`, `<=`, `>`, `>=`) with an operand that can hold more than
/// one item, anywhere in `e`. On a collection `=` is collection equality: `code.coding.code =
/// '84114007'` is false for a Condition coded in both SNOMED CT and ICD-10-CM.
pub(crate) fn comparison_lints(e: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    walk_comparisons(e, &mut out);
    out
}

fn walk_comparisons(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Bin(op, a, b) => {
            if matches!(op, Op::Eq | Op::Ne | Op::Equiv | Op::Lt | Op::Le | Op::Gt | Op::Ge) {
                for side in [a, b] {
                    if let Some(why) = repeating_operand(side) {
                        out.push(format!(
                            "a comparison operand can hold more than one item (it goes through {why}, which repeats in FHIR R4): \
                             compare inside where(), e.g. `code.coding.where(code = 'x').exists()`, or reduce it with first()"
                        ));
                    }
                }
            }
            walk_comparisons(a, out);
            walk_comparisons(b, out);
        }
        Expr::Member(b, _) | Expr::Neg(b) => walk_comparisons(b, out),
        Expr::Call(b, _, args) => {
            walk_comparisons(b, out);
            for a in args {
                walk_comparisons(a, out);
            }
        }
        Expr::Index(a, b) => {
            walk_comparisons(a, out);
            walk_comparisons(b, out);
        }
        _ => {}
    }
}

impl Library {
    /// Static checks on the tasks defined in one file.
    pub(super) fn lint(&self, file: &str, text: &str) -> Vec<LoadError> {
        let mut errors = Vec::new();
        let mut err = |pointer: String, message: String| {
            errors.push(LoadError {
                file: file.to_string(),
                line: locate(text, &pointer),
                pointer,
                message,
            })
        };
        for (k, t) in self
            .tasks
            .iter()
            .filter(|(k, _)| self.origin.get(*k).map(String::as_str) == Some(file))
        {
            for (mi, m) in t.methods.iter().enumerate() {
                let mp = format!("/tasks/{k}/methods/{mi}");
                // callees exist and arguments match their parameters
                for (si, s) in m.subtasks.iter().enumerate() {
                    let sp = format!("{mp}/subtasks/{si}");
                    match self.params_of(&s.task) {
                        None => err(sp.clone(), format!("unknown task or primitive '{}'", s.task)),
                        Some(params) => {
                            let given: BTreeSet<&str> = s.args.iter().map(|(n, _)| n.as_str()).collect();
                            let wanted: BTreeSet<&str> = params.iter().map(String::as_str).collect();
                            for missing in wanted.difference(&given) {
                                err(sp.clone(), format!("'{}' needs argument '{missing}'", s.task));
                            }
                            for extra in given.difference(&wanted) {
                                err(sp.clone(), format!("'{}' has no parameter '{extra}'", s.task));
                            }
                        }
                    }
                }
                // the order is a DAG
                let mut g: DiGraph<usize, ()> = DiGraph::new();
                let idx: Vec<_> = (0..m.subtasks.len()).map(|i| g.add_node(i)).collect();
                for (a, b) in Library::edges(m) {
                    g.add_edge(idx[a], idx[b], ());
                }
                if is_cyclic_directed(&g) {
                    err(format!("{mp}/order"), format!("the order of method '{}' has a cycle", m.name));
                    continue;
                }
                for (si, s) in m.subtasks.iter().enumerate() {
                    for (an, a) in &s.args {
                        for v in a.vars() {
                            if let Some(bi) = m.subtasks.iter().position(|x| x.id == v) {
                                if self.primitives.get(&m.subtasks[bi].task).is_none_or(|p| !p.senses()) {
                                    err(
                                        format!("{mp}/subtasks/{si}/args/{an}"),
                                        format!("%{v} names subtask '{v}', which senses nothing"),
                                    );
                                } else if !has_path_connecting(&g, idx[bi], idx[si], None) || bi == si {
                                    err(
                                        format!("{mp}/subtasks/{si}/args/{an}"),
                                        format!("fact %{v} is used by '{}' but '{v}' is not ordered before it", s.id),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            if self.reaches(k, k, &mut BTreeSet::new()) {
                err(
                    format!("/tasks/{k}"),
                    format!("task '{k}' includes itself (recursion is not supported)"),
                );
            }
        }
        errors
    }

    fn reaches(&self, from: &str, target: &str, seen: &mut BTreeSet<String>) -> bool {
        let Some(t) = self.tasks.get(from) else { return false };
        for m in &t.methods {
            for s in &m.subtasks {
                if s.task == target {
                    return true;
                }
                if seen.insert(s.task.clone()) && self.reaches(&s.task, target, seen) {
                    return true;
                }
            }
        }
        false
    }
}
