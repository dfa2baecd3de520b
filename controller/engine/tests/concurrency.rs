//! Concurrency control: the settings a run's annotations resolve to, the
//! queue decision (FIFO, priority, limits, cancel-in-progress, the
//! namespace cap), the queued condition and timeout, max-parallel-tasks,
//! and a property test of the decision under random arrivals, completions,
//! cancels, stale views and restarts.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    ConcurrencyStatus, Condition, Param, ParamSpec, PipelineRun, PipelineRunSpec,
    PipelineRunStatus, PipelineSpec, PipelineTask, TaskRef, TaskRun, TaskRunStatus, TaskSpec,
};
use tektite_engine::concurrency::{self, Entry, Standing, Wait, decide, entries};
use tektite_engine::pipelinerun::{self, Observed, concurrency_settings};
use tektite_engine::pod::Config;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn run(name: &str, created: i64, pairs: &[(&str, &str)]) -> PipelineRun {
    let mut pr = PipelineRun::new(name, PipelineRunSpec::default());
    pr.metadata.namespace = Some("ci".into());
    pr.metadata.uid = Some(format!("uid-{name}"));
    pr.metadata.creation_timestamp = Some(Time(at(created)));
    pr.metadata.annotations = Some(annotations(pairs));
    pr
}

fn env_pipeline() -> PipelineSpec {
    PipelineSpec {
        params: vec![ParamSpec {
            name: "environment".into(),
            default: Some(ParamValue::String("staging".into())),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn settings_of(pr: &PipelineRun, pipeline: &[(&str, &str)]) -> Option<ConcurrencyStatus> {
    concurrency_settings(
        pr,
        (&env_pipeline(), Some("deploy")),
        &annotations(pipeline),
        (None, at(0)),
    )
    .unwrap()
}

#[test]
fn the_key_is_resolved_over_params_defaults_and_context() {
    let mut pr = run("r1", 0, &[]);
    let on_pipeline = [(
        concurrency::KEY,
        "deploy-$(params.environment)-$(context.pipelineRun.namespace)-$(context.pipeline.name)",
    )];
    let s = settings_of(&pr, &on_pipeline).unwrap();
    assert_eq!(s.key.as_deref(), Some("deploy-staging-ci-deploy"));
    assert_eq!((s.limit, s.strategy.as_str(), s.priority), (1, "queue", 0));

    pr.spec.params = vec![Param {
        name: "environment".into(),
        value: ParamValue::String("prod".into()),
    }];
    assert_eq!(
        settings_of(&pr, &on_pipeline).unwrap().key.as_deref(),
        Some("deploy-prod-ci-deploy")
    );
}

#[test]
fn the_run_s_annotations_override_the_pipeline_s() {
    let pr = run(
        "r1",
        0,
        &[
            (concurrency::KEY, "mine"),
            (concurrency::LIMIT, "3"),
            (concurrency::STRATEGY, "cancel-in-progress"),
            (concurrency::PRIORITY, "-2"),
        ],
    );
    let s = settings_of(
        &pr,
        &[(concurrency::KEY, "theirs"), (concurrency::LIMIT, "1")],
    )
    .unwrap();
    assert_eq!(s.key.as_deref(), Some("mine"));
    assert_eq!(
        (s.limit, s.strategy.as_str(), s.priority),
        (3, "cancel-in-progress", -2)
    );
}

#[test]
fn no_key_is_no_concurrency_unless_the_namespace_is_capped() {
    let pr = run("r1", 0, &[(concurrency::PRIORITY, "5")]);
    assert_eq!(settings_of(&pr, &[]), None);
    assert_eq!(
        settings_of(&run("r2", 0, &[(concurrency::KEY, " ")]), &[]),
        None
    );
    let capped = concurrency_settings(
        &pr,
        (&env_pipeline(), None),
        &BTreeMap::new(),
        (Some(3), at(0)),
    )
    .unwrap()
    .unwrap();
    assert_eq!((capped.key, capped.priority), (None, 5));
}

#[test]
fn invalid_annotations_are_refused_naming_the_field_and_what_was_expected() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[(concurrency::KEY, "k"), (concurrency::LIMIT, "0")],
            "metadata.annotations[\"tektite.dev/concurrency-limit\"]: \"0\" is not a positive integer",
        ),
        (
            &[(concurrency::KEY, "k"), (concurrency::LIMIT, "two")],
            "\"two\" is not a positive integer",
        ),
        (
            &[(concurrency::KEY, "k"), (concurrency::STRATEGY, "newest")],
            "[\"tektite.dev/concurrency-strategy\"]: \"newest\" is not \"queue\" or \"cancel-in-progress\"",
        ),
        (
            &[(concurrency::KEY, "k"), (concurrency::PRIORITY, "high")],
            "[\"tektite.dev/priority\"]: \"high\" is not an integer",
        ),
        (
            &[(concurrency::KEY, "deploy-$(params.region)")],
            "tektite.dev/concurrency-key",
        ),
    ];
    for (pairs, expected) in cases {
        let pr = run("r1", 0, pairs);
        let e = concurrency_settings(
            &pr,
            (&env_pipeline(), None),
            &BTreeMap::new(),
            (None, at(0)),
        )
        .unwrap_err();
        assert_eq!(e.reason, concurrency::INVALID);
        assert!(e.message.contains(expected), "{pairs:?}: {}", e.message);
    }
    let long = "k".repeat(concurrency::MAX_KEY_LEN + 1);
    let e = concurrency_settings(
        &run("r1", 0, &[(concurrency::KEY, &long)]),
        (&env_pipeline(), None),
        &BTreeMap::new(),
        (None, at(0)),
    )
    .unwrap_err();
    assert!(
        e.message.contains("254 bytes long; at most 253"),
        "{}",
        e.message
    );
    // On the Pipeline, the message says so.
    let e = concurrency_settings(
        &run("r1", 0, &[]),
        (&env_pipeline(), None),
        &annotations(&[(concurrency::KEY, "k"), (concurrency::LIMIT, "-1")]),
        (None, at(0)),
    )
    .unwrap_err();
    assert!(
        e.message.starts_with("pipeline metadata.annotations["),
        "{}",
        e.message
    );
}

fn status(key: Option<&str>, limit: i64, strategy: &str, priority: i32) -> ConcurrencyStatus {
    ConcurrencyStatus {
        key: key.map(Into::into),
        limit,
        strategy: strategy.into(),
        priority,
        ..Default::default()
    }
}

fn entry<'a>(
    name: &'a str,
    created: i64,
    s: &'a ConcurrencyStatus,
    standing: Standing,
) -> Entry<'a> {
    Entry {
        name,
        created: at(created),
        settings: Some(s),
        standing,
    }
}

