//! Medication equivalents: morphine milligram equivalents (CDC 2022 or 2016 factor
//! table) and corticosteroid dose conversion.

use super::units::Q;
use super::{CalcError, Calculator, Category, Input, Kind, Need, Outcome};
use serde_json::{Value, json};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[&MME, &STEROID_CONVERSION];

/// Opioids the MME calculator knows, with (CDC 2022, CDC 2016) factors; `None` = not in that table.
const OPIOIDS: &[(&str, Option<f64>, Option<f64>)] = &[
    ("codeine", Some(0.15), Some(0.15)),
    ("fentanyl_transdermal", Some(2.4), Some(2.4)),
    ("fentanyl_buccal", None, Some(0.13)),
    ("fentanyl_film_or_oral_spray", None, Some(0.18)),
    ("fentanyl_nasal_spray", None, Some(0.16)),
    ("hydrocodone", Some(1.0), Some(1.0)),
    ("hydromorphone", Some(5.0), Some(4.0)),
    ("levorphanol", None, Some(11.0)),
    ("meperidine", None, Some(0.1)),
    ("methadone", Some(4.7), Some(f64::NAN)),
    ("morphine", Some(1.0), Some(1.0)),
    ("oxycodone", Some(1.5), Some(1.5)),
    ("oxymorphone", Some(3.0), Some(3.0)),
    ("tapentadol", Some(0.4), Some(0.4)),
    ("tramadol", Some(0.2), Some(0.1)),
];

fn mme_schema() -> Value {
    json!({
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "properties": {
                "drug": {"type": "string", "enum": OPIOIDS.iter().map(|o| o.0).collect::<Vec<_>>()},
                "dose": {"type": "number", "exclusiveMinimum": 0, "description": "Dose per administration; for fentanyl_transdermal the patch rate in µg/h."},
                "unit": {"type": "string", "enum": ["mg", "µg", "mcg", "µg/h", "mcg/h"], "description": "mg, µg (buccal/film/nasal fentanyl) or µg/h (transdermal fentanyl)."},
                "doses_per_day": {"type": "number", "exclusiveMinimum": 0, "description": "Administrations per day (1 for a patch)."}
            },
            "required": ["drug", "dose", "unit", "doses_per_day"],
            "additionalProperties": false
        }
    })
}

/// CDC 2016 methadone factor by total daily dose (mg).
fn methadone_2016(daily_mg: f64) -> f64 {
    if daily_mg <= 20.0 {
        4.0
    } else if daily_mg <= 40.0 {
        8.0
    } else if daily_mg <= 60.0 {
        10.0
    } else {
        12.0
    }
}

/// Morphine milligram equivalents.
pub static MME: Calculator = Calculator {
    name: "morphine_milligram_equivalents",
    title: "Morphine Milligram Equivalents (MME) Calculator",
    medcalc_id: Some(49),
    category: Category::Medication,
    summary: "Total daily morphine milligram equivalents of a patient's opioids. The factor table is a convention: CDC 2022 (default) or CDC 2016 (which also lists transmucosal fentanyl, levorphanol, meperidine and dose-tiered methadone).",
    source: "Dowell D et al., CDC Clinical Practice Guideline for Prescribing Opioids for Pain, MMWR Recomm Rep 2022;71(3):1 (Table). CDC 2016 guideline conversion table (Dowell D et al., MMWR Recomm Rep 2016;65(1):1).",
    formula: "MME/day = sum over drugs of dose x doses per day x factor (fentanyl patch: µg/h x 2.4). CDC 2022: codeine 0.15, fentanyl patch 2.4, hydrocodone 1, hydromorphone 5, methadone 4.7, morphine 1, oxycodone 1.5, oxymorphone 3, tapentadol 0.4, tramadol 0.2. CDC 2016 differs: hydromorphone 4, tramadol 0.1, methadone 4/8/10/12 by daily dose (<= 20, 21-40, 41-60, > 60 mg), and adds fentanyl buccal 0.13, film/oral spray 0.18, nasal spray 0.16 (per µg), levorphanol 11, meperidine 0.1.",
    unit: "MME/day",
    inputs: &[
        Input {
            name: "medications",
            kind: Kind::Custom(mme_schema),
            need: Need::Required,
            doc: "Each opioid: drug, dose, unit and doses per day.",
        },
        Input::convention("factor_table", &["cdc2022", "cdc2016"], "cdc2022", "Which conversion-factor table."),
    ],
    example: r#"{"medications": [{"drug": "oxycodone", "dose": 10, "unit": "mg", "doses_per_day": 3}, {"drug": "fentanyl_transdermal", "dose": 25, "unit": "µg/h", "doses_per_day": 1}]}"#,
    run: |a| {
        let table = a.choice("factor_table")?;
        let meds = a.raw("medications")?.unwrap_or(Value::Null);
        let list = meds
            .as_array()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| CalcError::Invalid("medications: expected a non-empty list".into()))?;
        let mut total = 0.0;
        let mut out = Outcome::num(0.0);
        for (i, m) in list.iter().enumerate() {
            let field = |k: &str| m.get(k).ok_or_else(|| CalcError::Missing(format!("medications[{i}].{k}")));
            let drug = field("drug")?.as_str().unwrap_or_default();
            let (_, f22, f16) = OPIOIDS.iter().find(|o| o.0 == drug).copied().ok_or_else(|| {
                CalcError::Invalid(format!(
                    "medications[{i}].drug: '{drug}' is not one of {}",
                    OPIOIDS.iter().map(|o| o.0).collect::<Vec<_>>().join(", ")
                ))
            })?;
            let dose = field("dose")?
                .as_f64()
                .filter(|d| *d > 0.0 && d.is_finite())
                .ok_or_else(|| CalcError::Implausible(format!("medications[{i}].dose must be a number above 0")))?;
            let per_day = field("doses_per_day")?
                .as_f64()
                .filter(|d| *d > 0.0 && *d <= 48.0)
                .ok_or_else(|| CalcError::Implausible(format!("medications[{i}].doses_per_day must be a number above 0 and at most 48")))?;
            let unit = field("unit")?.as_str().unwrap_or_default();
            let patch = drug == "fentanyl_transdermal";
            let microgram_drug = drug.starts_with("fentanyl_") && !patch;
            let amount = match (unit, patch, microgram_drug) {
                ("µg/h" | "mcg/h", true, _) => dose,
                ("µg" | "mcg", false, true) => dose,
                ("mg", false, false) => dose,
                ("µg" | "mcg", false, false) => Q::Dose.to_canonical(&format!("medications[{i}].dose"), dose, Some("µg"))?,
                ("mg", false, true) => dose * 1000.0,
                _ => {
                    return Err(CalcError::Unit {
                        input: format!("medications[{i}].unit ({drug})"),
                        unit: unit.to_string(),
                        accepted: if patch {
                            "µg/h".into()
                        } else if microgram_drug {
                            "µg, mg".into()
                        } else {
                            "mg, µg".into()
                        },
                    });
                }
            };
            let factor = match table {
                "cdc2016" => f16.map(|f| if f.is_nan() { methadone_2016(amount * per_day) } else { f }),
                _ => f22,
            };
            let factor = factor.ok_or_else(|| {
                CalcError::OutOfValidity(format!(
                    "{drug} has no conversion factor in the {table} table; use factor_table \"cdc2016\" or omit it"
                ))
            })?;
            let mme = amount * per_day * factor;
            total += mme;
            out = out.step(format!("{drug}: {amount} x {per_day}/day x {factor}"), mme);
        }
        if table == "cdc2016" && list.iter().any(|m| m.get("drug").and_then(Value::as_str) == Some("methadone")) {
            out = out.warn("CDC 2016 methadone factors rise with the daily dose; the 12x tier covers 61-80 mg/day and is applied above it");
        }
        out.value = json!(total);
        let interp = if total >= 90.0 {
            ">= 90 MME/day: substantially increased overdose risk; avoid or carefully justify"
        } else if total >= 50.0 {
            "50-89 MME/day: increased overdose risk; reassess benefits and risks, offer naloxone"
        } else {
            "< 50 MME/day"
        };
        Ok(out
            .interpret(interp)
            .warn("MME compares exposure; do not use it to convert one opioid to another"))
    },
};

