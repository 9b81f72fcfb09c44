//! Values of the expression language: collections of booleans, numbers, text, instants,
//! calendar durations and JSON; date literals; conversions to JSON and to text; comparison
//! and equality; and the three-valued logic of `and`, `or`, `xor` and `implies`.

use super::eval::{EvalError, type_err};
use super::parse::Op;
use chrono::{DateTime, FixedOffset};
use emrgym_core::date::Precision as DatePrecision;
use serde_json::{Value, json};

/// One value in a collection.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// Boolean.
    Bool(bool),
    /// Number.
    Num(f64),
    /// Text.
    Str(String),
    /// Instant.
    Date(DateTime<FixedOffset>),
    /// Calendar duration: amount and unit.
    Dur(f64, DurUnit),
    /// A JSON object (or any other JSON, navigated by path).
    Json(Value),
}

/// Units of a calendar duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurUnit {
    /// Years (calendar).
    Year,
    /// Months (calendar).
    Month,
    /// Weeks.
    Week,
    /// Days.
    Day,
    /// Hours.
    Hour,
    /// Minutes.
    Minute,
    /// Seconds.
    Second,
}

/// A collection.
pub type Coll = Vec<V>;

/// Parse a date or date-time literal (`2023-11-13`, `2023-11-13T10:15:00+00:00`, `...Z`).
pub fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    // the one date parser; the expression language takes a month, a day, or a time with its
    // seconds (a bare year or a time without seconds is not a date literal here)
    let d = emrgym_core::date::parse(s)?;
    if matches!(d.precision, DatePrecision::Year | DatePrecision::Minute) {
        return None;
    }
    let offset = FixedOffset::east_opt(d.offset_minutes.unwrap_or(0).checked_mul(60)?)?;
    Some(DateTime::from_timestamp_millis(d.start_ms)?.with_timezone(&offset))
}

impl V {
    /// A JSON value as a collection item (arrays become several items, null none).
    pub fn from_json(v: &Value) -> Coll {
        match v {
            Value::Null => Vec::new(),
            Value::Bool(b) => vec![V::Bool(*b)],
            Value::Number(n) => vec![V::Num(n.as_f64().unwrap_or(f64::NAN))],
            Value::String(s) => vec![V::Str(s.clone())],
            Value::Array(a) => a.iter().flat_map(V::from_json).collect(),
            Value::Object(_) => vec![V::Json(v.clone())],
        }
    }

    /// Back to JSON.
    pub fn to_json(&self) -> Value {
        match self {
            V::Bool(b) => json!(b),
            V::Num(n) => num_json(*n),
            V::Str(s) => json!(s),
            V::Date(d) => json!(fmt_date(d)),
            V::Dur(n, u) => json!(format!("{} {u:?}", fmt_num(*n)).to_lowercase()),
            V::Json(v) => v.clone(),
        }
    }

    pub(super) fn as_date(&self) -> Option<DateTime<FixedOffset>> {
        match self {
            V::Date(d) => Some(*d),
            V::Str(s) => parse_datetime(s),
            _ => None,
        }
    }
}

/// A number as JSON: integral values as integers.
pub(crate) fn num_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// An instant as `YYYY-MM-DDThh:mm:ss+hh:mm`.
pub(crate) fn fmt_date(d: &DateTime<FixedOffset>) -> String {
    d.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// A collection as JSON: empty is null, one item is itself, several are an array.
pub fn coll_json(c: &Coll) -> Value {
    match c.as_slice() {
        [] => Value::Null,
        [one] => one.to_json(),
        many => Value::Array(many.iter().map(V::to_json).collect()),
    }
}

/// A collection as text (for templates): items joined by ", ".
pub(crate) fn coll_text(c: &Coll) -> String {
    c.iter()
        .map(|v| match v {
            V::Str(s) => s.clone(),
            V::Num(n) => fmt_num(*n),
            V::Bool(b) => b.to_string(),
            V::Date(d) => fmt_date(d),
            V::Dur(..) | V::Json(_) => v.to_json().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn single<'a>(c: &'a Coll, what: &str) -> Result<Option<&'a V>, EvalError> {
    match c.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(type_err(format!("{what}: expected one value, got {}", c.len()))),
    }
}

/// Boolean value of a collection: empty is `None` (false in conditions).
pub(crate) fn to_bool(c: &Coll) -> Result<Option<bool>, EvalError> {
    match single(c, "condition")? {
        None => Ok(None),
        Some(V::Bool(b)) => Ok(Some(*b)),
        Some(_) => Ok(Some(true)),
    }
}

pub(super) fn compare(a: &V, b: &V) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (V::Num(x), V::Num(y)) => x.partial_cmp(y),
        (V::Str(x), V::Str(y)) => {
            // two date strings compare as dates
            match (parse_datetime(x), parse_datetime(y)) {
                (Some(p), Some(q)) if x.len() >= 10 && y.len() >= 10 => p.partial_cmp(&q),
                _ => x.partial_cmp(y),
            }
        }
        (V::Date(_), _) | (_, V::Date(_)) => a.as_date()?.partial_cmp(&b.as_date()?),
        (V::Bool(x), V::Bool(y)) => x.partial_cmp(y),
        _ => None,
    }
}

pub(super) fn equal(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Json(x), V::Json(y)) => x == y,
        _ => compare(a, b) == Some(std::cmp::Ordering::Equal),
    }
}

pub(super) fn norm_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub(super) fn logic(op: Op, a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match op {
        Op::And => match (a, b) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Op::Or => match (a, b) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Op::Xor => match (a, b) {
            (Some(x), Some(y)) => Some(x != y),
            _ => None,
        },
        Op::Implies => match (a, b) {
            (Some(false), _) | (_, Some(true)) => Some(true),
            (Some(true), Some(false)) => Some(false),
            _ => None,
        },
        _ => None,
    }
}
