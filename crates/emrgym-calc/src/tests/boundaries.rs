//! Boundaries: for every threshold of every scored item, the value just below and at (or just
//! above, for strict thresholds) the threshold, with the points expected at each
//! ((calculator, base arguments, argument, value, expected total)); the APACHE II and SOFA
//! bands; the thresholds, clamps and class edges of the equations; age bands.

use super::*;

fn total(name: &str, base: &Value, key: &str, v: Value) -> Value {
    go(name, with(base, json!({ key: v }))).value
}

#[test]
fn boundaries_at_every_threshold() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, &str, Value, Value)> = vec![
        // CHA2DS2-VASc age
        ("cha2ds2_vasc", json!({"sex": "male"}), "age", json!(64.9), json!(0)),
        ("cha2ds2_vasc", json!({"sex": "male"}), "age", json!(65), json!(1)),
        ("cha2ds2_vasc", json!({"sex": "male"}), "age", json!(74.9), json!(1)),
        ("cha2ds2_vasc", json!({"sex": "male"}), "age", json!(75), json!(2)),
        ("cha2ds2_vasc", json!({"age": 40}), "sex", json!("female"), json!(1)),
        // HAS-BLED age > 65, alcohol >= 8
        ("has_bled", json!({}), "age", json!(65), json!(0)),
        ("has_bled", json!({}), "age", json!(65.1), json!(1)),
        ("has_bled", json!({"age": 50}), "alcohol_drinks_per_week", json!(7), json!(0)),
        ("has_bled", json!({"age": 50}), "alcohol_drinks_per_week", json!(8), json!(1)),
        // HEART age 45 / 65, risk factors 1-2 / 3
        ("heart_score", json!({}), "age", json!(44.9), json!(0)),
        ("heart_score", json!({}), "age", json!(45), json!(1)),
        ("heart_score", json!({}), "age", json!(64.9), json!(1)),
        ("heart_score", json!({}), "age", json!(65), json!(2)),
        ("heart_score", json!({"age": 30, "smoking": true, "diabetes": true}), "obesity", json!(false), json!(1)),
        ("heart_score", json!({"age": 30, "smoking": true, "diabetes": true}), "obesity", json!(true), json!(2)),
        ("heart_score", json!({"age": 30}), "atherosclerotic_disease", json!(true), json!(2)),
        ("heart_score", json!({"age": 30}), "troponin", json!("over_three_times_normal"), json!(2)),
        ("heart_score", json!({"age": 30}), "ecg", json!("nonspecific_repolarization"), json!(1)),
        // RCRI creatinine > 2
        ("rcri", json!({}), "creatinine", json!(2.0), json!(0)),
        ("rcri", json!({}), "creatinine", json!(2.01), json!(1)),
        ("rcri", json!({}), "cerebrovascular_disease", json!(true), json!(1)),
        // Wells PE heart rate > 100
        ("wells_pe", json!({}), "heart_rate", json!(100), json!(0.0)),
        ("wells_pe", json!({}), "heart_rate", json!(101), json!(1.5)),
        // PERC age >= 50, HR >= 100, SaO2 < 95
        ("perc", json!({}), "age", json!(49.9), json!(0)),
        ("perc", json!({}), "age", json!(50), json!(1)),
        ("perc", json!({"age": 30}), "heart_rate", json!(99), json!(0)),
        ("perc", json!({"age": 30}), "heart_rate", json!(100), json!(1)),
        ("perc", json!({"age": 30}), "oxygen_saturation", json!(95), json!(0)),
        ("perc", json!({"age": 30}), "oxygen_saturation", json!(94.9), json!(1)),
        // Wells DVT: bedridden and surgery are one item; alternative diagnosis -2
        ("wells_dvt", json!({"bedridden_3_days": true}), "major_surgery_12_weeks", json!(true), json!(1)),
        ("wells_dvt", json!({}), "alternative_diagnosis_likely", json!(true), json!(-2)),
        // Caprini age 41 / 61 / 75, BMI > 25, surgery types, mobility
        ("caprini", json!({}), "age", json!(40), json!(0)),
        ("caprini", json!({}), "age", json!(41), json!(1)),
        ("caprini", json!({}), "age", json!(60.9), json!(1)),
        ("caprini", json!({}), "age", json!(61), json!(2)),
        ("caprini", json!({}), "age", json!(74.9), json!(2)),
        ("caprini", json!({}), "age", json!(75), json!(3)),
        ("caprini", json!({"age": 30}), "bmi", json!(25), json!(0)),
        ("caprini", json!({"age": 30}), "bmi", json!(25.1), json!(1)),
        ("caprini", json!({"age": 30}), "surgery", json!("minor"), json!(1)),
        ("caprini", json!({"age": 30}), "surgery", json!("laparoscopic_over_45_min"), json!(2)),
        ("caprini", json!({"age": 30}), "surgery", json!("elective_major_lower_extremity_arthroplasty"), json!(5)),
        ("caprini", json!({"age": 30}), "mobility", json!("bed_rest"), json!(1)),
        ("caprini", json!({"age": 30, "sex": "female"}), "oral_contraceptive_or_hrt", json!(true), json!(1)),
        ("caprini", json!({"age": 30, "sex": "male"}), "oral_contraceptive_or_hrt", json!(true), json!(0)),
        // CURB-65 urea > 7 mmol/L, RR >= 30, SBP < 90, DBP <= 60, age >= 65
        ("curb_65", json!({"age": 40}), "bun", json!({"value": 7.0, "unit": "mmol/L"}), json!(0)),
        ("curb_65", json!({"age": 40}), "bun", json!({"value": 7.01, "unit": "mmol/L"}), json!(1)),
        ("curb_65", json!({"age": 40}), "respiratory_rate", json!(29), json!(0)),
        ("curb_65", json!({"age": 40}), "respiratory_rate", json!(30), json!(1)),
        ("curb_65", json!({"age": 40}), "systolic_bp", json!(90), json!(0)),
        ("curb_65", json!({"age": 40}), "systolic_bp", json!(89), json!(1)),
        ("curb_65", json!({"age": 40}), "diastolic_bp", json!(61), json!(0)),
        ("curb_65", json!({"age": 40}), "diastolic_bp", json!(60), json!(1)),
        ("curb_65", json!({}), "age", json!(64.9), json!(0)),
        ("curb_65", json!({}), "age", json!(65), json!(1)),
        // qSOFA
        ("qsofa", json!({}), "respiratory_rate", json!(21), json!(0)),
        ("qsofa", json!({}), "respiratory_rate", json!(22), json!(1)),
        ("qsofa", json!({}), "systolic_bp", json!(101), json!(0)),
        ("qsofa", json!({}), "systolic_bp", json!(100), json!(1)),
        // SIRS
        ("sirs", json!({}), "temperature", json!(38.0), json!(0)),
        ("sirs", json!({}), "temperature", json!(38.1), json!(1)),
        ("sirs", json!({}), "temperature", json!(36.0), json!(0)),
        ("sirs", json!({}), "temperature", json!(35.9), json!(1)),
        ("sirs", json!({}), "heart_rate", json!(90), json!(0)),
        ("sirs", json!({}), "heart_rate", json!(91), json!(1)),
        ("sirs", json!({}), "respiratory_rate", json!(20), json!(0)),
        ("sirs", json!({}), "respiratory_rate", json!(21), json!(1)),
        ("sirs", json!({}), "paco2", json!(32), json!(0)),
        ("sirs", json!({}), "paco2", json!(31.9), json!(1)),
        ("sirs", json!({}), "wbc", json!(12.0), json!(0)),
        ("sirs", json!({}), "wbc", json!(12.1), json!(1)),
        ("sirs", json!({}), "wbc", json!(4.0), json!(0)),
        ("sirs", json!({}), "wbc", json!(3.9), json!(1)),
        ("sirs", json!({}), "bands", json!(10), json!(0)),
        ("sirs", json!({}), "bands", json!(11), json!(1)),
        // Centor age 15 / 45, temperature > 38 (cough given so only the varied item counts)
        ("centor_mcisaac", json!({"cough": true}), "age", json!(14.9), json!(1)),
        ("centor_mcisaac", json!({"cough": true}), "age", json!(15), json!(0)),
        ("centor_mcisaac", json!({"cough": true}), "age", json!(44.9), json!(0)),
        ("centor_mcisaac", json!({"cough": true}), "age", json!(45), json!(-1)),
        ("centor_mcisaac", json!({"cough": true, "age": 30}), "temperature", json!(38.0), json!(0)),
        ("centor_mcisaac", json!({"cough": true, "age": 30}), "temperature", json!(38.1), json!(1)),
        ("centor_mcisaac", json!({"age": 30}), "cough", json!(false), json!(1)),
        ("feverpain", json!({}), "cough_or_coryza", json!(true), json!(0)),
        ("feverpain", json!({"cough_or_coryza": true}), "purulence", json!(true), json!(1)),
        // Child-Pugh bilirubin 2 / 3, albumin 3.5 / 2.8, INR 1.7 / 2.3 (others at 1 point: base 5)
        ("child_pugh", json!({"albumin": 4, "inr": 1}), "bilirubin", json!(1.99), json!(5)),
        ("child_pugh", json!({"albumin": 4, "inr": 1}), "bilirubin", json!(2.0), json!(6)),
        ("child_pugh", json!({"albumin": 4, "inr": 1}), "bilirubin", json!(3.0), json!(6)),
        ("child_pugh", json!({"albumin": 4, "inr": 1}), "bilirubin", json!(3.01), json!(7)),
        ("child_pugh", json!({"albumin": 4, "inr": 1, "bilirubin_scale": "cholestatic"}), "bilirubin", json!(4.0), json!(6)),
        ("child_pugh", json!({"bilirubin": 1, "inr": 1}), "albumin", json!(3.51), json!(5)),
        ("child_pugh", json!({"bilirubin": 1, "inr": 1}), "albumin", json!(3.5), json!(6)),
        ("child_pugh", json!({"bilirubin": 1, "inr": 1}), "albumin", json!(2.8), json!(6)),
        ("child_pugh", json!({"bilirubin": 1, "inr": 1}), "albumin", json!(2.79), json!(7)),
        ("child_pugh", json!({"bilirubin": 1, "albumin": 4}), "inr", json!(1.69), json!(5)),
        ("child_pugh", json!({"bilirubin": 1, "albumin": 4}), "inr", json!(1.7), json!(6)),
        ("child_pugh", json!({"bilirubin": 1, "albumin": 4}), "inr", json!(2.3), json!(6)),
        ("child_pugh", json!({"bilirubin": 1, "albumin": 4}), "inr", json!(2.31), json!(7)),
        ("child_pugh", json!({"bilirubin": 1, "albumin": 4, "inr": 1}), "encephalopathy", json!("grade_3_4"), json!(7)),
        // Glasgow-Blatchford: BUN 18.2 / 22.4 / 28 / 70 mg/dL, Hb bands, SBP, pulse
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!(18.1), json!(0)),
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!(18.2), json!(2)),
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!({"value": 6.5, "unit": "mmol/L"}), json!(2)),
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!(22.4), json!(3)),
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!({"value": 10, "unit": "mmol/L"}), json!(4)),
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!(69.9), json!(4)),
        ("glasgow_blatchford", json!({"hemoglobin": 15, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "bun", json!({"value": 25, "unit": "mmol/L"}), json!(6)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(13.0), json!(0)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(12.9), json!(1)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(11.9), json!(3)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "male", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(9.9), json!(6)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "female", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(12.0), json!(0)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "female", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(11.9), json!(1)),
        ("glasgow_blatchford", json!({"bun": 10, "sex": "female", "systolic_bp": 120, "heart_rate": 80}), "hemoglobin", json!(9.9), json!(6)),
        ("glasgow_blatchford", json!({"bun": 10, "hemoglobin": 15, "sex": "male", "heart_rate": 80}), "systolic_bp", json!(110), json!(0)),
        ("glasgow_blatchford", json!({"bun": 10, "hemoglobin": 15, "sex": "male", "heart_rate": 80}), "systolic_bp", json!(109), json!(1)),
        ("glasgow_blatchford", json!({"bun": 10, "hemoglobin": 15, "sex": "male", "heart_rate": 80}), "systolic_bp", json!(99), json!(2)),
        ("glasgow_blatchford", json!({"bun": 10, "hemoglobin": 15, "sex": "male", "heart_rate": 80}), "systolic_bp", json!(89), json!(3)),
        ("glasgow_blatchford", json!({"bun": 10, "hemoglobin": 15, "sex": "male", "systolic_bp": 120}), "heart_rate", json!(99), json!(0)),
        ("glasgow_blatchford", json!({"bun": 10, "hemoglobin": 15, "sex": "male", "systolic_bp": 120}), "heart_rate", json!(100), json!(1)),
        // Charlson age bands and graded items
        ("charlson_comorbidity_index", json!({}), "age", json!(49.9), json!(0)),
        ("charlson_comorbidity_index", json!({}), "age", json!(50), json!(1)),
        ("charlson_comorbidity_index", json!({}), "age", json!(60), json!(2)),
        ("charlson_comorbidity_index", json!({}), "age", json!(70), json!(3)),
        ("charlson_comorbidity_index", json!({}), "age", json!(80), json!(4)),
        ("charlson_comorbidity_index", json!({"age": 40}), "liver_disease", json!("moderate_to_severe"), json!(3)),
        ("charlson_comorbidity_index", json!({"age": 40}), "diabetes", json!("end_organ_damage"), json!(2)),
        ("charlson_comorbidity_index", json!({"age": 40}), "solid_tumor", json!("metastatic"), json!(6)),
        ("charlson_comorbidity_index", json!({"age": 40}), "aids", json!(true), json!(6)),
        // PSI: age, women -10, vitals and labs
        ("psi_port", json!({"sex": "male"}), "age", json!(70), json!(70)),
        ("psi_port", json!({"sex": "female"}), "age", json!(70), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "respiratory_rate", json!(29), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "respiratory_rate", json!(30), json!(80)),
        ("psi_port", json!({"sex": "male", "age": 60}), "systolic_bp", json!(90), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "systolic_bp", json!(89), json!(80)),
        ("psi_port", json!({"sex": "male", "age": 60}), "temperature", json!(35.0), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "temperature", json!(34.9), json!(75)),
        ("psi_port", json!({"sex": "male", "age": 60}), "temperature", json!(39.9), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "temperature", json!(40.0), json!(75)),
        ("psi_port", json!({"sex": "male", "age": 60}), "heart_rate", json!(124), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "heart_rate", json!(125), json!(70)),
        ("psi_port", json!({"sex": "male", "age": 60}), "ph", json!(7.35), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "ph", json!(7.34), json!(90)),
        ("psi_port", json!({"sex": "male", "age": 60}), "bun", json!(29.9), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "bun", json!(30), json!(80)),
        ("psi_port", json!({"sex": "male", "age": 60}), "sodium", json!(130), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "sodium", json!(129), json!(80)),
        ("psi_port", json!({"sex": "male", "age": 60}), "glucose", json!(249), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "glucose", json!(250), json!(70)),
        ("psi_port", json!({"sex": "male", "age": 60}), "hematocrit", json!(30), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "hematocrit", json!(29.9), json!(70)),
        ("psi_port", json!({"sex": "male", "age": 60}), "pao2", json!(60), json!(60)),
        ("psi_port", json!({"sex": "male", "age": 60}), "pao2", json!(59.9), json!(70)),
        ("psi_port", json!({"sex": "male", "age": 60}), "oxygen_saturation", json!(89), json!(70)),
        // GCS components
        ("glasgow_coma_scale", json!({"verbal": "oriented", "motor": "obeys_commands"}), "eye", json!("to_pressure"), json!(13)),
        ("glasgow_coma_scale", json!({"eye": "spontaneous", "motor": "obeys_commands"}), "verbal", json!("incomprehensible_sounds"), json!(12)),
        ("glasgow_coma_scale", json!({"eye": "spontaneous", "verbal": "oriented"}), "motor", json!("extension"), json!(11)),
    ];
    for (name, base, key, v, want) in cases {
        let got = total(name, &base, key, v.clone());
        let ok = match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() < 1e-9,
            _ => got == want,
        };
        assert!(ok, "{name} {base} {key}={v}: got {got}, want {want}");
    }
}

