//! Lungs, infection and venous thromboembolism: Wells PE, PERC, Wells DVT, Caprini,
//! CURB-65, PSI/PORT, SIRS, qSOFA, Centor (McIsaac) and FeverPAIN.

use super::args::{AGE, SEX};
use super::units::{Analyte, Q};
use super::{Calculator, Category, Input, Kind, Need, Outcome, Tally, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[
    &WELLS_PE, &PERC, &WELLS_DVT, &CAPRINI, &CURB_65, &PSI, &SIRS, &QSOFA, &CENTOR, &FEVERPAIN,
];

/// Wells' criteria for PE.
pub static WELLS_PE: Calculator = Calculator {
    name: "wells_pe",
    title: "Wells' Criteria for Pulmonary Embolism",
    medcalc_id: Some(8),
    category: Category::Pulmonary,
    summary: "Pre-test probability of pulmonary embolism.",
    source: "Wells PS et al., Thromb Haemost 2000;83:416.",
    formula: "Clinical signs of DVT 3, PE the most likely diagnosis 3, heart rate > 100 1.5, immobilisation >= 3 days or surgery in the previous 4 weeks 1.5, previous PE/DVT 1.5, haemoptysis 1, malignancy 1 (0-12.5)",
    unit: "points",
    inputs: &[
        Input::finding(
            "dvt_signs",
            "Clinical signs and symptoms of DVT (leg swelling, pain on palpation of deep veins).",
        ),
        Input::finding("pe_most_likely", "PE is the most likely diagnosis, or equally likely."),
        Input::measured("heart_rate", Q::HeartRate, "Heart rate (> 100 scores 1.5)."),
        Input::finding(
            "immobilization_or_recent_surgery",
            "Immobilisation >= 3 days or surgery in the previous 4 weeks.",
        ),
        Input::finding("previous_pe_dvt", "Previously diagnosed PE or DVT."),
        Input::finding("hemoptysis", "Haemoptysis."),
        Input::finding("malignancy", "Malignancy with treatment within 6 months or palliative."),
    ],
    example: r#"{"heart_rate": 150, "dvt_signs": false, "pe_most_likely": false}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item("clinical signs of DVT", a.flag("dvt_signs")?, 3.0);
        t.item("PE most likely diagnosis", a.flag("pe_most_likely")?, 3.0);
        t.item("heart rate > 100", a.q_opt("heart_rate")?.is_some_and(|h| h > 100.0), 1.5);
        t.item("immobilisation or recent surgery", a.flag("immobilization_or_recent_surgery")?, 1.5);
        t.item("previous PE or DVT", a.flag("previous_pe_dvt")?, 1.5);
        t.item("haemoptysis", a.flag("hemoptysis")?, 1.0);
        t.item("malignancy", a.flag("malignancy")?, 1.0);
        let s = t.total();
        let three = band(
            s,
            &[(2.0, "low probability (< 2)"), (6.0 + 1e-9, "moderate probability (2-6)")],
            "high probability (> 6)",
        );
        let two = if s > 4.0 { "PE likely (> 4)" } else { "PE unlikely (<= 4)" };
        Ok(Outcome::num(s).steps(t.into_steps()).interpret(format!("{three}; two-tier: {two}")))
    },
};

