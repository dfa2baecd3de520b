//! `tektite-controller`: the TaskRun and PipelineRun controllers, in one
//! process, until SIGTERM or Ctrl-C. Objects are cached without their
//! `managedFields`, which grow with every writer and made Tekton's
//! controller's memory grow without bound.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tektite_api::v1::{PipelineRun, TaskRun};
use tektite_controller::{Context, error_policy, pipelinerun, taskrun};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let images = Arc::new(tektite_oci::Client::new(
        tektite_oci::ClientOptions::default(),
    )?);
    let ctx = Arc::new(Context::new(client.clone(), images));
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=tektite");

    let (task_runs, writer) = reflector::store();
    let stream = watcher(
        Api::<TaskRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|o: &mut TaskRun| o.managed_fields_mut().clear())
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

    let (pipeline_runs, writer) = reflector::store();
    let stream = watcher(
        Api::<PipelineRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|o: &mut PipelineRun| o.managed_fields_mut().clear())
    .reflect(writer)
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

    futures::join!(task_run_controller, pipeline_run_controller);
    Ok(())
}
