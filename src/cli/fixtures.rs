//! `emrgym fixtures generate`: write a deterministic synthetic cohort as FHIR NDJSON
//! (src/fixtures), loadable with `emrgym serve --cohort DIR` and by scenario families.

use anyhow::Context;
use emrgym_fhir::clock::parse_instant;
use emrgym_fixtures::{Config, Generator};
use std::path::PathBuf;
use std::time::Instant;

/// `emrgym fixtures ...`.
#[derive(Debug, clap::Subcommand)]
pub enum FixturesCommand {
    /// Generate a cohort: patients, encounters, conditions, labs and vitals, medications,
    /// allergies, procedures, immunizations, one NDJSON file per resource type.
    Generate(GenerateArgs),
}

/// Flags of `emrgym fixtures generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Number of patients.
    #[arg(long, default_value_t = 100)]
    pub patients: usize,
    /// Seed: the same seed and settings give the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created; existing NDJSON files of the same names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// The cohort's clinical "now" (RFC 3339): every timestamp is before it.
    #[arg(long, default_value = "2023-11-13T10:15:00Z")]
    pub now: String,
    /// Years of history per patient.
    #[arg(long)]
    pub years: Option<u32>,
    /// Hours between vital-sign sets in hospital.
    #[arg(long)]
    pub vitals_every: Option<u32>,
    /// Share of patients in hospital at "now" (0 to 1).
    #[arg(long)]
    pub admitted: Option<f64>,
    /// MedAgentBench's density: 20 years of history and hourly vitals in hospital (100
    /// patients give about 785,000 resources); explicit flags still win.
    #[arg(long)]
    pub medagentbench_scale: bool,
}

/// Run `emrgym fixtures`.
pub fn run(c: FixturesCommand) -> anyhow::Result<()> {
    match c {
        FixturesCommand::Generate(a) => generate(a),
    }
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let now = parse_instant(&a.now).map_err(|e| anyhow::anyhow!("--now {}: {e}", a.now))?;
    let mut cfg = Config {
        patients: a.patients,
        seed: a.seed,
        now,
        ..Config::default()
    };
    if a.medagentbench_scale {
        cfg = cfg.medagentbench_scale();
    }
    if let Some(y) = a.years {
        cfg.years = y;
    }
    if let Some(h) = a.vitals_every {
        cfg.inpatient_vitals_every_h = h;
    }
    if let Some(s) = a.admitted {
        cfg.admitted_share = s;
    }
    let g = Generator::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let stats = g.write_ndjson(&a.out).with_context(|| format!("writing {}", a.out.display()))?;
    let mut text = format!(
        "wrote {} resources for {} patients to {} in {:.2} s\n",
        stats.total(),
        a.patients,
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    for (ty, n) in &stats.by_type {
        text.push_str(&format!("  {ty:<20} {n:>9}\n"));
    }
    super::emit(&text)
}