/// PERC rule.
pub static PERC: Calculator = Calculator {
    name: "perc",
    title: "PERC Rule for Pulmonary Embolism",
    medcalc_id: Some(48),
    category: Category::Pulmonary,
    summary: "Pulmonary Embolism Rule-out Criteria: in a low-pretest-probability patient, zero criteria rules out PE without testing.",
    source: "Kline JA et al., J Thromb Haemost 2004;2:1247.",
    formula: "Count of: age >= 50, heart rate >= 100, SaO2 < 95%, unilateral leg swelling, haemoptysis, surgery or trauma within 4 weeks, prior PE or DVT, hormone use (0-8)",
    unit: "criteria",
    inputs: &[
        AGE,
        Input::measured("heart_rate", Q::HeartRate, "Heart rate."),
        Input::measured("oxygen_saturation", Q::Percent, "Oxygen saturation on room air."),
        Input::finding("unilateral_leg_swelling", "Unilateral leg swelling."),
        Input::finding("hemoptysis", "Haemoptysis."),
        Input::finding(
            "recent_surgery_or_trauma",
            "Surgery or trauma requiring hospitalisation within 4 weeks.",
        ),
        Input::finding("prior_pe_or_dvt", "Prior PE or DVT."),
        Input::finding("hormone_use", "Oral contraceptives, hormone replacement or oestrogen use."),
    ],
    example: r#"{"age": 64, "heart_rate": 72, "oxygen_saturation": 100, "prior_pe_or_dvt": true}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item("age >= 50", a.q("age")? >= 50.0, 1.0);
        t.item("heart rate >= 100", a.q_opt("heart_rate")?.is_some_and(|h| h >= 100.0), 1.0);
        t.item("SaO2 < 95%", a.q_opt("oxygen_saturation")?.is_some_and(|s| s < 95.0), 1.0);
        t.item("unilateral leg swelling", a.flag("unilateral_leg_swelling")?, 1.0);
        t.item("haemoptysis", a.flag("hemoptysis")?, 1.0);
        t.item("recent surgery or trauma", a.flag("recent_surgery_or_trauma")?, 1.0);
        t.item("prior PE or DVT", a.flag("prior_pe_or_dvt")?, 1.0);
        t.item("hormone use", a.flag("hormone_use")?, 1.0);
        let s = t.total();
        let interp = if s == 0.0 {
            "PERC negative: with low pretest probability, PE is ruled out without further testing"
        } else {
            "PERC positive: PE cannot be ruled out by PERC; consider D-dimer or imaging"
        };
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(interp))
    },
};

/// Wells' criteria for DVT.
pub static WELLS_DVT: Calculator = Calculator {
    name: "wells_dvt",
    title: "Wells' Criteria for DVT",
    medcalc_id: Some(16),
    category: Category::Pulmonary,
    summary: "Pre-test probability of deep vein thrombosis (modified Wells, 2003).",
    source: "Wells PS et al., N Engl J Med 2003;349:1227.",
    formula: "1 point each: active cancer, bedridden >= 3 days or major surgery within 12 weeks (one item), calf swelling > 3 cm, collateral superficial veins, entire leg swollen, localised tenderness along deep veins, pitting oedema in the symptomatic leg, paralysis/paresis/recent cast, previously documented DVT; alternative diagnosis as likely -2 (-2 to 9)",
    unit: "points",
    inputs: &[
        Input::finding("active_cancer", "Active cancer (treatment within 6 months or palliative)."),
        Input::finding("bedridden_3_days", "Recently bedridden 3 days or more."),
        Input::finding(
            "major_surgery_12_weeks",
            "Major surgery within 12 weeks requiring general or regional anaesthesia.",
        ),
        Input::finding("calf_swelling_3cm", "Calf swelling > 3 cm compared with the other leg."),
        Input::finding("collateral_superficial_veins", "Collateral (non-varicose) superficial veins."),
        Input::finding("entire_leg_swollen", "Entire leg swollen."),
        Input::finding("localized_tenderness", "Localised tenderness along the deep venous system."),
        Input::finding("pitting_edema", "Pitting oedema confined to the symptomatic leg."),
        Input::finding(
            "paralysis_or_cast",
            "Paralysis, paresis or recent plaster immobilisation of the leg.",
        ),
        Input::finding("previous_dvt", "Previously documented DVT."),
        Input::finding(
            "alternative_diagnosis_likely",
            "An alternative diagnosis is at least as likely as DVT (-2).",
        ),
    ],
    example: r#"{"active_cancer": true, "major_surgery_12_weeks": true, "localized_tenderness": true, "collateral_superficial_veins": true}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item("active cancer", a.flag("active_cancer")?, 1.0);
        let bed = a.flag("bedridden_3_days")?;
        let surg = a.flag("major_surgery_12_weeks")?;
        t.item("bedridden >= 3 days or major surgery within 12 weeks", bed || surg, 1.0);
        t.item("calf swelling > 3 cm", a.flag("calf_swelling_3cm")?, 1.0);
        t.item("collateral superficial veins", a.flag("collateral_superficial_veins")?, 1.0);
        t.item("entire leg swollen", a.flag("entire_leg_swollen")?, 1.0);
        t.item("localised tenderness", a.flag("localized_tenderness")?, 1.0);
        t.item("pitting oedema", a.flag("pitting_edema")?, 1.0);
        t.item("paralysis, paresis or cast", a.flag("paralysis_or_cast")?, 1.0);
        t.item("previous DVT", a.flag("previous_dvt")?, 1.0);
        t.item("alternative diagnosis as likely", a.flag("alternative_diagnosis_likely")?, -2.0);
        let s = t.total();
        let two = if s >= 2.0 { "DVT likely (>= 2)" } else { "DVT unlikely (< 2)" };
        let three = band(
            s,
            &[(1.0, "low probability (<= 0)"), (3.0, "moderate probability (1-2)")],
            "high probability (>= 3)",
        );
        Ok(Outcome::points(s as i64)
            .steps(t.into_steps())
            .interpret(format!("{two}; three-tier: {three}")))
    },
};

