//! ConfigMaps and Secrets brought into a pod where no kubelet does it (a
//! local run): pure, given the objects as data.
//!
//! [`materialize`] takes a built Pod and the [`DataSet`] given with the
//! run, and returns the Pod with every `valueFrom.secretKeyRef` /
//! `configMapKeyRef` and every `envFrom` made literal env (in Kubernetes'
//! order: `envFrom` first, later sources winning, then `env`), and every
//! `configMap`, `secret` and `projected` volume made a `hostPath` directory
//! under the directory it is given, mounted read-only, with the files the
//! caller writes there ([`VolumeFiles`]). What is missing and not
//! `optional` fails with Kubernetes' message (the caller fails the TaskRun
//! with `CreateContainerConfigError`, as a kubelet's pod would stay).
//! A volume source a local run cannot provide fails too, by name, instead
//! of becoming an empty directory.
//!
//! A [`Checker`] finds the same problems earlier,
//! in a run's spec with its field paths, for names that need no more than
//! params to be known: `tkt run` refuses such input before anything runs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, EnvVar, HostPathVolumeSource, KeyToPath, Pod, PodSpec,
    SecretProjection, Volume,
};
use serde_json::Value;
use tektite_api::data::{DataKind, DataSet};
use tektite_api::v1::{TaskSpec, WorkspaceBinding};

use crate::podman::containers_mut;
use crate::subst::Vars;

/// Kubernetes' default mode of projected files (0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// The reason a TaskRun fails with when its pod's values are missing.
pub const REASON: &str = "CreateContainerConfigError";

/// A file to write into a volume's directory: `path` is relative (checked:
/// no `..`, not absolute). `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct FileToWrite {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

impl fmt::Debug for FileToWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:o}, {} bytes)",
            self.path,
            self.mode,
            self.bytes.len()
        )
    }
}

/// One volume made a directory: its name (the directory under the root
/// given to [`materialize`]) and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFiles {
    pub volume: String,
    pub files: Vec<FileToWrite>,
}

/// The pod with its values resolved, and the files to write first.
#[derive(Debug, Clone)]
pub struct Materialized {
    pub pod: Pod,
    pub volumes: Vec<VolumeFiles>,
}

/// Resolves `pod`'s env and volume sources from `data`; volume directories
/// are `dir/<volume>`.
///
/// # Errors
/// The first missing object or key that is not `optional` (Kubernetes'
/// message), a value that cannot be an environment value, a bad item path,
/// or a volume source a local run does not provide.
pub fn materialize(pod: &Pod, data: &DataSet, dir: &Path) -> Result<Materialized, String> {
    let mut pod = pod.clone();
    let mut volumes = Vec::new();
    if let Some(spec) = pod.spec.as_mut() {
        for c in containers_mut(spec) {
            resolve_env(c, data)?;
        }
        volumes = volume_files(spec, data, dir)?;
        mount_read_only(spec, &volumes);
    }
    Ok(Materialized { pod, volumes })
}

/// `c`'s `envFrom` and `env` as literal values.
fn resolve_env(c: &mut Container, data: &DataSet) -> Result<(), String> {
    let mut out: Vec<EnvVar> = Vec::new();
    for ef in c.env_from.take().unwrap_or_default() {
        let (kind, name, optional) = if let Some(r) = &ef.config_map_ref {
            (DataKind::ConfigMap, r.name.as_str(), r.optional)
        } else if let Some(r) = &ef.secret_ref {
            (DataKind::Secret, r.name.as_str(), r.optional)
        } else {
            continue;
        };
        let Some(o) = data.get(kind, name) else {
            if optional == Some(true) {
                continue;
            }
            return Err(not_found(kind, name));
        };
        let prefix = ef.prefix.clone().unwrap_or_default();
        for (k, v) in o
            .entries
            .iter()
            .filter(|(k, _)| !o.binary_keys.contains(*k))
        {
            let name = format!("{prefix}{k}");
            let value = env_text(v, kind, &o.name, k)?;
            out.retain(|e| e.name != name);
            out.push(EnvVar {
                name,
                value: Some(value),
                value_from: None,
            });
        }
    }
    for mut e in c.env.take().unwrap_or_default() {
        if let Some((kind, name, key, optional)) = key_ref(&e) {
            e.value_from = None;
            match data.get(kind, &name) {
                Some(o) => match o.env_value(&key) {
                    Some(v) => e.value = Some(env_text(v, kind, &name, &key)?),
                    None if optional => continue,
                    None => return Err(no_key(kind, &name, &key)),
                },
                None if optional => continue,
                None => return Err(not_found(kind, &name)),
            }
        }
        out.push(e);
    }
    c.env = Some(out);
    Ok(())
}

