//! Loading: parsing library files, merging them (names defined once, selectors shared
//! across files), compiling every expression and template, and collecting every problem with
//! its file, line and JSON pointer.

use super::compiled::{Arg, Check, Library, Method, Order, Primitive, Selector, Subtask, Task};
use super::decl::{CheckDecl, LibraryFile, SelectRef, SelectorDecl};
use super::lint::comparison_lints;
use super::locate::locate;
use crate::htn::expr::{self, Expr};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A problem found while loading, with where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LoadError {
    /// File name.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// JSON pointer of the offending element.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<LoadError>,
}

impl Ctx<'_> {
    fn err(&mut self, pointer: &str, message: impl Into<String>) {
        self.errors.push(LoadError {
            file: self.file.to_string(),
            line: locate(self.text, pointer),
            pointer: pointer.to_string(),
            message: message.into(),
        });
    }

    fn expr(&mut self, pointer: &str, src: &str) -> Option<Expr> {
        match expr::parse(src) {
            Ok(e) => {
                for m in comparison_lints(&e) {
                    self.err(pointer, format!("{m} in `{src}`"));
                }
                Some(e)
            }
            Err(e) => {
                self.err(pointer, e.to_string());
                None
            }
        }
    }

    fn selector(&mut self, pointer: &str, name: &str, d: &SelectorDecl) -> Option<Selector> {
        if !["create", "update", "write"].contains(&d.action.as_str()) {
            self.err(pointer, format!("action '{}' is not create, update or write", d.action));
        }
        let where_ = match &d.where_ {
            Some(w) => Some(self.expr(&format!("{pointer}/where"), w)?),
            None => None,
        };
        Some(Selector {
            name: name.to_string(),
            resource_type: d.resource_type.clone(),
            action: d.action.clone(),
            where_,
            where_src: d.where_.clone(),
        })
    }

    fn check(&mut self, pointer: &str, c: &CheckDecl, named: &BTreeMap<String, SelectorDecl>) -> Option<Check> {
        let kinds = usize::from(c.observed.is_some()) + usize::from(c.select.is_some()) + usize::from(c.answer.is_some());
        if kinds != 1 {
            self.err(pointer, "a check needs exactly one of observed, select, answer");
            return None;
        }
        if c.observed.is_some() {
            if c.observed != Some(true) {
                self.err(pointer, "observed must be true");
            }
            return Some(Check::Observed);
        }
        if let Some(sel) = &c.select {
            let selector = match sel {
                SelectRef::Named(n) => match named.get(n) {
                    Some(d) => self.selector(&format!("{pointer}/select"), n, d)?,
                    None => {
                        self.err(&format!("{pointer}/select"), format!("unknown selector '{n}'"));
                        return None;
                    }
                },
                SelectRef::Inline(d) => self.selector(&format!("{pointer}/select"), "inline", d)?,
            };
            let mut asserts = Vec::new();
            for (i, a) in c.assert.iter().enumerate() {
                asserts.push((a.clone(), self.expr(&format!("{pointer}/assert/{i}"), a)?));
            }
            let count = c.count.unwrap_or(1);
            if count == 0 && !asserts.is_empty() {
                self.err(pointer, "a check with count 0 cannot assert anything");
            }
            let count_max = c.count_max.unwrap_or(count);
            if count_max < count || (count == 0 && count_max > 0) {
                self.err(
                    &format!("{pointer}/count_max"),
                    format!("count_max {count_max} must be at least count {count}, and 0 when count is 0"),
                );
            }
            return Some(Check::Select {
                selector,
                count,
                count_max,
                asserts,
            });
        }
        let src = c.answer.clone().unwrap_or_default();
        let e = self.expr(&format!("{pointer}/answer"), &src)?;
        Some(Check::Answer {
            expr: e,
            src,
            unit: c.unit.clone(),
            analyte: c.analyte.clone(),
        })
    }
}