const SURGERY: &[&str] = &[
    "none",
    "minor",
    "major_over_45_min",
    "laparoscopic_over_45_min",
    "arthroscopic",
    "elective_major_lower_extremity_arthroplasty",
];
const MOBILITY: &[&str] = &["ambulatory", "bed_rest", "confined_to_bed_over_72h"];

/// Caprini 2005.
pub static CAPRINI: Calculator = Calculator {
    name: "caprini",
    title: "Caprini Score for Venous Thromboembolism (2005)",
    medcalc_id: Some(36),
    category: Category::Pulmonary,
    summary: "Venous thromboembolism risk in surgical patients, to choose prophylaxis.",
    source: "Caprini JA, Dis Mon 2005;51:70. Risk bands: Bahl V et al., Ann Surg 2010;251:344; Gould MK et al., Chest 2012;141:e227S.",
    formula: "Age 41-60 1, 61-74 2, >= 75 3; surgery minor 1, major > 45 min / laparoscopic > 45 min / arthroscopic 2, elective lower-extremity arthroplasty 5; recent (< 1 month) major surgery, CHF, sepsis, pneumonia 1 each, plaster cast 2, hip/pelvis/leg fracture, stroke, multiple trauma, spinal cord injury 5 each; varicose veins 1, swollen legs 1, central venous access 2, history of DVT/PE 3, family history 3, each thrombophilia 3; bed rest 1, confined > 72 h 2; IBD 1, BMI > 25 1, acute MI 1, COPD 1, malignancy 2; women: pregnancy/postpartum, recurrent abortion/stillbirth, hormones 1 each",
    unit: "points",
    inputs: &[
        AGE,
        Input::choice("sex", &["female", "male"], "Sex (female enables the pregnancy and hormone items).").optional(),
        Input::graded("surgery", SURGERY, "Type of surgery."),
        Input::finding("major_surgery_past_month", "Major surgery within the past month."),
        Input::finding("chf_past_month", "Congestive heart failure within the past month."),
        Input::finding("sepsis_past_month", "Sepsis within the past month."),
        Input::finding("pneumonia_past_month", "Pneumonia within the past month."),
        Input::finding("plaster_cast_past_month", "Immobilising plaster cast within the past month."),
        Input::finding("hip_pelvis_leg_fracture", "Hip, pelvis or leg fracture within the past month."),
        Input::finding("stroke_past_month", "Stroke within the past month."),
        Input::finding("multiple_trauma", "Multiple trauma within the past month."),
        Input::finding(
            "spinal_cord_injury",
            "Acute spinal cord injury with paralysis within the past month.",
        ),
        Input::finding("varicose_veins", "Varicose veins."),
        Input::finding("swollen_legs", "Current swollen legs."),
        Input::finding("central_venous_access", "Current central venous access."),
        Input::finding("history_dvt_pe", "History of DVT or PE."),
        Input::finding("family_history_thrombosis", "Family history of thrombosis."),
        Input::finding("factor_v_leiden", "Positive factor V Leiden."),
        Input::finding("prothrombin_20210a", "Positive prothrombin 20210A."),
        Input::finding("elevated_homocysteine", "Elevated serum homocysteine."),
        Input::finding("lupus_anticoagulant", "Positive lupus anticoagulant."),
        Input::finding("anticardiolipin_antibody", "Elevated anticardiolipin antibody."),
        Input::finding("heparin_induced_thrombocytopenia", "Heparin-induced thrombocytopenia."),
        Input::finding("other_thrombophilia", "Other congenital or acquired thrombophilia."),
        Input::graded("mobility", MOBILITY, "Mobility."),
        Input::finding("inflammatory_bowel_disease", "History of inflammatory bowel disease."),
        Input::measured("bmi", Q::Bmi, "Body mass index (> 25 scores 1)."),
        Input::finding("acute_mi", "Acute myocardial infarction."),
        Input::finding("copd", "Chronic obstructive pulmonary disease."),
        Input::finding("malignancy", "Present or previous malignancy."),
        Input::finding("pregnant_or_postpartum", "Pregnant or postpartum (women)."),
        Input::finding(
            "recurrent_abortion_or_stillbirth",
            "History of unexplained stillbirth or recurrent spontaneous abortion (women).",
        ),
        Input::finding("oral_contraceptive_or_hrt", "Oral contraceptives or hormone replacement (women)."),
    ],
    example: r#"{"age": 67, "sex": "male", "pneumonia_past_month": true, "hip_pelvis_leg_fracture": true, "varicose_veins": true, "family_history_thrombosis": true, "bmi": 21, "copd": true, "mobility": "confined_to_bed_over_72h"}"#,
    run: |a| {
        let age = a.q("age")?;
        let female = a.choice_opt("sex")? == Some("female");
        let mut t = Tally::new();
        t.add(
            "age",
            if age >= 75.0 {
                3.0
            } else if age >= 61.0 {
                2.0
            } else if age >= 41.0 {
                1.0
            } else {
                0.0
            },
        );
        let surgery = a.choice("surgery")?;
        t.add(
            "surgery",
            match surgery {
                "none" => 0.0,
                "minor" => 1.0,
                "elective_major_lower_extremity_arthroplasty" => 5.0,
                _ => 2.0,
            },
        );
        for (k, p) in [
            ("major_surgery_past_month", 1.0),
            ("chf_past_month", 1.0),
            ("sepsis_past_month", 1.0),
            ("pneumonia_past_month", 1.0),
            ("plaster_cast_past_month", 2.0),
            ("hip_pelvis_leg_fracture", 5.0),
            ("stroke_past_month", 5.0),
            ("multiple_trauma", 5.0),
            ("spinal_cord_injury", 5.0),
            ("varicose_veins", 1.0),
            ("swollen_legs", 1.0),
            ("central_venous_access", 2.0),
            ("history_dvt_pe", 3.0),
            ("family_history_thrombosis", 3.0),
            ("factor_v_leiden", 3.0),
            ("prothrombin_20210a", 3.0),
            ("elevated_homocysteine", 3.0),
            ("lupus_anticoagulant", 3.0),
            ("anticardiolipin_antibody", 3.0),
            ("heparin_induced_thrombocytopenia", 3.0),
            ("other_thrombophilia", 3.0),
            ("inflammatory_bowel_disease", 1.0),
            ("acute_mi", 1.0),
            ("copd", 1.0),
            ("malignancy", 2.0),
        ] {
            let met = a.flag(k)?;
            t.item(k, met, p);
        }
        let mobility = a.choice("mobility")?;
        t.add(
            "mobility",
            match mobility {
                "bed_rest" => 1.0,
                "confined_to_bed_over_72h" => 2.0,
                _ => 0.0,
            },
        );
        t.item("BMI > 25", a.q_opt("bmi")?.is_some_and(|b| b > 25.0), 1.0);
        let mut out = Outcome::points(0);
        for k in [
            "pregnant_or_postpartum",
            "recurrent_abortion_or_stillbirth",
            "oral_contraceptive_or_hrt",
        ] {
            let met = a.flag(k)?;
            if met && !female {
                out = out.warn(format!("{k} counts only for women (sex is not \"female\"); not scored"));
            }
            t.item(k, met && female, 1.0);
        }
        let s = t.total();
        let interp = band(
            s,
            &[
                (1.0, "very low risk (0): VTE about 0.5%"),
                (3.0, "low risk (1-2): VTE about 1.5%"),
                (5.0, "moderate risk (3-4): VTE about 3%"),
            ],
            "high risk (>= 5): VTE about 6%",
        );
        out.value = serde_json::json!(s as i64);
        Ok(out.steps(t.into_steps()).interpret(interp))
    },
};