const HOLD: Standing = Standing::Holding { cancelling: false };

#[test]
fn queued_runs_start_first_in_first_out_within_the_limit() {
    let s = status(Some("deploy-prod"), 1, "queue", 0);
    let v = decide(
        &[
            entry("c", 3, &s, Standing::Queued),
            entry("a", 1, &s, HOLD),
            entry("b", 2, &s, Standing::Queued),
            entry("d", 4, &s, Standing::Queued),
        ],
        None,
    );
    assert!(v.admit.is_empty());
    assert_eq!(
        v.wait["c"].message(),
        "waiting for concurrency key \"deploy-prod\": position 2 of 3, held by a"
    );
    assert_eq!(v.wait["b"].position, 1);
    assert_eq!(v.wait["d"].position, 3);
    // What `tkt pr list` reads back.
    assert_eq!(
        concurrency::position_in(&v.wait["d"].message()),
        Some((3, 3))
    );
    assert_eq!(concurrency::position_in("waiting"), None);

    // a ends: b (the oldest) goes, not c or d.
    let v = decide(
        &[
            entry("c", 3, &s, Standing::Queued),
            entry("b", 2, &s, Standing::Queued),
            entry("d", 4, &s, Standing::Queued),
        ],
        None,
    );
    assert_eq!(v.admit.iter().collect::<Vec<_>>(), ["b"]);
    assert_eq!(v.wait["c"].holders, ["b"]);
}

