//! Cloud Elements / SAP Open Connectors (shared/providers.md section 3): an
//! element instance is created once (`POST /instances`) with the platform's
//! User and Organization secrets; its token is the credential.
//!
//! The flow, each step named in every error so a condition says what failed:
//! 1. look for an instance this Integration created before
//!    (`GET /instances?tags[]=integration-operator:<Integration uid>`, the
//!    platform's tag filter, so the answer holds this Integration's
//!    instance only, not the whole organization's) when the output Secret
//!    does not name one yet: an answer lost to a timeout, a failed Secret
//!    write or a restart is adopted, never created twice;
//! 2. otherwise create it (`POST /instances`, tagged as above) and persist
//!    its id and token in the output Secret before anything else;
//! 3. update it in place (`PUT /instances/{id}`) when the element
//!    configuration changed, so the token stays;
//! 4. validate it (`GET /instances/{id}`: exists, not `disabled`, `valid`);
//! 5. publish `Authorization: User …, Element <token>` (the header element
//!    calls need, providers.md 3.2 and seed-3); the Organization secret,
//!    which administers the whole organization, only with
//!    `publishOrganizationSecret: true`.
//!
//! The output Secret records the element key and instance name the instance
//! was created for: if the spec names others (the CRD refuses the edit;
//! objects admitted without that rule), its token is not published as Ready.
//!
//! On deletion (unless `deletionPolicy: Retain`) the instance is deleted
//! (`DELETE /instances/{id}`; 404 counts as gone) after checking it carries
//! this Integration's tag, so an edited output Secret cannot make the
//! operator delete someone else's instance.
//!
//! Assumptions (UNKNOWN in providers.md 3.4/3.6; also in
//! docs/providers/cloud-elements.md): a rejected User/Organization secret
//! answers 401 and a missing privilege 403; error bodies carry `message`;
//! `GET /instances` filters by `tags[]` (seen in Cloud Elements' own test
//! framework, not in the reference; tags are matched here as well, so a
//! server that ignored the filter could not make the operator adopt another
//! instance); a 409 at creation means the instance name is taken; the instance
//! token does not expire (re-validated every `revalidateInterval`).

use crate::reasons::Reason;
use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    CleanupRequest, Credentials, Driver, DriverError, ExchangeRequest, Flow, Issued, Outcome, Priority, ProviderConfig,
    ProviderHttp, Target, base_url, classify_status, endpoint, fields, keys,
};

/// Persisted: hash of the configuration the instance was created or last updated with.
const CONFIG_HASH: &str = "instance_config_hash";
/// Persisted: the instance token.
const INSTANCE_TOKEN: &str = "element_token";
/// Persisted: the element key the instance was created for.
const MADE_FOR_ELEMENT_KEY: &str = "instance_element_key";
/// Persisted: the instance name it was created under.
const MADE_FOR_NAME: &str = "instance_name";
/// Provider name used in messages.
const PLATFORM: &str = "Cloud Elements";
/// Every key the flow persists besides the documented layout.
pub(crate) const STATE_KEYS: &[&str] = &[CONFIG_HASH, INSTANCE_TOKEN, MADE_FOR_ELEMENT_KEY, MADE_FOR_NAME];

/// The `cloud-elements` driver.
#[derive(Debug)]
pub struct CloudElementsDriver {
    http: ProviderHttp,
}

/// An element instance as the platform describes it (fields used here only).
#[derive(Deserialize)]
pub struct Instance {
    pub id: Option<serde_json::Value>,
    pub token: Option<String>,
    pub valid: Option<bool>,
    pub disabled: Option<bool>,
    /// User-defined tags (a list of strings; anything else is ignored).
    #[serde(default)]
    pub tags: Option<serde_json::Value>,
}

impl Instance {
    /// Tags are strings in listings and `{"id", "name"}` objects in the
    /// creation answer (both shapes are in the platform's examples).
    fn has_tag(&self, tag: &str) -> bool {
        self.tags.as_ref().and_then(|t| t.as_array()).is_some_and(|a| {
            a.iter()
                .any(|t| t.as_str().or_else(|| t.get("name").and_then(|n| n.as_str())) == Some(tag))
        })
    }
}

