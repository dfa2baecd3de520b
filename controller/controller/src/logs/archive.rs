//! The archiver: follows the log of every step and sidecar container of
//! every TaskRun's pod through the API server (`pods/log?follow=true`)
//! and writes it to the [`LogStore`] as it comes, a part at least every
//! [`Settings::flush_every`].
//!
//! A container is followed from the moment its status says it started; its
//! log is sealed when its status says it ended and the whole log has been
//! read, or when its pod is gone. A follower resumes from the archive: it
//! reads the log from the start again and skips the bytes the parts already
//! hold, so a restarted controller, or a new leader, neither loses nor
//! repeats a byte of a pod that still exists.
//!
//! A pod counts only when its controller owner is the TaskRun its label
//! names, with the uid the controller's cache holds: a step cannot file its
//! log under another run.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tektite_api::v1::TaskRun;

use super::store::{LogStore, PodId, Progress, RunKey};
use crate::metrics::Metrics;

/// How the archiver writes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bytes of a container's log kept; the rest is counted, not kept, and
    /// the sealed log ends with a line saying how much was left out.
    pub max_bytes: u64,
    /// The longest a byte read waits before it is written to the store:
    /// what a pod deleted while the controller is down can lose.
    pub flush_every: Duration,
    /// A part is written once this many bytes wait.
    pub flush_bytes: usize,
    /// How long logs are kept after their last line; `None`: until their
    /// run is deleted.
    pub keep: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_bytes: 64 * 1024 * 1024,
            flush_every: Duration::from_secs(2),
            flush_bytes: 256 * 1024,
            keep: None,
        }
    }
}

/// The archiver's parts: where it reads (the API server), where it writes,
/// what it knows of TaskRuns (the controller's cache) and what it counts.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // the metrics are not Debug
pub struct Archiver {
    client: Client,
    store: LogStore,
    task_runs: Store<TaskRun>,
    settings: Arc<RwLock<Settings>>,
    metrics: Arc<Metrics>,
    /// Store calls made at once, by all followers: a directory store runs
    /// each on a thread of its own, and a thread per container (all of
    /// them flushing at about the same moment) costs far more memory
    /// than the bytes written.
    io: Arc<tokio::sync::Semaphore>,
}

/// Store calls the followers make at once.
const STORE_CALLS: usize = 8;

/// A container of a pod.
type Followed = (String, String);

/// Failures in a row after which an ended container's log is sealed as it
/// is (with a note).
const GIVE_UP: u32 = 8;

impl Archiver {
    pub fn new(
        client: Client,
        store: LogStore,
        task_runs: Store<TaskRun>,
        settings: Arc<RwLock<Settings>>,
        metrics: Arc<Metrics>,
    ) -> Archiver {
        Archiver {
            client,
            store,
            task_runs,
            settings,
            metrics,
            io: Arc::new(tokio::sync::Semaphore::new(STORE_CALLS)),
        }
    }