/// A `secretKeyRef` or `configMapKeyRef`: kind, object, key, optional.
fn key_ref(e: &EnvVar) -> Option<(DataKind, String, String, bool)> {
    let vf = e.value_from.as_ref()?;
    if let Some(r) = &vf.secret_key_ref {
        return Some((
            DataKind::Secret,
            r.name.clone(),
            r.key.clone(),
            r.optional == Some(true),
        ));
    }
    let r = vf.config_map_key_ref.as_ref()?;
    Some((
        DataKind::ConfigMap,
        r.name.clone(),
        r.key.clone(),
        r.optional == Some(true),
    ))
}

fn not_found(kind: DataKind, name: &str) -> String {
    format!("{} {name:?} not found", kind.lower())
}

fn no_key(kind: DataKind, name: &str, key: &str) -> String {
    format!("couldn't find key {key} in {kind} default/{name}")
}

/// A value as environment text: UTF-8 without NUL.
fn env_text(v: &[u8], kind: DataKind, name: &str, key: &str) -> Result<String, String> {
    match std::str::from_utf8(v) {
        Ok(t) if !t.contains('\0') => Ok(t.to_string()),
        _ => Err(format!(
            "key {key} of {kind} {name:?} is not text (UTF-8 without NUL): it cannot be an environment value"
        )),
    }
}

/// Volume sources a local run provides as they are (the runtime makes
/// them directories), besides those made here.
const KEPT: &[&str] = &["emptyDir", "hostPath", "persistentVolumeClaim"];

/// The engine's own ready-file volume (a `downwardAPI` the runtimes make a
/// file of).
const READY_VOLUME: &str = "tekton-internal-downward";

/// Every `configMap`, `secret` and `projected` volume of `spec` made a
/// hostPath directory under `dir`, with its files; any other source a
/// local run cannot provide is refused.
fn volume_files(
    spec: &mut PodSpec,
    data: &DataSet,
    dir: &Path,
) -> Result<Vec<VolumeFiles>, String> {
    let mut out = Vec::new();
    for v in spec.volumes.iter_mut().flatten() {
        let files = if let Some(s) = &v.config_map {
            let mode = s.default_mode.map_or(DEFAULT_MODE, to_mode);
            let name = s.name.as_str();
            project(
                DataKind::ConfigMap,
                name,
                s.items.as_deref(),
                s.optional,
                mode,
                data,
            )?
        } else if let Some(s) = &v.secret {
            let mode = s.default_mode.map_or(DEFAULT_MODE, to_mode);
            let name = s.secret_name.clone().unwrap_or_default();
            project(
                DataKind::Secret,
                &name,
                s.items.as_deref(),
                s.optional,
                mode,
                data,
            )?
        } else if let Some(p) = &v.projected {
            if let Some(e) = unsupported_source(v) {
                return Err(e);
            }
            let mode = p.default_mode.map_or(DEFAULT_MODE, to_mode);
            projected(
                &v.name,
                p.sources.as_deref().unwrap_or_default(),
                mode,
                data,
            )?
        } else {
            check_kept(v)?;
            continue;
        };
        *v = Volume {
            name: v.name.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.join(&v.name).to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        };
        out.push(VolumeFiles {
            volume: v.name.clone(),
            files,
        });
    }
    Ok(out)
}

