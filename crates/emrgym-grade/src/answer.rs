//! Answer matching: numbers within a tolerance and in other units, lists in order or as sets,
//! dates, normalised text, and refusals (free text or structured) compared by kind.

use emrgym_calc::units::{Analyte, Q};
use emrgym_scenario::htn::expr;
use serde_json::Value;

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

/// Does a final answer say that the patient was not found: a structured refusal with reason
/// `patient_not_found`, or text that names the patient as missing ("Patient not found", "no
/// such patient")? Narrower than [`refusal_kind`], whose "not found" also covers "potassium not
/// found": this decides a failure on a task that asked no answer (docs/grading.md, "Refusals"),
/// where only a claim about the patient is checkably false.
pub fn claims_patient_not_found(given: &Value) -> bool {
    if let Some(reason) = structured_refusal(given) {
        return reason == "patient_not_found";
    }
    let Value::String(s) = given else {
        return false;
    };
    let t = norm_text(s).replace(['\u{2019}', '\''], "");
    [
        "patient not found",
        "patient was not found",
        "patient could not be found",
        "no such patient",
        "no matching patient",
        "no patient found",
        "no patient with",
        "could not find the patient",
        "couldnt find the patient",
        "patient does not exist",
        "patient doesnt exist",
    ]
    .iter()
    .any(|p| t.contains(p))
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
pub(crate) fn unmatched_item(fits: &[Vec<bool>]) -> Option<usize> {
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
    // a list written as text, its items separated by commas, semicolons or line breaks
    // ("S1054954, S1092389"), is that list: each item is then compared as any other, in the
    // order the rule asks (v8; before, only a JSON array or JSON text of one passed)
    if let (Value::Array(e), Value::String(s)) = (expected, given)
        && e.len() > 1
    {
        let items: Vec<Value> = s
            .split([',', ';', '\n'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Value::String(t.to_string()))
            .collect();
        if items.len() > 1 {
            return answer_matches(expected, &Value::Array(items), rule);
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
