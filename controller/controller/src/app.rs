//! The controller process: its flags ([`Options`]) and [`run`], which wires
//! the caches, leader election, the `config-defaults` watch, the metrics
//! endpoints and the two controllers together.
//!
//! Data flow: watch events → caches (trimmed: no `managedFields`, finished
//! runs reduced to their conditions) → the TaskRun and PipelineRun
//! controllers → reconciles ([`crate::taskrun`], [`crate::pipelinerun`]).
//! Nothing here decides anything about a run; it only connects the parts.
//!
//! Order of start: the metrics endpoints (healthy at once, ready while a
//! follower), then the Lease (followers stand by), then, as the leader, the
//! `config-defaults` ConfigMap is read before the first reconcile so no run
//! starts with the flags' values when the ConfigMap says otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tektite_api::v1::{PipelineRun, TaskRun};
use tektite_engine::pod::Config;
use tektite_engine::status::is_done;
use tektite_telemetry::Settings;

use crate::{Context, config, error_policy, lease, logs, metrics, pipelinerun, taskrun};

/// What [`run`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value is not what it expects (the message names the flag).
    #[error("{0}")]
    Flag(String),
    /// No kubeconfig or in-cluster configuration could be loaded.
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The image lookup client could not be built.
    #[error("image lookup client: {0}")]
    Images(#[source] tektite_oci::Error),
    /// The metrics address cannot be listened on.
    #[error("--metrics-addr {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The log archive or its server could not be set up.
    #[error("log archive: {0}")]
    Logs(String),
    /// Leader election stopped before this replica led (it cannot happen
    /// while the Lease loop runs; kept so a panic there is not silent).
    #[error("leader election ended before this replica led")]
    ElectionEnded,
    /// This replica led and then could not renew its Lease: it exits so
    /// that it restarts as a follower and never reconciles beside a new
    /// leader.
    #[error("the leader Lease was lost: exiting to restart as a follower")]
    LeaseLost,
}

/// Label level of PipelineRun metrics (Tekton's `metrics.pipelinerun.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PipelineRunLevel {
    /// `namespace` and `pipeline`.
    Pipeline,
    /// `namespace` only.
    Namespace,
}

/// Label level of TaskRun metrics (Tekton's `metrics.taskrun.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskRunLevel {
    /// `namespace` and `task`.
    Task,
    /// `namespace` only.
    Namespace,
}

