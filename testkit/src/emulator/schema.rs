//! Validation of custom resources against a CRD version's `openAPIV3Schema`,
//! the way kube-apiserver does it for a create or update: defaulting, pruning
//! of unknown fields, OpenAPI value validation and `x-kubernetes-validations`
//! CEL rules, with the apiserver's error reasons, field paths and messages.
//!
//! Order of work (as in kube-apiserver): (1) structural defaulting and pruning,
//! which mutate the object in place; (2) OpenAPI validation; (3) CEL rules,
//! skipped when (2) produced a "blocking" error (type, required, enum, too
//! long, too many), in which case a single "some validation rules were not
//! checked" error is added instead.
//!
//! Supported schema keywords:
//! - `type` (`object`, `array`, `string`, `integer`, `number`, `boolean`), `nullable`
//! - `properties`, `required`, `additionalProperties` (schema or `true`),
//!   `minProperties`, `maxProperties`
//! - `items`, `minItems`, `maxItems`, `uniqueItems`, `x-kubernetes-list-type`
//!   (`set`/`map` duplicates, `x-kubernetes-list-map-keys`)
//! - `enum`, `pattern` (Rust `regex` syntax, which accepts the RE2 patterns the
//!   apiserver accepts), `minLength`, `maxLength` (counted in characters)
//! - `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (OpenAPI 3.0
//!   booleans), `multipleOf`
//! - `format`: `date-time`, `date`, `byte`, `uuid`, `ipv4`, `ipv6`, `cidr`,
//!   `hostname`, `email` — formats the apiserver's registry checks; unknown
//!   formats (`int32`, `int64`, `duration`, ...) are accepted as the
//!   apiserver does
//! - `default` (applied in place to absent fields and to `null` in
//!   non-nullable fields; non-nullable `null`s without a default are dropped)
//! - `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//!   `x-kubernetes-embedded-resource` (keeps and requires `apiVersion`/`kind`,
//!   keeps `metadata`)
//! - `allOf`, `anyOf`, `oneOf`, `not` as value validations (they never prune
//!   or default, as in structural schemas)
//!
//! At the root, `apiVersion` and `kind` are skipped and `metadata` is only
//! checked for unknown `ObjectMeta` fields and against a schema for
//! `metadata.name` if the CRD declares one.
//!
//! CEL (`x-kubernetes-validations`: `rule`, `message`, `messageExpression`,
//! `fieldPath`, `reason`): evaluated with the `cel` crate at each schema node,
//! `self` bound to the node's value and `oldSelf` to the correlated old value
//! on update (through object properties, map values and
//! `x-kubernetes-list-type: map` items). Rules using `oldSelf` are transition
//! rules and are skipped on create or when there is no correlated old value.
//! Available: the CEL standard library (`has()`, `size()`, `matches()`,
//! `startsWith()`, `endsWith()`, `contains()`, `in`, `all`, `exists`,
//! `exists_one`, `map`, `filter`, arithmetic, comparison, conversions,
//! `duration()`, `timestamp()`) plus the `cel` crate's strings extension
//! (`lowerAscii`, `upperAscii`, `trim`, `split`, `join`, `replace`,
//! `indexOf`, `substring`, ...) and lists extension. Not available: the
//! Kubernetes-specific libraries (`isURL`, `url()`, `quantity()`, `ip()`,
//! `cidr()`, `format.dns1123Label()`...), cost limits, and typing of
//! `date-time`/`duration` strings as timestamps/durations (they stay strings).
//! Compile and evaluation errors become `FieldValueInvalid` errors, like the
//! apiserver's "rule compile error" / "... evaluating rule" errors.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

/// One validation failure, shaped like a `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, ...
    pub reason: String,
    /// JSON path of the offending field, e.g. `spec.refresh.renewBefore`.
    pub field: String,
    /// Human-readable message, as the API server words it in a `StatusCause`
    /// (without the field path, e.g. `Required value`).
    pub message: String,
}

impl fmt::Display for FieldError {
    /// `field: message`, the form the apiserver joins into `Status.message`
    /// (`Integration.integration-operator.io "x" is invalid: <this>, <this>`).
    /// A field-less error renders as `<nil>: message`, as Go's field.Error does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason == REASON_UNKNOWN {
            return f.write_str(&self.message);
        }
        let field = if self.field.is_empty() { "<nil>" } else { &self.field };
        write!(f, "{field}: {}", self.message)
    }
}

/// Reason of an unknown field reported in strict mode. The request path turns
/// these into a 400 `strict decoding error: unknown field "spec.x", ...`.
pub const REASON_UNKNOWN: &str = "FieldValueUnknown";
const REASON_INVALID: &str = "FieldValueInvalid";
const REASON_REQUIRED: &str = "FieldValueRequired";
const REASON_NOT_SUPPORTED: &str = "FieldValueNotSupported";
const REASON_TYPE_INVALID: &str = "FieldValueTypeInvalid";
const REASON_TOO_LONG: &str = "FieldValueTooLong";
const REASON_TOO_MANY: &str = "FieldValueTooMany";
const REASON_DUPLICATE: &str = "FieldValueDuplicate";
const REASON_FORBIDDEN: &str = "FieldValueForbidden";

/// Everything [`check`] found: the pruned unknown fields and the validation errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Paths of unknown fields, e.g. `spec.x`, `spec.items[0].y`; already pruned
    /// from the object. The request path reports them as strict errors or
    /// warnings depending on `fieldValidation`.
    pub unknown_fields: Vec<String>,
    /// OpenAPI and CEL validation errors (422 when non-empty).
    pub errors: Vec<FieldError>,
}

/// Validates `obj` against `schema` (the `openAPIV3Schema` of one CRD version).
/// `old` is the stored object on update (for CEL transition rules using `oldSelf`).
/// Defaults are applied and unknown fields are pruned from `obj` in place.
/// When `strict` is set and there are unknown fields, only those are returned,
/// as `FieldValueUnknown` errors (the apiserver fails decoding before it
/// validates); otherwise the validation errors are returned.
pub fn validate(schema: &Value, obj: &mut Value, old: Option<&Value>, strict: bool) -> Result<(), Vec<FieldError>> {
    let report = check(schema, obj, old);
    if strict && !report.unknown_fields.is_empty() {
        return Err(report
            .unknown_fields
            .iter()
            .map(|f| FieldError {
                reason: REASON_UNKNOWN.into(),
                field: f.clone(),
                message: format!("unknown field \"{f}\""),
            })
            .collect());
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(report.errors)
    }
}

