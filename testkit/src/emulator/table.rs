//! `meta.k8s.io/v1` Table responses for `kubectl get`, built the way
//! kube-apiserver builds them.
//!
//! Custom resources: a `Name` column (format `name`) then one column per
//! `additionalPrinterColumns` entry (`name`, `type`, `format`, `description`,
//! `priority`), each cell found with the entry's `jsonPath` and converted as
//! the apiextensions table convertor does: `string` columns print the value
//! (Go `fmt.Print` style for lists and maps), `integer`/`number`/`boolean`
//! cells are typed JSON values, `date` cells become relative ages (`5m`,
//! `3h2m`, `<invalid>` for a time in the future, exactly like
//! `duration.HumanDuration`); a missing value is `null` (kubectl prints
//! `<none>`). Without printer columns a CRD gets `Age`.
//!
//! JSONPath subset: `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`, `..`-free paths,
//! filters `[?(@.type=="Ready")]` / `!=` / `[?(@.x)]`, optionally wrapped in `{}`.
//!
//! Built-ins (chosen by the objects' `kind` when no columns are given), with
//! the columns of kube-apiserver's printers: Secret (Type, Data, Age),
//! ConfigMap (Data, Age), Namespace (Status, Age), ServiceAccount (Secrets,
//! Age), Lease (Holder, Age), Pod (Ready, Status, Restarts, Age), Deployment
//! (Ready, Up-to-date, Available, Age), Event core/v1 and events.k8s.io/v1
//! (Last Seen, Type, Reason, Object, Message), CustomResourceDefinition
//! (Created At); any other kind gets Name and Age.
//!
//! Rows carry `object`: a `PartialObjectMetadata` for `includeObject=Metadata`
//! (kubectl's default), the full object for `Object`, nothing for `None`.

use serde_json::{Map, Value, json};

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Builds a Table for `objects`. `columns` are the CRD version's
/// `additionalPrinterColumns` (empty for built-ins: the kind's printer is used).
/// `include_object` is `None`, `Metadata` or `Object` (the `includeObject` query
/// parameter; kubectl asks for metadata). `list_meta` is the list's metadata.
pub fn build(columns: &[Value], objects: &[Value], include_object: &str, list_meta: Value) -> Value {
    build_at(columns, objects, include_object, list_meta, jiff::Timestamp::now())
}

/// [`build`] with an explicit "now" for ages (tests).
pub fn build_at(
    columns: &[Value],
    objects: &[Value],
    include_object: &str,
    list_meta: Value,
    now: jiff::Timestamp,
) -> Value {
    let kind = objects
        .first()
        .and_then(|o| o.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let api_version = objects
        .first()
        .and_then(|o| o.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let (defs, cells): (Vec<Value>, Vec<Vec<Value>>) = if !columns.is_empty() {
        crd_table(columns, objects, now)
    } else if let Some(t) = builtin_table(kind, api_version, objects, now) {
        t
    } else {
        let age = json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"});
        crd_table(&[age], objects, now)
    };
    let rows: Vec<Value> = objects
        .iter()
        .zip(cells)
        .map(|(o, cells)| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            match include_object {
                "None" => {}
                "Object" => {
                    row.insert("object".into(), o.clone());
                }
                _ => {
                    row.insert(
                        "object".into(),
                        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({}))}),
                    );
                }
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column("Name", "string", "name", NAME_DESCRIPTION, 0)
}

fn name_of(o: &Value) -> Value {
    o.pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::String(String::new()))
}

fn crd_table(columns: &[Value], objects: &[Value], now: jiff::Timestamp) -> (Vec<Value>, Vec<Vec<Value>>) {
    let mut defs = vec![name_column()];
    for c in columns {
        let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        let description = match c.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => format!("Custom resource definition column (in JSONPath format): {path}"),
        };
        defs.push(column(
            c.get("name").and_then(Value::as_str).unwrap_or(""),
            c.get("type").and_then(Value::as_str).unwrap_or("string"),
            c.get("format").and_then(Value::as_str).unwrap_or(""),
            &description,
            c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        ));
    }
    let cells = objects
        .iter()
        .map(|o| {
            let mut row = vec![name_of(o)];
            for c in columns {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
                let value = jsonpath(o, path).into_iter().next();
                row.push(match value {
                    None => Value::Null,
                    Some(v) => cell(ty, v, now),
                });
            }
            row
        })
        .collect();
    (defs, cells)
}

