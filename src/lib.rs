//! EMRGym: a FHIR-sandbox agent simulator and benchmark.
//!
//! Layers (see docs/architecture.md): `fhir` is the mock EMR (store, copy-on-write
//! sandboxes, search, validation, REST server); `calc` holds the medical calculators;
//! `tools` is the agent-facing tool catalogue over both; `cli` wires commands together.

pub mod agent;
pub mod calc;
pub mod cli;
pub mod fhir;
pub mod fixtures;
pub mod grade;
pub mod htn;
pub mod report;
pub mod scenario;
pub mod tools;
pub mod trajectory;
