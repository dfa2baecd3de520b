//! Concurrency control for local runs: `tkt run` invocations that share a
//! run store honour the same annotations as the controller
//! (`tektite.dev/concurrency-key`, `…-limit`, `…-strategy`,
//! `tektite.dev/priority`), with the engine's decision
//! (`tektite_engine::concurrency`).
//!
//! The queue is the store: a run's settings are in its record from its
//! claim, and it holds a place from `status.concurrency.admittedTime`
//! (written before it starts anything) until it is done. Only runs whose
//! `tkt` is alive count (those with a live journal): a `tkt` killed with
//! its run frees the place at once. Decisions are taken one at a time
//! under an exclusive lock on `live/queue.lock` (released by the kernel
//! whatever happens to the `tkt` holding it).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{PipelineRun, PipelineSpec};
use tektite_engine::concurrency::{self, Verdict};
use tektite_engine::pod::Config;
use tektite_engine::status::is_done;
use tektite_local::live::{self, Journal};
use tektite_local::store::{RunKind, Store};

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(250);

/// How a wait for a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing to wait for, or admitted: run it.
    Go,
    /// Cancelled while waiting (Ctrl-C, `tkt pr cancel`, or a newer run of
    /// a `cancel-in-progress` key): its `spec.status` now says so.
    Cancelled,
    /// Its timeout passed while it waited: its status says so (it has
    /// ended, and is recorded).
    TimedOut,
}

/// The run's settings from its and its Pipeline's annotations, with its
/// name as claimed (recorded in its status); `Err` names the field.
///
/// # Errors
/// The annotations are invalid.
pub fn settle(
    pr: &mut PipelineRun,
    pipeline: (&PipelineSpec, Option<&str>),
    annotations: &BTreeMap<String, String>,
) -> Result<(), String> {
    let found = tektite_engine::pipelinerun::concurrency_settings(
        pr,
        pipeline,
        annotations,
        (None, Timestamp::now()),
    )
    .map_err(|f| f.message)?;
    if let Some(s) = found {
        pr.status.get_or_insert_with(Default::default).concurrency = Some(s);
    }
    Ok(())
}

/// The store's queue lock, held until dropped.
struct Locked(File);

impl Locked {
    fn take(store: &Store) -> anyhow::Result<Locked> {
        let dir = store.root().join(live::LIVE);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("queue.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        f.lock()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Locked(f))
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The runs of the store in namespace `ns` being carried out by a live
/// `tkt`, not done.
fn live_runs(store: &Store, ns: Option<&str>) -> Vec<PipelineRun> {
    let mut out = Vec::new();
    for path in live::journals(store) {
        let Some(l) = live::read(&path) else { continue };
        if l.kind != RunKind::PipelineRun || !l.owner.alive() {
            continue;
        }
        if let Ok(Some(pr)) = store.pipeline_run(&l.name)
            && pr.metadata.namespace.as_deref() == ns
            && !pr.status.as_ref().is_some_and(|s| is_done(&s.conditions))
        {
            out.push(pr);
        }
    }
    out
}

/// Waits until the run may start: at once when it has no settings; else
/// until the decision over the store's live runs admits it (its record
/// then says when), saying what it waits for each time that changes.
/// `stop` says whether the user interrupted; a cancel request (`tkt pr
/// cancel`, a newer run) is read from the run's journal.
///
/// # Errors
/// The store cannot be written.
pub fn wait_turn(
    (store, config): (&Store, &Config),
    pr: &mut PipelineRun,
    journal: &Journal,
    stop: &dyn Fn() -> bool,
    say: &dyn Fn(&str),
) -> anyhow::Result<Turn> {
    if pr
        .status
        .as_ref()
        .and_then(|s| s.concurrency.as_ref())
        .is_none()
    {
        return Ok(Turn::Go);
    }
    let name = pr.metadata.name.clone().unwrap_or_default();
    let mut said = String::new();
    loop {
        if stop() || journal.cancel_request().is_some() {
            pr.spec.status = Some("Cancelled".into());
            return Ok(Turn::Cancelled);
        }
        {
            let _lock = Locked::take(store)?;
            let runs = live_runs(store, pr.metadata.namespace.as_deref());
            let verdict = concurrency::decide_run(&runs, pr, None);
            request_cancels(store, &verdict);
            if verdict.admit.contains(&name) {
                concurrency::admit(pr, Timestamp::now());
                store.save_pipeline_run(pr)?;
                return Ok(Turn::Go);
            }
            if let Some(w) = verdict.wait.get(&name) {
                // The queued condition, or the end of a run whose timeout
                // passed while it waited.
                let plan = tektite_engine::pipelinerun::queued(pr, w, config, Timestamp::now());
                if let Some(st) = plan.status {
                    let ended = is_done(&st.conditions);
                    pr.status = Some(st);
                    store.save_pipeline_run(pr)?;
                    if ended {
                        return Ok(Turn::TimedOut);
                    }
                }
                let message = w.message();
                if message != said {
                    say(&format!("pipelinerun {name} {message}"));
                    said = message;
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Asks the `tkt`s of the runs a newer run replaces to cancel them (each
/// sees it within a second; a request already made is made again, which
/// changes nothing).
fn request_cancels(store: &Store, verdict: &Verdict) {
    for (victim, how, by) in &verdict.cancel {
        let path = live::journal_path(store, RunKind::PipelineRun, victim).with_extension("cancel");
        if path.exists() {
            continue;
        }
        if live::request_cancel_as(store, RunKind::PipelineRun, victim, how).is_ok() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "tkt: pipelinerun {victim}: {}",
                concurrency::superseded_message(by)
            );
        }
    }
}
