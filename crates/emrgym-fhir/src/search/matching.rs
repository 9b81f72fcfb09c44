//! Matching parsed clauses against one resource, the index keys a resource contributes,
//! and sort values.

use super::query::{Clause, Modifier, Prefix, SearchValue, SystemMatch};
use crate::fhirpath::{self, Item};
use crate::params::{ParamDef, ParamType};
use crate::values::{self, DateRange, Quantity, Token, normalize};
use serde_json::Value;

/// Evaluate a parameter's expression on a resource.
pub fn extract<'a>(param: &ParamDef, ty: &str, resource: &'a Value) -> Vec<Item<'a>> {
    fhirpath::eval(param.expr_for(ty), ty, resource)
}

fn token_matches(system: &SystemMatch, code: &Option<String>, t: &Token) -> bool {
    let sys_ok = match system {
        SystemMatch::Any => true,
        SystemMatch::NoSystem => t.system.is_none(),
        SystemMatch::Is(s) => t.system.as_deref() == Some(s.as_str()),
    };
    sys_ok && code.as_ref().is_none_or(|c| t.code.as_deref() == Some(c.as_str()))
}

fn text_matches(needle: &str, t: &Token) -> bool {
    let n = normalize(needle);
    t.text.iter().any(|s| {
        let h = normalize(s);
        h.starts_with(&n) || h.contains(&format!(" {n}"))
    })
}

fn cmp_ranges(prefix: Prefix, p: DateRange, r: DateRange, now_ms: i64) -> bool {
    match prefix {
        Prefix::Eq => r.start >= p.start && r.end <= p.end,
        Prefix::Ne => !(r.start >= p.start && r.end <= p.end),
        Prefix::Gt => r.end > p.end,
        Prefix::Lt => r.start < p.start,
        Prefix::Ge => r.end > p.start,
        Prefix::Le => r.start < p.end,
        Prefix::Sa => r.start >= p.end,
        Prefix::Eb => r.end <= p.start,
        Prefix::Ap => {
            let gap = ((now_ms as i128 - p.start as i128).abs() / 10) as i64;
            let lo = p.start.saturating_sub(gap);
            let hi = p.end.saturating_add(gap);
            r.start < hi && r.end > lo
        }
    }
}

fn cmp_number(prefix: Prefix, value: f64, low: f64, high: f64, x: f64) -> bool {
    match prefix {
        Prefix::Eq => x >= low && x < high,
        Prefix::Ne => !(x >= low && x < high),
        Prefix::Gt | Prefix::Sa => x > value,
        Prefix::Lt | Prefix::Eb => x < value,
        Prefix::Ge => x >= value,
        Prefix::Le => x <= value,
        Prefix::Ap => (x - value).abs() <= (value.abs() * 0.1).max(high - low),
    }
}

fn quantity_matches(q: &Quantity, prefix: Prefix, value: f64, low: f64, high: f64, system: &Option<String>, code: &Option<String>) -> bool {
    if let Some(s) = system
        && q.system.as_deref() != Some(s.as_str())
    {
        return false;
    }
    if let Some(c) = code
        && q.code.as_deref() != Some(c.as_str())
        && q.unit.as_deref() != Some(c.as_str())
    {
        return false;
    }
    cmp_number(prefix, value, low, high, q.value)
}

/// Does one OR value match the extracted items?
pub(crate) fn value_matches(
    ty: ParamType,
    modifier: &Modifier,
    v: &SearchValue,
    items: &[Item<'_>],
    now_ms: i64,
    components: &[crate::params::Component],
) -> bool {
    match (ty, v) {
        (ParamType::Token, SearchValue::Token { system, code, raw }) => {
            let toks = values::tokens(items);
            if *modifier == Modifier::Text {
                toks.iter().any(|t| text_matches(raw, t))
            } else {
                toks.iter().any(|t| token_matches(system, code, t))
            }
        }
        (ParamType::String, SearchValue::Str(s)) => {
            let strs = values::search_strings(items);
            match modifier {
                Modifier::Exact => strs.iter().any(|x| x == s),
                Modifier::Contains => {
                    let n = normalize(s);
                    strs.iter().any(|x| normalize(x).contains(&n))
                }
                _ => {
                    let n = normalize(s);
                    strs.iter().any(|x| normalize(x).starts_with(&n))
                }
            }
        }
        (ParamType::Uri, SearchValue::Uri(u)) => values::strings(items).iter().any(|x| x == u),
        (ParamType::Date, SearchValue::Date(prefix, p)) => values::dates(items).iter().any(|r| cmp_ranges(*prefix, *p, *r, now_ms)),
        (ParamType::Reference, SearchValue::Reference(keys)) => values::references(items).iter().any(|r| keys.iter().any(|k| k == r)),
        (
            ParamType::Quantity | ParamType::Number,
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            },
        ) => values::quantities(items)
            .iter()
            .any(|q| quantity_matches(q, *prefix, *value, *low, *high, system, code)),
        (ParamType::Composite, SearchValue::Composite(parts)) => items.iter().any(|it| {
            let fhirpath::ItemValue::Json(el) = it.value else {
                return false;
            };
            components.iter().zip(parts.iter()).all(|(c, pv)| {
                let sub = fhirpath::eval(&c.expr, "", el);
                value_matches(c.ty, &Modifier::None, pv, &sub, now_ms, &[])
            })
        }),
        _ => false,
    }
}

