//! Critical care and severity scores: Glasgow Coma Scale, APACHE II, SOFA,
//! Glasgow-Blatchford and the Charlson Comorbidity Index.

use super::args::{AGE, SEX};
use super::units::{Analyte, Q};
use super::{Args, CalcError, Calculator, Category, Input, Kind, Need, Outcome, Tally, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[&GCS, &APACHE_II, &SOFA, &GLASGOW_BLATCHFORD, &CHARLSON];

/// Points for `v` from descending thresholds: the first `(threshold, points)` with `v >= threshold`.
fn desc(v: f64, steps: &[(f64, f64)], otherwise: f64) -> f64 {
    steps.iter().find(|(t, _)| v >= *t).map(|(_, p)| *p).unwrap_or(otherwise)
}

const EYE: &[&str] = &["spontaneous", "to_sound", "to_pressure", "none"];
const VERBAL: &[&str] = &[
    "oriented",
    "confused",
    "inappropriate_words",
    "incomprehensible_sounds",
    "none",
    "not_testable",
];
const MOTOR: &[&str] = &[
    "obeys_commands",
    "localizes_pain",
    "withdraws_from_pain",
    "abnormal_flexion",
    "extension",
    "none",
];

/// Glasgow Coma Scale.
pub static GCS: Calculator = Calculator {
    name: "glasgow_coma_scale",
    title: "Glasgow Coma Scale (GCS)",
    medcalc_id: Some(21),
    category: Category::Critical,
    summary: "Level of consciousness from eye, verbal and motor responses (3-15). A verbal response that cannot be tested (intubated) has no numeric total.",
    source: "Teasdale G, Jennett B, Lancet 1974;2:81; Teasdale G et al., Lancet Neurol 2014;13:844 (current terms).",
    formula: "Eye 4 spontaneous / 3 to sound / 2 to pressure / 1 none; verbal 5 oriented / 4 confused / 3 words / 2 sounds / 1 none; motor 6 obeys / 5 localises / 4 normal flexion (withdraws) / 3 abnormal flexion / 2 extension / 1 none. GCS = E + V + M.",
    unit: "points",
    inputs: &[
        Input::graded("eye", EYE, "Best eye response."),
        Input::graded("verbal", VERBAL, "Best verbal response."),
        Input::graded("motor", MOTOR, "Best motor response."),
    ],
    example: r#"{"eye": "spontaneous", "verbal": "none", "motor": "abnormal_flexion"}"#,
    run: |a| {
        let score = |s: &str, opts: &[&str]| (opts.len() - opts.iter().position(|o| *o == s).unwrap_or(0)) as f64;
        let e = a.choice("eye")?;
        let v = a.choice("verbal")?;
        let m = a.choice("motor")?;
        if v == "not_testable" {
            return Err(CalcError::OutOfValidity(
                "verbal response not testable (e.g. intubated): report GCS as E+M with 'T' (for example E4 VT M6); there is no numeric total".into(),
            ));
        }
        let mut t = Tally::new();
        t.add("eye", score(e, EYE));
        t.add("verbal", score(v, &VERBAL[..5]));
        t.add("motor", score(m, MOTOR));
        let s = t.total();
        let interp = band(s, &[(9.0, "severe (3-8)"), (13.0, "moderate (9-12)")], "mild (13-15)");
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(interp))
    },
};

fn map_of(a: &mut Args) -> Result<Option<f64>, CalcError> {
    if let Some(m) = a.q_opt("mean_arterial_pressure")? {
        return Ok(Some(m));
    }
    let s = a.q_opt("systolic_bp")?;
    let d = a.q_opt("diastolic_bp")?;
    Ok(match (s, d) {
        (Some(s), Some(d)) => Some((s + 2.0 * d) / 3.0),
        _ => None,
    })
}

