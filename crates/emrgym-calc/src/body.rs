//! Body measures and fluids: BMI, body surface area, ideal, adjusted and target body
//! weight, and maintenance fluids (4-2-1 rule).

use super::args::SEX;
use super::units::Q;
use super::{Calculator, Category, Input, Outcome, band};

/// Everything in this file.
pub const ALL: &[&Calculator] = &[&BMI, &BSA, &IBW, &ABW, &TARGET_WEIGHT, &MAINTENANCE_FLUIDS];

const WEIGHT: Input = Input::qty("weight", Q::Weight, "Body weight.");
const HEIGHT: Input = Input::qty("height", Q::Height, "Height.");

/// Devine ideal body weight in kg, with a warning below 60 inches.
pub(super) fn devine_ibw(male: bool, height_cm: f64, warnings: &mut Vec<String>) -> f64 {
    let inches = height_cm / 2.54;
    if inches < 60.0 {
        warnings.push(format!(
            "height {inches:.1} in is below 60 in: the Devine formula was defined for 60 in and taller and extrapolates here"
        ));
    }
    (if male { 50.0 } else { 45.5 }) + 2.3 * (inches - 60.0)
}

/// BMI.
pub static BMI: Calculator = Calculator {
    name: "bmi",
    title: "Body Mass Index (BMI)",
    medcalc_id: Some(6),
    category: Category::Body,
    summary: "Body mass index from weight and height, with the WHO adult weight category.",
    source: "Quetelet; WHO Technical Report Series 894 (2000) for the adult categories.",
    formula: "BMI = weight (kg) / height (m)^2",
    unit: "kg/m²",
    inputs: &[WEIGHT, HEIGHT],
    example: r#"{"weight": {"value": 68, "unit": "kg"}, "height": {"value": 182, "unit": "cm"}}"#,
    run: |a| {
        let w = a.q("weight")?;
        let h = a.q("height")? / 100.0;
        let bmi = w / (h * h);
        let cat = band(
            bmi,
            &[
                (18.5, "underweight (< 18.5)"),
                (25.0, "normal weight (18.5 to < 25)"),
                (30.0, "overweight (25 to < 30)"),
                (35.0, "obesity class I (30 to < 35)"),
                (40.0, "obesity class II (35 to < 40)"),
            ],
            "obesity class III (>= 40)",
        );
        Ok(Outcome::num(bmi).step("height (m)", h).interpret(cat))
    },
};

/// Body surface area.
pub static BSA: Calculator = Calculator {
    name: "bsa",
    title: "Body Surface Area",
    medcalc_id: Some(60),
    category: Category::Body,
    summary: "Body surface area from weight and height (Mosteller by default, Du Bois on request).",
    source: "Mosteller RD, N Engl J Med 1987;317:1098. Du Bois D, Du Bois EF, Arch Intern Med 1916;17:863.",
    formula: "Mosteller: sqrt(height cm x weight kg / 3600). Du Bois: 0.007184 x weight^0.425 x height^0.725",
    unit: "m²",
    inputs: &[
        WEIGHT,
        HEIGHT,
        Input::convention("formula", &["mosteller", "du_bois"], "mosteller", "Which BSA formula."),
    ],
    example: r#"{"weight": 85, "height": 180}"#,
    run: |a| {
        let w = a.q("weight")?;
        let h = a.q("height")?;
        let v = match a.choice("formula")? {
            "du_bois" => 0.007184 * w.powf(0.425) * h.powf(0.725),
            _ => (w * h / 3600.0).sqrt(),
        };
        Ok(Outcome::num(v))
    },
};

