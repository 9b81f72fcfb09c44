//! Electrolytes, acid-base and metabolic equations: anion gap and its delta and
//! albumin-corrected forms, corrected calcium and sodium, serum osmolality, free water
//! deficit, Friedewald LDL and HOMA-IR.

use super::args::{AGE, SEX};
use super::units::{Analyte, Q};
use super::{Args, CalcError, Calculator, Category, Input, Kind, Need, Outcome, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[
    &ANION_GAP,
    &DELTA_GAP,
    &DELTA_RATIO,
    &ALBUMIN_CORRECTED_ANION_GAP,
    &ALBUMIN_CORRECTED_DELTA_GAP,
    &ALBUMIN_CORRECTED_DELTA_RATIO,
    &CORRECTED_CALCIUM,
    &CORRECTED_SODIUM,
    &SERUM_OSMOLALITY,
    &FREE_WATER_DEFICIT,
    &LDL_FRIEDEWALD,
    &HOMA_IR,
];

const SODIUM: Input = Input::qty("sodium", Q::Lab(Analyte::Sodium), "Serum sodium.");
const CHLORIDE: Input = Input::qty("chloride", Q::Lab(Analyte::Chloride), "Serum chloride.");
const BICARB: Input = Input::qty("bicarbonate", Q::Lab(Analyte::Bicarbonate), "Serum bicarbonate (total CO2).");
const ALBUMIN: Input = Input::qty("albumin", Q::Lab(Analyte::Albumin), "Serum albumin.");
const GLUCOSE: Input = Input::qty("glucose", Q::Lab(Analyte::Glucose), "Serum or plasma glucose.");
const NORMAL_AG: Input = Input {
    name: "normal_anion_gap",
    kind: Kind::Number(0.0, 30.0),
    need: Need::Default("12"),
    doc: "The normal anion gap subtracted, mEq/L (laboratory dependent).",
};
const NORMAL_HCO3: Input = Input {
    name: "normal_bicarbonate",
    kind: Kind::Number(10.0, 40.0),
    need: Need::Default("24"),
    doc: "The normal bicarbonate, mEq/L.",
};
const NORMAL_ALB: Input = Input {
    name: "normal_albumin",
    kind: Kind::Qty(Q::Lab(Analyte::Albumin)),
    need: Need::Default("4"),
    doc: "The normal albumin the correction refers to.",
};
const DELTA_DEFINITION: Input = Input::convention(
    "definition",
    &["excess_anion_gap", "delta_delta"],
    "excess_anion_gap",
    "excess_anion_gap: AG - normal AG. delta_delta: (AG - normal AG) - (normal HCO3 - HCO3), which is 0 in a pure anion gap acidosis.",
);

fn gap(a: &mut Args) -> Result<(f64, f64), CalcError> {
    let na = a.q("sodium")?;
    let cl = a.q("chloride")?;
    let hco3 = a.q("bicarbonate")?;
    Ok((na - (cl + hco3), hco3))
}

fn albumin_corrected(a: &mut Args, ag: f64) -> Result<(f64, f64), CalcError> {
    let alb = a.q("albumin")?;
    let normal = a.q("normal_albumin")?;
    Ok((ag + 2.5 * (normal - alb), alb))
}

fn delta_gap(a: &mut Args, ag: f64, hco3: f64, label: &str) -> Result<Outcome, CalcError> {
    let normal_ag = a.number("normal_anion_gap")?;
    let excess = ag - normal_ag;
    match a.choice("definition")? {
        "delta_delta" => {
            let normal_hco3 = a.number("normal_bicarbonate")?;
            let deficit = normal_hco3 - hco3;
            let dd = excess - deficit;
            let interp = band(
                dd,
                &[(-6.0, "below -6: concurrent normal anion gap acidosis")],
                if dd > 6.0 {
                    "above 6: concurrent metabolic alkalosis"
                } else {
                    "-6 to 6: pure anion gap acidosis"
                },
            );
            Ok(Outcome::num(dd)
                .step(label, ag)
                .step("excess anion gap", excess)
                .step("bicarbonate deficit", deficit)
                .interpret(interp))
        }
        _ => Ok(Outcome::num(excess).step(label, ag)),
    }
}

fn delta_ratio(a: &mut Args, ag: f64, hco3: f64, label: &str) -> Result<Outcome, CalcError> {
    let normal_ag = a.number("normal_anion_gap")?;
    let normal_hco3 = a.number("normal_bicarbonate")?;
    let deficit = normal_hco3 - hco3;
    if deficit.abs() < 1e-9 {
        return Err(CalcError::OutOfValidity(format!(
            "bicarbonate {hco3} equals the normal bicarbonate {normal_hco3}: the delta ratio is undefined (no bicarbonate deficit)"
        )));
    }
    let r = (ag - normal_ag) / deficit;
    let interp = band(
        r,
        &[
            (0.4, "< 0.4: hyperchloraemic normal anion gap acidosis"),
            (0.8, "0.4-0.8: combined anion gap and normal anion gap acidosis"),
            (2.0, "0.8-2.0: pure anion gap acidosis"),
        ],
        "> 2.0: anion gap acidosis with a concurrent metabolic alkalosis (or a compensated respiratory acidosis)",
    );
    let mut out = Outcome::num(r)
        .step(label, ag)
        .step("excess anion gap", ag - normal_ag)
        .step("bicarbonate deficit", deficit);
    if deficit < 0.0 {
        out = out.warn("bicarbonate is above normal: there is no acidosis to characterise");
    }
    Ok(out.interpret(interp))
}

/// Anion gap.
pub static ANION_GAP: Calculator = Calculator {
    name: "anion_gap",
    title: "Anion Gap",
    medcalc_id: Some(39),
    category: Category::Electrolytes,
    summary: "Serum anion gap (without potassium) to classify a metabolic acidosis.",
    source: "Emmett M, Narins RG, Medicine 1977;56:38. Kraut JA, Madias NE, Clin J Am Soc Nephrol 2007;2:162.",
    formula: "AG = Na - (Cl + HCO3)",
    unit: "mEq/L",
    inputs: &[SODIUM, CHLORIDE, BICARB],
    example: r#"{"sodium": 140, "chloride": 110, "bicarbonate": 9.4}"#,
    run: |a| {
        let (ag, _) = gap(a)?;
        let interp = band(
            ag,
            &[(3.0, "low (< 3)"), (12.0 + 1e-9, "normal (3-12)")],
            "elevated (> 12): anion gap metabolic acidosis if acidaemic",
        );
        Ok(Outcome::num(ag)
            .interpret(interp)
            .warn("the normal range depends on the laboratory; correct for albumin when albumin is low"))
    },
};

/// Delta gap.
pub static DELTA_GAP: Calculator = Calculator {
    name: "delta_gap",
    title: "Delta Gap",
    medcalc_id: Some(63),
    category: Category::Electrolytes,
    summary: "Excess anion gap over normal (default), or the delta-delta (excess gap minus bicarbonate deficit) to look for a second acid-base disorder.",
    source: "Wrenn K, Ann Emerg Med 1990;19:1310. Rastegar A, J Am Soc Nephrol 2007;18:2429.",
    formula: "excess_anion_gap: AG - 12. delta_delta: (AG - 12) - (24 - HCO3)",
    unit: "mEq/L",
    inputs: &[SODIUM, CHLORIDE, BICARB, NORMAL_AG, NORMAL_HCO3, DELTA_DEFINITION],
    example: r#"{"sodium": 142, "chloride": 123, "bicarbonate": 14}"#,
    run: |a| {
        let (ag, hco3) = gap(a)?;
        delta_gap(a, ag, hco3, "anion gap")
    },
};

/// Delta ratio.
pub static DELTA_RATIO: Calculator = Calculator {
    name: "delta_ratio",
    title: "Delta Ratio",
    medcalc_id: Some(64),
    category: Category::Electrolytes,
    summary: "Ratio of the rise in anion gap to the fall in bicarbonate, to find a mixed acid-base disorder in an anion gap acidosis.",
    source: "Rastegar A, J Am Soc Nephrol 2007;18:2429.",
    formula: "(AG - 12) / (24 - HCO3)",
    unit: "ratio",
    inputs: &[SODIUM, CHLORIDE, BICARB, NORMAL_AG, NORMAL_HCO3],
    example: r#"{"sodium": 148, "chloride": 117, "bicarbonate": 8.6}"#,
    run: |a| {
        let (ag, hco3) = gap(a)?;
        delta_ratio(a, ag, hco3, "anion gap")
    },
};

/// Albumin-corrected anion gap.
pub static ALBUMIN_CORRECTED_ANION_GAP: Calculator = Calculator {
    name: "albumin_corrected_anion_gap",
    title: "Albumin-Corrected Anion Gap",
    medcalc_id: Some(65),
    category: Category::Electrolytes,
    summary: "Anion gap corrected for hypoalbuminaemia (each 1 g/dL fall in albumin lowers the gap by about 2.5 mEq/L).",
    source: "Figge J et al., Crit Care Med 1998;26:1807.",
    formula: "ACAG = Na - (Cl + HCO3) + 2.5 x (4.0 - albumin g/dL)",
    unit: "mEq/L",
    inputs: &[SODIUM, CHLORIDE, BICARB, ALBUMIN, NORMAL_ALB],
    example: r#"{"sodium": 127, "chloride": 101, "bicarbonate": 9, "albumin": {"value": 1.8, "unit": "g/dL"}}"#,
    run: |a| {
        let (ag, _) = gap(a)?;
        let (acag, _) = albumin_corrected(a, ag)?;
        let interp = if acag > 12.0 { "elevated (> 12)" } else { "not elevated (<= 12)" };
        Ok(Outcome::num(acag).step("anion gap", ag).interpret(interp))
    },
};

/// Albumin-corrected delta gap.
pub static ALBUMIN_CORRECTED_DELTA_GAP: Calculator = Calculator {
    name: "albumin_corrected_delta_gap",
    title: "Albumin-Corrected Delta Gap",
    medcalc_id: Some(66),
    category: Category::Electrolytes,
    summary: "Delta gap computed from the albumin-corrected anion gap.",
    source: "Figge J et al., Crit Care Med 1998;26:1807; Wrenn K, Ann Emerg Med 1990;19:1310.",
    formula: "excess_anion_gap: ACAG - 12. delta_delta: (ACAG - 12) - (24 - HCO3)",
    unit: "mEq/L",
    inputs: &[
        SODIUM,
        CHLORIDE,
        BICARB,
        ALBUMIN,
        NORMAL_ALB,
        NORMAL_AG,
        NORMAL_HCO3,
        DELTA_DEFINITION,
    ],
    example: r#"{"sodium": 143, "chloride": 120, "bicarbonate": 12.5, "albumin": 2.1}"#,
    run: |a| {
        let (ag, hco3) = gap(a)?;
        let (acag, _) = albumin_corrected(a, ag)?;
        delta_gap(a, acag, hco3, "albumin-corrected anion gap").map(|o| o.step("anion gap", ag))
    },
};

/// Albumin-corrected delta ratio.
pub static ALBUMIN_CORRECTED_DELTA_RATIO: Calculator = Calculator {
    name: "albumin_corrected_delta_ratio",
    title: "Albumin-Corrected Delta Ratio",
    medcalc_id: Some(67),
    category: Category::Electrolytes,
    summary: "Delta ratio computed from the albumin-corrected anion gap.",
    source: "Figge J et al., Crit Care Med 1998;26:1807; Rastegar A, J Am Soc Nephrol 2007;18:2429.",
    formula: "(ACAG - 12) / (24 - HCO3)",
    unit: "ratio",
    inputs: &[SODIUM, CHLORIDE, BICARB, ALBUMIN, NORMAL_ALB, NORMAL_AG, NORMAL_HCO3],
    example: r#"{"sodium": 142.8, "chloride": 125.5, "bicarbonate": 7.5, "albumin": 4.2}"#,
    run: |a| {
        let (ag, hco3) = gap(a)?;
        let (acag, _) = albumin_corrected(a, ag)?;
        delta_ratio(a, acag, hco3, "albumin-corrected anion gap").map(|o| o.step("anion gap", ag))
    },
};

/// Corrected calcium.
pub static CORRECTED_CALCIUM: Calculator = Calculator {
    name: "corrected_calcium",
    title: "Calcium Correction for Hypoalbuminemia",
    medcalc_id: Some(7),
    category: Category::Electrolytes,
    summary: "Total calcium corrected for a low albumin (Payne). Prefer a measured ionised calcium when available.",
    source: "Payne RB et al., Br Med J 1973;4:643.",
    formula: "corrected Ca (mg/dL) = Ca + 0.8 x (normal albumin 4.0 - albumin g/dL)",
    unit: "mg/dL",
    inputs: &[
        Input::qty("calcium", Q::Lab(Analyte::Calcium), "Total serum calcium."),
        ALBUMIN,
        NORMAL_ALB,
    ],
    example: r#"{"calcium": {"value": 8.4, "unit": "mg/dL"}, "albumin": {"value": 33, "unit": "g/L"}}"#,
    run: |a| {
        let ca = a.q("calcium")?;
        let (alb_term, _) = {
            let alb = a.q("albumin")?;
            let normal = a.q("normal_albumin")?;
            (normal - alb, alb)
        };
        let v = ca + 0.8 * alb_term;
        let interp = band(
            v,
            &[(8.5, "low (< 8.5 mg/dL)"), (10.5 + 1e-9, "normal (8.5-10.5 mg/dL)")],
            "high (> 10.5 mg/dL)",
        );
        Ok(Outcome::num(v)
            .step("albumin deficit (g/dL)", alb_term)
            .step("in mmol/L", v / super::units::CALCIUM_MGDL_PER_MMOL)
            .interpret(interp))
    },
};

/// Corrected sodium.
pub static CORRECTED_SODIUM: Calculator = Calculator {
    name: "corrected_sodium",
    title: "Sodium Correction for Hyperglycemia",
    medcalc_id: Some(26),
    category: Category::Electrolytes,
    summary: "Serum sodium corrected for hyperglycaemia. The coefficient is a convention: Hillier (2.4 mEq/L per 100 mg/dL, default) or Katz (1.6).",
    source: "Hillier TA et al., Am J Med 1999;106:399. Katz MA, N Engl J Med 1973;289:843.",
    formula: "corrected Na = Na + k x (glucose mg/dL - 100); k = 0.024 (Hillier) or 0.016 (Katz)",
    unit: "mEq/L",
    inputs: &[
        SODIUM,
        GLUCOSE,
        Input::convention("coefficient", &["hillier", "katz"], "hillier", "Which correction factor."),
    ],
    example: r#"{"sodium": 132, "glucose": {"value": 350, "unit": "mg/dL"}}"#,
    run: |a| {
        let na = a.q("sodium")?;
        let glu = a.q("glucose")?;
        let k = if a.choice("coefficient")? == "katz" { 0.016 } else { 0.024 };
        let v = na + k * (glu - 100.0);
        let mut out = Outcome::num(v).step("coefficient per mg/dL", k);
        if glu < 100.0 {
            out = out.warn("glucose is below 100 mg/dL: the correction is meant for hyperglycaemia");
        }
        Ok(out)
    },
};

/// Serum osmolality.
pub static SERUM_OSMOLALITY: Calculator = Calculator {
    name: "serum_osmolality",
    title: "Serum Osmolality (calculated)",
    medcalc_id: Some(30),
    category: Category::Electrolytes,
    summary: "Calculated serum osmolality; with an optional ethanol level. Compare with measured osmolality for the osmolal gap.",
    source: "Dorwart WV, Chalmers L, Clin Chem 1975;21:190. Ethanol term: Purssell RA et al., Ann Emerg Med 2001;38:653.",
    formula: "2 x Na + BUN (mg/dL) / 2.8 + glucose (mg/dL) / 18 [+ ethanol (mg/dL) / 3.7]",
    unit: "mOsm/kg",
    inputs: &[
        SODIUM,
        Input::qty("bun", Q::Lab(Analyte::Bun), "Blood urea nitrogen (urea in mmol/L accepted)."),
        GLUCOSE,
        Input {
            name: "ethanol",
            kind: Kind::Number(0.0, 2000.0),
            need: Need::Optional,
            doc: "Serum ethanol in mg/dL, if measured.",
        },
    ],
    example: r#"{"sodium": 136.4, "bun": 11, "glucose": 125}"#,
    run: |a| {
        let na = a.q("sodium")?;
        let bun = a.q("bun")?;
        let glu = a.q("glucose")?;
        let etoh = a.number_opt("ethanol")?.unwrap_or(0.0);
        let v = 2.0 * na + bun / 2.8 + glu / 18.0 + etoh / 3.7;
        let interp = band(v, &[(275.0, "low (< 275)"), (295.0 + 1e-9, "normal (275-295)")], "high (> 295)");
        Ok(Outcome::num(v)
            .step("2 x Na", 2.0 * na)
            .step("BUN / 2.8", bun / 2.8)
            .step("glucose / 18", glu / 18.0)
            .step("ethanol / 3.7", etoh / 3.7)
            .interpret(interp))
    },
};

/// Free water deficit.
pub static FREE_WATER_DEFICIT: Calculator = Calculator {
    name: "free_water_deficit",
    title: "Free Water Deficit",
    medcalc_id: Some(38),
    category: Category::Electrolytes,
    summary: "Free water deficit in hypernatraemia from total body water (by age and sex) and sodium. A negative value is a free water excess.",
    source: "Adrogue HJ, Madias NE, N Engl J Med 2000;342:1493 (total body water fractions).",
    formula: "FWD (L) = TBW fraction x weight (kg) x (Na / target Na - 1); TBW 0.6 (child, adult man), 0.5 (adult woman, older man >= 65), 0.45 (older woman >= 65)",
    unit: "L",
    inputs: &[
        SEX,
        AGE,
        Input::qty("weight", Q::Weight, "Body weight."),
        SODIUM,
        Input {
            name: "target_sodium",
            kind: Kind::Number(120.0, 160.0),
            need: Need::Default("140"),
            doc: "Target sodium, mEq/L.",
        },
    ],
    example: r#"{"sex": "female", "age": 17, "weight": 35, "sodium": {"value": 126, "unit": "mmol/L"}}"#,
    run: |a| {
        let female = a.choice("sex")? == "female";
        let age = a.q("age")?;
        let w = a.q("weight")?;
        let na = a.q("sodium")?;
        let target = a.number("target_sodium")?;
        let f = match (age < 18.0, age >= 65.0, female) {
            (true, _, _) => 0.6,
            (false, false, false) => 0.6,
            (false, false, true) => 0.5,
            (false, true, false) => 0.5,
            (false, true, true) => 0.45,
        };
        let v = f * w * (na / target - 1.0);
        let interp = if v < 0.0 {
            "negative: free water excess (hyponatraemia)"
        } else {
            "free water deficit to replace"
        };
        Ok(Outcome::num(v)
            .step("total body water fraction", f)
            .step("total body water (L)", f * w)
            .interpret(interp))
    },
};

/// LDL (Friedewald).
pub static LDL_FRIEDEWALD: Calculator = Calculator {
    name: "ldl_friedewald",
    title: "LDL Cholesterol (Friedewald)",
    medcalc_id: Some(44),
    category: Category::Metabolic,
    summary: "Calculated LDL cholesterol from total cholesterol, HDL and triglycerides. Refused when triglycerides exceed 400 mg/dL (4.52 mmol/L), as the source says.",
    source: "Friedewald WT, Levy RI, Fredrickson DS, Clin Chem 1972;18:499.",
    formula: "LDL = total cholesterol - HDL - triglycerides / 5 (all mg/dL)",
    unit: "mg/dL",
    inputs: &[
        Input::qty("total_cholesterol", Q::Lab(Analyte::Cholesterol), "Total cholesterol."),
        Input::qty("hdl", Q::Lab(Analyte::Cholesterol), "HDL cholesterol."),
        Input::qty("triglycerides", Q::Lab(Analyte::Triglycerides), "Triglycerides (fasting)."),
    ],
    example: r#"{"total_cholesterol": 161, "hdl": 39, "triglycerides": {"value": 95, "unit": "mg/dL"}}"#,
    run: |a| {
        let tc = a.q("total_cholesterol")?;
        let hdl = a.q("hdl")?;
        let tg = a.q("triglycerides")?;
        if tg > 400.0 {
            return Err(CalcError::OutOfValidity(format!(
                "triglycerides {tg:.1} mg/dL exceed 400 mg/dL: the Friedewald equation is not valid; measure LDL directly"
            )));
        }
        let ldl = tc - hdl - tg / 5.0;
        let interp = band(
            ldl,
            &[
                (100.0, "optimal (< 100)"),
                (130.0, "near optimal (100-129)"),
                (160.0, "borderline high (130-159)"),
                (190.0, "high (160-189)"),
            ],
            "very high (>= 190)",
        );
        Ok(Outcome::num(ldl)
            .step("triglycerides / 5", tg / 5.0)
            .step("in mmol/L", ldl / super::units::CHOLESTEROL_MGDL_PER_MMOL)
            .interpret(interp))
    },
};

/// HOMA-IR.
pub static HOMA_IR: Calculator = Calculator {
    name: "homa_ir",
    title: "HOMA-IR (Homeostatic Model Assessment for Insulin Resistance)",
    medcalc_id: Some(31),
    category: Category::Metabolic,
    summary: "Insulin resistance index from fasting insulin and fasting glucose.",
    source: "Matthews DR et al., Diabetologia 1985;28:412.",
    formula: "HOMA-IR = fasting insulin (µIU/mL) x fasting glucose (mg/dL) / 405  (= insulin x glucose mmol/L / 22.5)",
    unit: "index",
    inputs: &[
        Input::qty("insulin", Q::Lab(Analyte::Insulin), "Fasting insulin (pmol/L is divided by 6.00)."),
        Input::qty("glucose", Q::Lab(Analyte::Glucose), "Fasting glucose."),
    ],
    example: r#"{"insulin": {"value": 14.5, "unit": "µIU/mL"}, "glucose": {"value": 298, "unit": "mg/dL"}}"#,
    run: |a| {
        let ins = a.q("insulin")?;
        let glu = a.q("glucose")?;
        let v = ins * glu / 405.0;
        Ok(Outcome::num(v)
            .step("glucose (mmol/L)", glu / super::units::GLUCOSE_MGDL_PER_MMOL)
            .interpret(if v >= 2.5 {
                "suggests insulin resistance (>= 2.5; cut-offs vary by population)"
            } else {
                "below the common 2.5 cut-off"
            }))
    },
};
