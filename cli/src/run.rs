//! `tkt run`: runs TaskRuns and PipelineRuns on this machine.
//!
//! Input: TaskRun/PipelineRun documents, or one Task/Pipeline plus `-p` and
//! `-w` (defaults used, like `tkn … start --use-param-defaults`). References
//! by name resolve against the given files, `--task-dir` folders and the
//! shipped `tasks/` catalog. Exit codes: 0 Succeeded, 1 Failed, 2 invalid
//! input, 130 interrupted.
//!
//! The phases: [`load`] the files and check them; [`make_runs`] from them;
//! [`prepare`] each run (flags applied, references resolved, checked again,
//! and planned once by the engine so that whatever it would refuse at once
//! is refused here, before anything is recorded); [`choose_runtime`]; then
//! [`run_job`] each, under a journal in the run store and a watchdog that
//! cleans up after this process whatever ends it.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use tektite_api::load::{Loaded, Object, display_name};
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    Condition, Param, ParamSpec, PipelineRef, PipelineRun, PipelineRunSpec, PipelineSpec, TaskRef,
    TaskRun, TaskRunSpec, TaskSpec, TimeoutFields, WorkspaceBinding,
};
use tektite_api::{Diagnostic, Severity, validate};
use tektite_engine::params::{Failure, declared_kind};
use tektite_engine::pod::Config;
use tektite_engine::preflight;
use tektite_local::live::{self, Journal};
use tektite_local::runner::{Msg, Options, Progress, Runner, RuntimeKind, TaskSource};
use tektite_local::runtime;
use tektite_local::store::{RunKind, Store};

use crate::EXIT_INVALID;

/// Exit code of an interrupted run.
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// podman when it works, else host processes
    Auto,
    /// containers through `podman kube play`
    Podman,
    /// steps as host processes
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// `tkt run` arguments.
#[derive(Debug, Parser)]
pub struct Args {
    /// Files or directories with TaskRun/PipelineRun documents, or a Task/Pipeline
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// A param: name=value; arrays as a,b,c; objects as k1:v1,k2:v2
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// A workspace: name=PATH (a host directory), name=emptyDir (an empty
    /// directory for each TaskRun) or name=volumeClaimTemplate (one
    /// directory for the run, shared by its TaskRuns); on a cluster also
    /// tkn's name=WS,emptyDir= and name=WS,claimName=C (not a PATH)
    #[arg(
        short = 'w',
        long = "workspace",
        value_name = "NAME=PATH|emptyDir|volumeClaimTemplate"
    )]
    pub(crate) workspaces: Vec<String>,
    /// More folders of Tasks and Pipelines that references resolve against
    #[arg(long = "task-dir", value_name = "DIR")]
    task_dirs: Vec<PathBuf>,
    /// Where steps run
    #[arg(long, value_enum, default_value = "auto")]
    runtime: RuntimeArg,
    /// TaskRuns of a PipelineRun running at once (default: number of cores)
    #[arg(long)]
    parallel: Option<usize>,
    /// Overrides timeouts.pipeline (PipelineRun) or timeout (TaskRun), e.g. 10m
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Time a cancelled or timed-out step gets between SIGTERM and SIGKILL
    /// (a kubelet's default grace period)
    #[arg(long = "grace-period", value_name = "DURATION", default_value = "30s")]
    grace_period: String,
    /// Adds NAME to every container's environment, with VALUE or else its
    /// value in tkt's environment (steps get nothing else of it)
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// A ConfigMap from files: NAME=DIR (a key per regular file in it),
    /// NAME=FILE or NAME=KEY=FILE (repeatable)
    #[arg(long = "configmap", value_name = "NAME=DIR|FILE|KEY=FILE")]
    configmaps: Vec<String>,
    /// A Secret from files, as --configmap; its values are masked (***) in
    /// logs, records and output (repeatable)
    #[arg(long = "secret", value_name = "NAME=DIR|FILE|KEY=FILE")]
    secrets: Vec<String>,
    /// The run store (default $XDG_STATE_HOME/tektite); resolved Tasks,
    /// Pipelines and StepActions are cached in its `resolved` folder
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Resolve refs with `resolver:` from the cache only: nothing is fetched
    #[arg(long)]
    offline: bool,
    /// Print the final run object (status included) on stdout; logs go to stderr
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub(crate) output: Format,
    /// Keep pods and run directories after the run
    #[arg(long)]
    keep: bool,
    /// No colours (also NO_COLOR)
    #[arg(long = "no-color")]
    no_color: bool,
    /// On a cluster: create the runs, print their names and exit
    #[arg(long)]
    pub(crate) detach: bool,
    #[command(flatten)]
    pub(crate) target: crate::cluster::TargetArgs,
}

/// A `tkt run` that another command starts (`pipeline start`, `rerun`)
/// on a run it wrote: given as flags, parsed as `tkt run` parses them, so
/// every default is `tkt run`'s.
#[derive(Debug)]
pub(crate) struct Local<'a> {
    pub files: Vec<PathBuf>,
    pub runtime: &'a str,
    pub state_dir: Option<&'a Path>,
    pub task_dirs: &'a [PathBuf],
    /// `-w` flags, as `tkt run` takes them.
    pub workspaces: Vec<String>,
}

impl Local<'_> {
    /// Runs it.
    ///
    /// # Errors
    /// As [`run`].
    pub(crate) fn run(&self, out: &mut impl Write) -> anyhow::Result<u8> {
        let mut argv: Vec<String> = vec!["run".into(), "--runtime".into(), self.runtime.into()];
        for f in &self.files {
            argv.extend(["-f".into(), f.display().to_string()]);
        }
        for w in &self.workspaces {
            argv.extend(["-w".into(), w.clone()]);
        }
        if let Some(d) = self.state_dir {
            argv.extend(["--state-dir".into(), d.display().to_string()]);
        }
        for d in self.task_dirs {
            argv.extend(["--task-dir".into(), d.display().to_string()]);
        }
        let args =
            <Args as clap::Parser>::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{e}"))?;
        run(&args, out)
    }
}

/// The shipped catalog: `TEKTITE_CATALOG`, else `tasks/` of this source tree.
pub(crate) fn catalog_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TEKTITE_CATALOG") {
        return Some(PathBuf::from(d));
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks");
    d.is_dir().then_some(d)
}

use crate::note;

/// A progress line: on standard output in text mode (with the logs), on
/// standard error when standard output carries the final object.
fn say(text: bool, line: &str) {
    if text {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    } else {
        note(line);
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        note(&d.to_string());
    }
}

/// The names `NAME=VALUE` flags (`-p`, `-w`) give.
pub(crate) fn flag_names(flags: &[String]) -> Vec<&str> {
    flags
        .iter()
        .filter_map(|f| f.split_once('=').map(|(n, _)| n))
        .collect()
}

/// Parses `-p name=value` for a param declared as `kind` (tkn's forms).
pub(crate) fn param_value(raw: &str, kind: &str) -> anyhow::Result<ParamValue> {
    Ok(match kind {
        "array" => ParamValue::Array(if raw.is_empty() {
            Vec::new()
        } else {
            raw.split(',').map(str::to_string).collect()
        }),
        "object" => {
            let mut m = BTreeMap::new();
            for kv in raw.split(',').filter(|s| !s.is_empty()) {
                let Some((k, v)) = kv.split_once(':') else {
                    bail!("object value {raw:?}: expected key:value pairs separated by commas");
                };
                m.insert(k.to_string(), v.to_string());
            }
            ParamValue::Object(m)
        }
        _ => ParamValue::String(raw.to_string()),
    })
}