/// The points one APACHE II / SOFA component gives, read from the steps.
fn component(name: &str, args: Value, label: &str) -> i64 {
    let r = go(name, args);
    let s = r
        .steps
        .iter()
        .find(|s| s.label.starts_with(label))
        .unwrap_or_else(|| panic!("{name}: no step {label}"));
    s.value.as_i64().unwrap()
}

#[test]
fn apache_ii_bands_at_every_threshold() {
    #[rustfmt::skip]
    type Bands = Vec<(&'static str, &'static str, Vec<(f64, i64)>)>;
    let bands: Bands = vec![
        (
            "temperature",
            "temperature",
            vec![
                (41.0, 4),
                (40.9, 3),
                (39.0, 3),
                (38.9, 1),
                (38.5, 1),
                (38.4, 0),
                (36.0, 0),
                (35.9, 1),
                (34.0, 1),
                (33.9, 2),
                (32.0, 2),
                (31.9, 3),
                (30.0, 3),
                (29.9, 4),
            ],
        ),
        (
            "mean_arterial_pressure",
            "mean arterial",
            vec![
                (160.0, 4),
                (159.0, 3),
                (130.0, 3),
                (129.0, 2),
                (110.0, 2),
                (109.0, 0),
                (70.0, 0),
                (69.0, 2),
                (50.0, 2),
                (49.0, 4),
            ],
        ),
        (
            "heart_rate",
            "heart rate",
            vec![
                (180.0, 4),
                (179.0, 3),
                (140.0, 3),
                (139.0, 2),
                (110.0, 2),
                (109.0, 0),
                (70.0, 0),
                (69.0, 2),
                (55.0, 2),
                (54.0, 3),
                (40.0, 3),
                (39.0, 4),
            ],
        ),
        (
            "respiratory_rate",
            "respiratory",
            vec![
                (50.0, 4),
                (49.0, 3),
                (35.0, 3),
                (34.0, 1),
                (25.0, 1),
                (24.0, 0),
                (12.0, 0),
                (11.0, 1),
                (10.0, 1),
                (9.0, 2),
                (6.0, 2),
                (5.0, 4),
            ],
        ),
        (
            "ph",
            "arterial pH",
            vec![
                (7.7, 4),
                (7.69, 3),
                (7.6, 3),
                (7.59, 1),
                (7.5, 1),
                (7.49, 0),
                (7.33, 0),
                (7.32, 2),
                (7.25, 2),
                (7.24, 3),
                (7.15, 3),
                (7.14, 4),
            ],
        ),
        (
            "sodium",
            "sodium",
            vec![
                (180.0, 4),
                (179.0, 3),
                (160.0, 3),
                (159.0, 2),
                (155.0, 2),
                (154.0, 1),
                (150.0, 1),
                (149.0, 0),
                (130.0, 0),
                (129.0, 2),
                (120.0, 2),
                (119.0, 3),
                (111.0, 3),
                (110.0, 4),
            ],
        ),
        (
            "potassium",
            "potassium",
            vec![
                (7.0, 4),
                (6.9, 3),
                (6.0, 3),
                (5.9, 1),
                (5.5, 1),
                (5.4, 0),
                (3.5, 0),
                (3.4, 1),
                (3.0, 1),
                (2.9, 2),
                (2.5, 2),
                (2.4, 4),
            ],
        ),
        (
            "creatinine",
            "creatinine",
            vec![(3.5, 4), (3.4, 3), (2.0, 3), (1.9, 2), (1.5, 2), (1.4, 0), (0.6, 0), (0.59, 2)],
        ),
        (
            "hematocrit",
            "haematocrit",
            vec![
                (60.0, 4),
                (59.9, 2),
                (50.0, 2),
                (49.9, 1),
                (46.0, 1),
                (45.9, 0),
                (30.0, 0),
                (29.9, 2),
                (20.0, 2),
                (19.9, 4),
            ],
        ),
        (
            "wbc",
            "white cell",
            vec![
                (40.0, 4),
                (39.9, 2),
                (20.0, 2),
                (19.9, 1),
                (15.0, 1),
                (14.9, 0),
                (3.0, 0),
                (2.9, 2),
                (1.0, 2),
                (0.9, 4),
            ],
        ),
        (
            "pao2",
            "oxygenation",
            vec![(70.1, 0), (70.0, 1), (61.0, 1), (60.9, 3), (55.0, 3), (54.9, 4)],
        ),
        (
            "age",
            "age",
            vec![
                (44.9, 0),
                (45.0, 2),
                (54.9, 2),
                (55.0, 3),
                (64.9, 3),
                (65.0, 5),
                (74.9, 5),
                (75.0, 6),
            ],
        ),
    ];
    for (key, label, pairs) in bands {
        for (v, want) in pairs {
            let mut args = json!({"age": 30});
            args[key] = json!(v);
            if key == "pao2" {
                args["fio2"] = json!(21);
            }
            assert_eq!(component("apache_ii", args, label), want, "APACHE II {key}={v}");
        }
    }
    // A-a gradient when FiO2 >= 50%
    for (g, want) in [(499.0, 3), (500.0, 4), (349.0, 2), (350.0, 3), (199.0, 0), (200.0, 2)] {
        assert_eq!(
            component("apache_ii", json!({"age": 30, "fio2": 60, "a_a_gradient": g}), "oxygenation"),
            want,
            "A-a {g}"
        );
    }
    assert!(err("apache_ii", json!({"age": 30, "fio2": 60, "pao2": 80})).contains("a_a_gradient"));
    // acute renal failure doubles creatinine points; chronic health by admission type
    assert_eq!(
        component(
            "apache_ii",
            json!({"age": 30, "creatinine": 2.5, "acute_renal_failure": true}),
            "creatinine"
        ),
        6
    );
    assert_eq!(
        component("apache_ii", json!({"age": 30, "chronic_organ_insufficiency": true}), "chronic"),
        5
    );
    assert_eq!(
        component(
            "apache_ii",
            json!({"age": 30, "chronic_organ_insufficiency": true, "admission": "elective_postoperative"}),
            "chronic"
        ),
        2
    );
    assert_eq!(component("apache_ii", json!({"age": 30, "gcs": 7}), "15 - GCS"), 8);
}