/// CURB-65.
pub static CURB_65: Calculator = Calculator {
    name: "curb_65",
    title: "CURB-65 Score for Pneumonia Severity",
    medcalc_id: Some(45),
    category: Category::Pulmonary,
    summary: "Severity of community-acquired pneumonia and where to treat it.",
    source: "Lim WS et al., Thorax 2003;58:377.",
    formula: "1 point each: confusion, urea > 7 mmol/L (BUN > 19.6 mg/dL), respiratory rate >= 30, SBP < 90 or DBP <= 60, age >= 65 (0-5)",
    unit: "points",
    inputs: &[
        Input::finding("confusion", "New confusion."),
        Input::measured("bun", Q::Lab(Analyte::Bun), "Blood urea nitrogen, or urea in mmol/L."),
        Input::measured("respiratory_rate", Q::RespRate, "Respiratory rate."),
        Input::measured("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::measured("diastolic_bp", Q::Pressure, "Diastolic blood pressure."),
        AGE,
    ],
    example: r#"{"confusion": true, "bun": {"value": 40, "unit": "mg/dL"}, "respiratory_rate": 23, "systolic_bp": 105, "diastolic_bp": 52, "age": 77}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item("confusion", a.flag("confusion")?, 1.0);
        let urea = a.q_opt("bun")?.map(|b| b / super::units::BUN_MGDL_PER_MMOL);
        t.item("urea > 7 mmol/L", urea.is_some_and(|u| u > 7.0), 1.0);
        t.item(
            "respiratory rate >= 30",
            a.q_opt("respiratory_rate")?.is_some_and(|r| r >= 30.0),
            1.0,
        );
        let sbp = a.q_opt("systolic_bp")?;
        let dbp = a.q_opt("diastolic_bp")?;
        t.item(
            "SBP < 90 or DBP <= 60",
            sbp.is_some_and(|s| s < 90.0) || dbp.is_some_and(|d| d <= 60.0),
            1.0,
        );
        t.item("age >= 65", a.q("age")? >= 65.0, 1.0);
        let s = t.total();
        let interp = band(
            s,
            &[
                (2.0, "low risk (0-1): 30-day mortality about 1.5%; consider home treatment"),
                (3.0, "intermediate risk (2): mortality about 9.2%; consider short admission"),
            ],
            "high risk (3-5): mortality about 22%; hospitalise, consider ICU for 4-5",
        );
        let mut out = Outcome::points(s as i64).steps(t.into_steps());
        if let Some(u) = urea {
            out = out.step("urea (mmol/L)", u);
        }
        Ok(out.interpret(interp))
    },
};

