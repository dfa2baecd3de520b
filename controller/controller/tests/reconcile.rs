//! The controller's API calls against a mocked API server (kube-rs +
//! tower-test): one scenario per reconcile branch. Each expected call is
//! checked for method, path (and query where it matters) and body, in order;
//! events (`events.k8s.io`) are answered wherever they come and collected. A
//! call that is not expected fails the test, and so does an expected call
//! that never comes.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tektite_api::v1::{PipelineRun, TaskRun};
use tektite_controller::{Context, Error, backoff, pipelinerun, taskrun};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A check of a call's query string and body.
type Check = Box<dyn Fn(&str, &Value) + Send>;

/// One expected call: method, path, a check of the query and body, and the
/// answer (status, body).
struct Call {
    method: &'static str,
    path: String,
    check: Check,
    /// The request's `Content-Type`, where it matters (patch kinds).
    content_type: Option<&'static str>,
    status: u16,
    answer: Value,
}

fn call(method: &'static str, path: impl Into<String>, status: u16, answer: Value) -> Call {
    Call {
        method,
        path: path.into(),
        check: Box::new(|_, _| {}),
        content_type: None,
        status,
        answer,
    }
}

impl Call {
    /// Checks the query string and the request body.
    fn check(mut self, f: impl Fn(&str, &Value) + Send + 'static) -> Call {
        self.check = Box::new(f);
        self
    }

    /// Checks the request's `Content-Type`.
    fn content_type(mut self, t: &'static str) -> Call {
        self.content_type = Some(t);
        self
    }
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
           "code": 404, "message": format!("{what} not found"), "metadata": {}})
}

fn status_error(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "code": code, "message": reason, "metadata": {}})
}

/// Answers the calls in order; returns the events recorded.
async fn serve(mut handle: Handle, calls: Vec<Call>) -> Vec<Value> {
    let mut calls = VecDeque::from(calls);
    let mut events = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let respond = |status: u16, v: &Value| {
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .body(Body::from(serde_json::to_vec(v).unwrap()))
                .unwrap()
        };
        if path.starts_with("/apis/events.k8s.io/") {
            send.send_response(respond(201, &body));
            events.push(body);
            continue;
        }
        let c = calls
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected call: {method} {path}?{query} {body}"));
        assert_eq!(
            (method.as_str(), path.as_str()),
            (c.method, c.path.as_str()),
            "query {query}, body {body}"
        );
        if let Some(t) = c.content_type {
            assert_eq!(content_type, t, "{method} {path}");
        }
        (c.check)(&query, &body);
        // `Null`: answer as the API server would, with the object written.
        let answer = if c.answer.is_null() {
            echo(&path, body)
        } else {
            c.answer
        };
        send.send_response(respond(c.status, &answer));
    }
    let left: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(left.is_empty(), "expected calls that never came: {left:?}");
    events
}

/// The object a create or patch wrote, as the API server returns it (a
/// status patch names no metadata: the path does).
fn echo(path: &str, mut body: Value) -> Value {
    if body.get("metadata").is_none() {
        let name = path
            .trim_end_matches("/status")
            .rsplit('/')
            .next()
            .unwrap_or_default();
        body["metadata"] = json!({"name": name, "namespace": "ci"});
    }
    if body.get("spec").is_none() && body["kind"] != "Event" {
        body["spec"] = json!({});
    }
    body
}

/// A fake image lookup: no test here looks images up.
struct NoImages;

impl tektite_oci::ImageLookup for NoImages {
    fn lookup<'a>(
        &'a self,
        image: &'a str,
        _creds: Option<&'a tektite_oci::Credentials>,
    ) -> tektite_oci::LookupFuture<'a> {
        Box::pin(async move { panic!("unexpected image lookup of {image}") })
    }
}

fn now() -> Timestamp {
    "2026-11-27T10:00:00Z".parse().unwrap()
}

/// Runs `f` (a reconcile) against `calls`; returns its outcome and the events.
async fn scenario<F, Fut>(calls: Vec<Call>, f: F) -> (Result<Action, Error>, Vec<Value>)
where
    F: FnOnce(Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, calls));
    let mut ctx = Context::new(Client::new(svc, "default"), Arc::new(NoImages));
    ctx.now = now;
    // The repositories these tests make are file:// ones, which the
    // controller itself refuses (see tektite-resolve's tests).
    ctx.resolution =
        tektite_controller::resolution::Resolution::with_options(tektite_resolve::Options {
            machine: true,
            ..Default::default()
        })
        .ok()
        .map(Arc::new);
    let ctx = Arc::new(ctx);
    let out = tokio::time::timeout(Duration::from_secs(5), f(ctx))
        .await
        .expect("the reconcile hung: a call was not answered");
    let events = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the mock API server did not finish")
        .unwrap();
    (out, events)
}

fn task() -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "Task",
           "metadata": {"name": "greet", "namespace": "ci"},
           "spec": {"steps": [{"name": "say", "image": "alpine", "command": ["echo", "hello"]}]}})
}

fn task_run(extra: Value) -> TaskRun {
    let mut v = json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
        "metadata": {"name": "greet-run", "namespace": "ci", "uid": "1111"},
        "spec": {"taskRef": {"name": "greet"}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn condition(status: &Value) -> (String, String) {
    let c = &status["conditions"][0];
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

const TASKS: &str = "/apis/tekton.dev/v1/namespaces/ci/tasks";
const TASK_RUNS: &str = "/apis/tekton.dev/v1/namespaces/ci/taskruns";
const PODS: &str = "/api/v1/namespaces/ci/pods";

/// A write of the status of run `name` under `runs`, answered with what
/// was written.
fn writes_status(runs: &str, name: &str) -> Call {
    call("PATCH", format!("{runs}/{name}/status"), 200, Value::Null)
}

/// Asserts an event with `reason` was recorded.
fn assert_event(events: &[Value], reason: &str) {
    assert!(events.iter().any(|e| e["reason"] == reason), "{events:?}");
}

/// A server-side apply of the status, as the one field manager, forced.
fn is_status_apply(query: &str) {
    assert!(query.contains("fieldManager=tektite-controller"), "{query}");
    assert!(query.contains("force=true"), "{query}");
}

#[tokio::test]
async fn a_new_taskrun_gets_its_pod_and_a_running_status() {
    let tr = task_run(json!({}));
    let calls = vec![
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pods \"greet-run-pod\""),
        ),
        call("POST", PODS, 201, Value::Null).check(|_, pod| {
            assert_eq!(pod["metadata"]["name"], "greet-run-pod");
            assert_eq!(pod["metadata"]["labels"]["tekton.dev/taskRun"], "greet-run");
            assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "TaskRun");
            assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "1111");
            assert_eq!(pod["spec"]["containers"][0]["name"], "step-say");
        }),
        writes_status(TASK_RUNS, "greet-run").check(|q, body| {
            is_status_apply(q);
            assert_eq!(body["kind"], "TaskRun");
            assert_eq!(body["status"]["podName"], "greet-run-pod");
            assert_eq!(condition(&body["status"]).0, "Unknown");
        }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    let action = out.unwrap();
    // Requeued at the default timeout (1 h), not left to a watch alone.
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    assert_event(&events, "Started");
}

#[tokio::test]
async fn a_missing_task_fails_the_run_without_retry() {
    let tr = task_run(json!({}));
    let calls = vec![
        call(
            "GET",
            format!("{TASKS}/greet"),
            404,
            not_found("tasks.tekton.dev \"greet\""),
        ),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        writes_status(TASK_RUNS, "greet-run").check(|q, body| {
            is_status_apply(q);
            assert_eq!(
                condition(&body["status"]),
                ("False".to_string(), "CouldntGetTask".to_string())
            );
        }),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
}

const STEP_ACTIONS: &str = "/apis/tekton.dev/v1beta1/namespaces/ci/stepactions";

/// A Task whose one step runs the StepAction `say-it` with a param.
fn task_with_step_action() -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "Task",
           "metadata": {"name": "greet", "namespace": "ci"},
           "spec": {"params": [{"name": "who", "default": "world"}],
                    "steps": [{"name": "say", "ref": {"name": "say-it"},
                               "params": [{"name": "text", "value": "hello $(params.who)"}]}]}})
}

