use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Test builds only: configures the fail points named in $FAILPOINTS
    // (see controller::reconcile::failpoints); without the `failpoints`
    // feature there are none to configure.
    let _failpoints = fail::FailScenario::setup();
    integration_operator::cli::Cli::parse().execute().await
}
