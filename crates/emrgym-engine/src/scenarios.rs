//! `emrgym scenarios`: the integrity gate (`check`), a listing of families with their
//! branch balance (`list`), and a scaffold for a new family (`new`).

use super::episode::{Prepared, Workspace, fork, run_and_grade};
use anyhow::{Context, bail};
use emrgym_agent::{Null, Oracle};
use emrgym_grade::Verdict;
use emrgym_scenario::htn::expr::{self, V};
use emrgym_scenario::htn::library::{Check, locate};
use emrgym_scenario::htn::plan::checks;
use emrgym_scenario::{AnswerFormat, Instance};
use emrgym_tools::facts::SandboxFacts;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// JSON Schema of family files.
pub const SCENARIO_SCHEMA: &str = include_str!("../../../scenarios/scenario.schema.json");
/// JSON Schema of HTN library files.
pub const HTN_SCHEMA: &str = include_str!("../../../scenarios/htn/htn.schema.json");

/// One problem found by `check`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// File.
    pub file: String,
    /// Line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Instance id, when the problem is specific to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(i) = &self.instance {
            write!(f, " [{i}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The result of `check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// No problems.
    pub ok: bool,
    /// Families checked.
    pub families: usize,
    /// Instances checked.
    pub instances: usize,
    /// Branch counts: family -> node path -> method -> instances.
    pub branches: BTreeMap<String, BTreeMap<String, BTreeMap<String, usize>>>,
    /// Problems.
    pub problems: Vec<Problem>,
}

fn schema_problems(file: &str, text: &str, schema: &str) -> Vec<Problem> {
    let (Ok(schema), Ok(instance)) = (serde_json::from_str::<Value>(schema), serde_json::from_str::<Value>(text)) else {
        return Vec::new(); // JSON syntax errors are reported by the parser with their line
    };
    let Ok(v) = jsonschema::validator_for(&schema) else {
        return vec![Problem {
            file: file.into(),
            line: None,
            instance: None,
            message: "internal: schema does not compile".into(),
        }];
    };
    v.iter_errors(&instance)
        .map(|e| {
            let ptr = e.instance_path().to_string();
            Problem {
                file: file.into(),
                line: locate(text, &ptr),
                instance: None,
                message: format!("schema: {}{e}", if ptr.is_empty() { String::new() } else { format!("{ptr}: ") }),
            }
        })
        .collect()
}

/// Whether an outline has a line for the step `text`: a line whose text, with each
/// `[name]` standing for any value, is `text`.
fn outline_lists(outline: &str, text: &str) -> bool {
    outline.lines().any(|line| {
        // the line's text after its indentation and its number
        let body = line.trim_start();
        let body = body
            .split_once(". ")
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
            .map_or(body, |(_, b)| b);
        let mut rest = text;
        let mut parts = body.split('[');
        let Some(first) = parts.next() else { return false };
        let Some(r) = rest.strip_prefix(first) else { return false };
        rest = r;
        let mut last_open = false;
        for part in parts {
            let Some((_, literal)) = part.split_once(']') else { return false };
            last_open = true;
            if literal.is_empty() {
                continue;
            }
            // the value ends where the next literal text starts
            let Some(i) = rest.find(literal) else { return false };
            rest = &rest[i + literal.len()..];
            last_open = false;
        }
        rest.is_empty() || last_open
    })
}

