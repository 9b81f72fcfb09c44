//! Published worked examples and hand-checked values.

use super::*;

#[test]
fn ckd_epi_2021_uses_the_male_kappa_below_0_9() {
    // Male, 50 years, Scr 0.8 mg/dL: 142 x (0.8/0.9)^-0.302 x 0.9938^50 = 107.8. MedCalc's code used
    // kappa 0.7 for men at or below 0.9 mg/dL: 142 x (0.8/0.7)^-1.200 x 0.9938^50 = 88.6.
    let v = num("ckd_epi_2021", json!({"sex": "male", "age": 50, "creatinine": 0.8}));
    let expect = 142.0 * (0.8f64 / 0.9).powf(-0.302) * 0.9938f64.powf(50.0);
    assert!(close(v, expect, 1e-12), "{v} {expect}");
    assert!((v - 107.8).abs() < 0.05, "{v}");
    let bug = 142.0 * (0.8f64 / 0.7).powf(-1.2) * 0.9938f64.powf(50.0);
    assert!((bug - 88.6).abs() < 0.05 && (v - bug).abs() > 15.0, "{bug}");
    // female 60, 1.0: 142 x (1/0.7)^-1.2 x 0.9938^60 x 1.012
    let f = num("ckd_epi_2021", json!({"sex": "female", "age": 60, "creatinine": 1.0}));
    assert!((f - 64.3).abs() < 0.2, "{f}");
}

#[test]
fn meld_3_matches_the_formula_and_bounds() {
    let v = go(
        "meld_3",
        json!({"sex": "female", "bilirubin": 2.5, "sodium": 130, "inr": 1.6, "creatinine": 1.4, "albumin": 2.9}),
    );
    let (b, na, inr, cr, alb): (f64, f64, f64, f64, f64) = (2.5, 130.0, 1.6, 1.4, 2.9);
    let raw =
        1.33 + 4.56 * b.ln() + 0.82 * (137.0 - na) - 0.24 * (137.0 - na) * b.ln() + 9.09 * inr.ln() + 11.14 * cr.ln() + 1.85 * (3.5 - alb)
            - 1.83 * (3.5 - alb) * cr.ln()
            + 6.0;
    assert_eq!(v.value, json!(raw.round() as i64));
    // all values at their lower bounds: 6 + 0 + 0 + 0 + 0 + 0 (albumin 3.5) = 6 for a man
    assert_eq!(
        go(
            "meld_3",
            json!({"sex": "male", "bilirubin": 0.5, "sodium": 140, "inr": 0.9, "creatinine": 0.6, "albumin": 4.0})
        )
        .value,
        json!(6)
    );
    // dialysis sets creatinine to 3.0
    let d = go(
        "meld_3",
        json!({"sex": "male", "bilirubin": 1, "sodium": 137, "inr": 1, "creatinine": 1, "albumin": 3.5, "dialysis_twice_past_week": true}),
    );
    assert_eq!(d.value, json!((11.14 * 3f64.ln() + 6.0).round() as i64));
    // the cap is a convention
    let high = json!({"sex": "female", "bilirubin": 30, "sodium": 120, "inr": 4, "creatinine": 4, "albumin": 1.0});
    assert_eq!(go("meld_3", high.clone()).value, json!(40));
    assert!(go("meld_3", with(&high, json!({"cap": "none"}))).value.as_i64().unwrap() > 40);
}

#[test]
fn meld_na_rounds_meld_i_to_a_tenth_before_scaling() {
    // Cr 1, bili 1, INR 1 -> MELD(i) = 0.643 -> 6 (rounded to 0.6, x 10); not > 11 so no sodium term.
    assert_eq!(
        go("meld_na", json!({"creatinine": 1, "bilirubin": 1, "inr": 1, "sodium": 125})).value,
        json!(6)
    );
    // Cr 2, bili 3, INR 1.5, Na 130: raw = 0.957 ln2 + 0.378 ln3 + 1.12 ln1.5 + 0.643 = 2.2013 -> 22;
    // 22 + 1.32*7 - 0.033*22*7 = 26.158 -> 26
    assert_eq!(
        go("meld_na", json!({"creatinine": 2, "bilirubin": 3, "inr": 1.5, "sodium": 130})).value,
        json!(26)
    );
}

