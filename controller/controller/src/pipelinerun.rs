//! PipelineRun → TaskRuns: one reconcile reads the Pipeline, the Tasks it
//! names and the child TaskRuns (found by label, taken only when the run
//! controls them: see [`crate::is_controlled_by`]), plans with
//! `tektite_engine::pipelinerun`, and applies the plan in a fixed order:
//! claims, new TaskRuns, cancellations, status, events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use tektite_api::load::Object;
use tektite_api::v1::{
    Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, Task, TaskRun, TaskSpec,
};
use tektite_engine::params::Failure;
use tektite_engine::pipelinerun::{self, Observed};
use tektite_engine::status::{fail_pipeline_run, is_done};
use tektite_resolve::Kind;

use crate::concurrency::Admission;
use crate::taskrun::Remote;

use crate::{Context, Error, MANAGER, action, already_exists, record, status_patch};

/// The label the engine puts on a PipelineRun's TaskRuns.
pub const PIPELINE_RUN_LABEL: &str = "tekton.dev/pipelineRun";

/// The reason of a run that could not create a TaskRun (Tekton's).
pub const CREATE_RUN_FAILED: &str = "CreateRunFailed";

/// A run's Pipeline: its spec, its name (none when embedded) and its
/// annotations (the defaults of the run's concurrency settings).
type Resolved = (PipelineSpec, Option<String>, BTreeMap<String, String>);

/// The Pipeline a run names, or why it cannot be had (a user error).
async fn resolve(
    pr: &PipelineRun,
    ns: &str,
    ctx: &Context,
) -> Result<Result<Resolved, Failure>, Error> {
    if let Some(spec) = &pr.spec.pipeline_spec {
        return Ok(Ok(((**spec).clone(), None, BTreeMap::new())));
    }
    let Some(r) = &pr.spec.pipeline_ref else {
        return Ok(Err(Failure::new(
            pipelinerun::reason::COULDNT_GET_PIPELINE,
            "spec: neither pipelineRef nor pipelineSpec is given",
        )));
    };
    if let Some(resolver) = &r.resolver {
        // Resolved once: a run goes on with the spec its status keeps.
        if let Some(spec) = pr.status.as_ref().and_then(|s| s.pipeline_spec.as_deref()) {
            return Ok(Ok((spec.clone(), None, BTreeMap::new())));
        }
        return Ok(remote_pipeline(pr, ns, ctx, resolver));
    }
    let name = r.name.clone().unwrap_or_default();
    let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), ns);
    Ok(match api.get_opt(&name).await? {
        Some(p) => Ok((
            p.spec,
            Some(name),
            p.metadata.annotations.unwrap_or_default(),
        )),
        None => Err(Failure::new(
            pipelinerun::reason::COULDNT_GET_PIPELINE,
            format!(
                "Error retrieving pipeline for pipelinerun {ns}/{}: pipelines.tekton.dev \"{name}\" not found",
                pr.metadata.name.as_deref().unwrap_or("")
            ),
        )),
    })
}

/// The waiting reasons of a run whose refs are being resolved (Tekton's).
pub const RESOLVING_PIPELINE: &str = "ResolvingPipelineRef";
pub const RESOLVING_TASK: &str = "ResolvingTaskRef";

/// The Pipeline of a `pipelineRef` with a resolver: its spec once resolved,
/// `ResolvingPipelineRef` while it is being resolved, `CouldntGetPipeline`
/// when it cannot be.
fn remote_pipeline(
    pr: &PipelineRun,
    ns: &str,
    ctx: &Context,
    resolver: &str,
) -> Result<Resolved, Failure> {
    let name = pr.metadata.name.as_deref().unwrap_or("");
    let failed = |m: String| {
        Failure::new(
            pipelinerun::reason::COULDNT_GET_PIPELINE,
            format!(
                "Error retrieving pipeline for pipelinerun {ns}/{name}: resolver failed to get Pipeline : {m}"
            ),
        )
    };
    let params = pipelinerun::pipeline_ref_params(pr).map_err(failed)?;
    let req = crate::resolution::request(resolver, &params, Kind::Pipeline);
    match crate::taskrun::remote_object(ctx, ns, &req) {
        Remote::Ready(Object::Pipeline(p)) => {
            Ok((p.spec, None, p.metadata.annotations.unwrap_or_default()))
        }
        Remote::Ready(o) => Err(failed(format!(
            "resource is not a pipeline: it is a {}",
            o.kind()
        ))),
        Remote::Pending => Err(Failure::new(
            RESOLVING_PIPELINE,
            format!("PipelineRun {ns}/{name} awaiting remote resource"),
        )),
        Remote::Failed(m) => Err(failed(m)),
    }
}