/// The controller's flags. Each `config-defaults` key is also a flag; the
/// ConfigMap's value wins over the flag's while it sets that key.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tektite-controller",
    version,
    about = "Runs tekton.dev PipelineRuns and TaskRuns on Kubernetes",
    after_help = "The Kubernetes API is reached with the in-cluster service account, or \
                  $KUBECONFIG / ~/.kube/config outside a cluster."
)]
pub struct Options {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TEKTITE_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,
    /// Namespace of the Lease and of the config-defaults ConfigMap.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tektite")]
    pub namespace: String,
    /// This replica's name in the Lease [default: the host name].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Take part in leader election; `false` reconciles at once (a single
    /// replica only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// Name of the coordination.k8s.io Lease.
    #[arg(long, default_value = "tektite-controller")]
    pub lease_name: String,
    /// How long a Lease not renewed stays its holder's, in seconds.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub lease_duration: u64,
    /// How often the leader renews its Lease, in seconds (under
    /// --lease-duration).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub lease_renew: u64,
    /// Timeout of runs that set none, in minutes [default: 60].
    #[arg(long, value_name = "MINUTES")]
    pub default_timeout_minutes: Option<String>,
    /// Service account of TaskRuns that name none [default: default].
    #[arg(long, value_name = "NAME")]
    pub default_service_account: Option<String>,
    /// Value of the app.kubernetes.io/managed-by label [default: tektite].
    #[arg(long, value_name = "VALUE")]
    pub default_managed_by_label_value: Option<String>,
    /// Image holding the step wrapper at /ko-app/entrypoint.
    #[arg(long, value_name = "IMAGE")]
    pub entrypoint_image: Option<String>,
    /// Image with a POSIX shell, for placing scripts.
    #[arg(long, value_name = "IMAGE")]
    pub shell_image: Option<String>,
    /// Largest result a step may write, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_result_size: Option<String>,
    /// Labels of PipelineRun metrics.
    #[arg(long, value_enum, default_value = "pipeline")]
    pub metrics_pipelinerun_level: PipelineRunLevel,
    /// Labels of TaskRun metrics.
    #[arg(long, value_enum, default_value = "task")]
    pub metrics_taskrun_level: TaskRunLevel,
    /// A registry reached over plain HTTP when reading the command of an
    /// image whose step has none (host[:port] as in image references;
    /// repeatable).
    #[arg(long = "plain-http-registry", value_name = "HOST")]
    pub plain_http_registries: Vec<String>,
    /// Namespaces the cluster resolver may read (repeatable; none: every
    /// namespace not blocked), as Tekton's `allowed-namespaces`.
    #[arg(long = "cluster-resolver-allowed-namespace", value_name = "NS")]
    pub cluster_allowed: Vec<String>,
    /// Namespaces the cluster resolver may not read (repeatable; `*`: all
    /// but the allowed ones), as Tekton's `blocked-namespaces`.
    #[arg(long = "cluster-resolver-blocked-namespace", value_name = "NS")]
    pub cluster_blocked: Vec<String>,
    /// The namespace of a cluster resolver ref that names none.
    #[arg(long = "cluster-resolver-default-namespace", value_name = "NS")]
    pub cluster_default_namespace: Option<String>,
    /// Where step and sidecar logs are archived as they are printed:
    /// file:///DIR or s3://BUCKET[/PREFIX] [default: not archived]. An S3
    /// bucket is reached with $AWS_ENDPOINT_URL (any S3-compatible server,
    /// path-style; AWS when unset), $AWS_REGION, $AWS_ACCESS_KEY_ID and
    /// $AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "TEKTITE_LOG_ARCHIVE", value_name = "URL")]
    pub log_archive: Option<String>,
    /// Longest a log byte waits before it is archived, in seconds.
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub log_flush_seconds: u64,
    /// How often the logs of deleted runs, and of runs past
    /// logs-retention-days, are deleted, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub log_sweep_seconds: u64,
    /// Days archived logs are kept after their last line [default: until
    /// their run is deleted].
    #[arg(long, value_name = "DAYS")]
    pub logs_retention_days: Option<String>,
    /// Bytes of a container's log archived [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub logs_max_bytes: Option<String>,
    /// Address of the HTTPS server of archived logs (with --log-archive).
    #[arg(long, env = "TEKTITE_LOGS_ADDR", default_value = "0.0.0.0:8443")]
    pub logs_addr: String,
    /// The URL clients reach that server at, published with its CA in the
    /// ConfigMap tektite-logs [default: https://tektite-logs.NAMESPACE.svc:8443].
    #[arg(long, env = "TEKTITE_LOGS_URL", value_name = "URL")]
    pub logs_url: Option<String>,
    /// The server's certificate (PEM) [default: a self-signed one, made at
    /// start: one replica only].
    #[arg(long, requires = "logs_tls_key", value_name = "FILE")]
    pub logs_tls_cert: Option<std::path::PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires = "logs_tls_cert", value_name = "FILE")]
    pub logs_tls_key: Option<std::path::PathBuf>,
    /// The CA clients trust for --logs-tls-cert, published with the URL.
    #[arg(long, value_name = "FILE")]
    pub logs_tls_ca: Option<std::path::PathBuf>,
    /// A name (DNS or IP) of the self-signed certificate (repeatable)
    /// [default: localhost, 127.0.0.1, the service's names, the URL's host].
    #[arg(long = "logs-tls-name", value_name = "NAME")]
    pub logs_tls_names: Vec<String>,
}

