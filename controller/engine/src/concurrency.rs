//! Concurrency control of PipelineRuns: which runs may start now, which
//! wait (and where in their queue), and which a newer run cancels.
//!
//! A run says what it shares through annotations (on its Pipeline for every
//! run of it, on the run to override): `tektite.dev/concurrency-key` (a
//! template over the run's params and context), `…-limit` (default 1),
//! `…-strategy` (`queue` or `cancel-in-progress`) and `tektite.dev/priority`.
//! A namespace may also cap its running PipelineRuns (`config-defaults`).
//!
//! Nothing here keeps state: the decision is a function of the runs as
//! they are ([`entries`] reads them), so a restarted controller, a new
//! leader or another `tkt` reaches the same one. A run holds a place from
//! its admission (`status.concurrency.admittedTime`, written before it
//! starts anything) or its start until it is done.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::jiff::Timestamp;
use tektite_api::v1::{ConcurrencyStatus, PipelineRun};

use crate::params::Failure;
use crate::status::is_done;
use crate::subst::Vars;

use tektite_api::concurrency as read;
pub use tektite_api::concurrency::{
    CANCEL_IN_PROGRESS, KEY, LIMIT, MAX_KEY_LEN, MAX_PARALLEL_TASKS, PRIORITY, QUEUE, STRATEGY,
};

/// The condition reason of a run waiting for its turn.
pub const QUEUED: &str = "PipelineRunQueued";
/// The failure reason of a run whose concurrency annotations are invalid.
pub const INVALID: &str = "InvalidConcurrency";

/// The `statusMessage`-like text of a run cancelled by a newer one.
pub fn superseded_message(by: &str) -> String {
    format!(
        "cancelled by newer PipelineRun {by:?} of the same concurrency key (cancel-in-progress)"
    )
}

/// One annotation, from the run when it has it, else from its Pipeline.
fn annotation<'a>(
    run: &'a BTreeMap<String, String>,
    pipeline: &'a BTreeMap<String, String>,
    name: &str,
) -> Option<(&'a str, &'static str)> {
    if let Some(v) = run.get(name) {
        return Some((v.as_str(), "metadata.annotations"));
    }
    pipeline
        .get(name)
        .map(|v| (v.as_str(), "pipeline metadata.annotations"))
}

/// `tektite.dev/priority` of a run (else of its Pipeline); 0 when unset.
///
/// # Errors
/// It is not an integer (an [`INVALID`] failure naming the field).
pub fn priority(
    run: &BTreeMap<String, String>,
    pipeline: &BTreeMap<String, String>,
) -> Result<i32, Failure> {
    match annotation(run, pipeline, PRIORITY) {
        None => Ok(0),
        Some((v, at)) => read::priority(v).map_err(|expected| {
            Failure::new(
                INVALID,
                format!("{at}[{PRIORITY:?}]: {v:?} is not {expected}"),
            )
        }),
    }
}

/// What the annotations of a run and its Pipeline ask, the key resolved
/// with `vars` (the run's params and context); `None` when neither sets a
/// key (an empty key is no key). A limit that is not a positive integer, a
/// strategy or priority that is not one, or a key that still holds a
/// variable or is too long, is an [`INVALID`] failure naming the field.
///
/// # Errors
/// As above.
pub fn settings(
    run: &BTreeMap<String, String>,
    pipeline: &BTreeMap<String, String>,
    vars: &Vars,
) -> Result<Option<ConcurrencyStatus>, Failure> {
    let bad = |(at, name): (&str, &str), value: &str, expected: &str| {
        Failure::new(
            INVALID,
            format!("{at}[{name:?}]: {value:?} is not {expected}"),
        )
    };
    let priority = priority(run, pipeline)?;
    let Some((template, at)) = annotation(run, pipeline, KEY) else {
        return Ok(None);
    };
    let key = vars
        .str(template, &format!("{at}[{KEY:?}]"))
        .map_err(|e| Failure::new(INVALID, e.to_string()))?;
    if key.contains("$(") {
        return Err(bad(
            (at, KEY),
            &key,
            "a key: it names a variable that has no value",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Failure::new(
            INVALID,
            format!(
                "{at}[{KEY:?}]: the key is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                key.len()
            ),
        ));
    }
    if key.trim().is_empty() {
        return Ok(None);
    }
    let limit = match annotation(run, pipeline, LIMIT) {
        None => 1,
        Some((v, at)) => read::positive(v)
            .map(i64::from)
            .map_err(|expected| bad((at, LIMIT), v, expected))?,
    };
    let strategy = match annotation(run, pipeline, STRATEGY) {
        None => QUEUE,
        Some((v, at)) => read::strategy(v).map_err(|expected| bad((at, STRATEGY), v, expected))?,
    };
    Ok(Some(ConcurrencyStatus {
        key: Some(key),
        limit,
        strategy: strategy.into(),
        priority,
        ..Default::default()
    }))
}

/// The settings of a run that has no key while its namespace caps its
/// running runs: it waits for the cap alone.
pub fn capped_only(priority: i32) -> ConcurrencyStatus {
    ConcurrencyStatus {
        key: None,
        limit: 1,
        strategy: QUEUE.into(),
        priority,
        ..Default::default()
    }
}

/// `tektite.dev/max-parallel-tasks` of a run: how many of its pipeline
/// tasks may run at once (`None`: no limit).
///
/// # Errors
/// The annotation is not a positive integer (an [`INVALID`] failure).
pub fn max_parallel_tasks(pr: &PipelineRun) -> Result<Option<usize>, Failure> {
    let Some(v) = pr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MAX_PARALLEL_TASKS))
    else {
        return Ok(None);
    };
    match read::positive(v) {
        Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Err(expected) => Err(Failure::new(
            INVALID,
            format!("metadata.annotations[{MAX_PARALLEL_TASKS:?}]: {v:?} is not {expected}"),
        )),
    }
}

