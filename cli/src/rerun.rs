//! `tkt pr rerun NAME [--from-failed]` and `tkt tr rerun NAME`: a new run
//! with the old run's spec, on the target the old one is on, followed as
//! `tkt run` follows.
//!
//! With `--from-failed` (PipelineRuns), the DAG tasks that succeeded in the
//! old run are not run again: the new run carries their TaskRuns (trimmed)
//! in its `tektite.dev/reuse` annotation, and the engine takes them as
//! those tasks' children (`tektite_engine::reuse`). Their results feed the
//! tasks after them; `describe` lists them under "Reused". Files they wrote
//! to a workspace are there when the workspace outlives the old run: a
//! PersistentVolumeClaim or host directory, or (on a cluster) the old
//! run's `volumeClaimTemplate` claim, which the rerun binds in its place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource;
use serde_json::{Value, json};
use tektite_api::v1::{PipelineRun, TaskRun};

use crate::cluster::Cluster;
use crate::inspect::{Kind, Target};
use crate::note;

/// Arguments of `rerun`.
#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// The run (default: the most recent)
    pub name: Option<String>,
    /// The most recent run
    #[arg(long, conflicts_with = "name")]
    pub last: bool,
    /// Do not run again the tasks that succeeded: reuse their results
    #[arg(long)]
    pub from_failed: bool,
    /// A workspace binding for the new run, as `tkt run -w` takes it (a
    /// host directory the old run was given must be given again)
    #[arg(short = 'w', long = "workspace", value_name = "NAME=VALUE")]
    pub workspaces: Vec<String>,
    /// On a cluster: create the run, print its name and exit
    #[arg(long)]
    pub detach: bool,
    /// Where steps run (the local store's runs)
    #[arg(long, default_value = "auto", value_name = "RUNTIME")]
    pub runtime: String,
    /// Files with the Tasks and Pipelines the run names (the local store's
    /// runs; as `tkt run -f`)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// More folders of Tasks and Pipelines (the local store's runs)
    #[arg(long = "task-dir", value_name = "DIR")]
    pub task_dirs: Vec<PathBuf>,
}

/// Labels a run's system gives it; a rerun gets its own.
fn system_label(k: &str) -> bool {
    k.starts_with("tekton.dev/") || k.starts_with("tektite.dev/")
}

/// The metadata of a rerun of `old`: a name made from the old one's
/// (`generateName`), its labels and annotations but the system's, and
/// `tektite.dev/rerun-of`.
fn rerun_metadata(old: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    let name = old.name.clone().unwrap_or_default();
    let base = old
        .generate_name
        .clone()
        .unwrap_or_else(|| format!("{name}-"));
    let labels: BTreeMap<&String, &String> = old
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !system_label(k))
        .collect();
    let mut annotations: BTreeMap<String, String> = old
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| {
            *k != tektite_engine::reuse::ANNOTATION
                && *k != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.insert("tektite.dev/rerun-of".into(), name);
    json!({"generateName": base, "labels": labels, "annotations": annotations})
}

/// The new PipelineRun (as JSON) of a rerun of `old`.
///
/// # Errors
/// `--from-failed` on a run that never resolved its pipeline.
fn pipeline_rerun(
    old: &PipelineRun,
    children: &[TaskRun],
    from_failed: bool,
) -> anyhow::Result<Value> {
    let mut spec = old.spec.clone();
    spec.status = None;
    let mut run = json!({
        "apiVersion": tektite_api::v1::API_VERSION,
        "kind": "PipelineRun",
        "metadata": rerun_metadata(&old.metadata),
        "spec": spec,
    });
    if from_failed {
        let name = old.metadata.name.as_deref().unwrap_or_default();
        let Some(resolved) = old.status.as_ref().and_then(|s| s.pipeline_spec.as_deref()) else {
            anyhow::bail!(
                "pipelinerun {name:?} never started its pipeline: rerun it without --from-failed"
            );
        };
        let text = tektite_engine::reuse::annotation(name, resolved, children)
            .context("cannot record the reused TaskRuns")?;
        run["metadata"]["annotations"][tektite_engine::reuse::ANNOTATION] = json!(text);
    }
    Ok(run)
}

/// The new TaskRun (as JSON) of a rerun of `old`.
fn task_rerun(old: &TaskRun) -> Value {
    let mut spec = old.spec.clone();
    spec.status = None;
    spec.status_message = None;
    json!({
        "apiVersion": tektite_api::v1::API_VERSION,
        "kind": "TaskRun",
        "metadata": rerun_metadata(&old.metadata),
        "spec": spec,
    })
}

