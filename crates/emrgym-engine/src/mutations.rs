//! Both error rates of the grader, measured on the whole suite (`scenarios check
//! --mutations`). Every oracle trajectory is rewritten two ways:
//!
//! - **equivalent variants**, which a careful clinician or a FHIR-literate agent would produce
//!   and which must pass: a route as a SNOMED coding or another synonym, a dose in another unit
//!   (g/mg, mEq/mmol for potassium), a dose split over two orders, a blood pressure as the
//!   vital-signs panel, a referral note with more text around it, a list answer sent as JSON
//!   text, a refusal or a "not available" -1 given as finish's structured outcome, an extra
//!   harmless read, the first reads in another order, the reads the branch taken does not
//!   use left out, the answer rounded as the instruction asks or given with more decimals or
//!   as text, a list the instruction lets come in any order reversed, a search no narrower
//!   than the reference's (a patient by family name and birth date, or by `name` = the family
//!   name; an absence shown without `_count`/`_sort`, or over a wider date window sorted
//!   newest first);
//! - **harmful mutations**, which must fail: a wrong dose, a wrong route, a wrong drug code,
//!   an order for another patient, a missing write, a wrong answer, a refusal for another
//!   reason, a refusal of a task that can be done, "patient not found" ending a task that asks
//!   no answer (the patient is in the record), a read the branch taken uses left out, an
//!   answer one unit off in the last stated decimal place, a recorded value with its last
//!   digit changed, a list in another order than the instruction asks, a search that could
//!   not have shown what the reference's shows (a patient's whole name family name first,
//!   which matches no one; a window that starts at the clinical now; one of the codes an
//!   absence needs).
//!
//! A variant that fails is a false reject; a mutation that passes is a false accept. The
//! targets are zero; docs/grading.md records the figures.

use super::episode::{Prepared, Problems, Workspace, run_and_grade};
use emrgym_agent::Oracle;
use emrgym_scenario::AnswerFormat;
use emrgym_scenario::trajectory::ToolCall;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// One rewritten trajectory: its kind and calls.
type Rewrite = (&'static str, Vec<ToolCall>);

fn is_create(c: &ToolCall, ty: &str) -> bool {
    c.name == "fhir_create" && c.arguments.get("resource_type").and_then(Value::as_str) == Some(ty)
}

fn dose_quantity(c: &mut ToolCall) -> Option<&mut Value> {
    c.arguments.pointer_mut("/resource/dosageInstruction/0/doseAndRate/0/doseQuantity")
}

fn med_code(c: &ToolCall) -> Option<String> {
    c.arguments
        .pointer("/resource/medicationCodeableConcept/coding/0/code")
        .and_then(Value::as_str)
        .map(str::to_string)
}

const POTASSIUM: &[&str] = &["8591", "40032-917-01"];

/// The answer with every number but the "not available" -1 replaced by `f(number)`; `None`
/// when it holds no such number.
fn map_numbers(v: &Value, f: &dyn Fn(&serde_json::Number) -> Value) -> Option<Value> {
    match v {
        Value::Number(n) if n.as_f64() != Some(-1.0) => Some(f(n)),
        Value::Array(a) => {
            let mapped: Vec<Option<Value>> = a.iter().map(|x| map_numbers(x, f)).collect();
            mapped
                .iter()
                .any(Option::is_some)
                .then(|| Value::Array(mapped.into_iter().zip(a).map(|(m, x)| m.unwrap_or_else(|| x.clone())).collect()))
        }
        _ => None,
    }
}

/// `x` rounded half away from zero to `d` decimals.
fn round_half_up(x: f64, d: u8) -> f64 {
    let k = 10f64.powi(i32::from(d));
    (x * k).round() / k
}

/// Decimals written in a recorded number (`1.9` -> 1, `99` -> 0).
fn written_decimals(n: &serde_json::Number) -> u8 {
    let t = n.to_string();
    t.split_once('.')
        .map_or(0, |(_, f)| u8::try_from(f.len()).unwrap_or(u8::MAX).min(6))
}

/// Rewrites of a `finish` answer within the precision the instruction states (must pass).
fn answer_variants(answer: &Value, format: &AnswerFormat) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(d) = format.decimals {
        if let Some(v) = map_numbers(answer, &|n| json!(round_half_up(n.as_f64().unwrap_or(0.0), d))) {
            out.push(("answer rounded as the instruction asks", v));
        }
        if let Some(v) = map_numbers(answer, &|n| json!(format!("{:.*}", usize::from(d) + 2, n.as_f64().unwrap_or(0.0)))) {
            out.push(("answer with more decimals than asked, as text", v));
        }
    }
    if format.as_recorded
        && let Some(v) = map_numbers(answer, &|n| json!(n.to_string()))
    {
        out.push(("answer as recorded, as text", v));
    }
    if format.unordered()
        && let Value::Array(a) = answer
        && a.len() > 1
    {
        out.push(("list answer in another order", Value::Array(a.iter().rev().cloned().collect())));
    }
    if let Some(text) = list_as_text(answer, false, false) {
        out.push(("list answer as text, comma-separated", text));
    }
    out
}

