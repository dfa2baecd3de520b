//! Planning cost (`cargo bench -p tektite-engine`).
//!
//! Budget (docs/performance.md): validate + one planning pass of a 1,000-task pipeline
//! in ≤ 20 ms. Rows, all measured in this run:
//! - `decode PipelineRun+Pipeline JSON (baseline)`: what any controller pays
//!   to read the objects from the API server, before doing anything;
//! - `decode+validate+plan, first pass`: the PipelineRun's first reconcile
//!   (validation, DAG, substitution, the first layer of TaskRuns);
//! - `decode+validate+plan, half done`: a reconcile with 500 finished child
//!   TaskRuns (results read, the next layer created);
//! - TaskRun observations: 10,000 reconciles of a running TaskRun against its
//!   pod (three steps, two reported), against decoding the pod JSON alone.

use std::collections::BTreeMap;

/// The allocator `tkt` uses, so the figures are what users get.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::fmt::Write as _;
#[path = "../../api/benches/common/measure.rs"]
mod measure;

use measure::{Stats, measure};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tektite_api::load::Object;
use tektite_api::v1::{Pipeline, PipelineRun, TaskRun, TaskSpec};
use tektite_api::validate::{Catalog, validate};
use tektite_engine::pipelinerun::{self, Observed};
use tektite_engine::pod::Config;
use tektite_engine::taskrun;

/// A pipeline of `n` tasks in layers of 10, each after one task of the
/// previous layer and using a result of another (as the API bench).
fn pipeline_json(n: usize) -> String {
    let mut tasks = Vec::new();
    for i in 0..n {
        let input = if i >= 10 {
            format!("$(tasks.t{}.results.out)", i - 10 + (i % 3))
        } else {
            "seed".into()
        };
        let mut t = serde_json::json!({
            "name": format!("t{i}"),
            "taskRef": {"name": "unit"},
            "params": [{"name": "env", "value": "$(params.env)"}, {"name": "input", "value": input}],
            "workspaces": [{"name": "src", "workspace": "shared"}],
            "when": [{"input": "$(params.env)", "operator": "in", "values": ["dev", "stage"]}]
        });
        if i >= 10 {
            t["runAfter"] = serde_json::json!([format!("t{}", i - 10)]);
        }
        tasks.push(t);
    }
    serde_json::json!({
        "apiVersion": "tekton.dev/v1", "kind": "Pipeline",
        "metadata": {"name": "big", "namespace": "ci"},
        "spec": {
            "params": [{"name": "env", "default": "dev"}],
            "workspaces": [{"name": "shared"}],
            "tasks": tasks
        }
    })
    .to_string()
}

fn unit_task() -> TaskSpec {
    serde_json::from_value(serde_json::json!({
        "params": [{"name": "env"}, {"name": "input"}],
        "workspaces": [{"name": "src"}],
        "results": [{"name": "out"}],
        "steps": [{"name": "run", "image": "registry.local/busybox:1", "script": "echo $(params.input) > $(results.out.path)"}]
    }))
    .expect("task")
}

const RUN: &str = r#"{"apiVersion":"tekton.dev/v1","kind":"PipelineRun","metadata":{"name":"big-run","namespace":"ci","uid":"u-1"},
"spec":{"pipelineRef":{"name":"big"},"workspaces":[{"name":"shared","emptyDir":{}}]},
"status":{"startTime":"2026-11-27T09:59:00Z","conditions":[{"type":"Succeeded","status":"Unknown","reason":"Running","message":"x"}]}}"#;

fn done_child(i: usize) -> String {
    format!(
        r#"{{"apiVersion":"tekton.dev/v1","kind":"TaskRun","metadata":{{"name":"big-run-t{i}","namespace":"ci",
"labels":{{"tekton.dev/pipelineRun":"big-run","tekton.dev/pipelineTask":"t{i}"}}}},"spec":{{"taskRef":{{"name":"unit"}}}},
"status":{{"conditions":[{{"type":"Succeeded","status":"True","reason":"Succeeded","message":"m"}}],
"results":[{{"name":"out","type":"string","value":"v{i}"}}]}}}}"#
    )
}

fn row(name: &str, iters: usize, s: &Stats) {
    println!(
        "{:<48} {:>7} {:>9} {:>9} {:>9}",
        name,
        iters,
        measure::ms(s.min, 3),
        measure::ms(s.p50, 3),
        measure::ms(s.p99, 3)
    );
}