/// Parses an element instance answer. Pure, so it can be fuzzed.
pub fn parse_instance(body: &[u8]) -> Result<Instance, DriverError> {
    serde_json::from_slice(body).map_err(|_| DriverError::MalformedResponse {
        message: "the instance answer is not JSON".into(),
    })
}

/// The id and token of an instance, checked for use in paths and headers.
fn id_and_token(instance: Instance) -> Result<(String, String), DriverError> {
    let (Some(id), Some(token)) = (instance.id, instance.token) else {
        return Err(DriverError::MalformedResponse {
            message: "the instance answer lacks id or token".into(),
        });
    };
    let id = id.to_string().trim_matches('"').to_string();
    // The id goes into request paths and status, the token into a header.
    super::check_path_id("instance id", &id)?;
    super::check_published("instance token", &token, 16 * 1024)?;
    Ok((id, token))
}

/// Parses the answer to the instance creation into (id, token).
pub fn parse_created_instance(body: &[u8]) -> Result<(String, String), DriverError> {
    id_and_token(parse_instance(body)?)
}

/// Finds the instance tagged `tag` in the answer to `GET /instances`: its
/// (id, token), the oldest (first listed) if several are. Pure.
pub fn find_tagged(body: &[u8], tag: &str) -> Result<Option<(String, String)>, DriverError> {
    let list: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|_| DriverError::MalformedResponse {
        message: "the instance list is not a JSON array".into(),
    })?;
    for item in list {
        let Ok(instance) = serde_json::from_value::<Instance>(item) else {
            continue;
        };
        if instance.has_tag(tag) {
            return id_and_token(instance).map(Some);
        }
    }
    Ok(None)
}

/// The tag that marks an instance as created for one Integration.
pub fn identity_tag(identity: &str) -> String {
    format!("integration-operator:{identity}")
}

