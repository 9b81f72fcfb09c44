//! Planning: where facts come from ([`FactSource`]), the expansion of a task network
//! against a patient's record (methods chosen by their conditions, lets, arguments, sensing
//! and computed facts, deferral on unrevealed ones), and the ungating of reads that the
//! branch taken does not use.

use super::tree::{Env, Fact, Globals, Knowledge, Node, Status, Tree};
use crate::htn::expr::{self, Coll, EvalError, V};
use crate::htn::library::{Arg, Check, Library};
use crate::trajectory::ToolCall;
use emrgym_core::topological_order;
use serde_json::{Map, Value};
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

fn join(path: &str, id: &str) -> String {
    if path.is_empty() { id.to_string() } else { format!("{path}.{id}") }
}

pub(super) fn globals_coll(g: &Globals) -> BTreeMap<String, Coll> {
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

pub(super) fn eval_arg(a: &Arg, env: &Env<'_>) -> Result<Coll, EvalError> {
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
                                    now: Some(now),
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
                            now: Some(now),
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
        let order = topological_order(m.subtasks.len(), &edges);
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

/// A JSON value as a search parameter value.
pub(crate) fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The root task's arguments evaluated over the globals (a string that starts with `%` is
/// an expression, anything else a template); the error names the argument.
pub(super) fn root_args(args: &Map<String, Value>, env: &Env<'_>) -> Result<BTreeMap<String, Coll>, String> {
    let mut vals = BTreeMap::new();
    for (k, v) in args {
        let arg = match v {
            Value::String(s) if s.starts_with('%') => expr::parse(s).map(Arg::Expr).map_err(|e| e.to_string()),
            other => Ok(Arg::Template(other.clone())),
        };
        let c = arg
            .and_then(|a| eval_arg(&a, env).map_err(|e| e.to_string()))
            .map_err(|e| format!("root argument {k}: {e}"))?;
        vals.insert(k.clone(), c);
    }
    Ok(vals)
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
    let (vals, problem) = match root_args(args, &env) {
        Ok(v) => (v, None),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
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
            v.extend(crate::htn::library::template_vars(&t.args));
        }
        if let Some(s) = &p.sense {
            v.extend(crate::htn::library::template_vars(&Value::Object(s.params.clone())));
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
