//! Golden files: `tests/golden/<case>/input.yaml` → `expected.yaml`.
//!
//! `input.yaml` holds Tekton objects (any version the loader reads), observed
//! Pods, and optionally one `kind: EngineTest` document (`apiVersion:
//! tektite.dev/test`) with the resolved data the engine is given: `images`
//! (image → `entrypoint` and `cmd`), `config` overrides, `now`, and `mode`:
//!
//! - `pod` (default): every TaskRun gets its Pod built against the Task it
//!   references (or its embedded spec); the Pods, claims, or the failure are
//!   written in order to `expected.yaml`.
//! - `reconcile`: one reconcile of every TaskRun, given the Pod named by its
//!   `status.podName` (if in the input): the plan and the new status.
//! - `pipeline`: one reconcile of every PipelineRun, given the input's
//!   TaskRuns labelled with its name as children: the TaskRuns to create,
//!   those to cancel, and the new status.
//!
//! `UPDATE_GOLDEN=1 cargo test -p tektite-engine --test golden` rewrites the
//! expected files; review the diff before committing it.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tektite_api::load::Object;
use tektite_api::v1::{Pipeline, PipelineRun, Task, TaskRun, TaskSpec};
use tektite_api::yaml;
use tektite_engine::params::Failure;
use tektite_engine::pod::{self, BuildError, Config, ImageCommand, Input};
use tektite_engine::{pipelinerun, taskrun};

struct Case {
    /// `pod` (build the pods) or `reconcile` (plan one reconcile of each TaskRun).
    mode: String,
    now: Timestamp,
    pods: Vec<Pod>,
    task_runs: Vec<TaskRun>,
    pipeline_runs: Vec<PipelineRun>,
    pipelines: BTreeMap<String, Pipeline>,
    tasks: BTreeMap<String, Task>,
    images: BTreeMap<String, ImageCommand>,
    step_actions: tektite_engine::stepaction::StepActions,
    config: Config,
}

fn read_case(dir: &Path) -> Case {
    let file = dir.join("input.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let loaded = tektite_api::load_str(&file.display().to_string(), &text);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == tektite_api::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{}: {}",
        file.display(),
        errors.join("\n")
    );
    let mut case = Case {
        mode: "pod".into(),
        now: "2026-11-27T10:00:00Z".parse().unwrap(),
        pods: Vec::new(),
        task_runs: Vec::new(),
        pipeline_runs: Vec::new(),
        pipelines: BTreeMap::new(),
        tasks: BTreeMap::new(),
        images: BTreeMap::new(),
        step_actions: BTreeMap::new(),
        config: Config {
            release: "devel".into(),
            ..Config::default()
        },
    };
    for l in loaded.objects {
        match l.object {
            Object::TaskRun(tr) => case.task_runs.push(*tr),
            Object::Task(t) => {
                case.tasks
                    .insert(t.metadata.name.clone().unwrap_or_default(), *t);
            }
            Object::PipelineRun(pr) => case.pipeline_runs.push(*pr),
            Object::Pipeline(p) => {
                case.pipelines
                    .insert(p.metadata.name.clone().unwrap_or_default(), *p);
            }
            Object::StepAction(sa) => {
                case.step_actions
                    .insert(sa.metadata.name.clone().unwrap_or_default(), sa.spec);
            }
        }
    }
    for doc in yaml::parse_values(&text).unwrap() {
        if doc["kind"] == "Pod" {
            case.pods.push(serde_json::from_value(doc).unwrap());
            continue;
        }
        if doc["kind"] != "EngineTest" {
            continue;
        }
        if let Some(m) = doc["mode"].as_str() {
            case.mode = m.to_string();
        }
        if let Some(n) = doc["now"].as_str() {
            case.now = n.parse().unwrap();
        }
        if let Some(images) = doc["images"].as_object() {
            for (image, v) in images {
                let list = |k: &str| -> Vec<String> {
                    v[k].as_array()
                        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default()
                };
                case.images.insert(
                    image.clone(),
                    ImageCommand {
                        entrypoint: list("entrypoint"),
                        cmd: list("cmd"),
                    },
                );
            }
        }
        if let Some(n) = doc["config"]["maxResultSize"].as_u64() {
            case.config.max_result_size = n as usize;
        }
        if let Some(s) = doc["config"]["defaultTimeoutSeconds"].as_u64() {
            case.config.default_timeout = std::time::Duration::from_secs(s);
        }
    }
    case
}

