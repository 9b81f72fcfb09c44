//! Liver: MELD-Na (OPTN 2016), MELD 3.0 (OPTN 2023), Child-Pugh and FIB-4.

use super::args::{AGE, SEX};
use super::units::{Analyte, Q};
use super::{Args, CalcError, Calculator, Category, Input, Outcome, Tally, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[&MELD_NA, &MELD_3, &CHILD_PUGH, &FIB4];

const CREATININE: Input = Input::qty("creatinine", Q::Lab(Analyte::Creatinine), "Serum creatinine.");
const BILIRUBIN: Input = Input::qty("bilirubin", Q::Lab(Analyte::Bilirubin), "Total bilirubin.");
const SODIUM: Input = Input::qty("sodium", Q::Lab(Analyte::Sodium), "Serum sodium.");
const INR: Input = Input::number("inr", 0.5, 20.0, "International normalised ratio.");
const DIALYSIS: Input = Input::finding("dialysis_twice_past_week", "Dialysis at least twice in the past 7 days.");
const CVVHD: Input = Input::finding(
    "cvvhd_24h_past_week",
    "Continuous veno-venous haemodialysis for 24 hours or more in the past 7 days.",
);

fn dialysis(a: &mut Args) -> Result<bool, CalcError> {
    Ok(a.flag("dialysis_twice_past_week")? | a.flag("cvvhd_24h_past_week")?)
}

fn meld_mortality(score: f64) -> &'static str {
    band(
        score,
        &[
            (10.0, "90-day mortality about 1.9% (MELD < 10)"),
            (20.0, "90-day mortality about 6.0% (MELD 10-19)"),
            (30.0, "90-day mortality about 19.6% (MELD 20-29)"),
            (40.0, "90-day mortality about 52.6% (MELD 30-39)"),
        ],
        "90-day mortality about 71.3% (MELD >= 40)",
    )
}

/// MELD-Na (OPTN 2016).
pub static MELD_NA: Calculator = Calculator {
    name: "meld_na",
    title: "MELD-Na (UNOS/OPTN 2016)",
    medcalc_id: Some(23),
    category: Category::Liver,
    summary: "MELD-Na score for end-stage liver disease (OPTN allocation 2016-2023), with 90-day mortality.",
    source: "OPTN Policy 9.1 (2016): MELD(i) and the sodium adjustment of Kim WR et al., N Engl J Med 2008;359:1018. Mortality bands: Wiesner R et al., Gastroenterology 2003;124:91.",
    formula: "Bounds: Cr, bilirubin, INR >= 1; Cr <= 4 (dialysis: 4); Na 125-137. MELD(i) = 0.957 ln Cr + 0.378 ln bili + 1.120 ln INR + 0.643, rounded to 0.1, x 10. If MELD(i) > 11: MELD = MELD(i) + 1.32 (137 - Na) - 0.033 MELD(i) (137 - Na). Round to an integer; cap 40.",
    unit: "points",
    inputs: &[CREATININE, BILIRUBIN, INR, SODIUM, DIALYSIS, CVVHD],
    example: r#"{"creatinine": 7.78, "bilirubin": {"value": 36.1, "unit": "mg/dL"}, "inr": 2.2, "sodium": 133}"#,
    run: |a| {
        let cr_in = a.q("creatinine")?;
        let bili_in = a.q("bilirubin")?;
        let inr_in = a.number("inr")?;
        let na_in = a.q("sodium")?;
        let dial = dialysis(a)?;
        let cr = if dial { 4.0 } else { cr_in.clamp(1.0, 4.0) };
        let bili = bili_in.max(1.0);
        let inr = inr_in.max(1.0);
        let na = na_in.clamp(125.0, 137.0);
        let raw = 0.957 * cr.ln() + 0.378 * bili.ln() + 1.120 * inr.ln() + 0.643;
        let meld_i = (raw * 10.0).round();
        let meld = if meld_i > 11.0 {
            meld_i + 1.32 * (137.0 - na) - 0.033 * meld_i * (137.0 - na)
        } else {
            meld_i
        };
        let score = meld.round().min(40.0);
        Ok(Outcome::points(score as i64)
            .step("creatinine used (mg/dL)", cr)
            .step("bilirubin used (mg/dL)", bili)
            .step("INR used", inr)
            .step("sodium used (mEq/L)", na)
            .step("MELD(i) before rounding", raw)
            .step("MELD(i) = round(x, 0.1) x 10", meld_i)
            .step("MELD-Na before rounding", meld)
            .interpret(meld_mortality(score)))
    },
};

