//! The command-line companion: `status`, `renew`, `explain` and `check`.
//!
//! They are subcommands of the operator binary, and the same binary is the
//! kubectl plugin `kubectl integration`: kubectl runs any executable named
//! `kubectl-integration` on PATH, and invoked under that name the binary
//! offers the companion alone ([`PluginCli`]), so a symlink is all a user
//! installs.
//!
//! Every subcommand reads what the operator records (status, conditions,
//! Events, which keys the Secrets hold) or, for `check`, runs one exchange
//! with the operator's own resolution and drivers. None prints a Secret
//! value: values are read only where a key list or an exchange needs them,
//! and only key names, lengths and `<redacted>` are shown.

pub mod check;
pub mod explain;
pub mod hints;
pub mod renew;
pub mod show;
pub mod status;

use std::{ffi::OsStr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::{Client, Config, config::KubeConfigOptions};

/// The file name under which kubectl finds the plugin `kubectl integration`.
pub const PLUGIN_NAME: &str = "kubectl-integration";

/// Field manager of the companion's own writes (the renew-now annotation),
/// so `managedFields` tell them apart from the operator's and kubectl's.
pub const FIELD_MANAGER: &str = "integration-operator-companion";

/// The companion's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A table of Integrations: provider, flow, readiness, expiry, and why
    /// the ones that are not ready are not.
    Status(status::Args),
    /// Ask the operator to exchange an Integration's credentials again now
    /// (sets the integration-operator.io/renew-now annotation).
    Renew(renew::Args),
    /// Why an Integration is in its current state: spec, conditions, status,
    /// which keys its Secrets hold (never values), recent Events, what to do.
    Explain(explain::Args),
    /// One real exchange from this workstation with the provider the files
    /// name, no operator needed; prints what would be written, values redacted.
    Check(check::Args),
}

impl Command {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self {
            Command::Status(args) => status::run(args).await,
            Command::Renew(args) => renew::run(args).await,
            Command::Explain(args) => explain::run(args).await,
            Command::Check(args) => check::run(args).await,
        }
    }
}

/// `kubectl integration …`: the companion alone, under kubectl's name for it.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl integration",
    bin_name = "kubectl integration",
    version,
    about = "See and drive integration-operator's Integrations: status, renew, explain, and check a provider from this workstation"
)]
pub struct PluginCli {
    #[command(subcommand)]
    pub command: Command,
}

/// Whether the binary was started as the kubectl plugin (its `argv[0]`
/// file name is `kubectl-integration`, as through a symlink on PATH).
pub fn invoked_as_plugin(argv0: &OsStr) -> bool {
    std::path::Path::new(argv0).file_stem() == Some(OsStr::new(PLUGIN_NAME))
}

/// Where the cluster is: the flags every cluster-reading subcommand takes.
/// Flags come after the subcommand (`kubectl integration status -n team-a`):
/// kubectl hands a plugin everything after its name unread.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// Kubeconfig file; default: $KUBECONFIG, then ~/.kube/config, then in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace; default: the kubeconfig context's namespace, else `default`.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl ClusterArgs {
    /// A client for the cluster and the namespace to work in.
    pub async fn connect(&self) -> anyhow::Result<(Client, String)> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("using kubeconfig {}", path.display()))?
            }
            None => Config::infer()
                .await
                .context("no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster")?,
        };
        // kube takes the default from the current context (else `default`),
        // as kubectl does.
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok((Client::try_from(config)?, namespace))
    }

    /// The namespace without connecting anywhere (`check` with a Secret
    /// file needs no cluster): `-n`, else the kubeconfig context's if a
    /// kubeconfig can be read, else `default`.
    pub fn namespace_offline(&self) -> String {
        if let Some(ns) = &self.namespace {
            return ns.clone();
        }
        let kubeconfig = match &self.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path).ok(),
            None => kube::config::Kubeconfig::read().ok(),
        };
        kubeconfig
            .and_then(|kc| {
                let current = kc.current_context.clone()?;
                kc.contexts.into_iter().find(|c| c.name == current)?.context?.namespace
            })
            .unwrap_or_else(|| "default".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn plugin_cli_is_well_formed() {
        PluginCli::command().debug_assert();
    }

    #[test]
    fn the_plugin_name_is_recognised_by_file_name_only() {
        assert!(invoked_as_plugin(OsStr::new("kubectl-integration")));
        assert!(invoked_as_plugin(OsStr::new("/home/me/.local/bin/kubectl-integration")));
        assert!(!invoked_as_plugin(OsStr::new("/usr/bin/integration-operator")));
        assert!(!invoked_as_plugin(OsStr::new(
            "kubectl-integration-old/integration-operator"
        )));
    }

    #[test]
    fn flags_follow_the_subcommand_as_kubectl_passes_them() {
        let cli = PluginCli::try_parse_from(["kubectl integration", "status", "-A", "--kubeconfig", "/k"]).unwrap();
        let Command::Status(args) = cli.command else {
            panic!("status")
        };
        assert!(args.all_namespaces);
        assert_eq!(args.cluster.kubeconfig, Some(PathBuf::from("/k")));
        let cli = PluginCli::try_parse_from(["kubectl integration", "renew", "api", "-n", "team", "--wait"]).unwrap();
        let Command::Renew(args) = cli.command else {
            panic!("renew")
        };
        assert_eq!(args.name, "api");
        assert_eq!(args.cluster.namespace.as_deref(), Some("team"));
        assert!(args.wait);
        assert_eq!(args.timeout, std::time::Duration::from_secs(60));
    }
}
