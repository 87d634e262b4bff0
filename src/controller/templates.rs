//! Output templates (`spec.target.template`): extra keys of the output
//! Secret, rendered from the issued credentials with MiniJinja (pure).
//!
//! A template sees exactly what [`context`] builds: `credentials` (the
//! issued keys, as the Secret holds them) and `integration` (`name`,
//! `namespace`, `provider`). Nothing else is reachable: the environment has
//! no loader (the `multi_template` feature, which brings `include`, `import`
//! and `extends`, is off), MiniJinja has no way to read the process
//! environment or files, and fuel bounds the work and memory of one render.
//!
//! Messages are built here from the error's kind, the key and the line.
//! MiniJinja's own text for a render error can quote the values the
//! template was working on, credentials among them, so it is never used;
//! only a compile error (which happens before any value exists) passes its
//! detail on.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use secrecy::ExposeSecret;

use crate::{
    crd::{Integration, TemplateSpec},
    providers::Credentials,
};

/// Fuel of one key's render: MiniJinja charges about one unit per
/// instruction and per 64 bytes made, so this bounds one render to roughly
/// 100,000 steps and 6 MiB. A `config.json` of twenty fields takes a few
/// hundred.
pub const FUEL: u64 = 100_000;

/// Largest rendered value of one key (32 of them stay below the 1 MiB a
/// Secret may hold, with the issued keys).
pub const MAX_RENDERED_BYTES: usize = 24 * 1024;

/// Longest compile-error detail passed on.
const MAX_DETAIL: usize = 200;

/// Why the templates cannot be used. Never holds a credential value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A template (or its key) does not work.
    Failed {
        key: String,
        /// 1-based line of the template, where MiniJinja knows it.
        line: Option<usize>,
        /// What went wrong, in words that hold no value.
        what: String,
    },
    /// Rendered keys the flow also issues.
    Conflict { keys: Vec<String> },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Failed { key, line, what } => {
                write!(f, "spec.target.template.data[{key:?}]")?;
                if let Some(line) = line {
                    write!(f, ", line {line}")?;
                }
                write!(f, ": {what}")
            }
            TemplateError::Conflict { keys } => write!(
                f,
                "spec.target.template.data renders {} the provider also issues ({}): issued keys are always written as they are; rename the template key",
                if keys.len() == 1 { "a key" } else { "keys" },
                keys.join(", ")
            ),
        }
    }
}

/// The templates of an Integration, if it has any.
pub fn of(integration: &Integration) -> Option<&TemplateSpec> {
    integration
        .spec
        .target
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .filter(|t| !t.data.is_empty())
}

/// Whether `key` can be a Secret key (what the apiserver accepts).
pub fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && key != "."
        && !key.starts_with("..")
}

/// The environment every template runs in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // `debug()` would print the whole context into the output; nothing
    // needs it.
    env.remove_global("debug");
    // A misspelt key must not become an empty password: printing an
    // undefined value fails, testing one (`{% if credentials.x %}`) does not.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    // The key's name (`config.json`) would otherwise pick JSON escaping for
    // every `{{ }}`: a template escapes explicitly, with `tojson`.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    // A value is what the template says, to the last newline (a `.env`
    // written as a YAML block ends with one; Jinja would drop it).
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_filter("b64encode", |value: String| -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
    });
    env
}

/// What a template can read.
fn context(integration: &Integration, credentials: &Credentials) -> Value {
    let credentials = Value::from_pairs(
        credentials
            .iter()
            .map(|(k, v)| (k.clone(), v.expose_secret().to_string())),
    );
    let meta = &integration.metadata;
    let about = Value::from_pairs([
        ("name", meta.name.clone().unwrap_or_default()),
        ("namespace", meta.namespace.clone().unwrap_or_default()),
        ("provider", integration.spec.provider.clone()),
    ]);
    Value::from_pairs([("credentials", credentials), ("integration", about)])
}