/// The TaskRun's spec: embedded, or the named Task of the input; with the
/// StepActions of the input its steps name inlined.
fn resolve(case: &Case, tr: &TaskRun) -> Result<(TaskSpec, Option<String>), Failure> {
    let (spec, name) = find_task(case, tr)?;
    let spec = tektite_engine::stepaction::inline(&spec, tr, &case.step_actions)?;
    Ok((spec, name))
}

/// The TaskRun's spec: embedded, or the named Task of the input.
fn find_task(case: &Case, tr: &TaskRun) -> Result<(TaskSpec, Option<String>), Failure> {
    match (&tr.spec.task_spec, &tr.spec.task_ref) {
        (Some(s), _) => Ok(((**s).clone(), None)),
        (None, Some(r)) => {
            let n = r.name.clone().unwrap_or_default();
            match case.tasks.get(&n) {
                Some(t) => Ok((t.spec.clone(), Some(n))),
                None => Err(Failure::new(
                    "CouldntGetTask",
                    format!("tasks.tekton.dev {n:?} not found"),
                )),
            }
        }
        (None, None) => panic!("TaskRun has neither taskRef nor taskSpec"),
    }
}

fn reconcile_outputs(case: &Case) -> Vec<Value> {
    let mut out = Vec::new();
    for tr in &case.task_runs {
        let name = tr.metadata.name.clone().unwrap_or_default();
        let pod_name = tr.status.as_ref().and_then(|s| s.pod_name.clone());
        let pod = case
            .pods
            .iter()
            .find(|p| pod_name.is_some() && p.metadata.name == pod_name);
        let resolved = resolve(case, tr);
        let r = match &resolved {
            Ok((s, n)) => taskrun::Resolved::Spec(s, n.as_deref()),
            Err(f) => taskrun::Resolved::Failed(f),
        };
        let plan = taskrun::reconcile(
            taskrun::Observed {
                task_run: tr,
                resolved: r,
                pod,
                images: &case.images,
                now: case.now,
            },
            &case.config,
        );
        let mut v = serde_json::Map::new();
        v.insert("taskRun".into(), name.into());
        if let Some(p) = &plan.create_pod {
            v.insert("createPod".into(), p.metadata.name.clone().into());
        }
        if !plan.create_claims.is_empty() {
            let names: Vec<_> = plan
                .create_claims
                .iter()
                .map(|c| c.metadata.name.clone())
                .collect();
            v.insert("createClaims".into(), json!(names));
        }
        if let Some(p) = &plan.delete_pod {
            v.insert("deletePod".into(), p.clone().into());
        }
        if let Some(p) = &plan.mark_ready {
            v.insert("markReady".into(), p.clone().into());
        }
        if let Some(s) = &plan.stop_sidecars {
            v.insert(
                "stopSidecars".into(),
                json!({"pod": s.pod, "containers": s.containers, "image": s.image}),
            );
        }
        if !plan.need_images.is_empty() {
            v.insert("needImages".into(), json!(plan.need_images));
        }
        plan_tail(
            &mut v,
            plan.requeue_after,
            &plan.events,
            plan.status.as_ref(),
            "taskSpec",
        );
        out.push(Value::Object(v));
    }
    out
}

/// One reconcile of every PipelineRun, given the TaskRuns of the input as
/// its children (by their `tekton.dev/pipelineRun` label).
fn pipeline_outputs(case: &Case) -> Vec<Value> {
    let mut out = Vec::new();
    let task_specs: BTreeMap<String, TaskSpec> = case
        .tasks
        .iter()
        .map(|(k, t)| (k.clone(), t.spec.clone()))
        .collect();
    for pr in &case.pipeline_runs {
        let name = pr.metadata.name.clone().unwrap_or_default();
        let children: Vec<TaskRun> = case
            .task_runs
            .iter()
            .filter(|t| {
                t.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("tekton.dev/pipelineRun"))
                    == Some(&name)
            })
            .cloned()
            .collect();
        let failure;
        let pipeline = match (&pr.spec.pipeline_spec, &pr.spec.pipeline_ref) {
            (Some(s), _) => Ok((&**s, None)),
            (None, Some(r)) => {
                let n = r.name.as_deref().unwrap_or_default();
                match case.pipelines.get(n) {
                    Some(p) => Ok((&p.spec, Some(n))),
                    None => {
                        failure = Failure::new(
                            "CouldntGetPipeline",
                            format!("pipelines.tekton.dev {n:?} not found"),
                        );
                        Err(&failure)
                    }
                }
            }
            (None, None) => panic!("PipelineRun {name} has neither pipelineRef nor pipelineSpec"),
        };
        let plan = pipelinerun::reconcile(
            pipelinerun::Observed {
                run: pr,
                pipeline,
                tasks: &task_specs,
                children: &children,
                now: case.now,
            },
            &case.config,
        );
        let mut v = serde_json::Map::new();
        v.insert("pipelineRun".into(), name.into());
        if !plan.create.is_empty() {
            let created: Vec<Value> = plan
                .create
                .iter()
                .map(|t| tagged("tekton.dev/v1", "TaskRun", serde_json::to_value(t).unwrap()))
                .collect();
            v.insert("create".into(), Value::Array(created));
        }
        if !plan.create_claims.is_empty() {
            let c: Vec<Value> = plan
                .create_claims
                .iter()
                .map(|c| serde_json::to_value(c).unwrap())
                .collect();
            v.insert("createClaims".into(), Value::Array(c));
        }
        if !plan.cancel.is_empty() {
            let c: Vec<Value> = plan
                .cancel
                .iter()
                .map(|(n, m)| json!({"name": n, "statusMessage": m}))
                .collect();
            v.insert("cancel".into(), Value::Array(c));
        }
        plan_tail(
            &mut v,
            plan.requeue_after,
            &plan.events,
            plan.status.as_ref(),
            "pipelineSpec",
        );
        out.push(Value::Object(v));
    }
    out
}

