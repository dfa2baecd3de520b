//! `tkt pipeline|p` and `tkt task|t`: list, describe and start the
//! Pipelines and Tasks of a cluster's namespace, or locally those of the
//! catalog and `--task-dir` folders, as `tkn pipeline|task
//! list|describe|start` do.
//!
//! `start` makes a run of the definition with `-p` and `-w` (tkn's forms),
//! after the params and workspaces of another run when asked
//! (`--last`, `--use-pipelinerun`/`--use-taskrun`). A param without a
//! default and without a value, or an unbound workspace, is refused, naming
//! them (tkt never prompts). On a cluster the run is created and, with
//! `--showlog`, followed; locally it runs in the foreground as `tkt run`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use serde_json::{Value, json};
use tektite_api::load::{Object, load_file};
use tektite_api::v1::{
    Param, ParamSpec, ParamValue, Pipeline, PipelineRun, PipelineSpec, Task, TaskRun, TaskSpec,
    WorkspaceBinding,
};

use crate::cluster::{Cluster, TargetArgs, get_opt};
use crate::inspect::{Output, Run, age, condition, duration, tabwrite};
use crate::note;

/// Which kind of definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefKind {
    Pipeline,
    Task,
}

impl DefKind {
    fn lower(self) -> &'static str {
        match self {
            DefKind::Pipeline => "pipeline",
            DefKind::Task => "task",
        }
    }

    fn run_kind(self) -> crate::inspect::Kind {
        match self {
            DefKind::Pipeline => crate::inspect::Kind::PipelineRun,
            DefKind::Task => crate::inspect::Kind::TaskRun,
        }
    }
}

