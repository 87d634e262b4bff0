//! What each driver makes of each provider answer, without Kubernetes: the
//! driver against its provider's simulator, one row per answer, the reason
//! the Ready condition will carry and whether the failure is retried by
//! itself. The base of the test pyramid: fast, no cluster, no operator;
//! the operator passes a driver's reason to the condition unchanged (the
//! end-to-end tests in tests/integration show each path once).

use std::{collections::BTreeMap, time::Duration};

use integration_providers::{
    ClientAuth, Credentials, Driver, DriverError, ExchangeRequest, Flow, MemoryState, Outcome, Priority,
    ProviderConfig, ProviderHttp, RateLimitScope, fields, keys, oauth2::OAuth2Driver, reasons::Reason, run_exchange,
    smartrecruiters::SmartRecruitersDriver, talentlink::TalentLinkDriver,
};
use jiff::Timestamp;
use testkit::sim::{Fault, oauth2::OAuth2Sim, smartrecruiters::SmartRecruitersSim, talentlink::TalentLinkSim};

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
    run_exchange(
        driver,
        &ExchangeRequest {
            priority: Priority::Urgent,
            provider,
            flow,
            inputs,
            persisted: &Credentials::new(BTreeMap::new()),
            first_claimant: None,
            state_key: None,
            identity: "uid-1",
            retry_requested: None,
            recorded_id: None,
            recorded_awaiting: None,
            reported_id: None,
            now: Timestamp::now(),
        },
        &mut MemoryState::default(),
    )
    .await
    .map(|finished| finished.outcome)
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
async fn check<F, Fut>(what: &str, mut rows: Vec<Row>, mut inject: impl FnMut(Fault), mut run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, DriverError>>,
{
    assert!(
        matches!(run().await, Ok(Outcome::Issued(_))),
        "{what}: without a fault the exchange must issue (positive control)"
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