impl Options {
    /// The configuration the flags give (before `config-defaults`).
    ///
    /// # Errors
    /// A flag's value is invalid: the message names the flag.
    pub fn base_config(&self) -> Result<Config, Error> {
        let keyed = [
            ("default-timeout-minutes", &self.default_timeout_minutes),
            ("default-service-account", &self.default_service_account),
            (
                "default-managed-by-label-value",
                &self.default_managed_by_label_value,
            ),
            ("entrypoint-image", &self.entrypoint_image),
            ("shell-image", &self.shell_image),
            ("max-result-size", &self.max_result_size),
        ];
        let data: BTreeMap<String, String> = keyed
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
            .collect();
        config::from_flags(&data, &Config::default()).map_err(Error::Flag)
    }

    /// The Lease settings.
    ///
    /// # Errors
    /// The renewal period is zero or not shorter than the duration.
    pub fn lease(&self) -> Result<lease::Config, Error> {
        if self.lease_renew == 0 || self.lease_renew >= self.lease_duration {
            return Err(Error::Flag(format!(
                "--lease-renew: expected a number of seconds above 0 and below --lease-duration ({}), got {}",
                self.lease_duration, self.lease_renew
            )));
        }
        let identity = self
            .identity
            .clone()
            .filter(|i| !i.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| format!("tektite-controller-{}", std::process::id()));
        Ok(lease::Config {
            name: self.lease_name.clone(),
            namespace: self.namespace.clone(),
            identity,
            duration: Duration::from_secs(self.lease_duration),
            renew_every: Duration::from_secs(self.lease_renew),
        })
    }

    /// The log archive's limits the flags give (before `config-defaults`).
    ///
    /// # Errors
    /// A flag's value is invalid: the message names the flag.
    pub fn log_limits(&self) -> Result<config::LogLimits, Error> {
        let data: BTreeMap<String, String> = [
            ("logs-retention-days", &self.logs_retention_days),
            ("logs-max-bytes", &self.logs_max_bytes),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
        .collect();
        config::log_limits(&data, &config::LogLimits::default(), true).map_err(Error::Flag)
    }

    /// The URL the log server is published at.
    fn logs_url(&self) -> String {
        self.logs_url
            .clone()
            .unwrap_or_else(|| format!("https://tektite-logs.{}.svc:8443", self.namespace))
    }

    /// The names of a self-signed log server certificate.
    fn logs_tls_names(&self) -> Vec<String> {
        if !self.logs_tls_names.is_empty() {
            return self.logs_tls_names.clone();
        }
        let svc = format!("tektite-logs.{}.svc", self.namespace);
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            format!("{svc}.cluster.local"),
            svc,
        ];
        let url = self.logs_url();
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split(['/', ':']).next())
            .filter(|h| !h.is_empty());
        if let Some(h) = host
            && !names.iter().any(|n| n == h)
        {
            names.push(h.to_string());
        }
        names
    }

    fn metrics(&self) -> metrics::Metrics {
        let pr = match self.metrics_pipelinerun_level {
            PipelineRunLevel::Pipeline => metrics::Level::Name,
            PipelineRunLevel::Namespace => metrics::Level::Namespace,
        };
        let tr = match self.metrics_taskrun_level {
            TaskRunLevel::Task => metrics::Level::Name,
            TaskRunLevel::Namespace => metrics::Level::Namespace,
        };
        metrics::Metrics::new(pr, tr)
    }
}

/// Waits until `store` holds its first list. A store's `wait_until_ready`
/// wakes only the last of its waiters (the controllers wait too): it is
/// asked again every 200 ms, which returns at once once it is ready.
async fn until_ready<K>(store: &reflector::Store<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
        .await
        .is_err()
    {}
}

fn running<K>(store: &reflector::Store<K>, done: fn(&K) -> bool) -> usize
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().iter().filter(|o| !done(o)).count()
}

