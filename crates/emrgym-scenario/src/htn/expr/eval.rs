//! Evaluation: the variables an expression reads ([`Scope`]), why evaluation fails
//! ([`EvalError`]), and the evaluator of literals, variables, paths, indexes and operators
//! (logic three-valued where a fact is unrevealed; date and duration arithmetic).

use super::functions::call;
use super::parse::{Expr, Op};
use super::value::{Coll, DurUnit, V, coll_text, compare, equal, logic, norm_text, single, to_bool};
use chrono::{DateTime, Duration, FixedOffset, Months};
use serde_json::Value;

/// Why an expression did not evaluate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A variable bound to a fact the agent has not been shown.
    #[error("unknown: %{0} has not been revealed")]
    Unknown(String),
    /// A variable that is not in scope.
    #[error("unbound variable %{0}")]
    Unbound(String),
    /// A type or arity error.
    #[error("{0}")]
    Type(String),
}

/// Variables for evaluation.
pub trait Scope {
    /// Look up `%name`: `Ok(Some)` bound, `Ok(None)` unbound, `Err(Unknown)` unrevealed.
    fn var(&self, name: &str) -> Result<Option<Coll>, EvalError>;
    /// The clock (`now()`, `%now`).
    fn now(&self) -> DateTime<FixedOffset>;
}

pub(super) fn type_err(m: impl Into<String>) -> EvalError {
    EvalError::Type(m.into())
}

fn add_dur(d: DateTime<FixedOffset>, n: f64, u: DurUnit, sign: i64) -> Result<DateTime<FixedOffset>, EvalError> {
    let whole = n.trunc() as i64 * sign;
    let r = match u {
        DurUnit::Year | DurUnit::Month => {
            let months = if u == DurUnit::Year { whole * 12 } else { whole };
            if months >= 0 {
                d.checked_add_months(Months::new(months as u32))
            } else {
                d.checked_sub_months(Months::new(months.unsigned_abs() as u32))
            }
        }
        DurUnit::Week => d.checked_add_signed(Duration::weeks(whole)),
        DurUnit::Day => d.checked_add_signed(Duration::days(whole)),
        DurUnit::Hour => d.checked_add_signed(Duration::seconds((n * 3600.0) as i64 * sign)),
        DurUnit::Minute => d.checked_add_signed(Duration::seconds((n * 60.0) as i64 * sign)),
        DurUnit::Second => d.checked_add_signed(Duration::milliseconds((n * 1000.0) as i64 * sign)),
    };
    r.ok_or_else(|| type_err("date arithmetic out of range"))
}

/// Evaluate `e` with `focus` as `$this`.
pub fn eval(e: &Expr, focus: &Coll, scope: &dyn Scope) -> Result<Coll, EvalError> {
    match e {
        Expr::Lit(c) => Ok(c.clone()),
        Expr::This => Ok(focus.clone()),
        Expr::Var(name) => match name.as_str() {
            "now" => Ok(vec![V::Date(scope.now())]),
            _ => scope.var(name)?.ok_or_else(|| EvalError::Unbound(name.clone())),
        },
        Expr::Ident(name) => Ok(member(focus, name)),
        Expr::Member(base, name) => {
            let b = eval(base, focus, scope)?;
            Ok(member(&b, name))
        }
        Expr::Index(base, idx) => {
            let b = eval(base, focus, scope)?;
            let i = eval(idx, focus, scope)?;
            match single(&i, "index")? {
                Some(V::Num(n)) if *n >= 0.0 => Ok(b.get(*n as usize).cloned().into_iter().collect()),
                None => Ok(Vec::new()),
                _ => Err(type_err("index must be a non-negative number")),
            }
        }
        Expr::Neg(inner) => {
            let v = eval(inner, focus, scope)?;
            match single(&v, "unary minus")? {
                None => Ok(Vec::new()),
                Some(V::Num(n)) => Ok(vec![V::Num(-n)]),
                Some(V::Dur(n, u)) => Ok(vec![V::Dur(-n, *u)]),
                Some(other) => Err(type_err(format!("cannot negate {other:?}"))),
            }
        }
        Expr::Bin(op, a, b) => binop(*op, a, b, focus, scope),
        Expr::Call(base, name, args) => call(base, name, args, focus, scope),
    }
}

fn member(c: &Coll, name: &str) -> Coll {
    let mut out = Vec::new();
    for v in c {
        if let V::Json(Value::Object(m)) = v
            && let Some(x) = m.get(name)
        {
            out.extend(V::from_json(x));
        }
    }
    out
}