fn split_flag<'a>(flag: &str, raw: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    raw.split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .with_context(|| format!("{flag} {raw:?}: expected NAME=VALUE"))
}

/// A duration flag, checked as validation checks the same text in YAML.
fn duration_flag(flag: &str, value: &str) -> Result<Duration, String> {
    validate::timeout_duration(value)
        .map(|ns| Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
        .map_err(|m| format!("{flag} {value:?}: {m}"))
}

/// Namespace, uid and (without one) a name from `generateName` + a suffix.
fn name_of(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    if meta.name.as_deref().is_none_or(str::is_empty) {
        let base = meta.generate_name.clone().unwrap_or_else(|| "run-".into());
        meta.name = Some(format!("{base}{}", tektite_local::store::random_suffix()));
    }
    if meta.namespace.is_none() {
        meta.namespace = Some("default".into());
    }
    if meta.uid.is_none() {
        meta.uid = Some(format!(
            "local-{}-{}",
            std::process::id(),
            tektite_local::store::random_suffix()
        ));
    }
}

/// A run to carry out, resolved.
enum Job {
    Task(Box<TaskRun>, TaskSource),
    /// The run, its Pipeline (spec and name) and the Pipeline's
    /// annotations (defaults of the run's concurrency settings).
    Pipeline(
        Box<PipelineRun>,
        Result<(PipelineSpec, Option<String>), Failure>,
        BTreeMap<String, String>,
    ),
}

impl Job {
    fn kind(&self) -> RunKind {
        match self {
            Job::Task(..) => RunKind::TaskRun,
            Job::Pipeline(..) => RunKind::PipelineRun,
        }
    }

    fn meta(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Job::Task(tr, _) => &mut tr.metadata,
            Job::Pipeline(pr, ..) => &mut pr.metadata,
        }
    }

    fn name(&self) -> String {
        match self {
            Job::Task(tr, _) => tr.metadata.name.clone().unwrap_or_default(),
            Job::Pipeline(pr, ..) => pr.metadata.name.clone().unwrap_or_default(),
        }
    }
}

/// Everything read: the given objects first (`n_given`), then the library.
struct Inputs {
    loaded: Vec<Loaded>,
    n_given: usize,
    given_paths: Vec<PathBuf>,
    tasks: BTreeMap<String, TaskSpec>,
    pipelines: BTreeMap<String, PipelineSpec>,
    /// The annotations of the Pipelines in `pipelines` that have any.
    pipeline_annotations: BTreeMap<String, BTreeMap<String, String>>,
    step_actions: tektite_engine::stepaction::StepActions,
    /// The ConfigMaps and Secrets given (documents and flags).
    data: tektite_api::data::DataSet,
    /// Resolvers, made when a run first needs one; what they found is in
    /// `tasks`, `pipelines` and `step_actions` under remote keys.
    remote: Option<crate::remote::Remote>,
    cache_dir: Option<PathBuf>,
    offline: bool,
}

impl Inputs {
    /// The resolvers, made on first use.
    fn remote(&mut self) -> Result<&mut crate::remote::Remote, String> {
        if self.remote.is_none() {
            let r = crate::remote::Remote::new(self.cache_dir.clone(), self.offline, &self.data)
                .map_err(|e| format!("tkt: resolvers: {e:#}"))?;
            self.remote = Some(r);
        }
        self.remote.as_mut().ok_or_else(String::new)
    }

    /// Where a remote object came from.
    fn source_of(&self, key: &str) -> Option<tektite_api::v1::RefSource> {
        self.remote.as_ref()?.sources.get(key).cloned()
    }
}

/// What stops a run before it starts: the exit code to return (the reason
/// has been printed).
type Refused = u8;

/// Reads the given files and the library folders, and checks the given
/// objects.
fn load(args: &Args) -> anyhow::Result<Result<Inputs, Refused>> {
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut documents = Vec::new();
    let mut diags: Vec<Diagnostic> = Vec::new();
    let given_paths = crate::files::expand(&args.files)?;
    for p in &given_paths {
        let o = crate::files::load(p)?;
        diags.extend(o.diagnostics);
        loaded.extend(o.objects);
        documents.extend(o.data);
    }
    let flagged = match crate::values::from_flags(&args.configmaps, &args.secrets) {
        Ok(f) => f,
        Err(m) => {
            note(&format!("tkt: {m}"));
            return Ok(Err(EXIT_INVALID));
        }
    };
    let data = crate::values::gather(&documents, flagged);
    let n_given = loaded.len();
    let mut lib_dirs: Vec<PathBuf> = args.task_dirs.clone();
    lib_dirs.extend(catalog_dir());
    for d in &lib_dirs {
        for p in crate::files::library(d)? {
            // A task's own test runs (`<task>/tests/run.yaml`) are not library.
            let inside = p.strip_prefix(d).unwrap_or(&p);
            if given_paths.contains(&p) || inside.components().any(|c| c.as_os_str() == "tests") {
                continue;
            }
            let o = tektite_api::load_file(&p);
            diags.extend(
                o.diagnostics
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error),
            );
            loaded.extend(o.objects);
        }
    }
    // A param a run lacks is fine here when -p gives it (checked again,
    // typed, once the flags are applied).
    let given = flag_names(&args.params);
    diags.extend(validate::validate_all_given(&loaded[..n_given], &given));
    if diags.iter().any(|d| d.severity == Severity::Error) {
        print_diagnostics(&diags);
        note("tkt: invalid input: nothing was run");
        return Ok(Err(EXIT_INVALID));
    }
    let mut tasks: BTreeMap<String, TaskSpec> = BTreeMap::new();
    let mut pipelines: BTreeMap<String, PipelineSpec> = BTreeMap::new();
    let mut pipeline_annotations = BTreeMap::new();
    // Given files win over task dirs and the catalog.
    for l in loaded.iter().rev() {
        match &l.object {
            Object::Task(t) => {
                tasks.insert(t.metadata.name.clone().unwrap_or_default(), t.spec.clone());
            }
            Object::Pipeline(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                pipelines.insert(name.clone(), p.spec.clone());
                match &p.metadata.annotations {
                    Some(a) if !a.is_empty() => pipeline_annotations.insert(name, a.clone()),
                    _ => pipeline_annotations.remove(&name),
                };
            }
            _ => {}
        }
    }
    let step_actions = crate::stepactions::gather(&loaded);
    Ok(Ok(Inputs {
        loaded,
        n_given,
        given_paths,
        tasks,
        pipelines,
        pipeline_annotations,
        step_actions,
        data,
        remote: None,
        cache_dir: tektite_local::store::root_for(args.state_dir.as_deref())
            .map(|r| r.join("resolved")),
        offline: args.offline,
    }))
}