#[tokio::test]
async fn a_step_action_is_read_and_inlined_into_the_pod() {
    let tr = task_run(json!({}));
    let action = json!({"apiVersion": "tekton.dev/v1beta1", "kind": "StepAction",
        "metadata": {"name": "say-it", "namespace": "ci"},
        "spec": {"image": "alpine", "params": [{"name": "text"}],
                 "command": ["echo"], "args": ["$(params.text)"]}});
    let calls = vec![
        call(
            "GET",
            format!("{TASKS}/greet"),
            200,
            task_with_step_action(),
        ),
        call("GET", format!("{STEP_ACTIONS}/say-it"), 200, action),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pods \"greet-run-pod\""),
        ),
        call("POST", PODS, 201, Value::Null).check(|_, pod| {
            let c = &pod["spec"]["containers"][0];
            assert_eq!(c["name"], "step-say");
            assert_eq!(c["image"], "alpine");
            let args: Vec<&str> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert!(args.ends_with(&["echo", "--", "hello world"]), "{args:?}");
        }),
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            // The status keeps the spec as run: the step inlined.
            let step = &body["status"]["taskSpec"]["steps"][0];
            assert_eq!(step["image"], "alpine");
            assert!(step.get("ref").is_none(), "{step}");
        }),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    out.unwrap();
}

#[tokio::test]
async fn a_missing_step_action_fails_the_run_without_retry() {
    let tr = task_run(json!({}));
    let calls = vec![
        call(
            "GET",
            format!("{TASKS}/greet"),
            200,
            task_with_step_action(),
        ),
        call(
            "GET",
            format!("{STEP_ACTIONS}/say-it"),
            404,
            not_found("stepactions.tekton.dev \"say-it\""),
        ),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("False".to_string(), "TaskRunResolutionFailed".to_string())
            );
            let m = body["status"]["conditions"][0]["message"].as_str().unwrap();
            assert!(m.contains("\"say-it\" not found"), "{m}");
        }),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_pod_that_exists_already_is_not_created_twice() {
    // A replayed event or a restarted controller: the POST answers 409.
    let tr = task_run(json!({}));
    let calls = vec![
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 409, status_error(409, "AlreadyExists")),
        writes_status(TASK_RUNS, "greet-run"),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
}

#[tokio::test]
async fn a_server_error_is_returned_for_a_retry_with_backoff() {
    let tr = task_run(json!({}));
    let calls = vec![
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 500, status_error(500, "InternalError")),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    let err = out.unwrap_err();
    assert!(
        matches!(&err, Error::Kube(kube::Error::Api(s)) if s.code == 500),
        "{err:?}"
    );
    assert_eq!(backoff(&err), Duration::from_secs(10));
    // Nothing after the failed call: no status, no event.
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn a_conflict_is_retried_at_once() {
    let tr = task_run(json!({}));
    let calls = vec![
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 201, Value::Null),
        call(
            "PATCH",
            format!("{TASK_RUNS}/greet-run/status"),
            409,
            status_error(409, "Conflict"),
        ),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(backoff(&out.unwrap_err()), Duration::from_secs(1));
}

/// The golden case `tr-03`: a finished pod whose steps reported through
/// annotations; the TaskRun's status takes their results.
#[tokio::test]
async fn step_annotations_become_the_taskrun_status() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/golden/tr-03-succeeded-with-results/input.yaml"
    ))
    .unwrap();
    let mut docs = tektite_api::yaml::parse_values(&text).unwrap();
    own_children(&mut docs);
    let find = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
    let mut task = find("Task");
    task["metadata"]["namespace"] = json!("ci");
    let mut run = find("TaskRun");
    run["metadata"]["namespace"] = json!("ci");
    let tr: TaskRun = serde_json::from_value(run).unwrap();
    let pod = find("Pod");
    let calls = vec![
        call("GET", format!("{TASKS}/two-steps"), 200, task),
        call("GET", format!("{PODS}/done-pod"), 200, pod),
        writes_status(TASK_RUNS, "done").check(|q, body| {
            is_status_apply(q);
            let st = &body["status"];
            assert_eq!(condition(st), ("True".to_string(), "Succeeded".to_string()));
            let results: Vec<&str> = st["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap())
                .collect();
            assert_eq!(results, ["digest", "tags", "meta", "from-step"]);
            assert_eq!(st["results"][1]["value"], json!(["v1", "latest"]));
        }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "Succeeded");
}

#[tokio::test]
async fn a_finished_taskrun_makes_no_call() {
    let tr = task_run(json!({"status": {"conditions": [
        {"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "",
         "lastTransitionTime": "2026-11-27T09:00:00Z"}]}}));
    let (out, events) = scenario(vec![], |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert!(events.is_empty());
}

// ---- PipelineRuns ----

const PIPELINES: &str = "/apis/tekton.dev/v1/namespaces/ci/pipelines";
const PIPELINE_RUNS: &str = "/apis/tekton.dev/v1/namespaces/ci/pipelineruns";

fn pipeline() -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "Pipeline",
           "metadata": {"name": "build", "namespace": "ci"},
           "spec": {"tasks": [
               {"name": "first", "taskRef": {"name": "greet"}},
               {"name": "second", "taskRef": {"name": "greet"}, "runAfter": ["first"]}]}})
}

fn pipeline_run(extra: Value) -> PipelineRun {
    let mut v = json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": "build-run", "namespace": "ci", "uid": "2222"},
        "spec": {"pipelineRef": {"name": "build"}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRunList", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn children_query(q: &str) {
    assert!(
        q.contains("labelSelector=tekton.dev%2FpipelineRun%3Dbuild-run"),
        "{q}"
    );
}

#[tokio::test]
async fn a_new_pipelinerun_creates_its_first_taskrun() {
    let pr = pipeline_run(json!({}));
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call("GET", TASK_RUNS, 200, list(vec![])).check(|q, _| children_query(q)),
        call("POST", TASK_RUNS, 201, Value::Null).check(|_, tr| {
            assert_eq!(tr["metadata"]["name"], "build-run-first");
            assert_eq!(
                tr["metadata"]["labels"]["tekton.dev/pipelineRun"],
                "build-run"
            );
            assert_eq!(tr["metadata"]["labels"]["tekton.dev/pipelineTask"], "first");
            assert_eq!(tr["metadata"]["ownerReferences"][0]["uid"], "2222");
            assert_eq!(tr["spec"]["taskRef"]["name"], "greet");
        }),
        writes_status(PIPELINE_RUNS, "build-run").check(|q, body| {
            is_status_apply(q);
            assert_eq!(body["kind"], "PipelineRun");
            assert_eq!(condition(&body["status"]).0, "Unknown");
            assert_eq!(
                body["status"]["childReferences"][0]["name"],
                "build-run-first"
            );
        }),
    ];
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
}