/// Defaults, prunes and validates `obj` in place and reports both unknown
/// fields and validation errors (for `fieldValidation=Warn`).
pub fn check(schema: &Value, obj: &mut Value, old: Option<&Value>) -> Report {
    let mut unknown = Vec::new();
    default_and_prune_at(schema, obj, &mut Vec::new(), &mut unknown, true);
    let mut errors = Vec::new();
    validate_node(schema, obj, &mut Vec::new(), &mut errors, true);
    if errors.iter().any(is_blocking) {
        if has_rules(schema) {
            errors.push(invalid_at(
                "",
                &Value::Null,
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        }
    } else {
        cel_node(schema, obj, old, &mut Vec::new(), &mut errors, true);
    }
    Report {
        unknown_fields: unknown,
        errors,
    }
}

/// Applies defaults and prunes unknown fields in place (what the apiserver
/// does when it reads a custom resource from storage). Returns the pruned paths.
pub fn default_and_prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    default_and_prune_at(schema, obj, &mut Vec::new(), &mut unknown, true);
    unknown
}

// ---------------------------------------------------------------- paths

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// The name kube-openapi uses inside messages ("spec.x in body ...").
fn body_name(path: &[Seg]) -> String {
    let p = render(path);
    if p.is_empty() { "body".into() } else { p }
}

// ---------------------------------------------------------------- schema helpers

fn kw<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema.get(key)
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// Fields of `ObjectMeta`: anything else under `metadata` is unknown.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn has_rules(schema: &Value) -> bool {
    let Some(obj) = schema.as_object() else { return false };
    if obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        return true;
    }
    properties(schema).is_some_and(|p| p.values().any(has_rules))
        || obj.get("items").is_some_and(has_rules)
        || obj.get("additionalProperties").is_some_and(has_rules)
}

// ---------------------------------------------------------------- defaulting and pruning