/// `cellForJSONValue` of the apiextensions table convertor.
fn cell(ty: &str, v: &Value, now: jiff::Timestamp) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        ("string", v) => Value::String(go_print(v)),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(|f| Value::from(f as i64)))
            .unwrap_or(Value::Null),
        ("number", Value::Number(n)) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => Value::String(human_duration(now.duration_since(t).as_secs())),
            Err(_) => Value::String("<invalid>".into()),
        },
        _ => Value::Null,
    }
}

/// Go's `fmt.Print` of a decoded JSON value, as JSONPath printing does.
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter()
                    .map(|k| format!("{k}:{}", go_print(&m[*k])))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration` of `secs` seconds.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince` of the built-in printers.
fn age(o: &Value, now: jiff::Timestamp) -> Value {
    age_of(o.pointer("/metadata/creationTimestamp"), now)
}

fn age_of(t: Option<&Value>, now: jiff::Timestamp) -> Value {
    match t
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => Value::String(human_duration(now.duration_since(t).as_secs())),
        None => Value::String("<unknown>".into()),
    }
}

fn str_at(o: &Value, pointer: &str) -> Value {
    Value::String(o.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_string())
}

fn count_at(o: &Value, pointers: &[&str]) -> Value {
    let n: usize = pointers
        .iter()
        .filter_map(|p| o.pointer(p))
        .map(|v| match v {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        })
        .sum();
    Value::from(n as i64)
}