/// PSI / PORT.
pub static PSI: Calculator = Calculator {
    name: "psi_port",
    title: "PSI/PORT Score: Pneumonia Severity Index",
    medcalc_id: Some(29),
    category: Category::Pulmonary,
    summary: "Pneumonia Severity Index (risk class I-V) for community-acquired pneumonia.",
    source: "Fine MJ et al., N Engl J Med 1997;336:243.",
    formula: "Age (women: age - 10); nursing home +10; neoplastic +30, liver +20, CHF +10, cerebrovascular +10, renal +10; altered mental status +20, RR >= 30 +20, SBP < 90 +20, temperature < 35 or >= 40 C +15, pulse >= 125 +10; pH < 7.35 +30, BUN >= 30 mg/dL +20, Na < 130 +20, glucose >= 250 mg/dL +10, haematocrit < 30% +10, PaO2 < 60 mm Hg or SaO2 < 90% +10, pleural effusion +10. Class I: age <= 50 with no comorbidity or exam finding; II <= 70, III 71-90, IV 91-130, V > 130.",
    unit: "points",
    inputs: &[
        AGE,
        SEX,
        Input::finding("nursing_home_resident", "Nursing home resident."),
        Input::finding("neoplastic_disease", "Neoplastic disease."),
        Input::finding("liver_disease", "Liver disease history."),
        Input::finding("heart_failure", "Congestive heart failure history."),
        Input::finding("cerebrovascular_disease", "Cerebrovascular disease history."),
        Input::finding("renal_disease", "Renal disease history."),
        Input::finding("altered_mental_status", "Altered mental status."),
        Input::measured("respiratory_rate", Q::RespRate, "Respiratory rate."),
        Input::measured("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::measured("temperature", Q::Temperature, "Temperature."),
        Input::measured("heart_rate", Q::HeartRate, "Pulse."),
        Input {
            name: "ph",
            kind: Kind::Number(6.5, 8.0),
            need: Need::Finding,
            doc: "Arterial pH.",
        },
        Input::measured("bun", Q::Lab(Analyte::Bun), "Blood urea nitrogen."),
        Input::measured("sodium", Q::Lab(Analyte::Sodium), "Serum sodium."),
        Input::measured("glucose", Q::Lab(Analyte::Glucose), "Glucose."),
        Input::measured("hematocrit", Q::Percent, "Haematocrit."),
        Input::measured("pao2", Q::Pressure, "Arterial partial pressure of oxygen."),
        Input::measured("oxygen_saturation", Q::Percent, "Oxygen saturation (used when PaO2 is not given)."),
        Input::finding("pleural_effusion", "Pleural effusion on imaging."),
    ],
    example: r#"{"age": 67, "sex": "female", "nursing_home_resident": true, "renal_disease": true, "temperature": 37.1, "heart_rate": 90, "ph": 7.37, "bun": 21}"#,
    run: |a| {
        let age = a.q("age")?;
        let female = a.choice("sex")? == "female";
        let mut t = Tally::new();
        t.add(
            if female { "age (women: age - 10)" } else { "age" },
            if female { age.floor() - 10.0 } else { age.floor() },
        );
        t.item("nursing home resident", a.flag("nursing_home_resident")?, 10.0);
        let mut comorbid = false;
        for (k, label, p) in [
            ("neoplastic_disease", "neoplastic disease", 30.0),
            ("liver_disease", "liver disease", 20.0),
            ("heart_failure", "heart failure", 10.0),
            ("cerebrovascular_disease", "cerebrovascular disease", 10.0),
            ("renal_disease", "renal disease", 10.0),
        ] {
            let met = a.flag(k)?;
            comorbid |= met;
            t.item(label, met, p);
        }
        let ams = a.flag("altered_mental_status")?;
        let rr = a.q_opt("respiratory_rate")?.is_some_and(|r| r >= 30.0);
        let sbp = a.q_opt("systolic_bp")?.is_some_and(|s| s < 90.0);
        let temp = a.q_opt("temperature")?.is_some_and(|c| !(35.0..40.0).contains(&c));
        let pulse = a.q_opt("heart_rate")?.is_some_and(|h| h >= 125.0);
        t.item("altered mental status", ams, 20.0);
        t.item("respiratory rate >= 30", rr, 20.0);
        t.item("systolic BP < 90", sbp, 20.0);
        t.item("temperature < 35 or >= 40 C", temp, 15.0);
        t.item("pulse >= 125", pulse, 10.0);
        let exam = ams || rr || sbp || temp || pulse;
        t.item("pH < 7.35", a.number_opt("ph")?.is_some_and(|p| p < 7.35), 30.0);
        t.item("BUN >= 30 mg/dL", a.q_opt("bun")?.is_some_and(|b| b >= 30.0), 20.0);
        t.item("sodium < 130", a.q_opt("sodium")?.is_some_and(|n| n < 130.0), 20.0);
        t.item("glucose >= 250 mg/dL", a.q_opt("glucose")?.is_some_and(|g| g >= 250.0), 10.0);
        t.item("haematocrit < 30%", a.q_opt("hematocrit")?.is_some_and(|h| h < 30.0), 10.0);
        let pao2 = a.q_opt("pao2")?;
        let sat = a.q_opt("oxygen_saturation")?;
        let hypox = match pao2 {
            Some(p) => p < 60.0,
            None => sat.is_some_and(|s| s < 90.0),
        };
        t.item("PaO2 < 60 mm Hg (or SaO2 < 90%)", hypox, 10.0);
        t.item("pleural effusion", a.flag("pleural_effusion")?, 10.0);
        let s = t.total();
        let class = if age <= 50.0 && !comorbid && !exam {
            "class I: mortality 0.1%; outpatient care"
        } else if s <= 70.0 {
            "class II (<= 70): mortality 0.6%; outpatient care"
        } else if s <= 90.0 {
            "class III (71-90): mortality 2.8%; outpatient or brief observation"
        } else if s <= 130.0 {
            "class IV (91-130): mortality 8.2%; inpatient"
        } else {
            "class V (> 130): mortality 29.2%; inpatient, consider ICU"
        };
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(class))
    },
};

