//! Kidney function: Cockcroft-Gault creatinine clearance, CKD-EPI 2021 and MDRD eGFR,
//! and the fractional excretion of sodium.

use super::args::{AGE, SEX};
use super::body::devine_ibw;
use super::units::{Analyte, Q};
use super::{CalcError, Calculator, Category, Input, Outcome, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[&COCKCROFT_GAULT, &CKD_EPI_2021, &MDRD, &FENA];

const CREATININE: Input = Input::qty("creatinine", Q::Lab(Analyte::Creatinine), "Serum creatinine.");

fn kdigo_stage(gfr: f64) -> &'static str {
    band(
        gfr,
        &[
            (15.0, "G5: kidney failure (< 15)"),
            (30.0, "G4: severely decreased (15-29)"),
            (45.0, "G3b: moderately to severely decreased (30-44)"),
            (60.0, "G3a: mildly to moderately decreased (45-59)"),
            (90.0, "G2: mildly decreased (60-89)"),
        ],
        "G1: normal or high (>= 90)",
    )
}

fn adults_only(age: f64, what: &str) -> Result<Option<String>, CalcError> {
    // Children: refused (bedside Schwartz / CKiD U25 are the paediatric equations). Adolescents:
    // the arithmetic is defined and the equations are applied in practice, so the result is
    // given with a warning, as results outside other validity ranges are.
    if age < 12.0 {
        return Err(CalcError::OutOfValidity(format!(
            "age {age} years: {what} was developed and validated in adults (18 and over); use a paediatric equation (bedside Schwartz)"
        )));
    }
    Ok((age < 18.0).then(|| {
        format!(
            "age {age} years: {what} was developed and validated in adults (18 and over); in adolescents the CKiD U25 equation is preferred"
        )
    }))
}

/// Cockcroft-Gault.
pub static COCKCROFT_GAULT: Calculator = Calculator {
    name: "cockcroft_gault",
    title: "Creatinine Clearance (Cockcroft-Gault)",
    medcalc_id: Some(2),
    category: Category::Renal,
    summary: "Estimated creatinine clearance for drug dosing. The weight used is a convention: actual (the original paper), ideal, adjusted, or the BMI rule (underweight: actual; normal: the lesser of ideal and actual; overweight or obese: adjusted).",
    source: "Cockcroft DW, Gault MH, Nephron 1976;16:31. Devine 1974 for ideal body weight.",
    formula: "CrCl = (140 - age) x weight (kg) x (0.85 if female) / (72 x serum creatinine mg/dL)",
    unit: "mL/min",
    inputs: &[
        SEX,
        AGE,
        Input::qty("weight", Q::Weight, "Actual body weight."),
        CREATININE,
        Input::qty(
            "height",
            Q::Height,
            "Height; needed for the ideal, adjusted and bmi_rule weight bases.",
        )
        .optional(),
        Input::convention(
            "weight_basis",
            &["actual", "ideal", "adjusted", "bmi_rule"],
            "actual",
            "Which weight enters the formula.",
        ),
    ],
    example: r#"{"sex": "male", "age": 53, "weight": 87, "height": 175, "creatinine": {"value": 1.39, "unit": "mg/dL"}, "weight_basis": "bmi_rule"}"#,
    run: |a| {
        let female = a.choice("sex")? == "female";
        let age = a.q("age")?;
        let young = adults_only(age, "Cockcroft-Gault")?;
        let actual = a.q("weight")?;
        let scr = a.q("creatinine")?;
        let basis = a.choice("weight_basis")?;
        let mut out = Outcome::num(0.0).warnings(young.into_iter().collect());
        let w = if basis == "actual" {
            actual
        } else {
            let h = a
                .q_opt("height")?
                .ok_or_else(|| CalcError::Missing(format!("height (needed for weight_basis \"{basis}\")")))?;
            let mut warn = Vec::new();
            let ibw = devine_ibw(!female, h, &mut warn);
            let adj = ibw + 0.4 * (actual - ibw);
            out = out
                .warnings(warn)
                .step("ideal body weight (kg)", ibw)
                .step("adjusted body weight (kg)", adj);
            match basis {
                "ideal" => ibw,
                "adjusted" => adj,
                _ => {
                    let bmi = actual / (h / 100.0).powi(2);
                    out = out.step("BMI (kg/m²)", bmi);
                    if bmi < 18.5 {
                        actual
                    } else if bmi < 25.0 {
                        ibw.min(actual)
                    } else {
                        adj
                    }
                }
            }
        };
        let crcl = (140.0 - age) * w * if female { 0.85 } else { 1.0 } / (72.0 * scr);
        out.value = serde_json::json!(crcl);
        Ok(out.step("weight used (kg)", w))
    },
};

