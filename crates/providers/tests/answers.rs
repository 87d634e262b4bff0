//! What each driver makes of each provider answer, without Kubernetes: the
//! driver against its provider's simulator, one row per answer, the reason
//! the Ready condition will carry and whether the failure is retried by
//! itself. The base of the test pyramid: fast, no cluster, no operator;
//! the operator passes a driver's reason to the condition unchanged (the
//! end-to-end tests in tests/integration show each path once).

use std::{cell::Cell, collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use integration_providers::{
    ClientAuth, Credentials, Driver, DriverError, ExchangeRequest, Finished, Flow, KomboLinkType, MemoryState, Outcome,
    Priority, ProviderConfig, ProviderHttp, RateLimitScope, StateWriter, Then,
    cloud_elements::CloudElementsDriver,
    fields, keys,
    kombo::KomboDriver,
    oauth2::OAuth2Driver,
    reasons::Reason,
    run_exchange,
    smartrecruiters::{POST_MARKER, SmartRecruitersDriver},
    talentlink::TalentLinkDriver,
};
use jiff::Timestamp;
use secrecy::ExposeSecret;
use testkit::sim::{
    Fault, cloud_elements::CloudElementsSim, kombo::KomboSim, oauth2::OAuth2Sim, smartrecruiters::SmartRecruitersSim,
    talentlink::TalentLinkSim,
};

fn config(token_url: Option<String>, base_url: Option<String>) -> ProviderConfig {
    ProviderConfig {
        name: "p".into(),
        token_url: token_url.map(|u| u.parse().unwrap()),
        authorization_url: None,
        redirect_url: None,
        base_url: base_url.map(|u| u.parse().unwrap()),
        client_auth: ClientAuth::Post,
        // Short, so that the `Delay` row times out quickly.
        request_timeout: Duration::from_millis(500),
        default_lifetime: Duration::from_secs(1800),
        max_concurrency: 8,
        requests_per_second: 1000,
        revalidate_interval: Duration::from_secs(3600),
        rate_limit_scope: RateLimitScope::Host,
    }
}

async fn exchange(
    driver: &dyn Driver,
    provider: &ProviderConfig,
    flow: &Flow,
    inputs: &Credentials,
) -> Result<Outcome, DriverError> {
    exchange_from(
        driver,
        provider,
        flow,
        inputs,
        "uid-1",
        &Credentials::new(BTreeMap::new()),
    )
    .await
    .map(|finished| finished.outcome)
}

/// One exchange as the controller runs it (every persist applied), for
/// the Integration with uid `identity`, from what its Secret holds.
async fn exchange_from(
    driver: &dyn Driver,
    provider: &ProviderConfig,
    flow: &Flow,
    inputs: &Credentials,
    identity: &str,
    persisted: &Credentials,
) -> Result<Finished, DriverError> {
    run_exchange(
        driver,
        &request(provider, flow, inputs, identity, persisted),
        &mut MemoryState::default(),
    )
    .await
}

fn request<'a>(
    provider: &'a ProviderConfig,
    flow: &'a Flow,
    inputs: &'a Credentials,
    identity: &'a str,
    persisted: &'a Credentials,
) -> ExchangeRequest<'a> {
    ExchangeRequest {
        priority: Priority::Urgent,
        provider,
        flow,
        inputs,
        persisted,
        first_claimant: None,
        state_key: None,
        identity,
        retry_requested: None,
        recorded_id: None,
        recorded_awaiting: None,
        reported_id: None,
        now: Timestamp::now(),
    }
}

/// What the output Secret holds after `finished`: the persisted state and,
/// when credentials were issued, their fields.
fn secret_after(finished: Finished) -> Credentials {
    match finished.outcome {
        Outcome::Issued(issued) => finished.persisted.updated(&issued.fields, &[]),
        _ => finished.persisted,
    }
}

/// One row: the answer the simulator gives, the reason it must end with,
/// and whether the operator retries it by itself (a transient failure) or
/// waits for a person.
struct Row {
    answer: Fault,
    reason: Reason,
    transient: bool,
}

fn row(answer: Fault, reason: Reason, transient: bool) -> Row {
    Row {
        answer,
        reason,
        transient,
    }
}

/// Sets what `answer` must end with, replacing the common row for it.
fn set(rows: &mut Vec<Row>, answer: Fault, reason: Reason, transient: bool) {
    rows.retain(|r| r.answer != answer);
    rows.push(row(answer, reason, transient));
}

