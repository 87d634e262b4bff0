//! The `make bench` harness at a reduced scale (100 Integrations), as a
//! smoke test that it works. It asserts behaviour, never timing: every
//! Integration becomes Ready (100 reconciles starting before the caches
//! synced once stranded half of them), and with nothing due the operator
//! writes nothing and calls no provider, before and after a restart; in a
//! refresh wave no Secret ever holds an expired token, and a 429's
//! Retry-After is honoured. The reference client (the cold-start limit's
//! control-plane term) brings its copies to Ready too.

use std::path::PathBuf;

use testkit::bench::{BenchArgs, run_scale, run_sharded, run_throughput, shard_table, table, throughput_table};

/// What the smoke runs share: the test build of the operator, 100
/// Integrations over 4 namespaces and 2 ClusterProviders, a fast simulator,
/// the cold start only.
fn smoke_args() -> BenchArgs {
    BenchArgs {
        operator: PathBuf::from(env!("CARGO_BIN_EXE_integration-operator")),
        integrations: vec![100],
        namespaces: 4,
        providers: 2,
        latency_ms: 20,
        concurrency: 16,
        unrelated_secrets: 10,
        new_integrations: 0,
        wave_lifetime: 0,
        wave_latency_ms: 20,
        rate_limit: 500,
        shards: vec![],
        cold_only: true,
        throughput: false,
        operator_concurrency: 128,
        skip_reference: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_integrations_all_become_ready_and_a_restart_costs_nothing() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let args = BenchArgs {
        new_integrations: 3,
        wave_lifetime: 10,
        cold_only: false,
        ..smoke_args()
    };
    let figures = run_scale(&args, 100).await.expect("the bench runs");
    println!("{}", table(&args, std::slice::from_ref(&figures)));
    assert!(figures.all_ready, "not every Integration became Ready");
    assert!(
        figures.cold_reference.is_some(),
        "the reference client did not bring its 100 Integrations to Ready with the operator's writes"
    );
    assert_eq!(
        (figures.steady_writes, figures.steady_calls),
        (0, 0),
        "writes or calls with nothing due"
    );
    assert_eq!(
        (figures.restart_calls, figures.restart_writes),
        (0, 0),
        "a restart with valid credentials made provider calls or API writes"
    );
    let wave = figures.wave.expect("the refresh wave ran");
    assert!(wave.renewals >= 100, "not every token was renewed: {wave:?}");
    assert_eq!(wave.expired_seen, 0, "a Secret held an expired token during the wave");
    assert_eq!(
        wave.calls_during_retry_after, 0,
        "the provider was called before its Retry-After elapsed"
    );
}

/// The sharded harness (`testkit bench --shards`), reduced: two operator
/// processes, each owning a shard of 8 namespaces, bring 40 Integrations
/// Ready with one token call each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_bring_every_integration_ready_with_one_exchange_each() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let args = BenchArgs {
        integrations: vec![40],
        namespaces: 8,
        unrelated_secrets: 0,
        shards: vec![2],
        ..smoke_args()
    };
    let figures = run_sharded(&args, 40, 2).await.expect("the sharded bench runs");
    println!("{}", shard_table(&args, std::slice::from_ref(&figures)));
    assert!(figures.all_ready, "not every Integration became Ready");
    assert_eq!(
        figures.token_calls, 40,
        "each Integration is exchanged once, by one shard"
    );
    assert_eq!(figures.rss_mib.len(), 2, "one figure per process");
}

/// The throughput harness (`testkit bench --throughput`), reduced: an
/// operator started on a backlog of 40 Integrations issues each one's
/// credentials with one token call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_started_on_a_backlog_issues_each_integration_once() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    let args = BenchArgs {
        integrations: vec![40],
        namespaces: 2,
        concurrency: 1000,
        unrelated_secrets: 0,
        rate_limit: 100000,
        throughput: true,
        operator_concurrency: 16,
        ..smoke_args()
    };
    let figures = run_throughput(&args, 40).await.expect("the throughput bench runs");
    println!("{}", throughput_table(&args, std::slice::from_ref(&figures)));
    assert!(figures.all_ready, "not every Integration became Ready");
    assert_eq!(figures.token_calls, 40, "each Integration is exchanged once");
}
