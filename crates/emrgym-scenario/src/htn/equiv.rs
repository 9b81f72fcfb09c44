//! Clinical equivalence: the rules by which the grader accepts a write or an answer given in
//! another form than the reference's. Every postcondition in the task libraries reads a
//! resource through these functions (`routeIs`, `dose`, `rate`, `bp`, `concept`,
//! `textContains` in the expression language), so the rules live in one place;
//! docs/grading.md has the table with examples and sources.
//!
//! - Routes: text synonyms and SNOMED CT route codes (R4 value set
//!   http://hl7.org/fhir/ValueSet/route-codes) to one canonical word.
//! - Quantities: any spelling of a unit in the same dimension (UCUM and common abbreviations),
//!   converted exactly; mEq and mmol are equal for monovalent ions (K+, Na+, Cl-) and differ
//!   by the valence otherwise.
//! - Doses: the sum over every dosage instruction and dose of the resources given, so a dose
//!   split over two instructions or two orders counts as its total.
//! - Concepts: a local flowsheet or lab code and its LOINC code are the same concept.
//! - Blood pressure: `valueString` "118/77 mmHg" or the vital-signs panel (LOINC 85354-9
//!   with systolic 8480-6 and diastolic 8462-4 components) read the same.
//! - Text: containment after case, whitespace and punctuation are normalised.

use serde_json::Value;

/// Canonical route names and what maps to each: SNOMED CT codes (R4 route-codes value set)
/// and text synonyms (lower case).
const ROUTES: &[(&str, &[&str], &[&str])] = &[
    (
        "oral",
        &["26643006"],
        &["oral", "po", "p.o.", "by mouth", "oral route", "oral use", "orally", "per os"],
    ),
    (
        "intravenous",
        &["47625008"],
        &[
            "iv",
            "i.v.",
            "intravenous",
            "intravenously",
            "intravenous route",
            "intravenous use",
            "iv push",
            "iv infusion",
        ],
    ),
    (
        "subcutaneous",
        &["34206005"],
        &["sc", "sq", "subq", "s.c.", "subcutaneous", "subcutaneously", "subcutaneous route"],
    ),
    (
        "intramuscular",
        &["78421000"],
        &["im", "i.m.", "intramuscular", "intramuscularly", "intramuscular route"],
    ),
];

/// The canonical route for a text or a SNOMED code, if known.
pub fn canonical_route(text_or_code: &str) -> Option<&'static str> {
    let t = norm(text_or_code);
    ROUTES
        .iter()
        .find(|(_, codes, names)| codes.contains(&t.as_str()) || names.contains(&t.as_str()))
        .map(|(c, _, _)| *c)
}

/// Canonical routes of a Dosage (its route's codings and text).
fn dosage_routes(dosage: &Value, out: &mut Vec<&'static str>) {
    let Some(route) = dosage.get("route") else { return };
    let mut found = Vec::new();
    if let Some(cs) = route.get("coding").and_then(Value::as_array) {
        for c in cs {
            for key in ["code", "display"] {
                if let Some(r) = c.get(key).and_then(Value::as_str).and_then(canonical_route) {
                    found.push(r);
                }
            }
        }
    }
    if let Some(r) = route.get("text").and_then(Value::as_str).and_then(canonical_route) {
        found.push(r);
    }
    for r in found {
        if !out.contains(&r) {
            out.push(r);
        }
    }
}

/// The dosage instructions of a MedicationRequest, or the value itself when it is a Dosage.
fn dosages(v: &Value) -> Vec<&Value> {
    match v.get("dosageInstruction").and_then(Value::as_array) {
        Some(ds) => ds.iter().collect(),
        None if v.get("route").is_some() || v.get("doseAndRate").is_some() => vec![v],
        None => Vec::new(),
    }
}

/// Canonical routes of resources (MedicationRequests or Dosages), without repeats.
pub fn routes(items: &[&Value]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for v in items {
        for d in dosages(v) {
            dosage_routes(d, &mut out);
        }
    }
    out
}

/// A unit's dimension and its factor to the dimension's base (mg, mL, mEq, U/h).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dim {
    Mass,
    Volume,
    Amount,
    Units,
    UnitsPerHour,
    VolumePerHour,
}

