//! `tkt pr|tr logs -f` (and `tkt run --cluster`): a run's logs as it goes,
//! to its end, on either target.
//!
//! On a cluster, the run and its TaskRuns are watched (kube-runtime's
//! watcher: a dropped watch resumes from the last resourceVersion), every
//! pod a TaskRun names (retries included) is followed, and each of its step
//! containers is streamed from its start (`pods/log?follow=true`) in step
//! order. A log stream cut before its container ended is opened again, and
//! a container's log is read once more without following when it has
//! ended; the lines already printed are skipped: no line twice, none
//! missed. Only whole lines (at most 64 KiB) are printed, so lines of tasks
//! running at once never mix. What is seen goes out as events (lines, a
//! TaskRun started, ended after its last line, a task skipped) through a
//! bounded channel: `logs -f` prints the lines, `tkt run --cluster` draws
//! them as a local run is drawn.
//! The follow ends when the run has ended and every container's log has
//! been read to its end; it never waits on a container that will not start
//! (its pod ended or went).
//!
//! Locally, the run store's log files are read as they grow, until the run
//! has ended and no `tkt` carries it out any more.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, Write};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tektite_api::v1::{Condition, PipelineRun, TaskRun};
use tektite_local::live;
use tektite_local::runner::Progress;
use tektite_local::store::Store;
use tokio::sync::mpsc::Sender;

use crate::cluster::{Cluster, pod_name};
use crate::inspect::{Kind, LogsArgs, step_of};

/// What of the logs is shown.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tasks: Vec<String>,
    pub steps: Vec<String>,
    pub prefix: bool,
}

impl Filter {
    pub fn of(a: &LogsArgs) -> Filter {
        Filter {
            tasks: a.tasks.clone(),
            steps: a.steps.clone(),
            prefix: a.prefix,
        }
    }

    /// Everything, prefixed.
    pub fn all() -> Filter {
        Filter {
            prefix: true,
            ..Filter::default()
        }
    }

    fn wants_task(&self, task: &str) -> bool {
        self.tasks.is_empty() || self.tasks.iter().any(|t| t == task)
    }

    fn wants_step(&self, step: &str, container: &str) -> bool {
        !container.starts_with("sidecar-")
            && (self.steps.is_empty() || self.steps.iter().any(|s| s == step || s == container))
    }

    /// The prefix of a step's lines: `[task : step] `, `[step] ` for a
    /// TaskRun of its own.
    fn prefix_of(&self, task: Option<&str>, step: &str) -> Vec<u8> {
        match (self.prefix, task) {
            (false, _) => Vec::new(),
            (true, Some(t)) => format!("[{t} : {step}] ").into_bytes(),
            (true, None) => format!("[{step}] ").into_bytes(),
        }
    }
}

/// The longest line kept whole: a longer one is cut into lines of this
/// many bytes (each then ended with a newline), so a step that never
/// prints a newline costs bounded memory. Where the cuts fall depends only
/// on the log's bytes, so a log read again cuts the same way.
const MAX_LINE: usize = 64 * 1024;

/// A log cut into whole lines; the part of a line not ended yet is held.
#[derive(Debug, Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The whole lines `bytes` completes, each ending with a newline.
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = bytes;
        loop {
            let room = MAX_LINE - self.partial.len();
            let window = &rest[..rest.len().min(room)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                self.partial.extend_from_slice(&rest[..=i]);
                out.push(std::mem::take(&mut self.partial));
                rest = &rest[i + 1..];
            } else if rest.len() >= room {
                self.partial.extend_from_slice(&rest[..room]);
                rest = &rest[room..];
                let mut line = std::mem::take(&mut self.partial);
                line.push(b'\n');
                out.push(line);
            } else {
                self.partial.extend_from_slice(rest);
                return out;
            }
        }
    }

    /// The last line, if it had no newline: ended with one.
    fn finish(&mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.partial);
        line.push(b'\n');
        Some(line)
    }
}

/// `lines`, each after `prefix`, appended to `out`.
fn prefixed(lines: Vec<Vec<u8>>, prefix: &[u8], out: &mut Vec<u8>) {
    for l in lines {
        out.extend_from_slice(prefix);
        out.extend_from_slice(&l);
    }
}

fn outcome(conditions: &[Condition]) -> Option<u8> {
    let c = Condition::succeeded(conditions)?;
    match c.status.as_str() {
        "True" => Some(0),
        "False" => Some(1),
        _ => None,
    }
}