/// Ideal body weight (Devine).
pub static IBW: Calculator = Calculator {
    name: "ideal_body_weight",
    title: "Ideal Body Weight (Devine)",
    medcalc_id: Some(10),
    category: Category::Body,
    summary: "Ideal body weight by the Devine formula, used for drug dosing and ventilator settings.",
    source: "Devine BJ, Drug Intell Clin Pharm 1974;8:650.",
    formula: "IBW = 50 kg (male) or 45.5 kg (female) + 2.3 kg x (height in inches - 60)",
    unit: "kg",
    inputs: &[SEX, HEIGHT],
    example: r#"{"sex": "male", "height": {"value": 173, "unit": "cm"}}"#,
    run: |a| {
        let male = a.choice("sex")? == "male";
        let h = a.q("height")?;
        let mut w = Vec::new();
        let ibw = devine_ibw(male, h, &mut w);
        Ok(Outcome::num(ibw).step("height (in)", h / 2.54).warnings(w))
    },
};

/// Adjusted body weight.
pub static ABW: Calculator = Calculator {
    name: "adjusted_body_weight",
    title: "Adjusted Body Weight",
    medcalc_id: Some(62),
    category: Category::Body,
    summary: "Adjusted body weight for dosing in obesity: ideal body weight plus 40% of the excess.",
    source: "Devine 1974 for IBW; the 0.4 correction factor as used for aminoglycoside dosing (Bauer, Applied Clinical Pharmacokinetics).",
    formula: "ABW = IBW + 0.4 x (actual weight - IBW)",
    unit: "kg",
    inputs: &[SEX, WEIGHT, HEIGHT],
    example: r#"{"sex": "female", "weight": 78, "height": 160}"#,
    run: |a| {
        let male = a.choice("sex")? == "male";
        let w = a.q("weight")?;
        let h = a.q("height")?;
        let mut warn = Vec::new();
        let ibw = devine_ibw(male, h, &mut warn);
        let abw = ibw + 0.4 * (w - ibw);
        if w < ibw {
            warn.push("actual weight is below ideal body weight: adjusted weight is normally used only when actual exceeds ideal".into());
        }
        Ok(Outcome::num(abw).step("ideal body weight (kg)", ibw).warnings(warn))
    },
};

/// Target weight for a BMI.
pub static TARGET_WEIGHT: Calculator = Calculator {
    name: "target_weight",
    title: "Target Weight",
    medcalc_id: Some(61),
    category: Category::Body,
    summary: "The body weight that gives a target BMI at the patient's height.",
    source: "Definition of BMI (weight / height^2).",
    formula: "target weight = target BMI x height (m)^2",
    unit: "kg",
    inputs: &[Input::qty("target_bmi", Q::Bmi, "Target body mass index."), HEIGHT],
    example: r#"{"target_bmi": 23.2, "height": {"value": 72, "unit": "in"}}"#,
    run: |a| {
        let bmi = a.q("target_bmi")?;
        let h = a.q("height")? / 100.0;
        Ok(Outcome::num(bmi * h * h).step("height (m)", h))
    },
};

/// Maintenance fluids (Holliday-Segar 4-2-1).
pub static MAINTENANCE_FLUIDS: Calculator = Calculator {
    name: "maintenance_fluids",
    title: "Maintenance Fluids (4-2-1 rule)",
    medcalc_id: Some(22),
    category: Category::Body,
    summary: "Hourly maintenance IV fluid rate from body weight by the Holliday-Segar 4-2-1 rule.",
    source: "Holliday MA, Segar WE, Pediatrics 1957;19:823.",
    formula: "< 10 kg: 4 mL/kg/h; 10-20 kg: 40 + 2 x (kg - 10); > 20 kg: 60 + (kg - 20) mL/h",
    unit: "mL/h",
    inputs: &[WEIGHT],
    example: r#"{"weight": {"value": 76, "unit": "kg"}}"#,
    run: |a| {
        let w = a.q("weight")?;
        let rate = if w < 10.0 {
            4.0 * w
        } else if w <= 20.0 {
            40.0 + 2.0 * (w - 10.0)
        } else {
            60.0 + (w - 20.0)
        };
        Ok(Outcome::num(rate).step("per day (mL)", rate * 24.0))
    },
};
