//! TaskRun → Pod: one reconcile reads the Task (and the StepActions its
//! steps name, inlined by `tektite_engine::stepaction`) and the current attempt's
//! pod (only one the run controls: see [`crate::is_controlled_by`]; its
//! step reports checked by [`crate::reports`]), plans with
//! `tektite_engine::taskrun`, and applies the plan in a fixed order:
//! claims, pod, pod deletion, ready annotation, sidecars stopped, status,
//! events. A finished run is reconciled again only while
//! its status shows a live sidecar ([`settle`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use tektite_api::load::Object;
use tektite_api::stepaction::StepAction;
use tektite_api::v1::{Task, TaskRun};
use tektite_engine::params::Failure;
use tektite_engine::pod::{ImageCommand, pod_name};
use tektite_engine::status::{fail_task_run, is_done, reason};
use tektite_resolve::Kind;

use crate::resolution::Poll;
use tektite_engine::stepaction::{self, StepActions};
use tektite_engine::taskrun::{self, Observed, Resolved};

use crate::{Context, Error, MANAGER, action, already_exists, record, status_patch};

/// The Task a run names or embeds, with the StepActions its steps name
/// inlined; or why it cannot be had (a user error).
async fn resolve(
    tr: &TaskRun,
    ns: &str,
    ctx: &Context,
) -> Result<Result<(tektite_api::v1::TaskSpec, Option<String>), Failure>, Error> {
    let (spec, name) = match find_task(tr, ns, ctx).await? {
        Ok(found) => found,
        Err(f) => return Ok(Err(f)),
    };
    let actions = match step_actions(tr, &spec, ns, ctx).await? {
        Ok(a) => a,
        Err(f) => return Ok(Err(f)),
    };
    Ok(stepaction::inline(&spec, tr, &actions).map(|s| (s, name)))
}

/// The Task of a `taskRef` with a resolver: its spec once resolved (its
/// source kept in `source`), `ResolvingTaskRef` while it is being resolved,
/// `TaskRunResolutionFailed` when it cannot be.
fn remote_task(
    tr: &TaskRun,
    ns: &str,
    ctx: &Context,
    r: &tektite_api::v1::TaskRef,
) -> Result<(tektite_api::v1::TaskSpec, Option<String>), Failure> {
    let resolver = r.resolver.as_deref().unwrap_or_default();
    let req = crate::resolution::request(resolver, &r.params, Kind::Task);
    let name = tr.metadata.name.as_deref().unwrap_or("");
    match remote_object(ctx, ns, &req) {
        Remote::Ready(Object::Task(t)) => Ok((t.spec, None)),
        Remote::Ready(o) => Err(Failure::new(
            "TaskRunResolutionFailed",
            format!("resource is not a task: it is a {}", o.kind()),
        )),
        Remote::Pending => Err(Failure::new(
            RESOLVING_TASK,
            format!("TaskRun {ns}/{name} awaiting remote resource"),
        )),
        Remote::Failed(m) => Err(Failure::new("TaskRunResolutionFailed", m)),
    }
}

