//! Validation as strict as Tekton's admission webhook, run on typed `v1`
//! objects. One pass collects every problem with its field path.
//!
//! Objects loaded together form a catalog: a PipelineRun whose `pipelineRef`
//! names a Pipeline in the same set is checked against it (missing params,
//! unbound workspaces, unknown `taskRunSpecs`), and so are `taskRef`s.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::dag;
use crate::diag::{Cap, Diagnostic, Severity, suggest};
use crate::load::{Loaded, Object};
use crate::path::Path;
use crate::refs::{self, Part};
use crate::v1::*;

static NO_PROPERTIES: std::collections::BTreeMap<String, PropertySpec> =
    std::collections::BTreeMap::new();

/// Tekton's default cap on matrix combinations.
pub const MAX_MATRIX_COMBINATIONS: usize = 256;

/// One problem found by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: Path,
    pub message: String,
}

/// Tasks and Pipelines known by name, for checking references to them.
#[derive(Debug, Default)]
pub struct Catalog<'a> {
    pub tasks: HashMap<String, &'a TaskSpec>,
    pub pipelines: HashMap<String, &'a PipelineSpec>,
}

impl<'a> Catalog<'a> {
    pub fn from_loaded(objects: &'a [Loaded]) -> Self {
        let mut c = Catalog::default();
        for o in objects {
            match &o.object {
                Object::Task(t) => {
                    if let Some(n) = &t.metadata.name {
                        c.tasks.insert(n.clone(), &t.spec);
                    }
                }
                Object::Pipeline(p) => {
                    if let Some(n) = &p.metadata.name {
                        c.pipelines.insert(n.clone(), &p.spec);
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn task(&self, r: &TaskRef) -> Option<&'a TaskSpec> {
        if r.resolver.is_some() || r.kind.as_deref().is_some_and(|k| k != "Task") {
            return None;
        }
        r.name.as_ref().and_then(|n| self.tasks.get(n).copied())
    }

    fn pipeline(&self, r: &PipelineRef) -> Option<&'a PipelineSpec> {
        if r.resolver.is_some() {
            return None;
        }
        r.name.as_ref().and_then(|n| self.pipelines.get(n).copied())
    }
}

/// Validates every loaded object; diagnostics point into their files.
pub fn validate_all(objects: &[Loaded]) -> Vec<Diagnostic> {
    let catalog = Catalog::from_loaded(objects);
    let mut out = Vec::new();
    let mut seen: HashMap<(String, String, String), (&str, usize)> = HashMap::new();
    for o in objects {
        let meta = o.object.metadata();
        if let Some(name) = &meta.name {
            let key = (
                o.object.kind().to_string(),
                meta.namespace.clone().unwrap_or_default(),
                name.clone(),
            );
            if let Some((file, doc)) = seen.get(&key) {
                let first = if *file == o.file {
                    format!("document {doc}")
                } else {
                    format!("{file}, document {doc}")
                };
                out.push(o.diagnostic(
                    Severity::Error,
                    &Path::root().key("metadata").key("name"),
                    format!(
                        "{} {name:?} is defined twice (first in {first})",
                        o.object.kind()
                    ),
                ));
            } else {
                seen.insert(key, (&o.file, o.document));
            }
        }
        for f in validate(&o.object, &catalog) {
            out.push(o.diagnostic(f.severity, &f.path, f.message));
        }
    }
    out
}

/// Validates one object.
pub fn validate<'a>(object: &'a Object, catalog: &Catalog<'a>) -> Vec<Finding> {
    crate::diag::cost::reset_suggestions();
    let mut v = Checker {
        out: Vec::new(),
        cap: Cap::default(),
        catalog,
        lenient: false,
    };
    let root = Path::root();
    let meta = root.key("metadata");
    match object {
        Object::Task(t) => {
            v.object_name(&t.metadata, &meta, false);
            v.task_spec(&t.spec, &root.key("spec"), &Outer::None);
        }
        Object::Pipeline(p) => {
            v.object_name(&p.metadata, &meta, false);
            v.pipeline_spec(&p.spec, &root.key("spec"));
        }
        Object::TaskRun(tr) => {
            v.object_name(&tr.metadata, &meta, true);
            v.taskrun_spec(&tr.spec, &root.key("spec"));
        }
        Object::PipelineRun(pr) => {
            v.object_name(&pr.metadata, &meta, true);
            v.pipelinerun_spec(&pr.spec, &root.key("spec"));
        }
    }
    if let Some(summary) = v.cap.summary() {
        v.out.push(Finding {
            severity: Severity::Warning,
            path: Path::root(),
            message: summary,
        });
    }
    v.out
}

// ---------------------------------------------------------------- name and format checks

/// DNS-1123 label: lower-case alphanumerics and `-`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain: labels joined by `.`, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Why a workspace's `subPath` would leave its volume (absolute, or with a
/// `..` part), or `None` when it stays inside. Checked on the text here
/// and again after substitution by the engine, since params flow into it.
pub fn sub_path_problem(sp: &str) -> Option<String> {
    (sp.starts_with('/') || sp.split('/').any(|s| s == "..")).then(|| {
        format!("{sp:?} must be a relative path inside the volume (no leading '/' or '..')")
    })
}

/// Why a `claimName` is not the name of a claim (a DNS-1123 subdomain),
/// or `None`. Runtimes make a claim's directory from its name.
pub fn claim_name_problem(name: &str) -> Option<String> {
    (!is_dns1123_subdomain(name)).then(|| {
        format!(
            "{name:?} is not a valid claim name: expected lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (DNS-1123 subdomain)"
        )
    })
}

fn is_param_name(s: &str, object: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '-' || c.is_ascii_alphanumeric() || (!object && c == '.'))
}

fn is_result_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Parses a Go duration (`1h30m`, `90s`, `1.5h`, `0`) into nanoseconds.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(s: &str) -> Result<i128, String> {
    let (negative, d) = tektite_entrypoint::parse_go_duration(s).ok_or_else(|| {
        format!("{s:?} is not a duration: expected a Go duration such as 90s, 10m or 1h30m")
    })?;
    let ns = i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
    Ok(if negative { -ns } else { ns })
}

/// A timeout: a Go duration of at least zero, in nanoseconds (what the
/// `timeout` fields take, and `tkt run --timeout`).
///
/// # Errors
/// A message saying what was expected.
pub fn timeout_duration(s: &str) -> Result<i128, String> {
    match parse_duration(s)? {
        ns if ns < 0 => Err(format!("{s:?} is negative: expected a duration >= 0")),
        // Go's durations are nanoseconds in an int64: Kubernetes' Tekton
        // cannot hold a longer one.
        ns if ns > i128::from(i64::MAX) => Err(format!(
            "{s:?} is longer than the longest duration, 2562047h47m16.854775807s"
        )),
        ns => Ok(ns),
    }
}

fn fmt_duration(ns: i128) -> String {
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 || h > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

// ---------------------------------------------------------------- reference scopes

/// What encloses a Task spec being validated.
enum Outer<'p> {
    /// A Task or a TaskRun's spec.
    None,
    /// An embedded `taskSpec` of a PipelineTask: pipeline params propagate,
    /// and pipeline-level variables are allowed.
    Pipeline(&'p PipelineCtx<'p>),
}

/// What a Pipeline offers to references inside it.
struct PipelineCtx<'a> {
    spec: &'a PipelineSpec,
    /// Results declared by each task whose spec is known.
    results: HashMap<&'a str, Option<Vec<&'a TaskResult>>>,
    finally: HashSet<&'a str>,
    /// Names of `tasks` (not finally), for O(1) lookups in big pipelines.
    tasks: HashSet<&'a str>,
}

impl PipelineCtx<'_> {
    /// Task names in the order written, for suggestions.
    fn task_names(&self) -> impl Iterator<Item = &str> {
        self.spec.tasks.iter().map(|x| x.name.as_str())
    }
}

/// Where a string being checked sits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Site<'a> {
    /// In a Task: steps, sidecars, volumes, …
    Task {
        in_finally: Option<bool>,
        self_task: Option<&'a str>,
    },
    /// In a PipelineTask's params, when, matrix, workspaces.
    PipelineTask {
        in_finally: bool,
        self_task: &'a str,
    },
    /// In a Pipeline's results.
    PipelineResults,
}

/// What references in a string may name.
struct Scope<'a> {
    params: Vec<&'a ParamSpec>,
    workspaces: Vec<&'a str>,
    task_results: Vec<&'a str>,
    steps: Vec<(String, Vec<&'a str>)>,
    step_results: Vec<&'a str>,
    pipeline: Option<&'a PipelineCtx<'a>>,
    site: Site<'a>,
}

impl<'a> Scope<'a> {
    /// Inside a Task spec: its params (and, when it is embedded in a
    /// Pipeline, the Pipeline's it does not shadow), workspaces, results
    /// and steps (unnamed ones as `unnamed-<i>`).
    fn task(spec: &'a TaskSpec, pipeline: Option<&'a PipelineCtx<'a>>) -> Self {
        let steps: Vec<(String, Vec<&str>)> = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = if s.name.is_empty() {
                    format!("unnamed-{i}")
                } else {
                    s.name.clone()
                };
                (name, s.results.iter().map(|r| r.name.as_str()).collect())
            })
            .collect();
        let mut params: Vec<&ParamSpec> = spec.params.iter().collect();
        if let Some(p) = pipeline {
            // Pipeline params propagate into embedded specs.
            params.extend(
                p.spec
                    .params
                    .iter()
                    .filter(|pp| !spec.params.iter().any(|tp| tp.name == pp.name)),
            );
        }
        Scope {
            params,
            workspaces: spec.workspaces.iter().map(|w| w.name.as_str()).collect(),
            task_results: spec.results.iter().map(|r| r.name.as_str()).collect(),
            steps,
            step_results: Vec::new(),
            pipeline,
            site: Site::Task {
                in_finally: None,
                self_task: None,
            },
        }
    }

    /// In a Pipeline's own fields (`site`): its params and workspaces.
    fn pipeline(ctx: &'a PipelineCtx<'a>, site: Site<'a>) -> Self {
        Scope {
            params: ctx.spec.params.iter().collect(),
            workspaces: ctx
                .spec
                .workspaces
                .iter()
                .map(|w| w.name.as_str())
                .collect(),
            task_results: Vec::new(),
            steps: Vec::new(),
            step_results: Vec::new(),
            pipeline: Some(ctx),
            site,
        }
    }
}

