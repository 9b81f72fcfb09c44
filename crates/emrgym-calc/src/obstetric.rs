//! Pregnancy dates: estimated due date, estimated conception date and gestational age
//! from the last menstrual period.

use super::{CalcError, Calculator, Category, Input, Kind, Need, Outcome};
use chrono::{Days, Months, NaiveDate};
use serde_json::json;

/// Everything in this file.
pub const ALL: &[&Calculator] = &[&DUE_DATE, &CONCEPTION_DATE, &GESTATIONAL_AGE];

const LMP: Input = Input::date("lmp", "First day of the last menstrual period (YYYY-MM-DD).");
const CYCLE: Input = Input {
    name: "cycle_length",
    kind: Kind::Int(20, 45),
    need: Need::Default("28"),
    doc: "Usual menstrual cycle length in days.",
};

fn shift(d: NaiveDate, days: i64) -> Result<NaiveDate, CalcError> {
    let r = if days >= 0 {
        d.checked_add_days(Days::new(days as u64))
    } else {
        d.checked_sub_days(Days::new(days.unsigned_abs()))
    };
    r.ok_or_else(|| CalcError::Invalid(format!("date out of range: {d} {days:+} days")))
}

fn iso(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Estimated due date.
pub static DUE_DATE: Calculator = Calculator {
    name: "estimated_due_date",
    title: "Estimated Due Date",
    medcalc_id: Some(13),
    category: Category::Obstetric,
    summary: "Estimated date of delivery from the last menstrual period, adjusted for cycle length. The rule is a convention: 280 days (default) or Naegele's calendar rule (+1 year, -3 months, +7 days), which can differ by 1-3 days.",
    source: "Naegele FC, 1812; ACOG Committee Opinion 700 (2017): LMP + 280 days for a 28-day cycle.",
    formula: "days: EDD = LMP + 280 days + (cycle length - 28). naegele_calendar: EDD = LMP + 1 year - 3 months + 7 days + (cycle length - 28).",
    unit: "date",
    inputs: &[
        LMP,
        CYCLE,
        Input::convention("rule", &["days", "naegele_calendar"], "days", "How 40 weeks are counted."),
    ],
    example: r#"{"lmp": "2000-02-24", "cycle_length": 30}"#,
    run: |a| {
        let lmp = a.date("lmp")?;
        let cycle = a.number("cycle_length")? as i64;
        let base = match a.choice("rule")? {
            "naegele_calendar" => lmp
                .checked_add_months(Months::new(9))
                .and_then(|d| d.checked_add_days(Days::new(7)))
                .ok_or_else(|| CalcError::Invalid(format!("date out of range: {lmp}")))?,
            _ => shift(lmp, 280)?,
        };
        let edd = shift(base, cycle - 28)?;
        Ok(Outcome::value(json!(iso(edd)))
            .note("before cycle adjustment", iso(base))
            .step("cycle adjustment (days)", (cycle - 28) as f64))
    },
};

/// Estimated conception date.
pub static CONCEPTION_DATE: Calculator = Calculator {
    name: "estimated_conception_date",
    title: "Estimated Date of Conception",
    medcalc_id: Some(68),
    category: Category::Obstetric,
    summary: "Estimated conception (ovulation) date from the last menstrual period. The rule is a convention: ovulation 14 days before the next period, i.e. LMP + (cycle - 14) (default), or a fixed LMP + 14 days; they agree for a 28-day cycle.",
    source: "Wilcox AJ et al., BMJ 2000;321:1259 (timing of ovulation); ACOG Committee Opinion 700.",
    formula: "cycle_adjusted: LMP + (cycle length - 14) days. lmp_plus_14: LMP + 14 days.",
    unit: "date",
    inputs: &[
        LMP,
        CYCLE,
        Input::convention(
            "rule",
            &["cycle_adjusted", "lmp_plus_14"],
            "cycle_adjusted",
            "How ovulation is placed in the cycle.",
        ),
    ],
    example: r#"{"lmp": "2017-01-07"}"#,
    run: |a| {
        let lmp = a.date("lmp")?;
        let cycle = a.number("cycle_length")? as i64;
        let offset = if a.choice("rule")? == "lmp_plus_14" { 14 } else { cycle - 14 };
        let d = shift(lmp, offset)?;
        Ok(Outcome::value(json!(iso(d))).step("days after LMP", offset as f64))
    },
};

/// Gestational age.
pub static GESTATIONAL_AGE: Calculator = Calculator {
    name: "gestational_age",
    title: "Estimated Gestational Age",
    medcalc_id: Some(69),
    category: Category::Obstetric,
    summary: "Gestational age in completed weeks and days from the last menstrual period to a given date (the clinical 'today').",
    source: "ACOG Committee Opinion 700 (2017): gestational age from the first day of the LMP.",
    formula: "days = current date - LMP; gestational age = (days div 7) weeks + (days mod 7) days",
    unit: "weeks+days",
    inputs: &[
        LMP,
        Input::date(
            "current_date",
            "The date to compute the age at, usually the encounter date (YYYY-MM-DD).",
        ),
    ],
    example: r#"{"lmp": "2020-12-23", "current_date": "2021-08-21"}"#,
    run: |a| {
        let lmp = a.date("lmp")?;
        let today = a.date("current_date")?;
        let days = (today - lmp).num_days();
        if days < 0 {
            return Err(CalcError::Invalid(format!("current_date {today} is before lmp {lmp}")));
        }
        let mut out = Outcome::value(json!({"weeks": days / 7, "days": days % 7})).step("days since LMP", days as f64);
        if days > 44 * 7 {
            out = out.warn(format!("{} weeks is beyond any term pregnancy; check the dates", days / 7));
        }
        let trimester = if days < 14 * 7 {
            "first trimester"
        } else if days < 28 * 7 {
            "second trimester"
        } else {
            "third trimester"
        };
        Ok(out.interpret(format!("{}w{}d, {trimester}", days / 7, days % 7)))
    },
};