/// The names of the tasks a rerun reuses.
fn reused_tasks(run: &Value) -> Vec<String> {
    let text = run["metadata"]["annotations"][tektite_engine::reuse::ANNOTATION]
        .as_str()
        .unwrap_or("");
    let reuse: tektite_engine::reuse::Reuse = serde_json::from_str(text).unwrap_or_default();
    let mut tasks: Vec<String> = reuse
        .task_runs
        .iter()
        .filter_map(|tr| {
            tr.metadata
                .labels
                .as_ref()?
                .get("tekton.dev/pipelineTask")
                .cloned()
        })
        .collect();
    tasks.dedup();
    tasks
}

/// The run to rerun, and the new run.
fn plan(kind: Kind, t: &dyn Target, a: &RerunArgs) -> anyhow::Result<(String, Value)> {
    match kind {
        Kind::PipelineRun => {
            let old = crate::inspect::pick_pipeline_run(t, a.name.as_deref())?;
            let mut children = t.task_runs_of(&old)?;
            // A rerun's own reused TaskRuns count as its children: a rerun
            // of it reuses them again.
            if let Ok(Some(r)) = tektite_engine::reuse::of(&old) {
                children.extend(r.task_runs);
            }
            let name = old.metadata.name.clone().unwrap_or_default();
            Ok((name, pipeline_rerun(&old, &children, a.from_failed)?))
        }
        Kind::TaskRun => {
            if a.from_failed {
                anyhow::bail!(
                    "--from-failed reruns a pipelinerun from its failed tasks; a taskrun reruns whole"
                );
            }
            let old = crate::inspect::pick_task_run(t, a.name.as_deref())?;
            let name = old.metadata.name.clone().unwrap_or_default();
            Ok((name, task_rerun(&old)))
        }
    }
}

fn say_reused(old: &str, run: &Value) {
    let tasks = reused_tasks(run);
    if !tasks.is_empty() {
        note(&format!(
            "tkt: reusing from {old} (not run again): {}",
            tasks.join(", ")
        ));
    }
}

/// `rerun` on a cluster: the new run is created in the old one's namespace
/// and followed.
///
/// # Errors
/// The old run is not there; the server refuses the new one.
pub fn on_cluster(
    kind: Kind,
    c: &Cluster,
    a: &RerunArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let (old, mut run) = plan(kind, c, a)?;
    if !a.workspaces.is_empty() {
        let mut ws: Vec<Value> = run["spec"]["workspaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for raw in &a.workspaces {
            let b = crate::cluster_run::cluster_workspace(raw)?;
            ws.retain(|w| w["name"] != b["name"]);
            ws.push(b);
        }
        run["spec"]["workspaces"] = Value::Array(ws);
    }
    if a.from_failed {
        bind_old_claims(c, &old, &mut run)?;
    } else if let Some(original) = run["metadata"]["annotations"][WORKSPACES]
        .as_str()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        // The old run was bound to claims by a --from-failed: this rerun
        // gets the workspaces as first given (fresh claims).
        run["spec"]["workspaces"] = original;
    }
    warn_missing_claims(c, &run);
    say_reused(&old, &run);
    let made = c.create_run(kind, run)?;
    note(&format!(
        "{} {made} created (a rerun of {old})",
        kind.lower()
    ));
    if a.detach {
        writeln!(out, "{made}")?;
        return Ok(0);
    }
    crate::cluster_run::follow_runs(c, &[(kind, made)], crate::run::Format::Text, out)
}

/// The annotation keeping a run's workspaces as first given.
const WORKSPACES: &str = tektite_engine::reuse::WORKSPACES_ANNOTATION;

/// Says which claims the run names that are not there (a pod would wait
/// for them).
fn warn_missing_claims(c: &Cluster, run: &Value) {
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(c.client.clone(), &c.namespace);
    for b in run["spec"]["workspaces"].as_array().into_iter().flatten() {
        let Some(claim) = b["persistentVolumeClaim"]["claimName"].as_str() else {
            continue;
        };
        if let Ok(None) = c.block(crate::cluster::get_opt(&claims, claim)) {
            note(&format!(
                "tkt: warning: workspace {} names claim {claim}, which does not exist (deleted with the run that made it?)",
                b["name"].as_str().unwrap_or_default()
            ));
        }
    }
}