#[test]
fn gcs_counts_verbal_once_and_refuses_untestable_verbal() {
    assert_eq!(
        go(
            "glasgow_coma_scale",
            json!({"eye": "spontaneous", "verbal": "oriented", "motor": "obeys_commands"})
        )
        .value,
        json!(15)
    );
    assert_eq!(
        go("glasgow_coma_scale", json!({"eye": "none", "verbal": "none", "motor": "none"})).value,
        json!(3)
    );
    assert_eq!(
        go(
            "glasgow_coma_scale",
            json!({"eye": "to_sound", "verbal": "confused", "motor": "withdraws_from_pain"})
        )
        .value,
        json!(11)
    );
    let m = err(
        "glasgow_coma_scale",
        json!({"eye": "to_sound", "verbal": "not_testable", "motor": "obeys_commands"}),
    );
    assert!(m.contains("not testable"), "{m}");
}

#[test]
fn child_pugh_counts_ascites() {
    let base = json!({"bilirubin": 1.0, "albumin": 4.0, "inr": 1.0, "encephalopathy": "none"});
    assert_eq!(go("child_pugh", with(&base, json!({"ascites": "none"}))).value, json!(5));
    assert_eq!(go("child_pugh", with(&base, json!({"ascites": "slight"}))).value, json!(6));
    assert_eq!(
        go("child_pugh", with(&base, json!({"ascites": "moderate_to_severe"}))).value,
        json!(7)
    );
}

#[test]
fn homa_ir_converts_pmol_by_dividing() {
    let uiu = num("homa_ir", json!({"insulin": 10, "glucose": 100}));
    let pmol = num("homa_ir", json!({"insulin": {"value": 60, "unit": "pmol/L"}, "glucose": 100}));
    assert!(close(uiu, pmol, 1e-12) && close(uiu, 1000.0 / 405.0, 1e-12));
}

#[test]
fn sirs_wbc_per_microlitre_is_not_always_abnormal() {
    let r = go("sirs", json!({"wbc": {"value": 8000, "unit": "/µL"}}));
    assert_eq!(r.value, json!(0));
    assert_eq!(go("sirs", json!({"wbc": {"value": 13000, "unit": "/mm3"}})).value, json!(1));
}

#[test]
fn framingham_uses_mg_dl_coefficients_whatever_the_input_unit() {
    let mg = num(
        "framingham_hard_chd",
        json!({"sex": "male", "age": 55, "total_cholesterol": 213, "hdl": 50, "systolic_bp": 120, "smoker": true}),
    );
    let mmol = num(
        "framingham_hard_chd",
        json!({"sex": "male", "age": 55, "total_cholesterol": {"value": 213.0 / units::CHOLESTEROL_MGDL_PER_MMOL, "unit": "mmol/L"},
            "hdl": {"value": 50.0 / units::CHOLESTEROL_MGDL_PER_MMOL, "unit": "mmol/L"}, "systolic_bp": 120, "smoker": true}),
    );
    assert!(close(mg, mmol, 1e-9) && mg > 5.0 && mg < 30.0, "{mg} {mmol}");
    let w = num(
        "framingham_hard_chd",
        json!({"sex": "female", "age": 60, "total_cholesterol": 220, "hdl": 45, "systolic_bp": 140, "smoker": true, "bp_treated": true}),
    );
    assert!(w > 2.0 && w < 20.0, "{w}");
    assert!(
        err(
            "framingham_hard_chd",
            json!({"sex": "male", "age": 85, "total_cholesterol": 200, "hdl": 50, "systolic_bp": 120})
        )
        .contains("20-79")
    );
}

#[test]
fn due_date_short_cycles_move_the_date_earlier() {
    let d = |cycle: i64| go("estimated_due_date", json!({"lmp": "2024-01-01", "cycle_length": cycle})).value;
    assert_eq!(d(28), json!("2024-10-07"));
    assert_eq!(d(25), json!("2024-10-04"));
    assert_eq!(d(32), json!("2024-10-11"));
    // Naegele calendar: 2024-01-01 + 9 months + 7 days = 2024-10-08 (one day later than 280 days in a leap year)
    assert_eq!(
        go("estimated_due_date", json!({"lmp": "2024-01-01", "rule": "naegele_calendar"})).value,
        json!("2024-10-08")
    );
    assert_eq!(
        go("estimated_conception_date", json!({"lmp": "2024-01-01", "cycle_length": 32})).value,
        json!("2024-01-19")
    );
    assert_eq!(
        go(
            "estimated_conception_date",
            json!({"lmp": "2024-01-01", "cycle_length": 32, "rule": "lmp_plus_14"})
        )
        .value,
        json!("2024-01-15")
    );
    assert!(err("gestational_age", json!({"lmp": "2024-02-01", "current_date": "2024-01-01"})).contains("before"));
    assert!(err("estimated_due_date", json!({"lmp": "01/02/2024"})).contains("YYYY-MM-DD"));
}

