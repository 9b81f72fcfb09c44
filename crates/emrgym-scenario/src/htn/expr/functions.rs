//! Built-in functions: the table of names and arities that parsing checks calls against,
//! and their evaluation (collections, numbers, text, dates, and the clinical-equivalence
//! functions whose rules live in [`crate::htn::equiv`]).

use super::eval::{EvalError, Scope, eval, type_err};
use super::parse::Expr;
use super::value::{Coll, V, coll_text, equal, single, to_bool};
use chrono::TimeZone;
use serde_json::Value;

const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("where", 1, 1),
    ("select", 1, 1),
    ("exists", 0, 1),
    ("all", 1, 1),
    ("empty", 0, 0),
    ("count", 0, 0),
    ("first", 0, 0),
    ("last", 0, 0),
    ("tail", 0, 0),
    ("iif", 2, 3),
    ("not", 0, 0),
    ("abs", 0, 0),
    ("round", 0, 1),
    ("power", 1, 1),
    ("ln", 0, 0),
    ("floor", 0, 0),
    ("ceiling", 0, 0),
    ("toDateTime", 0, 0),
    ("toString", 0, 0),
    ("toNumber", 0, 0),
    ("lower", 0, 0),
    ("upper", 0, 0),
    ("startsWith", 1, 1),
    ("endsWith", 1, 1),
    ("contains", 1, 1),
    ("combine", 1, 1),
    ("sum", 0, 0),
    ("avg", 0, 0),
    ("min", 0, 0),
    ("max", 0, 0),
    ("distinct", 0, 0),
    ("now", 0, 0),
    ("today", 0, 0),
    ("yearsUntil", 1, 1),
    ("date", 0, 0),
    // clinical equivalence (src/htn/equiv.rs)
    ("routeIs", 1, 1),
    ("dose", 1, 2),
    ("rate", 1, 1),
    ("bp", 0, 0),
    ("concept", 1, 1),
    ("textContains", 1, 1),
];

pub(super) fn check_calls(e: &Expr) -> Result<(), String> {
    match e {
        Expr::Call(base, name, args) => {
            let Some((_, lo, hi)) = FUNCTIONS.iter().find(|f| f.0 == name) else {
                return Err(format!("unknown function {name}()"));
            };
            if args.len() < *lo || args.len() > *hi {
                return Err(format!("{name}() takes {lo} to {hi} arguments, got {}", args.len()));
            }
            check_calls(base)?;
            args.iter().try_for_each(check_calls)
        }
        Expr::Member(b, _) | Expr::Neg(b) => check_calls(b),
        Expr::Index(a, b) | Expr::Bin(_, a, b) => {
            check_calls(a)?;
            check_calls(b)
        }
        Expr::Lit(_) | Expr::Var(_) | Expr::This | Expr::Ident(_) => Ok(()),
    }
}

fn nums(c: &Coll, what: &str) -> Result<Vec<f64>, EvalError> {
    c.iter()
        .map(|v| match v {
            V::Num(n) => Ok(*n),
            V::Str(s) => s.trim().parse().map_err(|_| type_err(format!("{what}: '{s}' is not a number"))),
            other => Err(type_err(format!("{what}: {} is not a number", other.to_json()))),
        })
        .collect()
}

