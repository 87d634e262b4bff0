//! Write: the output Secret and the finalizer. Every read and write of the
//! output Secret goes through the one ownership guard here ([`owned`],
//! [`read_output`], [`cached_output`]): a Secret of the target's name that
//! another owner made is never read as ours, and never written.

use super::exchange::remove_secret_keys;
use super::observe::Observed;
use super::{CLEANUP_FINALIZER, SECRET_MANAGER};
use crate::reasons::Reason;
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;

use super::super::{
    Context, Error, output, owned,
    plan::SecretState,
    resolve::{self},
    templates::{self, TemplateError},
};
use crate::{crd::Integration, providers::Credentials};

/// Something that says who controls an output Secret: the Secret's metadata
/// as read, or the owned-Secret cache's entry.
pub(super) trait Controlled {
    fn controlled_by(&self, integration: &Integration) -> bool;
}

impl Controlled for Secret {
    fn controlled_by(&self, integration: &Integration) -> bool {
        output::is_owned_by(&self.metadata, integration)
    }
}

impl Controlled for PartialObjectMeta<Secret> {
    fn controlled_by(&self, integration: &Integration) -> bool {
        output::is_owned_by(&self.metadata, integration)
    }
}

impl Controlled for owned::OwnedSecret {
    fn controlled_by(&self, integration: &Integration) -> bool {
        self.is_owned_by(integration)
    }
}

/// The ownership guard: the output Secret as found (`None`: there is
/// none), or the `TargetSecretNotOwned` failure when another owner made it.
pub(super) fn owned<T: Controlled>(found: Option<T>, integration: &Integration) -> Result<Option<T>, Error> {
    match found {
        Some(found) if !found.controlled_by(integration) => Err(not_owned(&output::target_name(integration))),
        found => Ok(found),
    }
}

/// The output Secret read from the API server, through the guard.
pub(super) async fn read_output(integration: &Integration, ctx: &Context) -> Result<Option<Secret>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    owned(api.get_opt(&output::target_name(integration)).await?, integration)
}

/// The output Secret as the owned-Secret cache holds it, through the guard.
pub(super) fn cached_output(integration: &Integration, ctx: &Context) -> Result<Option<owned::OwnedSecret>, Error> {
    let namespace = integration.namespace().unwrap_or_default();
    owned(
        ctx.owned_secrets.get(&namespace, &output::target_name(integration)),
        integration,
    )
}

fn not_owned(name: &str) -> Error {
    Error::invalid(
        Reason::TargetSecretNotOwned,
        format!(
            "Secret {name:?} exists and is not owned by this Integration; choose another spec.target.name or delete that Secret"
        ),
    )
}

/// The condition for a template that cannot be used.
pub(super) fn template_error(e: TemplateError) -> Error {
    let reason = match e {
        TemplateError::Failed { .. } => Reason::InvalidTemplate,
        TemplateError::Conflict { .. } => Reason::TemplateKeyConflict,
    };
    Error::invalid(
        reason,
        format!("{e}; the output Secret was not rewritten with these templates"),
    )
}

/// The condition for a Secret type the existing Secret does not have.
pub(super) fn type_changed(name: &str, found: Option<&str>, wanted: &str, keeps_state: bool) -> Error {
    let found = found.map(|f| format!(" has type {f:?} and")).unwrap_or_default();
    let how = if keeps_state {
        format!(
            "set spec.target.type back: this flow keeps credentials the provider shows only once in Secret {name:?}, and deleting it would lose them"
        )
    } else {
        format!(
            "delete Secret {name:?} and the operator writes it again with the new type (issuing new credentials), or set spec.target.type back"
        )
    };
    Error::invalid(
        Reason::SecretTypeChanged,
        format!(
            "Secret {name:?}{found} spec.target.type asks for {wanted:?}; Kubernetes cannot change a Secret's type and the operator never deletes Secrets: {how}. The Secret stays as it is"
        ),
    )
}

