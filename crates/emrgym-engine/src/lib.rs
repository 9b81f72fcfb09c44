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
//!
//! # Embedding
//!
//! Fork a cohort, call a tool and grade a trajectory, with no server and no model (the
//! instance's reference plan plays the agent):
//!
//! ```
//! use emrgym_engine::episode::{BASE, Workspace, execute_calls, finalize, fork};
//! use emrgym_scenario::trajectory::{EndReason, Trajectory};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // the scenario directory (doctests run in crates/emrgym-engine)
//! let mut ws = Workspace::open(std::path::Path::new("../../scenarios")).map_err(|e| e.join("\n"))?;
//! let instance = ws.suite.instances()?.into_iter().find(|i| i.family == "mab_k_replete").ok_or("no instance")?;
//! let p = ws.prepare(&instance).map_err(|e| e.join("\n"))?;
//!
//! // a copy-on-write sandbox of the instance's cohort, and one tool call into it
//! let mut sandbox = fork(&p.cohort, &p.clock, 7);
//! let args = json!({"resource_type": "Patient", "params": {"_id": instance.patient}});
//! let obs = p.registry.call("fhir_search", &args, &mut (&mut sandbox, BASE));
//! assert!(obs.ok, "{}", obs.content);
//! assert_eq!(obs.content["total"], 1);
//!
//! // an episode: the reference plan's calls executed into a fresh fork, then the one
//! // episode end (writes attached, HTN transitions, grade)
//! let calls: Vec<_> = p.oracle.reference_calls().into_iter().map(|(_, c)| c).collect();
//! let (sandbox, steps) = execute_calls(&p, 7, &calls);
//! let mut trajectory = Trajectory::new(steps, EndReason::Finished);
//! let grade = finalize(&p, 7, &mut trajectory, &sandbox).ok_or("an infrastructure failure is not graded")?;
//! assert!(grade.success, "the reference plan passes every node");
//!
//! // the same calls with the last one (finish) left out: not a success
//! let (sandbox, steps) = execute_calls(&p, 7, &calls[..calls.len() - 1]);
//! let mut partial = Trajectory::new(steps, EndReason::MaxSteps);
//! assert!(!finalize(&p, 7, &mut partial, &sandbox).ok_or("not graded")?.success);
//! # Ok(())
//! # }
//! ```

/// This build's identity: the checkout's commit (12 hex digits), `+dirty.<hash>` when the
/// sources differ from it (`<hash>` names the difference), `unknown` outside a git checkout
/// (build.rs). Run manifests record it; `--resume` refuses to mix builds.
pub const BUILD: &str = env!("EMRGYM_BUILD");

/// `emrgym --version`: the package version and [`BUILD`].
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (build ", env!("EMRGYM_BUILD"), ")");

pub mod backend;
pub mod episode;
pub mod episodes;
pub mod keys;
pub mod leaderboard;
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

// the engine's everyday surface; everything else stays under its module
pub use episode::{Prepared, Workspace, finalize};
pub use report::Run;
pub use run::{AgentKind, Mode, RunConfig, execute};
pub use rundir::{ResultLine, read_results};
