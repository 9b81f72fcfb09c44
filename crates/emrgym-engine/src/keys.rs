//! Independent answer keys: every family has `keys/FAMILY.py` beside its file, a second
//! implementation written from the instruction text and the guideline (never from the HTN
//! library). `scenarios check` runs each key on the family's instances and compares, per
//! instance, the branch of every decision, the expected answer and a summary of the expected
//! writes with what the oracle's reference plan does. A disagreement is a problem that shows
//! both values; a family without a key is a problem too. The protocol is in
//! `scenarios/keys/keylib.py` and docs/scenario-format.md.

use super::episode::Prepared;
use emrgym_fhir::load::BUILTIN;
use emrgym_scenario::htn::equiv;
use emrgym_scenario::htn::expr::parse_datetime;
use emrgym_scenario::trajectory::ToolCall;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the oracle's reference plan expects of one instance, in the form keys produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// The `finish` answer (null when the plan does not finish with one).
    pub answer: Value,
    /// Branch taken at every decision with two or more methods: node path -> method.
    pub branches: BTreeMap<String, String>,
    /// Summaries of the reference plan's writes.
    pub writes: Vec<Value>,
    /// The numeric tolerance the instruction's stated precision allows the answer (a key
    /// reports the value rounded as asked; the oracle may hold it unrounded).
    pub tolerance: f64,
}

/// The oracle's expectations for a prepared instance.
pub fn oracle_expected(p: &Prepared) -> Expected {
    let tree = &p.oracle;
    let branches = tree
        .nodes
        .iter()
        .filter_map(|n| {
            let m = n.method.as_ref()?;
            let methods = p.library.tasks.get(&n.task)?.methods.len();
            (methods >= 2).then(|| (n.path.clone(), m.clone()))
        })
        .collect();
    let calls: Vec<ToolCall> = tree.reference_calls().into_iter().map(|(_, c)| c).collect();
    let answer = calls
        .iter()
        .rev()
        .find(|c| c.name == "finish")
        .and_then(|c| c.arguments.get("answer").cloned())
        .unwrap_or(Value::Null);
    let writes = calls.iter().filter_map(write_summary).collect();
    Expected {
        answer,
        branches,
        writes,
        tolerance: p.instance.answer.tolerance(),
    }
}

fn first<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = match cur {
            Value::Array(a) => a.first()?.get(key)?,
            other => other.get(key)?,
        };
    }
    match cur {
        Value::Array(a) => a.first(),
        other => Some(other),
    }
}

/// The summary of a reference `fhir_create` / `fhir_update` call that keys are compared on
/// (`keylib.write`): action, type, code, dose, unit, route, status, id, time, value.
pub fn write_summary(call: &ToolCall) -> Option<Value> {
    let action = match call.name.as_str() {
        "fhir_create" => "create",
        "fhir_update" => "update",
        _ => return None,
    };
    let args = &call.arguments;
    let r = args.get("resource").unwrap_or(&Value::Null);
    let rtype = args
        .get("resource_type")
        .or_else(|| r.get("resourceType"))
        .cloned()
        .unwrap_or(Value::Null);
    let code = first(r, &["medicationCodeableConcept", "coding", "code"])
        .or_else(|| first(r, &["code", "coding", "code"]))
        .or_else(|| first(r, &["code", "text"]))
        .cloned()
        .unwrap_or(Value::Null);
    let dose_q = first(r, &["dosageInstruction", "doseAndRate", "doseQuantity"])
        .or_else(|| first(r, &["dosageInstruction", "doseAndRate", "rateQuantity"]));
    let route = first(r, &["dosageInstruction", "route", "text"])
        .or_else(|| first(r, &["dosageInstruction", "route", "coding", "display"]))
        .cloned()
        .unwrap_or(Value::Null);
    let value = r
        .get("valueString")
        .cloned()
        .or_else(|| first(r, &["valueQuantity", "value"]).cloned())
        .unwrap_or(Value::Null);
    Some(json!({
        "action": action,
        "resourceType": rtype,
        "code": code,
        "dose": dose_q.and_then(|q| q.get("value")).cloned().unwrap_or(Value::Null),
        "unit": dose_q.and_then(|q| q.get("unit").or_else(|| q.get("code"))).cloned().unwrap_or(Value::Null),
        "route": route,
        "status": if action == "update" { r.get("status").cloned().unwrap_or(Value::Null) } else { Value::Null },
        "id": if action == "update" { args.get("id").cloned().unwrap_or(Value::Null) } else { Value::Null },
        "at": r.get("occurrenceDateTime").cloned().unwrap_or(Value::Null),
        "value": value,
    }))
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance + 1e-6 * a.abs().max(b.abs()).max(1.0)
}

