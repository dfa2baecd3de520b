//! The real `tektite-controller` binary against a fake API server on
//! loopback (`tektite_devcluster::apiserver`: list, watch, create, patch,
//! ...), with the local podman runtime as its kubelet
//! (`tektite_devcluster::kubelet`): the
//! `tests/` TaskRuns and PipelineRuns are created as `kubectl create` would,
//! the binary's watches, leader election, config-defaults watch and
//! reconcilers turn them into Pods, the Pods run in real containers, and the
//! runs' final status is checked (conditions, results, child TaskRuns).
//!
//! Needs podman and the local images (`hack/setup-podman.sh`,
//! `hack/images.sh`); the image lookup test also needs `docker-registry`.
//! Fails without them unless `TEKTITE_SKIP_PODMAN=1`. Waits are bounded
//! hang guards, not timing assertions.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tektite_api::load::Object;
#[path = "cluster/cli.rs"]
mod cli;
#[path = "cluster/logs.rs"]
mod logs;
#[path = "cluster/queue.rs"]
mod queue;
#[path = "cluster/traces.rs"]
mod traces;

use tektite_devcluster::apiserver::{ApiServer, Key};
use tektite_devcluster::kubelet::Kubelet;

const TEKTON: &str = "tekton.dev/v1";
const BUSYBOX: &str = "localhost/tektite/busybox:latest";

