//! The response parsers of the SmartRecruiters, Cloud Elements and Kombo
//! drivers: ids, tokens and links they return are publishable (headers,
//! URL paths, status) and error messages are safe.
#![no_main]

#[path = "common.rs"]
mod common;

use arbitrary::Arbitrary;
use integration_operator::providers::{classify_status, cloud_elements, kombo, smartrecruiters};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

#[derive(Arbitrary, Debug)]
enum Parser {
    SmartRecruitersPartner,
    SmartRecruitersError,
    CloudElementsCreated,
    CloudElementsInstance,
    CloudElementsError,
    KomboError,
    KomboConnectLink,
    KomboIntegrationByToken,
}

/// JSON built from the keys these providers use, so the fuzzer reaches the
/// interesting branches without having to guess key names.
#[derive(Arbitrary, Debug)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    Link { token: String, tail: String },
    Arr(Vec<J>),
    Obj(Vec<(Key, J)>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    ClientId,
    ClientSecret,
    IntegrationId,
    Id,
    Token,
    Valid,
    Disabled,
    Message,
    Code,
    Error,
    Data,
    Link,
    Status,
    Other(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::ClientId => "clientId",
            Key::ClientSecret => "clientSecret",
            Key::IntegrationId => "integrationId",
            Key::Id => "id",
            Key::Token => "token",
            Key::Valid => "valid",
            Key::Disabled => "disabled",
            Key::Message => "message",
            Key::Code => "code",
            Key::Error => "error",
            Key::Data => "data",
            Key::Link => "link",
            Key::Status => "status",
            Key::Other(s) => s,
        }
    }
}

impl J {
    fn value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => json!(b),
            J::Int(i) => json!(i),
            J::Num(n) => json!(n),
            J::Str(s) => json!(s),
            J::Link { token, tail } => json!(format!("https://connect.kombo.dev/v1?token={token}{tail}")),
            J::Arr(items) => Value::Array(items.iter().map(J::value).collect()),
            J::Obj(fields) => Value::Object(fields.iter().map(|(k, v)| (k.name().to_string(), v.value())).collect()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Json(J),
}

#[derive(Arbitrary, Debug)]
struct Input {
    parser: Parser,
    secrets: Vec<String>,
    status: u16,
    body: Body,
}

const MAX_TOKEN: usize = 16 * 1024;

fuzz_target!(|input: Input| {
    let secrets = common::credentials(&input.secrets);
    let body = match &input.body {
        Body::Raw(b) => b.clone(),
        Body::Json(j) => serde_json::to_vec(&j.value()).unwrap(),
    };
    match input.parser {
        Parser::SmartRecruitersPartner => {
            if let Ok((client_id, client_secret, integration_id)) = smartrecruiters::parse_partner_integration(&body) {
                common::assert_publishable("clientId", &client_id, MAX_TOKEN);
                common::assert_publishable("clientSecret", &client_secret, MAX_TOKEN);
                common::assert_publishable("integrationId", &integration_id, 256);
            }
        }
        Parser::SmartRecruitersError => {
            let e = classify_status(input.status, &smartrecruiters::error_detail(&body), &secrets);
            common::assert_safe_error(&e, &secrets);
        }
        Parser::CloudElementsCreated => {
            if let Ok((id, token)) = cloud_elements::parse_created_instance(&body) {
                common::assert_path_safe("instance id", &id);
                common::assert_publishable("instance token", &token, MAX_TOKEN);
            }
        }
        Parser::CloudElementsInstance => {
            let _ = cloud_elements::parse_instance(&body);
        }
        Parser::CloudElementsError => {
            let e = classify_status(input.status, &cloud_elements::message_of(&body), &secrets);
            common::assert_safe_error(&e, &secrets);
        }
        Parser::KomboError => {
            if let Ok(v) = kombo::parse_body("integrations", &body) {
                let e = kombo::classify_answer(input.status, &v, &secrets);
                common::assert_safe_error(&e, &secrets);
            }
        }
        Parser::KomboConnectLink => {
            if let Ok(v) = kombo::parse_body("connect/create-link", &body)
                && let Ok((link, token)) = kombo::parse_connect_link(&v)
            {
                common::assert_publishable("connect link", &link, 2048);
                common::assert_path_safe("connect link token", &token);
            }
        }
        Parser::KomboIntegrationByToken => {
            if let Ok(v) = kombo::parse_body("connect/integration-by-token", &body)
                && let Ok(id) = kombo::parse_integration_by_token(&v)
            {
                common::assert_path_safe("integration id", &id);
            }
        }
    }
});
