//! The parser: the expression tree ([`Expr`], [`Op`]), parse errors with their position,
//! precedence climbing over the operator levels, and the nesting limit ([`MAX_DEPTH`]).

use super::functions::check_calls;
use super::lex::{Tok, lex};
use super::value::{Coll, DurUnit, V};
use std::fmt;

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

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
