//! Logs that outlive pods: the archive ([`store`]), the archiver that
//! fills it as steps print ([`archive`]), the HTTPS server that reads it
//! back to whoever may read the TaskRun ([`serve`]), and the sweep that
//! deletes the logs of deleted runs and of runs past their retention
//! ([`sweep`]).
//!
//! The archive is an object store: a directory (a PersistentVolume, the
//! install manifests' default) or an S3-compatible bucket, chosen by the
//! controller's `--log-archive` URL ([`open`]).

pub mod archive;
pub mod serve;
pub mod store;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use object_store::ObjectStore;
use tektite_api::v1::{PipelineRun, TaskRun};

pub use store::LogStore;

/// How an `s3://` archive is reached.
#[derive(Debug, Clone, Default)]
pub struct S3 {
    /// The S3-compatible server (MinIO, Ceph...), reached with path-style
    /// requests; `None`: AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Access key id and secret; `None`: anonymous.
    pub keys: Option<(String, String)>,
    /// A session token, with temporary keys.
    pub token: Option<String>,
}

impl S3 {
    /// The settings of `AWS_ENDPOINT_URL`, `AWS_REGION` (default
    /// us-east-1), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` (a Secret's, in the manifests).
    pub fn from_env() -> S3 {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        S3 {
            endpoint: var("AWS_ENDPOINT_URL"),
            region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            keys: var("AWS_ACCESS_KEY_ID").zip(var("AWS_SECRET_ACCESS_KEY")),
            token: var("AWS_SESSION_TOKEN"),
        }
    }
}

/// The archive `url` names: `file:///DIR` (created if missing) or
/// `s3://BUCKET[/PREFIX]`, reached as `s3` says.
///
/// # Errors
/// The URL is neither form, the directory cannot be made, or the S3
/// settings are incomplete.
pub fn open(url: &str, s3: &S3) -> anyhow::Result<LogStore> {
    let objects: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file://") {
        anyhow::ensure!(
            dir.starts_with('/'),
            "--log-archive {url:?}: expected file:///ABSOLUTE/DIR"
        );
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--log-archive {dir}: {e}"))?;
        Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir)?
                .with_automatic_cleanup(true),
        )
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            !bucket.is_empty(),
            "--log-archive {url:?}: expected s3://BUCKET[/PREFIX]"
        );
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&s3.region);
        match &s3.keys {
            Some((id, secret)) => {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            None => b = b.with_skip_signature(true),
        }
        if let Some(t) = &s3.token {
            b = b.with_token(t);
        }
        if let Some(e) = &s3.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let bucket: Arc<dyn ObjectStore> = Arc::new(b.build()?);
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            bucket
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(bucket, prefix))
        }
    } else {
        anyhow::bail!("--log-archive {url:?}: expected file:///DIR or s3://BUCKET[/PREFIX]");
    };
    Ok(LogStore::new(objects))
}

/// The controller's caches of runs, and whether they are synced.
pub type Caches = (
    Store<PipelineRun>,
    Store<TaskRun>,
    tokio::sync::watch::Receiver<bool>,
);

/// Deletes, every `every`, the logs of runs that are gone and of runs
/// whose last log is older than the retention `settings` give, until the
/// process ends, once the caches are synced. Runs only where the caches
/// are: on the leader.
pub async fn sweep(
    client: kube::Client,
    store: LogStore,
    (pipeline_runs, task_runs, mut synced): Caches,
    settings: Arc<RwLock<archive::Settings>>,
    every: Duration,
) {
    let _ = synced.wait_for(|s| *s).await;
    loop {
        tokio::time::sleep(every).await;
        let keep = settings.read().ok().and_then(|s| s.keep);
        let uids: std::collections::HashSet<String> = pipeline_runs
            .state()
            .iter()
            .filter_map(|p| p.uid())
            .chain(task_runs.state().iter().filter_map(|t| t.uid()))
            .collect();
        let live = |uid: &str| uids.contains(uid);
        match store.sweep_all(&live, keep, SWEEP_GRACE).await {
            Ok(swept) => {
                for owner in swept.deleted {
                    tracing::info!(%owner, "log archive: deleted the logs of a run gone or past retention");
                }
                for open in swept.open {
                    seal_orphan(&client, &store, &open).await;
                }
            }
            Err(error) => tracing::warn!(%error, "log archive: sweep"),
        }
    }
}

/// Logs written this recently are never swept: their run may be newer
/// than the cache.
pub const SWEEP_GRACE: Duration = Duration::from_secs(10);

/// Seals `open` if its pod is gone (or is another one now): its pod was
/// deleted while no controller archived it, and no follower will seal it.
async fn seal_orphan(client: &kube::Client, store: &LogStore, open: &store::OpenLog) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), &open.run.namespace);
    let alive = match pods.get_opt(&open.pod.name).await {
        Ok(p) => p.is_some_and(|p| p.uid().as_deref() == Some(open.pod.uid.as_str())),
        Err(error) => {
            tracing::warn!(%error, pod = %open.pod.name, "log archive: sweep");
            return;
        }
    };
    if alive {
        return;
    }
    let note = "\n[tektite: the pod was deleted while no controller archived its log: what it printed after this was not kept]\n";
    match store
        .seal(&open.run, &open.pod, &open.container, note.as_bytes())
        .await
    {
        Ok(()) => tracing::info!(
            pod = %open.pod.name,
            container = %open.container,
            "log archive: sealed the log of a pod deleted while no controller followed it"
        ),
        Err(error) => tracing::warn!(%error, pod = %open.pod.name, "log archive: sweep"),
    }
}