fn podman_ready() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("TEKTITE_SKIP_PODMAN=1: cluster test not run");
        return false;
    }
    let ok = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "podman is not installed: run hack/test.sh (or hack/setup-podman.sh and hack/images.sh), \
         or set TEKTITE_SKIP_PODMAN=1 to leave these tests out"
    );
    for image in [BUSYBOX, "localhost/tektite/entrypoint:latest"] {
        let exists = Command::new("podman")
            .args(["image", "exists", image])
            .status()
            .unwrap();
        assert!(
            exists.success(),
            "image {image} is missing: run hack/images.sh"
        );
    }
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tektite-controller` process against the fake API server; killed on
/// drop.
struct Replica {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Replica {
    fn spawn(api: &ApiServer, dir: &Path, identity: &str, args: &[&str]) -> Replica {
        let kubeconfig = api.kubeconfig(dir).unwrap();
        let metrics = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tektite-controller"))
            .args([
                "--metrics-addr",
                &metrics,
                "--namespace",
                "tektite",
                "--identity",
                identity,
                "--entrypoint-image",
                "localhost/tektite/entrypoint:latest",
                "--shell-image",
                BUSYBOX,
            ])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Replica {
            child,
            metrics,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the controller has logged `what`.
    async fn wait_log(&self, what: &str) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {what:?} in the controller's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The controller's /metrics.
    async fn scrape(&self) -> String {
        self.get_path("/metrics").await
    }

    /// A GET of `path` on the metrics address: the whole answer.
    async fn get_path(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.metrics).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake API server, the controller binary and the kubelet; all stopped
/// on drop.
struct Cluster {
    api: ApiServer,
    controller: Replica,
    _kubelet: Kubelet,
    dir: tempfile::TempDir,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl std::ops::Deref for Cluster {
    type Target = Replica;
    fn deref(&self) -> &Replica {
        &self.controller
    }
}

impl Cluster {
    /// Starts everything; `args` go to the controller after the test's own.
    async fn start(args: &[&str]) -> Cluster {
        Cluster::start_with(args, Vec::new()).await
    }

    /// As `start`, its kubelet pulling from the registries `plain_http`
    /// over plain HTTP.
    async fn start_with(args: &[&str], plain_http: Vec<String>) -> Cluster {
        let api = ApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let controller = Replica::spawn(&api, dir.path(), "replica-a", args);
        let kubelet =
            Kubelet::start_with(api.shared.clone(), dir.path().join("kubelet"), plain_http)
                .unwrap();
        Cluster {
            api,
            controller,
            _kubelet: kubelet,
            dir,
        }
    }

    /// Another replica of the controller, once it stands by.
    async fn replica(&self, identity: &str) -> Replica {
        let r = Replica::spawn(&self.api, self.dir.path(), identity, &[]);
        r.wait_log("standing by").await;
        r
    }

    /// Creates every object of a YAML file (v1beta1 converted, as the API
    /// server's conversion would) in `ns`, like `kubectl create -f`; returns
    /// the runs created, as (resource, name).
    fn create_file(&self, file: &Path, ns: &str) -> Vec<(&'static str, String)> {
        let out = tektite_api::load_file(file);
        assert!(
            out.diagnostics
                .iter()
                .all(|d| d.severity != tektite_api::Severity::Error),
            "{:?}",
            out.diagnostics
        );
        let mut runs = Vec::new();
        for l in out.objects {
            let (resource, kind, mut v) = match &l.object {
                Object::Task(t) => ("tasks", "Task", serde_json::to_value(t).unwrap()),
                Object::Pipeline(p) => ("pipelines", "Pipeline", serde_json::to_value(p).unwrap()),
                Object::TaskRun(t) => ("taskruns", "TaskRun", serde_json::to_value(t).unwrap()),
                Object::PipelineRun(p) => (
                    "pipelineruns",
                    "PipelineRun",
                    serde_json::to_value(p).unwrap(),
                ),
                Object::StepAction(sa) => (
                    "stepactions",
                    "StepAction",
                    serde_json::to_value(sa).unwrap(),
                ),
            };
            v["apiVersion"] = json!(if kind == "StepAction" {
                tektite_api::stepaction::API_VERSION
            } else {
                TEKTON
            });
            v["kind"] = json!(kind);
            let created = self.create(resource, ns, v);
            if resource.ends_with("runs") {
                runs.push((
                    resource,
                    created["metadata"]["name"].as_str().unwrap().to_string(),
                ));
            }
        }
        runs
    }

    fn create(&self, resource: &str, ns: &str, v: Value) -> Value {
        let gv = match resource {
            "configmaps" => "v1",
            "stepactions" => tektite_api::stepaction::API_VERSION,
            _ => TEKTON,
        };
        let (code, created) = self.api.shared.create(gv, resource, ns, v);
        assert_eq!(code, 201, "{created}");
        created
    }

    fn get(&self, gv: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.api.shared.get(&Key::new(gv, resource, ns, name))
    }

    /// Waits (bounded) until `pred` holds for the run; returns it.
    async fn wait_for(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_object(TEKTON, resource, ns, name, what, pred)
            .await
    }

    /// Waits (bounded) until `pred` holds for the object; returns it.
    async fn wait_for_object(
        &self,
        gv: &str,
        resource: &str,
        ns: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            if let Some(v) = self.get(gv, resource, ns, name).filter(|v| pred(v)) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(240),
                "{resource}/{name}: not {what}: {}\ncontroller log:\n{}",
                self.get(gv, resource, ns, name).unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the run has ended; returns it.
    async fn done(&self, resource: &str, ns: &str, name: &str) -> Value {
        self.wait_for(resource, ns, name, "done", |v| {
            matches!(condition(v).0.as_str(), "True" | "False")
        })
        .await
    }

    /// The child TaskRuns of a PipelineRun, by pipeline task name.
    fn children(&self, pipeline_run: &str) -> std::collections::BTreeMap<String, Value> {
        self.api
            .shared
            .list(TEKTON, "taskruns")
            .into_iter()
            .filter(|t| t["metadata"]["labels"]["tekton.dev/pipelineRun"] == pipeline_run)
            .map(|t| {
                let task = t["metadata"]["labels"]["tekton.dev/pipelineTask"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                (task, t)
            })
            .collect()
    }
}

/// The Succeeded condition's (status, reason, message).
fn condition(v: &Value) -> (String, String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Succeeded"))
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    (s("status"), s("reason"), s("message"))
}

/// The run's results (TaskRun `results`, PipelineRun `results`) by name.
fn results(v: &Value) -> std::collections::BTreeMap<String, Value> {
    v["status"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["value"].clone(),
            )
        })
        .collect()
}

/// A Pipeline with a param that has no default (`tkt pipeline start`).
const HELLO_PIPELINE: &str = r#"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: hello
spec:
  params:
    - {name: who}
  tasks:
    - name: greet
      params: [{name: who, value: $(params.who)}]
      taskSpec:
        params: [{name: who}]
        steps:
          - name: say
            image: localhost/tektite/busybox:latest
            script: echo "hello $(params.who)!"
"#;

fn runs_dir() -> PathBuf {
    repo().join("tests/runs")
}

/// The leader waited for its caches with `wait_until_ready`, as the
/// controllers do, and a store wakes only the last of its waiters: its
/// /readyz could stay 503 (and the archiver never start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_leader_never_said_it_was_ready() {
    let api = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = format!(
        "--log-archive=file://{}",
        dir.path().join("archive").display()
    );
    let leader = Replica::spawn(&api, dir.path(), "replica-a", &[&archive, "--logs-addr="]);
    // The archiver starts once the caches are synced, and /readyz says
    // so from then on.
    leader.wait_log("log archive: following").await;
    let answer = leader.get_path("/readyz").await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        leader.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskruns_from_tests_run_in_pods_the_controller_creates() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    let steps = c.create_file(&runs_dir().join("taskrun-steps.yaml"), "ci");
    let sidecar = c.create_file(&runs_dir().join("taskrun-sidecar.yaml"), "ci");
    // A Task by name, bound as `tkt run -p who=... -w out=...` would.
    c.create_file(&runs_dir().join("task-greet.yaml"), "ci");
    let (_, greet) = &c.api.shared.create(
        TEKTON,
        "taskruns",
        "ci",
        json!({"apiVersion": TEKTON, "kind": "TaskRun",
               "metadata": {"generateName": "greet-"},
               "spec": {"taskRef": {"name": "greet"},
                        "params": [{"name": "who", "value": "cluster"}],
                        "workspaces": [{"name": "out", "emptyDir": {}}]}}),
    );
    let greet = greet["metadata"]["name"].as_str().unwrap().to_string();

    let tr = c.done("taskruns", "ci", &steps[0].1).await;
    assert_eq!(condition(&tr).0, "True", "{tr}");
    let r = results(&tr);
    assert_eq!(r["greeting"], "hello");
    assert_eq!(r["list"], json!(["alpha", "beta gamma"]));
    assert_eq!(r["meta"], json!({"branch": "main"}));
    let pod_name = tr["status"]["podName"].as_str().unwrap();
    let pod = c.get("v1", "pods", "ci", pod_name).unwrap();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], steps[0].1);
    assert_eq!(
        pod["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("tektite.dev/step."))
            .count(),
        3,
        "{pod}"
    );

    let tr = c.done("taskruns", "ci", &sidecar[0].1).await;
    assert_eq!(condition(&tr).0, "True", "{tr}");
    // Released by the controller's ready annotation (the sidecar's pod
    // only). The sidecar (`sleep 60`) outlives the step: the controller
    // stops it by swapping its image, the kubelet kills it, and the pod
    // ends with the sidecar killed, not finished: Failed, as a kubelet
    // says of a pod with a container that ended non-zero, while the run
    // stays Succeeded.
    let pod = c
        .wait_for_object(
            "v1",
            "pods",
            "ci",
            tr["status"]["podName"].as_str().unwrap(),
            "ended",
            |p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")),
        )
        .await;
    assert_eq!(pod["metadata"]["annotations"]["tekton.dev/ready"], "READY");
    assert_eq!(
        pod["metadata"]["annotations"]["tektite.dev/sidecars-stopped"],
        "true"
    );
    assert_eq!(pod["status"]["phase"], "Failed", "{pod}");
    let container = |name: &str, part: &str| {
        pod[part]["containers"]
            .as_array()
            .or(pod[part]["containerStatuses"].as_array())
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        container("sidecar-server", "spec")["image"],
        "localhost/tektite/entrypoint:latest"
    );
    let ended = container("sidecar-server", "status")["state"]["terminated"].clone();
    assert_eq!(ended["exitCode"], 137, "{pod}");
    // The run's status, written while the sidecar ran, gets its final state.
    let tr = c
        .wait_for(
            "taskruns",
            "ci",
            &sidecar[0].1,
            "with its sidecar ended",
            |t| t["status"]["sidecars"][0]["terminated"].is_object(),
        )
        .await;
    assert_eq!(condition(&tr).1, "Succeeded", "{tr}");
    assert_eq!(
        tr["status"]["sidecars"][0]["terminated"]["exitCode"], 137,
        "{tr}"
    );

    let tr = c.done("taskruns", "ci", &greet).await;
    assert_eq!(condition(&tr).0, "True", "{tr}");
    assert_eq!(results(&tr)["line"], "hello, cluster!");

    // One pod per TaskRun, never a second create; the leader's Lease.
    let posts = c
        .api
        .shared
        .requests()
        .iter()
        .filter(|r| r.as_str() == "POST /api/v1/namespaces/ci/pods")
        .count();
    assert_eq!(posts, 3, "{:?}", c.api.shared.requests());
    let lease = c
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "tektite",
            "tektite-controller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    // A second replica stands by: ready, holding nothing, reconciling nothing.
    let b = c.replica("replica-b").await;
    assert!(b.log().contains("replica-a"), "{}", b.log());
    let m = b.scrape().await;
    assert!(!m.contains("tektite_controller_reconcile_total{"), "{m}");
    let lease = c
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "tektite",
            "tektite-controller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    // Events on the transitions, and the metrics of three successes.
    let events = c.api.shared.list("events.k8s.io/v1", "events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Succeeded" && e["regarding"]["name"] == greet),
        "{events:?}"
    );
    let m = c.scrape().await;
    assert!(
        m.contains(r#"tekton_pipelines_controller_taskrun_total{status="success"} 3"#),
        "{m}"
    );
    assert!(
        m.contains("tekton_pipelines_controller_running_taskruns 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelineruns_from_tests_succeed_fail_and_cancel_as_on_a_cluster() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    let hello = c.create_file(&repo().join("tests/examples/hello-pipelinerun.yaml"), "ci");
    let failures = c.create_file(&runs_dir().join("pipeline-failures.yaml"), "ci");
    let long = c.create_file(&runs_dir().join("pipeline-long.yaml"), "ci");
    let retries = c.create_file(&runs_dir().join("pipeline-retries.yaml"), "ci");

    let pr = c.done("pipelineruns", "ci", &hello[0].1).await;
    assert_eq!(condition(&pr).0, "True", "{pr}");
    let kids = c.children(&hello[0].1);
    assert_eq!(
        kids.keys().collect::<Vec<_>>(),
        ["greet", "report", "shout"]
    );
    assert_eq!(results(&kids["greet"])["greeting"], "hello, Tektite");
    for (task, tr) in &kids {
        assert_eq!(condition(tr).0, "True", "{task}: {tr}");
    }

    let pr = c.done("pipelineruns", "ci", &failures[0].1).await;
    let (status, reason, _) = condition(&pr);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Failed"),
        "{pr}"
    );
    let kids = c.children(&failures[0].1);
    assert_eq!(condition(&kids["broken"]).0, "False");
    assert!(
        !kids.contains_key("never"),
        "a dependent of a failed task ran"
    );
    assert_eq!(condition(&kids["report"]).0, "True", "finally runs");

    // A retry in a pod of its own (the claim from the volumeClaimTemplate
    // keeps the first attempt's marker), and a task timeout.
    let name = &retries[0].1;
    let pr = c.done("pipelineruns", "ci", name).await;
    assert_eq!(condition(&pr).1, "Failed", "{pr}");
    let kids = c.children(name);
    let flaky = &kids["flaky"];
    assert_eq!(condition(flaky).1, "Succeeded", "{flaky}");
    assert_eq!(
        flaky["status"]["retriesStatus"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        condition(&json!({"status": flaky["status"]["retriesStatus"][0]})).1,
        "StepFailed"
    );
    assert!(
        flaky["status"]["podName"]
            .as_str()
            .unwrap()
            .ends_with("-flaky-pod-retry1"),
        "{flaky}"
    );
    let (_, reason, message) = condition(&kids["slow"]);
    assert_eq!(reason, "TaskRunTimeout", "{message}");
    assert!(c.api.shared.list("v1", "persistentvolumeclaims").len() == 1);

    // Cancel the long run once its task runs: its pod goes, the run ends
    // Cancelled (kubectl patch ... spec.status=Cancelled).
    let name = &long[0].1;
    c.wait_for("pipelineruns", "ci", name, "running a TaskRun", |_| {
        !c.children(name).is_empty()
    })
    .await;
    c.api
        .shared
        .update(&Key::new(TEKTON, "pipelineruns", "ci", name), |p| {
            p["spec"]["status"] = json!("Cancelled");
        });
    let pr = c.done("pipelineruns", "ci", name).await;
    assert_eq!(condition(&pr).1, "Cancelled", "{pr}");
    let kids = c.children(name);
    let wait = c
        .done(
            "taskruns",
            "ci",
            kids["wait"]["metadata"]["name"].as_str().unwrap(),
        )
        .await;
    assert_eq!(condition(&wait).1, "TaskRunCancelled", "{wait}");
    let pod = wait["status"]["podName"].as_str().unwrap();
    assert!(
        c.get("v1", "pods", "ci", pod).is_none(),
        "the cancelled pod is deleted"
    );

    let m = c.scrape().await;
    for want in [
        r#"tekton_pipelines_controller_pipelinerun_total{status="success"} 1"#,
        r#"tekton_pipelines_controller_pipelinerun_total{status="failed"} 2"#,
        r#"tekton_pipelines_controller_pipelinerun_total{status="cancelled"} 1"#,
    ] {
        assert!(m.contains(want), "{want}:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_defaults_is_watched_over_the_flags() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&["--default-service-account", "from-flag"]).await;
    let run = |c: &Cluster| {
        let (_, v) = c.api.shared.create(
            TEKTON,
            "taskruns",
            "ci",
            json!({"apiVersion": TEKTON, "kind": "TaskRun", "metadata": {"generateName": "sa-"},
                   "spec": {"taskSpec": {"steps": [{"name": "s", "image": BUSYBOX, "script": "true"}]}}}),
        );
        v["metadata"]["name"].as_str().unwrap().to_string()
    };
    let account = |c: &Cluster, tr: &Value| {
        let pod = c
            .get(
                "v1",
                "pods",
                "ci",
                tr["status"]["podName"].as_str().unwrap(),
            )
            .unwrap();
        pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let first = run(&c);
    let tr = c.done("taskruns", "ci", &first).await;
    assert_eq!(condition(&tr).0, "True", "{tr}");
    assert_eq!(account(&c, &tr), "from-flag");

    // The ConfigMap wins over the flag once applied...
    c.create(
        "configmaps",
        "tektite",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "config-defaults"},
               "data": {"default-service-account": "from-configmap"}}),
    );
    c.wait_log("configuration applied").await;
    let second = run(&c);
    let tr = c.done("taskruns", "ci", &second).await;
    assert_eq!(account(&c, &tr), "from-configmap");

    // ...an invalid version is refused and the previous one stays.
    c.api.shared.update(
        &Key::new("v1", "configmaps", "tektite", "config-defaults"),
        |cm| {
            cm["data"] = json!({"default-service-account": "other", "max-result-size": "big"});
        },
    );
    c.wait_log("invalid configuration").await;
    assert!(
        c.log().contains(
            r#"config-defaults: max-result-size: expected a size in bytes above 0, got "big""#
        ),
        "{}",
        c.log()
    );
    let third = run(&c);
    let tr = c.done("taskruns", "ci", &third).await;
    assert_eq!(account(&c, &tr), "from-configmap");

    // Deleted: the flags' value is back.
    assert!(
        c.api
            .shared
            .delete(&Key::new("v1", "configmaps", "tektite", "config-defaults"))
    );
    c.wait_log("configuration deleted").await;
    let fourth = run(&c);
    let tr = c.done("taskruns", "ci", &fourth).await;
    assert_eq!(account(&c, &tr), "from-flag");
}

/// A `docker-registry serve` on a free loopback port (anonymous), killed
/// on drop.
struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let found = Command::new("/bin/sh")
            .args(["-c", "command -v docker-registry"])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "docker-registry is missing: apt-get install -y docker-registry (hack/test.sh does), \
             or set TEKTITE_SKIP_PODMAN=1"
        );
        let dir = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", free_port());
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("store").display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry {
            child,
            host,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image only in the registry's and the local store, removed on drop.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_a_command_runs_the_command_its_image_has_in_the_registry() {
    if !podman_ready() {
        return;
    }
    let registry = Registry::start();
    // An image whose ENTRYPOINT takes a shell line and whose CMD is one:
    // a step with no command runs both, a step with args only runs the
    // ENTRYPOINT with them (Kubernetes' rules), and neither works unless
    // the controller read them from the registry.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Containerfile"),
        format!(
            "FROM {BUSYBOX}\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"printf from-cmd > /tekton/results/first\"]\n"
        ),
    )
    .unwrap();
    let image = Image(format!("{}/tektite/shell-line:1", registry.host));
    podman(&[
        "build",
        "--quiet",
        "--pull=never",
        "-t",
        &image.0,
        &dir.path().to_string_lossy(),
    ]);
    podman(&["push", "--quiet", "--tls-verify=false", &image.0]);

    let c = Cluster::start(&["--plain-http-registry", &registry.host]).await;
    let (_, tr) = c.api.shared.create(
        TEKTON,
        "taskruns",
        "ci",
        json!({"apiVersion": TEKTON, "kind": "TaskRun", "metadata": {"generateName": "image-cmd-"},
               "spec": {"taskSpec": {
                   "results": [{"name": "first"}, {"name": "second"}],
                   "steps": [
                       {"name": "plain", "image": image.0},
                       {"name": "args", "image": image.0,
                        "args": ["printf from-args > $(results.second.path)"]}]}}}),
    );
    let name = tr["metadata"]["name"].as_str().unwrap().to_string();
    let missing = format!("{}/tektite/missing:1", registry.host);
    let (_, bad) = c.api.shared.create(
        TEKTON,
        "taskruns",
        "ci",
        json!({"apiVersion": TEKTON, "kind": "TaskRun", "metadata": {"generateName": "image-missing-"},
               "spec": {"taskSpec": {"steps": [{"name": "plain", "image": missing}]}}}),
    );
    let bad = bad["metadata"]["name"].as_str().unwrap().to_string();

    let tr = c.done("taskruns", "ci", &name).await;
    assert_eq!(condition(&tr).0, "True", "{tr}\n{}", c.log());
    let r = results(&tr);
    assert_eq!(r["first"], "from-cmd");
    assert_eq!(r["second"], "from-args");

    let tr = c.done("taskruns", "ci", &bad).await;
    let (status, reason, message) = condition(&tr);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TaskRunImagePullFailed"),
        "{tr}"
    );
    assert!(message.contains(&missing), "{message}");
    assert!(
        tr["status"]["podName"].as_str().unwrap_or("").is_empty()
            || c.get(
                "v1",
                "pods",
                "ci",
                tr["status"]["podName"].as_str().unwrap()
            )
            .is_none(),
        "no pod for a run whose image cannot be read: {tr}"
    );
}

/// Pods named as a TaskRun's would be, made by someone else: cancelling
/// the TaskRun `web` does not delete `web-pod`, and a TaskRun `api` whose
/// pod name `api-pod` is taken fails instead of taking that pod's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskrun_never_adopts_or_deletes_a_pod_it_does_not_own_on_a_cluster() {
    if !podman_ready() {
        return;
    }
    let c = Cluster::start(&[]).await;
    for name in ["web-pod", "api-pod"] {
        let (code, pod) = c.api.shared.create(
            "v1",
            "pods",
            "ci",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                   "spec": {"restartPolicy": "Never",
                            "containers": [{"name": "app", "image": BUSYBOX, "command": ["true"]}]}}),
        );
        assert_eq!(code, 201, "{pod}");
    }
    let task_run = |name: &str, spec_status: Option<&str>| {
        let mut tr = json!({"apiVersion": TEKTON, "kind": "TaskRun", "metadata": {"name": name},
            "spec": {"taskSpec": {"steps": [{"name": "s", "image": BUSYBOX, "script": "true"}]}}});
        if let Some(s) = spec_status {
            tr["spec"]["status"] = json!(s);
        }
        c.create("taskruns", "ci", tr);
    };
    task_run("web", Some("TaskRunCancelled"));
    task_run("api", None);

    let web = c.done("taskruns", "ci", "web").await;
    assert_eq!(condition(&web).1, "TaskRunCancelled", "{web}");
    let api = c.done("taskruns", "ci", "api").await;
    let (status, reason, message) = condition(&api);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PodCreationFailed"),
        "{api}"
    );
    assert!(
        message.contains(r#"pod "api-pod" exists and is not controlled by TaskRun "api""#),
        "{message}"
    );
    for name in ["web-pod", "api-pod"] {
        let pod = c
            .get("v1", "pods", "ci", name)
            .unwrap_or_else(|| panic!("{name} was deleted"));
        assert!(pod["metadata"]["ownerReferences"].is_null(), "{pod}");
    }
}

/// A `python3 -m http.server` for `dir` on a free loopback port, killed
/// on drop.
struct Web(Child, String);

impl Web {
    fn serve(dir: &Path) -> Web {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "-d"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "http.server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Web(child, format!("http://127.0.0.1:{port}"))
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The remote run of the resolvers' issue on the controller: a Pipeline
/// over http, one task from git (whose step is a StepAction from git) and
/// one from a bundle, run by the real binary with podman as its kubelet;
/// provenance on the run and on each TaskRun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_pipeline_with_tasks_from_git_and_a_bundle_runs_on_the_controller() {
    if !podman_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    // Over git's own protocol: the controller refuses file:// (its files).
    let port = free_port();
    let url = format!("git://127.0.0.1:{port}/repo");
    std::fs::write(
        repo.join("task.yaml"),
        format!(
            "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: from-git\nspec:\n  params:\n    - name: who\n  results:\n    - name: said\n      value: $(steps.greet.results.said)\n  steps:\n    - name: greet\n      ref:\n        resolver: git\n        params:\n          - {{name: url, value: \"{url}\"}}\n          - {{name: pathInRepo, value: stepaction.yaml}}\n      params:\n        - {{name: who, value: $(params.who)}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("stepaction.yaml"),
        format!("apiVersion: tekton.dev/v1beta1\nkind: StepAction\nmetadata:\n  name: greet\nspec:\n  params:\n    - name: who\n  results:\n    - name: said\n  image: {BUSYBOX}\n  env:\n    - {{name: WHO, value: $(params.who)}}\n    - {{name: OUT, value: $(step.results.said.path)}}\n  script: |\n    printf 'hello %s' \"$WHO\" > \"$OUT\"\n"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
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
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "tasks"]);
    let mut daemon = git_daemon()
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", work.path().display()))
        .arg(work.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "git daemon did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let registry = Registry::start();
    let bundle = format!("{}/demo/tasks:v1", registry.host);
    let bundled = json!({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "from-bundle"},
        "spec": {"results": [{"name": "word"}],
                 "steps": [{"name": "say", "image": BUSYBOX,
                            "script": "printf bundled > $(results.word.path)"}]}});
    let resolvers = tektite_resolve::Resolvers::new(tektite_resolve::Options::default()).unwrap();
    tektite_resolve::bundle::push(
        &resolvers,
        &bundle,
        &[tektite_resolve::bundle::Object {
            entry: tektite_resolve::bundle::Entry {
                kind: "task".into(),
                name: "from-bundle".into(),
                api_version: "v1".into(),
            },
            json: serde_json::to_vec(&bundled).unwrap(),
        }],
    )
    .await
    .unwrap();

    let webdir = work.path().join("web");
    std::fs::create_dir_all(&webdir).unwrap();
    std::fs::write(
        webdir.join("pipeline.yaml"),
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: from-http\nspec:\n  params:\n    - name: repo\n    - name: bundle\n  tasks:\n    - name: git-task\n      taskRef:\n        resolver: git\n        params:\n          - {name: url, value: $(params.repo)}\n          - {name: pathInRepo, value: task.yaml}\n      params:\n        - {name: who, value: Ada}\n    - name: bundle-task\n      runAfter: [git-task]\n      taskRef:\n        resolver: bundles\n        params:\n          - {name: bundle, value: $(params.bundle)}\n          - {name: name, value: from-bundle}\n",
    )
    .unwrap();
    let web = Web::serve(&webdir);

    let c = Cluster::start(&[]).await;
    let pr = c.create(
        "pipelineruns",
        "ci",
        json!({"apiVersion": TEKTON, "kind": "PipelineRun",
               "metadata": {"name": "remote-run", "namespace": "ci"},
               "spec": {"params": [{"name": "repo", "value": url}, {"name": "bundle", "value": bundle}],
                        "pipelineRef": {"resolver": "http",
                            "params": [{"name": "url", "value": format!("{}/pipeline.yaml", web.1)}]}}}),
    );
    let name = pr["metadata"]["name"].as_str().unwrap().to_string();
    let pr = c.done("pipelineruns", "ci", &name).await;
    assert_eq!(condition(&pr).1, "Succeeded", "{pr}\n{}", c.log());
    assert_eq!(
        pr["status"]["provenance"]["refSource"]["uri"],
        format!("{}/pipeline.yaml", web.1)
    );
    let kids = c.children(&name);
    assert_eq!(results(&kids["git-task"])["said"], "hello Ada");
    assert_eq!(results(&kids["bundle-task"])["word"], "bundled");
    let git_source = &kids["git-task"]["status"]["provenance"]["refSource"];
    assert_eq!(git_source["uri"], format!("git+{url}"));
    assert_eq!(git_source["entryPoint"], "task.yaml");
    let bundle_source = &kids["bundle-task"]["status"]["provenance"]["refSource"];
    assert_eq!(
        bundle_source["uri"],
        format!("{}/demo/tasks", registry.host)
    );
    assert_eq!(bundle_source["entryPoint"], "from-bundle");
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// `git-daemon` itself, not `git daemon`: `git` runs it as a child, which
/// outlived the `git` a test killed and kept serving after the tests.
fn git_daemon() -> Command {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git is installed");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Command::new(std::path::Path::new(&dir).join("git-daemon"))
}
