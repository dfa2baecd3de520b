//! Loading Tekton objects from YAML or JSON files.
//!
//! A file may hold several documents (`---`), a JSON object, a JSON array or a
//! `kind: List`. Each document is parsed with lines kept, converted from
//! v1beta1 when needed, checked against the CRD schema (unknown fields are
//! errors) and deserialized. Every problem becomes a [`Diagnostic`]; a
//! document with errors yields no object, the others still load.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diag::{Diagnostic, Severity, clip, suggest};
use crate::path::Path;
use crate::v1::{Pipeline, PipelineRun, Task, TaskRun};
use crate::v1beta1::{self, Conversion};
use crate::yaml::{self, Node};

/// The kinds Tektite reads.
pub const KINDS: &[&str] = &["Task", "TaskRun", "Pipeline", "PipelineRun"];

/// A Tekton object in its `v1` form.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Task(Box<Task>),
    TaskRun(Box<TaskRun>),
    Pipeline(Box<Pipeline>),
    PipelineRun(Box<PipelineRun>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Task(_) => "Task",
            Object::TaskRun(_) => "TaskRun",
            Object::Pipeline(_) => "Pipeline",
            Object::PipelineRun(_) => "PipelineRun",
        }
    }

    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Task(o) => &o.metadata,
            Object::TaskRun(o) => &o.metadata,
            Object::Pipeline(o) => &o.metadata,
            Object::PipelineRun(o) => &o.metadata,
        }
    }

    /// `metadata.name`, else `generateName` followed by `*`.
    pub fn display_name(&self) -> String {
        display_name(self.metadata())
    }

    /// The object as JSON (`apiVersion: tekton.dev/v1`).
    pub fn to_json(&self) -> Value {
        let v = match self {
            Object::Task(o) => serde_json::to_value(o),
            Object::TaskRun(o) => serde_json::to_value(o),
            Object::Pipeline(o) => serde_json::to_value(o),
            Object::PipelineRun(o) => serde_json::to_value(o),
        };
        // Our types serialize to JSON without fallible parts (string keys only).
        v.unwrap_or(Value::Null)
    }
}

/// One object loaded from a file, with what is needed to point back into it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// The apiVersion as written (`tekton.dev/v1beta1` for converted input).
    pub source_version: String,
    pub object: Object,
    origin: Origin,
    conversion: Option<Arc<Conversion>>,
}

/// Where a document is, enough to point a diagnostic into it: both the
/// loader (before there is an object) and validation (after) use it.
#[derive(Debug, Clone)]
struct Origin {
    file: String,
    document: usize,
    /// `Kind/name`, as read from the document.
    object: Option<String>,
    source: Arc<Source>,
    locator: Locator,
}

impl Origin {
    /// A problem past those a document shows: only counted.
    fn left_out(&self, severity: Severity) -> Diagnostic {
        Diagnostic {
            severity,
            file: String::new(),
            document: Some(self.document),
            object: None,
            line: None,
            path: String::new(),
            message: String::new(),
        }
    }

    /// A diagnostic about `path` (a v1 path, mapped back through
    /// `conversion` to what the user wrote), with its line.
    fn diagnostic(
        &self,
        severity: Severity,
        path: &Path,
        conversion: Option<&Conversion>,
        message: String,
    ) -> Diagnostic {
        let path = conversion.map_or_else(|| path.clone(), |c| c.original(path));
        // What the input chose (names, keys, references) is clipped, so
        // that many messages about one long name cannot each repeat it.
        Diagnostic {
            severity,
            file: self.file.clone(),
            document: Some(self.document),
            object: self.object.clone(),
            line: self.source.line_of(self.locator, &path),
            path: clip(&path.to_string(), MAX_PATH).into_owned(),
            message: clip(&message, MAX_MESSAGE).into_owned(),
        }
    }
}

/// A file's text, with its line-keeping parse made only when a diagnostic
/// needs a line (loading itself takes the fast path without lines).
#[derive(Debug)]
struct Source {
    text: String,
    nodes: OnceLock<Vec<Node>>,
}

