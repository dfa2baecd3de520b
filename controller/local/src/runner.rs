//! Runs TaskRuns and PipelineRuns on this machine: a loop per run that asks
//! the engine for a plan, carries it out (pods played by the runtime, child
//! TaskRuns started up to `parallel` at a time, cancellations), records every
//! change in the store, and waits for the next thing to happen (a container
//! ending, a child finishing, a timeout, an interrupt).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{Condition, PipelineRun, PipelineSpec, TaskRun, TaskSpec};
use tektite_engine::pipelinerun;
use tektite_engine::pod::{Config, ImageCommand};
use tektite_engine::status::{condition, is_done, set_condition};
use tektite_engine::stepaction::{self, StepActions};
use tektite_engine::taskrun;

use crate::live::Journal;
use crate::process::ProcessPod;
use crate::runtime::{self, PodEnv, PodmanPod, Signal};
use crate::store::Store;

/// Where pods run.
#[derive(Debug, Clone)]
pub enum RuntimeKind {
    Podman,
    /// Host processes, with this entrypoint binary.
    Process(PathBuf),
}

/// A pod running in either runtime.
enum RunningPod {
    Podman(PodmanPod),
    Process(ProcessPod),
}

impl RunningPod {
    fn observe(&mut self) -> Result<Pod, runtime::RuntimeError> {
        match self {
            RunningPod::Podman(p) => p.observe(),
            RunningPod::Process(p) => Ok(p.observe()),
        }
    }
    fn mark_ready(&mut self) {
        match self {
            RunningPod::Podman(p) => p.mark_ready(),
            RunningPod::Process(p) => p.mark_ready(),
        }
    }
    fn waits_for_ready(&self) -> bool {
        match self {
            RunningPod::Podman(p) => p.waits_for_ready(),
            RunningPod::Process(p) => p.waits_for_ready(),
        }
    }
    fn stop(&mut self, now: bool) {
        match self {
            RunningPod::Podman(p) => p.stop(now),
            RunningPod::Process(p) => p.stop(now),
        }
    }
    fn finish(self, keep: bool) {
        match self {
            RunningPod::Podman(p) => p.finish(keep),
            RunningPod::Process(p) => p.finish(),
        }
    }
}

/// How runs are carried out.
#[derive(Debug, Clone)]
pub struct Options {
    pub runtime: RuntimeKind,
    /// TaskRuns of a PipelineRun running at once.
    pub parallel: usize,
    /// Keep pods and run directories after the run.
    pub keep: bool,
    pub config: Config,
    /// Where run directories go (`<work>/<taskrun>/`, claims in `<work>/claims/`).
    pub work: PathBuf,
    /// Where the pods' bookkeeping volumes go (`<fast_work>/<taskrun>/`):
    /// on a tmpfs ([`crate::tmpfs`]), or `work` itself.
    pub fast_work: PathBuf,
    /// Claims bound to host directories (`-w name=PATH`): claim name → path.
    pub claims: BTreeMap<String, PathBuf>,
    /// Between SIGTERM and SIGKILL when a pod is stopped (cancel, timeout).
    pub grace: Duration,
    /// Added to every container's environment (`tkt run --env`), before
    /// what the container sets itself.
    pub env: Vec<(String, String)>,
    /// The run's journal: what it starts is recorded there, and other
    /// commands ask there for it to be cancelled.
    pub journal: Option<Arc<Journal>>,
    /// The StepActions steps may name (`ref`), for a PipelineRun's TaskRuns.
    pub step_actions: Arc<StepActions>,
    /// Where the Tasks found by resolvers came from, by remote key: a
    /// child TaskRun of one gets it as `status.provenance.refSource`.
    pub sources: Arc<BTreeMap<String, tektite_api::v1::RefSource>>,
    /// The ConfigMaps and Secrets given with the run (`tkt run -f`,
    /// `--configmap`, `--secret`), which pods' env and volumes read.
    pub data: Arc<tektite_api::data::DataSet>,
}