/// The runs: given, or made from the one Task/Pipeline given; each with the
/// file it comes from, for messages.
fn make_runs(inputs: &Inputs) -> Result<Vec<(Object, String)>, Refused> {
    let given = &inputs.loaded[..inputs.n_given];
    let runs: Vec<(Object, String)> = given
        .iter()
        .filter(|l| matches!(l.object, Object::TaskRun(_) | Object::PipelineRun(_)))
        .map(|l| (l.object.clone(), l.file.clone()))
        .collect();
    if !runs.is_empty() {
        return Ok(runs);
    }
    let defs: Vec<&Loaded> = given
        .iter()
        .filter(|l| matches!(l.object, Object::Task(_) | Object::Pipeline(_)))
        .collect();
    let file = defs.first().map(|l| l.file.clone()).unwrap_or_default();
    let generated = |name: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        generate_name: Some(format!("{name}-run-")),
        ..Default::default()
    };
    match defs
        .iter()
        .map(|l| &l.object)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [Object::Pipeline(p)] => {
            let name = p.metadata.name.clone().unwrap_or_default();
            let mut pr = PipelineRun::new(
                "",
                PipelineRunSpec {
                    pipeline_ref: Some(PipelineRef {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            pr.metadata = generated(&name);
            Ok(vec![(Object::PipelineRun(Box::new(pr)), file)])
        }
        [Object::Task(t)] => {
            let name = t.metadata.name.clone().unwrap_or_default();
            let mut tr = TaskRun::new(
                "",
                TaskRunSpec {
                    task_ref: Some(TaskRef {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            tr.metadata = generated(&name);
            Ok(vec![(Object::TaskRun(Box::new(tr)), file)])
        }
        [] => {
            let files: Vec<String> = inputs
                .given_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            note(&format!(
                "tkt: {}: no TaskRun, PipelineRun, Task or Pipeline: nothing to run",
                files.join(", ")
            ));
            Err(EXIT_INVALID)
        }
        _ => {
            let found: Vec<String> = defs
                .iter()
                .map(|l| {
                    format!(
                        "{}/{} ({})",
                        l.object.kind(),
                        l.object.display_name(),
                        l.file
                    )
                })
                .collect();
            note(&format!(
                "tkt: no TaskRun or PipelineRun, and several Tasks/Pipelines ({}): give a run, or one Task or Pipeline",
                found.join(", ")
            ));
            Err(EXIT_INVALID)
        }
    }
}

/// A TaskRun made ready: its Task resolved, flags applied, checked.
fn prepare_task_run(
    args: &Args,
    inputs: &mut Inputs,
    mut tr: Box<TaskRun>,
    file: &str,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<Result<Job, Refused>> {
    let who = format!("{file}: TaskRun {}", display_name(&tr.metadata));
    let mut remote_key = None;
    let source = match (&tr.spec.task_spec, &tr.spec.task_ref) {
        (Some(s), _) => TaskSource::Spec(s.clone(), None),
        (None, Some(r)) if r.resolver.is_some() => {
            match resolve_task_ref(inputs, &tr, &flag_values(args)) {
                Ok((key, spec)) => {
                    remote_key = Some(key);
                    TaskSource::Spec(Box::new(spec), None)
                }
                Err(m) => {
                    note(&format!("{who}: {m}"));
                    return Ok(Err(EXIT_INVALID));
                }
            }
        }
        (None, Some(r)) => {
            let n = r.name.clone().unwrap_or_default();
            match inputs.tasks.get(&n) {
                Some(s) => TaskSource::Spec(Box::new(s.clone()), Some(n)),
                None => {
                    note(&format!(
                        "{who}: spec.taskRef.name: no Task {n:?} in the given files, --task-dir folders or the catalog"
                    ));
                    return Ok(Err(EXIT_INVALID));
                }
            }
        }
        _ => unreachable!("validated"),
    };
    let TaskSource::Spec(spec, _) = &source else {
        unreachable!()
    };
    let required = spec.workspaces.iter().filter(|w| !w.optional);
    let required: Vec<&str> = required.map(|w| w.name.as_str()).collect();
    let (params, workspaces) = (&mut tr.spec.params, &mut tr.spec.workspaces);
    if let Err(code) = complete(
        args,
        &who,
        &spec.params,
        &required,
        params,
        workspaces,
        claims,
    )? {
        return Ok(Err(code));
    }
    let at = if tr.spec.task_spec.is_some() {
        "spec.taskSpec"
    } else {
        "the Task's spec"
    };
    if let Err(m) = remote_step_actions(inputs, at, spec, &tr) {
        note(&format!("{who}: {m}"));
        return Ok(Err(EXIT_INVALID));
    }
    let absent = crate::stepactions::missing_in_task(spec, at, &inputs.step_actions);
    if !absent.is_empty() {
        note(&crate::stepactions::refusal(&who, &absent));
        return Ok(Err(EXIT_INVALID));
    }
    let source = source.with_step_actions(&tr, &inputs.step_actions);
    if let Some(src) = remote_key.and_then(|k| inputs.source_of(&k)) {
        let st = tr.status.get_or_insert_with(Default::default);
        tektite_engine::status::record_source(&mut st.provenance, src);
    }
    if let TaskSource::Failed(f) = &source {
        note(&format!("{who}: {}: {}", f.reason, f.message));
        return Ok(Err(EXIT_INVALID));
    }
    if let Some(t) = &args.timeout {
        tr.spec.timeout = Some(t.clone());
    }
    Ok(Ok(Job::Task(tr, source)))
}

/// `-p` values as strings, for resolver params (before a remote spec says
/// which params are arrays).
fn flag_values(args: &Args) -> Vec<Param> {
    args.params
        .iter()
        .filter_map(|raw| raw.split_once('='))
        .map(|(n, v)| Param {
            name: n.to_string(),
            value: ParamValue::String(v.to_string()),
        })
        .collect()
}

/// The run's params, `-p` over those in the file.
fn with_flags(given: &[Param], flags: &[Param]) -> Vec<Param> {
    let mut out: Vec<Param> = given
        .iter()
        .filter(|p| !flags.iter().any(|f| f.name == p.name))
        .cloned()
        .collect();
    out.extend(flags.iter().cloned());
    out
}

/// A TaskRun's Task through its resolver (params from the run and `-p`):
/// its remote key and spec.
fn resolve_task_ref(
    inputs: &mut Inputs,
    tr: &TaskRun,
    flags: &[Param],
) -> Result<(String, TaskSpec), String> {
    let r = tr.spec.task_ref.clone().unwrap_or_default();
    let resolver = r.resolver.clone().unwrap_or_default();
    let vars = crate::remote::param_vars(&crate::remote::values(
        &with_flags(&tr.spec.params, flags),
        &[],
    ));
    let params = crate::remote::substitute("spec.taskRef", &r.params, &vars)?;
    let (key, found) = inputs.remote()?.fetch(
        "spec.taskRef",
        &resolver,
        &params,
        tektite_resolve::Kind::Task,
    )?;
    match found {
        Object::Task(t) => {
            inputs.tasks.insert(key.clone(), t.spec.clone());
            Ok((key, t.spec))
        }
        _ => Err("spec.taskRef: the resolver did not answer a Task".into()),
    }
}

/// The StepActions `spec`'s steps name through resolvers, for the run `tr`.
fn remote_step_actions(
    inputs: &mut Inputs,
    at: &str,
    spec: &TaskSpec,
    tr: &TaskRun,
) -> Result<(), String> {
    let any = spec
        .steps
        .iter()
        .any(|s| s.step_ref.as_ref().is_some_and(|r| r.resolver.is_some()));
    if !any {
        return Ok(());
    }
    let mut actions = std::mem::take(&mut inputs.step_actions);
    let r = inputs
        .remote()
        .and_then(|rm| rm.step_actions(at, spec, tr, &mut actions));
    inputs.step_actions = actions;
    r
}

/// A PipelineRun's Pipeline through its resolver (params from the run and
/// `-p`): its remote key and spec.
fn resolve_pipeline_ref(
    inputs: &mut Inputs,
    pr: &PipelineRun,
    args: &Args,
) -> Result<(String, PipelineSpec), String> {
    let r = pr.spec.pipeline_ref.clone().unwrap_or_default();
    let resolver = r.resolver.clone().unwrap_or_default();
    let given = with_flags(&pr.spec.params, &flag_values(args));
    let vars = crate::remote::param_vars(&crate::remote::values(&given, &[]));
    let params = crate::remote::substitute("spec.pipelineRef", &r.params, &vars)?;
    let (key, found) = inputs.remote()?.fetch(
        "spec.pipelineRef",
        &resolver,
        &params,
        tektite_resolve::Kind::Pipeline,
    )?;
    match found {
        Object::Pipeline(p) => {
            inputs.pipelines.insert(key.clone(), p.spec.clone());
            if let Some(a) = p.metadata.annotations.filter(|a| !a.is_empty()) {
                inputs.pipeline_annotations.insert(key.clone(), a);
            }
            Ok((key, p.spec))
        }
        _ => Err("spec.pipelineRef: the resolver did not answer a Pipeline".into()),
    }
}

/// The Tasks and StepActions a Pipeline names through resolvers, for the
/// run with `params` (after `-p`).
fn remote_pipeline_tasks(
    inputs: &mut Inputs,
    at: &str,
    spec: &PipelineSpec,
    params: &[Param],
) -> Result<(), String> {
    if !crate::remote::pipeline_needs(spec, &inputs.tasks) {
        return Ok(());
    }
    let mut tasks = std::mem::take(&mut inputs.tasks);
    let mut actions = std::mem::take(&mut inputs.step_actions);
    let r = inputs
        .remote()
        .and_then(|rm| rm.for_pipeline(at, spec, params, &mut tasks, &mut actions));
    inputs.tasks = tasks;
    inputs.step_actions = actions;
    r
}

/// A run's Pipeline: its spec, its name (none when embedded or remote) and
/// its annotations.
type FoundPipeline = (PipelineSpec, Option<String>, BTreeMap<String, String>);

/// The Pipeline a run embeds, names (in the given files, `--task-dir` and
/// the catalog) or has a resolver find (its source then recorded in the
/// run's status); the refusal is printed.
fn pipeline_of(
    args: &Args,
    inputs: &mut Inputs,
    pr: &mut PipelineRun,
    who: &str,
) -> Result<FoundPipeline, Refused> {
    match (&pr.spec.pipeline_spec, &pr.spec.pipeline_ref) {
        (Some(s), _) => Ok(((**s).clone(), None, BTreeMap::new())),
        (None, Some(r)) if r.resolver.is_some() => match resolve_pipeline_ref(inputs, pr, args) {
            Ok((key, spec)) => {
                if let Some(src) = inputs.source_of(&key) {
                    let st = pr.status.get_or_insert_with(Default::default);
                    tektite_engine::status::record_source(&mut st.provenance, src);
                }
                let annotations = inputs.pipeline_annotations.get(&key).cloned();
                Ok((spec, None, annotations.unwrap_or_default()))
            }
            Err(m) => {
                note(&format!("{who}: {m}"));
                Err(EXIT_INVALID)
            }
        },
        (None, Some(r)) => {
            let n = r.name.clone().unwrap_or_default();
            match inputs.pipelines.get(&n) {
                Some(s) => {
                    let annotations = inputs.pipeline_annotations.get(&n).cloned();
                    Ok((s.clone(), Some(n), annotations.unwrap_or_default()))
                }
                None => {
                    note(&format!(
                        "{who}: spec.pipelineRef.name: no Pipeline {n:?} in the given files, --task-dir folders or the catalog"
                    ));
                    Err(EXIT_INVALID)
                }
            }
        }
        _ => unreachable!("validated"),
    }
}

/// A PipelineRun made ready: its Pipeline and Tasks resolved, flags
/// applied, checked.
fn prepare_pipeline_run(
    args: &Args,
    inputs: &mut Inputs,
    mut pr: Box<PipelineRun>,
    file: &str,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<Result<Job, Refused>> {
    let who = format!("{file}: PipelineRun {}", display_name(&pr.metadata));
    let (resolved, annotations) = match pipeline_of(args, inputs, &mut pr, &who) {
        Ok((spec, name, annotations)) => (Ok((spec, name)), annotations),
        Err(code) => return Ok(Err(code)),
    };
    let Ok((spec, pipeline_name)) = &resolved else {
        unreachable!()
    };
    let required = spec.workspaces.iter().filter(|w| !w.optional);
    let required: Vec<&str> = required.map(|w| w.name.as_str()).collect();
    let (params, workspaces) = (&mut pr.spec.params, &mut pr.spec.workspaces);
    if let Err(code) = complete(
        args,
        &who,
        &spec.params,
        &required,
        params,
        workspaces,
        claims,
    )? {
        return Ok(Err(code));
    }
    if let Err(m) = remote_pipeline_tasks(inputs, at_spec(&pr), spec, &pr.spec.params) {
        note(&format!("{who}: {m}"));
        return Ok(Err(EXIT_INVALID));
    }
    // Tasks the pipeline refers to must exist.
    let absent: Vec<String> = [("tasks", &spec.tasks), ("finally", &spec.finally)]
        .into_iter()
        .flat_map(|(list, ts)| ts.iter().enumerate().map(move |(i, t)| (list, i, t)))
        .filter_map(|(list, i, t)| {
            let n = t.task_ref.as_ref()?.name.clone()?;
            (!inputs.tasks.contains_key(&n)).then(|| format!("{list}[{i}].taskRef.name {n:?}"))
        })
        .collect();
    if !absent.is_empty() {
        let at = if pr.spec.pipeline_spec.is_some() {
            "spec.pipelineSpec"
        } else {
            "the Pipeline's spec"
        };
        note(&format!(
            "{who}: {at}: no such Task in the given files, --task-dir folders or the catalog: {}",
            absent.join(", ")
        ));
        return Ok(Err(EXIT_INVALID));
    }
    let absent = crate::stepactions::missing_in_pipeline(
        spec,
        at_spec(&pr),
        &inputs.tasks,
        &inputs.step_actions,
    );
    if !absent.is_empty() {
        note(&crate::stepactions::refusal(&who, &absent));
        return Ok(Err(EXIT_INVALID));
    }
    for w in crate::workspaces::shared_empty_dirs(spec, &pr.spec.workspaces) {
        note(&format!("{who}: {w}"));
    }
    if let Some(t) = &args.timeout {
        pr.spec
            .timeouts
            .get_or_insert_with(TimeoutFields::default)
            .pipeline = Some(t.clone());
    }
    // Its concurrency annotations are checked now (the key is resolved
    // again once the run has its name).
    let mut probe = (*pr).clone();
    if let Err(m) = crate::queue::settle(&mut probe, (spec, None), &annotations) {
        note(&format!("{who}: {m}"));
        return Ok(Err(EXIT_INVALID));
    }
    label_environment(
        &mut pr,
        (spec, pipeline_name.as_deref()),
        &annotations,
        &who,
    );
    Ok(Ok(Job::Pipeline(pr, resolved, annotations)))
}

/// The `tektite.dev/environment` label its Pipeline's annotation gives the
/// run (a deployment, for `tkt dora`); one that is not a label value is a
/// warning, and the run goes on unlabelled.
fn label_environment(
    pr: &mut PipelineRun,
    pipeline: (&PipelineSpec, Option<&str>),
    annotations: &BTreeMap<String, String>,
    who: &str,
) {
    match tektite_engine::pipelinerun::environment_label(pr, pipeline, annotations) {
        Some(Ok(value)) => {
            let labels = pr.metadata.labels.get_or_insert_with(Default::default);
            labels.insert(tektite_engine::dora::ENVIRONMENT_LABEL.into(), value);
        }
        Some(Err(m)) => note(&format!(
            "{who}: warning: {m}; the run is not labelled as a deployment"
        )),
        None => {}
    }
}

/// Where a PipelineRun's Pipeline spec is, for messages.
fn at_spec(pr: &PipelineRun) -> &'static str {
    if pr.spec.pipeline_spec.is_some() {
        "spec.pipelineSpec"
    } else {
        "the Pipeline's spec"
    }
}

/// Checks a prepared run as a whole, as the cluster would before running
/// it: validation again with `-p`/`-w` applied and every Task and Pipeline
/// known, then the engine's first plan, dry: what it would fail at once
/// (a param value outside its enum, an object param without a key, a CEL
/// `when`, a workspace the Task does not declare, …) is refused here, with
/// nothing recorded.
fn check_prepared(job: &Job, inputs: &Inputs, file: &str, config: &Config) -> Option<String> {
    let object = match job {
        Job::Task(tr, _) => Object::TaskRun(tr.clone()),
        Job::Pipeline(pr, ..) => Object::PipelineRun(pr.clone()),
    };
    let who = format!("{file}: {} {}", object.kind(), object.display_name());
    let catalog = validate::Catalog::from_loaded(&inputs.loaded);
    let errors: Vec<String> = validate::validate(&object, &catalog)
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{who}: {}: {} (with -p/-w applied)", f.path, f.message))
        .collect();
    if !errors.is_empty() {
        return Some(errors.join("\n"));
    }
    let missing = missing_sources(job, inputs);
    if !missing.is_empty() {
        let lines: Vec<String> = missing.iter().map(|m| format!("{who}: {m}")).collect();
        return Some(lines.join("\n"));
    }
    let now = Timestamp::now();
    let refused = match job {
        Job::Task(tr, source) => {
            let mut tr = (**tr).clone();
            name_of(&mut tr.metadata);
            preflight::task_run(&tr, source.resolved(), config, now)
        }
        Job::Pipeline(pr, resolved, _) => {
            let mut pr = (**pr).clone();
            name_of(&mut pr.metadata);
            let pipeline = resolved.as_ref().map(|(s, n)| (s, n.as_deref()));
            preflight::pipeline_run(
                &pr,
                pipeline,
                &inputs.tasks,
                &inputs.step_actions,
                config,
                now,
            )
        }
    };
    refused.map(|r| format!("{who}: {r}"))
}

/// The ConfigMaps, Secrets and keys a run names that were not given (and
/// are not `optional`), each `path: message`.
fn missing_sources(job: &Job, inputs: &Inputs) -> Vec<String> {
    match job {
        Job::Task(tr, TaskSource::Spec(spec, task)) => {
            crate::values::check_task_run(tr, spec, task.as_deref(), &inputs.data)
        }
        Job::Pipeline(pr, Ok((spec, name)), _) => crate::values::check_pipeline_run(
            pr,
            spec,
            name.as_deref(),
            &inputs.tasks,
            &inputs.data,
        ),
        _ => Vec::new(),
    }
}

/// Every run, made ready and checked; `claims` gathers `-w` host paths.
fn prepare(
    args: &Args,
    inputs: &mut Inputs,
    config: &Config,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<Result<Vec<Job>, Refused>> {
    let runs = match make_runs(inputs) {
        Ok(r) => r,
        Err(code) => return Ok(Err(code)),
    };
    let mut jobs = Vec::new();
    for (run, file) in runs {
        let job = match run {
            Object::TaskRun(tr) => prepare_task_run(args, inputs, tr, &file, claims)?,
            Object::PipelineRun(pr) => prepare_pipeline_run(args, inputs, pr, &file, claims)?,
            _ => continue,
        };
        let job = match job {
            Ok(j) => j,
            Err(code) => return Ok(Err(code)),
        };
        if let Some(why) = check_prepared(&job, inputs, &file, config) {
            note(&why);
            note("tkt: invalid input: nothing was run");
            return Ok(Err(EXIT_INVALID));
        }
        jobs.push(job);
    }
    Ok(Ok(jobs))
}

const PROCESS_BANNER: &str = "host processes (the steps' images are not used: commands run with this machine's tools, \
    as this user: securityContext's runAsUser and runAsGroup are not honoured)";

/// Said (on stderr, whatever the output format) when `--runtime auto`
/// falls back to host processes as root: nothing then stands between a
/// step and this machine.
const ROOT_FALLBACK_WARNING: &str = "tkt: warning: steps run as host processes as root, without containers: \
    a step can do anything root can do on this machine. Run only YAML you trust, \
    or pass --runtime podman to refuse running without containers";

/// The runtime asked for, if it works here, said on the first line.
fn choose_runtime(args: &Args, text: bool, config: &Config) -> Result<RuntimeKind, Refused> {
    let process = || -> Result<RuntimeKind, String> {
        tektite_local::process::available()?;
        Ok(RuntimeKind::Process(
            tektite_local::process::entrypoint_binary()?,
        ))
    };
    // podman that has both images here works: in the usual case that is
    // all podman is asked before the pod is played.
    let images = [&config.entrypoint_image, &config.shell_image];
    let images_there =
        !matches!(args.runtime, RuntimeArg::Process) && runtime::images_present(&images);
    let podman = || {
        if images_there {
            Ok("podman".to_string())
        } else {
            runtime::podman_available()
        }
    };
    let kind = match args.runtime {
        RuntimeArg::Podman => match podman() {
            Ok(what) => {
                say(
                    text,
                    &format!("runtime: {what}, because of --runtime podman"),
                );
                RuntimeKind::Podman
            }
            Err(why) => {
                note(&format!("tkt: --runtime podman: {why}"));
                return Err(EXIT_INVALID);
            }
        },
        RuntimeArg::Process => match process() {
            Ok(k) => {
                say(
                    text,
                    &format!("runtime: {PROCESS_BANNER}, because of --runtime process"),
                );
                k
            }
            Err(why) => {
                note(&format!("tkt: --runtime process: {why}"));
                return Err(EXIT_INVALID);
            }
        },
        RuntimeArg::Auto => match podman() {
            Ok(what) => {
                say(
                    text,
                    &format!("runtime: {what}, because it works on this machine"),
                );
                RuntimeKind::Podman
            }
            Err(podman_why) => match process() {
                Ok(k) => {
                    say(
                        text,
                        &format!("runtime: {PROCESS_BANNER}, because {podman_why}"),
                    );
                    if nix::unistd::Uid::effective().is_root() {
                        note(ROOT_FALLBACK_WARNING);
                    }
                    k
                }
                Err(why) => {
                    note(&format!("tkt: cannot run here: {podman_why}; and {why}"));
                    return Err(EXIT_INVALID);
                }
            },
        },
    };
    if matches!(kind, RuntimeKind::Process(_))
        && tektite_local::process::mode() == tektite_local::process::Mode::Rewrite
    {
        say(
            text,
            &format!("runtime: {}", tektite_local::process::REWRITE_LIMITS),
        );
    }
    // Else each is looked up, and pulled, on its own.
    if matches!(kind, RuntimeKind::Podman) && !images_there {
        for image in images {
            if runtime::image_command(image).is_err() {
                note(&format!(
                    "tkt: image {image} is missing: build it with hack/images.sh"
                ));
                return Err(EXIT_INVALID);
            }
        }
    }
    Ok(kind)
}

/// The `--env` flags as (name, value): `NAME=VALUE`, or `NAME` with its
/// value in tkt's environment.
fn env_flags(flags: &[String]) -> Result<Vec<(String, String)>, String> {
    flags
        .iter()
        .map(|f| {
            let (name, value) = match f.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (f.as_str(), None),
            };
            // Kubernetes' rule for env names: letters, digits, `_`, `-`
            // and `.`, not starting with a digit.
            let valid = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                && name.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !valid || value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(format!(
                    "--env {f:?}: expected NAME or NAME=VALUE (a name of letters, digits, '_', '-' and '.', not starting with a digit; no NUL in the value)"
                ));
            }
            let value = match value {
                Some(v) => v,
                None => std::env::var(name).map_err(|_| {
                    format!(
                        "--env {name}: {name} is not set in tkt's environment (give NAME=VALUE)"
                    )
                })?,
            };
            Ok((name.to_string(), value))
        })
        .collect()
}

/// Runs `tkt run`.
///
/// # Errors
/// Failures to write output or to open the store.
pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    if args.target.is_cluster() {
        return crate::cluster_run::run(args, out);
    }
    if args.detach {
        note("tkt: --detach is for runs on a cluster (--cluster, -n, --context, --kubeconfig)");
        return Ok(EXIT_INVALID);
    }
    if args.runtime == RuntimeArg::Process {
        tektite_local::process::warm_up();
    }
    let (grace, env) = match checked_flags(args) {
        Ok(f) => f,
        Err(m) => {
            note(&format!("tkt: {m}"));
            return Ok(EXIT_INVALID);
        }
    };
    let mut inputs = match load(args)? {
        Ok(i) => i,
        Err(code) => return Ok(code),
    };
    let traces = crate::traces::settings();
    let config = Config {
        tracing: traces.is_some(),
        ..Config::default()
    };
    let mut claims: BTreeMap<String, PathBuf> = BTreeMap::new();
    let jobs = match prepare(args, &mut inputs, &config, &mut claims)? {
        Ok(j) => j,
        Err(code) => return Ok(code),
    };
    let text = args.output == Format::Text;
    let kind = match choose_runtime(args, text, &config) {
        Ok(k) => k,
        Err(code) => return Ok(code),
    };
    let masker = tektite_local::mask::Masker::new(inputs.data.secret_values());
    let store = Store::open(args.state_dir.as_deref())?.masking(masker.clone());
    for r in live::recover_abandoned(&store, None) {
        note(&format!("tkt: {r}"));
    }
    let _watchdog = crate::watchdog::start(&store);
    let interrupts = Interrupts::install();
    let ctx = JobContext {
        args,
        store: &store,
        opts: Options {
            runtime: kind,
            parallel: args
                .parallel
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            keep: args.keep,
            config,
            work: PathBuf::new(),
            fast_work: PathBuf::new(),
            claims,
            grace,
            env,
            journal: None,
            step_actions: Arc::new(inputs.step_actions.clone()),
            sources: Arc::new(
                inputs
                    .remote
                    .as_ref()
                    .map(|r| r.sources.clone())
                    .unwrap_or_default(),
            ),
            data: Arc::new(inputs.data.clone()),
        },
        tasks: &inputs.tasks,
        interrupts: &interrupts,
        finals: std::cell::RefCell::new(Vec::new()),
        traces,
    };
    let mut worst = 0u8;
    for job in jobs {
        let code = match run_job(&ctx, job)? {
            Ok(code) | Err(code) => code,
        };
        worst = worst.max(code);
        if code == EXIT_INTERRUPTED {
            break;
        }
    }
    crate::cluster_run::print_finals(args.output, &ctx.finals.borrow(), out)?;
    Ok(worst)
}

/// The grace period and the `--env` pairs, once `--timeout` is checked
/// too.
///
/// # Errors
/// A flag's value is invalid: the message names the flag.
fn checked_flags(args: &Args) -> Result<(Duration, Vec<(String, String)>), String> {
    let grace = duration_flag("--grace-period", &args.grace_period)?;
    if let Some(t) = &args.timeout {
        duration_flag("--timeout", t)?;
    }
    Ok((grace, env_flags(&args.env)?))
}

/// What every job of one `tkt run` shares.
struct JobContext<'a> {
    args: &'a Args,
    store: &'a Store,
    /// The options of every job (`work` and `journal` set per job).
    opts: Options,
    tasks: &'a BTreeMap<String, TaskSpec>,
    interrupts: &'a Interrupts,
    /// The runs as they ended (`-o json|yaml`).
    finals: std::cell::RefCell<Vec<serde_json::Value>>,
    /// Where the runs' traces go, if anywhere.
    traces: Option<tektite_telemetry::Settings>,
}

/// Claims the job's name: its journal first (so that whatever ends this
/// `tkt` from here on, the run is recovered), then its record. A
/// `generateName` is tried again with another suffix when taken; a fixed
/// name that is taken refuses the run: exactly one of two runs given the
/// same name starts.
fn claim(store: &Store, job: &mut Job) -> anyhow::Result<Result<Journal, Refused>> {
    let generated = job.meta().name.as_deref().is_none_or(str::is_empty);
    for _ in 0..16 {
        name_of(job.meta());
        let (kind, name) = (job.kind(), job.name());
        if let Some(journal) = Journal::create(store, kind, &name)? {
            let claimed = match job {
                Job::Task(tr, _) => store.claim_task_run(tr)?,
                Job::Pipeline(pr, resolved, annotations) => {
                    if let Err(m) = queue_settings(pr, resolved, annotations) {
                        // A key over the run's own name can only now be
                        // resolved (and be too long): refused, not run
                        // without it.
                        journal.release();
                        note(&format!("tkt: PipelineRun {name}: {m}"));
                        return Ok(Err(EXIT_INVALID));
                    }
                    store.claim_pipeline_run(pr)?
                }
            };
            if claimed {
                return Ok(Ok(journal));
            }
            journal.release();
        }
        if !generated {
            note(&format!(
                "tkt: {} {name:?} already exists in the run store ({}): use metadata.generateName, or delete it first",
                kind.lower(),
                store.root().display()
            ));
            return Ok(Err(EXIT_INVALID));
        }
        job.meta().name = None;
    }
    bail!(
        "no free name for a {} in {}",
        job.kind().lower(),
        store.root().display()
    )
}

/// A PipelineRun about to be claimed: its creation time (the queue's
/// order) and its concurrency settings over its name (checked, but for the
/// name, when it was prepared); `Err` names the annotation and what was
/// expected.
fn queue_settings(
    pr: &mut PipelineRun,
    resolved: &Result<(PipelineSpec, Option<String>), Failure>,
    annotations: &BTreeMap<String, String>,
) -> Result<(), String> {
    pr.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    match resolved {
        Ok((spec, name)) => crate::queue::settle(pr, (spec, name.as_deref()), annotations),
        Err(_) => Ok(()),
    }
}

/// Ends a job's hold on its run however `run_job` returns: the interrupt
/// handler lets go of it, and its journal is released (the run has been
/// recorded, or could not be: either way nothing of it is left running).
struct Held<'a> {
    interrupts: &'a Interrupts,
    journal: Arc<Journal>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.interrupts.detach();
        self.journal.release();
    }
}

/// Carries out one run: claimed, journaled, run, recorded, released.
fn run_job(ctx: &JobContext<'_>, mut job: Job) -> anyhow::Result<Result<u8, Refused>> {
    let journal = match claim(ctx.store, &mut job)? {
        Ok(j) => Arc::new(j),
        Err(code) => return Ok(Err(code)),
    };
    let (name, kind) = (job.name(), job.kind());
    // Unrecorded, the pods keep all on disk; a work directory that cannot
    // be made fails the first pod, with the reason, as a run recorded.
    let (work, fast_work) = ctx.store.make_work_dirs(kind, &name).unwrap_or_else(|_| {
        let w = ctx.store.work_dir(kind, &name);
        (w.clone(), w)
    });
    let opts = Options {
        work,
        fast_work,
        journal: Some(journal.clone()),
        ..ctx.opts.clone()
    };
    let text = ctx.args.output == Format::Text;
    let is_pipeline = kind == RunKind::PipelineRun;
    let (ptx, prx) = mpsc::sync_channel::<Progress>(tektite_local::logs::CHANNEL_BOUND);
    let runner = Runner::new(opts, ctx.store.clone(), ptx);
    ctx.interrupts.attach(runner.interrupter(), journal.clone());
    let held = Held {
        interrupts: ctx.interrupts,
        journal: journal.clone(),
    };
    let color = !ctx.args.no_color
        && std::env::var_os("NO_COLOR").is_none()
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal();
    let printer = std::thread::spawn(move || print_progress(prx, is_pipeline, text, color));
    let mut turn = crate::queue::Turn::Go;
    if let Job::Pipeline(pr, ..) = &mut job {
        // Its turn under its concurrency key (at once without one).
        let stop = || ctx.interrupts.count() > 0;
        let tell = |line: &str| say(text, line);
        let at = (ctx.store, &ctx.opts.config);
        turn = crate::queue::wait_turn(at, pr, &journal, &stop, &tell)?;
    }
    if turn == crate::queue::Turn::Go {
        say(text, &format!("{} {name} started", kind.lower()));
    }
    let Ended {
        object,
        cond,
        spans,
    } = carry_out(ctx, &runner, job)?;
    drop(runner);
    let _ = printer.join();
    if !ctx.args.keep {
        let _ = ctx.store.remove_work_dir(kind, &name);
    }
    // Recorded: nothing of this run is left to recover.
    drop(held);
    let c = cond.unwrap_or_default();
    let mask = ctx.store.mask().unwrap_or_default();
    if let Some(settings) = &ctx.traces {
        crate::traces::export(settings, spans, &mask);
    }
    let mut object = object;
    mask.mask_json(&mut object);
    say(
        text,
        &mask.mask_str(&format!(
            "{} {name} {}: {}",
            kind.lower(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        )),
    );
    // Printed once every job has ended: several runs make one document.
    ctx.finals.borrow_mut().push(object);
    Ok(Ok(if ctx.interrupts.count() > 0 {
        EXIT_INTERRUPTED
    } else if c.status == "True" {
        0
    } else {
        1
    }))
}

/// A run as it ended and was recorded: its object, its `Succeeded`
/// condition and its trace's spans.
struct Ended {
    object: serde_json::Value,
    cond: Option<Condition>,
    spans: Vec<tektite_engine::trace::Span>,
}

/// Runs the job to its end and records it.
///
/// # Errors
/// The record cannot be written.
fn carry_out(ctx: &JobContext<'_>, runner: &Runner, job: Job) -> anyhow::Result<Ended> {
    let succeeded = |c: &[Condition]| Condition::succeeded(c).cloned();
    Ok(match job {
        Job::Task(tr, source) => {
            let tr = runner.run_task(*tr, source);
            ctx.store.save_task_run(&tr)?;
            Ended {
                cond: tr.status.as_ref().and_then(|s| succeeded(&s.conditions)),
                spans: tektite_engine::trace::taskrun_spans(&tr),
                object: serde_json::to_value(&tr)?,
            }
        }
        Job::Pipeline(pr, resolved, _) => {
            let pipeline = resolved.as_ref().map(|(s, n)| (s, n.as_deref()));
            let (pr, children) = runner.run_pipeline(*pr, pipeline, ctx.tasks);
            ctx.store.save_pipeline_run(&pr)?;
            let mut spans = tektite_engine::trace::pipelinerun_spans(&pr);
            let tasks = children
                .iter()
                .flat_map(tektite_engine::trace::taskrun_spans);
            spans.extend(tasks);
            Ended {
                cond: pr.status.as_ref().and_then(|s| succeeded(&s.conditions)),
                spans,
                object: serde_json::to_value(&pr)?,
            }
        }
    })
}

/// Adds `-p` and `-w` to a run's params and workspaces, then refuses the
/// run (saying so, after `who`) if it still lacks a param or workspace.
fn complete(
    args: &Args,
    who: &str,
    declared: &[ParamSpec],
    required_ws: &[&str],
    params: &mut Vec<Param>,
    workspaces: &mut Vec<WorkspaceBinding>,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<Result<(), Refused>> {
    apply_flags(args, declared, params, workspaces, claims)?;
    if let Some(m) = missing(declared, params, required_ws.iter().copied(), workspaces) {
        note(&format!("{who}: {m}"));
        return Ok(Err(EXIT_INVALID));
    }
    Ok(Ok(()))
}

/// Adds `-p` and `-w` to a run's params and workspaces.
fn apply_flags(
    args: &Args,
    declared: &[ParamSpec],
    params: &mut Vec<Param>,
    workspaces: &mut Vec<WorkspaceBinding>,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for raw in &args.params {
        let (name, value) = split_flag("-p", raw)?;
        let kind = declared
            .iter()
            .find(|p| p.name == name)
            .map_or("string", declared_kind);
        let value = param_value(value, kind).with_context(|| format!("-p {name}"))?;
        params.retain(|p| p.name != name);
        params.push(Param {
            name: name.to_string(),
            value,
        });
    }
    for raw in &args.workspaces {
        let (name, value) = split_flag("-w", raw)?;
        let b = crate::workspaces::binding(name, value, claims)?;
        workspaces.retain(|w| w.name != name);
        workspaces.push(b);
    }
    Ok(())
}

/// What a run still lacks: params without value or default, unbound workspaces.
fn missing<'a>(
    declared: &[ParamSpec],
    given: &[Param],
    required_ws: impl Iterator<Item = &'a str>,
    bound: &[WorkspaceBinding],
) -> Option<String> {
    let params: Vec<&str> = declared
        .iter()
        .filter(|p| p.default.is_none() && !given.iter().any(|g| g.name == p.name))
        .map(|p| p.name.as_str())
        .collect();
    let ws: Vec<&str> = required_ws
        .filter(|w| !bound.iter().any(|b| b.name == *w))
        .collect();
    if params.is_empty() && ws.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !params.is_empty() {
        parts.push(format!(
            "spec.params: missing params: {} (give them with -p NAME=VALUE)",
            params.join(", ")
        ));
    }
    if !ws.is_empty() {
        parts.push(format!(
            "spec.workspaces: missing workspaces: {} (give them with -w {})",
            ws.join(", "),
            crate::workspaces::FORMS
        ));
    }
    Some(parts.join("; "))
}

/// Ctrl-C, SIGTERM and SIGHUP (a closed terminal). The first cancels the
/// running job: its pods get the grace period, and it is recorded as
/// cancelled. The second kills everything the job started at once; it is
/// still recorded. A third exits at once, and the watchdog cleans up.
struct Interrupts {
    count: Arc<AtomicU8>,
    current: Arc<Mutex<Option<Attached>>>,
}

/// The job an interrupt goes to: its runner's inbox and its journal.
type Attached = (mpsc::Sender<Msg>, Arc<Journal>);

impl Interrupts {
    fn install() -> Interrupts {
        use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
        let it = Interrupts {
            count: Arc::default(),
            current: Arc::default(),
        };
        // Caught by handlers, not blocked: what tkt starts inherits no
        // blocked mask.
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            note(
                "tkt: cannot take SIGINT, SIGTERM and SIGHUP: an interrupt will not cancel cleanly",
            );
            return it;
        };
        let (count, current) = (it.count.clone(), it.current.clone());
        std::thread::spawn(move || {
            for _ in signals.forever() {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let job = current.lock().ok().and_then(|c| c.clone());
                match n {
                    1 => {
                        note("tkt: interrupted: cancelling the run (again to stop it at once)");
                        if let Some((tx, _)) = job {
                            let _ = tx.send(Msg::Interrupt);
                        }
                    }
                    2 => {
                        note(
                            "tkt: interrupted again: stopping everything the run started, at once",
                        );
                        if let Some((_, journal)) = job {
                            journal.stop_now();
                        }
                    }
                    _ => {
                        note(
                            "tkt: interrupted a third time: exiting now (what is left is cleaned up in the background)",
                        );
                        std::process::exit(i32::from(EXIT_INTERRUPTED));
                    }
                }
            }
        });
        it
    }

    /// The job now running: an interrupt goes to it (at once, if one came
    /// before it started).
    fn attach(&self, tx: mpsc::Sender<Msg>, journal: Arc<Journal>) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some((tx.clone(), journal));
        }
        // After taking the job: an interrupt that came before is not lost
        // (one sent twice does no harm).
        if self.count() > 0 {
            let _ = tx.send(Msg::Interrupt);
        }
    }

    fn detach(&self) {
        if let Ok(mut c) = self.current.lock() {
            *c = None;
        }
    }

    /// How many interrupts came.
    fn count(&self) -> u8 {
        self.count.load(Ordering::SeqCst)
    }
}