#[test]
fn a_wait_names_five_holders_and_counts_the_others() {
    let s = status(Some("k"), 7, "queue", 0);
    let names: Vec<String> = (0..7).map(|i| format!("h{i}")).collect();
    let mut runs: Vec<Entry<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| entry(n, i64::try_from(i).unwrap(), &s, HOLD))
        .collect();
    runs.push(entry("waiting", 10, &s, Standing::Queued));
    let v = decide(&runs, None);
    assert_eq!(
        v.wait["waiting"].message(),
        "waiting for concurrency key \"k\": position 1 of 1, held by h0, h1, h2, h3, h4 and 2 more"
    );
}

#[test]
fn higher_priority_goes_first_then_creation_time() {
    let low = status(Some("k"), 2, "queue", 0);
    let high = status(Some("k"), 2, "queue", 10);
    let v = decide(
        &[
            entry("old", 1, &low, Standing::Queued),
            entry("urgent", 5, &high, Standing::Queued),
            entry("newer", 3, &low, Standing::Queued),
        ],
        None,
    );
    assert_eq!(v.admit.iter().collect::<Vec<_>>(), ["old", "urgent"]);
    assert_eq!(v.wait["newer"].position, 1);
}

#[test]
fn keys_do_not_block_each_other_but_the_namespace_cap_counts_them_all() {
    let a = status(Some("a"), 1, "queue", 0);
    let b = status(Some("b"), 1, "queue", 0);
    let v = decide(
        &[
            entry("a1", 1, &a, HOLD),
            entry("a2", 2, &a, Standing::Queued),
            entry("b1", 3, &b, Standing::Queued),
        ],
        None,
    );
    assert_eq!(v.admit.iter().collect::<Vec<_>>(), ["b1"]);

    let free = Entry {
        name: "plain",
        created: at(0),
        settings: None,
        standing: HOLD,
    };
    let capped = concurrency::capped_only(0);
    let v = decide(
        &[
            free,
            entry("a1", 1, &a, HOLD),
            entry("b1", 3, &b, Standing::Queued),
            entry("n1", 4, &capped, Standing::Queued),
        ],
        Some(2),
    );
    assert!(v.admit.is_empty());
    assert_eq!(
        v.wait["b1"].message(),
        "waiting for the namespace's limit of 2 running PipelineRuns: position 1 of 2, held by a1, plain"
    );
    assert_eq!(v.wait["n1"].position, 2);
}

#[test]
fn cancel_in_progress_keeps_the_newest_and_cancels_the_others() {
    let s = status(Some("pr-42"), 1, "cancel-in-progress", 0);
    let v = decide(
        &[
            entry("first", 1, &s, HOLD),
            entry("second", 2, &s, Standing::Holding { cancelling: true }),
            entry("third", 3, &s, Standing::Queued),
            entry("newest", 4, &s, Standing::Queued),
        ],
        None,
    );
    assert_eq!(
        v.cancel,
        [
            (
                "first".to_string(),
                "CancelledRunFinally",
                "newest".to_string()
            ),
            (
                "third".to_string(),
                "CancelledRunFinally",
                "newest".to_string()
            ),
        ]
    );
    // The newest waits for those still running to end.
    assert!(v.admit.is_empty());
    assert_eq!(v.wait["newest"].holders, ["first", "second"]);
    let v = decide(&[entry("newest", 4, &s, Standing::Queued)], None);
    assert_eq!(v.admit.iter().collect::<Vec<_>>(), ["newest"]);
}

#[test]
fn cancel_in_progress_with_limit_two_keeps_the_two_newest() {
    let s = status(Some("k"), 2, "cancel-in-progress", 0);
    let v = decide(
        &[
            entry("a", 1, &s, HOLD),
            entry("b", 2, &s, HOLD),
            entry("c", 3, &s, Standing::Queued),
        ],
        None,
    );
    assert_eq!(
        v.cancel,
        [("a".to_string(), "CancelledRunFinally", "c".to_string())]
    );
    assert!(v.admit.is_empty(), "a still holds its place until it ends");
}