/// Checks every key and compiles every template, before anything is sent
/// or written: errors that need no credential value show at once.
pub fn check(spec: &TemplateSpec) -> Result<(), TemplateError> {
    let env = environment();
    for (key, source) in &spec.data {
        check_key(key)?;
        env.template_from_named_str(key, source)
            .map_err(|e| compile_error(key, &e))?;
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), TemplateError> {
    if is_secret_key(key) {
        Ok(())
    } else {
        Err(TemplateError::Failed {
            key: key.to_string(),
            line: None,
            what: "not a valid Secret key (letters, digits, '-', '_' and '.', at most 253 characters, not '.' and not starting with '..')".into(),
        })
    }
}

/// Renders every template with `credentials`; fails without rendering
/// anything if a template fails or a key collides with an issued one.
pub fn render(integration: &Integration, credentials: &Credentials) -> Result<BTreeMap<String, String>, TemplateError> {
    let Some(spec) = of(integration) else {
        return Ok(BTreeMap::new());
    };
    let env = environment();
    let ctx = context(integration, credentials);
    let mut out = BTreeMap::new();
    for (key, source) in &spec.data {
        check_key(key)?;
        let template = env
            .template_from_named_str(key, source)
            .map_err(|e| compile_error(key, &e))?;
        let value = template
            .render(ctx.clone())
            .map_err(|e| render_error(key, &e, credentials))?;
        if value.len() > MAX_RENDERED_BYTES {
            return Err(TemplateError::Failed {
                key: key.clone(),
                line: None,
                what: format!("renders to more than {} KiB", MAX_RENDERED_BYTES / 1024),
            });
        }
        out.insert(key.clone(), value);
    }
    let conflicts: Vec<String> = out.keys().filter(|k| credentials.get(k).is_some()).cloned().collect();
    if !conflicts.is_empty() {
        return Err(TemplateError::Conflict { keys: conflicts });
    }
    Ok(out)
}

/// The rendered keys to write while a flow is unfinished (a checkpoint):
/// what the Secret held for each template key before, or an empty value
/// for a key it did not hold (Kubernetes wants a `kubernetes.io/basic-auth`
/// Secret's `username` or `password` present from its first write). The
/// templates are rendered when the flow completes; keys the flow holds
/// itself are left out.
pub fn carried(
    integration: &Integration,
    credentials: &Credentials,
    previous: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let Some(spec) = of(integration) else {
        return BTreeMap::new();
    };
    spec.data
        .keys()
        .filter(|k| is_secret_key(k) && credentials.get(k).is_none())
        .map(|k| (k.clone(), previous.get(k).cloned().unwrap_or_default()))
        .collect()
}

fn compile_error(key: &str, e: &minijinja::Error) -> TemplateError {
    // Compiling sees only the template's own text (part of the spec), no
    // value: its detail is safe to show.
    let mut what = e.kind().to_string();
    if let Some(detail) = e.detail() {
        what.push_str(": ");
        what.extend(detail.chars().take(MAX_DETAIL));
    }
    TemplateError::Failed {
        key: key.to_string(),
        line: e.line(),
        what,
    }
}

fn render_error(key: &str, e: &minijinja::Error, credentials: &Credentials) -> TemplateError {
    let available: Vec<&str> = credentials.iter().map(|(k, _)| k.as_str()).collect();
    let what = match e.kind() {
        ErrorKind::UndefinedError => format!(
            "undefined value: a name, or a key of credentials, that does not exist (credentials has {}; integration has name, namespace and provider); write `{{{{ credentials.x | default('') }}}}` for a key that may be missing",
            available.join(", ")
        ),
        ErrorKind::OutOfFuel => format!("the template does too much work (more than {FUEL} steps)"),
        ErrorKind::UnknownFilter => {
            "unknown filter (MiniJinja's built-in filters and b64encode are available)".to_string()
        }
        ErrorKind::UnknownFunction => "unknown function (range, dict and namespace are available)".to_string(),
        ErrorKind::InvalidOperation => {
            "invalid operation (for example arithmetic on text, or a filter given a value of the wrong type)"
                .to_string()
        }
        // The kind's own description is fixed text; the detail is not used.
        kind => kind.to_string(),
    };
    TemplateError::Failed {
        key: key.to_string(),
        line: e.line(),
        what,
    }
}

/// The keys templates may not use (every key a flow can write).
fn reserved() -> BTreeSet<&'static str> {
    crate::providers::issued_keys().collect()
}