fn task_run_done(t: &TaskRun) -> bool {
    t.status.as_ref().is_some_and(|s| is_done(&s.conditions))
}

fn pipeline_run_done(p: &PipelineRun) -> bool {
    p.status.as_ref().is_some_and(|s| is_done(&s.conditions))
}

/// Resolves on SIGTERM (what a kubelet sends) or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the controller until SIGTERM or SIGINT (`Ok`), or until a leader's
/// Lease is lost ([`Error::LeaseLost`]).
///
/// # Errors
/// See [`Error`]: invalid flags, no API configuration, a metrics address
/// in use, a lost Lease.
pub async fn run(opts: Options) -> Result<(), Error> {
    let traces =
        tektite_telemetry::Settings::from_env(config::SERVICE_NAME).map_err(Error::Flag)?;
    let base = Config {
        tracing: traces.is_some(),
        ..opts.base_config()?
    };
    let limits = opts.log_limits()?;
    let lease_cfg = opts.lease()?;
    let client = Client::try_default().await.map_err(Error::Client)?;
    let ctx = context(&opts, client.clone(), &base, traces.clone())?;
    set_log_limits(&ctx, &limits);
    let (task_runs, tr_writer) = reflector::store();
    let (pipeline_runs, pr_writer) = reflector::store();
    let ready = Arc::new(AtomicBool::new(false));
    serve_metrics(&opts, &ctx, &task_runs, &pipeline_runs, ready.clone()).await?;
    // Every replica serves archived logs; only the leader archives.
    let archive = serve_logs(&opts, &client).await?;

    // Leader election: a follower stands by (ready: it is healthy), the
    // leader reconciles; a leader that loses its Lease exits, to restart as
    // a follower.
    ready.store(true, Ordering::Relaxed);
    let mut lease_task = if opts.leader_elect {
        let lease_api = Api::namespaced(client.clone(), &lease_cfg.namespace);
        match lead(lease_api, lease_cfg).await? {
            Some(task) => Some(task),
            None => return Ok(()),
        }
    } else {
        None
    };
    ready.store(false, Ordering::Relaxed);

    // config-defaults first: its initial list is read before any reconcile.
    let (config_read, config_ready) = tokio::sync::oneshot::channel();
    let config_watch = tokio::spawn(watch_config(
        Api::namespaced(client.clone(), &opts.namespace),
        ctx.clone(),
        (base, limits, traces),
        config_read,
    ));
    tokio::select! {
        _ = config_ready => {}
        () = shutdown_signal() => return Ok(()),
    }
    // Whether the caches hold every run: said once, here, to the archiver
    // and the sweep.
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    {
        let (trs, prs, ready) = (task_runs.clone(), pipeline_runs.clone(), ready.clone());
        tokio::spawn(async move {
            until_ready(&trs).await;
            until_ready(&prs).await;
            ready.store(true, Ordering::Relaxed);
            let _ = synced_tx.send(true);
        });
    }

    if let Some(store) = archive {
        let archiver = logs::archive::Archiver::new(
            client.clone(),
            store.clone(),
            task_runs.clone(),
            ctx.log_settings.clone(),
            ctx.metrics.clone(),
        );
        tokio::spawn(archiver.run(synced.clone()));
        tokio::spawn(logs::sweep(
            client.clone(),
            store,
            (pipeline_runs.clone(), task_runs.clone(), synced),
            ctx.log_settings.clone(),
            Duration::from_secs(opts.log_sweep_seconds.max(1)),
        ));
    }

    let controllers = async {
        futures::join!(
            task_run_controller(&client, task_runs, tr_writer, ctx.clone()),
            pipeline_run_controller(&client, pipeline_runs, pr_writer, ctx),
        );
    };
    let lost = async {
        match lease_task.as_mut() {
            Some(t) => {
                let _ = t.await;
            }
            None => futures::future::pending::<()>().await,
        }
    };
    let out = tokio::select! {
        () = controllers => Ok(()),
        () = lost => Err(Error::LeaseLost),
    };
    config_watch.abort();
    out
}

