//! `tkt run`'s traces, end to end: a real `tkt run` with the standard
//! `OTEL_*` variables pointed at a real OTLP endpoint on loopback
//! (`tektite_telemetry::receiver`, which decodes with the
//! `opentelemetry-proto` types). The span tree of a pipeline with a
//! retry, a failing task and finally; `TRACEPARENT` as the steps saw it;
//! an incoming `traceparent`; a collector that is down or a setting that
//! is bad leaves the run as it was.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod util;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use tektite_telemetry::receiver::{Received, Receiver};
use util::{Scratch, text, tkt_run};

/// `runs/pipeline-traced.yaml`: a flaky task that passes on its retry, a
/// task after it that fails, and a finally task, every step printing the
/// `TRACEPARENT` it was given; with its incoming `traceparent`, or with
/// none (in a file of `scratch`).
fn pipeline(scratch: &Scratch, incoming: bool) -> String {
    let file = util::tests_dir().join("runs/pipeline-traced.yaml");
    if incoming {
        return file.to_string_lossy().into_owned();
    }
    let yaml = std::fs::read_to_string(file).unwrap();
    let without = yaml.replace(&format!("traceparent: \"{WEBHOOK}\""), "unrelated: x");
    assert_ne!(without, yaml);
    scratch.file("traced.yaml", &without)
}

