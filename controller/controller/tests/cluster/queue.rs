//! Concurrency control on the controller: queues per key in FIFO order with
//! priority, across a `kill -9` of the leader; a queued run cancelled;
//! cancel-in-progress; the namespace's cap and max-parallel-tasks.

use super::*;

/// A Pipeline whose runs share `annotations` (the key a template over the
/// `environment` param); its one task sleeps `$(params.seconds)`, and a
/// finally task says it ran.
fn pipeline(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": TEKTON, "kind": "Pipeline",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "params": [
                {"name": "environment", "default": "staging"},
                {"name": "seconds", "default": "2"},
                {"name": "linger", "default": "0"}
            ],
            "tasks": [{
                "name": "deploy",
                "params": [{"name": "seconds", "value": "$(params.seconds)"}],
                "taskSpec": {
                    "params": [{"name": "seconds"}],
                    "steps": [{"name": "s", "image": BUSYBOX, "script": "sleep $(params.seconds)"}]
                }
            }],
            "finally": [{
                "name": "report",
                "params": [{"name": "linger", "value": "$(params.linger)"}],
                "taskSpec": {
                    "params": [{"name": "linger"}],
                    "steps": [{"name": "s", "image": BUSYBOX, "script": "sleep $(params.linger); echo done"}]
                }
            }]
        }
    })
}

fn run_of(pipeline: &str, name: &str, params: &[(&str, &str)], annotations: Value) -> Value {
    let params: Vec<Value> = params
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    json!({
        "apiVersion": TEKTON, "kind": "PipelineRun",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"pipelineRef": {"name": pipeline}, "params": params}
    })
}

fn time_of(v: &Value) -> k8s_openapi::jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

/// (admitted, completed) of a finished run.
fn held(v: &Value) -> (k8s_openapi::jiff::Timestamp, k8s_openapi::jiff::Timestamp) {
    (
        time_of(&v["status"]["concurrency"]["admittedTime"]),
        time_of(&v["status"]["completionTime"]),
    )
}