/// Equivalent glucocorticoid doses (mg).
const STEROIDS: &[(&str, f64)] = &[
    ("betamethasone", 0.75),
    ("cortisone", 25.0),
    ("dexamethasone", 0.75),
    ("hydrocortisone", 20.0),
    ("methylprednisolone", 4.0),
    ("prednisolone", 5.0),
    ("prednisone", 5.0),
    ("triamcinolone", 4.0),
];
const STEROID_NAMES: &[&str] = &[
    "betamethasone",
    "cortisone",
    "dexamethasone",
    "hydrocortisone",
    "methylprednisolone",
    "prednisolone",
    "prednisone",
    "triamcinolone",
];

/// Steroid conversion.
pub static STEROID_CONVERSION: Calculator = Calculator {
    name: "steroid_conversion",
    title: "Steroid Conversion Calculator",
    medcalc_id: Some(24),
    category: Category::Medication,
    summary: "Equivalent dose of another systemic glucocorticoid (anti-inflammatory potency; oral and IV are treated as equivalent).",
    source: "Equivalent doses as tabulated by Liu D et al., Allergy Asthma Clin Immunol 2013;9:30 (after Meikle AW, Tyler FH, Am J Med 1977;63:200).",
    formula: "target dose = dose x equivalent(target) / equivalent(source); equivalents (mg): betamethasone 0.75, cortisone 25, dexamethasone 0.75, hydrocortisone 20, methylprednisolone 4, prednisolone 5, prednisone 5, triamcinolone 4",
    unit: "mg",
    inputs: &[
        Input::choice("from_drug", STEROID_NAMES, "The glucocorticoid given."),
        Input::qty("dose", Q::Dose, "Its dose."),
        Input::choice("to_drug", STEROID_NAMES, "The glucocorticoid to convert to."),
    ],
    example: r#"{"from_drug": "hydrocortisone", "dose": {"value": 65.867, "unit": "mg"}, "to_drug": "dexamethasone"}"#,
    run: |a| {
        let from = a.choice("from_drug")?;
        let dose = a.q("dose")?;
        let to = a.choice("to_drug")?;
        let eq = |d: &str| STEROIDS.iter().find(|s| s.0 == d).map(|s| s.1).unwrap_or(f64::NAN);
        let (ef, et) = (eq(from), eq(to));
        let v = dose * et / ef;
        Ok(Outcome::num(v)
            .step(format!("{from} equivalent dose (mg)"), ef)
            .step(format!("{to} equivalent dose (mg)"), et)
            .step("prednisone-equivalent dose (mg)", dose * 5.0 / ef)
            .warn("equivalence covers glucocorticoid potency only; mineralocorticoid activity and duration of action differ"))
    },
};