    /// Waits for a turn to call the store.
    async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.io.acquire().await.ok()
    }

    /// Watches TaskRuns' pods and follows their containers until the
    /// process ends. Waits for the caches first (`synced` true): a pod is
    /// filed under the TaskRun the cache holds.
    pub async fn run(self, mut synced: tokio::sync::watch::Receiver<bool>) {
        let _ = synced.wait_for(|s| *s).await;
        let pods = watcher(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default().labels("tekton.dev/taskRun"),
        )
        .default_backoff();
        futures::pin_mut!(pods);
        tracing::info!("log archive: following the logs of TaskRuns' pods");
        let mut following: HashMap<Followed, tokio::task::JoinHandle<()>> = HashMap::new();
        // Containers whose follower ended (sealed, or their pod gone): not
        // followed again while their pod exists. Pods deleted are
        // forgotten; so are those a re-list no longer shows (a deletion
        // missed while the watch was down).
        let mut done: HashSet<Followed> = HashSet::new();
        let mut deleted: HashSet<String> = HashSet::new();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = pods.next().await {
            following.retain(|k, task| {
                let finished = task.is_finished();
                if finished && !deleted.contains(&k.0) {
                    done.insert(k.clone());
                }
                !finished
            });
            match event {
                Ok(watcher::Event::Apply(pod)) => {
                    for (key, task) in self.start(&pod, &following, &done) {
                        following.insert(key, task);
                    }
                }
                Ok(watcher::Event::InitApply(pod)) => {
                    listed.extend(pod.uid());
                    for (key, task) in self.start(&pod, &following, &done) {
                        following.insert(key, task);
                    }
                }
                Ok(watcher::Event::Delete(pod)) => {
                    let uid = pod.uid().unwrap_or_default();
                    done.retain(|(p, _)| *p != uid);
                    deleted.insert(uid);
                }
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitDone) => {
                    done.retain(|(p, _)| listed.contains(p));
                    deleted.retain(|p| following.keys().any(|(f, _)| f == p));
                }
                Err(error) => tracing::warn!(%error, "log archive: pod watch"),
            }
            self.metrics.set_logs_followed(following.len());
        }
    }

    /// Starts a follower for each container of `pod` that has started and
    /// is neither followed nor done.
    fn start(
        &self,
        pod: &Pod,
        following: &HashMap<Followed, tokio::task::JoinHandle<()>>,
        done: &HashSet<Followed>,
    ) -> Vec<(Followed, tokio::task::JoinHandle<()>)> {
        let Some(run) = self.run_of(pod) else {
            return Vec::new();
        };
        let (Some(pod_uid), Some(ns)) = (pod.uid(), pod.namespace()) else {
            return Vec::new();
        };
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for status in statuses {
            let started = status
                .state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some());
            let key = (pod_uid.clone(), status.name.clone());
            if !started || following.contains_key(&key) || done.contains(&key) {
                continue;
            }
            let follower = Follower {
                archiver: self.clone(),
                pods: Api::namespaced(self.client.clone(), &ns),
                pod: PodId {
                    name: pod.name_any(),
                    uid: pod_uid.clone(),
                },
                container: status.name.clone(),
                run: run.clone(),
            };
            out.push((key, tokio::spawn(follower.run())));
        }
        out
    }

    /// Where `pod`'s logs go: its TaskRun (by label, checked against the
    /// pod's controller owner and the cache) and that TaskRun's
    /// PipelineRun owner.
    fn run_of(&self, pod: &Pod) -> Option<RunKey> {
        let ns = pod.namespace()?;
        let name = pod.labels().get("tekton.dev/taskRun")?;
        let tr = self
            .task_runs
            .get(&ObjectRef::<TaskRun>::new(name).within(&ns))?;
        crate::is_controlled_by(&pod.metadata, tr.metadata.uid.as_deref())
            .then(|| RunKey::of(&tr))
            .flatten()
    }
}

/// One container's log on its way to the store.
struct Follower {
    archiver: Archiver,
    pods: Api<Pod>,
    pod: PodId,
    container: String,
    run: RunKey,
}

/// What a follower has read of a log and not yet written.
struct Pending {
    /// Offset in the log of `buf`'s first byte (= bytes archived).
    start: u64,
    buf: Vec<u8>,
    /// When the oldest byte of `buf` was read.
    since: Option<Instant>,
    /// Bytes past the size cap: counted, not kept.
    dropped: u64,
    /// A whole read of the log was shorter than what was taken before.
    shorter: bool,
}

impl Pending {
    /// Bytes of the log seen so far (archived, waiting, or dropped).
    fn seen(&self) -> u64 {
        self.start + self.buf.len() as u64 + self.dropped
    }