fn conditions_of_pr(pr: &PipelineRun) -> &[Condition] {
    pr.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
}

fn conditions_of_tr(tr: &TaskRun) -> &[Condition] {
    tr.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
}

// ---------------------------------------------------------------- cluster

/// Follows a run on a cluster to its end, printing on `out`; the exit code
/// of its outcome.
///
/// # Errors
/// The run cannot be watched (the watch is retried while the server
/// answers errors; a run deleted while followed is an error).
pub fn follow(
    c: &Cluster,
    kind: Kind,
    name: &str,
    f: &Filter,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    follow_events(c, kind, name, f, |e| {
        if let Event::Lines { task, step, bytes } = e {
            let prefix = f.prefix_of(task.as_deref(), &step);
            let mut chunk = Vec::with_capacity(bytes.len());
            for line in bytes.split_inclusive(|b| *b == b'\n') {
                chunk.extend_from_slice(&prefix);
                chunk.extend_from_slice(line);
            }
            out.write_all(&chunk)?;
            out.flush()?;
        }
        Ok(())
    })
}

/// What following a run on a cluster reports, in order for each TaskRun:
/// it started, its steps' lines, it finished (after its last line); and
/// the tasks skipped. Lines are bytes as the steps wrote them (`logs -f`
/// copies them as they are); the rest is what a local run reports.
#[derive(Debug)]
pub enum Event {
    /// Whole lines of one step (each ends with a newline), without prefix.
    Lines {
        /// The pipeline task; none for a TaskRun followed on its own.
        task: Option<String>,
        step: String,
        bytes: Vec<u8>,
    },
    /// `Started`, `Finished` (once per TaskRun) or `Skipped`.
    Task(Progress),
}

/// Follows a run on a cluster to its end, handing each event to `on` on
/// this thread as it comes; the exit code of its outcome.
///
/// # Errors
/// As [`follow`], or what `on` returns.
pub fn follow_events(
    c: &Cluster,
    kind: Kind,
    name: &str,
    f: &Filter,
    mut on: impl FnMut(Event) -> anyhow::Result<()>,
) -> anyhow::Result<u8> {
    // Bounded: a slow reader (a paused pager) holds the followers back
    // rather than letting lines pile up in memory.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(256);
    let job = Follow {
        archive: c.archive.clone(),
        client: c.client.clone(),
        namespace: c.namespace.clone(),
        kind,
        name: name.to_string(),
        filter: f.clone(),
        tx,
    };
    let handle = c.rt.spawn(job.run());
    // The channel closes when every follower has ended.
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    while let Some(e) = c.block(rx.recv()) {
        let first = match &e {
            Event::Task(Progress::Finished { task_run, .. }) => finished.insert(task_run.clone()),
            Event::Task(Progress::Skipped { task, .. }) => skipped.insert(task.clone()),
            _ => true,
        };
        if first {
            on(e)?;
        }
    }
    c.block(handle)?
}

/// One follow: the run, and the lines' way out.
#[derive(Clone)]
struct Follow {
    archive: crate::archive::Lazy,
    client: Client,
    namespace: String,
    kind: Kind,
    name: String,
    filter: Filter,
    tx: Sender<Event>,
}

/// What a watch event says.
enum Seen {
    /// The run's outcome (if it has ended) and the tasks it skipped.
    Run(Option<u8>, Vec<(String, String)>),
    Gone,
    Task(Box<TaskRun>),
    Nothing,
}