#[test]
fn sofa_bands_at_every_threshold() {
    let pf = |pao2: f64, vent: bool| {
        component(
            "sofa",
            json!({"pao2": pao2, "fio2": 100, "mechanical_ventilation": vent}),
            "respiration",
        )
    };
    assert_eq!(
        (pf(400.0, false), pf(399.0, false), pf(300.0, false), pf(299.0, false)),
        (0, 1, 1, 2)
    );
    assert_eq!(
        (pf(199.0, false), pf(199.0, true), pf(100.0, true), pf(99.0, true), pf(99.0, false)),
        (2, 3, 3, 4, 2)
    );
    for (p, want) in [
        (150.0, 0),
        (149.0, 1),
        (100.0, 1),
        (99.0, 2),
        (50.0, 2),
        (49.0, 3),
        (20.0, 3),
        (19.0, 4),
    ] {
        assert_eq!(component("sofa", json!({"platelets": p}), "coagulation"), want, "platelets {p}");
    }
    for (b, want) in [(1.19, 0), (1.2, 1), (1.99, 1), (2.0, 2), (5.99, 2), (6.0, 3), (11.99, 3), (12.0, 4)] {
        assert_eq!(component("sofa", json!({"bilirubin": b}), "liver"), want, "bilirubin {b}");
    }
    for (args, want) in [
        (json!({"mean_arterial_pressure": 70}), 0),
        (json!({"mean_arterial_pressure": 69}), 1),
        (json!({"dobutamine": 2}), 2),
        (json!({"dopamine": 5}), 2),
        (json!({"dopamine": 5.1}), 3),
        (json!({"norepinephrine": 0.1}), 3),
        (json!({"epinephrine": 0.11}), 4),
        (json!({"dopamine": 15}), 3),
        (json!({"dopamine": 15.1}), 4),
    ] {
        assert_eq!(component("sofa", args.clone(), "cardiovascular"), want, "{args}");
    }
    for (g, want) in [(15, 0), (14, 1), (13, 1), (12, 2), (10, 2), (9, 3), (6, 3), (5, 4)] {
        assert_eq!(component("sofa", json!({"gcs": g}), "central"), want, "gcs {g}");
    }
    for (args, want) in [
        (json!({"creatinine": 1.19}), 0),
        (json!({"creatinine": 1.2}), 1),
        (json!({"creatinine": 2.0}), 2),
        (json!({"creatinine": 3.5}), 3),
        (json!({"creatinine": 5.0}), 4),
        (json!({"urine_output": 499}), 3),
        (json!({"urine_output": 199}), 4),
        (json!({"creatinine": 1.0, "urine_output": 500}), 0),
    ] {
        assert_eq!(component("sofa", args.clone(), "renal"), want, "{args}");
    }
}

