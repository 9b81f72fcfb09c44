//! The planner: resolves a task network against a patient's record into a tree of nodes
//! (compound nodes with the method chosen, primitive nodes with their instantiated
//! instruction, reference tool call, sensing fact and checks) plus ordering edges.
//!
//! Fact values always come from the untouched record (the [`FactSource`], run at the
//! scenario's "now"), never from the agent. What differs between modes is what the
//! planner may *know*: in oracle mode every fact is revealed; in guided mode only the
//! facts the agent's own tool results have shown ([`fact_revealed`]), so a decision that
//! depends on an unseen fact stays deferred and guidance never leaks a branch.

use super::expr::{self, Coll, EvalError, Scope, V};
use super::library::{Arg, Check, Library};
use crate::trajectory::{Step, ToolCall};
use chrono::{DateTime, FixedOffset};
use petgraph::graph::DiGraph;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Where facts come from: a search on the untouched record.
pub trait FactSource {
    /// Run a search; the matching resources in result order.
    fn search(&mut self, resource_type: &str, params: &[(String, String)]) -> Result<Vec<Value>, String>;
    /// Run a computing tool (a calculator) on arguments; its result as JSON.
    fn call(&mut self, name: &str, args: &Value) -> Result<Value, String> {
        let _ = args;
        Err(format!("this fact source cannot run the tool '{name}'"))
    }
}

/// What the planner may know.
#[derive(Debug, Clone, PartialEq)]
pub enum Knowledge {
    /// Every fact (reference plan, grading).
    Oracle,
    /// Only the facts at these node paths (guided mode).
    Revealed(BTreeSet<String>),
}

/// A node's state after planning.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// A compound whose method was chosen and expanded.
    Expanded,
    /// A primitive ready to execute.
    Ready,
    /// Waiting for facts the planner may not know yet.
    Deferred {
        /// The unrevealed facts.
        waiting: Vec<String>,
    },
    /// No method applies (a scenario defect; `scenarios check` reports it).
    NoMethod,
    /// An expression failed (a scenario defect).
    Error {
        /// Why.
        message: String,
    },
}

/// A sensing fact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fact {
    /// Resource type searched.
    pub resource_type: String,
    /// Search parameters.
    pub params: Vec<(String, String)>,
    /// The resources found on the untouched record (for a computed fact, the tool's result).
    pub value: Vec<Value>,
    /// For a computed fact: the tool whose result it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// One node of the planned tree.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Dotted path of subtask ids from the root (`""` for the root).
    pub path: String,
    /// The subtask id.
    pub id: String,
    /// Task or primitive name.
    pub task: String,
    /// `compound` or `primitive`.
    pub kind: &'static str,
    /// Parent index.
    #[serde(skip)]
    pub parent: Option<usize>,
    /// Children indices.
    #[serde(skip)]
    pub children: Vec<usize>,
    /// Chosen method (compound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Planning state.
    pub status: Status,
    /// The node's variables (parameters, and lets of the chosen method), as JSON.
    pub vars: BTreeMap<String, Value>,
    /// Instruction (primitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// Hint (primitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The reference tool call (primitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<ToolCall>,
    /// The sensing fact (primitive with `sense`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fact: Option<Fact>,
    /// Progress weight.
    pub weight: f64,
    /// Gates success.
    pub gate: bool,
}

/// A planned tree.
#[derive(Debug, Clone, Serialize)]
pub struct Tree {
    /// Nodes; index 0 is the root.
    pub nodes: Vec<Node>,
    /// Ordering edges (a before b) between sibling nodes.
    pub before: Vec<(usize, usize)>,
    /// Scenario variables.
    #[serde(skip)]
    pub globals: BTreeMap<String, Coll>,
    /// The clock.
    #[serde(skip)]
    pub now: DateTime<FixedOffset>,
}

/// Scenario variables and the clock.
#[derive(Debug, Clone)]
pub struct Globals {
    /// Variables (`patient`, family and instance variables).
    pub vars: BTreeMap<String, Value>,
    /// The clinical now.
    pub now: DateTime<FixedOffset>,
}