/// The StepActions of the namespace that `spec`'s steps name (those that
/// do not exist are left out: inlining fails the run naming them).
async fn step_actions(
    tr: &TaskRun,
    spec: &tektite_api::v1::TaskSpec,
    ns: &str,
    ctx: &Context,
) -> Result<Result<StepActions, Failure>, Error> {
    let mut out = StepActions::new();
    for (i, s) in spec.steps.iter().enumerate() {
        let Some(r) = &s.step_ref else { continue };
        let Some(resolver) = &r.resolver else {
            continue;
        };
        let fail = |m: String| {
            Failure::new(
                stepaction::RESOLUTION_FAILED,
                format!(
                    "failed to resolve step ref for step {:?} (index {i}): {m}",
                    s.name
                ),
            )
        };
        let params = match stepaction::ref_params(r, spec, tr) {
            Ok(p) => p,
            Err(m) => return Ok(Err(fail(m))),
        };
        let req = crate::resolution::request(resolver, &params, Kind::StepAction);
        match remote_object(ctx, ns, &req) {
            Remote::Ready(Object::StepAction(sa)) => {
                out.insert(tektite_engine::remote::key(resolver, &params), sa.spec);
            }
            Remote::Ready(..) => {}
            Remote::Pending => {
                return Ok(Err(Failure::new(
                    RESOLVING_STEP,
                    format!(
                        "TaskRun {ns}/{} awaiting remote StepAction",
                        tr.metadata.name.as_deref().unwrap_or("")
                    ),
                )));
            }
            Remote::Failed(m) => return Ok(Err(fail(m))),
        }
    }
    let api: Api<StepAction> = Api::namespaced(ctx.client.clone(), ns);
    for name in stepaction::referenced(spec) {
        if out.contains_key(name) {
            continue;
        }
        if let Some(sa) = api.get_opt(name).await? {
            out.insert(name.to_string(), sa.spec);
        }
    }
    Ok(Ok(out))
}

/// The waiting reasons of a run whose refs are being resolved (Tekton's):
/// the run stays `Unknown` with one and is reconciled again shortly.
pub const RESOLVING_TASK: &str = "ResolvingTaskRef";
pub const RESOLVING_STEP: &str = "ResolvingStepActionRef";

/// A remote ref's answer, decoded.
pub(crate) enum Remote {
    Ready(Object),
    Pending,
    Failed(String),
}

/// Where `req` stands, its answer decoded as the kind it asks for.
pub(crate) fn remote_object(ctx: &Context, ns: &str, req: &tektite_resolve::Request) -> Remote {
    match ctx.poll(ns, req) {
        Poll::Pending => Remote::Pending,
        Poll::Failed(m) => Remote::Failed(m),
        Poll::Ready(r) => match tektite_resolve::decode(&r.label(), &r.data, req.kind) {
            Ok(o) => Remote::Ready(o),
            Err(m) => Remote::Failed(m),
        },
    }
}

/// The Task a run names, or why it cannot be had (a user error).
async fn find_task(
    tr: &TaskRun,
    ns: &str,
    ctx: &Context,
) -> Result<Result<(tektite_api::v1::TaskSpec, Option<String>), Failure>, Error> {
    if let Some(spec) = &tr.spec.task_spec {
        return Ok(Ok(((**spec).clone(), None)));
    }
    let Some(r) = &tr.spec.task_ref else {
        return Ok(Err(Failure::new(
            "TaskRunResolutionFailed",
            "spec: neither taskRef nor taskSpec is given",
        )));
    };
    if r.resolver.is_some() && r.kind.as_deref().is_none_or(|k| k == "Task") {
        // Resolved once: a run goes on with the spec its status keeps.
        if let Some(spec) = tr.status.as_ref().and_then(|s| s.task_spec.as_deref()) {
            return Ok(Ok((spec.clone(), None)));
        }
        return Ok(remote_task(tr, ns, ctx, r));
    }
    if r.resolver.is_some() || r.kind.as_deref().is_some_and(|k| k != "Task") {
        return Ok(Err(Failure::new(
            "TaskRunResolutionFailed",
            format!(
                "spec.taskRef: only Tasks by name are supported, not {}",
                r.resolver
                    .as_deref()
                    .map(|x| format!("resolver {x:?}"))
                    .unwrap_or_else(|| format!("kind {:?}", r.kind.as_deref().unwrap_or("")))
            ),
        )));
    }
    let name = r.name.clone().unwrap_or_default();
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), ns);
    Ok(match tasks.get_opt(&name).await? {
        Some(t) => Ok((t.spec, Some(name))),
        None => Err(Failure::new(
            "CouldntGetTask",
            format!(
                "error when listing tasks for taskRun {}: tasks.tekton.dev \"{name}\" not found",
                tr.metadata.name.as_deref().unwrap_or("")
            ),
        )),
    })
}