/// With `--from-failed`, a `volumeClaimTemplate` workspace is bound to the
/// claim the old run made from it, while that claim exists: the files the
/// reused tasks left there are the new run's.
fn bind_old_claims(c: &Cluster, old: &str, run: &mut Value) -> anyhow::Result<()> {
    let Some(pr) = c.block(crate::cluster::get_opt(&c.prs(), old))? else {
        return Ok(());
    };
    let uid = pr.metadata.uid.clone().unwrap_or_default();
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(c.client.clone(), &c.namespace);
    let templates = run["spec"]["workspaces"]
        .as_array()
        .is_some_and(|ws| ws.iter().any(|b| b.get("volumeClaimTemplate").is_some()));
    if templates && run["metadata"]["annotations"][WORKSPACES].is_null() {
        let original = serde_json::to_string(&run["spec"]["workspaces"])?;
        run["metadata"]["annotations"][WORKSPACES] = json!(original);
    }
    let Some(ws) = run["spec"]["workspaces"].as_array_mut() else {
        return Ok(());
    };
    for b in ws
        .iter_mut()
        .filter(|b| b.get("volumeClaimTemplate").is_some())
    {
        let ws_name = b["name"].as_str().unwrap_or_default().to_string();
        let template = b["volumeClaimTemplate"]["metadata"]["name"].as_str();
        let claim = tektite_engine::names::claim(template, &ws_name, &uid);
        if c.block(crate::cluster::get_opt(&claims, &claim))?.is_some() {
            let source = PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            };
            let mut nb = json!({"name": ws_name, "persistentVolumeClaim": source});
            if let Some(sp) = b.get("subPath") {
                nb["subPath"] = sp.clone();
            }
            *b = nb;
            note(&format!(
                "tkt: workspace {ws_name} is bound to {old}'s claim {claim} (owned by {old}: deleting {old} deletes it)"
            ));
        } else {
            note(&format!(
                "tkt: warning: workspace {ws_name}: {old}'s claim {claim} is gone; the new run gets an empty one"
            ));
        }
    }
    Ok(())
}

/// `rerun` on the local store: the new run goes to `tkt run` as a file;
/// the Tasks and Pipelines it names are found as `tkt run` finds them (the
/// catalog, `--task-dir`, and files given with `-f`).
///
/// # Errors
/// The old run is not there; a host directory it was given is not given
/// again; the new run cannot be written.
pub fn local(
    kind: Kind,
    store_dir: Option<&std::path::Path>,
    t: &crate::inspect::Local,
    a: &RerunArgs,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let (old, run) = plan(kind, t, a)?;
    let given = crate::run::flag_names(&a.workspaces);
    for b in run["spec"]["workspaces"].as_array().into_iter().flatten() {
        let claim = b["persistentVolumeClaim"]["claimName"]
            .as_str()
            .unwrap_or("");
        let name = b["name"].as_str().unwrap_or("");
        if claim.starts_with("tkt-path-") && !given.contains(&name) {
            anyhow::bail!(
                "{} {old:?}: workspace {name:?} was a host directory: give it again with -w {name}=PATH",
                kind.lower()
            );
        }
        if a.from_failed && b.get("volumeClaimTemplate").is_some() && !given.contains(&name) {
            note(&format!(
                "tkt: warning: workspace {name} (a volumeClaimTemplate) starts empty: files the reused tasks wrote there are not carried over"
            ));
        }
    }
    say_reused(&old, &run);
    let file = RunFile::write(t.store.root(), &run)?;
    let mut files = vec![file.0.clone()];
    files.extend(a.files.iter().cloned());
    crate::run::Local {
        files,
        runtime: &a.runtime,
        state_dir: store_dir,
        task_dirs: &a.task_dirs,
        workspaces: a.workspaces.clone(),
    }
    .run(out)
}

/// A run written for `tkt run` to read, in the store's `rerun` folder;
/// removed when dropped. One left behind (`tkt` killed) is removed by a
/// later rerun once a day old.
#[derive(Debug)]
pub(crate) struct RunFile(pub(crate) PathBuf);

impl RunFile {
    pub(crate) fn write(root: &std::path::Path, run: &Value) -> anyhow::Result<RunFile> {
        let dir = root.join("rerun");
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let day = std::time::Duration::from_secs(24 * 3600);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let file = dir.join(format!(
            "run-{}.json",
            tektite_local::store::random_suffix()
        ));
        tektite_local::store::write_atomic(&file, &serde_json::to_vec_pretty(run)?)?;
        Ok(RunFile(file))
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
