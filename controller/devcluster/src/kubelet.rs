//! A kubelet for the fake API server: every Pod created there is played for
//! real by the local podman runtime (`tektite_local::runtime::PodmanPod`,
//! which adapts it as `tkt run` does), and what podman shows of it (phase,
//! container states, the entrypoint's step reports as `tektite.dev/step.*`
//! annotations) is written back to the Pod, as a kubelet and the entrypoint
//! would. A Pod deleted from the server is stopped; the `tekton.dev/ready`
//! annotation releases the steps of a pod with sidecars. Containers' output
//! goes to log files under its directory (`state/logs/POD/CONTAINER.log`),
//! which the server's `pods/log` reads. Pod names are taken to be unique
//! across namespaces (podman's container names are made of them). An
//! image it pulls for a pod gives the pod `Pulling` and `Pulled` events,
//! worded as a kubelet words them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tektite_local::runtime::{PodEnv, PodmanPod};
use tektite_local::store::Store;

use crate::apiserver::{Key, Shared};

/// The kubelet thread; stopped (and its pods removed) on drop.
#[derive(Debug)]
pub struct Kubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    /// Plays the server's pods under `dir`, and serves their logs.
    ///
    /// # Errors
    /// The directory for its state cannot be made.
    pub fn start(api: Arc<Shared>, dir: PathBuf) -> anyhow::Result<Kubelet> {
        Kubelet::start_with(api, dir, Vec::new())
    }

    /// As [`Kubelet::start`], pulling from the registries `plain_http`
    /// (`host[:port]`) over plain HTTP.
    ///
    /// # Errors
    /// The directory for its state cannot be made.
    pub fn start_with(
        api: Arc<Shared>,
        dir: PathBuf,
        plain_http: Vec<String>,
    ) -> anyhow::Result<Kubelet> {
        let store = Store::open(Some(&dir.join("state")))?;
        let logs = store.clone();
        api.serve_logs_from(Box::new(move |_ns, pod, container| {
            logs.log_path(pod, container)
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || run(&api, (&dir, &plain_http), &store, &flag));
        Ok(Kubelet {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key(pod: &Value) -> Key {
    Key::new(
        "v1",
        "pods",
        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        pod["metadata"]["name"].as_str().unwrap_or(""),
    )
}

/// Writes what podman shows of a pod into the server's copy: its status
/// (phase as a kubelet gives it with `restartPolicy: Never`: Running while
/// any container runs, sidecars included; once all have ended, Failed if
/// any ended non-zero, else Succeeded), and the step reports among its
/// annotations.
fn write_back(api: &Shared, key: &Key, observed: &Pod) -> Option<String> {
    let mut status = serde_json::to_value(&observed.status).unwrap_or(Value::Null);
    let states: Vec<&Value> = status["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["state"])
        .collect();
    let all_ended = !states.is_empty() && states.iter().all(|s| s.get("terminated").is_some());
    if all_ended {
        let failed = states
            .iter()
            .any(|s| s["terminated"]["exitCode"].as_i64() != Some(0));
        status["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
    } else if status["phase"] != "Pending" {
        status["phase"] = json!("Running");
    }
    let phase = status["phase"].as_str().map(str::to_string);
    let reports: BTreeMap<String, String> = observed
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("tektite.dev/"))
        .collect();
    api.update(key, |p| {
        p["status"] = status;
        for (k, v) in reports {
            p["metadata"]["annotations"][k] = json!(v);
        }
    });
    phase
}

/// Container name → image, from a pod's spec.
fn images_of(pod: &Value) -> BTreeMap<String, String> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["name"].as_str()?.to_string(),
                c["image"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// A pod that could not be played ends Failed, saying why.
fn fail(api: &Shared, k: &Key, message: &str) {
    api.update(k, |p| {
        p["status"] = json!({"phase": "Failed", "reason": "PlayFailed", "message": message});
    });
}

/// The `Pulling` and `Pulled` events of the images pulled for `pod`, as
/// a kubelet records them (`firstTimestamp`/`lastTimestamp` to the second,
/// the exact duration in the message).
fn record_pulls(api: &Shared, pod: &Value, pulls: &[tektite_api::v1::ImagePull]) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    for (i, pull) in pulls.iter().enumerate() {
        let (Some(start), Some(end)) = (&pull.start_time, &pull.completion_time) else {
            continue;
        };
        let took = end.0.duration_since(start.0).as_secs_f64();
        let said = [
            ("Pulling", start, format!("Pulling image {:?}", pull.image)),
            (
                "Pulled",
                end,
                format!(
                    "Successfully pulled image {:?} in {took:.3}s ({took:.3}s including waiting). Image size: 0 bytes.",
                    pull.image
                ),
            ),
        ];
        for (reason, at, message) in said {
            let second = k8s_openapi::jiff::Timestamp::from_second(at.0.as_second());
            let at = second.unwrap_or(at.0).to_string();
            let event = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.pull-{i}-{}", reason.to_lowercase()), "namespace": ns},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                                   "uid": pod["metadata"]["uid"]},
                "reason": reason, "message": message, "type": "Normal", "count": 1,
                "source": {"component": "kubelet", "host": "tektite-devcluster"},
                "firstTimestamp": at, "lastTimestamp": at,
            });
            api.create("v1", "events", ns, event);
        }
    }
}

fn run(
    api: &Shared,
    (dir, plain_http): (&std::path::Path, &[String]),
    store: &Store,
    stop: &AtomicBool,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    // Container output is kept in the store; the lines sent are dropped.
    std::thread::spawn(move || for _ in rx {});
    let mut playing: BTreeMap<Key, PodmanPod> = BTreeMap::new();
    let mut seen: BTreeSet<Key> = BTreeSet::new();
    // The images each pod was played with, and the containers stopped.
    let mut images: BTreeMap<Key, BTreeMap<String, String>> = BTreeMap::new();
    let mut stopped: BTreeSet<(Key, String)> = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        let pods = api.list("v1", "pods");
        // A pod deleted is forgotten: one made again under its name is played.
        seen.retain(|k| pods.iter().any(|p| key(p) == *k));
        for pod in pods {
            let k = key(&pod);
            if !seen.insert(k.clone()) {
                continue;
            }
            let typed = match serde_json::from_value::<Pod>(pod.clone()) {
                Ok(p) => p,
                Err(e) => {
                    fail(api, &k, &e.to_string());
                    continue;
                }
            };
            // Logs are kept by pod: each retry of a TaskRun has its own.
            let run_dir = dir.join(&k.name);
            let env = PodEnv {
                task_run: &k.name,
                run_dir: &run_dir,
                fast_dir: &run_dir,
                claims: &BTreeMap::new(),
                claims_dir: &dir.join("claims"),
                store,
                signals: &tx,
                grace: Duration::from_secs(30),
                journal: None,
                plain_http,
            };
            match PodmanPod::start(&typed, &env) {
                Ok(p) => {
                    record_pulls(api, &pod, p.pulls());
                    images.insert(k.clone(), images_of(&pod));
                    playing.insert(k, p);
                }
                Err(e) => fail(api, &k, &e.to_string()),
            }
        }
        let keys: Vec<Key> = playing.keys().cloned().collect();
        for k in keys {
            let Some(current) = api.get(&k) else {
                // Deleted (cancel, timeout): stop it at once.
                if let Some(p) = playing.remove(&k) {
                    p.finish(false);
                }
                continue;
            };
            let Some(p) = playing.get_mut(&k) else {
                continue;
            };
            if p.waits_for_ready()
                && current["metadata"]["annotations"]["tekton.dev/ready"] == "READY"
            {
                p.mark_ready();
            }
            // A container whose image the controller swapped (stopping a
            // sidecar) is restarted by a kubelet into a command that
            // cannot run, and ends non-zero: here it is killed (137).
            let played = &images[&k];
            for (container, image) in images_of(&current) {
                if played.get(&container).is_some_and(|i| *i != image)
                    && stopped.insert((k.clone(), container.clone()))
                {
                    let _ = std::process::Command::new("podman")
                        .args(["stop", "--time", "0", &format!("{}-{container}", k.name)])
                        .output();
                }
            }
            let Ok(observed) = p.observe() else { continue };
            let phase = write_back(api, &k, &observed);
            if matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
                && let Some(p) = playing.remove(&k)
            {
                p.finish(false);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (_, p) in playing {
        p.finish(false);
    }
}
