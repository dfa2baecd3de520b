//! `tektite-controller`: the TaskRun and PipelineRun controllers, in one
//! process, until SIGTERM or Ctrl-C. Objects are cached without their
//! `managedFields`, which grow with every writer and made Tekton's
//! controller's memory grow without bound, and finished runs are cached
//! trimmed to their metadata and conditions (`trim_task_run`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tektite_api::v1::{PipelineRun, TaskRun};
use tektite_controller::{Context, config, error_policy, lease, metrics, pipelinerun, taskrun};
use tektite_engine::status::is_done;

fn is_done_tr(t: &TaskRun) -> bool {
    t.status.as_ref().is_some_and(|s| is_done(&s.conditions))
}

fn is_done_pr(p: &PipelineRun) -> bool {
    p.status.as_ref().is_some_and(|s| is_done(&s.conditions))
}

// Decoding watch events allocates a lot; mimalloc also gives freed memory
// back to the system more readily than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let images = Arc::new(tektite_oci::Client::new(
        tektite_oci::ClientOptions::default(),
    )?);
    let ctx = Arc::new(Context::new(client.clone(), images));
    let ctx_for_config = ctx.clone();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=tektite");

    let (task_runs, writer) = reflector::store();
    let (pipeline_runs, pr_writer) = reflector::store();
    // Metrics, health and readiness on :9090 (TEKTITE_METRICS_ADDR).
    let addr = std::env::var("TEKTITE_METRICS_ADDR").unwrap_or_else(|_| "0.0.0.0:9090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let refresh = {
        let (trs, prs, m) = (
            task_runs.clone(),
            pipeline_runs.clone(),
            ctx.metrics.clone(),
        );
        Arc::new(move || {
            let running = |done: Vec<bool>| done.into_iter().filter(|d| !d).count();
            m.set_running(
                running(
                    trs.state()
                        .iter()
                        .map(|t: &Arc<TaskRun>| is_done_tr(t))
                        .collect(),
                ),
                running(
                    prs.state()
                        .iter()
                        .map(|p: &Arc<PipelineRun>| is_done_pr(p))
                        .collect(),
                ),
            );
        })
    };
    tokio::spawn(metrics::serve(
        listener,
        ctx.metrics.clone(),
        ready.clone(),
        refresh,
    ));

    // Leader election: a follower stands by (ready: it is healthy), the
    // leader reconciles; a leader that loses its Lease exits, to restart as
    // a follower.
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "tektite".into());
    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| format!("tektite-controller-{}", std::process::id()));
    let lease_cfg = lease::Config {
        name: "tektite-controller".into(),
        namespace: namespace.clone(),
        identity,
        duration: std::time::Duration::from_secs(15),
        renew_every: std::time::Duration::from_secs(5),
    };
    ready.store(true, Ordering::Relaxed);
    let (leader_tx, leader_rx) = tokio::sync::oneshot::channel();
    let mut lease_task = tokio::spawn(lease::run(
        Api::namespaced(client.clone(), &namespace),
        lease_cfg,
        leader_tx,
    ));
    tokio::select! {
        _ = leader_rx => {}
        _ = &mut lease_task => return Err("leader election ended before leading".into()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    ready.store(false, Ordering::Relaxed);
    {
        let (trs, prs, ready) = (task_runs.clone(), pipeline_runs.clone(), ready.clone());
        tokio::spawn(async move {
            let _ = trs.wait_until_ready().await;
            let _ = prs.wait_until_ready().await;
            ready.store(true, Ordering::Relaxed);
        });
    }
    let stream = watcher(
        Api::<TaskRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(tektite_controller::trim_task_run)
    .reflect(writer)
    .applied_objects();
    let task_run_controller = Controller::for_stream(stream, task_runs)
        .owns(Api::<Pod>::all(client.clone()), owned.clone())
        .shutdown_on_signal()
        .run(taskrun::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("tektite-controller: TaskRun: {e}");
            }
        });

    let stream = watcher(
        Api::<PipelineRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(tektite_controller::trim_pipeline_run)
    .reflect(pr_writer)
    .applied_objects();
    let pipeline_run_controller = Controller::for_stream(stream, pipeline_runs)
        .owns(Api::<TaskRun>::all(client.clone()), owned)
        .shutdown_on_signal()
        .run(pipelinerun::reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("tektite-controller: PipelineRun: {e}");
            }
        });

    // config-defaults, watched: a valid change applies to the next
    // reconciles; an invalid one is reported and the previous stays.
    let config_ctx = ctx_for_config;
    let config_watch = watcher(
        Api::<ConfigMap>::namespaced(client.clone(), &namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", config::CONFIG_MAP)),
    )
    .default_backoff()
    .applied_objects()
    .for_each(|cm| {
        let ctx = config_ctx.clone();
        async move {
            let Ok(cm) = cm else { return };
            let data = cm.data.unwrap_or_default();
            match config::from_data(&data, &tektite_engine::pod::Config::default()) {
                Ok(c) => {
                    if let Ok(mut current) = ctx.config.write() {
                        *current = c;
                    }
                    eprintln!("tektite-controller: {} applied", config::CONFIG_MAP);
                }
                Err(e) => eprintln!("tektite-controller: {e}; the previous configuration stays"),
            }
        }
    });

    let controllers = async {
        futures::join!(task_run_controller, pipeline_run_controller, config_watch);
    };
    tokio::select! {
        () = controllers => Ok(()),
        _ = lease_task => Err("the leader lease was lost: exiting to restart as a follower".into()),
    }
}
