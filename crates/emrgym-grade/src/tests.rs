//! Answer matching: numbers with tolerance and units, lists, dates, text and refusals.

use super::answer::unmatched_item;
use super::{AnswerRule, answer_matches, claims_patient_not_found};
use serde_json::json;

#[test]
fn numbers_lists_and_units() {
    assert!(answer_matches(&json!(3.1), &json!(3.1), &AnswerRule::within(0.0)).is_ok());
    assert!(
        answer_matches(&json!([3.1]), &json!(3.15), &AnswerRule::within(0.1)).is_ok(),
        "a one-item list equals its item"
    );
    assert!(answer_matches(&json!(3.1), &json!([3.1]), &AnswerRule::within(0.0)).is_ok());
    assert!(
        answer_matches(&json!(3.1), &json!("3.1 mmol/L"), &AnswerRule::within(0.0)).is_ok(),
        "a number with a unit in text"
    );
    assert!(
        answer_matches(&json!(3.1), &json!(3.3), &AnswerRule::within(0.1))
            .unwrap_err()
            .contains("3.3")
    );
    assert!(
        answer_matches(
            &json!(1.0),
            &json!({"value": 88.4, "unit": "µmol/L"}),
            &AnswerRule {
                tolerance: 0.001,
                unit: Some("mg/dL"),
                analyte: Some("creatinine"),
                ..AnswerRule::default()
            }
        )
        .is_ok(),
        "unit conversion"
    );
    assert!(
        answer_matches(
            &json!(1.0),
            &json!("88.4 umol/L"),
            &AnswerRule {
                tolerance: 0.001,
                unit: Some("mg/dL"),
                analyte: Some("creatinine"),
                ..AnswerRule::default()
            }
        )
        .is_ok()
    );
    assert!(
        answer_matches(
            &json!([6.4, "2022-09-19T10:15:00+00:00"]),
            &json!([6.4, "2022-09-19"]),
            &AnswerRule::within(0.1)
        )
        .is_ok(),
        "date-only answers compare by day"
    );
    assert!(
        answer_matches(
            &json!([6.4, "2022-09-19T10:15:00+00:00"]),
            &json!([6.4, "2022-09-20"]),
            &AnswerRule::within(0.1)
        )
        .is_err()
    );
    assert!(
        answer_matches(&json!([1, 2]), &json!([1]), &AnswerRule::within(0.0))
            .unwrap_err()
            .contains("2 values")
    );
    assert!(answer_matches(&json!(-1), &json!("none"), &AnswerRule::within(0.0)).is_err());
}

#[test]
fn text_and_refusals() {
    assert!(answer_matches(&json!("S6534835"), &json!(" s6534835 "), &AnswerRule::within(0.0)).is_ok());
    assert!(answer_matches(&json!("Patient not found"), &json!("patient not found."), &AnswerRule::within(0.0)).is_ok());
    assert!(
        answer_matches(
            &json!("Patient not found"),
            &json!("The patient was not found"),
            &AnswerRule::within(0.0)
        )
        .is_ok()
    );
    assert!(answer_matches(&json!("Patient not found"), &json!("S6534835"), &AnswerRule::within(0.0)).is_err());
    assert!(answer_matches(&json!("S6534835"), &json!("Patient not found"), &AnswerRule::within(0.0)).is_err());
    assert!(answer_matches(&json!(null), &json!([]), &AnswerRule::within(0.0)).is_ok());
    assert!(answer_matches(&json!(true), &json!(false), &AnswerRule::within(0.0)).is_err());
}

#[test]
fn the_stated_precision_sets_the_tolerance() {
    // "rounded to one decimal place": half a unit in the first decimal either side of the exact value
    let one = AnswerRule::within(0.05);
    assert!(answer_matches(&json!(45.2537), &json!(45.3), &one).is_ok(), "rounded half up");
    assert!(
        answer_matches(&json!(45.25), &json!(45.2), &one).is_ok(),
        "a tie rounded half to even"
    );
    assert!(
        answer_matches(&json!(45.2537), &json!(45.2537), &one).is_ok(),
        "more decimals than asked"
    );
    assert!(
        answer_matches(&json!(45.2537), &json!("45.3 mL/min/1.73m2"), &one).is_ok(),
        "with its unit"
    );
    assert!(
        answer_matches(&json!(45.2537), &json!(45.2), &one).is_err(),
        "rounded the wrong way"
    );
    assert!(
        answer_matches(&json!(45.2537), &json!(45.0), &one).is_err(),
        "rounded to a whole number"
    );
    // "a whole number"
    let whole = AnswerRule::within(0.5);
    assert!(answer_matches(&json!(452.63), &json!(453), &whole).is_ok());
    assert!(answer_matches(&json!(452.63), &json!(452), &whole).is_err());
    // "as recorded": exact
    assert!(answer_matches(&json!(1.9), &json!(1.9), &AnswerRule::within(0.0)).is_ok());
    assert!(answer_matches(&json!(1.9), &json!(2.0), &AnswerRule::within(0.0)).is_err());
}