/// Refuses a volume source a local run cannot provide.
fn check_kept(v: &Volume) -> Result<(), String> {
    if v.name == READY_VOLUME && v.downward_api.is_some() {
        return Ok(());
    }
    let json = serde_json::to_value(v).unwrap_or(Value::Null);
    let source = json
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "name").cloned());
    match source {
        Some(s) if !KEPT.contains(&s.as_str()) => Err(unsupported(&v.name, &s)),
        _ => Ok(()),
    }
}

/// Why a local run cannot provide `v`'s source, if it cannot.
fn unsupported_source(v: &Volume) -> Option<String> {
    if v.config_map.is_some() || v.secret.is_some() {
        return None;
    }
    let Some(p) = &v.projected else {
        return check_kept(v).err();
    };
    p.sources
        .iter()
        .flatten()
        .find(|s| s.config_map.is_none() && s.secret.is_none())
        .map(|s| {
            let json = serde_json::to_value(s).unwrap_or(Value::Null);
            let kind = json
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_else(|| "empty".into());
            unsupported(&v.name, &format!("projected {kind}"))
        })
}

fn unsupported(volume: &str, source: &str) -> String {
    format!(
        "volume {volume:?}: {source} volumes are not supported by local runs \
         (emptyDir, hostPath, persistentVolumeClaim, configMap, secret and projected are)"
    )
}

/// A mode as Kubernetes takes it (0 to 0777).
fn to_mode(m: i32) -> u32 {
    u32::try_from(m).unwrap_or(0) & 0o777
}

/// The files of one ConfigMap or Secret: every key, or the `items`.
fn project(
    kind: DataKind,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
    data: &DataSet,
) -> Result<Vec<FileToWrite>, String> {
    let optional = optional == Some(true);
    if name.is_empty() {
        return Err(format!("a {kind} volume source without a name"));
    }
    let Some(o) = data.get(kind, name) else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(not_found(kind, name))
        };
    };
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(o
            .entries
            .iter()
            .map(|(k, v)| FileToWrite {
                path: k.clone(),
                bytes: v.clone(),
                mode,
            })
            .collect());
    };
    let mut files = Vec::new();
    for it in items {
        let Some(v) = o.entries.get(&it.key) else {
            if optional {
                continue;
            }
            return Err(format!(
                "{} {name:?} has no key {:?} (items of its volume)",
                kind.lower(),
                it.key
            ));
        };
        check_item_path(&it.path)?;
        files.push(FileToWrite {
            path: it.path.clone(),
            bytes: v.clone(),
            mode: it.mode.map_or(mode, to_mode),
        });
    }
    Ok(files)
}

/// An item's path: relative, with no `..` part (Kubernetes' rule).
fn check_item_path(p: &str) -> Result<(), String> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && !p.starts_with("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "item path {p:?}: expected a relative path without '..'"
        ))
    }
}

/// The files of a projected volume's sources (configMap and secret; other
/// kinds of source are refused); two sources may not write one path.
fn projected(
    volume: &str,
    sources: &[k8s_openapi::api::core::v1::VolumeProjection],
    mode: u32,
    data: &DataSet,
) -> Result<Vec<FileToWrite>, String> {
    let mut files: Vec<FileToWrite> = Vec::new();
    for s in sources {
        let more = match (&s.config_map, &s.secret) {
            (
                Some(ConfigMapProjection {
                    name,
                    items,
                    optional,
                }),
                _,
            ) => project(
                DataKind::ConfigMap,
                name,
                items.as_deref(),
                *optional,
                mode,
                data,
            )?,
            (
                None,
                Some(SecretProjection {
                    name,
                    items,
                    optional,
                }),
            ) => project(
                DataKind::Secret,
                name,
                items.as_deref(),
                *optional,
                mode,
                data,
            )?,
            (None, None) => continue,
        };
        for f in more {
            if files.iter().any(|x| x.path == f.path) {
                return Err(format!(
                    "volume {volume:?}: two projected sources write {:?}",
                    f.path
                ));
            }
            files.push(f);
        }
    }
    Ok(files)
}

