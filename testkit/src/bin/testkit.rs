//! `testkit`: test and demo infrastructure on the command line.
//! - `testkit demo`: the operator end to end (`make demo`).
//! - `testkit bench`: figures (`make bench`).
//!
//! The control plane itself is `scripts/control-plane.sh` (`make cluster`).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "testkit", about = "integration-operator test and demo infrastructure")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator end to end against a real control plane and the provider simulators.
    Demo(testkit::demo::DemoArgs),
    /// Measure the operator at scale and print a table of figures.
    Bench(testkit::bench::BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => testkit::demo::run(args).await,
        Command::Bench(args) => testkit::bench::run(args).await,
    }
}