/// Units by spelling: dimension, factor to the base, and whether it is a mole-based amount
/// (mmol: equal to mEq times the valence).
fn unit_def(unit: &str) -> Option<(Dim, f64, bool)> {
    let u = unit.trim().replace(' ', "").to_lowercase();
    Some(match u.as_str() {
        "mg" | "milligram" | "milligrams" => (Dim::Mass, 1.0, false),
        "g" | "gram" | "grams" | "gm" => (Dim::Mass, 1000.0, false),
        "mcg" | "ug" | "µg" | "μg" | "microgram" | "micrograms" => (Dim::Mass, 0.001, false),
        "kg" | "kilogram" | "kilograms" => (Dim::Mass, 1_000_000.0, false),
        "ml" | "milliliter" | "milliliters" | "millilitre" | "millilitres" | "cm3" => (Dim::Volume, 1.0, false),
        "l" | "liter" | "liters" | "litre" | "litres" => (Dim::Volume, 1000.0, false),
        "meq" | "milliequivalent" | "milliequivalents" | "meq/dose" => (Dim::Amount, 1.0, false),
        "mmol" | "millimole" | "millimoles" => (Dim::Amount, 1.0, true),
        "u" | "unit" | "units" | "[iu]" | "iu" | "[u]" => (Dim::Units, 1.0, false),
        "u/h" | "u/hr" | "unit/h" | "units/h" | "units/hr" | "unit/hr" | "[iu]/h" | "iu/h" | "[u]/h" | "units/hour" => {
            (Dim::UnitsPerHour, 1.0, false)
        }
        "ml/h" | "ml/hr" | "ml/hour" => (Dim::VolumePerHour, 1.0, false),
        "l/h" | "l/hr" => (Dim::VolumePerHour, 1000.0, false),
        _ => return None,
    })
}

/// `value` in `from`, converted to `to`; `valence` relates mmol and mEq (1 for K+, Na+, Cl-).
pub fn convert(value: f64, from: &str, to: &str, valence: f64) -> Option<f64> {
    let (df, ff, mol_f) = unit_def(from)?;
    let (dt, ft, mol_t) = unit_def(to)?;
    if df != dt {
        return None;
    }
    let mut base = value * ff;
    // mmol -> mEq multiplies by the valence; mEq -> mmol divides
    if mol_f && !mol_t {
        base *= valence;
    } else if !mol_f && mol_t {
        base /= valence;
    }
    Some(base / ft)
}

fn quantity_in(q: &Value, unit: &str, valence: f64) -> Option<f64> {
    let value = q.get("value")?.as_f64()?;
    let given = q
        .get("unit")
        .and_then(Value::as_str)
        .or_else(|| q.get("code").and_then(Value::as_str))?;
    convert(value, given, unit, valence)
}

/// The total of a dose or rate element (`doseQuantity`, `rateQuantity`) over every dosage
/// instruction of the resources, in `unit`; `None` if there is none or one cannot convert.
fn total(items: &[&Value], element: &str, unit: &str, valence: f64) -> Option<f64> {
    let mut sum = 0.0;
    let mut any = false;
    for v in items {
        for d in dosages(v) {
            for dr in d.get("doseAndRate").and_then(Value::as_array).into_iter().flatten() {
                if let Some(q) = dr.get(element) {
                    sum += quantity_in(q, unit, valence)?;
                    any = true;
                }
            }
        }
    }
    any.then_some(sum)
}

/// Total dose in `unit` (doses split over instructions or orders add up).
pub fn dose(items: &[&Value], unit: &str, valence: f64) -> Option<f64> {
    total(items, "doseQuantity", unit, valence)
}

/// Total infusion rate in `unit`.
pub fn rate(items: &[&Value], unit: &str) -> Option<f64> {
    total(items, "rateQuantity", unit, 1.0)
}

/// Local codes of the cohorts and the LOINC codes of the same concept.
const CONCEPTS: &[(&str, &[&str])] = &[
    ("BP", &["85354-9", "55284-4"]),
    ("K", &["2823-3", "6298-4"]),
    ("MG", &["19123-9", "2601-3"]),
    ("GLU", &["2339-0", "2345-7"]),
    ("A1C", &["4548-4", "17856-6"]),
    ("CREAT", &["2160-0", "38483-4"]),
    ("NA", &["2951-2", "2947-0"]),
];

/// The codes that name the same concept as `code` (itself included).
pub(crate) fn concept_codes(code: &str) -> Vec<&'static str> {
    for (local, loinc) in CONCEPTS {
        if local.eq_ignore_ascii_case(code) || loinc.contains(&code) {
            let mut out = vec![*local];
            out.extend(loinc.iter().copied());
            return out;
        }
    }
    Vec::new()
}

/// Does a resource's `code` name the concept `code` (by its text, any coding, or a synonym)?
pub(crate) fn is_concept(resource: &Value, code: &str) -> bool {
    let mut names: Vec<String> = concept_codes(code).into_iter().map(str::to_string).collect();
    if names.is_empty() {
        names.push(code.to_string());
    }
    let Some(c) = resource.get("code") else { return false };
    let text_hit = c
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| names.iter().any(|n| n.eq_ignore_ascii_case(t.trim())));
    let coding_hit = c.get("coding").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|x| {
            x.get("code")
                .and_then(Value::as_str)
                .is_some_and(|k| names.iter().any(|n| n.eq_ignore_ascii_case(k)))
        })
    });
    text_hit || coding_hit
}

