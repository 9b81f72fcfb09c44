//! The scenario expression language: a small, side-effect-free FHIRPath subset evaluated on
//! JSON, used for method conditions (`when`), computed values (`let`), write selectors and
//! assertions, answers, and `${...}` templates.
//!
//! Values are collections. Paths navigate JSON (arrays flatten); `%name` reads a variable;
//! `now()` is the scenario clock, never wall time. A variable bound to an unrevealed fact
//! makes the whole expression Unknown ([`EvalError::Unknown`]): "not looked at yet" stays
//! distinct from "looked, nothing there" (the empty collection).
//!
//! Grammar (lowest precedence first): `implies`; `or`/`xor`; `and`; `=`/`!=`/`~`;
//! `<`/`<=`/`>`/`>=`; `|` (union); `+`/`-`/`&`; `*`/`/`/`div`/`mod`; unary `-`; postfix
//! `.name`, `.fn(args)`, `[index]`. Literals: numbers, `'text'`, `true`/`false`, `{}`,
//! `@2023-11-13T10:15:00+00:00` or `@2023-11-13`, durations `24 hours`, `1 year`.
//!
//! Nesting is bounded: an expression deeper than [`MAX_DEPTH`] levels (open groups, unary
//! minuses, argument lists and indexes, or the height of its tree) is a parse error naming
//! the limit, so no input can exhaust the stack of the parser or of the evaluator.

use chrono::{DateTime, Duration, FixedOffset, Months, NaiveDate, TimeZone};
use serde_json::{Map, Value, json};
use std::fmt;

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

/// A parse error with its byte position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at column {}: {message} in `{text}`", .pos + 1)]
pub struct ParseError {
    /// Byte offset.
    pub pos: usize,
    /// What went wrong.
    pub message: String,
    /// The expression.
    pub text: String,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal collection (empty for `{}`).
    Lit(Coll),
    /// `%name`.
    Var(String),
    /// `$this`.
    This,
    /// A path step on the focus (`code`).
    Ident(String),
    /// `base.name`.
    Member(Box<Expr>, String),
    /// `base.fn(args)` (base is `$this` for a bare `fn(args)`).
    Call(Box<Expr>, String, Vec<Expr>),
    /// `base[index]`.
    Index(Box<Expr>, Box<Expr>),
    /// Binary operator.
    Bin(Op, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// implies
    Implies,
    /// or
    Or,
    /// xor
    Xor,
    /// and
    And,
    /// =
    Eq,
    /// !=
    Ne,
    /// ~ (case-insensitive, whitespace-normalised text; numbers equal)
    Equiv,
    /// <
    Lt,
    /// <=
    Le,
    /// >
    Gt,
    /// >=
    Ge,
    /// |
    Union,
    /// +
    Add,
    /// -
    Sub,
    /// & (string concatenation treating empty as '')
    Concat,
    /// *
    Mul,
    /// /
    Div,
    /// div
    IntDiv,
    /// mod
    Mod,
}

/// Variables for evaluation.
pub trait Scope {
    /// Look up `%name`: `Ok(Some)` bound, `Ok(None)` unbound, `Err(Unknown)` unrevealed.
    fn var(&self, name: &str) -> Result<Option<Coll>, EvalError>;
    /// The clock (`now()`, `%now`).
    fn now(&self) -> DateTime<FixedOffset>;
}

// ------------------------------------------------------------------------------------
// Lexer and parser
// ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Date(DateTime<FixedOffset>),
    Ident(String),
    Var(String),
    This,
    Sym(&'static str),
    End,
}

/// Parse a date or date-time literal (`2023-11-13`, `2023-11-13T10:15:00+00:00`, `...Z`).
pub fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d);
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%:z") {
        return Some(d);
    }
    let utc = FixedOffset::east_opt(0)?;
    if let Ok(d) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return utc.from_local_datetime(&d).single();
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return utc.from_local_datetime(&d.and_hms_opt(0, 0, 0)?).single();
    }
    if let Ok(d) = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d") {
        return utc.from_local_datetime(&d.and_hms_opt(0, 0, 0)?).single();
    }
    None
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let err = |pos: usize, m: &str| ParseError {
        pos,
        message: m.to_string(),
        text: text.to_string(),
    };
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_digit() || (b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit())) {
                i += 1;
            }
            let n: f64 = text[start..i].parse().map_err(|_| err(start, "bad number"))?;
            out.push((start, Tok::Num(n)));
            continue;
        }
        if c == '\'' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = text[i..].chars().next() else {
                    return Err(err(start, "unterminated string"));
                };
                i += ch.len_utf8();
                match ch {
                    '\'' => break,
                    '\\' => {
                        let Some(e) = text[i..].chars().next() else {
                            return Err(err(start, "unterminated string"));
                        };
                        i += e.len_utf8();
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                    other => s.push(other),
                }
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        if c == '@' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b':' | b'+' | b'.')) {
                i += 1;
            }
            let d = parse_datetime(&text[start + 1..i]).ok_or_else(|| err(start, "bad date literal"))?;
            out.push((start, Tok::Date(d)));
            continue;
        }
        if c == '%' || c.is_ascii_alphabetic() || c == '_' || c == '$' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &text[start..i];
            let tok = if let Some(v) = word.strip_prefix('%') {
                if v.is_empty() {
                    return Err(err(start, "empty variable name"));
                }
                Tok::Var(v.to_string())
            } else if word == "$this" {
                Tok::This
            } else if word.starts_with('$') {
                return Err(err(start, "only $this is supported"));
            } else {
                Tok::Ident(word.to_string())
            };
            out.push((start, tok));
            continue;
        }
        if c == '`' {
            i += 1;
            let close = text[i..].find('`').ok_or_else(|| err(start, "unterminated `identifier`"))?;
            out.push((start, Tok::Ident(text[i..i + close].to_string())));
            i += close + 1;
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let sym: &'static str = match two {
            "!=" => "!=",
            "<=" => "<=",
            ">=" => ">=",
            _ => match c {
                '=' => "=",
                '~' => "~",
                '<' => "<",
                '>' => ">",
                '|' => "|",
                '+' => "+",
                '-' => "-",
                '&' => "&",
                '*' => "*",
                '/' => "/",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                '{' => "{",
                '}' => "}",
                '.' => ".",
                ',' => ",",
                _ => return Err(err(start, &format!("unexpected character '{c}'"))),
            },
        };
        i += sym.len();
        out.push((start, Tok::Sym(sym)));
    }
    out.push((text.len(), Tok::End));
    Ok(out)
}

