//! Scoring: the verdict of each node (bottom-up for compounds), the episode's failure classes,
//! success and progress.

use crate::checks::CheckOutcome;
use crate::{AnswerGrade, FailureClass, GRADE_VERSION, Grade, NodeGrade, NodeKind, Verdict, WriteGrade};
use emrgym_scenario::htn::plan::Tree;
use emrgym_scenario::trajectory::{EndReason, Trajectory};
use std::collections::BTreeSet;

/// The grade of every node, tree order, and whether the agent attempted each (evidence).
pub(crate) fn node_grades(
    tree: &Tree,
    traj: &Trajectory,
    mut outcomes: Vec<Option<CheckOutcome>>,
    done_at: &[Option<usize>],
) -> (Vec<NodeGrade>, Vec<bool>) {
    let n = tree.nodes.len();
    // verdicts, bottom-up for compounds
    let finished = traj.end == EndReason::Finished;
    let mut verdicts: Vec<Verdict> = vec![Verdict::Passed; n];
    let mut evidence: Vec<bool> = outcomes.iter().map(|o| o.as_ref().is_some_and(|o| o.evidence)).collect();
    for i in (0..n).rev() {
        let o = outcomes[i].as_ref();
        let own_ok = o.is_none_or(|o| o.ok);
        let kids = tree.nodes[i].children.clone();
        if !kids.is_empty() {
            evidence[i] = evidence[i] || kids.iter().any(|k| evidence[*k]);
        }
        // an ungated child (a read the branch does not use, a calculator the agent may do
        // without) does not fail its parent
        let kids_ok = kids.iter().all(|k| verdicts[*k] == Verdict::Passed || !tree.nodes[*k].gate);
        verdicts[i] = if own_ok && kids_ok {
            Verdict::Passed
        } else if !evidence[i]
            && !finished
            && (kids.is_empty() || kids.iter().all(|k| verdicts[*k] != Verdict::Failed))
            && o.is_none_or(|o| o.class != Some(FailureClass::WrongBranch))
        {
            Verdict::NotReached
        } else {
            Verdict::Failed
        };
    }
    let mut nodes = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate() {
        let o = outcomes[i].take();
        let (class, reasons, diff) = match o {
            Some(o) => (o.class, o.reasons, (!o.diff.is_empty()).then_some(o.diff)),
            None => (None, Vec::new(), None),
        };
        let failed_kids: Vec<String> = node
            .children
            .iter()
            .filter(|k| verdicts[**k] != Verdict::Passed)
            .map(|k| tree.nodes[*k].path.clone())
            .collect();
        let mut reasons = reasons;
        if verdicts[i] != Verdict::Passed && class.is_none() && !failed_kids.is_empty() {
            reasons.push(format!("subtasks not passed: {}", failed_kids.join(", ")));
        }
        let gate = if node.kind == "primitive" { node.gate } else { true };
        nodes.push(NodeGrade {
            path: node.path.clone(),
            task: node.task.clone(),
            kind: NodeKind::of(node.kind),
            method: node.method.clone(),
            verdict: verdicts[i],
            class: if verdicts[i] == Verdict::Passed { None } else { class },
            reasons: if verdicts[i] == Verdict::Passed { Vec::new() } else { reasons },
            diff: if verdicts[i] == Verdict::Passed { None } else { diff },
            done_at: done_at[i],
            gate,
            weight: node.weight,
        });
    }
    (nodes, evidence)
}

/// The grade of the episode: success = every gated node passed and no extraneous write;
/// progress = the weighted share of leaves passed.
pub(crate) fn score(
    instance: &str,
    tree: &Tree,
    traj: &Trajectory,
    nodes: Vec<NodeGrade>,
    evidence: &[bool],
    write_grades: Vec<WriteGrade>,
    answer_grade: Option<AnswerGrade>,
) -> Grade {
    let finished = traj.end == EndReason::Finished;
    let mut classes: BTreeSet<FailureClass> = nodes
        .iter()
        .filter(|g| g.verdict == Verdict::Failed)
        .filter_map(|g| g.class)
        .collect();
    if write_grades.iter().any(|w| w.class == Some(FailureClass::ExtraneousWrite)) {
        classes.insert(FailureClass::ExtraneousWrite);
    }
    // finishing while gated leaves were never attempted
    if finished
        && tree
            .leaves()
            .iter()
            .any(|l| nodes[*l].gate && nodes[*l].verdict != Verdict::Passed && !evidence[*l])
    {
        classes.insert(FailureClass::PrematureFinish);
    }
    let primary = nodes
        .iter()
        .find(|g| g.verdict == Verdict::Failed && g.class.is_some())
        .and_then(|g| g.class)
        .or_else(|| classes.iter().next().copied());
    let extraneous = write_grades.iter().any(|w| w.class == Some(FailureClass::ExtraneousWrite));
    let gated_ok = nodes.iter().filter(|g| g.gate).all(|g| g.verdict == Verdict::Passed);
    let leaves = tree.leaves();
    let total: f64 = leaves.iter().map(|l| nodes[*l].weight).fold(0.0, |a, b| a + b);
    let passed: f64 = leaves
        .iter()
        .filter(|l| nodes[**l].verdict == Verdict::Passed)
        .map(|l| nodes[*l].weight)
        .fold(0.0, |a, b| a + b); // f64::sum of nothing is -0.0
    Grade {
        format_version: GRADE_VERSION,
        instance: instance.to_string(),
        success: gated_ok && !extraneous,
        progress: if total > 0.0 {
            passed / total
        } else if gated_ok {
            1.0
        } else {
            0.0
        },
        primary,
        classes: classes.into_iter().collect(),
        nodes,
        writes: write_grades,
        answer: answer_grade,
        end: traj.end,
        steps: traj.steps.len(),
    }
}
