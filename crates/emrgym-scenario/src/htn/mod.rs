//! Hierarchical task networks for scenarios: the expression language ([`expr`]), the task
//! library (compound tasks with methods, primitives with reference tool calls, sensing and
//! postconditions: [`library`]) and the planner that resolves a network against a
//! patient's record ([`plan`]).
//!
//! This layer knows nothing of FHIR storage or tools: facts come through the
//! [`plan::FactSource`] trait and everything is JSON.

pub mod cardinality;
pub mod equiv;
pub mod expr;
pub mod guide;
pub mod library;
pub mod plan;

use chrono::{DateTime, FixedOffset};
use expr::{Coll, EvalError, Scope};
use std::collections::BTreeMap;

/// A simple scope: named collections, some of them not yet revealed (`None`).
#[derive(Debug, Clone)]
pub struct MapScope {
    /// Variables; `None` marks an unrevealed fact.
    pub vars: BTreeMap<String, Option<Coll>>,
    /// The clock.
    pub now: DateTime<FixedOffset>,
}

impl Scope for MapScope {
    fn var(&self, name: &str) -> Result<Option<Coll>, EvalError> {
        match self.vars.get(name) {
            None => Ok(None),
            Some(None) => Err(EvalError::Unknown(name.to_string())),
            Some(Some(c)) => Ok(Some(c.clone())),
        }
    }
    fn now(&self) -> DateTime<FixedOffset> {
        self.now
    }
}
