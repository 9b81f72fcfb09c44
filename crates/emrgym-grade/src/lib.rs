//! The grader: checks every node of the expected (oracle) tree against the record state
//! the sandbox actually holds and the trajectory the agent produced. Never the model.
//!
//! For each node: passed, failed (with the failure class, the reasons and a resource-level
//! diff) or not reached. Every write in the sandbox's diff is attributed to the node whose
//! selector it matches, to a choice node whose other branch it belongs to (wrong branch),
//! or flagged extraneous. Ordering edges are checked on the step at which each node was
//! done. Success = every gated node passed and no extraneous write; progress = the
//! weighted share of leaves passed.

use emrgym_calc::units::{Analyte, Q};
use emrgym_fhir::store::Change;
use emrgym_scenario::AnswerFormat;
use emrgym_scenario::htn::expr::{self, Coll, Expr, Op, V};
use emrgym_scenario::htn::library::{Check, Library, Selector};
use emrgym_scenario::htn::plan::{Tree, checks, fact_revealed};
use emrgym_scenario::trajectory::{EndReason, Trajectory};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Version of the grade format.
pub const GRADE_VERSION: u32 = 1;

/// Version of the grader's semantics: bump it with any change that can change a verdict, so
/// `emrgym replay` can say that a grade changed because the grader did.
pub const GRADER_VERSION: u32 = 3;

/// What each grader version changed, with the failure class the rule decides: `emrgym replay`
/// names these rules for a verdict that changed between the recording's version and this one
/// ([`rules_changed`]). Version 1 is the first recorded; every bump adds its rules here.
pub const GRADER_CHANGES: &[(u32, FailureClass, &str)] = &[
    (
        2,
        FailureClass::WrongParameter,
        "v2 equivalence: routes by synonym or SNOMED code, doses in any UCUM-convertible unit (mEq = mmol for monovalent ions), \
         BP as text or as the vital-signs panel, notes by containment, concepts by any of their codes",
    ),
    (
        2,
        FailureClass::Omission,
        "v2 split doses: orders that together give the expected dose pass",
    ),
    (
        2,
        FailureClass::ExtraneousWrite,
        "v2 split doses: the second order of a split dose is not extraneous",
    ),
    (
        2,
        FailureClass::WrongAnswer,
        "v2 answers: JSON text read as JSON; structured refusals (finish outcome cannot_complete)",
    ),
    (
        2,
        FailureClass::Sensing,
        "v2 gating by dependency: a read gates only the branch that uses its fact; facts shown only by read steps; concepts by any code",
    ),
    (
        2,
        FailureClass::Ordering,
        "v2 ordering by dependency: a compound starts at its first write; independent reads in any order",
    ),
    (
        3,
        FailureClass::WrongAnswer,
        "v3 answer format: numeric tolerance is half a unit in the last decimal place the instruction states (0 for values \
         as recorded); a list answer matches in any order when the instruction allows it",
    ),
];

/// The rules changed after grader version `from` (up to this one) that decide a verdict of
/// one of `classes`; every rule changed when no class is known.
pub fn rules_changed(from: u32, classes: &[FailureClass]) -> Vec<&'static str> {
    GRADER_CHANGES
        .iter()
        .filter(|(v, c, _)| *v > from && *v <= GRADER_VERSION && (classes.is_empty() || classes.contains(c)))
        .map(|(_, _, rule)| *rule)
        .collect()
}

/// Why a node (or the episode) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The agent never saw the data a decision needed.
    Sensing,
    /// The writes belong to another branch than the record calls for.
    WrongBranch,
    /// The right kind of write with a wrong field (dose, unit, subject, time...).
    WrongParameter,
    /// A required write is missing.
    Omission,
    /// Done in the wrong order.
    Ordering,
    /// A write no node asked for.
    ExtraneousWrite,
    /// `finish` while required nodes had not been attempted.
    PrematureFinish,
    /// The final answer is wrong or missing.
    WrongAnswer,
}