impl Follow {
    async fn run(self) -> anyhow::Result<u8> {
        let trs: Api<TaskRun> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = match self.kind {
            Kind::PipelineRun => {
                watcher::Config::default().labels(&format!("tekton.dev/pipelineRun={}", self.name))
            }
            Kind::TaskRun => {
                watcher::Config::default().fields(&format!("metadata.name={}", self.name))
            }
        };
        let kind = self.kind;
        let tasks = watcher(trs.clone(), selector)
            .default_backoff()
            .map(|e| match e {
                Ok(watcher::Event::Apply(tr) | watcher::Event::InitApply(tr)) => {
                    Seen::Task(Box::new(tr))
                }
                Ok(watcher::Event::Delete(_)) if kind == Kind::TaskRun => Seen::Gone,
                _ => Seen::Nothing,
            })
            .boxed();
        let runs = match self.kind {
            Kind::PipelineRun => {
                let api: Api<PipelineRun> = Api::namespaced(self.client.clone(), &self.namespace);
                let by_name =
                    watcher::Config::default().fields(&format!("metadata.name={}", self.name));
                watcher(api, by_name)
                    .default_backoff()
                    .map(|e| match e {
                        Ok(watcher::Event::Apply(pr) | watcher::Event::InitApply(pr)) => {
                            let skipped = pr.status.iter().flat_map(|s| &s.skipped_tasks);
                            let skipped = skipped.map(|t| (t.name.clone(), t.reason.clone()));
                            Seen::Run(outcome(conditions_of_pr(&pr)), skipped.collect())
                        }
                        Ok(watcher::Event::Delete(_)) => Seen::Gone,
                        _ => Seen::Nothing,
                    })
                    .boxed()
            }
            Kind::TaskRun => futures::stream::pending().boxed(),
        };
        let mut events = futures::stream::select(tasks, runs);
        let mut followers = tokio::task::JoinSet::new();
        let mut followed: BTreeSet<String> = BTreeSet::new();
        let code = loop {
            let Some(seen) = events.next().await else {
                anyhow::bail!("the watch of {} {} ended", self.kind.lower(), self.name);
            };
            match seen {
                Seen::Task(tr) => {
                    self.follow_pods(&tr, &mut followed, &mut followers).await;
                    if self.kind == Kind::TaskRun
                        && let Some(code) = outcome(conditions_of_tr(&tr))
                    {
                        break code;
                    }
                }
                Seen::Run(code, skipped) => {
                    for (task, reason) in skipped {
                        let skip = Event::Task(Progress::Skipped { task, reason });
                        let _ = self.tx.send(skip).await;
                    }
                    if let Some(code) = code {
                        break code;
                    }
                }
                Seen::Gone => {
                    anyhow::bail!("{} {} was deleted", self.kind.lower(), self.name)
                }
                Seen::Nothing => {}
            }
        };
        drop(events);
        // The run has ended: its TaskRuns as they are now, in case a watch
        // event of the last ones has not come yet.
        let lp = match self.kind {
            Kind::PipelineRun => {
                ListParams::default().labels(&format!("tekton.dev/pipelineRun={}", self.name))
            }
            Kind::TaskRun => ListParams::default().fields(&format!("metadata.name={}", self.name)),
        };
        for tr in trs.list(&lp).await?.items {
            self.follow_pods(&tr, &mut followed, &mut followers).await;
        }
        while let Some(r) = followers.join_next().await {
            r??;
        }
        Ok(code)
    }

    /// Starts following the pods of `tr` not followed yet: its current pod
    /// and those of its earlier attempts.
    async fn follow_pods(
        &self,
        tr: &TaskRun,
        followed: &mut BTreeSet<String>,
        followers: &mut tokio::task::JoinSet<anyhow::Result<()>>,
    ) {
        let task = match self.kind {
            Kind::PipelineRun => tr
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("tekton.dev/pipelineTask"))
                .cloned()
                .or_else(|| tr.metadata.name.clone()),
            Kind::TaskRun => None,
        };
        if task.as_deref().is_some_and(|t| !self.filter.wants_task(t)) {
            return;
        }
        let tr_name = tr.metadata.name.clone().unwrap_or_default();
        let shown = task.clone().unwrap_or_else(|| tr_name.clone());
        if followed.insert(format!("taskrun/{tr_name}")) {
            let started = Event::Task(Progress::Started {
                task: shown.clone(),
                task_run: tr_name.clone(),
            });
            let _ = self.tx.send(started).await;
        }
        if pod_name(tr).is_none()
            && let Some(e) = finished_event(tr, &shown)
        {
            // No pod to wait for (it failed before one was made).
            let _ = self.tx.send(e).await;
        }
        let earlier = tr
            .status
            .iter()
            .flat_map(|s| &s.retries_status)
            .filter_map(|r| r.pod_name.clone());
        let pods: Vec<String> = earlier
            .chain(pod_name(tr))
            .filter(|p| !p.is_empty())
            .collect();
        for pod in pods {
            if followed.insert(pod.clone()) {
                let ns = tr
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or(self.namespace.clone());
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                let p = PodFollow {
                    archive: self.archive.clone(),
                    pods,
                    trs: Api::namespaced(self.client.clone(), &ns),
                    pod,
                    task: task.clone(),
                    tr: tr.clone(),
                    filter: self.filter.clone(),
                    tx: self.tx.clone(),
                };
                followers.spawn(p.run());
            }
        }
    }
}

