//! `tkt pipelinerun|pr` and `tkt taskrun|tr`: list, describe, show logs of,
//! cancel and delete the runs in the local run store
//! (`tektite_local::store`) or on a cluster (`--cluster`, `-n`, …), in the
//! spirit of `tkn pipelinerun|taskrun list|describe|logs|cancel|delete`.
//!
//! Data flow: the command asks a [`Target`] (the store, or a
//! `cluster::Cluster`) for runs once; everything printed is built by pure
//! functions of the runs and `now` (relative ages), so both targets print
//! the same and the formatting is tested without a clock. Text output is laid out the way
//! `tkn` lays it out with Go's `text/tabwriter` (padding 3) under
//! `NO_COLOR`: no emojis, no colours.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tektite_api::v1::{
    Condition, Param, ParamValue, PipelineRun, PipelineSpec, StepState, TaskRun, WorkspaceBinding,
};
use tektite_engine::concurrency;
use tektite_local::live;
use tektite_local::store::{Listing, Store};

/// Which kind of run (the store's).
pub use tektite_local::store::RunKind as Kind;

/// Arguments of `tkt pipelinerun|taskrun`.
#[derive(Debug, Parser)]
pub struct Args {
    /// The run store [default: $XDG_STATE_HOME/tektite, else ~/.local/state/tektite]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: crate::cluster::TargetArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The inspect subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the runs, newest first
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Describe one run (the most recent without NAME)
    #[command(visible_alias = "desc")]
    Describe(DescribeArgs),
    /// Show the logs of one run (the most recent without NAME)
    Logs(LogsArgs),
    /// Delete runs and their logs (a PipelineRun with its TaskRuns)
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Cancel a run that has not finished
    Cancel(CancelArgs),
    /// Run again with the same spec (pipelineruns: --from-failed reuses
    /// the tasks that succeeded)
    Rerun(crate::rerun::RerunArgs),
}

/// Output formats of `list` and `describe`: `json` prints one document (a
/// list is a `…List` object), `jsonl` one object per line, `name`
/// `kind.group/name` per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Jsonl,
    Yaml,
    Name,
}

/// How a PipelineRun is cancelled (`spec.status`): `Cancelled` (without
/// `--grace`) stops everything; these run its `finally` tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Grace {
    /// Running tasks are cancelled, then `finally` runs
    #[value(name = "CancelledRunFinally")]
    CancelledRunFinally,
    /// Running tasks finish, no new ones start, then `finally` runs
    #[value(name = "StoppedRunFinally")]
    StoppedRunFinally,
}

