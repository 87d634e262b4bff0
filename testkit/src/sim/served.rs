//! The HTTP server under every simulator: bound to 127.0.0.1 on an ephemeral
//! port, with `TCP_NODELAY`, stopped when dropped.

use std::net::SocketAddr;

/// A running simulator server. Dropping it stops the server.
pub struct Served {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves `app` on 127.0.0.1 with an ephemeral port.
    pub async fn start(app: axum::Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(crate::nodelay(listener), app).await;
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:port` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
