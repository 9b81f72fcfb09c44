//! EMRGym: a FHIR-sandbox agent simulator and benchmark.
//!
//! Layers (see docs/architecture.md): `fhir` is the mock EMR (store, copy-on-write
//! sandboxes, search, validation, REST server); `cli` wires commands together.

pub mod cli;
pub mod fhir;
