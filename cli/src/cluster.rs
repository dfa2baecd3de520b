//! The cluster target: `tkt pr|tr …` and `tkt run` against a Kubernetes API
//! server (kube-rs, with its kubeconfig, exec-plugin and in-cluster
//! support) instead of the local run store.
//!
//! Data flow: flags pick the target (`TargetArgs`); `Cluster` holds the
//! client, the namespace and a tokio runtime, and answers the inspect
//! commands' questions (`inspect::Target`) with blocking calls. Following
//! logs as a run goes is in `follow`; `tkt run --cluster` in `cluster_run`.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tektite_api::v1::{PipelineRun, TaskRun};

use crate::inspect::{self, DeleteArgs, Grace, Kind, LogsArgs};

/// The field manager `tkt` applies and patches with.
pub const MANAGER: &str = "tkt";

/// Flags that pick the target of a command: the local run store (the
/// default) or a cluster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Work on the cluster of the current kubeconfig context (in a pod: its
    /// service account) instead of the local run store
    #[arg(long, global = true)]
    pub cluster: bool,
    /// The kubeconfig to use (implies --cluster) [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (implies --cluster)
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (implies --cluster) [default: the context's, else default]
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
}

impl TargetArgs {
    /// Whether these flags ask for a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
            || self.kubeconfig.is_some()
            || self.context.is_some()
            || self.namespace.is_some()
    }
}

/// A connection to a cluster, in one namespace (or all of them).
pub struct Cluster {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) client: Client,
    pub namespace: String,
    /// `-A`: lists cover every namespace.
    pub all_namespaces: bool,
    server: String,
    /// The log archive, for the logs of pods that are gone.
    pub(crate) archive: crate::archive::Lazy,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects as the flags say: `--kubeconfig`/`--context`, else
    /// `$KUBECONFIG` or `~/.kube/config`, else the pod's service account.
    ///
    /// # Errors
    /// No usable configuration, or its credentials cannot be loaded.
    pub fn connect(t: &TargetArgs) -> anyhow::Result<Cluster> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let options = KubeConfigOptions {
            context: t.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = rt.block_on(async {
            match &t.kubeconfig {
                Some(file) => {
                    let kc = Kubeconfig::read_from(file)
                        .with_context(|| format!("cannot read kubeconfig {}", file.display()))?;
                    Config::from_custom_kubeconfig(kc, &options)
                        .await
                        .with_context(|| format!("kubeconfig {}", file.display()))
                }
                None if t.context.is_some() => Config::from_kubeconfig(&options)
                    .await
                    .context("cannot load the kubeconfig"),
                // Its message says what was tried, once.
                None => Config::infer().await.map_err(|e| {
                    anyhow::anyhow!(
                        "no cluster: no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod ({e})"
                    )
                }),
            }
        })?;
        let namespace = t
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = {
            let _guard = rt.enter();
            Client::try_from(config.clone()).context("cannot make a client for the cluster")?
        };
        Ok(Cluster {
            rt,
            archive: crate::archive::Lazy::new(client.clone(), config),
            client,
            namespace,
            all_namespaces: false,
            server,
        })
    }

    /// `e`, saying which server could not be reached when that is what
    /// went wrong (not an answer of the server's).
    pub(crate) fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        let unreachable = e.chain().any(|c| {
            c.downcast_ref::<kube::Error>()
                .is_some_and(|k| !matches!(k, kube::Error::Api(_)))
        });
        if unreachable {
            e.context(format!("cannot reach the cluster at {}", self.server))
        } else {
            e
        }
    }

    /// Creates a run (JSON) of `kind`; its name.
    ///
    /// # Errors
    /// It is not a run of that kind, or the server refuses it.
    pub(crate) fn create_run(&self, kind: Kind, run: serde_json::Value) -> anyhow::Result<String> {
        let pp = kube::api::PostParams::default();
        let created = match kind {
            Kind::PipelineRun => {
                let pr: PipelineRun = serde_json::from_value(run)?;
                self.block(self.prs().create(&pp, &pr))?.metadata
            }
            Kind::TaskRun => {
                let tr: TaskRun = serde_json::from_value(run)?;
                self.block(self.trs().create(&pp, &tr))?.metadata
            }
        };
        Ok(created.name.unwrap_or_default())
    }

    pub(crate) fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub(crate) fn prs(&self) -> Api<PipelineRun> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn trs(&self) -> Api<TaskRun> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn list_params(selector: Option<&str>) -> ListParams {
        let mut lp = ListParams::default();
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        lp
    }

    fn all_prs(&self) -> Api<PipelineRun> {
        if self.all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.prs()
        }
    }

    fn all_trs(&self) -> Api<TaskRun> {
        if self.all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.trs()
        }
    }
}