/// Binary operators by precedence level, lowest first.
const LEVELS: &[&[(&str, Op)]] = &[
    &[("implies", Op::Implies)],
    &[("or", Op::Or), ("xor", Op::Xor)],
    &[("and", Op::And)],
    &[("=", Op::Eq), ("!=", Op::Ne), ("~", Op::Equiv)],
    &[("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)],
    &[("|", Op::Union)],
    &[("+", Op::Add), ("-", Op::Sub), ("&", Op::Concat)],
    &[("*", Op::Mul), ("/", Op::Div), ("div", Op::IntDiv), ("mod", Op::Mod)],
];

/// How deep an expression may nest: parentheses, unary minus, function arguments and
/// indexes opened inside each other, and the height of the tree it parses to (a chain of
/// 200 `.name` steps or 200 `+` terms is 200 levels tall). Parsing, checking, evaluating
/// and dropping an expression all recurse on its tree, so the limit keeps them off the end
/// of the stack whatever a scenario file holds; the suite's deepest expression is far below.
pub const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    i: usize,
    text: &'a str,
    /// Groups, unary minuses, argument lists and indexes open around the current token.
    nest: usize,
}

/// A parsed subexpression and the height of its tree.
type Node = (Expr, usize);

fn dur_unit(word: &str) -> Option<DurUnit> {
    Some(match word {
        "year" | "years" => DurUnit::Year,
        "month" | "months" => DurUnit::Month,
        "week" | "weeks" => DurUnit::Week,
        "day" | "days" => DurUnit::Day,
        "hour" | "hours" => DurUnit::Hour,
        "minute" | "minutes" => DurUnit::Minute,
        "second" | "seconds" => DurUnit::Second,
        _ => return None,
    })
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn err(&self, m: impl Into<String>) -> ParseError {
        ParseError {
            pos: self.pos(),
            message: m.into(),
            text: self.text.to_string(),
        }
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        self.i += 1;
        t
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(x) if *x == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Tok::Ident(x) if x == w) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.err(format!("expected '{s}'")))
        }
    }

    fn too_deep(&self) -> ParseError {
        self.err(format!(
            "expression nested deeper than {MAX_DEPTH} levels (the expression language's limit on parentheses, unary minus, calls, indexes and chained terms)"
        ))
    }
    /// Open one nesting level (a group, a unary minus, an argument list, an index).
    fn enter(&mut self) -> Result<(), ParseError> {
        self.nest += 1;
        if self.nest > MAX_DEPTH { Err(self.too_deep()) } else { Ok(()) }
    }
    fn leave(&mut self) {
        self.nest = self.nest.saturating_sub(1);
    }
    /// A node of height `h`, refused beyond [`MAX_DEPTH`].
    fn node(&self, e: Expr, h: usize) -> Result<Node, ParseError> {
        if h > MAX_DEPTH { Err(self.too_deep()) } else { Ok((e, h)) }
    }

    /// The binary operator at the current token whose precedence level is at least `min`,
    /// consumed.
    fn binary_op(&mut self, min: usize) -> Option<(usize, Op)> {
        for (level, ops) in LEVELS.iter().enumerate().skip(min) {
            for (sym, op) in *ops {
                let hit = if sym.chars().all(|c| c.is_ascii_alphabetic()) {
                    self.eat_word(sym)
                } else {
                    self.eat_sym(sym)
                };
                if hit {
                    return Some((level, *op));
                }
            }
        }
        None
    }

    /// Operators of precedence level `min` and above, left-associative (precedence
    /// climbing: one frame per operator level actually used, not one per level of the
    /// grammar, so each nesting level costs a few frames of stack).
    fn binary(&mut self, min: usize) -> Result<Node, ParseError> {
        let (mut lhs, mut h) = self.unary()?;
        while let Some((level, op)) = self.binary_op(min) {
            let (rhs, rh) = self.binary(level + 1)?;
            (lhs, h) = self.node(Expr::Bin(op, Box::new(lhs), Box::new(rhs)), h.max(rh) + 1)?;
        }
        Ok((lhs, h))
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        if self.eat_sym("-") {
            self.enter()?;
            let (e, h) = self.unary()?;
            self.leave();
            return self.node(Expr::Neg(Box::new(e)), h + 1);
        }
        self.postfix()
    }

    /// Arguments after `(` up to `)`, and the tallest argument's height.
    fn args(&mut self) -> Result<(Vec<Expr>, usize), ParseError> {
        let mut args = Vec::new();
        let mut h = 0;
        if self.eat_sym(")") {
            return Ok((args, h));
        }
        self.enter()?;
        loop {
            let (a, ah) = self.binary(0)?;
            args.push(a);
            h = h.max(ah);
            if self.eat_sym(")") {
                self.leave();
                return Ok((args, h));
            }
            self.expect_sym(",")?;
        }
    }

    fn postfix(&mut self) -> Result<Node, ParseError> {
        let (mut e, mut h) = self.primary()?;
        loop {
            if self.eat_sym(".") {
                let Tok::Ident(name) = self.bump() else {
                    return Err(self.err("expected a name after '.'"));
                };
                if self.eat_sym("(") {
                    let (args, ah) = self.args()?;
                    (e, h) = self.node(Expr::Call(Box::new(e), name, args), h.max(ah) + 1)?;
                } else {
                    (e, h) = self.node(Expr::Member(Box::new(e), name), h + 1)?;
                }
            } else if self.eat_sym("[") {
                self.enter()?;
                let (idx, ih) = self.binary(0)?;
                self.expect_sym("]")?;
                self.leave();
                (e, h) = self.node(Expr::Index(Box::new(e), Box::new(idx)), h.max(ih) + 1)?;
            } else {
                return Ok((e, h));
            }
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let pos = self.pos();
        match self.bump() {
            Tok::Num(n) => {
                if let Tok::Ident(w) = self.peek().clone()
                    && let Some(u) = dur_unit(&w)
                {
                    self.i += 1;
                    return Ok((Expr::Lit(vec![V::Dur(n, u)]), 1));
                }
                Ok((Expr::Lit(vec![V::Num(n)]), 1))
            }
            Tok::Str(s) => Ok((Expr::Lit(vec![V::Str(s)]), 1)),
            Tok::Date(d) => Ok((Expr::Lit(vec![V::Date(d)]), 1)),
            Tok::Var(v) => Ok((Expr::Var(v), 1)),
            Tok::This => Ok((Expr::This, 1)),
            Tok::Ident(w) => match w.as_str() {
                "true" => Ok((Expr::Lit(vec![V::Bool(true)]), 1)),
                "false" => Ok((Expr::Lit(vec![V::Bool(false)]), 1)),
                _ if self.eat_sym("(") => {
                    let (args, ah) = self.args()?;
                    self.node(Expr::Call(Box::new(Expr::This), w, args), ah + 1)
                }
                _ => Ok((Expr::Ident(w), 1)),
            },
            Tok::Sym("(") => {
                self.enter()?;
                let e = self.binary(0)?;
                self.expect_sym(")")?;
                self.leave();
                Ok(e)
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Ok((Expr::Lit(Vec::new()), 1))
            }
            Tok::End => Err(ParseError {
                pos,
                message: "unexpected end of expression".into(),
                text: self.text.to_string(),
            }),
            other => Err(ParseError {
                pos,
                message: format!("unexpected {other:?}"),
                text: self.text.to_string(),
            }),
        }
    }
}

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

