//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! A simplified model of the API server's: ownership is tracked per leaf
//! field (lists are atomic, as `x-kubernetes-list-type: atomic` would make
//! them), conflicts arise when another manager owns a field the applied
//! configuration sets to a different value, `force` takes ownership, and a
//! field the applier owned before and no longer applies is removed unless
//! another manager still owns it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

pub type Path = Vec<String>;

/// Fields never owned: identity and server-set metadata.
fn ignored(path: &[String]) -> bool {
    match path {
        [a] if a == "apiVersion" || a == "kind" => true,
        [m, f, ..] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "selfLink"
        ),
        _ => false,
    }
}

/// Leaf paths of a value (objects recurse; arrays, scalars and empty objects are leaves).
pub fn leaf_paths(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() && !ignored(prefix) {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn remove(v: &mut Value, path: &[String]) {
    if let Some((last, parents)) = path.split_last() {
        let mut cur = v;
        for k in parents {
            match cur.get_mut(k) {
                Some(next) => cur = next,
                None => return,
            }
        }
        if let Some(m) = cur.as_object_mut() {
            m.remove(last);
        }
    }
}

/// Deep-merges `src` into `dst` (objects recurse, everything else replaces).
pub fn deep_merge(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, s) => *d = s.clone(),
    }
}

/// `fieldsV1` form of a path set: `{"f:data": {"f:key": {}}}`.
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            let entry = cur.entry(format!("f:{k}")).or_insert_with(|| json!({}));
            cur = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        let children: Vec<_> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k[2..].to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Ownership as stored in `metadata.managedFields`, keyed by (manager, operation, subresource).
type Owners = BTreeMap<(String, String, String), (String, BTreeSet<Path>)>;

fn read_owners(obj: &Value) -> Owners {
    let mut out = Owners::new();
    for e in obj["metadata"]["managedFields"].as_array().into_iter().flatten() {
        let key = (
            e["manager"].as_str().unwrap_or_default().to_string(),
            e["operation"].as_str().unwrap_or_default().to_string(),
            e["subresource"].as_str().unwrap_or_default().to_string(),
        );
        let api_version = e["apiVersion"].as_str().unwrap_or_default().to_string();
        out.insert(key, (api_version, from_fields_v1(&e["fieldsV1"])));
    }
    out
}