fn child(name: &str, task: &str, status: &str, reason: &str) -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
        "metadata": {"name": name, "namespace": "ci",
                     "labels": {"tekton.dev/pipelineRun": "build-run", "tekton.dev/pipelineTask": task},
                     "ownerReferences": [{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
                                          "name": "build-run", "uid": "2222", "controller": true}]},
        "spec": {"taskRef": {"name": "greet"}},
        "status": {"podName": format!("{name}-pod"), "startTime": "2026-11-27T09:59:00Z",
                   "conditions": [{"type": "Succeeded", "status": status, "reason": reason, "message": "",
                                   "lastTransitionTime": "2026-11-27T09:59:30Z"}]}})
}

fn started() -> Value {
    json!({"status": {"startTime": "2026-11-27T09:59:00Z",
        "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": "",
                        "lastTransitionTime": "2026-11-27T09:59:00Z"}],
        "childReferences": [{"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                             "name": "build-run-first", "pipelineTaskName": "first"}]}})
}

#[tokio::test]
async fn a_finished_child_starts_the_next_and_a_restart_duplicates_nothing() {
    // The first TaskRun succeeded: the second is created, once.
    let pr = pipeline_run(started());
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            TASK_RUNS,
            200,
            list(vec![child("build-run-first", "first", "True", "Succeeded")]),
        ),
        call("POST", TASK_RUNS, 201, Value::Null).check(|_, tr| {
            assert_eq!(tr["metadata"]["name"], "build-run-second");
        }),
        writes_status(PIPELINE_RUNS, "build-run"),
    ];
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");

    // After a restart both children exist: no POST at all.
    let mut st = started();
    st["status"]["childReferences"]
        .as_array_mut()
        .unwrap()
        .push(json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "build-run-second", "pipelineTaskName": "second"}));
    let pr = pipeline_run(st);
    let children = || {
        list(vec![
            child("build-run-first", "first", "True", "Succeeded"),
            child("build-run-second", "second", "Unknown", "Running"),
        ])
    };
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let keep = written.clone();
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call("GET", TASK_RUNS, 200, children()),
        // The counts in the message change; no TaskRun is created.
        writes_status(PIPELINE_RUNS, "build-run").check(move |_, body| {
            let refs = body["status"]["childReferences"].as_array().unwrap();
            assert_eq!(refs.len(), 2, "{body}");
            *keep.lock().unwrap() = body["status"].clone();
        }),
    ];
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");

    // Replayed with the status it wrote: reads only, no write at all.
    let status = written.lock().unwrap().clone();
    let pr = pipeline_run(json!({"status": status}));
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call("GET", TASK_RUNS, 200, children()),
    ];
    let (out, events) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn cancelling_a_pipelinerun_cancels_its_running_taskruns() {
    let mut extra = started();
    merge(&mut extra, json!({"spec": {"status": "Cancelled"}}));
    let pr = pipeline_run(extra);
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            TASK_RUNS,
            200,
            list(vec![child(
                "build-run-first",
                "first",
                "Unknown",
                "Running",
            )]),
        ),
        call(
            "PATCH",
            format!("{TASK_RUNS}/build-run-first"),
            200,
            Value::Null,
        )
        .check(|_, body| {
            assert_eq!(body["spec"]["status"], "TaskRunCancelled");
            assert!(
                body["spec"]["statusMessage"]
                    .as_str()
                    .unwrap()
                    .contains("cancelled"),
                "{body}"
            );
        }),
        writes_status(PIPELINE_RUNS, "build-run"),
    ];
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
}

#[tokio::test]
async fn a_missing_pipeline_fails_the_run_without_retry() {
    let pr = pipeline_run(json!({}));
    let calls = vec![
        call(
            "GET",
            format!("{PIPELINES}/build"),
            404,
            not_found("pipelines.tekton.dev \"build\""),
        ),
        call("GET", TASK_RUNS, 200, list(vec![])),
        writes_status(PIPELINE_RUNS, "build-run").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("False".to_string(), "CouldntGetPipeline".to_string())
            );
        }),
    ];
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
}