/// MELD 3.0 (OPTN 2023).
pub static MELD_3: Calculator = Calculator {
    name: "meld_3",
    title: "MELD 3.0 (OPTN 2023)",
    medcalc_id: None,
    category: Category::Liver,
    summary: "MELD 3.0, the OPTN liver allocation score since July 2023 (adds sex and albumin to MELD-Na), for candidates aged 12 and over.",
    source: "Kim WR et al., Gastroenterology 2021;161:1887 (MELD 3.0). OPTN Policy 9.1 (2023).",
    formula: "Bounds: bili, INR, Cr >= 1; Cr <= 3 (dialysis: 3); Na 125-137; albumin 1.5-3.5 g/dL. MELD 3.0 = 1.33 (female) + 4.56 ln bili + 0.82 (137 - Na) - 0.24 (137 - Na) ln bili + 9.09 ln INR + 11.14 ln Cr + 1.85 (3.5 - alb) - 1.83 (3.5 - alb) ln Cr + 6, rounded to an integer (capped at 40 under OPTN policy by default).",
    unit: "points",
    inputs: &[
        SEX,
        BILIRUBIN,
        SODIUM,
        INR,
        CREATININE,
        Input::qty("albumin", Q::Lab(Analyte::Albumin), "Serum albumin."),
        DIALYSIS,
        CVVHD,
        Input::convention(
            "cap",
            &["optn_40", "none"],
            "optn_40",
            "optn_40: cap the score at 40 as allocation policy does; none: report the uncapped model value.",
        ),
    ],
    example: r#"{"sex": "female", "bilirubin": 2.5, "sodium": 130, "inr": 1.6, "creatinine": 1.4, "albumin": {"value": 2.9, "unit": "g/dL"}}"#,
    run: |a| {
        let female = a.choice("sex")? == "female";
        let bili = a.q("bilirubin")?.max(1.0);
        let na = a.q("sodium")?.clamp(125.0, 137.0);
        let inr = a.number("inr")?.max(1.0);
        let cr_in = a.q("creatinine")?;
        let alb = a.q("albumin")?.clamp(1.5, 3.5);
        let cr = if dialysis(a)? { 3.0 } else { cr_in.clamp(1.0, 3.0) };
        let v = if female { 1.33 } else { 0.0 } + 4.56 * bili.ln() + 0.82 * (137.0 - na) - 0.24 * (137.0 - na) * bili.ln()
            + 9.09 * inr.ln()
            + 11.14 * cr.ln()
            + 1.85 * (3.5 - alb)
            - 1.83 * (3.5 - alb) * cr.ln()
            + 6.0;
        let capped = a.choice("cap")? == "optn_40";
        let score = if capped { v.round().min(40.0) } else { v.round() };
        Ok(Outcome::points(score as i64)
            .step("bilirubin used (mg/dL)", bili)
            .step("sodium used (mEq/L)", na)
            .step("INR used", inr)
            .step("creatinine used (mg/dL)", cr)
            .step("albumin used (g/dL)", alb)
            .step("MELD 3.0 before rounding", v)
            .interpret(meld_mortality(score)))
    },
};