fn main() {
    let config = Config::default();
    let now: Timestamp = "2026-11-27T10:00:00Z".parse().expect("time");
    let unit = unit_task();
    let tasks = BTreeMap::from([("unit".to_string(), unit.clone())]);
    let n = 1000;
    let pipeline_text = pipeline_json(n);
    let half: Vec<String> = (0..n / 2).map(done_child).collect();
    let half_text = format!("[{}]", half.join(","));

    println!(
        "{:<48} {:>7} {:>9} {:>9} {:>9}",
        "case", "iters", "min ms", "p50 ms", "p99 ms"
    );
    let iters = 60;
    let decode = measure(iters, || {
        let p: Pipeline = serde_json::from_str(&pipeline_text).expect("pipeline");
        let r: PipelineRun = serde_json::from_str(RUN).expect("run");
        std::hint::black_box((p, r));
    });
    let plan_pass = |children_text: Option<&str>, expect_create: usize| {
        let p: Pipeline = serde_json::from_str(&pipeline_text).expect("pipeline");
        let r: PipelineRun = serde_json::from_str(RUN).expect("run");
        let children: Vec<TaskRun> = children_text
            .map(|t| serde_json::from_str(t).expect("children"))
            .unwrap_or_default();
        let object = Object::Pipeline(Box::new(p));
        let mut catalog = Catalog::default();
        catalog.tasks.insert("unit".into(), &unit);
        let findings = validate(&object, &catalog);
        assert!(findings.is_empty(), "{findings:?}");
        let Object::Pipeline(p) = &object else {
            unreachable!()
        };
        let plan = pipelinerun::reconcile(
            Observed {
                run: &r,
                pipeline: Ok((&p.spec, Some("big"))),
                tasks: &tasks,
                children: &children,
                now,
            },
            &config,
        );
        assert_eq!(plan.create.len(), expect_create);
        std::hint::black_box(plan);
    };
    let first = measure(iters, || plan_pass(None, 10));
    let mid = measure(iters, || plan_pass(Some(&half_text), 9));
    row(
        &format!("decode PipelineRun+Pipeline JSON ({n}, baseline)"),
        iters,
        &decode,
    );
    row(
        &format!("decode+validate+plan, first pass ({n})"),
        iters,
        &first,
    );
    row(
        &format!("decode+validate+plan, half done ({n}, 500 TRs)"),
        iters,
        &mid,
    );

    // TaskRun observations.
    let tr: TaskRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
        "metadata": {"name": "obs", "namespace": "ci"},
        "spec": {"taskRef": {"name": "three"}},
        "status": {"startTime": "2026-11-27T09:59:00Z", "podName": "obs-pod",
            "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": "x"}]}
    }))
    .expect("taskrun");
    let three: TaskSpec = serde_json::from_value(serde_json::json!({
        "results": [{"name": "digest"}],
        "steps": [{"name": "a", "image": "alpine", "command": ["true"]},
                  {"name": "b", "image": "alpine", "command": ["true"]},
                  {"name": "c", "image": "alpine", "command": ["true"]}]
    }))
    .expect("spec");
    let mut pod_text = String::new();
    let report = |s: &str| {
        format!(
            r#"{{\"step\":\"step-{s}\",\"exitCode\":0,\"reason\":\"Completed\",\"startedAt\":\"2026-11-27T09:59:10Z\",\"finishedAt\":\"2026-11-27T09:59:11Z\",\"results\":[{{\"name\":\"digest\",\"kind\":\"task\",\"value\":\"sha256:1\"}}]}}"#
        )
    };
    let _ = write!(
        pod_text,
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"obs-pod","annotations":{{"tektite.dev/step.step-a":"{}","tektite.dev/step.step-b":"{}"}}}},
"spec":{{"containers":[{{"name":"step-a","image":"alpine"}},{{"name":"step-b","image":"alpine"}},{{"name":"step-c","image":"alpine"}}]}},
"status":{{"phase":"Running","containerStatuses":[
{{"name":"step-a","image":"alpine","imageID":"","ready":false,"restartCount":0,"state":{{"terminated":{{"exitCode":0,"reason":"Completed"}}}}}},
{{"name":"step-b","image":"alpine","imageID":"","ready":false,"restartCount":0,"state":{{"terminated":{{"exitCode":0,"reason":"Completed"}}}}}},
{{"name":"step-c","image":"alpine","imageID":"","ready":true,"restartCount":0,"state":{{"running":{{"startedAt":"2026-11-27T09:59:12Z"}}}}}}]}}}}"#,
        report("a"),
        report("b")
    );
    let observations = 10_000;
    let images = BTreeMap::new();
    let t = Instant::now();
    for _ in 0..observations {
        let pod: Pod = serde_json::from_str(&pod_text).expect("pod");
        std::hint::black_box(pod);
    }
    let base = t.elapsed();
    let t = Instant::now();
    for _ in 0..observations {
        let pod: Pod = serde_json::from_str(&pod_text).expect("pod");
        let plan = taskrun::reconcile(
            taskrun::Observed {
                task_run: &tr,
                resolved: taskrun::Resolved::Spec(&three, Some("three")),
                pod: Some(&pod),
                images: &images,
                now,
            },
            &config,
        );
        assert!(plan.status.is_some());
        std::hint::black_box(plan);
    }
    let full = t.elapsed();
    println!();
    println!(
        "{:<48} {:>12} {:>14}",
        "TaskRun observations (10,000)", "total ms", "per second"
    );
    for (name, d) in [
        ("decode pod JSON only (baseline)", base),
        ("decode + reconcile", full),
    ] {
        println!(
            "{:<48} {:>12} {:>14.0}",
            name,
            measure::ms(d, 3),
            observations as f64 / d.as_secs_f64()
        );
    }
}