/// Reconciles one TaskRun.
///
/// # Errors
/// An API call failed: nothing after it was applied, and the next reconcile
/// starts again from what exists.
pub async fn reconcile(tr: Arc<TaskRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(name), Some(ns)) = (tr.metadata.name.clone(), tr.metadata.namespace.clone()) else {
        return Err(Error::Unnamed("TaskRun"));
    };
    let finished = tr.status.as_ref().filter(|s| is_done(&s.conditions));
    if finished.is_some_and(|st| !taskrun::has_live_sidecars(st)) {
        return Ok(Action::await_change());
    }
    let finished = finished.is_some();
    let shared = ctx.clone();
    let (n, s) = (name.clone(), ns.clone());
    let work = async move {
        if finished {
            settle(tr, ctx, n, s).await
        } else {
            apply(tr, ctx, n, s).await
        }
    };
    crate::instrumented("TaskRun", &ns, &name, &shared, work).await
}

/// A finished run whose status still shows a live sidecar: stops it if it
/// still runs its own image, and records the sidecars' final states once
/// they have all ended (a merge patch of `status.sidecars` alone: the
/// cached run is trimmed, and a server-side apply of part of a status
/// would drop the rest).
async fn settle(
    tr: Arc<TaskRun>,
    ctx: Arc<Context>,
    name: String,
    ns: String,
) -> Result<Action, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod = match tr.status.as_ref().and_then(|s| s.pod_name.as_deref()) {
        Some(p) => pods.get_opt(p).await?,
        None => None,
    }
    // Only the run's own pod has sidecars to stop or record.
    .filter(|p| crate::is_controlled_by(&p.metadata, tr.metadata.uid.as_deref()));
    let plan = taskrun::settle(&tr, pod.as_ref(), &ctx.config());
    if let Some(stop) = &plan.stop_sidecars {
        stop_sidecars(&pods, &ctx, &tr, stop).await?;
    }
    if let Some(st) = &plan.status {
        let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": {"sidecars": st.sidecars}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(Action::await_change())
}