fn norm_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Routes compare by meaning (`PO` = `oral`), through the grader's equivalence rules.
fn same_route(a: &str, b: &str) -> bool {
    let canon = |s: &str| equiv::canonical_route(s).map_or_else(|| norm_text(s), str::to_string);
    canon(a) == canon(b)
}

/// Units compare by meaning (`units/h` = `U/h`): one of each converts to one of the other.
fn same_unit(a: &str, b: &str) -> bool {
    norm_text(a) == norm_text(b) || equiv::convert(1.0, a, b, 1.0).is_some_and(|x| close(x, 1.0, 0.0))
}

/// Does a field of the key's write agree with the oracle's?
fn field_agrees(field: &str, key: &Value, oracle: &Value) -> bool {
    if key.is_null() {
        return true; // not determined by the instruction: not compared
    }
    match field {
        "dose" => matches!((number(key), number(oracle)), (Some(a), Some(b)) if close(a, b, 0.0)),
        "route" => match (key.as_str(), oracle.as_str()) {
            (Some(a), Some(b)) => same_route(a, b),
            _ => false,
        },
        "unit" => match (key.as_str(), oracle.as_str()) {
            (Some(a), Some(b)) => same_unit(a, b),
            _ => false,
        },
        "at" => match (key.as_str().and_then(parse_datetime), oracle.as_str().and_then(parse_datetime)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        _ => answers_agree(key, oracle, 0.0),
    }
}

const FIELDS: &[&str] = &[
    "action",
    "resourceType",
    "code",
    "dose",
    "unit",
    "route",
    "status",
    "id",
    "at",
    "value",
];

fn write_agrees(key: &Value, oracle: &Value) -> bool {
    FIELDS
        .iter()
        .all(|f| field_agrees(f, key.get(*f).unwrap_or(&Value::Null), oracle.get(*f).unwrap_or(&Value::Null)))
}

/// Do two answers agree: numbers within 1e-6 (relative), text case- and space-insensitively,
/// lists item by item; the key's `"<refusal>"` agrees with any non-numeric text.
pub fn answers_agree(key: &Value, oracle: &Value, tolerance: f64) -> bool {
    match (key, oracle) {
        (Value::String(k), o) if k == "<refusal>" => o.as_str().is_some_and(|s| !s.trim().is_empty() && number(o).is_none()),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| answers_agree(x, y, tolerance)),
        (Value::Array(a), b) | (b, Value::Array(a)) if a.len() == 1 && !b.is_array() => answers_agree(&a[0], b, tolerance),
        (Value::Null, Value::Null) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (a, b) if number(a).is_some() && number(b).is_some() => number(a).zip(number(b)).is_some_and(|(x, y)| close(x, y, tolerance)),
        (Value::String(a), Value::String(b)) => norm_text(a) == norm_text(b),
        _ => false,
    }
}

fn compact(v: &Value) -> String {
    let mut o = Map::new();
    if let Value::Object(m) = v {
        for (k, x) in m {
            if !x.is_null() {
                o.insert(k.clone(), x.clone());
            }
        }
    }
    Value::Object(o).to_string()
}

