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

pub use answer::{AnswerRule, answer_matches, refusal_kind};
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
    score::score(instance, tree, traj, nodes, &evidence, write_grades, answer)
}

#[cfg(test)]
mod tests;