fn write_owners(obj: &mut Value, owners: &Owners, now: &str) {
    let entries: Vec<Value> = owners
        .iter()
        .filter(|(_, (_, paths))| !paths.is_empty())
        .map(|((manager, op, sub), (api_version, paths))| {
            let mut e = json!({
                "manager": manager,
                "operation": op,
                "apiVersion": api_version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(paths),
            });
            if !sub.is_empty() {
                e["subresource"] = json!(sub);
            }
            e
        })
        .collect();
    if entries.is_empty() && obj.get("metadata").is_none() {
        return;
    }
    if let Some(o) = obj.as_object_mut() {
        o.entry("metadata").or_insert_with(|| json!({}));
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// Applies `config` as `manager` to `current` (an empty object for a create).
/// Returns the new object, or the conflicts when `force` is off.
pub fn apply(
    current: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: &str,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut owners = read_owners(current);
    let me = (manager.to_string(), "Apply".to_string(), subresource.to_string());
    let applied = leaf_paths(config);
    let mut conflicts = Vec::new();
    for (key, (_, paths)) in owners.iter_mut() {
        if *key == me {
            continue;
        }
        let contested: Vec<Path> = paths
            .iter()
            .filter(|p| applied.contains(*p) && get(current, p) != get(config, p))
            .cloned()
            .collect();
        if contested.is_empty() {
            continue;
        }
        if force {
            for p in &contested {
                paths.remove(p);
            }
        } else {
            conflicts.extend(contested.iter().map(|p| Conflict {
                manager: key.0.clone(),
                field: format!(".{}", p.join(".")),
            }));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let previously = owners.get(&me).map(|(_, p)| p.clone()).unwrap_or_default();
    let mut result = current.clone();
    for dropped in previously.difference(&applied) {
        let still_owned = owners.iter().any(|(k, (_, paths))| *k != me && paths.contains(dropped));
        if !still_owned {
            remove(&mut result, dropped);
        }
    }
    let mut config_without_meta = config.clone();
    if let Some(m) = config_without_meta.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    deep_merge(&mut result, &config_without_meta);
    owners.insert(me, (api_version.to_string(), applied));
    write_owners(&mut result, &owners, now);
    Ok(result)
}

/// Records a non-apply write by `manager`: it takes ownership of every leaf
/// it changed (as the API server does for Update operations).
pub fn record_update(
    before: &Value,
    after: &mut Value,
    manager: &str,
    subresource: &str,
    api_version: &str,
    now: &str,
) {
    let mut owners = read_owners(before);
    let before_leaves = leaf_paths(before);
    let after_leaves = leaf_paths(after);
    let changed: BTreeSet<Path> = after_leaves
        .iter()
        .filter(|p| get(before, p) != get(after, p))
        .cloned()
        .collect();
    // Fields that disappeared are no longer owned by anyone.
    let gone: BTreeSet<Path> = before_leaves.difference(&after_leaves).cloned().collect();
    for (_, paths) in owners.values_mut() {
        paths.retain(|p| !changed.contains(p) && !gone.contains(p));
    }
    if !changed.is_empty() {
        owners
            .entry((manager.to_string(), "Update".to_string(), subresource.to_string()))
            .or_insert_with(|| (api_version.to_string(), BTreeSet::new()))
            .1
            .extend(changed);
    }
    write_owners(after, &owners, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let first = apply(
            &json!({}),
            &json!({"data": {"a": "1", "b": "2"}}),
            "op",
            true,
            "",
            "v1",
            NOW,
        )
        .unwrap();
        let second = apply(&first, &json!({"data": {"a": "1"}}), "op", true, "", "v1", NOW).unwrap();
        assert_eq!(second["data"], json!({"a": "1"}));
    }

    #[test]
    fn apply_keeps_fields_another_manager_owns() {
        let first = apply(&json!({}), &json!({"data": {"a": "1"}}), "op", true, "", "v1", NOW).unwrap();
        let second = apply(&first, &json!({"data": {"b": "2"}}), "other", true, "", "v1", NOW).unwrap();
        let third = apply(&second, &json!({"data": {}}), "op", true, "", "v1", NOW).unwrap();
        assert_eq!(third["data"], json!({"b": "2"}));
    }

    #[test]
    fn conflicting_values_conflict_unless_forced() {
        let first = apply(&json!({}), &json!({"data": {"a": "1"}}), "op", true, "", "v1", NOW).unwrap();
        let err = apply(&first, &json!({"data": {"a": "2"}}), "other", false, "", "v1", NOW).unwrap_err();
        assert_eq!(err[0].manager, "op");
        assert_eq!(err[0].field, ".data.a");
        // Same value: shared ownership, no conflict.
        assert!(apply(&first, &json!({"data": {"a": "1"}}), "other", false, "", "v1", NOW).is_ok());
        let forced = apply(&first, &json!({"data": {"a": "2"}}), "other", true, "", "v1", NOW).unwrap();
        assert_eq!(forced["data"]["a"], "2");
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let first = apply(&json!({}), &json!({"data": {"a": "1"}}), "op", true, "", "v1", NOW).unwrap();
        let mut edited = first.clone();
        edited["data"]["a"] = json!("9");
        record_update(&first, &mut edited, "kubectl-edit", "", "v1", NOW);
        let err = apply(&edited, &json!({"data": {"a": "1"}}), "op", false, "", "v1", NOW).unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
    }

    #[test]
    fn fields_v1_round_trips() {
        let paths = leaf_paths(&json!({"metadata": {"labels": {"a": "b"}}, "data": {"x": "y"}}));
        assert_eq!(from_fields_v1(&to_fields_v1(&paths)), paths);
    }
}