fn int_at(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

type Printer = fn(&Value, jiff::Timestamp) -> Vec<Value>;

fn builtin_table(
    kind: &str,
    api_version: &str,
    objects: &[Value],
    now: jiff::Timestamp,
) -> Option<(Vec<Value>, Vec<Vec<Value>>)> {
    let age_col = || column("Age", "string", "", AGE_DESCRIPTION, 0);
    let s = |name: &str, description: &str| column(name, "string", "", description, 0);
    let (defs, printer): (Vec<Value>, Printer) = match (kind, api_version) {
        ("Secret", "v1") => (
            vec![
                name_column(),
                s("Type", "The type of secret"),
                s("Data", "The number of entries in the secret"),
                age_col(),
            ],
            |o, now| vec![name_of(o), str_at(o, "/type"), count_at(o, &["/data"]), age(o, now)],
        ),
        ("ConfigMap", "v1") => (
            vec![
                name_column(),
                s("Data", "The number of entries in the config map"),
                age_col(),
            ],
            |o, now| vec![name_of(o), count_at(o, &["/data", "/binaryData"]), age(o, now)],
        ),
        ("Namespace", "v1") => (
            vec![name_column(), s("Status", "The status of the namespace"), age_col()],
            |o, now| vec![name_of(o), str_at(o, "/status/phase"), age(o, now)],
        ),
        ("ServiceAccount", "v1") => (
            vec![name_column(), s("Secrets", "The number of secrets"), age_col()],
            |o, now| vec![name_of(o), count_at(o, &["/secrets"]), age(o, now)],
        ),
        ("Lease", "coordination.k8s.io/v1") => (
            vec![name_column(), s("Holder", "The holder of the lease"), age_col()],
            |o, now| vec![name_of(o), str_at(o, "/spec/holderIdentity"), age(o, now)],
        ),
        ("Pod", "v1") => (
            vec![
                name_column(),
                s(
                    "Ready",
                    "The aggregate readiness state of this pod for accepting traffic.",
                ),
                s("Status", "The aggregate status of the containers in this pod."),
                s(
                    "Restarts",
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                ),
                age_col(),
            ],
            pod_row,
        ),
        ("Deployment", "apps/v1") => (
            vec![
                name_column(),
                s("Ready", "Number of the pod with ready state"),
                s(
                    "Up-to-date",
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                s(
                    "Available",
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                age_col(),
            ],
            |o, now| {
                let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                vec![
                    name_of(o),
                    Value::String(format!("{}/{desired}", int_at(o, "/status/readyReplicas"))),
                    Value::from(int_at(o, "/status/updatedReplicas")),
                    Value::from(int_at(o, "/status/availableReplicas")),
                    age(o, now),
                ]
            },
        ),
        ("Event", "v1") | ("Event", "events.k8s.io/v1") => (
            vec![
                s("Last Seen", "The last time the event was seen"),
                s("Type", "The type of event"),
                s("Reason", "The reason for the event"),
                s("Object", "The object the event is about"),
                s("Message", "The message of the event"),
                column("Name", "string", "name", NAME_DESCRIPTION, 1),
            ],
            event_row,
        ),
        ("CustomResourceDefinition", "apiextensions.k8s.io/v1") => (
            vec![name_column(), column("Created At", "date", "", AGE_DESCRIPTION, 0)],
            |o, _| {
                vec![
                    name_of(o),
                    o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
                ]
            },
        ),
        _ => return None,
    };
    Some((defs, objects.iter().map(|o| printer(o, now)).collect()))
}

fn pod_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
        .sum();
    let mut status = o
        .pointer("/status/reason")
        .or_else(|| o.pointer("/status/phase"))
        .and_then(Value::as_str)
        .unwrap_or("Pending")
        .to_string();
    if o.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        status = "Terminating".into();
    }
    vec![
        name_of(o),
        Value::String(format!("{ready}/{total}")),
        Value::String(status),
        Value::String(restarts.to_string()),
        age(o, now),
    ]
}

fn event_row(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let events_v1 = o.get("apiVersion").and_then(Value::as_str) == Some("events.k8s.io/v1");
    let (regarding, message) = if events_v1 {
        ("/regarding", "/note")
    } else {
        ("/involvedObject", "/message")
    };
    let last = [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/deprecatedLastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| o.pointer(p).filter(|v| v.as_str().is_some_and(|s| !s.is_empty())));
    let kind = o
        .pointer(&format!("{regarding}/kind"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_lowercase();
    let name = o
        .pointer(&format!("{regarding}/name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    vec![
        age_of(last, now),
        str_at(o, "/type"),
        str_at(o, "/reason"),
        Value::String(format!("{kind}/{name}")),
        str_at(o, message),
        name_of(o),
    ]
}

// ---------------------------------------------------------------- JSONPath

#[derive(Debug)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter {
        field: Vec<String>,
        op: Option<(bool, Value)>,
    },
}

/// Evaluates a simple JSONPath (the subset CRD printer columns use) and
/// returns every match, in document order.
pub fn jsonpath<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut current = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(f) => {
                    if let Some(c) = v.get(f.as_str()) {
                        next.push(c);
                    }
                }
                Step::Index(i) => {
                    if let Value::Array(a) = v {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if let Some(c) = usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                            next.push(c);
                        }
                    }
                }
                Step::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter { field, op } => {
                    if let Value::Array(a) = v {
                        for item in a {
                            let got = field.iter().try_fold(item, |acc, f| acc.get(f.as_str()));
                            let keep = match (got, op) {
                                (Some(_), None) => true,
                                (Some(g), Some((eq, want))) => (loose_eq(g, want)) == *eq,
                                (None, Some((false, _))) => true,
                                _ => false,
                            };
                            if keep {
                                next.push(item);
                            }
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

fn loose_eq(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(a), Value::String(b)) => a.to_string() == *b,
        _ => got == want,
    }
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(p)
        .trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if name == "*" {
                    steps.push(Step::Wildcard);
                } else if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let close = find_close(&chars, i)?;
                let inner: String = chars[i + 1..close].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = close + 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
        }
    }
    Some(steps)
}

/// Index of the `]` closing the `[` at `open`, skipping quoted strings.
fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(open + 1) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ']' => return Some(j),
            None => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return Some(inner.to_string());
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Option<Step> {
    if inner == "*" {
        return Some(Step::Wildcard);
    }
    if let Some(name) = unquote(inner) {
        return Some(Step::Field(name));
    }
    if let Ok(i) = inner.parse::<i64>() {
        return Some(Step::Index(i));
    }
    let expr = inner.strip_prefix('?')?.trim();
    let expr = expr.strip_prefix('(')?.strip_suffix(')')?.trim();
    let (lhs, op) = if let Some((l, r)) = expr.split_once("==") {
        (l, Some((true, literal(r)?)))
    } else if let Some((l, r)) = expr.split_once("!=") {
        (l, Some((false, literal(r)?)))
    } else {
        (expr, None)
    };
    let field: Vec<String> = lhs
        .trim()
        .strip_prefix('@')?
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Some(Step::Filter { field, op })
}

