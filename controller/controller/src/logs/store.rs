//! The log archive: what every step and sidecar printed, kept after its
//! pod is gone, in an object store (a filesystem or an S3-compatible
//! bucket).
//!
//! Layout, beneath the store's prefix, one object per container once it
//! has ended:
//!
//! ```text
//! NAMESPACE/PIPELINERUN/OWNER-UID/TASKRUN/TASKRUN-UID/POD_POD-UID/CONTAINER.log.gz
//! ```
//!
//! `PIPELINERUN` is `-` for a TaskRun of its own, and `OWNER-UID` is then
//! the TaskRun's uid: the logs under `NAMESPACE/PIPELINERUN/OWNER-UID/` go
//! when that object goes, and a later run of the same name, with another
//! uid, never mixes in. `POD_POD-UID` tells a retry's containers from the
//! first attempt's, and a pod deleted and made again under its name from
//! the one before (`_` is in no Kubernetes name or uid). While a container runs its log is a series of
//! parts, `CONTAINER.parts/START-END.gz`, each the gzip of the log's bytes
//! `START..END` (offsets in the uncompressed log, 20 digits): the end of
//! the last part is where a restarted archiver resumes. Sealing writes the
//! parts' gzip members one after another as the one object (a file of
//! several gzip members is one valid gzip file) and then deletes the parts.
//!
//! Every key segment comes from a Kubernetes name or uid and is checked to
//! be one ([`segment`]): no `/`, no `.` or `..`, so a key never leaves its
//! prefix.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;

/// What the archive can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name or uid that is not a Kubernetes one (it would make a key
    /// outside the run's prefix).
    #[error("{what} {value:?} is not a Kubernetes name")]
    Name { what: &'static str, value: String },
    /// The object store failed.
    #[error("log store: {0}")]
    Store(#[from] object_store::Error),
    /// An archived object is not gzip.
    #[error("log store: {path}: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a TaskRun's logs are kept: its namespace, name and uid, and the
/// PipelineRun that owns it (name, uid), if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub namespace: String,
    pub pipelinerun: Option<(String, String)>,
    pub taskrun: String,
    pub taskrun_uid: String,
}

impl RunKey {
    /// Where the logs of `tr` go: its namespace, name and uid, and its
    /// controller owner if that is a PipelineRun. `None` for an object
    /// without a namespace, name or uid (never one from an API server).
    pub fn of(tr: &tektite_api::v1::TaskRun) -> Option<RunKey> {
        let m = &tr.metadata;
        let pipelinerun = m
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true) && o.kind == "PipelineRun")
            .map(|o| (o.name.clone(), o.uid.clone()));
        Some(RunKey {
            namespace: m.namespace.clone()?,
            pipelinerun,
            taskrun: m.name.clone()?,
            taskrun_uid: m.uid.clone()?,
        })
    }

    /// The segments of the owner's prefix: namespace, PipelineRun (or `-`)
    /// and the owner's uid.
    fn owner(&self) -> Result<[String; 3], Error> {
        let ns = segment("namespace", &self.namespace)?;
        Ok(match &self.pipelinerun {
            Some((name, uid)) => [ns, segment("pipelinerun", name)?, segment("uid", uid)?],
            None => [ns, "-".into(), segment("uid", &self.taskrun_uid)?],
        })
    }

    /// The prefix of the TaskRun's containers.
    fn prefix(&self) -> Result<Path, Error> {
        let [ns, pr, owner] = self.owner()?;
        Ok(Path::from_iter([
            ns,
            pr,
            owner,
            segment("taskrun", &self.taskrun)?,
            segment("uid", &self.taskrun_uid)?,
        ]))
    }
}

/// A pod of a TaskRun: its name and uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodId {
    pub name: String,
    pub uid: String,
}

impl PodId {
    fn segment(&self) -> Result<String, Error> {
        Ok(format!(
            "{}_{}",
            segment("pod", &self.name)?,
            segment("pod uid", &self.uid)?
        ))
    }
}

/// Checks that `value` can be a key segment: a Kubernetes name or uid (a
/// DNS-1123 subdomain, as `tektite_api` checks names: no `/`, no `.` or
/// `..` alone, no `_`).
///
/// # Errors
/// [`Error::Name`] naming `what`.
pub fn segment(what: &'static str, value: &str) -> Result<String, Error> {
    if tektite_api::validate::is_dns1123_subdomain(value) {
        Ok(value.to_string())
    } else {
        Err(Error::Name {
            what,
            value: value.chars().take(300).collect(),
        })
    }
}

