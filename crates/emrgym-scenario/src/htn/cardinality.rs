//! Cardinality of FHIR R4 elements, for the expression lint that rejects comparisons whose
//! operand can hold more than one item (`code.coding.code = 'x'` is false when a Condition
//! carries two codings; `code.coding.where(code = 'x').exists()` is the membership test).
//!
//! [`REPEATING`] is derived from the official R4 JSON Schema (`fhir-fixtures/spec/fhir.schema.json`):
//! the element names that are arrays in every definition, reachable from the clinical
//! resources scenarios read (Patient, Observation, Condition, MedicationRequest, ServiceRequest, AllergyIntolerance, Encounter, Procedure, Immunization, MedicationAdministration, DiagnosticReport, Medication), where they occur. [`MOSTLY_REPEATING`] adds names that
//! repeat on those resources though a nested type has a single element of the same name.
//! A test recomputes both from the schema, so the list cannot drift.

/// Resource types whose element closure [`REPEATING`] is computed over.
pub const ROOTS: &[&str] = &[
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "ServiceRequest",
    "AllergyIntolerance",
    "Encounter",
    "Procedure",
    "Immunization",
    "MedicationAdministration",
    "DiagnosticReport",
    "Medication",
];

/// Element names that are arrays wherever they occur in the closure of [`ROOTS`].
pub(crate) const REPEATING: &[&str] = &[
    "account",
    "additionalInstruction",
    "appliesTo",
    "appointment",
    "assessment",
    "basedOn",
    "classHistory",
    "codeFilter",
    "coding",
    "communication",
    "complication",
    "complicationDetail",
    "component",
    "conclusionCode",
    "contact",
    "contained",
    "dateFilter",
    "dayOfWeek",
    "derivedFrom",
    "detectedIssue",
    "diagnosis",
    "dietPreference",
    "dosageInstruction",
    "doseAndRate",
    "education",
    "episodeOfCare",
    "event",
    "eventHistory",
    "evidence",
    "focalDevice",
    "focus",
    "followUp",
    "generalPractitioner",
    "given",
    "hasMember",
    "imagingStudy",
    "ingredient",
    "instantiates",
    "instantiatesCanonical",
    "instantiatesUri",
    "insurance",
    "interpretation",
    "line",
    "locationCode",
    "locationReference",
    "manifestation",
    "media",
    "mustSupport",
    "note",
    "orderDetail",
    "participant",
    "photo",
    "prefix",
    "presentedForm",
    "programEligibility",
    "protocolApplied",
    "reaction",
    "reasonCode",
    "reasonReference",
    "referenceRange",
    "relationship",
    "relevantHistory",
    "replaces",
    "report",
    "result",
    "resultsInterpreter",
    "security",
    "sort",
    "specialArrangement",
    "specialCourtesy",
    "stage",
    "statusHistory",
    "subpotentReason",
    "suffix",
    "supportingInfo",
    "supportingInformation",
    "tag",
    "targetDisease",
    "telecom",
    "timeOfDay",
    "usedCode",
    "usedReference",
];

/// Names that are arrays on the resources themselves (`Condition.category`,
/// `Patient.identifier`, `Patient.name`, `Observation.performer`, ...) but single on some
/// nested type; a path through them is treated as repeating.
pub(crate) const MOSTLY_REPEATING: &[&str] = &["address", "bodySite", "category", "identifier", "name", "performer"];

/// Does a path step with this element name yield a collection of possibly many items?
pub(crate) fn repeats(name: &str) -> bool {
    REPEATING.binary_search(&name).is_ok() || MOSTLY_REPEATING.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{BTreeMap, BTreeSet};

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.rsplit('/').next().unwrap_or_default().to_string());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn the_repeating_elements_are_those_of_the_official_r4_schema() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fhir-fixtures/spec/fhir.schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let defs = schema["definitions"].as_object().unwrap();
        // the closure of the roots over $ref
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = ROOTS.iter().map(|s| s.to_string()).collect();
        while let Some(t) = stack.pop() {
            if seen.contains(&t) || !defs.contains_key(&t) {
                continue;
            }
            seen.insert(t.clone());
            let mut out = Vec::new();
            refs(&defs[&t]["properties"], &mut out);
            stack.extend(out);
        }
        // element name -> (array somewhere, single somewhere)
        let mut kinds: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for t in &seen {
            for (p, v) in defs[t]["properties"].as_object().into_iter().flatten() {
                if p.starts_with('_') || p == "extension" || p == "modifierExtension" {
                    continue;
                }
                let e = kinds.entry(p.clone()).or_default();
                if v.get("type").and_then(Value::as_str) == Some("array") {
                    e.0 = true;
                } else {
                    e.1 = true;
                }
            }
        }
        let always: Vec<&str> = kinds.iter().filter(|(_, (a, s))| *a && !*s).map(|(k, _)| k.as_str()).collect();
        assert_eq!(always, REPEATING, "regenerate REPEATING from the schema");
        assert!(
            REPEATING.windows(2).all(|w| w[0] < w[1]),
            "REPEATING must stay sorted (binary search)"
        );
        // the mostly-repeating names are arrays on some root resource
        for name in MOSTLY_REPEATING {
            assert!(
                ROOTS.iter().any(|r| defs[*r]["properties"][*name]["type"] == "array"),
                "{name} repeats on no root resource"
            );
        }
        assert!(repeats("coding") && repeats("identifier") && !repeats("code") && !repeats("value"));
    }
}