/// "S/D" from a text such as "118/77 mmHg" or "BP 118 / 77".
pub fn bp_text(s: &str) -> Option<String> {
    let nums: Vec<f64> = s
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect();
    match nums.as_slice() {
        [sys, dia, ..] if s.contains('/') => Some(format!("{}/{}", fmt(*sys), fmt(*dia))),
        _ => None,
    }
}

fn fmt(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// "S/D" of a blood-pressure Observation: its `valueString`, or the systolic (8480-6) and
/// diastolic (8462-4) components of the vital-signs panel.
pub(crate) fn bp_of(obs: &Value) -> Option<String> {
    if let Some(s) = obs.get("valueString").and_then(Value::as_str) {
        return bp_text(s);
    }
    let comps = obs.get("component")?.as_array()?;
    let find = |code: &str| {
        comps.iter().find_map(|c| {
            let coded = c
                .pointer("/code/coding")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x.get("code").and_then(Value::as_str) == Some(code)));
            if coded {
                c.pointer("/valueQuantity/value").and_then(Value::as_f64)
            } else {
                None
            }
        })
    };
    Some(format!("{}/{}", fmt(find("8480-6")?), fmt(find("8462-4")?)))
}

/// Text normalised for comparison: lower case, punctuation to spaces, whitespace collapsed.
pub(crate) fn norm(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '.' || c == '/' || c == '-' {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches('.')
        .to_string()
}

/// Does `haystack` contain `needle` once both are normalised?
pub(crate) fn text_contains(haystack: &str, needle: &str) -> bool {
    norm(haystack).contains(&norm(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_by_synonym_or_snomed_code() {
        for s in ["PO", "oral", "Oral route", "by mouth", "26643006"] {
            assert_eq!(canonical_route(s), Some("oral"), "{s}");
        }
        for s in ["IV", "intravenous", "Intravenous route", "47625008"] {
            assert_eq!(canonical_route(s), Some("intravenous"), "{s}");
        }
        assert_eq!(canonical_route("inhaled"), None);
        let mr = json!({"dosageInstruction": [{"route": {"coding": [{"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral route"}]}}]});
        assert_eq!(routes(&[&mr]), ["oral"]);
    }

    #[test]
    fn doses_convert_exactly_and_add_up() {
        let mr = |v: f64, u: &str| json!({"dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": v, "unit": u}}]}]});
        assert_eq!(dose(&[&mr(2000.0, "mg")], "g", 1.0), Some(2.0));
        assert_eq!(dose(&[&mr(2.0, "g")], "mg", 1.0), Some(2000.0));
        // potassium: mmol = mEq (monovalent); magnesium: 1 mmol = 2 mEq
        assert_eq!(dose(&[&mr(40.0, "mmol")], "mEq", 1.0), Some(40.0));
        assert_eq!(dose(&[&mr(4.0, "mmol")], "mEq", 2.0), Some(8.0));
        // a dose split over two orders counts as its total
        assert_eq!(dose(&[&mr(20.0, "mEq"), &mr(20.0, "mEq")], "mEq", 1.0), Some(40.0));
        // no cross-dimension conversion
        assert_eq!(dose(&[&mr(40.0, "mL")], "mEq", 1.0), None);
        assert_eq!(dose(&[&json!({})], "mg", 1.0), None);
        let rate_mr = json!({"dosageInstruction": [{"doseAndRate": [{"rateQuantity": {"value": 7.2, "unit": "units/hr"}}]}]});
        assert_eq!(rate(&[&rate_mr], "U/h"), Some(7.2));
    }

    #[test]
    fn blood_pressure_as_text_or_as_the_vital_signs_panel() {
        assert_eq!(bp_text("118/77 mmHg").as_deref(), Some("118/77"));
        assert_eq!(bp_text("BP 118 / 77").as_deref(), Some("118/77"));
        assert_eq!(bp_text("118 mmHg"), None);
        let panel = json!({"code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [
                {"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": 118, "unit": "mm[Hg]"}},
                {"code": {"coding": [{"code": "8462-4"}]}, "valueQuantity": {"value": 77, "unit": "mm[Hg]"}}]});
        assert_eq!(bp_of(&panel).as_deref(), Some("118/77"));
        assert!(is_concept(&panel, "BP"));
        assert!(is_concept(&json!({"code": {"text": "BP"}}), "BP"));
        assert!(!is_concept(&json!({"code": {"text": "HR"}}), "BP"));
    }

    #[test]
    fn notes_by_normalised_containment() {
        assert!(text_contains(
            "Referral. Situation: acute left knee injury, Background: ACL tear.  Thanks",
            "situation: acute left knee injury, background: acl tear."
        ));
        assert!(!text_contains("knee injury", "acute left knee injury"));
    }
}
