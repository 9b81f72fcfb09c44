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

// The language by concept: tokens, the parser and its tree, values, evaluation, built-in
// functions, templates. Everything public is re-exported here.
mod eval;
mod functions;
mod lex;
mod parse;
mod template;
mod value;

pub use eval::{EvalError, Scope, eval, truth};
pub use parse::{Expr, MAX_DEPTH, Op, ParseError, parse};
pub(crate) use template::template_exprs;
pub use template::{HoleError, TemplateError, instantiate, render, render_with_unknowns};
pub use value::{Coll, DurUnit, V, coll_json, parse_datetime};

#[cfg(test)]
mod tests;
