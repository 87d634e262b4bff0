//! The inbound server: the one HTTP(S) endpoint where providers call the
//! operator (Kombo's webhooks, [`kombo`]; SmartRecruiters' token endpoint,
//! disable callback and consent hand-off, [`smartrecruiters`]). Off unless
//! `--inbound-addr` is set; its own port, never the metrics port.
//!
//! - TLS from a certificate and key file (`--inbound-tls-cert`,
//!   `--inbound-tls-key`, mounted from a Secret, so cert-manager can provide
//!   them). The files are read again on the first handshake after either
//!   changes (their modification time), so a renewed certificate is served
//!   without a restart; a file that does not parse keeps the last good pair.
//!   Plain HTTP only with `--inbound-insecure-http` (tests on 127.0.0.1, or
//!   behind a proxy that terminates TLS).
//! - Every request: at most [`MAX_BODY`] bytes (413 beyond), and a token
//!   bucket per source IP address (429 with `Retry-After` when empty).
//! - Nothing it receives is logged: no payload, no signature, no secret,
//!   no token; only the provider, the event type, the outcome and (for
//!   SmartRecruiters' consent page) the companyId, after a character check.
//!
//! Any replica may receive a request while only the leader reconciles: the
//! receiver never runs a flow. It records the fact on the Integration
//! through the API (annotations the leader's watch picks up at once).

pub mod kombo;
mod rate;
pub mod smartrecruiters;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::telemetry::Metrics;

pub use rate::RateLimiter;

/// Largest request body accepted (Kombo's integration events are well under
/// 4 KiB; SmartRecruiters' token requests and callbacks under 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once; beyond, new connections are
/// closed at once (a flood of idle connections cannot pile up tasks).
const MAX_HANDSHAKES: usize = 256;

/// How the inbound server listens.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    pub addr: SocketAddr,
    /// Certificate chain and private key (PEM files); `None`: plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Requests per second per source IP address, and the burst allowed.
    pub rate_per_second: u32,
    pub burst: u32,
}

/// Builds the routes with the body limit, the per-source rate limit and
/// the request counter.
pub fn router(
    kombo: kombo::KomboWebhooks,
    partner: smartrecruiters::PartnerEndpoints,
    callbacks: crate::controller::authorization::CallbackState,
    limiter: Arc<RateLimiter>,
    metrics: Metrics,
) -> Router {
    Router::new()
        .route("/webhooks/kombo/{provider}", axum::routing::post(kombo::receive))
        .with_state(kombo)
        .merge(
            Router::new()
                .route(
                    "/webhooks/smartrecruiters/{provider}/oauth/token",
                    axum::routing::post(smartrecruiters::token),
                )
                .route(
                    "/webhooks/smartrecruiters/{provider}/callback",
                    axum::routing::post(smartrecruiters::callback),
                )
                .route(
                    "/webhooks/smartrecruiters/{provider}/consent",
                    axum::routing::get(smartrecruiters::consent),
                )
                .with_state(partner),
        )
        // The OAuth 2.0 authorization-code redirect (any replica; it hands
        // the code to the leader through the output Secret).
        .merge(crate::controller::authorization::authorization_router(callbacks))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state((limiter, metrics), guard))
}

async fn guard(
    State((limiter, metrics)): State<(Arc<RateLimiter>, Metrics)>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    // A fixed label, never the path (it carries a name the sender chose).
    let path = request.uri().path();
    let endpoint = if path.starts_with("/webhooks/kombo/") {
        "kombo"
    } else if let Some(rest) = path.strip_prefix("/webhooks/smartrecruiters/") {
        if rest.ends_with("/oauth/token") {
            "smartrecruiters_token"
        } else if rest.ends_with("/callback") {
            "smartrecruiters_callback"
        } else if rest.ends_with("/consent") {
            "smartrecruiters_consent"
        } else {
            "other"
        }
    } else if path == "/oauth2/callback" {
        "oauth2_callback"
    } else {
        "other"
    };
    let response = limited(&limiter, peer, request, next).await;
    metrics.inbound_request(endpoint, response.status().as_u16());
    response
}

async fn limited(limiter: &RateLimiter, peer: SocketAddr, request: Request, next: Next) -> Response {
    match limiter.check(peer.ip()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded\n").into_response();
            let secs = wait.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

/// The source address of a request (for the rate limit), on plain and TLS
/// connections alike.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Binds the inbound address (so a test learns the port at once).
pub async fn bind(config: &InboundConfig) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding the inbound address {}", config.addr))
}

/// Serves `app` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, config: InboundConfig, app: Router) -> anyhow::Result<()> {
    let app = app.into_make_service_with_connect_info::<Peer>();
    match config.tls {
        None => {
            if !listener.local_addr()?.ip().is_loopback() {
                warn!("the inbound server speaks plain HTTP (--inbound-insecure-http) on a non-loopback address");
            }
            axum::serve(listener, app).await?;
        }
        Some((cert, key)) => {
            let resolver = Arc::new(ReloadingCert::load(cert, key)?);
            let mut tls =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()?
                    .with_no_client_auth()
                    .with_cert_resolver(resolver);
            // axum is built with HTTP/1 only here: never let ALPN pick h2.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            axum::serve(TlsListener::start(listener, acceptor), app).await?;
        }
    }
    Ok(())
}

/// A listener that hands out TLS streams whose handshake finished; each
/// handshake runs on its own task (with a timeout), so a slow client
/// cannot hold up the others.
struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn start(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors and the like: breathe.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    drop(slot);
                    if let Ok(Ok(tls)) = handshake {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Self { local, ready }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The certificate and key, read again when either file changes.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_pair(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the key {}", key.display()))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key_der)
        .context("loading the private key")?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl ReloadingCert {
    fn load(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let stamps = (modified(&cert), modified(&key));
        let pair = read_pair(&cert, &key)?;
        info!(cert = %cert.display(), "inbound TLS certificate loaded");
        Ok(Self {
            current: Mutex::new((stamps.0, stamps.1, pair)),
            cert,
            key,
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamps = (modified(&self.cert), modified(&self.key));
        let mut current = self.current.lock().ok()?;
        if (stamps.0, stamps.1) != (current.0, current.1) {
            match read_pair(&self.cert, &self.key) {
                Ok(pair) => {
                    info!("inbound TLS certificate reloaded");
                    *current = (stamps.0, stamps.1, pair);
                }
                // Half-written (cert and key replaced one after the other):
                // keep the last good pair and look again next time.
                Err(e) => warn!(error = %e, "inbound TLS certificate not reloaded; serving the previous one"),
            }
        }
        Some(current.2.clone())
    }
}

/// The source address a rate limit is kept for: IPv6 clients by /64, so one
/// host cannot step around its limit through its own addresses.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}