/// Where a document is in its file: the YAML document, and the item when it
/// came from a JSON array or a `kind: List`.
#[derive(Debug, Clone, Copy)]
struct Locator {
    doc: usize,
    item: Option<usize>,
}

impl Source {
    /// The document at `at`, parsed again from the text.
    fn value_at(&self, at: Locator) -> Option<Value> {
        let root = yaml::parse_values(&self.text)
            .ok()?
            .into_iter()
            .nth(at.doc)?;
        match (at.item, root) {
            (None, v) => Some(v),
            (Some(i), Value::Array(items)) => items.into_iter().nth(i),
            (Some(i), Value::Object(mut m)) => match m.remove("items")? {
                Value::Array(items) => items.into_iter().nth(i),
                _ => None,
            },
            _ => None,
        }
    }

    fn line_of(&self, at: Locator, path: &Path) -> Option<usize> {
        let nodes = self.nodes.get_or_init(|| {
            yaml::parse_documents(&self.text)
                .map(|d| d.into_iter().map(|d| d.root).collect())
                .unwrap_or_default()
        });
        let root = nodes.get(at.doc)?;
        let node = match (at.item, &root.kind) {
            (None, _) => root,
            (Some(i), yaml::NodeKind::Seq(items)) => items.get(i)?,
            (Some(i), yaml::NodeKind::Map(entries)) => {
                match &entries.iter().find(|(k, _)| k == "items")?.1.kind {
                    yaml::NodeKind::Seq(items) => items.get(i)?,
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(node.line_of(path))
    }
}

impl Loaded {
    /// A diagnostic about `path` (a path in the v1 object) in this document.
    pub fn diagnostic(
        &self,
        severity: Severity,
        path: &Path,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.origin
            .diagnostic(severity, path, self.conversion.as_deref(), message.into())
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            self.object.kind(),
            self.object.display_name(),
            self.file
        )
    }
}

/// An object's name for messages: its name, `generateName*`, or `(unnamed)`.
pub fn display_name(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match (&m.name, &m.generate_name) {
        (Some(n), _) => n.clone(),
        (None, Some(g)) => format!("{g}*"),
        (None, None) => "(unnamed)".into(),
    }
}

/// What loading one file (or several) produced.
#[derive(Debug, Default)]
pub struct LoadOutput {
    pub objects: Vec<Loaded>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The longest object name, field path and message a diagnostic repeats
/// (longer ones are clipped, saying their length).
const MAX_OBJECT: usize = 120;
const MAX_PATH: usize = 400;
const MAX_MESSAGE: usize = 2000;

/// Reads and loads a file. An unreadable file is one diagnostic.
pub fn load_file(path: &std::path::Path) -> LoadOutput {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&name, &text),
        Err(e) => LoadOutput {
            objects: Vec::new(),
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file: name,
                document: None,
                object: None,
                line: None,
                path: String::new(),
                message: format!("cannot read file: {e}"),
            }],
        },
    }
}

/// Loads every document of `text`, naming `file` in diagnostics.
pub fn load_str(file: &str, text: &str) -> LoadOutput {
    let mut out = LoadOutput::default();
    // JSON is read by the YAML parser too: it rejects duplicate keys, which
    // serde_json would silently collapse.
    let docs = match yaml::parse_values(text) {
        Ok(d) => d,
        Err(e) => {
            out.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_string(),
                document: None,
                object: None,
                line: Some(e.line),
                path: String::new(),
                message: format!("invalid YAML: {}", e.message),
            });
            return out;
        }
    };
    if docs.is_empty() {
        out.diagnostics.push(file_error(file, "no documents found"));
    }
    let source = Arc::new(Source {
        text: text.to_string(),
        nodes: OnceLock::new(),
    });
    let mut index = 0;
    for (doc, root) in docs.into_iter().enumerate() {
        // A JSON array or a `kind: List` holds several objects.
        let items: Vec<(Option<usize>, Value)> = match root {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Some(i), v))
                .collect(),
            Value::Object(mut m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                match m.remove("items") {
                    Some(Value::Array(items)) => items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (Some(i), v))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            other => vec![(None, other)],
        };
        for (item, value) in items {
            index += 1;
            let at = Locator { doc, item };
            let start = out.diagnostics.len();
            load_document(file, index, value, &source, at, &mut out);
            crate::diag::cap_from(&mut out.diagnostics, start);
        }
    }
    out
}