/// Check one prepared instance; problems are plain messages.
pub fn check_instance(ws: &Workspace, p: &Prepared) -> Vec<String> {
    let _ = ws;
    let mut out = Vec::new();
    let inst = &p.instance;
    let tree = &p.oracle;
    for (path, status) in tree.problems() {
        out.push(format!("node '{path}' is not planned under oracle facts: {}", json!(status)));
    }
    // exactly one method applies at each decision
    for (i, n) in tree.nodes.iter().enumerate().filter(|(_, n)| n.method.is_some()) {
        let Some(task) = p.library.tasks.get(&n.task) else { continue };
        if task.methods.len() < 2 {
            continue;
        }
        let env = tree.scope(i, &[]);
        let applying: Vec<&str> = task
            .methods
            .iter()
            .filter(|m| {
                m.when
                    .as_ref()
                    .is_none_or(|w| matches!(expr::truth(w, &Vec::new(), &env), Ok(Some(true))))
            })
            .map(|m| m.name.as_str())
            .collect();
        if applying.len() != 1 {
            out.push(format!(
                "at '{}' ({}), {} methods apply under the oracle facts: {}",
                n.path,
                n.task,
                applying.len(),
                applying.join(", ")
            ));
        }
    }
    // pinned branches
    let branches = tree.branches();
    for (path, want) in &inst.expect_branch {
        match branches.get(path) {
            Some(got) if got == want => {}
            Some(got) => out.push(format!("expect_branch '{path}': the record calls for '{got}', not '{want}'")),
            None => out.push(format!("expect_branch '{path}': there is no decision at that path")),
        }
    }
    // scenario variables the network reads
    for v in p.library.free_globals(&inst.root.task) {
        if !inst.vars.contains_key(&v) {
            out.push(format!("the task network reads %{v}, which the family does not define"));
        }
    }
    // patient, codes and references exist in the cohort
    let s0 = fork(&p.cohort, &p.clock, 0);
    if s0.read("Patient", &inst.patient).is_err() {
        out.push(format!("patient '{}' does not exist in cohort '{}'", inst.patient, inst.cohort));
    }
    let mut facts = SandboxFacts::new(s0.clone());
    for n in &tree.nodes {
        if let Some(f) = &n.fact {
            let codes: Vec<(String, String)> = f.params.iter().filter(|(k, _)| k == "code").cloned().collect();
            if !codes.is_empty() {
                use emrgym_scenario::htn::plan::FactSource;
                match facts.search(&f.resource_type, &codes) {
                    Ok(found) if found.is_empty() => out.push(format!(
                        "node '{}': code {} occurs nowhere in cohort '{}'",
                        n.path,
                        codes.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(","),
                        inst.cohort
                    )),
                    Ok(_) => {}
                    Err(e) => out.push(format!("node '{}': {e}", n.path)),
                }
            }
        }
        if let Some(call) = &n.call
            && p.registry.manifest(&call.name).is_none()
        {
            out.push(format!(
                "node '{}': the reference plan calls '{}', which the family's tools do not allow",
                n.path, call.name
            ));
        }
    }
    // no write postcondition already holds on the untouched record
    for (i, n) in tree.nodes.iter().enumerate() {
        for c in checks(&p.library, n) {
            let Check::Select {
                selector, count, asserts, ..
            } = c
            else {
                continue;
            };
            if *count == 0 {
                continue;
            }
            let params = vec![("_count".to_string(), "1000".to_string())];
            let existing = {
                use emrgym_scenario::htn::plan::FactSource;
                facts.search(&selector.resource_type, &params).unwrap_or_default()
            };
            let env = tree.scope(i, &[]);
            let holds = existing.iter().any(|r| {
                let focus = V::from_json(r);
                selector
                    .where_
                    .as_ref()
                    .is_none_or(|w| matches!(expr::truth(w, &focus, &env), Ok(Some(true))))
                    && !asserts.is_empty()
                    && asserts.iter().all(|(_, a)| matches!(expr::truth(a, &focus, &env), Ok(Some(true))))
            });
            if holds {
                out.push(format!(
                    "node '{}': its postcondition already holds on the untouched cohort (a matching {} exists)",
                    n.path, selector.resource_type
                ));
            }
        }
    }
    // the reference plan fits the budget a model gets under the default configuration
    let need = p.reference_len();
    let (limits, _) = super::run::episode_limits(&super::run::derived_limits(), p);
    if need > limits.max_steps || need > limits.max_turns {
        out.push(format!(
            "the reference plan takes {need} tool calls, more than a model gets by default ({} steps, {} turns)",
            limits.max_steps, limits.max_turns
        ));
    }
    if need > inst.max_steps {
        out.push(format!(
            "the reference plan takes {need} tool calls but the family's max_steps is {}: raise it",
            inst.max_steps
        ));
    }
    // the oracle passes every node
    let calls: Vec<_> = tree.reference_calls().into_iter().map(|(_, c)| c).collect();
    let (traj, g, _) = run_and_grade(p, &mut Oracle::new(calls.clone()), 1);
    for (i, s) in traj.steps.iter().enumerate() {
        if !s.result.ok {
            out.push(format!("oracle step {i} ({}) failed: {}", s.call.name, s.result.content));
        }
    }
    out.extend(plan_repeats(&traj.steps));
    // no reference plan makes one write twice (`repeated_write`): a model that follows the
    // plan is never ended `stuck` for its writes
    for i in 0..traj.steps.len() {
        if emrgym_agent::model::repeated_write(&traj.steps[..=i], 2) {
            out.push(format!(
                "oracle step {i} ({}) repeats an earlier write: a model making one write {} times is ended `stuck`",
                traj.steps[i].call.name,
                emrgym_agent::model::Limits::default().max_repeats
            ));
        }
    }
    for n in g.nodes.iter().filter(|n| n.verdict != Verdict::Passed) {
        out.push(format!("the oracle does not pass node '{}': {}", n.path, n.reasons.join("; ")));
    }
    if !g.success {
        out.push(format!("the oracle run is not a success (classes: {:?})", g.classes));
    }
    // the safety screen: no medication order or change for a patient in whom it is unsafe,
    // unless the family's rules handle that finding on purpose
    for h in &inst.handles {
        if !super::safety::KINDS.contains(&h.as_str()) {
            out.push(format!("handles: '{h}' is not one of {}", super::safety::KINDS.join(", ")));
        }
    }
    if super::safety::orders_medication(&calls) {
        for f in super::safety::findings(&mut facts, &inst.patient) {
            if !inst.handles.iter().any(|h| h == f.kind) {
                out.push(format!(
                    "safety: the reference plan orders a medication for patient {} who has {} ({}); \
                     choose another patient, or make the family's rules handle it and declare \"handles\": [\"{}\"]",
                    inst.patient, f.kind, f.detail, f.kind
                ));
            }
        }
    }
    // the outline condition's procedure: it can be written out, and it lists every step of
    // the reference plan (a value the record gives stands as [name])
    match crate::run::present(&std::sync::Arc::new(p.clone()), crate::run::Mode::Outline) {
        Err(e) => out.push(format!("outline: {e}")),
        Ok(shown) => {
            for n in tree.nodes.iter().filter(|n| n.kind == "primitive") {
                if let Some(text) = &n.instruction
                    && !outline_lists(&shown.instance.context, text)
                {
                    out.push(format!("outline: the reference plan's step '{}' ({text}) is not in it", n.path));
                }
            }
        }
    }
    // the null agent fails every gated node that asks for something
    let (_, ng, _) = run_and_grade(p, &mut Null, 1);
    if ng.success {
        out.push("the null agent (finishes at once) succeeds: the scenario tests nothing".into());
    }
    for (i, n) in tree.nodes.iter().enumerate() {
        let positive = checks(&p.library, n).iter().any(|c| !matches!(c, Check::Select { count: 0, .. }));
        if positive && n.gate && ng.nodes[i].verdict == Verdict::Passed {
            out.push(format!("the null agent passes gated node '{}'", n.path));
        }
    }
    out
}

