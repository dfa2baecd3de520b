//! ConfigMaps and Secrets (`apiVersion: v1`): the values a run's
//! environment and volumes read, given with a local run as documents or
//! from files.
//!
//! A document is decoded here into a [`DataObject`]: its keys and their
//! bytes (`data`, `binaryData` and `stringData`, base64 checked), with
//! every problem at its field path. The values never leave through
//! `Debug`: only keys are shown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use serde_json::Value;

use crate::path::Path;

/// Which kind of object holds the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataKind {
    ConfigMap,
    Secret,
}

impl DataKind {
    /// `ConfigMap` / `Secret`, as Kubernetes spells the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::ConfigMap => "ConfigMap",
            DataKind::Secret => "Secret",
        }
    }

    /// `configmap` / `secret`, as Kubernetes' messages say it.
    pub fn lower(self) -> &'static str {
        match self {
            DataKind::ConfigMap => "configmap",
            DataKind::Secret => "secret",
        }
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most bytes one object may hold (Kubernetes refuses larger ones).
pub const MAX_SIZE: usize = 1 << 20;

/// One ConfigMap or Secret: its name, and each key with its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DataObject {
    pub kind: DataKind,
    pub name: String,
    pub entries: BTreeMap<String, Vec<u8>>,
    /// Keys of a ConfigMap's `binaryData`: files of volumes, but no
    /// environment value (a kubelet reads env from `data` only).
    pub binary_keys: BTreeSet<String>,
}

impl DataObject {
    /// The value of `key` as the environment may take it: `None` for a
    /// missing key or one of a ConfigMap's `binaryData`.
    pub fn env_value(&self, key: &str) -> Option<&[u8]> {
        if self.binary_keys.contains(key) {
            return None;
        }
        self.entries.get(key).map(Vec::as_slice)
    }
}

impl fmt::Debug for DataObject {
    /// Keys only: a Secret's values are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataObject")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("keys", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The ConfigMaps and Secrets given with a run, by kind and name.
#[derive(Debug, Clone, Default)]
pub struct DataSet {
    objects: BTreeMap<(DataKind, String), DataObject>,
}

impl DataSet {
    /// Adds `o`, replacing an object of the same kind and name.
    pub fn insert(&mut self, o: DataObject) {
        self.objects.insert((o.kind, o.name.clone()), o);
    }

    /// The object of that kind and name, if given.
    pub fn get(&self, kind: DataKind, name: &str) -> Option<&DataObject> {
        self.objects.get(&(kind, name.to_string()))
    }

