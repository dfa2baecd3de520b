//! A Pod the engine built, adapted for `podman kube play` on this machine
//! (pure: the caller creates the directories and files it names).
//!
//! What podman (4.x) does differently from a kubelet, and what is done here:
//! - an `emptyDir` becomes a named volume *shared by every pod* using that
//!   volume name: every emptyDir becomes a hostPath directory under the run
//!   directory instead (also what lets the host read reports and results);
//! - `downwardAPI` volumes are not supported: the ready file lives in a
//!   hostPath directory the runner writes `READY` into;
//! - `fieldRef` env supports only some fields: they are replaced by their
//!   values;
//! - claims (`persistentVolumeClaim`) become directories under `claims_dir`,
//!   shared by the TaskRuns of one PipelineRun as a claim would be;
//! - `configMap`/`secret`/`projected`/`csi` volumes become directories the
//!   runner fills (`FileToWrite`s for the ready file only; the others are
//!   listed so the runner can say what it cannot provide).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVar, HostPathVolumeSource, Pod, PodSpec, Volume};

/// The pod to play and what to prepare on the host first.
#[derive(Debug, Clone)]
pub struct Adapted {
    pub pod: Pod,
    /// Directories to create before playing the pod.
    pub dirs: Vec<PathBuf>,
    /// The file that releases the first step when the pod has sidecars
    /// (write `READY` into it once the sidecars run).
    pub ready_file: Option<PathBuf>,
    /// Volumes whose content podman cannot provide (configMap, secret,
    /// projected, csi): name → host directory the runner must fill.
    pub to_fill: Vec<(String, PathBuf)>,
}

fn host_path(path: &Path) -> Option<HostPathVolumeSource> {
    Some(HostPathVolumeSource {
        path: path.to_string_lossy().into_owned(),
        type_: Some("Directory".into()),
    })
}

/// Every container of a pod spec, init containers first: what a runtime
/// changes in each alike (environment, mounts).
pub fn containers_mut(spec: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    spec.init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
}

/// `pod` with `env` first in every container's environment (`tkt run
/// --env`): what a container sets itself wins, as a later entry does on a
/// kubelet.
pub fn with_env(pod: &Pod, env: &[(String, String)]) -> Pod {
    let mut pod = pod.clone();
    if env.is_empty() {
        return pod;
    }
    let spec = pod.spec.get_or_insert_default();
    for c in containers_mut(spec) {
        let mut all: Vec<EnvVar> = env
            .iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                ..Default::default()
            })
            .collect();
        all.extend(c.env.take().unwrap_or_default());
        c.env = Some(all);
    }
    pod
}

/// Where a pod's volumes go on the host.
#[derive(Debug, Clone, Copy)]
pub struct HostDirs<'a> {
    /// The pod's own directory (this TaskRun's): its emptyDirs and the
    /// volumes the runner fills.
    pub run: &'a Path,
    /// Where its bookkeeping emptyDirs go ([`is_bookkeeping_volume`]): a
    /// directory in memory, or `run` itself.
    pub fast: &'a Path,
    /// Where provisioned claims live.
    pub claims: &'a Path,
}

/// Whether the engine's pod volume `name` holds only the pod's own
/// bookkeeping, made, read once and removed within the pod's life: the
/// steps' run directories, the step links, a step's credentials home.
pub fn is_bookkeeping_volume(name: &str) -> bool {
    name == "tekton-internal-steps"
        || name.starts_with(crate::pod::RUN_VOLUME_PREFIX)
        || name.starts_with("tekton-creds-init-home-")
}

/// Adapts `pod` to run in `dirs`, except the claims `bound` to a host
/// directory of the user's (claim name → directory; `tkt run -w
/// name=PATH`): those are that directory, and are not made.
pub fn adapt(pod: &Pod, dirs: HostDirs<'_>, bound: &BTreeMap<String, PathBuf>) -> Adapted {
    let mut pod = pod.clone();
    let fields = FieldValues::of(&pod);
    let mut host = HostVolumes {
        dirs: vec![dirs.run.to_path_buf()],
        ready_file: None,
        to_fill: Vec::new(),
    };
    if let Some(spec) = pod.spec.as_mut() {
        for v in spec.volumes.iter_mut().flatten() {
            host.place(v, dirs, bound);
        }
        fields.replace_in(spec);
        // podman has no API server to enforce it, and rejects some values.
        spec.active_deadline_seconds = None;
    }
    let HostVolumes {
        dirs,
        ready_file,
        to_fill,
    } = host;
    Adapted {
        pod,
        dirs,
        ready_file,
        to_fill,
    }
}

/// What the pod's volumes need on the host, gathered as each volume
/// becomes a host directory.
struct HostVolumes {
    dirs: Vec<PathBuf>,
    ready_file: Option<PathBuf>,
    to_fill: Vec<(String, PathBuf)>,
}

