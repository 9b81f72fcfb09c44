//! Refusal of impossible input and of input outside a formula's validity (or, where the
//! arithmetic is defined, a warning instead).

use super::*;

#[test]
fn impossible_input_is_refused_with_a_message() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("bmi", json!({"weight": -70, "height": 170}), "weight"),
        ("bmi", json!({"weight": 70, "height": 0}), "height"),
        ("ckd_epi_2021", json!({"sex": "male", "age": 50, "creatinine": 0}), "creatinine"),
        ("ckd_epi_2021", json!({"sex": "male", "age": 11, "creatinine": 1}), "adults"),
        ("mdrd_gfr", json!({"sex": "male", "age": 11, "creatinine": 1}), "adults"),
        (
            "cockcroft_gault",
            json!({"sex": "male", "age": 50, "weight": 0, "creatinine": 1}),
            "weight",
        ),
        ("qtc_bazett", json!({"heart_rate": 0, "qt": 400}), "heart_rate"),
        (
            "mean_arterial_pressure",
            json!({"systolic_bp": 80, "diastolic_bp": 120}),
            "diastolic_bp",
        ),
        (
            "ldl_friedewald",
            json!({"total_cholesterol": 300, "hdl": 40, "triglycerides": 401}),
            "400",
        ),
        (
            "ldl_friedewald",
            json!({"total_cholesterol": 300, "hdl": 40, "triglycerides": {"value": 4.6, "unit": "mmol/L"}}),
            "400",
        ),
        (
            "delta_ratio",
            json!({"sodium": 140, "chloride": 100, "bicarbonate": 24}),
            "undefined",
        ),
        ("meld_na", json!({"creatinine": 1, "bilirubin": 1, "inr": 0, "sodium": 140}), "inr"),
        (
            "gestational_age",
            json!({"lmp": "2024-13-01", "current_date": "2024-12-01"}),
            "2024-13-01",
        ),
        ("sofa", json!({"gcs": 2}), "gcs"),
        ("bmi", json!({"weight": "seventy", "height": 170}), "weight"),
        ("bmi", json!({"weight": {"value": 70, "unit": "stone"}, "height": 170}), "stone"),
        (
            "free_water_deficit",
            json!({"sex": "male", "age": 40, "weight": 70, "sodium": 40}),
            "sodium",
        ),
    ];
    for (name, args, needle) in cases {
        let m = err(name, args.clone());
        assert!(m.contains(needle), "{name} {args}: '{m}' does not mention {needle}");
    }
}

#[test]
fn adult_kidney_equations_compute_for_adolescents_with_a_warning() {
    // MDRD at 17: 175 x 1^-1.154 x 17^-0.203 (Levey 2006); the arithmetic is defined, so it is
    // computed and the validity limit is a warning, not a refusal
    let r = run_named("mdrd_gfr", &json!({"sex": "male", "age": 17, "creatinine": 1})).unwrap();
    let v = r.value.as_f64().unwrap();
    assert!((v - 175.0 * 17f64.powf(-0.203)).abs() < 1e-9, "{v}");
    assert!(r.warnings.iter().any(|w| w.contains("adults")), "{:?}", r.warnings);
    let r = run_named("ckd_epi_2021", &json!({"sex": "female", "age": 17, "creatinine": 0.7})).unwrap();
    assert!(r.warnings.iter().any(|w| w.contains("adults")), "{:?}", r.warnings);
    // an adult gets no such warning
    let r = run_named("ckd_epi_2021", &json!({"sex": "female", "age": 18, "creatinine": 0.7})).unwrap();
    assert!(!r.warnings.iter().any(|w| w.contains("adults")), "{:?}", r.warnings);
}

#[test]
fn a_date_input_takes_a_whole_day_and_names_the_value_otherwise() {
    for bad in ["2024-01", "2024", "2024-01-01T10:00:00Z", "01/01/2024", "2024-02-30"] {
        let e = run_named("estimated_due_date", &json!({"lmp": bad, "cycle_length": 28}))
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad) && e.contains("YYYY-MM-DD"), "{bad}: {e}");
    }
    assert_eq!(
        go("estimated_due_date", json!({"lmp": "2024-01-01", "cycle_length": 28})).value,
        json!("2024-10-07")
    );
}
