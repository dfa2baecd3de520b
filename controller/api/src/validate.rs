//! Validation as strict as Tekton's admission webhook, run on typed `v1`
//! objects. One pass collects every problem with its field path.
//!
//! Objects loaded together form a catalog: a PipelineRun whose `pipelineRef`
//! names a Pipeline in the same set is checked against it (missing params,
//! unbound workspaces, unknown `taskRunSpecs`), and so are `taskRef`s.
//!
//! Data flow: [`validate`] walks an object with a `Checker`, which holds
//! the findings (capped per object) and the catalog. This module holds the
//! entry points, the name and format checks other crates use too, and the
//! `Scope` a string's references are checked against; each kind of
//! field is checked in its own module: `task`, `step_action`, `pipeline`,
//! `pipeline_task`, `run`, `params`, `fields` and `references`.

mod fields;
mod params;
mod pipeline;
mod pipeline_task;
mod references;
mod run;
mod step_action;
mod task;

use std::collections::{HashMap, HashSet};

use crate::diag::{Cap, Diagnostic, Severity};
use crate::load::{Loaded, Object};
use crate::path::Path;
use crate::refs;
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

/// Tasks, Pipelines and StepActions known by name, for checking
/// references to them.
#[derive(Debug, Default)]
pub struct Catalog<'a> {
    pub tasks: HashMap<String, &'a TaskSpec>,
    pub pipelines: HashMap<String, &'a PipelineSpec>,
    pub step_actions: HashMap<String, &'a crate::stepaction::StepActionSpec>,
    /// Params every TaskRun and PipelineRun is given besides its own
    /// (`tkt run -p`): one missing from a run is not an error.
    pub given_params: Vec<String>,
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
                Object::StepAction(s) => {
                    if let Some(n) = &s.metadata.name {
                        c.step_actions.insert(n.clone(), &s.spec);
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
    validate_all_given(objects, &[])
}

/// [`validate_all`], the runs also being given `params` (names) besides
/// their own, as `tkt run -p` gives them.
pub fn validate_all_given(objects: &[Loaded], params: &[&str]) -> Vec<Diagnostic> {
    let mut catalog = Catalog::from_loaded(objects);
    catalog.given_params = params.iter().map(|p| (*p).to_string()).collect();
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
            v.concurrency(&p.metadata, &meta, false);
            v.pipeline_spec(&p.spec, &root.key("spec"), None);
        }
        Object::TaskRun(tr) => {
            v.object_name(&tr.metadata, &meta, true);
            v.taskrun_spec(&tr.spec, &root.key("spec"));
        }
        Object::PipelineRun(pr) => {
            v.object_name(&pr.metadata, &meta, true);
            v.concurrency(&pr.metadata, &meta, true);
            v.pipelinerun_spec(&pr.spec, &root.key("spec"));
        }
        Object::StepAction(sa) => {
            v.object_name(&sa.metadata, &meta, false);
            v.step_action_spec(&sa.spec, &root.key("spec"));
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

/// A param name: letters, digits, `_` and `-` (and `.`, except in an
/// object param's name), starting with a letter or `_`.
fn is_param_name(s: &str, object: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '-' || c.is_ascii_alphanumeric() || (!object && c == '.'))
}

/// A result name: letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
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

/// A duration in nanoseconds as Go writes it, in whole seconds (`1h2m3s`).
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
    /// A Task: every param it uses is declared.
    None,
    /// A TaskRun's embedded `taskSpec`: the run's params it does not
    /// declare propagate into it (Tekton's implicit params).
    Run(&'p [ParamSpec]),
    /// An embedded `taskSpec` of a PipelineTask: pipeline params propagate,
    /// and pipeline-level variables are allowed; in a PipelineRun's
    /// embedded `pipelineSpec`, so do the params the task passes it
    /// without declaring them.
    Pipeline(&'p PipelineCtx<'p>, &'p [ParamSpec]),
}

/// Declarations standing for the params given (by a run or a pipeline
/// task) that `declared` does not declare: their type is the value's, as
/// Tekton's implicit propagation assumes.
fn propagated_specs(given: &[Param], declared: &[ParamSpec]) -> Vec<ParamSpec> {
    given
        .iter()
        .filter(|p| !declared.iter().any(|d| d.name == p.name))
        .map(|p| ParamSpec {
            name: p.name.clone(),
            type_: Some(p.value.kind().to_string()),
            properties: match &p.value {
                crate::param::ParamValue::Object(o) => o
                    .keys()
                    .map(|k| (k.clone(), PropertySpec::default()))
                    .collect(),
                _ => Default::default(),
            },
            ..Default::default()
        })
        .collect()
}

/// What a Pipeline offers to references inside it.
struct PipelineCtx<'a> {
    spec: &'a PipelineSpec,
    /// When the spec is a PipelineRun's embedded `pipelineSpec`: the run's
    /// params and workspaces the spec does not declare (they propagate).
    run: Option<RunGives<'a>>,
    /// Results declared by each task whose spec is known.
    results: HashMap<&'a str, Option<Vec<&'a TaskResult>>>,
    finally: HashSet<&'a str>,
    /// Names of `tasks` (not finally), for O(1) lookups in big pipelines.
    tasks: HashSet<&'a str>,
}

/// What a PipelineRun gives its embedded `pipelineSpec` beyond what the
/// spec declares.
struct RunGives<'a> {
    params: Vec<ParamSpec>,
    workspaces: Vec<&'a str>,
}