/// Run every check over a scenario directory.
pub fn check(path: &Path) -> CheckReport {
    let mut report = CheckReport {
        ok: true,
        families: 0,
        instances: 0,
        branches: BTreeMap::new(),
        problems: Vec::new(),
    };
    // schema of every JSON file first (line-precise)
    let mut files: Vec<PathBuf> = Vec::new();
    if path.is_dir() {
        for sub in [path.to_path_buf(), path.join("htn")] {
            if let Ok(rd) = std::fs::read_dir(&sub) {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .collect();
                v.sort();
                files.extend(v);
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    for f in &files {
        let name = f.display().to_string();
        if name.ends_with(".schema.json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        let is_lib = f.parent().is_some_and(|p| p.file_name().is_some_and(|n| n == "htn"));
        report
            .problems
            .extend(schema_problems(&name, &text, if is_lib { HTN_SCHEMA } else { SCENARIO_SCHEMA }));
    }
    let (suite, load_errors) = emrgym_scenario::Suite::load_partial(path);
    for e in load_errors {
        // schema errors already name these files with their lines; keep parser errors the schema cannot see
        if !report.problems.iter().any(|p| p.file == e.file) {
            report.problems.push(Problem {
                file: e.file,
                line: e.line,
                instance: None,
                message: e.message,
            });
        }
    }
    let mut ws = match Workspace::from_suite(suite) {
        Ok(w) => w,
        Err(es) => {
            report.problems.extend(es.into_iter().map(|m| Problem {
                file: path.display().to_string(),
                line: None,
                instance: None,
                message: m,
            }));
            report.ok = false;
            return report;
        }
    };
    let families = ws.suite.families.clone();
    report.families = families.len();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let scenario_dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut cohort_dirs = super::keys::CohortDirs::new();
    for (file, text, fam) in &families {
        // per cohort: the key's request entries; per instance: the oracle's expectations and line
        let mut requests: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut expected: BTreeMap<String, (super::keys::Expected, Option<usize>)> = BTreeMap::new();
        let fname = file.display().to_string();
        let instances = match fam.instances() {
            Ok(i) => i,
            Err(e) => {
                report.problems.push(Problem {
                    file: fname.clone(),
                    line: None,
                    instance: None,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let mut lib_reported = false;
        for (k, inst) in instances.iter().enumerate() {
            report.instances += 1;
            let line = locate(text, &format!("/instances/{k}/id")).or_else(|| locate(text, "/instances"));
            if let Some(other) = ids.insert(inst.id.clone(), fname.clone()) {
                report.problems.push(Problem {
                    file: fname.clone(),
                    line,
                    instance: Some(inst.id.clone()),
                    message: format!("instance id is also used in {other}"),
                });
            }
            match ws.prepare(inst) {
                Err(es) => {
                    if !lib_reported {
                        for m in es {
                            report.problems.push(Problem {
                                file: fname.clone(),
                                line: None,
                                instance: Some(inst.id.clone()),
                                message: m,
                            });
                        }
                        lib_reported = true;
                    }
                }
                Ok(p) => {
                    for (path, method) in p.oracle.branches() {
                        *report
                            .branches
                            .entry(fam.family.clone())
                            .or_default()
                            .entry(path)
                            .or_default()
                            .entry(method)
                            .or_default() += 1;
                    }
                    requests
                        .entry(inst.cohort.clone())
                        .or_default()
                        .push(super::keys::request_entry(&p));
                    expected.insert(inst.id.clone(), (super::keys::oracle_expected(&p), line));
                    for m in check_instance(&ws, &p) {
                        report.problems.push(Problem {
                            file: fname.clone(),
                            line,
                            instance: Some(inst.id.clone()),
                            message: m,
                        });
                    }
                }
            }
        }
        if let Some(first) = instances.first() {
            let answers: Vec<&Value> = expected.values().map(|(e, _)| &e.answer).collect();
            for m in answer_format_problems(&first.answer, &format!("{} {}", first.instruction, first.context), &answers) {
                report.problems.push(Problem {
                    file: fname.clone(),
                    line: locate(text, "/answer").or_else(|| locate(text, "/instruction")),
                    instance: None,
                    message: m,
                });
            }
            // the goal condition's text must state the format too (the grader is the same)
            if let Some(m) = fam.goal_format_problem(first) {
                report.problems.push(Problem {
                    file: fname.clone(),
                    line: locate(text, "/goal/instruction").or_else(|| locate(text, "/goal")),
                    instance: None,
                    message: m,
                });
            }
        }
        report.problems.extend(key_problems(
            &scenario_dir,
            &fname,
            &fam.family,
            &requests,
            &expected,
            &mut cohort_dirs,
        ));
    }
    report.ok = report.problems.is_empty();
    report
}

/// Does the family state how its answers are given? A number other than the "not available"
/// -1 needs a precision (`answer.decimals` or `answer.as_recorded`), a list of two or more
/// items needs `answer.list_order`, and the instruction must state what the family declares:
/// the grader derives its tolerance and list matching from the declaration, so an unstated one
/// would grade against a rule the agent was never told.
pub fn answer_format_problems(format: &AnswerFormat, text: &str, answers: &[&Value]) -> Vec<String> {
    fn walk(v: &Value, number: &mut bool, list: &mut bool) {
        match v {
            Value::Number(n) if n.as_f64() != Some(-1.0) => *number = true,
            Value::Array(a) => {
                *list |= a.len() > 1;
                a.iter().for_each(|x| walk(x, number, list));
            }
            _ => {}
        }
    }
    let (mut number, mut list) = (false, false);
    answers.iter().for_each(|a| walk(a, &mut number, &mut list));
    let mut out = Vec::new();
    if number && format.decimals.is_none() && !format.as_recorded {
        out.push(
            "numeric answers, but no stated precision: set answer.decimals (and ask for it in the instruction) or answer.as_recorded"
                .into(),
        );
    }
    if list && format.list_order.is_none() {
        out.push("list answers, but no stated order: set answer.list_order (as_asked, with the order in the instruction, or any)".into());
    }
    if let Err(e) = format.stated_in(text) {
        out.push(e.to_string());
    }
    out
}

/// Run a family's independent answer key and compare it with the oracle, instance by instance.
fn key_problems(
    scenario_dir: &Path,
    fname: &str,
    family: &str,
    requests: &BTreeMap<String, Vec<Value>>,
    expected: &BTreeMap<String, (super::keys::Expected, Option<usize>)>,
    cohort_dirs: &mut super::keys::CohortDirs,
) -> Vec<Problem> {
    let problem = |line: Option<usize>, instance: Option<&str>, message: String| Problem {
        file: fname.to_string(),
        line,
        instance: instance.map(str::to_string),
        message,
    };
    if expected.is_empty() {
        return Vec::new();
    }
    let script = super::keys::key_path(scenario_dir, family);
    if !script.is_file() {
        return vec![problem(
            None,
            None,
            format!(
                "no independent answer key: write {} from the instruction text (docs/scenario-format.md, \"Answer keys\")",
                script.display()
            ),
        )];
    }
    let mut out = Vec::new();
    for (cohort, entries) in requests {
        let results = cohort_dirs
            .dir(cohort)
            .map_err(|e| e.to_string())
            .and_then(|dir| super::keys::run_key(&script, family, &dir, entries));
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                out.push(problem(None, None, format!("answer key: {e}")));
                continue;
            }
        };
        for entry in entries {
            let id = entry["id"].as_str().unwrap_or_default();
            let Some((exp, line)) = expected.get(id) else { continue };
            match results.get(id) {
                None => out.push(problem(*line, Some(id), "the answer key gives no result for this instance".into())),
                Some(r) => out.extend(super::keys::compare(r, exp).into_iter().map(|m| problem(*line, Some(id), m))),
            }
        }
    }
    out
}

pub fn family_rows(ws: &mut Workspace) -> Vec<(String, String, usize, String, String)> {
    let families = ws.suite.families.clone();
    let mut rows = Vec::new();
    for (_, _, fam) in &families {
        let Ok(instances) = fam.instances() else { continue };
        let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for inst in &instances {
            if let Ok(p) = ws.prepare(inst) {
                for (path, m) in p.oracle.branches() {
                    if p.library
                        .tasks
                        .get(&p.oracle.nodes[p.oracle.find(&path).unwrap_or(0)].task)
                        .is_some_and(|t| t.methods.len() > 1)
                    {
                        *counts.entry(path).or_default().entry(m).or_default() += 1;
                    }
                }
            }
        }
        let balance = if counts.is_empty() {
            "-".to_string()
        } else {
            counts
                .iter()
                .map(|(path, ms)| {
                    format!(
                        "{path}: {}",
                        ms.iter().map(|(m, c)| format!("{m} {c}")).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        rows.push((
            fam.family.clone(),
            fam.title.clone(),
            instances.len(),
            balance,
            fam.tools.join(", "),
        ));
    }
    rows
}

pub fn new_family(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        bail!("family name '{name}' must be snake_case (a-z, 0-9, _)");
    }
    let path = dir.join(format!("{name}.json"));
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    let family = json!({
        "$schema": "./scenario.schema.json",
        "format_version": 1,
        "family": name,
        "title": "One line: what the agent must do",
        "doc": "What this family tests, which branches it has, and why. (Every field below is documented in docs/scenario-format.md.)",
        "source": "Where the task comes from (a benchmark, a guideline, a clinical protocol)",
        "cohort": "demo",
        "now": "2023-11-13T10:15:00+00:00",
        "library": ["htn/common.json", "htn/electrolytes.json"],
        "tools": ["fhir_search", "fhir_read", "fhir_create", "finish"],
        "instruction": "The task as a clinician would say it, with slots like ${%patient}. Do not leak the branch or the answer.",
        "context": "Facts the task gives: codes, dosing rules, and how to give the answer (here: the value as recorded). It's ${%now} now.",
        "answer": {"as_recorded": true},
        "root": {"task": "latest_value", "args": {"code": "K", "label": "serum potassium"}},
        "vars": {},
        "max_steps": 12,
        "instances": [
            {"id": format!("{}-001", name.replace('_', "-")), "patient": "S6534835", "vars": {}, "expect_branch": {}, "doc": "Why this instance exists (which branch it exercises)."}
        ]
    });
    let keys = dir.join("keys");
    let key = super::keys::key_path(dir, name);
    if key.exists() {
        bail!("{} already exists", key.display());
    }
    std::fs::create_dir_all(&keys).with_context(|| format!("creating {}", keys.display()))?;
    std::fs::write(&path, format!("{}\n", serde_json::to_string_pretty(&family)?))
        .with_context(|| format!("writing {}", path.display()))?;
    if !keys.join("keylib.py").exists() {
        std::fs::write(keys.join("keylib.py"), KEYLIB).with_context(|| format!("writing {}", keys.join("keylib.py").display()))?;
    }
    std::fs::write(&key, SCAFFOLD_KEY.replace("FAMILY", name)).with_context(|| format!("writing {}", key.display()))?;
    Ok(path)
}

/// The answer keys' shared plumbing, written beside a scaffolded key when missing.
const KEYLIB: &str = include_str!("../../../scenarios/keys/keylib.py");

/// The answer key of a scaffolded family (the scaffold's task: the latest serum potassium).
const SCAFFOLD_KEY: &str = r#""""Independent answer key for FAMILY.

Replace this with the rules of your instruction, written from the instruction text and the
guideline it cites, never from the HTN library (docs/scenario-format.md, "Answer keys").
State every rule with its source, and how you read every ambiguity.

The scaffold's task: the most recent serum potassium (code "K") at the clinical now; -1 when
there is none.
"""

import keylib


def key(inst, cohort):
    now = keylib.parse_instant(inst["now"])
    results = [
        o
        for o in cohort.of_patient("Observation", inst["patient"])
        if keylib.has_code(o.get("code"), "K") and keylib.effective(o) is not None and keylib.effective(o) <= now
    ]
    if not results:
        return {"answer": -1, "branches": {}, "writes": []}
    latest = max(results, key=keylib.effective)
    return {"answer": latest["valueQuantity"]["value"], "branches": {}, "writes": []}


if __name__ == "__main__":
    keylib.main(key)
"#;

/// Run `emrgym scenarios`.
/// The branches `family` takes for every patient of `cohort` (default: the family's):
/// patient -> {node path: method}, methods named `default` left out.
pub fn branches(family: &Path, cohort: Option<&str>) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut ws = Workspace::open(family).map_err(|e| anyhow::anyhow!("{}: {}", family.display(), e.join("\n")))?;
    let (_, _, fam) = ws.suite.families.first().cloned().context("no family in that file")?;
    let cohort = cohort.unwrap_or(&fam.cohort).to_string();
    let probe = fam
        .instances
        .first()
        .cloned()
        .context("the family has no instance to take variables from")?;
    let clock = emrgym_fhir::clock::Clock::fixed(emrgym_fhir::clock::parse_instant(&fam.now).map_err(anyhow::Error::msg)?);
    let c = emrgym_fhir::load::load(&cohort)?.build(&clock);
    let sb = emrgym_fhir::store::Sandbox::fork(&c, emrgym_fhir::store::SandboxOptions::default());
    let q = emrgym_fhir::search::SearchQuery::parse("Patient", &[("_count".into(), "100000".into())], c.registry(), true)?;
    let mut out = BTreeMap::new();
    for v in sb.search_all(&q)? {
        let Some(id) = v.resource().and_then(|r| r["id"].as_str().map(String::from)) else {
            continue;
        };
        let decl = emrgym_scenario::InstanceDecl {
            id: format!("probe-{}", id.to_lowercase()),
            patient: id.clone(),
            cohort: Some(cohort.clone()),
            expect_branch: BTreeMap::new(),
            doc: String::new(),
            ..probe.clone()
        };
        let inst = fam.instantiate(&decl).map_err(anyhow::Error::msg)?;
        let p = ws.prepare(&inst).map_err(|e| anyhow::anyhow!("{id}: {}", e.join("; ")))?;
        let b: BTreeMap<String, String> = p.oracle.branches().into_iter().filter(|(_, m)| m != "default").collect();
        out.insert(id, b);
    }
    Ok(out)
}

/// The suite as a Markdown table (docs/suite.md): family, what it tests, instances (and
/// per cohort), branch balance, tools; then the totals.
pub fn suite_markdown(path: &Path) -> anyhow::Result<String> {
    let mut ws = Workspace::open(path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    let rows = family_rows(&mut ws);
    let mut cohorts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for i in ws.suite.instances().map_err(anyhow::Error::msg)? {
        *cohorts.entry(i.family.clone()).or_default().entry(i.cohort.clone()).or_insert(0) += 1;
    }
    let mut s = String::from("| Family | What it tests | Instances | Cohorts | Branch balance | Tools |\n|---|---|---|---|---|---|\n");
    let mut total = 0;
    for (f, t, n, b, tools) in &rows {
        let c = cohorts
            .get(f)
            .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        total += n;
        s.push_str(&format!("| `{f}` | {t} | {n} | {c} | {b} | {tools} |\n"));
    }
    s.push_str(&format!("\n{} families, {total} instances.\n", rows.len()));
    Ok(s)
}

/// The reference plan's expectations per instance (`emrgym scenarios expected`): the answer,
/// the branch of every decision and a summary of every write, keyed by instance id.
pub fn expected(path: &Path) -> anyhow::Result<Value> {
    let mut ws = Workspace::open(path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    let mut out = serde_json::Map::new();
    for inst in ws.suite.instances().map_err(|e| anyhow::anyhow!(e))? {
        let p = ws.prepare(&inst).map_err(|e| anyhow::anyhow!("{}: {}", inst.id, e.join("; ")))?;
        let e = crate::keys::oracle_expected(&p);
        out.insert(
            inst.id.clone(),
            json!({"family": inst.family, "patient": inst.patient, "answer": e.answer, "branches": e.branches, "writes": e.writes}),
        );
    }
    Ok(Value::Object(out))
}

/// The task as the agent reads it at the start of an episode of instance `id` in `mode`: the
/// system prompt and the task as `emrgym run` gives them to a model with native tool calling
/// (the instance presented in `mode`: its goal, or its outline), and in guided mode the steps
/// the planner releases before the first call. The error names an unknown instance, or one
/// the mode cannot present.
pub fn prompt(path: &Path, id: &str, mode: crate::run::Mode) -> anyhow::Result<String> {
    let mut ws = Workspace::open(path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    let instances = ws.suite.instances().map_err(|e| anyhow::anyhow!(e))?;
    let Some(inst) = instances.iter().find(|i| i.id == id) else {
        bail!("no instance '{id}' in {} (`emrgym scenarios list` names them)", path.display());
    };
    let p = std::sync::Arc::new(ws.prepare(inst).map_err(|e| anyhow::anyhow!("{id}: {}", e.join("; ")))?);
    let p = crate::run::present(&p, mode).map_err(|e| anyhow::anyhow!("--mode {}: {e}", mode.name()))?;
    let mut out = super::episode::task_prompt(&p, super::episode::BASE);
    if mode == crate::run::Mode::Guided {
        let g = super::episode::Guide::new(&p).at(&[], &fork(&p.cohort, &p.clock, 0));
        if let Some(text) = super::episode::guidance_text(&g) {
            out.push_str(&format!("\n\n{text}"));
        }
    }
    out.push('\n');
    Ok(out)
}

/// Used by tests: instances of a directory.
pub fn instances(path: &Path) -> anyhow::Result<Vec<Instance>> {
    let ws = Workspace::open(path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
    ws.suite.instances().map_err(anyhow::Error::msg)
}

/// Where a reference plan repeats itself in a way the stuck limits end a model's episode for
/// ([`emrgym_agent::model::stuck_cycle`]): a call with its result twice in a row, or two calls
/// with their results twice in a row (A, B, A, B). A model that follows the plan is then never
/// ended `stuck`, as the limits end only four such repeats.
fn plan_repeats(steps: &[emrgym_scenario::trajectory::Step]) -> Vec<String> {
    let limit = emrgym_agent::model::Limits::default().max_repeats;
    let mut out = Vec::new();
    for i in 1..steps.len() {
        match emrgym_agent::model::stuck_cycle(&steps[..=i], 2) {
            Some(1) => out.push(format!(
                "oracle steps {} and {i} are the same call ({}) with the same result: a model doing this {limit} times in a row is ended `stuck`",
                i - 1,
                steps[i].call.name
            )),
            Some(_) => out.push(format!(
                "oracle steps {} to {i} repeat two calls ({}, {}) with their results: a model doing this {limit} times in a row is ended `stuck`",
                i - 3,
                steps[i - 1].call.name,
                steps[i].call.name
            )),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::outline_lists;

    /// The integrity gate names a reference plan that repeats a call with its result, or two
    /// calls with theirs (A, B, A, B), and passes one that only comes back to a call later.
    #[test]
    fn a_plan_that_repeats_a_call_or_a_pair_of_calls_is_named() {
        use emrgym_scenario::trajectory::{Step, ToolCall, ToolResult};
        use serde_json::json;
        let step = |id: &str| {
            Step::new(
                ToolCall {
                    name: "fhir_read".into(),
                    arguments: json!({"resource_type": "Patient", "id": id}),
                },
                ToolResult {
                    ok: true,
                    status: 200,
                    content: json!({"id": id}),
                },
            )
        };
        let plan = |ids: &[&str]| ids.iter().map(|i| step(i)).collect::<Vec<_>>();
        assert!(super::plan_repeats(&plan(&["a", "b", "c", "a", "b"])).is_empty());
        let twice = super::plan_repeats(&plan(&["a", "b", "b", "c"]));
        assert_eq!(twice.len(), 1, "{twice:?}");
        assert!(
            twice[0].starts_with("oracle steps 1 and 2 are the same call (fhir_read)"),
            "{twice:?}"
        );
        let pair = super::plan_repeats(&plan(&["c", "a", "b", "a", "b"]));
        assert_eq!(pair.len(), 1, "{pair:?}");
        assert!(
            pair[0].starts_with("oracle steps 1 to 4 repeat two calls (fhir_read, fhir_read)"),
            "{pair:?}"
        );
        assert!(pair[0].contains("4 times in a row is ended `stuck`"), "{pair:?}");
    }

    #[test]
    fn an_outline_lists_a_step_with_record_values_standing_as_names() {
        let outline = "The procedure\n1. Find the latest K of patient S1.\n2. As the record shows, one of:\n   - Low: replete.\n     1. Stop the active order [med] (set its status to stopped).\n";
        assert!(outline_lists(outline, "Find the latest K of patient S1."));
        assert!(outline_lists(outline, "Stop the active order mr-17 (set its status to stopped)."));
        assert!(!outline_lists(outline, "Find the latest K of patient S2."));
        assert!(!outline_lists(outline, "Stop the active order mr-17 (set its status to on-hold)."));
        assert!(!outline_lists(outline, "Order potassium."));
        // a value at the end of a line
        assert!(outline_lists("1. Record the value [value]\n", "Record the value 120"));
        assert!(!outline_lists("1. Record the value [value]\n", "Record a value 120"));
    }
}