/// APACHE II.
pub static APACHE_II: Calculator = Calculator {
    name: "apache_ii",
    title: "APACHE II Score",
    medcalc_id: Some(28),
    category: Category::Critical,
    summary: "ICU severity of illness from the worst values in the first 24 hours, age and chronic health. Omitted physiology counts as normal (0 points).",
    source: "Knaus WA et al., Crit Care Med 1985;13:818.",
    formula: "Acute physiology (temperature, MAP, heart rate, respiratory rate, oxygenation: A-a gradient if FiO2 >= 50% else PaO2, arterial pH, Na, K, creatinine (double points in acute renal failure), haematocrit, WBC, 15 - GCS) + age points (< 45: 0, 45-54: 2, 55-64: 3, 65-74: 5, >= 75: 6) + chronic health (severe organ insufficiency or immunocompromise: 5 if non-operative or emergency post-operative, 2 if elective post-operative)",
    unit: "points",
    inputs: &[
        AGE,
        Input::measured("temperature", Q::Temperature, "Core temperature."),
        Input::measured(
            "mean_arterial_pressure",
            Q::Pressure,
            "Mean arterial pressure (or give systolic and diastolic).",
        ),
        Input::measured("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::measured("diastolic_bp", Q::Pressure, "Diastolic blood pressure."),
        Input::measured("heart_rate", Q::HeartRate, "Heart rate."),
        Input::measured("respiratory_rate", Q::RespRate, "Respiratory rate."),
        Input::measured("fio2", Q::Percent, "Inspired oxygen fraction."),
        Input::measured("pao2", Q::Pressure, "Arterial PaO2."),
        Input::measured("paco2", Q::Pressure, "Arterial PaCO2 (for the A-a gradient when FiO2 >= 50%)."),
        Input::measured("a_a_gradient", Q::Pressure, "Alveolar-arterial gradient, if already calculated."),
        Input {
            name: "ph",
            kind: Kind::Number(6.5, 8.0),
            need: Need::Finding,
            doc: "Arterial pH.",
        },
        Input::measured("sodium", Q::Lab(Analyte::Sodium), "Serum sodium."),
        Input::measured("potassium", Q::Lab(Analyte::Potassium), "Serum potassium."),
        Input::measured("creatinine", Q::Lab(Analyte::Creatinine), "Serum creatinine."),
        Input::finding("acute_renal_failure", "Acute renal failure (doubles the creatinine points)."),
        Input::measured("hematocrit", Q::Percent, "Haematocrit."),
        Input::measured("wbc", Q::Lab(Analyte::Wbc), "White blood cell count."),
        Input {
            name: "gcs",
            kind: Kind::Int(3, 15),
            need: Need::Finding,
            doc: "Glasgow Coma Scale (omitted: 15).",
        },
        Input::finding(
            "chronic_organ_insufficiency",
            "History of severe organ insufficiency (cirrhosis, NYHA IV, severe COPD, dialysis) or immunocompromise.",
        ),
        Input::graded(
            "admission",
            &["nonoperative", "emergency_postoperative", "elective_postoperative"],
            "Admission type (for chronic health points).",
        ),
    ],
    example: r#"{"age": 64, "temperature": {"value": 100.8, "unit": "°F"}, "systolic_bp": 110, "diastolic_bp": 58, "heart_rate": 107, "respiratory_rate": 22, "fio2": 36, "pao2": 75, "ph": 7.29, "sodium": 136, "potassium": 4.5, "creatinine": 1.8, "acute_renal_failure": true, "hematocrit": 34, "wbc": {"value": 12300, "unit": "/mm3"}, "gcs": 13}"#,
    run: |a| {
        let age = a.q("age")?;
        let mut t = Tally::new();
        let temp = a.q_opt("temperature")?;
        t.add(
            "temperature",
            temp.map_or(0.0, |c| {
                desc(
                    c,
                    &[
                        (41.0, 4.0),
                        (39.0, 3.0),
                        (38.5, 1.0),
                        (36.0, 0.0),
                        (34.0, 1.0),
                        (32.0, 2.0),
                        (30.0, 3.0),
                    ],
                    4.0,
                )
            }),
        );
        let map = map_of(a)?;
        t.add(
            "mean arterial pressure",
            map.map_or(0.0, |m| {
                desc(m, &[(160.0, 4.0), (130.0, 3.0), (110.0, 2.0), (70.0, 0.0), (50.0, 2.0)], 4.0)
            }),
        );
        let hr = a.q_opt("heart_rate")?;
        t.add(
            "heart rate",
            hr.map_or(0.0, |h| {
                desc(
                    h,
                    &[(180.0, 4.0), (140.0, 3.0), (110.0, 2.0), (70.0, 0.0), (55.0, 2.0), (40.0, 3.0)],
                    4.0,
                )
            }),
        );
        let rr = a.q_opt("respiratory_rate")?;
        t.add(
            "respiratory rate",
            rr.map_or(0.0, |r| {
                desc(
                    r,
                    &[(50.0, 4.0), (35.0, 3.0), (25.0, 1.0), (12.0, 0.0), (10.0, 1.0), (6.0, 2.0)],
                    4.0,
                )
            }),
        );
        let fio2 = a.q_opt("fio2")?;
        let pao2 = a.q_opt("pao2")?;
        let paco2 = a.q_opt("paco2")?;
        let aa_given = a.q_opt("a_a_gradient")?;
        let mut out = Outcome::points(0);
        let oxy = match fio2 {
            Some(f) if f >= 50.0 => {
                let aa = match (aa_given, pao2, paco2) {
                    (Some(g), _, _) => Some(g),
                    (None, Some(p), Some(c)) => Some(f / 100.0 * (760.0 - 47.0) - c / 0.8 - p),
                    _ => None,
                };
                match aa {
                    Some(g) => {
                        out = out.step("A-a gradient (mm Hg)", g);
                        desc(g, &[(500.0, 4.0), (350.0, 3.0), (200.0, 2.0)], 0.0)
                    }
                    None => {
                        return Err(CalcError::Missing(
                            "a_a_gradient, or pao2 and paco2 (FiO2 >= 50% scores oxygenation by the A-a gradient)".into(),
                        ));
                    }
                }
            }
            _ => pao2.map_or(0.0, |p| if p > 70.0 { 0.0 } else { desc(p, &[(61.0, 1.0), (55.0, 3.0)], 4.0) }),
        };
        t.add("oxygenation", oxy);
        let ph = a.number_opt("ph")?;
        t.add(
            "arterial pH",
            ph.map_or(0.0, |p| {
                desc(p, &[(7.7, 4.0), (7.6, 3.0), (7.5, 1.0), (7.33, 0.0), (7.25, 2.0), (7.15, 3.0)], 4.0)
            }),
        );
        let na = a.q_opt("sodium")?;
        t.add(
            "sodium",
            na.map_or(0.0, |n| {
                desc(
                    n,
                    &[
                        (180.0, 4.0),
                        (160.0, 3.0),
                        (155.0, 2.0),
                        (150.0, 1.0),
                        (130.0, 0.0),
                        (120.0, 2.0),
                        (111.0, 3.0),
                    ],
                    4.0,
                )
            }),
        );
        let k = a.q_opt("potassium")?;
        t.add(
            "potassium",
            k.map_or(0.0, |k| {
                desc(k, &[(7.0, 4.0), (6.0, 3.0), (5.5, 1.0), (3.5, 0.0), (3.0, 1.0), (2.5, 2.0)], 4.0)
            }),
        );
        let cr = a.q_opt("creatinine")?;
        let arf = a.flag("acute_renal_failure")?;
        let crp = cr.map_or(0.0, |c| desc(c, &[(3.5, 4.0), (2.0, 3.0), (1.5, 2.0), (0.6, 0.0)], 2.0));
        t.add(
            if arf {
                "creatinine (x2, acute renal failure)"
            } else {
                "creatinine"
            },
            if arf { 2.0 * crp } else { crp },
        );
        let hct = a.q_opt("hematocrit")?;
        t.add(
            "haematocrit",
            hct.map_or(0.0, |h| {
                desc(h, &[(60.0, 4.0), (50.0, 2.0), (46.0, 1.0), (30.0, 0.0), (20.0, 2.0)], 4.0)
            }),
        );
        let wbc = a.q_opt("wbc")?;
        t.add(
            "white cell count",
            wbc.map_or(0.0, |w| {
                desc(w, &[(40.0, 4.0), (20.0, 2.0), (15.0, 1.0), (3.0, 0.0), (1.0, 2.0)], 4.0)
            }),
        );
        let gcs = a.number_opt("gcs")?.unwrap_or(15.0);
        t.add("15 - GCS", 15.0 - gcs);
        t.add("age", desc(age, &[(75.0, 6.0), (65.0, 5.0), (55.0, 3.0), (45.0, 2.0)], 0.0));
        let chronic = a.flag("chronic_organ_insufficiency")?;
        let adm = a.choice("admission")?;
        t.add(
            "chronic health",
            if !chronic {
                0.0
            } else if adm == "elective_postoperative" {
                2.0
            } else {
                5.0
            },
        );
        let s = t.total();
        let interp = band(
            s,
            &[
                (5.0, "0-4: non-operative mortality about 4%"),
                (10.0, "5-9: about 8%"),
                (15.0, "10-14: about 15%"),
                (20.0, "15-19: about 25%"),
                (25.0, "20-24: about 40%"),
                (30.0, "25-29: about 55%"),
                (35.0, "30-34: about 75%"),
            ],
            ">= 35: about 85%",
        );
        if let Some(m) = map {
            out = out.step("MAP used (mm Hg)", m);
        }
        out.value = serde_json::json!(s as i64);
        Ok(out.steps(t.into_steps()).interpret(interp))
    },
};

/// SOFA.
pub static SOFA: Calculator = Calculator {
    name: "sofa",
    title: "Sequential Organ Failure Assessment (SOFA) Score",
    medcalc_id: Some(43),
    category: Category::Critical,
    summary: "Organ dysfunction across six systems (0-24); a rise of 2 or more with infection defines sepsis (Sepsis-3). Omitted values count as normal.",
    source: "Vincent JL et al., Intensive Care Med 1996;22:707; Singer M et al., JAMA 2016;315:801.",
    formula: "Respiration PaO2/FiO2: >= 400 0, < 400 1, < 300 2, < 200 with ventilatory support 3, < 100 with support 4 (without support at most 2); platelets (10^9/L) >= 150 0, < 150 1, < 100 2, < 50 3, < 20 4; bilirubin (mg/dL) < 1.2 0, 1.2-1.9 1, 2.0-5.9 2, 6.0-11.9 3, >= 12 4; cardiovascular MAP >= 70 0, < 70 1, dopamine <= 5 or any dobutamine 2, dopamine > 5 or epinephrine/norepinephrine <= 0.1 3, dopamine > 15 or epinephrine/norepinephrine > 0.1 4 (µg/kg/min); GCS 15 0, 13-14 1, 10-12 2, 6-9 3, < 6 4; creatinine (mg/dL) < 1.2 0, 1.2-1.9 1, 2.0-3.4 2, 3.5-4.9 or urine < 500 mL/day 3, >= 5 or urine < 200 mL/day 4",
    unit: "points",
    inputs: &[
        Input::measured("pao2", Q::Pressure, "Arterial PaO2."),
        Input::measured("fio2", Q::Percent, "Inspired oxygen fraction."),
        Input::finding(
            "mechanical_ventilation",
            "Mechanical ventilation or CPAP/NIV (ventilatory support).",
        ),
        Input::measured("platelets", Q::Lab(Analyte::Platelets), "Platelet count."),
        Input {
            name: "gcs",
            kind: Kind::Int(3, 15),
            need: Need::Finding,
            doc: "Glasgow Coma Scale (omitted: 15).",
        },
        Input::measured("bilirubin", Q::Lab(Analyte::Bilirubin), "Total bilirubin."),
        Input::measured(
            "mean_arterial_pressure",
            Q::Pressure,
            "Mean arterial pressure (or give systolic and diastolic).",
        ),
        Input::measured("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::measured("diastolic_bp", Q::Pressure, "Diastolic blood pressure."),
        Input::measured("dopamine", Q::DoseRate, "Dopamine dose."),
        Input::measured("dobutamine", Q::DoseRate, "Dobutamine dose."),
        Input::measured("epinephrine", Q::DoseRate, "Epinephrine dose."),
        Input::measured("norepinephrine", Q::DoseRate, "Norepinephrine dose."),
        Input::measured("creatinine", Q::Lab(Analyte::Creatinine), "Serum creatinine."),
        Input::measured("urine_output", Q::UrineOutput, "Urine output."),
    ],
    example: r#"{"pao2": 79, "fio2": 52, "mechanical_ventilation": true, "platelets": {"value": 147000, "unit": "/µL"}, "gcs": 13, "bilirubin": 1.6, "systolic_bp": 78, "diastolic_bp": 46, "dopamine": 5, "creatinine": 1.7, "urine_output": 650}"#,
    run: |a| {
        let mut t = Tally::new();
        let mut out = Outcome::points(0);
        let pao2 = a.q_opt("pao2")?;
        let fio2 = a.q_opt("fio2")?;
        let vent = a.flag("mechanical_ventilation")?;
        let resp = match (pao2, fio2) {
            (Some(p), Some(f)) if f > 0.0 => {
                let pf = p / (f / 100.0);
                out = out.step("PaO2/FiO2 (mm Hg)", pf);
                let s = if pf < 100.0 && vent {
                    4.0
                } else if pf < 200.0 && vent {
                    3.0
                } else if pf < 300.0 {
                    2.0
                } else if pf < 400.0 {
                    1.0
                } else {
                    0.0
                };
                if pf < 200.0 && !vent {
                    out = out.warn("PaO2/FiO2 < 200 without ventilatory support scores 2 (3-4 need support)");
                }
                s
            }
            _ => 0.0,
        };
        t.add("respiration", resp);
        let plt = a.q_opt("platelets")?;
        t.add(
            "coagulation (platelets)",
            plt.map_or(0.0, |p| {
                if p < 20.0 {
                    4.0
                } else if p < 50.0 {
                    3.0
                } else if p < 100.0 {
                    2.0
                } else if p < 150.0 {
                    1.0
                } else {
                    0.0
                }
            }),
        );
        let bili = a.q_opt("bilirubin")?;
        t.add(
            "liver (bilirubin)",
            bili.map_or(0.0, |b| desc(b, &[(12.0, 4.0), (6.0, 3.0), (2.0, 2.0), (1.2, 1.0)], 0.0)),
        );
        let map = map_of(a)?;
        let dop = a.q_opt("dopamine")?.unwrap_or(0.0);
        let dob = a.q_opt("dobutamine")?.unwrap_or(0.0);
        let epi = a.q_opt("epinephrine")?.unwrap_or(0.0);
        let nor = a.q_opt("norepinephrine")?.unwrap_or(0.0);
        let cv = if dop > 15.0 || epi > 0.1 || nor > 0.1 {
            4.0
        } else if dop > 5.0 || epi > 0.0 || nor > 0.0 {
            3.0
        } else if dop > 0.0 || dob > 0.0 {
            2.0
        } else if map.is_some_and(|m| m < 70.0) {
            1.0
        } else {
            0.0
        };
        t.add("cardiovascular", cv);
        let gcs = a.number_opt("gcs")?.unwrap_or(15.0);
        t.add(
            "central nervous system (GCS)",
            desc(-gcs, &[(-5.0, 4.0), (-9.0, 3.0), (-12.0, 2.0), (-14.0, 1.0)], 0.0),
        );
        let cr = a.q_opt("creatinine")?;
        let uo = a.q_opt("urine_output")?;
        let by_cr = cr.map_or(0.0, |c| desc(c, &[(5.0, 4.0), (3.5, 3.0), (2.0, 2.0), (1.2, 1.0)], 0.0));
        let by_uo = uo.map_or(0.0, |u| {
            if u < 200.0 {
                4.0
            } else if u < 500.0 {
                3.0
            } else {
                0.0
            }
        });
        t.add("renal (creatinine or urine output)", by_cr.max(by_uo));
        if let Some(m) = map {
            out = out.step("MAP used (mm Hg)", m);
        }
        let s = t.total();
        out.value = serde_json::json!(s as i64);
        Ok(out.steps(t.into_steps()).interpret(if s >= 2.0 {
            "organ dysfunction present (>= 2 above baseline defines sepsis when infection is suspected)"
        } else {
            "little or no organ dysfunction"
        }))
    },
};

/// Glasgow-Blatchford.
pub static GLASGOW_BLATCHFORD: Calculator = Calculator {
    name: "glasgow_blatchford",
    title: "Glasgow-Blatchford Bleeding Score (GBS)",
    medcalc_id: Some(27),
    category: Category::Critical,
    summary: "Need for intervention in upper gastrointestinal bleeding; 0-1 identifies patients who may be managed as outpatients.",
    source: "Blatchford O, Murray WR, Blatchford M, Lancet 2000;356:1318. Low-risk threshold: Stanley AJ et al., BMJ 2017;356:i6432.",
    formula: "Urea (mmol/L) 6.5-8: 2, 8-10: 3, 10-25: 4, >= 25: 6 (BUN mg/dL >= 18.2, 22.4, 28, 70); Hb men 12-13: 1, 10-12: 3, < 10: 6; women 10-12: 1, < 10: 6 (g/dL); SBP 100-109: 1, 90-99: 2, < 90: 3; pulse >= 100 1; melaena 1; syncope 2; hepatic disease 2; cardiac failure 2 (0-23)",
    unit: "points",
    inputs: &[
        Input::qty("bun", Q::Lab(Analyte::Bun), "Blood urea nitrogen, or urea in mmol/L."),
        Input::qty("hemoglobin", Q::Lab(Analyte::Hemoglobin), "Haemoglobin."),
        SEX,
        Input::qty("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::qty("heart_rate", Q::HeartRate, "Pulse."),
        Input::finding("melena", "Melaena."),
        Input::finding("syncope", "Presented with syncope."),
        Input::finding("hepatic_disease", "History of hepatic disease."),
        Input::finding("cardiac_failure", "Cardiac failure present."),
    ],
    example: r#"{"bun": {"value": 51, "unit": "mg/dL"}, "hemoglobin": 11, "sex": "male", "systolic_bp": 110, "heart_rate": 90, "hepatic_disease": true}"#,
    run: |a| {
        let bun = a.q("bun")?;
        let hb = a.q("hemoglobin")?;
        let male = a.choice("sex")? == "male";
        let sbp = a.q("systolic_bp")?;
        let hr = a.q("heart_rate")?;
        let mut t = Tally::new();
        t.add("blood urea", desc(bun, &[(70.0, 6.0), (28.0, 4.0), (22.4, 3.0), (18.2, 2.0)], 0.0));
        let hbp = if male {
            if hb < 10.0 {
                6.0
            } else if hb < 12.0 {
                3.0
            } else if hb < 13.0 {
                1.0
            } else {
                0.0
            }
        } else if hb < 10.0 {
            6.0
        } else if hb < 12.0 {
            1.0
        } else {
            0.0
        };
        t.add("haemoglobin", hbp);
        t.add(
            "systolic BP",
            if sbp < 90.0 {
                3.0
            } else if sbp < 100.0 {
                2.0
            } else if sbp < 110.0 {
                1.0
            } else {
                0.0
            },
        );
        t.item("pulse >= 100", hr >= 100.0, 1.0);
        t.item("melaena", a.flag("melena")?, 1.0);
        t.item("syncope", a.flag("syncope")?, 2.0);
        t.item("hepatic disease", a.flag("hepatic_disease")?, 2.0);
        t.item("cardiac failure", a.flag("cardiac_failure")?, 2.0);
        let s = t.total();
        Ok(Outcome::points(s as i64)
            .steps(t.into_steps())
            .step("urea (mmol/L)", bun / super::units::BUN_MGDL_PER_MMOL)
            .interpret(if s <= 1.0 {
                "low risk (0-1): may be managed as an outpatient"
            } else {
                "not low risk (>= 2): admit; higher scores mean more need for intervention"
            }))
    },
};

/// Charlson Comorbidity Index.
pub static CHARLSON: Calculator = Calculator {
    name: "charlson_comorbidity_index",
    title: "Charlson Comorbidity Index (CCI)",
    medcalc_id: Some(32),
    category: Category::Critical,
    summary: "Comorbidity burden with age points, and the estimated 10-year survival.",
    source: "Charlson ME et al., J Chronic Dis 1987;40:373; age adjustment: Charlson M et al., J Clin Epidemiol 1994;47:1245.",
    formula: "Age < 50: 0, 50-59: 1, 60-69: 2, 70-79: 3, >= 80: 4; 1 each: MI, CHF, peripheral vascular disease, CVA or TIA, dementia, chronic pulmonary disease, connective tissue disease, peptic ulcer; liver mild 1 / moderate-severe 3; diabetes uncomplicated 1 / end-organ damage 2; hemiplegia 2; moderate-severe CKD 2; solid tumour localised 2 / metastatic 6; leukaemia 2; lymphoma 2; AIDS 6. 10-year survival = 0.983^exp(0.9 x CCI)",
    unit: "points",
    inputs: &[
        AGE,
        Input::finding("myocardial_infarction", "History of myocardial infarction."),
        Input::finding("heart_failure", "Congestive heart failure."),
        Input::finding(
            "peripheral_vascular_disease",
            "Peripheral vascular disease (or untreated aneurysm >= 6 cm).",
        ),
        Input::finding("cerebrovascular_disease", "Cerebrovascular accident or TIA."),
        Input::finding("dementia", "Dementia."),
        Input::finding("chronic_pulmonary_disease", "Chronic pulmonary disease."),
        Input::finding("connective_tissue_disease", "Connective tissue disease."),
        Input::finding("peptic_ulcer_disease", "Peptic ulcer disease."),
        Input::graded(
            "liver_disease",
            &["none", "mild", "moderate_to_severe"],
            "Liver disease (moderate-severe: cirrhosis with portal hypertension).",
        ),
        Input::graded(
            "diabetes",
            &["none_or_diet_controlled", "uncomplicated", "end_organ_damage"],
            "Diabetes mellitus.",
        ),
        Input::finding("hemiplegia", "Hemiplegia."),
        Input::finding("moderate_to_severe_ckd", "Moderate to severe chronic kidney disease."),
        Input::graded("solid_tumor", &["none", "localized", "metastatic"], "Solid tumour."),
        Input::finding("leukemia", "Leukaemia."),
        Input::finding("lymphoma", "Lymphoma."),
        Input::finding("aids", "AIDS (not just HIV positive)."),
    ],
    example: r#"{"age": 82, "connective_tissue_disease": true, "peptic_ulcer_disease": true, "chronic_pulmonary_disease": true, "diabetes": "none_or_diet_controlled"}"#,
    run: |a| {
        let age = a.q("age")?;
        let mut t = Tally::new();
        t.add("age", desc(age, &[(80.0, 4.0), (70.0, 3.0), (60.0, 2.0), (50.0, 1.0)], 0.0));
        for (k, p) in [
            ("myocardial_infarction", 1.0),
            ("heart_failure", 1.0),
            ("peripheral_vascular_disease", 1.0),
            ("cerebrovascular_disease", 1.0),
            ("dementia", 1.0),
            ("chronic_pulmonary_disease", 1.0),
            ("connective_tissue_disease", 1.0),
            ("peptic_ulcer_disease", 1.0),
            ("hemiplegia", 2.0),
            ("moderate_to_severe_ckd", 2.0),
            ("leukemia", 2.0),
            ("lymphoma", 2.0),
            ("aids", 6.0),
        ] {
            let met = a.flag(k)?;
            t.item(k, met, p);
        }
        let liver = a.choice("liver_disease")?;
        t.add(
            "liver disease",
            match liver {
                "mild" => 1.0,
                "moderate_to_severe" => 3.0,
                _ => 0.0,
            },
        );
        let dm = a.choice("diabetes")?;
        t.add(
            "diabetes",
            match dm {
                "uncomplicated" => 1.0,
                "end_organ_damage" => 2.0,
                _ => 0.0,
            },
        );
        let tumor = a.choice("solid_tumor")?;
        t.add(
            "solid tumour",
            match tumor {
                "localized" => 2.0,
                "metastatic" => 6.0,
                _ => 0.0,
            },
        );
        let s = t.total();
        let survival = 100.0 * 0.983f64.powf((0.9 * s).exp());
        Ok(Outcome::points(s as i64)
            .steps(t.into_steps())
            .step("estimated 10-year survival (%)", survival)
            .interpret(format!("estimated 10-year survival {survival:.0}%")))
    },
};