fn cel_list() -> String {
    let quoted: Vec<String> = reserved().iter().map(|k| format!("'{k}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// CEL rule on `spec.target.template.data`: no key the flows write.
pub fn reserved_keys_rule() -> String {
    format!("!self.exists(k, k in {})", cel_list())
}

/// The message of [`reserved_keys_rule`]. A message expression naming
/// the key would be better, but the apiserver refuses its estimated cost
/// (map keys have no declared length).
pub fn reserved_keys_message() -> String {
    let keys: Vec<&str> = reserved().into_iter().collect();
    format!(
        "spec.target.template.data: a key is one the operator writes the issued credentials under; choose another name (taken: {})",
        keys.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IntegrationSpec, SecretReference, TargetSpec};
    use secrecy::SecretString;

    const TOKEN: &str = "canary-token-5d41/+=&x";

    fn integration(data: &[(&str, &str)]) -> Integration {
        let mut i = Integration::new(
            "acme",
            IntegrationSpec {
                provider: "auth".into(),
                secret_ref: SecretReference { name: "in".into() },
                target: Some(Box::new(TargetSpec {
                    template: Some(TemplateSpec {
                        data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    }),
                    ..TargetSpec::default()
                })),
                ..IntegrationSpec::default()
            },
        );
        i.metadata.namespace = Some("team-a".into());
        i
    }

    fn credentials() -> Credentials {
        Credentials::new(BTreeMap::from([
            ("access_token".to_string(), SecretString::from(TOKEN.to_string())),
            ("token_type".to_string(), SecretString::from("Bearer".to_string())),
            (
                "base_url".to_string(),
                SecretString::from("https://api.example.com/".to_string()),
            ),
        ]))
    }

    fn rendered(data: &[(&str, &str)]) -> Result<BTreeMap<String, String>, TemplateError> {
        render(&integration(data), &credentials())
    }

    fn failure(data: &[(&str, &str)]) -> String {
        let err = rendered(data).expect_err("the template must fail");
        let text = err.to_string();
        assert!(!text.contains(TOKEN), "a credential value in the message: {text}");
        text
    }

    #[test]
    fn renders_json_env_and_url_forms() {
        let out = rendered(&[
            (
                "config.json",
                r#"{"token": {{ credentials.access_token | tojson }}, "who": {{ integration.name | tojson }}}"#,
            ),
            (
                ".env",
                "API_TOKEN={{ credentials.access_token }}\nAPI_URL={{ credentials.base_url }}\n",
            ),
            (
                "url",
                "{{ credentials.base_url }}v1?key={{ credentials.access_token | urlencode }}",
            ),
            ("basic", "{{ ('u:' ~ credentials.access_token) | b64encode }}"),
            ("where", "{{ integration.namespace }}/{{ integration.provider }}"),
        ])
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&out["config.json"]).unwrap();
        assert_eq!(json["token"], TOKEN);
        assert_eq!(json["who"], "acme");
        assert_eq!(
            out[".env"],
            format!("API_TOKEN={TOKEN}\nAPI_URL=https://api.example.com/\n")
        );
        let url = url::Url::parse(&out["url"]).unwrap();
        let key = url.query_pairs().find(|(k, _)| k == "key").unwrap().1;
        assert_eq!(key, TOKEN, "the key survives a round trip through the URL");
        assert!(!out["url"].contains('+') && !out["url"].contains("&x"));
        use base64::Engine;
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(&out["basic"]).unwrap(),
            format!("u:{TOKEN}").as_bytes()
        );
        assert_eq!(out["where"], "team-a/auth");
    }

    #[test]
    fn json_escaping_keeps_hostile_values_inside_their_string() {
        let creds = Credentials::new(BTreeMap::from([(
            "access_token".to_string(),
            SecretString::from("a\"b\\c\n</x>'".to_string()),
        )]));
        let out = render(
            &integration(&[("c.json", r#"{"t": {{ credentials.access_token | tojson }}}"#)]),
            &creds,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&out["c.json"]).unwrap();
        assert_eq!(json["t"], "a\"b\\c\n</x>'");
        assert_eq!(json.as_object().unwrap().len(), 1);
    }

    #[test]
    fn a_syntax_error_names_the_key_and_the_line() {
        let text = failure(&[("ok", "fine"), ("app.env", "A=1\nB={{ credentials.access_token }\n")]);
        assert!(
            text.contains("spec.target.template.data[\"app.env\"], line 2"),
            "{text}"
        );
        assert!(text.contains("syntax error"), "{text}");
        let broken = integration(&[("app.env", "{% if %}")]);
        assert!(
            check(of(&broken).unwrap()).is_err(),
            "check finds it before any value exists"
        );
    }

    #[test]
    fn a_misspelt_key_fails_and_lists_the_keys_there_are() {
        let text = failure(&[("x", "line one\n{{ credentials.acess_token }}")]);
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("undefined value"), "{text}");
        assert!(text.contains("access_token, base_url, token_type"), "{text}");
        // Testing for a missing key, or defaulting it, is fine.
        let out = rendered(&[(
            "x",
            "{% if credentials.refresh_token %}r{% endif %}{{ credentials.refresh_token | default('-') }}",
        )])
        .unwrap();
        assert_eq!(out["x"], "-");
    }

    /// MiniJinja's own text for these errors quotes the value the template
    /// worked on; the condition message must not.
    #[test]
    fn an_error_on_a_value_never_quotes_the_value() {
        for template in [
            "{{ credentials.access_token * 99999999999999999999 }}",
            "{{ credentials.access_token | int + credentials.access_token }}",
            "{{ credentials.access_token + 1 }}",
            "{{ credentials.access_token() }}",
            "{{ credentials[credentials.access_token] }}",
            "{{ credentials.access_token.nope }}",
            "{{ range(credentials.access_token) }}",
            "{{ credentials.access_token | nofilter }}",
            "{{ credentials.access_token | tojson(indent=credentials.access_token) }}",
        ] {
            let text = failure(&[("k", template)]);
            assert!(
                text.starts_with("spec.target.template.data[\"k\"]"),
                "{template}: {text}"
            );
        }
        // A numeric value (an integration id, a PIN) is quoted by
        // MiniJinja's own text for a failed calculation; not by ours.
        let numeric = "48151623420815";
        let creds = Credentials::new(BTreeMap::from([(
            "integration_id".to_string(),
            SecretString::from(numeric.to_string()),
        )]));
        let template = "id={{ credentials.integration_id | int // 0 }}";
        let i = integration(&[("k", template)]);
        let theirs = environment()
            .render_str(template, context(&i, &creds))
            .expect_err("division by zero");
        assert!(
            format!("{theirs:#}").contains(numeric),
            "premise: MiniJinja quotes the value ({theirs:#})"
        );
        let ours = render(&i, &creds).unwrap_err().to_string();
        assert!(!ours.contains(numeric), "{ours}");
        assert!(ours.contains("[\"k\"], line 1: invalid operation"), "{ours}");
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let text = failure(&[(
            "k",
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
        )]);
        assert!(text.contains("too much work"), "{text}");
        let text = failure(&[("k", "{{ 'x' * 100000000 }}")]);
        assert!(text.contains("too much work") || text.contains("more than"), "{text}");
    }

    #[test]
    fn a_large_output_is_refused() {
        let text = failure(&[("k", "{% for i in range(3000) %}0123456789{% endfor %}")]);
        assert!(text.contains("more than 24 KiB"), "{text}");
    }

    #[test]
    fn nothing_but_credentials_and_the_integration_is_reachable() {
        for template in [
            "{% include 'x' %}",
            "{% import 'x' as y %}",
            "{% extends 'x' %}",
            "{{ debug() }}",
            "{{ env }}",
            "{{ self }}",
        ] {
            let text = failure(&[("k", template)]);
            assert!(text.contains("[\"k\"]"), "{template}: {text}");
        }
    }

    #[test]
    fn a_collision_with_an_issued_key_is_refused() {
        let err = rendered(&[("token_type", "x"), ("fine", "y")]).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Conflict {
                keys: vec!["token_type".into()]
            }
        );
        assert!(err.to_string().contains("token_type"));
    }

    #[test]
    fn invalid_secret_keys_are_refused() {
        for key in ["", ".", "..x", "a/b", "a b", &"k".repeat(254)] {
            assert!(!is_secret_key(key), "{key:?}");
        }
        for key in ["config.json", ".env", "a-b_c.d", "A1"] {
            assert!(is_secret_key(key), "{key:?}");
        }
        let text = failure(&[("a/b", "x")]);
        assert!(text.contains("not a valid Secret key"), "{text}");
    }

    #[test]
    fn carried_keys_keep_old_values_and_fill_new_ones_empty() {
        let i = integration(&[("username", "{{ credentials.client_id }}"), ("password", "p")]);
        let previous = BTreeMap::from([("username".to_string(), "old".to_string())]);
        let carried = carried(&i, &credentials(), &previous);
        assert_eq!(carried["username"], "old");
        assert_eq!(carried["password"], "");
    }

    #[test]
    fn the_reserved_keys_rule_lists_every_issued_key() {
        let rule = reserved_keys_rule();
        for key in [
            "access_token",
            "client_secret",
            "element_token",
            "connect_link",
            "partner_post_sent_at",
        ] {
            assert!(rule.contains(&format!("'{key}'")), "{key} missing from {rule}");
        }
    }
}