const WEBHOOK: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn run(rt: &str, scratch: &Scratch, file: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = tkt_run(rt);
    cmd.args(["-f", file, "--state-dir", &scratch.state_arg()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The `TRACEPARENT` values the steps printed.
fn seen(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .chain(text(&out.stderr).lines())
        .filter_map(|l| {
            l.split_once("seen TRACEPARENT=")
                .map(|(_, v)| v.trim().to_string())
        })
        .collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {spans:#?}");
    found[0]
}

#[test]
fn a_pipelines_trace_has_its_tasks_retries_steps_and_the_steps_join_it() {
    let receiver = Receiver::start();
    let scratch = Scratch::new("traces-tree");
    let file = pipeline(&scratch, false);
    let out = run(
        "process",
        &scratch,
        &file,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let spans = receiver.spans();
    let root = one(&spans, "PipelineRun traced");
    assert_eq!(root.parent_span_id, "", "a trace of its own: {root:#?}");
    assert_eq!(root.service_name, "tkt");
    assert_eq!(root.resource["telemetry.sdk.language"], "rust", "{root:#?}");
    assert_eq!(root.attributes["tekton.status"], "failed");
    assert!(spans.iter().all(|s| s.trace_id == root.trace_id));
    let mut contexts = BTreeSet::new();
    for task in ["flaky", "deploy", "notify"] {
        let span = one(&spans, &format!("TaskRun {task}"));
        assert_eq!(span.parent_span_id, root.span_id, "{task}");
        contexts.insert(format!("00-{}-{}-01", span.trace_id, span.span_id));
    }
    assert_eq!(one(&spans, "TaskRun flaky").error, None);
    assert!(one(&spans, "TaskRun deploy").error.is_some());
    let attempt = one(&spans, "attempt 1");
    assert_eq!(attempt.parent_span_id, one(&spans, "TaskRun flaky").span_id);
    let tries: Vec<&Received> = spans.iter().filter(|s| s.name == "step try").collect();
    assert_eq!(tries.len(), 2, "one per attempt");
    assert!(tries.iter().any(
        |s| s.parent_span_id == attempt.span_id && s.attributes["tekton.step.exit_code"] == "1"
    ));
    let apply = one(&spans, "step apply");
    assert_eq!(apply.attributes["tekton.step.exit_code"], "2");
    assert!(apply.start_unix_nano <= apply.end_unix_nano);
    // Every step saw its TaskRun's span: both attempts of flaky, deploy,
    // notify.
    let seen = seen(&out);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), contexts);
}

#[test]
fn an_incoming_traceparent_makes_the_run_a_child_of_that_trace_over_grpc() {
    let receiver = Receiver::start();
    let scratch = Scratch::new("traces-incoming");
    let file = pipeline(&scratch, true);
    let out = run(
        "process",
        &scratch,
        &file,
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &receiver.grpc),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "ci-local"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=ci,team=build",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let spans = receiver.spans();
    assert!(
        spans
            .iter()
            .all(|s| s.protocol == "grpc" && s.service_name == "ci-local")
    );
    let resource = &spans[0].resource;
    assert_eq!(resource["deployment.environment"], "ci", "{resource:?}");
    assert_eq!(resource["team"], "build", "{resource:?}");
    let root = one(&spans, "PipelineRun traced");
    assert_eq!(root.trace_id, &WEBHOOK[3..35]);
    assert_eq!(root.parent_span_id, &WEBHOOK[36..52]);
    assert!(spans.iter().all(|s| s.trace_id == root.trace_id));
    // The TaskRuns hang under the run, not under the webhook's span.
    assert_eq!(one(&spans, "TaskRun notify").parent_span_id, root.span_id);
    assert!(seen(&out).iter().all(|t| t.contains(&WEBHOOK[3..35])));
}

#[test]
fn a_collector_that_is_down_leaves_the_run_as_it_was() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let scratch = Scratch::new("traces-down");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = run(
        "process",
        &scratch,
        "runs/taskrun-steps.yaml",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tkt: traces not exported: OTLP export failed"),
        "{stderr}"
    );
    let said = format!("{}{stderr}", text(&out.stdout));
    assert!(said.contains("Succeeded"), "{said}");
    assert_eq!(scratch.records("taskruns").len(), 1);
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
}

#[test]
fn a_bad_trace_setting_is_a_warning_and_the_steps_get_no_traceparent() {
    let receiver = Receiver::start();
    let scratch = Scratch::new("traces-bad");
    let file = scratch.file(
        "t.yaml",
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {name: t}\nspec:\n  taskSpec:\n    steps:\n      - {name: s, image: localhost/tektite/busybox:latest, script: 'echo \"seen TRACEPARENT=${TRACEPARENT:-none}\"'}\n",
    );
    let out = run(
        "process",
        &scratch,
        &file,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "tkt: traces off: OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc, http/protobuf or http/json, got \"udp\""
        ),
        "{stderr}"
    );
    assert_eq!(seen(&out), ["none"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(receiver.spans().is_empty());
}

/// Regression: a pipeline's TaskRuns carry its span context in an
/// annotation of over 63 bytes, which `podman kube play` refuses on a
/// pod; the pods now leave it out (their steps get `TRACEPARENT`).
#[test]
fn a_traced_pipeline_runs_on_podman_which_refuses_long_pod_annotations() {
    if !util::podman_ready() {
        return;
    }
    let receiver = Receiver::start();
    let scratch = Scratch::new("traces-podman");
    let out = run(
        "podman",
        &scratch,
        &pipeline(&scratch, true),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http)],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("invalid annotation"), "{stderr}");
    let spans = receiver.spans();
    let flaky = one(&spans, "TaskRun flaky");
    assert_eq!(flaky.error, None, "passed on its retry: {flaky:#?}");
    let deploy = one(&spans, "TaskRun deploy");
    assert_eq!(one(&spans, "step apply").parent_span_id, deploy.span_id);
    let notify = one(&spans, "TaskRun notify");
    let context = format!("00-{}-{}-01", notify.trace_id, notify.span_id);
    assert!(seen(&out).contains(&context), "{:?}", seen(&out));
    assert_eq!(seen(&out).len(), 4);
}

/// A docker-registry on loopback (removed with `scratch`), holding the
/// local busybox as `IMAGE` (host included), which podman then no longer
/// has; a `registries.conf` that lets podman pull from it over HTTP.
struct Pulled {
    registry: std::process::Child,
    image: String,
    conf: String,
}

impl Pulled {
    fn push(scratch: &Scratch) -> Pulled {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let cfg = scratch.file(
            "registry.yml",
            &format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
                scratch.0.join("registry").display()
            ),
        );
        let registry = std::process::Command::new("docker-registry")
            .args(["serve", &cfg])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "docker-registry is missing: apt-get install docker-registry (hack/test.sh does)",
            );
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "docker-registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let image = format!("{host}/tektite/pulled:1");
        let podman = |args: &[&str]| {
            let out = std::process::Command::new("podman")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "podman {args:?}: {}",
                text(&out.stderr)
            );
        };
        podman(&["tag", "localhost/tektite/busybox:latest", &image]);
        podman(&["push", "--quiet", "--tls-verify=false", &image]);
        podman(&["rmi", &image]);
        let conf = scratch.file(
            "registries.conf",
            &format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
        );
        Pulled {
            registry,
            image,
            conf,
        }
    }
}

