//! `emrgym report RUN_DIR [--html FILE]`, `emrgym compare RUN_A RUN_B` and
//! `emrgym export RUN_DIR --format atif`: read run directories and write what people look at
//! or hand to other tools.

use anyhow::{Context, bail};
use emrgym_engine::leaderboard;
use emrgym_engine::report::{Run, compare, compare_text, horizon, html, terminal};
use emrgym_scenario::trajectory::atif;
use std::path::PathBuf;

/// `emrgym report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run directory.
    pub run: PathBuf,
    /// Also write the self-contained HTML report to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `emrgym compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The baseline run.
    pub a: PathBuf,
    /// The run compared with it.
    pub b: PathBuf,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `emrgym table`.
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// Run directories; the runs of one model in one mode are one row.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Print the rows as JSON (the leaderboard's rows; a withheld row has `withheld`).
    #[arg(long)]
    pub json: bool,
}

/// Run `emrgym table`: the leaderboard's first table (`emrgym leaderboard` has the rest).
pub fn table(a: TableArgs) -> anyhow::Result<()> {
    let lb = leaderboard::build(&a.runs)?;
    if a.json {
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&lb.rows)?))
    } else {
        super::emit(&leaderboard::main_table_markdown(&lb))
    }
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// ATIF (Harbor / Terminal-Bench), one JSON file per episode.
    Atif,
}

/// `emrgym export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The run directory.
    pub run: PathBuf,
    /// Format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output directory (default: RUN_DIR/export-FORMAT).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Run `emrgym report`.
pub fn report(a: ReportArgs) -> anyhow::Result<()> {
    let run = Run::load(&a.run)?;
    if let Some(path) = &a.html {
        std::fs::write(path, html::render(&run)).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        // the summary, with the horizon view when the run has horizon families
        let mut summary = run.summary.clone();
        let h = horizon(&run);
        if let (Some(obj), false) = (summary.as_object_mut(), h.as_object().is_none_or(|m| m.is_empty())) {
            obj.insert("horizon".into(), h);
        }
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    } else {
        super::emit(&terminal(&run))?;
    }
    if let Some(path) = &a.html {
        eprintln!("HTML report: {}", path.display());
    }
    Ok(())
}

/// Run `emrgym compare`.
pub fn compare_runs(a: CompareArgs) -> anyhow::Result<()> {
    let (ra, rb) = (Run::load(&a.a)?, Run::load(&a.b)?);
    let c = compare(&ra, &rb);
    if a.json {
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&c)?))
    } else {
        super::emit(&compare_text(&c))
    }
}

/// Run `emrgym export`.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let run = Run::load(&a.run)?;
    let out = a.out.clone().unwrap_or_else(|| a.run.join("export-atif"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut n = 0;
    for r in &run.results {
        let (instance, trial) = (r["instance"].as_str().unwrap_or(""), r["trial"].as_u64().unwrap_or(0));
        let f = run.trajectory(instance, trial)?;
        let doc = match a.format {
            ExportFormat::Atif => atif::export(&f.header, &f.trajectory, r.get("grade")),
        };
        let problems = atif::validate(&doc);
        if !problems.is_empty() {
            bail!("{instance}.{trial}: the export is not valid ATIF: {}", problems.join("; "));
        }
        std::fs::write(
            out.join(format!("{instance}.{trial}.json")),
            format!("{}\n", serde_json::to_string_pretty(&doc)?),
        )?;
        n += 1;
    }
    super::emit(&format!("wrote {n} ATIF trajectories to {}\n", out.display()))
}