impl Cluster {
    /// The runs `delete` is to delete, checked before any is: each exists,
    /// and has finished unless `--force`; a TaskRun of a PipelineRun that
    /// still runs is its to manage (delete the PipelineRun).
    fn delete_targets(&self, kind: Kind, a: &DeleteArgs) -> anyhow::Result<Vec<String>> {
        use inspect::Target as _;
        let unfinished = |n: &str| {
            anyhow::anyhow!(
                "{} {n:?} has not finished (it may still be running); use --force to cancel it and delete it",
                kind.lower()
            )
        };
        // Every run asked for, each there and finished (unless --force).
        fn chosen<R: inspect::Run>(
            a: &DeleteArgs,
            all: impl Fn() -> anyhow::Result<Vec<R>>,
            one: impl Fn(&str) -> anyhow::Result<Option<R>>,
            missing: impl Fn(&str) -> anyhow::Error,
            unfinished: impl Fn(&str) -> anyhow::Error,
        ) -> anyhow::Result<Vec<R>> {
            let runs = if a.all {
                all()?
            } else {
                let mut v = Vec::new();
                for n in &a.names {
                    v.push(one(n)?.ok_or_else(|| missing(n))?);
                }
                v
            };
            if let Some(r) = runs.iter().find(|r| !a.force && !inspect::finished(*r)) {
                return Err(unfinished(&inspect::name_of(r)));
            }
            Ok(runs)
        }
        let missing =
            |n: &str| anyhow::anyhow!("{} {n:?} not found in {}", kind.lower(), self.place());
        let names = match kind {
            Kind::PipelineRun => chosen(
                a,
                || self.pipeline_runs(None),
                |n| self.pipeline_run(n),
                missing,
                unfinished,
            )?
            .iter()
            .map(inspect::name_of)
            .collect(),
            Kind::TaskRun => {
                let runs = chosen(
                    a,
                    || self.task_runs(None),
                    |n| self.task_run(n),
                    missing,
                    unfinished,
                )?;
                for r in &runs {
                    let parent = r
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("tekton.dev/pipelineRun"));
                    if let Some(p) = parent
                        && self
                            .pipeline_run(p)?
                            .is_some_and(|pr| !inspect::finished(&pr))
                    {
                        anyhow::bail!(
                            "taskrun {:?} belongs to pipelinerun {p:?}, which is running: delete the pipelinerun (with --force)",
                            inspect::name_of(r)
                        );
                    }
                }
                runs.iter().map(inspect::name_of).collect()
            }
        };
        Ok(names)
    }
}

/// A container's log as it comes from the server (opened on the first
/// read): bounded memory whatever its length.
struct PodLog<'a> {
    cluster: &'a Cluster,
    pods: Api<Pod>,
    pod: String,
    container: String,
    stream: Option<std::pin::Pin<Box<dyn futures::AsyncBufRead + 'a>>>,
    done: bool,
}

impl Read for PodLog<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.stream.is_none() {
            let lp = LogParams {
                container: Some(self.container.clone()),
                ..LogParams::default()
            };
            match self.cluster.block(self.pods.log_stream(&self.pod, &lp)) {
                Ok(s) => self.stream = Some(Box::pin(s)),
                // Gone with its pod, or never started: nothing to show.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 400 => {
                    self.done = true;
                    return Ok(0);
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0);
        };
        self.cluster.block(futures::AsyncReadExt::read(stream, buf))
    }
}