/// SIRS.
pub static SIRS: Calculator = Calculator {
    name: "sirs",
    title: "SIRS Criteria",
    medcalc_id: Some(51),
    category: Category::Pulmonary,
    summary: "Systemic inflammatory response syndrome criteria met (2 or more = SIRS).",
    source: "Bone RC et al., ACCP/SCCM Consensus Conference, Chest 1992;101:1644.",
    formula: "Count of: temperature > 38 or < 36 C; heart rate > 90; respiratory rate > 20 or PaCO2 < 32 mm Hg; WBC > 12 or < 4 x10^9/L or bands > 10% (0-4)",
    unit: "criteria",
    inputs: &[
        Input::measured("temperature", Q::Temperature, "Temperature."),
        Input::measured("heart_rate", Q::HeartRate, "Heart rate."),
        Input::measured("respiratory_rate", Q::RespRate, "Respiratory rate."),
        Input::measured("paco2", Q::Pressure, "Arterial PaCO2."),
        Input::measured("wbc", Q::Lab(Analyte::Wbc), "White blood cell count."),
        Input::measured("bands", Q::Percent, "Immature neutrophils (bands), %."),
    ],
    example: r#"{"temperature": {"value": 103, "unit": "°F"}, "heart_rate": 120, "respiratory_rate": 32, "paco2": 41, "wbc": {"value": 33000, "unit": "/µL"}}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item(
            "temperature > 38 or < 36 C",
            a.q_opt("temperature")?.is_some_and(|c| !(36.0..=38.0).contains(&c)),
            1.0,
        );
        t.item("heart rate > 90", a.q_opt("heart_rate")?.is_some_and(|h| h > 90.0), 1.0);
        let rr = a.q_opt("respiratory_rate")?.is_some_and(|r| r > 20.0);
        let co2 = a.q_opt("paco2")?.is_some_and(|p| p < 32.0);
        t.item("respiratory rate > 20 or PaCO2 < 32", rr || co2, 1.0);
        let wbc = a.q_opt("wbc")?.is_some_and(|w| !(4.0..=12.0).contains(&w));
        let bands = a.q_opt("bands")?.is_some_and(|b| b > 10.0);
        t.item("WBC > 12 or < 4 x10^9/L or bands > 10%", wbc || bands, 1.0);
        let s = t.total();
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(if s >= 2.0 {
            "SIRS criteria met (>= 2)"
        } else {
            "SIRS criteria not met (< 2)"
        }))
    },
};

