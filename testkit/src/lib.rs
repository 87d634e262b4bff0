//! Test and demo infrastructure for integration-operator.
//!
//! - [`control_plane`]: a real Kubernetes control plane (kube-apiserver, etcd,
//!   kube-controller-manager built from the Kubernetes Go modules in
//!   `testkit/control-plane/`), shared by a test run, a namespace per test.
//! - [`api_proxy`]: a thin fault-injecting, counting proxy in front of the
//!   real kube-apiserver, which the operator under test talks through.
//! - [`sim`]: provider simulators that speak each provider's wire protocol,
//!   including its failure modes.
//! - [`demo`]: `make demo`, the operator's main job end to end.
//! - [`bench`]: `make bench`, the scale and speed figures.
//!
//! Nothing here is linked into the shipped operator binary.

pub mod api_proxy;
pub mod bench;
pub mod control_plane;
pub mod demo;
pub mod sim;

/// A listener whose connections send every write at once (`TCP_NODELAY`), as
/// the API server (Go's net/http) and common HTTP servers do. Without it, a
/// watch's small events each wait for the previous one's ACK: measured as
/// 15-30 ms between a status write and a watcher seeing it.
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        // Only a latency hint: serving without it is still correct.
        let _ = stream.set_nodelay(true);
    })
}