fn default_and_prune_at(schema: &Value, value: &mut Value, path: &mut Vec<Seg>, unknown: &mut Vec<String>, root: bool) {
    match value {
        Value::Object(map) => {
            let props = properties(schema);
            // Defaults first (they are pruned and defaulted further below, like
            // any other value); non-nullable nulls are dropped or defaulted.
            if let Some(props) = props {
                for (k, ps) in props {
                    if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    match map.get(k) {
                        Some(Value::Null) if !flag(ps, "nullable") => match ps.get("default") {
                            Some(d) => {
                                map.insert(k.clone(), d.clone());
                            }
                            None => {
                                map.remove(k);
                            }
                        },
                        None => {
                            if let Some(d) = ps.get("default") {
                                map.insert(k.clone(), d.clone());
                            }
                        }
                        _ => {}
                    }
                }
            }
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if (root || embedded) && k == "metadata" {
                    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                        let mkeys: Vec<String> = meta.keys().cloned().collect();
                        for mk in mkeys {
                            if !OBJECT_META_FIELDS.contains(&mk.as_str()) {
                                meta.remove(&mk);
                                path.push(Seg::Key("metadata".into()));
                                path.push(Seg::Key(mk));
                                unknown.push(render(path));
                                path.pop();
                                path.pop();
                            }
                        }
                    }
                    continue;
                }
                let child_schema = match props.and_then(|p| p.get(&k)) {
                    Some(ps) => Some(ps),
                    None => match additional {
                        Some(s @ Value::Object(_)) => Some(s),
                        Some(Value::Bool(true)) => None,
                        _ if preserve => None,
                        _ => {
                            map.remove(&k);
                            path.push(Seg::Key(k));
                            unknown.push(render(path));
                            path.pop();
                            continue;
                        }
                    },
                };
                if let (Some(cs), Some(v)) = (child_schema, map.get_mut(&k)) {
                    path.push(Seg::Key(k));
                    default_and_prune_at(cs, v, path, unknown, false);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    if item.is_null()
                        && !flag(is, "nullable")
                        && let Some(d) = is.get("default")
                    {
                        *item = d.clone();
                    }
                    path.push(Seg::Index(i));
                    default_and_prune_at(is, item, path, unknown, false);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------- value validation

/// `Invalid value: <v>` rendering of Go's field.Error: strings quoted,
/// numbers and booleans bare, null as "null".
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "\"null\"".into(),
        Value::String(s) => quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn err(reason: &str, path: &[Seg], message: String) -> FieldError {
    FieldError {
        reason: reason.into(),
        field: render(path),
        message,
    }
}

fn invalid_at(field: &str, value: &Value, detail: &str) -> FieldError {
    FieldError {
        reason: REASON_INVALID.into(),
        field: field.into(),
        message: format!("Invalid value: {}: {detail}", go_value(value)),
    }
}

fn invalid(path: &[Seg], value: &Value, detail: String) -> FieldError {
    invalid_at(&render(path), value, &detail)
}

fn is_blocking(e: &FieldError) -> bool {
    matches!(
        e.reason.as_str(),
        REASON_NOT_SUPPORTED | REASON_REQUIRED | REASON_TOO_LONG | REASON_TOO_MANY | REASON_TYPE_INVALID
    )
}

/// JSON type name of a value, as kube-openapi names it in type errors.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match (expected, v) {
        ("object", Value::Object(_)) | ("array", Value::Array(_)) | ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => is_integer(n),
        _ => false,
    }
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

fn validate_node(schema: &Value, value: &Value, path: &mut Vec<Seg>, errs: &mut Vec<FieldError>, root: bool) {
    if !schema.is_object() {
        return;
    }
    let name = body_name(path);
    if value.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if let Some(t) = schema_type(schema) {
            errs.push(err(
                REASON_TYPE_INVALID,
                path,
                format!("Invalid value: \"null\": {name} in body must be of type {t}: \"null\""),
            ));
            return;
        }
    }
    if flag(schema, "x-kubernetes-int-or-string") && !(type_matches("integer", value) || value.is_string()) {
        let actual = json_type(value);
        errs.push(err(
            REASON_TYPE_INVALID,
            path,
            format!("Invalid value: \"{actual}\": {name} in body must be of type integer-or-string: \"{actual}\""),
        ));
        return;
    }
    if let Some(t) = schema_type(schema)
        && !type_matches(t, value)
    {
        let actual = json_type(value);
        errs.push(err(
            REASON_TYPE_INVALID,
            path,
            format!("Invalid value: \"{actual}\": {name} in body must be of type {t}: \"{actual}\""),
        ));
        return;
    }
    if let Some(allowed) = kw(schema, "enum").and_then(Value::as_array)
        && !allowed.iter().any(|a| json_eq(a, value))
    {
        let values: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => quote(s),
                other => quote(&other.to_string()),
            })
            .collect();
        errs.push(err(
            REASON_NOT_SUPPORTED,
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                values.join(", ")
            ),
        ));
    }
    match value {
        Value::String(s) => validate_string(schema, s, value, path, &name, errs),
        Value::Number(n) => validate_number(schema, n, value, path, &name, errs),
        Value::Array(items) => validate_array(schema, items, path, &name, errs),
        Value::Object(map) => validate_object(schema, map, path, &name, errs, root),
        _ => {}
    }
    validate_combinators(schema, value, path, &name, errs);
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn validate_string(schema: &Value, s: &str, value: &Value, path: &[Seg], name: &str, errs: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = kw(schema, "maxLength").and_then(Value::as_u64)
        && len > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        errs.push(err(
            REASON_TOO_LONG,
            path,
            format!("Too long: may not be more than {max} {unit}"),
        ));
    }
    if let Some(min) = kw(schema, "minLength").and_then(Value::as_u64)
        && len < min
    {
        errs.push(invalid(
            path,
            value,
            format!("{name} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = kw(schema, "pattern").and_then(Value::as_str) {
        match compiled_pattern(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => errs.push(invalid(path, value, format!("{name} in body should match '{pattern}'"))),
            Err(e) => errs.push(invalid(
                path,
                value,
                format!("{name} in body has an invalid pattern '{pattern}': {e}"),
            )),
        }
    }
    if let Some(format) = kw(schema, "format").and_then(Value::as_str)
        && !format_ok(format, s)
    {
        errs.push(invalid(
            path,
            value,
            format!("{name} in body must be of type {format}: {}", quote(s)),
        ));
    }
}

/// The formats the apiserver's strfmt registry checks; others always pass.
fn format_ok(format: &str, s: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => compiled_pattern(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
            .is_ok_and(|r| r.is_match(s)),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s
            .split_once('/')
            .is_some_and(|(ip, bits)| match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
                (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
                _ => false,
            }),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 255
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && d.contains('.') && !d.contains('@')),
        _ => true,
    }
}

fn validate_number(
    schema: &Value,
    n: &serde_json::Number,
    value: &Value,
    path: &[Seg],
    name: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(x) = n.as_f64() else { return };
    let show = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    if let Some(min_v) = kw(schema, "minimum")
        && let Some(min) = num(Some(min_v))
    {
        if flag(schema, "exclusiveMinimum") {
            if x <= min {
                errs.push(invalid(
                    path,
                    value,
                    format!("{name} in body should be greater than {}", show(min_v)),
                ));
            }
        } else if x < min {
            errs.push(invalid(
                path,
                value,
                format!("{name} in body should be greater than or equal to {}", show(min_v)),
            ));
        }
    }
    if let Some(max_v) = kw(schema, "maximum")
        && let Some(max) = num(Some(max_v))
    {
        if flag(schema, "exclusiveMaximum") {
            if x >= max {
                errs.push(invalid(
                    path,
                    value,
                    format!("{name} in body should be less than {}", show(max_v)),
                ));
            }
        } else if x > max {
            errs.push(invalid(
                path,
                value,
                format!("{name} in body should be less than or equal to {}", show(max_v)),
            ));
        }
    }
    if let Some(m_v) = kw(schema, "multipleOf")
        && let Some(m) = num(Some(m_v))
        && m > 0.0
    {
        let q = x / m;
        if (q - q.round()).abs() > 1e-9 {
            errs.push(invalid(
                path,
                value,
                format!("{name} in body should be a multiple of {}", show(m_v)),
            ));
        }
    }
}

fn validate_array(schema: &Value, items: &[Value], path: &mut Vec<Seg>, name: &str, errs: &mut Vec<FieldError>) {
    let len = items.len() as u64;
    if let Some(max) = kw(schema, "maxItems").and_then(Value::as_u64)
        && len > max
    {
        errs.push(err(
            REASON_TOO_MANY,
            path,
            format!("Too many: {len}: must have at most {max} items"),
        ));
    }
    if let Some(min) = kw(schema, "minItems").and_then(Value::as_u64)
        && len < min
    {
        errs.push(invalid(
            path,
            &Value::from(len),
            format!("{name} in body should have at least {min} items"),
        ));
    }
    if flag(schema, "uniqueItems") && has_duplicates(items.iter()) {
        errs.push(invalid(
            path,
            &Value::String(String::new()),
            format!("{name} in body shouldn't contain duplicates"),
        ));
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if seen.contains(&item) {
                    path.push(Seg::Index(i));
                    errs.push(err(
                        REASON_DUPLICATE,
                        path,
                        format!("Duplicate value: {}", go_value(item)),
                    ));
                    path.pop();
                } else {
                    seen.push(item);
                }
            }
        }
        Some("map") => {
            let keys = list_map_keys(schema);
            let mut seen: Vec<Vec<Value>> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let k: Vec<Value> = keys
                    .iter()
                    .map(|key| item.get(key).cloned().unwrap_or(Value::Null))
                    .collect();
                if seen.contains(&k) {
                    let shown: Map<String, Value> = keys.iter().cloned().zip(k.iter().cloned()).collect();
                    path.push(Seg::Index(i));
                    errs.push(err(
                        REASON_DUPLICATE,
                        path,
                        format!("Duplicate value: {}", Value::Object(shown)),
                    ));
                    path.pop();
                } else {
                    seen.push(k);
                }
            }
        }
        _ => {}
    }
    if let Some(is) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            path.push(Seg::Index(i));
            validate_node(is, item, path, errs, false);
            path.pop();
        }
    }
}