/// A step of the flow, named in every error.
enum Step<'a> {
    Find,
    Create(&'a str),
    Update(&'a str),
    Validate(&'a str),
    CheckOwner(&'a str),
    Delete(&'a str),
}

impl Step<'_> {
    fn describe(&self) -> String {
        match self {
            Step::Find => "looking for an instance this Integration created before (GET /instances?tags[]=…)".into(),
            Step::Create(name) => format!("creating element instance {name:?} (POST /instances)"),
            Step::Update(id) => {
                format!("updating the configuration of element instance {id} (PUT /instances/{id})")
            }
            Step::Validate(id) => format!("checking element instance {id} (GET /instances/{id})"),
            Step::CheckOwner(id) => {
                format!("checking element instance {id} before deleting it (GET /instances/{id})")
            }
            Step::Delete(id) => format!("deleting element instance {id} (DELETE /instances/{id})"),
        }
    }

    fn path(&self) -> String {
        match self {
            Step::Find | Step::Create(_) => "instances".into(),
            Step::Update(id) | Step::Validate(id) | Step::CheckOwner(id) | Step::Delete(id) => {
                format!("instances/{id}")
            }
        }
    }

    fn method(&self) -> reqwest::Method {
        match self {
            Step::Create(_) => reqwest::Method::POST,
            Step::Update(_) => reqwest::Method::PUT,
            Step::Delete(_) => reqwest::Method::DELETE,
            _ => reqwest::Method::GET,
        }
    }
}

/// Adds the platform and the step to an error, with what to do where a
/// person can act.
fn in_step(step: &Step<'_>, err: DriverError) -> DriverError {
    let what = step.describe();
    match err {
        DriverError::CredentialsRejected { message } => DriverError::CredentialsRejected {
            message: format!(
                "{PLATFORM} refused the User or Organization secret (input Secret keys \"user_secret\", \"organization_secret\") while {what}: {message}; put the current secrets (shown in the platform's account settings; a secret reset invalidates the old ones) into the input Secret"
            ),
        },
        DriverError::PermissionDenied { message } => DriverError::PermissionDenied {
            message: format!(
                "{PLATFORM} denied {what}: {message}; the user whose secret is in the input Secret needs the privilege to manage element instances"
            ),
        },
        DriverError::Conflict { message } if matches!(step, Step::Create(_)) => DriverError::Conflict {
            message: format!(
                "{PLATFORM} refused {what}: {message}; an instance with this name probably exists already in the organization: delete this Integration and create it again with spec.elementInstance.instanceName set to a name not in use (the name cannot be changed in place), or delete the other instance on the platform"
            ),
        },
        DriverError::BadRequest { message } if matches!(step, Step::Create(_) | Step::Update(_)) => {
            DriverError::BadRequest {
                message: format!(
                    "{PLATFORM} rejected {what}: {message}; check spec.elementInstance (elementKey, configuration) and the values secretConfiguration takes from the input Secret (for SmartRecruiters: a valid API key)"
                ),
            }
        }
        other => other.in_step(&format!("{PLATFORM}, {what}")),
    }
}

impl CloudElementsDriver {
    pub fn new(http: ProviderHttp) -> Self {
        Self { http }
    }

    /// The header of platform calls (instances): User and Organization secret.
    fn platform_auth(inputs: &Credentials) -> Result<String, DriverError> {
        Ok(format!(
            "User {}, Organization {}",
            inputs.require("user_secret")?.expose_secret(),
            inputs.require("organization_secret")?.expose_secret()
        ))
    }

    /// One call; transport failures, 429 and 5xx come back as errors naming
    /// the step, other answers as (status, body).
    async fn call(
        &self,
        provider: &ProviderConfig,
        priority: Priority,
        step: &Step<'_>,
        auth: &str,
        body: Option<&serde_json::Value>,
        scrub: &Credentials,
    ) -> Result<(u16, Vec<u8>), DriverError> {
        self.call_with_query(Target { provider, priority }, step, &[], auth, body, scrub)
            .await
    }

    /// As [`Self::call`], with query parameters.
    async fn call_with_query(
        &self,
        target: Target<'_>,
        step: &Step<'_>,
        query: &[(&str, &str)],
        auth: &str,
        body: Option<&serde_json::Value>,
        scrub: &Credentials,
    ) -> Result<(u16, Vec<u8>), DriverError> {
        let Target { provider, priority } = target;
        let mut url = endpoint(base_url(provider)?, &step.path()).map_err(|e| in_step(step, e))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .client()
            .request(step.method(), url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            request = request.json(b);
        }
        let answer = self
            .http
            .send(provider, request, scrub, priority)
            .await
            .map_err(|e| in_step(step, e))?;
        Ok((answer.status.as_u16(), answer.body))
    }

    /// As [`Self::call`], failing on any answer but 2xx.
    async fn call_ok(
        &self,
        provider: &ProviderConfig,
        priority: Priority,
        step: &Step<'_>,
        auth: &str,
        body: Option<&serde_json::Value>,
        scrub: &Credentials,
    ) -> Result<Vec<u8>, DriverError> {
        self.call_ok_with_query(Target { provider, priority }, step, &[], auth, body, scrub)
            .await
    }

    /// As [`Self::call_ok`], with query parameters.
    async fn call_ok_with_query(
        &self,
        target: Target<'_>,
        step: &Step<'_>,
        query: &[(&str, &str)],
        auth: &str,
        body: Option<&serde_json::Value>,
        scrub: &Credentials,
    ) -> Result<Vec<u8>, DriverError> {
        let (status, answer) = self.call_with_query(target, step, query, auth, body, scrub).await?;
        if !(200..300).contains(&status) {
            return Err(in_step(step, classify_status(status, &message_of(&answer), scrub)));
        }
        Ok(answer)
    }

    /// The instance tagged for this Integration, if the platform has one.
    async fn find(
        &self,
        provider: &ProviderConfig,
        priority: Priority,
        identity: &str,
        auth: &str,
        scrub: &Credentials,
    ) -> Result<Option<(String, String)>, DriverError> {
        if identity.is_empty() {
            return Ok(None);
        }
        let step = Step::Find;
        let tag = identity_tag(identity);
        // Filtered by the platform: an organization's full listing (every
        // instance with its token) outgrows the answer cap with a few
        // hundred instances.
        let answer = self
            .call_ok_with_query(
                Target { provider, priority },
                &step,
                &[("tags[]", tag.as_str())],
                auth,
                None,
                scrub,
            )
            .await?;
        find_tagged(&answer, &tag).map_err(|e| in_step(&step, e))
    }
}

/// The published header of element calls: `User …, Element …`, with the
/// Organization secret only when asked for.
fn element_header(inputs: &Credentials, token: &str, with_organization: bool) -> Result<String, DriverError> {
    let user = inputs.require("user_secret")?.expose_secret();
    Ok(if with_organization {
        let organization = inputs.require("organization_secret")?.expose_secret();
        format!("User {user}, Organization {organization}, Element {token}")
    } else {
        format!("User {user}, Element {token}")
    })
}

fn configuration(
    flow_config: &std::collections::BTreeMap<String, String>,
    secret_config: &std::collections::BTreeMap<String, String>,
    inputs: &Credentials,
) -> Result<serde_json::Map<String, serde_json::Value>, DriverError> {
    let mut config: serde_json::Map<String, serde_json::Value> =
        flow_config.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    for (config_key, input_key) in secret_config {
        config.insert(config_key.clone(), json!(inputs.require(input_key)?.expose_secret()));
    }
    Ok(config)
}

fn config_hash(config: &serde_json::Map<String, serde_json::Value>) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(config).unwrap_or_default()))
}