fn check_calls(e: &Expr) -> Result<(), String> {
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

/// Parse an expression (refused past [`MAX_DEPTH`] levels of nesting).
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let toks = lex(text)?;
    let mut p = Parser { toks, i: 0, text, nest: 0 };
    let (e, _) = p.binary(0)?;
    if !matches!(p.peek(), Tok::End) {
        return Err(p.err("unexpected trailing input"));
    }
    check_calls(&e).map_err(|m| ParseError {
        pos: 0,
        message: m,
        text: text.to_string(),
    })?;
    Ok(e)
}

impl Expr {
    /// Every `%variable` the expression reads.
    pub fn vars(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_vars(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_vars(&self, out: &mut Vec<String>) {
        match self {
            Expr::Var(v) => out.push(v.clone()),
            Expr::Call(b, _, args) => {
                b.collect_vars(out);
                for a in args {
                    a.collect_vars(out);
                }
            }
            Expr::Member(b, _) | Expr::Neg(b) => b.collect_vars(out),
            Expr::Index(a, b) | Expr::Bin(_, a, b) => {
                a.collect_vars(out);
                b.collect_vars(out);
            }
            Expr::Lit(_) | Expr::This | Expr::Ident(_) => {}
        }
    }
}

// ------------------------------------------------------------------------------------
// Values
// ------------------------------------------------------------------------------------

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

    fn as_date(&self) -> Option<DateTime<FixedOffset>> {
        match self {
            V::Date(d) => Some(*d),
            V::Str(s) => parse_datetime(s),
            _ => None,
        }
    }
}

/// A number as JSON: integral values as integers.
pub fn num_json(n: f64) -> Value {
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
pub fn fmt_date(d: &DateTime<FixedOffset>) -> String {
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
pub fn coll_text(c: &Coll) -> String {
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

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

// ------------------------------------------------------------------------------------
// Evaluation
// ------------------------------------------------------------------------------------

fn type_err(m: impl Into<String>) -> EvalError {
    EvalError::Type(m.into())
}

fn single<'a>(c: &'a Coll, what: &str) -> Result<Option<&'a V>, EvalError> {
    match c.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(type_err(format!("{what}: expected one value, got {}", c.len()))),
    }
}

/// Boolean value of a collection: empty is `None` (false in conditions).
pub fn to_bool(c: &Coll) -> Result<Option<bool>, EvalError> {
    match single(c, "condition")? {
        None => Ok(None),
        Some(V::Bool(b)) => Ok(Some(*b)),
        Some(_) => Ok(Some(true)),
    }
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

fn compare(a: &V, b: &V) -> Option<std::cmp::Ordering> {
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

fn equal(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Json(x), V::Json(y)) => x == y,
        _ => compare(a, b) == Some(std::cmp::Ordering::Equal),
    }
}

fn norm_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
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

fn logic(op: Op, a: Option<bool>, b: Option<bool>) -> Option<bool> {
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

fn nums(c: &Coll, what: &str) -> Result<Vec<f64>, EvalError> {
    c.iter()
        .map(|v| match v {
            V::Num(n) => Ok(*n),
            V::Str(s) => s.trim().parse().map_err(|_| type_err(format!("{what}: '{s}' is not a number"))),
            other => Err(type_err(format!("{what}: {} is not a number", other.to_json()))),
        })
        .collect()
}

fn call(base: &Expr, name: &str, args: &[Expr], focus: &Coll, scope: &dyn Scope) -> Result<Coll, EvalError> {
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

/// The clinical-equivalence functions (rules in [`super::equiv`]).
fn equivalence(name: &str, b: &Coll, arg: &dyn Fn(usize) -> Result<Coll, EvalError>, nargs: usize) -> Result<Coll, EvalError> {
    use super::equiv;
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

/// Truth value of a condition: `Ok(Some(b))`, or `Ok(None)` when Unknown.
pub fn truth(e: &Expr, focus: &Coll, scope: &dyn Scope) -> Result<Option<bool>, EvalError> {
    match eval(e, focus, scope) {
        Ok(c) => Ok(Some(to_bool(&c)?.unwrap_or(false))),
        Err(EvalError::Unknown(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------------------------
// Templates
// ------------------------------------------------------------------------------------

/// Split `${...}` holes out of a template string: literal text and expression sources.
pub fn template_parts(s: &str) -> Result<Vec<(bool, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 {
            out.push((false, rest[..i].to_string()));
        }
        let after = &rest[i + 2..];
        // find the matching brace (expressions may contain `{}`)
        let mut depth = 0i32;
        let mut end = None;
        let mut in_str = false;
        for (j, ch) in after.char_indices() {
            match ch {
                '\'' => in_str = !in_str,
                '{' if !in_str => depth += 1,
                '}' if !in_str => {
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                    depth -= 1;
                }
                _ => {}
            }
        }
        let Some(j) = end else {
            return Err(format!("unterminated ${{ in '{s}'"));
        };
        out.push((true, after[..j].to_string()));
        rest = &after[j + 1..];
    }
    if !rest.is_empty() {
        out.push((false, rest.to_string()));
    }
    Ok(out)
}

/// Every expression inside a JSON template's `${...}` holes (for static checks).
pub fn template_exprs(v: &Value) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    walk_strings(v, &mut |s| {
        for (is_expr, part) in template_parts(s)? {
            if is_expr {
                out.push(part);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn walk_strings(v: &Value, f: &mut dyn FnMut(&str) -> Result<(), String>) -> Result<(), String> {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().try_for_each(|x| walk_strings(x, f)),
        Value::Object(m) => {
            for (k, x) in m {
                f(k)?;
                walk_strings(x, f)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Error from instantiating a template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// A hole that does not parse.
    #[error("template: {0}")]
    Parse(String),
    /// A hole that does not evaluate.
    #[error("template `${{{expr}}}`: {error}")]
    Eval {
        /// The hole.
        expr: String,
        /// Why.
        error: EvalError,
    },
}

/// Interpolate a string: each `${expr}` becomes its text.
pub fn render(s: &str, scope: &dyn Scope) -> Result<String, TemplateError> {
    let mut out = String::new();
    for (is_expr, part) in template_parts(s).map_err(TemplateError::Parse)? {
        if is_expr {
            let e = parse(&part).map_err(|e| TemplateError::Parse(e.to_string()))?;
            let c = eval(&e, &Vec::new(), scope).map_err(|error| TemplateError::Eval { expr: part.clone(), error })?;
            out.push_str(&coll_text(&c));
        } else {
            out.push_str(&part);
        }
    }
    Ok(out)
}

/// Instantiate a JSON template: strings are interpolated, and a string that is exactly
/// `"${expr}"` becomes the typed JSON value of the expression (an empty result removes the key).
pub fn instantiate(v: &Value, scope: &dyn Scope) -> Result<Value, TemplateError> {
    Ok(match v {
        Value::String(s) => {
            let parts = template_parts(s).map_err(TemplateError::Parse)?;
            if let [(true, src)] = parts.as_slice() {
                let e = parse(src).map_err(|e| TemplateError::Parse(e.to_string()))?;
                let c = eval(&e, &Vec::new(), scope).map_err(|error| TemplateError::Eval { expr: src.clone(), error })?;
                coll_json(&c)
            } else {
                Value::String(render(s, scope)?)
            }
        }
        Value::Array(a) => {
            // an element that is exactly "${expr}" splices every item of its collection
            let mut out = Vec::new();
            for x in a {
                let exact = x.as_str().and_then(|s| match template_parts(s).ok()?.as_slice() {
                    [(true, src)] => Some(src.clone()),
                    _ => None,
                });
                match exact {
                    Some(src) => {
                        let e = parse(&src).map_err(|e| TemplateError::Parse(e.to_string()))?;
                        let c = eval(&e, &Vec::new(), scope).map_err(|error| TemplateError::Eval { expr: src.clone(), error })?;
                        out.extend(c.iter().map(V::to_json));
                    }
                    None => {
                        let v = instantiate(x, scope)?;
                        if !v.is_null() {
                            out.push(v);
                        }
                    }
                }
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let key = render(k, scope)?;
                let val = instantiate(x, scope)?;
                if !val.is_null() {
                    out.insert(key, val);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests;