/// What happens, for the user to see.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Lines of one step's output, in order, each ending with a newline.
    Lines {
        /// The pipeline task (or the TaskRun's name when run alone).
        task: String,
        /// The step name (container without `step-`).
        step: String,
        text: String,
    },
    Started {
        task: String,
        task_run: String,
    },
    Finished {
        task: String,
        task_run: String,
        status: String,
        reason: String,
        message: String,
    },
    Skipped {
        task: String,
        reason: String,
    },
}

/// Messages to a run's loop.
#[derive(Debug)]
pub enum Msg {
    /// A child TaskRun changed (or ended, `done`).
    Child { tr: Box<TaskRun>, done: bool },
    /// Ctrl-C, SIGTERM or SIGHUP: cancel the run.
    Interrupt,
}

/// How often a run looks for a cancel request from another command.
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// The message of a run cancelled by another command's request.
pub const CANCEL_REQUESTED: &str = "cancelled by a request to delete it (tkt delete)";

/// Messages to a TaskRun worker.
#[derive(Debug)]
enum Work {
    /// A container changed: observe the pod again.
    Changed,
    Cancel(String),
}

fn label<'a>(tr: &'a TaskRun, key: &str) -> Option<&'a str> {
    tr.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn task_label(tr: &TaskRun) -> String {
    label(tr, "tekton.dev/pipelineTask")
        .map(str::to_string)
        .unwrap_or_else(|| tr.metadata.name.clone().unwrap_or_default())
}

/// The resolved Task of a TaskRun: its spec and the Task's name.
#[derive(Debug, Clone)]
pub enum TaskSource {
    Spec(Box<TaskSpec>, Option<String>),
    Failed(tektite_engine::params::Failure),
}

impl TaskSource {
    /// The Task of a PipelineRun's child: its embedded spec, else the one
    /// its `taskRef` names in `tasks`, else `CouldntGetTask`; with the
    /// StepActions its steps name inlined ([`TaskSource::with_step_actions`]).
    pub fn of_child(
        tr: &TaskRun,
        tasks: &BTreeMap<String, TaskSpec>,
        actions: &StepActions,
    ) -> TaskSource {
        Self::found(tr, tasks).with_step_actions(tr, actions)
    }

    /// The Task a child TaskRun embeds or names.
    fn found(tr: &TaskRun, tasks: &BTreeMap<String, TaskSpec>) -> TaskSource {
        if let Some(s) = &tr.spec.task_spec {
            return TaskSource::Spec(s.clone(), None);
        }
        // A Task by name, or one a resolver found (kept under its key).
        let n = tr
            .spec
            .task_ref
            .as_ref()
            .and_then(tektite_engine::remote::task_ref_key)
            .unwrap_or_default();
        let remote = tektite_engine::remote::is_remote(&n);
        match tasks.get(&n) {
            Some(s) if remote => TaskSource::Spec(Box::new(s.clone()), None),
            Some(s) => TaskSource::Spec(Box::new(s.clone()), Some(n)),
            None if remote => TaskSource::Failed(tektite_engine::params::Failure::new(
                "CouldntGetTask",
                format!("{} was not resolved", tektite_engine::remote::describe(&n)),
            )),
            None => TaskSource::Failed(tektite_engine::params::Failure::new(
                "CouldntGetTask",
                format!("tasks.tekton.dev {n:?} not found"),
            )),
        }
    }

    /// The spec with the StepActions its steps name (`ref`) inlined for
    /// the run `tr`, or the run's failure (`TaskRunResolutionFailed`) when
    /// one is missing or cannot be used.
    pub fn with_step_actions(self, tr: &TaskRun, actions: &StepActions) -> TaskSource {
        match self {
            TaskSource::Spec(s, n) => match stepaction::inline(&s, tr, actions) {
                Ok(inlined) => TaskSource::Spec(Box::new(inlined), n),
                Err(f) => TaskSource::Failed(f),
            },
            failed => failed,
        }
    }

    /// What the engine takes of it.
    pub fn resolved(&self) -> taskrun::Resolved<'_> {
        match self {
            TaskSource::Spec(s, n) => taskrun::Resolved::Spec(s, n.as_deref()),
            TaskSource::Failed(f) => taskrun::Resolved::Failed(f),
        }
    }
}