#[test]
fn equation_thresholds_and_bounds() {
    // MELD-Na: the sodium term applies only when MELD(i) > 11; sodium is clamped to 125-137,
    // creatinine to 1-4, and dialysis sets creatinine to 4.
    let meld =
        |cr: f64, bili: f64, inr: f64, na: f64| go("meld_na", json!({"creatinine": cr, "bilirubin": bili, "inr": inr, "sodium": na})).value;
    // raw MELD(i) with Cr 1.3, bili 1, INR 1.2: 0.957 ln1.3 + 1.12 ln1.2 + 0.643 = 1.0982 -> 11: no sodium term
    assert_eq!(meld(1.3, 1.0, 1.2, 125.0), json!(11));
    // Cr 1.4 -> 1.1698 -> 12 (> 11): 12 + 1.32*12 - 0.033*12*12 = 23.088 -> 23
    assert_eq!(meld(1.4, 1.0, 1.2, 125.0), json!(23));
    assert_eq!(meld(1.4, 1.0, 1.2, 110.0), meld(1.4, 1.0, 1.2, 125.0), "sodium clamped at 125");
    assert_eq!(meld(1.4, 1.0, 1.2, 150.0), meld(1.4, 1.0, 1.2, 137.0), "sodium clamped at 137");
    assert_eq!(meld(9.0, 2.0, 1.5, 130.0), meld(4.0, 2.0, 1.5, 130.0), "creatinine capped at 4");
    assert_eq!(
        meld(0.5, 0.4, 0.9, 137.0),
        meld(1.0, 1.0, 1.0, 137.0),
        "values below 1 floored at 1"
    );
    let dial = go(
        "meld_na",
        json!({"creatinine": 1.0, "bilirubin": 2.0, "inr": 1.5, "sodium": 130, "cvvhd_24h_past_week": true}),
    )
    .value;
    assert_eq!(dial, meld(4.0, 2.0, 1.5, 130.0));
    // Child-Pugh classes: 6 is A, 7 is B, 9 is B, 10 is C
    let cp =
        |bili: f64, alb: f64, inr: f64, asc: &str| go("child_pugh", json!({"bilirubin": bili, "albumin": alb, "inr": inr, "ascites": asc}));
    assert!(cp(2.5, 4.0, 1.0, "none").interpretation.unwrap().starts_with("class A"));
    assert!(cp(2.5, 3.0, 1.0, "none").interpretation.unwrap().starts_with("class B"));
    assert!(cp(2.5, 3.0, 2.0, "slight").interpretation.unwrap().starts_with("class B"));
    assert!(cp(3.5, 3.0, 2.0, "slight").interpretation.unwrap().starts_with("class C"));
    // PSI: class I needs age <= 50 with no comorbidity or exam finding; class bands at 70/90/130
    let psi = |args: Value| go("psi_port", args).interpretation.unwrap();
    assert!(psi(json!({"age": 50, "sex": "male"})).starts_with("class I:"));
    assert!(psi(json!({"age": 51, "sex": "male"})).starts_with("class II"));
    assert!(psi(json!({"age": 40, "sex": "male", "renal_disease": true})).starts_with("class II"));
    assert!(psi(json!({"age": 70, "sex": "male"})).starts_with("class II"));
    assert!(psi(json!({"age": 71, "sex": "male"})).starts_with("class III"));
    assert!(psi(json!({"age": 90, "sex": "male"})).starts_with("class III"));
    assert!(psi(json!({"age": 91, "sex": "male"})).starts_with("class IV"));
    assert!(psi(json!({"age": 100, "sex": "male", "nursing_home_resident": true, "heart_rate": 130})).starts_with("class IV"));
    assert!(
        psi(json!({"age": 100, "sex": "male", "nursing_home_resident": true, "heart_rate": 130, "pleural_effusion": true}))
            .starts_with("class IV"),
        "130 points"
    );
    assert!(
        psi(json!({"age": 101, "sex": "male", "nursing_home_resident": true, "heart_rate": 130, "pleural_effusion": true}))
            .starts_with("class V"),
        "131 points"
    );
    // free water deficit: total body water by age and sex (18 and 65)
    let tbw = |sex: &str, age: f64| {
        go("free_water_deficit", json!({"sex": sex, "age": age, "weight": 70, "sodium": 154})).steps[0]
            .value
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        (tbw("female", 17.9), tbw("female", 18.0), tbw("female", 64.9), tbw("female", 65.0)),
        (0.6, 0.5, 0.5, 0.45)
    );
    assert_eq!(
        (tbw("male", 17.9), tbw("male", 18.0), tbw("male", 64.9), tbw("male", 65.0)),
        (0.6, 0.6, 0.6, 0.5)
    );
    assert!(close(
        num("free_water_deficit", json!({"sex": "male", "age": 40, "weight": 70, "sodium": 154})),
        0.6 * 70.0 * 0.1,
        1e-12
    ));
    // maintenance fluids at 10 and 20 kg
    assert!(close(num("maintenance_fluids", json!({"weight": 9.99})), 39.96, 1e-9));
    assert!(close(num("maintenance_fluids", json!({"weight": 10})), 40.0, 1e-12));
    assert!(close(num("maintenance_fluids", json!({"weight": 20})), 60.0, 1e-12));
    assert!(close(num("maintenance_fluids", json!({"weight": 21})), 61.0, 1e-12));
    // KDIGO stage and BMI category edges
    let stage = |cr: f64| {
        go("ckd_epi_2021", json!({"sex": "male", "age": 60, "creatinine": cr}))
            .interpretation
            .unwrap()
    };
    // male 60: Cr 0.8 -> 101.4, 1.3 -> 62.9, 3.0 -> 23.1, 5.0 -> 12.5
    assert!(stage(0.8).starts_with("G1"), "{}", stage(0.8));
    assert!(stage(1.3).starts_with("G2"), "{}", stage(1.3));
    assert!(stage(3.0).starts_with("G4"), "{}", stage(3.0));
    assert!(stage(5.0).starts_with("G5"), "{}", stage(5.0));
    let bmi_cat = |w: f64| go("bmi", json!({"weight": w, "height": 100})).interpretation.unwrap();
    assert_eq!(bmi_cat(18.49), "underweight (< 18.5)");
    assert!(
        bmi_cat(18.5).starts_with("normal")
            && bmi_cat(25.0).starts_with("overweight")
            && bmi_cat(30.0).contains("class I ")
            && bmi_cat(40.0).contains("class III")
    );
    // FIB-4 cut-offs move to 2.0 at age 65
    let fib = |age: f64, plt: f64| {
        go("fib4", json!({"age": age, "ast": 40, "alt": 25, "platelets": plt}))
            .interpretation
            .unwrap()
    };
    // FIB-4 = age x 40 / (platelets x 5): age 40, 250 -> 1.28; age 64, 280 -> 1.83; age 65, 280 -> 1.86
    assert!(fib(40.0, 250.0).starts_with("< 1.45"), "{}", fib(40.0, 250.0));
    assert!(fib(64.0, 280.0).starts_with("1.45-3.25"), "{}", fib(64.0, 280.0));
    assert!(fib(65.0, 280.0).starts_with("< 2"), "{}", fib(65.0, 280.0));
    // Cockcroft-Gault BMI rule bands: underweight takes actual, normal the lesser of ideal and actual
    let cg = |w: f64| {
        go(
            "cockcroft_gault",
            json!({"sex": "male", "age": 40, "weight": w, "height": 180, "creatinine": 1, "weight_basis": "bmi_rule"}),
        )
    };
    let used = |r: &CalcResult| {
        r.steps
            .iter()
            .find(|s| s.label == "weight used (kg)")
            .unwrap()
            .value
            .as_f64()
            .unwrap()
    };
    assert!(close(used(&cg(59.0)), 59.0, 1e-12), "BMI 18.2: actual");
    let ibw: f64 = 50.0 + 2.3 * (180.0 / 2.54 - 60.0);
    assert!(close(used(&cg(80.0)), ibw.min(80.0), 1e-12), "BMI 24.7: lesser of ideal and actual");
    assert!(close(used(&cg(81.0)), ibw + 0.4 * (81.0 - ibw), 1e-12), "BMI 25.0: adjusted");
}

#[test]
fn centor_gives_the_age_point_only_from_3_to_14() {
    // McIsaac 1998: 3-14 +1, 15-44 0, >= 45 -1; below 3 the score is undefined: no point, a warning
    let score = |age: f64| {
        let r = run_named("centor_mcisaac", &json!({"age": age, "cough": true})).unwrap();
        (r.value.as_f64().unwrap(), r.warnings)
    };
    assert_eq!(score(2.0).0, 0.0);
    assert!(!score(2.0).1.is_empty());
    assert_eq!(score(3.0).0, 1.0);
    assert_eq!(score(14.0).0, 1.0);
    assert_eq!(score(15.0).0, 0.0);
    assert_eq!(score(44.0).0, 0.0);
    assert_eq!(score(45.0).0, -1.0);
}
