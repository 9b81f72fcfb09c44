//! Command-line interface: argument parsing and one module per subcommand.

pub mod bench;
pub mod serve;

use clap::{Parser, Subcommand};

/// EMRGym: a FHIR-sandbox agent simulator and benchmark.
#[derive(Debug, Parser)]
#[command(name = "emrgym", version, about)]
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
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
