//! `testkit`: test and demo infrastructure on the command line.
//! - `testkit emulator`: the Kubernetes API emulator in the foreground (`make emulator`).
//! - `testkit demo`: the operator end to end (`make demo`).
//! - `testkit bench` / `testkit bench-emulator`: figures (`make bench`, `make bench-emulator`).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "testkit", about = "integration-operator test and demo infrastructure")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Kubernetes API emulator until Ctrl-C / SIGTERM.
    Emulator {
        /// Where to write the kubeconfig.
        #[arg(long, env = "EMULATOR_KUBECONFIG", default_value = "target/emulator/kubeconfig")]
        kubeconfig: std::path::PathBuf,
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, env = "EMULATOR_PORT", default_value_t = 0)]
        port: u16,
    },
    /// Run the operator end to end against the emulator and a token-server simulator.
    Demo(testkit::demo::DemoArgs),
    /// Measure the operator at scale and print a table of figures.
    Bench(testkit::bench::BenchArgs),
    /// Measure the API emulator's own throughput.
    BenchEmulator(testkit::emulator_bench::EmulatorBenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Emulator { kubeconfig, port } => {
            let emulator = testkit::emulator::Emulator::start_with(testkit::emulator::EmulatorOptions {
                bind: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                kubeconfig: Some(kubeconfig),
                ..Default::default()
            })
            .await?;
            println!(
                "Kubernetes API emulator (not a real cluster) serving at {}",
                emulator.url()
            );
            println!("kubeconfig: {}", emulator.kubeconfig_path().display());
            println!(
                "try: kubectl --kubeconfig {} get namespaces   (Ctrl-C to stop)",
                emulator.kubeconfig_path().display()
            );
            shutdown_signal().await;
            emulator.shutdown().await;
            println!("emulator stopped");
            Ok(())
        }
        Command::Demo(args) => testkit::demo::run(args).await,
        Command::Bench(args) => testkit::bench::run(args).await,
        Command::BenchEmulator(args) => testkit::emulator_bench::run(args).await,
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
