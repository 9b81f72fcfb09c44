//! The task library: JSON files of compound tasks (ordered methods with `when`
//! conditions, `let` values, subtasks and their partial order), primitive tasks (an
//! instruction, the reference tool call, an optional `sense` query whose result becomes a
//! fact, and `expect` postconditions) and named write selectors. Loading merges files,
//! compiles every expression and checks the network statically (names, arity, variable
//! scope, acyclic orders, facts bound before use, no recursion).

use super::expr::{self, Expr, Op};
use petgraph::algo::{has_path_connecting, is_cyclic_directed};
use petgraph::graph::DiGraph;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One library file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryFile {
    /// JSON Schema reference (ignored).
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// What the file holds.
    #[serde(default)]
    pub doc: String,
    /// Named write selectors.
    #[serde(default)]
    pub selectors: BTreeMap<String, SelectorDecl>,
    /// Compound tasks.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskDecl>,
    /// Primitive tasks.
    #[serde(default)]
    pub primitives: BTreeMap<String, PrimitiveDecl>,
}

/// A selector of writes in the episode's store diff.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectorDecl {
    /// Explanation.
    #[serde(default)]
    pub doc: String,
    /// Resource type written.
    pub resource_type: String,
    /// `create` (new resources), `update` (changed existing ones) or `write` (either).
    #[serde(default = "default_action")]
    pub action: String,
    /// Condition on the written resource (its focus), with the node's variables.
    #[serde(rename = "where", default)]
    pub where_: Option<String>,
}

fn default_action() -> String {
    "create".into()
}

/// A compound task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDecl {
    /// What it achieves (shown in guidance).
    #[serde(default)]
    pub doc: String,
    /// Parameter names.
    #[serde(default)]
    pub params: Vec<String>,
    /// Methods, tried in order: the first whose `when` holds is chosen.
    pub methods: Vec<MethodDecl>,
}

/// A method of a compound task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodDecl {
    /// Branch label (reported, pinned by `expect_branch`, balanced across a family).
    pub name: String,
    /// What this branch means (shown in guidance when the agent decides).
    #[serde(default)]
    pub doc: String,
    /// Condition (default true).
    #[serde(default)]
    pub when: Option<String>,
    /// Values computed for the subtasks, in order: name -> expression.
    #[serde(rename = "let", default)]
    pub lets: Map<String, Value>,
    /// Subtasks.
    #[serde(default)]
    pub subtasks: Vec<SubtaskDecl>,
    /// `"sequential"` (default), `"unordered"`, or explicit edges `[["a", "b"], ...]`.
    #[serde(default)]
    pub order: Option<Value>,
    /// Checks on the branch as a whole (e.g. a write that must not happen).
    #[serde(default)]
    pub expect: Vec<CheckDecl>,
}

/// A subtask reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtaskDecl {
    /// Id, unique among siblings; a sensing subtask's id names its fact (`%id`).
    pub id: String,
    /// Task or primitive name.
    pub task: String,
    /// Arguments: literal JSON, `"%expr..."` strings, `{"expr": "..."}`, or `${...}` templates.
    #[serde(default)]
    pub args: Map<String, Value>,
}

/// A primitive task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimitiveDecl {
    /// What it is.
    #[serde(default)]
    pub doc: String,
    /// Parameter names.
    #[serde(default)]
    pub params: Vec<String>,
    /// Instruction shown in guided mode (a template; no computed answers).
    pub instruction: String,
    /// Extra detail shown only with hints (may carry computed values).
    #[serde(default)]
    pub hint: Option<String>,
    /// The reference tool call (templated arguments).
    #[serde(default)]
    pub tool: Option<ToolDecl>,
    /// A search whose result becomes this subtask's fact.
    #[serde(default)]
    pub sense: Option<SenseDecl>,
    /// The fact is the result of the reference tool call itself (a calculator run on inputs
    /// gathered from the record), so branches and answers use the calculator's value rather
    /// than a formula re-written in an expression. `%id.value` is the result's value.
    #[serde(default)]
    pub computes: bool,
    /// Postconditions.
    #[serde(default)]
    pub expect: Vec<CheckDecl>,
    /// Weight in the progress score (default 1).
    #[serde(default = "one")]
    pub weight: f64,
    /// Whether episode success requires this node (default true).
    #[serde(default = "yes")]
    pub gate: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