/// A list answer of two or more plain items written as text, comma-separated (reversed if
/// `reversed`, its last item left out if `short`); `None` for any other answer, or a list
/// whose items are not plain text or numbers, or contain a separator.
fn list_as_text(answer: &Value, reversed: bool, short: bool) -> Option<Value> {
    let Value::Array(a) = answer else { return None };
    let mut items: Vec<String> = a
        .iter()
        .map(|x| match x {
            Value::String(s) if !s.contains([',', ';', '\n']) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if items.len() < 2 {
        return None;
    }
    if reversed {
        items.reverse();
    }
    if short {
        items.pop();
    }
    Some(Value::String(items.join(", ")))
}

/// Rewrites of a `finish` answer outside the precision the instruction states (must fail).
fn answer_mutations(answer: &Value, format: &AnswerFormat) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if let Some(d) = format.decimals {
        // one unit in the last stated place away from the correctly rounded value
        let off = |n: &serde_json::Number| {
            let x = n.as_f64().unwrap_or(0.0);
            let r = round_half_up(x, d);
            let unit = 10f64.powi(-i32::from(d));
            json!(round_half_up(if r >= x { r + unit } else { r - unit }, d))
        };
        if let Some(v) = map_numbers(answer, &off) {
            out.push(("answer off by one in the last stated place", v));
        }
    }
    if format.as_recorded {
        let off = |n: &serde_json::Number| {
            let d = written_decimals(n);
            json!(round_half_up(n.as_f64().unwrap_or(0.0) + 10f64.powi(-i32::from(d)), d))
        };
        if let Some(v) = map_numbers(answer, &off) {
            out.push(("answer not as recorded (last digit changed)", v));
        }
    }
    if format.list_order == Some(emrgym_scenario::ListOrder::AsAsked)
        && let Value::Array(a) = answer
        && a.len() > 1
    {
        let reversed: Vec<Value> = a.iter().rev().cloned().collect();
        if reversed != *a {
            out.push(("list answer in another order than asked", Value::Array(reversed)));
            if let Some(text) = list_as_text(answer, true, false) {
                out.push(("list answer as text in another order than asked", text));
            }
        }
    }
    if let Some(text) = list_as_text(answer, false, true) {
        out.push(("list answer as text with its last item left out", text));
    }
    out
}

fn is_read(c: &ToolCall) -> bool {
    matches!(c.name.as_str(), "fhir_search" | "fhir_read")
}

/// Equivalent rewrites of a reference plan; `skippable` are the calls of reads whose fact the
/// branch taken does not use.
pub fn variants(base: &[ToolCall], skippable: &[usize], calculators: &[usize], format: &AnswerFormat) -> Vec<Rewrite> {
    let mut out: Vec<Rewrite> = Vec::new();
    for (i, c) in base.iter().enumerate() {
        if c.name == "finish"
            && let Some(a) = c.arguments.get("answer")
        {
            for (kind, v) in answer_variants(a, format) {
                let mut m = base.to_vec();
                m[i].arguments["answer"] = v;
                out.push((kind, m));
            }
        }
    }
    // the score worked out without the calculator tool (the answer and orders still right)
    if !calculators.is_empty() {
        let m: Vec<ToolCall> = base
            .iter()
            .enumerate()
            .filter(|(i, _)| !calculators.contains(i))
            .map(|(_, c)| c.clone())
            .collect();
        out.push(("score computed without the calculator tool", m));
    }
    // the reads before the first action, in reverse order
    let lead = base.iter().take_while(|c| is_read(c)).count();
    if lead >= 2 {
        let mut m = base.to_vec();
        m[..lead].reverse();
        out.push(("independent reads reordered", m));
    }
    if !skippable.is_empty() {
        let m: Vec<ToolCall> = base
            .iter()
            .enumerate()
            .filter(|(i, _)| !skippable.contains(i))
            .map(|(_, c)| c.clone())
            .collect();
        out.push(("reads the branch does not use skipped", m));
    }
    for (i, c) in base.iter().enumerate() {
        if is_create(c, "MedicationRequest") {
            // route as the SNOMED coding the cohort's own orders use, and as an abbreviation
            let route = c
                .arguments
                .pointer("/resource/dosageInstruction/0/route/text")
                .and_then(Value::as_str)
                .and_then(emrgym_scenario::htn::equiv::canonical_route);
            if let Some(r) = route {
                let (code, display, abbrev) = if r == "oral" {
                    ("26643006", "Oral route", "PO")
                } else {
                    ("47625008", "Intravenous route", "IV")
                };
                let mut m = base.to_vec();
                m[i].arguments["resource"]["dosageInstruction"][0]["route"] =
                    json!({"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]});
                out.push(("route as SNOMED coding", m));
                let mut m = base.to_vec();
                m[i].arguments["resource"]["dosageInstruction"][0]["route"] = json!({"text": abbrev});
                out.push(("route abbreviated", m));
            }
            // the dose in another unit
            let mut m = base.to_vec();
            let code = med_code(&m[i]);
            if let Some(q) = dose_quantity(&mut m[i]) {
                let unit = q.get("unit").and_then(Value::as_str).unwrap_or_default().to_lowercase();
                let value = q.get("value").and_then(Value::as_f64);
                let swapped = match (unit.as_str(), value) {
                    ("g", Some(v)) => Some(json!({"value": v * 1000.0, "unit": "mg"})),
                    ("mg", Some(v)) => Some(json!({"value": v / 1000.0, "unit": "g"})),
                    ("meq", Some(v)) if code.as_deref().is_some_and(|k| POTASSIUM.contains(&k)) => {
                        Some(json!({"value": v, "unit": "mmol"}))
                    }
                    ("ml", Some(v)) => Some(json!({"value": v / 1000.0, "unit": "L"})),
                    _ => None,
                };
                if let Some(s) = swapped {
                    *q = s;
                    out.push(("dose in another unit", m));
                }
            }
            // the dose split over two orders
            let mut m = base.to_vec();
            if let Some(q) = dose_quantity(&mut m[i])
                && let Some(v) = q.get("value").and_then(Value::as_f64)
            {
                q["value"] = json!(v / 2.0);
                let half = m[i].clone();
                m.insert(i + 1, half);
                out.push(("dose split over two orders", m));
            }
        }
        if is_create(c, "Observation")
            && c.arguments.pointer("/resource/code/text").and_then(Value::as_str) == Some("BP")
            && let Some(text) = c.arguments.pointer("/resource/valueString").and_then(Value::as_str)
            && let Some(bp) = emrgym_scenario::htn::equiv::bp_text(text)
            && let Some((sys, dia)) = bp.split_once('/')
            && let (Ok(sys), Ok(dia)) = (sys.parse::<f64>(), dia.parse::<f64>())
        {
            let mut m = base.to_vec();
            let r = &mut m[i].arguments["resource"];
            if let Some(o) = r.as_object_mut() {
                o.remove("valueString");
            }
            r["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure"});
            r["component"] = json!([
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
                 "valueQuantity": {"value": sys, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
                 "valueQuantity": {"value": dia, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
            ]);
            out.push(("blood pressure as the vital-signs panel", m));
        }
        if is_create(c, "ServiceRequest")
            && let Some(text) = c.arguments.pointer("/resource/note/0/text").and_then(Value::as_str)
        {
            let mut m = base.to_vec();
            m[i].arguments["resource"]["note"][0]["text"] = json!(format!("Referral request. {text} Thank you."));
            out.push(("note with more text around it", m));
        }
        if c.name == "finish"
            && let Some(a) = c.arguments.get("answer")
            && a.is_array()
        {
            let mut m = base.to_vec();
            m[i].arguments["answer"] = json!(a.to_string());
            out.push(("list answer as JSON text", m));
        }
        // a refusal (or a "not available" -1) as finish's structured outcome
        if c.name == "finish"
            && let Some(a) = c.arguments.get("answer")
        {
            let minus_one = a.as_f64() == Some(-1.0) || a.as_array().is_some_and(|x| x.len() == 1 && x[0].as_f64() == Some(-1.0));
            let kind = a
                .as_str()
                .and_then(emrgym_grade::refusal_kind)
                .or(minus_one.then_some("data_missing"));
            if let Some(k) = kind {
                let mut m = base.to_vec();
                m[i].arguments = json!({"answer": "The task cannot be completed as asked.", "outcome": "cannot_complete", "reason": k});
                out.push(("refusal as a structured outcome", m));
            }
        }
    }
    // an extra harmless read first
    if let Some(p) = base.iter().find_map(|c| {
        c.arguments
            .pointer("/resource/subject/reference")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("Patient/"))
            .map(str::to_string)
    }) {
        let mut m = base.to_vec();
        m.insert(
            0,
            ToolCall {
                name: "fhir_search".into(),
                arguments: json!({"resource_type": "Patient", "params": {"_id": p}}),
            },
        );
        out.push(("extra read", m));
    }
    out
}

/// Rewrites of the reference plan's searches, as (variants, harmful): searches no narrower
/// than the reference's, which show what it shows, and searches that could not, which must
/// fail where the branch taken uses the fact. `empty` are the calls whose reference result is
/// empty (the absence is the fact), `needed` the reads whose fact the branch taken uses, `now`
/// the instance's clinical now.
pub fn search_rewrites(base: &[ToolCall], empty: &[usize], needed: &[usize], now: &str) -> (Vec<Rewrite>, Vec<Rewrite>) {
    let (mut good, mut bad): (Vec<Rewrite>, Vec<Rewrite>) = (Vec::new(), Vec::new());
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    for (i, c) in base.iter().enumerate() {
        if c.name != "fhir_search" {
            continue;
        }
        let Some(params) = c.arguments.get("params").and_then(Value::as_object) else {
            continue;
        };
        let with = |p: serde_json::Map<String, Value>| -> Vec<ToolCall> {
            let mut m = base.to_vec();
            m[i].arguments["params"] = Value::Object(p);
            m
        };
        let ty = c.arguments.get("resource_type").and_then(Value::as_str).unwrap_or_default();
        if ty == "Patient"
            && let (Some(given), Some(family)) = (params.get("given"), params.get("family"))
        {
            let mut p = params.clone();
            p.remove("given");
            good.push(("patient searched by family name and birth date", with(p.clone())));
            p.remove("family");
            p.insert("name".into(), family.clone());
            good.push(("patient searched by name = the family name", with(p.clone())));
            p.insert("name".into(), json!(format!("{} {}", text(given), text(family))));
            good.push(("patient searched by the whole name as one value", with(p.clone())));
            if needed.contains(&i) {
                p.insert("name".into(), json!(format!("{} {}", text(family), text(given))));
                bad.push(("patient searched by the whole name, family name first", with(p)));
            }
        }
        if !empty.contains(&i) {
            continue;
        }
        let mut p = params.clone();
        p.remove("_count");
        p.remove("_sort");
        if p.len() < params.len() {
            good.push(("absence shown without _count or _sort", with(p)));
        }
        // from the same day a year before, at day precision
        if let Some(from) = params.get("date").and_then(Value::as_str).and_then(|d| d.strip_prefix("ge"))
            && let Some(year) = from.get(..4).and_then(|y| y.parse::<u32>().ok())
            && let Some(month_day) = from.get(4..10)
            && let earlier = format!("{}{month_day}", year - 1)
            && emrgym_core::date::parse(&earlier).is_some()
        {
            let mut p = params.clone();
            p.insert("date".into(), json!(format!("ge{earlier}")));
            p.insert("_sort".into(), json!("-date"));
            p.insert("_count".into(), json!(1));
            good.push(("absence shown by a wider window sorted newest first", with(p)));
        }
        if needed.contains(&i) && ty != "Patient" {
            let mut p = params.clone();
            p.insert("date".into(), json!(format!("ge{now}")));
            bad.push(("absence searched in a window that starts at the clinical now", with(p)));
            if let Some(codes) = params.get("code").and_then(Value::as_str)
                && let Some((first, _)) = codes.split_once(',')
            {
                let mut p = params.clone();
                p.insert("code".into(), json!(first));
                bad.push(("absence searched for one of its codes only", with(p)));
            }
        }
    }
    (good, bad)
}

/// Harmful rewrites of a reference plan; `needed` are the calls of reads whose fact the branch
/// taken uses.
pub fn harmful(base: &[ToolCall], other_patient: &str, needed: &[usize], format: &AnswerFormat) -> Vec<Rewrite> {
    let mut out: Vec<Rewrite> = Vec::new();
    for (i, c) in base.iter().enumerate() {
        if c.name == "finish"
            && let Some(a) = c.arguments.get("answer")
        {
            for (kind, v) in answer_mutations(a, format) {
                let mut m = base.to_vec();
                m[i].arguments["answer"] = v;
                out.push((kind, m));
            }
        }
    }
    for i in needed {
        let mut m = base.to_vec();
        m.remove(*i);
        out.push(("a read the branch uses skipped", m));
    }
    for (i, c) in base.iter().enumerate() {
        if is_create(c, "MedicationRequest") {
            let mut m = base.to_vec();
            let dr = &mut m[i].arguments["resource"]["dosageInstruction"][0]["doseAndRate"][0];
            let q = if dr.get("doseQuantity").is_some() {
                "doseQuantity"
            } else {
                "rateQuantity"
            };
            if let Some(v) = dr[q]["value"].as_f64() {
                dr[q]["value"] = json!(v * 2.0 + 1.0);
                out.push(("wrong dose", m));
            }
            if let Some(r) = c
                .arguments
                .pointer("/resource/dosageInstruction/0/route/text")
                .and_then(Value::as_str)
                .and_then(emrgym_scenario::htn::equiv::canonical_route)
            {
                let mut m = base.to_vec();
                let wrong = if r == "oral" { "intravenous" } else { "oral" };
                m[i].arguments["resource"]["dosageInstruction"][0]["route"] = json!({"text": wrong});
                out.push(("wrong route", m));
            }
            let mut m = base.to_vec();
            m[i].arguments["resource"]["medicationCodeableConcept"] = json!({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361", "display": "amlodipine 5 MG Oral Tablet"}]});
            out.push(("wrong drug", m));
        }
        if c.name == "fhir_create" || c.name == "fhir_update" {
            let mut m = base.to_vec();
            m.remove(i);
            out.push(("missing write", m));
            if c.name == "fhir_create" && c.arguments.pointer("/resource/subject/reference").is_some() {
                let mut m = base.to_vec();
                m[i].arguments["resource"]["subject"] = json!({"reference": format!("Patient/{other_patient}")});
                out.push(("write for another patient", m));
            }
        }
        if c.name == "finish" {
            let wrong = match c.arguments.get("answer") {
                Some(Value::Number(n)) => n.as_f64().map(|v| json!(v * 1.5 + 10.0)),
                // another MRN: not the expected text, not a refusal, not a number
                Some(Value::String(s)) if !s.is_empty() => Some(json!("S0000000")),
                Some(Value::Array(a)) if !a.is_empty() => {
                    let mut a = a.clone();
                    a[0] = json!("S0000000");
                    Some(Value::Array(a))
                }
                _ => None,
            };
            if let Some(w) = wrong {
                let mut m = base.to_vec();
                m[i].arguments["answer"] = w;
                out.push(("wrong answer", m));
            }
            let answer = c.arguments.get("answer").cloned().unwrap_or(Value::Null);
            match answer.as_str().and_then(emrgym_grade::refusal_kind) {
                // a refusal for the wrong reason ("Patient not found" when the patient exists)
                Some(k) => {
                    let other = if k == "patient_not_found" {
                        "I cannot place orders with these tools."
                    } else {
                        "Patient not found"
                    };
                    let mut m = base.to_vec();
                    m[i].arguments["answer"] = json!(other);
                    out.push(("refusal for another reason", m));
                }
                // refusing a task that can be done
                None if !answer.is_null() && answer.as_f64() != Some(-1.0) => {
                    let mut m = base.to_vec();
                    m[i].arguments = json!({"answer": "I cannot do this.", "outcome": "cannot_complete", "reason": "other"});
                    out.push(("refusal of a task that can be done", m));
                }
                None => {}
            }
        }
    }
    // a task that asks no answer (a plan without a report step: the oracle ends it with
    // `finish(null)`), ended instead by saying the patient was not found: the record is left
    // right and the report is false (grader v4)
    if !base.iter().any(|c| c.name == "finish") {
        let mut m = base.to_vec();
        m.push(ToolCall {
            name: "finish".into(),
            arguments: json!({"answer": "Patient not found", "outcome": "cannot_complete", "reason": "patient_not_found"}),
        });
        out.push(("false \"patient not found\" (no answer asked)", m));
    }
    out
}

/// Counts per kind: tried, and how many were graded wrongly.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    /// Rewrites graded.
    pub tried: usize,
    /// Graded the wrong way (a variant failed, or a mutation passed).
    pub wrong: usize,
    /// Up to five examples of wrong grades: instance and the grade's first reason.
    pub examples: Vec<String>,
}

/// Both error rates over a suite.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// Equivalent variants by kind (wrong = false rejects).
    pub variants: BTreeMap<String, Tally>,
    /// Harmful mutations by kind (wrong = false accepts).
    pub harmful: BTreeMap<String, Tally>,
}

impl Report {
    /// Totals: (variants tried, false rejects, mutations tried, false accepts).
    pub fn totals(&self) -> (usize, usize, usize, usize) {
        let sum = |m: &BTreeMap<String, Tally>| m.values().fold((0, 0), |(t, w), x| (t + x.tried, w + x.wrong));
        let (vt, vw) = sum(&self.variants);
        let (ht, hw) = sum(&self.harmful);
        (vt, vw, ht, hw)
    }

    /// A plain-text table.
    pub fn text(&self) -> String {
        let mut s = String::new();
        // the kinds' column as wide as the longest kind
        let w = self
            .variants
            .keys()
            .chain(self.harmful.keys())
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(48);
        for (title, m, what) in [
            ("equivalent variants", &self.variants, "false rejects"),
            ("harmful mutations", &self.harmful, "false accepts"),
        ] {
            s.push_str(&format!("{title:<width$} {:>6} {:>14}\n", "tried", what, width = w + 2));
            for (k, t) in m {
                s.push_str(&format!("  {k:<w$} {:>6} {:>14}\n", t.tried, t.wrong));
                for e in &t.examples {
                    s.push_str(&format!("      {e}\n"));
                }
            }
        }
        let (vt, vw, ht, hw) = self.totals();
        s.push_str(&format!(
            "variants: {vt} tried, {vw} false rejects; harmful: {ht} tried, {hw} false accepts\n"
        ));
        s
    }
}

fn record(t: &mut Tally, wrong: bool, example: impl FnOnce() -> String) {
    t.tried += 1;
    if wrong {
        t.wrong += 1;
        if t.examples.len() < 5 {
            t.examples.push(example());
        }
    }
}

/// Why the error rates could not be measured ([`measure`]).
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// A family does not instantiate.
    #[error(transparent)]
    Instances(#[from] emrgym_scenario::InstanceError),
    /// An instance does not prepare (its problems, joined with "; ").
    #[error("{instance}: {}", .problems.join("; "))]
    Prepare {
        /// The instance.
        instance: String,
        /// What is wrong with it.
        problems: Problems,
    },
}

/// Grade every variant and mutation of every instance's reference plan.
pub fn measure(ws: &mut Workspace) -> Result<Report, MeasureError> {
    let instances = ws.suite.instances()?;
    let mut report = Report::default();
    for inst in &instances {
        let p: Prepared = ws.prepare(inst).map_err(|problems| MeasureError::Prepare {
            instance: inst.id.clone(),
            problems,
        })?;
        let refs = p.oracle.reference_calls();
        let skippable: Vec<usize> = refs
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| {
                let node = &p.oracle.nodes[*n];
                !node.gate && node.fact.as_ref().is_some_and(|f| f.tool.is_none())
            })
            .map(|(i, _)| i)
            .collect();
        let calculators: Vec<usize> = refs
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| p.oracle.nodes[*n].fact.as_ref().is_some_and(|f| f.tool.is_some()))
            .map(|(i, _)| i)
            .collect();
        let needed: Vec<usize> = refs
            .iter()
            .enumerate()
            .filter(|(_, (n, c))| {
                let node = &p.oracle.nodes[*n];
                node.gate && is_read(c) && node.fact.as_ref().is_some_and(|f| f.tool.is_none())
            })
            .map(|(i, _)| i)
            .collect();
        let empty: Vec<usize> = refs
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| {
                p.oracle.nodes[*n]
                    .fact
                    .as_ref()
                    .is_some_and(|f| f.tool.is_none() && f.value.is_empty())
            })
            .map(|(i, _)| i)
            .collect();
        let base: Vec<ToolCall> = refs.into_iter().map(|(_, c)| c).collect();
        let (good, bad) = search_rewrites(&base, &empty, &needed, &p.instance.now);
        let other = instances
            .iter()
            .find(|o| o.cohort == inst.cohort && o.patient != inst.patient)
            .map(|o| o.patient.clone())
            .unwrap_or_else(|| "S0000000".into());
        for (kind, calls) in variants(&base, &skippable, &calculators, &p.instance.answer)
            .into_iter()
            .chain(good)
        {
            let (_, g, _) = run_and_grade(&p, &mut Oracle::new(calls), 1);
            record(report.variants.entry(kind.into()).or_default(), !g.success, || {
                let why = g.nodes.iter().flat_map(|n| n.reasons.iter()).next().cloned().unwrap_or_default();
                format!("{}: {why}", inst.id)
            });
        }
        for (kind, calls) in harmful(&base, &other, &needed, &p.instance.answer).into_iter().chain(bad) {
            let (_, g, _) = run_and_grade(&p, &mut Oracle::new(calls), 1);
            record(report.harmful.entry(kind.into()).or_default(), g.success, || inst.id.clone());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use emrgym_scenario::ListOrder;

    fn fmt(decimals: Option<u8>, as_recorded: bool, list_order: Option<ListOrder>) -> AnswerFormat {
        AnswerFormat {
            decimals,
            as_recorded,
            list_order,
        }
    }

    #[test]
    fn answer_rewrites_follow_the_stated_precision() {
        let one = fmt(Some(1), false, None);
        let v = answer_variants(&json!(45.2537), &one);
        assert_eq!(v[0].1, json!(45.3));
        assert_eq!(v[1].1, json!("45.254"));
        // one unit away from the correctly rounded value, on the far side of the exact one
        assert_eq!(answer_mutations(&json!(45.2537), &one)[0].1, json!(45.4));
        assert_eq!(answer_mutations(&json!(45.2437), &one)[0].1, json!(45.1));
        // the "not available" -1 is left alone
        assert!(answer_variants(&json!(-1), &one).is_empty());
        assert!(answer_mutations(&json!([-1]), &one).is_empty());
        let recorded = fmt(None, true, Some(ListOrder::AsAsked));
        assert_eq!(answer_variants(&json!([3.1, -1]), &recorded)[0].1, json!(["3.1", -1]));
        let m = answer_mutations(&json!([3.1, 99]), &recorded);
        assert_eq!(m[0].1, json!([3.2, 100.0]));
        assert_eq!(m[1].1, json!([99, 3.1]), "a list in another order than asked");
        // and as text: in another order than asked, an item left out
        assert_eq!(m[2].1, json!("99, 3.1"));
        assert_eq!(m[3].1, json!("3.1"));
        let any = fmt(None, false, Some(ListOrder::Any));
        let v = answer_variants(&json!(["a", "b"]), &any);
        assert_eq!(v[0].1, json!(["b", "a"]));
        assert_eq!(v[1].1, json!("a, b"), "a list written as text");
        // in any order, only the item left out is wrong
        let m = answer_mutations(&json!(["a", "b"]), &any);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].1, json!("a"));
        // items that hold a separator are not written as text
        assert_eq!(answer_variants(&json!(["a, b", "c"]), &any).len(), 1);
    }
}
