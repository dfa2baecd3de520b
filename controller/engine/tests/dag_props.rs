//! Property tests: random pipelines driven to the end through the
//! PipelineRun state machine, with TaskRuns that succeed or fail as drawn.
//!
//! - scheduling respects every edge: a TaskRun is created only when every
//!   task it depends on (runAfter or result reference) is done;
//! - every task runs or is skipped exactly once, and the run ends;
//! - a cycle is always reported, never scheduled.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    Condition, Param, PipelineRun, PipelineRunSpec, PipelineSpec, PipelineTask, RunResult, TaskRef,
    TaskRun, TaskRunStatus, TaskSpec, WhenExpression,
};
use tektite_engine::pipelinerun::{self, Observed};
use tektite_engine::pod::Config;

#[derive(Debug, Clone)]
struct Shape {
    n: usize,
    /// (from, to): `to` depends on `from` (from < to).
    edges: Vec<(usize, usize)>,
    /// Edges that use a result reference instead of runAfter.
    by_result: Vec<bool>,
    fails: BTreeSet<usize>,
    when_false: BTreeSet<usize>,
    finally: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..25).prop_flat_map(|n| {
        let edges = proptest::collection::vec((0..n, 0..n), 0..n * 2);
        (
            Just(n),
            edges,
            proptest::collection::vec(any::<bool>(), n * 2),
            proptest::collection::btree_set(0..n, 0..3),
            proptest::collection::btree_set(0..n, 0..3),
            0usize..3,
        )
            .prop_map(|(n, edges, by_result, fails, when_false, finally)| {
                let edges = edges
                    .into_iter()
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| (a.min(b), a.max(b)))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                Shape {
                    n,
                    edges,
                    by_result,
                    fails,
                    when_false,
                    finally,
                }
            })
    })
}

fn name(i: usize) -> String {
    format!("t{i}")
}