impl Grace {
    pub fn spec_status(self) -> &'static str {
        match self {
            Grace::CancelledRunFinally => "CancelledRunFinally",
            Grace::StoppedRunFinally => "StoppedRunFinally",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run (default: the most recent)
    pub name: Option<String>,
    /// The most recent run
    #[arg(long, conflicts_with = "name")]
    pub last: bool,
    /// Let the run's `finally` tasks run (PipelineRuns)
    #[arg(long, value_enum, value_name = "HOW")]
    pub grace: Option<Grace>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Only runs with these labels (`k=v`, `k!=v`, `k`, `!k`, comma-separated)
    #[arg(short = 'l', long = "label", value_name = "SELECTOR")]
    pub label: Option<String>,
    /// Runs of every namespace (a cluster)
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only the most recent run
    #[arg(long)]
    pub last: bool,
    /// At most N runs
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Do not print the column names
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// The run (default: the most recent)
    pub name: Option<String>,
    /// The most recent run
    #[arg(long, conflicts_with = "name")]
    pub last: bool,
    /// Output format (json and yaml print the stored object)
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run (default: the most recent)
    pub name: Option<String>,
    /// The most recent run
    #[arg(long, conflicts_with = "name")]
    pub last: bool,
    /// Only these pipeline tasks (PipelineRuns; repeatable)
    #[arg(short = 't', long = "task", value_name = "TASK")]
    pub tasks: Vec<String>,
    /// Only these steps (repeatable)
    #[arg(short = 's', long = "step", value_name = "STEP")]
    pub steps: Vec<String>,
    /// Prefix each line with `[task : step] ` (`[step] ` for a TaskRun)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub prefix: bool,
    /// Follow the run to its end: every TaskRun and step as it starts;
    /// exits 0 if the run succeeded, else 1
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The runs to delete
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Delete every run of this kind
    #[arg(long)]
    pub all: bool,
    /// Also delete runs that have not finished
    #[arg(short, long)]
    pub force: bool,
}

/// Where runs are: the local run store, or a cluster (`cluster::Cluster`).
/// Both answer the same questions, so every command works, and prints the
/// same, on either.
pub trait Target {
    /// Where runs are looked for, for messages.
    fn place(&self) -> String;
    /// The PipelineRuns (matching a label selector).
    fn pipeline_runs(&self, selector: Option<&str>) -> anyhow::Result<Vec<PipelineRun>>;
    /// The TaskRuns (matching a label selector).
    fn task_runs(&self, selector: Option<&str>) -> anyhow::Result<Vec<TaskRun>>;
    fn pipeline_run(&self, name: &str) -> anyhow::Result<Option<PipelineRun>>;
    fn task_run(&self, name: &str) -> anyhow::Result<Option<TaskRun>>;
    /// The TaskRuns a PipelineRun made.
    fn task_runs_of(&self, pr: &PipelineRun) -> anyhow::Result<Vec<TaskRun>>;
    /// A TaskRun's containers with their logs, in order.
    fn logs(&self, tr: &TaskRun) -> anyhow::Result<Vec<(String, Box<dyn Read + '_>)>>;
    /// Prints the run's logs as it goes, to its end; the exit code of its
    /// outcome (0 succeeded, 1 not).
    fn follow(
        &self,
        kind: Kind,
        name: &str,
        a: &LogsArgs,
        out: &mut dyn Write,
    ) -> anyhow::Result<u8>;
    fn delete(&self, kind: Kind, a: &DeleteArgs) -> anyhow::Result<String>;
    /// Asks a run that has not finished to stop.
    fn cancel(&self, kind: Kind, name: &str, grace: Option<Grace>) -> anyhow::Result<String>;
}

/// Runs an inspect command on the target its flags name.
///
/// On the local store, runs left `Running` by a `tkt` that has gone are
/// recovered first (marked failed, their leftovers stopped), and records
/// that cannot be read are skipped with a warning naming the file.
///
/// # Errors
/// Failures to read the runs or to write output; a run that is not there;
/// a named record that cannot be read (the message names its file).
pub fn run(kind: Kind, args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    let all_namespaces = matches!(&args.command, Command::List(a) if a.all_namespaces);
    if args.target.is_cluster() || all_namespaces {
        let mut c = crate::cluster::Cluster::connect(&args.target)?;
        c.all_namespaces = all_namespaces;
        let r = match &args.command {
            Command::Rerun(a) => crate::rerun::on_cluster(kind, &c, a, out),
            command => run_on(kind, &c, command, out),
        };
        return r.map_err(|e| c.explain(e));
    }
    let local = Local::open(args.state_dir.as_deref())?;
    if let Command::Rerun(a) = &args.command {
        return crate::rerun::local(kind, args.state_dir.as_deref(), &local, a, out);
    }
    run_on(kind, &local, &args.command, out)
}

/// Runs an inspect command on `t`.
///
/// # Errors
/// As [`run`].
pub fn run_on(
    kind: Kind,
    t: &dyn Target,
    command: &Command,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let now = Timestamp::now();
    let text = match command {
        Command::List(a) => match kind {
            Kind::PipelineRun => list(kind, t.pipeline_runs(a.label.as_deref())?, a, now)?,
            Kind::TaskRun => list(kind, t.task_runs(a.label.as_deref())?, a, now)?,
        },
        Command::Describe(a) => match kind {
            Kind::PipelineRun => {
                let pr = pick_pipeline_run(t, a.name.as_deref())?;
                match a.output {
                    Output::Text => describe_pipeline_run(&pr, &t.task_runs_of(&pr)?, now),
                    o => serialize_runs(kind, &[pr], o)?,
                }
            }
            Kind::TaskRun => {
                let tr = pick_task_run(t, a.name.as_deref())?;
                match a.output {
                    Output::Text => describe_task_run(&tr, now),
                    o => serialize_runs(kind, &[tr], o)?,
                }
            }
        },
        Command::Logs(a) => return logs(kind, t, a, out),
        Command::Delete(a) => t.delete(kind, a)?,
        Command::Cancel(a) => cancel(kind, t, a)?,
        Command::Rerun(_) => anyhow::bail!("rerun needs its target's own run machinery"),
    };
    out.write_all(text.as_bytes())?;
    Ok(0)
}

/// The runs whose labels match a selector (all without one).
fn selected<T: Run>(mut runs: Vec<T>, selector: Option<&str>) -> anyhow::Result<Vec<T>> {
    if let Some(sel) = selector {
        let sel = crate::labels::Selector::parse(sel)?;
        runs.retain(|r| sel.matches(r.labels()));
    }
    Ok(runs)
}

/// A warning on standard error (a closed one is not an error).
fn warn(message: &str) {
    crate::note(&format!("tkt: warning: {message}"));
}

/// The readable runs of a listing; each unreadable record is warned about.
fn readable<T>(l: Listing<T>) -> Vec<T> {
    for (_, e) in &l.unreadable {
        warn(&format!(
            "skipped {e} (delete it with `tkt pr|tr delete NAME`)"
        ));
    }
    l.runs
}

/// `cancel`: refused for a run that has finished, as `tkn` does.
fn cancel(kind: Kind, t: &dyn Target, a: &CancelArgs) -> anyhow::Result<String> {
    let (name, done) = match kind {
        Kind::PipelineRun => {
            let pr = pick_pipeline_run(t, a.name.as_deref())?;
            (pr.name().to_string(), finished(&pr))
        }
        Kind::TaskRun => {
            if a.grace.is_some() {
                anyhow::bail!("--grace is for pipelineruns (a taskrun has no finally tasks)");
            }
            let tr = pick_task_run(t, a.name.as_deref())?;
            (tr.name().to_string(), finished(&tr))
        }
    };
    if done {
        anyhow::bail!("{} {name:?} has already finished", kind.lower());
    }
    t.cancel(kind, &name, a.grace)
}

/// `logs`: each step's log as a stream (a log may be larger than memory);
/// with `-f`, the run followed to its end (the exit code is its outcome).
fn logs(kind: Kind, t: &dyn Target, a: &LogsArgs, out: &mut impl Write) -> anyhow::Result<u8> {
    if kind == Kind::TaskRun && !a.tasks.is_empty() {
        anyhow::bail!("-t/--task filters the logs of a pipelinerun; for a taskrun use -s/--step");
    }
    // A run that has ended is printed in order (as without -f); with -f
    // the exit code is still its outcome.
    let (name, ended) = match kind {
        Kind::PipelineRun => {
            let pr = pick_pipeline_run(t, a.name.as_deref())?;
            (
                pr.name().to_string(),
                finished(&pr).then(|| outcome_code(&pr)),
            )
        }
        Kind::TaskRun => {
            let tr = pick_task_run(t, a.name.as_deref())?;
            (
                tr.name().to_string(),
                finished(&tr).then(|| outcome_code(&tr)),
            )
        }
    };
    let code = match (a.follow, ended) {
        (true, None) => return t.follow(kind, &name, a, out),
        (true, Some(code)) => code,
        (false, _) => 0,
    };
    match kind {
        Kind::PipelineRun => {
            let Some(pr) = t.pipeline_run(&name)? else {
                anyhow::bail!("pipelinerun {name:?} not found in {}", t.place());
            };
            let mut trs = t.task_runs_of(&pr)?;
            for task in &a.tasks {
                if !trs
                    .iter()
                    .any(|tr| pipeline_task(tr) == Some(task.as_str()))
                {
                    anyhow::bail!("pipelinerun {name:?} has no TaskRun for task {task:?}");
                }
            }
            trs.retain(|tr| {
                a.tasks.is_empty()
                    || a.tasks
                        .iter()
                        .any(|task| pipeline_task(tr) == Some(task.as_str()))
            });
            let spec = pr.status.as_ref().and_then(|s| s.pipeline_spec.as_deref());
            for tr in log_order(trs, spec) {
                let task = pipeline_task(&tr).unwrap_or(tr.name()).to_string();
                let prefix = |step: &str| format!("[{task} : {step}] ");
                task_run_logs(&tr, t.logs(&tr)?, &a.steps, a.prefix, prefix, out)?;
            }
        }
        Kind::TaskRun => {
            let Some(tr) = t.task_run(&name)? else {
                anyhow::bail!("taskrun {name:?} not found in {}", t.place());
            };
            let prefix = |step: &str| format!("[{step}] ");
            task_run_logs(&tr, t.logs(&tr)?, &a.steps, a.prefix, prefix, out)?;
        }
    }
    Ok(code)
}

/// The local run store as a target.
#[derive(Debug)]
pub struct Local {
    pub store: Store,
}

impl Local {
    /// The run store at `dir` (else the default), once the runs a `tkt`
    /// that has gone left running are recovered (each warned about).
    ///
    /// # Errors
    /// There is no store there, or it cannot be read.
    pub fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Local> {
        let store = Store::existing(dir)?;
        for r in live::recover_abandoned(&store, None) {
            warn(&r.to_string());
        }
        Ok(Local { store })
    }
}

impl Target for Local {
    fn place(&self) -> String {
        format!("the run store ({})", self.store.root().display())
    }

    fn pipeline_runs(&self, selector: Option<&str>) -> anyhow::Result<Vec<PipelineRun>> {
        selected(readable(self.store.pipeline_runs()?), selector)
    }

    fn task_runs(&self, selector: Option<&str>) -> anyhow::Result<Vec<TaskRun>> {
        selected(readable(self.store.task_runs()?), selector)
    }

    fn pipeline_run(&self, name: &str) -> anyhow::Result<Option<PipelineRun>> {
        check_name(Kind::PipelineRun, name)?;
        Ok(self.store.pipeline_run(name)?)
    }

    fn task_run(&self, name: &str) -> anyhow::Result<Option<TaskRun>> {
        check_name(Kind::TaskRun, name)?;
        Ok(self.store.task_run(name)?)
    }

    fn task_runs_of(&self, pr: &PipelineRun) -> anyhow::Result<Vec<TaskRun>> {
        Ok(readable(self.store.task_runs_of(pr.name())?))
    }

