//! `emrgym replay`: flags and printing (re-execution and re-grading are
//! `emrgym_engine::replay`).

use anyhow::bail;
use emrgym_engine::replay::{render, replay, write_run};
use std::path::PathBuf;

/// `emrgym replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A run directory, or one trajectory file (`.jsonl`).
    pub path: PathBuf,
    /// Scenario directory to grade against (default: the run's, from its manifest).
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// Write the re-graded run to this new run directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit with status 1 when any grade changed (for CI).
    #[arg(long)]
    pub check: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `emrgym replay`.
pub fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let rs = replay(&a.path, a.suite.as_deref())?;
    if let Some(out) = &a.out {
        write_run(&a.path, a.suite.as_deref(), out, &rs)?;
    }
    if a.json {
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&rs)?))?;
    } else {
        super::emit(&render(&rs))?;
    }
    if a.check && rs.iter().any(|r| r.changed) {
        bail!("{} grades changed on replay", rs.iter().filter(|r| r.changed).count());
    }
    Ok(())
}