#[test]
fn runs_of_one_key_with_different_settings_never_exceed_the_smallest_limit() {
    // An older run asks for one at a time; a newer one (another Pipeline,
    // or an override) allows three: the key takes one at a time.
    let strict = status(Some("k"), 1, "queue", 0);
    let loose = status(Some("k"), 3, "cancel-in-progress", 0);
    let v = decide(
        &[
            entry("a", 1, &strict, HOLD),
            entry("b", 2, &strict, Standing::Queued),
            entry("c", 3, &loose, Standing::Queued),
        ],
        None,
    );
    assert!(v.admit.is_empty(), "{v:?}");
    // A newer run cancels only runs that said they may be cancelled:
    // `queue` runs are not.
    assert!(v.cancel.is_empty(), "{v:?}");
    let replaceable = status(Some("k"), 1, "cancel-in-progress", 0);
    let v = decide(
        &[
            entry("a", 1, &strict, HOLD),
            entry("b", 2, &replaceable, Standing::Queued),
            entry("c", 3, &replaceable, Standing::Queued),
        ],
        None,
    );
    assert_eq!(
        v.cancel,
        [("b".to_string(), "CancelledRunFinally", "c".to_string())]
    );
    assert_eq!(v.wait["c"].holders, ["a"]);
}

#[test]
fn a_run_admitted_then_made_pending_gives_its_place_back() {
    let mut pr = queued_run("p", 0, "k");
    pr.status
        .as_mut()
        .unwrap()
        .concurrency
        .as_mut()
        .unwrap()
        .admitted_time = Some(Time(at(1)));
    pr.spec.status = Some("PipelineRunPending".into());
    assert!(concurrency::holds(&pr));
    let plan = reconcile(&pr, &three_tasks(), &[]);
    assert!(plan.create.is_empty());
    let st = plan.status.unwrap();
    assert_eq!(
        st.conditions[0].reason.as_deref(),
        Some("PipelineRunPending")
    );
    pr.status = Some(st);
    assert!(!concurrency::holds(&pr), "a pending run holds no place");
    // No longer pending: it is queued again, not running.
    pr.spec.status = None;
    let got: Vec<Standing> = entries(std::slice::from_ref(&pr))
        .iter()
        .map(|e| e.standing)
        .collect();
    assert_eq!(got, [Standing::Queued]);
}

#[test]
fn a_run_waits_for_an_older_run_not_yet_recorded_for_a_while() {
    let me = queued_run("b", 10, "k");
    let older = run("a", 10, &[]);
    let runs = [older.clone(), me.clone()];
    assert_eq!(concurrency::unseen_before(&runs, &me, at(20)), Some("a"));
    // Not for ever: 30 s after its creation it is no longer waited for.
    assert_eq!(concurrency::unseen_before(&runs, &me, at(40)), None);
    // Nor once it is recorded, or for a newer one.
    let recorded = [queued_run("a", 10, "k"), me.clone()];
    assert_eq!(concurrency::unseen_before(&recorded, &me, at(20)), None);
    let newer = [run("c", 11, &[]), me.clone()];
    assert_eq!(concurrency::unseen_before(&newer, &me, at(20)), None);
}

fn queued_run(name: &str, created: i64, key: &str) -> PipelineRun {
    let mut pr = run(name, created, &[]);
    pr.status = Some(PipelineRunStatus {
        concurrency: Some(status(Some(key), 1, "queue", 0)),
        ..Default::default()
    });
    pr
}

#[test]
fn entries_leave_out_runs_done_pending_or_unseen_and_count_started_ones() {
    let mut started = run("started", 0, &[]);
    started.status = Some(PipelineRunStatus {
        start_time: Some(Time(at(1))),
        ..Default::default()
    });
    let mut done = queued_run("done", 1, "k");
    done.status.as_mut().unwrap().conditions = vec![Condition {
        type_: "Succeeded".into(),
        status: "False".into(),
        ..Default::default()
    }];
    let mut pending = queued_run("pending", 2, "k");
    pending.spec.status = Some("PipelineRunPending".into());
    let mut admitted = queued_run("admitted", 3, "k");
    admitted
        .status
        .as_mut()
        .unwrap()
        .concurrency
        .as_mut()
        .unwrap()
        .admitted_time = Some(Time(at(4)));
    let runs = [
        started,
        done,
        pending,
        admitted,
        run("unseen", 5, &[]),
        queued_run("waiting", 6, "k"),
    ];
    let got: Vec<(&str, Standing)> = entries(&runs)
        .iter()
        .map(|e| (e.name, e.standing))
        .collect();
    assert_eq!(
        got,
        [
            ("started", HOLD),
            ("admitted", HOLD),
            ("waiting", Standing::Queued)
        ]
    );
}