#[test]
fn mme_tables_differ_and_missing_factors_are_refused() {
    let meds = json!([{"drug": "tramadol", "dose": 50, "unit": "mg", "doses_per_day": 4}, {"drug": "hydromorphone", "dose": 2, "unit": "mg", "doses_per_day": 3}]);
    assert!(close(
        num("morphine_milligram_equivalents", json!({"medications": meds})),
        200.0 * 0.2 + 6.0 * 5.0,
        1e-12
    ));
    assert!(close(
        num(
            "morphine_milligram_equivalents",
            json!({"medications": meds, "factor_table": "cdc2016"})
        ),
        200.0 * 0.1 + 6.0 * 4.0,
        1e-12
    ));
    let patch = json!([{"drug": "fentanyl_transdermal", "dose": 25, "unit": "µg/h", "doses_per_day": 1}]);
    assert!(close(
        num("morphine_milligram_equivalents", json!({"medications": patch})),
        60.0,
        1e-12
    ));
    let buccal = json!([{"drug": "fentanyl_buccal", "dose": 100, "unit": "µg", "doses_per_day": 1}]);
    assert!(err("morphine_milligram_equivalents", json!({"medications": buccal})).contains("cdc2016"));
    let m = err(
        "morphine_milligram_equivalents",
        json!({"medications": [{"drug": "fentanyl_transdermal", "dose": 25, "unit": "mg", "doses_per_day": 1}]}),
    );
    assert!(m.contains("µg/h"), "{m}");
    // CDC 2016 methadone tiers by daily dose
    let methadone = |mg: f64| {
        num(
            "morphine_milligram_equivalents",
            json!({"factor_table": "cdc2016", "medications": [{"drug": "methadone", "dose": mg, "unit": "mg", "doses_per_day": 1}]}),
        )
    };
    assert!(
        close(methadone(20.0), 80.0, 1e-12)
            && close(methadone(21.0), 168.0, 1e-12)
            && close(methadone(41.0), 410.0, 1e-12)
            && close(methadone(61.0), 732.0, 1e-12)
    );
}

#[test]
fn cockcroft_gault_weight_bases() {
    let base = json!({"sex": "female", "age": 60, "weight": 100, "height": 160, "creatinine": 1.0});
    let actual = num("cockcroft_gault", base.clone());
    assert!(close(actual, 80.0 * 100.0 * 0.85 / 72.0, 1e-12));
    let ibw = 45.5 + 2.3 * (160.0 / 2.54 - 60.0);
    let ideal = num("cockcroft_gault", with(&base, json!({"weight_basis": "ideal"})));
    assert!(close(ideal, 80.0 * ibw * 0.85 / 72.0, 1e-12));
    let adjusted = num("cockcroft_gault", with(&base, json!({"weight_basis": "adjusted"})));
    let rule = num("cockcroft_gault", with(&base, json!({"weight_basis": "bmi_rule"})));
    assert!(close(adjusted, rule, 1e-12), "obese: the BMI rule takes the adjusted weight");
    let m = err(
        "cockcroft_gault",
        json!({"sex": "female", "age": 60, "weight": 100, "creatinine": 1.0, "weight_basis": "ideal"}),
    );
    assert!(m.contains("height"), "{m}");
}

#[test]
fn convert_units_tool() {
    let r = convert_units(&json!({"analyte": "creatinine", "value": 1.0, "from": "mg/dL", "to": "µmol/L"})).unwrap();
    assert!(close(r["value"].as_f64().unwrap(), 88.4, 1e-12));
    let r = convert_units(&json!({"analyte": "glucose", "value": 5.5, "from": "mmol/L", "to": "mg/dL"})).unwrap();
    assert!(close(r["value"].as_f64().unwrap(), 5.5 * 18.0156, 1e-12));
    let r = convert_units(&json!({"analyte": "bun", "value": 7.0, "from": "mmol/L", "to": "mg/dL"})).unwrap();
    assert!(close(r["value"].as_f64().unwrap(), 19.60938, 1e-6));
    let e = convert_units(&json!({"analyte": "glucose", "value": 5.5, "from": "mmol/L", "to": "g/L"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'g/L'") && e.contains("mg/dL"), "{e}");
    let e = convert_units(&json!({"analyte": "unobtainium", "value": 1, "from": "mg/dL", "to": "mg/dL"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unobtainium") && e.contains("creatinine"), "{e}");
    let e = convert_units(&json!({"analyte": "sodium", "value": 1000, "from": "mmol/L", "to": "mEq/L"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not physiologically possible"), "{e}");
    let schema = convert_units_schema();
    assert!(
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(&json!({"analyte": "calcium", "value": 2.3, "from": "mmol/L", "to": "mg/dL"}))
    );
}
