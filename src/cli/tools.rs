//! `emrgym tools`: list the agent-facing tool catalogue, print it as OpenAI tools, and
//! write (or check) the manifests in tools/.

use anyhow::{Context, bail};
use emrgym_tools::{Registry, manifest_file};
use std::path::PathBuf;

/// `emrgym tools` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ToolsCommand {
    /// List the tools.
    List {
        /// Print the catalogue as OpenAI function-calling tools (JSON).
        #[arg(long)]
        openai: bool,
    },
    /// Write one manifest per tool into a directory (default: tools/); --check only compares.
    Export {
        /// Output directory.
        #[arg(long, default_value = "tools")]
        out: PathBuf,
        /// Compare instead of writing; exit non-zero when a file differs.
        #[arg(long)]
        check: bool,
    },
}

/// Run `emrgym tools`.
pub fn run(cmd: ToolsCommand) -> anyhow::Result<()> {
    let registry = Registry::standard()?;
    match cmd {
        ToolsCommand::List { openai: true } => super::emit(&format!("{}\n", serde_json::to_string_pretty(&registry.openai_tools())?))?,
        ToolsCommand::List { openai: false } => {
            for m in registry.manifests() {
                let first = m.description.split(". ").next().unwrap_or("");
                super::emit(&format!("{:<32} {:<10} {}\n", m.name, m.kind, first))?;
            }
        }
        ToolsCommand::Export { out, check } => {
            let mut stale = Vec::new();
            if !check {
                std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            }
            let wanted: std::collections::BTreeSet<String> = registry.names().map(|n| format!("{n}.json")).collect();
            for m in registry.manifests() {
                let path = out.join(format!("{}.json", m.name));
                let text = manifest_file(m)?;
                let current = std::fs::read_to_string(&path).ok();
                if current.as_deref() != Some(text.as_str()) {
                    if check {
                        stale.push(path.display().to_string());
                    } else {
                        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    }
                }
            }
            if let Ok(entries) = std::fs::read_dir(&out) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".json") && !wanted.contains(&name) {
                        if check {
                            stale.push(format!("{} (no such tool)", e.path().display()));
                        } else {
                            std::fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
                        }
                    }
                }
            }
            if check && !stale.is_empty() {
                bail!("tool manifests out of date: {}; run `emrgym tools export`", stale.join(", "));
            }
            super::emit(&format!(
                "{} tool manifests {} {}\n",
                wanted.len(),
                if check { "match" } else { "in" },
                out.display()
            ))?;
        }
    }
    Ok(())
}