pub(super) fn call(base: &Expr, name: &str, args: &[Expr], focus: &Coll, scope: &dyn Scope) -> Result<Coll, EvalError> {
    // functions that do not evaluate their base first
    match name {
        "now" => return Ok(vec![V::Date(scope.now())]),
        "today" => {
            let n = scope.now();
            let d = n.date_naive().and_hms_opt(0, 0, 0).ok_or_else(|| type_err("bad date"))?;
            return Ok(vec![V::Date(
                n.timezone().from_local_datetime(&d).single().ok_or_else(|| type_err("bad date"))?,
            )]);
        }
        "iif" => {
            let c = eval(&args[0], focus, scope)?;
            return if to_bool(&c)? == Some(true) {
                eval(&args[1], focus, scope)
            } else if let Some(e) = args.get(2) {
                eval(e, focus, scope)
            } else {
                Ok(Vec::new())
            };
        }
        _ => {}
    }
    let b = eval(base, focus, scope)?;
    let arg = |i: usize| -> Result<Coll, EvalError> { eval(&args[i], focus, scope) };
    Ok(match name {
        "where" => {
            let mut out = Vec::new();
            for v in &b {
                let item = vec![v.clone()];
                if to_bool(&eval(&args[0], &item, scope)?)? == Some(true) {
                    out.push(v.clone());
                }
            }
            out
        }
        "select" => {
            let mut out = Vec::new();
            for v in &b {
                out.extend(eval(&args[0], &vec![v.clone()], scope)?);
            }
            out
        }
        "exists" => {
            if args.is_empty() {
                vec![V::Bool(!b.is_empty())]
            } else {
                let mut any = false;
                for v in &b {
                    if to_bool(&eval(&args[0], &vec![v.clone()], scope)?)? == Some(true) {
                        any = true;
                        break;
                    }
                }
                vec![V::Bool(any)]
            }
        }
        "all" => {
            let mut all = true;
            for v in &b {
                if to_bool(&eval(&args[0], &vec![v.clone()], scope)?)? != Some(true) {
                    all = false;
                    break;
                }
            }
            vec![V::Bool(all)]
        }
        "empty" => vec![V::Bool(b.is_empty())],
        "count" => vec![V::Num(b.len() as f64)],
        "first" => b.into_iter().take(1).collect(),
        "last" => b.last().cloned().into_iter().collect(),
        "tail" => b.into_iter().skip(1).collect(),
        "not" => match to_bool(&b)? {
            None => Vec::new(),
            Some(x) => vec![V::Bool(!x)],
        },
        "abs" | "floor" | "ceiling" | "round" => {
            let Some(v) = single(&b, name)? else { return Ok(Vec::new()) };
            let n = nums(&vec![v.clone()], name)?[0];
            let r = match name {
                "abs" => n.abs(),
                "floor" => n.floor(),
                "ceiling" => n.ceil(),
                _ => {
                    let digits = if args.is_empty() {
                        0.0
                    } else {
                        nums(&arg(0)?, "round digits")?.first().copied().unwrap_or(0.0)
                    };
                    let f = 10f64.powi(digits as i32);
                    (n * f).round() / f
                }
            };
            vec![V::Num(r)]
        }
        "power" | "ln" => {
            let Some(v) = single(&b, name)? else { return Ok(Vec::new()) };
            let n = nums(&vec![v.clone()], name)?[0];
            let r = if name == "ln" {
                n.ln()
            } else {
                let a = arg(0)?;
                let Some(e) = single(&a, name)? else { return Ok(Vec::new()) };
                n.powf(nums(&vec![e.clone()], name)?[0])
            };
            if r.is_finite() {
                vec![V::Num(r)]
            } else {
                return Err(type_err(format!("{name}() of {n} is not a finite number")));
            }
        }
        "toNumber" => nums(&b, "toNumber")?.into_iter().map(V::Num).collect(),
        "toDateTime" | "date" => b
            .iter()
            .map(|v| {
                v.as_date()
                    .map(V::Date)
                    .ok_or_else(|| type_err(format!("'{}' is not a date", coll_text(&vec![v.clone()]))))
            })
            .collect::<Result<_, _>>()?,
        "toString" => vec![V::Str(coll_text(&b))],
        "lower" | "upper" => b
            .iter()
            .map(|v| match v {
                V::Str(s) => V::Str(if name == "lower" { s.to_lowercase() } else { s.to_uppercase() }),
                other => other.clone(),
            })
            .collect(),
        "startsWith" | "endsWith" | "contains" => {
            let Some(V::Str(s)) = single(&b, name)? else {
                return Ok(Vec::new());
            };
            let a = arg(0)?;
            let Some(V::Str(t)) = single(&a, name)? else {
                return Ok(Vec::new());
            };
            vec![V::Bool(match name {
                "startsWith" => s.starts_with(t.as_str()),
                "endsWith" => s.ends_with(t.as_str()),
                _ => s.contains(t.as_str()),
            })]
        }
        "combine" => {
            let mut out = b;
            out.extend(arg(0)?);
            out
        }
        "sum" | "avg" | "min" | "max" => {
            let ns = nums(&b, name)?;
            if ns.is_empty() {
                return Ok(if name == "sum" { vec![V::Num(0.0)] } else { Vec::new() });
            }
            let v = match name {
                "sum" => ns.iter().sum(),
                "avg" => ns.iter().sum::<f64>() / ns.len() as f64,
                "min" => ns.iter().copied().fold(f64::INFINITY, f64::min),
                _ => ns.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            };
            vec![V::Num(v)]
        }
        "distinct" => {
            let mut out: Coll = Vec::new();
            for v in b {
                if !out.iter().any(|o| equal(o, &v)) {
                    out.push(v);
                }
            }
            out
        }
        "yearsUntil" => {
            let Some(from) = single(&b, name)?.and_then(V::as_date) else {
                return Ok(Vec::new());
            };
            let a = arg(0)?;
            let Some(to) = single(&a, name)?.and_then(V::as_date) else {
                return Ok(Vec::new());
            };
            let (f, t) = (from.date_naive(), to.date_naive());
            let mut years = i64::from(chrono::Datelike::year(&t) - chrono::Datelike::year(&f));
            if (chrono::Datelike::month(&t), chrono::Datelike::day(&t)) < (chrono::Datelike::month(&f), chrono::Datelike::day(&f)) {
                years -= 1;
            }
            vec![V::Num(years as f64)]
        }
        "routeIs" | "dose" | "rate" | "bp" | "concept" | "textContains" => equivalence(name, &b, &arg, args.len())?,
        other => return Err(type_err(format!("unknown function {other}()"))),
    })
}