impl HostVolumes {
    /// Makes `v` a hostPath volume: a directory under `dirs.run` for an
    /// emptyDir (under `dirs.fast` for a bookkeeping one), the ready file's
    /// directory, or a volume the runner fills; under `dirs.claims` for a
    /// claim, or the user's directory it is `bound` to. Other volumes are
    /// left as they are.
    fn place(&mut self, v: &mut Volume, dirs: HostDirs<'_>, bound: &BTreeMap<String, PathBuf>) {
        let dir = dirs.run.join(&v.name);
        let adapted = if v.empty_dir.is_some() && is_bookkeeping_volume(&v.name) {
            Some(dirs.fast.join(&v.name))
        } else if v.empty_dir.is_some() {
            Some(dir)
        } else if v.downward_api.is_some() {
            self.ready_file = Some(dir.join("ready"));
            Some(dir)
        } else if let Some(c) = &v.persistent_volume_claim {
            if let Some(user) = bound.get(&c.claim_name) {
                *v = Volume {
                    name: v.name.clone(),
                    host_path: host_path(user),
                    ..Default::default()
                };
                return;
            }
            Some(dirs.claims.join(&c.claim_name))
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.projected.is_some()
            || v.csi.is_some()
        {
            self.to_fill.push((v.name.clone(), dir.clone()));
            Some(dir)
        } else {
            None
        };
        if let Some(d) = adapted {
            *v = Volume {
                name: v.name.clone(),
                host_path: host_path(&d),
                ..Default::default()
            };
            self.dirs.push(d);
        }
    }
}

/// The values a `fieldRef` may read, from the pod as built.
struct FieldValues {
    name: String,
    namespace: String,
    uid: String,
    service_account: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl FieldValues {
    fn of(pod: &Pod) -> FieldValues {
        FieldValues {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        }
    }

    /// The value at `path`, as a kubelet on this host would give it; `None`
    /// for a field it does not know.
    fn get(&self, path: &str) -> Option<String> {
        let key = |p: &str| {
            path.strip_prefix(p)
                .and_then(|r| r.strip_prefix("['").and_then(|r| r.strip_suffix("']")))
                .map(str::to_string)
        };
        match path {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            "metadata.uid" => Some(self.uid.clone()),
            "spec.serviceAccountName" => Some(self.service_account.clone()),
            "spec.nodeName" => Some("localhost".into()),
            "status.podIP" | "status.hostIP" => Some("127.0.0.1".into()),
            _ => key("metadata.labels")
                .map(|k| self.labels.get(&k).cloned().unwrap_or_default())
                .or_else(|| {
                    key("metadata.annotations")
                        .map(|k| self.annotations.get(&k).cloned().unwrap_or_default())
                }),
        }
    }

    /// Every known `fieldRef` in the containers' environment replaced by its
    /// value.
    fn replace_in(&self, spec: &mut PodSpec) {
        for c in containers_mut(spec) {
            for e in c.env.iter_mut().flatten() {
                if let Some(value) = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .and_then(|f| self.get(&f.field_path))
                {
                    e.value = Some(value);
                    e.value_from = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_emptydirs_go_to_the_fast_directory_and_the_rest_stays() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "tekton-internal-run-0", "emptyDir": {}},
                {"name": "tekton-internal-steps", "emptyDir": {}},
                {"name": "tekton-internal-results", "emptyDir": {}},
                {"name": "tekton-creds-init-home-0", "secret": {"secretName": "s"}},
                {"name": "ws", "persistentVolumeClaim": {"claimName": "c"}},
            ]}
        }))
        .unwrap();
        let (run, fast, claims) = (Path::new("/r"), Path::new("/f"), Path::new("/c"));
        let dirs = HostDirs { run, fast, claims };
        let a = adapt(&pod, dirs, &BTreeMap::new());
        let host = |name: &str| {
            let v = a.pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
            let v = v.iter().find(|v| v.name == name).unwrap();
            PathBuf::from(&v.host_path.as_ref().unwrap().path)
        };
        assert_eq!(
            host("tekton-internal-run-0"),
            fast.join("tekton-internal-run-0")
        );
        assert_eq!(
            host("tekton-internal-steps"),
            fast.join("tekton-internal-steps")
        );
        assert_eq!(
            host("tekton-internal-results"),
            run.join("tekton-internal-results")
        );
        // A volume the runner fills stays, whatever its name.
        assert_eq!(
            host("tekton-creds-init-home-0"),
            run.join("tekton-creds-init-home-0")
        );
        assert_eq!(host("ws"), claims.join("c"));
        assert!(a.dirs.contains(&fast.join("tekton-internal-run-0")));
        assert!(!a.dirs.contains(&run.join("tekton-internal-run-0")));
    }

    #[test]
    fn only_the_pods_bookkeeping_volumes_are_bookkeeping() {
        for v in [
            "tekton-internal-steps",
            "tekton-internal-run-3",
            "tekton-creds-init-home-0",
        ] {
            assert!(is_bookkeeping_volume(v), "{v}");
        }
        for v in [
            "tekton-internal-results",
            "tekton-internal-home",
            "tekton-internal-scripts",
            "tekton-internal-bin",
            "tekton-internal-workspace",
            "ws-source",
        ] {
            assert!(!is_bookkeeping_volume(v), "{v}");
        }
    }
}