impl Drop for Pulled {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rmi", "--force", &self.image])
            .output();
        let _ = self.registry.kill();
        let _ = self.registry.wait();
    }
}

#[test]
fn an_image_pulled_for_a_pod_is_a_span_of_its_wait_and_kept_in_its_status() {
    if !util::podman_ready() {
        return;
    }
    let receiver = Receiver::start();
    let scratch = Scratch::new("traces-pull");
    let pulled = Pulled::push(&scratch);
    let file = scratch.file(
        "t.yaml",
        &format!(
            "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: pulls}}\nspec:\n  taskSpec:\n    steps:\n      - {{name: one, image: \"{}\", script: 'echo pulled'}}\n",
            pulled.image
        ),
    );
    let mut cmd = tkt_run("podman");
    cmd.args([
        "-f",
        &file,
        "--state-dir",
        &scratch.state_arg(),
        "-o",
        "json",
    ])
    .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http)
    .env("CONTAINERS_REGISTRIES_CONF", &pulled.conf);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let tr = util::object(&out);
    assert_eq!(
        tr["status"]["imagePulls"][0]["image"],
        pulled.image.as_str(),
        "{tr}"
    );
    let spans = receiver.spans();
    let pull = one(&spans, "image pull");
    assert_eq!(pull.attributes["container.image.name"], pulled.image);
    assert_eq!(pull.parent_span_id, one(&spans, "pod pending").span_id);
    assert!(pull.start_unix_nano <= pull.end_unix_nano);
    assert!(pull.end_unix_nano <= one(&spans, "step one").start_unix_nano);
}

/// A run held by a concurrency key: `queued` spans its wait, from its
/// creation to its admission, before its TaskRuns.
#[test]
fn a_run_that_waited_for_its_concurrency_key_has_a_queued_span() {
    let receiver = Receiver::start();
    let scratch = Scratch::new("traces-queued");
    let run = |name: &str, seconds: &str| {
        format!(
            "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  name: {name}\n  annotations: {{tektite.dev/concurrency-key: deploy}}\nspec:\n  pipelineSpec:\n    tasks:\n      - name: deploy\n        taskSpec:\n          steps:\n            - {{name: s, image: busybox, script: 'sleep {seconds}'}}\n"
        )
    };
    let holder_file = scratch.file("holder.yaml", &run("holder", "5"));
    let mut holder = tkt_run("process")
        .args(["-f", &holder_file, "--state-dir", &scratch.state_arg()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let record = scratch.state().join("pipelineruns/holder.json");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&record).is_ok_and(|r| r.contains("admittedTime")) {
        assert!(
            std::time::Instant::now() < until,
            "the holder was not admitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let waiter = scratch.file("waiter.yaml", &run("waiter", "0"));
    let out = run_traced(&scratch, &waiter, &receiver);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(holder.wait().unwrap().success());
    let spans = receiver.spans();
    let root = one(&spans, "PipelineRun waiter");
    let queued = one(&spans, "queued");
    assert_eq!(queued.parent_span_id, root.span_id);
    assert_eq!(queued.attributes["tektite.concurrency.key"], "deploy");
    assert!(queued.end_unix_nano > queued.start_unix_nano);
    assert!(queued.end_unix_nano <= one(&spans, "TaskRun deploy").start_unix_nano);
}

fn run_traced(scratch: &Scratch, file: &str, receiver: &Receiver) -> Output {
    run(
        "process",
        scratch,
        file,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http)],
    )
}