/// The reconcilers' shared context: the client, the registry client for
/// image commands (plain HTTP only for the registries the flags name), the
/// flags' configuration and the metrics.
fn context(
    opts: &Options,
    client: Client,
    base: &Config,
    traces: Option<Settings>,
) -> Result<Arc<Context>, Error> {
    let images = Arc::new(
        tektite_oci::Client::new(tektite_oci::ClientOptions {
            plain_http: opts.plain_http_registries.clone(),
            ..Default::default()
        })
        .map_err(Error::Images)?,
    );
    let mut ctx = Context::new(client, images);
    ctx.resolution = crate::resolution::Resolution::new(
        std::time::Duration::from_secs(60),
        opts.plain_http_registries.clone(),
    )
    .ok()
    .map(|mut r| {
        r.cluster = crate::resolution::ClusterRules {
            allowed: opts.cluster_allowed.clone(),
            blocked: opts.cluster_blocked.clone(),
            default_namespace: opts.cluster_default_namespace.clone(),
        };
        Arc::new(r)
    });
    ctx.config = std::sync::RwLock::new(base.clone());
    ctx.traces = Some(tektite_telemetry::Traces::start(traces));
    ctx.metrics = Arc::new(opts.metrics());
    ctx.log_settings = Arc::new(std::sync::RwLock::new(logs::archive::Settings {
        flush_every: Duration::from_secs(opts.log_flush_seconds.max(1)),
        ..logs::archive::Settings::default()
    }));
    Ok(Arc::new(ctx))
}

/// Puts `limits` in force for the log archive.
fn set_log_limits(ctx: &Context, limits: &config::LogLimits) {
    if let Ok(mut s) = ctx.log_settings.write() {
        s.max_bytes = limits.max_bytes;
        s.keep = limits.keep;
    }
}

/// With `--log-archive`: opens the archive, serves it over HTTPS on
/// `--logs-addr` and publishes the server's URL and CA in the ConfigMap
/// `tektite-logs` (where `tkt` finds them). `None` without an archive.
async fn serve_logs(opts: &Options, client: &Client) -> Result<Option<logs::LogStore>, Error> {
    let Some(url) = &opts.log_archive else {
        return Ok(None);
    };
    let fail = |e: anyhow::Error| Error::Logs(format!("{e:#}"));
    let store = logs::open(url, &logs::S3::from_env()).map_err(fail)?;
    if opts.logs_addr.is_empty() {
        return Ok(Some(store));
    }
    let files = opts
        .logs_tls_cert
        .as_deref()
        .zip(opts.logs_tls_key.as_deref());
    let (tls, self_signed) = logs::serve::tls(files, &opts.logs_tls_names()).map_err(fail)?;
    let ca = match (&opts.logs_tls_ca, files) {
        (Some(ca), _) => std::fs::read_to_string(ca)
            .map_err(|e| Error::Logs(format!("--logs-tls-ca {}: {e}", ca.display())))?,
        (None, Some(_)) => String::new(),
        (None, None) => self_signed,
    };
    let listener = tokio::net::TcpListener::bind(&opts.logs_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: opts.logs_addr.clone(),
            source,
        })?;
    let server = logs::serve::LogServer::new(client.clone(), store.clone());
    tokio::spawn(server.serve(listener, tls));
    publish_logs(client, &opts.namespace, &opts.logs_url(), &ca).await;
    Ok(Some(store))
}