/// Arguments of `tkt pipeline|task`.
#[derive(Debug, Parser)]
pub struct Args {
    /// The run store (the local target) [default: $XDG_STATE_HOME/tektite]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More folders of Tasks and Pipelines (the local target; the catalog
    /// is always searched)
    #[arg(long = "task-dir", global = true, value_name = "DIR")]
    pub task_dirs: Vec<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the definitions
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Describe one definition: params, workspaces, tasks or steps, runs
    #[command(visible_alias = "desc")]
    Describe(DescribeArgs),
    /// Start a run of a definition
    Start(StartArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format (text, json, jsonl, yaml, name)
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Do not print the column names
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    pub name: String,
    /// Output format (json and yaml print the definition)
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    pub name: String,
    /// A param: name=value; arrays as a,b,c; objects as k1:v1,k2:v2
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A workspace: name=WS,emptyDir=  name=WS,claimName=C  (also
    /// config=CM, secret=S); locally also WS=PATH, WS=emptyDir, WS=volumeClaimTemplate
    #[arg(short = 'w', long = "workspace", value_name = "BINDING")]
    pub workspaces: Vec<String>,
    /// Follow the run's logs to its end (exit code: its outcome)
    #[arg(long)]
    pub showlog: bool,
    /// Params and workspaces of the last run of this definition
    #[arg(long, conflicts_with_all = ["use_pipelinerun", "use_taskrun"])]
    pub last: bool,
    /// Params and workspaces of this PipelineRun
    #[arg(long, value_name = "NAME")]
    pub use_pipelinerun: Option<String>,
    /// Params and workspaces of this TaskRun
    #[arg(long, value_name = "NAME")]
    pub use_taskrun: Option<String>,
    /// Params not given take their defaults (always so: tkt never prompts)
    #[arg(long)]
    pub use_param_defaults: bool,
    /// Where steps run (the local target)
    #[arg(long, default_value = "auto", value_name = "RUNTIME")]
    pub runtime: String,
}

/// A definition, of either kind.
#[derive(Debug, Clone)]
enum Def {
    Pipeline(Box<Pipeline>),
    Task(Box<Task>),
}

impl Def {
    fn name(&self) -> &str {
        match self {
            Def::Pipeline(p) => p.metadata.name.as_deref().unwrap_or_default(),
            Def::Task(t) => t.metadata.name.as_deref().unwrap_or_default(),
        }
    }

    fn created(&self) -> Option<Timestamp> {
        let m = match self {
            Def::Pipeline(p) => &p.metadata,
            Def::Task(t) => &t.metadata,
        };
        m.creation_timestamp.as_ref().map(|t| t.0)
    }

    fn to_json(&self) -> Value {
        match self {
            Def::Pipeline(p) => serde_json::to_value(p),
            Def::Task(t) => serde_json::to_value(t),
        }
        .unwrap_or(Value::Null)
    }

    fn params(&self) -> &[ParamSpec] {
        match self {
            Def::Pipeline(p) => &p.spec.params,
            Def::Task(t) => &t.spec.params,
        }
    }

    /// Workspaces: name, description, optional.
    fn workspaces(&self) -> Vec<(String, String, bool)> {
        let row = |name: &String, description: &Option<String>, optional: bool| {
            let d = description.clone().unwrap_or_default();
            (name.clone(), d, optional)
        };
        match self {
            Def::Pipeline(p) => p
                .spec
                .workspaces
                .iter()
                .map(|w| row(&w.name, &w.description, w.optional))
                .collect(),
            Def::Task(t) => t
                .spec
                .workspaces
                .iter()
                .map(|w| row(&w.name, &w.description, w.optional))
                .collect(),
        }
    }
}

/// Runs a `tkt pipeline|task` command.
///
/// # Errors
/// The definition is not there; the target cannot be read; a run cannot
/// be made (the message names what is missing).
pub fn run(kind: DefKind, args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    if args.target.is_cluster() {
        let c = Cluster::connect(&args.target)?;
        return on_cluster(kind, &c, &args.command, out).map_err(|e| c.explain(e));
    }
    local(kind, args, out)
}

// ---------------------------------------------------------------- cluster

fn cluster_defs(kind: DefKind, c: &Cluster) -> anyhow::Result<Vec<Def>> {
    Ok(match kind {
        DefKind::Pipeline => {
            let api: kube::Api<Pipeline> = kube::Api::namespaced(c.client.clone(), &c.namespace);
            let items = c.block(api.list(&ListParams::default()))?.items;
            items
                .into_iter()
                .map(|p| Def::Pipeline(Box::new(p)))
                .collect()
        }
        DefKind::Task => {
            let api: kube::Api<Task> = kube::Api::namespaced(c.client.clone(), &c.namespace);
            let items = c.block(api.list(&ListParams::default()))?.items;
            items.into_iter().map(|t| Def::Task(Box::new(t))).collect()
        }
    })
}

fn cluster_def(kind: DefKind, c: &Cluster, name: &str) -> anyhow::Result<Def> {
    let found = match kind {
        DefKind::Pipeline => {
            let api: kube::Api<Pipeline> = kube::Api::namespaced(c.client.clone(), &c.namespace);
            c.block(get_opt(&api, name))?
                .map(|p| Def::Pipeline(Box::new(p)))
        }
        DefKind::Task => {
            let api: kube::Api<Task> = kube::Api::namespaced(c.client.clone(), &c.namespace);
            c.block(get_opt(&api, name))?
                .map(|t| Def::Task(Box::new(t)))
        }
    };
    found.with_context(|| {
        format!(
            "{} {name:?} not found in namespace {:?}",
            kind.lower(),
            c.namespace
        )
    })
}

/// Whether a run is of the definition `name`: its reference names it, or
/// its `tekton.dev/pipeline`/`tekton.dev/task` label does.
fn of_pipeline(pr: &PipelineRun, name: &str) -> bool {
    pr.spec
        .pipeline_ref
        .as_ref()
        .and_then(|r| r.name.as_deref())
        == Some(name)
        || label(pr.metadata.labels.as_ref(), "tekton.dev/pipeline") == Some(name)
}

fn of_task(tr: &TaskRun, name: &str) -> bool {
    let by_ref = tr.spec.task_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
    // A pipeline's TaskRuns are its; `tkn task describe` lists them too.
    by_ref || label(tr.metadata.labels.as_ref(), "tekton.dev/task") == Some(name)
}

fn label<'a>(
    l: Option<&'a std::collections::BTreeMap<String, String>>,
    k: &str,
) -> Option<&'a str> {
    l?.get(k).map(String::as_str)
}