fn file_error(file: &str, message: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        document: None,
        object: None,
        line: None,
        path: String::new(),
        message: message.to_string(),
    }
}

const REMOVED_KINDS: &[(&str, &str)] = &[
    (
        "ClusterTask",
        "ClusterTask was removed from Tekton: use a namespaced Task (kind: Task), shared through the cluster or bundles resolver",
    ),
    (
        "PipelineResource",
        "PipelineResources were removed from Tekton: use workspaces to share files and params/results for values",
    ),
    (
        "Condition",
        "Conditions were removed from Tekton: use `when` expressions on the PipelineTask",
    ),
];

fn load_document(
    file: &str,
    index: usize,
    mut value: Value,
    source: &Arc<Source>,
    at: Locator,
    out: &mut LoadOutput,
) {
    let object_name = |v: &Value| -> Option<String> {
        let kind = v.get("kind")?.as_str()?;
        let meta = v.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                meta.and_then(|m| m.get("generateName"))
                    .and_then(Value::as_str)
                    .map(|g| format!("{g}*"))
            })
            .unwrap_or_else(|| "(unnamed)".into());
        Some(format!("{kind}/{name}"))
    };
    let mut errors: Vec<(Path, String)> = Vec::new();
    let mut warnings: Vec<(Path, String)> = Vec::new();
    let origin = Origin {
        file: file.to_string(),
        document: index,
        object: object_name(&value).map(|o| clip(&o, MAX_OBJECT).into_owned()),
        source: Arc::clone(source),
        locator: at,
    };
    // Each document gets its own budget of "did you mean" comparisons.
    crate::diag::cost::reset_suggestions();
    // Past the problems a document shows (`diag::cap_from` keeps them and
    // counts the rest), a problem is not looked up in the source: a line
    // lookup walks the document, and a million of them would cost a
    // million walks.
    let start = out.diagnostics.len();
    let max = crate::diag::max_per_document();
    let emit = |out: &mut LoadOutput,
                sev: Severity,
                path: &Path,
                message: String,
                conv: Option<&Conversion>| {
        let shown = out.diagnostics.len() - start;
        let d = if max == 0 || shown < max {
            origin.diagnostic(sev, path, conv, message)
        } else {
            origin.left_out(sev)
        };
        out.diagnostics.push(d);
    };
    if !value.is_object() {
        emit(
            out,
            Severity::Error,
            &Path::root(),
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
            None,
        );
        return;
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string);
    // A removed kind says what replaces it, whatever its apiVersion.
    if let Some((_, why)) = REMOVED_KINDS
        .iter()
        .find(|(k, _)| Some(*k) == kind.as_deref())
    {
        emit(
            out,
            Severity::Error,
            &Path::root().key("kind"),
            (*why).to_string(),
            None,
        );
        return;
    }
    let expected_versions = "expected tekton.dev/v1 or tekton.dev/v1beta1";
    let api_version = match api_version {
        None => {
            emit(
                out,
                Severity::Error,
                &Path::root().key("apiVersion"),
                format!("required field is missing: {expected_versions}"),
                None,
            );
            return;
        }
        Some(v) if v == "tekton.dev/v1" || v == "tekton.dev/v1beta1" => v,
        Some(v) if v.starts_with("tekton.dev/") => {
            emit(
                out,
                Severity::Error,
                &Path::root().key("apiVersion"),
                format!("unsupported version {v:?}: {expected_versions}"),
                None,
            );
            return;
        }
        Some(v) => {
            // Manifests often mix Tekton objects with others (a PVC, a
            // ServiceAccount): those are skipped, unless the group looks like
            // a misspelt tekton.dev.
            let group = v.split('/').next().unwrap_or("");
            let near =
                group != "tekton.dev" && strsim::damerau_levenshtein(group, "tekton.dev") <= 2;
            let (severity, message) = if near {
                (
                    Severity::Error,
                    format!(
                        "{v:?} is not a Tekton API version: {expected_versions} (did you mean \"tekton.dev/v1\"?)"
                    ),
                )
            } else {
                (
                    Severity::Warning,
                    format!("{v:?} is not a Tekton API version: not checked"),
                )
            };
            emit(
                out,
                severity,
                &Path::root().key("apiVersion"),
                message,
                None,
            );
            return;
        }
    };
    let kind_path = Path::root().key("kind");
    let Some(kind) = kind else {
        emit(
            out,
            Severity::Error,
            &kind_path,
            format!(
                "required field is missing: expected one of {}",
                KINDS.join(", ")
            ),
            None,
        );
        return;
    };
    if !KINDS.contains(&kind.as_str()) {
        let msg = format!(
            "unsupported kind {kind:?}: expected one of {}{}",
            KINDS.join(", "),
            suggest(&kind, KINDS.iter().copied())
        );
        emit(out, Severity::Error, &kind_path, msg, None);
        return;
    }
    let conversion = (api_version == "tekton.dev/v1beta1").then(|| {
        let c = v1beta1::convert(&kind, &mut value);
        errors.extend(c.errors.iter().cloned());
        warnings.extend(c.warnings.iter().cloned());
        c
    });
    errors.extend(crate::schema::check(&kind, &mut value));
    if value.get("spec").is_none()
        && matches!(
            kind.as_str(),
            "Task" | "Pipeline" | "TaskRun" | "PipelineRun"
        )
    {
        errors.push((Path::root().key("spec"), "required field is missing".into()));
    }
    for (p, m) in warnings {
        emit(out, Severity::Warning, &p, m, conversion.as_ref());
    }
    if !errors.is_empty() {
        for (p, m) in errors {
            emit(out, Severity::Error, &p, m, conversion.as_ref());
        }
        return;
    }
    // The schema check has vetted shapes and types, so deserializing rarely
    // fails: do it without path tracking, and only when it fails rebuild the
    // document to find the failing field's path.
    let retry = || {
        let mut again = source.value_at(at)?;
        if api_version == "tekton.dev/v1beta1" {
            v1beta1::convert(&kind, &mut again);
        }
        crate::schema::check(&kind, &mut again);
        Some(again)
    };
    let object = match kind.as_str() {
        "Task" => typed::<Task>(value, retry).map(|o| Object::Task(Box::new(o))),
        "TaskRun" => typed::<TaskRun>(value, retry).map(|o| Object::TaskRun(Box::new(o))),
        "Pipeline" => typed::<Pipeline>(value, retry).map(|o| Object::Pipeline(Box::new(o))),
        _ => typed::<PipelineRun>(value, retry).map(|o| Object::PipelineRun(Box::new(o))),
    };
    match object {
        Ok(object) => out.objects.push(Loaded {
            file: file.to_string(),
            document: index,
            source_version: api_version,
            object,
            origin: origin.clone(),
            conversion: conversion.map(Arc::new),
        }),
        Err((p, m)) => emit(out, Severity::Error, &p, m, conversion.as_ref()),
    }
}

/// Deserializes with the failing field's path.
///
/// `again` rebuilds the same value when the fast attempt fails.
fn typed<T: DeserializeOwned>(
    value: Value,
    again: impl FnOnce() -> Option<Value>,
) -> Result<T, (Path, String)> {
    let fast_error = match serde_json::from_value(value) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let Some(value) = again() else {
        return Err((Path::root(), fast_error.to_string()));
    };
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Ok(t),
        Err(e) => {
            let path = e.path().to_string().parse().unwrap_or_default();
            Err((path, e.into_inner().to_string()))
        }
    }
}
