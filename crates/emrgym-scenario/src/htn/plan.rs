//! The planner: resolves a task network against a patient's record into a tree of nodes
//! (compound nodes with the method chosen, primitive nodes with their instantiated
//! instruction, reference tool call, sensing fact and checks) plus ordering edges.
//!
//! Fact values always come from the untouched record (the [`FactSource`], run at the
//! scenario's "now"), never from the agent. What differs between modes is what the
//! planner may *know*: in oracle mode every fact is revealed; in guided mode only the
//! facts the agent's own tool results have shown ([`fact_revealed`]), so a decision that
//! depends on an unseen fact stays deferred and guidance never leaks a branch.

// The planner by concept: the planned tree and its scope, planning, the execution order,
// and the revelation of facts by the agent's tool results. Everything public is
// re-exported here.
mod order;
mod outline;
mod planner;
mod reveal;
mod tree;

pub use outline::outline;
pub use planner::{FactSource, plan};
pub use reveal::{fact_revealed, revealed_paths};
pub use tree::{Env, Fact, Globals, Knowledge, Node, Status, Tree, checks};