/// The runs of a definition.
/// Every run of the kind a definition of `kind` makes (one list).
fn cluster_all_runs(kind: DefKind, c: &Cluster) -> anyhow::Result<Runs> {
    let lp = ListParams::default();
    Ok(match kind {
        DefKind::Pipeline => Runs::Pipeline(c.block(c.prs().list(&lp))?.items),
        DefKind::Task => Runs::Task(c.block(c.trs().list(&lp))?.items),
    })
}

fn cluster_runs(kind: DefKind, c: &Cluster, name: &str) -> anyhow::Result<Runs> {
    Ok(cluster_all_runs(kind, c)?.of(name))
}

fn on_cluster(
    kind: DefKind,
    c: &Cluster,
    command: &Command,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let now = Timestamp::now();
    match command {
        Command::List(a) => {
            let defs = cluster_defs(kind, c)?;
            let all = cluster_all_runs(kind, c)?;
            let mut rows = Vec::new();
            for d in &defs {
                rows.push((d.clone(), all.of(d.name())));
            }
            out.write_all(list(kind, &rows, a, now)?.as_bytes())?;
        }
        Command::Describe(a) => {
            let d = cluster_def(kind, c, &a.name)?;
            let runs = cluster_runs(kind, c, &a.name)?;
            out.write_all(
                describe(kind, &d, Some(&c.namespace), &runs, a.output, now)?.as_bytes(),
            )?;
        }
        Command::Start(a) => return start_on_cluster(kind, c, a, out),
    }
    Ok(0)
}

/// The params and workspaces of the run `--last`/`--use-…run` names.
fn earlier_run(
    kind: DefKind,
    c: &Cluster,
    a: &StartArgs,
) -> anyhow::Result<Option<(Vec<Param>, Vec<WorkspaceBinding>)>> {
    let named = a.use_pipelinerun.as_deref().or(a.use_taskrun.as_deref());
    match (kind, named, a.last) {
        (_, None, false) => Ok(None),
        (DefKind::Pipeline, Some(n), _) => {
            let pr = c
                .block(get_opt(&c.prs(), n))?
                .with_context(|| format!("pipelinerun {n:?} not found"))?;
            Ok(Some((pr.spec.params, pr.spec.workspaces)))
        }
        (DefKind::Task, Some(n), _) => {
            let tr = c
                .block(get_opt(&c.trs(), n))?
                .with_context(|| format!("taskrun {n:?} not found"))?;
            Ok(Some((tr.spec.params, tr.spec.workspaces)))
        }
        (_, None, true) => {
            let newest = cluster_runs(kind, c, &a.name)?.newest();
            let found = newest
                .with_context(|| format!("--last: {} {:?} has no runs", kind.lower(), a.name))?;
            Ok(Some(found))
        }
    }
}

/// The params of a run of `def`: an earlier run's, then `-p`, checked
/// and typed as it declares them ([`typed_params`]).
fn start_params(def: &Def, earlier: Vec<Param>, flags: &[String]) -> anyhow::Result<Vec<Param>> {
    let what = match def {
        Def::Pipeline(_) => format!("pipeline {}", def.name()),
        Def::Task(_) => format!("task {}", def.name()),
    };
    typed_params(&what, def.params(), earlier, flags)
}

/// The params of a run of `what` (`pipeline NAME`, `task NAME`), which
/// declares `decls`: `earlier` ones it still declares, then `-p` (typed as
/// declared); refused when a `-p` names a param it does not declare, or
/// one without a default has no value (the message names them).
pub(crate) fn typed_params(
    what: &str,
    decls: &[ParamSpec],
    earlier: Vec<Param>,
    flags: &[String],
) -> anyhow::Result<Vec<Param>> {
    let mut params: Vec<Param> = earlier
        .into_iter()
        .filter(|p| decls.iter().any(|d| d.name == p.name))
        .collect();
    for raw in flags {
        let (name, value) = raw
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .with_context(|| format!("-p {raw:?}: expected NAME=VALUE"))?;
        let Some(decl) = decls.iter().find(|d| d.name == name) else {
            let known: Vec<&str> = decls.iter().map(|d| d.name.as_str()).collect();
            anyhow::bail!(
                "-p {name}: {what} has no param {name:?} (it has: {})",
                known.join(", ")
            );
        };
        let kind = decl.type_.clone().unwrap_or_else(|| "string".into());
        params.retain(|p| p.name != name);
        params.push(Param {
            name: name.to_string(),
            value: crate::run::param_value(value, &kind)?,
        });
    }
    let missing: Vec<&str> = decls
        .iter()
        .filter(|d| d.default.is_none() && !params.iter().any(|p| p.name == d.name))
        .map(|d| d.name.as_str())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{what} needs a value for param(s) {}: give -p NAME=VALUE",
            missing.join(", ")
        );
    }
    Ok(params)
}

