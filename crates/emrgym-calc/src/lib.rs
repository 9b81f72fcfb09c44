//! Medical calculators: the specification of each calculator (inputs with units,
//! conventions, source, formula), argument parsing with one-step unit conversion, the
//! shown work (intermediate steps), and the registry of all calculators.
//!
//! A calculator is data plus one function: [`Calculator`] describes its inputs, and
//! `run` receives parsed [`Args`] and returns an [`Outcome`]. [`run`] turns a JSON
//! argument object into a [`CalcResult`] that carries the value, unit, interpretation,
//! the steps, warnings, the conventions in force and the normalised inputs.
//!
//! Entry points: [`all`] and [`find`] (the registry), [`run`] / [`run_named`] (one
//! calculation), [`schema`] (a calculator's argument schema), [`convert_units`].

mod args;
mod body;
mod cardiac;
mod critical;
pub mod docs;
mod electrolytes;
mod liver;
mod meds;
mod obstetric;
mod pulmonary;
mod renal;
pub mod units;

#[cfg(test)]
mod tests;

pub use args::{Args, Input, Kind, Need};
use serde::Serialize;
use serde_json::{Map, Value, json};
use units::{Analyte, Q};

/// Why a calculation was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CalcError {
    /// No calculator by that name.
    #[error("no calculator named '{0}'; `emrgym calc list` shows them")]
    UnknownCalculator(String),
    /// The arguments are not a JSON object.
    #[error("arguments must be a JSON object, got {0}")]
    NotAnObject(String),
    /// A required argument is absent.
    #[error("missing required argument '{0}'")]
    Missing(String),
    /// An argument the calculator does not take.
    #[error("unknown argument '{name}'; accepted: {accepted}")]
    UnknownArgument {
        /// The argument.
        name: String,
        /// The accepted names.
        accepted: String,
    },
    /// A unit the input does not accept.
    #[error("{input}: unit '{unit}' is not accepted; use one of {accepted}")]
    Unit {
        /// The argument.
        input: String,
        /// The unit given.
        unit: String,
        /// Accepted units.
        accepted: String,
    },
    /// Wrong type or malformed value.
    #[error("{0}")]
    Invalid(String),
    /// A value no living patient can have.
    #[error("{0}")]
    Implausible(String),
    /// The inputs are outside the formula's validity.
    #[error("{0}")]
    OutOfValidity(String),
}

/// Broad grouping used in listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Body measures and fluids.
    Body,
    /// Kidney function.
    Renal,
    /// Electrolytes and acid-base.
    Electrolytes,
    /// Heart and vessels, ECG.
    Cardiac,
    /// Liver.
    Liver,
    /// Lungs, infection, thromboembolism.
    Pulmonary,
    /// Critical care and severity scores.
    Critical,
    /// Medication doses and equivalents.
    Medication,
    /// Pregnancy dates.
    Obstetric,
    /// Lipids and metabolism.
    Metabolic,
}

/// One calculator's specification.
#[derive(Debug)]
pub struct Calculator {
    /// Tool name (snake_case, stable).
    pub name: &'static str,
    /// Human title.
    pub title: &'static str,
    /// MedCalc-Bench calculator id, where it has one.
    pub medcalc_id: Option<u16>,
    /// Grouping.
    pub category: Category,
    /// What it computes and when to use it, written for a model.
    pub summary: &'static str,
    /// Primary source(s).
    pub source: &'static str,
    /// The formula or scoring rule, in text.
    pub formula: &'static str,
    /// Output unit (or "points", "date", ...).
    pub unit: &'static str,
    /// Inputs, including conventions (choices with a default).
    pub inputs: &'static [Input],
    /// One worked example: JSON arguments.
    pub example: &'static str,
    /// The computation.
    pub run: fn(&mut Args) -> Result<Outcome, CalcError>,
}

/// One shown step of the work.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// What this step is.
    pub label: String,
    /// Its value.
    pub value: Value,
}

/// What a calculator function returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The result (a number, a date string, or an object for compound results).
    pub value: Value,
    /// Category or risk band, where the score defines one.
    pub interpretation: Option<String>,
    /// Shown work.
    pub steps: Vec<Step>,
    /// Warnings (input near or outside validity, conventions that matter).
    pub warnings: Vec<String>,
}