/// A scope over globals and locals (`None` = unrevealed).
pub struct Env<'a> {
    globals: &'a BTreeMap<String, Coll>,
    locals: BTreeMap<String, Option<Coll>>,
    now: DateTime<FixedOffset>,
}

impl Scope for Env<'_> {
    fn var(&self, name: &str) -> Result<Option<Coll>, EvalError> {
        match self.locals.get(name) {
            Some(Some(c)) => Ok(Some(c.clone())),
            Some(None) => Err(EvalError::Unknown(name.to_string())),
            None => Ok(self.globals.get(name).cloned()),
        }
    }
    fn now(&self) -> DateTime<FixedOffset> {
        self.now
    }
}

impl Tree {
    /// A scope with the node's variables (and `extra` on top).
    pub fn scope(&self, node: usize, extra: &[(&str, Coll)]) -> Env<'_> {
        let mut locals: BTreeMap<String, Option<Coll>> = self.nodes[node]
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), Some(V::from_json(v))))
            .collect();
        if let Some(f) = &self.nodes[node].fact {
            locals.insert("result".into(), Some(f.value.iter().flat_map(V::from_json).collect()));
        }
        for (k, v) in extra {
            locals.insert(k.to_string(), Some(v.clone()));
        }
        Env {
            globals: &self.globals,
            locals,
            now: self.now,
        }
    }

    /// The node at a path.
    pub fn find(&self, path: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.path == path)
    }

    /// The branch chosen at every compound node: path -> method.
    pub fn branches(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .filter_map(|n| n.method.clone().map(|m| (n.path.clone(), m)))
            .collect()
    }

    /// Children of `n` in an order that respects the ordering edges, declaration order breaking ties.
    pub fn ordered_children(&self, n: usize) -> Vec<usize> {
        let kids = &self.nodes[n].children;
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        let idx: Vec<_> = kids.iter().map(|k| g.add_node(*k)).collect();
        for (a, b) in &self.before {
            if let (Some(ia), Some(ib)) = (kids.iter().position(|k| k == a), kids.iter().position(|k| k == b)) {
                g.add_edge(idx[ia], idx[ib], ());
            }
        }
        // Kahn's algorithm with the smallest declaration index first
        let mut indeg: Vec<usize> = idx
            .iter()
            .map(|i| g.neighbors_directed(*i, petgraph::Direction::Incoming).count())
            .collect();
        let mut out = Vec::new();
        let mut done = vec![false; kids.len()];
        while out.len() < kids.len() {
            let Some(next) = (0..kids.len()).find(|i| !done[*i] && indeg[*i] == 0) else {
                break; // a cycle: the library lint rejects these
            };
            done[next] = true;
            out.push(kids[next]);
            for m in g.neighbors_directed(idx[next], petgraph::Direction::Outgoing) {
                indeg[m.index()] = indeg[m.index()].saturating_sub(1);
            }
        }
        out
    }

    /// Primitive nodes in execution order (depth first, siblings in a valid order).
    pub fn linear(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.walk(0, &mut out);
        out
    }

    fn walk(&self, n: usize, out: &mut Vec<usize>) {
        if self.nodes[n].kind == "primitive" {
            out.push(n);
        }
        for c in self.ordered_children(n) {
            self.walk(c, out);
        }
    }

    /// Every node in execution order (compounds before their children).
    pub fn linear_all(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.walk_all(0, &mut out);
        out
    }

    fn walk_all(&self, n: usize, out: &mut Vec<usize>) {
        if n >= self.nodes.len() {
            return;
        }
        out.push(n);
        for c in self.ordered_children(n) {
            self.walk_all(c, out);
        }
    }

    /// The reference plan: tool calls in order.
    pub fn reference_calls(&self) -> Vec<(usize, ToolCall)> {
        self.linear()
            .into_iter()
            .filter_map(|n| self.nodes[n].call.clone().map(|c| (n, c)))
            .collect()
    }

    /// Leaves (primitives).
    pub fn leaves(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].kind == "primitive").collect()
    }

    /// Nodes that are not fully planned (deferred, no method, error), with their status.
    pub fn problems(&self) -> Vec<(String, Status)> {
        self.nodes
            .iter()
            .filter(|n| !matches!(n.status, Status::Expanded | Status::Ready))
            .map(|n| (n.path.clone(), n.status.clone()))
            .collect()
    }
}

