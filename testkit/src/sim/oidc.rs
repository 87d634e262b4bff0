//! A real OAuth 2.0 authorization server nobody here wrote: the npm package
//! `oidc-provider` (pinned in tests/oidc/package.json), started on 127.0.0.1
//! with the client-credentials grant and a short token lifetime. Installs its
//! node modules on first use (`npm ci`), once even when tests run in parallel.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running oidc-provider; killed on drop.
pub struct OidcProvider {
    url: String,
    client_id: String,
    client_secret: String,
    child: tokio::process::Child,
}

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc")
}

/// `npm ci` once; a lock directory keeps parallel test processes from racing.
fn ensure_installed(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules/oidc-provider").exists() {
        return Ok(());
    }
    let lock = dir.join(".install-lock");
    for _ in 0..600 {
        if std::fs::create_dir(&lock).is_ok() {
            let result = if dir.join("node_modules/oidc-provider").exists() {
                Ok(())
            } else {
                std::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(dir)
                    .status()
                    .context("running npm ci for oidc-provider")
                    .and_then(|s| {
                        if s.success() {
                            Ok(())
                        } else {
                            bail!("npm ci failed: {s}")
                        }
                    })
            };
            let _ = std::fs::remove_dir(&lock);
            return result;
        }
        if dir.join("node_modules/oidc-provider").exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("timed out waiting for another process to install oidc-provider")
}

/// The redirect URI registered for the authorization-code client: the
/// operator's callback as a ClusterProvider's `redirectUrl` names it. Nothing
/// listens there in the tests; they read the redirect's Location.
pub const REDIRECT_URI: &str = "http://127.0.0.1:8089/oauth2/callback";

impl OidcProvider {
    /// Starts oidc-provider with one client (`client_id`, HTTP Basic) and its
    /// `<client_id>-post` twin (form-body authentication), both with
    /// `client_secret`, issuing tokens that live `ttl_seconds`.
    pub async fn start(client_id: &str, client_secret: &str, ttl_seconds: u64) -> anyhow::Result<Self> {
        let dir = server_dir();
        let install_dir = dir.clone();
        tokio::task::spawn_blocking(move || ensure_installed(&install_dir)).await??;
        let mut child = tokio::process::Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("TOKEN_TTL_SECONDS", ttl_seconds.to_string())
            .env("REDIRECT_URI", REDIRECT_URI)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting node tests/oidc/server.mjs")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("oidc-provider listening on ") {
                    return Ok::<_, anyhow::Error>(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
            bail!("oidc-provider exited before it was ready")
        })
        .await
        .context("oidc-provider did not start within 20s")??;
        Ok(Self {
            url,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            child,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    /// The authorization endpoint (RFC 6749 section 3.1).
    pub fn authorization_url(&self) -> String {
        format!("{}/auth", self.url)
    }

    /// The authorization-code client's id (`<client_id>-authcode`).
    pub fn authcode_client_id(&self) -> String {
        format!("{}-authcode", self.client_id)
    }

    /// Asks the server (token introspection, RFC 7662) whether a token is active.
    pub async fn is_active(&self, token: &str) -> anyhow::Result<bool> {
        self.is_active_for(&self.client_id, token).await
    }

    /// As [`Self::is_active`], asked as `client_id` (the token's own client).
    pub async fn is_active_for(&self, client_id: &str, token: &str) -> anyhow::Result<bool> {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/token/introspection", self.url))
            .basic_auth(client_id, Some(&self.client_secret))
            .form(&[("token", token)])
            .send()
            .await?
            .json()
            .await?;
        Ok(answer["active"] == true)
    }

    /// Revokes a token (RFC 7009) as `client_id`.
    pub async fn revoke(&self, client_id: &str, token: &str, hint: &str) -> anyhow::Result<()> {
        let status = reqwest::Client::new()
            .post(format!("{}/token/revocation", self.url))
            .basic_auth(client_id, Some(&self.client_secret))
            .form(&[("token", token), ("token_type_hint", hint)])
            .send()
            .await?
            .status();
        anyhow::ensure!(status.is_success(), "revocation answered {status}");
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