fn binop(op: Op, a: &Expr, b: &Expr, focus: &Coll, scope: &dyn Scope) -> Result<Coll, EvalError> {
    if matches!(op, Op::And | Op::Or | Op::Xor | Op::Implies) {
        // three-valued logic: an Unknown operand only matters if the other does not decide
        let x = eval(a, focus, scope);
        let y = eval(b, focus, scope);
        let tv = |r: &Result<Coll, EvalError>| -> Result<Option<Option<bool>>, EvalError> {
            match r {
                Ok(c) => Ok(Some(to_bool(c)?)),
                Err(EvalError::Unknown(_)) => Ok(None),
                Err(e) => Err(e.clone()),
            }
        };
        let (p, q) = (tv(&x)?, tv(&y)?);
        let decided = |v: Option<Option<bool>>| v.flatten();
        let res = match (p, q) {
            (Some(p), Some(q)) => logic(op, p, q),
            _ => {
                // one side Unknown: decide only if the known side forces the result
                let known = if p.is_some() { decided(p) } else { decided(q) };
                let forced = match (op, known) {
                    (Op::And, Some(false)) => Some(false),
                    (Op::Or, Some(true)) => Some(true),
                    (Op::Implies, Some(false)) if p.is_some() => Some(true),
                    (Op::Implies, Some(true)) if q.is_some() => Some(true),
                    _ => None,
                };
                match forced {
                    Some(f) => Some(f),
                    None => {
                        return Err(x.err().or(y.err()).unwrap_or(EvalError::Unknown(String::new())));
                    }
                }
            }
        };
        return Ok(res.map(V::Bool).into_iter().collect());
    }
    let x = eval(a, focus, scope)?;
    let y = eval(b, focus, scope)?;
    match op {
        Op::Union => {
            let mut out = x;
            for v in y {
                if !out.iter().any(|o| equal(o, &v)) {
                    out.push(v);
                }
            }
            Ok(out)
        }
        Op::Concat => Ok(vec![V::Str(format!("{}{}", coll_text(&x), coll_text(&y)))]),
        Op::Eq | Op::Ne | Op::Equiv => {
            if x.is_empty() || y.is_empty() {
                return Ok(Vec::new());
            }
            // Collection equality is a trap in clinical data: a Condition coded in SNOMED CT
            // and ICD-10-CM makes `code.coding.code = 'x'` false. Refuse it, naming the fix.
            for (side, c) in [("left", &x), ("right", &y)] {
                if c.len() > 1 {
                    return Err(type_err(format!(
                        "the {side} operand of a comparison holds {} items ({}): compare inside where(), \
                         e.g. `coding.where(code = 'x').exists()`, or reduce it with first()",
                        c.len(),
                        coll_text(c)
                    )));
                }
            }
            let same = if op == Op::Equiv {
                x.len() == y.len()
                    && x.iter().zip(&y).all(|(p, q)| match (p, q) {
                        (V::Str(s), V::Str(t)) => norm_text(s) == norm_text(t),
                        _ => equal(p, q),
                    })
            } else {
                x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| equal(p, q))
            };
            Ok(vec![V::Bool(if op == Op::Ne { !same } else { same })])
        }
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let (Some(p), Some(q)) = (single(&x, "comparison")?, single(&y, "comparison")?) else {
                return Ok(Vec::new());
            };
            let Some(ord) = compare(p, q) else {
                return Err(type_err(format!("cannot compare {} with {}", coll_text(&x), coll_text(&y))));
            };
            use std::cmp::Ordering::*;
            let r = match op {
                Op::Lt => ord == Less,
                Op::Le => ord != Greater,
                Op::Gt => ord == Greater,
                _ => ord != Less,
            };
            Ok(vec![V::Bool(r)])
        }
        _ => {
            let (Some(p), Some(q)) = (single(&x, "arithmetic")?, single(&y, "arithmetic")?) else {
                return Ok(Vec::new());
            };
            arith(op, p, q).map(|v| vec![v])
        }
    }
}

fn arith(op: Op, p: &V, q: &V) -> Result<V, EvalError> {
    match (op, p, q) {
        (_, V::Num(a), V::Num(b)) => Ok(V::Num(match op {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
            Op::Div => {
                if *b == 0.0 {
                    return Err(type_err("division by zero"));
                }
                a / b
            }
            Op::IntDiv => {
                if *b == 0.0 {
                    return Err(type_err("division by zero"));
                }
                (a / b).trunc()
            }
            Op::Mod => {
                if *b == 0.0 {
                    return Err(type_err("division by zero"));
                }
                a % b
            }
            _ => return Err(type_err("bad numeric operator")),
        })),
        (Op::Add, V::Str(a), V::Str(b)) => Ok(V::Str(format!("{a}{b}"))),
        (Op::Add | Op::Sub, d, V::Dur(n, u)) if d.as_date().is_some() => {
            let date = d.as_date().ok_or_else(|| type_err("not a date"))?;
            Ok(V::Date(add_dur(date, *n, *u, if op == Op::Add { 1 } else { -1 })?))
        }
        _ => Err(type_err(format!(
            "cannot apply {op:?} to {} and {}",
            coll_text(&vec![p.clone()]),
            coll_text(&vec![q.clone()])
        ))),
    }
}

/// Truth value of a condition: `Ok(Some(b))`, or `Ok(None)` when Unknown.
pub fn truth(e: &Expr, focus: &Coll, scope: &dyn Scope) -> Result<Option<bool>, EvalError> {
    match eval(e, focus, scope) {
        Ok(c) => Ok(Some(to_bool(&c)?.unwrap_or(false))),
        Err(EvalError::Unknown(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