/// A node's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// All its checks hold.
    Passed,
    /// A check failed.
    Failed,
    /// The episode ended before the agent attempted it.
    NotReached,
}

/// One field that differs from what was expected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    /// The resource (`Type/id`).
    pub resource: String,
    /// The assertion that failed.
    pub assert: String,
    /// What the resource holds (the left side of the comparison).
    pub actual: Value,
    /// What was expected (the right side).
    pub expected: Value,
}

/// Resource-level difference for a failed node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResourceDiff {
    /// Expected writes that are missing (selector descriptions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Writes that should not exist (`Type/id`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    /// Fields that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<FieldDiff>,
}

impl ResourceDiff {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

/// The verdict of one node of the oracle tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeGrade {
    /// Node path (`""` is the root).
    pub path: String,
    /// Task or primitive.
    pub task: String,
    /// `compound` or `primitive`.
    pub kind: &'static str,
    /// The branch the record calls for (compound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Verdict.
    pub verdict: Verdict,
    /// Failure class (failed nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<ResourceDiff>,
    /// Step at which it was done (0-based), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<usize>,
    /// Gates success.
    pub gate: bool,
    /// Progress weight (leaves).
    pub weight: f64,
}

/// One write the agent made, and what it was attributed to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriteGrade {
    /// `Type/id`.
    pub resource: String,
    /// create / update / delete.
    pub action: &'static str,
    /// Step that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The node it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Set when it is extraneous or belongs to a branch the record does not call for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
}

/// The answer check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnswerGrade {
    /// Node that checks it.
    pub node: String,
    /// Expected.
    pub expected: Value,
    /// Given (null when none).
    pub given: Value,
    /// Match.
    pub passed: bool,
}

/// The grade of one episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grade {
    /// Format version.
    pub format_version: u32,
    /// Instance id.
    pub instance: String,
    /// Every gated node passed and no extraneous write.
    pub success: bool,
    /// Weighted share of leaves passed.
    pub progress: f64,
    /// The first failure class in tree order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<FailureClass>,
    /// Every failure class present.
    pub classes: Vec<FailureClass>,
    /// Verdict per node, tree order.
    pub nodes: Vec<NodeGrade>,
    /// Every write, attributed.
    pub writes: Vec<WriteGrade>,
    /// The answer check, if the scenario has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerGrade>,
    /// Why the episode ended.
    pub end: EndReason,
    /// Steps taken.
    pub steps: usize,
}

/// A write in the sandbox's diff.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Resource type.
    pub ty: String,
    /// Id.
    pub id: String,
    /// create / update / delete.
    pub action: &'static str,
    /// The cohort's version.
    pub before: Option<Value>,
    /// The current version.
    pub after: Option<Value>,
}

/// The writes of a sandbox diff.
pub fn writes_from_diff(changes: &[Change]) -> Vec<Write> {
    changes
        .iter()
        .map(|c| Write {
            ty: c.ty.clone(),
            id: c.id.clone(),
            action: match (&c.before, &c.after) {
                (None, _) => "create",
                (Some(_), Some(_)) => "update",
                (Some(_), None) => "delete",
            },
            before: c.before.as_deref().cloned(),
            after: c.after.as_deref().cloned(),
        })
        .collect()
}

fn step_of(w: &Write, t: &Trajectory) -> Option<usize> {
    t.steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.result.ok && matches!(s.call.name.as_str(), "fhir_create" | "fhir_update"))
        .filter(|(_, s)| {
            s.result.content.get("resourceType").and_then(Value::as_str) == Some(w.ty.as_str())
                && s.result.content.get("id").and_then(Value::as_str) == Some(w.id.as_str())
        })
        .map(|(i, _)| i)
        .next_back()
}