/// The answers every HTTP provider can give and what they mean everywhere
/// (README, Conditions): 403, 404, 409, 429, 5xx, garbage, silence.
fn common_rows() -> Vec<Row> {
    vec![
        row(Fault::status(403), Reason::PermissionDenied, false),
        row(Fault::status(404), Reason::ProviderMisconfigured, false),
        row(Fault::status(409), Reason::ProviderConflict, false),
        row(Fault::status(500), Reason::ProviderUnavailable, true),
        row(Fault::status(503), Reason::ProviderUnavailable, true),
        row(Fault::Malformed, Reason::MalformedResponse, true),
        row(Fault::Truncated, Reason::MalformedResponse, true),
        row(Fault::Delay(Duration::from_secs(2)), Reason::ProviderTimeout, true),
    ]
}

/// Runs every row: the fault on `route` for one request, then one exchange.
/// The positive control comes first: without a fault the same exchange issues.
async fn check<F, Fut>(what: &str, rows: Vec<Row>, inject: impl FnMut(Fault), run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, DriverError>>,
{
    check_against(what, rows, inject, run, |o| matches!(o, Outcome::Issued(_))).await
}

/// As [`check`], with the outcome the positive control must have (a flow
/// that ends waiting for a person, say).
async fn check_against<F, Fut>(
    what: &str,
    mut rows: Vec<Row>,
    mut inject: impl FnMut(Fault),
    mut run: F,
    good: impl Fn(&Outcome) -> bool,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, DriverError>>,
{
    let control = run().await;
    assert!(
        control.as_ref().is_ok_and(&good),
        "{what}: without a fault the exchange must succeed (positive control): {control:?}"
    );
    // Last: a Retry-After holds every later request to the host back.
    rows.push(row(Fault::rate_limited(1), Reason::ProviderRateLimited, true));
    for Row {
        answer,
        reason,
        transient,
    } in rows
    {
        inject(answer.clone());
        let err = match run().await {
            Err(e) => e,
            Ok(_) => panic!("{what}: {answer:?} issued credentials"),
        };
        assert_eq!(err.reason(), reason, "{what}: {answer:?} -> {err}");
        assert_eq!(
            err.is_transient(),
            transient,
            "{what}: {answer:?} retried by itself? ({err})"
        );
        if let Fault::Status {
            retry_after: Some(s), ..
        } = answer
        {
            assert_eq!(
                err.retry_after(),
                Some(Duration::from_secs(s)),
                "{what}: Retry-After kept"
            );
        }
    }
}

#[tokio::test]
async fn oauth2_client_credentials() {
    let sim = OAuth2Sim::start().await.unwrap();
    sim.add_client("c", "s");
    let provider = config(Some(sim.token_url()), None);
    let driver = OAuth2Driver::new(ProviderHttp::plain().unwrap());
    let flow = Flow::ClientCredentials {
        scopes: vec![],
        audience: None,
    };
    let inputs = fields([(keys::CLIENT_ID, "c"), (keys::CLIENT_SECRET, "s")]);
    let mut rows = common_rows();
    // RFC 6749 5.2: the token endpoint's own errors.
    rows.push(row(Fault::status(401), Reason::ReauthRequired, false));
    let body = |e: &str| Fault::Status {
        code: 400,
        body: Some(format!(r#"{{"error":"{e}"}}"#)),
        retry_after: None,
    };
    rows.push(row(body("invalid_client"), Reason::ReauthRequired, false));
    rows.push(row(body("invalid_grant"), Reason::ReauthRequired, false));
    rows.push(row(body("invalid_scope"), Reason::PermissionDenied, false));
    rows.push(row(body("unauthorized_client"), Reason::ProviderRejectedRequest, false));
    rows.push(row(body("invalid_request"), Reason::ProviderRejectedRequest, false));
    check(
        "oauth2",
        rows,
        |f| sim.fail_next("token", 1, f),
        || exchange(&driver, &provider, &flow, &inputs),
    )
    .await;
}

#[tokio::test]
async fn smartrecruiters_api_key() {
    let sim = SmartRecruitersSim::start().await.unwrap();
    sim.add_api_key("key-1", "ACME");
    let provider = config(None, Some(sim.url()));
    let driver = SmartRecruitersDriver::new(ProviderHttp::plain().unwrap());
    let inputs = fields([(keys::API_KEY, "key-1")]);
    let mut rows = common_rows();
    // The check reads the status only: any 200 means the key authenticated
    // (its body is not used), and a 403 is the case below.
    rows.retain(|r| !matches!(r.answer, Fault::Malformed | Fault::Truncated) && r.answer != Fault::status(403));
    rows.push(row(Fault::status(401), Reason::ReauthRequired, false));
    check(
        "smartrecruiters apiKey",
        rows,
        |f| sim.fail_next("company", 1, f),
        || exchange(&driver, &provider, &Flow::ApiKey, &inputs),
    )
    .await;
}

/// SmartRecruiters answers 403 to a key that authenticates but may not read
/// the company: the key is published with a warning (docs/providers/smartrecruiters.md).
#[tokio::test]
async fn smartrecruiters_api_key_without_company_access_is_issued_with_a_warning() {
    let sim = SmartRecruitersSim::start().await.unwrap();
    sim.add_api_key("key-1", "ACME");
    let provider = config(None, Some(sim.url()));
    let driver = SmartRecruitersDriver::new(ProviderHttp::plain().unwrap());
    let inputs = fields([(keys::API_KEY, "key-1")]);
    sim.fail_next("company", 1, Fault::status(403));
    match exchange(&driver, &provider, &Flow::ApiKey, &inputs).await {
        Ok(Outcome::Issued(issued)) => {
            assert_eq!(issued.warning.map(|w| w.0), Some(Reason::ApiKeyPermissionLimited))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn smartrecruiters_client_credentials() {
    let sim = SmartRecruitersSim::start().await.unwrap();
    sim.add_client("c", "s", "ACME");
    let provider = config(Some(sim.token_url()), Some(sim.url()));
    let driver = SmartRecruitersDriver::new(ProviderHttp::plain().unwrap());
    let flow = Flow::ClientCredentials {
        scopes: vec![],
        audience: None,
    };
    let inputs = fields([(keys::CLIENT_ID, "c"), (keys::CLIENT_SECRET, "s")]);
    let mut rows = common_rows();
    rows.push(row(Fault::status(401), Reason::ReauthRequired, false));
    // SmartRecruiters' token endpoint answers a refused grant with 403
    // `unauthorized_client` (RFC 6749 5.2): the client's registration, not
    // a permission of the credentials.
    set(&mut rows, Fault::status(403), Reason::ProviderRejectedRequest, false);
    check(
        "smartrecruiters clientCredentials",
        rows,
        |f| sim.fail_next("token", 1, f),
        || exchange(&driver, &provider, &flow, &inputs),
    )
    .await;
}

#[tokio::test]
async fn talentlink_basic_auth() {
    let sim = TalentLinkSim::start().await.unwrap();
    sim.add_user("u", "pw");
    sim.add_api_key("key-1", "u");
    let provider = config(None, Some(sim.base_url()));
    let driver = TalentLinkDriver::new(ProviderHttp::plain().unwrap());
    let inputs = fields([("username", "u"), ("password", "pw"), (keys::API_KEY, "key-1")]);
    let mut rows = common_rows();
    rows.push(row(Fault::status(401), Reason::ReauthRequired, false));
    // TalentLink documents no conflict on a read: any other 4xx is a
    // rejected request.
    set(&mut rows, Fault::status(409), Reason::ProviderRejectedRequest, false);
    check(
        "talentlink basicAuth",
        rows,
        |f| sim.fail_next("department", 1, f),
        || exchange(&driver, &provider, &Flow::BasicAuth, &inputs),
    )
    .await;
}

/// The answers of a platform API besides the common ones: a refused
/// credential, a rejected request, a 429 without Retry-After.
fn api_rows() -> Vec<Row> {
    let mut rows = common_rows();
    rows.push(row(Fault::status(401), Reason::ReauthRequired, false));
    rows.push(row(Fault::status(400), Reason::ProviderRejectedRequest, false));
    rows.push(row(Fault::status(429), Reason::ProviderRateLimited, true));
    rows
}

const CE_USER: &str = "ce-user-secret-7f3a91";
const CE_ORG: &str = "ce-org-secret-2b6c04";
const CE_ELEMENT_KEY: &str = "ce-smartrecruiters-key-e85d1f";

async fn cloud_elements() -> (CloudElementsSim, ProviderConfig, CloudElementsDriver, Credentials) {
    let sim = CloudElementsSim::start().await.unwrap();
    sim.add_user(CE_USER, CE_ORG);
    sim.add_element_api_key(CE_ELEMENT_KEY);
    let provider = config(None, Some(sim.base_url()));
    let inputs = fields([
        ("user_secret", CE_USER),
        ("organization_secret", CE_ORG),
        ("sr_key", CE_ELEMENT_KEY),
    ]);
    (
        sim,
        provider,
        CloudElementsDriver::new(ProviderHttp::plain().unwrap()),
        inputs,
    )
}

fn element_instance(name: &str) -> Flow {
    Flow::ElementInstance {
        element_key: "smartrecruiters".into(),
        instance_name: name.into(),
        configuration: BTreeMap::new(),
        secret_configuration: BTreeMap::from([("api.key".to_string(), "sr_key".to_string())]),
        delete_on_cleanup: true,
        publish_organization_secret: false,
    }
}

/// Creating the instance (`POST /instances`): each exchange is a new
/// Integration with a new instance name, so each one creates.
#[tokio::test]
async fn cloud_elements_instance_creation() {
    use testkit::sim::cloud_elements::routes;
    let (sim, provider, driver, inputs) = cloud_elements().await;
    let mut rows = api_rows();
    // The platform's 409 at creation: the instance name is taken.
    set(&mut rows, Fault::status(409), Reason::ProviderConflict, false);
    let n = Cell::new(0);
    check(
        "cloud-elements creation",
        rows,
        |f| sim.fail_next(routes::CREATE_INSTANCE, 1, f),
        || {
            n.set(n.get() + 1);
            let (identity, flow) = (
                format!("uid-{}", n.get()),
                element_instance(&format!("acme-{}", n.get())),
            );
            let (driver, provider, inputs) = (&driver, &provider, &inputs);
            async move {
                exchange_from(driver, provider, &flow, inputs, &identity, &Credentials::default())
                    .await
                    .map(|f| f.outcome)
            }
        },
    )
    .await;
}

/// Re-validating an instance the Secret holds (`GET /instances/{id}`),
/// the routine path: the platform's answers about the instance itself.
#[tokio::test]
async fn cloud_elements_instance_revalidation() {
    use testkit::sim::cloud_elements::routes;
    let (sim, provider, driver, inputs) = cloud_elements().await;
    let flow = element_instance("acme");
    let held = secret_after(
        exchange_from(&driver, &provider, &flow, &inputs, "uid-1", &Credentials::default())
            .await
            .unwrap(),
    );
    let mut rows = api_rows();
    // A 404 for the instance itself: deleted on the platform, a person
    // decides whether to create a new one.
    set(&mut rows, Fault::status(404), Reason::ElementInstanceGone, false);
    check(
        "cloud-elements revalidation",
        rows,
        |f| sim.fail_next(routes::GET_INSTANCE, 1, f),
        || async {
            exchange_from(&driver, &provider, &flow, &inputs, "uid-1", &held)
                .await
                .map(|f| f.outcome)
        },
    )
    .await;
    assert_eq!(sim.created_count(), 1, "a revalidation created an instance");
}

const KOMBO_KEY: &str = "kombo-api-key-9c41d2";

async fn kombo() -> (KomboSim, ProviderConfig, KomboDriver, Credentials) {
    let sim = KomboSim::start().await.unwrap();
    sim.add_api_key(KOMBO_KEY);
    let provider = config(None, Some(sim.base_url()));
    let inputs = fields([(keys::API_KEY, KOMBO_KEY)]);
    (sim, provider, KomboDriver::new(ProviderHttp::plain().unwrap()), inputs)
}

fn connection(integration_id: Option<&str>) -> Flow {
    Flow::Connection {
        end_user_email: "it@acme.example".into(),
        end_user_organization_name: "ACME".into(),
        end_user_origin_id: "origin-1".into(),
        integration_category: None,
        integration_tool: None,
        link_type: KomboLinkType::MagicLink,
        integration_id: integration_id.map(str::to_string),
        delete_on_cleanup: false,
    }
}

/// Validating an integration named in the spec (`GET /integrations/{id}`),
/// the routine path. Kombo's error codes decide before the status.
#[tokio::test]
async fn kombo_integration_validation() {
    use testkit::sim::kombo::routes;
    let (sim, provider, driver, inputs) = kombo().await;
    sim.add_integration("personio:acme", "personio");
    let flow = connection(Some("personio:acme"));
    let mut rows = api_rows();
    // 404 in Kombo's envelope: Kombo says the integration does not exist.
    set(&mut rows, Fault::status(404), Reason::IntegrationNotFound, false);
    // A 404 without it is not Kombo's API: a wrong baseUrl.
    rows.push(row(
        Fault::Status {
            code: 404,
            body: Some(String::new()),
            retry_after: None,
        },
        Reason::ProviderMisconfigured,
        false,
    ));
    // Kombo's own rate-limit code, whatever the status.
    rows.push(row(
        Fault::Status {
            code: 400,
            body: Some(
                r#"{"status":"error","error":{"code":"PLATFORM.RATE_LIMIT_EXCEEDED","message":"slow down"}}"#.into(),
            ),
            retry_after: None,
        },
        Reason::ProviderRateLimited,
        true,
    ));
    check(
        "kombo validation",
        rows,
        |f| sim.fail_next(routes::GET_INTEGRATION, 1, f),
        || exchange(&driver, &provider, &flow, &inputs),
    )
    .await;
}

/// Creating a connect link (`POST /connect/create-link`): the flow ends
/// waiting for the customer, so the positive control is that wait.
#[tokio::test]
async fn kombo_connect_link_creation() {
    use testkit::sim::kombo::routes;
    let (sim, provider, driver, inputs) = kombo().await;
    let flow = connection(None);
    let mut rows = api_rows();
    // No object is looked up here: a 404 in Kombo's envelope is a refused
    // request; one without it, a wrong baseUrl.
    set(&mut rows, Fault::status(404), Reason::ProviderRejectedRequest, false);
    rows.push(row(
        Fault::Status {
            code: 404,
            body: Some(String::new()),
            retry_after: None,
        },
        Reason::ProviderMisconfigured,
        false,
    ));
    check_against(
        "kombo connect link",
        rows,
        |f| sim.fail_next(routes::CREATE_LINK, 1, f),
        || exchange(&driver, &provider, &flow, &inputs),
        |o| {
            matches!(
                o,
                Outcome::Pending {
                    reason: Reason::AwaitingConnection,
                    ..
                }
            )
        },
    )
    .await;
}

fn partner(company: &str) -> Flow {
    Flow::PartnerIntegration {
        app_id: "app-1".into(),
        company_id: company.into(),
        bidirectional: false,
    }
}

async fn smartrecruiters_partner() -> (SmartRecruitersSim, ProviderConfig, SmartRecruitersDriver, Credentials) {
    let sim = SmartRecruitersSim::start().await.unwrap();
    sim.add_master_client("master", "master-secret-1", &["app-1"]);
    let provider = config(Some(sim.token_url()), Some(sim.url()));
    let inputs = fields([(keys::CLIENT_ID, "master"), (keys::CLIENT_SECRET, "master-secret-1")]);
    (
        sim,
        provider,
        SmartRecruitersDriver::new(ProviderHttp::plain().unwrap()),
        inputs,
    )
}

/// The persist loop, one call at a time: each call resumes from what is
/// persisted, the one-shot POST is sent once, after its marker is durable,
/// and the answer is issued from the Secret without a second POST.
#[tokio::test]
async fn smartrecruiters_partner_flow_persists_each_step_and_posts_once() {
    let (sim, provider, driver, inputs) = smartrecruiters_partner().await;
    let flow = partner("ACME");
    let mut held = Credentials::default();
    let empty = Credentials::default();
    let req = request(&provider, &flow, &inputs, "uid-1", &empty);
    let now = req.now;
    // One driver call of this exchange (the same `now`) from `persisted`.
    async fn call(driver: &SmartRecruitersDriver, req: &ExchangeRequest<'_>, persisted: &Credentials) -> Outcome {
        driver.exchange(&ExchangeRequest { persisted, ..*req }).await.unwrap()
    }
    let persist = |outcome: Outcome, held: &Credentials| match outcome {
        Outcome::Persist {
            set,
            remove,
            then: Then::CallAgain,
        } => {
            let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
            (set.clone(), held.updated(&set, &remove))
        }
        other => panic!("expected a persist, then a call: {other:?}"),
    };
    let value = |c: &Credentials, k: &str| c.get(k).map(|v| v.expose_secret().to_string());

    // 1. The request-sent marker, before anything is sent.
    let (set, next) = persist(call(&driver, &req, &held).await, &held);
    assert_eq!(value(&set, POST_MARKER), Some(now.to_string()));
    assert_eq!(
        sim.calls("integrations"),
        0,
        "the POST went out before its marker was durable"
    );
    held = next;

    // 2. The POST, once; its answer (shown once) is persisted next.
    let (set, next) = persist(call(&driver, &req, &held).await, &held);
    assert!(value(&set, keys::CLIENT_SECRET).is_some());
    assert_eq!(
        value(&set, POST_MARKER).as_deref(),
        Some(""),
        "the marker is cleared with the answer"
    );
    assert_eq!(sim.calls("integrations"), 1);
    held = next;

    // 3. Issued from the persisted answer: no second POST.
    assert!(matches!(call(&driver, &req, &held).await, Outcome::Issued(_)));
    assert_eq!(
        sim.calls("integrations"),
        1,
        "the partner integration was created twice"
    );
    assert_eq!(sim.integrations().len(), 1);

    // A later exchange (a renewal) issues from the Secret, with one
    // customer token call and nothing else.
    let calls = sim.total_calls();
    let renewed = exchange_from(&driver, &provider, &flow, &inputs, "uid-1", &held)
        .await
        .unwrap();
    assert!(matches!(renewed.outcome, Outcome::Issued(_)));
    assert_eq!(sim.total_calls(), calls + 1);
}

/// The output Secret refuses writes that carry customer-level credentials
/// until `fail` is cleared.
struct RefusesAnswers<'a> {
    inner: &'a mut MemoryState,
    fail: bool,
}

#[async_trait]
impl StateWriter for RefusesAnswers<'_> {
    async fn write(&mut self, persisted: &Credentials, dropped: &[&str]) -> Result<(), DriverError> {
        if self.fail && persisted.get(keys::CLIENT_SECRET).is_some() {
            return Err(DriverError::PersistFailed {
                message: "API server down".into(),
            });
        }
        self.inner.write(persisted, dropped).await
    }
}

/// SmartRecruiters shows the customer-level credentials once: when the
/// write of the answer fails, the exchange fails with SecretWriteFailed,
/// and the next one persists the answer the driver kept, without a
/// second POST and without an "uncertain request" stop.
#[tokio::test]
async fn smartrecruiters_partner_answer_survives_a_failed_write() {
    let (sim, provider, driver, inputs) = smartrecruiters_partner().await;
    let flow = partner("ACME");
    let mut secret = MemoryState::default();
    let first = run_exchange(
        &driver,
        &request(&provider, &flow, &inputs, "uid-1", &Credentials::default()),
        &mut RefusesAnswers {
            inner: &mut secret,
            fail: true,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(first.reason(), Reason::SecretWriteFailed, "{first}");
    assert!(first.is_transient());
    assert_eq!(sim.calls("integrations"), 1);
    assert!(secret.persisted.get(keys::CLIENT_SECRET).is_none());

    let held = secret.persisted.clone();
    let second = run_exchange(
        &driver,
        &request(&provider, &flow, &inputs, "uid-1", &held),
        &mut RefusesAnswers {
            inner: &mut secret,
            fail: false,
        },
    )
    .await
    .unwrap();
    assert!(matches!(second.outcome, Outcome::Issued(_)), "{:?}", second.outcome);
    assert_eq!(
        sim.calls("integrations"),
        1,
        "the answer was lost and the integration created again"
    );
    assert_eq!(
        second
            .persisted
            .get(keys::INTEGRATION_ID)
            .map(|v| v.expose_secret().to_string()),
        Some(sim.integrations()[0].integration_id.clone())
    );
}

/// A driver that never stops asking to persist ends as an error, not a hang.
#[tokio::test]
async fn a_driver_that_never_finishes_persisting_is_stopped() {
    struct Spins;
    #[async_trait]
    impl Driver for Spins {
        fn supports(&self, _: &Flow) -> bool {
            true
        }
        async fn exchange(&self, _: &ExchangeRequest<'_>) -> Result<Outcome, DriverError> {
            Ok(Outcome::persist(fields([("k", "v")]), &[]))
        }
    }
    let provider = config(None, None);
    let mut state = MemoryState::default();
    let err = run_exchange(
        &Spins,
        &request(
            &provider,
            &Flow::ApiKey,
            &Credentials::default(),
            "uid-1",
            &Credentials::default(),
        ),
        &mut state,
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), Reason::InternalError, "{err}");
    assert!(!err.is_transient());
    assert_eq!(state.writes.len(), integration_providers::MAX_PERSISTS);
}
