//! The registry: every calculator present once with its MedCalc-Bench id, examples that
//! validate and run, the generated docs reference, and how arguments are checked.

use super::*;

#[test]
fn registry_has_57_calculators_with_unique_names_and_every_medcalc_id() {
    let all = all();
    assert!(all.len() >= 57, "{}", all.len());
    let mut names: Vec<&str> = all.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "duplicate calculator names");
    let ids: Vec<u16> = all.iter().filter_map(|c| c.medcalc_id).collect();
    let medcalc = [
        2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 36, 38, 39, 40, 43,
        44, 45, 46, 48, 49, 51, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69,
    ];
    assert_eq!(medcalc.len(), 55);
    for id in medcalc {
        assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "MedCalc id {id}");
    }
    assert!(find("meld_3").is_some() && find("qsofa").is_some());
    for c in &all {
        assert!(
            c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
            "{}",
            c.name
        );
    }
}

#[test]
fn every_example_validates_against_its_schema_and_runs() {
    for c in all() {
        let schema = schema(c);
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{}: schema does not compile: {e}", c.name));
        let example: Value = serde_json::from_str(c.example).unwrap_or_else(|e| panic!("{}: example is not JSON: {e}", c.name));
        let errors: Vec<String> = validator.iter_errors(&example).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", c.name);
        let r = run(c, &example).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(!r.value.is_null(), "{}", c.name);
        // every declared input is documented and every required one is in the schema
        for i in c.inputs {
            assert!(!i.doc.is_empty(), "{}.{} has no doc", c.name, i.name);
            assert!(schema["properties"][i.name].is_object(), "{}.{}", c.name, i.name);
        }
    }
}

#[test]
fn docs_reference_is_generated_from_the_specs() {
    let doc = include_str!("../../../../docs/calculators.md");
    let begin = "<!-- BEGIN GENERATED: emrgym calc list --markdown -->\n";
    let start = doc.find(begin).map(|i| i + begin.len()).expect("begin marker");
    let end = doc.find("<!-- END GENERATED -->").expect("end marker");
    assert!(
        doc[start..end] == docs::reference_markdown(),
        "docs/calculators.md is stale: regenerate the reference with `emrgym calc list --markdown`"
    );
}

#[test]
fn unknown_arguments_and_missing_required_ones_are_named() {
    let m = err("bmi", json!({"weight": 70, "height": 170, "wieght": 3}));
    assert!(m.contains("'wieght'") && m.contains("weight, height"), "{m}");
    let m = err("bmi", json!({"weight": 70}));
    assert!(m.contains("missing") && m.contains("height"), "{m}");
    let m = err("bmi", json!([1, 2]));
    assert!(m.contains("JSON object"), "{m}");
    let m = err("nonexistent", json!({}));
    assert!(m.contains("nonexistent"), "{m}");
    let m = err("child_pugh", json!({"bilirubin": 1, "albumin": 4, "inr": 1, "ascites": "lots"}));
    assert!(m.contains("ascites") && m.contains("\"slight\""), "{m}");
    let m = err("ckd_epi_2021", json!({"sex": "male", "age": 50, "creatinine": {"value": 1}}));
    assert!(m.contains("unit is missing") && m.contains("µmol/L"), "{m}");
}

#[test]
fn missing_findings_convention_is_explicit() {
    let r = go("cha2ds2_vasc", json!({"age": 70, "sex": "male"}));
    assert_eq!(r.value, json!(1));
    assert_eq!(r.conventions["missing_findings"], json!("absent"));
    assert_eq!(r.inputs["hypertension"], json!("not given: absent"));
    let m = err("cha2ds2_vasc", json!({"age": 70, "sex": "male", "missing_findings": "refuse"}));
    assert!(m.contains("missing_findings") && m.contains("congestive_heart_failure"), "{m}");
    let full = json!({"age": 70, "sex": "male", "missing_findings": "refuse", "congestive_heart_failure": false, "hypertension": true,
        "diabetes": false, "stroke_tia_thromboembolism": false, "vascular_disease": false});
    assert_eq!(go("cha2ds2_vasc", full).value, json!(2));
}