/// Mounts of the volumes made here are read-only, as a kubelet mounts
/// configMap, secret and projected volumes.
fn mount_read_only(spec: &mut PodSpec, volumes: &[VolumeFiles]) {
    let names: BTreeSet<&str> = volumes.iter().map(|v| v.volume.as_str()).collect();
    for c in containers_mut(spec) {
        for m in c.volume_mounts.iter_mut().flatten() {
            if names.contains(m.name.as_str()) {
                m.read_only = Some(true);
            }
        }
    }
}

/// A problem [`Checker`] found, at its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field path, e.g. `spec.taskSpec.steps[0].env[1].valueFrom.secretKeyRef`.
    pub path: String,
    pub message: String,
}

/// Substitutes the object names a container's `env[].valueFrom` and
/// `envFrom` read (`c`, a step, sidecar or template as JSON at `path`), as
/// Tekton does; the walk of the spec leaves every `name` key alone.
///
/// # Errors
/// A reference that cannot be resolved.
pub fn substitute_names(
    c: &mut Value,
    vars: &Vars,
    path: &str,
) -> Result<(), crate::subst::SubstError> {
    let refs = [
        ("env", "valueFrom", ["secretKeyRef", "configMapKeyRef"]),
        ("envFrom", "", ["secretRef", "configMapRef"]),
    ];
    for (list, under, kinds) in refs {
        let Some(Value::Array(items)) = c.get_mut(list) else {
            continue;
        };
        for (i, item) in items.iter_mut().enumerate() {
            let holder = if under.is_empty() {
                Some(item)
            } else {
                item.get_mut(under)
            };
            let Some(holder) = holder else { continue };
            for kind in kinds {
                if let Some(Value::String(n)) = holder.get_mut(kind).and_then(|r| r.get_mut("name"))
                {
                    let at = format!("{path}.{list}[{i}].{under}.{kind}.name").replace("..", ".");
                    *n = vars.str(n, &at)?;
                }
            }
        }
    }
    Ok(())
}

/// Finds, in a run's specs and bindings, every ConfigMap, Secret or key
/// that is not given and not optional, and every volume source a local run
/// cannot provide ([`Checker::check_task`], [`Checker::check_bindings`]).
#[derive(Debug)]
pub struct Checker<'a> {
    pub data: &'a DataSet,
    /// Params known before the run (names with other references are left
    /// to the run).
    pub vars: Option<&'a Vars>,
    pub problems: Vec<Problem>,
}

