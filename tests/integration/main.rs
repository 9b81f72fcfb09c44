//! The one integration test binary: the FHIR API through the router (`oneshot`), sandboxes,
//! Bundles, cohorts, the tool catalogue and calculators over HTTP and the CLI, and interop with real third-party FHIR clients over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bundles;
mod cli;
mod cohorts;
mod common;
mod external_agents;
mod fhir_api;
mod fixtures;
mod fuzz;
mod hardening;
mod interop;
mod isolation;
mod leaderboard;
#[cfg(feature = "llama")]
mod llama_model;
mod model_stub;
mod report;
mod robustness;
mod sandboxes;
mod scenarios;
mod search;
mod tools_api;
mod trajectories;
