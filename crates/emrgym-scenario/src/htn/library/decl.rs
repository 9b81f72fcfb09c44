//! Library files as written: the serde types of a file's selectors, compound tasks with
//! their methods and subtasks, primitives with their tool calls, sensing queries and
//! postconditions.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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
    /// ...number exactly this many (default 1)...
    #[serde(default)]
    pub count: Option<u32>,
    /// ...or, with `count_max`, from `count` up to this many (clinically equivalent ways of
    /// writing one order, such as two sets of blood cultures as two orders).
    #[serde(default)]
    pub count_max: Option<u32>,
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