impl Checker<'_> {
    /// `text` with params substituted, `None` when it still refers to
    /// something only the run knows.
    fn known(&self, text: &str) -> Option<String> {
        let t = match self.vars {
            Some(v) => v.str(text, "").ok()?,
            None => text.to_string(),
        };
        (!t.contains("$(")).then_some(t)
    }

    /// Records a problem when `name` (and `key`, if given) is not there
    /// and not `optional`.
    fn need(
        &mut self,
        path: String,
        kind: DataKind,
        name: &str,
        key: Option<&str>,
        optional: bool,
    ) {
        if optional {
            return;
        }
        let (Some(name), key) = (self.known(name), key.map(|k| self.known(k))) else {
            return;
        };
        let message = match (self.data.get(kind, &name), key) {
            (None, _) => format!(
                "{kind} {name:?} is not given (give it in a file with -f, or with --{} {name}=PATH)",
                kind.lower()
            ),
            (Some(o), Some(Some(k))) if !o.entries.contains_key(&k) => {
                format!("{kind} {name:?} has no key {k:?}")
            }
            _ => return,
        };
        self.problems.push(Problem { path, message });
    }

    /// Checks a task spec at `at` (`spec.taskSpec`, `spec`, …): steps,
    /// the step template, sidecars and volumes.
    pub fn check_task(&mut self, spec: &TaskSpec, at: &str) {
        let json = serde_json::to_value(spec).unwrap_or(Value::Null);
        for list in ["steps", "sidecars"] {
            for (i, c) in json
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                self.container(c, &format!("{at}.{list}[{i}]"));
            }
        }
        if let Some(t) = json.get("stepTemplate") {
            self.container(t, &format!("{at}.stepTemplate"));
        }
        for (i, v) in spec.volumes.iter().enumerate() {
            self.volume(v, &format!("{at}.volumes[{i}]"));
        }
    }

    /// A container's (step's, sidecar's, template's) `env` and `envFrom`.
    fn container(&mut self, c: &Value, at: &str) {
        let s = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let opt = |v: &Value| v.get("optional").and_then(Value::as_bool) == Some(true);
        for (i, e) in c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (field, kind) in [
                ("secretKeyRef", DataKind::Secret),
                ("configMapKeyRef", DataKind::ConfigMap),
            ] {
                if let Some(r) = e.get("valueFrom").and_then(|f| f.get(field)) {
                    let path = format!("{at}.env[{i}].valueFrom.{field}");
                    self.need(path, kind, &s(r, "name"), Some(&s(r, "key")), opt(r));
                }
            }
        }
        for (i, e) in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (field, kind) in [
                ("secretRef", DataKind::Secret),
                ("configMapRef", DataKind::ConfigMap),
            ] {
                if let Some(r) = e.get(field) {
                    let path = format!("{at}.envFrom[{i}].{field}");
                    self.need(path, kind, &s(r, "name"), None, opt(r));
                }
            }
        }
    }

    /// A volume's `configMap`, `secret` or `projected` sources; any other
    /// source a local run cannot provide.
    fn volume(&mut self, v: &Volume, at: &str) {
        if let Some(message) = unsupported_source(v) {
            self.problems.push(Problem {
                path: at.to_string(),
                message,
            });
            return;
        }
        if let Some(s) = &v.config_map {
            self.items(
                DataKind::ConfigMap,
                &s.name,
                s.items.as_deref(),
                s.optional,
                format!("{at}.configMap"),
            );
        }
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            self.items(
                DataKind::Secret,
                &name,
                s.items.as_deref(),
                s.optional,
                format!("{at}.secret"),
            );
        }
        for (i, s) in v
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .enumerate()
        {
            let at = format!("{at}.projected.sources[{i}]");
            if let Some(c) = &s.config_map {
                self.items(
                    DataKind::ConfigMap,
                    &c.name,
                    c.items.as_deref(),
                    c.optional,
                    format!("{at}.configMap"),
                );
            }
            if let Some(c) = &s.secret {
                self.items(
                    DataKind::Secret,
                    &c.name,
                    c.items.as_deref(),
                    c.optional,
                    format!("{at}.secret"),
                );
            }
        }
    }

    /// One object of a volume, and the keys its `items` name.
    fn items(
        &mut self,
        kind: DataKind,
        name: &str,
        items: Option<&[KeyToPath]>,
        optional: Option<bool>,
        at: String,
    ) {
        let optional = optional == Some(true);
        let before = self.problems.len();
        self.need(at.clone(), kind, name, None, optional);
        if self.problems.len() > before {
            return;
        }
        for (i, it) in items.unwrap_or_default().iter().enumerate() {
            self.need(
                format!("{at}.items[{i}]"),
                kind,
                name,
                Some(&it.key),
                optional,
            );
        }
    }

    /// Checks workspace bindings at `at` (`spec.workspaces`).
    pub fn check_bindings(&mut self, bindings: &[WorkspaceBinding], at: &str) {
        for (i, b) in bindings.iter().enumerate() {
            let v = Volume {
                name: b.name.clone(),
                config_map: b.config_map.clone(),
                secret: b.secret.clone(),
                projected: b.projected.clone(),
                csi: b.csi.clone(),
                ..Default::default()
            };
            self.volume(&v, &format!("{at}[{i}]"));
        }
    }
}

#[cfg(test)]
mod tests;