fn literal(s: &str) -> Option<Value> {
    let s = s.trim();
    if let Some(q) = unquote(s) {
        return Some(Value::String(q));
    }
    match s {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap_or_else(|_| unreachable!())
    }

    /// The Integration CRD's printer columns, as kube-rs generates them.
    fn integration_columns() -> Vec<Value> {
        vec![
            json!({"name": "Provider", "type": "string", "jsonPath": ".spec.provider"}),
            json!({"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}),
            json!({"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}),
            json!({"name": "Expires", "type": "date", "jsonPath": ".status.expiresAt"}),
            json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        ]
    }

    fn integration(name: &str, ready: Option<&str>) -> Value {
        let mut o = json!({
            "apiVersion": "integration-operator.io/v1alpha1", "kind": "Integration",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2025-01-01T11:55:00Z", "uid": "u1"},
            "spec": {"provider": "smartrecruiters"},
        });
        if let Some(r) = ready {
            o["status"] = json!({"conditions": [
                {"type": "Progressing", "status": "False", "reason": "Idle"},
                {"type": "Ready", "status": r, "reason": "Exchanged"}],
                "expiresAt": "2025-01-01T10:00:00Z"});
        }
        o
    }

    #[test]
    fn crd_columns_follow_name_and_evaluate_json_paths() {
        let t = build_at(
            &integration_columns(),
            &[integration("a", Some("True")), integration("b", None)],
            "Metadata",
            json!({"resourceVersion": "7"}),
            now(),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Provider", "Ready", "Reason", "Expires", "Age"]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(t["columnDefinitions"][4]["type"], "date");
        assert_eq!(
            t["columnDefinitions"][1]["description"],
            "Custom resource definition column (in JSONPath format): .spec.provider"
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["a", "smartrecruiters", "True", "Exchanged", "120m", "5m"])
        );
        // Missing values are null (kubectl prints <none>).
        assert_eq!(
            t["rows"][1]["cells"],
            json!(["b", "smartrecruiters", null, null, null, "5m"])
        );
    }

    #[test]
    fn rows_carry_partial_object_metadata_full_object_or_nothing() {
        let objs = [integration("a", None)];
        let t = build_at(&integration_columns(), &objs, "Metadata", json!({}), now());
        let o = &t["rows"][0]["object"];
        assert_eq!(o["kind"], "PartialObjectMetadata");
        assert_eq!(o["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(o["metadata"]["uid"], "u1");
        assert!(o.get("spec").is_none());
        let t = build_at(&integration_columns(), &objs, "Object", json!({}), now());
        assert_eq!(t["rows"][0]["object"], objs[0]);
        let t = build_at(&integration_columns(), &objs, "None", json!({}), now());
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn typed_cells_and_priority() {
        let cols = [
            json!({"name": "N", "type": "integer", "jsonPath": ".spec.n", "priority": 1, "description": "count"}),
            json!({"name": "F", "type": "number", "jsonPath": ".spec.n"}),
            json!({"name": "B", "type": "boolean", "jsonPath": ".spec.b"}),
            json!({"name": "L", "type": "string", "jsonPath": ".spec.l"}),
            json!({"name": "Future", "type": "date", "jsonPath": ".spec.t"}),
            json!({"name": "Bad", "type": "date", "jsonPath": ".spec.l[0]"}),
        ];
        let o = json!({"metadata": {"name": "x"}, "spec": {"n": 3, "b": true, "l": ["a", "b"], "t": "2025-01-02T00:00:00Z"}});
        let t = build_at(&cols, &[o], "None", json!({}), now());
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["x", 3, 3.0, true, "[a b]", "<invalid>", "<invalid>"])
        );
        assert_eq!(t["columnDefinitions"][1]["priority"], 1);
        assert_eq!(t["columnDefinitions"][1]["description"], "count");
    }

    #[test]
    fn crd_without_columns_gets_age() {
        let t = build_at(&[], &[integration("a", None)], "None", json!({}), now());
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["a", "5m"]));
    }

    #[test]
    fn builtin_printers() {
        let meta = json!({"name": "s", "creationTimestamp": "2025-01-01T09:00:00Z"});
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": {"a": "", "b": ""}}),
                json!(["s", "Opaque", 2, "3h"]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": ""}, "binaryData": {"b": ""}}),
                json!(["s", 2, "3h"]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta, "status": {"phase": "Active"}}),
                json!(["s", "Active", "3h"]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
                json!(["s", 0, "3h"]),
            ),
            (
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": {"holderIdentity": "op-1"}}),
                json!(["s", "op-1", "3h"]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{}, {}]},
                    "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false}]}}),
                json!(["s", "1/2", "Running", "2", "3h"]),
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {"replicas": 3},
                    "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                json!(["s", "2/3", 3, 2, "3h"]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Event", "metadata": meta, "type": "Normal", "reason": "Issued",
                    "message": "token issued", "involvedObject": {"kind": "Integration", "name": "i"}, "lastTimestamp": "2025-01-01T11:59:00Z"}),
                json!(["60s", "Normal", "Issued", "integration/i", "token issued", "s"]),
            ),
            (
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta, "type": "Warning", "reason": "Failed",
                    "note": "boom", "regarding": {"kind": "Integration", "name": "i"}, "eventTime": "2025-01-01T11:00:00.000000Z"}),
                json!(["60m", "Warning", "Failed", "integration/i", "boom", "s"]),
            ),
            (
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta}),
                json!(["s", "2025-01-01T09:00:00Z"]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Service", "metadata": meta}),
                json!(["s", "3h"]),
            ),
        ];
        for (obj, want) in cases {
            let t = build_at(&[], std::slice::from_ref(&obj), "None", json!({}), now());
            assert_eq!(t["rows"][0]["cells"], want, "{}", obj["kind"]);
            assert_eq!(
                t["columnDefinitions"].as_array().map(Vec::len),
                want.as_array().map(Vec::len),
                "{}",
                obj["kind"]
            );
        }
    }

    #[test]
    fn human_durations_match_apimachinery() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 120, "3h2m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (8 * 86400, "8d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn jsonpath_forms() {
        let o = json!({"a": {"b.c": 1, "l": [{"k": "x", "v": 1}, {"k": "y", "v": 2}, {"v": 3}]}});
        assert_eq!(jsonpath(&o, "{.a['b.c']}"), [&json!(1)]);
        assert_eq!(jsonpath(&o, ".a.l[1].k"), [&json!("y")]);
        assert_eq!(jsonpath(&o, ".a.l[-1].v"), [&json!(3)]);
        assert_eq!(jsonpath(&o, ".a.l[*].v"), [&json!(1), &json!(2), &json!(3)]);
        assert_eq!(jsonpath(&o, ".a.l[?(@.k=='y')].v"), [&json!(2)]);
        assert_eq!(jsonpath(&o, ".a.l[?(@.k!=\"y\")].v"), [&json!(1), &json!(3)]);
        assert_eq!(jsonpath(&o, ".a.l[?(@.v==3)].v"), [&json!(3)]);
        assert_eq!(jsonpath(&o, ".a.l[?(@.k)].v"), [&json!(1), &json!(2)]);
        assert!(jsonpath(&o, ".a.missing").is_empty());
        assert!(jsonpath(&o, ".a.l[?(broken").is_empty());
        assert!(jsonpath(&o, ".a.l[99]").is_empty());
    }

    /// Real `kubectl get` renders the Table: headers upper-cased, null cells
    /// blank (as with a real apiserver), dates as the ages computed here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubectl_get_prints_the_crd_columns() {
        use crate::emulator::openapi::tests::{fake_apiserver, kubectl};
        let created = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(300);
        let mut ready = integration("ready-one", Some("True"));
        ready["metadata"]["creationTimestamp"] = json!(created.to_string());
        let mut pending = integration("pending-one", None);
        pending["metadata"]["creationTimestamp"] = json!(created.to_string());
        let Some(server) = fake_apiserver(vec![ready, pending]).await else {
            return;
        };
        let Some((ok, out, err)) = kubectl(&server, &["get", "integrations", "-n", "ns"]).await else {
            return;
        };
        assert!(ok, "stdout: {out}\nstderr: {err}");
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["NAME", "PROVIDER", "READY", "REASON", "EXPIRES", "AGE"],
            "{out}"
        );
        assert_eq!(
            lines[1][..4],
            ["ready-one", "smartrecruiters", "True", "Exchanged"],
            "{out}"
        );
        // Expires is a string column: the RFC 3339 time as written.
        assert_eq!(lines[1][4], "2025-01-01T10:00:00Z", "{out}");
        assert_eq!(lines[1][5], "5m", "{out}");
        assert_eq!(lines[2], ["pending-one", "smartrecruiters", "5m"], "{out}");
        let age_col = out.lines().next().and_then(|h| h.find("AGE")).unwrap_or(0);
        assert_eq!(
            out.lines().nth(2).and_then(|l| l.get(age_col..)).map(str::trim),
            Some("5m"),
            "{out}"
        );
    }
}