/// The clinical-equivalence functions (rules in [`crate::htn::equiv`]).
fn equivalence(name: &str, b: &Coll, arg: &dyn Fn(usize) -> Result<Coll, EvalError>, nargs: usize) -> Result<Coll, EvalError> {
    use crate::htn::equiv;
    let resources: Vec<&Value> = b
        .iter()
        .filter_map(|v| match v {
            V::Json(j) => Some(j),
            _ => None,
        })
        .collect();
    let text_arg = |i: usize| -> Result<Option<String>, EvalError> {
        let a = arg(i)?;
        Ok(match single(&a, name)? {
            Some(V::Str(s)) => Some(s.clone()),
            Some(V::Num(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    Ok(match name {
        "routeIs" => {
            let Some(want) = text_arg(0)? else { return Ok(Vec::new()) };
            let want = equiv::canonical_route(&want)
                .map(str::to_string)
                .unwrap_or_else(|| equiv::norm(&want));
            let got = equiv::routes(&resources);
            if got.is_empty() {
                Vec::new()
            } else {
                vec![V::Bool(got.iter().any(|r| *r == want))]
            }
        }
        "dose" | "rate" => {
            let Some(unit) = text_arg(0)? else { return Ok(Vec::new()) };
            let valence = if nargs > 1 {
                match single(&arg(1)?, name)? {
                    Some(V::Num(n)) => *n,
                    _ => return Err(type_err(format!("{name}(): the valence must be a number"))),
                }
            } else {
                1.0
            };
            let v = if name == "dose" {
                equiv::dose(&resources, &unit, valence)
            } else {
                equiv::rate(&resources, &unit)
            };
            v.map(V::Num).into_iter().collect()
        }
        "bp" => b
            .iter()
            .filter_map(|v| match v {
                V::Json(j) => equiv::bp_of(j),
                V::Str(s) => equiv::bp_text(s),
                _ => None,
            })
            .map(V::Str)
            .collect(),
        "concept" => {
            let Some(code) = text_arg(0)? else { return Ok(Vec::new()) };
            match resources.as_slice() {
                [] => Vec::new(),
                [one] => vec![V::Bool(equiv::is_concept(one, &code))],
                _ => return Err(type_err("concept(): expected one resource")),
            }
        }
        _ => {
            // textContains: any text item contains the argument once both are normalised
            let Some(needle) = text_arg(0)? else { return Ok(Vec::new()) };
            let texts: Vec<&str> = b
                .iter()
                .filter_map(|v| match v {
                    V::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            if texts.is_empty() {
                Vec::new()
            } else {
                vec![V::Bool(texts.iter().any(|t| equiv::text_contains(t, &needle)))]
            }
        }
    })
}