/// What a TaskRun worker works with.
struct Worker {
    opts: Options,
    store: Store,
    progress: SyncSender<Progress>,
    parent: Sender<Msg>,
    inbox: Receiver<Work>,
    inbox_tx: Sender<Work>,
}

/// Forwards a pod's signals: output lines to the user, changes to the
/// worker's inbox.
fn forward_signals(
    rx: Receiver<Signal>,
    task: String,
    progress: SyncSender<Progress>,
    inbox: Sender<Work>,
) {
    std::thread::spawn(move || {
        for s in rx {
            match s {
                Signal::Lines {
                    container, text, ..
                } => {
                    let step = container
                        .strip_prefix("step-")
                        .unwrap_or(&container)
                        .to_string();
                    let _ = progress.send(Progress::Lines {
                        task: task.clone(),
                        step,
                        text,
                    });
                }
                Signal::Changed => {
                    let _ = inbox.send(Work::Changed);
                }
            }
        }
    });
}

fn fail(tr: &mut TaskRun, reason: &str, message: String) {
    tektite_engine::status::fail_task_run(tr, reason, message, Timestamp::now());
}

/// One TaskRun being carried out: the engine's plan applied, then the
/// next event waited for, until the run is done.
struct TaskRunLoop {
    tr: TaskRun,
    source: TaskSource,
    w: Worker,
    name: String,
    task: String,
    images: BTreeMap<String, ImageCommand>,
    pod: Option<RunningPod>,
    observed: Option<Pod>,
    started: bool,
    /// Where the pod's signals (output, changes) go.
    signals: SyncSender<Signal>,
    /// The status has changed since the store last had it.
    unsaved: bool,
    /// When the store last had it, and with which `Succeeded` condition.
    saved: Option<(Instant, Option<SucceededState>)>,
}

/// A `Succeeded` condition's status and reason.
type SucceededState = (String, Option<String>);

/// How stale the stored status of a running TaskRun may be: a step's end
/// is saved at once only when none was in this long; the others of a
/// burst of quick steps go together (a save writes a new file and syncs
/// it, 0.5–1 ms here). A change of the `Succeeded` condition (started,
/// done) is saved at once.
const SAVE_EVERY: Duration = Duration::from_millis(100);

impl TaskRunLoop {
    fn plan(&self) -> taskrun::Plan {
        taskrun::reconcile(
            taskrun::Observed {
                task_run: &self.tr,
                resolved: self.source.resolved(),
                pod: self.observed.as_ref(),
                images: &self.images,
                now: Timestamp::now(),
            },
            &self.w.opts.config,
        )
    }

    /// Looks up the command of each image the plan needs; whether the run
    /// failed for it.
    fn look_up_images(&mut self, needed: &[String]) -> bool {
        for image in needed {
            if matches!(self.w.opts.runtime, RuntimeKind::Process(_)) {
                fail(
                    &mut self.tr,
                    "TaskRunValidationFailed",
                    format!(
                        "a step of image {image} has no command: the process runtime does not use \
                         images and cannot read their entrypoint; give the step a command or a script"
                    ),
                );
                return true;
            }
            match runtime::image_command(image) {
                Ok(c) => {
                    self.images.insert(image.clone(), c);
                }
                Err(e) => {
                    fail(
                        &mut self.tr,
                        "TaskRunImagePullFailed",
                        format!("cannot read the command of {e}"),
                    );
                    return true;
                }
            }
        }
        false
    }

    /// The pod with its ConfigMap and Secret values resolved and its
    /// volumes' files written under `dir`; `None` when the run failed for
    /// it (a missing object or key, as a kubelet's pod would be stuck on).
    fn materialize(&mut self, p: &Pod, dir: &std::path::Path) -> Option<Pod> {
        use tektite_engine::sources;
        let written = sources::materialize(p, &self.w.opts.data, dir).and_then(|m| {
            crate::values::write(dir, &m.volumes)
                .map(|()| m.pod)
                .map_err(|e| e.to_string())
        });
        match written {
            Ok(p) => Some(p),
            Err(message) => {
                fail(&mut self.tr, sources::REASON, message);
                None
            }
        }
    }

