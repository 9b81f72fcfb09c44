//! Typed search values extracted from resource elements: tokens, strings, date ranges,
//! references and quantities, plus parsing of FHIR dates and references.

use super::fhirpath::{Item, ItemValue};
use serde_json::Value;

/// A half-open instant range `[start, end)` in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    /// First millisecond inside the range.
    pub start: i64,
    /// First millisecond after the range.
    pub end: i64,
}

/// One token: a system/code pair with display texts for `:text`.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Code system (absent for plain codes).
    pub system: Option<String>,
    /// The code or identifier value.
    pub code: Option<String>,
    /// Display and text strings (for `:text`).
    pub text: Vec<String>,
}

/// One quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    /// Numeric value.
    pub value: f64,
    /// Unit system.
    pub system: Option<String>,
    /// Coded unit.
    pub code: Option<String>,
    /// Human unit.
    pub unit: Option<String>,
}

/// Split a relative or absolute literal reference into `(type, id)`; history suffixes are dropped.
pub(crate) fn split_reference(r: &str) -> Option<(String, String)> {
    let r = r.split("/_history/").next().unwrap_or(r);
    let mut parts = r.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    if ty.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && !id.is_empty() && ty.chars().all(|c| c.is_ascii_alphanumeric()) {
        Some((ty.to_string(), id.to_string()))
    } else {
        None
    }
}

/// Normalise a string for FHIR string search: lower case, accents removed, each run of
/// white space one space (the grader compares the same way: [`emrgym_core::text`]).
pub(crate) fn normalize(s: &str) -> String {
    emrgym_core::text::search_fold(s)
}