impl Outcome {
    /// A numeric result.
    pub fn num(value: f64) -> Outcome {
        Outcome {
            value: json!(value),
            interpretation: None,
            steps: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// An integer score.
    pub fn points(value: i64) -> Outcome {
        Outcome {
            value: json!(value),
            interpretation: None,
            steps: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Any JSON result.
    pub fn value(value: Value) -> Outcome {
        Outcome {
            value,
            interpretation: None,
            steps: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Add a numeric step.
    pub fn step(mut self, label: impl Into<String>, value: f64) -> Outcome {
        self.steps.push(Step {
            label: label.into(),
            value: json!(value),
        });
        self
    }

    /// Add a text step.
    pub fn note(mut self, label: impl Into<String>, text: impl Into<String>) -> Outcome {
        self.steps.push(Step {
            label: label.into(),
            value: Value::String(text.into()),
        });
        self
    }

    /// Append several steps.
    pub fn steps(mut self, steps: Vec<Step>) -> Outcome {
        self.steps.extend(steps);
        self
    }

    /// Set the interpretation.
    pub fn interpret(mut self, text: impl Into<String>) -> Outcome {
        self.interpretation = Some(text.into());
        self
    }

    /// Add a warning.
    pub fn warn(mut self, text: impl Into<String>) -> Outcome {
        self.warnings.push(text.into());
        self
    }

    /// Add warnings.
    pub fn warnings(mut self, w: Vec<String>) -> Outcome {
        self.warnings.extend(w);
        self
    }
}

/// The full, serialisable result of one calculation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalcResult {
    /// Calculator name.
    pub calculator: &'static str,
    /// The result.
    pub value: Value,
    /// Its unit.
    pub unit: &'static str,
    /// Category or risk band.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<String>,
    /// Shown work.
    pub steps: Vec<Step>,
    /// Warnings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The inputs as used, in canonical units (missing findings marked).
    pub inputs: Map<String, Value>,
    /// Conventions in force (defaults included).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub conventions: Map<String, Value>,
    /// The formula.
    pub formula: &'static str,
    /// The source.
    pub source: &'static str,
}

/// Points awarded by one scored item (a builder for score calculators).
#[derive(Debug, Default)]
pub struct Tally {
    total: f64,
    steps: Vec<Step>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally::default()
    }

    /// Record an item and its points (0 when not met).
    pub fn add(&mut self, label: &str, points: f64) {
        self.total += points;
        self.steps.push(Step {
            label: label.to_string(),
            value: json!(points_json(points)),
        });
    }

    /// Record a yes/no item worth `points` when met.
    pub fn item(&mut self, label: &str, met: bool, points: f64) {
        self.add(label, if met { points } else { 0.0 });
    }

    /// The total.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The steps so far.
    pub fn into_steps(self) -> Vec<Step> {
        self.steps
    }
}

fn points_json(p: f64) -> Value {
    if p.fract() == 0.0 && p.abs() < 1e15 {
        json!(p as i64)
    } else {
        json!(p)
    }
}

/// Pick the label of the first band whose upper bound `value` is below (`bands` ascending;
/// the last band catches everything above).
pub fn band(value: f64, bands: &[(f64, &'static str)], last: &'static str) -> &'static str {
    bands.iter().find(|(hi, _)| value < *hi).map(|(_, l)| *l).unwrap_or(last)
}

/// Every calculator, in listing order.
pub fn all() -> Vec<&'static Calculator> {
    let mut v: Vec<&'static Calculator> = Vec::new();
    v.extend(body::ALL.iter().copied());
    v.extend(renal::ALL.iter().copied());
    v.extend(electrolytes::ALL.iter().copied());
    v.extend(cardiac::ALL.iter().copied());
    v.extend(liver::ALL.iter().copied());
    v.extend(pulmonary::ALL.iter().copied());
    v.extend(critical::ALL.iter().copied());
    v.extend(meds::ALL.iter().copied());
    v.extend(obstetric::ALL.iter().copied());
    v
}

/// Find a calculator by name.
pub fn find(name: &str) -> Option<&'static Calculator> {
    all().into_iter().find(|c| c.name == name)
}

/// Run a calculator on JSON arguments.
pub fn run(calc: &'static Calculator, args: &Value) -> Result<CalcResult, CalcError> {
    let mut a = Args::parse(calc, args)?;
    let out = (calc.run)(&mut a)?;
    let (inputs, conventions) = a.into_record();
    Ok(CalcResult {
        calculator: calc.name,
        value: out.value,
        unit: calc.unit,
        interpretation: out.interpretation,
        steps: out.steps,
        warnings: out.warnings,
        inputs,
        conventions,
        formula: calc.formula,
        source: calc.source,
    })
}

/// Run a calculator by name.
pub fn run_named(name: &str, args: &Value) -> Result<CalcResult, CalcError> {
    let calc = find(name).ok_or_else(|| CalcError::UnknownCalculator(name.to_string()))?;
    run(calc, args)
}

/// The JSON Schema of a calculator's arguments.
pub fn schema(calc: &Calculator) -> Value {
    args::schema(calc)
}

/// `convert_units`: convert a lab value between units of one analyte.
pub fn convert_units(args: &Value) -> Result<Value, CalcError> {
    let obj = args.as_object().ok_or_else(|| CalcError::NotAnObject(args.to_string()))?;
    for k in obj.keys() {
        if !["analyte", "value", "from", "to"].contains(&k.as_str()) {
            return Err(CalcError::UnknownArgument {
                name: k.clone(),
                accepted: "analyte, value, from, to".into(),
            });
        }
    }
    let get_str = |k: &str| -> Result<&str, CalcError> {
        obj.get(k)
            .ok_or_else(|| CalcError::Missing(k.to_string()))?
            .as_str()
            .ok_or_else(|| CalcError::Invalid(format!("{k} must be a string")))
    };
    let id = get_str("analyte")?;
    let analyte = Analyte::from_id(id).ok_or_else(|| {
        CalcError::Invalid(format!(
            "unknown analyte '{id}'; known: {}",
            Analyte::ALL.iter().map(|a| a.id()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let value = obj
        .get("value")
        .ok_or_else(|| CalcError::Missing("value".into()))?
        .as_f64()
        .ok_or_else(|| CalcError::Invalid("value must be a number".into()))?;
    let from = get_str("from")?;
    let to = get_str("to")?;
    let q = Q::Lab(analyte);
    let canonical = q.to_canonical(id, value, Some(from))?;
    let out = q.from_canonical(canonical, to).ok_or_else(|| CalcError::Unit {
        input: "to".into(),
        unit: to.to_string(),
        accepted: q.display_units().join(", "),
    })?;
    Ok(json!({
        "analyte": id,
        "value": out,
        "unit": q.find_unit(to).and_then(|d| d.names.first()).copied().unwrap_or(to),
        "from": {"value": value, "unit": from},
        "basis": analyte.basis(),
    }))
}

/// The JSON Schema of `convert_units`' arguments.
pub fn convert_units_schema() -> Value {
    let mut units: Vec<&str> = Vec::new();
    for a in Analyte::ALL {
        for n in Q::Lab(a).unit_names() {
            if !units.contains(&n) {
                units.push(n);
            }
        }
    }
    json!({
        "type": "object",
        "properties": {
            "analyte": {"type": "string", "enum": Analyte::ALL.iter().map(|a| a.id()).collect::<Vec<_>>(), "description": "What was measured (enzyme = AST/ALT activity)."},
            "value": {"type": "number", "description": "The measured value in the `from` unit."},
            "from": {"type": "string", "enum": units, "description": "Unit of `value`."},
            "to": {"type": "string", "enum": units, "description": "Unit wanted."}
        },
        "required": ["analyte", "value", "from", "to"],
        "additionalProperties": false
    })
}

/// Markdown table of units per analyte (for docs).
pub fn analyte_table() -> String {
    let mut s = String::from("| Analyte | Canonical unit | Accepted units | Basis |\n|---|---|---|---|\n");
    for a in Analyte::ALL {
        let q = Q::Lab(a);
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            a.id(),
            q.canonical(),
            q.unit_names().join(", "),
            a.basis()
        ));
    }
    s
}