fn selector_matches(sel: &Selector, w: &Write, tree: &Tree, node: usize) -> bool {
    if w.ty != sel.resource_type {
        return false;
    }
    let action_ok = match sel.action.as_str() {
        "create" => w.action == "create",
        "update" => w.action == "update",
        _ => w.action != "delete",
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

fn describe(sel: &Selector) -> String {
    format!(
        "{} {}{}",
        sel.action,
        sel.resource_type,
        sel.where_src.as_ref().map(|w| format!(" where {w}")).unwrap_or_default()
    )
}

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

fn norm_text(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches(['.', '!', ';'])
        .trim_matches('"')
        .to_string()
}

fn number_of(v: &Value, unit: Option<&str>, analyte: Option<&str>) -> Option<f64> {
    let (n, given_unit): (f64, Option<String>) = match v {
        Value::Number(n) => (n.as_f64()?, None),
        Value::String(s) => {
            let t = s.trim();
            let end = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
                .unwrap_or(t.len());
            let n: f64 = t[..end].parse().ok()?;
            let rest = t[end..].trim();
            (n, (!rest.is_empty()).then(|| rest.to_string()))
        }
        Value::Object(o) => (o.get("value")?.as_f64()?, o.get("unit").and_then(Value::as_str).map(str::to_string)),
        _ => return None,
    };
    match (given_unit, unit, analyte.and_then(Analyte::from_id)) {
        (Some(gu), Some(want), Some(a)) if gu != want => {
            let q = Q::Lab(a);
            let canonical = q.to_canonical("answer", n, Some(&gu)).ok()?;
            q.from_canonical(canonical, want)
        }
        _ => Some(n),
    }
}

/// The kind of refusal a text states, if it states one: `patient_not_found`, `tool_missing`,
/// `contraindicated`, `data_missing`, or `other` for a refusal that gives no reason. The
/// kinds are `finish`'s `reason` values, so free text and a structured refusal compare alike.
pub fn refusal_kind(text: &str) -> Option<&'static str> {
    let t = norm_text(text).replace(['\u{2019}', '\''], "");
    let any = |ps: &[&str]| ps.iter().any(|p| t.contains(p));
    if any(&[
        "patient not found",
        "no patient",
        "no such patient",
        "no matching patient",
        "does not exist",
        "doesnt exist",
        "could not find the patient",
        "couldnt find the patient",
        "not found",
    ]) {
        return Some("patient_not_found");
    }
    if any(&[
        "no tool",
        "dont have a tool",
        "do not have a tool",
        "dont have the tool",
        "do not have the tool",
        "without a tool",
        "read-only",
        "read only",
        "cannot place",
        "cant place",
        "unable to place",
        "cannot create",
        "cant create",
        "unable to create",
        "cannot write",
        "cant write",
        "unable to write",
        "cannot order",
        "cant order",
        "unable to order",
        "not able to order",
        "no way to order",
        "no ability to",
        "not permitted",
        "no write access",
        "no permission",
    ]) {
        return Some("tool_missing");
    }
    if any(&["contraindicated", "allergic", "allergy"]) {
        return Some("contraindicated");
    }
    if any(&[
        "not available",
        "no data",
        "no result",
        "no value",
        "not recorded",
        "not on file",
        "none on file",
        "missing",
    ]) {
        return Some("data_missing");
    }
    if any(&["cannot", "cant", "unable", "not possible", "impossible"]) {
        return Some("other");
    }
    None
}

/// A structured refusal (`finish` with `outcome: cannot_complete`): its reason.
fn structured_refusal(given: &Value) -> Option<&str> {
    (given.get("outcome").and_then(Value::as_str) == Some("cannot_complete"))
        .then(|| given.get("reason").and_then(Value::as_str).unwrap_or("other"))
}

/// How an answer is compared: the unit and analyte the check names, and the tolerance and list
/// order the instruction states (see [`emrgym_scenario::AnswerFormat`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerRule<'a> {
    /// Absolute tolerance for numbers, in the expected unit.
    pub tolerance: f64,
    /// A list answer is a set (any order).
    pub unordered: bool,
    /// Unit of the expected value, for answers given in another unit.
    pub unit: Option<&'a str>,
    /// Analyte, for conversions that need one (mg/dL <-> mmol/L).
    pub analyte: Option<&'a str>,
}