/// The platform's error `message`, if any (unscrubbed: callers scrub).
pub fn message_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v.get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string()
}

#[async_trait]
impl Driver for CloudElementsDriver {
    fn supports(&self, flow: &Flow) -> bool {
        matches!(flow, Flow::ElementInstance { .. })
    }

    fn needs_cleanup(&self, flow: &Flow) -> bool {
        matches!(
            flow,
            Flow::ElementInstance {
                delete_on_cleanup: true,
                ..
            }
        )
    }

    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
        let Flow::ElementInstance {
            element_key,
            instance_name,
            configuration: flow_config,
            secret_configuration,
            publish_organization_secret,
            ..
        } = req.flow
        else {
            return Err(DriverError::Misconfigured {
                message: format!("cloud-elements does not support the {} flow", req.flow.name()),
            });
        };
        let auth = Self::platform_auth(req.inputs)?;
        let config = configuration(flow_config, secret_configuration, req.inputs)?;
        let hash = config_hash(&config);
        let persisted = req.persisted;
        let body = json!({
            "element": {"key": element_key},
            "configuration": config,
            "tags": [identity_tag(req.identity)],
            "name": instance_name,
        });

        // A person asked for a new instance in place of one that is gone.
        // Forgotten first; the next call, finding no instance, looks for a
        // tagged one or creates one, as after a restart here.
        if let (Some(asked), Some(id)) = (req.retry_requested, persisted.get(keys::INTEGRATION_ID))
            && asked == id.expose_secret()
        {
            return Ok(Outcome::persist(
                Credentials::default(),
                &[
                    keys::INTEGRATION_ID,
                    INSTANCE_TOKEN,
                    CONFIG_HASH,
                    MADE_FOR_ELEMENT_KEY,
                    MADE_FOR_NAME,
                ],
            ));
        }

        // The instance in the Secret was made for one element and name:
        // never publish its token for others.
        let recorded = |k| {
            persisted
                .get(k)
                .map(|v: &secrecy::SecretString| v.expose_secret().to_string())
                .filter(|v| !v.is_empty())
        };
        if let (Some(id), Some(old_key), Some(old_name)) = (
            recorded(keys::INTEGRATION_ID),
            recorded(MADE_FOR_ELEMENT_KEY),
            recorded(MADE_FOR_NAME),
        ) && (old_key.as_str(), old_name.as_str()) != (element_key.as_str(), instance_name.as_str())
        {
            return Err(DriverError::NeedsAttention {
                reason: Reason::ImmutableFieldChanged,
                message: format!(
                    "{PLATFORM}: element instance {id} was created for element {old_key:?} under the name {old_name:?}, but spec.elementInstance now names element {element_key:?} and name {instance_name:?}; an instance cannot change its element or name here, so its token is not published for the new values. Put the old elementKey and instanceName back, or delete this Integration (which deletes the instance unless retained) and create a new one"
                ),
            });
        }
        let made_for = fields([
            (MADE_FOR_ELEMENT_KEY, element_key.clone()),
            (MADE_FOR_NAME, instance_name.clone()),
        ]);

