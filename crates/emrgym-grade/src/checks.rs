//! The checks of each node: the record state after the episode against each node's expected
//! writes and their assertions, the facts the agent was shown, and the final answer.

use crate::answer::{AnswerRule, answer_matches};
use crate::attribution::{Attribution, Write, describe, selector_matches};
use crate::{AnswerGrade, FailureClass, FieldDiff, ResourceDiff};
use emrgym_scenario::AnswerFormat;
use emrgym_scenario::htn::expr::{self, Coll, Expr, Op, V};
use emrgym_scenario::htn::library::{Check, Library};
use emrgym_scenario::htn::plan::{Tree, checks, fact_revealed};
use emrgym_scenario::trajectory::Trajectory;
use serde_json::{Value, json};

/// Evaluate a failing assertion's two sides for the report.
fn sides(e: &Expr, focus: &Coll, env: &dyn expr::Scope) -> (Value, Value) {
    let side = |x: &Expr| expr::eval(x, focus, env).map(|c| expr::coll_json(&c)).unwrap_or(Value::Null);
    match e {
        // `(x - y).abs() <= tol`: report x against y
        Expr::Bin(Op::Le | Op::Lt, a, _) if matches!(a.as_ref(), Expr::Call(inner, f, _) if f == "abs" && matches!(inner.as_ref(), Expr::Bin(Op::Sub, ..))) =>
        {
            let Expr::Call(inner, _, _) = a.as_ref() else {
                return (Value::Null, Value::Null);
            };
            let Expr::Bin(_, x, y) = inner.as_ref() else {
                return (Value::Null, Value::Null);
            };
            (side(x), side(y))
        }
        Expr::Bin(Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Equiv, a, b) => (side(a), side(b)),
        Expr::Bin(Op::And, a, b) => {
            // report the first conjunct that fails
            if matches!(expr::truth(a, focus, env), Ok(Some(true))) {
                sides(b, focus, env)
            } else {
                sides(a, focus, env)
            }
        }
        other => (side(other), json!(true)),
    }
}

/// What the checks of one node found.
pub(crate) struct CheckOutcome {
    pub(crate) ok: bool,
    pub(crate) class: Option<FailureClass>,
    pub(crate) reasons: Vec<String>,
    pub(crate) diff: ResourceDiff,
    pub(crate) evidence: bool,
    pub(crate) done_at: Option<usize>,
    pub(crate) started_at: Option<usize>,
}

impl CheckOutcome {
    fn saw(&mut self, step: Option<usize>) {
        self.evidence = true;
        if let Some(s) = step {
            self.done_at = Some(self.done_at.map_or(s, |d| d.max(s)));
            self.started_at = Some(self.started_at.map_or(s, |d| d.min(s)));
        }
    }
}

