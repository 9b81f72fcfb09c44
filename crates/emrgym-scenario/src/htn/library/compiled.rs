//! The compiled library: selectors, checks, arguments, orders, methods, tasks and
//! primitives with their expressions parsed, and the queries the planner and the checks ask
//! of it (parameters, order edges, reachable tasks, the variables everything reads).

use super::decl::{SenseDecl, ToolDecl};
use crate::htn::expr::{self, Expr};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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
        /// Fewest matches (0: none may exist).
        count: u32,
        /// Most matches accepted (`count` unless the check allows more).
        count_max: u32,
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
    pub(crate) fn senses(&self) -> bool {
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

/// Variables a template reads.
pub(crate) fn template_vars(v: &Value) -> Vec<String> {
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
    /// The parameters of a task or primitive.
    pub(crate) fn params_of(&self, name: &str) -> Option<&[String]> {
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