/// What every plan has: the requeue, the events, and the new status (or
/// `unchanged`), without the resolved spec it carries (that is the input).
fn plan_tail(
    v: &mut serde_json::Map<String, Value>,
    requeue_after: Option<std::time::Duration>,
    events: &[tektite_engine::status::Event],
    status: Option<&impl serde::Serialize>,
    spec_field: &str,
) {
    if let Some(d) = requeue_after {
        v.insert("requeueAfter".into(), pod::go_duration(d).into());
    }
    if !events.is_empty() {
        let ev: Vec<Value> = events
            .iter()
            .map(|e| json!({"type": e.type_, "reason": e.reason, "message": e.message}))
            .collect();
        v.insert("events".into(), Value::Array(ev));
    }
    let status = match status {
        Some(s) => {
            let mut s = serde_json::to_value(s).unwrap();
            if let Some(m) = s.as_object_mut() {
                m.remove(spec_field);
            }
            s
        }
        None => "unchanged".into(),
    };
    v.insert("status".into(), status);
}

fn outputs(case: &Case) -> Vec<Value> {
    if case.mode == "reconcile" {
        return reconcile_outputs(case);
    }
    if case.mode == "pipeline" {
        return pipeline_outputs(case);
    }
    let mut out = Vec::new();
    for tr in &case.task_runs {
        let name = tr.metadata.name.clone().unwrap_or_default();
        let (spec, task_name) = match resolve(case, tr) {
            Ok(x) => x,
            Err(f) => {
                out.push(
                    json!({"taskRun": name, "failed": {"reason": f.reason, "message": f.message}}),
                );
                continue;
            }
        };
        let input = Input {
            task_run: tr,
            spec: &spec,
            task_name: task_name.as_deref(),
            images: &case.images,
        };
        match pod::build(input, &case.config) {
            Ok(plan) => {
                for c in &plan.claims {
                    out.push(tagged(
                        "v1",
                        "PersistentVolumeClaim",
                        serde_json::to_value(c).unwrap(),
                    ));
                }
                out.push(tagged(
                    "v1",
                    "Pod",
                    serde_json::to_value(&plan.pod).unwrap(),
                ));
            }
            Err(BuildError::NeedImages(images)) => {
                out.push(json!({"taskRun": name, "needImages": images}));
            }
            Err(BuildError::Failed(f)) => {
                out.push(
                    json!({"taskRun": name, "failed": {"reason": f.reason, "message": f.message}}),
                );
            }
        }
    }
    out
}

/// `apiVersion` and `kind` first, as Kubernetes writes objects.
fn tagged(api_version: &str, kind: &str, mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        let mut o = serde_json::Map::new();
        o.insert("apiVersion".into(), api_version.into());
        o.insert("kind".into(), kind.into());
        o.extend(std::mem::take(m));
        return Value::Object(o);
    }
    v
}

fn render(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", yaml::to_yaml(d)))
        .collect()
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "expected the golden corpus, found {} cases",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let case = read_case(dir);
        let got = outputs(&case);
        let expected_file = dir.join("expected.yaml");
        if update {
            std::fs::write(&expected_file, render(&got)).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&expected_file).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with UPDATE_GOLDEN=1",
                expected_file.display()
            )
        });
        let want = yaml::parse_values(&text).unwrap();
        if want != got {
            failures.push(format!(
                "{}: output differs from expected.yaml\n--- got:\n{}",
                dir.display(),
                render(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