    /// Starts the plan's pod; whether the run failed for it.
    fn start_pod(&mut self, p: &Pod) -> bool {
        let pod_name = p.metadata.name.as_deref().unwrap_or("pod");
        let values_dir = self
            .w
            .opts
            .work
            .join(&self.name)
            .join(format!("{pod_name}.values"));
        let Some(p) = self.materialize(p, &values_dir) else {
            return true;
        };
        let p = &p;
        let opts = &self.w.opts;
        // Each attempt (retries) gets a directory of its own: no marker of
        // an earlier attempt is seen by the next.
        let pod = p.metadata.name.as_deref().unwrap_or("pod");
        let pod_dir = opts.work.join(&self.name).join(pod);
        let fast_dir = opts.fast_work.join(&self.name).join(pod);
        // A directory left by an earlier run of this name (kept with
        // --keep, then deleted and run again) goes: what the runtimes make
        // in it is made new. remove_dir_all follows no link. In memory,
        // an earlier attempt's bookkeeping goes too (its pod is over),
        // unless the run is kept.
        let _ = std::fs::remove_dir_all(&pod_dir);
        if opts.fast_work != opts.work && !opts.keep && self.pod.is_none() {
            let _ = std::fs::remove_dir_all(opts.fast_work.join(&self.name));
        }
        let _ = std::fs::remove_dir_all(&fast_dir);
        let env = PodEnv {
            task_run: &self.name,
            run_dir: &pod_dir,
            fast_dir: &fast_dir,
            claims: &opts.claims,
            claims_dir: &opts.work.join("claims"),
            store: &self.w.store,
            signals: &self.signals,
            grace: opts.grace,
            journal: opts.journal.as_deref(),
            plain_http: &[],
        };
        let p = &tektite_engine::podman::with_env(p, &opts.env);
        let started_pod = match &opts.runtime {
            RuntimeKind::Podman => PodmanPod::start(p, &env).map(RunningPod::Podman),
            RuntimeKind::Process(bin) => ProcessPod::start(p, &env, bin).map(RunningPod::Process),
        };
        match started_pod {
            Ok(running) => {
                if let (RunningPod::Podman(p), Some(st)) = (&running, self.tr.status.as_mut()) {
                    st.image_pulls = p.pulls().to_vec();
                }
                self.pod = Some(running);
                if !self.started {
                    self.started = true;
                    let _ = self.w.progress.send(Progress::Started {
                        task: self.task.clone(),
                        task_run: self.name.clone(),
                    });
                }
                false
            }
            Err(e) => {
                fail(&mut self.tr, "PodCreationFailed", e.to_string());
                true
            }
        }
    }

    /// Applies a plan; whether to plan again at once (images just looked up).
    fn apply(&mut self, plan: &taskrun::Plan) -> bool {
        let mut changed = false;
        if let Some(st) = &plan.status {
            self.tr.status = Some(st.clone());
            changed = true;
        }
        let again = !plan.need_images.is_empty();
        if again {
            changed |= self.look_up_images(&plan.need_images);
        }
        if let Some(p) = &plan.create_pod {
            changed |= self.start_pod(p);
        }
        if plan.delete_pod.is_some()
            && let Some(p) = self.pod.as_mut()
        {
            p.stop(false);
        }
        if plan.mark_ready.is_some()
            && let Some(p) = self.pod.as_mut()
        {
            p.mark_ready();
        }
        // `plan.stop_sidecars` needs no step here: a pod whose steps have
        // ended is finished (done, or a retry's new pod), and finishing
        // stops what still runs in it.
        self.unsaved |= changed;
        self.save_when_due();
        again
    }

    /// Saves the status if it changed, unless only a step's state did and
    /// the last save was less than [`SAVE_EVERY`] ago ([`TaskRunLoop::wait`]
    /// then wakes in time to save it).
    fn save_when_due(&mut self) {
        if !self.unsaved {
            return;
        }
        let succeeded = self
            .tr
            .status
            .as_ref()
            .and_then(|s| Condition::succeeded(&s.conditions))
            .map(|c| (c.status.clone(), c.reason.clone()));
        let due = self
            .saved
            .as_ref()
            .is_none_or(|(at, cond)| *cond != succeeded || at.elapsed() >= SAVE_EVERY);
        if due {
            let _ = self.w.store.save_task_run(&self.tr);
            self.saved = Some((Instant::now(), succeeded));
            self.unsaved = false;
        }
    }