/// The Tasks the pipeline's tasks name through resolvers, into `out` under
/// their remote keys; `ResolvingTaskRef` while one is being resolved,
/// `CouldntGetTask` (with the resolver's message) for one that cannot be.
fn remote_tasks(
    pr: &PipelineRun,
    (spec, pipeline): (&PipelineSpec, Option<&str>),
    children: &[TaskRun],
    (ns, ctx): (&str, &Context),
    out: &mut BTreeMap<String, TaskSpec>,
) -> Result<(), Failure> {
    let name = pr.metadata.name.as_deref().unwrap_or("");
    // Params that do not fit fail the run in the engine, naming them.
    let Ok(refs) = pipelinerun::remote_task_refs(pr, spec, pipeline, (ctx.now)()) else {
        return Ok(());
    };
    let mut pending = false;
    for (task, r) in refs {
        let Some(key) = tektite_engine::remote::task_ref_key(&r) else {
            continue;
        };
        // A ref that uses a task result: its TaskRun resolves it.
        if key.contains("$(") {
            continue;
        }
        // A task that has started goes on with the spec its TaskRun keeps.
        let started = children.iter().find_map(|c| {
            let labels = c.metadata.labels.as_ref()?;
            if labels.get("tekton.dev/pipelineTask") != Some(&task) {
                return None;
            }
            c.status.as_ref()?.task_spec.as_deref().cloned()
        });
        if let Some(spec) = started {
            out.insert(key, spec);
            continue;
        }
        let resolver = r.resolver.as_deref().unwrap_or_default();
        let req = crate::resolution::request(resolver, &r.params, Kind::Task);
        let failed = |m: String| {
            Failure::new(
                pipelinerun::reason::COULDNT_GET_TASK,
                format!(
                    "Pipeline {ns}/{name} can't be Run; it contains Tasks that don't exist: Couldn't retrieve Task {:?}: {m}",
                    tektite_engine::remote::describe(&key)
                ),
            )
        };
        match crate::taskrun::remote_object(ctx, ns, &req) {
            Remote::Ready(Object::Task(t)) => {
                out.insert(key, t.spec);
            }
            Remote::Ready(o) => {
                return Err(failed(format!(
                    "resource is not a task: it is a {}",
                    o.kind()
                )));
            }
            Remote::Pending => pending = true,
            Remote::Failed(m) => return Err(failed(m)),
        }
    }
    if pending {
        return Err(Failure::new(
            RESOLVING_TASK,
            format!("PipelineRun {ns}/{name} awaiting remote resource"),
        ));
    }
    Ok(())
}

/// The run waits for its refs (see [`crate::waiting`]).
async fn wait(pr: &PipelineRun, ctx: &Context, ns: &str, why: &Failure) -> Result<Action, Error> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    let name = pr.metadata.name.as_deref().unwrap_or("");
    let st = pr.status.clone().unwrap_or_default();
    crate::waiting(
        &api,
        ("PipelineRun", name),
        st,
        |s| &mut s.conditions,
        why,
        (ctx.now)(),
    )
    .await
}

/// The Tasks the pipeline names (those that exist; the engine fails the run
/// for the others).
async fn tasks(
    spec: &PipelineSpec,
    ns: &str,
    ctx: &Context,
) -> Result<BTreeMap<String, TaskSpec>, Error> {
    let names: BTreeSet<String> = spec
        .tasks
        .iter()
        .chain(&spec.finally)
        .filter_map(|t| t.task_ref.as_ref())
        .filter(|r| r.resolver.is_none() && r.kind.as_deref().is_none_or(|k| k == "Task"))
        .filter_map(|r| r.name.clone())
        .collect();
    let api: Api<Task> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = BTreeMap::new();
    for n in names {
        if let Some(t) = api.get_opt(&n).await? {
            out.insert(n, t.spec);
        }
    }
    Ok(out)
}

