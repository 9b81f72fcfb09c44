//! The grader: checks every node of the expected (oracle) tree against the record state
//! the sandbox actually holds and the trajectory the agent produced. Never the model.
//!
//! For each node: passed, failed (with the failure class, the reasons and a resource-level
//! diff) or not reached. Every write in the sandbox's diff is attributed to the node whose
//! selector it matches, to a choice node whose other branch it belongs to (wrong branch),
//! or flagged extraneous. Ordering edges are checked on the step at which each node was
//! done. Success = every gated node passed and no extraneous write; progress = the
//! weighted share of leaves passed.

mod answer;
mod attribution;
mod checks;
mod classes;
mod ordering;
mod score;
mod verdict;

pub use answer::{AnswerRule, answer_matches, claims_patient_not_found, refusal_kind};
pub use attribution::{Write, WriteKind};
pub use classes::{FailureClass, GRADER_CHANGES, GRADER_VERSION, rules_changed};
pub use verdict::{AnswerGrade, FieldDiff, GRADE_VERSION, Grade, NodeGrade, NodeKind, ResourceDiff, Verdict, WriteGrade};

use attribution::Attribution;
use emrgym_scenario::AnswerFormat;
use emrgym_scenario::htn::library::Library;
use emrgym_scenario::htn::plan::Tree;
use emrgym_scenario::trajectory::Trajectory;

/// Grade an episode.
pub fn grade(instance: &str, lib: &Library, tree: &Tree, format: &AnswerFormat, traj: &Trajectory, writes: &[Write]) -> Grade {
    let steps: Vec<Option<usize>> = writes.iter().map(|w| attribution::step_of(w, traj)).collect();
    let mut attributed: Vec<Attribution> = vec![None; writes.len()];
    // checks of every node (primitives and the chosen methods of compounds)
    let (mut outcomes, answer) = checks::check_nodes(lib, tree, format, traj, writes, &steps, &mut attributed);
    // writes that belong to a branch the record does not call for
    attribution::attribute_wrong_branches(lib, tree, writes, &mut attributed, &mut outcomes);
    // when each node was started and done, and the ordering edges
    let done_at = ordering::check_ordering(lib, tree, &mut outcomes);
    // verdicts, bottom-up for compounds
    let (nodes, evidence) = score::node_grades(tree, traj, outcomes, &done_at);
    let write_grades = attribution::write_grades(writes, &steps, &attributed);
    let asked_answer = answer.is_some();
    let mut g = score::score(instance, tree, traj, nodes, &evidence, write_grades, answer);
    if !asked_answer {
        false_patient_refusal(tree, traj, &mut g);
    }
    g
}

/// A task that asks no answer (an action, or deciding that none is due) and ends with the
/// agent saying the patient was not found fails at its root: every instance's patient is in
/// the record (the integrity gate checks it), so the claim is false, and a clinician told it
/// would look for another patient instead of learning what the record holds (`mab-k-001`: no
/// potassium on file, nothing to order; "No such patient found" leaves the record right and
/// the report wrong). A task that asks an answer judges a refusal at its answer node, against
/// the refusal it expects, if any ([`answer_matches`]).
fn false_patient_refusal(tree: &Tree, traj: &Trajectory, g: &mut Grade) {
    let Some((_, given)) = traj.answer() else {
        return;
    };
    if !claims_patient_not_found(given) || g.nodes.is_empty() {
        return;
    }
    let patient = match tree.globals.get("patient").map(emrgym_scenario::htn::expr::coll_json) {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Array(a)) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
        Some(v) => v.to_string(),
        None => "(the instance's)".to_string(),
    };
    let root = &mut g.nodes[0];
    root.verdict = Verdict::Failed;
    root.class = Some(FailureClass::WrongAnswer);
    root.reasons.push(format!(
        "the agent finished saying the patient was not found ({given}), but patient {patient} is in the record; the task asked no answer, and this one is false"
    ));
    g.success = false;
    if !g.classes.contains(&FailureClass::WrongAnswer) {
        g.classes.push(FailureClass::WrongAnswer);
        g.classes.sort();
    }
    g.primary.get_or_insert(FailureClass::WrongAnswer);
}

#[cfg(test)]
mod tests;