fn start_on_cluster(
    kind: DefKind,
    c: &Cluster,
    a: &StartArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let def = cluster_def(kind, c, &a.name)?;
    let (earlier_params, earlier_ws) = earlier_run(kind, c, a)?.unwrap_or_default();
    let params = start_params(&def, earlier_params, &a.params)?;
    let mut workspaces: Vec<Value> = earlier_ws
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    for raw in &a.workspaces {
        let b = crate::cluster_run::cluster_workspace(raw)?;
        workspaces.retain(|w| w["name"] != b["name"]);
        workspaces.push(b);
    }
    let unbound: Vec<String> = def
        .workspaces()
        .into_iter()
        .filter(|(n, _, optional)| !optional && !workspaces.iter().any(|w| w["name"] == n.as_str()))
        .map(|(n, _, _)| n)
        .collect();
    if !unbound.is_empty() {
        anyhow::bail!(
            "{} {} needs workspace(s) {}: give -w name=WS,emptyDir= (or claimName=…)",
            kind.lower(),
            a.name,
            unbound.join(", ")
        );
    }
    let run = crate::cluster_run::run_of_definition(kind.run_kind(), &a.name, &params, &workspaces);
    let name = c.create_run(kind.run_kind(), run)?;
    let run_kind = if kind == DefKind::Pipeline {
        "PipelineRun"
    } else {
        "TaskRun"
    };
    if a.showlog {
        note(&format!("{run_kind} started: {name}"));
        return crate::cluster_run::follow_runs(
            c,
            &[(kind.run_kind(), name)],
            crate::run::Format::Text,
            out,
        );
    }
    let short = if kind == DefKind::Pipeline {
        "pr"
    } else {
        "tr"
    };
    writeln!(
        out,
        "{run_kind} started: {name}\n\nIn order to track the {run_kind} progress run:\ntkt {short} logs {name} -f -n {}",
        c.namespace
    )?;
    Ok(0)
}

// ---------------------------------------------------------------- local