/// Reconciles one PipelineRun.
///
/// # Errors
/// An API call failed: nothing after it was applied, and the next reconcile
/// starts again from what exists.
pub async fn reconcile(pr: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(name), Some(ns)) = (pr.metadata.name.clone(), pr.metadata.namespace.clone()) else {
        return Err(Error::Unnamed("PipelineRun"));
    };
    if pr.status.as_ref().is_some_and(|s| is_done(&s.conditions)) {
        return Ok(Action::await_change());
    }
    let shared = ctx.clone();
    crate::instrumented(
        "PipelineRun",
        &ns,
        &name,
        &shared,
        apply(pr, ctx, name.clone(), ns.clone()),
    )
    .await
}

/// Reads, plans and applies (inside the reconcile's span).
async fn apply(
    pr: Arc<PipelineRun>,
    ctx: Arc<Context>,
    name: String,
    ns: String,
) -> Result<Action, Error> {
    // A run queued under recorded settings waits without its Pipeline
    // being read again.
    let pr = if crate::concurrency::queued(&pr) {
        match crate::concurrency::admit(pr.clone(), None, &ns, &ctx).await? {
            Admission::Go(admitted) => admitted,
            Admission::Wait(action) => return Ok(action),
            // Recorded settings were valid when recorded.
            Admission::Fail(_) => pr,
        }
    } else {
        pr
    };
    let resolved = resolve(&pr, &ns, &ctx).await?;
    if let Err(f) = &resolved
        && f.reason == RESOLVING_PIPELINE
    {
        return wait(&pr, &ctx, &ns, f).await;
    }
    let mut task_specs = match &resolved {
        Ok((spec, _, _)) => tasks(spec, &ns, &ctx).await?,
        Err(_) => BTreeMap::new(),
    };
    let task_runs: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
    let children = owned_children(&pr, &task_runs, &name).await?;
    let mut early = None;
    if let Ok((spec, pipeline, _)) = &resolved {
        let at = (spec, pipeline.as_deref());
        match remote_tasks(&pr, at, &children, (&ns, &ctx), &mut task_specs) {
            Err(f) if f.reason == RESOLVING_TASK => return wait(&pr, &ctx, &ns, &f).await,
            Err(f) => early = Some(f),
            Ok(()) => {}
        }
    }
    let mut pr = with_source(pr, &resolved, &ns, &ctx);
    if let Ok((spec, pipeline, annotations)) = &resolved {
        let of = (spec, pipeline.as_deref(), annotations);
        pr = with_environment(pr, of, &ns, &ctx).await;
    }
    if let (Ok((spec, pipeline, annotations)), None) = (&resolved, &early) {
        let of = (spec, pipeline.as_deref(), annotations);
        match crate::concurrency::admit(pr.clone(), Some(of), &ns, &ctx).await? {
            Admission::Go(admitted) => pr = admitted,
            Admission::Wait(action) => return Ok(action),
            Admission::Fail(f) => early = Some(f),
        }
    }

    let mut plan = pipelinerun::reconcile(
        Observed {
            run: &pr,
            pipeline: match &resolved {
                Ok((s, n, _)) => Ok((s, n.as_deref())),
                Err(f) => Err(f),
            },
            tasks: &task_specs,
            children: &children,
            now: (ctx.now)(),
        },
        &ctx.config(),
    );

    if let Some(f) = early {
        plan = pipelinerun::Plan::default();
        fail(&mut plan, &pr, f, (ctx.now)());
    }
    for claim in &plan.create_claims {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let r = api.create(&PostParams::default(), claim).await;
        if !already_exists(&r) {
            r?;
        }
    }
    let create = std::mem::take(&mut plan.create);
    if let Some((created, failure)) = create_children(&pr, &task_runs, &create).await? {
        let message = failure.message.clone();
        fail(&mut plan, &pr, failure, (ctx.now)());
        cancel_running(&mut plan, &children, created, &message);
    }
    for (child, message) in &plan.cancel {
        let patch = serde_json::json!({
            "spec": {"status": "TaskRunCancelled", "statusMessage": message}
        });
        task_runs
            .patch(child, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some(st) = &plan.status {
        write_status((&pr, &children), st, (&ns, None), &ctx).await?;
    }
    record(&ctx, &*pr, &plan.events).await;
    Ok(action(plan.requeue_after))
}

/// Applies `st` as the run's status (server-side apply, as the
/// controller's field manager; with `resource_version`, only over that
/// version of the run). A run that ends with it is counted in the
/// metrics (its TaskRuns `children` give a deployment's commit time when
/// the run has no `commit-time` result), traced, and the runs queued
/// behind it are woken.
///
/// # Errors
/// The API call failed.
pub(crate) async fn write_status(
    (pr, children): (&PipelineRun, &[TaskRun]),
    st: &PipelineRunStatus,
    (ns, resource_version): (&str, Option<&str>),
    ctx: &Context,
) -> Result<(), Error> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    let mut body = status_patch("PipelineRun", st);
    if let Some(rv) = resource_version {
        // Only over that version of the run: a 409 if it changed since.
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    api.patch_status(
        pr.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    if is_done(&st.conditions) {
        let secs = crate::seconds(
            st.start_time.as_ref(),
            pr.metadata.creation_timestamp.as_ref(),
            (ctx.now)(),
        );
        ctx.metrics.pipelinerun_done(pr, &st.conditions, secs);
        deployment_done((pr, children), st, ns, ctx);
        crate::traces::pipelinerun_ended(pr, st, ctx);
        crate::concurrency::ended(pr, ns, ctx);
    }
    Ok(())
}

/// A finished run's deployment metrics, if it is a deployment
/// (`tektite_engine::dora`): its restore time from the cached runs of its
/// environment (the cluster's record, so a restart of the controller loses
/// nothing). The lead time comes from the run's `commit-time` result,
/// else a `committer-date` result of one of its TaskRuns (`children`).
fn deployment_done(
    (pr, children): (&PipelineRun, &[TaskRun]),
    st: &PipelineRunStatus,
    ns: &str,
    ctx: &Context,
) {
    let mut done = pr.clone();
    done.status = Some(st.clone());
    let Some(d) = tektite_engine::dora::deployment_of(&done, children) else {
        return;
    };
    let history: Vec<_> = ctx
        .queue
        .cached_runs(ns)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| tektite_engine::dora::deployment_of(p, &[]))
        .collect();
    let restored = tektite_engine::dora::restored_after(&history, &d);
    ctx.metrics.deployment_done(&pr.metadata, &d, restored);
}

/// The run with the `tektite.dev/environment` label its Pipeline's
/// annotation gives it (`environment_label`), set on the cluster's object
/// once; a value that is not a label value is a warning event (until the
/// run starts), and the run goes on unlabelled, as it does when the patch
/// fails (logged; tried again at the next reconcile).
async fn with_environment(
    pr: Arc<PipelineRun>,
    (spec, pipeline, annotations): (&PipelineSpec, Option<&str>, &BTreeMap<String, String>),
    ns: &str,
    ctx: &Context,
) -> Arc<PipelineRun> {
    let key = tektite_engine::dora::ENVIRONMENT_LABEL;
    match pipelinerun::environment_label(&pr, (spec, pipeline), annotations) {
        None => pr,
        Some(Ok(value)) => {
            let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
            let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
            let name = pr.metadata.name.as_deref().unwrap_or_default();
            if let Err(error) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(%error, name, "cannot label the run with its environment");
                return pr;
            }
            let mut labelled = (*pr).clone();
            labelled
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(key.into(), value);
            Arc::new(labelled)
        }
        Some(Err(message)) => {
            if pr.status.as_ref().is_some_and(|s| s.start_time.is_some()) {
                return pr;
            }
            let event = tektite_engine::status::Event {
                type_: "Warning",
                reason: "EnvironmentLabelInvalid".into(),
                message,
            };
            record(ctx, &*pr, &[event]).await;
            pr
        }
    }
}

/// The run with where its Pipeline came from
/// (`status.provenance.refSource`), when a resolver found it.
fn with_source(
    pr: Arc<PipelineRun>,
    resolved: &Result<Resolved, Failure>,
    ns: &str,
    ctx: &Context,
) -> Arc<PipelineRun> {
    let Some(resolver) = pr
        .spec
        .pipeline_ref
        .as_ref()
        .and_then(|r| r.resolver.clone())
    else {
        return pr;
    };
    let known = tektite_engine::status::has_source(
        pr.status.as_ref().and_then(|s| s.provenance.as_deref()),
    );
    if known || resolved.is_err() {
        return pr;
    }
    let Ok(params) = pipelinerun::pipeline_ref_params(&pr) else {
        return pr;
    };
    let req = crate::resolution::request(&resolver, &params, Kind::Pipeline);
    let crate::resolution::Poll::Ready(found) = ctx.poll(ns, &req) else {
        return pr;
    };
    let mut pr = (*pr).clone();
    let st = pr.status.get_or_insert_with(Default::default);
    tektite_engine::status::record_source(&mut st.provenance, found.source);
    Arc::new(pr)
}

/// The run's child TaskRuns: those with its label (to find them) whose
/// controller ownerReference is the run (to be its). A TaskRun with the
/// labels alone is left out: never read for results, never cancelled.
async fn owned_children(
    pr: &PipelineRun,
    task_runs: &Api<TaskRun>,
    name: &str,
) -> Result<Vec<TaskRun>, Error> {
    let listed = task_runs
        .list(&ListParams::default().labels(&format!("{PIPELINE_RUN_LABEL}={name}")))
        .await?
        .items;
    let (owned, foreign): (Vec<TaskRun>, Vec<TaskRun>) = listed
        .into_iter()
        .partition(|tr| crate::is_controlled_by(&tr.metadata, pr.metadata.uid.as_deref()));
    for tr in &foreign {
        let child = tr.metadata.name.as_deref().unwrap_or("");
        tracing::warn!(%child, "a TaskRun with the run's label is not the run's: ignored");
    }
    Ok(owned)
}

/// Creates the plan's TaskRuns. One whose name is taken (409) is the
/// run's already when the run controls it; when it does not, nothing more
/// is created and the failure to write is returned, with the children
/// created before it: the run does not adopt it.
async fn create_children<'c>(
    pr: &PipelineRun,
    task_runs: &Api<TaskRun>,
    create: &'c [TaskRun],
) -> Result<Option<(&'c [TaskRun], Failure)>, Error> {
    for (i, child) in create.iter().enumerate() {
        let r = task_runs.create(&PostParams::default(), child).await;
        if !already_exists(&r) {
            r?;
            continue;
        }
        let name = child.metadata.name.as_deref().unwrap_or("");
        let taken = task_runs.get_opt(name).await?.is_some_and(|existing| {
            !crate::is_controlled_by(&existing.metadata, pr.metadata.uid.as_deref())
        });
        if taken {
            return Ok(Some((
                &create[..i],
                Failure::new(
                    CREATE_RUN_FAILED,
                    format!(
                        "TaskRun {name:?} exists and is not controlled by PipelineRun {:?}: it is not adopted",
                        pr.metadata.name.as_deref().unwrap_or("")
                    ),
                ),
            )));
        }
    }
    Ok(None)
}

