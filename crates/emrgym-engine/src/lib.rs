//! The EMRGym engine: everything between the library layers and the command line.
//!
//! - [`episode`]: the workspace (families, libraries, cohorts), preparing an instance, running
//!   an agent on it and grading it;
//! - [`run`]: runs over many instances and trials, the run directory, pass^k and bootstrap
//!   statistics;
//! - [`session`], [`episodes`], [`mcp`]: episodes driven from outside (HTTP, MCP);
//! - [`replay`]: re-execute and re-grade recorded trajectories;
//! - [`report`]: run directories read back: summaries, comparisons, the HTML report;
//! - [`scenarios`], [`keys`], [`safety`], [`mutations`], [`suites`]: the integrity gate and
//!   named suites;
//! - [`model`]: the local model catalogue (GGUFs shipped in PyPI packages).

pub mod backend;
pub mod episode;
pub mod episodes;
pub mod keys;
pub mod mcp;
pub mod model;
pub mod mutations;
pub mod replay;
pub mod report;
pub mod run;
pub mod rundir;
pub mod safety;
pub mod scenarios;
pub mod session;
pub mod stats;
pub mod suites;