/// The definitions of the catalog and the `--task-dir` folders, each with
/// its file.
fn local_defs(kind: DefKind, task_dirs: &[PathBuf]) -> anyhow::Result<Vec<(Def, PathBuf)>> {
    let mut dirs = task_dirs.to_vec();
    dirs.extend(crate::run::catalog_dir());
    let mut out: Vec<(Def, PathBuf)> = Vec::new();
    for d in &dirs {
        for p in crate::files::library(d)? {
            let inside = p.strip_prefix(d).unwrap_or(&p);
            if inside.components().any(|c| c.as_os_str() == "tests") {
                continue;
            }
            for l in load_file(&p).objects {
                let def = match (kind, l.object) {
                    (DefKind::Pipeline, Object::Pipeline(p)) => Def::Pipeline(p),
                    (DefKind::Task, Object::Task(t)) => Def::Task(t),
                    _ => continue,
                };
                // The first folder given wins, as for `tkt run`.
                if !out.iter().any(|(o, _)| o.name() == def.name()) {
                    out.push((def, p.clone()));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.name().cmp(b.0.name()));
    Ok(out)
}

/// Every run of the store of the kind a definition of `kind` makes.
fn local_all_runs(kind: DefKind, args: &Args) -> Runs {
    let store = tektite_local::store::Store::existing(args.state_dir.as_deref()).ok();
    match kind {
        DefKind::Pipeline => Runs::Pipeline(
            store
                .and_then(|s| s.pipeline_runs().ok())
                .map(|l| l.runs)
                .unwrap_or_default(),
        ),
        DefKind::Task => Runs::Task(
            store
                .and_then(|s| s.task_runs().ok())
                .map(|l| l.runs)
                .unwrap_or_default(),
        ),
    }
}

fn local_runs(kind: DefKind, args: &Args, name: &str) -> Runs {
    local_all_runs(kind, args).of(name)
}

fn local(kind: DefKind, args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    let now = Timestamp::now();
    let defs = local_defs(kind, &args.task_dirs)?;
    let find = |name: &str| {
        defs.iter()
            .find(|(d, _)| d.name() == name)
            .cloned()
            .with_context(|| {
                format!(
                    "{} {name:?} not found in the catalog or the --task-dir folders",
                    kind.lower()
                )
            })
    };
    match &args.command {
        Command::List(a) => {
            let all = local_all_runs(kind, args);
            let rows: Vec<(Def, Runs)> = defs
                .iter()
                .map(|(d, _)| (d.clone(), all.of(d.name())))
                .collect();
            out.write_all(list(kind, &rows, a, now)?.as_bytes())?;
        }
        Command::Describe(a) => {
            let (d, file) = find(&a.name)?;
            let runs = local_runs(kind, args, &a.name);
            let mut text = describe(kind, &d, None, &runs, a.output, now)?;
            if a.output == Output::Text {
                text = format!("File:   {}\n{text}", file.display());
            }
            out.write_all(text.as_bytes())?;
        }
        Command::Start(a) => {
            let (d, file) = find(&a.name)?;
            return start_local(kind, args, a, &d, &file, out);
        }
    }
    Ok(0)
}

fn start_local(
    kind: DefKind,
    args: &Args,
    a: &StartArgs,
    def: &Def,
    file: &Path,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let store = tektite_local::store::Store::existing(args.state_dir.as_deref()).ok();
    let named = a.use_pipelinerun.as_deref().or(a.use_taskrun.as_deref());
    let earlier: Vec<Param> = match (named, a.last) {
        (None, false) => Vec::new(),
        (Some(n), _) => {
            let s = store.as_ref().context("no run store")?;
            match kind {
                DefKind::Pipeline => {
                    s.pipeline_run(n)?
                        .with_context(|| format!("pipelinerun {n:?} not found in the run store"))?
                        .spec
                        .params
                }
                DefKind::Task => {
                    s.task_run(n)?
                        .with_context(|| format!("taskrun {n:?} not found in the run store"))?
                        .spec
                        .params
                }
            }
        }
        (None, true) => {
            let newest = local_runs(kind, args, &a.name).newest();
            newest
                .with_context(|| format!("--last: {} {:?} has no runs", kind.lower(), a.name))?
                .0
        }
    };
    let params = start_params(def, earlier, &a.params)?;
    // The run goes to `tkt run` as a file, beside the file of its
    // definition (whatever else that file holds): params typed as
    // declared, and each workspace `-w` names bound (the flag then says
    // how, over this placeholder).
    let mut workspaces: Vec<Value> = Vec::new();
    let mut bindings: Vec<String> = Vec::new();
    for w in &a.workspaces {
        // tkn's `name=ws,emptyDir=` form, as tkt run's `ws=emptyDir`.
        let w = match crate::cluster_run::cluster_workspace(w) {
            Ok(b) if b.get("emptyDir").is_some() && w.contains(',') => {
                format!("{}=emptyDir", b["name"].as_str().unwrap_or_default())
            }
            _ => w.clone(),
        };
        if let Some((name, _)) = w.split_once('=') {
            workspaces.push(json!({"name": name, "emptyDir": {}}));
        }
        bindings.push(w);
    }
    let run = crate::cluster_run::run_of_definition(kind.run_kind(), &a.name, &params, &workspaces);
    let store = tektite_local::store::Store::open(args.state_dir.as_deref())?;
    let run_file = crate::rerun::RunFile::write(store.root(), &run)?;
    crate::run::Local {
        files: vec![run_file.0.clone(), file.to_path_buf()],
        runtime: &a.runtime,
        state_dir: args.state_dir.as_deref(),
        task_dirs: &args.task_dirs,
        workspaces: bindings,
    }
    .run(out)
}

// ---------------------------------------------------------------- text

/// A definition's runs.
#[derive(Debug)]
enum Runs {
    Pipeline(Vec<PipelineRun>),
    Task(Vec<TaskRun>),
}

impl Runs {
    /// The params and workspaces of the newest run (by creation, then name).
    fn newest(self) -> Option<(Vec<Param>, Vec<WorkspaceBinding>)> {
        match self {
            Runs::Pipeline(v) => v
                .into_iter()
                .max_by_key(|r| {
                    (
                        r.metadata.creation_timestamp.clone(),
                        r.metadata.name.clone(),
                    )
                })
                .map(|r| (r.spec.params, r.spec.workspaces)),
            Runs::Task(v) => v
                .into_iter()
                .max_by_key(|r| {
                    (
                        r.metadata.creation_timestamp.clone(),
                        r.metadata.name.clone(),
                    )
                })
                .map(|r| (r.spec.params, r.spec.workspaces)),
        }
    }

    /// Those of the definition `name`.
    fn of(&self, name: &str) -> Runs {
        match self {
            Runs::Pipeline(v) => {
                Runs::Pipeline(v.iter().filter(|r| of_pipeline(r, name)).cloned().collect())
            }
            Runs::Task(v) => Runs::Task(v.iter().filter(|r| of_task(r, name)).cloned().collect()),
        }
    }
}

/// (name, start, completion, status) of each run, newest first.
fn run_rows(runs: &Runs) -> Vec<(String, Option<Timestamp>, Option<Timestamp>, String)> {
    fn row<R: Run>(r: &R) -> (String, Option<Timestamp>, Option<Timestamp>, String) {
        (
            r.name().to_string(),
            r.start(),
            r.completion(),
            condition(r.conditions()),
        )
    }
    let mut rows: Vec<_> = match runs {
        Runs::Pipeline(v) => v.iter().map(row).collect(),
        Runs::Task(v) => v.iter().map(row).collect(),
    };
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows
}

/// `NAME AGE LAST RUN STARTED DURATION STATUS`, as `tkn p ls`.
fn list(
    kind: DefKind,
    rows: &[(Def, Runs)],
    a: &ListArgs,
    now: Timestamp,
) -> anyhow::Result<String> {
    let plural = match kind {
        DefKind::Pipeline => "pipelines",
        DefKind::Task => "tasks",
    };
    match a.output {
        Output::Text => {
            if rows.is_empty() {
                return Ok(format!("No {plural} found\n"));
            }
            let mut t = String::new();
            if !a.no_headers {
                t.push_str("NAME\tAGE\tLAST RUN\tSTARTED\tDURATION\tSTATUS\n");
            }
            for (d, runs) in rows {
                let last = run_rows(runs).into_iter().next();
                let _ = match last {
                    Some((n, s, e, st)) => writeln!(
                        t,
                        "{}\t{}\t{n}\t{}\t{}\t{st}",
                        d.name(),
                        age(d.created(), now),
                        age(s, now),
                        duration(s, e)
                    ),
                    None => writeln!(
                        t,
                        "{}\t{}\t---\t---\t---\t---",
                        d.name(),
                        age(d.created(), now)
                    ),
                };
            }
            Ok(tabwrite(&t))
        }
        Output::Name => Ok(rows
            .iter()
            .map(|(d, _)| format!("{}.tekton.dev/{}\n", kind.lower(), d.name()))
            .collect()),
        Output::Jsonl => {
            let mut t = String::new();
            for (d, _) in rows {
                t.push_str(&serde_json::to_string(&d.to_json())?);
                t.push('\n');
            }
            Ok(t)
        }
        o => {
            let items: Vec<Value> = rows.iter().map(|(d, _)| d.to_json()).collect();
            let kind_name = if kind == DefKind::Pipeline {
                "PipelineList"
            } else {
                "TaskList"
            };
            let v = json!({"apiVersion": tektite_api::v1::API_VERSION, "kind": kind_name, "items": items});
            Ok(if o == Output::Yaml {
                tektite_api::yaml::to_yaml(&v)
            } else {
                serde_json::to_string_pretty(&v)? + "\n"
            })
        }
    }
}

fn params_text(t: &mut String, params: &[ParamSpec]) {
    t.push_str("\nParams\n\n");
    if params.is_empty() {
        t.push_str(" No params\n");
        return;
    }
    t.push_str(" NAME\tTYPE\tDESCRIPTION\tDEFAULT VALUE\n");
    for p in params {
        let default = p.default.as_ref().map_or("---".to_string(), |d| match d {
            ParamValue::String(s) => s.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        });
        let _ = writeln!(
            t,
            " {}\t{}\t{}\t{}",
            p.name,
            p.type_.as_deref().unwrap_or("string"),
            p.description
                .as_deref()
                .map_or("---", |d| d.lines().next().unwrap_or("---")),
            default
        );
    }
}

fn pipeline_tasks_text(t: &mut String, spec: &PipelineSpec) {
    t.push_str("\nTasks\n\n NAME\tTASKREF\tRUNAFTER\tTIMEOUT\n");
    for pt in &spec.tasks {
        let r = pt
            .task_ref
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| "---".into());
        let after = if pt.run_after.is_empty() {
            "---".to_string()
        } else {
            pt.run_after.join(", ")
        };
        let _ = writeln!(
            t,
            " {}\t{r}\t{after}\t{}",
            pt.name,
            pt.timeout.as_deref().unwrap_or("---")
        );
    }
    if !spec.finally.is_empty() {
        t.push_str("\nFinally Tasks\n\n NAME\tTASKREF\n");
        for pt in &spec.finally {
            let r = pt
                .task_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| "---".into());
            let _ = writeln!(t, " {}\t{r}", pt.name);
        }
    }
}

fn steps_text(t: &mut String, spec: &TaskSpec) {
    t.push_str("\nSteps\n\n");
    for s in &spec.steps {
        let _ = writeln!(t, " {}", s.name);
    }
}

/// `tkn pipeline|task describe`, as text (or the definition as JSON/YAML).
fn describe(
    kind: DefKind,
    d: &Def,
    namespace: Option<&str>,
    runs: &Runs,
    output: Output,
    now: Timestamp,
) -> anyhow::Result<String> {
    match output {
        Output::Text => {}
        Output::Name => return Ok(format!("{}.tekton.dev/{}\n", kind.lower(), d.name())),
        Output::Yaml => return Ok(tektite_api::yaml::to_yaml(&d.to_json())),
        Output::Jsonl => return Ok(serde_json::to_string(&d.to_json())? + "\n"),
        Output::Json => return Ok(serde_json::to_string_pretty(&d.to_json())? + "\n"),
    }
    let mut t = String::new();
    let _ = writeln!(t, "Name:\t{}", d.name());
    if let Some(ns) = namespace {
        let _ = writeln!(t, "Namespace:\t{ns}");
    }
    let description = match d {
        Def::Pipeline(p) => p.spec.description.clone(),
        Def::Task(x) => x.spec.description.clone(),
    };
    if let Some(desc) = description.filter(|s| !s.trim().is_empty()) {
        let _ = writeln!(
            t,
            "Description:\t{}",
            desc.lines().next().unwrap_or_default()
        );
    }
    params_text(&mut t, d.params());
    t.push_str("\nWorkspaces\n\n");
    let ws = d.workspaces();
    if ws.is_empty() {
        t.push_str(" No workspaces\n");
    } else {
        t.push_str(" NAME\tDESCRIPTION\tOPTIONAL\n");
        for (n, desc, optional) in ws {
            let desc = if desc.is_empty() {
                "---".to_string()
            } else {
                desc.lines().next().unwrap_or_default().to_string()
            };
            let _ = writeln!(t, " {n}\t{desc}\t{optional}");
        }
    }
    match d {
        Def::Pipeline(p) => pipeline_tasks_text(&mut t, &p.spec),
        Def::Task(x) => steps_text(&mut t, &x.spec),
    }
    let title = if kind == DefKind::Pipeline {
        "PipelineRuns"
    } else {
        "TaskRuns"
    };
    let _ = write!(t, "\n{title}\n\n");
    let rows = run_rows(runs);
    if rows.is_empty() {
        let _ = writeln!(t, " No {}", title.to_lowercase());
    } else {
        t.push_str(" NAME\tSTARTED\tDURATION\tSTATUS\n");
        for (n, s, e, st) in rows {
            let _ = writeln!(t, " {n}\t{}\t{}\t{st}", age(s, now), duration(s, e));
        }
    }
    Ok(tabwrite(&t))
}