async fn queued_with(c: &Cluster, ns: &str, name: &str, message: &str) -> Value {
    c.wait_for("pipelineruns", ns, name, message, |v| {
        let (status, reason, m) = condition(v);
        status == "Unknown" && reason == "PipelineRunQueued" && m == message
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_runs_one_at_a_time_by_priority_then_age_across_a_leader_change() {
    if !podman_ready() {
        return;
    }
    let mut c = Cluster::start(&[]).await;
    c.create(
        "pipelines",
        "ci",
        pipeline(
            "deploy",
            json!({"tektite.dev/concurrency-key": "deploy-$(params.environment)"}),
        ),
    );
    let prod = [("environment", "prod")];
    // d-1 holds the key long enough for what follows to happen while it
    // does: the queue's messages, another key's run, a cancel, the kill.
    let first = [("environment", "prod"), ("seconds", "12")];
    c.create(
        "pipelineruns",
        "ci",
        run_of("deploy", "d-1", &first, json!({})),
    );
    for name in ["d-2", "d-3"] {
        c.create(
            "pipelineruns",
            "ci",
            run_of("deploy", name, &prod, json!({})),
        );
    }
    c.create(
        "pipelineruns",
        "ci",
        run_of(
            "deploy",
            "d-4",
            &prod,
            json!({"tektite.dev/priority": "10"}),
        ),
    );
    // Another key does not wait for this one.
    c.create(
        "pipelineruns",
        "ci",
        run_of("deploy", "s-1", &[], json!({})),
    );
    c.create(
        "pipelineruns",
        "ci",
        run_of("deploy", "d-5", &prod, json!({})),
    );

    let d2 = queued_with(
        &c,
        "ci",
        "d-2",
        "waiting for concurrency key \"deploy-prod\": position 2 of 4, held by d-1",
    )
    .await;
    assert!(d2["status"]["startTime"].is_null(), "{d2}");
    queued_with(
        &c,
        "ci",
        "d-4",
        "waiting for concurrency key \"deploy-prod\": position 1 of 4, held by d-1",
    )
    .await;
    let s1 = c.done("pipelineruns", "ci", "s-1").await;
    assert_eq!(condition(&s1).0, "True", "{s1}");
    let d1 = c.get(TEKTON, "pipelineruns", "ci", "d-1").unwrap();
    assert_eq!(condition(&d1).0, "Unknown", "d-1 ended early: {d1}");
    assert!(c.children("d-2").is_empty(), "a queued run started a task");

    // A queued run cancelled leaves the queue without starting anything.
    c.api
        .shared
        .update(&Key::new(TEKTON, "pipelineruns", "ci", "d-5"), |p| {
            p["spec"]["status"] = json!("Cancelled");
        });
    let d5 = c.done("pipelineruns", "ci", "d-5").await;
    let (status, reason, message) = condition(&d5);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Cancelled"),
        "{d5}"
    );
    assert!(message.contains("cancelled while queued"), "{message}");
    assert!(c.children("d-5").is_empty());

    let d1 = c.get(TEKTON, "pipelineruns", "ci", "d-1").unwrap();
    assert_eq!(condition(&d1).0, "Unknown", "d-1 ended early: {d1}");
    // kill -9 the leader while d-1 holds the key and three wait: the
    // standby replica takes the Lease and derives the same queue from the
    // runs.
    let standby = c.replica("replica-b").await;
    let _ = c.controller.child.kill();
    let _ = c.controller.child.wait();

    let mut spans = Vec::new();
    for name in ["d-1", "d-4", "d-2", "d-3"] {
        let pr = c.done("pipelineruns", "ci", name).await;
        assert_eq!(condition(&pr).0, "True", "{pr}");
        spans.push((name, held(&pr)));
    }
    // One at a time, in priority then creation order.
    for pair in spans.windows(2) {
        let ((a, (_, a_end)), (b, (b_start, _))) = (pair[0], pair[1]);
        assert!(
            b_start >= a_end,
            "{b} was admitted at {b_start} before {a} ended at {a_end}"
        );
    }
    let d3 = c.get(TEKTON, "pipelineruns", "ci", "d-3").unwrap();
    assert!(
        d3["status"]["concurrency"]["waitSeconds"].as_f64().unwrap() > 0.0,
        "{d3}"
    );
    assert_eq!(d3["status"]["concurrency"]["key"], "deploy-prod");
    let m = standby.scrape().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("tektite_pipelinerun_queue_wait_seconds_count ")),
        "{m}"
    );
    assert!(standby.log().contains("leading"), "{}", standby.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_progress_lets_the_newest_run_win() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    c.create(
        "pipelines",
        "ci",
        pipeline(
            "preview",
            json!({
                "tektite.dev/concurrency-key": "preview-$(params.environment)",
                "tektite.dev/concurrency-strategy": "cancel-in-progress",
            }),
        ),
    );
    let long = [("environment", "pr-7"), ("seconds", "60")];
    // c-1's finally lingers, so c-3 arrives while it runs however slow the
    // machine (a quick finally let c-2 start before c-3 was made).
    let lingering = [("environment", "pr-7"), ("seconds", "60"), ("linger", "5")];
    c.create(
        "pipelineruns",
        "ci",
        run_of("preview", "c-1", &lingering, json!({})),
    );
    c.wait_for("pipelineruns", "ci", "c-1", "running its task", |_| {
        !c.children("c-1").is_empty()
    })
    .await;
    // Two pushes while c-1 runs: c-1 is cancelled gracefully, c-2 (never
    // started) is cancelled, c-3 waits for c-1's finally tasks to end.
    c.create(
        "pipelineruns",
        "ci",
        run_of("preview", "c-2", &long, json!({})),
    );
    let quick = [("environment", "pr-7"), ("seconds", "1")];
    c.create(
        "pipelineruns",
        "ci",
        run_of("preview", "c-3", &quick, json!({})),
    );

    // c-2 never started; c-1 stopped its task and ran finally.
    let c2 = c.done("pipelineruns", "ci", "c-2").await;
    assert_eq!(condition(&c2).1, "Cancelled", "{c2}");
    assert!(c.children("c-2").is_empty());
    let c1 = c.done("pipelineruns", "ci", "c-1").await;
    assert_eq!(c1["spec"]["status"], "CancelledRunFinally", "{c1}");
    assert_eq!(condition(&c1).1, "Cancelled", "{c1}");
    let kids = c.children("c-1");
    assert_eq!(condition(&kids["deploy"]).1, "TaskRunCancelled");
    assert_eq!(condition(&kids["report"]).0, "True", "finally ran");
    let c3 = c.done("pipelineruns", "ci", "c-3").await;
    assert_eq!(condition(&c3).0, "True", "{c3}");
    assert!(held(&c3).0 >= time_of(&c1["status"]["completionTime"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespace_cap_and_max_parallel_tasks_hold_runs_and_tasks_back() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    c.create(
        "configmaps",
        "tektite",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config-defaults"},
               "data": {"max-running-pipelineruns-per-namespace": "1"}}),
    );
    c.wait_log("configuration applied").await;
    let tasks: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|t| {
            json!({
                "name": t,
                "taskSpec": {"steps": [{"name": "s", "image": BUSYBOX, "script": "sleep 1"}]}
            })
        })
        .collect();
    let three = json!({
        "apiVersion": TEKTON, "kind": "PipelineRun",
        "metadata": {"name": "m-1", "annotations": {"tektite.dev/max-parallel-tasks": "1"}},
        "spec": {"pipelineSpec": {"tasks": tasks}}
    });
    c.create("pipelineruns", "ci", three);
    c.create("pipelines", "ci", pipeline("plain", json!({})));
    c.create("pipelineruns", "ci", run_of("plain", "m-2", &[], json!({})));
    // Another namespace has its own cap.
    c.create("pipelines", "other", pipeline("deploy", json!({})));
    c.create(
        "pipelineruns",
        "other",
        run_of("deploy", "o-1", &[], json!({})),
    );

    queued_with(
        &c,
        "ci",
        "m-2",
        "waiting for the namespace's limit of 1 running PipelineRuns: position 1 of 1, held by m-1",
    )
    .await;
    let o1 = c.done("pipelineruns", "other", "o-1").await;
    assert_eq!(condition(&o1).0, "True", "{o1}");
    let m1 = c.done("pipelineruns", "ci", "m-1").await;
    assert_eq!(condition(&m1).0, "True", "{m1}");
    // Its tasks ran one after the other.
    let mut spans: Vec<(k8s_openapi::jiff::Timestamp, k8s_openapi::jiff::Timestamp)> = c
        .children("m-1")
        .values()
        .map(|t| {
            (
                time_of(&t["metadata"]["creationTimestamp"]),
                time_of(&t["status"]["completionTime"]),
            )
        })
        .collect();
    spans.sort();
    assert_eq!(spans.len(), 3);
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "tasks overlapped: {spans:?}");
    }
    // m-2 (no key: the cap alone held it) starts once m-1 has ended.
    let m2 = c.done("pipelineruns", "ci", "m-2").await;
    assert_eq!(condition(&m2).0, "True", "{m2}");
    assert!(held(&m2).0 >= time_of(&m1["status"]["completionTime"]));
}
