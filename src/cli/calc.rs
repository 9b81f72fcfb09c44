//! `emrgym calc`: list the calculators (table, JSON, or the Markdown reference) and run
//! one on JSON arguments, through the same registry (schema check, then dispatch) agents use.

use anyhow::bail;
use emrgym_calc as calc;
use emrgym_tools::{NoFhir, Registry};
use serde_json::{Value, json};

/// `emrgym calc` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CalcCommand {
    /// List the calculators.
    List {
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print the Markdown reference (the generated part of docs/calculators.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Run a calculator (or convert_units): `emrgym calc run ckd_epi_2021 '{"sex": "female", "age": 70, "creatinine": 1.2}'`.
    Run {
        /// Calculator name (see `emrgym calc list`).
        name: String,
        /// Arguments as a JSON object.
        args: String,
    },
}

/// Run `emrgym calc`.
pub fn run(cmd: CalcCommand) -> anyhow::Result<()> {
    match cmd {
        CalcCommand::List { json: true, .. } => {
            let list: Vec<Value> = calc::all()
                .iter()
                .map(|c| {
                    json!({"name": c.name, "title": c.title, "category": c.category, "medcalc_id": c.medcalc_id,
                        "unit": c.unit, "summary": c.summary, "source": c.source})
                })
                .collect();
            super::emit(&format!("{}\n", serde_json::to_string_pretty(&list)?))?;
        }
        CalcCommand::List { markdown: true, .. } => super::emit(&calc::docs::reference_markdown())?,
        CalcCommand::List { .. } => {
            let all = calc::all();
            let w = all.iter().map(|c| c.name.len()).max().unwrap_or(10);
            for c in &all {
                super::emit(&format!("{:<w$}  {:<14}  {}\n", c.name, c.unit, c.title))?;
            }
            super::emit(&format!(
                "{} calculators; `emrgym calc run NAME 'JSON'` runs one; convert_units converts lab units.\n",
                all.len()
            ))?;
        }
        CalcCommand::Run { name, args } => {
            let is_calc = calc::find(&name).is_some() || name == "convert_units";
            if !is_calc {
                bail!("no calculator named '{name}'; `emrgym calc list` shows them");
            }
            let registry = Registry::standard()?;
            let obs = registry.call_text(&name, &args, &mut NoFhir);
            if !obs.ok {
                bail!("{}", obs.error().unwrap_or("calculation failed"));
            }
            super::emit(&format!("{}\n", serde_json::to_string_pretty(&obs.content)?))?;
        }
    }
    Ok(())
}
