//! `emrgym leaderboard RUN_DIR... [--markdown | --html | --json] [--out FILE]`: the results
//! table over run directories (rows model × mode, paired mode differences, the horizon
//! view); the work is `emrgym_engine::leaderboard`.

use anyhow::Context;
use emrgym_engine::leaderboard::{build, html, markdown, text};
use std::path::PathBuf;

/// `emrgym leaderboard`.
#[derive(Debug, clap::Args)]
pub struct LeaderboardArgs {
    /// Run directories; runs of the same model and mode are combined into one row.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Write Markdown tables.
    #[arg(long, conflicts_with_all = ["html", "json"])]
    pub markdown: bool,
    /// Write one self-contained HTML page with the tables and the horizon curves.
    #[arg(long, conflicts_with = "json")]
    pub html: bool,
    /// Write the leaderboard as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Run `emrgym leaderboard`.
pub fn run(a: LeaderboardArgs) -> anyhow::Result<()> {
    let lb = build(&a.runs)?;
    let out = if a.json {
        format!("{}\n", serde_json::to_string_pretty(&lb)?)
    } else if a.markdown {
        markdown(&lb)
    } else if a.html {
        html(&lb)
    } else {
        text(&lb)
    };
    match &a.out {
        Some(path) => {
            std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("leaderboard: {}", path.display());
            Ok(())
        }
        None => super::emit(&out),
    }
}
