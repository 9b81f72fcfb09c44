//! Templates: the `${...}` holes of strings and JSON, found for static checks, rendered as
//! text, or instantiated into typed JSON.

use super::eval::{EvalError, Scope, eval};
use super::parse::parse;
use super::value::{V, coll_json, coll_text};
use serde_json::{Map, Value};

/// A template hole that cannot be read: a `${` without its closing brace, or (static checks,
/// `check_template`) an expression that does not parse. Each names the template or hole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HoleError {
    /// A `${` without its closing brace.
    #[error("unterminated ${{ in '{template}'")]
    Unterminated {
        /// The template text.
        template: String,
    },
    /// A hole whose expression does not parse (the parse error names the expression).
    #[error("{0}")]
    Parse(#[from] super::parse::ParseError),
}

/// Split `${...}` holes out of a template string: literal text and expression sources.
pub(crate) fn template_parts(s: &str) -> Result<Vec<(bool, String)>, HoleError> {
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
            return Err(HoleError::Unterminated { template: s.to_string() });
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
pub(crate) fn template_exprs(v: &Value) -> Result<Vec<String>, HoleError> {
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

fn walk_strings(v: &Value, f: &mut dyn FnMut(&str) -> Result<(), HoleError>) -> Result<(), HoleError> {
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
    render_holes(s, scope, None)
}

/// [`render`], writing `unknown(var)` for a hole that reads a variable not revealed yet
/// ([`EvalError::Unknown`]) instead of failing.
pub fn render_with_unknowns(s: &str, scope: &dyn Scope, unknown: &dyn Fn(&str) -> String) -> Result<String, TemplateError> {
    render_holes(s, scope, Some(unknown))
}

fn render_holes(s: &str, scope: &dyn Scope, unknown: Option<&dyn Fn(&str) -> String>) -> Result<String, TemplateError> {
    let mut out = String::new();
    for (is_expr, part) in template_parts(s).map_err(|e| TemplateError::Parse(e.to_string()))? {
        if is_expr {
            let e = parse(&part).map_err(|e| TemplateError::Parse(e.to_string()))?;
            match (eval(&e, &Vec::new(), scope), unknown) {
                (Ok(c), _) => out.push_str(&coll_text(&c)),
                (Err(EvalError::Unknown(v)), Some(f)) => out.push_str(&f(&v)),
                (Err(error), _) => return Err(TemplateError::Eval { expr: part.clone(), error }),
            }
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
            let parts = template_parts(s).map_err(|e| TemplateError::Parse(e.to_string()))?;
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
