//! The safety screen of `scenarios check`: an instance whose reference plan orders a medication
//! must not be for a patient in whom that order would contradict patient safety,
//! unless the family's rules handle the finding on purpose (`"handles"` in the family file).
//!
//! Findings, from the latest value on the untouched record:
//! - `hypotension`: systolic blood pressure < 90 mm Hg (LOINC 8480-6 in the 85354-9 panel);
//!   SSC 2021 (Evans et al., Crit Care Med 2021) treats it as sepsis-induced hypoperfusion.
//! - `potassium`: potassium < 2.5 or > 6.0 mmol/L (LOINC 2823-3), the critical values at which
//!   oral or routine replacement and potassium-raising drugs are unsafe (KDIGO 2020 potassium
//!   Controversies Conference, Clase et al., Kidney Int 2020; ADA/EASD/JBDS/AACE/DTS hyperglycemic
//!   crises consensus, Umpierrez et al., Diabetes Care 2024).
//! - `inr`: INR > 4 (LOINC 6301-6), above every therapeutic range (CHEST 2012 antithrombotic
//!   guideline, 9th ed.).
//! - `sirs`: two or more SIRS criteria from the latest temperature (8310-5), heart rate
//!   (8867-4), respiratory rate (9279-1) and white cell count (6690-2), Bone et al., Chest 1992:
//!   a patient who may be septic.

use emrgym_scenario::htn::plan::FactSource;
use serde_json::Value;

/// One unsafe finding on a patient's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The finding's kind, as a family's `handles` names it.
    pub kind: &'static str,
    /// What was seen (values and units).
    pub detail: String,
}

/// Every kind a family may declare it handles.
pub const KINDS: &[&str] = &["hypotension", "potassium", "inr", "sirs"];

fn latest(facts: &mut dyn FactSource, patient: &str, code: &str) -> Option<Value> {
    let params = vec![
        ("patient".to_string(), patient.to_string()),
        ("code".to_string(), code.to_string()),
        ("_sort".to_string(), "-date".to_string()),
        ("_count".to_string(), "1".to_string()),
    ];
    facts.search("Observation", &params).ok()?.into_iter().next()
}

fn quantity(v: &Value) -> Option<(f64, String)> {
    let q = v.get("valueQuantity")?;
    let unit = q.get("code").or_else(|| q.get("unit")).and_then(Value::as_str).unwrap_or_default();
    Some((q.get("value")?.as_f64()?, unit.to_string()))
}

fn systolic(panel: &Value) -> Option<f64> {
    panel
        .get("component")?
        .as_array()?
        .iter()
        .find(|c| {
            c.pointer("/code/coding")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x.get("code").and_then(Value::as_str) == Some("8480-6")))
        })
        .and_then(quantity)
        .map(|(v, _)| v)
}

/// A temperature in °C, whatever unit the record uses (the calculators' conversion).
fn celsius(v: f64, unit: &str) -> Option<f64> {
    emrgym_calc::units::Q::Temperature.to_canonical("temperature", v, Some(unit)).ok()
}

/// The unsafe findings on a patient's record.
pub fn findings(facts: &mut dyn FactSource, patient: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(sbp) = latest(facts, patient, "85354-9").as_ref().and_then(systolic)
        && sbp < 90.0
    {
        out.push(Finding {
            kind: "hypotension",
            detail: format!("systolic blood pressure {sbp} mm Hg"),
        });
    }
    if let Some((k, unit)) = latest(facts, patient, "2823-3").as_ref().and_then(quantity)
        && !(2.5..=6.0).contains(&k)
    {
        out.push(Finding {
            kind: "potassium",
            detail: format!("potassium {k} {unit}"),
        });
    }
    if let Some((inr, _)) = latest(facts, patient, "6301-6").as_ref().and_then(quantity)
        && inr > 4.0
    {
        out.push(Finding {
            kind: "inr",
            detail: format!("INR {inr}"),
        });
    }
    let mut met = Vec::new();
    if let Some((t, unit)) = latest(facts, patient, "8310-5").as_ref().and_then(quantity)
        && celsius(t, &unit).is_some_and(|c| !(36.0..=38.0).contains(&c))
    {
        met.push(format!("temperature {t} {unit}"));
    }
    if let Some((hr, _)) = latest(facts, patient, "8867-4").as_ref().and_then(quantity)
        && hr > 90.0
    {
        met.push(format!("heart rate {hr}/min"));
    }
    if let Some((rr, _)) = latest(facts, patient, "9279-1").as_ref().and_then(quantity)
        && rr > 20.0
    {
        met.push(format!("respiratory rate {rr}/min"));
    }
    if let Some((wbc, unit)) = latest(facts, patient, "6690-2").as_ref().and_then(quantity)
        && !(4.0..=12.0).contains(&wbc)
    {
        met.push(format!("white cells {wbc} {unit}"));
    }
    if met.len() >= 2 {
        out.push(Finding {
            kind: "sirs",
            detail: format!("{} SIRS criteria ({})", met.len(), met.join(", ")),
        });
    }
    out
}

/// Does a reference plan order a medication? (Stopping or holding one is the safe direction
/// and is not screened.)
pub fn orders_medication(calls: &[emrgym_scenario::trajectory::ToolCall]) -> bool {
    calls
        .iter()
        .any(|c| c.name == "fhir_create" && c.arguments.get("resource_type").and_then(Value::as_str) == Some("MedicationRequest"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    /// Facts from a fixed table: code -> the latest observation.
    struct Table(HashMap<String, Value>);

    impl FactSource for Table {
        fn search(&mut self, _: &str, params: &[(String, String)]) -> Result<Vec<Value>, String> {
            let code = params.iter().find(|(k, _)| k == "code").map(|(_, v)| v.clone()).unwrap_or_default();
            Ok(self.0.get(&code).cloned().into_iter().collect())
        }
    }

    fn q(v: f64, unit: &str) -> Value {
        json!({"valueQuantity": {"value": v, "unit": unit, "code": unit}})
    }

    #[test]
    fn each_finding_is_seen_at_its_threshold_and_not_inside_the_safe_range() {
        let bp = |s: f64| json!({"component": [{"code": {"coding": [{"code": "8480-6"}]}, "valueQuantity": {"value": s}}]});
        let mut t = Table(HashMap::from([
            ("85354-9".to_string(), bp(89.0)),
            ("2823-3".to_string(), q(2.4, "mmol/L")),
            ("6301-6".to_string(), q(4.1, "1")),
            ("8310-5".to_string(), q(100.5, "[degF]")),
            ("8867-4".to_string(), q(91.0, "/min")),
        ]));
        let kinds: Vec<&str> = findings(&mut t, "S1").iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["hypotension", "potassium", "inr", "sirs"]);
        let mut safe = Table(HashMap::from([
            ("85354-9".to_string(), bp(90.0)),
            ("2823-3".to_string(), q(2.5, "mmol/L")),
            ("6301-6".to_string(), q(4.0, "1")),
            ("8310-5".to_string(), q(100.4, "[degF]")),
            ("8867-4".to_string(), q(91.0, "/min")),
        ]));
        assert_eq!(findings(&mut safe, "S1"), Vec::new());
        let mut high_k = Table(HashMap::from([("2823-3".to_string(), q(6.1, "mmol/L"))]));
        assert_eq!(findings(&mut high_k, "S1")[0].kind, "potassium");
    }
}
