//! The planned tree: its nodes and their states, sensing facts, what the planner may know,
//! the scenario's globals, the scope a node's expressions see ([`Env`]), and the questions
//! asked of a tree (nodes by path, branches taken, leaves, problems, a node's checks, an
//! outline).

use crate::htn::expr::{Coll, EvalError, Scope, V};
use crate::htn::library::{Check, Library};
use crate::trajectory::ToolCall;
use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

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
    /// The clinical now of the record it was read from: nothing is recorded after it, so a
    /// search bounded above at or after it misses nothing the fact's query finds.
    #[serde(skip)]
    pub now: Option<DateTime<FixedOffset>>,
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
    pub(super) globals: &'a BTreeMap<String, Coll>,
    pub(super) locals: BTreeMap<String, Option<Coll>>,
    pub(super) now: DateTime<FixedOffset>,
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