/// A reference tool call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolDecl {
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON template).
    #[serde(default)]
    pub args: Value,
}

/// A sensing query (FHIR search with templated parameters).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SenseDecl {
    /// Resource type.
    pub resource_type: String,
    /// Search parameters (templates).
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// A selector reference: a name or an inline selector.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SelectRef {
    /// A named selector.
    Named(String),
    /// Inline.
    Inline(SelectorDecl),
}

/// A postcondition (exactly one of `observed`, `select`, `answer`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckDecl {
    /// Explanation.
    #[serde(default)]
    pub doc: String,
    /// The sensing result of this primitive was shown to the agent.
    #[serde(default)]
    pub observed: Option<bool>,
    /// Writes matching this selector...
    #[serde(default)]
    pub select: Option<SelectRef>,
    /// ...number exactly this many (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// ...and each satisfies these expressions.
    #[serde(default)]
    pub assert: Vec<String>,
    /// The final answer equals this expression's value.
    #[serde(default)]
    pub answer: Option<String>,
    /// Unit of the expected answer, for answers given with another unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Analyte for unit conversion of answers (see `convert_units`).
    #[serde(default)]
    pub analyte: Option<String>,
}

// ------------------------------------------------------------------------------------
// Compiled library
// ------------------------------------------------------------------------------------

/// A compiled selector.
#[derive(Debug, Clone)]
pub struct Selector {
    /// Name (or `inline`).
    pub name: String,
    /// Resource type.
    pub resource_type: String,
    /// create / update / write.
    pub action: String,
    /// Condition.
    pub where_: Option<Expr>,
    /// Source text of the condition.
    pub where_src: Option<String>,
}

/// A compiled check.
#[derive(Debug, Clone)]
pub enum Check {
    /// The fact was shown to the agent.
    Observed,
    /// Writes matching a selector.
    Select {
        /// The selector.
        selector: Selector,
        /// Exact count.
        count: u32,
        /// Assertions on each match, with their source.
        asserts: Vec<(String, Expr)>,
    },
    /// The final answer.
    Answer {
        /// Expected value.
        expr: Expr,
        /// Source.
        src: String,
        /// Unit.
        unit: Option<String>,
        /// Analyte.
        analyte: Option<String>,
    },
}

/// A compiled argument.
#[derive(Debug, Clone)]
pub enum Arg {
    /// An expression.
    Expr(Expr),
    /// A JSON template (literal when it has no holes).
    Template(Value),
}

/// Order of a method's subtasks.
#[derive(Debug, Clone, PartialEq)]
pub enum Order {
    /// Each after the previous.
    Sequential,
    /// Any order.
    Unordered,
    /// Explicit edges by subtask index.
    Edges(Vec<(usize, usize)>),
}

/// A compiled subtask.
#[derive(Debug, Clone)]
pub struct Subtask {
    /// Id.
    pub id: String,
    /// Callee.
    pub task: String,
    /// Arguments.
    pub args: Vec<(String, Arg)>,
}

/// A compiled method.
#[derive(Debug, Clone)]
pub struct Method {
    /// Branch label.
    pub name: String,
    /// Explanation.
    pub doc: String,
    /// Condition.
    pub when: Option<Expr>,
    /// Lets in order.
    pub lets: Vec<(String, Expr)>,
    /// Subtasks.
    pub subtasks: Vec<Subtask>,
    /// Order.
    pub order: Order,
    /// Branch checks.
    pub expect: Vec<Check>,
}

/// A compiled compound task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Name.
    pub name: String,
    /// Explanation.
    pub doc: String,
    /// Params.
    pub params: Vec<String>,
    /// Methods.
    pub methods: Vec<Method>,
}