/// The documents of an engine golden case's input, in the `ci` namespace.
fn golden(case: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!(
        "{}/../engine/tests/golden/{case}/input.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut docs = tektite_api::yaml::parse_values(&text).unwrap();
    docs.retain(|d| d["kind"] != "EngineTest");
    for d in &mut docs {
        d["metadata"]["namespace"] = json!("ci");
    }
    own_children(&mut docs);
    docs
}

/// Gives a golden case's runs UIDs and makes its pods and child TaskRuns
/// their runs' own (controller ownerReferences), as the controller creates
/// them: the engine's cases leave ownership out.
fn own_children(docs: &mut [Value]) {
    for d in docs.iter_mut() {
        if matches!(d["kind"].as_str(), Some("TaskRun" | "PipelineRun"))
            && d["metadata"]["uid"].is_null()
        {
            d["metadata"]["uid"] =
                json!(format!("uid-{}", d["metadata"]["name"].as_str().unwrap()));
        }
    }
    let owner = |d: &Value| {
        json!([{"apiVersion": "tekton.dev/v1", "kind": d["kind"], "name": d["metadata"]["name"],
                "uid": d["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
    };
    let runs: Vec<Value> = docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("TaskRun" | "PipelineRun")))
        .cloned()
        .collect();
    for d in docs.iter_mut() {
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        let parent = match d["kind"].as_str() {
            Some("Pod") => runs.iter().find(|r| {
                let run = r["metadata"]["name"].as_str().unwrap_or("");
                r["kind"] == "TaskRun"
                    && (r["status"]["podName"] == name.as_str()
                        || name == format!("{run}-pod")
                        || name.starts_with(&format!("{run}-pod-retry")))
            }),
            Some("TaskRun") => runs.iter().find(|r| {
                r["kind"] == "PipelineRun"
                    && d["metadata"]["labels"]["tekton.dev/pipelineRun"] == r["metadata"]["name"]
            }),
            _ => None,
        };
        if let Some(p) = parent {
            d["metadata"]["ownerReferences"] = owner(p);
        }
    }
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A GET of a golden case's object under `base`, answered with it.
fn get_golden(docs: &[Value], base: &str, kind: &str, name: &str) -> Call {
    call(
        "GET",
        format!("{base}/{name}"),
        200,
        named(docs, kind, name).clone(),
    )
}

/// Golden case `tr-12`: past its timeout, the pod is deleted and the run
/// fails with TaskRunTimeout.
#[tokio::test]
async fn a_run_past_its_timeout_loses_its_pod() {
    let docs = golden("tr-12-timeout");
    let tr: TaskRun = serde_json::from_value(named(&docs, "TaskRun", "slow").clone()).unwrap();
    let calls = vec![
        get_golden(&docs, TASKS, "Task", "one"),
        get_golden(&docs, PODS, "Pod", "slow-pod"),
        call(
            "DELETE",
            format!("{PODS}/slow-pod"),
            200,
            named(&docs, "Pod", "slow-pod").clone(),
        ),
        writes_status(TASK_RUNS, "slow").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("False".to_string(), "TaskRunTimeout".to_string())
            );
        }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "TaskRunTimeout");
}

/// Golden case `tr-15`: a failed attempt with a retry left is archived
/// (ToBeRetried); the next reconcile creates the `-retry1` pod.
#[tokio::test]
async fn a_failed_attempt_is_retried_with_a_new_pod() {
    let docs = golden("tr-15-retries");
    let task = named(&docs, "Task", "one").clone();
    let tr: TaskRun = serde_json::from_value(named(&docs, "TaskRun", "again").clone()).unwrap();
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let keep = written.clone();
    let calls = vec![
        call("GET", format!("{TASKS}/one"), 200, task.clone()),
        get_golden(&docs, PODS, "Pod", "again-pod"),
        writes_status(TASK_RUNS, "again").check(move |_, body| {
            let st = &body["status"];
            assert_eq!(
                condition(st),
                ("Unknown".to_string(), "ToBeRetried".to_string())
            );
            assert_eq!(st["retriesStatus"].as_array().unwrap().len(), 1, "{st}");
            *keep.lock().unwrap() = st.clone();
        }),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr.clone()), ctx)).await;
    assert!(out.is_ok(), "{out:?}");

    let mut again = tr;
    again.status = Some(serde_json::from_value(written.lock().unwrap().clone()).unwrap());
    let calls = vec![
        call("GET", format!("{TASKS}/one"), 200, task),
        call(
            "GET",
            format!("{PODS}/again-pod-retry1"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 201, Value::Null).check(|_, pod| {
            assert_eq!(pod["metadata"]["name"], "again-pod-retry1");
        }),
        writes_status(TASK_RUNS, "again").check(|_, body| {
            assert_eq!(body["status"]["podName"], "again-pod-retry1");
        }),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(again), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
}

/// `StoppedRunFinally` and `CancelledRunFinally`: running children are let
/// finish (Stopped) or cancelled (Cancelled), nothing new but finally starts.
#[tokio::test]
async fn the_graceful_cancel_modes() {
    for (mode, cancels) in [("StoppedRunFinally", false), ("CancelledRunFinally", true)] {
        let mut extra = started();
        merge(&mut extra, json!({"spec": {"status": mode}}));
        let pr = pipeline_run(extra);
        let mut calls = vec![
            call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
            call("GET", format!("{TASKS}/greet"), 200, task()),
            call(
                "GET",
                TASK_RUNS,
                200,
                list(vec![child(
                    "build-run-first",
                    "first",
                    "Unknown",
                    "Running",
                )]),
            ),
        ];
        if cancels {
            calls.push(
                call(
                    "PATCH",
                    format!("{TASK_RUNS}/build-run-first"),
                    200,
                    Value::Null,
                )
                .check(|_, body| {
                    assert_eq!(body["spec"]["status"], "TaskRunCancelled");
                }),
            );
        }
        calls.push(
            writes_status(PIPELINE_RUNS, "build-run").check(move |_, body| {
                // Still running (the child has not finished), and `second`
                // was never created.
                assert_eq!(condition(&body["status"]).0, "Unknown", "{mode}: {body}");
                assert_eq!(
                    body["status"]["childReferences"].as_array().unwrap().len(),
                    1
                );
            }),
        );
        let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
        assert!(out.is_ok(), "{mode}: {out:?}");
    }
}

/// Golden case `tr-13`: `spec.status: TaskRunCancelled` deletes the pod and
/// ends the run `TaskRunCancelled` with the status message; no retry.
#[tokio::test]
async fn a_cancelled_taskrun_loses_its_pod() {
    let docs = golden("tr-13-cancelled");
    let tr: TaskRun = serde_json::from_value(named(&docs, "TaskRun", "stopme").clone()).unwrap();
    let calls = vec![
        get_golden(&docs, TASKS, "Task", "one"),
        get_golden(&docs, PODS, "Pod", "stopme-pod"),
        call(
            "DELETE",
            format!("{PODS}/stopme-pod"),
            200,
            named(&docs, "Pod", "stopme-pod").clone(),
        ),
        writes_status(TASK_RUNS, "stopme")
            .content_type("application/apply-patch+yaml")
            .check(|q, body| {
                is_status_apply(q);
                let st = &body["status"];
                assert_eq!(
                    condition(st),
                    ("False".to_string(), "TaskRunCancelled".to_string())
                );
                let message = st["conditions"][0]["message"].as_str().unwrap();
                assert!(
                    message.contains("the PipelineRun it belongs to has been cancelled"),
                    "{message}"
                );
                // The running step and sidecar are recorded as ended by the
                // cancel (the pod is deleted, not stopped: no sidecar patch).
                assert_eq!(
                    st["steps"][0]["terminationReason"], "TaskRunCancelled",
                    "{st}"
                );
                assert_eq!(
                    st["sidecars"][0]["terminated"]["reason"], "TaskRunCancelled",
                    "{st}"
                );
            }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "TaskRunCancelled");
}

/// The stop of the sidecar `db` of the golden pod `side-pod`: its image
/// swapped for the entrypoint image and the pod annotated, by a strategic
/// merge patch.
fn stops_sidecar_db() -> Call {
    call("PATCH", format!("{PODS}/side-pod"), 200, Value::Null)
        .content_type("application/strategic-merge-patch+json")
        .check(|_, body| {
            assert_eq!(
                *body,
                json!({"metadata": {"annotations": {"tektite.dev/sidecars-stopped": "true"}},
                       "spec": {"containers": [
                    {"name": "sidecar-db", "image": "localhost/tektite/entrypoint:latest"}]}})
            );
        })
}

/// Golden case `tr-21`: every step has ended while a sidecar still runs.
/// The run succeeds, and the running sidecar (not the one that ended) is
/// stopped by a strategic merge patch of its image, before the status.
#[tokio::test]
async fn sidecars_still_running_after_the_steps_are_stopped() {
    let docs = golden("tr-21-sidecars-stopped");
    let tr: TaskRun = serde_json::from_value(named(&docs, "TaskRun", "side").clone()).unwrap();
    let calls = vec![
        get_golden(&docs, PODS, "Pod", "side-pod"),
        stops_sidecar_db(),
        writes_status(TASK_RUNS, "side").check(|_, body| {
            let st = &body["status"];
            assert_eq!(condition(st), ("True".to_string(), "Succeeded".to_string()));
        }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr.clone()), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "Succeeded");

    // The pod went first (404): nothing left to stop, the status is
    // written all the same.
    let calls = vec![
        get_golden(&docs, PODS, "Pod", "side-pod"),
        call(
            "PATCH",
            format!("{PODS}/side-pod"),
            404,
            not_found("pods \"side-pod\""),
        ),
        writes_status(TASK_RUNS, "side"),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr.clone()), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());

    // Refused (403, an admission webhook say): a Warning event, and the
    // run ends all the same.
    let calls = vec![
        get_golden(&docs, PODS, "Pod", "side-pod"),
        call(
            "PATCH",
            format!("{PODS}/side-pod"),
            403,
            status_error(403, "Forbidden"),
        ),
        writes_status(TASK_RUNS, "side").check(|_, body| {
            assert_eq!(condition(&body["status"]).1, "Succeeded");
        }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr.clone()), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "SidecarsNotStopped" && e["type"] == "Warning"),
        "{events:?}"
    );

    // A 500 on the stop: the error goes back for a retry and the status
    // is not written, so the next reconcile stops the sidecar again.
    let calls = vec![
        get_golden(&docs, PODS, "Pod", "side-pod"),
        call(
            "PATCH",
            format!("{PODS}/side-pod"),
            500,
            status_error(500, "InternalError"),
        ),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert!(out.is_err(), "{out:?}");
}

/// Golden case `pr-14`: past `timeouts.pipeline`, the running TaskRun is
/// cancelled with the timed-out message, the rest (finally included) is
/// skipped, and the run fails `PipelineRunTimeout`, not retried.
#[tokio::test]
async fn a_pipelinerun_past_its_timeout_cancels_its_taskruns() {
    let docs = golden("pr-14-pipeline-timeout");
    let pr: PipelineRun =
        serde_json::from_value(named(&docs, "PipelineRun", "to1").clone()).unwrap();
    let calls = vec![
        get_golden(&docs, PIPELINES, "Pipeline", "three"),
        get_golden(&docs, TASKS, "Task", "unit"),
        call(
            "GET",
            TASK_RUNS,
            200,
            list(vec![named(&docs, "TaskRun", "to1-a").clone()]),
        )
        .check(|q, _| {
            assert!(
                q.contains("labelSelector=tekton.dev%2FpipelineRun%3Dto1"),
                "{q}"
            );
        }),
        call("PATCH", format!("{TASK_RUNS}/to1-a"), 200, Value::Null)
            .content_type("application/merge-patch+json")
            .check(|_, body| {
                assert_eq!(
                    *body,
                    json!({"spec": {"status": "TaskRunCancelled", "statusMessage":
                        "TaskRun cancelled as the PipelineRun it belongs to has timed out."}})
                );
            }),
        writes_status(PIPELINE_RUNS, "to1").check(|q, body| {
            is_status_apply(q);
            let st = &body["status"];
            assert_eq!(
                condition(st),
                ("False".to_string(), "PipelineRunTimeout".to_string())
            );
            let skipped: Vec<&str> = st["skippedTasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert_eq!(skipped, ["b", "report"], "{st}");
        }),
    ];
    let (out, events) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "PipelineRunTimeout");
}

/// Golden case `tr-24`: a finished run whose status saw its sidecar
/// running; its pod's sidecar has ended (stopped): the sidecars' final
/// states are written by a merge patch of `status.sidecars` alone (the
/// cached run is trimmed), and nothing else.
#[tokio::test]
async fn a_finished_run_records_its_stopped_sidecars() {
    let docs = golden("tr-24-finished-sidecars-recorded");
    let mut tr: TaskRun = serde_json::from_value(named(&docs, "TaskRun", "side").clone()).unwrap();
    tektite_controller::trim_task_run(&mut tr);
    let calls = vec![
        get_golden(&docs, PODS, "Pod", "side-pod"),
        writes_status(TASK_RUNS, "side")
            .content_type("application/merge-patch+json")
            .check(|_, body| {
                assert_eq!(
                    body["status"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .collect::<Vec<_>>(),
                    ["sidecars"],
                    "{body}"
                );
                let db = &body["status"]["sidecars"][0];
                assert_eq!(db["name"], "db");
                assert_eq!(db["terminated"]["exitCode"], 128, "{body}");
            }),
    ];
    let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr.clone()), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert!(events.is_empty(), "{events:?}");

    // Recorded: the next reconcile makes no call at all.
    let mut recorded = tr;
    let st = recorded.status.as_mut().unwrap();
    st.sidecars[0].running = None;
    st.sidecars[0].terminated = Some(Default::default());
    let (out, _) = scenario(vec![], |ctx| taskrun::reconcile(Arc::new(recorded), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
}

/// Golden case `tr-25`: a finished run whose sidecar still runs its own
/// image (its stop was refused when the run ended) is stopped now; the
/// status is left until the sidecar has ended.
#[tokio::test]
async fn a_finished_run_stops_a_sidecar_still_running() {
    let docs = golden("tr-25-finished-sidecar-still-running");
    let tr: TaskRun = serde_json::from_value(named(&docs, "TaskRun", "side").clone()).unwrap();
    let calls = vec![
        get_golden(&docs, PODS, "Pod", "side-pod"),
        stops_sidecar_db(),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
}

// ---- Ownership and step reports ----

/// A pod named as `greet-run`'s first attempt: running, its step reported
/// with a result, and made by someone else (`owner`: its ownerReferences).
fn pod_named_like_greet_runs(owner: Value) -> Value {
    let report = json!({"step": "step-say", "exitCode": 0, "reason": "Completed",
                        "results": [{"name": "digest", "kind": "task", "value": "sha256:injected"}]});
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "greet-run-pod", "namespace": "ci", "uid": "3333",
                     "labels": {"tekton.dev/taskRun": "greet-run"},
                     "annotations": {"tektite.dev/step.step-say": report.to_string()},
                     "ownerReferences": owner},
        "spec": {"containers": [{"name": "step-say", "image": "alpine"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "step-say", "image": "alpine", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                      "startedAt": "2026-11-27T09:59:05Z", "finishedAt": "2026-11-27T09:59:06Z"}}}]}})
}