const COLORS: &[&str] = &["36", "33", "35", "32", "34", "96", "93", "95"];

/// Where each task of the run stands, for the progress view.
#[derive(Default)]
struct Board {
    /// Task → (state, started, duration when ended), in first-seen order.
    tasks: Vec<(
        String,
        String,
        Option<std::time::Instant>,
        Option<std::time::Duration>,
    )>,
}

impl Board {
    fn set(&mut self, task: &str, state: &str) {
        let now = std::time::Instant::now();
        match self.tasks.iter_mut().find(|t| t.0 == task) {
            Some(t) => {
                t.1 = state.to_string();
                if state != "running" {
                    t.3 = t.2.map(|s| now - s);
                }
            }
            None => self.tasks.push((
                task.to_string(),
                state.to_string(),
                (state == "running").then_some(now),
                None,
            )),
        }
    }

    fn count(&self, state: &str) -> usize {
        self.tasks.iter().filter(|t| t.1 == state).count()
    }

    /// One line: what runs, and how many ended which way.
    fn line(&self) -> String {
        let running: Vec<&str> = self
            .tasks
            .iter()
            .filter(|t| t.1 == "running")
            .map(|t| t.0.as_str())
            .collect();
        let cancelled = match self.count("cancelled") {
            0 => String::new(),
            n => format!(" | cancelled: {n}"),
        };
        format!(
            "running: {} | succeeded: {} | failed: {}{cancelled} | skipped: {}",
            if running.is_empty() {
                "-".to_string()
            } else {
                running.join(", ")
            },
            self.count("succeeded"),
            self.count("failed"),
            self.count("skipped")
        )
    }