/// Writes the ConfigMap `tektite-logs` (keys `url`, `ca.crt`); a failure
/// is logged (clients can still be given the URL).
async fn publish_logs(client: &Client, namespace: &str, url: &str, ca: &str) {
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": logs::serve::CONFIG_MAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "tektite"},
        },
        "data": {"url": url, "ca.crt": ca},
    });
    let params = kube::api::PatchParams::apply(crate::MANAGER).force();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = api
        .patch(
            logs::serve::CONFIG_MAP,
            &params,
            &kube::api::Patch::Apply(&cm),
        )
        .await
    {
        tracing::warn!(%error, configmap = logs::serve::CONFIG_MAP, "could not publish the log server");
    }
}

/// Serves `/metrics` and the health endpoints on `--metrics-addr`; the
/// running-run and queue gauges are refreshed from the caches on each
/// scrape.
async fn serve_metrics(
    opts: &Options,
    ctx: &Arc<Context>,
    task_runs: &reflector::Store<TaskRun>,
    pipeline_runs: &reflector::Store<PipelineRun>,
    ready: Arc<AtomicBool>,
) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(&opts.metrics_addr)
        .await
        .map_err(|source| Error::Listen {
            addr: opts.metrics_addr.clone(),
            source,
        })?;
    let (trs, prs, m) = (
        task_runs.clone(),
        pipeline_runs.clone(),
        ctx.metrics.clone(),
    );
    let queues = ctx.clone();
    let refresh = Arc::new(move || {
        m.set_running(
            running(&trs, task_run_done),
            running(&prs, pipeline_run_done),
        );
        m.set_queues(&queues.queue.counts());
    });
    tokio::spawn(metrics::serve(
        listener,
        ctx.metrics.clone(),
        ready,
        refresh,
    ));
    Ok(())
}

/// Waits to hold the Lease: the task that keeps it (it ends when the Lease
/// is lost), or none when the process is asked to stop first.
async fn lead(
    api: Api<k8s_openapi::api::coordination::v1::Lease>,
    cfg: lease::Config,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let (leader_tx, leader_rx) = tokio::sync::oneshot::channel();
    let mut task = tokio::spawn(lease::run(api, cfg, leader_tx));
    tokio::select! {
        _ = leader_rx => Ok(Some(task)),
        _ = &mut task => Err(Error::ElectionEnded),
        () = shutdown_signal() => Ok(None),
    }
}

/// The TaskRun controller: TaskRuns (trimmed, cached in `store`) and the
/// pods they own, found by the `tekton.dev/taskRun` label the engine sets.
async fn task_run_controller(
    client: &Client,
    store: reflector::Store<TaskRun>,
    writer: reflector::store::Writer<TaskRun>,
    ctx: Arc<Context>,
) {
    let pods = watcher::Config::default().labels("tekton.dev/taskRun");
    let stream = watcher(
        Api::<TaskRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(crate::trim_task_run)
    .reflect(writer)
    .applied_objects();
    Controller::for_stream(stream, store)
        .owns(Api::<Pod>::all(client.clone()), pods)
        .shutdown_on_signal()
        .run(taskrun::reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(error) = r {
                tracing::warn!(%error, kind = "TaskRun", "controller");
            }
        })
        .await
}

/// The PipelineRun controller: PipelineRuns and the TaskRuns they own,
/// found by the PipelineRun label the engine always sets (not by
/// managed-by, whose value config-defaults may change while children of
/// the old value still run).
async fn pipeline_run_controller(
    client: &Client,
    store: reflector::Store<PipelineRun>,
    writer: reflector::store::Writer<PipelineRun>,
    ctx: Arc<Context>,
) {
    let children = watcher::Config::default().labels(crate::pipelinerun::PIPELINE_RUN_LABEL);
    let stream = watcher(
        Api::<PipelineRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(crate::trim_pipeline_run)
    .reflect(writer)
    .applied_objects();
    // Runs an end lets start are reconciled at once (see `concurrency`).
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    ctx.queue.connect(store.clone(), wake);
    let woken = futures::stream::unfold(
        woken,
        |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
    );
    Controller::for_stream(stream, store)
        .owns(Api::<TaskRun>::all(client.clone()), children)
        .reconcile_on(woken)
        .shutdown_on_signal()
        .run(pipelinerun::reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(error) = r {
                tracing::warn!(%error, kind = "PipelineRun", "controller");
            }
        })
        .await
}

