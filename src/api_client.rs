//! The Kubernetes API client the operator runs with: kube's own stack (base
//! URI, retry of requests the server throttled, authentication, extra
//! headers, connect/read/write timeouts, TLS), built here for one reason —
//! to bound the connections it keeps idle.
//!
//! kube's `Client::try_from(Config)` keeps every connection it ever opened
//! for 90 s of idleness. A burst of reconciles (up to `--concurrency` at
//! once, each with its own request in flight) opens that many TLS
//! connections, and all of them stayed: about 112 after a cold start of
//! 10,000 Integrations, each with its buffers and TLS state — 5-7 MiB of
//! the heap profile in docs/benchmarks.md. Past the burst, a handful
//! carries the operator's requests; watches hold their own.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use kube::{
    Client, Config,
    client::{ConfigExt, retry::RetryPolicy},
};
use tower::{BoxError, ServiceBuilder, retry::RetryLayer};

/// Idle connections kept to the API server; more are closed when their
/// request ends.
pub const MAX_IDLE_CONNECTIONS: usize = 16;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for `config`, as `Client::try_from(config)` would build it
/// (without kube's debug-level HTTP spans), keeping at most
/// [`MAX_IDLE_CONNECTIONS`] idle.
pub fn build(config: Config) -> Result<Client, kube::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}
