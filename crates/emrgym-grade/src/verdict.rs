//! The grade format: the verdict of each node, its failure class, reasons and resource-level
//! diff, every write with what it was attributed to, the answer check, and the episode's grade.

use crate::FailureClass;
use emrgym_core::WriteKind;
use emrgym_scenario::trajectory::EndReason;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the grade format.
pub const GRADE_VERSION: u32 = 1;

/// A node's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// All its checks hold.
    Passed,
    /// A check failed.
    Failed,
    /// The episode ended before the agent attempted it.
    NotReached,
}

/// A node of the oracle tree: a compound task (its children are the method the record calls
/// for) or a primitive step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A compound task.
    Compound,
    /// A primitive step.
    Primitive,
}

impl NodeKind {
    /// The kind of a plan-tree node (`compound` or `primitive`; anything else is a primitive).
    pub fn of(tree_kind: &str) -> NodeKind {
        if tree_kind == "compound" {
            NodeKind::Compound
        } else {
            NodeKind::Primitive
        }
    }

    /// `compound` or `primitive`, as grades write it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Compound => "compound",
            NodeKind::Primitive => "primitive",
        }
    }
}

impl Verdict {
    /// `passed`, `failed` or `not_reached`, as grades write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::NotReached => "not_reached",
        }
    }
}

/// One field that differs from what was expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    /// The resource (`Type/id`).
    pub resource: String,
    /// The assertion that failed.
    pub assert: String,
    /// What the resource holds (the left side of the comparison).
    pub actual: Value,
    /// What was expected (the right side).
    pub expected: Value,
}

/// Resource-level difference for a failed node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceDiff {
    /// Expected writes that are missing (selector descriptions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Writes that should not exist (`Type/id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    /// Fields that differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<FieldDiff>,
}

impl ResourceDiff {
    pub(crate) fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

/// The verdict of one node of the oracle tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeGrade {
    /// Node path (`""` is the root).
    pub path: String,
    /// Task or primitive.
    pub task: String,
    /// `compound` or `primitive`.
    pub kind: NodeKind,
    /// The branch the record calls for (compound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Verdict.
    pub verdict: Verdict,
    /// Failure class (failed nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<ResourceDiff>,
    /// Step at which it was done (0-based), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<usize>,
    /// Gates success.
    pub gate: bool,
    /// Progress weight (leaves).
    pub weight: f64,
}

/// One write the agent made, and what it was attributed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteGrade {
    /// `Type/id`.
    pub resource: String,
    /// create / update / delete.
    pub action: WriteKind,
    /// Step that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The node it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Set when it is extraneous or belongs to a branch the record does not call for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
}

/// The answer check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerGrade {
    /// Node that checks it.
    pub node: String,
    /// Expected.
    pub expected: Value,
    /// Given (null when none).
    pub given: Value,
    /// Match.
    pub passed: bool,
}

/// The grade of one episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    /// Format version.
    pub format_version: u32,
    /// Instance id.
    pub instance: String,
    /// Every gated node passed and no extraneous write.
    pub success: bool,
    /// Weighted share of leaves passed.
    pub progress: f64,
    /// The first failure class in tree order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<FailureClass>,
    /// Every failure class present.
    pub classes: Vec<FailureClass>,
    /// Verdict per node, tree order.
    pub nodes: Vec<NodeGrade>,
    /// Every write, attributed.
    pub writes: Vec<WriteGrade>,
    /// The answer check, if the scenario has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerGrade>,
    /// Why the episode ended.
    pub end: EndReason,
    /// Steps taken.
    pub steps: usize,
}
