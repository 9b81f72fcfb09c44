//! Heart and vessels: mean arterial pressure, the five QTc corrections, CHA2DS2-VASc,
//! HAS-BLED, HEART, the Revised Cardiac Risk Index and Framingham hard CHD risk.

use super::args::{AGE, SEX};
use super::units::{Analyte, Q};
use super::{Args, CalcError, Calculator, Category, Input, Kind, Need, Outcome, Tally, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[
    &MAP,
    &QTC_BAZETT,
    &QTC_FRIDERICIA,
    &QTC_FRAMINGHAM,
    &QTC_HODGES,
    &QTC_RAUTAHARJU,
    &CHA2DS2_VASC,
    &HAS_BLED,
    &HEART,
    &RCRI,
    &FRAMINGHAM_HARD_CHD,
];

const HR: Input = Input::qty("heart_rate", Q::HeartRate, "Heart rate.");
const QT: Input = Input::qty("qt", Q::Interval, "Measured QT interval.");
const QTC_SEX: Input = Input::choice("sex", &["female", "male"], "Sex, for the prolongation threshold (optional).").optional();

/// Mean arterial pressure.
pub static MAP: Calculator = Calculator {
    name: "mean_arterial_pressure",
    title: "Mean Arterial Pressure (MAP)",
    medcalc_id: Some(5),
    category: Category::Cardiac,
    summary: "Mean arterial pressure from systolic and diastolic blood pressure.",
    source: "Standard physiology (diastole takes about two thirds of the cardiac cycle at rest).",
    formula: "MAP = (SBP + 2 x DBP) / 3",
    unit: "mm Hg",
    inputs: &[
        Input::qty("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::qty("diastolic_bp", Q::Pressure, "Diastolic blood pressure."),
    ],
    example: r#"{"systolic_bp": 110, "diastolic_bp": {"value": 70, "unit": "mm Hg"}}"#,
    run: |a| {
        let s = a.q("systolic_bp")?;
        let d = a.q("diastolic_bp")?;
        if d > s {
            return Err(CalcError::Implausible(format!(
                "diastolic_bp {d} mm Hg is above systolic_bp {s} mm Hg"
            )));
        }
        let map = (s + 2.0 * d) / 3.0;
        let interp = if map < 65.0 {
            "below 65 mm Hg: inadequate organ perfusion pressure"
        } else {
            "65 mm Hg or more"
        };
        Ok(Outcome::num(map).interpret(interp))
    },
};

fn qtc_interp(qtc: f64, sex: Option<&str>) -> String {
    if qtc >= 500.0 {
        return "markedly prolonged (>= 500 ms): high risk of torsades de pointes".into();
    }
    match sex {
        Some("female") if qtc > 460.0 => "prolonged (> 460 ms in women)".into(),
        Some("male") if qtc > 450.0 => "prolonged (> 450 ms in men)".into(),
        None if qtc > 460.0 => "prolonged (> 450 ms in men, > 460 ms in women)".into(),
        None if qtc > 450.0 => "prolonged in men (> 450 ms); normal in women (<= 460 ms)".into(),
        _ => "not prolonged".into(),
    }
}

fn qtc(a: &mut Args, f: fn(qt: f64, hr: f64, rr: f64) -> f64) -> Result<Outcome, CalcError> {
    let hr = a.q("heart_rate")?;
    let qt = a.q("qt")?;
    let sex = a.choice_opt("sex")?;
    let rr = 60.0 / hr;
    let v = f(qt, hr, rr);
    Ok(Outcome::num(v).step("RR interval (s)", rr).interpret(qtc_interp(v, sex)))
}

/// QTc Bazett.
pub static QTC_BAZETT: Calculator = Calculator {
    name: "qtc_bazett",
    title: "QTc (Bazett)",
    medcalc_id: Some(11),
    category: Category::Cardiac,
    summary: "Heart-rate corrected QT interval by Bazett (over-corrects at high heart rates).",
    source: "Bazett HC, Heart 1920;7:353. Thresholds: AHA/ACCF/HRS 2009.",
    formula: "QTc = QT / sqrt(RR), RR = 60 / heart rate (s)",
    unit: "ms",
    inputs: &[HR, QT, QTC_SEX],
    example: r#"{"heart_rate": 113, "qt": {"value": 330, "unit": "ms"}}"#,
    run: |a| qtc(a, |qt, _, rr| qt / rr.sqrt()),
};

/// QTc Fridericia.
pub static QTC_FRIDERICIA: Calculator = Calculator {
    name: "qtc_fridericia",
    title: "QTc (Fridericia)",
    medcalc_id: Some(56),
    category: Category::Cardiac,
    summary: "Heart-rate corrected QT interval by Fridericia (cube root of RR).",
    source: "Fridericia LS, Acta Med Scand 1920;53:469. Thresholds: AHA/ACCF/HRS 2009.",
    formula: "QTc = QT / RR^(1/3), RR = 60 / heart rate (s)",
    unit: "ms",
    inputs: &[HR, QT, QTC_SEX],
    example: r#"{"heart_rate": 161, "qt": 373}"#,
    run: |a| qtc(a, |qt, _, rr| qt / rr.cbrt()),
};

/// QTc Framingham.
pub static QTC_FRAMINGHAM: Calculator = Calculator {
    name: "qtc_framingham",
    title: "QTc (Framingham)",
    medcalc_id: Some(57),
    category: Category::Cardiac,
    summary: "Heart-rate corrected QT interval by the linear Framingham formula (QT in ms, RR in s).",
    source: "Sagie A et al., Am J Cardiol 1992;70:797. Thresholds: AHA/ACCF/HRS 2009.",
    formula: "QTc = QT + 154 x (1 - RR), QT in ms, RR = 60 / heart rate (s)",
    unit: "ms",
    inputs: &[HR, QT, QTC_SEX],
    example: r#"{"heart_rate": 87, "qt": 405}"#,
    run: |a| qtc(a, |qt, _, rr| qt + 154.0 * (1.0 - rr)),
};

/// QTc Hodges.
pub static QTC_HODGES: Calculator = Calculator {
    name: "qtc_hodges",
    title: "QTc (Hodges)",
    medcalc_id: Some(58),
    category: Category::Cardiac,
    summary: "Heart-rate corrected QT interval by the linear Hodges formula.",
    source: "Hodges M et al., J Am Coll Cardiol 1983;1:694. Thresholds: AHA/ACCF/HRS 2009.",
    formula: "QTc = QT + 1.75 x (heart rate - 60)",
    unit: "ms",
    inputs: &[HR, QT, QTC_SEX],
    example: r#"{"heart_rate": 101, "qt": 280}"#,
    run: |a| qtc(a, |qt, hr, _| qt + 1.75 * (hr - 60.0)),
};

/// QTc Rautaharju.
pub static QTC_RAUTAHARJU: Calculator = Calculator {
    name: "qtc_rautaharju",
    title: "QTc (Rautaharju)",
    medcalc_id: Some(59),
    category: Category::Cardiac,
    summary: "Heart-rate corrected QT interval by Rautaharju's formula.",
    source: "Rautaharju PM et al., Can J Cardiol 1993;9:A (QTc = QT x (120 + HR) / 180). Thresholds: AHA/ACCF/HRS 2009.",
    formula: "QTc = QT x (120 + heart rate) / 180",
    unit: "ms",
    inputs: &[HR, QT, QTC_SEX],
    example: r#"{"heart_rate": 68, "qt": 321}"#,
    run: |a| qtc(a, |qt, hr, _| qt * (120.0 + hr) / 180.0),
};

/// CHA2DS2-VASc.
pub static CHA2DS2_VASC: Calculator = Calculator {
    name: "cha2ds2_vasc",
    title: "CHA2DS2-VASc Score for Atrial Fibrillation Stroke Risk",
    medcalc_id: Some(4),
    category: Category::Cardiac,
    summary: "Stroke risk in non-valvular atrial fibrillation, to decide on anticoagulation.",
    source: "Lip GYH et al., Chest 2010;137:263 (score and adjusted stroke rates). Hindricks G et al., ESC 2020 AF guideline (treatment thresholds).",
    formula: "CHF 1, hypertension 1, age >= 75 2, diabetes 1, stroke/TIA/thromboembolism 2, vascular disease 1, age 65-74 1, female 1 (0-9)",
    unit: "points",
    inputs: &[
        AGE,
        SEX,
        Input::finding("congestive_heart_failure", "Heart failure or LV dysfunction."),
        Input::finding("hypertension", "Hypertension."),
        Input::finding("diabetes", "Diabetes mellitus."),
        Input::finding("stroke_tia_thromboembolism", "Prior stroke, TIA or thromboembolism."),
        Input::finding("vascular_disease", "Prior MI, peripheral artery disease or aortic plaque."),
    ],
    example: r#"{"age": 62, "sex": "male", "stroke_tia_thromboembolism": true}"#,
    run: |a| {
        let age = a.q("age")?;
        let female = a.choice("sex")? == "female";
        let mut t = Tally::new();
        t.item("congestive heart failure", a.flag("congestive_heart_failure")?, 1.0);
        t.item("hypertension", a.flag("hypertension")?, 1.0);
        t.add(
            "age (>= 75: 2, 65-74: 1)",
            if age >= 75.0 {
                2.0
            } else if age >= 65.0 {
                1.0
            } else {
                0.0
            },
        );
        t.item("diabetes", a.flag("diabetes")?, 1.0);
        t.item("stroke / TIA / thromboembolism", a.flag("stroke_tia_thromboembolism")?, 2.0);
        t.item("vascular disease", a.flag("vascular_disease")?, 1.0);
        t.item("female sex", female, 1.0);
        let s = t.total();
        let non_sex = s - if female { 1.0 } else { 0.0 };
        let rate = [0.0, 1.3, 2.2, 3.2, 4.0, 6.7, 9.8, 9.6, 6.7, 15.2]
            .get(s as usize)
            .copied()
            .unwrap_or(15.2);
        let interp = if non_sex == 0.0 {
            "low risk: anticoagulation not recommended"
        } else if non_sex < 2.0 {
            "anticoagulation should be considered (one non-sex risk factor)"
        } else {
            "anticoagulation recommended (two or more non-sex risk factors)"
        };
        Ok(Outcome::points(s as i64)
            .steps(t.into_steps())
            .step("adjusted stroke rate (%/year, Lip 2010)", rate)
            .interpret(interp))
    },
};

/// HAS-BLED.
pub static HAS_BLED: Calculator = Calculator {
    name: "has_bled",
    title: "HAS-BLED Score for Major Bleeding Risk",
    medcalc_id: Some(25),
    category: Category::Cardiac,
    summary: "One-year major bleeding risk on anticoagulation for atrial fibrillation.",
    source: "Pisters R et al., Chest 2010;138:1093.",
    formula: "1 point each: uncontrolled hypertension (SBP > 160), abnormal renal function, abnormal liver function, stroke, bleeding history or predisposition, labile INR, age > 65, antiplatelet/NSAID use, alcohol >= 8 drinks/week (0-9)",
    unit: "points",
    inputs: &[
        AGE,
        Input::finding("hypertension", "Uncontrolled hypertension, systolic > 160 mm Hg."),
        Input::finding("renal_disease", "Dialysis, transplant, or creatinine >= 2.26 mg/dL (200 µmol/L)."),
        Input::finding("liver_disease", "Cirrhosis, or bilirubin > 2x normal with AST/ALT/ALP > 3x normal."),
        Input::finding("stroke", "Prior stroke."),
        Input::finding("bleeding", "Prior major bleeding or predisposition to bleeding."),
        Input::finding("labile_inr", "Unstable or high INRs, time in therapeutic range < 60%."),
        Input::finding("drugs", "Antiplatelet agents or NSAIDs."),
        Input {
            name: "alcohol_drinks_per_week",
            kind: Kind::Number(0.0, 500.0),
            need: Need::Finding,
            doc: "Alcoholic drinks per week (>= 8 scores 1).",
        },
    ],
    example: r#"{"age": 43, "hypertension": true, "alcohol_drinks_per_week": 0}"#,
    run: |a| {
        let age = a.q("age")?;
        let mut t = Tally::new();
        t.item("uncontrolled hypertension", a.flag("hypertension")?, 1.0);
        t.item("abnormal renal function", a.flag("renal_disease")?, 1.0);
        t.item("abnormal liver function", a.flag("liver_disease")?, 1.0);
        t.item("stroke", a.flag("stroke")?, 1.0);
        t.item("bleeding", a.flag("bleeding")?, 1.0);
        t.item("labile INR", a.flag("labile_inr")?, 1.0);
        t.item("elderly (age > 65)", age > 65.0, 1.0);
        t.item("drugs (antiplatelet / NSAID)", a.flag("drugs")?, 1.0);
        let drinks = a.number_opt("alcohol_drinks_per_week")?.unwrap_or(0.0);
        t.item("alcohol (>= 8 drinks/week)", drinks >= 8.0, 1.0);
        let s = t.total();
        let rate = [1.13, 1.02, 1.88, 3.74, 8.70, 12.5].get(s as usize).copied();
        let mut out = Outcome::points(s as i64).steps(t.into_steps());
        if let Some(r) = rate {
            out = out.step("major bleeds per 100 patient-years (Pisters 2010)", r);
        }
        Ok(out.interpret(if s >= 3.0 {
            "high bleeding risk (>= 3): address modifiable factors, review closely"
        } else {
            "low to moderate bleeding risk (0-2)"
        }))
    },
};

/// HEART score.
pub static HEART: Calculator = Calculator {
    name: "heart_score",
    title: "HEART Score for Major Cardiac Events",
    medcalc_id: Some(18),
    category: Category::Cardiac,
    summary: "Six-week risk of major adverse cardiac events in emergency department chest pain.",
    source: "Six AJ, Backus BE, Kelder JC, Neth Heart J 2008;16:191. Backus BE et al., Int J Cardiol 2013;168:2153.",
    formula: "History 0-2, ECG 0-2, age (< 45: 0, 45-64: 1, >= 65: 2), risk factors (none 0, 1-2: 1, >= 3 or known atherosclerotic disease: 2), troponin (<= normal 0, 1-3x: 1, > 3x: 2)",
    unit: "points",
    inputs: &[
        Input::graded(
            "history",
            &["slightly_suspicious", "moderately_suspicious", "highly_suspicious"],
            "How suspicious the history is for ACS.",
        ),
        Input::graded(
            "ecg",
            &["normal", "nonspecific_repolarization", "significant_st_deviation"],
            "ECG findings.",
        ),
        AGE,
        Input::finding("hypertension", "Risk factor: hypertension."),
        Input::finding("hypercholesterolemia", "Risk factor: hypercholesterolaemia."),
        Input::finding("diabetes", "Risk factor: diabetes mellitus."),
        Input::finding("obesity", "Risk factor: obesity (BMI > 30)."),
        Input::finding("smoking", "Risk factor: current smoker or stopped within 3 months."),
        Input::finding(
            "family_history",
            "Risk factor: parent or sibling with cardiovascular disease before 65.",
        ),
        Input::finding(
            "atherosclerotic_disease",
            "Known atherosclerotic disease: prior MI, PCI/CABG, stroke/TIA, peripheral arterial disease.",
        ),
        Input::graded(
            "troponin",
            &["normal", "one_to_three_times_normal", "over_three_times_normal"],
            "Initial troponin relative to the normal limit.",
        ),
    ],
    example: r#"{"age": 28, "smoking": true, "history": "slightly_suspicious"}"#,
    run: |a| {
        let idx = |s: &str, opts: &[&str]| opts.iter().position(|o| *o == s).unwrap_or(0) as f64;
        let mut t = Tally::new();
        let h = a.choice("history")?;
        t.add(
            "history",
            idx(h, &["slightly_suspicious", "moderately_suspicious", "highly_suspicious"]),
        );
        let e = a.choice("ecg")?;
        t.add("ECG", idx(e, &["normal", "nonspecific_repolarization", "significant_st_deviation"]));
        let age = a.q("age")?;
        t.add(
            "age",
            if age >= 65.0 {
                2.0
            } else if age >= 45.0 {
                1.0
            } else {
                0.0
            },
        );
        let mut rf = 0;
        for k in [
            "hypertension",
            "hypercholesterolemia",
            "diabetes",
            "obesity",
            "smoking",
            "family_history",
        ] {
            if a.flag(k)? {
                rf += 1;
            }
        }
        let athero = a.flag("atherosclerotic_disease")?;
        t.add(
            &format!(
                "risk factors ({rf} present{})",
                if athero { ", known atherosclerotic disease" } else { "" }
            ),
            if rf >= 3 || athero {
                2.0
            } else if rf >= 1 {
                1.0
            } else {
                0.0
            },
        );
        let tr = a.choice("troponin")?;
        t.add(
            "troponin",
            idx(tr, &["normal", "one_to_three_times_normal", "over_three_times_normal"]),
        );
        let s = t.total();
        let interp = band(
            s,
            &[(4.0, "low risk (0-3): MACE 0.9-1.7%, candidate for discharge")],
            if s >= 7.0 {
                "high risk (7-10): MACE 50-65%, early invasive strategy"
            } else {
                "moderate risk (4-6): MACE 12-16.6%, admit for observation"
            },
        );
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(interp))
    },
};

/// Revised Cardiac Risk Index.
pub static RCRI: Calculator = Calculator {
    name: "rcri",
    title: "Revised Cardiac Risk Index (Lee)",
    medcalc_id: Some(17),
    category: Category::Cardiac,
    summary: "Risk of major cardiac complications after non-cardiac surgery.",
    source: "Lee TH et al., Circulation 1999;100:1043.",
    formula: "1 point each: high-risk surgery (intraperitoneal, intrathoracic, suprainguinal vascular), ischaemic heart disease, heart failure, cerebrovascular disease, insulin treatment, creatinine > 2 mg/dL (0-6)",
    unit: "points",
    inputs: &[
        Input::finding(
            "high_risk_surgery",
            "Intraperitoneal, intrathoracic or suprainguinal vascular surgery.",
        ),
        Input::finding(
            "ischemic_heart_disease",
            "History of MI, positive stress test, angina, nitrate use or pathological Q waves.",
        ),
        Input::finding("heart_failure", "History of congestive heart failure."),
        Input::finding("cerebrovascular_disease", "Prior stroke or TIA."),
        Input::finding("insulin", "Pre-operative treatment with insulin."),
        Input {
            name: "creatinine",
            kind: Kind::Qty(Q::Lab(Analyte::Creatinine)),
            need: Need::Finding,
            doc: "Pre-operative creatinine (> 2 mg/dL scores 1).",
        },
    ],
    example: r#"{"insulin": true, "high_risk_surgery": true, "creatinine": {"value": 2.1, "unit": "mg/dL"}}"#,
    run: |a| {
        let mut t = Tally::new();
        t.item("high-risk surgery", a.flag("high_risk_surgery")?, 1.0);
        t.item("ischaemic heart disease", a.flag("ischemic_heart_disease")?, 1.0);
        t.item("heart failure", a.flag("heart_failure")?, 1.0);
        t.item("cerebrovascular disease", a.flag("cerebrovascular_disease")?, 1.0);
        t.item("insulin", a.flag("insulin")?, 1.0);
        let cr = a.q_opt("creatinine")?;
        t.item("creatinine > 2 mg/dL", cr.is_some_and(|c| c > 2.0), 1.0);
        let s = t.total();
        let (class, risk) = match s as i64 {
            0 => ("class I", 0.4),
            1 => ("class II", 0.9),
            2 => ("class III", 6.6),
            _ => ("class IV", 11.0),
        };
        Ok(Outcome::points(s as i64)
            .steps(t.into_steps())
            .step("major cardiac complication rate (%, Lee 1999 validation cohort)", risk)
            .interpret(format!("{class}: {risk}% risk of major cardiac complications")))
    },
};

/// Framingham hard CHD (ATP III).
pub static FRAMINGHAM_HARD_CHD: Calculator = Calculator {
    name: "framingham_hard_chd",
    title: "Framingham Risk Score for Hard Coronary Heart Disease (ATP III)",
    medcalc_id: Some(46),
    category: Category::Cardiac,
    summary: "Ten-year risk of myocardial infarction or coronary death (ATP III, ages 20-79, no known CHD or diabetes).",
    source: "NCEP Adult Treatment Panel III, Circulation 2002;106:3143 (Framingham hard CHD equations, D'Agostino/Wilson).",
    formula: "Sex-specific Cox model on ln(age), ln(total cholesterol mg/dL), ln(HDL mg/dL), ln(SBP), treated BP, smoking and interactions (smoking age term capped at 70 in men, 78 in women); risk = 1 - S0^exp(L), S0 = 0.9402 (men), 0.98767 (women)",
    unit: "%",
    inputs: &[
        SEX,
        AGE,
        Input::qty("total_cholesterol", Q::Lab(Analyte::Cholesterol), "Total cholesterol."),
        Input::qty("hdl", Q::Lab(Analyte::Cholesterol), "HDL cholesterol."),
        Input::qty("systolic_bp", Q::Pressure, "Systolic blood pressure."),
        Input::finding("bp_treated", "On antihypertensive treatment."),
        Input::finding("smoker", "Current smoker."),
    ],
    example: r#"{"sex": "male", "age": 79, "systolic_bp": 120, "total_cholesterol": 190, "hdl": 49}"#,
    run: |a| {
        let male = a.choice("sex")? == "male";
        let age = a.q("age")?;
        if !(20.0..=79.0).contains(&age) {
            return Err(CalcError::OutOfValidity(format!(
                "age {age} years: the ATP III Framingham equations cover ages 20-79"
            )));
        }
        let tc = a.q("total_cholesterol")?;
        let hdl = a.q("hdl")?;
        let sbp = a.q("systolic_bp")?;
        let treated = if a.flag("bp_treated")? { 1.0 } else { 0.0 };
        let smoker = if a.flag("smoker")? { 1.0 } else { 0.0 };
        let la = age.ln();
        let (l, s0) = if male {
            let ls = age.min(70.0).ln();
            (
                52.00961 * la + 20.014077 * tc.ln() - 0.905964 * hdl.ln() + 1.305784 * sbp.ln() + 0.241549 * treated + 12.096316 * smoker
                    - 4.605038 * la * tc.ln()
                    - 2.84367 * ls * smoker
                    - 2.93323 * la * la
                    - 172.300168,
                0.9402f64,
            )
        } else {
            let ls = age.min(78.0).ln();
            (
                31.764001 * la + 22.465206 * tc.ln() - 1.187731 * hdl.ln() + 2.552905 * sbp.ln() + 0.420251 * treated + 13.07543 * smoker
                    - 5.060998 * la * tc.ln()
                    - 2.996945 * ls * smoker
                    - 146.5933061,
                0.98767f64,
            )
        };
        let risk = 100.0 * (1.0 - s0.powf(l.exp()));
        let interp = band(
            risk,
            &[(10.0, "low (< 10% in 10 years)"), (20.0 + 1e-9, "intermediate (10-20%)")],
            "high (> 20%)",
        );
        Ok(Outcome::num(risk)
            .step("linear predictor L", l)
            .step("baseline survival S0", s0)
            .interpret(interp))
    },
};
