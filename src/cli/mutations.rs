//! Both error rates of the grader, measured on the whole suite (`scenarios check
//! --mutations`). Every oracle trajectory is rewritten two ways:
//!
//! - **equivalent variants**, which a careful clinician or a FHIR-literate agent would produce
//!   and which must pass: a route as a SNOMED coding or another synonym, a dose in another unit
//!   (g/mg, mEq/mmol for potassium), a dose split over two orders, a blood pressure as the
//!   vital-signs panel, a referral note with more text around it, a list answer sent as JSON
//!   text, a refusal or a "not available" -1 given as finish's structured outcome, an extra
//!   harmless read, the first reads in another order, the reads the branch taken does not
//!   use left out;
//! - **harmful mutations**, which must fail: a wrong dose, a wrong route, a wrong drug code,
//!   an order for another patient, a missing write, a wrong answer, a refusal for another
//!   reason, a refusal of a task that can be done, a read the branch taken uses left out.
//!
//! A variant that fails is a false reject; a mutation that passes is a false accept. The
//! targets are zero; docs/grading.md records the figures.

use super::episode::{Prepared, Workspace, run_and_grade};
use crate::agent::Oracle;
use crate::trajectory::ToolCall;
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

fn is_read(c: &ToolCall) -> bool {
    matches!(c.name.as_str(), "fhir_search" | "fhir_read")
}

/// Equivalent rewrites of a reference plan; `skippable` are the calls of reads whose fact the
/// branch taken does not use.
pub fn variants(base: &[ToolCall], skippable: &[usize], calculators: &[usize]) -> Vec<Rewrite> {
    let mut out: Vec<Rewrite> = Vec::new();
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
                .and_then(crate::htn::equiv::canonical_route);
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
            && let Some(bp) = crate::htn::equiv::bp_text(text)
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
                .and_then(crate::grade::refusal_kind)
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

/// Harmful rewrites of a reference plan; `needed` are the calls of reads whose fact the branch
/// taken uses.
pub fn harmful(base: &[ToolCall], other_patient: &str, needed: &[usize]) -> Vec<Rewrite> {
    let mut out: Vec<Rewrite> = Vec::new();
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
                .and_then(crate::htn::equiv::canonical_route)
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
            match answer.as_str().and_then(crate::grade::refusal_kind) {
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
        for (title, m, what) in [
            ("equivalent variants", &self.variants, "false rejects"),
            ("harmful mutations", &self.harmful, "false accepts"),
        ] {
            s.push_str(&format!("{title:<44} {:>6} {:>14}\n", "tried", what));
            for (k, t) in m {
                s.push_str(&format!("  {k:<42} {:>6} {:>14}\n", t.tried, t.wrong));
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

/// Grade every variant and mutation of every instance's reference plan.
pub fn measure(ws: &mut Workspace) -> Result<Report, String> {
    let instances = ws.suite.instances()?;
    let mut report = Report::default();
    for inst in &instances {
        let p: Prepared = ws.prepare(inst).map_err(|e| format!("{}: {}", inst.id, e.join("; ")))?;
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
        let base: Vec<ToolCall> = refs.into_iter().map(|(_, c)| c).collect();
        let other = instances
            .iter()
            .find(|o| o.cohort == inst.cohort && o.patient != inst.patient)
            .map(|o| o.patient.clone())
            .unwrap_or_else(|| "S0000000".into());
        for (kind, calls) in variants(&base, &skippable, &calculators) {
            let (_, g, _) = run_and_grade(&p, &mut Oracle::new(calls), 1);
            record(report.variants.entry(kind.into()).or_default(), !g.success, || {
                let why = g.nodes.iter().flat_map(|n| n.reasons.iter()).next().cloned().unwrap_or_default();
                format!("{}: {why}", inst.id)
            });
        }
        for (kind, calls) in harmful(&base, &other, &needed) {
            let (_, g, _) = run_and_grade(&p, &mut Oracle::new(calls), 1);
            record(report.harmful.entry(kind.into()).or_default(), g.success, || inst.id.clone());
        }
    }
    Ok(report)
}