impl PipelineCtx<'_> {
    /// The params references in the Pipeline may use: its own, then those
    /// a PipelineRun gives its embedded spec.
    fn params(&self) -> impl Iterator<Item = &ParamSpec> {
        self.spec
            .params
            .iter()
            .chain(self.run.iter().flat_map(|r| r.params.iter()))
    }

    /// The workspaces its tasks may bind: its own, then those a
    /// PipelineRun binds for its embedded spec.
    fn workspaces(&self) -> impl Iterator<Item = &str> {
        self.spec
            .workspaces
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.run.iter().flat_map(|r| r.workspaces.iter().copied()))
    }

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
    /// Each step's name and its results (`None`: unknown, a StepAction
    /// not among the objects validated).
    steps: Vec<(String, Option<Vec<String>>)>,
    step_results: Vec<&'a str>,
    pipeline: Option<&'a PipelineCtx<'a>>,
    site: Site<'a>,
}

impl<'a> Scope<'a> {
    /// Inside a Task spec: its params (and, when it is embedded in a
    /// Pipeline, the Pipeline's it does not shadow), workspaces, results
    /// and steps (unnamed ones as `unnamed-<i>`).
    fn task(spec: &'a TaskSpec, outer: &Outer<'a>) -> Self {
        let (pipeline, given) = match outer {
            Outer::None => (None, &[][..]),
            Outer::Run(given) => (None, *given),
            Outer::Pipeline(p, given) => (Some(*p), *given),
        };
        let steps: Vec<(String, Option<Vec<String>>)> = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = if s.name.is_empty() {
                    format!("unnamed-{i}")
                } else {
                    s.name.clone()
                };
                (
                    name,
                    Some(s.results.iter().map(|r| r.name.clone()).collect()),
                )
            })
            .collect();
        let mut params: Vec<&ParamSpec> = spec.params.iter().chain(given).collect();
        let mut workspaces: Vec<&str> = spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        if let Some(p) = pipeline {
            // Pipeline params (and a run's, for its embedded spec) propagate
            // into embedded specs, and so do the workspaces their steps use.
            for pp in p.params() {
                if !params.iter().any(|tp| tp.name == pp.name) {
                    params.push(pp);
                }
            }
            for w in p.workspaces() {
                if !workspaces.contains(&w) {
                    workspaces.push(w);
                }
            }
        }
        Scope {
            params,
            workspaces,
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
            params: ctx.params().collect(),
            workspaces: ctx.workspaces().collect(),
            task_results: Vec::new(),
            steps: Vec::new(),
            step_results: Vec::new(),
            pipeline: Some(ctx),
            site,
        }
    }
}

/// Walks one object, keeping what is wrong with it; each module of
/// `validate` adds the checks of its fields as methods.
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
    /// Records an error at `path`, unless the cap on shown problems is
    /// reached (then it is only counted).
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

    /// `onError`: `continue` or `stopAndFail`, or a param reference whose
    /// value the run checks once params are applied (as Tekton's webhook).
    fn on_error(&mut self, v: Option<&str>, path: &Path) {
        if let Some(v) = v
            && v != "continue"
            && v != "stopAndFail"
            && !v.starts_with("$(params.")
        {
            let options = ["continue", "stopAndFail"];
            let hint = crate::diag::suggest(v, options);
            self.err(
                path,
                format!("{v:?} is not one of continue, stopAndFail{hint}"),
            );
        }
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

    /// Records a warning at `path`, under the same cap as errors.
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

    /// `metadata`: a name (for runs, or a `generateName` prefix) that is a
    /// DNS-1123 subdomain, and a namespace that is a DNS-1123 label.
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

    /// Tektite's concurrency annotations (`crate::concurrency`), where set,
    /// hold values they can take.
    fn concurrency(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        path: &Path,
        run: bool,
    ) {
        let Some(a) = &meta.annotations else { return };
        for (name, value, expected) in crate::concurrency::problems(a, run) {
            self.err(
                &path.key("annotations").key(name),
                format!("{value:?} is not {expected}"),
            );
        }
    }

    /// A timeout field, when set: its length in nanoseconds, or `None`
    /// after reporting why it is not a timeout.
    fn duration(&mut self, d: Option<&String>, path: &Path) -> Option<i128> {
        match timeout_duration(d?) {
            Ok(ns) => Some(ns),
            Err(m) => {
                self.err(path, m);
                None
            }
        }
    }

    /// Reports each name of `items` (index, name) already used, at
    /// `path[index].field`.
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