impl AnswerRule<'_> {
    /// A rule with only a tolerance.
    pub fn within(tolerance: f64) -> AnswerRule<'static> {
        AnswerRule {
            tolerance,
            ..AnswerRule::default()
        }
    }
}

/// Pair every expected item with a distinct given item it fits (`fits[e][g]`), by augmenting
/// paths (Kuhn's algorithm); `None` when every expected item is paired, else the first one
/// that cannot be.
fn unmatched_item(fits: &[Vec<bool>]) -> Option<usize> {
    fn augment(e: usize, fits: &[Vec<bool>], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
        for g in 0..seen.len() {
            if fits[e].get(g).copied().unwrap_or(false) && !seen[g] {
                seen[g] = true;
                if owner[g].is_none_or(|o| augment(o, fits, seen, owner)) {
                    owner[g] = Some(e);
                    return true;
                }
            }
        }
        false
    }
    let width = fits.first().map_or(0, Vec::len);
    let mut owner = vec![None; width];
    (0..fits.len()).find(|&e| !augment(e, fits, &mut vec![false; width], &mut owner))
}

/// Does the given answer match the expected value? An answer sent as JSON text (`"[3.1, 1.3]"`,
/// `"62"`) is read as the JSON it holds. A refusal matches an expected refusal of the same
/// kind (free text or `outcome: cannot_complete` with its `reason`); a `data_missing` refusal
/// also matches an expected -1, the instructions' "not available" value. Lists match item by
/// item in order, or, when the rule says the order is free, by any pairing of their items.
pub fn answer_matches(expected: &Value, given: &Value, rule: &AnswerRule<'_>) -> Result<(), String> {
    if let Some(reason) = structured_refusal(given) {
        let want = match expected {
            Value::String(e) => refusal_kind(e),
            Value::Number(n) if n.as_f64() == Some(-1.0) => Some("data_missing"),
            Value::Array(a) if a.len() == 1 && a[0].as_f64() == Some(-1.0) => Some("data_missing"),
            _ => None,
        };
        return match want {
            Some(k) if k == reason => Ok(()),
            Some(k) => Err(format!("expected a refusal because of {k}, got one because of {reason}")),
            None => Err(format!("expected {expected}, got a refusal ({reason})")),
        };
    }
    if let Value::String(s) = given {
        let t = s.trim();
        if ((t.starts_with('[') && t.ends_with(']')) || (t.starts_with('{') && t.ends_with('}')))
            && let Ok(parsed) = serde_json::from_str::<Value>(t)
        {
            return answer_matches(expected, &parsed, rule);
        }
    }
    let (tolerance, unit, analyte) = (rule.tolerance, rule.unit, rule.analyte);
    match (expected, given) {
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() && rule.unordered && e.len() > 1 => {
            let fits: Vec<Vec<bool>> = e
                .iter()
                .map(|x| g.iter().map(|y| answer_matches(x, y, rule).is_ok()).collect())
                .collect();
            match unmatched_item(&fits) {
                None => Ok(()),
                Some(i) => Err(format!("item {i} ({}) matches no item of the answer, in any order", e[i])),
            }
        }
        (Value::Array(e), Value::Array(g)) => {
            if e.len() != g.len() {
                return Err(format!("expected {} values, got {}", e.len(), g.len()));
            }
            for (i, (x, y)) in e.iter().zip(g).enumerate() {
                answer_matches(x, y, rule).map_err(|m| format!("item {i}: {m}"))?;
            }
            Ok(())
        }
        (Value::Array(e), g) if e.len() == 1 => answer_matches(&e[0], g, rule),
        (e, Value::Array(g)) if g.len() == 1 => answer_matches(e, &g[0], rule),
        (Value::Null, g) => {
            if g.is_null() || g.as_str().is_some_and(|s| s.trim().is_empty()) || g.as_array().is_some_and(Vec::is_empty) {
                Ok(())
            } else {
                Err(format!("expected no value, got {g}"))
            }
        }
        (Value::Number(n), g) => {
            let want = n.as_f64().unwrap_or(f64::NAN);
            let got = number_of(g, unit, analyte).ok_or_else(|| format!("expected a number near {want}, got {g}"))?;
            if (got - want).abs() <= tolerance + 1e-9 {
                Ok(())
            } else {
                Err(format!("expected {want} (± {tolerance}), got {got}"))
            }
        }
        (Value::String(e), g) => {
            let gs = match g {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Some(a), Some(b)) = (expr::parse_datetime(e), expr::parse_datetime(gs.trim())) {
                let same = if e.len() <= 10 || gs.trim().len() <= 10 {
                    a.date_naive() == b.date_naive()
                } else {
                    a == b
                };
                return if same {
                    Ok(())
                } else {
                    Err(format!("expected date {e}, got {gs}"))
                };
            }
            let (ne, ng) = (norm_text(e), norm_text(&gs));
            // a refusal matches a refusal of the same kind ("Patient not found" is no answer
            // to a task whose patient exists but whose order cannot be placed)
            let same_refusal = refusal_kind(&ne).is_some_and(|k| Some(k) == refusal_kind(&ng));
            if ne == ng || same_refusal {
                Ok(())
            } else {
                Err(format!("expected \"{e}\", got \"{gs}\""))
            }
        }
        (e, g) => {
            if e == g {
                Ok(())
            } else {
                Err(format!("expected {e}, got {g}"))
            }
        }
    }
}