fn compile_arg(ctx: &mut Ctx<'_>, pointer: &str, v: &Value) -> Option<Arg> {
    match v {
        Value::String(s) if s.starts_with('%') => ctx.expr(pointer, s).map(Arg::Expr),
        Value::Object(m) if m.len() == 1 && m.contains_key("expr") => match m.get("expr") {
            Some(Value::String(s)) => ctx.expr(&format!("{pointer}/expr"), s).map(Arg::Expr),
            _ => {
                ctx.err(pointer, "expr must be a string");
                None
            }
        },
        other => {
            if let Err(e) = check_template(other) {
                ctx.err(pointer, e.to_string());
                return None;
            }
            Some(Arg::Template(other.clone()))
        }
    }
}

/// Check that every `${...}` hole in a template parses.
pub(crate) fn check_template(v: &Value) -> Result<(), expr::HoleError> {
    for src in expr::template_exprs(v)? {
        expr::parse(&src)?;
    }
    Ok(())
}

impl Library {
    /// Load and merge library files given as (file name, JSON text). All problems are
    /// collected; the library is returned only when there are none.
    pub fn load(files: &[(String, String)]) -> Result<Library, Vec<LoadError>> {
        let mut lib = Library::default();
        let mut errors = Vec::new();
        let mut parsed: Vec<(String, String, LibraryFile)> = Vec::new();
        for (name, text) in files {
            match serde_json::from_str::<LibraryFile>(text) {
                Ok(f) => parsed.push((name.clone(), text.clone(), f)),
                Err(e) => errors.push(LoadError {
                    file: name.clone(),
                    line: Some(e.line()),
                    pointer: String::new(),
                    message: e.to_string(),
                }),
            }
        }
        // all named selectors first (checks in any file may use any selector)
        let mut named: BTreeMap<String, SelectorDecl> = BTreeMap::new();
        for (name, text, f) in &parsed {
            for (k, d) in &f.selectors {
                if named.insert(k.clone(), d.clone()).is_some() {
                    errors.push(LoadError {
                        file: name.clone(),
                        line: locate(text, &format!("/selectors/{k}")),
                        pointer: format!("/selectors/{k}"),
                        message: format!("selector '{k}' is defined twice"),
                    });
                }
            }
        }
        for (name, text, f) in &parsed {
            let mut ctx = Ctx {
                file: name,
                text,
                errors: Vec::new(),
            };
            for (k, d) in &f.selectors {
                if let Some(s) = ctx.selector(&format!("/selectors/{k}"), k, d) {
                    lib.selectors.insert(k.clone(), s);
                }
            }
            for (k, p) in &f.primitives {
                let ptr = format!("/primitives/{k}");
                if lib.origin.insert(k.clone(), name.clone()).is_some() {
                    ctx.err(&ptr, format!("'{k}' is defined twice"));
                    continue;
                }
                let expect: Vec<Check> = p
                    .expect
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| ctx.check(&format!("{ptr}/expect/{i}"), c, &named))
                    .collect();
                for (field, t) in [("instruction", Some(&p.instruction)), ("hint", p.hint.as_ref())] {
                    if let Some(t) = t
                        && let Err(e) = check_template(&Value::String(t.clone()))
                    {
                        ctx.err(&format!("{ptr}/{field}"), e.to_string());
                    }
                }
                if let Some(tool) = &p.tool
                    && let Err(e) = check_template(&tool.args)
                {
                    ctx.err(&format!("{ptr}/tool/args"), e.to_string());
                }
                if let Some(sense) = &p.sense
                    && let Err(e) = check_template(&Value::Object(sense.params.clone()))
                {
                    ctx.err(&format!("{ptr}/sense"), e.to_string());
                }
                if p.computes && (p.tool.is_none() || p.sense.is_some()) {
                    ctx.err(&ptr, "a computing primitive needs a tool call and no sense query");
                }
                if p.expect.iter().any(|c| c.observed.is_some()) && p.sense.is_none() && !p.computes {
                    ctx.err(&ptr, "an observed check needs a sense query (or computes)");
                }
                lib.primitives.insert(
                    k.clone(),
                    Primitive {
                        name: k.clone(),
                        doc: p.doc.clone(),
                        params: p.params.clone(),
                        instruction: p.instruction.clone(),
                        hint: p.hint.clone(),
                        tool: p.tool.clone(),
                        sense: p.sense.clone(),
                        computes: p.computes,
                        expect,
                        weight: p.weight,
                        gate: p.gate,
                    },
                );
            }
            for (k, t) in &f.tasks {
                let ptr = format!("/tasks/{k}");
                if lib.origin.insert(k.clone(), name.clone()).is_some() {
                    ctx.err(&ptr, format!("'{k}' is defined twice"));
                    continue;
                }
                if t.methods.is_empty() {
                    ctx.err(&ptr, "a task needs at least one method");
                }
                let mut methods = Vec::new();
                let mut names = BTreeSet::new();
                for (mi, m) in t.methods.iter().enumerate() {
                    let mp = format!("{ptr}/methods/{mi}");
                    if !names.insert(m.name.clone()) {
                        ctx.err(&mp, format!("method name '{}' is used twice", m.name));
                    }
                    let when = match &m.when {
                        Some(w) => ctx.expr(&format!("{mp}/when"), w),
                        None => None,
                    };
                    let mut lets = Vec::new();
                    for (ln, lv) in &m.lets {
                        match lv.as_str() {
                            Some(src) => {
                                if let Some(e) = ctx.expr(&format!("{mp}/let/{ln}"), src) {
                                    lets.push((ln.clone(), e));
                                }
                            }
                            None => ctx.err(&format!("{mp}/let/{ln}"), "a let value must be an expression string"),
                        }
                    }
                    let mut subtasks = Vec::new();
                    let mut ids = BTreeSet::new();
                    for (si, s) in m.subtasks.iter().enumerate() {
                        let sp = format!("{mp}/subtasks/{si}");
                        if !ids.insert(s.id.clone()) {
                            ctx.err(&sp, format!("subtask id '{}' is used twice", s.id));
                        }
                        if s.id.contains('.') || s.id.is_empty() {
                            ctx.err(&sp, format!("subtask id '{}' must be a plain name", s.id));
                        }
                        let args = s
                            .args
                            .iter()
                            .filter_map(|(an, av)| compile_arg(&mut ctx, &format!("{sp}/args/{an}"), av).map(|a| (an.clone(), a)))
                            .collect();
                        subtasks.push(Subtask {
                            id: s.id.clone(),
                            task: s.task.clone(),
                            args,
                        });
                    }
                    let order = match &m.order {
                        None => Order::Sequential,
                        Some(Value::String(s)) if s == "sequential" => Order::Sequential,
                        Some(Value::String(s)) if s == "unordered" => Order::Unordered,
                        Some(Value::Array(edges)) => {
                            let mut out = Vec::new();
                            for (ei, e) in edges.iter().enumerate() {
                                let pair: Option<(usize, usize)> = e.as_array().and_then(|p| {
                                    let a = p.first()?.as_str()?;
                                    let b = p.get(1)?.as_str()?;
                                    let ia = m.subtasks.iter().position(|s| s.id == a)?;
                                    let ib = m.subtasks.iter().position(|s| s.id == b)?;
                                    (p.len() == 2).then_some((ia, ib))
                                });
                                match pair {
                                    Some(p) => out.push(p),
                                    None => ctx.err(
                                        &format!("{mp}/order/{ei}"),
                                        format!("order edge {e} must be [\"id\", \"id\"] naming subtasks of this method"),
                                    ),
                                }
                            }
                            Order::Edges(out)
                        }
                        Some(other) => {
                            ctx.err(
                                &format!("{mp}/order"),
                                format!("order {other} must be \"sequential\", \"unordered\" or a list of edges"),
                            );
                            Order::Sequential
                        }
                    };
                    let expect = m
                        .expect
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| ctx.check(&format!("{mp}/expect/{i}"), c, &named))
                        .collect();
                    methods.push(Method {
                        name: m.name.clone(),
                        doc: m.doc.clone(),
                        when,
                        lets,
                        subtasks,
                        order,
                        expect,
                    });
                }
                lib.tasks.insert(
                    k.clone(),
                    Task {
                        name: k.clone(),
                        doc: t.doc.clone(),
                        params: t.params.clone(),
                        methods,
                    },
                );
            }
            errors.extend(ctx.errors);
        }
        if errors.is_empty() {
            for (name, text, _) in &parsed {
                errors.extend(lib.lint(name, text));
            }
        }
        if errors.is_empty() { Ok(lib) } else { Err(errors) }
    }
}