/// Stops a pod's sidecars (see [`taskrun::StopSidecars`]). A pod already
/// gone has nothing left to stop. A refusal (a 4xx other than a conflict
/// or throttling: an admission webhook, say) does not hold the run up: it
/// is recorded as a Warning event, the run ends all the same, and the stop
/// is tried again when the finished run is next reconciled. Other errors
/// are returned for a retry.
async fn stop_sidecars(
    pods: &Api<Pod>,
    ctx: &Context,
    tr: &TaskRun,
    stop: &taskrun::StopSidecars,
) -> Result<(), Error> {
    let r = pods
        .patch(
            &stop.pod,
            &PatchParams::default(),
            &Patch::Strategic(&stop.patch()),
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(kube::Error::Api(s)) if crate::is_refusal(&s) => {
            tracing::warn!(pod = %stop.pod, code = s.code, message = %s.message, "sidecars not stopped");
            record(ctx, tr, &[stop.refused(&s.message)]).await;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads, plans and applies (inside the reconcile's span).
async fn apply(
    tr: Arc<TaskRun>,
    ctx: Arc<Context>,
    name: String,
    ns: String,
) -> Result<Action, Error> {
    let resolved = resolve(&tr, &ns, &ctx).await?;
    if let Err(f) = &resolved
        && (f.reason == RESOLVING_TASK || f.reason == RESOLVING_STEP)
    {
        return wait(&tr, &ctx, &name, &ns, f).await;
    }
    let tr = with_source(tr, &ns, &ctx);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let view = observe_pod(&tr, &pods, &name, &ctx.config()).await?;
    let plan = plan(&tr, &resolved, &view, &ctx).await;
    execute(&tr, &ctx, &pods, &name, &ns, &plan).await
}

/// The run waits for its refs (see [`crate::waiting`]).
async fn wait(
    tr: &TaskRun,
    ctx: &Context,
    name: &str,
    ns: &str,
    why: &Failure,
) -> Result<Action, Error> {
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), ns);
    let st = tr.status.clone().unwrap_or_default();
    crate::waiting(
        &api,
        ("TaskRun", name),
        st,
        |s| &mut s.conditions,
        why,
        (ctx.now)(),
    )
    .await
}

/// The run with where its Task came from (`status.provenance.refSource`),
/// when a resolver found it and the status does not say so yet.
fn with_source(tr: Arc<TaskRun>, ns: &str, ctx: &Context) -> Arc<TaskRun> {
    let Some(r) = tr.spec.task_ref.as_ref().filter(|r| r.resolver.is_some()) else {
        return tr;
    };
    let known = tektite_engine::status::has_source(
        tr.status.as_ref().and_then(|s| s.provenance.as_deref()),
    );
    if known {
        return tr;
    }
    let req = crate::resolution::request(
        r.resolver.as_deref().unwrap_or_default(),
        &r.params,
        Kind::Task,
    );
    let Poll::Ready(found) = ctx.poll(ns, &req) else {
        return tr;
    };
    let mut tr = (*tr).clone();
    let st = tr.status.get_or_insert_with(Default::default);
    tektite_engine::status::record_source(&mut st.provenance, found.source);
    Arc::new(tr)
}

/// The current attempt's pod, as far as the run may use it.
#[derive(Debug)]
enum PodView {
    /// There is none.
    Absent,
    /// The run's own (see [`crate::is_controlled_by`]), its annotations
    /// vetted ([`crate::reports::vet`]).
    Owned(Box<Pod>),
    /// A pod of the attempt's name that the run does not control: never
    /// read, patched or deleted, and the run cannot have its pod.
    Foreign(String),
}

/// Reads the current attempt's pod and sorts it (see [`PodView`]).
async fn observe_pod(
    tr: &TaskRun,
    pods: &Api<Pod>,
    name: &str,
    config: &tektite_engine::pod::Config,
) -> Result<PodView, Error> {
    let attempt = tr.status.as_ref().map_or(0, |s| s.retries_status.len());
    let pod = pod_name(name, attempt);
    Ok(match pods.get_opt(&pod).await? {
        None => PodView::Absent,
        Some(mut p) if crate::is_controlled_by(&p.metadata, tr.metadata.uid.as_deref()) => {
            crate::reports::vet(&mut p, config);
            PodView::Owned(Box::new(p))
        }
        Some(_) => {
            tracing::warn!(%pod, "a pod of this name is not the run's: left alone");
            PodView::Foreign(pod)
        }
    })
}

/// Asks the engine for a plan, looking up the images it needs once. A run
/// whose pod name is taken by a pod it does not own fails when it would
/// create its pod (a cancelled or timed-out one ends as such, deleting
/// nothing).
async fn plan(
    tr: &TaskRun,
    resolved: &Result<(tektite_api::v1::TaskSpec, Option<String>), Failure>,
    view: &PodView,
    ctx: &Context,
) -> taskrun::Plan {
    let pod = match view {
        PodView::Owned(p) => Some(&**p),
        PodView::Absent | PodView::Foreign(_) => None,
    };
    let mut images = ctx.image_cache.lock().await.clone();
    let mut looked_up = false;
    loop {
        let plan = taskrun::reconcile(
            Observed {
                task_run: tr,
                resolved: match resolved {
                    Ok((s, n)) => Resolved::Spec(s, n.as_deref()),
                    Err(f) => Resolved::Failed(f),
                },
                pod,
                images: &images,
                now: (ctx.now)(),
            },
            &ctx.config(),
        );
        if let PodView::Foreign(p) = view
            && (plan.create_pod.is_some() || !plan.need_images.is_empty())
        {
            let message = format!(
                "pod {p:?} exists and is not controlled by TaskRun {:?}: it is neither adopted nor deleted",
                tr.metadata.name.as_deref().unwrap_or("")
            );
            return failed(tr, reason::POD_CREATION_FAILED, message, ctx);
        }
        if plan.need_images.is_empty() || looked_up {
            return plan;
        }
        looked_up = true;
        if let Err(message) = look_up_images(&plan.need_images, &mut images, ctx).await {
            return failed(tr, reason::IMAGE_PULL_FAILED, message, ctx);
        }
    }
}

/// Looks up the commands of `needed` into `images` and the shared cache.
///
/// # Errors
/// Why the first image that could not be looked up failed (a user error:
/// the run fails).
async fn look_up_images(
    needed: &[String],
    images: &mut BTreeMap<String, ImageCommand>,
    ctx: &Context,
) -> Result<(), String> {
    for image in needed {
        let info = ctx
            .images
            .lookup(image, None)
            .await
            .map_err(|e| format!("cannot read the command of {image}: {e}"))?;
        let Some(c) = info.command_for("linux/amd64") else {
            return Err(format!("image {image} has no linux/amd64 platform"));
        };
        let c = ImageCommand {
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
        };
        ctx.image_cache
            .lock()
            .await
            .insert(image.clone(), c.clone());
        images.insert(image.clone(), c);
    }
    Ok(())
}

/// The plan that ends the run failed with `reason` and `message` (and
/// does nothing else).
fn failed(tr: &TaskRun, reason: &str, message: String, ctx: &Context) -> taskrun::Plan {
    let mut run = tr.clone();
    fail_task_run(&mut run, reason, message.clone(), (ctx.now)());
    taskrun::Plan {
        status: run.status,
        events: vec![tektite_engine::status::Event {
            type_: "Warning",
            reason: reason.into(),
            message,
        }],
        ..Default::default()
    }
}

/// Applies a plan in its fixed order: claims, pod, pod deletion, ready
/// annotation, sidecars stopped, status, events.
async fn execute(
    tr: &Arc<TaskRun>,
    ctx: &Context,
    pods: &Api<Pod>,
    name: &str,
    ns: &str,
    plan: &taskrun::Plan,
) -> Result<Action, Error> {
    for claim in &plan.create_claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        let r = api.create(&PostParams::default(), claim).await;
        if !already_exists(&r) {
            r?;
        }
    }
    if let Some(p) = &plan.create_pod {
        let r = pods.create(&PostParams::default(), p).await;
        if !already_exists(&r) {
            r?;
            if let Some(created) = &tr.metadata.creation_timestamp {
                let latency = (ctx.now)().duration_since(created.0);
                ctx.metrics.pod_created(tr, latency.unsigned_abs());
            }
        }
    }
    if let Some(p) = &plan.delete_pod {
        match pods.delete(p, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(p) = &plan.mark_ready {
        let patch = serde_json::json!({"metadata": {"annotations": {"tekton.dev/ready": "READY"}}});
        pods.patch(p, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some(stop) = &plan.stop_sidecars {
        // Before the status: a run written as ended is only reconciled
        // again for its sidecars (settle), and a retry's old pod never.
        stop_sidecars(pods, ctx, tr, stop).await?;
    }
    if let Some(st) = &plan.status {
        let pulled = crate::traces::with_image_pulls(tr, st, ns, ctx).await;
        let st = pulled.as_ref().unwrap_or(st);
        let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), ns);
        api.patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(status_patch("TaskRun", st)),
        )
        .await?;
        if is_done(&st.conditions) {
            let secs = crate::seconds(
                st.start_time.as_ref(),
                tr.metadata.creation_timestamp.as_ref(),
                (ctx.now)(),
            );
            ctx.metrics.taskrun_done(tr, &st.conditions, secs);
            crate::traces::taskrun_ended(tr, st, ctx);
        }
    }
    record(ctx, &**tr, &plan.events).await;
    Ok(action(plan.requeue_after))
}
