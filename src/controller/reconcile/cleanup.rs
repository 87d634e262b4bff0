//! Cleanup on deletion: undo provider-side state, then release the
//! finalizer. A failed cleanup is reported and retried, never dropped.

use super::CLEANUP_FINALIZER;
use super::observe::{read_persisted, uid};
use super::report::publish;
use super::write::patch_finalizers;
use crate::reasons::Reason;
use std::time::Duration;

use kube::ResourceExt;

use super::super::{
    Context, Error,
    events::EventType,
    resolve::{self},
};
use crate::{
    crd::Integration,
    providers::{CleanupRequest, Priority},
};

/// Deletion: undo provider-side state, then release the finalizer. A failed
/// cleanup is reported and retried, never silently dropped.
pub(super) async fn run(integration: &Integration, ctx: &Context) -> Result<Option<Duration>, Error> {
    if !integration.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(None);
    }
    let (_, provider, driver, flow) = resolve::resolve_provider(integration, ctx)?;
    if driver.needs_cleanup(&flow) {
        let namespace = integration.namespace().unwrap_or_default();
        let inputs = match ctx
            .input_reads
            .get(&ctx.client, &namespace, &integration.spec.secret_ref.name)
            .await?
        {
            Some(secret) => resolve::secret_credentials(&secret)?,
            None => {
                return Err(Error::invalid(
                    Reason::CleanupFailed,
                    format!(
                        "cannot delete the provider-side state: input Secret {:?} is gone; restore it, or remove the finalizer {CLEANUP_FINALIZER} to leave the provider-side state behind",
                        integration.spec.secret_ref.name
                    ),
                ));
            }
        };
        let (persisted, _) = read_persisted(integration, ctx).await?;
        driver
            .cleanup(&CleanupRequest {
                priority: Priority::Urgent,
                provider: &provider,
                flow: &flow,
                inputs: &inputs,
                persisted: &persisted,
                identity: &uid(integration),
                recorded_id: integration.status.as_ref().and_then(|s| s.integration_id.as_deref()),
            })
            .await
            .map_err(|e| Error::Cleanup(Box::new(e.located(&provider, flow.name()))))?;
        publish(
            ctx,
            integration,
            EventType::Normal,
            Reason::CleanedUp,
            "provider-side state deleted".into(),
        )
        .await;
    }
    let remaining: Vec<String> = integration
        .finalizers()
        .iter()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(integration, ctx, remaining).await?;
    Ok(None)
}