fn join(path: &str, id: &str) -> String {
    if path.is_empty() { id.to_string() } else { format!("{path}.{id}") }
}

fn globals_coll(g: &Globals) -> BTreeMap<String, Coll> {
    let mut m: BTreeMap<String, Coll> = g.vars.iter().map(|(k, v)| (k.clone(), V::from_json(v))).collect();
    m.insert("now".into(), vec![V::Date(g.now)]);
    m
}

fn coll_map_json(m: &BTreeMap<String, Coll>) -> BTreeMap<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), expr::coll_json(v))).collect()
}

struct Planner<'a> {
    lib: &'a Library,
    facts: &'a mut dyn FactSource,
    knowledge: &'a Knowledge,
    tree: Tree,
}

fn eval_arg(a: &Arg, env: &Env<'_>) -> Result<Coll, EvalError> {
    match a {
        Arg::Expr(e) => expr::eval(e, &Vec::new(), env),
        Arg::Template(v) => match expr::instantiate(v, env) {
            Ok(x) => Ok(V::from_json(&x)),
            Err(expr::TemplateError::Eval { error, .. }) => Err(error),
            Err(expr::TemplateError::Parse(m)) => Err(EvalError::Type(m)),
        },
    }
}

impl Planner<'_> {
    fn push(&mut self, node: Node) -> usize {
        let i = self.tree.nodes.len();
        if let Some(p) = node.parent {
            self.tree.nodes[p].children.push(i);
        }
        self.tree.nodes.push(node);
        i
    }

    fn blank(&self, path: String, id: &str, task: &str, kind: &'static str, parent: Option<usize>, status: Status) -> Node {
        Node {
            path,
            id: id.to_string(),
            task: task.to_string(),
            kind,
            parent,
            children: Vec::new(),
            method: None,
            status,
            vars: BTreeMap::new(),
            instruction: None,
            hint: None,
            call: None,
            fact: None,
            weight: 1.0,
            gate: true,
        }
    }

    fn expand(&mut self, task: &str, id: &str, path: String, parent: Option<usize>, args: BTreeMap<String, Coll>) -> usize {
        let globals = self.tree.globals.clone();
        let now = self.tree.now;
        if let Some(p) = self.lib.primitives.get(task) {
            let mut node = self.blank(path, id, task, "primitive", parent, Status::Ready);
            node.vars = coll_map_json(&args);
            node.weight = p.weight;
            node.gate = p.gate;
            let env = Env {
                globals: &globals,
                locals: args.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect(),
                now,
            };
            let mut error = None;
            match expr::render(&p.instruction, &env) {
                Ok(s) => node.instruction = Some(s),
                Err(e) => error = Some(format!("instruction: {e}")),
            }
            if let Some(h) = &p.hint {
                match expr::render(h, &env) {
                    Ok(s) => node.hint = Some(s),
                    Err(e) => error = Some(format!("hint: {e}")),
                }
            }
            if let Some(t) = &p.tool {
                match expr::instantiate(&t.args, &env) {
                    Ok(a) => {
                        node.call = Some(ToolCall {
                            name: t.name.clone(),
                            arguments: a,
                        })
                    }
                    Err(e) => error = Some(format!("tool arguments: {e}")),
                }
            }
            if let Some(s) = &p.sense {
                match expr::instantiate(&Value::Object(s.params.clone()), &env) {
                    Ok(Value::Object(params)) => {
                        let params: Vec<(String, String)> = params
                            .into_iter()
                            .flat_map(|(k, v)| match v {
                                Value::Array(items) => items.into_iter().map(|i| (k.clone(), value_text(&i))).collect::<Vec<_>>(),
                                other => vec![(k.clone(), value_text(&other))],
                            })
                            .collect();
                        match self.facts.search(&s.resource_type, &params) {
                            Ok(value) => {
                                node.fact = Some(Fact {
                                    resource_type: s.resource_type.clone(),
                                    params,
                                    value,
                                    tool: None,
                                })
                            }
                            Err(e) => error = Some(format!("sense query failed: {e}")),
                        }
                    }
                    Ok(_) => error = Some("sense params must be an object".into()),
                    Err(e) => error = Some(format!("sense query: {e}")),
                }
            }
            if p.computes
                && error.is_none()
                && let Some(call) = &node.call
            {
                match self.facts.call(&call.name, &call.arguments) {
                    Ok(v) => {
                        node.fact = Some(Fact {
                            resource_type: String::new(),
                            params: Vec::new(),
                            value: vec![v],
                            tool: Some(call.name.clone()),
                        })
                    }
                    Err(e) => error = Some(format!("{} failed on the record's inputs: {e}", call.name)),
                }
            }
            if let Some(message) = error {
                node.status = Status::Error { message };
            }
            return self.push(node);
        }
        let Some(t) = self.lib.tasks.get(task) else {
            let node = self.blank(
                path,
                id,
                task,
                "compound",
                parent,
                Status::Error {
                    message: format!("unknown task '{task}'"),
                },
            );
            return self.push(node);
        };
        let mut node = self.blank(path.clone(), id, task, "compound", parent, Status::NoMethod);
        let mut locals: BTreeMap<String, Option<Coll>> = args.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
        // choose the first method whose condition holds; an Unknown before it defers
        let mut chosen = None;
        for m in &t.methods {
            let env = Env {
                globals: &globals,
                locals: locals.clone(),
                now,
            };
            let truth = match &m.when {
                None => Ok(Some(true)),
                Some(w) => expr::truth(w, &Vec::new(), &env),
            };
            match truth {
                Ok(Some(true)) => {
                    chosen = Some(m);
                    break;
                }
                Ok(Some(false)) => continue,
                Ok(None) => {
                    let waiting = m
                        .when
                        .as_ref()
                        .map(|w| w.vars())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|v| matches!(locals.get(v), Some(None)))
                        .collect();
                    node.status = Status::Deferred { waiting };
                    node.vars = coll_map_json(&args);
                    return self.push(node);
                }
                Err(e) => {
                    node.status = Status::Error {
                        message: format!("when of method '{}': {e}", m.name),
                    };
                    node.vars = coll_map_json(&args);
                    return self.push(node);
                }
            }
        }
        let Some(m) = chosen else {
            node.vars = coll_map_json(&args);
            return self.push(node);
        };
        node.method = Some(m.name.clone());
        node.status = Status::Expanded;
        for (ln, le) in &m.lets {
            let env = Env {
                globals: &globals,
                locals: locals.clone(),
                now,
            };
            match expr::eval(le, &Vec::new(), &env) {
                Ok(c) => {
                    locals.insert(ln.clone(), Some(c));
                }
                Err(e) => {
                    node.status = Status::Error {
                        message: format!("let {ln}: {e}"),
                    };
                }
            }
        }
        node.vars = locals
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|c| (k.clone(), expr::coll_json(c))))
            .collect();
        let me = self.push(node);
        if !matches!(self.tree.nodes[me].status, Status::Expanded) {
            return me;
        }
        // subtasks in a topological order (facts must be bound before use)
        let edges = Library::edges(m);
        let order = topo(m.subtasks.len(), &edges);
        let mut child_of: BTreeMap<usize, usize> = BTreeMap::new();
        for si in order {
            let s = &m.subtasks[si];
            let env = Env {
                globals: &globals,
                locals: locals.clone(),
                now,
            };
            let mut vals = BTreeMap::new();
            let mut waiting = Vec::new();
            let mut failure = None;
            for (an, a) in &s.args {
                match eval_arg(a, &env) {
                    Ok(c) => {
                        vals.insert(an.clone(), c);
                    }
                    Err(EvalError::Unknown(v)) => waiting.push(v),
                    Err(e) => failure = Some(format!("argument {an}: {e}")),
                }
            }
            let cpath = join(&path, &s.id);
            let child = if let Some(message) = failure {
                let kind = if self.lib.primitives.contains_key(&s.task) {
                    "primitive"
                } else {
                    "compound"
                };
                let n = self.blank(cpath.clone(), &s.id, &s.task, kind, Some(me), Status::Error { message });
                self.push(n)
            } else if !waiting.is_empty() {
                let kind = if self.lib.primitives.contains_key(&s.task) {
                    "primitive"
                } else {
                    "compound"
                };
                let mut n = self.blank(cpath.clone(), &s.id, &s.task, kind, Some(me), Status::Deferred { waiting });
                if let Some(p) = self.lib.primitives.get(&s.task) {
                    n.weight = p.weight;
                    n.gate = p.gate;
                }
                self.push(n)
            } else {
                self.expand(&s.task, &s.id, cpath.clone(), Some(me), vals)
            };
            child_of.insert(si, child);
            // a sensing subtask binds its fact for later siblings
            if let Some(f) = &self.tree.nodes[child].fact {
                let known = match self.knowledge {
                    Knowledge::Oracle => true,
                    Knowledge::Revealed(set) => set.contains(&cpath),
                };
                let value: Coll = f.value.iter().flat_map(V::from_json).collect();
                locals.insert(s.id.clone(), if known { Some(value) } else { None });
            } else if self.lib.primitives.get(&s.task).is_some_and(|p| p.senses()) {
                locals.insert(s.id.clone(), None);
            }
        }
        // children were pushed in topological order; restore declaration order and add edges
        let mut kids: Vec<usize> = (0..m.subtasks.len()).filter_map(|si| child_of.get(&si).copied()).collect();
        kids.dedup();
        self.tree.nodes[me].children = kids;
        for (a, b) in edges {
            if let (Some(x), Some(y)) = (child_of.get(&a), child_of.get(&b)) {
                self.tree.before.push((*x, *y));
            }
        }
        me
    }
}