fn running_status() -> Value {
    json!({"status": {"startTime": "2026-11-27T09:59:00Z", "podName": "greet-run-pod",
        "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": "",
                        "lastTransitionTime": "2026-11-27T09:59:00Z"}]}})
}

/// Asserts a status write ends the run with `reason` and took nothing of
/// the pod (no steps, no results).
fn ends_without_the_pod(reason: &'static str) -> impl Fn(&str, &Value) + Send + 'static {
    move |_, body| {
        let st = &body["status"];
        assert_eq!(
            condition(st),
            ("False".to_string(), reason.to_string()),
            "{st}"
        );
        assert!(st["results"].as_array().is_none_or(Vec::is_empty), "{st}");
        assert!(st["steps"].as_array().is_none_or(Vec::is_empty), "{st}");
    }
}

/// A pod named `<taskrun>-pod` that the TaskRun does not control (no
/// ownerReference, or another object's UID) is never deleted, patched or
/// read into the run: a cancel or timeout ends the run without touching
/// it, and a run that needs its pod fails, its name being taken.
#[tokio::test]
async fn taskrun_never_adopts_or_deletes_a_pod_it_does_not_own() {
    let strangers = [
        json!(null),
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "1111",
                "controller": false}]),
        json!([{"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "greet-run",
                "uid": "9999", "controller": true}]),
    ];
    for owner in strangers {
        let pod = pod_named_like_greet_runs(owner.clone());
        // Cancelled: ends TaskRunCancelled, no DELETE.
        let mut extra = running_status();
        merge(&mut extra, json!({"spec": {"status": "TaskRunCancelled"}}));
        let calls = vec![
            call("GET", format!("{TASKS}/greet"), 200, task()),
            call("GET", format!("{PODS}/greet-run-pod"), 200, pod.clone()),
            writes_status(TASK_RUNS, "greet-run").check(ends_without_the_pod("TaskRunCancelled")),
        ];
        let tr = task_run(extra);
        let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
        assert_eq!(out.unwrap(), Action::await_change(), "{owner}");

        // Past its timeout: ends TaskRunTimeout, no DELETE.
        let mut extra = running_status();
        merge(&mut extra, json!({"spec": {"timeout": "30s"}}));
        let calls = vec![
            call("GET", format!("{TASKS}/greet"), 200, task()),
            call("GET", format!("{PODS}/greet-run-pod"), 200, pod.clone()),
            writes_status(TASK_RUNS, "greet-run").check(ends_without_the_pod("TaskRunTimeout")),
        ];
        let tr = task_run(extra);
        let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
        assert_eq!(out.unwrap(), Action::await_change(), "{owner}");

        // New or running: the pod's steps and results are not the run's,
        // no pod is created, and the run fails naming the pod.
        for extra in [json!({}), running_status()] {
            let calls = vec![
                call("GET", format!("{TASKS}/greet"), 200, task()),
                call("GET", format!("{PODS}/greet-run-pod"), 200, pod.clone()),
                writes_status(TASK_RUNS, "greet-run").check(|q, body| {
                    is_status_apply(q);
                    ends_without_the_pod("PodCreationFailed")(q, body);
                    let message = body["status"]["conditions"][0]["message"].as_str().unwrap();
                    assert!(
                        message.contains(r#"pod "greet-run-pod" exists and is not controlled by TaskRun "greet-run""#),
                        "{message}"
                    );
                }),
            ];
            let tr = task_run(extra);
            let (out, events) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
            assert_eq!(out.unwrap(), Action::await_change(), "{owner}");
            assert_event(&events, "PodCreationFailed");
        }

        // Finished with a live sidecar: no sidecar of that pod is stopped.
        let mut sidecar_pod = pod.clone();
        sidecar_pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar-db", "image": "postgres"}));
        sidecar_pod["status"]["containerStatuses"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"name": "sidecar-db", "image": "postgres", "imageID": "", "ready": true,
                         "restartCount": 0, "state": {"running": {}}}),
            );
        let tr = task_run(json!({"status": {"podName": "greet-run-pod",
            "sidecars": [{"name": "db", "container": "sidecar-db", "running": {}}],
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "",
                            "lastTransitionTime": "2026-11-27T09:59:30Z"}]}}));
        let calls = vec![call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            200,
            sidecar_pod,
        )];
        let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
        assert_eq!(out.unwrap(), Action::await_change(), "{owner}");
    }
}