/// Refuses a write that would change the existing output Secret's type,
/// before any provider call. The type is known without a read when the
/// Secret was written with the type and templates the spec asks for.
pub(super) async fn check_type(
    integration: &Integration,
    ctx: &Context,
    existing: &Observed,
    wanted_fingerprint: Option<&str>,
    keeps_state: bool,
) -> Result<(), Error> {
    let found = match (&existing.state, &existing.secret) {
        (SecretState::Missing, _) => return Ok(()),
        (_, Some(secret)) => secret.type_.clone(),
        (
            SecretState::Intact {
                template_fingerprint, ..
            },
            None,
        ) if template_fingerprint.as_deref() == wanted_fingerprint => {
            return Ok(());
        }
        _ => match read_output(integration, ctx).await? {
            Some(secret) => secret.type_,
            None => return Ok(()),
        },
    };
    compare_type(integration, found.as_deref(), keeps_state)
}

pub(super) fn compare_type(integration: &Integration, found: Option<&str>, keeps_state: bool) -> Result<(), Error> {
    let wanted = output::secret_type(integration.spec.target.as_deref()).as_str();
    if found.unwrap_or("Opaque") == wanted {
        Ok(())
    } else {
        Err(type_changed(
            &output::target_name(integration),
            found,
            wanted,
            keeps_state,
        ))
    }
}

/// Writes the output Secret again, with the type and templates the spec
/// asks for now, from the credentials it holds: no provider call. `None`
/// when the Secret is not as recorded after all (gone, or edited since).
/// Returns whether it wrote, and the schedule recorded with the credentials.
pub(super) async fn rerender(
    integration: &Integration,
    ctx: &Context,
    existing: &Observed,
    inputs: output::InputStamp<'_>,
    keeps_state: bool,
) -> Result<Option<(bool, output::Schedule)>, Error> {
    if let Some(spec) = templates::of(integration) {
        templates::check(spec).map_err(template_error)?;
    }
    let secret = match &existing.secret {
        // Read and checked against its content hash when observed.
        Some(secret) => secret.clone(),
        None => match read_output(integration, ctx).await? {
            Some(secret) if output::is_intact(&secret, &ctx.fingerprinter) => secret,
            // Gone, or edited since.
            _ => return Ok(None),
        },
    };
    compare_type(integration, secret.type_.as_deref(), keeps_state)?;
    let (fields, _) = output::split(&secret);
    let rendered = templates::render(integration, &fields).map_err(template_error)?;
    let schedule = output::Schedule::from_annotations(secret.annotations());
    let (written, _) = write_secret(integration, ctx, &fields, &rendered, inputs, schedule, false).await?;
    Ok(Some((written, schedule)))
}

/// Adds the cleanup finalizer if it is missing.
pub(super) async fn ensure_finalizer(integration: &Integration, ctx: &Context) -> Result<(), Error> {
    if integration.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(());
    }
    let mut finalizers = integration.finalizers().to_vec();
    finalizers.push(CLEANUP_FINALIZER.to_string());
    patch_finalizers(integration, ctx, finalizers).await
}

/// Replaces the finalizer list, conditional on the resourceVersion we saw so
/// that another writer's finalizer is never dropped.
pub(super) async fn patch_finalizers(
    integration: &Integration,
    ctx: &Context,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<Integration> = Api::namespaced(ctx.client.clone(), &integration.namespace().unwrap_or_default());
    api.patch(
        &integration.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": integration.resource_version(),
        }})),
    )
    .await?;
    Ok(())
}

/// Writes the output Secret: created the first time (so that a Secret of the
/// same name made by someone else is never overwritten), server-side applied
/// after that. `seen_missing`: this reconcile found no Secret and has not
/// written one since. Rendered keys the Secret had and no longer has a
/// template for are removed. Returns whether it wrote, and whether the
/// credentials differ from those the Secret held.
pub(super) async fn write_secret(
    integration: &Integration,
    ctx: &Context,
    fields: &Credentials,
    rendered: &BTreeMap<String, String>,
    inputs: output::InputStamp<'_>,
    schedule: output::Schedule,
    seen_missing: bool,
) -> Result<(bool, bool), Error> {
    let desired = output::desired_secret(integration, fields, rendered, inputs, schedule, &ctx.fingerprinter);
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let changed = ctx
        .owned_secrets
        .get(&namespace, &name)
        .is_none_or(|cached| cached.content_digest != owned::content_digest(&desired.metadata));
    written_secret(integration, ctx, desired, seen_missing)
        .await
        .map(|written| (written, changed))
}