fn topo(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut indeg = vec![0usize; n];
    for (_, b) in edges {
        indeg[*b] += 1;
    }
    let mut done = vec![false; n];
    let mut out = Vec::new();
    while out.len() < n {
        let Some(next) = (0..n).find(|i| !done[*i] && indeg[*i] == 0) else {
            // cycle: fall back to declaration order for the rest
            out.extend((0..n).filter(|i| !done[*i]));
            break;
        };
        done[next] = true;
        out.push(next);
        for (a, b) in edges {
            if *a == next {
                indeg[*b] = indeg[*b].saturating_sub(1);
            }
        }
    }
    out
}

/// A JSON value as a search parameter value.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Plan `root` with `args` against the record behind `facts`.
pub fn plan(
    lib: &Library,
    root: &str,
    args: &Map<String, Value>,
    globals: &Globals,
    facts: &mut dyn FactSource,
    knowledge: &Knowledge,
) -> Tree {
    let g = globals_coll(globals);
    let env = Env {
        globals: &g,
        locals: BTreeMap::new(),
        now: globals.now,
    };
    let mut vals = BTreeMap::new();
    let mut problem = None;
    for (k, v) in args {
        let arg = match v {
            Value::String(s) if s.starts_with('%') => expr::parse(s).map(Arg::Expr).map_err(|e| e.to_string()),
            other => Ok(Arg::Template(other.clone())),
        };
        match arg.and_then(|a| eval_arg(&a, &env).map_err(|e| e.to_string())) {
            Ok(c) => {
                vals.insert(k.clone(), c);
            }
            Err(e) => problem = Some(format!("root argument {k}: {e}")),
        }
    }
    let mut p = Planner {
        lib,
        facts,
        knowledge,
        tree: Tree {
            nodes: Vec::new(),
            before: Vec::new(),
            globals: g,
            now: globals.now,
        },
    };
    if let Some(message) = problem {
        let n = p.blank(String::new(), "", root, "compound", None, Status::Error { message });
        p.push(n);
        return p.tree;
    }
    p.expand(root, "", String::new(), None, vals);
    let mut tree = p.tree;
    ungate_unused_reads(lib, &mut tree);
    tree
}