/// Compare the key's result for one instance with the oracle's; one message per disagreement.
pub fn compare(key: &Value, oracle: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    let answer = key.get("answer").unwrap_or(&Value::Null);
    if !answers_agree(answer, &oracle.answer, oracle.tolerance) {
        out.push(format!(
            "answer key disagrees on the answer: key {answer}, oracle {}",
            oracle.answer
        ));
    }
    let empty = Map::new();
    let kb = key.get("branches").and_then(Value::as_object).unwrap_or(&empty);
    for (path, method) in &oracle.branches {
        match kb.get(path).and_then(Value::as_str) {
            Some(m) if m == method => {}
            Some(m) => out.push(format!(
                "answer key disagrees on the branch at '{path}': key '{m}', oracle '{method}'"
            )),
            None => out.push(format!(
                "answer key gives no branch at '{path}' (oracle '{method}'): a key names every decision it reaches"
            )),
        }
    }
    for (path, m) in kb {
        if !oracle.branches.contains_key(path) {
            out.push(format!(
                "answer key takes branch '{}' at '{path}', a decision the oracle's plan does not reach",
                m.as_str().unwrap_or("?")
            ));
        }
    }
    let kw: Vec<Value> = key.get("writes").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut unmatched: Vec<&Value> = oracle.writes.iter().collect();
    let mut extra = Vec::new();
    for w in &kw {
        match unmatched.iter().position(|o| write_agrees(w, o)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => extra.push(w),
        }
    }
    for w in extra {
        out.push(format!("answer key expects a write the oracle does not make: {}", compact(w)));
    }
    for w in unmatched {
        out.push(format!("the oracle makes a write the answer key does not expect: {}", compact(w)));
    }
    out
}

/// Where a family's key lives: `DIR/keys/FAMILY.py` for a scenario directory DIR.
pub fn key_path(scenario_dir: &Path, family: &str) -> PathBuf {
    scenario_dir.join("keys").join(format!("{family}.py"))
}

/// Cohort directories for keys: a path as given, a built-in cohort written out once.
#[derive(Debug)]
pub struct CohortDirs {
    tmp: Option<tempdir::Dir>,
    made: BTreeMap<String, PathBuf>,
}

mod tempdir {
    use std::path::PathBuf;
    /// A directory removed on drop.
    #[derive(Debug)]
    pub struct Dir(pub PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl CohortDirs {
    /// No directories yet.
    pub fn new() -> CohortDirs {
        CohortDirs {
            tmp: None,
            made: BTreeMap::new(),
        }
    }

    /// The directory (or file) holding a cohort's FHIR JSON.
    pub fn dir(&mut self, cohort: &str) -> Result<PathBuf, CohortDirError> {
        if let Some(p) = self.made.get(cohort) {
            return Ok(p.clone());
        }
        let Some((_, files)) = BUILTIN.iter().find(|(n, _)| *n == cohort) else {
            return Ok(PathBuf::from(cohort));
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CohortDirError { path, source }
        };
        let root = match &self.tmp {
            Some(t) => t.0.clone(),
            None => {
                let base = std::env::temp_dir().join(format!("emrgym-keys-{}", std::process::id()));
                std::fs::create_dir_all(&base).map_err(io(&base))?;
                self.tmp = Some(tempdir::Dir(base.clone()));
                base
            }
        };
        let base = root.join(cohort);
        std::fs::create_dir_all(&base).map_err(io(&base))?;
        for (name, text) in *files {
            let file = base.join(name);
            std::fs::write(&file, text).map_err(io(&file))?;
        }
        self.made.insert(cohort.to_string(), base.clone());
        Ok(base)
    }
}

/// A cohort's directory for the answer keys that could not be written ([`CohortDirs::dir`]).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct CohortDirError {
    /// The directory or file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

impl Default for CohortDirs {
    fn default() -> Self {
        CohortDirs::new()
    }
}

/// Run a key on instances of one cohort: instance id -> the key's result.
pub fn run_key(script: &Path, family: &str, cohort_dir: &Path, instances: &[Value]) -> Result<Map<String, Value>, String> {
    let request = json!({"family": family, "cohort_dir": cohort_dir, "instances": instances});
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3 {}: {e} (answer keys need Python 3)", script.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(request.to_string().as_bytes())
            .map_err(|e| format!("{}: writing the request: {e}", script.display()))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!("{} failed ({}): {}", script.display(), out.status, tail.join(" | ")));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{}: its output is not JSON: {e}", script.display()))?;
    v.get("instances")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| format!("{}: its output has no \"instances\" object", script.display()))
}

