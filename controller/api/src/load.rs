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
use crate::stepaction::{self, StepAction};
use crate::v1::{Pipeline, PipelineRun, Task, TaskRun};
use crate::v1beta1::{self, Conversion};
use crate::yaml::{self, Node};

/// The kinds Tektite reads.
pub const KINDS: &[&str] = &["Task", "TaskRun", "Pipeline", "PipelineRun", "StepAction"];

/// A Tekton object in its `v1` form.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Task(Box<Task>),
    TaskRun(Box<TaskRun>),
    Pipeline(Box<Pipeline>),
    PipelineRun(Box<PipelineRun>),
    /// Read from `tekton.dev/v1beta1` or `v1alpha1` (it has no `v1`).
    StepAction(Box<StepAction>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Task(_) => "Task",
            Object::TaskRun(_) => "TaskRun",
            Object::Pipeline(_) => "Pipeline",
            Object::PipelineRun(_) => "PipelineRun",
            Object::StepAction(_) => "StepAction",
        }
    }

    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Task(o) => &o.metadata,
            Object::TaskRun(o) => &o.metadata,
            Object::Pipeline(o) => &o.metadata,
            Object::PipelineRun(o) => &o.metadata,
            Object::StepAction(o) => &o.metadata,
        }
    }

    /// `metadata.name`, else `generateName` followed by `*`.
    pub fn display_name(&self) -> String {
        display_name(self.metadata())
    }

    /// The object as JSON (`apiVersion: tekton.dev/v1`; a StepAction's
    /// `tekton.dev/v1beta1`).
    pub fn to_json(&self) -> Value {
        let v = match self {
            Object::Task(o) => serde_json::to_value(o),
            Object::TaskRun(o) => serde_json::to_value(o),
            Object::Pipeline(o) => serde_json::to_value(o),
            Object::PipelineRun(o) => serde_json::to_value(o),
            Object::StepAction(o) => serde_json::to_value(o),
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
    /// The ConfigMaps and Secrets (`v1`) among the documents.
    pub data: Vec<LoadedData>,
    pub diagnostics: Vec<Diagnostic>,
}

/// A ConfigMap or Secret read from a file.
#[derive(Debug, Clone)]
pub struct LoadedData {
    pub file: String,
    /// 1-based index of the document in the file.
    pub document: usize,
    pub object: crate::data::DataObject,
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
            data: Vec::new(),
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

/// Loads one document (`value`, the `index`th object of `file`) into
/// `out`: identify its version and kind, convert v1beta1 and check the
/// schema, then decode the typed object. Each problem becomes a
/// diagnostic; a document with errors yields no object.
fn load_document(
    file: &str,
    index: usize,
    mut value: Value,
    source: &Arc<Source>,
    at: Locator,
    out: &mut LoadOutput,
) {
    let origin = Origin {
        file: file.to_string(),
        document: index,
        object: object_label(&value).map(|o| clip(&o, MAX_OBJECT).into_owned()),
        source: Arc::clone(source),
        locator: at,
    };
    // Each document gets its own budget of "did you mean" comparisons.
    crate::diag::cost::reset_suggestions();
    let report = Reporter::new(&origin, out);
    if let Some(kind) = crate::data::kind_of(&value) {
        load_data(kind, &value, &origin, &report, out);
        return;
    }
    let id = match identify(&value) {
        Ok(id) => id,
        Err((severity, path, message)) => {
            report.emit(out, severity, &path, message, None);
            return;
        }
    };
    let checked = convert_and_check(&id, &mut value);
    let conversion = checked.conversion.as_ref();
    for (p, m) in checked.warnings {
        report.emit(out, Severity::Warning, &p, m, conversion);
    }
    if !checked.errors.is_empty() {
        for (p, m) in checked.errors {
            report.emit(out, Severity::Error, &p, m, conversion);
        }
        return;
    }
    match decode(&id, value, source, at) {
        Ok(object) => out.objects.push(Loaded {
            file: file.to_string(),
            document: index,
            source_version: id.api_version,
            object,
            origin: origin.clone(),
            conversion: checked.conversion.map(Arc::new),
        }),
        Err((p, m)) => report.emit(out, Severity::Error, &p, m, conversion),
    }
}

/// Loads a ConfigMap or Secret document into `out.data`, or its problems
/// into diagnostics.
fn load_data(
    kind: crate::data::DataKind,
    value: &Value,
    origin: &Origin,
    report: &Reporter<'_>,
    out: &mut LoadOutput,
) {
    match crate::data::decode(kind, value) {
        Ok(object) => out.data.push(LoadedData {
            file: origin.file.clone(),
            document: origin.document,
            object,
        }),
        Err(problems) => {
            for (p, m) in problems {
                report.emit(out, Severity::Error, &p, m, None);
            }
        }
    }
}

/// `Kind/name` as a document writes them (`generateName*` or `(unnamed)`
/// when it has no name), or `None` without a kind.
fn object_label(v: &Value) -> Option<String> {
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
}

/// Turns one document's problems into diagnostics. Past the problems a
/// document shows (`diag::cap_from` keeps them and counts the rest), a
/// problem is not looked up in the source: a line lookup walks the
/// document, and a million of them would cost a million walks.
struct Reporter<'o> {
    origin: &'o Origin,
    /// Where the document's diagnostics start in `out`.
    start: usize,
    max: usize,
}

impl<'o> Reporter<'o> {
    fn new(origin: &'o Origin, out: &LoadOutput) -> Self {
        Reporter {
            origin,
            start: out.diagnostics.len(),
            max: crate::diag::max_per_document(),
        }
    }

    /// Adds a problem at `path` (a v1 path, mapped back through
    /// `conversion`): a full diagnostic, or a counted one past the share.
    fn emit(
        &self,
        out: &mut LoadOutput,
        severity: Severity,
        path: &Path,
        message: String,
        conversion: Option<&Conversion>,
    ) {
        let shown = out.diagnostics.len() - self.start;
        let d = if self.max == 0 || shown < self.max {
            self.origin.diagnostic(severity, path, conversion, message)
        } else {
            self.origin.left_out(severity)
        };
        out.diagnostics.push(d);
    }
}

/// A problem that stops a document before it is checked further.
type Problem = (Severity, Path, String);

/// What a document is: a Tekton version and a kind Tektite reads.
struct Identity {
    api_version: String,
    kind: String,
}

/// A document's apiVersion and kind, or the one problem that stops it: not
/// a mapping, a removed kind, a version or kind Tektite does not read (a
/// version outside tekton.dev is skipped with a warning).
fn identify(value: &Value) -> Result<Identity, Problem> {
    if !value.is_object() {
        return Err((
            Severity::Error,
            Path::root(),
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        ));
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
        return Err((
            Severity::Error,
            Path::root().key("kind"),
            (*why).to_string(),
        ));
    }
    if kind.as_deref() == Some("StepAction") {
        return step_action_version(api_version).map(|api_version| Identity {
            api_version,
            kind: "StepAction".into(),
        });
    }
    let api_version = tekton_version(api_version)?;
    let kind = tekton_kind(kind)?;
    Ok(Identity { api_version, kind })
}

/// The apiVersion of a StepAction: `tekton.dev/v1beta1` or `v1alpha1`, the
/// versions Tekton serves it as (there is no `v1` StepAction).
fn step_action_version(api_version: Option<String>) -> Result<String, Problem> {
    let at = Path::root().key("apiVersion");
    let expected = "expected tekton.dev/v1beta1 (or tekton.dev/v1alpha1) for a StepAction";
    match api_version {
        Some(v) if v == stepaction::API_VERSION || v == stepaction::ALPHA_VERSION => Ok(v),
        None => Err((
            Severity::Error,
            at,
            format!("required field is missing: {expected}"),
        )),
        Some(v) => Err((
            Severity::Error,
            at,
            format!("unsupported version {v:?}: {expected}"),
        )),
    }
}

/// The apiVersion, when it is one Tektite reads.
fn tekton_version(api_version: Option<String>) -> Result<String, Problem> {
    let expected_versions = "expected tekton.dev/v1 or tekton.dev/v1beta1";
    let at = Path::root().key("apiVersion");
    match api_version {
        None => Err((
            Severity::Error,
            at,
            format!("required field is missing: {expected_versions}"),
        )),
        Some(v) if v == "tekton.dev/v1" || v == "tekton.dev/v1beta1" => Ok(v),
        Some(v) if v.starts_with("tekton.dev/") => Err((
            Severity::Error,
            at,
            format!("unsupported version {v:?}: {expected_versions}"),
        )),
        Some(v) => {
            // Manifests often mix Tekton objects with others (a PVC, a
            // ServiceAccount): those are skipped, unless the group looks like
            // a misspelt tekton.dev.
            let group = v.split('/').next().unwrap_or("");
            let near =
                group != "tekton.dev" && strsim::damerau_levenshtein(group, "tekton.dev") <= 2;
            Err(if near {
                (
                    Severity::Error,
                    at,
                    format!(
                        "{v:?} is not a Tekton API version: {expected_versions} (did you mean \"tekton.dev/v1\"?)"
                    ),
                )
            } else {
                (
                    Severity::Warning,
                    at,
                    format!("{v:?} is not a Tekton API version: not checked"),
                )
            })
        }
    }
}

/// The kind, when it is one of [`KINDS`].
fn tekton_kind(kind: Option<String>) -> Result<String, Problem> {
    let at = Path::root().key("kind");
    let Some(kind) = kind else {
        return Err((
            Severity::Error,
            at,
            format!(
                "required field is missing: expected one of {}",
                KINDS.join(", ")
            ),
        ));
    };
    if !KINDS.contains(&kind.as_str()) {
        let msg = format!(
            "unsupported kind {kind:?}: expected one of {}{}",
            KINDS.join(", "),
            suggest(&kind, KINDS.iter().copied())
        );
        return Err((Severity::Error, at, msg));
    }
    Ok(kind)
}

/// A document converted to v1 and checked against the CRD schema.
struct Checked {
    /// How a v1beta1 document was converted (to map paths back).
    conversion: Option<Conversion>,
    errors: Vec<(Path, String)>,
    warnings: Vec<(Path, String)>,
}

/// Converts a v1beta1 document to v1 in place, then checks it against the
/// schema of its kind and that it has a spec.
fn convert_and_check(id: &Identity, value: &mut Value) -> Checked {
    let mut errors: Vec<(Path, String)> = Vec::new();
    let mut warnings: Vec<(Path, String)> = Vec::new();
    let conversion =
        (id.api_version == "tekton.dev/v1beta1" && id.kind != "StepAction").then(|| {
            let c = v1beta1::convert(&id.kind, value);
            errors.extend(c.errors.iter().cloned());
            warnings.extend(c.warnings.iter().cloned());
            c
        });
    errors.extend(crate::schema::check(&id.kind, value));
    if value.get("spec").is_none()
        && matches!(
            id.kind.as_str(),
            "Task" | "Pipeline" | "TaskRun" | "PipelineRun" | "StepAction"
        )
    {
        errors.push((Path::root().key("spec"), "required field is missing".into()));
    }
    Checked {
        conversion,
        errors,
        warnings,
    }
}

/// The typed object of a checked document, or the failing field's path
/// and why.
///
/// The schema check has vetted shapes and types, so deserializing rarely
/// fails: it is done without path tracking, and only when it fails is the
/// document rebuilt from `source` to find the failing field's path.
fn decode(
    id: &Identity,
    value: Value,
    source: &Source,
    at: Locator,
) -> Result<Object, (Path, String)> {
    let retry = || {
        let mut again = source.value_at(at)?;
        if id.api_version == "tekton.dev/v1beta1" && id.kind != "StepAction" {
            v1beta1::convert(&id.kind, &mut again);
        }
        crate::schema::check(&id.kind, &mut again);
        Some(again)
    };
    match id.kind.as_str() {
        "Task" => typed::<Task>(value, retry).map(|o| Object::Task(Box::new(o))),
        "TaskRun" => typed::<TaskRun>(value, retry).map(|o| Object::TaskRun(Box::new(o))),
        "Pipeline" => typed::<Pipeline>(value, retry).map(|o| Object::Pipeline(Box::new(o))),
        "StepAction" => typed::<StepAction>(value, retry).map(|o| Object::StepAction(Box::new(o))),
        _ => typed::<PipelineRun>(value, retry).map(|o| Object::PipelineRun(Box::new(o))),
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