struct CheckOutcome {
    ok: bool,
    class: Option<FailureClass>,
    reasons: Vec<String>,
    diff: ResourceDiff,
    evidence: bool,
    done_at: Option<usize>,
    started_at: Option<usize>,
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

/// Grade an episode.
pub fn grade(instance: &str, lib: &Library, tree: &Tree, format: &AnswerFormat, traj: &Trajectory, writes: &[Write]) -> Grade {
    let steps: Vec<Option<usize>> = writes.iter().map(|w| step_of(w, traj)).collect();
    let mut attributed: Vec<Option<(String, Option<FailureClass>)>> = vec![None; writes.len()];
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
                Check::Select { selector, count, asserts } => {
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
                                o.diff.extra.push(format!("{}/{}", writes[*w].ty, writes[*w].id));
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
                    if *count == 1 && matches.len() > 1 && matches.iter().all(|w| writes[*w].ty == "MedicationRequest") {
                        let afters: Vec<&Value> = matches.iter().filter_map(|w| writes[*w].after.as_ref()).collect();
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
                    if matches.len() > *count as usize {
                        for w in &matches[*count as usize..] {
                            o.diff.extra.push(format!("{}/{}", writes[*w].ty, writes[*w].id));
                        }
                        fail(
                            &mut o,
                            FailureClass::ExtraneousWrite,
                            format!(
                                "expected {count} write(s) matching `{}`, found {}",
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
                                let resource = format!("{}/{}", writes[*w].ty, writes[*w].id);
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
                            writes[w].ty,
                            writes[w].id,
                            m.name,
                            cnode.method.clone().unwrap_or_default()
                        ));
                        o.diff.extra.push(format!("{}/{}", writes[w].ty, writes[w].id));
                    }
                }
            }
        }
    }

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
            kind: node.kind,
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

    let write_grades: Vec<WriteGrade> = writes
        .iter()
        .enumerate()
        .map(|(w, x)| {
            let (node, class) = match &attributed[w] {
                Some((p, c)) => (Some(p.clone()), *c),
                None => (None, Some(FailureClass::ExtraneousWrite)),
            };
            WriteGrade {
                resource: format!("{}/{}", x.ty, x.id),
                action: x.action,
                step: steps[w],
                node,
                class,
            }
        })
        .collect();

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

#[cfg(test)]
mod tests;
