//! Calculator inputs: their declaration ([`Input`], [`Kind`], [`Need`]), the JSON Schema
//! generated from them, and [`Args`], which reads a JSON argument object, converts
//! quantities to canonical units, applies the missing-findings convention and records
//! the inputs and conventions actually used.

use super::units::Q;
use super::{CalcError, Calculator};
use chrono::NaiveDate;
use serde_json::{Map, Value, json};

/// The type of one input.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A number with a unit (`{"value": 1.2, "unit": "mg/dL"}` or a bare number in the canonical unit).
    Qty(Q),
    /// A unitless number (INR, pH) within bounds (inclusive).
    Number(f64, f64),
    /// An integer within bounds (inclusive).
    Int(i64, i64),
    /// Yes/no.
    Bool,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A structured value the calculator parses itself; the function gives its schema.
    Custom(fn() -> Value),
}

/// Whether an input must be given and what its absence means.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Must be given.
    Required,
    /// May be omitted; the calculator says what it then does.
    Optional,
    /// A clinical finding: omitted means absent/normal (the first choice for a choice), unless
    /// `missing_findings` is `refuse`.
    Finding,
    /// A convention with this default (a choice or a number as JSON text).
    Default(&'static str),
}

/// One input of a calculator.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    /// Argument name.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether it is required.
    pub need: Need,
    /// What it means, for a model and for the docs.
    pub doc: &'static str,
}

impl Input {
    /// A required quantity.
    pub const fn qty(name: &'static str, q: Q, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Qty(q),
            need: Need::Required,
            doc,
        }
    }
    /// A required unitless number.
    pub const fn number(name: &'static str, lo: f64, hi: f64, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Number(lo, hi),
            need: Need::Required,
            doc,
        }
    }
    /// A required integer.
    pub const fn int(name: &'static str, lo: i64, hi: i64, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Int(lo, hi),
            need: Need::Required,
            doc,
        }
    }
    /// A measured finding: a quantity that counts as normal when omitted.
    pub const fn measured(name: &'static str, q: Q, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Qty(q),
            need: Need::Finding,
            doc,
        }
    }
    /// A yes/no finding (absent when omitted).
    pub const fn finding(name: &'static str, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Bool,
            need: Need::Finding,
            doc,
        }
    }
    /// A required choice.
    pub const fn choice(name: &'static str, options: &'static [&'static str], doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Choice(options),
            need: Need::Required,
            doc,
        }
    }
    /// A graded finding: omitted means the first option.
    pub const fn graded(name: &'static str, options: &'static [&'static str], doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Choice(options),
            need: Need::Finding,
            doc,
        }
    }
    /// A convention: a choice with a default.
    pub const fn convention(name: &'static str, options: &'static [&'static str], default: &'static str, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Choice(options),
            need: Need::Default(default),
            doc,
        }
    }
    /// A required date.
    pub const fn date(name: &'static str, doc: &'static str) -> Input {
        Input {
            name,
            kind: Kind::Date,
            need: Need::Required,
            doc,
        }
    }
    /// Make this input optional.
    pub const fn optional(mut self) -> Input {
        self.need = Need::Optional;
        self
    }
    /// Give this input a default.
    pub const fn default(mut self, d: &'static str) -> Input {
        self.need = Need::Default(d);
        self
    }
    /// Make this input a finding (absent when omitted).
    pub const fn as_finding(mut self) -> Input {
        self.need = Need::Finding;
        self
    }
}

/// The sex input shared by many calculators.
pub const SEX: Input = Input::choice("sex", &["female", "male"], "Sex assigned at birth, as the formula defines it.");
/// The age input shared by many calculators.
pub const AGE: Input = Input::qty("age", Q::Age, "Age.");

const MISSING_FINDINGS: &str = "missing_findings";

fn has_findings(calc: &Calculator) -> bool {
    calc.inputs.iter().any(|i| matches!(i.need, Need::Finding))
}

/// Parsed arguments of one call.
#[derive(Debug)]
pub struct Args {
    calc: &'static Calculator,
    map: Map<String, Value>,
    refuse_missing: bool,
    inputs: Map<String, Value>,
    conventions: Map<String, Value>,
}