    /// Every value of every Secret: what output must never show.
    pub fn secret_values(&self) -> impl Iterator<Item = &[u8]> {
        self.objects
            .values()
            .filter(|o| o.kind == DataKind::Secret)
            .flat_map(|o| o.entries.values().map(Vec::as_slice))
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The kind of a `v1` ConfigMap or Secret document, `None` for others.
pub fn kind_of(value: &Value) -> Option<DataKind> {
    if value.get("apiVersion").and_then(Value::as_str) != Some("v1") {
        return None;
    }
    match value.get("kind").and_then(Value::as_str)? {
        "ConfigMap" => Some(DataKind::ConfigMap),
        "Secret" => Some(DataKind::Secret),
        _ => None,
    }
}

/// Why `key` cannot be a key of a ConfigMap or Secret (Kubernetes' rule:
/// at most 253 characters of letters, digits, `-`, `_` and `.`, neither
/// `.` nor `..` nor starting with `..`), if it cannot.
pub fn key_problem(key: &str) -> Option<String> {
    let chars_ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if key.is_empty() || key.len() > 253 || !chars_ok {
        return Some(format!(
            "invalid key {key:?}: expected 1 to 253 letters, digits, '-', '_' or '.'"
        ));
    }
    if key == "." || key.starts_with("..") {
        return Some(format!(
            "invalid key {key:?}: must not be '.' or start with '..'"
        ));
    }
    None
}

/// The fields a ConfigMap or Secret document may have.
const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "data",
    "binaryData",
    "stringData",
    "type",
    "immutable",
];

/// Decodes a ConfigMap or Secret document, or says what is wrong with it,
/// each problem at its field path.
///
/// # Errors
/// Every problem found: an unknown field, a missing name, a value that is
/// not a string or not base64, a bad or repeated key, too many bytes.
pub fn decode(kind: DataKind, value: &Value) -> Result<DataObject, Vec<(Path, String)>> {
    let mut problems = Vec::new();
    let root = Path::root();
    if let Some(m) = value.as_object() {
        for k in m.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            problems.push((root.key_owned(k), format!("unknown field in a {kind}")));
        }
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        problems.push((
            root.key("metadata").key("name"),
            format!("required field is missing: a {kind} given with a run needs a name"),
        ));
    }
    let mut entries = BTreeMap::new();
    let mut binary_keys = BTreeSet::new();
    let sections: &[(&'static str, bool)] = match kind {
        DataKind::ConfigMap => &[("data", false), ("binaryData", true)],
        DataKind::Secret => &[("data", true), ("stringData", false)],
    };
    for (field, base64) in sections {
        let before: BTreeSet<String> = entries.keys().cloned().collect();
        read_section(value, field, *base64, kind, &mut entries, &mut problems);
        if kind == DataKind::ConfigMap && *field == "binaryData" {
            binary_keys.extend(entries.keys().filter(|k| !before.contains(*k)).cloned());
        }
    }
    let size: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SIZE {
        problems.push((
            root.clone(),
            format!("{kind} {name:?} holds {size} bytes: at most {MAX_SIZE} (1 MiB) are allowed"),
        ));
    }
    if problems.is_empty() {
        Ok(DataObject {
            kind,
            name,
            entries,
            binary_keys,
        })
    } else {
        Err(problems)
    }
}

/// Reads one of `data`, `binaryData`, `stringData` into `entries`: keys
/// checked, values taken as text or decoded from base64. A Secret's
/// `stringData` is written over its `data`, as the API server does; a
/// ConfigMap's `binaryData` may not repeat a key of its `data`.
fn read_section(
    value: &Value,
    field: &'static str,
    base64: bool,
    kind: DataKind,
    entries: &mut BTreeMap<String, Vec<u8>>,
    problems: &mut Vec<(Path, String)>,
) {
    let at = Path::root().key(field);
    let Some(section) = value.get(field).filter(|v| !v.is_null()) else {
        return;
    };
    let Some(map) = section.as_object() else {
        problems.push((at, "expected a mapping of keys to values".into()));
        return;
    };
    for (k, v) in map {
        let here = at.key_owned(k);
        if let Some(p) = key_problem(k) {
            problems.push((here.clone(), p));
        }
        let Some(text) = v.as_str() else {
            problems.push((here, "expected a string".into()));
            continue;
        };
        let bytes = if base64 {
            match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                Ok(b) => b,
                Err(e) => {
                    problems.push((here, format!("not valid base64: {e}")));
                    continue;
                }
            }
        } else {
            text.as_bytes().to_vec()
        };
        if kind == DataKind::ConfigMap && field == "binaryData" && entries.contains_key(k) {
            problems.push((here, format!("key {k:?} is also in data")));
            continue;
        }
        entries.insert(k.clone(), bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        crate::yaml::parse_values(yaml).unwrap().remove(0)
    }

    #[test]
    fn a_secret_takes_data_then_string_data() {
        let v = doc(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: aGk=, b: eA==}\nstringData: {b: y}\n",
        );
        let o = decode(DataKind::Secret, &v).unwrap();
        assert_eq!(o.entries["a"], b"hi");
        assert_eq!(o.entries["b"], b"y");
        assert!(!format!("{o:?}").contains("hi"), "Debug shows no value");
    }

    #[test]
    fn bad_base64_keys_and_fields_are_named() {
        let v = doc(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: '%%%', 'b/c': eA==}\nspec: {}\n",
        );
        let e = decode(DataKind::Secret, &v).unwrap_err();
        let paths: Vec<String> = e.iter().map(|(p, _)| p.to_string()).collect();
        assert!(paths.contains(&"data.a".to_string()), "{paths:?}");
        assert!(paths.contains(&"data[\"b/c\"]".to_string()), "{paths:?}");
        assert!(paths.contains(&"spec".to_string()), "{paths:?}");
    }

    #[test]
    fn a_config_map_keeps_binary_data_apart() {
        let v = doc(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: x}\nbinaryData: {a: eA==}\n",
        );
        assert!(decode(DataKind::ConfigMap, &v).is_err());
        let v = doc(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: x}\nbinaryData: {b: AAE=}\n",
        );
        let o = decode(DataKind::ConfigMap, &v).unwrap();
        assert_eq!(o.entries["b"], [0u8, 1]);
    }
}