/// A run that failed leaves nothing running: its own children that have
/// not ended, and those it created in this pass, are cancelled.
fn cancel_running(
    plan: &mut pipelinerun::Plan,
    children: &[TaskRun],
    created: &[TaskRun],
    why: &str,
) {
    let running = children
        .iter()
        .filter(|c| {
            c.spec.status.is_none() && !c.status.as_ref().is_some_and(|s| is_done(&s.conditions))
        })
        .chain(created);
    for c in running {
        let Some(name) = c.metadata.name.clone() else {
            continue;
        };
        if !plan.cancel.iter().any(|(n, _)| *n == name) {
            plan.cancel
                .push((name, format!("the PipelineRun failed: {why}")));
        }
    }
}

/// Turns `plan` into the run's failure with `failure` (its status so far
/// kept, its cancellations of its own children too).
fn fail(plan: &mut pipelinerun::Plan, pr: &PipelineRun, failure: Failure, now: Timestamp) {
    let mut run = pr.clone();
    run.status = plan.status.take().or(run.status);
    fail_pipeline_run(&mut run, failure.reason, failure.message.clone(), now);
    plan.status = run.status;
    plan.requeue_after = None;
    plan.events.push(tektite_engine::status::Event {
        type_: "Warning",
        reason: failure.reason.into(),
        message: failure.message,
    });
}