/// Where a run stands for concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Recorded under its settings, waiting to be admitted.
    Queued,
    /// Admitted or started, not done; `cancelling` once asked to stop.
    Holding { cancelling: bool },
}

/// One run as the decision sees it.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub created: Timestamp,
    /// The recorded settings; `None` for a run that started without any
    /// (it still counts against the namespace's cap).
    pub settings: Option<&'a ConcurrencyStatus>,
    pub standing: Standing,
}

impl Entry<'_> {
    fn key(&self) -> Option<&str> {
        self.settings.and_then(|s| s.key.as_deref())
    }

    fn priority(&self) -> i32 {
        self.settings.map_or(0, |s| s.priority)
    }
}

/// Whether a run holds a place: admitted or started, and not done.
pub fn holds(pr: &PipelineRun) -> bool {
    pr.status.as_ref().is_some_and(|s| {
        !is_done(&s.conditions)
            && (s.start_time.is_some()
                || s.concurrency
                    .as_ref()
                    .is_some_and(|c| c.admitted_time.is_some()))
    })
}

/// Whether a run has yet to be admitted: not holding a place, not started,
/// not done, and not held or stopped by its `spec.status`.
pub fn unadmitted(pr: &PipelineRun) -> bool {
    let st = pr.status.as_ref();
    pr.spec.status.is_none()
        && !holds(pr)
        && !st.is_some_and(|s| s.start_time.is_some() || is_done(&s.conditions))
}

/// Whether a run waits in a queue: its settings recorded, not admitted.
pub fn is_queued(pr: &PipelineRun) -> bool {
    unadmitted(pr) && pr.status.as_ref().is_some_and(|s| s.concurrency.is_some())
}

/// Admits a run: its `admittedTime` is `now` and `waitSeconds` the time
/// since its creation (to the millisecond), which is returned.
pub fn admit(pr: &mut PipelineRun, now: Timestamp) -> f64 {
    let created = pr.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let waited = now.duration_since(created).as_secs_f64().max(0.0);
    let st = pr.status.get_or_insert_with(Default::default);
    let c = st
        .concurrency
        .get_or_insert_with(ConcurrencyStatus::default);
    c.admitted_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    c.wait_seconds = Some((waited * 1000.0).round() / 1000.0);
    waited
}

/// The decision for run `me` over the other runs of its namespace (`runs`
/// may hold an older copy of `me`: `me` as given stands for it), with
/// only `me`'s reason to wait built.
pub fn decide_run<'a>(
    runs: impl IntoIterator<Item = &'a PipelineRun>,
    me: &'a PipelineRun,
    cap: Option<u32>,
) -> Verdict {
    let view = runs
        .into_iter()
        .filter(|r| r.metadata.name != me.metadata.name)
        .chain(std::iter::once(me));
    let name = me.metadata.name.as_deref().unwrap_or_default();
    decide_for(&entries(view), cap, name)
}