/// A compiled primitive.
#[derive(Debug, Clone)]
pub struct Primitive {
    /// Name.
    pub name: String,
    /// Explanation.
    pub doc: String,
    /// Params.
    pub params: Vec<String>,
    /// Instruction template.
    pub instruction: String,
    /// Hint template.
    pub hint: Option<String>,
    /// Reference tool call.
    pub tool: Option<ToolDecl>,
    /// Sensing query.
    pub sense: Option<SenseDecl>,
    /// The reference call's result is the fact.
    pub computes: bool,
    /// Checks.
    pub expect: Vec<Check>,
    /// Progress weight.
    pub weight: f64,
    /// Gates success.
    pub gate: bool,
}

impl Primitive {
    /// Whether the primitive yields a fact (a search, or a computed result).
    pub fn senses(&self) -> bool {
        self.sense.is_some() || self.computes
    }
}

/// A loaded, checked library.
#[derive(Debug, Clone, Default)]
pub struct Library {
    /// Named selectors.
    pub selectors: BTreeMap<String, Selector>,
    /// Compound tasks.
    pub tasks: BTreeMap<String, Task>,
    /// Primitives.
    pub primitives: BTreeMap<String, Primitive>,
    /// Which file defined each name (for messages).
    pub origin: BTreeMap<String, String>,
}

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

/// The 1-based line of a JSON pointer in `text` (found by scanning for each key in turn).
pub fn locate(text: &str, pointer: &str) -> Option<usize> {
    let mut pos = 0usize;
    let mut found = false;
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let needle = format!("\"{}\"", seg.replace("~1", "/").replace("~0", "~"));
        match text[pos..].find(&needle) {
            Some(i) => {
                pos += i + needle.len();
                found = true;
            }
            None => break,
        }
    }
    if !found {
        return None;
    }
    Some(text[..pos].matches('\n').count() + 1)
}

/// Functions that reduce a collection to at most one item.
const REDUCING: &[&str] = &[
    "first",
    "last",
    "single",
    "count",
    "exists",
    "empty",
    "all",
    "allTrue",
    "anyTrue",
    "allFalse",
    "anyFalse",
    "sum",
    "min",
    "max",
    "avg",
    "isDistinct",
    "subsetOf",
    "supersetOf",
    "not",
];

/// Why an operand may hold more than one item: the repeating element it goes through, or
/// `None` when it holds at most one (or cannot be known statically, like a variable).
fn repeating_operand(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(c) if c.len() > 1 => Some("a literal collection".into()),
        Expr::Ident(n) => super::cardinality::repeats(n).then(|| format!("'{n}'")),
        Expr::Member(base, n) => repeating_operand(base).or_else(|| super::cardinality::repeats(n).then(|| format!("'{n}'"))),
        Expr::Call(_, f, _) if REDUCING.contains(&f.as_str()) => None,
        Expr::Call(base, _, _) => repeating_operand(base),
        Expr::Bin(Op::Union, _, _) => Some("a union (|)".into()),
        _ => None,
    }
}

/// Comparisons (`=`, `!=`, `~`, `<`, `<=`, `>`, `>=`) with an operand that can hold more than
/// one item, anywhere in `e`. On a collection `=` is collection equality: `code.coding.code =
/// '84114007'` is false for a Condition coded in both SNOMED CT and ICD-10-CM.
pub fn comparison_lints(e: &Expr) -> Vec<String> {
    let mut out = Vec::new();
    walk_comparisons(e, &mut out);
    out
}

fn walk_comparisons(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Bin(op, a, b) => {
            if matches!(op, Op::Eq | Op::Ne | Op::Equiv | Op::Lt | Op::Le | Op::Gt | Op::Ge) {
                for side in [a, b] {
                    if let Some(why) = repeating_operand(side) {
                        out.push(format!(
                            "a comparison operand can hold more than one item (it goes through {why}, which repeats in FHIR R4): \
                             compare inside where(), e.g. `code.coding.where(code = 'x').exists()`, or reduce it with first()"
                        ));
                    }
                }
            }
            walk_comparisons(a, out);
            walk_comparisons(b, out);
        }
        Expr::Member(b, _) | Expr::Neg(b) => walk_comparisons(b, out),
        Expr::Call(b, _, args) => {
            walk_comparisons(b, out);
            for a in args {
                walk_comparisons(a, out);
            }
        }
        Expr::Index(a, b) => {
            walk_comparisons(a, out);
            walk_comparisons(b, out);
        }
        _ => {}
    }
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
            return Some(Check::Select { selector, count, asserts });
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
                ctx.err(pointer, e);
                return None;
            }
            Some(Arg::Template(other.clone()))
        }
    }
}

