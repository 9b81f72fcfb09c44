//! Unit invariance: the same quantity in another unit gives the same result, also exactly
//! at a threshold.

use super::*;

#[test]
fn unit_invariance() {
    let pairs: Vec<(&str, Value, Value)> = vec![
        (
            "ckd_epi_2021",
            json!({"sex": "female", "age": 70, "creatinine": {"value": 1.3, "unit": "mg/dL"}}),
            json!({"sex": "female", "age": 70, "creatinine": {"value": 1.3 * 88.4, "unit": "µmol/L"}}),
        ),
        (
            "cockcroft_gault",
            json!({"sex": "male", "age": 70, "weight": {"value": 80, "unit": "kg"}, "creatinine": 1.1}),
            json!({"sex": "male", "age": {"value": 840, "unit": "months"}, "weight": {"value": 80.0 / 0.453_592_37, "unit": "lb"}, "creatinine": {"value": 1.1 * 88.4, "unit": "umol/L"}}),
        ),
        (
            "bmi",
            json!({"weight": 70, "height": 175}),
            json!({"weight": {"value": 70000, "unit": "g"}, "height": {"value": 1.75, "unit": "m"}}),
        ),
        (
            "bmi",
            json!({"weight": 70, "height": 175}),
            json!({"weight": 70, "height": {"value": 175.0 / 30.48, "unit": "ft"}}),
        ),
        (
            "corrected_calcium",
            json!({"calcium": 8.0, "albumin": 2.5}),
            json!({"calcium": {"value": 8.0 / units::CALCIUM_MGDL_PER_MMOL, "unit": "mmol/L"}, "albumin": {"value": 25, "unit": "g/L"}}),
        ),
        (
            "corrected_sodium",
            json!({"sodium": 130, "glucose": 500}),
            json!({"sodium": {"value": 130, "unit": "mmol/L"}, "glucose": {"value": 500.0 / 18.0156, "unit": "mmol/L"}}),
        ),
        (
            "meld_na",
            json!({"creatinine": 1.9, "bilirubin": 4.2, "inr": 1.8, "sodium": 131}),
            json!({"creatinine": {"value": 1.9 * 88.4, "unit": "µmol/L"}, "bilirubin": {"value": 4.2 * units::BILIRUBIN_UMOL_PER_MGDL, "unit": "µmol/L"}, "inr": 1.8, "sodium": 131}),
        ),
        (
            "ldl_friedewald",
            json!({"total_cholesterol": 200, "hdl": 40, "triglycerides": 150}),
            json!({"total_cholesterol": {"value": 200.0 / 38.665, "unit": "mmol/L"}, "hdl": {"value": 40.0 / 38.665, "unit": "mmol/L"}, "triglycerides": {"value": 150.0 / 88.57, "unit": "mmol/L"}}),
        ),
        (
            "serum_osmolality",
            json!({"sodium": 140, "bun": 28, "glucose": 90}),
            json!({"sodium": 140, "bun": {"value": 28.0 / 2.80134, "unit": "mmol/L"}, "glucose": {"value": 90.0 / 18.0156, "unit": "mmol/L"}}),
        ),
        (
            "sirs",
            json!({"temperature": 38.5, "wbc": 13}),
            json!({"temperature": {"value": 101.3, "unit": "°F"}, "wbc": {"value": 13000, "unit": "/µL"}}),
        ),
        (
            "qtc_bazett",
            json!({"heart_rate": 75, "qt": 400}),
            json!({"heart_rate": 75, "qt": {"value": 0.4, "unit": "s"}}),
        ),
        (
            "fib4",
            json!({"age": 50, "ast": 40, "alt": 30, "platelets": 200}),
            json!({"age": 50, "ast": {"value": 40.0 / 60.0, "unit": "µkat/L"}, "alt": 30, "platelets": {"value": 200, "unit": "10^3/µL"}}),
        ),
        (
            "glasgow_blatchford",
            json!({"bun": 30, "hemoglobin": 11, "sex": "male", "systolic_bp": 105, "heart_rate": 110}),
            json!({"bun": 30, "hemoglobin": {"value": 110, "unit": "g/L"}, "sex": "male", "systolic_bp": {"value": 105.0 * 101.325 / 760.0, "unit": "kPa"}, "heart_rate": 110}),
        ),
    ];
    for (name, a, b) in pairs {
        let (x, y) = (go(name, a.clone()).value, go(name, b.clone()).value);
        let same = match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => close(p, q, 1e-9),
            _ => x == y,
        };
        assert!(same, "{name}: {a} -> {x} but {b} -> {y}");
    }
}

#[test]
fn fahrenheit_fever_thresholds_are_exact_in_centor_and_sirs() {
    // 100.4 °F is exactly 38.0 °C: not "> 38 °C"; 100.5 °F is
    let centor = |f: f64| {
        run_named(
            "centor_mcisaac",
            &json!({"age": 30, "cough": true, "temperature": {"value": f, "unit": "°F"}}),
        )
        .unwrap()
        .value
        .as_f64()
        .unwrap()
    };
    assert_eq!(centor(100.4), 0.0);
    assert_eq!(centor(100.5), 1.0);
    let sirs = |f: f64| {
        run_named(
            "sirs",
            &json!({"temperature": {"value": f, "unit": "°F"}, "heart_rate": 80, "respiratory_rate": 16}),
        )
        .unwrap()
        .value
        .as_f64()
        .unwrap()
    };
    assert_eq!(sirs(100.4), 0.0);
    assert_eq!(sirs(100.5), 1.0);
    assert_eq!(sirs(96.8), 0.0);
    assert_eq!(sirs(96.7), 1.0);
}