    /// How long until an unsaved status is due.
    fn save_due_in(&self) -> Option<Duration> {
        let (at, _) = self.saved.as_ref().filter(|_| self.unsaved)?;
        Some(SAVE_EVERY.saturating_sub(at.elapsed()))
    }

    /// The run is done: its pod finished, its directory removed, the user
    /// told.
    fn finish(mut self) -> TaskRun {
        if self.unsaved {
            let _ = self.w.store.save_task_run(&self.tr);
        }
        let keep = self.w.opts.keep;
        if let Some(p) = self.pod.take() {
            p.finish(keep);
        }
        if !keep {
            let _ = std::fs::remove_dir_all(self.w.opts.work.join(&self.name));
            let _ = std::fs::remove_dir_all(self.w.opts.fast_work.join(&self.name));
        }
        let c = self
            .tr
            .status
            .as_ref()
            .and_then(|s| Condition::succeeded(&s.conditions))
            .cloned()
            .unwrap_or_default();
        let _ = self.w.progress.send(Progress::Finished {
            task: self.task.clone(),
            task_run: self.name.clone(),
            status: c.status,
            reason: c.reason.unwrap_or_default(),
            message: c.message.unwrap_or_default(),
        });
        self.tr
    }

    /// Waits for a container to end, a cancel, the sidecars, or the timeout.
    fn wait(&mut self, requeue_after: Option<Duration>, again: bool) {
        let mut wait = requeue_after.unwrap_or(Duration::from_secs(3600));
        if self.pod.as_ref().is_some_and(RunningPod::waits_for_ready) {
            wait = wait.min(Duration::from_millis(100));
        }
        if self.pod.is_some() {
            // A safety net: podman's own wait can miss a container removed
            // underneath it.
            wait = wait.min(Duration::from_secs(2));
        }
        if let Some(due) = self.save_due_in() {
            wait = wait.min(due);
        }
        if requeue_after == Some(Duration::ZERO) || again {
            wait = Duration::ZERO;
        }
        if let Ok(Work::Cancel(message)) = self.w.inbox.recv_timeout(wait) {
            self.tr.spec.status = Some("TaskRunCancelled".into());
            self.tr.spec.status_message = Some(message);
        }
    }

    /// Observes the pod for the next plan; a retry's pod is a new one.
    fn observe(&mut self) {
        if self.pod.is_some()
            && self
                .tr
                .status
                .as_ref()
                .is_some_and(|s| s.pod_name.is_none())
        {
            if let Some(p) = self.pod.take() {
                p.finish(self.w.opts.keep);
            }
            self.observed = None;
            return;
        }
        if let Some(p) = self.pod.as_mut() {
            match p.observe() {
                Ok(o) => self.observed = Some(o),
                Err(e) => {
                    fail(
                        &mut self.tr,
                        "TaskRunObservationFailed",
                        format!("cannot observe the pod: {e}"),
                    );
                    let _ = self.w.store.save_task_run(&self.tr);
                }
            }
        }
    }
}

/// Runs one TaskRun to its end in this thread; its inbox receives
/// cancels. Returns the final TaskRun.
fn task_worker(tr: TaskRun, source: TaskSource, w: Worker) -> TaskRun {
    let name = tr.metadata.name.clone().unwrap_or_default();
    let task = task_label(&tr);
    // Runtime signals (container output, changes) come through a channel
    // of their own; lines go straight to the user.
    let (signals, sig_rx) = mpsc::sync_channel::<Signal>(crate::logs::CHANNEL_BOUND);
    forward_signals(sig_rx, task.clone(), w.progress.clone(), w.inbox_tx.clone());
    let mut run = TaskRunLoop {
        tr,
        source,
        w,
        name,
        task,
        images: BTreeMap::new(),
        pod: None,
        observed: None,
        started: false,
        signals,
        unsaved: false,
        saved: None,
    };
    loop {
        let plan = run.plan();
        let again = run.apply(&plan);
        let done = run
            .tr
            .status
            .as_ref()
            .is_some_and(|s| is_done(&s.conditions));
        let _ = run.w.parent.send(Msg::Child {
            tr: Box::new(run.tr.clone()),
            done,
        });
        if done {
            return run.finish();
        }
        run.wait(plan.requeue_after, again);
        run.observe();
    }
}