    fn logs(&self, tr: &TaskRun) -> anyhow::Result<Vec<(String, Box<dyn Read + '_>)>> {
        let mut out: Vec<(String, Box<dyn Read + '_>)> = Vec::new();
        for (container, path) in self.store.logs(tr) {
            let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
            out.push((container, Box::new(file)));
        }
        Ok(out)
    }

    fn follow(
        &self,
        kind: Kind,
        name: &str,
        a: &LogsArgs,
        out: &mut dyn Write,
    ) -> anyhow::Result<u8> {
        crate::follow::follow_local(&self.store, kind, name, &crate::follow::Filter::of(a), out)
    }

    fn delete(&self, kind: Kind, a: &DeleteArgs) -> anyhow::Result<String> {
        delete(kind, &self.store, a)
    }

    fn cancel(&self, kind: Kind, name: &str, grace: Option<Grace>) -> anyhow::Result<String> {
        if !live::is_live(&self.store, kind, name) {
            anyhow::bail!(
                "{} {name:?} is not being run by a tkt (it cannot be cancelled)",
                kind.lower()
            );
        }
        let how = grace.map_or("Cancelled", Grace::spec_status);
        live::request_cancel_as(&self.store, kind, name, how)?;
        Ok(format!(
            "{} {name} is being cancelled ({how})\n",
            kind.lower()
        ))
    }
}

/// The order in which a PipelineRun's TaskRuns are shown: a TaskRun comes
/// after every TaskRun of a task it depends on (`runAfter`, results; a
/// `finally` task after every other task), and among those free to come
/// next, the one that started first (then by name). Start times in records
/// have one-second steps, too coarse alone to order a task that ran right
/// after another.
fn log_order(mut trs: Vec<TaskRun>, spec: Option<&PipelineSpec>) -> Vec<TaskRun> {
    trs.sort_by(oldest_first);
    let Some(spec) = spec else {
        return trs;
    };
    let deps: BTreeMap<&str, Vec<&str>> = match tektite_api::dag::build(&spec.tasks) {
        Ok(dag) => spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let d = dag.deps[i].iter().map(|j| spec.tasks[*j].name.as_str());
                (t.name.as_str(), d.collect())
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    let all_tasks: Vec<&str> = spec.tasks.iter().map(|t| t.name.as_str()).collect();
    let finally: Vec<&str> = spec.finally.iter().map(|t| t.name.as_str()).collect();
    let task_of = |tr: &TaskRun| pipeline_task(tr).unwrap_or_default().to_string();
    let mut out: Vec<TaskRun> = Vec::with_capacity(trs.len());
    while !trs.is_empty() {
        // Tasks that still have a TaskRun to show.
        let pending: Vec<String> = trs.iter().map(task_of).collect();
        let waits = |tr: &TaskRun| {
            let t = task_of(tr);
            let before: &[&str] = if finally.contains(&t.as_str()) {
                &all_tasks
            } else {
                deps.get(t.as_str()).map_or(&[][..], Vec::as_slice)
            };
            before
                .iter()
                .any(|d| *d != t && pending.iter().any(|p| p == d))
        };
        // trs is sorted by start: the first free one started first. A
        // cycle (none in a valid pipeline) falls back to start order.
        let i = trs.iter().position(|tr| !waits(tr)).unwrap_or(0);
        out.push(trs.remove(i));
    }
    out
}

// ---------------------------------------------------------------- runs

/// What the inspect commands need of a run of either kind.
pub(crate) trait Run: Serialize {
    fn name(&self) -> &str;
    fn start(&self) -> Option<Timestamp>;
    fn completion(&self) -> Option<Timestamp>;
    fn conditions(&self) -> &[Condition];
    fn created(&self) -> Option<Timestamp>;
    fn labels(&self) -> Option<&BTreeMap<String, String>>;
    fn namespace(&self) -> &str;
}

impl Run for PipelineRun {
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn start(&self) -> Option<Timestamp> {
        self.status.as_ref()?.start_time.as_ref().map(|t| t.0)
    }
    fn completion(&self) -> Option<Timestamp> {
        self.status.as_ref()?.completion_time.as_ref().map(|t| t.0)
    }
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }
    fn created(&self) -> Option<Timestamp> {
        self.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }
    fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.labels.as_ref()
    }
    fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

impl Run for TaskRun {
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn start(&self) -> Option<Timestamp> {
        self.status.as_ref()?.start_time.as_ref().map(|t| t.0)
    }
    fn completion(&self) -> Option<Timestamp> {
        self.status.as_ref()?.completion_time.as_ref().map(|t| t.0)
    }
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }
    fn created(&self) -> Option<Timestamp> {
        self.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }
    fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.labels.as_ref()
    }
    fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// When a run began, for ordering: its start, else its creation.
fn began(r: &impl Run) -> Option<Timestamp> {
    r.start().or_else(|| r.created())
}

/// Newest first (runs that never began last), then by name.
fn newest_first<R: Run>(a: &R, b: &R) -> std::cmp::Ordering {
    match (began(a), began(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
    .then_with(|| a.name().cmp(b.name()))
}

/// Oldest first (runs that never began last), then by name.
fn oldest_first<R: Run>(a: &R, b: &R) -> std::cmp::Ordering {
    match (began(a), began(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
    .then_with(|| a.name().cmp(b.name()))
}

/// 0 if the run succeeded, else 1 (`logs -f`'s exit code).
fn outcome_code(r: &impl Run) -> u8 {
    u8::from(Condition::succeeded(r.conditions()).is_none_or(|c| c.status != "True"))
}

pub(crate) fn finished(r: &impl Run) -> bool {
    r.completion().is_some()
        || Condition::succeeded(r.conditions()).is_some_and(|c| c.status != "Unknown")
}

fn label<'a>(tr: &'a TaskRun, key: &str) -> Option<&'a str> {
    tr.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The pipeline task a TaskRun runs (label `tekton.dev/pipelineTask`).
fn pipeline_task(tr: &TaskRun) -> Option<&str> {
    label(tr, "tekton.dev/pipelineTask")
}

/// Run names are file names in the store: no separators, no `.`/`..`.
fn check_name(kind: Kind, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        anyhow::bail!("{name:?} is not a valid {} name", kind.lower());
    }
    Ok(())
}

/// The PipelineRun called `name`, else the most recent one.
pub(crate) fn pick_pipeline_run(t: &dyn Target, name: Option<&str>) -> anyhow::Result<PipelineRun> {
    let kind = Kind::PipelineRun;
    match name {
        Some(n) => t.pipeline_run(n)?.ok_or_else(|| missing(kind, n, t)),
        None => newest(t.pipeline_runs(None)?).ok_or_else(|| none(kind, t)),
    }
}

/// The TaskRun called `name`, else the most recent one.
pub(crate) fn pick_task_run(t: &dyn Target, name: Option<&str>) -> anyhow::Result<TaskRun> {
    let kind = Kind::TaskRun;
    match name {
        Some(n) => t.task_run(n)?.ok_or_else(|| missing(kind, n, t)),
        None => newest(t.task_runs(None)?).ok_or_else(|| none(kind, t)),
    }
}

fn newest<T: Run>(mut runs: Vec<T>) -> Option<T> {
    runs.sort_by(newest_first);
    runs.into_iter().next()
}

fn missing(kind: Kind, name: &str, t: &dyn Target) -> anyhow::Error {
    anyhow::anyhow!("{} {name:?} not found in {}", kind.lower(), t.place())
}

fn none(kind: Kind, t: &dyn Target) -> anyhow::Error {
    anyhow::anyhow!("no {} in {}", kind.plural(), t.place())
}

/// A run's name.
pub(crate) fn name_of<T: Run>(r: &T) -> String {
    r.name().to_string()
}

fn serialize<T: Serialize>(value: &T, output: Output) -> anyhow::Result<String> {
    let v = serde_json::to_value(value)?;
    Ok(match output {
        Output::Yaml => tektite_api::yaml::to_yaml(&v),
        Output::Jsonl => serde_json::to_string(&v)? + "\n",
        _ => serde_json::to_string_pretty(&v)? + "\n",
    })
}

/// Runs in a machine format: `json`/`yaml` one run as itself and several as
/// a `…List`, `jsonl` one run a line, `name` `kind.group/name` a line.
fn serialize_runs<T: Run>(kind: Kind, runs: &[T], output: Output) -> anyhow::Result<String> {
    let kind_name = match kind {
        Kind::PipelineRun => "PipelineRun",
        Kind::TaskRun => "TaskRun",
    };
    match output {
        Output::Name => Ok(runs
            .iter()
            .map(|r| format!("{}.tekton.dev/{}\n", kind_name.to_lowercase(), r.name()))
            .collect()),
        Output::Jsonl => {
            let mut t = String::new();
            for r in runs {
                t.push_str(&serialize(r, Output::Jsonl)?);
            }
            Ok(t)
        }
        o => match runs {
            [one] => serialize(one, o),
            _ => {
                let v = serde_json::json!({
                    "apiVersion": tektite_api::v1::API_VERSION,
                    "kind": format!("{kind_name}List"),
                    "items": runs,
                });
                serialize(&v, o)
            }
        },
    }
}

// ---------------------------------------------------------------- list

fn list<T: Run>(
    kind: Kind,
    mut runs: Vec<T>,
    a: &ListArgs,
    now: Timestamp,
) -> anyhow::Result<String> {
    runs.sort_by(newest_first);
    let limit = if a.last { Some(1) } else { a.limit };
    if let Some(n) = limit {
        runs.truncate(n);
    }
    match a.output {
        Output::Text => Ok(list_text(kind, &runs, now, !a.no_headers, a.all_namespaces)),
        Output::Json | Output::Yaml => {
            // A list is a list, whatever its length.
            let v = serde_json::json!({
                "apiVersion": tektite_api::v1::API_VERSION,
                "kind": match kind {
                    Kind::PipelineRun => "PipelineRunList",
                    Kind::TaskRun => "TaskRunList",
                },
                "items": runs,
            });
            serialize(&v, a.output)
        }
        o => serialize_runs(kind, &runs, o),
    }
}

/// `NAME STARTED DURATION STATUS`, one run a line, or `No … found`.
fn list_text<T: Run>(
    kind: Kind,
    runs: &[T],
    now: Timestamp,
    headers: bool,
    namespaces: bool,
) -> String {
    if runs.is_empty() {
        return format!("No {} found\n", kind.plural());
    }
    let mut t = String::new();
    if headers {
        // As tkn -A: the namespace first.
        if namespaces {
            t.push_str("NAMESPACE\t");
        }
        t.push_str("NAME\tSTARTED\tDURATION\tSTATUS\n");
    }
    for r in runs {
        if namespaces {
            let _ = write!(t, "{}\t", r.namespace());
        }
        let _ = writeln!(
            t,
            "{}\t{}\t{}\t{}",
            r.name(),
            age(r.start(), now),
            duration(r.start(), r.completion()),
            condition(r.conditions())
        );
    }
    tabwrite(&t)
}

// ---------------------------------------------------------------- describe

/// `tkn pipelinerun describe`, as text.
fn describe_pipeline_run(pr: &PipelineRun, trs: &[TaskRun], now: Timestamp) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "Name:\t{}", pr.name());
    let _ = writeln!(
        t,
        "Namespace:\t{}",
        namespace(pr.metadata.namespace.as_deref())
    );
    if let Some(r) = pr
        .spec
        .pipeline_ref
        .as_ref()
        .and_then(|r| r.name.as_deref())
    {
        let _ = writeln!(t, "Pipeline Ref:\t{r}");
    }
    let sa = pr
        .spec
        .task_run_template
        .as_ref()
        .and_then(|x| x.service_account_name.as_deref());
    if let Some(sa) = sa {
        let _ = writeln!(t, "Service Account:\t{sa}");
    }
    labels(&mut t, pr.metadata.labels.as_ref());
    status_section(&mut t, pr, now);
    if let Some(to) = &pr.spec.timeouts {
        let rows: Vec<(&str, &String)> = [
            ("Pipeline", to.pipeline.as_ref()),
            ("Tasks", to.tasks.as_ref()),
            ("Finally", to.finally.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
        if !rows.is_empty() {
            t.push_str("\nTimeouts\n");
            for (k, v) in rows {
                let _ = writeln!(t, " {k}:\t{}", go_timeout(v));
            }
        }
    }
    let failed = Condition::succeeded(pr.conditions()).filter(|c| c.status == "False");
    if let Some(c) = failed {
        let mut msg = c.message.clone().unwrap_or_default();
        let mut children: Vec<&TaskRun> = trs.iter().collect();
        children.sort_by(|a, b| oldest_first(*a, *b));
        let first_failed = children.iter().find_map(|tr| {
            Condition::succeeded(tr.conditions())
                .filter(|c| c.status == "False")
                .and_then(|c| c.message.as_deref())
        });
        if let Some(m) = first_failed {
            let _ = write!(msg, " ({m})");
        }
        message_section(&mut t, &msg);
    }
    params_section(&mut t, &pr.spec.params);
    let results: Vec<(&str, &ParamValue)> = pr
        .status
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| (r.name.as_str(), &r.value))
        .collect();
    results_section(&mut t, &results);
    workspaces_section(&mut t, &pr.spec.workspaces);
    if !trs.is_empty() {
        let mut children: Vec<&TaskRun> = trs.iter().collect();
        children.sort_by(|a, b| newest_first(*a, *b));
        let refs = pr.status.iter().flat_map(|s| &s.child_references);
        let ref_task: BTreeMap<&str, &str> = refs
            .map(|r| (r.name.as_str(), r.pipeline_task_name.as_str()))
            .collect();
        t.push_str("\nTaskruns\n\n NAME\tTASK NAME\tSTARTED\tDURATION\tSTATUS\n");
        for tr in children {
            let task = pipeline_task(tr)
                .or_else(|| ref_task.get(tr.name()).copied())
                .unwrap_or("---");
            let _ = writeln!(
                t,
                " {}\t{task}\t{}\t{}\t{}",
                tr.name(),
                age(tr.start(), now),
                duration(tr.start(), tr.completion()),
                condition(tr.conditions())
            );
        }
    }
    reused_section(&mut t, pr);
    concurrency_section(&mut t, pr, now);
    sources_section(&mut t, pr, trs);
    let skipped: Vec<_> = pr.status.iter().flat_map(|s| &s.skipped_tasks).collect();
    if !skipped.is_empty() {
        t.push_str("\nSkipped Tasks\n\n NAME\tREASON\n");
        for s in skipped {
            let _ = writeln!(t, " {}\t{}", s.name, s.reason);
        }
    }
    tabwrite(&t)
}

/// The run's concurrency key and place: its settings, what it waits for
/// (position and holders) or when it was admitted.
fn concurrency_section(t: &mut String, pr: &PipelineRun, now: Timestamp) {
    let Some(c) = pr.status.as_ref().and_then(|s| s.concurrency.as_ref()) else {
        return;
    };
    t.push_str("\nConcurrency\n\n");
    match &c.key {
        Some(k) => {
            let _ = writeln!(t, " Key:\t{}", printable(k));
            let _ = writeln!(t, " Limit:\t{} ({})", c.limit, c.strategy);
        }
        None => {
            let _ = writeln!(t, " Key:\t--- (the namespace's cap)");
        }
    }
    if c.priority != 0 {
        let _ = writeln!(t, " Priority:\t{}", c.priority);
    }
    let queued = Condition::succeeded(pr.conditions())
        .filter(|x| x.status == "Unknown" && x.reason.as_deref() == Some(concurrency::QUEUED));
    if let Some(q) = queued {
        let m = q.message.as_deref().unwrap_or_default();
        let _ = writeln!(
            t,
            " Waiting:\t{}",
            printable(m.trim_start_matches("waiting "))
        );
    }
    if let Some(at) = &c.admitted_time {
        let waited = c
            .wait_seconds
            .map_or(String::new(), |w| format!(" after waiting {w:.1}s"));
        let _ = writeln!(t, " Admitted:\t{}{waited}", age(Some(at.0), now));
    }
}

/// The tasks a rerun took from the run it reran (`tkt pr rerun
/// --from-failed`), with their results.
fn reused_section(t: &mut String, pr: &PipelineRun) {
    let Ok(Some(reuse)) = tektite_engine::reuse::of(pr) else {
        return;
    };
    if reuse.task_runs.is_empty() {
        return;
    }
    let _ = write!(
        t,
        "\nReused (not run again: from pipelinerun {})\n\n TASK NAME\tTASKRUN\tRESULTS\n",
        printable(&reuse.from)
    );
    for tr in &reuse.task_runs {
        let results: Vec<String> = tr
            .status
            .iter()
            .flat_map(|s| &s.results)
            .map(|r| format!("{}={}", r.name, go_value(&r.value)))
            .collect();
        let results = if results.is_empty() {
            "---".to_string()
        } else {
            printable(&results.join(", "))
        };
        let _ = writeln!(
            t,
            " {}\t{}\t{results}",
            printable(pipeline_task(tr).unwrap_or("---")),
            printable(tr.name())
        );
    }
}

/// Where the Pipeline and each Task came from, for those a resolver found
/// (`status.provenance.refSource`).
fn sources_section(t: &mut String, pr: &PipelineRun, trs: &[TaskRun]) {
    let source = |p: Option<&tektite_api::v1::Provenance>| {
        p.and_then(|p| p.ref_source.as_ref())
            .map(tektite_api::v1::RefSource::label)
    };
    let mut rows = Vec::new();
    if let Some(s) = source(pr.status.as_ref().and_then(|s| s.provenance.as_deref())) {
        rows.push(("(pipeline)".to_string(), s));
    }
    let mut children: Vec<&TaskRun> = trs.iter().collect();
    children.sort_by(|a, b| oldest_first(*a, *b));
    for tr in children {
        if let Some(s) = source(tr.status.as_ref().and_then(|s| s.provenance.as_deref())) {
            rows.push((pipeline_task(tr).unwrap_or(tr.name()).to_string(), s));
        }
    }
    if !rows.is_empty() {
        t.push_str("\nSources\n\n NAME\tFROM\n");
        for (n, s) in rows {
            let _ = writeln!(t, " {n}\t{s}");
        }
    }
}

/// `tkn taskrun describe`, as text.
fn describe_task_run(tr: &TaskRun, now: Timestamp) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "Name:\t{}", tr.name());
    let _ = writeln!(
        t,
        "Namespace:\t{}",
        namespace(tr.metadata.namespace.as_deref())
    );
    if let Some(r) = tr.spec.task_ref.as_ref().and_then(|r| r.name.as_deref()) {
        let _ = writeln!(t, "Task Ref:\t{r}");
    }
    let source = tr
        .status
        .as_ref()
        .and_then(|s| s.provenance.as_ref())
        .and_then(|p| p.ref_source.as_ref());
    if let Some(s) = source {
        let _ = writeln!(t, "Source:\t{}", s.label());
    }
    if let Some(sa) = &tr.spec.service_account_name {
        let _ = writeln!(t, "Service Account:\t{sa}");
    }
    if let Some(to) = &tr.spec.timeout {
        let _ = writeln!(t, "Timeout:\t{}", go_timeout(to));
    }
    labels(&mut t, tr.metadata.labels.as_ref());
    status_section(&mut t, tr, now);
    let failed = Condition::succeeded(tr.conditions()).filter(|c| c.status == "False");
    if let Some(c) = failed {
        message_section(&mut t, c.message.as_deref().unwrap_or_default());
    }
    params_section(&mut t, &tr.spec.params);
    let results: Vec<(&str, &ParamValue)> = tr
        .status
        .iter()
        .flat_map(|s| &s.results)
        .map(|r| (r.name.as_str(), &r.value))
        .collect();
    results_section(&mut t, &results);
    workspaces_section(&mut t, &tr.spec.workspaces);
    let steps: Vec<&StepState> = tr.status.iter().flat_map(|s| &s.steps).collect();
    if !steps.is_empty() {
        t.push_str("\nSteps\n\n NAME\tSTATUS\n");
        for s in steps {
            let state = container_state(
                s.waiting.as_ref(),
                s.running.is_some(),
                s.terminated.as_ref(),
            );
            let _ = writeln!(t, " {}\t{state}", s.name);
        }
    }
    let sidecars: Vec<_> = tr.status.iter().flat_map(|s| &s.sidecars).collect();
    if !sidecars.is_empty() {
        t.push_str("\nSidecars\n\n NAME\tSTATUS\n");
        for s in sidecars {
            let state = container_state(
                s.waiting.as_ref(),
                s.running.is_some(),
                s.terminated.as_ref(),
            );
            let _ = writeln!(t, " {}\t{state}", s.name);
        }
    }
    let retries = tr.status.as_ref().map_or(0, |s| s.retries_status.len());
    if retries > 0 {
        let _ = writeln!(t, "\nRetries\n {retries} earlier attempt(s)");
    }
    tabwrite(&t)
}

fn namespace(ns: Option<&str>) -> &str {
    ns.filter(|n| !n.is_empty()).unwrap_or("default")
}

fn labels(t: &mut String, labels: Option<&BTreeMap<String, String>>) {
    if let Some(l) = labels.filter(|l| !l.is_empty()) {
        t.push_str("Labels:\n");
        for (k, v) in l {
            let _ = writeln!(t, " {k}={v}");
        }
    }
}

fn status_section(t: &mut String, r: &impl Run, now: Timestamp) {
    let _ = writeln!(
        t,
        "\nStatus\n\nSTARTED\tDURATION\tSTATUS\n{}\t{}\t{}",
        age(r.start(), now),
        duration(r.start(), r.completion()),
        condition(r.conditions())
    );
}

/// Text from a run (values, results, messages: what a step wrote) made
/// safe for a terminal and a table: control characters other than the
/// newline are shown escaped (`\x1b`, `\t`) instead of acting.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push(c),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

fn message_section(t: &mut String, msg: &str) {
    if !msg.is_empty() {
        let _ = writeln!(t, "\nMessage\n\n{}", printable(msg));
    }
}

fn params_section(t: &mut String, params: &[Param]) {
    if !params.is_empty() {
        t.push_str("\nParams\n\n NAME\tVALUE\n");
        for p in params {
            let _ = writeln!(t, " {}\t{}", p.name, printable(&go_value(&p.value)));
        }
    }
}

fn results_section(t: &mut String, results: &[(&str, &ParamValue)]) {
    if !results.is_empty() {
        t.push_str("\nResults\n\n NAME\tVALUE\n");
        for (name, value) in results {
            let v = go_value(value);
            let _ = writeln!(t, " {name}\t{}", printable(v.trim_end_matches('\n')));
        }
    }
}

fn workspaces_section(t: &mut String, ws: &[WorkspaceBinding]) {
    if !ws.is_empty() {
        t.push_str("\nWorkspaces\n\n NAME\tSUB PATH\tWORKSPACE BINDING\n");
        for w in ws {
            let sub = w
                .sub_path
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or("---");
            let _ = writeln!(t, " {}\t{sub}\t{}", w.name, workspace_binding(w));
        }
    }
}

/// The volume behind a workspace binding, as `tkn` prints it.
fn workspace_binding(w: &WorkspaceBinding) -> String {
    if w.volume_claim_template.is_some() {
        "VolumeClaimTemplate".to_string()
    } else if let Some(c) = &w.persistent_volume_claim {
        format!("PersistentVolumeClaim (claimName={})", c.claim_name)
    } else if let Some(e) = &w.empty_dir {
        format!(
            "EmptyDir (emptyDir={})",
            e.medium.as_deref().unwrap_or_default()
        )
    } else if let Some(c) = &w.config_map {
        format!("ConfigMap (config={})", c.name)
    } else if let Some(s) = &w.secret {
        format!(
            "Secret (secret={})",
            s.secret_name.as_deref().unwrap_or_default()
        )
    } else if w.projected.is_some() {
        "Projected".to_string()
    } else if let Some(c) = &w.csi {
        format!("CSI (driver={})", c.driver)
    } else {
        "---".to_string()
    }
}

/// A step's or sidecar's state, as `tkn` prints it: the waiting reason,
/// `Running`, the termination reason, or `---`.
fn container_state(
    waiting: Option<&k8s_openapi::api::core::v1::ContainerStateWaiting>,
    running: bool,
    terminated: Option<&k8s_openapi::api::core::v1::ContainerStateTerminated>,
) -> String {
    if let Some(w) = waiting {
        return w
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or("---".into());
    }
    if running {
        return "Running".into();
    }
    terminated
        .and_then(|t| t.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or("---".into())
}

/// A param or result value as Go's `%v` prints it: `text`, `[a b]`,
/// `map[k:v]`.
fn go_value(v: &ParamValue) -> String {
    match v {
        ParamValue::String(s) => s.clone(),
        ParamValue::Array(a) => format!("[{}]", a.join(" ")),
        ParamValue::Object(o) => {
            let kv: Vec<String> = o.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", kv.join(" "))
        }
    }
}

/// A timeout as Go prints a parsed duration (`1h` → `1h0m0s`); text that
/// is not a Go duration is shown as written.
fn go_timeout(s: &str) -> String {
    parse_go_duration(s).map_or_else(|| s.to_string(), go_duration)
}

// ---------------------------------------------------------------- logs

/// The logs of one TaskRun's steps, each line prefixed, each step followed
/// by an empty line (`tkn`'s end-of-log marker), streamed: the bytes as
/// the step wrote them, a newline added to a last line without one.
/// Sidecars are left out, as `tkn` does; `steps` filters by step name
/// (with or without `step-`).
fn task_run_logs(
    tr: &TaskRun,
    logs: Vec<(String, Box<dyn Read + '_>)>,
    steps: &[String],
    with_prefix: bool,
    prefix: impl Fn(&str) -> String,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for (container, log) in logs {
        if container.starts_with("sidecar-") {
            continue;
        }
        let step = step_of(tr, &container);
        if !steps.is_empty() && !steps.iter().any(|s| *s == step || *s == container) {
            continue;
        }
        let p = if with_prefix {
            prefix(&step)
        } else {
            String::new()
        };
        copy_prefixed(log, p.as_bytes(), out).with_context(|| format!("log of {container}"))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The step a container of `tr` runs (its status's name for it, else the
/// container's name without `step-`).
pub fn step_of(tr: &TaskRun, container: &str) -> String {
    tr.status
        .iter()
        .flat_map(|s| &s.steps)
        .find(|s| s.container.as_deref() == Some(container))
        .map(|s| s.name.clone())
        .unwrap_or_else(|| {
            container
                .strip_prefix("step-")
                .unwrap_or(container)
                .to_string()
        })
}

/// Copies `from` to `out` with `prefix` before each line, in bounded memory
/// whatever the length of a line; ends with a newline.
fn copy_prefixed(
    mut from: impl std::io::Read,
    prefix: &[u8],
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at_start = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if at_start {
                out.write_all(prefix)?;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    out.write_all(&chunk[..=i])?;
                    chunk = &chunk[i + 1..];
                    at_start = true;
                }
                None => {
                    out.write_all(chunk)?;
                    chunk = &[];
                    at_start = false;
                }
            }
        }
    }
    if !at_start {
        out.write_all(b"\n")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- delete

/// How long `delete` waits for a run it asked to cancel (its steps get
/// their grace period, 30 s by default).
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The names `delete` is given, each with whether its run has ended;
/// unreadable records count as ended (they can always be deleted).
fn delete_targets(
    kind: Kind,
    store: &Store,
    a: &DeleteArgs,
) -> anyhow::Result<Vec<(String, bool)>> {
    if a.all {
        let (mut names, unreadable): (Vec<(String, bool)>, Vec<_>) = match kind {
            Kind::PipelineRun => {
                let l = store.pipeline_runs()?;
                let names = l.runs.iter().map(|r| (r.name().to_string(), finished(r)));
                (names.collect(), l.unreadable)
            }
            Kind::TaskRun => {
                let l = store.task_runs()?;
                let names = l.runs.iter().map(|r| (r.name().to_string(), finished(r)));
                (names.collect(), l.unreadable)
            }
        };
        names.extend(unreadable.into_iter().map(|(name, _)| (name, true)));
        return Ok(names);
    }
    let mut names = Vec::new();
    for n in &a.names {
        check_name(kind, n)?;
        if !store.has(kind.dir(), n) {
            anyhow::bail!(
                "{} {n:?} not found in the run store ({})",
                kind.lower(),
                store.root().display()
            );
        }
        let done = match kind {
            Kind::PipelineRun => store
                .pipeline_run(n)
                .ok()
                .flatten()
                .is_none_or(|r| finished(&r)),
            Kind::TaskRun => store
                .task_run(n)
                .ok()
                .flatten()
                .is_none_or(|r| finished(&r)),
        };
        names.push((n.clone(), done));
    }
    Ok(names)
}

/// `delete`: records, logs and work directories. A run that has not ended
/// needs `--force`; one a `tkt` is still carrying out is cancelled first
/// (and waited for), so it cannot write its records again once deleted.
fn delete(kind: Kind, store: &Store, a: &DeleteArgs) -> anyhow::Result<String> {
    let names = delete_targets(kind, store, a)?;
    if names.is_empty() {
        return Ok(format!("No {} found\n", kind.plural()));
    }
    if !a.force
        && let Some((n, _)) = names
            .iter()
            .find(|(n, done)| !*done || live::is_live(store, kind, n))
    {
        anyhow::bail!(
            "{} {n:?} has not finished (it may still be running); use --force to cancel it and delete it",
            kind.lower()
        );
    }
    // A TaskRun of a PipelineRun that still runs is its to manage.
    if kind == Kind::TaskRun {
        for (n, _) in &names {
            let parent = store
                .task_run(n)
                .ok()
                .flatten()
                .and_then(|tr| label(&tr, "tekton.dev/pipelineRun").map(str::to_string));
            if let Some(p) = parent.filter(|p| live::is_live(store, Kind::PipelineRun, p)) {
                anyhow::bail!(
                    "taskrun {n:?} belongs to pipelinerun {p:?}, which is running: delete the pipelinerun (it is cancelled first)"
                );
            }
        }
    }
    let running: Vec<&String> = names
        .iter()
        .map(|(n, _)| n)
        .filter(|n| live::is_live(store, kind, n))
        .collect();
    for n in &running {
        live::request_cancel(store, kind, n)?;
        warn(&format!(
            "{} {n} is running: cancelling it before deleting it",
            kind.lower()
        ));
    }
    let start = std::time::Instant::now();
    for n in &running {
        while live::is_live(store, kind, n) {
            if start.elapsed() > CANCEL_WAIT {
                anyhow::bail!(
                    "{} {n:?} did not stop within {}s of being cancelled: not deleted",
                    kind.lower(),
                    CANCEL_WAIT.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    // A run whose `tkt` died while we waited is recovered (by us or by its
    // watchdog, under the journal's lock) before anything is removed, so
    // no recovery writes its records back afterwards.
    live::recover_abandoned(store, None);
    for (n, _) in &names {
        live::forget_cancel(store, kind, n);
        if kind == Kind::PipelineRun {
            for tr in store.task_runs_of(n)?.runs {
                store.remove_task_run(tr.name())?;
            }
        } else {
            store.remove_task_run(n)?;
        }
        store.remove_record(kind.dir(), n)?;
        store.remove_work_dir(kind, n)?;
    }
    let quoted: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
    Ok(format!(
        "{} deleted: {}\n",
        kind.plural(),
        quoted.join(", ")
    ))
}

// ---------------------------------------------------------------- formatting

/// `tkn`'s STATUS: `Succeeded`, `Failed`, `Running`, with the reason in
/// parentheses when it says more (`Failed(PipelineRunTimeout)`,
/// `Cancelled(TaskRunCancelled)`, `Pending(ExceededNodeResources)`); `---`
/// without a `Succeeded` condition.
pub fn condition(conditions: &[Condition]) -> String {
    let Some(c) = Condition::succeeded(conditions) else {
        return "---".to_string();
    };
    let status = match c.status.as_str() {
        "True" => "Succeeded",
        "False" => "Failed",
        _ => "Running",
    };
    if c.status == "Unknown" && c.reason.as_deref() == Some(concurrency::QUEUED) {
        return match c.message.as_deref().and_then(concurrency::position_in) {
            Some((n, of)) => format!("Queued({n}/{of})"),
            None => "Queued".into(),
        };
    }
    match c.reason.as_deref() {
        Some(r) if !r.is_empty() && r != status => {
            let shown = match r {
                "PipelineRunCancelled" | "TaskRunCancelled" | "Cancelled" => "Cancelled",
                "PipelineRunStopping" | "TaskRunStopping" => "Failed",
                "CreateContainerConfigError"
                | "ExceededNodeResources"
                | "ExceededResourceQuota" => "Pending",
                _ => status,
            };
            if shown == r {
                return shown.to_string();
            }
            format!("{shown}({r})")
        }
        _ => status.to_string(),
    }
}

/// `tkn`'s STARTED: the largest whole unit of the time since `start`
/// (`5 minutes ago`, `1 day ago`), `---` without a start.
pub fn age(start: Option<Timestamp>, now: Timestamp) -> String {
    let Some(start) = start else {
        return "---".to_string();
    };
    let nanos = (now.as_nanosecond() - start.as_nanosecond()).max(0);
    const US: i128 = 1_000;
    const MS: i128 = 1_000 * US;
    const S: i128 = 1_000 * MS;
    const DAY: i128 = 86_400 * S;
    let units: [(i128, &str); 8] = [
        (365 * DAY, "year"),
        (7 * DAY, "week"),
        (DAY, "day"),
        (3_600 * S, "hour"),
        (60 * S, "minute"),
        (S, "second"),
        (MS, "millisecond"),
        (US, "microsecond"),
    ];
    for (size, unit) in units {
        let n = nanos / size;
        if n > 0 {
            let s = if n == 1 { "" } else { "s" };
            return format!("{n} {unit}{s} ago");
        }
    }
    "0 seconds ago".to_string()
}

/// `tkn`'s DURATION: completion − start as Go prints a duration (`1m30s`),
/// `---` unless both are known.
pub fn duration(start: Option<Timestamp>, end: Option<Timestamp>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => go_duration(e.as_nanosecond() - s.as_nanosecond()),
        _ => "---".to_string(),
    }
}

/// Go's `time.Duration.String()` of a signed number of nanoseconds
/// (`1h2m3.5s`, `1m0s`, `1.5ms`, `-2s`), the engine's formatter.
pub fn go_duration(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let d =
        std::time::Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
    format!("{sign}{}", tektite_engine::pod::go_duration(d))
}

/// A Go duration (`1h30m`, `90s`, `0`) in signed nanoseconds, with the
/// parser the entrypoint and validation use.
fn parse_go_duration(s: &str) -> Option<i128> {
    let (negative, d) = tektite_entrypoint::parse_go_duration(s)?;
    let n = i128::try_from(d.as_nanos()).ok()?;
    Some(if negative { -n } else { n })
}

/// Lays out tab-separated cells as Go's `text/tabwriter` does with
/// minwidth 0 and padding 3 (what `tkn` uses): a column is aligned over
/// each run of consecutive lines that have a cell in it; the last cell of a
/// line is not padded.
pub fn tabwrite(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    tab_format(&lines, 0, lines.len(), &mut widths, &mut out);
    out
}

const PADDING: usize = 3;

fn tab_format(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        tab_write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + PADDING);
            this += 1;
        }
        widths.push(width);
        tab_format(lines, line0, this, widths, out);
        widths.pop();
        line0 = this;
    }
    tab_write_lines(lines, line0, line1, widths, out);
}

fn tab_write_lines(
    lines: &[Vec<&str>],
    from: usize,
    to: usize,
    widths: &[usize],
    out: &mut String,
) {
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j) {
                let n = w.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', n));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tektite_api::v1::{
        ChildStatusReference, PipelineRef, PipelineRunSpec, PipelineRunStatus, SkippedTask,
        TaskRunSpec, TaskRunStatus,
    };

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cond(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Succeeded".into(),
            status: status.into(),
            reason: Some(reason.into()).filter(|r: &String| !r.is_empty()),
            message: Some(message.into()).filter(|m: &String| !m.is_empty()),
            ..Condition::default()
        }
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = ts("2024-05-01T12:00:00Z");
        let cases = [
            ("2024-05-01T12:00:00Z", "0 seconds ago"),
            ("2024-05-01T11:59:59Z", "1 second ago"),
            ("2024-05-01T11:59:15Z", "45 seconds ago"),
            ("2024-05-01T11:55:00Z", "5 minutes ago"),
            ("2024-05-01T10:00:01Z", "1 hour ago"),
            ("2024-05-01T09:30:00Z", "2 hours ago"),
            ("2024-04-29T12:00:00Z", "2 days ago"),
            ("2024-04-10T12:00:00Z", "3 weeks ago"),
            ("2022-05-01T12:00:00Z", "2 years ago"),
            // A start in the future (clock skew) is "now".
            ("2024-05-01T12:00:05Z", "0 seconds ago"),
        ];
        for (start, want) in cases {
            assert_eq!(age(Some(ts(start)), now), want, "{start}");
        }
        assert_eq!(age(None, now), "---");
    }

    #[test]
    fn durations_print_as_go_does() {
        let s = ts("2024-05-01T12:00:00Z");
        let d = |e: &str| duration(Some(s), Some(ts(e)));
        assert_eq!(d("2024-05-01T12:00:12Z"), "12s");
        assert_eq!(d("2024-05-01T12:01:30Z"), "1m30s");
        assert_eq!(d("2024-05-01T12:02:00Z"), "2m0s");
        assert_eq!(d("2024-05-01T13:00:00Z"), "1h0m0s");
        assert_eq!(d("2024-05-01T12:00:00.5Z"), "500ms");
        assert_eq!(d("2024-05-01T12:00:01.25Z"), "1.25s");
        assert_eq!(d("2024-05-01T12:00:00Z"), "0s");
        assert_eq!(duration(Some(s), None), "---");
        assert_eq!(duration(None, Some(s)), "---");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(7), "7ns");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
    }

    #[test]
    fn timeouts_are_normalised_like_go() {
        assert_eq!(go_timeout("1h"), "1h0m0s");
        assert_eq!(go_timeout("90m"), "1h30m0s");
        assert_eq!(go_timeout("1.5s"), "1.5s");
        assert_eq!(go_timeout("0"), "0s");
        assert_eq!(go_timeout("soon"), "soon");
    }

    #[test]
    fn status_is_tkns_condition_text() {
        let c = |s, r| condition(&[cond(s, r, "")]);
        assert_eq!(c("True", "Succeeded"), "Succeeded");
        assert_eq!(c("True", ""), "Succeeded");
        assert_eq!(c("True", "Completed"), "Succeeded(Completed)");
        assert_eq!(c("False", "Failed"), "Failed");
        assert_eq!(
            c("False", "PipelineRunTimeout"),
            "Failed(PipelineRunTimeout)"
        );
        assert_eq!(
            c("False", "TaskRunCancelled"),
            "Cancelled(TaskRunCancelled)"
        );
        assert_eq!(c("False", "Cancelled"), "Cancelled");
        assert_eq!(c("Unknown", "Running"), "Running");
        assert_eq!(
            c("Unknown", "PipelineRunStopping"),
            "Failed(PipelineRunStopping)"
        );
        assert_eq!(
            c("Unknown", "ExceededNodeResources"),
            "Pending(ExceededNodeResources)"
        );
        assert_eq!(c("Unknown", "Pending"), "Running(Pending)");
        assert_eq!(condition(&[]), "---");
    }

    #[test]
    fn tabwriter_aligns_blocks_like_go() {
        let t = "Name:\tx\nPipeline Ref:\tp\nLabels:\n a=b\n\nSTARTED\tDURATION\tSTATUS\n1 day ago\t1s\tSucceeded\n";
        assert_eq!(
            tabwrite(t),
            "Name:           x\n\
             Pipeline Ref:   p\n\
             Labels:\n a=b\n\n\
             STARTED     DURATION   STATUS\n\
             1 day ago   1s         Succeeded\n"
        );
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(
            printable("a\x1b[31mred\tb\r\x7f\u{9b}\nnext é"),
            "a\\x1b[31mred\\tb\\r\\x7f\\u{9b}\nnext é"
        );
    }

    #[test]
    fn go_values() {
        assert_eq!(go_value(&ParamValue::String("a b".into())), "a b");
        assert_eq!(
            go_value(&ParamValue::Array(vec!["a".into(), "b".into()])),
            "[a b]"
        );
        let o = [("k".to_string(), "v".to_string()), ("a".into(), "1".into())].into();
        assert_eq!(go_value(&ParamValue::Object(o)), "map[a:1 k:v]");
    }

    #[test]
    fn describe_pipeline_run_text() {
        let now = ts("2024-05-01T12:00:00Z");
        let mut pr = PipelineRun::new("build-1", PipelineRunSpec::default());
        pr.spec.pipeline_ref = Some(PipelineRef {
            name: Some("build".into()),
            ..PipelineRef::default()
        });
        pr.spec.params = vec![Param {
            name: "revision".into(),
            value: ParamValue::String("main".into()),
        }];
        pr.status = Some(PipelineRunStatus {
            conditions: vec![cond(
                "False",
                "Failed",
                "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1",
            )],
            start_time: Some(Time(ts("2024-05-01T11:55:00Z"))),
            completion_time: Some(Time(ts("2024-05-01T11:56:30Z"))),
            skipped_tasks: vec![SkippedTask {
                name: "deploy".into(),
                reason: "Parent Tasks were skipped".into(),
                ..SkippedTask::default()
            }],
            child_references: vec![ChildStatusReference {
                name: "build-1-compile".into(),
                pipeline_task_name: "compile".into(),
                ..ChildStatusReference::default()
            }],
            ..PipelineRunStatus::default()
        });
        let mut tr = TaskRun::new("build-1-compile", TaskRunSpec::default());
        tr.status = Some(TaskRunStatus {
            conditions: vec![cond(
                "False",
                "Failed",
                "\"step-make\" exited with code 2: Error",
            )],
            start_time: Some(Time(ts("2024-05-01T11:55:01Z"))),
            completion_time: Some(Time(ts("2024-05-01T11:56:29Z"))),
            ..TaskRunStatus::default()
        });
        let got = describe_pipeline_run(&pr, &[tr], now);
        let want = "\
Name:           build-1
Namespace:      default
Pipeline Ref:   build

Status

STARTED         DURATION   STATUS
5 minutes ago   1m30s      Failed

Message

Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1 (\"step-make\" exited with code 2: Error)

Params

 NAME       VALUE
 revision   main

Taskruns

 NAME              TASK NAME   STARTED         DURATION   STATUS
 build-1-compile   compile     4 minutes ago   1m28s      Failed

Skipped Tasks

 NAME     REASON
 deploy   Parent Tasks were skipped
";
        assert_eq!(got, want, "\n{got}");
    }
}