fn greet_runs_own() -> Value {
    json!([{"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "greet-run",
            "uid": "1111", "controller": true}])
}

/// The run's own pod whose step `say` ended with `exit_code` (the
/// kubelet's), with `annotations` and the termination message `message`.
fn own_pod(exit_code: i32, annotations: Value, message: Option<String>) -> Value {
    let mut pod = pod_named_like_greet_runs(greet_runs_own());
    pod["metadata"]["annotations"] = annotations;
    pod["status"]["phase"] = json!(if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    });
    let term = &mut pod["status"]["containerStatuses"][0]["state"]["terminated"];
    term["exitCode"] = json!(exit_code);
    term["reason"] = json!(if exit_code == 0 { "Completed" } else { "Error" });
    if let Some(m) = message {
        term["message"] = json!(m);
    }
    pod
}

fn report(reason: &str, exit_code: i32, digest: &str) -> String {
    json!({"step": "step-say", "exitCode": exit_code, "reason": reason,
           "results": [{"name": "digest", "kind": "task", "value": digest}]})
    .to_string()
}

fn task_with_a_result() -> Value {
    let mut t = task();
    t["spec"]["results"] = json!([{"name": "digest"}]);
    t
}

/// One reconcile of the running `greet-run` with `pod`; the status written.
async fn status_with_pod(pod: Value) -> Value {
    let written = Arc::new(std::sync::Mutex::new(Value::Null));
    let keep = written.clone();
    let calls = vec![
        call("GET", format!("{TASKS}/greet"), 200, task_with_a_result()),
        call("GET", format!("{PODS}/greet-run-pod"), 200, pod),
        writes_status(TASK_RUNS, "greet-run").check(move |_, body| {
            *keep.lock().unwrap() = body["status"].clone();
        }),
    ];
    let tr = task_run(running_status());
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
    written.lock().unwrap().clone()
}

fn results_of(st: &Value) -> Vec<(String, Value)> {
    st["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect()
}

/// Any container of a pod can write a step's report annotation first. A
/// report whose exit code disagrees with the kubelet's state of its
/// container is not believed: the kubelet's exit code stands, the step
/// says why, and none of the report's results reach the run.
#[tokio::test]
async fn a_step_report_that_disagrees_with_its_container_is_not_believed() {
    // A failed step reported as a success with a result: the run fails,
    // without the result.
    let forged = json!({"tektite.dev/step.step-say": report("Completed", 0, "sha256:forged")});
    let st = status_with_pod(own_pod(1, forged, None)).await;
    assert_eq!(
        condition(&st),
        ("False".to_string(), "StepFailed".to_string()),
        "{st}"
    );
    assert_eq!(results_of(&st), [], "{st}");
    let step = &st["steps"][0]["terminated"];
    assert_eq!(step["exitCode"], 1, "{st}");
    assert!(
        step["message"]
            .as_str()
            .unwrap()
            .contains("it says Completed (exit code 0), but the container ended with exit code 1"),
        "{st}"
    );

    // A success whose report another container wrote first: the step's
    // own entrypoint, refused, wrote its termination message; that is
    // the report read.
    let forged = json!({"tektite.dev/step.step-say": report("Error", 3, "sha256:forged")});
    let own = r#"[{"key":"StartedAt","value":"2026-11-27T09:59:05.000000Z","type":3},{"key":"ExitCode","value":"0","type":3},{"key":"Reason","value":"Completed","type":3},{"key":"digest","value":"sha256:real","type":1}]"#;
    let st = status_with_pod(own_pod(0, forged.clone(), Some(own.into()))).await;
    assert_eq!(
        condition(&st),
        ("True".to_string(), "Succeeded".to_string()),
        "{st}"
    );
    assert_eq!(
        results_of(&st),
        [("digest".to_string(), json!("sha256:real"))]
    );

    // No termination message: the kubelet's success, no result, and why.
    let st = status_with_pod(own_pod(0, forged, None)).await;
    assert_eq!(results_of(&st), [], "{st}");
    assert_eq!(st["steps"][0]["terminated"]["exitCode"], 0, "{st}");
    assert!(
        st["steps"][0]["terminated"]["message"]
            .as_str()
            .unwrap()
            .contains("it says Error (exit code 3), but the container ended with exit code 0"),
        "{st}"
    );

    // An honest report is read as it is.
    let honest = json!({"tektite.dev/step.step-say": report("Completed", 0, "sha256:ok")});
    let st = status_with_pod(own_pod(0, honest, None)).await;
    assert_eq!(
        results_of(&st),
        [("digest".to_string(), json!("sha256:ok"))]
    );
}

/// Results in annotations are held to the limit the step's entrypoint
/// was given, as the entrypoint holds what it harvests: a report with a
/// result over it is not used, and the result reaches no status.
#[tokio::test]
async fn a_result_over_the_limit_in_an_annotation_never_reaches_the_status() {
    let big = "x".repeat(65);
    let annotations = json!({"tektite.dev/step.step-say": report("Completed", 0, &big)});
    let mut pod = own_pod(0, annotations, None);
    pod["spec"]["containers"][0]["args"] = json!([
        "-max_result_size",
        "64",
        "-entrypoint",
        "echo",
        "--",
        "hello"
    ]);
    let st = status_with_pod(pod).await;
    assert_eq!(results_of(&st), [], "{st}");
    assert!(
        st["steps"][0]["terminated"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"result "digest" is 65 bytes, over the limit of 64 bytes"#),
        "{st}"
    );
}

/// `tektite.dev/sidecars-stopped` is the controller's: on a pod whose
/// sidecars it did not stop (none runs the entrypoint image) it is not
/// believed, and a failed sidecar fails the run.
#[tokio::test]
async fn a_forged_sidecars_stopped_annotation_hides_no_failed_sidecar() {
    let annotations = json!({"tektite.dev/step.step-say": report("Completed", 0, "sha256:ok"),
                             "tektite.dev/sidecars-stopped": "true"});
    let mut pod = own_pod(0, annotations, None);
    pod["status"]["phase"] = json!("Failed");
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar-db", "image": "postgres"}));
    pod["status"]["containerStatuses"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar-db", "image": "postgres", "imageID": "", "ready": false,
                     "restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}));
    let st = status_with_pod(pod).await;
    assert_eq!(
        condition(&st),
        ("False".to_string(), "SidecarFailed".to_string()),
        "{st}"
    );
}

/// A TaskRun with a PipelineRun's labels that the PipelineRun does not
/// control is not its child: its results are never read, it is never
/// cancelled, and when it holds the name of a TaskRun the PipelineRun is
/// to create, the PipelineRun fails rather than adopt it.
#[tokio::test]
async fn a_pipelinerun_never_adopts_or_cancels_a_taskrun_it_does_not_own() {
    let mut planted = child("build-run-first", "first", "True", "Succeeded");
    planted["metadata"]["ownerReferences"] = Value::Null;
    planted["status"]["results"] = json!([{"name": "digest", "value": "sha256:injected"}]);
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call("GET", TASK_RUNS, 200, list(vec![planted.clone()])).check(|q, _| children_query(q)),
        // Not `second`: `first` is not done, being not there.
        call("POST", TASK_RUNS, 409, status_error(409, "AlreadyExists")).check(|_, tr| {
            assert_eq!(tr["metadata"]["name"], "build-run-first");
        }),
        call("GET", format!("{TASK_RUNS}/build-run-first"), 200, planted.clone()),
        writes_status(PIPELINE_RUNS, "build-run").check(|q, body| {
            is_status_apply(q);
            let st = &body["status"];
            assert_eq!(condition(st), ("False".to_string(), "CreateRunFailed".to_string()), "{st}");
            let message = st["conditions"][0]["message"].as_str().unwrap();
            assert!(
                message.contains(r#"TaskRun "build-run-first" exists and is not controlled by PipelineRun "build-run""#),
                "{message}"
            );
        }),
    ];
    let pr = pipeline_run(started());
    let (out, events) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "CreateRunFailed");

    // Cancelled: its own running child is cancelled, a look-alike is not.
    let mut stranger = child("lookalike", "first", "Unknown", "Running");
    stranger["metadata"]["ownerReferences"][0]["uid"] = json!("9999");
    let mut extra = started();
    merge(&mut extra, json!({"spec": {"status": "Cancelled"}}));
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call(
            "GET",
            TASK_RUNS,
            200,
            list(vec![
                stranger,
                child("build-run-first", "first", "Unknown", "Running"),
            ]),
        ),
        call(
            "PATCH",
            format!("{TASK_RUNS}/build-run-first"),
            200,
            Value::Null,
        ),
        writes_status(PIPELINE_RUNS, "build-run"),
    ];
    let pr = pipeline_run(extra);
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");

    // A race: the 409 is the run's own child (created by the previous
    // reconcile, not yet listed): nothing fails.
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, pipeline()),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call("GET", TASK_RUNS, 200, list(vec![])),
        call("POST", TASK_RUNS, 409, status_error(409, "AlreadyExists")),
        call(
            "GET",
            format!("{TASK_RUNS}/build-run-first"),
            200,
            child("build-run-first", "first", "Unknown", "Running"),
        ),
        writes_status(PIPELINE_RUNS, "build-run").check(|_, body| {
            assert_eq!(condition(&body["status"]).0, "Unknown", "{body}");
        }),
    ];
    let pr = pipeline_run(json!({}));
    let (out, _) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert!(out.is_ok(), "{out:?}");
}