/// Whether a kube error is the server's 404.
pub(crate) fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The object, `None` when the server has none of that name.
pub(crate) async fn get_opt<K>(api: &Api<K>, name: &str) -> anyhow::Result<Option<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The step containers of a TaskRun's pod, in order (sidecars and init
/// containers left out), from its status; the pod's spec if the status
/// has none yet.
pub(crate) fn step_containers(tr: &TaskRun, pod: Option<&Pod>) -> Vec<String> {
    let from_status: Vec<String> = tr
        .status
        .iter()
        .flat_map(|s| &s.steps)
        .filter_map(|s| s.container.clone())
        .collect();
    if !from_status.is_empty() {
        return from_status;
    }
    pod.and_then(|p| p.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.name.clone())
                .filter(|n| n.starts_with("step-"))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn pod_name(tr: &TaskRun) -> Option<String> {
    tr.status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .filter(|p| !p.is_empty())
}

impl inspect::Target for Cluster {
    fn place(&self) -> String {
        if self.all_namespaces {
            format!("any namespace of {}", self.server)
        } else {
            format!("namespace {:?} of {}", self.namespace, self.server)
        }
    }

    fn pipeline_runs(&self, selector: Option<&str>) -> anyhow::Result<Vec<PipelineRun>> {
        let lp = Cluster::list_params(selector);
        Ok(self.block(self.all_prs().list(&lp))?.items)
    }

    fn task_runs(&self, selector: Option<&str>) -> anyhow::Result<Vec<TaskRun>> {
        let lp = Cluster::list_params(selector);
        Ok(self.block(self.all_trs().list(&lp))?.items)
    }

    fn pipeline_run(&self, name: &str) -> anyhow::Result<Option<PipelineRun>> {
        self.block(get_opt(&self.prs(), name))
    }

    fn task_run(&self, name: &str) -> anyhow::Result<Option<TaskRun>> {
        self.block(get_opt(&self.trs(), name))
    }

    fn task_runs_of(&self, pr: &PipelineRun) -> anyhow::Result<Vec<TaskRun>> {
        let name = pr.metadata.name.as_deref().unwrap_or_default();
        let ns = pr.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        let api: Api<TaskRun> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("tekton.dev/pipelineRun={name}"));
        Ok(self.block(api.list(&lp))?.items)
    }

    fn logs(&self, tr: &TaskRun) -> anyhow::Result<Vec<(String, Box<dyn Read + '_>)>> {
        let ns = tr.metadata.namespace.as_deref().unwrap_or(&self.namespace);
        let pods = self.pods(ns);
        let mut out: Vec<(String, Box<dyn Read + '_>)> = Vec::new();
        // Earlier attempts' pods first, then the last one, as -f shows them.
        let earlier = tr
            .status
            .iter()
            .flat_map(|s| &s.retries_status)
            .filter_map(|r| r.pod_name.clone());
        for pod in earlier.chain(pod_name(tr)).filter(|p| !p.is_empty()) {
            if self.block(get_opt(&pods, &pod))?.is_none() {
                let steps = step_containers(tr, None);
                match self.block(self.archive.pod_logs(tr, &pod, &steps)) {
                    Ok(logs) => {
                        for (c, log) in logs {
                            out.push((c, Box::new(std::io::Cursor::new(log))));
                        }
                    }
                    Err(why) => crate::follow::gone(&pod, tr, &why),
                }
                continue;
            }
            for c in step_containers(tr, None) {
                let log = PodLog {
                    cluster: self,
                    pods: pods.clone(),
                    pod: pod.clone(),
                    container: c.clone(),
                    stream: None,
                    done: false,
                };
                out.push((c, Box::new(log)));
            }
        }
        Ok(out)
    }

    fn follow(
        &self,
        kind: Kind,
        name: &str,
        a: &LogsArgs,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<u8> {
        crate::follow::follow(self, kind, name, &crate::follow::Filter::of(a), out)
    }

    fn delete(&self, kind: Kind, a: &DeleteArgs) -> anyhow::Result<String> {
        let names = self.delete_targets(kind, a)?;
        if names.is_empty() {
            return Ok(format!("No {} found\n", kind.plural()));
        }
        // Background deletion: the garbage collector takes the children
        // (TaskRuns and pods) with their owner, as `kubectl delete` does;
        // the controller stops a run's pods as they go.
        let dp = DeleteParams::background();
        for n in &names {
            let r = match kind {
                Kind::PipelineRun => self.block(self.prs().delete(n, &dp)).map(|_| ()),
                Kind::TaskRun => self.block(self.trs().delete(n, &dp)).map(|_| ()),
            };
            match r {
                Ok(()) => {}
                // Gone meanwhile: what was asked for is done.
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        Ok(format!(
            "{} deleted: {}\n",
            kind.plural(),
            quoted.join(", ")
        ))
    }

    fn cancel(&self, kind: Kind, name: &str, grace: Option<Grace>) -> anyhow::Result<String> {
        let status = match (kind, grace) {
            (Kind::TaskRun, _) => "TaskRunCancelled",
            (Kind::PipelineRun, None) => "Cancelled",
            (Kind::PipelineRun, Some(g)) => g.spec_status(),
        };
        let patch = Patch::Merge(serde_json::json!({"spec": {"status": status}}));
        let pp = PatchParams::default();
        let r = match kind {
            Kind::PipelineRun => self.block(self.prs().patch(name, &pp, &patch)).map(|_| ()),
            Kind::TaskRun => self.block(self.trs().patch(name, &pp, &patch)).map(|_| ()),
        };
        match r {
            Ok(()) => Ok(format!(
                "{} {name} is being cancelled ({status})\n",
                kind.lower()
            )),
            Err(e) if not_found(&e) => {
                anyhow::bail!("{} {name:?} not found in {}", kind.lower(), self.place())
            }
            Err(e) => Err(e.into()),
        }
    }
}