fn list_map_keys(schema: &Value) -> Vec<String> {
    schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|ks| ks.iter().filter_map(|k| k.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn has_duplicates<'a>(items: impl Iterator<Item = &'a Value>) -> bool {
    let mut seen = HashSet::new();
    for item in items {
        if !seen.insert(item.to_string()) {
            return true;
        }
    }
    false
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &mut Vec<Seg>,
    name: &str,
    errs: &mut Vec<FieldError>,
    root: bool,
) {
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    let count = map.len() as u64;
    if let Some(max) = kw(schema, "maxProperties").and_then(Value::as_u64)
        && count > max
    {
        errs.push(err(
            REASON_TOO_MANY,
            path,
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
    if let Some(min) = kw(schema, "minProperties").and_then(Value::as_u64)
        && count < min
    {
        errs.push(invalid(
            path,
            &Value::from(count),
            format!("{name} in body should have at least {min} properties"),
        ));
    }
    if let Some(required) = kw(schema, "required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if root && matches!(r, "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if !map.contains_key(r) {
                path.push(Seg::Key(r.into()));
                errs.push(err(REASON_REQUIRED, path, "Required value".into()));
                path.pop();
            }
        }
    }
    if embedded {
        for r in ["apiVersion", "kind"] {
            if map.get(r).and_then(Value::as_str).is_none_or(str::is_empty) {
                path.push(Seg::Key(r.into()));
                errs.push(err(REASON_REQUIRED, path, "Required value: must not be empty".into()));
                path.pop();
            }
        }
    }
    let props = properties(schema);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in map {
        if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if (root || embedded) && k == "metadata" {
            // Only a schema for metadata.name is honoured (as the apiserver does).
            if let (Some(ns), Some(n)) = (
                props
                    .and_then(|p| p.get("metadata"))
                    .and_then(|m| properties(m))
                    .and_then(|p| p.get("name")),
                v.get("name"),
            ) {
                path.push(Seg::Key("metadata".into()));
                path.push(Seg::Key("name".into()));
                validate_node(ns, n, path, errs, false);
                path.pop();
                path.pop();
            }
            continue;
        }
        let child = props.and_then(|p| p.get(k)).or(additional);
        if let Some(cs) = child {
            path.push(Seg::Key(k.clone()));
            validate_node(cs, v, path, errs, false);
            path.pop();
        }
    }
}

/// Sub-schema check used by anyOf/oneOf/not: errors of `schema` against `value`.
fn sub_errors(schema: &Value, value: &Value, path: &[Seg]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut p = path.to_vec();
    validate_node(schema, value, &mut p, &mut errs, false);
    errs
}

fn validate_combinators(schema: &Value, value: &Value, path: &mut Vec<Seg>, name: &str, errs: &mut Vec<FieldError>) {
    if let Some(all) = kw(schema, "allOf").and_then(Value::as_array) {
        for s in all {
            validate_node(s, value, path, errs, false);
        }
    }
    if let Some(any) = kw(schema, "anyOf").and_then(Value::as_array)
        && !any.is_empty()
    {
        let results: Vec<Vec<FieldError>> = any.iter().map(|s| sub_errors(s, value, path)).collect();
        if !results.iter().any(Vec::is_empty) {
            errs.push(invalid(
                path,
                &Value::String(String::new()),
                format!("{name} in body must validate at least one schema (anyOf)"),
            ));
            if let Some(best) = results.into_iter().min_by_key(Vec::len) {
                errs.extend(best);
            }
        }
    }
    if let Some(one) = kw(schema, "oneOf").and_then(Value::as_array)
        && !one.is_empty()
    {
        let results: Vec<Vec<FieldError>> = one.iter().map(|s| sub_errors(s, value, path)).collect();
        let passing = results.iter().filter(|r| r.is_empty()).count();
        if passing != 1 {
            errs.push(invalid(
                path,
                &Value::String(String::new()),
                format!("{name} in body must validate one and only one schema (oneOf)"),
            ));
            if passing == 0
                && let Some(best) = results.into_iter().min_by_key(Vec::len)
            {
                errs.extend(best);
            }
        }
    }
    if let Some(not) = kw(schema, "not")
        && not.is_object()
        && sub_errors(not, value, path).is_empty()
    {
        errs.push(invalid(
            path,
            &Value::String(String::new()),
            format!("{name} in body should not validate the schema provided"),
        ));
    }
}

// ---------------------------------------------------------------- CEL

fn cel_env() -> Option<Arc<cel::Env>> {
    static ENV: OnceLock<Option<Arc<cel::Env>>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        cel::extensions::strings(&mut env).ok()?;
        cel::extensions::lists(&mut env).ok()?;
        Some(Arc::new(env))
    })
    .clone()
}

/// JSON to CEL, typed by the schema: `number` fields are doubles even when
/// written as `1`, integers are ints.
fn to_cel(schema: &Value, v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if schema_type(schema) == Some("number") {
                cel::Value::Float(n.as_f64().unwrap_or(0.0))
            } else if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let is = schema.get("items").unwrap_or(&Value::Null);
            cel::Value::List(Arc::new(items.iter().map(|i| to_cel(is, i)).collect()))
        }
        Value::Object(map) => {
            let props = properties(schema);
            let additional = schema.get("additionalProperties").unwrap_or(&Value::Null);
            let m: std::collections::HashMap<cel::objects::Key, cel::Value> = map
                .iter()
                .map(|(k, val)| {
                    let s = props.and_then(|p| p.get(k)).unwrap_or(additional);
                    (cel::objects::Key::String(Arc::new(k.clone())), to_cel(s, val))
                })
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(m) })
        }
    }
}

fn cel_node(
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &mut Vec<Seg>,
    errs: &mut Vec<FieldError>,
    root: bool,
) {
    if value.is_null() || !schema.is_object() {
        return;
    }
    if let Some(rules) = schema.get("x-kubernetes-validations").and_then(Value::as_array) {
        for rule in rules {
            if let Some(e) = eval_rule(schema, rule, value, old, path) {
                errs.push(e);
            }
        }
    }
    match value {
        Value::Object(map) => {
            let props = properties(schema);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
                    let o = old.and_then(|o| o.get(k));
                    path.push(Seg::Key(k.clone()));
                    cel_node(cs, v, o, path, errs, false);
                    path.pop();
                }
            }
        }
        Value::Array(items) => {
            let Some(is) = schema.get("items") else { return };
            let keys = list_map_keys(schema);
            let is_map =
                schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") && !keys.is_empty();
            for (i, item) in items.iter().enumerate() {
                // Only map lists correlate items with the old list (by key), as in the apiserver.
                let o = if is_map {
                    old.and_then(Value::as_array)
                        .and_then(|olds| olds.iter().find(|oi| keys.iter().all(|k| oi.get(k) == item.get(k))))
                } else {
                    None
                };
                path.push(Seg::Index(i));
                cel_node(is, item, o, path, errs, false);
                path.pop();
            }
        }
        _ => {}
    }
}

/// How many compiled patterns or rules are kept; schemas are few, so this
/// only bounds what arbitrary input could make the emulator hold.
const COMPILED_CACHE_LIMIT: usize = 4096;

/// A compile cache keyed by source text. Compiling a pattern or a CEL rule
/// costs far more than evaluating it, and every write of a custom resource
/// validates the same few: compiled per request, they were a fifth of the
/// emulator's CPU in `make bench`.
struct Compiled<T>(OnceLock<Mutex<HashMap<String, CompileResult<T>>>>);

/// A compiled pattern or rule, or why it did not compile.
type CompileResult<T> = Result<Arc<T>, String>;

impl<T> Compiled<T> {
    const fn new() -> Self {
        Compiled(OnceLock::new())
    }

    fn get(&self, source: &str, compile: impl FnOnce() -> Result<T, String>) -> CompileResult<T> {
        let map = self.0.get_or_init(Mutex::default);
        if let Some(hit) = map.lock().unwrap_or_else(|p| p.into_inner()).get(source) {
            return hit.clone();
        }
        let made = compile().map(Arc::new);
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= COMPILED_CACHE_LIMIT {
            map.clear();
        }
        map.insert(source.to_string(), made.clone());
        made
    }
}