/// How long a run not yet recorded holds back newer runs of its namespace.
pub const UNSEEN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// An older run of `runs` whose settings are not recorded yet (not seen
/// by admission: not admitted, not started, not done, not held by its
/// `spec.status`), created less than [`UNSEEN_GRACE`] before `now`: `me`
/// waits for it, so that runs created together are admitted in their
/// order.
pub fn unseen_before<'a>(
    runs: impl IntoIterator<Item = &'a PipelineRun>,
    me: &PipelineRun,
    now: Timestamp,
) -> Option<&'a str> {
    let order = |pr: &PipelineRun| {
        (
            pr.metadata.creation_timestamp.as_ref().map(|t| t.0),
            pr.metadata.name.clone(),
        )
    };
    let mine = order(me);
    runs.into_iter()
        .filter(|pr| unadmitted(pr) && !is_queued(pr))
        .filter(|pr| order(pr) < mine)
        .filter(|pr| {
            pr.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| now.duration_since(t.0).unsigned_abs() < UNSEEN_GRACE)
        })
        .find_map(|pr| pr.metadata.name.as_deref())
}

/// The runs of one namespace as the decision sees them: those holding a
/// place, and those queued (recorded settings, not admitted, not asked to
/// wait or stop by their `spec.status`). Runs not yet seen, done, or
/// `PipelineRunPending` are left out.
pub fn entries<'a>(runs: impl IntoIterator<Item = &'a PipelineRun>) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    for pr in runs {
        let Some(name) = pr.metadata.name.as_deref() else {
            continue;
        };
        let created = pr
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        let settings = pr.status.as_ref().and_then(|s| s.concurrency.as_ref());
        let standing = if holds(pr) {
            Standing::Holding {
                cancelling: pr.spec.status.is_some(),
            }
        } else if is_queued(pr) {
            Standing::Queued
        } else {
            continue;
        };
        out.push(Entry {
            name,
            created,
            settings,
            standing,
        });
    }
    out
}

/// How many holders a wait names.
pub const SHOWN: usize = 5;

/// Why a queued run waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// Its key, or `None` when only the namespace's cap holds it.
    pub key: Option<String>,
    /// 1-based place among the runs waiting for the same thing.
    pub position: usize,
    pub of: usize,
    /// The first [`SHOWN`] (by name) of the runs holding the key (or, for
    /// the cap, running in the namespace).
    pub holders: Vec<String>,
    /// How many hold it.
    pub held: usize,
    /// The namespace's cap, when that is what it waits for.
    pub cap: Option<u32>,
}

impl Wait {
    /// The condition message: `waiting for concurrency key "deploy-prod":
    /// position 2 of 3, held by deploy-prod-x7k2p`.
    pub fn message(&self) -> String {
        let held = if self.holders.is_empty() {
            String::new()
        } else if self.held > self.holders.len() {
            format!(
                ", held by {} and {} more",
                self.holders.join(", "),
                self.held - self.holders.len()
            )
        } else {
            format!(", held by {}", self.holders.join(", "))
        };
        match (&self.key, self.cap) {
            (_, Some(cap)) => format!(
                "waiting for the namespace's limit of {cap} running PipelineRuns: position {} of {}{held}",
                self.position, self.of
            ),
            (Some(k), None) => format!(
                "waiting for concurrency key {k:?}: position {} of {}{held}",
                self.position, self.of
            ),
            (None, None) => format!("waiting: position {} of {}", self.position, self.of),
        }
    }
}

/// The position and queue length a [`Wait::message`] states
/// (`… position 2 of 3…` → `(2, 3)`).
pub fn position_in(message: &str) -> Option<(usize, usize)> {
    let rest = &message[message.find(": position ")? + ": position ".len()..];
    let (n, rest) = rest.split_once(" of ")?;
    let of: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((n.parse().ok()?, of.parse().ok()?))
}

/// What to do with the runs of a namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Queued runs that may start now.
    pub admit: BTreeSet<String>,
    /// Queued runs that wait, and why.
    pub wait: BTreeMap<String, Wait>,
    /// Runs that newer runs of their key replace (their strategy is
    /// `cancel-in-progress`): the run, the `spec.status` to set
    /// (`CancelledRunFinally`: one still queued ends at once, without
    /// `finally`; one running runs its `finally`) and the newest run.
    pub cancel: Vec<(String, &'static str, String)>,
}