/// Watches the `config-defaults` ConfigMap: a valid version applies over
/// `base` (the flags) to the next reconciles; an invalid one is reported and
/// the previous configuration stays; a deleted one brings back `base`.
/// `read` fires once the initial list is applied.
async fn watch_config(
    api: Api<ConfigMap>,
    ctx: Arc<Context>,
    (base, base_limits, base_traces): (Config, config::LogLimits, Option<Settings>),
    read: tokio::sync::oneshot::Sender<()>,
) {
    let set = |mut c: Config, limits: &config::LogLimits, traces: Option<Settings>| {
        c.tracing = traces.is_some();
        if let Some(t) = &ctx.traces {
            t.configure(traces);
        }
        if let Ok(mut current) = ctx.config.write() {
            *current = c;
        }
        set_log_limits(&ctx, limits);
    };
    let apply = |cm: &ConfigMap| {
        let data = cm.data.clone().unwrap_or_default();
        let read = config::from_data(&data, &base).and_then(|c| {
            Ok((
                c,
                config::log_limits(&data, &base_limits, false)?,
                config::trace_settings(&data, base_traces.as_ref())?,
            ))
        });
        match read {
            Ok((c, limits, traces)) => {
                set(c, &limits, traces);
                tracing::info!(configmap = config::CONFIG_MAP, "configuration applied");
            }
            Err(error) => tracing::error!(
                %error,
                configmap = config::CONFIG_MAP,
                "invalid configuration: the previous one stays"
            ),
        }
    };
    let mut read = Some(read);
    let mut seen = false;
    let events = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={}", config::CONFIG_MAP)),
    )
    .default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => seen = false,
            Ok(watcher::Event::InitApply(cm)) => {
                seen = true;
                apply(&cm);
            }
            Ok(watcher::Event::InitDone) => {
                if !seen {
                    set(base.clone(), &base_limits, base_traces.clone());
                }
                if let Some(tx) = read.take() {
                    let _ = tx.send(());
                }
            }
            Ok(watcher::Event::Apply(cm)) => apply(&cm),
            Ok(watcher::Event::Delete(_)) => {
                set(base.clone(), &base_limits, base_traces.clone());
                tracing::info!(
                    configmap = config::CONFIG_MAP,
                    "configuration deleted: the flags' values apply"
                );
            }
            Err(error) => tracing::warn!(%error, configmap = config::CONFIG_MAP, "watch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("tektite-controller").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_set_the_base_configuration() {
        let o = parse(&[
            "--entrypoint-image",
            "registry.local/entrypoint:1",
            "--default-timeout-minutes",
            "5",
            "--max-result-size",
            "1024",
        ]);
        let c = o.base_config().unwrap();
        assert_eq!(c.entrypoint_image, "registry.local/entrypoint:1");
        assert_eq!(c.default_timeout, Duration::from_secs(300));
        assert_eq!(c.max_result_size, 1024);
        assert_eq!(c.shell_image, Config::default().shell_image);
        assert!(o.leader_elect);
        assert!(!parse(&["--leader-elect", "false"]).leader_elect);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = parse(&["--default-timeout-minutes", "1h"])
            .base_config()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"--default-timeout-minutes: expected a whole number of minutes above 0, got "1h""#
        );
        let e = parse(&["--lease-duration", "5", "--lease-renew", "5"])
            .lease()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--lease-renew: expected a number of seconds above 0 and below --lease-duration (5), got 5"
        );
        let e =
            Options::try_parse_from(["tektite-controller", "--metrics-taskrun-level", "taskrun"])
                .unwrap_err();
        assert!(e.to_string().contains("invalid value 'taskrun'"), "{e}");
    }
}