/// The event of a TaskRun that has ended, shown as `task`.
fn finished_event(tr: &TaskRun, task: &str) -> Option<Event> {
    let c = Condition::succeeded(conditions_of_tr(tr))?;
    if c.status == "Unknown" {
        return None;
    }
    Some(Event::Task(Progress::Finished {
        task: task.to_string(),
        task_run: tr.metadata.name.clone().unwrap_or_default(),
        status: c.status.clone(),
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    }))
}

/// Following one pod's step containers, in order.
struct PodFollow {
    archive: crate::archive::Lazy,
    pods: Api<Pod>,
    trs: Api<TaskRun>,
    pod: String,
    task: Option<String>,
    tr: TaskRun,
    filter: Filter,
    tx: Sender<Event>,
}

/// Says that a pod's logs cannot be shown: it was deleted (a cancel or a
/// timeout deletes it, as Tekton does) and the log archive cannot give
/// them (`why`).
pub(crate) fn gone(pod: &str, tr: &TaskRun, why: &str) {
    crate::note(&format!(
        "tkt: warning: pod {pod} of taskrun {} is gone, and its logs cannot be read from the archive: {why}",
        tr.metadata.name.as_deref().unwrap_or_default()
    ));
}

/// Where a container is, as its pod says.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Not started; the pod still runs.
    Waiting,
    /// Running or ended: it has a log.
    Started { ended: bool },
    /// It will never start (its pod ended, or was deleted).
    Never,
}

fn state_of(pod: Option<&Pod>, container: &str) -> State {
    let Some(pod) = pod else {
        return State::Never;
    };
    let status = pod.status.as_ref();
    let cs = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == container));
    let st = cs.and_then(|c| c.state.as_ref());
    match st {
        Some(s) if s.terminated.is_some() => State::Started { ended: true },
        Some(s) if s.running.is_some() => State::Started { ended: false },
        _ if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) =>
        {
            State::Never
        }
        _ => State::Waiting,
    }
}

const POLL: Duration = Duration::from_millis(250);

/// How one read of a container's log went.
enum LogRead {
    /// To its end: the unfinished last line.
    Clean(Lines),
    /// Cut (or the container not ready yet): read again.
    Cut,
    /// The pod is gone.
    Gone,
    /// Refused (not a 400 or 404): the server's message.
    Refused(String),
}

/// Reads of a log refused in a row before the follower gives up on it.
const REFUSALS: u32 = 5;

impl PodFollow {
    async fn run(self) -> anyhow::Result<()> {
        let Some(pod) = self.pod_now().await? else {
            let steps = crate::cluster::step_containers(&self.tr, None);
            self.archived(&steps, 0).await;
            return self.finish().await;
        };
        let containers = crate::cluster::step_containers(&self.tr, Some(&pod));
        for (i, c) in containers.iter().enumerate() {
            let step = step_of(&self.tr, c);
            if !self.filter.wants_step(&step, c) {
                continue;
            }
            if let Some(printed) = self.container(c, &step).await? {
                // The pod went while it ran: the rest is in the archive.
                self.archived(&containers[i..], printed).await;
                break;
            }
        }
        self.finish().await
    }

    /// The logs of `containers` (those the filter wants) from the archive,
    /// the first one's past its `printed` lines.
    async fn archived(&self, containers: &[String], printed: usize) {
        let logs = match self.archive.pod_logs(&self.tr, &self.pod, containers).await {
            Ok(logs) => logs,
            Err(why) => return gone(&self.pod, &self.tr, &why),
        };
        for (c, log) in logs {
            let step = step_of(&self.tr, &c);
            if !self.filter.wants_step(&step, &c) {
                continue;
            }
            let skip = if containers.first() == Some(&c) {
                printed
            } else {
                0
            };
            let mut lines = Lines::default();
            let mut all = lines.push(&log);
            all.extend(lines.finish());
            let rest: Vec<Vec<u8>> = all.into_iter().skip(skip).collect();
            if !self.send_lines(&step, rest).await {
                return;
            }
        }
    }