#[test]
fn a_queued_run_says_why_and_times_out_counting_from_its_creation() {
    let mut pr = queued_run("r2", 0, "deploy-prod");
    pr.spec.timeouts = Some(tektite_api::v1::TimeoutFields {
        pipeline: Some("10m".into()),
        ..Default::default()
    });
    let wait = Wait {
        key: Some("deploy-prod".into()),
        position: 2,
        of: 3,
        holders: vec!["deploy-prod-x7k2p".into()],
        held: 1,
        cap: None,
    };
    let config = Config::default();
    let plan = pipelinerun::queued(&pr, &wait, &config, at(60));
    let st = plan.status.unwrap();
    let c = Condition::succeeded(&st.conditions).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        (
            "Unknown",
            Some("PipelineRunQueued"),
            Some(
                "waiting for concurrency key \"deploy-prod\": position 2 of 3, held by deploy-prod-x7k2p"
            )
        )
    );
    assert!(st.start_time.is_none());
    assert!(plan.requeue_after.is_some());

    let plan = pipelinerun::queued(&pr, &wait, &config, at(600));
    let c = plan.status.unwrap().conditions.remove(0);
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("PipelineRunTimeout"))
    );
    assert!(c.message.unwrap().contains("it was still queued"));

    // Configured to count from the start: a queued run does not time out.
    let from_start = Config {
        queue_timeout_from_creation: false,
        ..Config::default()
    };
    let plan = pipelinerun::queued(&pr, &wait, &from_start, at(6000));
    let c = plan.status.unwrap().conditions.remove(0);
    assert_eq!(c.reason.as_deref(), Some("PipelineRunQueued"));
}