/// A PipelineRun that fails because a child's name is taken leaves nothing
/// running: the child it created in the same pass is cancelled (it would
/// otherwise run on under a run that says it is over).
#[tokio::test]
async fn a_pipelinerun_failing_on_a_taken_name_cancels_what_it_started() {
    let parallel = json!({"apiVersion": "tekton.dev/v1", "kind": "Pipeline",
        "metadata": {"name": "build", "namespace": "ci"},
        "spec": {"tasks": [
            {"name": "first", "taskRef": {"name": "greet"}},
            {"name": "second", "taskRef": {"name": "greet"}}]}});
    let mut planted = child("build-run-second", "second", "Unknown", "Running");
    planted["metadata"]["ownerReferences"] = Value::Null;
    let calls = vec![
        call("GET", format!("{PIPELINES}/build"), 200, parallel),
        call("GET", format!("{TASKS}/greet"), 200, task()),
        call("GET", TASK_RUNS, 200, list(vec![])).check(|q, _| children_query(q)),
        call(
            "POST",
            TASK_RUNS,
            201,
            child("build-run-first", "first", "Unknown", "Running"),
        )
        .check(|_, tr| assert_eq!(tr["metadata"]["name"], "build-run-first")),
        call("POST", TASK_RUNS, 409, status_error(409, "AlreadyExists"))
            .check(|_, tr| assert_eq!(tr["metadata"]["name"], "build-run-second")),
        call("GET", format!("{TASK_RUNS}/build-run-second"), 200, planted),
        call(
            "PATCH",
            format!("{TASK_RUNS}/build-run-first"),
            200,
            Value::Null,
        )
        .check(|_, body| {
            assert_eq!(body["spec"]["status"], "TaskRunCancelled", "{body}");
            let m = body["spec"]["statusMessage"].as_str().unwrap();
            assert!(
                m.starts_with("the PipelineRun failed: TaskRun \"build-run-second\" exists"),
                "{m}"
            );
        }),
        writes_status(PIPELINE_RUNS, "build-run").check(|_, body| {
            let st = &body["status"];
            assert_eq!(
                condition(st),
                ("False".to_string(), "CreateRunFailed".to_string()),
                "{st}"
            );
        }),
    ];
    let pr = pipeline_run(started());
    let (out, events) = scenario(calls, |ctx| pipelinerun::reconcile(Arc::new(pr), ctx)).await;
    assert_eq!(out.unwrap(), Action::await_change());
    assert_event(&events, "CreateRunFailed");
}

// ------------------------------------------------------------- resolvers

/// A git repository in a scratch directory holding `files`, committed on
/// `main`; its `file://` URL.
fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "files"]);
    let url = format!("file://{}", dir.path().display());
    (dir, url)
}

const REMOTE_TASK: &str = "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: remote\nspec:\n  steps:\n    - name: say\n      image: alpine\n      command: [echo, from-git]\n";

/// Waits until the resolution of every ref the context knows has ended.
async fn resolved(ctx: &Context, ns: &str, req: &tektite_resolve::Request) {
    for _ in 0..200 {
        if ctx.poll(ns, req) != tektite_controller::resolution::Poll::Pending {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the resolution did not end");
}

fn git_request(url: &str, path: &str, kind: tektite_resolve::Kind) -> tektite_resolve::Request {
    tektite_resolve::Request {
        resolver: "git".into(),
        params: [("url", url), ("pathInRepo", path)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        kind,
    }
}

#[tokio::test]
async fn a_taskref_through_git_waits_off_the_loop_then_runs_with_its_provenance() {
    let (_repo, url) = repo_with(&[("task.yaml", REMOTE_TASK)]);
    let tr = task_run(json!({"spec": {"taskRef": {"name": null, "resolver": "git",
        "params": [{"name": "url", "value": url}, {"name": "pathInRepo", "value": "task.yaml"}]}}}));
    let want_uri = format!("git+{url}");
    let calls = vec![
        // First reconcile: the resolution starts, the run waits.
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("Unknown".to_string(), "ResolvingTaskRef".to_string())
            );
            let m = body["status"]["conditions"][0]["message"].as_str().unwrap();
            assert_eq!(m, "TaskRun ci/greet-run awaiting remote resource");
        }),
        // Second: the Task is there.
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 201, Value::Null).check(|_, pod| {
            let args = pod["spec"]["containers"][0]["args"].to_string();
            assert!(args.contains("from-git"), "{args}");
        }),
        writes_status(TASK_RUNS, "greet-run").check(move |_, body| {
            let src = &body["status"]["provenance"]["refSource"];
            assert_eq!(src["uri"], want_uri.as_str());
            assert_eq!(src["entryPoint"], "task.yaml");
            assert_eq!(src["digest"]["sha1"].as_str().unwrap().len(), 40);
        }),
    ];
    let u = url.clone();
    let (out, _) = scenario(calls, |ctx| async move {
        let first = taskrun::reconcile(Arc::new(tr.clone()), ctx.clone()).await?;
        assert_eq!(first, Action::requeue(Duration::from_secs(1)));
        resolved(
            &ctx,
            "ci",
            &git_request(&u, "task.yaml", tektite_resolve::Kind::Task),
        )
        .await;
        taskrun::reconcile(Arc::new(tr), ctx).await
    })
    .await;
    out.unwrap();
}