fn pipeline(s: &Shape, back_edge: Option<(usize, usize)>) -> PipelineSpec {
    let mut tasks: Vec<PipelineTask> = (0..s.n)
        .map(|i| PipelineTask {
            name: name(i),
            task_ref: Some(TaskRef {
                name: Some("unit".into()),
                ..Default::default()
            }),
            when: if s.when_false.contains(&i) {
                vec![WhenExpression {
                    input: Some("a".into()),
                    operator: Some("in".into()),
                    values: vec!["b".into()],
                    cel: None,
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
    for (k, &(a, b)) in s.edges.iter().chain(back_edge.iter()).enumerate() {
        if s.by_result.get(k).copied().unwrap_or(false) {
            tasks[b].params.push(Param {
                name: format!("from-{a}"),
                value: ParamValue::String(format!("$(tasks.{}.results.out)", name(a))),
            });
        } else {
            tasks[b].run_after.push(name(a));
        }
    }
    let finally = (0..s.finally)
        .map(|i| PipelineTask {
            name: format!("f{i}"),
            task_ref: Some(TaskRef {
                name: Some("unit".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    PipelineSpec {
        tasks,
        finally,
        ..Default::default()
    }
}

fn done(tr: &TaskRun, ok: bool) -> TaskRun {
    let mut tr = tr.clone();
    tr.status = Some(TaskRunStatus {
        conditions: vec![Condition {
            type_: "Succeeded".into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: Some(if ok { "Succeeded" } else { "StepFailed" }.into()),
            ..Default::default()
        }],
        results: if ok {
            vec![RunResult {
                name: "out".into(),
                type_: Some("string".into()),
                value: ParamValue::String("v".into()),
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    });
    tr
}

fn task_of(tr: &TaskRun) -> String {
    tr.metadata.labels.as_ref().unwrap()["tekton.dev/pipelineTask"].clone()
}

/// Drives the run to its end; returns (created task names in order,
/// skipped task names, final reason).
fn drive(s: &Shape, spec: &PipelineSpec) -> (Vec<String>, Vec<String>, String) {
    let config = Config::default();
    let tasks = BTreeMap::from([("unit".to_string(), TaskSpec::default())]);
    let mut pr = PipelineRun::new("p", PipelineRunSpec::default());
    pr.metadata.namespace = Some("ci".into());
    let mut children: Vec<TaskRun> = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let now: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
    for _round in 0..200 {
        let plan = pipelinerun::reconcile(
            Observed {
                run: &pr,
                pipeline: Ok((spec, Some("p"))),
                tasks: &tasks,
                children: &children,
                now,
            },
            &config,
        );
        // Every new TaskRun: its dependencies are done.
        for tr in &plan.create {
            let t = task_of(tr);
            assert!(!created.contains(&t), "{t} created twice");
            if let Some(i) = t.strip_prefix('t').and_then(|x| x.parse::<usize>().ok()) {
                for &(a, b) in &s.edges {
                    if b == i {
                        let dep = name(a);
                        let dep_done =
                            children.iter().any(|c| task_of(c) == dep)
                                || pr.status.as_ref().is_some_and(|st| {
                                    st.skipped_tasks.iter().any(|x| x.name == dep)
                                })
                                || plan.status.as_ref().is_some_and(|st| {
                                    st.skipped_tasks.iter().any(|x| x.name == dep)
                                });
                        assert!(dep_done, "{t} created before its dependency {dep} was done");
                    }
                }
            }
            created.push(t);
        }
        // The new TaskRuns end at once, as drawn.
        for tr in plan.create {
            let t = task_of(&tr);
            let ok = t
                .strip_prefix('t')
                .and_then(|x| x.parse::<usize>().ok())
                .is_none_or(|i| !s.fails.contains(&i));
            children.push(done(&tr, ok));
        }
        if let Some(st) = plan.status {
            pr.status = Some(st);
        }
        let st = pr.status.as_ref().unwrap();
        let c = Condition::succeeded(&st.conditions).unwrap();
        if c.status != "Unknown" {
            let skipped = st.skipped_tasks.iter().map(|x| x.name.clone()).collect();
            return (created, skipped, c.reason.clone().unwrap_or_default());
        }
    }
    panic!("the run did not end in 200 reconciles");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_task_runs_or_is_skipped_once_after_its_dependencies(s in shape()) {
        let spec = pipeline(&s, None);
        let (created, skipped, reason) = drive(&s, &spec);
        let all: Vec<String> = spec.tasks.iter().chain(&spec.finally).map(|t| t.name.clone()).collect();
        for t in &all {
            let runs = created.iter().filter(|c| *c == t).count();
            let skips = skipped.iter().filter(|c| *c == t).count();
            prop_assert_eq!(runs + skips, 1, "task {} ran {} times and was skipped {} times", t, runs, skips);
        }
        // Finally tasks always run when nothing but DAG tasks can fail here.
        for i in 0..s.finally {
            let f = format!("f{i}");
            prop_assert!(created.contains(&f), "finally {} did not run", f);
        }
        let any_failed = created.iter().any(|c| {
            c.strip_prefix('t').and_then(|x| x.parse::<usize>().ok()).is_some_and(|i| s.fails.contains(&i))
        });
        prop_assert_eq!(any_failed, reason == "Failed", "reason {}", reason);
    }

    #[test]
    fn cycles_are_always_reported(s in shape(), a in 0usize..25, b in 0usize..25) {
        prop_assume!(s.n >= 2);
        let (a, b) = (a % s.n, b % s.n);
        prop_assume!(a != b);
        // A path lo -> … -> hi exists when the back edge closes a cycle; add
        // the direct edge lo -> hi so there always is one.
        let (lo, hi) = (a.min(b), a.max(b));
        let mut s = s.clone();
        if !s.edges.contains(&(lo, hi)) {
            s.edges.push((lo, hi));
        }
        let spec = pipeline(&s, Some((hi, lo)));
        let config = Config::default();
        let tasks = BTreeMap::from([("unit".to_string(), TaskSpec::default())]);
        let mut pr = PipelineRun::new("p", PipelineRunSpec::default());
        pr.metadata.namespace = Some("ci".into());
        let plan = pipelinerun::reconcile(
            Observed { run: &pr, pipeline: Ok((&spec, Some("p"))), tasks: &tasks, children: &[], now: Timestamp::UNIX_EPOCH },
            &config,
        );
        prop_assert!(plan.create.is_empty());
        let st = plan.status.unwrap();
        let c = Condition::succeeded(&st.conditions).unwrap();
        prop_assert_eq!(c.reason.as_deref(), Some("PipelineInvalidGraph"));
        prop_assert!(c.message.as_deref().unwrap_or("").contains("dependency cycle"));
    }
}