        if persisted.get(keys::INTEGRATION_ID).is_none() || persisted.get(INSTANCE_TOKEN).is_none() {
            let scrub = req.inputs.and(persisted);
            // An earlier POST whose answer never made it into the Secret
            // (lost answer, failed write, restart) left a tagged instance:
            // adopt it rather than create a second one. Its configuration is
            // unknown, so it is updated below.
            let saved = match self
                .find(req.provider, req.priority, req.identity, &auth, &scrub)
                .await?
            {
                Some((id, token)) => {
                    fields([(keys::INTEGRATION_ID, id), (INSTANCE_TOKEN, token)]).updated(&made_for, &[])
                }
                None => {
                    let step = Step::Create(instance_name);
                    let answer = self
                        .call_ok(req.provider, req.priority, &step, &auth, Some(&body), &scrub)
                        .await?;
                    let (id, token) = parse_created_instance(&answer).map_err(|e| in_step(&step, e))?;
                    fields([
                        (keys::INTEGRATION_ID, id),
                        (INSTANCE_TOKEN, token),
                        (CONFIG_HASH, hash.clone()),
                    ])
                    .updated(&made_for, &[])
                }
            };
            // Shown at creation: persisted before anything else. The next
            // call finds the instance in the Secret and goes on with its
            // update (an adopted one) and validation.
            let remove: &[&str] = if saved.get(CONFIG_HASH).is_some() {
                &[]
            } else {
                &[CONFIG_HASH]
            };
            return Ok(Outcome::persist(saved, remove));
        }
        let scrub = req.inputs.and(persisted);
        let id = persisted.require(keys::INTEGRATION_ID)?.expose_secret().to_string();
        if persisted.get(CONFIG_HASH).map(|h| h.expose_secret().to_string()) != Some(hash.clone()) {
            // The configuration (say, the provider API key) changed: update
            // the instance in place so its token stays the same.
            let step = Step::Update(&id);
            self.call_ok(req.provider, req.priority, &step, &auth, Some(&body), &scrub)
                .await?;
            // Then validated by the next call, with the hash matching.
            return Ok(Outcome::persist(fields([(CONFIG_HASH, hash)]), &[]));
        }
        let step = Step::Validate(&id);
        let (status, answer) = self
            .call(req.provider, req.priority, &step, &auth, None, &scrub)
            .await?;
        if status == 404 {
            return Err(DriverError::NeedsAttention {
                reason: Reason::ElementInstanceGone,
                message: format!(
                    "{PLATFORM} has no element instance {id} any more ({}: HTTP 404), it was deleted on the platform; to create a new one, set the annotation integration-operator.io/retry={id} on this Integration",
                    step.describe()
                ),
            });
        }
        if !(200..300).contains(&status) {
            return Err(in_step(&step, classify_status(status, &message_of(&answer), &scrub)));
        }
        let instance = parse_instance(&answer).map_err(|e| in_step(&step, e))?;
        if instance.disabled == Some(true) {
            return Err(DriverError::NeedsAttention {
                reason: Reason::ElementInstanceDisabled,
                message: format!(
                    "{PLATFORM} element instance {id} is disabled ({}); enable it on the platform",
                    step.describe()
                ),
            });
        }
        if instance.valid == Some(false) {
            return Err(DriverError::CredentialsRejected {
                message: format!(
                    "{PLATFORM} marks element instance {id} invalid ({}): the provider refused its configuration; put a working key into the input Secret keys secretConfiguration names (for SmartRecruiters: the API key behind api.key)",
                    step.describe()
                ),
            });
        }
        let token = persisted.require(INSTANCE_TOKEN)?.expose_secret().to_string();
        let header = element_header(req.inputs, &token, *publish_organization_secret)?;
        Ok(Outcome::Issued(Issued {
            fields: fields([
                (keys::AUTHORIZATION, header.clone()),
                (keys::HEADER_NAME, "Authorization".to_string()),
                (keys::HEADER_VALUE, header),
                (keys::INTEGRATION_ID, id.clone()),
                (keys::BASE_URL, base_url(req.provider)?.to_string()),
            ])
            // Secrets written before the made-for keys existed get them now.
            .updated(&made_for, &[]),
            expires_at: None,
            lifetime_defaulted: false,
            provider_id: Some(id),
            warning: None,
        }))
    }

    async fn cleanup(&self, req: &CleanupRequest<'_>) -> Result<(), DriverError> {
        let auth = Self::platform_auth(req.inputs)?;
        let scrub = req.inputs.and(req.persisted);
        let tag = identity_tag(req.identity);
        let id = match req.persisted.get(keys::INTEGRATION_ID) {
            Some(id) => {
                let id = id.expose_secret().to_string();
                // Only an instance this Integration created is deleted.
                let step = Step::CheckOwner(&id);
                let (status, answer) = self
                    .call(req.provider, req.priority, &step, &auth, None, &scrub)
                    .await?;
                if status == 404 {
                    return Ok(());
                }
                if !(200..300).contains(&status) {
                    return Err(in_step(&step, classify_status(status, &message_of(&answer), &scrub)));
                }
                let instance = parse_instance(&answer).map_err(|e| in_step(&step, e))?;
                if !req.identity.is_empty() && !instance.has_tag(&tag) {
                    return Err(DriverError::NeedsAttention {
                        reason: Reason::ElementInstanceNotOwned,
                        message: format!(
                            "{PLATFORM} element instance {id} does not carry the tag {tag} ({}), so this Integration did not create it and it is not deleted; delete it on the platform if it should go, then remove the finalizer integration-operator.io/cleanup",
                            step.describe()
                        ),
                    });
                }
                id
            }
            // The output Secret never got the id (the answer to the POST was
            // lost): find the instance by its tag.
            None => match self
                .find(req.provider, req.priority, req.identity, &auth, &scrub)
                .await?
            {
                Some((id, _)) => id,
                None => return Ok(()),
            },
        };
        let step = Step::Delete(&id);
        let (status, answer) = self
            .call(req.provider, req.priority, &step, &auth, None, &scrub)
            .await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(in_step(&step, classify_status(status, &message_of(&answer), &scrub))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tagged_instance_is_found_in_a_listing() {
        let body = br#"[{"id":1,"token":"a","tags":["other"]},{"id":2,"token":"b/c+d=","tags":["integration-operator:u-1"]},{"id":3,"token":"c","tags":["integration-operator:u-1"]}]"#;
        assert_eq!(
            find_tagged(body, &identity_tag("u-1")).unwrap(),
            Some(("2".to_string(), "b/c+d=".to_string()))
        );
        assert_eq!(find_tagged(body, &identity_tag("u-2")).unwrap(), None);
        assert_eq!(find_tagged(b"{}", "t").unwrap_err().reason(), Reason::MalformedResponse);
        // An entry of another shape is skipped, not fatal.
        assert_eq!(find_tagged(br#"[7, {"id":"x"}]"#, "t").unwrap(), None);
    }

    #[test]
    fn errors_name_the_platform_the_step_and_what_to_do() {
        let err = in_step(
            &Step::Create("team-a-acme"),
            classify_status(409, "name in use", &Credentials::default()),
        );
        assert_eq!(err.reason(), Reason::ProviderConflict);
        let text = err.to_string();
        assert!(
            text.contains("Cloud Elements") && text.contains("POST /instances") && text.contains("instanceName"),
            "{text}"
        );
        let err = in_step(&Step::Validate("12"), classify_status(401, "", &Credentials::default()));
        assert_eq!(err.reason(), Reason::ReauthRequired);
        assert!(err.to_string().contains("GET /instances/12"), "{err}");
    }
}