/// qSOFA.
pub static QSOFA: Calculator = Calculator {
    name: "qsofa",
    title: "qSOFA (quick SOFA)",
    medcalc_id: None,
    category: Category::Pulmonary,
    summary: "Bedside prompt for patients with suspected infection at risk of a poor outcome (Sepsis-3).",
    source: "Seymour CW et al., JAMA 2016;315:762; Singer M et al., JAMA 2016;315:801.",
    formula: "1 point each: respiratory rate >= 22, altered mentation (GCS < 15), systolic BP <= 100 (0-3)",
    unit: "points",
    inputs: &[
        Input::measured("respiratory_rate", Q::RespRate, "Respiratory rate."),
        Input::finding("altered_mentation", "Altered mentation (GCS < 15)."),
        Input::measured("systolic_bp", Q::Pressure, "Systolic blood pressure."),
    ],
    example: r#"{"respiratory_rate": 24, "altered_mentation": false, "systolic_bp": 98}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item(
            "respiratory rate >= 22",
            a.q_opt("respiratory_rate")?.is_some_and(|r| r >= 22.0),
            1.0,
        );
        t.item("altered mentation", a.flag("altered_mentation")?, 1.0);
        t.item("systolic BP <= 100", a.q_opt("systolic_bp")?.is_some_and(|s| s <= 100.0), 1.0);
        let s = t.total();
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(if s >= 2.0 {
            "positive (>= 2): higher risk of death or prolonged ICU stay; assess for organ dysfunction (full SOFA)"
        } else {
            "negative (< 2): keep monitoring if infection is suspected"
        }))
    },
};