/// One archived container of a TaskRun.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Archived {
    /// The pod it ran in (a retry runs in another), and that pod's uid.
    pub pod: String,
    pub pod_uid: String,
    /// When its log was last written, in milliseconds since 1970: the
    /// order of a pod's incarnations.
    pub updated_ms: u64,
    /// The container's name (`step-build`, `sidecar-db`).
    pub name: String,
    /// Whether the container ended and its log is sealed.
    pub complete: bool,
}

/// Where a container's log stands in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Sealed: nothing more is archived for it.
    Sealed,
    /// Open: this many bytes of its log are archived.
    Open(u64),
}

/// The archive over an object store.
#[derive(Debug, Clone)]
pub struct LogStore {
    objects: Arc<dyn ObjectStore>,
}

const SEALED: &str = ".log.gz";
const PARTS: &str = ".parts";

impl LogStore {
    /// An archive in `objects` (a prefix, if any, is the store's own:
    /// `object_store::prefix::PrefixStore`).
    pub fn new(objects: Arc<dyn ObjectStore>) -> LogStore {
        LogStore { objects }
    }

    fn sealed_path(run: &RunKey, pod: &PodId, container: &str) -> Result<Path, Error> {
        let c = segment("container", container)?;
        Ok(run
            .prefix()?
            .child(pod.segment()?)
            .child(format!("{c}{SEALED}")))
    }

    fn parts_path(run: &RunKey, pod: &PodId, container: &str) -> Result<Path, Error> {
        let c = segment("container", container)?;
        Ok(run
            .prefix()?
            .child(pod.segment()?)
            .child(format!("{c}{PARTS}")))
    }

    /// The parts of an open container, in order: (start, end, path).
    async fn parts(
        &self,
        run: &RunKey,
        pod: &PodId,
        container: &str,
    ) -> Result<Vec<(u64, u64, Path)>, Error> {
        let prefix = Self::parts_path(run, pod, container)?;
        let mut parts: Vec<(u64, u64, Path)> = self
            .objects
            .list(Some(&prefix))
            .try_filter_map(|meta| async move {
                let name = meta.location.filename().unwrap_or_default();
                Ok(part_range(name).map(|(s, e)| (s, e, meta.location.clone())))
            })
            .try_collect()
            .await?;
        parts.sort();
        Ok(parts)
    }