/// How many runs a recorded limit lets hold a key (at least one).
fn places(limit: i64) -> usize {
    usize::try_from(limit.max(1)).unwrap_or(usize::MAX)
}

/// The first `n` runs queued under `key`, in rank order.
pub fn front<'a>(entries: &[Entry<'a>], key: &str, n: usize) -> Vec<&'a str> {
    let mut queued: Vec<&Entry<'a>> = entries
        .iter()
        .filter(|e| e.standing == Standing::Queued && e.key() == Some(key))
        .collect();
    queued.sort_by_key(|e| rank(e));
    queued.into_iter().take(n).map(|e| e.name).collect()
}

/// FIFO rank of a queued run: higher priority first, then older, then name.
fn rank<'a>(e: &Entry<'a>) -> (std::cmp::Reverse<i32>, Timestamp, &'a str) {
    (std::cmp::Reverse(e.priority()), e.created, e.name)
}

/// Decides which queued runs start, which wait and which a newer run
/// cancels, for one namespace whose running runs are capped at `cap`.
///
/// A key's limit is the smallest its runs ask (runs of one key may come
/// from Pipelines, or overrides, that differ): no run ever shares its key
/// with more runs than it allows. A run whose strategy is
/// `cancel-in-progress` is cancelled once `limit` newer runs of its key
/// exist (`CancelledRunFinally`: one still queued ends at once, one running
/// runs its `finally` tasks); a run with `queue` is never cancelled by
/// another. Those still running hold their places until they end. Queued
/// runs are then taken in rank order (priority, creation time, name): one
/// starts when its key has a free place and the namespace is under its
/// cap; once one of a key waits, the later ones of that key wait too.
pub fn decide(entries: &[Entry<'_>], cap: Option<u32>) -> Verdict {
    decide_waits(entries, cap, None)
}

/// [`decide`], with the reasons to wait of run `me` only (what one
/// reconcile needs: the others' are not built).
pub fn decide_for(entries: &[Entry<'_>], cap: Option<u32>, me: &str) -> Verdict {
    decide_waits(entries, cap, Some(me))
}

fn decide_waits(entries: &[Entry<'_>], cap: Option<u32>, only: Option<&str>) -> Verdict {
    let mut verdict = Verdict::default();
    let keys = Keys::number(entries);
    let (limits, cancelled) = supersede(entries, &keys, &mut verdict.cancel);
    let cap = cap.map(|c| usize::try_from(c).unwrap_or(usize::MAX));
    let placed = admit_in_rank(entries, &keys, (&limits, &cancelled), cap, &mut verdict);
    place_waits(entries, &keys, &placed, (cap, only), &mut verdict);
    verdict
}

/// The runs' keys, numbered once: every later step indexes vectors, so one
/// decision costs a sort of the runs and a few passes over them.
struct Keys {
    /// Each entry's key number.
    of: Vec<Option<usize>>,
    /// Each key's entries, oldest first.
    runs: Vec<Vec<usize>>,
}

impl Keys {
    fn number(entries: &[Entry<'_>]) -> Keys {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let of: Vec<Option<usize>> = entries
            .iter()
            .map(|e| {
                e.key().map(|k| {
                    let next = ids.len();
                    *ids.entry(k).or_insert(next)
                })
            })
            .collect();
        let mut runs: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
        for (i, k) in of.iter().enumerate() {
            if let Some(k) = k {
                runs[*k].push(i);
            }
        }
        for r in &mut runs {
            r.sort_by_key(|&i| (entries[i].created, entries[i].name));
        }
        Keys { of, runs }
    }

    fn len(&self) -> usize {
        self.runs.len()
    }
}

/// Per key, the smallest limit its runs ask; and the entries a newer run
/// cancels outright (queued ones: they never start). Every cancellation,
/// running runs included, goes to `cancel`.
fn supersede(
    entries: &[Entry<'_>],
    keys: &Keys,
    cancel: &mut Vec<(String, &'static str, String)>,
) -> (Vec<usize>, Vec<bool>) {
    let mut limits: Vec<usize> = vec![1; keys.len()];
    let mut cancelled = vec![false; entries.len()];
    for (k, runs) in keys.runs.iter().enumerate() {
        let limit = runs
            .iter()
            .filter_map(|&i| entries[i].settings)
            .map(|s| places(s.limit))
            .min()
            .unwrap_or(1);
        limits[k] = limit;
        let Some(&newest) = runs.last() else { continue };
        let winner = entries[newest].name;
        // Runs oldest first: the run at `at` has `runs.len() - 1 - at` newer.
        for (at, &i) in runs.iter().enumerate() {
            let replaceable = entries[i]
                .settings
                .is_some_and(|s| s.strategy == CANCEL_IN_PROGRESS);
            if !replaceable || runs.len() - 1 - at < limit {
                continue;
            }
            match entries[i].standing {
                Standing::Holding { cancelling: true } => continue,
                Standing::Queued => cancelled[i] = true,
                Standing::Holding { cancelling: false } => {}
            }
            cancel.push((entries[i].name.into(), "CancelledRunFinally", winner.into()));
        }
    }
    (limits, cancelled)
}

/// Who holds what once the decision is made, and who waits.
struct Places {
    /// Each key's holders (admitted now included).
    holders: Vec<Vec<usize>>,
    /// Every run holding a place in the namespace.
    running: Vec<usize>,
    /// The runs that wait, in rank order, and whether for the cap (their
    /// key alone would let them start).
    waiting: Vec<(usize, bool)>,
}

/// Takes the queued runs in rank order: one is admitted (into
/// `verdict.admit`) when its key has a free place and the namespace is
/// under `cap`; once one of a key waits, the later ones of that key wait.
fn admit_in_rank(
    entries: &[Entry<'_>],
    keys: &Keys,
    (limits, cancelled): (&[usize], &[bool]),
    cap: Option<usize>,
    verdict: &mut Verdict,
) -> Places {
    let mut p = Places {
        holders: vec![Vec::new(); keys.len()],
        running: Vec::new(),
        waiting: Vec::new(),
    };
    for (i, e) in entries.iter().enumerate() {
        if let Standing::Holding { .. } = e.standing {
            p.running.push(i);
            if let Some(k) = keys.of[i] {
                p.holders[k].push(i);
            }
        }
    }
    let mut queued: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].standing == Standing::Queued && !cancelled[i])
        .collect();
    queued.sort_by_key(|&i| rank(&entries[i]));
    let mut blocked = vec![false; keys.len()];
    for i in queued {
        let key_free = keys.of[i].is_none_or(|k| !blocked[k] && p.holders[k].len() < limits[k]);
        let cap_free = cap.is_none_or(|c| p.running.len() < c);
        if key_free && cap_free {
            verdict.admit.insert(entries[i].name.into());
            p.running.push(i);
            if let Some(k) = keys.of[i] {
                p.holders[k].push(i);
            }
        } else {
            if let Some(k) = keys.of[i] {
                blocked[k] = true;
            }
            p.waiting.push((i, key_free));
        }
    }
    p
}

/// Each waiting run's place (of those waiting for the same key, or for the
/// cap) and holders, into `verdict.wait`: all of them, or run `only`'s.
fn place_waits(
    entries: &[Entry<'_>],
    keys: &Keys,
    p: &Places,
    (cap, only): (Option<usize>, Option<&str>),
    verdict: &mut Verdict,
) {
    let shown = |runs: &[usize]| {
        let mut names: Vec<&str> = runs.iter().map(|&i| entries[i].name).collect();
        names.sort_unstable();
        names.truncate(SHOWN);
        (
            names.into_iter().map(String::from).collect::<Vec<_>>(),
            runs.len(),
        )
    };
    // Queue number `keys.len()` is the cap's (and, never in practice, that
    // of a keyless run waiting for its key).
    let queue = |i: usize, for_cap: bool| match keys.of[i] {
        Some(k) if !for_cap => k,
        _ => keys.len(),
    };
    let mut of = vec![0usize; keys.len() + 1];
    for &(i, for_cap) in &p.waiting {
        of[queue(i, for_cap)] += 1;
    }
    let mut at = vec![0usize; keys.len() + 1];
    for &(i, for_cap) in &p.waiting {
        let q = queue(i, for_cap);
        at[q] += 1;
        let e = &entries[i];
        if only.is_some_and(|me| me != e.name) {
            continue;
        }
        let (names, held) = match keys.of[i] {
            Some(k) if !for_cap => shown(&p.holders[k]),
            _ => shown(&p.running),
        };
        verdict.wait.insert(
            e.name.into(),
            Wait {
                key: e.key().map(Into::into),
                position: at[q],
                of: of[q],
                holders: names,
                held,
                cap: if for_cap {
                    cap.and_then(|c| u32::try_from(c).ok())
                } else {
                    None
                },
            },
        );
    }
}