struct Checker<'c, 'a> {
    out: Vec<Finding>,
    /// How many problems are kept (the rest are counted).
    cap: Cap,
    catalog: &'c Catalog<'a>,
    /// Set while checking a field Tekton's webhook does not check for
    /// variable references: problems there are warnings, so Tasks Tekton
    /// accepts are not rejected (the reference is left as written).
    lenient: bool,
}

impl<'a> Checker<'_, 'a> {
    fn err(&mut self, path: &Path, message: impl Into<String>) {
        if !self.cap.admit() {
            return;
        }
        self.out.push(Finding {
            severity: Severity::Error,
            path: path.clone(),
            message: message.into(),
        });
    }

    /// A problem with a variable reference: an error, or a warning in a
    /// field Tekton does not check (see `lenient`).
    fn ref_err(&mut self, path: &Path, message: impl Into<String>) {
        if self.lenient {
            let message = format!(
                "{} (Tekton does not check this field; the reference would be left as written)",
                message.into()
            );
            self.warn(path, message);
        } else {
            self.err(path, message);
        }
    }

    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        if !self.cap.admit() {
            return;
        }
        self.out.push(Finding {
            severity: Severity::Warning,
            path: path.clone(),
            message: message.into(),
        });
    }

    fn object_name(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        path: &Path,
        run: bool,
    ) {
        match (&meta.name, &meta.generate_name) {
            (Some(n), _) => {
                if !is_dns1123_subdomain(n) {
                    self.err(
                        &path.key("name"),
                        format!("{n:?} is not a valid name: expected lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (DNS-1123 subdomain)"),
                    );
                }
            }
            (None, Some(g)) if run => {
                let base = g.trim_end_matches('-');
                if !is_dns1123_subdomain(base) {
                    self.err(&path.key("generateName"), format!("{g:?} is not a valid name prefix: expected lower-case letters, digits and '-'"));
                }
            }
            (None, Some(_)) => self.err(
                &path.key("name"),
                "required field is missing (generateName is only for runs)",
            ),
            (None, None) => self.err(
                &path.key("name"),
                if run {
                    "required field is missing: set name or generateName"
                } else {
                    "required field is missing"
                },
            ),
        }
        if let Some(ns) = &meta.namespace
            && !is_dns1123_label(ns)
        {
            self.err(
                &path.key("namespace"),
                format!("{ns:?} is not a valid namespace: expected a DNS-1123 label"),
            );
        }
    }

    fn duration(&mut self, d: Option<&String>, path: &Path) -> Option<i128> {
        match timeout_duration(d?) {
            Ok(ns) => Some(ns),
            Err(m) => {
                self.err(path, m);
                None
            }
        }
    }

    fn unique<'s>(
        &mut self,
        items: impl IntoIterator<Item = (usize, &'s str)>,
        path: &Path,
        field: &'static str,
        what: &str,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in items {
            if let Some(first) = seen.get(name) {
                self.err(
                    &path.idx(i).key(field),
                    format!("duplicate {what} {name:?} (also at index {first})"),
                );
            } else {
                seen.insert(name, i);
            }
        }
    }

    // ------------------------------------------------------------ params

    /// Param declarations: each named once, with a valid name when
    /// `check_names` (Pipelines take any), and each [`Self::param_spec`].
    fn param_specs(&mut self, specs: &[ParamSpec], path: &Path, check_names: bool) {
        self.unique(
            specs.iter().enumerate().map(|(i, p)| (i, p.name.as_str())),
            path,
            "name",
            "param",
        );
        for (i, p) in specs.iter().enumerate() {
            self.param_spec(p, &path.idx(i), check_names);
        }
    }

    /// One param declaration: its name, properties (declared by object
    /// params only, as strings), default and enum.
    fn param_spec(&mut self, p: &ParamSpec, pp: &Path, check_names: bool) {
        let ty = p.kind();
        if p.name.is_empty() {
            self.err(&pp.key("name"), "required field is missing");
        } else if check_names && !is_param_name(&p.name, ty == "object") {
            self.err(
                &pp.key("name"),
                if ty == "object" {
                    format!("{:?} is not a valid object param name: expected letters, digits, '_' and '-', starting with a letter or '_'", p.name)
                } else {
                    format!("{:?} is not a valid param name: expected letters, digits, '_', '-' and '.', starting with a letter or '_'", p.name)
                },
            );
        }
        if ty == "object" {
            if p.properties.is_empty() {
                self.err(
                    &pp.key("properties"),
                    "object params need properties: declare each key",
                );
            }
        } else if !p.properties.is_empty() {
            self.err(
                &pp.key("properties"),
                format!("properties are only for object params, this one is {ty}"),
            );
        }
        for (k, prop) in &p.properties {
            if let Some(t) = &prop.type_
                && t != "string"
            {
                self.err(
                    &pp.key("properties").key_owned(k).key("type"),
                    format!("{t:?} is not supported: object keys are strings"),
                );
            }
        }
        if let Some(d) = &p.default {
            self.param_default(p, d, pp, ty);
        }
        if !p.enum_.is_empty() {
            self.param_enum(p, pp, ty);
        }
    }

    /// A param's default `d`: of the declared type `ty`, with every key of
    /// an object param.
    fn param_default(&mut self, p: &ParamSpec, d: &ParamValue, pp: &Path, ty: &str) {
        if d.kind() != ty {
            self.err(
                &pp.key("default"),
                format!(
                    "default is {} {} but the param is declared {ty}",
                    article(d.kind()),
                    d.kind()
                ),
            );
        }
        if let (ParamValue::Object(obj), true) = (d, ty == "object") {
            for k in p.properties.keys() {
                if !obj.contains_key(k) {
                    self.err(
                        &pp.key("default"),
                        format!("default has no value for key {k:?}"),
                    );
                }
            }
        }
    }

    /// A param's enum: only for string params, values listed once, the
    /// default one of them.
    fn param_enum(&mut self, p: &ParamSpec, pp: &Path, ty: &str) {
        if ty != "string" {
            self.err(
                &pp.key("enum"),
                format!("enum is only for string params, this one is {ty}"),
            );
        }
        let mut seen = HashSet::new();
        for (j, e) in p.enum_.iter().enumerate() {
            if !seen.insert(e) {
                self.err(
                    &pp.key("enum").idx(j),
                    format!("duplicate enum value {e:?}"),
                );
            }
        }
        if let Some(ParamValue::String(d)) = &p.default
            && !p.enum_.contains(d)
        {
            self.err(
                &pp.key("default"),
                format!(
                    "default {d:?} is not one of the enum values: {}",
                    p.enum_.join(", ")
                ),
            );
        }
    }

    /// Values given to params declared in `specs`: every required param is
    /// given, types match, enum values hold. `given_elsewhere` names params
    /// supplied another way (matrix, pipeline propagation).
    fn param_values(
        &mut self,
        values: &[Param],
        specs: &[ParamSpec],
        path: &Path,
        missing_at: &Path,
        given_elsewhere: &dyn Fn(&str) -> bool,
        who: &str,
    ) {
        let mut missing = Vec::new();
        for s in specs {
            if s.default.is_none()
                && !values.iter().any(|v| v.name == s.name)
                && !given_elsewhere(&s.name)
            {
                missing.push(s.name.as_str());
            }
        }
        if !missing.is_empty() {
            self.err(
                missing_at,
                format!(
                    "missing value for required param{} of {who}: {}",
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", ")
                ),
            );
        }
        for (i, v) in values.iter().enumerate() {
            let Some(s) = specs.iter().find(|s| s.name == v.name) else {
                continue;
            };
            let vp = path.idx(i).key("value");
            let declared = s.kind();
            let given = v.value.kind();
            let whole_ref = match &v.value {
                ParamValue::String(st) => is_whole_reference(st),
                _ => false,
            };
            if given != declared && !whole_ref {
                self.err(
                    &vp,
                    format!(
                        "param {:?} of {who} is declared {declared} but is given {} {given}",
                        v.name,
                        article(given)
                    ),
                );
            }
            if let (ParamValue::String(st), false) = (&v.value, s.enum_.is_empty())
                && refs::scan(st).is_empty()
                && !s.enum_.contains(st)
            {
                self.err(
                    &vp,
                    format!(
                        "{st:?} is not one of the allowed values of param {:?}: {}",
                        v.name,
                        s.enum_.join(", ")
                    ),
                );
            }
            if let (ParamValue::Object(obj), "object") = (&v.value, declared) {
                for k in s.properties.keys() {
                    if !obj.contains_key(k)
                        && !s.default.as_ref().is_some_and(
                            |d| matches!(d, ParamValue::Object(o) if o.contains_key(k)),
                        )
                    {
                        self.err(
                            &vp,
                            format!("object param {:?} of {who} needs key {k:?}", v.name),
                        );
                    }
                }
            }
        }
    }

    fn run_params(&mut self, values: &[Param], path: &Path) {
        // Tekton compares run param names case-insensitively.
        let lower: Vec<String> = values.iter().map(|p| p.name.to_ascii_lowercase()).collect();
        self.unique(
            lower.iter().enumerate().map(|(i, n)| (i, n.as_str())),
            path,
            "name",
            "param",
        );
    }

    // ------------------------------------------------------------ results, workspaces

    fn result_decls<'r>(
        &mut self,
        items: impl Iterator<
            Item = (
                &'r str,
                Option<&'r String>,
                &'r std::collections::BTreeMap<String, PropertySpec>,
            ),
        >,
        path: &Path,
    ) {
        let items: Vec<_> = items.collect();
        self.unique(
            items.iter().enumerate().map(|(i, (n, _, _))| (i, *n)),
            path,
            "name",
            "result",
        );
        for (i, (name, ty, props)) in items.iter().enumerate() {
            let rp = path.idx(i);
            if !is_result_name(name) {
                self.err(
                    &rp.key("name"),
                    format!("{name:?} is not a valid result name: expected letters, digits, '-', '_' and '.', starting and ending with a letter or digit"),
                );
            }
            if ty.map(String::as_str) == Some("object") && props.is_empty() {
                self.err(
                    &rp.key("properties"),
                    "object results need properties: declare each key",
                );
            }
        }
    }

    fn bindings(&mut self, bindings: &[WorkspaceBinding], path: &Path) {
        self.unique(
            bindings
                .iter()
                .enumerate()
                .map(|(i, b)| (i, b.name.as_str())),
            path,
            "name",
            "workspace binding",
        );
        for (i, b) in bindings.iter().enumerate() {
            let bp = path.idx(i);
            let sources = b.sources();
            match sources.len() {
                0 => self.err(
                    &bp,
                    format!("workspace {:?} has no volume: set one of persistentVolumeClaim, volumeClaimTemplate, emptyDir, configMap, secret, projected, csi", b.name),
                ),
                1 => {}
                _ => self.err(&bp, format!("workspace {:?} sets {}: expected exactly one volume source", b.name, sources.join(" and "))),
            }
            if let Some(pvc) = &b.persistent_volume_claim {
                let at = bp.key("persistentVolumeClaim").key("claimName");
                if pvc.claim_name.is_empty() {
                    self.err(&at, "required field is missing");
                } else if !pvc.claim_name.contains("$(")
                    && let Some(problem) = claim_name_problem(&pvc.claim_name)
                {
                    self.err(&at, problem);
                }
            }
            if b.config_map.as_ref().is_some_and(|c| c.name.is_empty()) {
                self.err(
                    &bp.key("configMap").key("name"),
                    "required field is missing",
                );
            }
            if b.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref().unwrap_or("").is_empty())
            {
                self.err(
                    &bp.key("secret").key("secretName"),
                    "required field is missing",
                );
            }
            if b.csi.as_ref().is_some_and(|c| c.driver.is_empty()) {
                self.err(&bp.key("csi").key("driver"), "required field is missing");
            }
            if let Some(problem) = b.sub_path.as_deref().and_then(sub_path_problem) {
                self.err(&bp.key("subPath"), problem);
            }
        }
    }

    fn required_workspaces(
        &mut self,
        bound: &[&str],
        decls: impl Iterator<Item = (&'a str, bool)>,
        at: &Path,
        who: &str,
    ) {
        let missing: Vec<&str> = decls
            .filter(|(n, optional)| !optional && !bound.contains(n))
            .map(|(n, _)| n)
            .collect();
        if !missing.is_empty() {
            self.err(
                at,
                format!(
                    "{who} needs workspace{} that {} not bound: {}",
                    if missing.len() > 1 { "s" } else { "" },
                    if missing.len() > 1 { "are" } else { "is" },
                    missing.join(", ")
                ),
            );
        }
    }

    // ------------------------------------------------------------ Task

    /// A Task's spec, or one embedded in a Pipeline (`outer`): what it
    /// declares, then each step, the step template, sidecars, volumes and
    /// result values, with the references each may make.
    fn task_spec(&mut self, spec: &TaskSpec, path: &Path, outer: &Outer<'_>) {
        let pipeline = match outer {
            Outer::Pipeline(p) => Some(*p),
            Outer::None => None,
        };
        self.task_declarations(spec, path);
        let mut scope = Scope::task(spec, pipeline);
        self.steps(spec, path, &mut scope);
        self.sidecars(spec, path, &scope);
        for (i, v) in spec.volumes.iter().enumerate() {
            self.strings_of(v, &path.key("volumes").idx(i), &scope, |_| false);
        }
        self.task_result_values(spec, path, &scope);
    }

    /// What a Task declares: params, at least one step, and steps,
    /// sidecars, volumes, workspaces and results each named once.
    fn task_declarations(&mut self, spec: &TaskSpec, path: &Path) {
        self.param_specs(&spec.params, &path.key("params"), true);
        let steps_path = path.key("steps");
        if spec.steps.is_empty() {
            self.err(&steps_path, "a Task needs at least one step");
        }
        let named: Vec<(usize, &str)> = spec
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.name.is_empty())
            .map(|(i, s)| (i, s.name.as_str()))
            .collect();
        self.unique(named.iter().copied(), &steps_path, "name", "step name");
        self.unique(
            spec.sidecars
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.name.as_str())),
            &path.key("sidecars"),
            "name",
            "sidecar name",
        );
        self.unique(
            spec.volumes
                .iter()
                .enumerate()
                .map(|(i, v)| (i, v.name.as_str())),
            &path.key("volumes"),
            "name",
            "volume name",
        );
        self.task_workspace_decls(&spec.workspaces, &path.key("workspaces"));
        self.result_decls(
            spec.results
                .iter()
                .map(|r| (r.name.as_str(), r.type_.as_ref(), &r.properties)),
            &path.key("results"),
        );
    }

    /// A Task's workspace declarations: each named, and names and mount
    /// paths (by default `/workspace/<name>`) used once.
    fn task_workspace_decls(&mut self, workspaces: &[WorkspaceDeclaration], path: &Path) {
        self.unique(
            workspaces
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w.name.as_str())),
            path,
            "name",
            "workspace",
        );
        let mounts: Vec<(usize, String)> = workspaces
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (
                    i,
                    w.mount_path
                        .clone()
                        .unwrap_or_else(|| format!("/workspace/{}", w.name)),
                )
            })
            .collect();
        self.unique(
            mounts.iter().map(|(i, m)| (*i, m.as_str())),
            path,
            "mountPath",
            "workspace mountPath",
        );
        for (i, w) in workspaces.iter().enumerate() {
            if w.name.is_empty() {
                self.err(&path.idx(i).key("name"), "required field is missing");
            }
        }
    }

    /// Each step (its fields, then its references, with its own results in
    /// scope), and the step template's references and mounts.
    fn steps<'s>(&mut self, spec: &'s TaskSpec, path: &Path, scope: &mut Scope<'s>) {
        let steps_path = path.key("steps");
        let template_image = spec.step_template.as_ref().and_then(|t| t.image.as_ref());
        for (i, step) in spec.steps.iter().enumerate() {
            let sp = steps_path.idx(i);
            self.step(step, &sp, template_image.is_some(), spec);
            scope.step_results = step.results.iter().map(|r| r.name.as_str()).collect();
            self.strings_of(step, &sp, scope, step_field_is_checked);
        }
        scope.step_results = Vec::new();
        if let Some(t) = &spec.step_template {
            self.strings_of(t, &path.key("stepTemplate"), scope, |_| false);
            self.volume_mounts(
                &t.volume_mounts,
                &path.key("stepTemplate").key("volumeMounts"),
            );
        }
    }

    /// Each sidecar: a name (a DNS-1123 label, not the reserved one), an
    /// image, script or command, workspaces the Task declares, and its
    /// references.
    fn sidecars(&mut self, spec: &TaskSpec, path: &Path, scope: &Scope<'_>) {
        for (i, s) in spec.sidecars.iter().enumerate() {
            let sp = path.key("sidecars").idx(i);
            if s.name.is_empty() {
                self.err(&sp.key("name"), "required field is missing");
            } else if s.name == "tekton-log-results" {
                self.err(&sp.key("name"), "\"tekton-log-results\" is reserved");
            } else if !is_dns1123_label(&s.name) {
                self.err(
                    &sp.key("name"),
                    format!(
                        "{:?} is not a valid sidecar name: expected a DNS-1123 label",
                        s.name
                    ),
                );
            }
            if s.image.as_deref().unwrap_or("").is_empty() {
                self.err(&sp.key("image"), "required field is missing");
            }
            if s.script.is_some() && !s.command.is_empty() {
                self.err(
                    &sp.key("script"),
                    "script and command cannot be used together",
                );
            }
            for (j, w) in s.workspaces.iter().enumerate() {
                if !scope.workspaces.contains(&w.name.as_str()) {
                    self.err(
                        &sp.key("workspaces").idx(j).key("name"),
                        format!(
                            "workspace {:?} is not declared by the Task{}",
                            w.name,
                            suggest(&w.name, scope.workspaces.iter().copied())
                        ),
                    );
                }
            }
            self.strings_of(s, &sp, scope, |_| false);
        }
    }

    /// The values of a Task's results: each a string
    /// `$(steps.<step>.results.<name>)` naming a step result.
    fn task_result_values(&mut self, spec: &TaskSpec, path: &Path, scope: &Scope<'_>) {
        for (i, r) in spec.results.iter().enumerate() {
            let Some(value) = &r.value else { continue };
            let vp = path.key("results").idx(i).key("value");
            match value {
                ParamValue::String(s) => {
                    let ok = s
                        .strip_prefix("$(")
                        .and_then(|x| x.strip_suffix(')'))
                        .and_then(|e| refs::split(e).ok())
                        .is_some_and(|parts| {
                            matches!(
                                parts.as_slice(),
                                [
                                    Part::Name("steps"),
                                    Part::Name(_),
                                    Part::Name("results"),
                                    Part::Name(_)
                                ]
                            )
                        });
                    if !ok {
                        self.err(&vp, format!("{s:?} is not a step result reference: expected $(steps.<step>.results.<name>)"));
                    } else {
                        self.check_string(s, &vp, scope, false);
                    }
                }
                other => self.err(
                    &vp,
                    format!(
                        "expected a string $(steps.<step>.results.<name>), found {} {}",
                        article(other.kind()),
                        other.kind()
                    ),
                ),
            }
        }
    }

    /// One step: its name, what it runs (a StepAction, or an image),
    /// script or command, timeout, mounts, workspaces, results, `when` and
    /// output files.
    fn step(&mut self, s: &Step, sp: &Path, template_image: bool, spec: &TaskSpec) {
        if !s.name.is_empty() && !is_dns1123_label(&s.name) {
            self.err(
                &sp.key("name"),
                format!("{:?} is not a valid step name: expected lower-case letters, digits and '-', at most 63 characters (DNS-1123 label)", s.name),
            );
        }
        if let Some(r) = &s.step_ref {
            self.step_action_ref(s, r, sp);
        } else {
            if s.image.as_deref().unwrap_or("").is_empty() && !template_image {
                self.err(
                    &sp.key("image"),
                    "required field is missing (or set stepTemplate.image)",
                );
            }
            if !s.params.is_empty() {
                self.err(
                    &sp.key("params"),
                    "params are only for steps that use a StepAction (ref)",
                );
            }
        }
        if s.script.is_some() && !s.command.is_empty() {
            self.err(
                &sp.key("script"),
                "script and command cannot be used together: put the command in the script",
            );
        }
        self.duration(s.timeout.as_ref(), &sp.key("timeout"));
        self.volume_mounts(&s.volume_mounts, &sp.key("volumeMounts"));
        for (j, w) in s.workspaces.iter().enumerate() {
            if !spec.workspaces.iter().any(|d| d.name == w.name) {
                let names = spec.workspaces.iter().map(|d| d.name.as_str());
                self.err(
                    &sp.key("workspaces").idx(j).key("name"),
                    format!(
                        "workspace {:?} is not declared by the Task{}",
                        w.name,
                        suggest(&w.name, names)
                    ),
                );
            }
        }
        self.result_decls(
            s.results
                .iter()
                .map(|r| (r.name.as_str(), r.type_.as_ref(), &r.properties)),
            &sp.key("results"),
        );
        for (j, w) in s.when.iter().enumerate() {
            self.when(w, &sp.key("when").idx(j));
        }
        for (label, cfg) in [
            ("stdoutConfig", &s.stdout_config),
            ("stderrConfig", &s.stderr_config),
        ] {
            if let Some(c) = cfg
                && c.path.as_deref().is_some_and(|p| p.is_empty())
            {
                self.err(&sp.key(label).key("path"), "path must not be empty");
            }
        }
    }

    /// A step that uses a StepAction (`ref`): the fields the StepAction
    /// defines are not set on the step, and the reference is complete.
    fn step_action_ref(&mut self, s: &Step, r: &StepRef, sp: &Path) {
        let mut set = Vec::new();
        if s.image.is_some() {
            set.push("image");
        }
        if !s.command.is_empty() {
            set.push("command");
        }
        if !s.args.is_empty() {
            set.push("args");
        }
        if s.script.is_some() {
            set.push("script");
        }
        if s.working_dir.is_some() {
            set.push("workingDir");
        }
        if !s.env.is_empty() {
            set.push("env");
        }
        if !s.volume_mounts.is_empty() {
            set.push("volumeMounts");
        }
        if !s.results.is_empty() {
            set.push("results");
        }
        for f in set {
            self.err(&sp.key(f), format!("{f} cannot be set on a step that uses a StepAction (ref): the StepAction defines it"));
        }
        self.resolver_ref(
            r.name.as_deref(),
            r.resolver.as_deref(),
            &r.params,
            &sp.key("ref"),
        );
    }

    fn volume_mounts(&mut self, mounts: &[k8s_openapi::api::core::v1::VolumeMount], path: &Path) {
        for (i, m) in mounts.iter().enumerate() {
            let mp = path.idx(i);
            if m.mount_path.starts_with("/tekton/") && !m.mount_path.starts_with("/tekton/home") {
                self.err(&mp.key("mountPath"), format!("{:?} is reserved: volumes cannot be mounted under /tekton/ (except /tekton/home)", m.mount_path));
            }
            if m.name.starts_with("tekton-internal-") {
                self.err(
                    &mp.key("name"),
                    format!(
                        "{:?} is reserved: names starting with tekton-internal- belong to Tektite",
                        m.name
                    ),
                );
            }
        }
    }

    fn when(&mut self, w: &WhenExpression, path: &Path) {
        if let Some(cel) = &w.cel {
            if w.input.is_some() || w.operator.is_some() || !w.values.is_empty() {
                self.err(
                    path,
                    "cel cannot be combined with input, operator or values",
                );
            }
            if cel.trim().is_empty() {
                self.err(&path.key("cel"), "cel expression must not be empty");
            }
            return;
        }
        if w.input.is_none() && w.operator.is_none() && w.values.is_empty() {
            self.err(
                path,
                "empty when expression: set input, operator and values (or cel)",
            );
            return;
        }
        if w.input.as_deref().unwrap_or("").is_empty() {
            self.err(&path.key("input"), "required field is missing");
        }
        match w.operator.as_deref() {
            None => self.err(
                &path.key("operator"),
                "required field is missing: expected in or notin",
            ),
            Some("in" | "notin") => {}
            Some(_) => {} // the schema reports values outside the enum
        }
        if w.values.is_empty() {
            self.err(&path.key("values"), "values must not be empty");
        }
    }

    fn resolver_ref(
        &mut self,
        name: Option<&str>,
        resolver: Option<&str>,
        params: &[Param],
        path: &Path,
    ) {
        match (name, resolver) {
            (None, None) => self.err(
                &path.key("name"),
                "required field is missing: set name, or resolver and params",
            ),
            (Some(_), None) if !params.is_empty() => self.err(
                &path.key("params"),
                "params need a resolver: set resolver, or use name alone",
            ),
            (Some(n), Some(_)) if !n.contains("://") => {
                self.err(
                    &path.key("name"),
                    "set either name or resolver (a name alongside a resolver must be a URL)",
                );
            }
            _ => {}
        }
        self.unique(
            params.iter().enumerate().map(|(i, p)| (i, p.name.as_str())),
            &path.key("params"),
            "name",
            "resolver param",
        );
    }

    // ------------------------------------------------------------ Pipeline

    /// A Pipeline's spec: params, task names and workspaces, the graph of
    /// `tasks`, each task and finally task, then the Pipeline's results.
    fn pipeline_spec(&mut self, spec: &'a PipelineSpec, path: &Path) {
        self.param_specs(&spec.params, &path.key("params"), false);
        let tasks_path = path.key("tasks");
        if spec.tasks.is_empty() {
            self.err(&tasks_path, "a Pipeline needs at least one task");
        }
        self.pipeline_task_names(spec, path);
        self.pipeline_workspace_decls(spec, path);
        let ctx = self.pipeline_ctx(spec);
        // Tekton's webhook checks the graph of `tasks` only; finally tasks run after all of them.
        match dag::build(&spec.tasks) {
            Ok(_) => {}
            // A task depending on itself is reported at its runAfter or reference.
            Err(dag::DagError::Cycle(c)) if c.len() == 2 && c[0] == c[1] => {}
            Err(e) => self.err(&tasks_path, e.to_string()),
        }
        for (list, items) in [("tasks", &spec.tasks), ("finally", &spec.finally)] {
            for (i, t) in items.iter().enumerate() {
                self.pipeline_task(t, &path.key(list).idx(i), list == "finally", &ctx);
            }
        }
        self.pipeline_results(spec, path, &ctx);
    }

    /// The names of `tasks` and `finally`: DNS-1123 labels, each used once
    /// across both lists.
    fn pipeline_task_names(&mut self, spec: &PipelineSpec, path: &Path) {
        let mut seen: HashMap<&str, Path> = HashMap::new();
        for (list, items) in [("tasks", &spec.tasks), ("finally", &spec.finally)] {
            for (i, t) in items.iter().enumerate() {
                let np = path.key(list).idx(i).key("name");
                if !is_dns1123_label(&t.name) {
                    self.err(
                        &np,
                        format!("{:?} is not a valid task name: expected lower-case letters, digits and '-', at most 63 characters (DNS-1123 label)", t.name),
                    );
                }
                if let Some(first) = seen.get(t.name.as_str()) {
                    self.err(
                        &np,
                        format!("duplicate task name {:?} (also at {first})", t.name),
                    );
                } else {
                    seen.insert(&t.name, np.clone());
                }
            }
        }
    }

    /// A Pipeline's workspace declarations: each named, once.
    fn pipeline_workspace_decls(&mut self, spec: &PipelineSpec, path: &Path) {
        let mut seen = HashSet::new();
        for (i, w) in spec.workspaces.iter().enumerate() {
            let wp = path.key("workspaces").idx(i).key("name");
            if w.name.is_empty() {
                self.err(&wp, "required field is missing");
            } else if !seen.insert(w.name.as_str()) {
                self.err(&wp, format!("duplicate workspace {:?}", w.name));
            }
        }
    }

    /// What the Pipeline offers references inside it: its task names and
    /// the results of each task whose spec is known.
    fn pipeline_ctx(&self, spec: &'a PipelineSpec) -> PipelineCtx<'a> {
        let mut results = HashMap::new();
        for t in spec.tasks.iter().chain(spec.finally.iter()) {
            let known = self
                .task_of(t)
                .map(|ts| ts.results.iter().collect::<Vec<_>>());
            results.insert(t.name.as_str(), known);
        }
        PipelineCtx {
            spec,
            results,
            finally: spec.finally.iter().map(|t| t.name.as_str()).collect(),
            tasks: spec.tasks.iter().map(|t| t.name.as_str()).collect(),
        }
    }

    /// A Pipeline's results: valid names, and values that reference task
    /// results, of the declared type.
    fn pipeline_results(&mut self, spec: &PipelineSpec, path: &Path, ctx: &PipelineCtx<'_>) {
        // Pipeline results declare no properties: their shape comes from the value.
        self.result_decls(
            spec.results
                .iter()
                .map(|r| (r.name.as_str(), None, &NO_PROPERTIES)),
            &path.key("results"),
        );
        let scope = Scope::pipeline(ctx, Site::PipelineResults);
        for (i, r) in spec.results.iter().enumerate() {
            let rp = path.key("results").idx(i).key("value");
            let strings = r.value.strings();
            if !strings.iter().any(|s| !refs::scan(s).is_empty()) {
                self.err(&rp, "a pipeline result must reference task results: expected $(tasks.<task>.results.<name>)");
            }
            if let Some(ty) = &r.type_ {
                let given = r.value.kind();
                let whole = matches!(&r.value, ParamValue::String(s) if is_whole_reference(s));
                if given != ty && !whole {
                    self.err(
                        &rp,
                        format!(
                            "result {:?} is declared {ty} but its value is {} {given}",
                            r.name,
                            article(given)
                        ),
                    );
                }
            }
            self.param_value(&r.value, &rp, &scope);
        }
    }

    fn task_of(&self, t: &'a PipelineTask) -> Option<&'a TaskSpec> {
        if let Some(ts) = &t.task_spec {
            return (ts.api_version.is_none() && ts.kind.is_none()).then_some(&ts.task);
        }
        t.task_ref.as_ref().and_then(|r| self.catalog.task(r))
    }

    /// One entry of a Pipeline's `tasks` or `finally`: what it runs, how it
    /// is retried and ordered, what it is given, then the references in its
    /// own fields (problems are reported in that order).
    fn pipeline_task(
        &mut self,
        t: &'a PipelineTask,
        tp: &Path,
        in_finally: bool,
        ctx: &PipelineCtx<'_>,
    ) {
        self.what_task_runs(t, tp);
        self.retries_and_timeout(t, tp);
        self.run_after(t, tp, in_finally, ctx);
        self.unique(
            t.params
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.name.as_str())),
            &tp.key("params"),
            "name",
            "param",
        );
        for (j, w) in t.when.iter().enumerate() {
            self.when(w, &tp.key("when").idx(j));
        }
        self.pipeline_task_workspaces(t, tp, ctx);
        if let Some(m) = &t.matrix {
            self.matrix(m, &t.params, &tp.key("matrix"), ctx);
        }
        self.embedded_task_spec(t, tp, ctx);
        if let Some(spec) = self.task_of(t) {
            self.params_for_task(t, spec, tp, ctx);
            self.workspaces_for_task(t, spec, tp);
        }
        self.pipeline_task_references(t, tp, in_finally, ctx);
    }

    /// What a PipelineTask runs: exactly one of taskRef, taskSpec,
    /// pipelineRef and pipelineSpec, and the reference's own fields (an
    /// embedded taskSpec is checked with [`Self::embedded_task_spec`]).
    fn what_task_runs(&mut self, t: &'a PipelineTask, tp: &Path) {
        let set: Vec<&str> = [
            ("taskRef", t.task_ref.is_some()),
            ("taskSpec", t.task_spec.is_some()),
            ("pipelineRef", t.pipeline_ref.is_some()),
            ("pipelineSpec", t.pipeline_spec.is_some()),
        ]
        .into_iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| n)
        .collect();
        match set.len() {
            0 => self.err(
                tp,
                format!(
                    "task {:?} needs one of taskRef, taskSpec, pipelineRef, pipelineSpec",
                    t.name
                ),
            ),
            1 => {}
            _ => self.err(
                &tp.key(set[1]),
                format!(
                    "{} cannot be used together: expected exactly one",
                    set.join(" and ")
                ),
            ),
        }
        if let Some(r) = &t.task_ref {
            self.pipeline_task_ref(r, &tp.key("taskRef"));
        }
        if let Some(p) = &t.pipeline_spec {
            self.pipeline_spec(p, &tp.key("pipelineSpec"));
        }
        if let Some(r) = &t.pipeline_ref {
            self.resolver_ref(
                r.name.as_deref(),
                r.resolver.as_deref(),
                &r.params,
                &tp.key("pipelineRef"),
            );
        }
    }

    /// A PipelineTask's taskRef: a name or a resolver (a custom task may
    /// give neither), no ClusterTask, and an apiVersion `group/version` for
    /// a custom task kind.
    fn pipeline_task_ref(&mut self, r: &TaskRef, rp: &Path) {
        let custom = r.api_version.is_some() || r.kind.as_deref().is_some_and(|k| k != "Task");
        if !custom || r.name.is_some() || r.resolver.is_some() {
            self.resolver_ref(r.name.as_deref(), r.resolver.as_deref(), &r.params, rp);
        }
        if let Some(k) = &r.kind {
            if k == "ClusterTask" {
                self.err(
                    &rp.key("kind"),
                    "ClusterTask was removed from Tekton: use a Task, or resolver: cluster",
                );
            } else if k != "Task" && r.api_version.is_none() {
                self.err(
                    &rp.key("apiVersion"),
                    format!("custom task kind {k:?} needs an apiVersion (group/version)"),
                );
            }
        }
        if let Some(av) = &r.api_version
            && !av.contains('/')
        {
            self.err(
                &rp.key("apiVersion"),
                format!("{av:?} is not group/version"),
            );
        }
    }

    /// `retries` (at least zero, and not with `onError: continue`) and
    /// `timeout`.
    fn retries_and_timeout(&mut self, t: &PipelineTask, tp: &Path) {
        if let Some(retries) = t.retries {
            if retries < 0 {
                self.err(
                    &tp.key("retries"),
                    format!("{retries} is negative: expected >= 0"),
                );
            }
            if retries > 0 && t.on_error.as_deref() == Some("continue") {
                self.err(
                    &tp.key("onError"),
                    "onError: continue cannot be combined with retries",
                );
            }
        }
        self.duration(t.timeout.as_ref(), &tp.key("timeout"));
    }

    /// `runAfter`: only in `tasks` (finally tasks run after all of them),
    /// naming other tasks of `tasks`.
    fn run_after(&mut self, t: &PipelineTask, tp: &Path, in_finally: bool, ctx: &PipelineCtx<'_>) {
        if in_finally {
            if !t.run_after.is_empty() {
                self.err(
                    &tp.key("runAfter"),
                    "finally tasks cannot use runAfter: they run after all tasks",
                );
            }
            return;
        }
        for (j, r) in t.run_after.iter().enumerate() {
            let rp = tp.key("runAfter").idx(j);
            if *r == t.name {
                self.err(&rp, format!("task {r:?} cannot run after itself"));
            } else if ctx.finally.contains(r.as_str()) {
                self.err(
                    &rp,
                    format!("{r:?} is a finally task: tasks cannot run after finally tasks"),
                );
            } else if !ctx.tasks.contains(r.as_str()) {
                self.err(
                    &rp,
                    format!("unknown task {r:?}{}", suggest(r, ctx.task_names())),
                );
            }
        }
    }

    /// The workspaces bound to a PipelineTask: each named once, and each
    /// taken from a workspace the Pipeline declares.
    fn pipeline_task_workspaces(&mut self, t: &PipelineTask, tp: &Path, ctx: &PipelineCtx<'_>) {
        self.unique(
            t.workspaces
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w.name.as_str())),
            &tp.key("workspaces"),
            "name",
            "workspace",
        );
        let pipeline_ws: Vec<&str> = ctx
            .spec
            .workspaces
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        for (j, w) in t.workspaces.iter().enumerate() {
            let source = w.workspace.as_deref().unwrap_or(&w.name);
            if !pipeline_ws.contains(&source) {
                let field = if w.workspace.is_some() {
                    "workspace"
                } else {
                    "name"
                };
                self.err(
                    &tp.key("workspaces").idx(j).key(field),
                    format!(
                        "pipeline workspace {source:?} is not declared in spec.workspaces{}",
                        suggest(source, pipeline_ws.iter().copied())
                    ),
                );
            }
        }
    }

    /// A PipelineTask's matrix (at `mp`): params named once, not also in
    /// the task's `params`, arrays; string `include` params; at most
    /// [`MAX_MATRIX_COMBINATIONS`] combinations.
    fn matrix(&mut self, m: &Matrix, params: &[Param], mp: &Path, ctx: &PipelineCtx<'_>) {
        self.unique(
            m.params
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.name.as_str())),
            &mp.key("params"),
            "name",
            "matrix param",
        );
        let combos = self.matrix_params(m, params, mp, ctx);
        let combos = combos.saturating_add(self.matrix_include(m, mp));
        if combos > MAX_MATRIX_COMBINATIONS {
            self.err(
                mp,
                format!(
                    "matrix makes {combos} combinations: the limit is {MAX_MATRIX_COMBINATIONS}"
                ),
            );
        }
        if m.params.is_empty() && m.include.is_empty() {
            self.err(mp, "matrix needs params or include");
        }
    }

    /// Checks the matrix params; returns how many combinations they make
    /// (an array behind a whole reference counts its known length, or 1).
    fn matrix_params(
        &mut self,
        m: &Matrix,
        params: &[Param],
        mp: &Path,
        ctx: &PipelineCtx<'_>,
    ) -> usize {
        let mut combos: usize = if m.params.is_empty() { 0 } else { 1 };
        for (j, p) in m.params.iter().enumerate() {
            let pp = mp.key("params").idx(j);
            if params.iter().any(|x| x.name == p.name) {
                self.err(
                    &pp.key("name"),
                    format!("param {:?} is set both in params and in matrix", p.name),
                );
            }
            match &p.value {
                ParamValue::Array(a) => combos = combos.saturating_mul(a.len()),
                ParamValue::String(s) if is_whole_reference(s) => {
                    combos = combos.saturating_mul(self.array_len(s, ctx).unwrap_or(1));
                }
                other => self.err(
                    &pp.key("value"),
                    format!(
                        "matrix params must be arrays, found {} {}",
                        article(other.kind()),
                        other.kind()
                    ),
                ),
            }
        }
        combos
    }

    /// Checks the matrix `include` entries; returns how many combinations
    /// they add (an entry adds one unless it only picks existing ones).
    fn matrix_include(&mut self, m: &Matrix, mp: &Path) -> usize {
        let mut added = 0;
        for (j, inc) in m.include.iter().enumerate() {
            let ip = mp.key("include").idx(j);
            self.unique(
                inc.params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (i, p.name.as_str())),
                &ip.key("params"),
                "name",
                "include param",
            );
            for (k, p) in inc.params.iter().enumerate() {
                if !matches!(p.value, ParamValue::String(_)) {
                    self.err(
                        &ip.key("params").idx(k).key("value"),
                        "include params must be strings",
                    );
                }
            }
            let adds_new = m.params.is_empty()
                || inc.params.iter().any(|p| {
                    m.params.iter().any(|mp| {
                        mp.name == p.name
                            && matches!((&mp.value, &p.value), (ParamValue::Array(a), ParamValue::String(s)) if !a.contains(s))
                    })
                });
            if adds_new {
                added += 1;
            }
        }
        added
    }

    /// An embedded `taskSpec`: a Task spec in the Pipeline's scope, or the
    /// spec of a custom task, which needs both apiVersion and kind.
    fn embedded_task_spec(&mut self, t: &PipelineTask, tp: &Path, ctx: &PipelineCtx<'_>) {
        let Some(ts) = &t.task_spec else { return };
        if ts.api_version.is_none() && ts.kind.is_none() {
            self.task_spec(&ts.task, &tp.key("taskSpec"), &Outer::Pipeline(ctx));
        } else if ts.api_version.is_none() || ts.kind.is_none() {
            self.err(
                &tp.key("taskSpec"),
                "a custom task spec needs both apiVersion and kind",
            );
        }
    }

    /// The params a PipelineTask gives the Task it runs (`spec`, when
    /// known): required ones given (here, in the matrix, or for an
    /// embedded spec by the Pipeline), types and enums hold; a param the
    /// Task does not declare is a warning.
    fn params_for_task(
        &mut self,
        t: &PipelineTask,
        spec: &TaskSpec,
        tp: &Path,
        ctx: &PipelineCtx<'_>,
    ) {
        let matrix_names: Vec<&str> = t
            .matrix
            .iter()
            .flat_map(|m| m.params.iter().map(|p| p.name.as_str()))
            .collect();
        let include_names: Vec<&str> = t
            .matrix
            .iter()
            .flat_map(|m| {
                m.include
                    .iter()
                    .flat_map(|i| i.params.iter().map(|p| p.name.as_str()))
            })
            .collect();
        let embedded = t.task_spec.is_some();
        let pipeline_params: Vec<&str> = ctx.spec.params.iter().map(|p| p.name.as_str()).collect();
        let given_elsewhere = |n: &str| {
            matrix_names.contains(&n)
                || include_names.contains(&n)
                || (embedded && pipeline_params.contains(&n))
        };
        let who = format!("task {:?}", t.name);
        self.param_values(
            &t.params,
            &spec.params,
            &tp.key("params"),
            tp,
            &given_elsewhere,
            &who,
        );
        for (j, p) in t.params.iter().enumerate() {
            if !spec.params.iter().any(|s| s.name == p.name) {
                self.warn(
                    &tp.key("params").idx(j).key("name"),
                    format!(
                        "task {:?} declares no param {:?}{}",
                        t.name,
                        p.name,
                        suggest(&p.name, spec.params.iter().map(|s| s.name.as_str()))
                    ),
                );
            }
        }
    }

    /// The workspaces a PipelineTask binds for the Task it runs (`spec`,
    /// when known): every required one bound, none the Task does not
    /// declare.
    fn workspaces_for_task(&mut self, t: &PipelineTask, spec: &'a TaskSpec, tp: &Path) {
        let who = format!("task {:?}", t.name);
        let bound: Vec<&str> = t.workspaces.iter().map(|w| w.name.as_str()).collect();
        self.required_workspaces(
            &bound,
            spec.workspaces
                .iter()
                .map(|w| (w.name.as_str(), w.optional)),
            tp,
            &who,
        );
        for (j, w) in t.workspaces.iter().enumerate() {
            if !spec.workspaces.iter().any(|d| d.name == w.name) {
                self.err(
                    &tp.key("workspaces").idx(j).key("name"),
                    format!(
                        "task {:?} declares no workspace {:?}{}",
                        t.name,
                        w.name,
                        suggest(&w.name, spec.workspaces.iter().map(|d| d.name.as_str()))
                    ),
                );
            }
        }
    }

    /// Variable references in a PipelineTask's own fields (param and
    /// matrix values, when expressions, workspace subPaths, taskRef
    /// params), which the Pipeline substitutes.
    fn pipeline_task_references(
        &mut self,
        t: &PipelineTask,
        tp: &Path,
        in_finally: bool,
        ctx: &PipelineCtx<'_>,
    ) {
        let scope = Scope::pipeline(
            ctx,
            Site::PipelineTask {
                in_finally,
                self_task: &t.name,
            },
        );
        for (j, p) in t.params.iter().enumerate() {
            self.param_value(&p.value, &tp.key("params").idx(j).key("value"), &scope);
        }
        if let Some(m) = &t.matrix {
            for (j, p) in m.params.iter().enumerate() {
                self.param_value(
                    &p.value,
                    &tp.key("matrix").key("params").idx(j).key("value"),
                    &scope,
                );
            }
            for (j, inc) in m.include.iter().enumerate() {
                for (k, p) in inc.params.iter().enumerate() {
                    self.param_value(
                        &p.value,
                        &tp.key("matrix")
                            .key("include")
                            .idx(j)
                            .key("params")
                            .idx(k)
                            .key("value"),
                        &scope,
                    );
                }
            }
        }
        for (j, w) in t.when.iter().enumerate() {
            let wp = tp.key("when").idx(j);
            if let Some(i) = &w.input {
                self.check_string(i, &wp.key("input"), &scope, false);
            }
            for (k, v) in w.values.iter().enumerate() {
                self.check_string(v, &wp.key("values").idx(k), &scope, true);
            }
            if let Some(c) = &w.cel {
                self.check_string(c, &wp.key("cel"), &scope, false);
            }
        }
        for (j, w) in t.workspaces.iter().enumerate() {
            if let Some(sp) = &w.sub_path {
                let at = tp.key("workspaces").idx(j).key("subPath");
                self.check_string(sp, &at, &scope, false);
                if let Some(problem) = sub_path_problem(sp) {
                    self.err(&at, problem);
                }
            }
        }
        if let Some(r) = &t.task_ref {
            for (j, p) in r.params.iter().enumerate() {
                self.param_value(
                    &p.value,
                    &tp.key("taskRef").key("params").idx(j).key("value"),
                    &scope,
                );
            }
        }
    }

    /// Length of an array a whole reference points to, when it is known.
    fn array_len(&self, s: &str, ctx: &PipelineCtx<'_>) -> Option<usize> {
        let expr = s.strip_prefix("$(")?.strip_suffix(')')?;
        let parts = refs::split(expr).ok()?;
        let r = refs::param_ref(&parts, &|n| ctx.spec.params.iter().any(|p| p.name == n))?;
        match &ctx.spec.params.iter().find(|p| p.name == r.name)?.default {
            Some(ParamValue::Array(a)) => Some(a.len()),
            _ => None,
        }
    }

    fn param_value(&mut self, v: &ParamValue, path: &Path, scope: &Scope<'_>) {
        match v {
            ParamValue::String(s) => self.check_string(s, path, scope, true),
            ParamValue::Array(a) => {
                for (i, s) in a.iter().enumerate() {
                    self.check_string(s, &path.idx(i), scope, true);
                }
            }
            ParamValue::Object(o) => {
                for (k, s) in o {
                    self.check_string(s, &path.key_owned(k), scope, false);
                }
            }
        }
    }

    // ------------------------------------------------------------ runs

    /// A TaskRun's spec: the Task it runs, its params, bindings and
    /// settings, the step and sidecar overrides, then, when the Task is
    /// known, what the run gives it.
    fn taskrun_spec(&mut self, spec: &'a TaskRunSpec, path: &Path) {
        self.taskrun_task(spec, path);
        self.run_params(&spec.params, &path.key("params"));
        self.bindings(&spec.workspaces, &path.key("workspaces"));
        self.duration(spec.timeout.as_ref(), &path.key("timeout"));
        if let Some(r) = spec.retries
            && r < 0
        {
            self.err(
                &path.key("retries"),
                format!("{r} is negative: expected >= 0"),
            );
        }
        if spec.status_message.is_some() && spec.status.is_none() {
            self.err(&path.key("statusMessage"), "statusMessage needs status");
        }
        self.taskrun_overrides(spec, path);
        let task = spec
            .task_spec
            .as_deref()
            .or_else(|| spec.task_ref.as_ref().and_then(|r| self.catalog.task(r)));
        if let Some(task) = task {
            let who = match &spec.task_ref {
                Some(TaskRef { name: Some(n), .. }) => format!("Task {n:?}"),
                _ => "the Task".to_string(),
            };
            self.taskrun_gives_task(spec, task, path, &who);
            self.overrides_match_task(spec, task, path, &who);
        }
    }

    /// What a TaskRun runs: exactly one of taskRef (complete, and not a
    /// ClusterTask) and taskSpec (a valid Task spec).
    fn taskrun_task(&mut self, spec: &TaskRunSpec, path: &Path) {
        match (&spec.task_ref, &spec.task_spec) {
            (None, None) => self.err(path, "one of taskRef or taskSpec is required"),
            (Some(_), Some(_)) => self.err(
                &path.key("taskSpec"),
                "taskRef and taskSpec cannot be used together: expected exactly one",
            ),
            _ => {}
        }
        if let Some(r) = &spec.task_ref {
            self.resolver_ref(
                r.name.as_deref(),
                r.resolver.as_deref(),
                &r.params,
                &path.key("taskRef"),
            );
            if r.kind.as_deref() == Some("ClusterTask") {
                self.err(
                    &path.key("taskRef").key("kind"),
                    "ClusterTask was removed from Tekton: use a Task, or resolver: cluster",
                );
            }
        }
        if let Some(ts) = &spec.task_spec {
            self.task_spec(ts, &path.key("taskSpec"), &Outer::None);
        }
    }

    /// A TaskRun's `stepSpecs` and `sidecarSpecs`, each named once, and
    /// `computeResources` not combined with per-step resources.
    fn taskrun_overrides(&mut self, spec: &TaskRunSpec, path: &Path) {
        self.unique(
            spec.step_specs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.name.as_str())),
            &path.key("stepSpecs"),
            "name",
            "step spec",
        );
        self.unique(
            spec.sidecar_specs
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.name.as_str())),
            &path.key("sidecarSpecs"),
            "name",
            "sidecar spec",
        );
        if spec.compute_resources.is_some()
            && spec
                .step_specs
                .iter()
                .any(|s| s.compute_resources != Default::default())
        {
            self.err(
                &path.key("computeResources"),
                "computeResources cannot be combined with stepSpecs resources",
            );
        }
    }

    /// The params and workspaces a TaskRun gives its Task (`who`): every
    /// required one given, of the declared type; a referenced Task takes
    /// no binding it does not declare.
    fn taskrun_gives_task(
        &mut self,
        spec: &TaskRunSpec,
        task: &'a TaskSpec,
        path: &Path,
        who: &str,
    ) {
        self.param_values(
            &spec.params,
            &task.params,
            &path.key("params"),
            &path.key("params"),
            &|_| false,
            who,
        );
        let bound: Vec<&str> = spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        self.required_workspaces(
            &bound,
            task.workspaces
                .iter()
                .map(|w| (w.name.as_str(), w.optional)),
            &path.key("workspaces"),
            who,
        );
        // Only an embedded taskSpec takes bindings it does not declare
        // (Tekton propagates them); a referenced Task refuses them.
        if spec.task_spec.is_none() {
            for (i, w) in spec.workspaces.iter().enumerate() {
                if !task.workspaces.iter().any(|d| d.name == w.name) {
                    self.err(
                        &path.key("workspaces").idx(i).key("name"),
                        format!(
                            "workspace binding {:?} does not match any workspace {who} declares{}",
                            w.name,
                            suggest(&w.name, task.workspaces.iter().map(|d| d.name.as_str()))
                        ),
                    );
                }
            }
        }
    }

    /// Each of a TaskRun's `stepSpecs` and `sidecarSpecs` names a step or
    /// sidecar its Task (`who`) has.
    fn overrides_match_task(
        &mut self,
        spec: &TaskRunSpec,
        task: &TaskSpec,
        path: &Path,
        who: &str,
    ) {
        let steps: Vec<&str> = task.steps.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in spec.step_specs.iter().enumerate() {
            if !steps.contains(&s.name.as_str()) {
                self.err(
                    &path.key("stepSpecs").idx(i).key("name"),
                    format!(
                        "{who} has no step {:?}{}",
                        s.name,
                        suggest(&s.name, steps.iter().copied())
                    ),
                );
            }
        }
        let sidecars: Vec<&str> = task.sidecars.iter().map(|s| s.name.as_str()).collect();
        for (i, s) in spec.sidecar_specs.iter().enumerate() {
            if !sidecars.contains(&s.name.as_str()) {
                self.err(
                    &path.key("sidecarSpecs").idx(i).key("name"),
                    format!(
                        "{who} has no sidecar {:?}{}",
                        s.name,
                        suggest(&s.name, sidecars.iter().copied())
                    ),
                );
            }
        }
    }

    /// A PipelineRun's spec: the Pipeline it runs, its params, bindings and
    /// timeouts, its `taskRunSpecs`, then, when the Pipeline is known, what
    /// the run gives it.
    fn pipelinerun_spec(&mut self, spec: &'a PipelineRunSpec, path: &Path) {
        self.pipelinerun_pipeline(spec, path);
        self.run_params(&spec.params, &path.key("params"));
        self.bindings(&spec.workspaces, &path.key("workspaces"));
        self.timeouts(spec, path);
        let pipeline = spec.pipeline_spec.as_deref().or_else(|| {
            spec.pipeline_ref
                .as_ref()
                .and_then(|r| self.catalog.pipeline(r))
        });
        self.task_run_specs(spec, pipeline, path);
        if let Some(p) = pipeline {
            self.pipelinerun_gives_pipeline(spec, p, path);
        }
    }

    /// What a PipelineRun runs: exactly one of pipelineRef (complete) and
    /// pipelineSpec (a valid Pipeline spec).
    fn pipelinerun_pipeline(&mut self, spec: &'a PipelineRunSpec, path: &Path) {
        match (&spec.pipeline_ref, &spec.pipeline_spec) {
            (None, None) => self.err(path, "one of pipelineRef or pipelineSpec is required"),
            (Some(_), Some(_)) => self.err(
                &path.key("pipelineSpec"),
                "pipelineRef and pipelineSpec cannot be used together: expected exactly one",
            ),
            _ => {}
        }
        if let Some(r) = &spec.pipeline_ref {
            self.resolver_ref(
                r.name.as_deref(),
                r.resolver.as_deref(),
                &r.params,
                &path.key("pipelineRef"),
            );
        }
        if let Some(ps) = &spec.pipeline_spec {
            self.pipeline_spec(ps, &path.key("pipelineSpec"));
        }
    }

    /// A PipelineRun's `taskRunSpecs`: one per pipeline task, a valid
    /// timeout, and (when the Pipeline is known) a task it has.
    fn task_run_specs(
        &mut self,
        spec: &PipelineRunSpec,
        pipeline: Option<&PipelineSpec>,
        path: &Path,
    ) {
        let mut seen = HashSet::new();
        for (i, s) in spec.task_run_specs.iter().enumerate() {
            let sp = path.key("taskRunSpecs").idx(i);
            if s.pipeline_task_name.is_empty() {
                self.err(&sp.key("pipelineTaskName"), "required field is missing");
            } else if !seen.insert(s.pipeline_task_name.as_str()) {
                self.err(
                    &sp.key("pipelineTaskName"),
                    format!("duplicate taskRunSpec for {:?}", s.pipeline_task_name),
                );
            }
            self.duration(s.timeout.as_ref(), &sp.key("timeout"));
            if let Some(p) = pipeline {
                let names: Vec<&str> = p
                    .tasks
                    .iter()
                    .chain(p.finally.iter())
                    .map(|t| t.name.as_str())
                    .collect();
                if !s.pipeline_task_name.is_empty()
                    && !names.contains(&s.pipeline_task_name.as_str())
                {
                    self.err(
                        &sp.key("pipelineTaskName"),
                        format!(
                            "the Pipeline has no task {:?}{}",
                            s.pipeline_task_name,
                            suggest(&s.pipeline_task_name, names.iter().copied())
                        ),
                    );
                }
            }
        }
    }

    /// The params and workspaces a PipelineRun gives its Pipeline `p`:
    /// every required one given, of the declared type; a binding the
    /// Pipeline does not declare is a warning.
    fn pipelinerun_gives_pipeline(
        &mut self,
        spec: &PipelineRunSpec,
        p: &'a PipelineSpec,
        path: &Path,
    ) {
        let who = match &spec.pipeline_ref {
            Some(PipelineRef { name: Some(n), .. }) => format!("Pipeline {n:?}"),
            _ => "the Pipeline".to_string(),
        };
        self.param_values(
            &spec.params,
            &p.params,
            &path.key("params"),
            &path.key("params"),
            &|_| false,
            &who,
        );
        let bound: Vec<&str> = spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        self.required_workspaces(
            &bound,
            p.workspaces.iter().map(|w| (w.name.as_str(), w.optional)),
            &path.key("workspaces"),
            &who,
        );
        for (i, w) in spec.workspaces.iter().enumerate() {
            if !p.workspaces.iter().any(|d| d.name == w.name) {
                self.warn(
                    &path.key("workspaces").idx(i).key("name"),
                    format!(
                        "{who} declares no workspace {:?}{}",
                        w.name,
                        suggest(&w.name, p.workspaces.iter().map(|d| d.name.as_str()))
                    ),
                );
            }
        }
    }

    fn timeouts(&mut self, spec: &PipelineRunSpec, path: &Path) {
        let Some(t) = &spec.timeouts else { return };
        let tp = path.key("timeouts");
        let pipeline = self.duration(t.pipeline.as_ref(), &tp.key("pipeline"));
        let tasks = self.duration(t.tasks.as_ref(), &tp.key("tasks"));
        let finally = self.duration(t.finally.as_ref(), &tp.key("finally"));
        // Tekton's default pipeline timeout is 60 minutes.
        let (limit, limit_name) = match pipeline {
            Some(p) => (p, "timeouts.pipeline"),
            None => (60 * 60 * 1_000_000_000, "the default pipeline timeout (1h)"),
        };
        if limit == 0 {
            return;
        }
        for (name, value) in [("tasks", tasks), ("finally", finally)] {
            match value {
                Some(0) => self.err(
                    &tp.key(name),
                    format!(
                        "0 (no timeout) is not allowed when {limit_name} is set ({})",
                        fmt_duration(limit)
                    ),
                ),
                Some(v) if v > limit => self.err(
                    &tp.key(name),
                    format!(
                        "{} is longer than {limit_name} ({})",
                        fmt_duration(v),
                        fmt_duration(limit)
                    ),
                ),
                _ => {}
            }
        }
        if let (Some(a), Some(b)) = (tasks, finally)
            && a > 0
            && b > 0
            && a + b > limit
            && a <= limit
            && b <= limit
        {
            self.err(
                &tp,
                format!(
                    "tasks ({}) + finally ({}) is longer than {limit_name} ({})",
                    fmt_duration(a),
                    fmt_duration(b),
                    fmt_duration(limit)
                ),
            );
        }
    }

    // ------------------------------------------------------------ variable references

    /// Checks every string inside a serializable value.
    /// Checks every string inside a serializable value; `strict` says, from
    /// the keys below `path` (indexes left out), whether Tekton checks the
    /// references of that field (otherwise problems are warnings).
    fn strings_of<T: serde::Serialize>(
        &mut self,
        item: &T,
        path: &Path,
        scope: &Scope<'_>,
        strict: fn(&[&str]) -> bool,
    ) {
        let Ok(value) = serde_json::to_value(item) else {
            return;
        };
        let mut rel = Vec::new();
        self.walk_strings(&value, path, scope, false, &mut rel, strict);
    }

    fn walk_strings<'v>(
        &mut self,
        v: &'v Value,
        path: &Path,
        scope: &Scope<'_>,
        in_list: bool,
        rel: &mut Vec<&'v str>,
        strict: fn(&[&str]) -> bool,
    ) {
        match v {
            Value::String(s) => {
                self.lenient = !strict(rel);
                self.check_string(s, path, scope, in_list);
                self.lenient = false;
            }
            Value::Array(a) => {
                // A whole-array reference may stand alone in command and args.
                let list_ok = matches!(path.last(), Some(crate::path::Seg::Key(k)) if k == "command" || k == "args");
                for (i, x) in a.iter().enumerate() {
                    self.walk_strings(x, &path.idx(i), scope, list_ok, rel, strict);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    rel.push(k);
                    self.walk_strings(x, &path.key_owned(k), scope, false, rel, strict);
                    rel.pop();
                }
            }
            _ => {}
        }
    }

    /// Checks the references in one string. `isolated_ok`: the string is an
    /// element of a list, where `$(params.a[*])` alone expands to elements.
    fn check_string(&mut self, s: &str, path: &Path, scope: &Scope<'_>, isolated_ok: bool) {
        for expr in refs::scan(s) {
            let alone = isolated_ok && s.len() == expr.len() + 3;
            let parts = match refs::split(expr) {
                Ok(p) => p,
                Err(m) => {
                    self.ref_err(path, m);
                    continue;
                }
            };
            match parts.first() {
                Some(Part::Name("params")) => self.param_reference(expr, &parts, path, scope, alone),
                Some(Part::Name("context")) => self.context_reference(expr, &parts, path, scope),
                Some(Part::Name("workspaces")) => self.workspace_reference(expr, &parts, path, scope),
                Some(Part::Name("results")) => match parts.as_slice() {
                    [_, Part::Name(r), Part::Name("path")] if scope.pipeline.is_none() || matches!(scope.site, Site::Task { .. }) => {
                        if !scope.task_results.contains(r) {
                            self.ref_err(path, format!("$({expr}) refers to result {r:?}, which the Task does not declare{}", suggest(r, scope.task_results.iter().copied())));
                        }
                    }
                    _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(results.<name>.path) inside a Task")),
                },
                Some(Part::Name("steps")) => self.steps_reference(expr, &parts, path, scope),
                Some(Part::Name("step")) => match parts.as_slice() {
                    [_, Part::Name("results"), Part::Name(r), Part::Name("path")] => {
                        if !scope.step_results.contains(r) {
                            self.ref_err(path, format!("$({expr}) refers to step result {r:?}, which this step does not declare{}", suggest(r, scope.step_results.iter().copied())));
                        }
                    }
                    _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(step.results.<name>.path)")),
                },
                Some(Part::Name("tasks")) => self.tasks_reference(expr, &parts, path, scope, alone),
                Some(Part::Name("inputs")) if matches!(parts.get(1), Some(Part::Name("params"))) => {
                    let short = expr.trim_start_matches("inputs.");
                    self.warn(path, format!("$({expr}) is deprecated: use $({short})"));
                    self.param_reference(short, &parts[1..], path, scope, alone);
                }
                Some(Part::Name("resources" | "inputs" | "outputs")) => {
                    self.ref_err(path, format!("$({expr}) refers to PipelineResources, which were removed from Tekton: use params, results and workspaces"));
                }
                _ => {}
            }
        }
    }

    fn param_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
        alone: bool,
    ) {
        let Some(r) = refs::param_ref(parts, &|n| scope.params.iter().any(|p| p.name == n)) else {
            self.ref_err(path, format!("$({expr}) is not a valid param reference"));
            return;
        };
        let Some(spec) = scope.params.iter().find(|p| p.name == r.name) else {
            let names = scope.params.iter().map(|p| p.name.as_str());
            let owner = if matches!(scope.site, Site::Task { .. }) {
                "the Task"
            } else {
                "the Pipeline"
            };
            self.ref_err(
                path,
                format!(
                    "$({expr}) refers to param {:?}, which {owner} does not declare{}",
                    r.name,
                    suggest(&r.name, names)
                ),
            );
            return;
        };
        match (spec.kind(), r.star, r.index, r.key) {
            ("string", false, None, None) => {}
            ("string", ..) => self.ref_err(path, format!("$({expr}): param {:?} is a string: use $(params.{})", r.name, r.name)),
            // `$(params.a)` of an array param is the whole array, like `[*]`.
            ("array", _, None, None) | ("object", true, ..)
                if !alone => {
                    self.ref_err(
                        path,
                        format!("$({expr}) expands to several values: it must stand alone as an element of a list (e.g. an args entry)"),
                    );
                }
            ("array", _, None, None) | ("object", true, ..) => {}
            ("array", false, Some(_), None) => {}
            ("array", ..) => self.ref_err(
                path,
                format!("$({expr}): param {:?} is an array: use $(params.{}[*]) for all elements or $(params.{}[N]) for one", r.name, r.name, r.name),
            ),
            ("object", false, None, Some(k))
                if !spec.properties.is_empty() && !spec.properties.contains_key(k) => {
                    self.ref_err(
                        path,
                        format!("$({expr}): object param {:?} has no key {k:?}{}", r.name, suggest(k, spec.properties.keys().map(String::as_str))),
                    );
                }
            ("object", false, None, Some(_)) => {}
            ("object", ..) => self.ref_err(path, format!("$({expr}): param {:?} is an object: use $(params.{}.<key>) or $(params.{}[*])", r.name, r.name, r.name)),
            _ => {}
        }
    }

    fn context_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
    ) {
        const TASK: &[&str] = &[
            "taskRun.name",
            "taskRun.namespace",
            "taskRun.uid",
            "task.name",
            "task.retry-count",
        ];
        const PIPELINE: &[&str] = &[
            "pipelineRun.name",
            "pipelineRun.namespace",
            "pipelineRun.uid",
            "pipeline.name",
            "pipelineTask.retries",
        ];
        let name = parts[1..]
            .iter()
            .map(|p| match p {
                Part::Name(n) => (*n).to_string(),
                Part::Star => "[*]".into(),
                Part::Index(i) => format!("[{i}]"),
            })
            .collect::<Vec<_>>()
            .join(".");
        let mut allowed: Vec<&str> = Vec::new();
        // In a PipelineTask's fields, Task variables are left for the TaskRun
        // to substitute (Tekton passes them through), so they are valid too.
        allowed.extend(TASK);
        if scope.pipeline.is_some() {
            allowed.extend(PIPELINE);
        }
        if !allowed.contains(&name.as_str()) {
            let list: Vec<String> = allowed.iter().map(|a| format!("context.{a}")).collect();
            let hint = suggest(&format!("context.{name}"), list.iter().map(String::as_str));
            self.ref_err(
                path,
                format!(
                    "$({expr}) is not a known variable here: expected one of {}{hint}",
                    list.join(", ")
                ),
            );
        }
    }

    fn workspace_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
    ) {
        let in_task = matches!(scope.site, Site::Task { .. });
        match parts {
            // In a PipelineTask's fields only `.bound` is the Pipeline's; the
            // rest passes through to the TaskRun, which substitutes it.
            [_, _, Part::Name(prop)] if !in_task && *prop != "bound" => {}
            [_, Part::Name(w), Part::Name(prop)] => {
                let props: &[&str] = if in_task { &["path", "bound", "claim", "volume"] } else { &["bound"] };
                if !scope.workspaces.contains(w) {
                    let owner = if in_task { "the Task" } else { "the Pipeline" };
                    // Tekton's webhook does not check workspace references
                    // (official catalog tasks carry such mistakes): a warning.
                    self.warn(path, format!("$({expr}) refers to workspace {w:?}, which {owner} does not declare{}; it would be left as written", suggest(w, scope.workspaces.iter().copied())));
                } else if !props.contains(prop) {
                    self.ref_err(path, format!("$({expr}): expected .{} after the workspace name", props.join(", .")));
                }
            }
            _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(workspaces.<name>.path|bound|claim|volume)")),
        }
    }

    fn steps_reference(&mut self, expr: &str, parts: &[Part<'_>], path: &Path, scope: &Scope<'_>) {
        let find = |n: &str| scope.steps.iter().find(|(name, _)| name == n);
        match parts {
            [_, Part::Name(step), Part::Name("exitCode"), Part::Name("path")] => {
                let name = step.strip_prefix("step-").unwrap_or(step);
                if find(name).is_none() {
                    let names: Vec<String> = scope.steps.iter().map(|(n, _)| format!("step-{n}")).collect();
                    self.ref_err(path, format!("$({expr}) refers to step {step:?}, which the Task does not have{}", suggest(step, names.iter().map(String::as_str))));
                }
            }
            [_, Part::Name(step), Part::Name("results"), Part::Name(r), ..] => match find(step) {
                None => {
                    let names = scope.steps.iter().map(|(n, _)| n.as_str());
                    self.ref_err(path, format!("$({expr}) refers to step {step:?}, which the Task does not have{}", suggest(step, names)));
                }
                Some((_, results)) => {
                    if !results.contains(r) {
                        self.ref_err(path, format!("$({expr}): step {step:?} declares no result {r:?}{}", suggest(r, results.iter().copied())));
                    }
                }
            },
            _ => self.ref_err(path, format!("$({expr}) is not a valid reference: expected $(steps.step-<name>.exitCode.path) or $(steps.<name>.results.<result>)")),
        }
    }

    fn tasks_reference(
        &mut self,
        expr: &str,
        parts: &[Part<'_>],
        path: &Path,
        scope: &Scope<'_>,
        alone: bool,
    ) {
        let Some(ctx) = scope.pipeline else {
            self.ref_err(path, format!("$({expr}) is only valid inside a Pipeline"));
            return;
        };
        let (in_finally, self_task) = match scope.site {
            Site::PipelineTask {
                in_finally,
                self_task,
            } => (Some(in_finally), Some(self_task)),
            Site::Task {
                in_finally,
                self_task,
            } => (in_finally, self_task),
            Site::PipelineResults => (None, None),
        };
        let finally_only =
            |what: &str| format!("$({expr}): {what} is only available to finally tasks");
        match parts {
            [_, Part::Name("status")] => {
                if in_finally != Some(true) {
                    self.ref_err(path, finally_only("the aggregate status of tasks"));
                }
            }
            [_, Part::Name(t), rest @ ..] => {
                // Pipeline results may also come from finally tasks.
                let known = ctx.tasks.contains(t)
                    || (scope.site == Site::PipelineResults && ctx.finally.contains(t));
                if !known {
                    let why = if ctx.finally.contains(t) {
                        format!(
                            "$({expr}) refers to finally task {t:?}: only results and status of `tasks` can be referenced"
                        )
                    } else {
                        format!(
                            "$({expr}) refers to task {t:?}, which the Pipeline does not have{}",
                            suggest(t, ctx.task_names())
                        )
                    };
                    self.ref_err(path, why);
                    return;
                }
                if self_task == Some(*t) {
                    self.ref_err(
                        path,
                        format!("$({expr}): a task cannot use its own results"),
                    );
                    return;
                }
                match rest {
                    [Part::Name("status" | "reason")] => {
                        if in_finally != Some(true) {
                            self.ref_err(path, finally_only("a task's status"));
                        }
                    }
                    [Part::Name("matrix"), Part::Name("length")] | [Part::Name("matrix"), Part::Name(_), Part::Name("length")] => {}
                    [Part::Name("results"), Part::Name(r), tail @ ..] => {
                        if let Some(Some(results)) = ctx.results.get(t)
                            && let Some(m) = task_result_problem(expr, t, results, r, tail, alone)
                        {
                            self.ref_err(path, m);
                        }
                    }
                    _ => self.ref_err(
                        path,
                        format!("$({expr}) is not a valid reference: expected $(tasks.<task>.results.<name>), $(tasks.<task>.status) or $(tasks.<task>.matrix.length)"),
                    ),
                }
            }
            _ => self.ref_err(path, format!("$({expr}) is not a valid reference")),
        }
    }
}

/// What is wrong with `$(tasks.<t>.results.<r>…)` (`expr`), where task `t`
/// is known to declare `results`: `r` must be one of them, `[*]` of an
/// array or object must stand alone, and a key of an object result must
/// be one of its properties.
fn task_result_problem(
    expr: &str,
    t: &str,
    results: &[&TaskResult],
    r: &str,
    tail: &[Part<'_>],
    alone: bool,
) -> Option<String> {
    let Some(res) = results.iter().find(|x| x.name == r) else {
        let names: Vec<&str> = results.iter().map(|x| x.name.as_str()).collect();
        return Some(format!(
            "$({expr}): task {t:?} declares no result {r:?}{}",
            suggest(r, names.iter().copied())
        ));
    };
    if matches!(tail, [Part::Star]) && !alone && res.kind() != "string" {
        return Some(format!(
            "$({expr}) expands to several values: it must stand alone as an element of a list"
        ));
    }
    match tail {
        [Part::Name(k)]
            if res.kind() == "object"
                && !res.properties.is_empty()
                && !res.properties.contains_key(*k) =>
        {
            Some(format!("$({expr}): object result {r:?} has no key {k:?}"))
        }
        _ => None,
    }
}

/// The step fields whose variable references Tekton's webhook checks.
fn step_field_is_checked(rel: &[&str]) -> bool {
    matches!(
        rel,
        ["name" | "image" | "workingDir" | "script" | "onError" | "command" | "args"]
            | ["env", "value"]
            | ["volumeMounts", "name" | "mountPath" | "subPath"]
    )
}

/// `a`/`an` before a type name.
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The string is exactly one reference such as `$(params.a[*])` or
/// `$(tasks.t.results.r)`, which may stand for an array or object.
fn is_whole_reference(s: &str) -> bool {
    let scanned = refs::scan(s);
    scanned.len() == 1 && s.len() == scanned[0].len() + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500_000_000);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1d").is_err());
        assert_eq!(fmt_duration(5_400_000_000_000), "1h30m0s");
    }

    #[test]
    fn names() {
        assert!(is_dns1123_label("build-1"));
        assert!(!is_dns1123_label("Build"));
        assert!(!is_dns1123_label("-a"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(is_param_name("a.b-c_d", false));
        assert!(!is_param_name("a.b", true));
        assert!(!is_param_name("1a", false));
        assert!(is_result_name("commit"));
        assert!(!is_result_name("-x"));
    }
}