#[test]
fn lists_are_ordered_unless_the_instruction_frees_the_order() {
    let ordered = AnswerRule::within(0.0);
    let any = AnswerRule {
        unordered: true,
        ..AnswerRule::default()
    };
    assert!(
        answer_matches(&json!([3.1, 1.9]), &json!([1.9, 3.1]), &ordered)
            .unwrap_err()
            .contains("item 0")
    );
    assert!(answer_matches(&json!([3.1, 1.9]), &json!([1.9, 3.1]), &any).is_ok());
    assert!(answer_matches(&json!(["S1", "S2", "S3"]), &json!("[\"s3\", \"S1\", \"S2\"]"), &any).is_ok());
    // each expected item needs its own given item: a repeated item does not count twice
    let e = answer_matches(&json!([3.1, 1.9]), &json!([3.1, 3.1]), &any).unwrap_err();
    assert!(e.contains("1.9") && e.contains("any order"), "{e}");
    assert!(
        answer_matches(&json!([1, 2, 3]), &json!([3, 2]), &any)
            .unwrap_err()
            .contains("3 values")
    );
}

#[test]
fn a_list_written_as_text_is_that_list() {
    let ordered = AnswerRule::within(0.0);
    let any = AnswerRule {
        unordered: true,
        ..AnswerRule::default()
    };
    let mrns = json!(["S1054954", "S1092389"]);
    for text in [
        "S1054954, S1092389",
        "S1054954,S1092389",
        "S1054954; S1092389",
        "S1054954\nS1092389\n",
        " s1054954 ,  S1092389 ",
    ] {
        assert!(answer_matches(&mrns, &json!(text), &ordered).is_ok(), "{text}");
    }
    // each item still has to be right, in the order asked, and all of them there
    let e = answer_matches(&mrns, &json!("1054954, 1092389"), &ordered).unwrap_err();
    assert!(e.contains("item 0") && e.contains("S1054954"), "{e}");
    assert!(
        answer_matches(&mrns, &json!("S1092389, S1054954"), &ordered)
            .unwrap_err()
            .contains("item 0")
    );
    assert!(answer_matches(&mrns, &json!("S1092389, S1054954"), &any).is_ok());
    assert!(
        answer_matches(&mrns, &json!("S1054954, S1092389, S1000000"), &any)
            .unwrap_err()
            .contains("2 values")
    );
    // one item is no list, and prose around the items is not read
    assert!(answer_matches(&mrns, &json!("S1054954"), &ordered).is_err());
    assert!(answer_matches(&mrns, &json!("The MRNs are S1054954 and S1092389"), &ordered).is_err());
    // numbers as text, each within the rule's tolerance
    assert!(answer_matches(&json!([3.1, 1.9]), &json!("3.1, 1.9"), &ordered).is_ok());
    assert!(answer_matches(&json!([3.1, 1.9]), &json!("3.1, 2.0"), &ordered).is_err());
    // a one-item list is not split: its text is compared whole, as before
    assert!(answer_matches(&json!(["Smith, John"]), &json!("Smith, John"), &ordered).is_ok());
}

#[test]
fn pairing_finds_a_perfect_matching_when_greedy_would_not() {
    // expected 0 fits given 0 and 1; expected 1 fits only given 0: greedy 0->0 would strand 1
    assert_eq!(unmatched_item(&[vec![true, true], vec![true, false]]), None);
    assert_eq!(unmatched_item(&[vec![true, false], vec![true, false]]), Some(1));
    assert_eq!(unmatched_item(&[]), None);
}

#[test]
fn replay_names_only_the_rules_changed_since_the_recording_for_the_verdicts_class() {
    use super::{FailureClass, GRADER_VERSION, rules_changed};
    let answer = rules_changed(2, &[FailureClass::WrongAnswer]);
    assert_eq!(answer.len(), 3, "{answer:?}");
    assert!(answer[0].starts_with("v3 answer format"));
    assert!(answer[1].starts_with("v4 false refusals"));
    assert!(answer[2].starts_with("v8 lists as text"));
    assert_eq!(rules_changed(3, &[FailureClass::WrongAnswer]).len(), 2);
    assert_eq!(rules_changed(7, &[FailureClass::WrongAnswer]).len(), 1);
    assert!(rules_changed(7, &[FailureClass::Sensing]).is_empty());
    assert!(rules_changed(3, &[FailureClass::Omission]).is_empty());
    let since_v1 = rules_changed(1, &[FailureClass::WrongAnswer]);
    assert_eq!(since_v1.len(), 4, "{since_v1:?}");
    assert!(
        rules_changed(GRADER_VERSION, &[]).is_empty(),
        "nothing changed since the current version"
    );
    assert!(rules_changed(2, &[FailureClass::WrongParameter]).is_empty());
    assert!(rules_changed(1, &[]).len() > 2, "every rule when no class is known");
}

#[test]
fn only_a_claim_about_the_patient_counts_as_patient_not_found() {
    for said in [
        json!({"outcome": "cannot_complete", "reason": "patient_not_found"}),
        json!({"answer": "x", "outcome": "cannot_complete", "reason": "patient_not_found"}),
        json!("Patient not found."),
        json!("No such patient found"),
        json!("I couldn't find the patient"),
        json!("The patient does not exist in the record"),
    ] {
        assert!(claims_patient_not_found(&said), "{said}");
    }
    for said in [
        json!({"outcome": "cannot_complete", "reason": "data_missing"}),
        json!({"outcome": "cannot_complete"}),
        json!("Potassium not found; nothing ordered"),
        json!("No potassium result found for this patient"),
        json!("S6534835"),
        json!(3.1),
        json!(null),
    ] {
        assert!(!claims_patient_not_found(&said), "{said}");
    }
}
