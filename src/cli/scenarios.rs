//! `emrgym scenarios check/list/branches/expected/prompt/suites/new`: flags and printing (the
//! integrity gate and the rest are `emrgym_engine::scenarios`).

use anyhow::bail;
use emrgym_engine::episode::Workspace;
use emrgym_engine::scenarios::{branches, check, expected, family_rows, new_family, prompt, suite_markdown};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `emrgym scenarios` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ScenariosCommand {
    /// Validate scenarios: schema, references, branch uniqueness, oracle passes, null agent fails.
    Check {
        /// A scenario directory or one family file.
        #[arg(default_value = "scenarios")]
        path: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also measure the grader's two error rates: equivalent rewrites of every reference
        /// plan that must pass, harmful ones that must fail (docs/grading.md).
        #[arg(long)]
        mutations: bool,
    },
    /// List families, instances and branch balance.
    List {
        /// A scenario directory.
        #[arg(default_value = "scenarios")]
        path: PathBuf,
        /// Print a Markdown table.
        #[arg(long)]
        markdown: bool,
    },
    /// For every patient of a cohort, the branches a family's task network takes on that
    /// patient's record (to choose instances that exercise every branch).
    Branches {
        /// A family file.
        family: PathBuf,
        /// Cohort (default: the family's).
        #[arg(long)]
        cohort: Option<String>,
        /// Print JSON: patient -> {node path: method}.
        #[arg(long)]
        json: bool,
    },
    /// The reference plan's expectations per instance, as answer keys are compared on them:
    /// the answer, the branch of every decision and a summary of every write (JSON).
    Expected {
        /// A scenario directory or one family file.
        #[arg(default_value = "scenarios")]
        path: PathBuf,
    },
    /// The task as the agent reads it at the start of an episode: the system prompt and the
    /// task in a mode (goal: the family's goal; outline: with the written-out task network;
    /// guided: with the first steps the planner releases).
    Prompt {
        /// The instance.
        instance: String,
        /// The condition.
        #[arg(long, value_enum, default_value = "flat")]
        mode: emrgym_engine::run::Mode,
        /// The scenario directory.
        #[arg(long, default_value = "scenarios")]
        suite: PathBuf,
    },
    /// The named suites (`scenarios/suites/*.json`: quick, mab, horizon) as generated from
    /// the scenarios now: print them, `--write` the files, or `--check` that they are current.
    Suites {
        /// A scenario directory.
        #[arg(default_value = "scenarios")]
        path: PathBuf,
        /// Write `suites/*.json`.
        #[arg(long, conflicts_with = "check")]
        write: bool,
        /// Fail when a file differs from what would be generated.
        #[arg(long)]
        check: bool,
    },
    /// Write a new family skeleton (with `doc` fields explaining each part).
    New {
        /// Family name (snake_case).
        name: String,
        /// Scenario directory.
        #[arg(long, default_value = "scenarios")]
        dir: PathBuf,
    },
}

/// Run `emrgym scenarios`.
pub fn run(cmd: ScenariosCommand) -> anyhow::Result<()> {
    match cmd {
        ScenariosCommand::Branches { family, cohort, json } => {
            let b = branches(&family, cohort.as_deref())?;
            if json {
                return super::emit(&format!("{}\n", serde_json::to_string_pretty(&b)?));
            }
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let mut text = String::new();
            for (patient, br) in &b {
                let label = br
                    .iter()
                    .map(|(k, v)| format!("{}={v}", if k.is_empty() { "(root)" } else { k }))
                    .collect::<Vec<_>>()
                    .join(" ");
                *counts.entry(label.clone()).or_insert(0) += 1;
                text.push_str(&format!("{patient}  {label}\n"));
            }
            text.push_str(&format!("\n{} patients:\n", b.len()));
            for (label, n) in counts {
                text.push_str(&format!("  {n:>4}  {label}\n"));
            }
            super::emit(&text)?;
        }
        ScenariosCommand::Check { path, json, mutations } => {
            let report = check(&path);
            let measured = if mutations && report.ok {
                let mut ws = Workspace::open(&path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
                Some(emrgym_engine::mutations::measure(&mut ws).map_err(|e| anyhow::anyhow!(e))?)
            } else {
                None
            };
            if let Some(m) = &measured {
                if json {
                    super::emit(&format!("{}\n", serde_json::to_string_pretty(m)?))?;
                } else {
                    super::emit(&m.text())?;
                }
                let (_, rejects, _, accepts) = m.totals();
                if rejects + accepts > 0 {
                    bail!("the grader misjudged {rejects} equivalent variants and {accepts} harmful mutations");
                }
            }
            if json && measured.is_none() {
                super::emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else if !json {
                for p in &report.problems {
                    super::emit(&format!("{p}\n"))?;
                }
                super::emit(&format!(
                    "{} families, {} instances: {}\n",
                    report.families,
                    report.instances,
                    if report.ok {
                        "all checks pass".to_string()
                    } else {
                        format!("{} problems", report.problems.len())
                    }
                ))?;
            }
            if !report.ok {
                bail!("scenarios check failed: {} problems", report.problems.len());
            }
        }
        ScenariosCommand::List { path, markdown } => {
            if markdown {
                super::emit(&suite_markdown(&path)?)?;
            } else {
                let mut ws = Workspace::open(&path).map_err(|e| anyhow::anyhow!(e.join("\n")))?;
                for (f, _, n, b, _) in &family_rows(&mut ws) {
                    super::emit(&format!("{f:<28} {n:>4}  {b}\n"))?;
                }
            }
        }
        ScenariosCommand::Suites { path, write, check } => {
            if write {
                for p in emrgym_engine::suites::write(&path)? {
                    super::emit(&format!("wrote {}\n", p.display()))?;
                }
            } else if check {
                let stale = emrgym_engine::suites::stale(&path)?;
                if !stale.is_empty() {
                    bail!(
                        "stale suite files (regenerate with `emrgym scenarios suites --write`): {}",
                        stale.join(", ")
                    );
                }
                super::emit("suite files are current\n")?;
            } else {
                for s in emrgym_engine::suites::generate(&path)? {
                    super::emit(&format!("{:<8} {:>4} instances  {}\n", s.name, s.instances.len(), s.description))?;
                }
            }
        }
        ScenariosCommand::Expected { path } => {
            super::emit(&format!("{}\n", serde_json::to_string_pretty(&expected(&path)?)?))?;
        }
        ScenariosCommand::Prompt { instance, mode, suite } => {
            super::emit(&prompt(&suite, &instance, mode)?)?;
        }
        ScenariosCommand::New { name, dir } => {
            let p = new_family(&name, &dir)?;
            super::emit(&format!(
                "wrote {}; edit it, then run `emrgym scenarios check {}`\n",
                p.display(),
                p.display()
            ))?;
        }
    }
    Ok(())
}