/// Centor / McIsaac.
pub static CENTOR: Calculator = Calculator {
    name: "centor_mcisaac",
    title: "Centor Score (Modified/McIsaac) for Strep Pharyngitis",
    medcalc_id: Some(20),
    category: Category::Pulmonary,
    summary: "Likelihood of group A streptococcal pharyngitis, to decide on testing or antibiotics. An omitted cough means no cough (+1).",
    source: "Centor RM et al., Med Decis Making 1981;1:239. McIsaac WJ et al., CMAJ 1998;158:75 and JAMA 2004;291:1587.",
    formula: "Tonsillar exudate or swelling 1, tender/swollen anterior cervical nodes 1, temperature > 38 C 1, absence of cough 1, age 3-14 +1, 15-44 0, >= 45 -1 (-1 to 5)",
    unit: "points",
    inputs: &[
        AGE,
        Input::finding("tonsillar_exudate_or_swelling", "Exudate or swelling on the tonsils."),
        Input::finding("tender_anterior_nodes", "Tender or swollen anterior cervical lymph nodes."),
        Input::measured("temperature", Q::Temperature, "Temperature."),
        Input::finding("cough", "Cough present (absence of cough scores 1)."),
    ],
    example: r#"{"age": 17, "temperature": {"value": 40, "unit": "°C"}}"#,
    run: |a| {
        let age = a.q("age")?;
        let mut t = Tally::new();
        t.add(
            "age (3-14: +1, 15-44: 0, >= 45: -1)",
            // McIsaac 1998: +1 for ages 3-14 only; below 3 the score is undefined (scored 0, warned)
            if age < 3.0 {
                0.0
            } else if age < 15.0 {
                1.0
            } else if age < 45.0 {
                0.0
            } else {
                -1.0
            },
        );
        t.item("tonsillar exudate or swelling", a.flag("tonsillar_exudate_or_swelling")?, 1.0);
        t.item("tender anterior nodes", a.flag("tender_anterior_nodes")?, 1.0);
        t.item("temperature > 38 C", a.q_opt("temperature")?.is_some_and(|c| c > 38.0), 1.0);
        t.item("absence of cough", !a.flag("cough")?, 1.0);
        let s = t.total();
        let interp = band(
            s,
            &[
                (1.0, "<= 0: strep risk 1-2.5%; no testing or antibiotics"),
                (2.0, "1: strep risk 5-10%; no testing or antibiotics"),
                (3.0, "2: strep risk 11-17%; test, treat if positive"),
                (4.0, "3: strep risk 28-35%; test, treat if positive"),
            ],
            ">= 4: strep risk 51-53%; test, or treat empirically",
        );
        let mut out = Outcome::points(s as i64).steps(t.into_steps()).interpret(interp);
        if age < 3.0 {
            out = out.warn("the McIsaac score was validated from age 3; no age point is given below 3");
        }
        Ok(out)
    },
};

/// FeverPAIN.
pub static FEVERPAIN: Calculator = Calculator {
    name: "feverpain",
    title: "FeverPAIN Score for Strep Pharyngitis",
    medcalc_id: Some(33),
    category: Category::Pulmonary,
    summary: "Likelihood of streptococcal throat infection in primary care (NICE). An omitted cough/coryza means none (+1).",
    source: "Little P et al., BMJ 2013;347:f5806 and BMJ 2013;347:f6867.",
    formula: "1 point each: Fever in the past 24 h, Purulence, Attend rapidly (<= 3 days), severely Inflamed tonsils, No cough or coryza (0-5)",
    unit: "points",
    inputs: &[
        Input::finding("fever_past_24h", "Fever in the past 24 hours."),
        Input::finding("purulence", "Pharyngeal or tonsillar exudate."),
        Input::finding("rapid_attendance", "Symptom onset 3 days or less before attending."),
        Input::finding("severely_inflamed_tonsils", "Severely inflamed tonsils."),
        Input::finding("cough_or_coryza", "Cough or coryza present (their absence scores 1)."),
    ],
    example: r#"{"fever_past_24h": true, "rapid_attendance": false, "cough_or_coryza": true}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item("fever in past 24 h", a.flag("fever_past_24h")?, 1.0);
        t.item("purulence", a.flag("purulence")?, 1.0);
        t.item("attend rapidly (<= 3 days)", a.flag("rapid_attendance")?, 1.0);
        t.item("severely inflamed tonsils", a.flag("severely_inflamed_tonsils")?, 1.0);
        t.item("no cough or coryza", !a.flag("cough_or_coryza")?, 1.0);
        let s = t.total();
        let interp = band(
            s,
            &[
                (2.0, "0-1: strep 13-18%; no antibiotic"),
                (4.0, "2-3: strep 34-40%; consider a delayed antibiotic"),
            ],
            "4-5: strep 62-65%; immediate antibiotic if severe, or delayed",
        );
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(interp))
    },
};