/// Check that every `${...}` hole in a template parses.
pub fn check_template(v: &Value) -> Result<(), String> {
    for src in expr::template_exprs(v)? {
        expr::parse(&src).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Variables a template reads.
pub fn template_vars(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(srcs) = expr::template_exprs(v) {
        for s in srcs {
            if let Ok(e) = expr::parse(&s) {
                out.extend(e.vars());
            }
        }
    }
    out
}

impl Arg {
    /// Variables the argument reads.
    pub fn vars(&self) -> Vec<String> {
        match self {
            Arg::Expr(e) => e.vars(),
            Arg::Template(v) => template_vars(v),
        }
    }
}

impl Check {
    /// Variables the check reads (besides the focus resource).
    pub fn vars(&self) -> Vec<String> {
        match self {
            Check::Observed => Vec::new(),
            Check::Select { selector, asserts, .. } => {
                let mut v: Vec<String> = selector.where_.iter().flat_map(Expr::vars).collect();
                v.extend(asserts.iter().flat_map(|(_, e)| e.vars()));
                v
            }
            Check::Answer { expr, .. } => expr.vars(),
        }
    }
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
                        ctx.err(&format!("{ptr}/{field}"), e);
                    }
                }
                if let Some(tool) = &p.tool
                    && let Err(e) = check_template(&tool.args)
                {
                    ctx.err(&format!("{ptr}/tool/args"), e);
                }
                if let Some(sense) = &p.sense
                    && let Err(e) = check_template(&Value::Object(sense.params.clone()))
                {
                    ctx.err(&format!("{ptr}/sense"), e);
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

    /// The parameters of a task or primitive.
    pub fn params_of(&self, name: &str) -> Option<&[String]> {
        self.tasks
            .get(name)
            .map(|t| t.params.as_slice())
            .or_else(|| self.primitives.get(name).map(|p| p.params.as_slice()))
    }

    /// Subtask order edges of a method as index pairs.
    pub fn edges(m: &Method) -> Vec<(usize, usize)> {
        match &m.order {
            Order::Sequential => (1..m.subtasks.len()).map(|i| (i - 1, i)).collect(),
            Order::Unordered => Vec::new(),
            Order::Edges(e) => e.clone(),
        }
    }

    /// Static checks on the tasks defined in one file.
    fn lint(&self, file: &str, text: &str) -> Vec<LoadError> {
        let mut errors = Vec::new();
        let mut err = |pointer: String, message: String| {
            errors.push(LoadError {
                file: file.to_string(),
                line: locate(text, &pointer),
                pointer,
                message,
            })
        };
        for (k, t) in self
            .tasks
            .iter()
            .filter(|(k, _)| self.origin.get(*k).map(String::as_str) == Some(file))
        {
            for (mi, m) in t.methods.iter().enumerate() {
                let mp = format!("/tasks/{k}/methods/{mi}");
                // callees exist and arguments match their parameters
                for (si, s) in m.subtasks.iter().enumerate() {
                    let sp = format!("{mp}/subtasks/{si}");
                    match self.params_of(&s.task) {
                        None => err(sp.clone(), format!("unknown task or primitive '{}'", s.task)),
                        Some(params) => {
                            let given: BTreeSet<&str> = s.args.iter().map(|(n, _)| n.as_str()).collect();
                            let wanted: BTreeSet<&str> = params.iter().map(String::as_str).collect();
                            for missing in wanted.difference(&given) {
                                err(sp.clone(), format!("'{}' needs argument '{missing}'", s.task));
                            }
                            for extra in given.difference(&wanted) {
                                err(sp.clone(), format!("'{}' has no parameter '{extra}'", s.task));
                            }
                        }
                    }
                }
                // the order is a DAG
                let mut g: DiGraph<usize, ()> = DiGraph::new();
                let idx: Vec<_> = (0..m.subtasks.len()).map(|i| g.add_node(i)).collect();
                for (a, b) in Library::edges(m) {
                    g.add_edge(idx[a], idx[b], ());
                }
                if is_cyclic_directed(&g) {
                    err(format!("{mp}/order"), format!("the order of method '{}' has a cycle", m.name));
                    continue;
                }
                for (si, s) in m.subtasks.iter().enumerate() {
                    for (an, a) in &s.args {
                        for v in a.vars() {
                            if let Some(bi) = m.subtasks.iter().position(|x| x.id == v) {
                                if self.primitives.get(&m.subtasks[bi].task).is_none_or(|p| !p.senses()) {
                                    err(
                                        format!("{mp}/subtasks/{si}/args/{an}"),
                                        format!("%{v} names subtask '{v}', which senses nothing"),
                                    );
                                } else if !has_path_connecting(&g, idx[bi], idx[si], None) || bi == si {
                                    err(
                                        format!("{mp}/subtasks/{si}/args/{an}"),
                                        format!("fact %{v} is used by '{}' but '{v}' is not ordered before it", s.id),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            if self.reaches(k, k, &mut BTreeSet::new()) {
                err(
                    format!("/tasks/{k}"),
                    format!("task '{k}' includes itself (recursion is not supported)"),
                );
            }
        }
        errors
    }

    fn reaches(&self, from: &str, target: &str, seen: &mut BTreeSet<String>) -> bool {
        let Some(t) = self.tasks.get(from) else { return false };
        for m in &t.methods {
            for s in &m.subtasks {
                if s.task == target {
                    return true;
                }
                if seen.insert(s.task.clone()) && self.reaches(&s.task, target, seen) {
                    return true;
                }
            }
        }
        false
    }

    /// The tasks and primitives reachable from `root` (itself included).
    pub fn reachable(&self, root: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![root.to_string()];
        while let Some(n) = stack.pop() {
            if !out.insert(n.clone()) {
                continue;
            }
            if let Some(t) = self.tasks.get(&n) {
                stack.extend(t.methods.iter().flat_map(|m| m.subtasks.iter().map(|s| s.task.clone())));
            }
        }
        out
    }

    /// Every variable the network under `root` reads that is not local (params, lets,
    /// facts, `result`): these must be scenario variables.
    pub fn free_globals(&self, root: &str) -> BTreeSet<String> {
        let reach = self.reachable(root);
        let mut out = BTreeSet::new();
        for t in self.tasks.values().filter(|t| reach.contains(&t.name)) {
            for m in &t.methods {
                let mut local: BTreeSet<String> = t.params.iter().cloned().collect();
                local.extend(m.lets.iter().map(|(n, _)| n.clone()));
                local.extend(m.subtasks.iter().map(|s| s.id.clone()));
                let mut vars: Vec<String> = m.when.iter().flat_map(Expr::vars).collect();
                vars.extend(m.lets.iter().flat_map(|(_, e)| e.vars()));
                vars.extend(m.subtasks.iter().flat_map(|s| s.args.iter().flat_map(|(_, a)| a.vars())));
                vars.extend(m.expect.iter().flat_map(Check::vars));
                out.extend(vars.into_iter().filter(|v| !local.contains(v)));
            }
        }
        for p in self.primitives.values().filter(|p| reach.contains(&p.name)) {
            let mut vars = template_vars(&Value::String(p.instruction.clone()));
            if let Some(h) = &p.hint {
                vars.extend(template_vars(&Value::String(h.clone())));
            }
            if let Some(t) = &p.tool {
                vars.extend(template_vars(&t.args));
            }
            if let Some(s) = &p.sense {
                vars.extend(template_vars(&Value::Object(s.params.clone())));
            }
            vars.extend(p.expect.iter().flat_map(Check::vars));
            out.extend(vars.into_iter().filter(|v| !p.params.contains(v) && v != "result"));
        }
        out.remove("now");
        out
    }
}