    /// Where `container`'s log stands: sealed, or how many of its bytes
    /// the parts hold (0 for a container never archived).
    ///
    /// # Errors
    /// A bad name, or the store fails.
    pub async fn progress(
        &self,
        run: &RunKey,
        pod: &PodId,
        container: &str,
    ) -> Result<Progress, Error> {
        match self
            .objects
            .head(&Self::sealed_path(run, pod, container)?)
            .await
        {
            Ok(_) => return Ok(Progress::Sealed),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let parts = self.parts(run, pod, container).await?;
        Ok(Progress::Open(contiguous_end(&parts)))
    }

    /// Archives `data`, the log's bytes from offset `start`, as one part.
    ///
    /// # Errors
    /// A bad name, or the store fails (the part is then not written: a
    /// store's put is atomic).
    pub async fn append(
        &self,
        run: &RunKey,
        pod: &PodId,
        container: &str,
        start: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = start + data.len() as u64;
        let path =
            Self::parts_path(run, pod, container)?.child(format!("{start:020}-{end:020}.gz"));
        self.objects.put(&path, gzip(data).into()).await?;
        Ok(())
    }

    /// Seals `container`'s log: its parts, then `trailer` (a truncation
    /// note, if any), become the one object, and the parts are deleted.
    /// Sealing a sealed log does nothing.
    ///
    /// # Errors
    /// A bad name, or the store fails (the parts then stay, and sealing
    /// again finishes the job).
    pub async fn seal(
        &self,
        run: &RunKey,
        pod: &PodId,
        container: &str,
        trailer: &[u8],
    ) -> Result<(), Error> {
        let sealed = Self::sealed_path(run, pod, container)?;
        let parts = self.parts(run, pod, container).await?;
        if parts.is_empty() && self.objects.head(&sealed).await.is_ok() {
            return Ok(());
        }
        // One part in memory at a time: a log up to SEAL_IN_ONE is put at
        // once, a longer one is uploaded in pieces as it is read.
        let mut small: Vec<u8> = Vec::new();
        let mut upload: Option<object_store::WriteMultipart> = None;
        let members = plan(&parts)
            .into_iter()
            .map(Some)
            .chain(std::iter::once(None));
        for member in members {
            let bytes = match member {
                Some((path, skip)) => self.member(&path, skip).await?,
                None if trailer.is_empty() => continue,
                None => gzip(trailer).into(),
            };
            match upload.as_mut() {
                Some(w) => {
                    w.wait_for_capacity(2).await?;
                    w.write(&bytes);
                }
                None => {
                    small.extend_from_slice(&bytes);
                    if small.len() > SEAL_IN_ONE {
                        let mut w = object_store::WriteMultipart::new(
                            self.objects.put_multipart(&sealed).await?,
                        );
                        w.write(&std::mem::take(&mut small));
                        upload = Some(w);
                    }
                }
            }
        }
        match upload {
            Some(w) => {
                w.finish().await?;
            }
            None => {
                self.objects.put(&sealed, small.into()).await?;
            }
        }
        for (_, _, path) in parts {
            match self.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A part as a gzip member of the log: as stored, or (when an earlier
    /// part holds its first `skip` bytes already) the rest of it.
    async fn member(&self, path: &Path, skip: u64) -> Result<bytes::Bytes, Error> {
        let got = self.objects.get(path).await?.bytes().await?;
        if skip == 0 {
            return Ok(got);
        }
        let text = gunzip(path, &got)?;
        let from = usize::try_from(skip).unwrap_or(usize::MAX).min(text.len());
        Ok(gzip(&text[from..]).into())
    }

    /// `container`'s archived log as gzip (members one after another), read
    /// as it is sent: the sealed object, or the parts so far; `None` when
    /// nothing of it is archived.
    ///
    /// # Errors
    /// A bad name, or the store fails (also later, in the stream).
    pub async fn gzip_stream(
        &self,
        run: &RunKey,
        pod: &PodId,
        container: &str,
    ) -> Result<Option<futures::stream::BoxStream<'static, Result<bytes::Bytes, Error>>>, Error>
    {
        let sealed = Self::sealed_path(run, pod, container)?;
        let whole = |got: object_store::GetResult| got.into_stream().map_err(Error::from).boxed();
        match self.objects.get(&sealed).await {
            Ok(got) => return Ok(Some(whole(got))),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let parts = self.parts(run, pod, container).await?;
        if parts.is_empty() {
            // Sealed between the two looks: the parts are gone.
            return match self.objects.get(&sealed).await {
                Ok(got) => Ok(Some(whole(got))),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let me = self.clone();
        let members = futures::stream::iter(plan(&parts))
            .then(move |(path, skip)| {
                let me = me.clone();
                async move { me.member(&path, skip).await }
            })
            .boxed();
        Ok(Some(members))
    }

    /// The containers archived for a TaskRun, by pod and name.
    ///
    /// # Errors
    /// A bad name, or the store fails.
    pub async fn containers(&self, run: &RunKey) -> Result<Vec<Archived>, Error> {
        let prefix = run.prefix()?;
        let objects: Vec<(Path, SystemTime)> = self
            .objects
            .list(Some(&prefix))
            .map_ok(|m| (m.location, SystemTime::from(m.last_modified)))
            .try_collect()
            .await?;
        let mut out: Vec<Archived> = Vec::new();
        for (path, modified) in &objects {
            let Some(rest) = path.prefix_match(&prefix) else {
                continue;
            };
            let rest: Vec<String> = rest.map(|p| p.as_ref().to_string()).collect();
            let (pod, name, complete) = match rest.as_slice() {
                [pod, file] => match file.strip_suffix(SEALED) {
                    Some(name) => (pod, name, true),
                    None => continue,
                },
                [pod, dir, _] => match dir.strip_suffix(PARTS) {
                    Some(name) => (pod, name, false),
                    None => continue,
                },
                _ => continue,
            };
            let Some((pod, pod_uid)) = pod.split_once('_') else {
                continue;
            };
            let ms = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let same = |a: &&mut Archived| a.pod_uid == pod_uid && a.name == name;
            match out.iter_mut().find(same) {
                Some(a) => {
                    a.complete |= complete;
                    a.updated_ms = a.updated_ms.max(ms);
                }
                None => out.push(Archived {
                    pod: pod.to_string(),
                    pod_uid: pod_uid.to_string(),
                    name: name.to_string(),
                    complete,
                    updated_ms: ms,
                }),
            }
        }
        // A pod's incarnations in the order their logs were last written.
        let first_write = |a: &Archived, all: &[Archived]| {
            all.iter()
                .filter(|b| b.pod_uid == a.pod_uid)
                .map(|b| b.updated_ms)
                .min()
                .unwrap_or(a.updated_ms)
        };
        let keys: Vec<(String, u64, String, String)> = out
            .iter()
            .map(|a| {
                (
                    a.pod.clone(),
                    first_write(a, &out),
                    a.pod_uid.clone(),
                    a.name.clone(),
                )
            })
            .collect();
        let mut keyed: Vec<_> = keys.into_iter().zip(out).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let out: Vec<Archived> = keyed.into_iter().map(|(_, a)| a).collect();
        Ok(out)
    }

    /// `container`'s archived log, uncompressed: the sealed object, or the
    /// parts so far; `None` when nothing of it is archived.
    ///
    /// # Errors
    /// A bad name, the store fails, or an object is not gzip.
    pub async fn read(
        &self,
        run: &RunKey,
        pod: &PodId,
        container: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        let Some(mut stream) = self.gzip_stream(run, pod, container).await? else {
            return Ok(None);
        };
        let mut gz = Vec::new();
        while let Some(chunk) = stream.try_next().await? {
            gz.extend_from_slice(&chunk);
        }
        let path = Self::sealed_path(run, pod, container)?;
        gunzip(&path, &gz).map(Some)
    }

    /// Deletes the logs of every owner (PipelineRun, or TaskRun of its
    /// own) that `live` says is gone, or whose last log was written more
    /// than `keep` ago. Owners written to within `grace` are kept (a run
    /// the caller's cache has not seen yet). Returns the owners deleted,
    /// as `namespace/pipelinerun/uid`.
    ///
    /// # Errors
    /// The store fails (what was deleted before stays deleted).
    pub async fn sweep(
        &self,
        live: &(dyn Fn(&str) -> bool + Sync),
        keep: Option<Duration>,
        grace: Duration,
    ) -> Result<Vec<String>, Error> {
        Ok(self.sweep_all(live, keep, grace).await?.deleted)
    }

    /// [`Self::sweep`], and the logs of the owners kept that are still
    /// open (parts, not sealed) and were not written to within `grace`:
    /// a pod deleted while no controller archived it leaves such a log,
    /// which nobody would seal (the caller checks its pod and seals it).
    ///
    /// # Errors
    /// The store fails (what was deleted before stays deleted).
    pub async fn sweep_all(
        &self,
        live: &(dyn Fn(&str) -> bool + Sync),
        keep: Option<Duration>,
        grace: Duration,
    ) -> Result<Swept, Error> {
        let now = SystemTime::now();
        let mut swept = Swept::default();
        for owner in self.owners().await? {
            let uid = owner.filename().unwrap_or_default().to_string();
            let objects: Vec<(Path, SystemTime)> = self
                .objects
                .list(Some(&owner))
                .map_ok(|m| (m.location, SystemTime::from(m.last_modified)))
                .try_collect()
                .await?;
            let age_of = |t: SystemTime| now.duration_since(t).unwrap_or_default();
            let age = objects
                .iter()
                .map(|(_, t)| age_of(*t))
                .min()
                .unwrap_or_default();
            let expired = keep.is_some_and(|k| age > k);
            if age < grace || (live(&uid) && !expired) {
                swept
                    .open
                    .extend(idle_open_logs(&owner, &objects, |t| age_of(t) >= grace));
                continue;
            }
            let paths = futures::stream::iter(
                objects
                    .into_iter()
                    .map(|(p, _)| Ok::<_, object_store::Error>(p)),
            )
            .boxed();
            self.objects
                .delete_stream(paths)
                .try_for_each(|_| async { Ok(()) })
                .await?;
            swept.deleted.push(owner.to_string());
        }
        Ok(swept)
    }

    /// Every owner prefix (`namespace/pipelinerun/uid`).
    async fn owners(&self) -> Result<Vec<Path>, Error> {
        let mut level = vec![None];
        for _ in 0..3 {
            let mut next = Vec::new();
            for p in &level {
                let listed = self.objects.list_with_delimiter(p.as_ref()).await?;
                next.extend(listed.common_prefixes.into_iter().map(Some));
            }
            level = next;
        }
        Ok(level.into_iter().flatten().collect())
    }
}

/// What a sweep did and found.
#[derive(Debug, Default)]
pub struct Swept {
    /// The owners whose logs were deleted (`namespace/pipelinerun/uid`).
    pub deleted: Vec<String>,
    /// Open logs no part was written to lately.
    pub open: Vec<OpenLog>,
}

/// A container's log that is not sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLog {
    pub run: RunKey,
    pub pod: PodId,
    pub container: String,
}

/// The open logs under `owner` (its objects listed) whose every part
/// `idle` says is old enough.
fn idle_open_logs(
    owner: &Path,
    objects: &[(Path, SystemTime)],
    idle: impl Fn(SystemTime) -> bool,
) -> Vec<OpenLog> {
    let mut out: Vec<(OpenLog, bool)> = Vec::new();
    for (path, t) in objects {
        let Some(rest) = path.prefix_match(owner) else {
            continue;
        };
        let rest: Vec<String> = rest.map(|p| p.as_ref().to_string()).collect();
        let [tr, tr_uid, pod, dir, _part] = rest.as_slice() else {
            continue;
        };
        let (Some(container), Some((pod, pod_uid))) =
            (dir.strip_suffix(PARTS), pod.split_once('_'))
        else {
            continue;
        };
        let parts: Vec<String> = owner.parts().map(|p| p.as_ref().to_string()).collect();
        let [ns, pr, owner_uid] = parts.as_slice() else {
            continue;
        };
        let log = OpenLog {
            run: RunKey {
                namespace: ns.clone(),
                pipelinerun: (pr != "-").then(|| (pr.clone(), owner_uid.clone())),
                taskrun: tr.clone(),
                taskrun_uid: tr_uid.clone(),
            },
            pod: PodId {
                name: pod.to_string(),
                uid: pod_uid.to_string(),
            },
            container: container.to_string(),
        };
        match out.iter_mut().find(|(l, _)| *l == log) {
            Some((_, old)) => *old &= idle(*t),
            None => out.push((log, idle(*t))),
        }
    }
    out.into_iter()
        .filter(|(_, idle)| *idle)
        .map(|(l, _)| l)
        .collect()
}

/// `START-END.gz` → (START, END).
fn part_range(name: &str) -> Option<(u64, u64)> {
    let (s, e) = name.strip_suffix(".gz")?.split_once('-')?;
    let (s, e) = (s.parse().ok()?, e.parse().ok()?);
    (s < e).then_some((s, e))
}

/// Which parts make the log, in order, and how many of each one's first
/// bytes an earlier part holds already: from offset 0, each next part that
/// starts at or before where the log is and goes past it. (Parts overlap
/// when two archivers wrote the same log, or a put landed after its error
/// was retried with other bounds.)
fn plan(parts: &[(u64, u64, Path)]) -> Vec<(Path, u64)> {
    let mut at = 0;
    let mut out = Vec::new();
    for (s, e, path) in parts {
        if *s <= at && *e > at {
            out.push((path.clone(), at - s));
            at = *e;
        }
    }
    out
}

/// How far the parts, from offset 0, cover the log without a gap.
fn contiguous_end(parts: &[(u64, u64, Path)]) -> u64 {
    let mut at = 0;
    for (s, e, _) in parts {
        if *s <= at {
            at = at.max(*e);
        }
    }
    at
}

/// Below this a sealed log is put in one request; above, in pieces.
const SEAL_IN_ONE: usize = 5 * 1024 * 1024;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writes to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn gunzip(path: &Path, data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    // A container that printed nothing is sealed as an empty object.
    if data.is_empty() {
        return Ok(out);
    }
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|source| Error::Corrupt {
            path: path.to_string(),
            source,
        })?;
    Ok(out)
}
