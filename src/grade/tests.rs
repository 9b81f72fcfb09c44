//! Answer matching: numbers with tolerance and units, lists, dates, text and refusals.

use super::answer_matches;
use serde_json::json;

#[test]
fn numbers_lists_and_units() {
    assert!(answer_matches(&json!(3.1), &json!(3.1), 0.0, None, None).is_ok());
    assert!(
        answer_matches(&json!([3.1]), &json!(3.15), 0.1, None, None).is_ok(),
        "a one-item list equals its item"
    );
    assert!(answer_matches(&json!(3.1), &json!([3.1]), 0.0, None, None).is_ok());
    assert!(
        answer_matches(&json!(3.1), &json!("3.1 mmol/L"), 0.0, None, None).is_ok(),
        "a number with a unit in text"
    );
    assert!(
        answer_matches(&json!(3.1), &json!(3.3), 0.1, None, None)
            .unwrap_err()
            .contains("3.3")
    );
    assert!(
        answer_matches(
            &json!(1.0),
            &json!({"value": 88.4, "unit": "µmol/L"}),
            0.001,
            Some("mg/dL"),
            Some("creatinine")
        )
        .is_ok(),
        "unit conversion"
    );
    assert!(answer_matches(&json!(1.0), &json!("88.4 umol/L"), 0.001, Some("mg/dL"), Some("creatinine")).is_ok());
    assert!(
        answer_matches(
            &json!([6.4, "2022-09-19T10:15:00+00:00"]),
            &json!([6.4, "2022-09-19"]),
            0.1,
            None,
            None
        )
        .is_ok(),
        "date-only answers compare by day"
    );
    assert!(
        answer_matches(
            &json!([6.4, "2022-09-19T10:15:00+00:00"]),
            &json!([6.4, "2022-09-20"]),
            0.1,
            None,
            None
        )
        .is_err()
    );
    assert!(
        answer_matches(&json!([1, 2]), &json!([1]), 0.0, None, None)
            .unwrap_err()
            .contains("2 values")
    );
    assert!(answer_matches(&json!(-1), &json!("none"), 0.0, None, None).is_err());
}

#[test]
fn text_and_refusals() {
    assert!(answer_matches(&json!("S6534835"), &json!(" s6534835 "), 0.0, None, None).is_ok());
    assert!(answer_matches(&json!("Patient not found"), &json!("patient not found."), 0.0, None, None).is_ok());
    assert!(answer_matches(&json!("Patient not found"), &json!("The patient was not found"), 0.0, None, None).is_ok());
    assert!(answer_matches(&json!("Patient not found"), &json!("S6534835"), 0.0, None, None).is_err());
    assert!(answer_matches(&json!("S6534835"), &json!("Patient not found"), 0.0, None, None).is_err());
    assert!(answer_matches(&json!(null), &json!([]), 0.0, None, None).is_ok());
    assert!(answer_matches(&json!(true), &json!(false), 0.0, None, None).is_err());
}