impl Args {
    /// Check names and build the argument reader.
    pub fn parse(calc: &'static Calculator, args: &Value) -> Result<Args, CalcError> {
        let map = match args {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => return Err(CalcError::NotAnObject(other.to_string())),
        };
        let findings = has_findings(calc);
        for k in map.keys() {
            let known = calc.inputs.iter().any(|i| i.name == k) || (findings && k == MISSING_FINDINGS);
            if !known {
                let mut names: Vec<&str> = calc.inputs.iter().map(|i| i.name).collect();
                if findings {
                    names.push(MISSING_FINDINGS);
                }
                return Err(CalcError::UnknownArgument {
                    name: k.clone(),
                    accepted: names.join(", "),
                });
            }
        }
        let mut a = Args {
            calc,
            map,
            refuse_missing: false,
            inputs: Map::new(),
            conventions: Map::new(),
        };
        if findings {
            let policy = match a.map.get(MISSING_FINDINGS) {
                None => "absent",
                Some(Value::String(s)) if s == "absent" || s == "refuse" => s.as_str(),
                Some(v) => {
                    return Err(CalcError::Invalid(format!(
                        "{MISSING_FINDINGS}: {v} is not one of \"absent\", \"refuse\""
                    )));
                }
            };
            a.refuse_missing = policy == "refuse";
            a.conventions.insert(MISSING_FINDINGS.into(), json!(policy));
        }
        Ok(a)
    }