/// CKD-EPI 2021 (race-free).
pub static CKD_EPI_2021: Calculator = Calculator {
    name: "ckd_epi_2021",
    title: "eGFR, CKD-EPI 2021 creatinine equation",
    medcalc_id: Some(3),
    category: Category::Renal,
    summary: "Estimated GFR from serum creatinine, age and sex by the race-free 2021 CKD-EPI equation, with the KDIGO GFR category.",
    source: "Inker LA et al., N Engl J Med 2021;385:1737 (CKD-EPI 2021). KDIGO 2012 for the G categories.",
    formula: "eGFR = 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age x (1.012 if female); k = 0.7 (F) / 0.9 (M); a = -0.241 (F) / -0.302 (M)",
    unit: "mL/min/1.73m²",
    inputs: &[SEX, AGE, CREATININE],
    example: r#"{"sex": "male", "age": 81, "creatinine": {"value": 1.7, "unit": "mg/dL"}}"#,
    run: |a| {
        let female = a.choice("sex")? == "female";
        let age = a.q("age")?;
        let young = adults_only(age, "CKD-EPI")?;
        let scr = a.q("creatinine")?;
        let (k, alpha) = if female { (0.7, -0.241) } else { (0.9, -0.302) };
        let r = scr / k;
        let gfr = 142.0 * r.min(1.0).powf(alpha) * r.max(1.0).powf(-1.2) * 0.9938f64.powf(age) * if female { 1.012 } else { 1.0 };
        let mut out = Outcome::num(gfr)
            .step("kappa", k)
            .step("alpha", alpha)
            .step("Scr / kappa", r)
            .interpret(kdigo_stage(gfr));
        if let Some(w) = young {
            out = out.warn(w);
        }
        Ok(out)
    },
};

/// MDRD (IDMS-traceable, 4-variable).
pub static MDRD: Calculator = Calculator {
    name: "mdrd_gfr",
    title: "eGFR, MDRD 4-variable (IDMS-traceable)",
    medcalc_id: Some(9),
    category: Category::Renal,
    summary: "Estimated GFR by the 4-variable MDRD study equation (legacy; CKD-EPI 2021 is preferred).",
    source: "Levey AS et al., Ann Intern Med 2006;145:247 (IDMS-traceable re-expression, constant 175).",
    formula: "eGFR = 175 x Scr^-1.154 x age^-0.203 x (0.742 if female) x (1.212 if Black)",
    unit: "mL/min/1.73m²",
    inputs: &[
        SEX,
        AGE,
        CREATININE,
        Input::finding(
            "black",
            "Black race, as the 2006 equation defines it (a race coefficient that CKD-EPI 2021 removed).",
        ),
    ],
    example: r#"{"sex": "female", "age": 85, "creatinine": 1.36}"#,
    run: |a| {
        let female = a.choice("sex")? == "female";
        let age = a.q("age")?;
        let young = adults_only(age, "MDRD")?;
        let scr = a.q("creatinine")?;
        let black = a.flag("black")?;
        let gfr = 175.0 * scr.powf(-1.154) * age.powf(-0.203) * if female { 0.742 } else { 1.0 } * if black { 1.212 } else { 1.0 };
        let mut out = Outcome::num(gfr).interpret(kdigo_stage(gfr));
        if gfr > 60.0 {
            out = out.warn("MDRD underestimates GFR above 60 mL/min/1.73m²; report as > 60 or use CKD-EPI 2021");
        }
        if let Some(w) = young {
            out = out.warn(w);
        }
        Ok(out)
    },
};

/// Fractional excretion of sodium.
pub static FENA: Calculator = Calculator {
    name: "fena",
    title: "Fractional Excretion of Sodium (FENa)",
    medcalc_id: Some(40),
    category: Category::Renal,
    summary: "Fractional excretion of sodium to separate prerenal azotaemia from intrinsic renal injury in oliguric AKI.",
    source: "Espinel CH, JAMA 1976;236:579. Miller TR et al., Ann Intern Med 1978;89:47.",
    formula: "FENa (%) = 100 x (urine Na x serum Cr) / (serum Na x urine Cr)",
    unit: "%",
    inputs: &[
        Input::qty("sodium", Q::Lab(Analyte::Sodium), "Serum sodium."),
        CREATININE,
        Input::qty("urine_sodium", Q::Lab(Analyte::UrineSodium), "Urine sodium."),
        Input::qty("urine_creatinine", Q::Lab(Analyte::UrineCreatinine), "Urine creatinine."),
    ],
    example: r#"{"sodium": 197, "creatinine": 1.56, "urine_sodium": 12, "urine_creatinine": {"value": 128.1, "unit": "mg/dL"}}"#,
    run: |a| {
        let sna = a.q("sodium")?;
        let scr = a.q("creatinine")?;
        let una = a.q("urine_sodium")?;
        let ucr = a.q("urine_creatinine")?;
        let fena = 100.0 * una * scr / (sna * ucr);
        let interp = band(
            fena,
            &[(1.0, "< 1%: suggests prerenal azotaemia"), (2.0, "1-2%: indeterminate")],
            "> 2%: suggests intrinsic renal injury (ATN)",
        );
        Ok(Outcome::num(fena)
            .interpret(interp)
            .warn("FENa is unreliable after diuretics (use FEUrea) and in chronic kidney disease"))
    },
};