fn compiled_pattern(pattern: &str) -> CompileResult<regex::Regex> {
    static PATTERNS: Compiled<regex::Regex> = Compiled::new();
    PATTERNS.get(pattern, || regex::Regex::new(pattern).map_err(|e| e.to_string()))
}

fn compiled_rule(env: &cel::Env, source: &str) -> CompileResult<cel::Program> {
    static RULES: Compiled<cel::Program> = Compiled::new();
    RULES.get(source, || {
        // The parser is third-party code fed with user data: a panic there
        // must become an error, never take the emulator down.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.compile(source))) {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the CEL parser panicked".into()),
        }
    })
}

fn eval_rule(schema: &Value, rule: &Value, value: &Value, old: Option<&Value>, path: &[Seg]) -> Option<FieldError> {
    let source = rule.get("rule").and_then(Value::as_str)?;
    let node_type = schema_type(schema).unwrap_or("");
    let fail_path = || {
        let mut p = path.to_vec();
        if let Some(fp) = rule.get("fieldPath").and_then(Value::as_str) {
            p.extend(parse_field_path(fp));
        }
        p
    };
    let invalid_here = |detail: String| FieldError {
        reason: REASON_INVALID.into(),
        field: render(path),
        message: format!("Invalid value: {}: {detail}", quote(node_type)),
    };
    let Some(env) = cel_env() else {
        return Some(invalid_here("rule compile error: CEL environment unavailable".into()));
    };
    // The parser and interpreter are third-party code fed with user data: a
    // panic there must become an error, never take the emulator down.
    let program = match compiled_rule(&env, source) {
        Ok(p) => p,
        Err(e) => return Some(invalid_here(format!("rule compile error: {e}"))),
    };
    let transition = program.references().has_variable("oldSelf");
    if transition && old.is_none() {
        return None;
    }
    let run = |prog: &cel::Program| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut ctx = cel::Context::with_env(env.clone());
            ctx.add_variable_from_value("self", to_cel(schema, value));
            if let Some(o) = old {
                ctx.add_variable_from_value("oldSelf", to_cel(schema, o));
            }
            prog.execute(&ctx)
        }))
    };
    let rule_text = || match rule.get("message").and_then(Value::as_str).map(str::trim) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => format!("failed rule: {}", source.trim()),
    };
    match run(&program) {
        Ok(Ok(cel::Value::Bool(true))) => None,
        Ok(Ok(cel::Value::Bool(false))) => {
            let mut message = rule_text();
            if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
                && let Ok(p) = compiled_rule(&env, expr)
                && let Ok(Ok(cel::Value::String(s))) = run(&p)
                && !s.trim().is_empty()
            {
                message = s.to_string();
            }
            let p = fail_path();
            Some(match rule.get("reason").and_then(Value::as_str) {
                Some(REASON_FORBIDDEN) => err(REASON_FORBIDDEN, &p, format!("Forbidden: {message}")),
                Some(REASON_REQUIRED) => err(REASON_REQUIRED, &p, format!("Required value: {message}")),
                Some(REASON_DUPLICATE) => err(REASON_DUPLICATE, &p, format!("Duplicate value: {}", quote(&message))),
                _ => FieldError {
                    reason: REASON_INVALID.into(),
                    field: render(&p),
                    message: format!("Invalid value: {}: {message}", quote(node_type)),
                },
            })
        }
        Ok(Ok(other)) => Some(invalid_here(format!(
            "rule evaluated to {:?}, not a bool, evaluating rule: {}",
            other.type_of(),
            rule_text()
        ))),
        Ok(Err(e)) => Some(invalid_here(format!("{e} evaluating rule: {}", rule_text()))),
        Err(_) => Some(invalid_here(format!(
            "the CEL interpreter panicked evaluating rule: {}",
            rule_text()
        ))),
    }
}