/// The request entry for one instance (what a key may know: id, patient, now, variables).
pub fn request_entry(p: &Prepared) -> Value {
    let inst = &p.instance;
    json!({"id": inst.id, "patient": inst.patient, "now": inst.now, "vars": inst.vars})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn a_medication_order_is_summarised_by_code_dose_unit_and_route() {
        let c = call(
            "fhir_create",
            json!({"resource_type": "MedicationRequest", "resource": {"resourceType": "MedicationRequest",
              "medicationCodeableConcept": {"coding": [{"code": "8591"}]},
              "dosageInstruction": [{"route": {"text": "intravenous"}, "doseAndRate": [{"doseQuantity": {"value": 20, "unit": "meq"}}]}]}}),
        );
        let s = write_summary(&c).unwrap();
        assert_eq!(s["code"], "8591");
        assert_eq!(s["dose"], 20);
        let key =
            json!({"action": "create", "resourceType": "MedicationRequest", "code": "8591", "dose": 20.0, "unit": "mEq", "route": "iv"});
        assert!(write_agrees(&key, &s));
        let wrong_dose = json!({"action": "create", "resourceType": "MedicationRequest", "code": "8591", "dose": 40});
        assert!(!write_agrees(&wrong_dose, &s));
        let wrong_route = json!({"action": "create", "resourceType": "MedicationRequest", "code": "8591", "route": "oral"});
        assert!(!write_agrees(&wrong_route, &s));
        assert_eq!(write_summary(&call("fhir_search", json!({}))), None);
    }

    #[test]
    fn answers_agree_within_tolerance_and_text_ignores_case() {
        assert!(answers_agree(&json!(3), &json!(3.0), 0.0));
        assert!(!answers_agree(&json!(3), &json!(5), 0.0));
        assert!(answers_agree(&json!("not DKA"), &json!("Not  DKA"), 0.0));
        assert!(answers_agree(&json!([7.1, "2023-01-01"]), &json!([7.1, "2023-01-01"]), 0.0));
        assert!(!answers_agree(&json!([7.1, "2023-01-01"]), &json!([7.1]), 0.0));
        assert!(answers_agree(&json!([-1]), &json!(-1), 0.0));
        assert!(answers_agree(&json!("<refusal>"), &json!("cannot order: no tool"), 0.0));
        assert!(!answers_agree(&json!("<refusal>"), &json!(3), 0.0));
        // a key that rounds as the instruction asks agrees with the unrounded oracle value
        assert!(answers_agree(&json!(45.3), &json!(45.2537), 0.05));
        assert!(!answers_agree(&json!(45.3), &json!(45.2437), 0.05));
        assert!(!answers_agree(&json!(45.3), &json!(45.2537), 0.0));
    }

    #[test]
    fn a_disagreement_names_both_values() {
        let oracle = Expected {
            answer: json!(3),
            branches: BTreeMap::from([("act".to_string(), "low_risk".to_string())]),
            writes: vec![],
            tolerance: 0.5,
        };
        let key = json!({"answer": 5, "branches": {"act": "start", "act.order": "full_dose"},
            "writes": [{"action": "create", "resourceType": "MedicationRequest", "code": "1364445", "dose": 5}]});
        let problems = compare(&key, &oracle);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("key 5, oracle 3"));
        assert!(problems[1].contains("key 'start', oracle 'low_risk'"));
        assert!(problems[2].contains("act.order"));
        assert!(problems[3].contains("1364445"));
        let agreeing = json!({"answer": 3.0, "branches": {"act": "low_risk"}, "writes": []});
        assert!(compare(&agreeing, &oracle).is_empty());
    }
}