    /// Takes in `data`, the log from offset `at`: the bytes before
    /// [`Self::seen`] were taken already (a stream opened again starts
    /// from the beginning), those past `cap` are only counted.
    fn take(&mut self, at: u64, data: &[u8], cap: u64) {
        let end = at + data.len() as u64;
        let seen = self.seen();
        if end <= seen {
            return;
        }
        let new = &data[usize::try_from(seen.saturating_sub(at)).unwrap_or(data.len())..];
        let kept = self.start + self.buf.len() as u64;
        let room = usize::try_from(cap.saturating_sub(kept)).unwrap_or(usize::MAX);
        let keep = new.len().min(room);
        if keep > 0 && self.since.is_none() {
            self.since = Some(Instant::now());
        }
        self.buf.extend_from_slice(&new[..keep]);
        self.dropped += (new.len() - keep) as u64;
    }
}

/// How a log stream ended.
enum Ended {
    /// The container ended (or its pod is gone): seal.
    Container,
    /// The stream ended while the container runs: open it again.
    Stream,
}

impl Follower {
    /// Follows until the log is sealed, retrying after failures (a failed
    /// write leaves its bytes in the pod: the next attempt reads them again).
    async fn run(self) {
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u32;
        loop {
            match self.follow().await {
                Ok(()) => return,
                Err(error) => {
                    self.archiver.metrics.log_archive_failed();
                    failures += 1;
                    tracing::warn!(
                        %error,
                        pod = %self.pod.name,
                        container = %self.container,
                        failures,
                        "log archive: retrying"
                    );
                    // A container that has ended (or a pod gone) whose log
                    // still cannot be read: sealed as it is, saying so.
                    let ended = !matches!(self.container_ended().await, Ok(Some(false)));
                    if failures >= GIVE_UP && ended {
                        let note = format!(
                            "\n[tektite: the rest of this log could not be read: {error:#}]\n"
                        );
                        let _turn = self.archiver.turn().await;
                        let sealed = self
                            .archiver
                            .store
                            .seal(&self.run, &self.pod, &self.container, note.as_bytes())
                            .await;
                        if sealed.is_ok() {
                            return;
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn settings(&self) -> Settings {
        self.archiver
            .settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    async fn follow(&self) -> anyhow::Result<()> {
        let store = &self.archiver.store;
        let progress = {
            let _turn = self.archiver.turn().await;
            store
                .progress(&self.run, &self.pod, &self.container)
                .await?
        };
        let start = match progress {
            Progress::Sealed => return Ok(()),
            Progress::Open(n) => n,
        };
        let mut pending = Pending {
            start,
            buf: Vec::new(),
            since: None,
            dropped: 0,
            shorter: false,
        };
        loop {
            let ended = self.read_stream(&mut pending).await?;
            self.flush(&mut pending).await?;
            if let Ended::Container = ended {
                let mut trailer = String::new();
                if pending.dropped > 0 {
                    trailer += &format!(
                        "\n[tektite: the archive keeps the first {} bytes of a container's log: {} more bytes were not kept]\n",
                        pending.start, pending.dropped
                    );
                } else if pending.start >= self.settings().max_bytes {
                    // At the cap, and the rest could not be counted (a
                    // follower that came back once its pod was gone).
                    trailer += &format!(
                        "\n[tektite: the archive keeps the first {} bytes of a container's log: what came after was not kept]\n",
                        pending.start
                    );
                }
                if pending.shorter {
                    trailer += "\n[tektite: the kubelet rotated this log while it was archived: a part of it may be missing]\n";
                }
                let _turn = self.archiver.turn().await;
                store
                    .seal(&self.run, &self.pod, &self.container, trailer.as_bytes())
                    .await?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads the log from its start, taking what is new into `pending`
    /// and writing parts as they fill or age, until the stream ends.
    async fn read_stream(&self, pending: &mut Pending) -> anyhow::Result<Ended> {
        let ended_before = self.container_ended().await?;
        let Some(ended_before) = ended_before else {
            return Ok(Ended::Container); // the pod is gone
        };
        let params = LogParams {
            container: Some(self.container.clone()),
            follow: !ended_before,
            ..LogParams::default()
        };
        let mut stream = match self.pods.log_stream(&self.pod.name, &params).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Ended::Container),
            Err(e) => return Err(e.into()),
        };
        let settings = self.settings();
        let mut at = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let deadline = pending.since.map(|t| t + settings.flush_every);
            let n = tokio::select! {
                n = stream.read(&mut chunk) => n,
                () = sleep_until(deadline) => {
                    self.flush(pending).await?;
                    continue;
                }
            };
            let n = match n {
                Ok(0) => break,
                Ok(n) => n,
                // A followed stream cut: opened again. A whole read that
                // fails is not the log's end: retried.
                Err(_) if !ended_before => break,
                Err(e) => return Err(e.into()),
            };
            pending.take(at, &chunk[..n], settings.max_bytes);
            at += n as u64;
            if pending.buf.len() >= settings.flush_bytes {
                self.flush(pending).await?;
            }
        }
        // The whole log, shorter than what was taken already: the kubelet
        // rotated it (it serves its last file only).
        if ended_before && at < pending.seen() {
            pending.shorter = true;
        }
        // A stream of an ended container is its whole log; one followed
        // while it ran may have been cut: read once more after the end.
        Ok(if ended_before {
            Ended::Container
        } else {
            Ended::Stream
        })
    }

    /// Whether the container has ended; `None` when the pod is gone (or
    /// is another one now, made again under its name).
    async fn container_ended(&self) -> anyhow::Result<Option<bool>> {
        let pod = self.pods.get_opt(&self.pod.name).await?;
        let Some(pod) = pod.filter(|p| p.uid().as_deref() == Some(self.pod.uid.as_str())) else {
            return Ok(None);
        };
        Ok(Some(
            pod.status
                .and_then(|s| s.container_statuses)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.name == self.container && c.state.is_some_and(|s| s.terminated.is_some())
                }),
        ))
    }

    /// Writes what waits as one part.
    async fn flush(&self, pending: &mut Pending) -> anyhow::Result<()> {
        let Some(since) = pending.since else {
            return Ok(());
        };
        let _turn = self.archiver.turn().await;
        self.archiver
            .store
            .append(
                &self.run,
                &self.pod,
                &self.container,
                pending.start,
                &pending.buf,
            )
            .await?;
        let n = pending.buf.len();
        self.archiver.metrics.logs_archived(n, since.elapsed());
        pending.start += n as u64;
        pending.buf.clear();
        pending.since = None;
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            start: 0,
            buf: Vec::new(),
            since: None,
            dropped: 0,
            shorter: false,
        }
    }

    #[test]
    fn a_stream_read_again_adds_only_what_is_new() {
        let mut p = pending();
        p.take(0, b"one\ntwo\n", 100);
        // The stream is opened again: it starts from the beginning.
        p.take(0, b"one\n", 100);
        p.take(4, b"two\nthree\n", 100);
        assert_eq!(p.buf, b"one\ntwo\nthree\n");
        assert_eq!(p.seen(), 14);
    }

    #[test]
    fn a_follower_resuming_from_the_archive_skips_what_it_holds() {
        let mut p = Pending {
            start: 4,
            ..pending()
        };
        p.take(0, b"one\ntwo\n", 100);
        assert_eq!(p.buf, b"two\n");
    }

    #[test]
    fn bytes_past_the_cap_are_counted_not_kept() {
        let mut p = pending();
        p.take(0, b"0123456789", 4);
        p.take(10, b"abc", 4);
        assert_eq!(p.buf, b"0123");
        assert_eq!(p.dropped, 9);
        assert_eq!(p.seen(), 13);
        // Read again after a restart: nothing is counted twice.
        p.take(0, b"0123456789abc", 4);
        assert_eq!(p.dropped, 9);
    }
}