#[tokio::test]
async fn a_taskref_that_cannot_be_resolved_fails_with_the_resolvers_message() {
    let (_repo, url) = repo_with(&[("task.yaml", REMOTE_TASK)]);
    let tr = task_run(json!({"spec": {"taskRef": {"name": null, "resolver": "git",
        "params": [{"name": "url", "value": url}, {"name": "pathInRepo", "value": "missing.yaml"}]}}}));
    let calls = vec![
        writes_status(TASK_RUNS, "greet-run"),
        call("GET", format!("{PODS}/greet-run-pod"), 404, not_found("pod")),
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("False".to_string(), "TaskRunResolutionFailed".to_string())
            );
            let m = body["status"]["conditions"][0]["message"].as_str().unwrap();
            assert!(
                m.starts_with("error requesting remote resource: git resolver: error opening file \"missing.yaml\""),
                "{m}"
            );
        }),
    ];
    let u = url.clone();
    let (out, _) = scenario(calls, |ctx| async move {
        taskrun::reconcile(Arc::new(tr.clone()), ctx.clone()).await?;
        resolved(
            &ctx,
            "ci",
            &git_request(&u, "missing.yaml", tektite_resolve::Kind::Task),
        )
        .await;
        taskrun::reconcile(Arc::new(tr), ctx).await
    })
    .await;
    assert_eq!(out.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_pipelineref_and_its_tasks_through_git_are_resolved_before_the_first_taskrun() {
    let pipeline = "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: remote\nspec:\n  params:\n    - name: repo\n  tasks:\n    - name: first\n      taskRef:\n        resolver: git\n        params:\n          - {name: url, value: $(params.repo)}\n          - {name: pathInRepo, value: task.yaml}\n";
    let (_repo, url) = repo_with(&[("task.yaml", REMOTE_TASK), ("pipeline.yaml", pipeline)]);
    let pr = pipeline_run(json!({"spec": {
        "params": [{"name": "repo", "value": url}],
        "pipelineRef": {"name": null, "resolver": "git",
            "params": [{"name": "url", "value": "$(params.repo)"}, {"name": "pathInRepo", "value": "pipeline.yaml"}]}}}));
    let want_uri = format!("git+{url}");
    let calls = vec![
        writes_status(PIPELINE_RUNS, "build-run").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("Unknown".to_string(), "ResolvingPipelineRef".to_string())
            );
        }),
        call("GET", TASK_RUNS, 200, list(vec![])).check(|q, _| children_query(q)),
        writes_status(PIPELINE_RUNS, "build-run").check(|_, body| {
            assert_eq!(
                condition(&body["status"]),
                ("Unknown".to_string(), "ResolvingTaskRef".to_string())
            );
        }),
        call("GET", TASK_RUNS, 200, list(vec![])).check(|q, _| children_query(q)),
        call("POST", TASK_RUNS, 201, Value::Null).check(|_, tr| {
            assert_eq!(tr["metadata"]["name"], "build-run-first");
            assert_eq!(tr["spec"]["taskRef"]["resolver"], "git");
        }),
        writes_status(PIPELINE_RUNS, "build-run").check(move |_, body| {
            assert_eq!(condition(&body["status"]).0, "Unknown");
            let src = &body["status"]["provenance"]["refSource"];
            assert_eq!(src["uri"], want_uri.as_str());
            assert_eq!(src["entryPoint"], "pipeline.yaml");
        }),
    ];
    let u = url.clone();
    let (out, _) = scenario(calls, |ctx| async move {
        pipelinerun::reconcile(Arc::new(pr.clone()), ctx.clone()).await?;
        resolved(
            &ctx,
            "ci",
            &git_request(&u, "pipeline.yaml", tektite_resolve::Kind::Pipeline),
        )
        .await;
        pipelinerun::reconcile(Arc::new(pr.clone()), ctx.clone()).await?;
        resolved(
            &ctx,
            "ci",
            &git_request(&u, "task.yaml", tektite_resolve::Kind::Task),
        )
        .await;
        pipelinerun::reconcile(Arc::new(pr), ctx).await
    })
    .await;
    out.unwrap();
}

#[tokio::test]
async fn the_cluster_resolver_reads_another_namespace_within_the_rules() {
    let tr = task_run(
        json!({"spec": {"taskRef": {"name": null, "resolver": "cluster",
        "params": [{"name": "kind", "value": "task"}, {"name": "name", "value": "greet"},
                   {"name": "namespace", "value": "shared"}]}}}),
    );
    let shared = json!({"apiVersion": "tekton.dev/v1", "kind": "Task",
           "metadata": {"name": "greet", "namespace": "shared", "uid": "u-1"},
           "spec": {"steps": [{"name": "say", "image": "alpine", "command": ["echo", "shared"]}]}});
    let calls = vec![
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            assert_eq!(condition(&body["status"]).1, "ResolvingTaskRef");
        }),
        call(
            "GET",
            "/apis/tekton.dev/v1/namespaces/shared/tasks/greet",
            200,
            shared,
        ),
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 201, Value::Null).check(|_, pod| {
            assert!(
                pod["spec"]["containers"][0]["args"]
                    .to_string()
                    .contains("shared")
            );
        }),
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            let src = &body["status"]["provenance"]["refSource"];
            assert_eq!(
                src["uri"],
                "/apis/tekton.dev/v1/namespaces/shared/task/greet@u-1"
            );
            assert_eq!(src["digest"]["sha256"].as_str().unwrap().len(), 64);
        }),
    ];
    let req = tektite_resolve::Request {
        resolver: "cluster".into(),
        params: [("kind", "task"), ("name", "greet"), ("namespace", "shared")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        kind: tektite_resolve::Kind::Task,
    };
    let (out, _) = scenario(calls, |ctx| async move {
        taskrun::reconcile(Arc::new(tr.clone()), ctx.clone()).await?;
        resolved(&ctx, "ci", &req).await;
        taskrun::reconcile(Arc::new(tr), ctx).await
    })
    .await;
    out.unwrap();
}

/// Regression: a run resolved once was resolved again once the answer had
/// left the cache (5 minutes), going back to `ResolvingTaskRef` mid-run
/// and taking whatever the branch had become. The spec its status keeps
/// is what it goes on with.
#[tokio::test]
async fn regression_a_resolved_run_was_resolved_again_after_the_cache_expired() {
    let tr = task_run(json!({
        "spec": {"taskRef": {"name": null, "resolver": "git",
            "params": [{"name": "url", "value": "file:///nowhere"}, {"name": "pathInRepo", "value": "t.yaml"}]}},
        "status": {"taskSpec": {"steps": [{"name": "say", "image": "alpine", "command": ["echo", "kept"]}]},
                   "startTime": "2026-11-27T09:59:00Z"}}));
    let calls = vec![
        call(
            "GET",
            format!("{PODS}/greet-run-pod"),
            404,
            not_found("pod"),
        ),
        call("POST", PODS, 201, Value::Null).check(|_, pod| {
            assert!(
                pod["spec"]["containers"][0]["args"]
                    .to_string()
                    .contains("kept")
            );
        }),
        writes_status(TASK_RUNS, "greet-run").check(|_, body| {
            assert_ne!(condition(&body["status"]).1, "ResolvingTaskRef");
        }),
    ];
    let (out, _) = scenario(calls, |ctx| taskrun::reconcile(Arc::new(tr), ctx)).await;
    out.unwrap();
}