    /// The final table: every task, its outcome and duration.
    fn table(&self) -> String {
        let w = self
            .tasks
            .iter()
            .map(|t| t.0.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!("{:<w$}   {:<9}   DURATION\n", "TASK", "STATUS");
        for (name, state, _, d) in &self.tasks {
            let d = d.map_or("---".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
            s.push_str(&format!("{name:<w$}   {state:<9}   {d}\n"));
        }
        s
    }
}

pub(crate) fn print_progress(
    rx: mpsc::Receiver<Progress>,
    pipeline: bool,
    to_stdout: bool,
    color: bool,
) {
    let mut palette: BTreeMap<String, &str> = BTreeMap::new();
    // On a terminal, a status line of the tasks stays at the bottom, redrawn
    // under each new line; elsewhere, plain lines.
    let live = color && pipeline;
    let mut board = Board::default();
    let write = |text: &str| {
        if to_stdout {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        } else {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    };
    // Lines (each ending with a newline), each after `prefix`, with the
    // status line under them on a terminal; one write.
    let emit_all = |prefix: &str, lines: &str, board: &Board| {
        let mut text = String::with_capacity(lines.len() * 2);
        for l in lines.split_inclusive('\n') {
            if live {
                text.push_str("\r\x1b[K");
            }
            text.push_str(prefix);
            text.push_str(l);
        }
        if live {
            text.push_str(&format!("\x1b[2m{}\x1b[0m", board.line()));
        }
        write(&text);
    };
    let emit = |s: &str, board: &Board| emit_all("", &format!("{s}\n"), board);
    for p in rx {
        match p {
            Progress::Lines { task, step, text } => {
                let prefix = if pipeline {
                    format!("[{task} : {step}]")
                } else {
                    format!("[{step}]")
                };
                let prefix = if color {
                    let n = palette.len();
                    let c = palette
                        .entry(format!("{task}/{step}"))
                        .or_insert(COLORS[n % COLORS.len()]);
                    format!("\x1b[{c}m{prefix}\x1b[0m")
                } else {
                    prefix
                };
                emit_all(&format!("{prefix} "), &text, &board);
            }
            Progress::Started { task, task_run } if pipeline => {
                board.set(&task, "running");
                emit(&format!("task {task} started (taskrun {task_run})"), &board);
            }
            Progress::Finished {
                task,
                status,
                reason,
                message,
                ..
            } if pipeline => {
                let state = if status == "True" {
                    "succeeded"
                } else if reason == "TaskRunCancelled" {
                    "cancelled"
                } else {
                    "failed"
                };
                board.set(&task, state);
                emit(&format!("task {task} {reason}: {message}"), &board);
            }
            Progress::Skipped { task, reason } => {
                board.set(&task, "skipped");
                emit(&format!("task {task} skipped: {reason}"), &board);
            }
            _ => {}
        }
    }
    if live {
        let text = format!("\r\x1b[K{}", board.table());
        if to_stdout {
            let _ = std::io::stdout().write_all(text.as_bytes());
        } else {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}