// ------------------------------------------------------------------------------------
// Revealing facts from the agent's tool results
// ------------------------------------------------------------------------------------

fn collect_ids(v: &Value, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::String(t)), Some(Value::String(id))) = (m.get("resourceType"), m.get("id")) {
                out.insert((t.clone(), id.clone()));
            }
            for x in m.values() {
                collect_ids(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_ids(x, out)),
        _ => {}
    }
}

fn norm_ref(s: &str) -> String {
    s.rsplit('/').next().unwrap_or(s).to_string()
}

fn norm_token(s: &str) -> String {
    s.rsplit('|').next().unwrap_or(s).to_lowercase()
}

/// Did a search cover the fact's query (same type, same patient, same code)? A search
/// without a code covers every code when its result is complete (no next page): "all active
/// orders" shows that none is an anticoagulant.
fn covers(fact: &Fact, args: &Value, result: &Value) -> bool {
    if args.get("resource_type").and_then(Value::as_str) != Some(fact.resource_type.as_str()) {
        return false;
    }
    let params = args.get("params").and_then(Value::as_object);
    let get = |k: &str| -> Vec<String> {
        params
            .and_then(|p| p.get(k))
            .map(|v| match v {
                Value::Array(a) => a.iter().map(value_text).collect(),
                other => vec![value_text(other)],
            })
            .unwrap_or_default()
    };
    for (k, v) in &fact.params {
        match k.as_str() {
            "patient" | "subject" => {
                let given: Vec<String> = get("patient").into_iter().chain(get("subject")).map(|s| norm_ref(&s)).collect();
                if !given.contains(&norm_ref(v)) {
                    return false;
                }
            }
            "code" => {
                // a code names its concept: a local code and its LOINC codes cover each other
                let wanted: BTreeSet<String> = v
                    .split(',')
                    .map(norm_token)
                    .flat_map(|c| {
                        let mut all = vec![c.clone()];
                        all.extend(super::equiv::concept_codes(&c).into_iter().map(str::to_lowercase));
                        all
                    })
                    .collect();
                let given: BTreeSet<String> = get("code").iter().flat_map(|s| s.split(',').map(norm_token)).collect();
                if given.is_empty() {
                    if !complete(result) {
                        return false;
                    }
                } else if wanted.is_disjoint(&given) {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// A search result with every match on its page (no link to a next page).
fn complete(result: &Value) -> bool {
    !result
        .get("link")
        .and_then(Value::as_array)
        .is_some_and(|links| links.iter().any(|l| l.get("relation").and_then(Value::as_str) == Some("next")))
}

/// The parameters a planned node's subtree actually uses, given the branches taken: a
/// primitive uses what its reference call, sensing query and checks read; a compound uses
/// what its chosen method's condition, checks and the arguments its children use read
/// (through its `let`s). Sensing children whose fact nothing uses are recorded in `unused`.
fn used_params(lib: &Library, tree: &Tree, n: usize, unused: &mut BTreeSet<usize>) -> BTreeSet<String> {
    let node = &tree.nodes[n];
    if node.kind == "primitive" {
        let Some(p) = lib.primitives.get(&node.task) else {
            return BTreeSet::new();
        };
        let mut v: BTreeSet<String> = BTreeSet::new();
        if let Some(t) = &p.tool {
            v.extend(super::library::template_vars(&t.args));
        }
        if let Some(s) = &p.sense {
            v.extend(super::library::template_vars(&Value::Object(s.params.clone())));
        }
        v.extend(p.expect.iter().flat_map(Check::vars));
        return v;
    }
    let Some(task) = lib.tasks.get(&node.task) else {
        return BTreeSet::new();
    };
    let Some(m) = task.methods.iter().find(|m| Some(&m.name) == node.method.as_ref()) else {
        // undecided (deferred) or in error: everything its methods read counts as used
        let mut v: BTreeSet<String> = task.params.iter().cloned().collect();
        v.extend(task.methods.iter().flat_map(|m| m.subtasks.iter().map(|s| s.id.clone())));
        return v;
    };
    let mut used: BTreeSet<String> = m.when.iter().flat_map(|w| w.vars()).collect();
    used.extend(m.expect.iter().flat_map(Check::vars));
    for s in &m.subtasks {
        let Some(child) = node.children.iter().copied().find(|c| tree.nodes[*c].id == s.id) else {
            continue;
        };
        let child_uses = used_params(lib, tree, child, unused);
        for (an, a) in &s.args {
            // an undecided child's arguments all count
            if child_uses.contains(an) || !matches!(tree.nodes[child].status, Status::Expanded | Status::Ready) {
                used.extend(a.vars());
            }
        }
    }
    // lets read what they need only when they are used themselves
    loop {
        let before = used.len();
        for (ln, le) in &m.lets {
            if used.contains(ln) {
                used.extend(le.vars());
            }
        }
        if used.len() == before {
            break;
        }
    }
    for s in &m.subtasks {
        let senses = lib.primitives.get(&s.task).is_some_and(|p| p.senses());
        if senses
            && !used.contains(&s.id)
            && let Some(child) = node.children.iter().copied().find(|c| tree.nodes[*c].id == s.id)
        {
            unused.insert(child);
        }
    }
    used
}

/// A read is gated only when the branch actually taken uses its fact: reading the INR of a
/// patient who is not on warfarin is not required (extra reads are never penalised either).
fn ungate_unused_reads(lib: &Library, tree: &mut Tree) {
    if tree.nodes.is_empty() {
        return;
    }
    let mut unused = BTreeSet::new();
    used_params(lib, tree, 0, &mut unused);
    for n in unused {
        tree.nodes[n].gate = false;
    }
}

/// The step at which the agent was first shown the fact: every resource of the oracle
/// result appeared in a tool result, or (for an empty result) the agent ran a search that
/// covers the query (same resource type, patient and code) and it succeeded.
pub fn fact_revealed(fact: &Fact, steps: &[Step]) -> Option<usize> {
    if let Some(tool) = &fact.tool {
        // a computed fact: the agent ran the same tool and got the same value
        let want = fact.value.first().and_then(|v| v.get("value"));
        return steps.iter().position(|s| {
            s.call.name == *tool
                && s.result.ok
                && match (want, s.result.content.get("value")) {
                    (Some(Value::Number(a)), Some(Value::Number(b))) => a
                        .as_f64()
                        .zip(b.as_f64())
                        .is_some_and(|(a, b)| (a - b).abs() <= 1e-9 * a.abs().max(1.0)),
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                }
        });
    }
    let wanted: BTreeSet<(String, String)> = fact
        .value
        .iter()
        .filter_map(|r| Some((r.get("resourceType")?.as_str()?.to_string(), r.get("id")?.as_str()?.to_string())))
        .collect();
    if wanted.is_empty() {
        return steps
            .iter()
            .position(|s| s.call.name == "fhir_search" && s.result.ok && covers(fact, &s.call.arguments, &s.result.content));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        // only what the agent read shows it a fact (a write's response echoes what it wrote)
        if !s.result.ok || !is_read_step(s) {
            continue;
        }
        collect_ids(&s.result.content, &mut seen);
        if wanted.is_subset(&seen) {
            return Some(i);
        }
    }
    None
}

/// A step that reads the record: a search or read, or any other REST GET (vread, history,
/// compartment search), or a batch sent to the base (whose entries may be reads).
fn is_read_step(s: &Step) -> bool {
    match s.call.name.as_str() {
        "fhir_search" | "fhir_read" => true,
        "fhir_rest" => {
            let rest = s.call.arguments.get("rest");
            let method = rest.and_then(|r| r.get("method")).and_then(Value::as_str);
            let to_base = rest
                .and_then(|r| r.get("path"))
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            method == Some("GET") || (method == Some("POST") && to_base)
        }
        _ => false,
    }
}

/// The facts a trajectory has revealed so far (node paths), given the oracle tree.
pub fn revealed_paths(oracle: &Tree, steps: &[Step]) -> BTreeSet<String> {
    oracle
        .nodes
        .iter()
        .filter(|n| n.fact.as_ref().is_some_and(|f| fact_revealed(f, steps).is_some()))
        .map(|n| n.path.clone())
        .collect()
}

/// The checks of a node: a primitive's `expect`, or the chosen method's `expect`.
pub fn checks<'a>(lib: &'a Library, node: &Node) -> &'a [Check] {
    if node.kind == "primitive" {
        return lib.primitives.get(&node.task).map(|p| p.expect.as_slice()).unwrap_or(&[]);
    }
    lib.tasks
        .get(&node.task)
        .and_then(|t| t.methods.iter().find(|m| Some(&m.name) == node.method.as_ref()))
        .map(|m| m.expect.as_slice())
        .unwrap_or(&[])
}

/// A human-readable outline of the tree (for `scenarios show` and docs).
pub fn outline(tree: &Tree) -> String {
    let mut s = String::new();
    fn rec(t: &Tree, n: usize, depth: usize, s: &mut String) {
        let node = &t.nodes[n];
        let label = if node.path.is_empty() {
            "(root)".to_string()
        } else {
            node.id.clone()
        };
        let extra = match (&node.method, &node.status) {
            (Some(m), _) => format!(" [{m}]"),
            (None, Status::Ready) => node.call.as_ref().map(|c| format!(" -> {}", c.name)).unwrap_or_default(),
            (None, st) => format!(" ({})", json!(st)),
        };
        s.push_str(&format!("{}{} {}{}\n", "  ".repeat(depth), label, node.task, extra));
        for c in t.ordered_children(n) {
            rec(t, c, depth + 1, s);
        }
    }
    if !tree.nodes.is_empty() {
        rec(tree, 0, 0, &mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::{Step, ToolCall, ToolResult};
    use serde_json::json;

    fn search(params: Value, next_page: bool) -> Step {
        let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": []});
        if next_page {
            bundle["link"] = json!([{"relation": "self", "url": "x"}, {"relation": "next", "url": "y"}]);
        }
        Step::new(
            ToolCall {
                name: "fhir_search".into(),
                arguments: json!({"resource_type": "MedicationRequest", "params": params}),
            },
            ToolResult {
                ok: true,
                status: 200,
                content: bundle,
            },
        )
    }

    #[test]
    fn an_empty_coded_fact_is_shown_by_the_coded_search_or_by_a_complete_uncoded_one() {
        let fact = Fact {
            resource_type: "MedicationRequest".into(),
            params: vec![
                ("patient".into(), "S1".into()),
                ("status".into(), "active".into()),
                (
                    "code".into(),
                    "http://www.nlm.nih.gov/research/umls/rxnorm|855332,http://www.nlm.nih.gov/research/umls/rxnorm|1364445".into(),
                ),
            ],
            value: Vec::new(),
            tool: None,
        };
        // the same code (without its system)
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "S1", "code": "1364445"}), false)]),
            Some(0)
        );
        // all the patient's orders, on one page: none is an anticoagulant
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "Patient/S1", "status": "active"}), false)]),
            Some(0)
        );
        // a first page only proves nothing, nor does another code or another patient
        assert_eq!(fact_revealed(&fact, &[search(json!({"patient": "S1"}), true)]), None);
        assert_eq!(
            fact_revealed(&fact, &[search(json!({"patient": "S1", "code": "860975"}), false)]),
            None
        );
        assert_eq!(fact_revealed(&fact, &[search(json!({"patient": "S2"}), false)]), None);
    }

    #[test]
    fn an_empty_fact_by_local_code_is_shown_by_a_search_by_its_loinc_code() {
        let fact = Fact {
            resource_type: "Observation".into(),
            params: vec![("patient".into(), "S1".into()), ("code".into(), "K".into())],
            value: Vec::new(),
            tool: None,
        };
        let obs = |code: &str| {
            let mut s = search(json!({"patient": "S1", "code": code}), false);
            s.call.arguments["resource_type"] = json!("Observation");
            s
        };
        assert_eq!(fact_revealed(&fact, &[obs("http://loinc.org|2823-3")]), Some(0));
        assert_eq!(fact_revealed(&fact, &[obs("K")]), Some(0));
        assert_eq!(fact_revealed(&fact, &[obs("2951-2")]), None);
    }
}