/// Child-Pugh.
pub static CHILD_PUGH: Calculator = Calculator {
    name: "child_pugh",
    title: "Child-Pugh Score for Cirrhosis Mortality",
    medcalc_id: Some(15),
    category: Category::Liver,
    summary: "Severity of chronic liver disease (class A/B/C) from bilirubin, albumin, INR, ascites and encephalopathy.",
    source: "Pugh RN et al., Br J Surg 1973;60:646 (modification of Child CG, Turcotte JG 1964).",
    formula: "Bilirubin < 2 / 2-3 / > 3 mg/dL (cholestatic: < 4 / 4-10 / > 10); albumin > 3.5 / 2.8-3.5 / < 2.8 g/dL; INR < 1.7 / 1.7-2.3 / > 2.3; ascites none / slight / moderate-severe; encephalopathy none / grade 1-2 / grade 3-4: 1 / 2 / 3 points each. Class A 5-6, B 7-9, C 10-15.",
    unit: "points",
    inputs: &[
        BILIRUBIN,
        Input::qty("albumin", Q::Lab(Analyte::Albumin), "Serum albumin."),
        INR,
        Input::graded("ascites", &["none", "slight", "moderate_to_severe"], "Ascites."),
        Input::graded(
            "encephalopathy",
            &["none", "grade_1_2", "grade_3_4"],
            "Hepatic encephalopathy (West Haven grade).",
        ),
        Input::convention(
            "bilirubin_scale",
            &["standard", "cholestatic"],
            "standard",
            "cholestatic: the higher bilirubin bands used in primary biliary cholangitis and sclerosing cholangitis.",
        ),
    ],
    example: r#"{"bilirubin": {"value": 2.6, "unit": "µmol/L"}, "albumin": 3.7, "inr": 2.0, "ascites": "none", "encephalopathy": "none"}"#,
    run: |a| {
        let bili = a.q("bilirubin")?;
        let alb = a.q("albumin")?;
        let inr = a.number("inr")?;
        let (b_lo, b_hi) = if a.choice("bilirubin_scale")? == "cholestatic" {
            (4.0, 10.0)
        } else {
            (2.0, 3.0)
        };
        let mut t = Tally::new();
        t.add(
            "bilirubin",
            if bili < b_lo {
                1.0
            } else if bili <= b_hi {
                2.0
            } else {
                3.0
            },
        );
        t.add(
            "albumin",
            if alb > 3.5 {
                1.0
            } else if alb >= 2.8 {
                2.0
            } else {
                3.0
            },
        );
        t.add(
            "INR",
            if inr < 1.7 {
                1.0
            } else if inr <= 2.3 {
                2.0
            } else {
                3.0
            },
        );
        let asc = a.choice("ascites")?;
        t.add(
            "ascites",
            match asc {
                "none" => 1.0,
                "slight" => 2.0,
                _ => 3.0,
            },
        );
        let enc = a.choice("encephalopathy")?;
        t.add(
            "encephalopathy",
            match enc {
                "none" => 1.0,
                "grade_1_2" => 2.0,
                _ => 3.0,
            },
        );
        let s = t.total();
        let interp = if s <= 6.0 {
            "class A (5-6): well-compensated disease"
        } else if s <= 9.0 {
            "class B (7-9): significant functional compromise"
        } else {
            "class C (10-15): decompensated disease"
        };
        Ok(Outcome::points(s as i64).steps(t.into_steps()).interpret(interp))
    },
};

/// FIB-4.
pub static FIB4: Calculator = Calculator {
    name: "fib4",
    title: "Fibrosis-4 (FIB-4) Index for Liver Fibrosis",
    medcalc_id: Some(19),
    category: Category::Liver,
    summary: "Non-invasive estimate of advanced liver fibrosis from age, AST, ALT and platelets.",
    source: "Sterling RK et al., Hepatology 2006;43:1317. Cut-offs: Shah AG et al., Clin Gastroenterol Hepatol 2009;7:1104; age >= 65: McPherson S et al., Am J Gastroenterol 2017;112:740.",
    formula: "FIB-4 = age x AST (U/L) / (platelets (10^9/L) x sqrt(ALT (U/L)))",
    unit: "index",
    inputs: &[
        AGE,
        Input::qty("ast", Q::Lab(Analyte::Enzyme), "Aspartate aminotransferase."),
        Input::qty("alt", Q::Lab(Analyte::Enzyme), "Alanine aminotransferase."),
        Input::qty("platelets", Q::Lab(Analyte::Platelets), "Platelet count."),
    ],
    example: r#"{"age": 35, "ast": 107, "alt": 104, "platelets": {"value": 181000, "unit": "/µL"}}"#,
    run: |a| {
        let age = a.q("age")?;
        let ast = a.q("ast")?;
        let alt = a.q("alt")?;
        let plt = a.q("platelets")?;
        let v = age * ast / (plt * alt.sqrt());
        let low = if age >= 65.0 { 2.0 } else { 1.45 };
        let interp = if v < low {
            format!("< {low}: advanced fibrosis unlikely")
        } else if v <= 3.25 {
            format!("{low}-3.25: indeterminate; consider elastography")
        } else {
            "> 3.25: advanced fibrosis likely".to_string()
        };
        let mut out = Outcome::num(v).interpret(interp);
        if !(35.0..=65.0).contains(&age) {
            out = out.warn("FIB-4 is less accurate below 35 and above 65 years");
        }
        Ok(out)
    },
};