/// Does a clause (all its OR values, with its modifier) match a resource?
pub(crate) fn clause_matches(clause: &Clause, ty: &str, resource: &Value, now_ms: i64) -> bool {
    let items = extract(&clause.param, ty, resource);
    match clause.modifier {
        Modifier::Missing(want_missing) => items.is_empty() == want_missing,
        Modifier::Not => !clause
            .values
            .iter()
            .any(|v| value_matches(clause.param.ty, &Modifier::None, v, &items, now_ms, &clause.param.components)),
        _ => clause
            .values
            .iter()
            .any(|v| value_matches(clause.param.ty, &clause.modifier, v, &items, now_ms, &clause.param.components)),
    }
}

// ---------------------------------------------------------------- indexing

/// Index keys a resource contributes for a token or reference parameter.
pub(crate) fn index_keys(param: &ParamDef, ty: &str, resource: &Value) -> Vec<String> {
    let items = extract(param, ty, resource);
    let mut keys = Vec::new();
    match param.ty {
        ParamType::Token => {
            for t in values::tokens(&items) {
                if let Some(code) = &t.code {
                    keys.push(format!("*|{code}"));
                    match &t.system {
                        Some(s) => keys.push(format!("{s}|{code}")),
                        None => keys.push(format!("|{code}")),
                    }
                }
                if let Some(s) = &t.system {
                    keys.push(format!("{s}|*"));
                }
            }
        }
        ParamType::Reference => keys.extend(values::references(&items)),
        _ => {}
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The index keys that exactly answer a clause, if it can be answered from an index.
pub(crate) fn lookup_keys(clause: &Clause) -> Option<Vec<String>> {
    if clause.modifier != Modifier::None && !matches!(clause.modifier, Modifier::Type(_)) {
        return None;
    }
    let mut keys = Vec::new();
    for v in &clause.values {
        match v {
            SearchValue::Token { system, code, .. } => keys.push(match (system, code) {
                (SystemMatch::Any, Some(c)) => format!("*|{c}"),
                (SystemMatch::NoSystem, Some(c)) => format!("|{c}"),
                (SystemMatch::Is(s), Some(c)) => format!("{s}|{c}"),
                (SystemMatch::Is(s), None) => format!("{s}|*"),
                _ => return None,
            }),
            SearchValue::Reference(ks) => keys.extend(ks.iter().cloned()),
            _ => return None,
        }
    }
    Some(keys)
}

// ---------------------------------------------------------------- sorting

/// A sortable key extracted from a resource.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum SortValue {
    /// Numbers, and dates in ms.
    Num(f64),
    /// Strings and codes.
    Text(String),
}

/// The sort value of `param` on `resource` (lowest for ascending, highest for descending).
pub(crate) fn sort_value(param: &ParamDef, ty: &str, resource: &Value, descending: bool) -> Option<SortValue> {
    let items = extract(param, ty, resource);
    let pick_num = |it: Vec<f64>| -> Option<SortValue> {
        let v = if descending {
            it.into_iter().reduce(f64::max)
        } else {
            it.into_iter().reduce(f64::min)
        };
        v.map(SortValue::Num)
    };
    let pick_text = |mut it: Vec<String>| -> Option<SortValue> {
        it.sort();
        let v = if descending { it.pop() } else { it.into_iter().next() };
        v.map(SortValue::Text)
    };
    match param.ty {
        ParamType::Date => {
            let ds = values::dates(&items);
            pick_num(
                ds.iter()
                    .map(|r| {
                        if descending {
                            (r.end.saturating_sub(1)) as f64
                        } else {
                            r.start as f64
                        }
                    })
                    .collect(),
            )
        }
        ParamType::Number | ParamType::Quantity => pick_num(values::quantities(&items).iter().map(|q| q.value).collect()),
        ParamType::String => pick_text(values::strings(&items).iter().map(|s| normalize(s)).collect()),
        ParamType::Token => pick_text(values::tokens(&items).into_iter().filter_map(|t| t.code).collect()),
        ParamType::Reference | ParamType::Uri => pick_text(values::references(&items)),
        ParamType::Composite => None,
    }
}
