//! Monotonicity (proptest): results move the right way as their inputs do, scores stay in
//! their range, and unit conversion round-trips.

use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn egfr_falls_as_creatinine_rises(c1 in 0.3f64..15.0, d in 0.01f64..5.0, age in 18.0f64..100.0, female in any::<bool>()) {
        let sex = if female { "female" } else { "male" };
        let a = num("ckd_epi_2021", json!({"sex": sex, "age": age, "creatinine": c1}));
        let b = num("ckd_epi_2021", json!({"sex": sex, "age": age, "creatinine": c1 + d}));
        prop_assert!(b < a);
        let m1 = num("mdrd_gfr", json!({"sex": sex, "age": age, "creatinine": c1}));
        let m2 = num("mdrd_gfr", json!({"sex": sex, "age": age, "creatinine": c1 + d}));
        prop_assert!(m2 < m1);
    }

    #[test]
    fn egfr_falls_with_age(c in 0.3f64..10.0, age in 18.0f64..99.0, d in 0.5f64..20.0) {
        let a = num("ckd_epi_2021", json!({"sex": "female", "age": age, "creatinine": c}));
        let b = num("ckd_epi_2021", json!({"sex": "female", "age": (age + d).min(130.0), "creatinine": c}));
        prop_assert!(b < a);
    }

    #[test]
    fn crcl_rises_with_weight_and_falls_with_creatinine(w in 30.0f64..200.0, dw in 0.1f64..50.0, c in 0.3f64..10.0, dc in 0.01f64..3.0, age in 18.0f64..100.0) {
        let base = json!({"sex": "male", "age": age, "weight": w, "creatinine": c});
        let v = num("cockcroft_gault", base.clone());
        let ok1 = num("cockcroft_gault", with(&base, json!({"weight": w + dw}))) > v;
        prop_assert!(ok1);
        let ok2 = num("cockcroft_gault", with(&base, json!({"creatinine": c + dc}))) < v;
        prop_assert!(ok2);
    }

    #[test]
    fn meld_never_falls_as_bilirubin_inr_or_creatinine_rise(b in 0.5f64..40.0, i in 0.8f64..6.0, c in 0.5f64..6.0, na in 120.0f64..145.0, db in 0.0f64..10.0) {
        let base = json!({"creatinine": c, "bilirubin": b, "inr": i, "sodium": na});
        let v = num("meld_na", base.clone());
        let ok3 = num("meld_na", with(&base, json!({"bilirubin": b + db}))) >= v;
        prop_assert!(ok3);
        let ok4 = num("meld_na", with(&base, json!({"inr": i + db / 5.0}))) >= v;
        prop_assert!(ok4);
        let ok5 = num("meld_na", with(&base, json!({"creatinine": c + db / 5.0}))) >= v;
        prop_assert!(ok5);
    }

    #[test]
    fn qtc_rises_with_qt(hr in 30.0f64..200.0, qt in 200.0f64..600.0, d in 1.0f64..100.0) {
        for name in ["qtc_bazett", "qtc_fridericia", "qtc_framingham", "qtc_hodges", "qtc_rautaharju"] {
            let a = num(name, json!({"heart_rate": hr, "qt": qt}));
            let b = num(name, json!({"heart_rate": hr, "qt": qt + d}));
            prop_assert!(b > a, "{}", name);
        }
    }

    #[test]
    fn bmi_and_bsa_rise_with_weight(w in 2.0f64..300.0, h in 50.0f64..220.0, d in 0.1f64..50.0) {
        let ok6 = num("bmi", json!({"weight": w + d, "height": h})) > num("bmi", json!({"weight": w, "height": h}));
        prop_assert!(ok6);
        let ok7 = num("bsa", json!({"weight": w + d, "height": h})) > num("bsa", json!({"weight": w, "height": h}));
        prop_assert!(ok7);
    }

    #[test]
    fn framingham_risk_rises_with_sbp_and_total_cholesterol(age in 40.0f64..79.0, tc in 130.0f64..320.0, sbp in 100.0f64..200.0, d in 1.0f64..30.0, male in any::<bool>()) {
        let sex = if male { "male" } else { "female" };
        let base = json!({"sex": sex, "age": age, "total_cholesterol": tc, "hdl": 50, "systolic_bp": sbp});
        let v = num("framingham_hard_chd", base.clone());
        let ok8 = num("framingham_hard_chd", with(&base, json!({"systolic_bp": sbp + d}))) > v;
        prop_assert!(ok8);
        let ok9 = num("framingham_hard_chd", with(&base, json!({"hdl": 50.0 + d}))) < v;
        prop_assert!(ok9);
    }

    #[test]
    fn scores_stay_in_their_range(age in 18.0f64..100.0, flags in proptest::collection::vec(any::<bool>(), 7)) {
        let cha = go("cha2ds2_vasc", json!({"age": age, "sex": if flags[0] { "female" } else { "male" },
            "congestive_heart_failure": flags[1], "hypertension": flags[2], "diabetes": flags[3], "stroke_tia_thromboembolism": flags[4],
            "vascular_disease": flags[5]})).value.as_i64().unwrap();
        prop_assert!((0..=9).contains(&cha));
        let hb = go("has_bled", json!({"age": age, "hypertension": flags[0], "renal_disease": flags[1], "liver_disease": flags[2], "stroke": flags[3],
            "bleeding": flags[4], "labile_inr": flags[5], "drugs": flags[6]})).value.as_i64().unwrap();
        prop_assert!((0..=9).contains(&hb));
    }

    #[test]
    fn convert_units_round_trips(v in 0.1f64..20.0) {
        let there = convert_units(&json!({"analyte": "creatinine", "value": v, "from": "mg/dL", "to": "µmol/L"})).unwrap();
        let back = convert_units(&json!({"analyte": "creatinine", "value": there["value"], "from": "µmol/L", "to": "mg/dL"})).unwrap();
        prop_assert!(close(back["value"].as_f64().unwrap(), v, 1e-12));
    }
}
