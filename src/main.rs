use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    integration_operator::cli::Cli::parse().execute().await
}