    /// The pod as it is now (`None`: deleted); a failed read is tried again
    /// a few times before the follow fails.
    async fn pod_now(&self) -> anyhow::Result<Option<Pod>> {
        let mut tries = 0;
        loop {
            match crate::cluster::get_opt(&self.pods, &self.pod).await {
                Ok(p) => return Ok(p),
                // A passing failure (the watches retry theirs too).
                Err(_) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(POLL * 2).await;
                }
                Err(e) => return Err(e.context(format!("pod {}", self.pod))),
            }
        }
    }

    /// After the pod's logs: the TaskRun's end, once it has ended, if this
    /// pod is its last (a retry's pod reports instead).
    async fn finish(&self) -> anyhow::Result<()> {
        let name = self.tr.metadata.name.clone().unwrap_or_default();
        let shown = self.task.clone().unwrap_or_else(|| name.clone());
        loop {
            let Some(tr) = crate::cluster::get_opt(&self.trs, &name).await? else {
                return Ok(());
            };
            if pod_name(&tr).as_deref() != Some(self.pod.as_str()) {
                return Ok(());
            }
            if let Some(e) = finished_event(&tr, &shown) {
                let _ = self.tx.send(e).await;
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn send_lines(&self, step: &str, lines: Vec<Vec<u8>>) -> bool {
        if lines.is_empty() {
            return true;
        }
        let e = Event::Lines {
            task: self.task.clone(),
            step: step.to_string(),
            bytes: lines.concat(),
        };
        self.tx.send(e).await.is_ok()
    }

    /// Streams one container's log from its start to its end. A follow
    /// that ends before the container did (cut, or closed by the server)
    /// is opened again; once it has ended, its log is read once more
    /// without following unless it had ended before the read began. Lines
    /// printed already are skipped: none twice, none missed. When the pod
    /// goes first: how many lines were printed (the archive has the rest).
    async fn container(&self, c: &str, step: &str) -> anyhow::Result<Option<usize>> {
        let mut printed = 0usize;
        let mut refused = 0u32;
        loop {
            let Some(ended_before) = self.wait_started(c).await? else {
                let gone = self.pod_now().await?.is_none();
                return Ok(gone.then_some(printed));
            };
            match self.read(c, step, !ended_before, &mut printed).await {
                LogRead::Clean(mut rest) if ended_before => {
                    let last: Vec<Vec<u8>> = rest.finish().into_iter().collect();
                    self.send_lines(step, last).await;
                    return Ok(None);
                }
                LogRead::Gone => return Ok(Some(printed)),
                LogRead::Refused(m) => {
                    refused += 1;
                    if refused == 1 || refused >= REFUSALS {
                        crate::note(&format!(
                            "tkt: warning: log of {c} in pod {}: {m}",
                            self.pod
                        ));
                    }
                    if refused >= REFUSALS {
                        return Ok(None);
                    }
                }
                LogRead::Clean(_) | LogRead::Cut => refused = 0,
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the container to start: whether it had ended already, or
    /// `None` if it never will start.
    async fn wait_started(&self, c: &str) -> anyhow::Result<Option<bool>> {
        loop {
            match state_of(self.pod_now().await?.as_ref(), c) {
                State::Started { ended } => return Ok(Some(ended)),
                State::Never => return Ok(None),
                State::Waiting => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// One read of the container's log (following it or not): the whole
    /// lines past `printed` are sent.
    async fn read(&self, c: &str, step: &str, follow: bool, printed: &mut usize) -> LogRead {
        let lp = LogParams {
            container: Some(c.to_string()),
            follow,
            ..LogParams::default()
        };
        let stream = match self.pods.log_stream(&self.pod, &lp).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 404 => return LogRead::Gone,
            Err(kube::Error::Api(e)) if e.code == 400 => return LogRead::Cut,
            Err(e) => return LogRead::Refused(e.to_string()),
        };
        let mut stream = std::pin::pin!(stream);
        let (mut lines, mut seen) = (Lines::default(), 0usize);
        loop {
            let buf = match stream.fill_buf().await {
                Ok([]) => return LogRead::Clean(lines),
                Err(_) => return LogRead::Cut,
                Ok(b) => b.to_vec(),
            };
            futures::AsyncBufRead::consume(stream.as_mut(), buf.len());
            let mut new = Vec::new();
            for line in lines.push(&buf) {
                seen += 1;
                if seen > *printed {
                    new.push(line);
                    *printed = seen;
                }
            }
            if !self.send_lines(step, new).await {
                return LogRead::Gone;
            }
        }
    }
}

// ---------------------------------------------------------------- local

/// Follows a run of the local store to its end: its log files are read as
/// they grow until the run has ended and no `tkt` carries it out. A run
/// whose `tkt` has gone without ending it is recovered (marked failed), as
/// every store command does.
///
/// # Errors
/// The store cannot be read, or the run is not in it.
pub fn follow_local(
    store: &Store,
    kind: Kind,
    name: &str,
    f: &Filter,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    // Per log file: how far it was read, and its unfinished line.
    let mut read: BTreeMap<std::path::PathBuf, (u64, Lines)> = BTreeMap::new();
    loop {
        // Whether it has ended is asked before the last read: everything
        // written before the end is read after it.
        let live = live::is_live(store, kind, name);
        let (code, trs) = local_state(store, kind, name)?;
        if code.is_none() && !live {
            // Its `tkt` has gone: recovered, then read again.
            live::recover_abandoned(store, None);
            if local_state(store, kind, name)?.0.is_none() {
                anyhow::bail!(
                    "{} {name:?} has not ended and no tkt carries it out",
                    kind.lower()
                );
            }
            continue;
        }
        let ended = code.filter(|_| !live);
        let mut chunk = Vec::new();
        for tr in &trs {
            let task = (kind == Kind::PipelineRun).then(|| {
                tr.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("tekton.dev/pipelineTask"))
                    .cloned()
                    .unwrap_or_else(|| tr.metadata.name.clone().unwrap_or_default())
            });
            if task.as_deref().is_some_and(|t| !f.wants_task(t)) {
                continue;
            }
            for (container, path) in store.logs(tr) {
                let step = step_of(tr, &container);
                if !f.wants_step(&step, &container) {
                    continue;
                }
                let prefix = f.prefix_of(task.as_deref(), &step);
                let (offset, lines) = read.entry(path.clone()).or_default();
                *offset += read_new(&path, *offset, lines, &prefix, &mut chunk)?;
                if ended.is_some() {
                    prefixed(lines.finish().into_iter().collect(), &prefix, &mut chunk);
                }
            }
        }
        out.write_all(&chunk)?;
        out.flush()?;
        if let Some(code) = ended {
            return Ok(code);
        }
        std::thread::sleep(POLL);
    }
}

/// A local run's outcome (if it has ended) and its TaskRuns, in the order
/// its status names them: only those its record names are read, not the
/// whole store (a rerun's reused TaskRuns, another run's, are left out).
fn local_state(
    store: &Store,
    kind: Kind,
    name: &str,
) -> anyhow::Result<(Option<u8>, Vec<TaskRun>)> {
    match kind {
        Kind::PipelineRun => {
            let Some(pr) = store.pipeline_run(name)? else {
                anyhow::bail!("pipelinerun {name:?} is no longer in the run store");
            };
            let mut trs = Vec::new();
            for r in pr.status.iter().flat_map(|s| &s.child_references) {
                if let Ok(Some(tr)) = store.task_run(&r.name) {
                    let mine = tr
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("tekton.dev/pipelineRun"));
                    if mine.is_some_and(|p| p == name) {
                        trs.push(tr);
                    }
                }
            }
            Ok((outcome(conditions_of_pr(&pr)), trs))
        }
        Kind::TaskRun => {
            let Some(tr) = store.task_run(name)? else {
                anyhow::bail!("taskrun {name:?} is no longer in the run store");
            };
            Ok((outcome(conditions_of_tr(&tr)), vec![tr]))
        }
    }
}

/// Reads what `path` has past `offset` into whole prefixed lines; how many
/// bytes it read.
fn read_new(
    path: &std::path::Path,
    offset: u64,
    lines: &mut Lines,
    prefix: &[u8],
    out: &mut Vec<u8>,
) -> anyhow::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        prefixed(lines.push(&buf[..n]), prefix, out);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"one\ntw"), vec![b"one\n".to_vec()]);
        assert_eq!(l.push(b"o\nthree"), vec![b"two\n".to_vec()]);
        assert_eq!(l.finish(), Some(b"three\n".to_vec()));
        assert_eq!(l.finish(), None);
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_same_places_whatever_the_chunks() {
        let text: Vec<u8> = std::iter::repeat_n(b'x', MAX_LINE * 2 + 10)
            .chain(*b"\nend\n")
            .collect();
        let mut whole = Lines::default();
        let all = whole.push(&text);
        let mut bits = Lines::default();
        let pieces: Vec<Vec<u8>> = text.chunks(1000).flat_map(|c| bits.push(c)).collect();
        assert_eq!(all, pieces);
        let lens: Vec<usize> = all.iter().map(Vec::len).collect();
        assert_eq!(lens, [MAX_LINE + 1, MAX_LINE + 1, 11, 4]);
    }
}