    fn spec(&self, name: &str) -> Result<&'static Input, CalcError> {
        self.calc
            .inputs
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| CalcError::Invalid(format!("internal: {} reads undeclared input '{name}'", self.calc.name)))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn absent(&self, spec: &Input) -> Result<(), CalcError> {
        match spec.need {
            Need::Required => Err(CalcError::Missing(spec.name.to_string())),
            Need::Finding if self.refuse_missing => Err(CalcError::Missing(format!("{} (missing_findings is \"refuse\")", spec.name))),
            _ => Ok(()),
        }
    }

    /// Is this argument present?
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A quantity in its canonical unit (required unless declared otherwise).
    pub fn q(&mut self, name: &str) -> Result<f64, CalcError> {
        self.q_opt(name)?.ok_or_else(|| CalcError::Missing(name.to_string()))
    }

    /// An optional quantity in its canonical unit.
    pub fn q_opt(&mut self, name: &str) -> Result<Option<f64>, CalcError> {
        let spec = self.spec(name)?;
        let Kind::Qty(q) = spec.kind else {
            return Err(CalcError::Invalid(format!("internal: '{name}' is not a quantity")));
        };
        let Some(v) = self.get(name) else {
            self.absent(spec)?;
            if let Need::Default(d) = spec.need {
                let x: f64 = d
                    .parse()
                    .map_err(|_| CalcError::Invalid(format!("internal: bad default for {name}")))?;
                self.conventions.insert(name.into(), json!({"value": x, "unit": q.canonical()}));
                return Ok(Some(x));
            }
            return Ok(None);
        };
        let (value, unit) = match v {
            Value::Number(n) => (n.as_f64().unwrap_or(f64::NAN), None),
            Value::Object(o) => {
                let value = o
                    .get("value")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| CalcError::Invalid(format!("{name}: expected {{\"value\": number, \"unit\": string}}, got {v}")))?;
                let unit = o.get("unit").and_then(Value::as_str).ok_or_else(|| {
                    CalcError::Invalid(format!(
                        "{name}: the unit is missing; give {{\"value\": {value}, \"unit\": one of {}}}",
                        q.display_units().join(", ")
                    ))
                })?;
                if let Some(extra) = o.keys().find(|k| *k != "value" && *k != "unit") {
                    return Err(CalcError::Invalid(format!(
                        "{name}: unexpected field '{extra}' (fields: value, unit)"
                    )));
                }
                (value, Some(unit))
            }
            other => {
                return Err(CalcError::Invalid(format!(
                    "{name}: expected a number in {} or {{\"value\", \"unit\"}}, got {other}",
                    q.canonical()
                )));
            }
        };
        let x = q.to_canonical(name, value, unit)?;
        let rec = json!({"value": x, "unit": q.canonical()});
        if matches!(spec.need, Need::Default(_)) {
            self.conventions.insert(name.into(), rec);
        } else {
            self.inputs.insert(name.into(), rec);
        }
        Ok(Some(x))
    }

    /// A required unitless number.
    pub fn number(&mut self, name: &str) -> Result<f64, CalcError> {
        self.number_opt(name)?.ok_or_else(|| CalcError::Missing(name.to_string()))
    }

    /// An optional unitless number.
    pub fn number_opt(&mut self, name: &str) -> Result<Option<f64>, CalcError> {
        let spec = self.spec(name)?;
        let (lo, hi) = match spec.kind {
            Kind::Number(lo, hi) => (lo, hi),
            Kind::Int(lo, hi) => (lo as f64, hi as f64),
            _ => return Err(CalcError::Invalid(format!("internal: '{name}' is not a number"))),
        };
        let Some(v) = self.get(name) else {
            self.absent(spec)?;
            if let Need::Default(d) = spec.need {
                let x: f64 = d
                    .parse()
                    .map_err(|_| CalcError::Invalid(format!("internal: bad default for {name}")))?;
                self.conventions.insert(name.into(), json!(x));
                return Ok(Some(x));
            }
            return Ok(None);
        };
        let x = v
            .as_f64()
            .ok_or_else(|| CalcError::Invalid(format!("{name}: expected a number, got {v}")))?;
        if matches!(spec.kind, Kind::Int(..)) && x.fract() != 0.0 {
            return Err(CalcError::Invalid(format!("{name}: expected a whole number, got {x}")));
        }
        if !(lo..=hi).contains(&x) {
            return Err(CalcError::Implausible(format!(
                "{name} = {x} is outside the accepted range {lo} to {hi}"
            )));
        }
        if matches!(spec.need, Need::Default(_)) {
            self.conventions.insert(name.into(), v.clone());
        } else {
            self.inputs.insert(name.into(), v.clone());
        }
        Ok(Some(x))
    }

    /// A yes/no finding: omitted means absent (or an error under `missing_findings: refuse`).
    pub fn flag(&mut self, name: &str) -> Result<bool, CalcError> {
        let spec = self.spec(name)?;
        let Some(v) = self.get(name) else {
            self.absent(spec)?;
            if matches!(spec.need, Need::Required) {
                return Err(CalcError::Missing(name.into()));
            }
            self.inputs.insert(name.into(), json!("not given: absent"));
            return Ok(false);
        };
        let b = v
            .as_bool()
            .ok_or_else(|| CalcError::Invalid(format!("{name}: expected true or false, got {v}")))?;
        self.inputs.insert(name.into(), json!(b));
        Ok(b)
    }

    /// A choice; a graded finding defaults to its first option, a convention to its default.
    pub fn choice(&mut self, name: &str) -> Result<&'static str, CalcError> {
        self.choice_opt(name)?.ok_or_else(|| CalcError::Missing(name.to_string()))
    }

    /// An optional choice.
    pub fn choice_opt(&mut self, name: &str) -> Result<Option<&'static str>, CalcError> {
        let spec = self.spec(name)?;
        let Kind::Choice(options) = spec.kind else {
            return Err(CalcError::Invalid(format!("internal: '{name}' is not a choice")));
        };
        let Some(v) = self.get(name) else {
            self.absent(spec)?;
            return Ok(match spec.need {
                Need::Finding => {
                    let first = options.first().copied();
                    if let Some(f) = first {
                        self.inputs.insert(name.into(), json!(format!("not given: {f}")));
                    }
                    first
                }
                Need::Default(d) => {
                    let d = options.iter().copied().find(|o| *o == d);
                    if let Some(d) = d {
                        self.conventions.insert(name.into(), json!(d));
                    }
                    d
                }
                _ => None,
            });
        };
        let s = v.as_str().unwrap_or_default();
        let found = options.iter().copied().find(|o| *o == s).ok_or_else(|| {
            CalcError::Invalid(format!(
                "{name}: {v} is not one of {}",
                options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if matches!(spec.need, Need::Default(_)) {
            self.conventions.insert(name.into(), json!(found));
        } else {
            self.inputs.insert(name.into(), json!(found));
        }
        Ok(Some(found))
    }

    /// A required date.
    pub fn date(&mut self, name: &str) -> Result<NaiveDate, CalcError> {
        let spec = self.spec(name)?;
        let Some(v) = self.get(name) else {
            return Err(CalcError::Missing(spec.name.into()));
        };
        let s = v
            .as_str()
            .ok_or_else(|| CalcError::Invalid(format!("{name}: expected a date string YYYY-MM-DD, got {v}")))?;
        // the one date parser, at day precision
        let d = emrgym_core::date::parse(s)
            .filter(|d| d.precision == emrgym_core::date::Precision::Day)
            .and_then(|d| chrono::DateTime::from_timestamp_millis(d.start_ms))
            .map(|t| t.date_naive())
            .ok_or_else(|| CalcError::Invalid(format!("{name}: '{s}' is not a date in the form YYYY-MM-DD")))?;
        self.inputs.insert(name.into(), json!(s));
        Ok(d)
    }

    /// A structured input, unparsed.
    pub fn raw(&mut self, name: &str) -> Result<Option<Value>, CalcError> {
        let spec = self.spec(name)?;
        match self.get(name).cloned() {
            Some(v) => {
                self.inputs.insert(name.into(), v.clone());
                Ok(Some(v))
            }
            None => {
                self.absent(spec)?;
                Ok(None)
            }
        }
    }

    /// The recorded inputs and conventions.
    pub fn into_record(self) -> (Map<String, Value>, Map<String, Value>) {
        (self.inputs, self.conventions)
    }
}

fn input_schema(i: &Input) -> Value {
    let mut doc = i.doc.to_string();
    let mut s = match i.kind {
        Kind::Qty(q) => {
            let units = q.display_units();
            if units.len() > 1 {
                doc.push_str(&format!(
                    " A bare number is in {}; other units: {}.",
                    q.canonical(),
                    units[1..].join(", ")
                ));
            } else {
                doc.push_str(&format!(" Unit: {}.", q.canonical()));
            }
            json!({
                "type": ["number", "object"],
                "properties": {
                    "value": {"type": "number"},
                    "unit": {"type": "string", "enum": q.unit_names()}
                },
                "required": ["value", "unit"],
                "additionalProperties": false
            })
        }
        Kind::Number(lo, hi) => json!({"type": "number", "minimum": lo, "maximum": hi}),
        Kind::Int(lo, hi) => json!({"type": "integer", "minimum": lo, "maximum": hi}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Choice(options) => json!({"type": "string", "enum": options}),
        Kind::Date => json!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}),
        Kind::Custom(f) => f(),
    };
    match i.need {
        Need::Finding => match i.kind {
            Kind::Choice(o) => doc.push_str(&format!(" Omitted: \"{}\".", o.first().copied().unwrap_or_default())),
            _ => doc.push_str(" Omitted: absent."),
        },
        Need::Default(d) => {
            doc.push_str(&format!(" Default: {d}."));
            if let Some(obj) = s.as_object_mut() {
                let dv = serde_json::from_str::<Value>(d).unwrap_or_else(|_| json!(d));
                obj.insert("default".into(), dv);
            }
        }
        Need::Optional | Need::Required => {}
    }
    if let Some(obj) = s.as_object_mut() {
        let mut with_doc = Map::new();
        with_doc.insert("description".into(), json!(doc));
        with_doc.extend(std::mem::take(obj));
        *obj = with_doc;
    }
    s
}

/// The JSON Schema (draft 2020-12 subset that OpenAI tools accept) of a calculator's arguments.
pub fn schema(calc: &Calculator) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for i in calc.inputs {
        props.insert(i.name.into(), input_schema(i));
        if matches!(i.need, Need::Required) {
            required.push(i.name);
        }
    }
    if has_findings(calc) {
        props.insert(
            MISSING_FINDINGS.into(),
            json!({
                "description": "What an omitted finding means: \"absent\" (not present or normal, the usual convention) or \"refuse\" (report which findings are missing instead of scoring). Default: \"absent\".",
                "type": "string",
                "enum": ["absent", "refuse"],
                "default": "absent"
            }),
        );
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false
    })
}