fn three_tasks() -> PipelineSpec {
    PipelineSpec {
        tasks: ["a", "b", "c"]
            .iter()
            .map(|n| PipelineTask {
                name: (*n).into(),
                task_ref: Some(TaskRef {
                    name: Some("unit".into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn reconcile(pr: &PipelineRun, spec: &PipelineSpec, children: &[TaskRun]) -> pipelinerun::Plan {
    let tasks = BTreeMap::from([("unit".to_string(), TaskSpec::default())]);
    pipelinerun::reconcile(
        Observed {
            run: pr,
            pipeline: Ok((spec, Some("p"))),
            tasks: &tasks,
            children,
            now: at(10),
        },
        &Config::default(),
    )
}

fn task_of(tr: &TaskRun) -> String {
    tr.metadata.labels.as_ref().unwrap()["tekton.dev/pipelineTask"].clone()
}

#[test]
fn max_parallel_tasks_starts_no_more_tasks_than_it_allows() {
    let spec = three_tasks();
    let mut pr = run("p1", 0, &[(concurrency::MAX_PARALLEL_TASKS, "2")]);
    let plan = reconcile(&pr, &spec, &[]);
    let first: Vec<String> = plan.create.iter().map(task_of).collect();
    assert_eq!(first, ["a", "b"]);
    pr.status = plan.status;
    let mut children = plan.create;
    // Nothing new while both run.
    let plan = reconcile(&pr, &spec, &children);
    assert!(plan.create.is_empty());
    // a ends: c starts.
    children[0].status = Some(TaskRunStatus {
        conditions: vec![Condition {
            type_: "Succeeded".into(),
            status: "True".into(),
            reason: Some("Succeeded".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let plan = reconcile(&pr, &spec, &children);
    assert_eq!(plan.create.iter().map(task_of).collect::<Vec<_>>(), ["c"]);

    let bad = run("p2", 0, &[(concurrency::MAX_PARALLEL_TASKS, "none")]);
    let plan = reconcile(&bad, &spec, &[]);
    let c = plan.status.unwrap().conditions.remove(0);
    assert_eq!(c.reason.as_deref(), Some(concurrency::INVALID));
    assert!(
        c.message
            .unwrap()
            .contains("tektite.dev/max-parallel-tasks")
    );
    assert!(plan.create.is_empty());
}

#[test]
fn a_run_cancelled_while_queued_ends_without_starting() {
    let spec = three_tasks();
    for how in ["Cancelled", "CancelledRunFinally", "StoppedRunFinally"] {
        let mut pr = queued_run("q", 0, "k");
        pr.spec.status = Some(how.into());
        let plan = reconcile(&pr, &spec, &[]);
        assert!(plan.create.is_empty(), "{how}");
        let c = plan.status.unwrap().conditions.remove(0);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("Cancelled")),
            "{how}"
        );
        assert!(c.message.unwrap().contains("cancelled while queued"));
    }
}

// ------------------------------------------------------------- property

#[derive(Debug, Clone)]
enum Op {
    /// A run of key `key`, with its Pipeline's settings or its own.
    Arrive {
        key: usize,
        priority: i32,
        own: Option<(i64, &'static str)>,
    },
    Reconcile {
        run: usize,
        stale: bool,
    },
    Complete(usize),
    Cancel(usize),
    Snapshot,
    Restart,
}

fn setting() -> impl Strategy<Value = (i64, &'static str)> {
    (
        1i64..=3,
        prop_oneof![Just("queue"), Just("cancel-in-progress")],
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..3, -1i32..=1, proptest::option::weighted(0.2, setting()))
            .prop_map(|(key, priority, own)| Op::Arrive { key, priority, own }),
        6 => (0usize..40, any::<bool>()).prop_map(|(run, stale)| Op::Reconcile { run, stale }),
        3 => (0usize..40).prop_map(Op::Complete),
        1 => (0usize..40).prop_map(Op::Cancel),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Restart),
    ]
}

/// A namespace of runs as objects, and what a controller would do to them.
struct World {
    runs: Vec<PipelineRun>,
    /// The settings of each key's Pipeline (a run may bring its own).
    keys: Vec<(i64, &'static str)>,
    cap: Option<u32>,
    /// An old view of the runs (a cache that lags).
    stale: Option<Vec<PipelineRun>>,
}

fn settings(pr: &PipelineRun) -> &ConcurrencyStatus {
    pr.status.as_ref().unwrap().concurrency.as_ref().unwrap()
}

fn rank_of(pr: &PipelineRun) -> (i32, Timestamp, String) {
    (
        -settings(pr).priority,
        pr.metadata.creation_timestamp.as_ref().unwrap().0,
        pr.metadata.name.clone().unwrap(),
    )
}

fn key_of(pr: &PipelineRun) -> String {
    settings(pr).key.clone().unwrap()
}

fn is_queued(pr: &PipelineRun) -> bool {
    !concurrency::holds(pr) && !is_done(pr) && pr.spec.status.is_none()
}

fn is_done(pr: &PipelineRun) -> bool {
    tektite_engine::status::is_done(&pr.status.as_ref().unwrap().conditions)
}

fn end(pr: &mut PipelineRun) {
    pr.status.as_mut().unwrap().conditions = vec![Condition {
        type_: "Succeeded".into(),
        status: "False".into(),
        ..Default::default()
    }];
}

impl World {
    fn apply(&mut self, op: &Op) {
        let n = self.runs.len();
        match *op {
            Op::Arrive { key, priority, own } => {
                let name = format!("r{n}");
                let mut pr = run(&name, i64::try_from(n).unwrap(), &[]);
                let (limit, strategy) = own.unwrap_or(self.keys[key]);
                pr.status = Some(PipelineRunStatus {
                    concurrency: Some(status(Some(&format!("k{key}")), limit, strategy, priority)),
                    ..Default::default()
                });
                self.runs.push(pr);
            }
            Op::Reconcile { run, stale } if run < n => self.reconcile(run, stale),
            Op::Complete(i) if i < n && concurrency::holds(&self.runs[i]) => end(&mut self.runs[i]),
            // A queued run cancelled ends at once; a running one ends after
            // its finally tasks (here: at once too).
            Op::Cancel(i) if i < n && !is_done(&self.runs[i]) => end(&mut self.runs[i]),
            Op::Snapshot => self.stale = Some(self.runs.clone()),
            // Nothing but the objects survives a restart.
            Op::Restart => self.stale = None,
            _ => {}
        }
    }

    /// One reconcile of run `i`, as the controller does it: decide on a
    /// view (maybe stale), carry out the cancellations, and admit the run
    /// only when a fresh view agrees.
    fn reconcile(&mut self, i: usize, stale: bool) {
        let view = match (&self.stale, stale) {
            (Some(s), true) => s.clone(),
            _ => self.runs.clone(),
        };
        let name = self.runs[i].metadata.name.clone().unwrap();
        let verdict = decide(&entries(&view), self.cap);
        for (victim, how, _) in &verdict.cancel {
            let pr = self
                .runs
                .iter_mut()
                .find(|r| r.metadata.name.as_ref() == Some(victim))
                .unwrap();
            if is_done(pr) {
                continue;
            }
            // A queued run cancelled ends at once; a running one goes on
            // (its finally tasks) until it ends.
            if concurrency::holds(pr) {
                pr.spec.status = Some((*how).into());
            } else {
                end(pr);
            }
        }
        if !verdict.admit.contains(&name) || !is_queued(&self.runs[i]) {
            return;
        }
        let fresh = decide(&entries(&self.runs), self.cap);
        if !fresh.admit.contains(&name) {
            return;
        }
        self.check_admission(i, &fresh);
        let c = self.runs[i]
            .status
            .as_mut()
            .unwrap()
            .concurrency
            .as_mut()
            .unwrap();
        c.admitted_time = Some(Time(at(1000)));
    }

    /// Run `i` is about to be admitted: no queued run of its key ranked
    /// ahead of it is left behind (unless admitted or cancelled by the same
    /// decision), and its key's holders stay within the smallest limit any
    /// not-done run of the key asks.
    fn check_admission(&self, i: usize, fresh: &concurrency::Verdict) {
        let me = &self.runs[i];
        let name = me.metadata.name.clone().unwrap();
        let (my_key, my_rank) = (key_of(me), rank_of(me));
        let mut holders = 1;
        let mut limit = settings(me).limit;
        for other in &self.runs {
            let theirs = other.metadata.name.clone().unwrap();
            if theirs == name || key_of(other) != my_key || is_done(other) {
                continue;
            }
            limit = limit.min(settings(other).limit);
            if concurrency::holds(other) {
                holders += 1;
            }
            let passed_by = is_queued(other)
                && !fresh.admit.contains(&theirs)
                && !fresh.cancel.iter().any(|(v, _, _)| *v == theirs);
            if passed_by {
                assert!(rank_of(other) > my_rank, "{name} admitted before {theirs}");
            }
        }
        assert!(
            holders <= limit,
            "{name}: {holders} holders of {my_key}, smallest limit {limit}"
        );
    }

    fn check(&self) {
        let holding = self.runs.iter().filter(|r| concurrency::holds(r)).count();
        if let Some(cap) = self.cap {
            assert!(holding <= cap as usize, "{holding} running, cap {cap}");
        }
    }
}

fn keys() -> impl Strategy<Value = Vec<(i64, &'static str)>> {
    proptest::collection::vec(setting(), 3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever arrives (with its Pipeline's settings or its own), ends, is
    /// cancelled, and however stale the view a decision starts from: never
    /// more holders than the smallest limit of a key's runs or the
    /// namespace's cap, and no run starts before one of its key ranked
    /// ahead of it.
    #[test]
    fn never_more_holders_than_the_limit_and_fifo_kept(
        keys in keys(),
        cap in proptest::option::of(1u32..5),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut w = World { runs: Vec::new(), keys, cap, stale: None };
        for op in &ops {
            w.apply(op);
            w.check();
        }
        // Drained: every run reconciled, holders completed, again and
        // again, until nothing is queued; nothing is left waiting forever.
        for _ in 0..200 {
            for i in 0..w.runs.len() {
                w.reconcile(i, false);
                w.check();
            }
            if !w.runs.iter().any(is_queued) {
                break;
            }
            let holders: Vec<usize> = (0..w.runs.len()).filter(|&i| concurrency::holds(&w.runs[i])).collect();
            for i in holders {
                end(&mut w.runs[i]);
            }
        }
        prop_assert!(!w.runs.iter().any(is_queued), "runs left queued");
    }
}