/// A run of one TaskRun, or of a PipelineRun's children.
pub struct Runner {
    opts: Options,
    store: Store,
    progress: SyncSender<Progress>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("opts", &self.opts).finish()
    }
}

impl Runner {
    pub fn new(opts: Options, store: Store, progress: SyncSender<Progress>) -> Runner {
        let (tx, rx) = mpsc::channel();
        Runner {
            opts,
            store,
            progress,
            tx,
            rx,
        }
    }

    /// A handle that interrupts the run (send [`Msg::Interrupt`]).
    pub fn interrupter(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    /// Whether another command asked for this run to be cancelled.
    fn cancel_requested(&self) -> bool {
        self.cancel_request().is_some()
    }

    /// How another command asked for this run to be cancelled (a
    /// PipelineRun's `spec.status`), if it did.
    fn cancel_request(&self) -> Option<String> {
        self.opts.journal.as_ref().and_then(|j| j.cancel_request())
    }

    fn spawn_worker(&self, tr: TaskRun, source: TaskSource) -> WorkerHandle {
        let (wtx, wrx) = mpsc::channel();
        let (opts, store, progress, parent, inbox_tx) = (
            self.opts.clone(),
            self.store.clone(),
            self.progress.clone(),
            self.tx.clone(),
            wtx.clone(),
        );
        let worker = Worker {
            opts,
            store,
            progress,
            parent,
            inbox: wrx,
            inbox_tx,
        };
        let h = std::thread::spawn(move || task_worker(tr, source, worker));
        (wtx, h)
    }

    /// Records a new child TaskRun under a name of its own: Tekton's name
    /// when free, else that name with a random suffix (two runs' children
    /// can have the same name: `a` + task `b-c` and `a-b` + task `c`; a
    /// cluster would refuse the second create, here it gets another name).
    fn claim_child(&self, tr: &mut TaskRun) {
        let base = tr.metadata.name.clone().unwrap_or_default();
        for _ in 0..16 {
            match self.store.claim_task_run(tr) {
                Ok(true) | Err(_) => return,
                Ok(false) => {
                    tr.metadata.name = Some(tektite_engine::names::child(
                        &base,
                        &format!("-{}", crate::store::random_suffix()),
                    ));
                }
            }
        }
    }

    /// Runs a TaskRun to its end; an interrupt cancels it.
    pub fn run_task(&self, tr: TaskRun, source: TaskSource) -> TaskRun {
        let _ = self.store.save_task_run(&tr);
        let (worker, handle) = self.spawn_worker(tr.clone(), source);
        let mut cancel_sent = false;
        loop {
            if !cancel_sent && self.cancel_requested() {
                cancel_sent = true;
                let _ = worker.send(Work::Cancel(format!("TaskRun {CANCEL_REQUESTED}")));
            }
            // A worker that died (a bug) sends no last message: its handle says so.
            match self.rx.recv_timeout(CANCEL_POLL) {
                Ok(Msg::Interrupt) => {
                    let _ = worker.send(Work::Cancel(
                        "TaskRun cancelled: tkt was interrupted.".into(),
                    ));
                }
                Ok(Msg::Child { done: true, .. }) => break,
                Ok(Msg::Child { .. }) | Err(RecvTimeoutError::Timeout) => {
                    if handle.is_finished() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        handle.join().unwrap_or(tr)
    }

    /// Runs a PipelineRun to its end; an interrupt cancels it (as
    /// `spec.status: Cancelled`). Returns the final run and its TaskRuns.
    pub fn run_pipeline(
        &self,
        mut pr: PipelineRun,
        pipeline: Result<(&PipelineSpec, Option<&str>), &tektite_engine::params::Failure>,
        tasks: &BTreeMap<String, TaskSpec>,
    ) -> (PipelineRun, Vec<TaskRun>) {
        let mut kids = Children::default();
        let _ = self.store.save_pipeline_run(&pr);
        loop {
            let plan = pipelinerun::reconcile(
                pipelinerun::Observed {
                    run: &pr,
                    pipeline,
                    tasks,
                    children: &kids.all,
                    now: Timestamp::now(),
                },
                &self.opts.config,
            );
            if let Some(st) = plan.status {
                self.report_skipped(&st, &mut kids.skipped_seen);
                pr.status = Some(st);
                let _ = self.store.save_pipeline_run(&pr);
            }
            for mut tr in plan.create {
                self.claim_child(&mut tr);
                kids.all.push(tr.clone());
                kids.queue.push_back(tr);
            }
            for (name, message) in plan.cancel {
                kids.cancel(&name, &message);
            }
            self.start_workers(&mut kids, tasks);
            let done = pr.status.as_ref().is_some_and(|s| is_done(&s.conditions));
            if done && kids.all_finished() {
                break;
            }
            self.reap_workers(&mut kids);
            let mut wait = plan.requeue_after.unwrap_or(Duration::from_secs(3600));
            if kids.any_running() {
                wait = wait.min(Duration::from_secs(1));
            }
            wait = wait.min(CANCEL_POLL);
            // A graceful cancel may be followed by a hard one, as on a
            // cluster `spec.status` may go on to `Cancelled`.
            let current = pr.spec.status.as_deref();
            let request = self
                .cancel_request()
                .filter(|how| current.is_none() || (how == "Cancelled" && current != Some(how)));
            let msg = match request {
                Some(how) if how == "Cancelled" => Ok(Msg::Interrupt),
                Some(graceful) => {
                    // CancelledRunFinally or StoppedRunFinally: the engine
                    // stops (or lets finish) the tasks and runs finally.
                    pr.spec.status = Some(graceful);
                    continue;
                }
                None => self.rx.recv_timeout(wait),
            };
            match msg {
                Ok(Msg::Interrupt) => {
                    pr.spec.status = Some("Cancelled".into());
                    kids.cancel_all(pipelinerun::CANCELLED_MESSAGE);
                }
                Ok(Msg::Child { tr, .. }) => kids.update(*tr),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
        }
        (pr, kids.into_finals())
    }

    /// Tells the user, once each, of the pipeline tasks the run skipped.
    fn report_skipped(&self, st: &tektite_api::v1::PipelineRunStatus, seen: &mut Vec<String>) {
        for s in &st.skipped_tasks {
            if !seen.contains(&s.name) {
                seen.push(s.name.clone());
                let _ = self.progress.send(Progress::Skipped {
                    task: s.name.clone(),
                    reason: s.reason.clone(),
                });
            }
        }
    }

    /// Starts queued TaskRuns while fewer than `parallel` workers run.
    fn start_workers(&self, kids: &mut Children, tasks: &BTreeMap<String, TaskSpec>) {
        let running = kids.workers.keys().filter(|k| !kids.finished.contains(*k));
        for _ in running.count()..self.opts.parallel.max(1) {
            let Some(tr) = kids.queue.pop_front() else {
                break;
            };
            let name = tr.metadata.name.clone().unwrap_or_default();
            let source = TaskSource::of_child(&tr, tasks, &self.opts.step_actions);
            let mut tr = tr;
            if let Some(src) = tr
                .spec
                .task_ref
                .as_ref()
                .and_then(tektite_engine::remote::task_ref_key)
                .and_then(|k| self.opts.sources.get(&k))
            {
                let st = tr.status.get_or_insert_with(Default::default);
                tektite_engine::status::record_source(&mut st.provenance, src.clone());
            }
            let w = self.spawn_worker(tr, source);
            kids.workers.insert(name, w);
        }
    }

    /// Joins the workers whose thread has ended: the TaskRun a worker returns
    /// is the last word (its last message may still be queued). A worker that
    /// died (a bug) returns none: its TaskRun is marked failed.
    fn reap_workers(&self, kids: &mut Children) {
        let ended: Vec<String> = kids
            .workers
            .iter()
            .filter(|(n, (_, h))| h.is_finished() && !kids.joined.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in ended {
            let Some((_, h)) = kids.workers.remove(&name) else {
                continue;
            };
            let Some(c) = kids.find(&name) else {
                continue;
            };
            match h.join() {
                Ok(tr) => *c = tr,
                Err(_) => {
                    let st = c.status.get_or_insert_with(Default::default);
                    set_condition(
                        &mut st.conditions,
                        condition(
                            "False",
                            "Failed",
                            "the local runner stopped running this TaskRun unexpectedly",
                            Timestamp::now(),
                        ),
                    );
                    let _ = self.store.save_task_run(c);
                }
            }
            let c = c.clone();
            kids.finished.insert(name.clone());
            kids.joined.insert(name, c);
        }
    }
}

/// A worker thread running one TaskRun, and how to tell it to cancel.
type WorkerHandle = (Sender<Work>, std::thread::JoinHandle<TaskRun>);

/// The TaskRuns of one PipelineRun as [`Runner::run_pipeline`] drives them:
/// every one created, those queued for a free worker, those running, those
/// ended.
#[derive(Debug, Default)]
struct Children {
    /// Every child, as last seen (what the pipeline planner observes).
    all: Vec<TaskRun>,
    /// Created, waiting for a free worker.
    queue: VecDeque<TaskRun>,
    workers: BTreeMap<String, WorkerHandle>,
    /// Children whose run has ended.
    finished: BTreeSet<String>,
    /// Children whose worker thread was joined, with the TaskRun it returned.
    joined: BTreeMap<String, TaskRun>,
    /// Skipped pipeline tasks already reported.
    skipped_seen: Vec<String>,
}

impl Children {
    fn find(&mut self, name: &str) -> Option<&mut TaskRun> {
        self.all
            .iter_mut()
            .find(|c| c.metadata.name.as_deref() == Some(name))
    }

    /// Cancels one child wherever it is: as seen, queued, or running.
    fn cancel(&mut self, name: &str, message: &str) {
        let named = |c: &&mut TaskRun| c.metadata.name.as_deref() == Some(name);
        let seen = self.all.iter_mut().find(named);
        let queued = self.queue.iter_mut().find(named);
        for c in [seen, queued].into_iter().flatten() {
            c.spec.status = Some("TaskRunCancelled".into());
            c.spec.status_message = Some(message.to_string());
        }
        if let Some((w, _)) = self.workers.get(name) {
            let _ = w.send(Work::Cancel(message.to_string()));
        }
    }

    /// Cancels every running and queued child (the run was interrupted).
    fn cancel_all(&mut self, message: &str) {
        for (name, (w, _)) in &self.workers {
            if !self.finished.contains(name) {
                let _ = w.send(Work::Cancel(message.into()));
            }
        }
        for q in self.queue.iter_mut() {
            q.spec.status = Some("TaskRunCancelled".into());
            q.spec.status_message = Some(message.into());
        }
    }

    /// A worker's news of its TaskRun; a cancel the run asked for is kept.
    fn update(&mut self, tr: TaskRun) {
        let name = tr.metadata.name.clone().unwrap_or_default();
        let ended = tr.status.as_ref().is_some_and(|s| is_done(&s.conditions));
        if let Some(c) = self.find(&name) {
            let (status, message) = (c.spec.status.clone(), c.spec.status_message.clone());
            *c = tr;
            if c.spec.status.is_none() {
                c.spec.status = status;
                c.spec.status_message = message;
            }
        }
        if ended {
            self.finished.insert(name);
        }
    }

    fn any_running(&self) -> bool {
        self.workers.keys().any(|k| !self.finished.contains(k))
    }

    fn all_finished(&self) -> bool {
        !self.any_running() && self.queue.is_empty()
    }

    /// The final TaskRuns, by name: those joined, then the rest as their
    /// workers return them.
    fn into_finals(self) -> Vec<TaskRun> {
        let mut finals: Vec<TaskRun> = self.joined.into_values().collect();
        for (_, (_, h)) in self.workers {
            if let Ok(tr) = h.join() {
                finals.push(tr);
            }
        }
        finals.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        finals
    }
}