fn json_items<'a>(items: &'a [Item<'a>]) -> impl Iterator<Item = (&'a Value, Option<&'a str>)> + 'a {
    items.iter().filter_map(|i| match i.value {
        ItemValue::Json(v) => Some((v, i.ty.as_deref())),
        ItemValue::Bool(_) => None,
    })
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Token values of the items (CodeableConcept, Coding, Identifier, ContactPoint, code, boolean, ...).
pub fn tokens(items: &[Item<'_>]) -> Vec<Token> {
    let mut out = Vec::new();
    for it in items {
        match it.value {
            ItemValue::Bool(b) => out.push(Token {
                system: None,
                code: Some(b.to_string()),
                text: vec![],
            }),
            ItemValue::Json(v) => token_of(v, &mut out),
        }
    }
    out
}

fn token_of(v: &Value, out: &mut Vec<Token>) {
    match v {
        Value::String(c) => out.push(Token {
            system: None,
            code: Some(c.clone()),
            text: vec![],
        }),
        Value::Bool(b) => out.push(Token {
            system: None,
            code: Some(b.to_string()),
            text: vec![],
        }),
        Value::Number(n) => out.push(Token {
            system: None,
            code: Some(n.to_string()),
            text: vec![],
        }),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                let text = s(v, "text");
                for c in codings {
                    let mut t = vec![];
                    t.extend(s(c, "display"));
                    t.extend(text.clone());
                    out.push(Token {
                        system: s(c, "system"),
                        code: s(c, "code"),
                        text: t,
                    });
                }
                if codings.is_empty() && text.is_some() {
                    out.push(Token {
                        system: None,
                        code: None,
                        text: text.into_iter().collect(),
                    });
                }
            } else if o.contains_key("code") || o.contains_key("display") {
                out.push(Token {
                    system: s(v, "system"),
                    code: s(v, "code"),
                    text: s(v, "display").into_iter().collect(),
                });
            } else if o.contains_key("value") {
                // Identifier or ContactPoint
                let mut text = vec![];
                if let Some(t) = o.get("type").and_then(|t| t.get("text")).and_then(Value::as_str) {
                    text.push(t.to_string());
                }
                let system = if o.contains_key("use")
                    && !o.contains_key("type")
                    && o.get("system").is_some_and(|s| s.as_str().is_some_and(|s| !s.contains(':')))
                {
                    None // ContactPoint.system is a code (phone/email), not a URI
                } else {
                    s(v, "system")
                };
                out.push(Token {
                    system,
                    code: o.get("value").map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                    text,
                });
            } else if let Some(t) = s(v, "text") {
                out.push(Token {
                    system: None,
                    code: None,
                    text: vec![t],
                });
            }
        }
        _ => {}
    }
}

/// String values (HumanName and Address parts expanded), un-normalised.
pub fn strings(items: &[Item<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for (v, _) in json_items(items) {
        match v {
            Value::String(x) => out.push(x.clone()),
            Value::Object(o) => {
                for k in [
                    "family",
                    "given",
                    "prefix",
                    "suffix",
                    "text",
                    "line",
                    "city",
                    "district",
                    "state",
                    "postalCode",
                    "country",
                ] {
                    match o.get(k) {
                        Some(Value::String(x)) => out.push(x.clone()),
                        Some(Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(str::to_string)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The strings a `string` search parameter matches: [`strings`], and for a HumanName also the
/// whole name as people write it, given names then family name ("Peter James Stafford"), and
/// each given name with the family name ("Peter Stafford", "James Stafford").
///
/// R4 leaves `name` "server defined": it "may match any of the string fields in the
/// HumanName, including family, given, prefix, suffix and/or text" (SearchParameter
/// `individual-name`). A name without `text` has no field holding the whole name, so on a
/// server matching fields only (HAPI FHIR) `name=Peter Stafford` finds no one; servers
/// that index the formatted name (Medplum) find Peter Stafford, as a clinician searching
/// an EHR expects. EMRGym matches both the fields and the written-out name, so a natural
/// search works and every search that worked before still does.
pub fn search_strings(items: &[Item<'_>]) -> Vec<String> {
    let mut out = strings(items);
    for (v, _) in json_items(items) {
        let Value::Object(o) = v else { continue };
        let Some(family) = o.get("family").and_then(Value::as_str) else {
            continue;
        };
        let given: Vec<&str> = match o.get("given") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if given.is_empty() {
            continue;
        }
        if given.len() > 1 {
            out.push(format!("{} {family}", given.join(" ")));
        }
        out.extend(given.iter().map(|g| format!("{g} {family}")));
    }
    out
}

/// Date ranges (date, dateTime, instant, Period, Timing.event).
pub fn dates(items: &[Item<'_>]) -> Vec<DateRange> {
    let mut out = Vec::new();
    for (v, _) in json_items(items) {
        match v {
            Value::String(x) => out.extend(parse_date(x)),
            Value::Object(o) => {
                if o.contains_key("start") || o.contains_key("end") {
                    let start = o
                        .get("start")
                        .and_then(Value::as_str)
                        .and_then(parse_date)
                        .map(|r| r.start)
                        .unwrap_or(i64::MIN);
                    let end = o
                        .get("end")
                        .and_then(Value::as_str)
                        .and_then(parse_date)
                        .map(|r| r.end)
                        .unwrap_or(i64::MAX);
                    out.push(DateRange { start, end });
                } else if let Some(Value::Array(ev)) = o.get("event") {
                    out.extend(ev.iter().filter_map(Value::as_str).filter_map(parse_date));
                }
            }
            _ => {}
        }
    }
    out
}

/// Reference strings, normalised to `Type/id` where they are literal references.
pub fn references(items: &[Item<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for (v, _) in json_items(items) {
        match v {
            Value::Object(o) => {
                if let Some(r) = o.get("reference").and_then(Value::as_str) {
                    out.push(normalize_reference(r));
                }
            }
            Value::String(canonical) => out.push(canonical.clone()),
            _ => {}
        }
    }
    out
}

/// `http://base/fhir/Patient/1/_history/2` → `Patient/1`; other strings unchanged.
pub(crate) fn normalize_reference(r: &str) -> String {
    if r.starts_with('#') || r.starts_with("urn:") {
        return r.to_string();
    }
    match split_reference(r) {
        Some((t, id)) => format!("{t}/{id}"),
        None => r.to_string(),
    }
}

/// Quantities (Quantity, Age, Duration, Money-like with value).
pub fn quantities(items: &[Item<'_>]) -> Vec<Quantity> {
    let mut out = Vec::new();
    for (v, _) in json_items(items) {
        match v {
            Value::Object(o) => {
                if let Some(value) = o.get("value").and_then(Value::as_f64) {
                    out.push(Quantity {
                        value,
                        system: s(v, "system"),
                        code: s(v, "code"),
                        unit: s(v, "unit"),
                    });
                }
            }
            Value::Number(n) => {
                if let Some(value) = n.as_f64() {
                    out.push(Quantity {
                        value,
                        system: None,
                        code: None,
                        unit: None,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Parse a FHIR date, dateTime or instant (any precision, with or without offset) into the
/// range it denotes. Values without an offset are taken as UTC. (The grammar is
/// [`emrgym_core::date::parse`], the one date parser.)
pub(crate) fn parse_date(s: &str) -> Option<DateRange> {
    emrgym_core::date::parse(s).map(|d| DateRange {
        start: d.start_ms,
        end: d.end_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn date_precision_becomes_range() {
        let r = parse_date("2020").unwrap();
        assert_eq!((r.start, r.end), (ms("2020-01-01T00:00:00Z"), ms("2021-01-01T00:00:00Z")));
        let r = parse_date("2020-12").unwrap();
        assert_eq!(r.end, ms("2021-01-01T00:00:00Z"));
        let r = parse_date("2020-02-28").unwrap();
        assert_eq!(r.end, ms("2020-02-29T00:00:00Z"));
        let r = parse_date("2020-02-28T10:00:00-04:00").unwrap();
        assert_eq!((r.start, r.end), (ms("2020-02-28T14:00:00Z"), ms("2020-02-28T14:00:01Z")));
        let r = parse_date("2020-02-28T10:00:00.5Z").unwrap();
        assert_eq!(r.end - r.start, 100);
        let r = parse_date("2020-02-28T10:00Z").unwrap();
        assert_eq!(r.end - r.start, 60_000);
    }

    #[test]
    fn bad_dates_rejected() {
        for bad in [
            "20",
            "2020-13",
            "2020-02-30",
            "2020-01-01T25:00:00Z",
            "yesterday",
            "2020-01-01T10:00:00+99:00",
            "2020-01-01T10",
        ] {
            assert!(parse_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn references_normalised() {
        assert_eq!(normalize_reference("http://x/fhir/Patient/7/_history/2"), "Patient/7");
        assert_eq!(normalize_reference("Patient/7"), "Patient/7");
        assert_eq!(normalize_reference("#contained"), "#contained");
        assert_eq!(split_reference("urn:uuid:abc"), None);
    }

    #[test]
    fn strings_fold_accents() {
        assert_eq!(normalize("Ébé Müller"), "ebe muller");
        assert_eq!(normalize("Ébé \t  Müller "), "ebe muller ");
    }
}