/// `fieldPath` of a rule: `.a.b`, `.a['b.c']`, `.a[0]` relative to the node.
fn parse_field_path(fp: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut rest = fp.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                out.push(Seg::Key(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = r[..end].trim_matches(|c| c == '\'' || c == '"');
            match inner.parse::<usize>() {
                Ok(i) => out.push(Seg::Index(i)),
                Err(_) => out.push(Seg::Key(inner.to_string())),
            }
            rest = &r[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Seg::Key(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXACTLY_ONE: &str =
        "[has(self.clientCredentials), has(self.apiKey), has(self.partnerIntegration)].filter(x, x).size() == 1";

    /// A cut-down Integration schema with the same shapes as the operator's CRD.
    fn integration_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["provider", "secretRef"],
                    "x-kubernetes-validations": [{
                        "rule": EXACTLY_ONE,
                        "message": "exactly one flow block must be set",
                        "reason": "FieldValueInvalid"
                    }],
                    "properties": {
                        "provider": {"type": "string", "minLength": 1, "maxLength": 10, "pattern": "^[a-z0-9-]+$"},
                        "secretRef": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
                        "clientCredentials": {"type": "object", "nullable": true, "properties": {
                            "scopes": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "minItems": 1},
                            "audience": {"type": "string", "nullable": true}
                        }},
                        "apiKey": {"type": "object", "nullable": true, "properties": {"header": {"type": "string", "default": "Authorization"}}},
                        "partnerIntegration": {"type": "object", "nullable": true, "properties": {"appId": {"type": "string"}}},
                        "refresh": {"type": "object", "properties": {
                            "renewBefore": {"type": "string", "pattern": "^(([0-9]+(ms|s|m|h))+|[0-9]{1,2}%)$", "default": "10m"},
                            "jitter": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": true},
                            "attempts": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 10}
                        }},
                        "target": {"type": "object", "nullable": true, "properties": {
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 2},
                            "type": {"type": "string", "enum": ["Opaque", "kubernetes.io/basic-auth"]}
                        }}
                    }
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        })
    }

    fn cr(spec: Value) -> Value {
        json!({"apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
               "metadata": {"name": "x", "namespace": "ns"}, "spec": spec})
    }

    fn ok_spec() -> Value {
        json!({"provider": "sr", "secretRef": {"name": "in"}, "clientCredentials": {"scopes": ["read"]}})
    }

    fn errors_of(spec: Value) -> Vec<FieldError> {
        let mut obj = cr(spec);
        validate(&integration_schema(), &mut obj, None, false).expect_err("expected validation errors")
    }

    /// The single error for `spec`, ignoring the "CEL rules not checked" note
    /// that blocking errors add (asserted in `wrong_type_is_type_invalid`).
    fn only(spec: Value) -> FieldError {
        let errs: Vec<FieldError> = errors_of(spec)
            .into_iter()
            .filter(|e| !e.message.contains("some validation rules were not checked"))
            .collect();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn valid_object_passes_and_gets_defaults() {
        let mut obj = cr(json!({"provider": "sr", "secretRef": {"name": "in"}, "apiKey": {}, "refresh": {}}));
        validate(&integration_schema(), &mut obj, None, true).unwrap();
        assert_eq!(obj["spec"]["refresh"]["renewBefore"], "10m");
        assert_eq!(obj["spec"]["apiKey"]["header"], "Authorization");
        assert_eq!(obj["metadata"]["name"], "x", "metadata is kept");
    }

    #[test]
    fn required_missing() {
        let e = only(json!({"provider": "sr", "secretRef": {}, "apiKey": {}}));
        assert_eq!(e.reason, "FieldValueRequired");
        assert_eq!(e.field, "spec.secretRef.name");
        assert_eq!(e.message, "Required value");
        assert_eq!(e.to_string(), "spec.secretRef.name: Required value");
    }

    #[test]
    fn wrong_type_is_type_invalid() {
        let errs = errors_of(json!({"provider": 5, "secretRef": {"name": "in"}, "apiKey": {}}));
        assert_eq!(errs[0].reason, "FieldValueTypeInvalid");
        assert_eq!(errs[0].field, "spec.provider");
        assert_eq!(
            errs[0].message,
            "Invalid value: \"integer\": spec.provider in body must be of type string: \"integer\""
        );
        // A type error blocks CEL, as in the apiserver.
        assert!(
            errs.iter()
                .any(|e| e.message.contains("some validation rules were not checked")),
            "{errs:#?}"
        );
    }

    #[test]
    fn integer_accepts_whole_floats_and_rejects_fractions() {
        let mut spec = ok_spec();
        spec["refresh"] = json!({"attempts": 2.0});
        let mut obj = cr(spec.clone());
        validate(&integration_schema(), &mut obj, None, false).unwrap();
        spec["refresh"] = json!({"attempts": 2.5});
        let e = &errors_of(spec)[0];
        assert_eq!(
            e.message,
            "Invalid value: \"number\": spec.refresh.attempts in body must be of type integer: \"number\""
        );
    }

    #[test]
    fn enum_not_supported() {
        let mut spec = ok_spec();
        spec["target"] = json!({"type": "Other"});
        let e = only(spec);
        assert_eq!(e.reason, "FieldValueNotSupported");
        assert_eq!(e.field, "spec.target.type");
        assert_eq!(
            e.message,
            "Unsupported value: \"Other\": supported values: \"Opaque\", \"kubernetes.io/basic-auth\""
        );
    }

    #[test]
    fn pattern_mismatch() {
        let mut spec = ok_spec();
        spec["refresh"] = json!({"renewBefore": "soon"});
        let e = only(spec);
        assert_eq!(e.reason, "FieldValueInvalid");
        assert_eq!(e.field, "spec.refresh.renewBefore");
        assert_eq!(
            e.message,
            "Invalid value: \"soon\": spec.refresh.renewBefore in body should match '^(([0-9]+(ms|s|m|h))+|[0-9]{1,2}%)$'"
        );
    }

    #[test]
    fn string_lengths() {
        let mut spec = ok_spec();
        spec["provider"] = json!("a-very-long-name");
        let e = only(spec.clone());
        assert_eq!(
            (e.reason.as_str(), e.message.as_str()),
            ("FieldValueTooLong", "Too long: may not be more than 10 bytes")
        );
        spec["provider"] = json!("");
        let errs = errors_of(spec);
        assert!(
            errs.iter()
                .any(|e| e.message == "Invalid value: \"\": spec.provider in body should be at least 1 chars long"),
            "{errs:#?}"
        );
    }

    #[test]
    fn number_bounds() {
        let mut spec = ok_spec();
        spec["refresh"] = json!({"attempts": 0});
        assert_eq!(
            only(spec.clone()).message,
            "Invalid value: 0: spec.refresh.attempts in body should be greater than or equal to 1"
        );
        spec["refresh"] = json!({"attempts": 11});
        assert_eq!(
            only(spec.clone()).message,
            "Invalid value: 11: spec.refresh.attempts in body should be less than or equal to 10"
        );
        spec["refresh"] = json!({"jitter": 1});
        assert_eq!(
            only(spec.clone()).message,
            "Invalid value: 1: spec.refresh.jitter in body should be less than 1"
        );
        spec["refresh"] = json!({"jitter": 0.5});
        let mut obj = cr(spec);
        validate(&integration_schema(), &mut obj, None, false).unwrap();
    }

    #[test]
    fn exclusive_minimum_and_multiple_of() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "multipleOf": 5}}}}});
        let mut obj = json!({"spec": {"n": 0}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert_eq!(
            errs[0].message,
            "Invalid value: 0: spec.n in body should be greater than 0"
        );
        let mut obj = json!({"spec": {"n": 7}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert_eq!(
            errs[0].message,
            "Invalid value: 7: spec.n in body should be a multiple of 5"
        );
    }

    #[test]
    fn array_items_and_bounds() {
        let mut spec = ok_spec();
        spec["clientCredentials"] = json!({"scopes": ["a", 2]});
        let e = only(spec.clone());
        assert_eq!(e.field, "spec.clientCredentials.scopes[1]");
        assert_eq!(e.reason, "FieldValueTypeInvalid");
        spec["clientCredentials"] = json!({"scopes": ["a", "b", "c", "d"]});
        let e = only(spec.clone());
        assert_eq!(
            (e.reason.as_str(), e.message.as_str()),
            ("FieldValueTooMany", "Too many: 4: must have at most 3 items")
        );
        spec["clientCredentials"] = json!({"scopes": []});
        assert_eq!(
            only(spec).message,
            "Invalid value: 0: spec.clientCredentials.scopes in body should have at least 1 items"
        );
    }

    #[test]
    fn maps_validate_values_and_count() {
        let mut spec = ok_spec();
        spec["target"] = json!({"labels": {"a": "1", "b": 2}});
        let e = only(spec.clone());
        assert_eq!(e.field, "spec.target.labels.b");
        spec["target"] = json!({"labels": {"a": "1", "b": "2", "c": "3"}});
        assert_eq!(only(spec).message, "Too many: 3: must have at most 2 items");
    }

    #[test]
    fn min_properties() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "minProperties": 1,
            "additionalProperties": {"type": "string"}}}});
        let mut obj = json!({"spec": {}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert_eq!(
            errs[0].message,
            "Invalid value: 0: spec in body should have at least 1 properties"
        );
    }

    #[test]
    fn unknown_fields_pruned_when_not_strict() {
        let mut spec = ok_spec();
        spec["bogus"] = json!(1);
        spec["secretRef"]["namespace"] = json!("other");
        let mut obj = cr(spec);
        obj["extra"] = json!(true);
        obj["metadata"]["nme"] = json!("typo");
        let mut status = json!({"anything": {"goes": 1}});
        obj["status"] = status.take();
        validate(&integration_schema(), &mut obj, None, false).unwrap();
        assert!(obj["spec"].get("bogus").is_none());
        assert!(obj["spec"]["secretRef"].get("namespace").is_none());
        assert!(obj.get("extra").is_none());
        assert!(obj["metadata"].get("nme").is_none());
        assert_eq!(
            obj["status"]["anything"]["goes"], 1,
            "preserve-unknown-fields keeps everything"
        );
        assert_eq!(obj["apiVersion"], "integration-operator.io/v1alpha1");
    }

    #[test]
    fn unknown_fields_reported_when_strict() {
        let mut spec = ok_spec();
        spec["bogus"] = json!(1);
        spec["clientCredentials"]["scope"] = json!("typo");
        let mut obj = cr(spec);
        let errs = validate(&integration_schema(), &mut obj, None, true).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.bogus", "spec.clientCredentials.scope"]);
        assert!(errs.iter().all(|e| e.reason == REASON_UNKNOWN));
        assert_eq!(errs[0].message, "unknown field \"spec.bogus\"");
    }

    #[test]
    fn unknown_fields_inside_list_items_have_index_paths() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}});
        let mut obj = json!({"spec": {"items": [{"name": "a"}, {"name": "b", "x": 1}]}});
        let report = check(&schema, &mut obj, None);
        assert_eq!(report.unknown_fields, ["spec.items[1].x"]);
        assert!(report.errors.is_empty());
    }

    #[test]
    fn nulls_in_non_nullable_fields_are_dropped_or_defaulted() {
        let mut spec = ok_spec();
        spec["refresh"] = json!({"renewBefore": null, "attempts": null});
        spec["secretRef"] = Value::Null;
        let mut obj = cr(spec);
        let errs = validate(&integration_schema(), &mut obj, None, false).unwrap_err();
        assert_eq!(obj["spec"]["refresh"], json!({"renewBefore": "10m"}));
        assert_eq!(errs[0].field, "spec.secretRef", "dropped null then required");
        // Nullable nulls are kept and valid.
        let mut spec = ok_spec();
        spec["target"] = Value::Null;
        let mut obj = cr(spec);
        validate(&integration_schema(), &mut obj, None, false).unwrap();
        assert!(obj["spec"]["target"].is_null());
    }

    #[test]
    fn formats() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "at": {"type": "string", "format": "date-time"}, "n": {"type": "integer", "format": "int32"},
            "id": {"type": "string", "format": "uuid"}, "b": {"type": "string", "format": "byte"}}}}});
        let mut good = json!({"spec": {"at": "2024-01-02T03:04:05Z", "n": 5, "id": "123e4567-e89b-12d3-a456-426614174000", "b": "aGk="}});
        validate(&schema, &mut good, None, false).unwrap();
        let mut bad = json!({"spec": {"at": "yesterday", "id": "nope", "b": "%%%"}});
        let errs = validate(&schema, &mut bad, None, false).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs.iter().any(|e| e.message
                == "Invalid value: \"yesterday\": spec.at in body must be of type date-time: \"yesterday\"")
        );
    }

    #[test]
    fn int_or_string_and_embedded_resource() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}}}});
        let mut obj = json!({"spec": {"port": "http", "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}}});
        validate(&schema, &mut obj, None, false).unwrap();
        assert_eq!(obj["spec"]["template"]["metadata"]["name"], "p");
        let mut obj = json!({"spec": {"port": 8080}});
        validate(&schema, &mut obj, None, false).unwrap();
        let mut obj = json!({"spec": {"port": true, "template": {"metadata": {}}}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"spec.port"), "{errs:#?}");
        assert!(
            fields.contains(&"spec.template.apiVersion") && fields.contains(&"spec.template.kind"),
            "{errs:#?}"
        );
    }

    #[test]
    fn combinators() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            "not": {"required": ["c"]},
            "allOf": [{"properties": {"a": {"maxLength": 3}}}]}}});
        let mut obj = json!({"spec": {"a": "x"}});
        validate(&schema, &mut obj, None, false).unwrap();
        let mut obj = json!({"spec": {"a": "x", "b": "y"}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert_eq!(
            errs[0].message,
            "Invalid value: \"\": spec in body must validate one and only one schema (oneOf)"
        );
        let mut obj = json!({"spec": {}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.a" && e.reason == "FieldValueRequired"),
            "{errs:#?}"
        );
        let mut obj = json!({"spec": {"a": "toolong"}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert_eq!(errs[0].field, "spec.a");
        let any = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"v": {
            "anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+%$"}]}}}}});
        let mut obj = json!({"spec": {"v": "50%"}});
        validate(&any, &mut obj, None, false).unwrap();
        let mut obj = json!({"spec": {"v": "half"}});
        let errs = validate(&any, &mut obj, None, false).unwrap_err();
        assert!(
            errs[0]
                .message
                .ends_with("spec.v in body must validate at least one schema (anyOf)"),
            "{errs:#?}"
        );
    }

    #[test]
    fn list_type_set_and_map_duplicates() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}});
        let mut obj = json!({"spec": {"s": ["a", "a"], "m": [{"name": "x"}, {"name": "x"}]}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        let s = errs.iter().find(|e| e.field == "spec.s[1]").expect("set duplicate");
        assert_eq!(s.message, "Duplicate value: \"a\"");
        let m = errs.iter().find(|e| e.field == "spec.m[1]").expect("map duplicate");
        assert_eq!(m.reason, "FieldValueDuplicate");
    }

    #[test]
    fn metadata_name_schema_is_honoured() {
        let schema = json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}}}}});
        let mut obj = json!({"metadata": {"name": "too-long-name"}});
        let errs = validate(&schema, &mut obj, None, false).unwrap_err();
        assert_eq!(errs[0].field, "metadata.name");
    }

    // ------------------------------------------------------------ CEL

    #[test]
    fn cel_exactly_one_flow_block() {
        let e = only(
            json!({"provider": "sr", "secretRef": {"name": "in"}, "apiKey": {}, "partnerIntegration": {"appId": "a"}}),
        );
        assert_eq!(e.reason, "FieldValueInvalid");
        assert_eq!(e.field, "spec");
        assert_eq!(
            e.message,
            "Invalid value: \"object\": exactly one flow block must be set"
        );
        assert_eq!(
            e.to_string(),
            "spec: Invalid value: \"object\": exactly one flow block must be set"
        );
        let e = only(json!({"provider": "sr", "secretRef": {"name": "in"}}));
        assert_eq!(e.field, "spec");
        let mut obj = cr(json!({"provider": "sr", "secretRef": {"name": "in"}, "partnerIntegration": {"appId": "a"}}));
        validate(&integration_schema(), &mut obj, None, false).unwrap();
    }

    fn rule_schema(field_schema: Value, rules: Value) -> Value {
        let mut fs = field_schema;
        fs["x-kubernetes-validations"] = rules;
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"f": fs, "g": {"type": "string"}}}}})
    }

    fn run(schema: &Value, f: Value, old: Option<Value>) -> Result<(), Vec<FieldError>> {
        let mut obj = json!({"spec": {"f": f}});
        let old = old.map(|o| json!({"spec": {"f": o}}));
        validate(schema, &mut obj, old.as_ref(), false)
    }

    #[test]
    fn cel_string_functions() {
        let s = rule_schema(
            json!({"type": "string"}),
            json!([
                {"rule": "self.matches('^[a-z]+$')", "message": "lowercase only"},
                {"rule": "size(self) <= 5"},
                {"rule": "self.startsWith('a')", "messageExpression": "'must start with a, got ' + self"},
            ]),
        );
        run(&s, json!("abc"), None).unwrap();
        let errs = run(&s, json!("Bcdefgh"), None).unwrap_err();
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Invalid value: \"string\": lowercase only",
                "Invalid value: \"string\": failed rule: size(self) <= 5",
                "Invalid value: \"string\": must start with a, got Bcdefgh",
            ]
        );
        assert!(errs.iter().all(|e| e.field == "spec.f"));
    }

    #[test]
    fn cel_has_implication_and_field_path() {
        let s = rule_schema(
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}),
            json!([{"rule": "!has(self.a) || has(self.b)", "message": "b is required with a", "fieldPath": ".b", "reason": "FieldValueRequired"}]),
        );
        run(&s, json!({}), None).unwrap();
        run(&s, json!({"a": "x", "b": "y"}), None).unwrap();
        let errs = run(&s, json!({"a": "x"}), None).unwrap_err();
        assert_eq!(errs[0].field, "spec.f.b");
        assert_eq!(errs[0].reason, "FieldValueRequired");
        assert_eq!(errs[0].message, "Required value: b is required with a");
    }

    #[test]
    fn cel_forbidden_and_duplicate_reasons() {
        let s = rule_schema(
            json!({"type": "string"}),
            json!([{"rule": "self != 'x'", "message": "no x", "reason": "FieldValueForbidden"}]),
        );
        let errs = run(&s, json!("x"), None).unwrap_err();
        assert_eq!(
            (errs[0].reason.as_str(), errs[0].message.as_str()),
            ("FieldValueForbidden", "Forbidden: no x")
        );
    }

    #[test]
    fn cel_transition_rule_immutability() {
        let s = rule_schema(
            json!({"type": "object", "properties": {"id": {"type": "string"}}}),
            json!([{"rule": "self.id == oldSelf.id", "message": "id is immutable"}]),
        );
        run(&s, json!({"id": "a"}), None).expect("transition rules are skipped on create");
        run(&s, json!({"id": "a"}), Some(json!({"id": "a"}))).unwrap();
        let errs = run(&s, json!({"id": "b"}), Some(json!({"id": "a"}))).unwrap_err();
        assert_eq!(errs[0].message, "Invalid value: \"object\": id is immutable");
    }

    #[test]
    fn cel_on_integers_lists_and_maps() {
        let s = rule_schema(json!({"type": "integer"}), json!([{"rule": "self % 2 == 0"}]));
        run(&s, json!(4), None).unwrap();
        assert!(run(&s, json!(3), None).is_err());
        let s = rule_schema(
            json!({"type": "array", "items": {"type": "string"}}),
            json!([{"rule": "self.all(x, x.size() > 0) && self.exists_one(x, x == 'read')"}]),
        );
        run(&s, json!(["read", "write"]), None).unwrap();
        assert!(run(&s, json!(["write"]), None).is_err());
        let s = rule_schema(
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!([{"rule": "self.all(k, k.lowerAscii() == k)", "message": "keys must be lowercase"}]),
        );
        run(&s, json!({"a": "1"}), None).unwrap();
        assert!(run(&s, json!({"A": "1"}), None).is_err());
        let s = rule_schema(json!({"type": "number"}), json!([{"rule": "self < 1.0"}]));
        run(&s, json!(0), None).expect("a whole JSON number in a number field is a double in CEL");
    }

    #[test]
    fn cel_errors_are_reported_not_panics() {
        let s = rule_schema(
            json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            json!([{"rule": "self.a == 'x'"}]),
        );
        let errs = run(&s, json!({}), None).unwrap_err();
        assert_eq!(errs[0].reason, "FieldValueInvalid");
        assert!(
            errs[0].message.contains("evaluating rule: failed rule: self.a == 'x'"),
            "{errs:#?}"
        );
        let s = rule_schema(json!({"type": "string"}), json!([{"rule": "self.(("}]));
        let errs = run(&s, json!("x"), None).unwrap_err();
        assert!(errs[0].message.contains("rule compile error"), "{errs:#?}");
        let s = rule_schema(json!({"type": "string"}), json!([{"rule": "size(self)"}]));
        let errs = run(&s, json!("x"), None).unwrap_err();
        assert!(errs[0].message.contains("not a bool"), "{errs:#?}");
    }

    #[test]
    fn cel_rules_run_in_list_items_with_map_correlation() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"l": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "string"}},
                      "x-kubernetes-validations": [{"rule": "self.v == oldSelf.v", "message": "v is immutable"},
                                                   {"rule": "self.v != ''", "message": "v must not be empty"}]}}}}}});
        let mut obj = json!({"spec": {"l": [{"name": "a", "v": ""}, {"name": "b", "v": "2"}]}});
        let old = json!({"spec": {"l": [{"name": "b", "v": "1"}]}});
        let errs = validate(&schema, &mut obj, Some(&old), false).unwrap_err();
        let got: Vec<(String, String)> = errs.into_iter().map(|e| (e.field, e.message)).collect();
        assert_eq!(
            got,
            [
                (
                    "spec.l[0]".to_string(),
                    "Invalid value: \"object\": v must not be empty".to_string()
                ),
                (
                    "spec.l[1]".to_string(),
                    "Invalid value: \"object\": v is immutable".to_string()
                ),
            ]
        );
    }

    #[test]
    fn garbage_inputs_do_not_panic() {
        for schema in [
            json!(null),
            json!("x"),
            json!({"type": 5, "properties": []}),
            json!({"items": 3, "required": "x"}),
        ] {
            for mut obj in [
                json!(null),
                json!([1, {"a": null}]),
                json!({"spec": [null]}),
                json!("s"),
            ] {
                let _ = validate(&schema, &mut obj, None, true);
            }
        }
    }
}