pub(super) async fn written_secret(
    integration: &Integration,
    ctx: &Context,
    desired: Secret,
    seen_missing: bool,
) -> Result<bool, Error> {
    let name = output::target_name(integration);
    let namespace = integration.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::<Secret>::new(&name).within(&namespace);
    // Until the written version is recorded, the watch's report of it is not
    // mistaken for someone else's edit.
    let _writing = ctx.verified.begin_write(&key);
    let mut cached_rv = None;
    let mut previous_rendered = BTreeSet::new();
    if let Some(cached) = cached_output(integration, ctx)? {
        // A re-validation that changes nothing must not write (or wake
        // every watcher of the Secret).
        let rv = cached.resource_version.map(|rv| rv.to_string());
        if let Some(rv) = &rv
            && ctx.verified.is_verified(&key, rv)
            && cached.metadata_digest == owned::metadata_digest(&desired.metadata)
        {
            return Ok(false);
        }
        cached_rv = rv;
        previous_rendered = cached.rendered_keys();
    }
    // What we know decides a fast path; anything else (or a fast path that
    // lost a race) takes the careful path below.
    let fast = if let Some(rv) = cached_rv {
        // The cache says the Secret is ours: apply at once, on the condition
        // that it is still the version the cache saw (a renewal then costs
        // one write and no read).
        let mut conditional = desired.clone();
        conditional.metadata.resource_version = Some(rv);
        Some(
            api.patch(
                &name,
                &PatchParams::apply(SECRET_MANAGER).force(),
                &Patch::Apply(&conditional),
            )
            .await,
        )
    } else if seen_missing {
        // Seen missing a moment ago: create at once instead of asking again
        // (a Secret that appeared since fails the create with a 409).
        Some(api.create(&PostParams::default(), &desired).await)
    } else {
        None
    };
    match fast {
        Some(Ok(written)) => {
            ctx.verified
                .record(&key, written.metadata.resource_version.as_deref().unwrap_or_default());
            ctx.metrics.secret_written();
            remove_stale_rendered(integration, ctx, &desired, &previous_rendered).await?;
            return Ok(true);
        }
        Some(Err(e)) if !is_retryable(&e) => return Err(write_error(e, integration)),
        _ => {}
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match api.get_metadata_opt(&name).await.map(|m| owned(m, integration)) {
            Ok(Err(not_ours)) => return Err(not_ours),
            Ok(Ok(None)) => api.create(&PostParams::default(), &desired).await,
            Ok(Ok(Some(meta))) => {
                previous_rendered = output::rendered_keys(meta.metadata.annotations.as_ref());
                api.patch(
                    &name,
                    &PatchParams::apply(SECRET_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(written) => {
                ctx.verified
                    .record(&key, written.metadata.resource_version.as_deref().unwrap_or_default());
                ctx.metrics.secret_written();
                remove_stale_rendered(integration, ctx, &desired, &previous_rendered).await?;
                return Ok(true);
            }
            // Lost a race with another writer (create vs create, or a
            // transient API error): look again. Credentials shown once must
            // not be lost to a blip, so retry a few times before giving up.
            Err(e) if attempt < 4 && is_retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(write_error(e, integration)),
        }
    }
}

/// Removes rendered keys whose template is gone. Server-side apply would
/// keep them: the Secret's first write (a create) owns them too.
pub(super) async fn remove_stale_rendered(
    integration: &Integration,
    ctx: &Context,
    desired: &Secret,
    previous_rendered: &BTreeSet<String>,
) -> Result<(), Error> {
    let data = desired.data.as_ref();
    let stale: Vec<&str> = previous_rendered
        .iter()
        .filter(|k| !data.is_some_and(|d| d.contains_key(*k)))
        .map(String::as_str)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    remove_secret_keys(integration, ctx, &stale).await
}

/// A refused Secret write as a condition: a type change (which the checks
/// before the write should have caught) gets its own reason.
pub(super) fn write_error(e: kube::Error, integration: &Integration) -> Error {
    match &e {
        kube::Error::Api(s)
            if s.code == 422 && s.message.contains("field is immutable") && s.message.contains("type") =>
        {
            type_changed(
                &output::target_name(integration),
                None,
                output::secret_type(integration.spec.target.as_deref()).as_str(),
                resolve::flow_of(integration).map_or(true, |f| f.keeps_state()),
            )
        }
        _ => e.into(),
    }
}

pub(super) fn is_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}
