//! `emrgym bench`: fork time, search latency and throughput, cold start and memory.

/// Flags of `emrgym bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Run the benchmark.
pub fn run(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