/// Run the checks of every node (primitives and the chosen methods of compounds), attributing
/// to it the writes its selectors match: each node's outcome (`None` for a node without
/// checks) and the answer check.
pub(crate) fn check_nodes(
    lib: &Library,
    tree: &Tree,
    format: &AnswerFormat,
    traj: &Trajectory,
    writes: &[Write],
    steps: &[Option<usize>],
    attributed: &mut [Attribution],
) -> (Vec<Option<CheckOutcome>>, Option<AnswerGrade>) {
    let answer = traj.answer();
    let mut answer_grade = None;
    let n = tree.nodes.len();
    let mut outcomes: Vec<Option<CheckOutcome>> = (0..n).map(|_| None).collect();

    // checks of every node (primitives and the chosen methods of compounds)
    for (i, node) in tree.nodes.iter().enumerate() {
        let mut o = CheckOutcome {
            ok: true,
            class: None,
            reasons: Vec::new(),
            diff: ResourceDiff::default(),
            evidence: false,
            done_at: None,
            started_at: None,
        };
        let fail = |o: &mut CheckOutcome, class: FailureClass, reason: String| {
            o.ok = false;
            if o.class.is_none() {
                o.class = Some(class);
            }
            o.reasons.push(reason);
        };
        for c in checks(lib, node) {
            match c {
                Check::Observed => match node.fact.as_ref().and_then(|f| fact_revealed(f, &traj.steps)) {
                    Some(at) => o.saw(Some(at)),
                    None => {
                        let q = node
                            .fact
                            .as_ref()
                            .map(|f| {
                                format!(
                                    "{}?{}",
                                    f.resource_type,
                                    f.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
                                )
                            })
                            .unwrap_or_default();
                        fail(
                            &mut o,
                            FailureClass::Sensing,
                            format!("the agent was never shown the result of {q}"),
                        );
                    }
                },
                Check::Select {
                    selector,
                    count,
                    count_max,
                    asserts,
                } => {
                    let matches: Vec<usize> = (0..writes.len())
                        .filter(|w| selector_matches(selector, &writes[*w], tree, i))
                        .collect();
                    if *count == 0 {
                        if !matches.is_empty() {
                            let class = if node.kind == "compound" {
                                FailureClass::WrongBranch
                            } else {
                                FailureClass::ExtraneousWrite
                            };
                            for w in &matches {
                                o.diff.extra.push(format!("{}/{}", writes[*w].resource_type, writes[*w].id));
                                attributed[*w] = Some((node.path.clone(), Some(class)));
                            }
                            fail(
                                &mut o,
                                class,
                                format!("expected no write matching `{}`, found {}", describe(selector), matches.len()),
                            );
                        }
                        continue;
                    }
                    for w in &matches {
                        if attributed[*w].is_none() {
                            attributed[*w] = Some((node.path.clone(), None));
                        }
                        o.saw(steps[*w]);
                    }
                    if matches.is_empty() {
                        o.diff.missing.push(describe(selector));
                        fail(&mut o, FailureClass::Omission, format!("missing: {}", describe(selector)));
                        continue;
                    }
                    // a medication dose split over several orders: judged as one order whose
                    // dosage instructions are all of theirs (equiv::dose sums them)
                    if *count_max == 1 && matches.len() > 1 && matches.iter().all(|w| writes[*w].resource_type == "MedicationRequest") {
                        let afters: Vec<&Value> = matches.iter().filter_map(|w| writes[*w].after.as_deref()).collect();
                        if let Some(first) = afters.first() {
                            let mut combined = (*first).clone();
                            let all: Vec<Value> = afters
                                .iter()
                                .flat_map(|a| a.get("dosageInstruction").and_then(Value::as_array).cloned().unwrap_or_default())
                                .collect();
                            combined["dosageInstruction"] = Value::Array(all);
                            let focus = V::from_json(&combined);
                            let env = tree.scope(i, &[]);
                            if asserts.iter().all(|(_, e)| matches!(expr::truth(e, &focus, &env), Ok(Some(true)))) {
                                continue;
                            }
                        }
                    }
                    if matches.len() > *count_max as usize {
                        for w in &matches[*count_max as usize..] {
                            o.diff.extra.push(format!("{}/{}", writes[*w].resource_type, writes[*w].id));
                        }
                        let expected = if count_max == count {
                            count.to_string()
                        } else {
                            format!("{count} to {count_max}")
                        };
                        fail(
                            &mut o,
                            FailureClass::ExtraneousWrite,
                            format!(
                                "expected {expected} write(s) matching `{}`, found {}",
                                describe(selector),
                                matches.len()
                            ),
                        );
                    }
                    for w in &matches {
                        let Some(after) = &writes[*w].after else { continue };
                        let focus = V::from_json(after);
                        let env = tree.scope(i, &[]);
                        for (src, e) in asserts {
                            let holds = matches!(expr::truth(e, &focus, &env), Ok(Some(true)));
                            if !holds {
                                let (actual, expected) = sides(e, &focus, &env);
                                let resource = format!("{}/{}", writes[*w].resource_type, writes[*w].id);
                                o.diff.changed.push(FieldDiff {
                                    resource: resource.clone(),
                                    assert: src.clone(),
                                    actual: actual.clone(),
                                    expected: expected.clone(),
                                });
                                fail(
                                    &mut o,
                                    FailureClass::WrongParameter,
                                    format!("{resource}: `{src}` does not hold (actual {actual}, expected {expected})"),
                                );
                            }
                        }
                    }
                }
                Check::Answer {
                    expr: e, unit, analyte, ..
                } => {
                    let env = tree.scope(i, &[]);
                    let expected = expr::eval(e, &Vec::new(), &env).map(|c| expr::coll_json(&c)).unwrap_or(Value::Null);
                    let given = answer.map(|(_, a)| a.clone()).unwrap_or(Value::Null);
                    let result = match answer {
                        None => Err("no answer was given (finish was not called)".to_string()),
                        Some(_) => answer_matches(
                            &expected,
                            &given,
                            &AnswerRule {
                                tolerance: format.tolerance(),
                                unordered: format.unordered(),
                                unit: unit.as_deref(),
                                analyte: analyte.as_deref(),
                            },
                        ),
                    };
                    if let Some((at, _)) = answer {
                        o.saw(Some(at));
                    }
                    answer_grade = Some(AnswerGrade {
                        node: node.path.clone(),
                        expected,
                        given,
                        passed: result.is_ok(),
                    });
                    if let Err(m) = result {
                        fail(&mut o, FailureClass::WrongAnswer, m);
                    }
                }
            }
        }
        outcomes[i] = Some(o);
    }
    (outcomes, answer_grade)
}
