//! Remote refs for `tkt run`: every `pipelineRef`, `taskRef` and step
//! `ref` with `resolver:` that a run needs is resolved before anything
//! starts ([`tektite_resolve`]), loaded and validated like a file (its
//! messages name the source as the file: URL, commit or bundle digest, and
//! path), and kept in the run's maps under its remote key
//! ([`tektite_engine::remote`]), where the engine and the runner find it.
//! Where each came from is kept too, for `status.provenance.refSource`.
//!
//! A resolver's params may use the run's params (and, in a Pipeline, the
//! Pipeline's defaults; for a step, the Task's); anything else cannot be
//! known before the run starts and is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tektite_api::data::{DataKind, DataSet};
use tektite_api::load::Object;
use tektite_api::param::ParamValue;
use tektite_api::v1::{Param, PipelineSpec, RefSource, TaskRun, TaskSpec};
use tektite_engine::remote;
use tektite_engine::stepaction::{self, StepActions};
use tektite_engine::subst::Vars;
use tektite_resolve::{Kind, Options, Request, Resolvers};

/// Resolves refs, once each, and keeps what it found.
#[derive(Debug)]
pub struct Remote {
    rt: tokio::runtime::Runtime,
    resolvers: Resolvers,
    secrets: DataSecrets,
    /// Where each remote object came from, by remote key.
    pub sources: BTreeMap<String, RefSource>,
}

/// The Secrets given to `tkt run`, for resolvers' credentials.
#[derive(Debug)]
struct DataSecrets(DataSet);

impl tektite_resolve::Secrets for DataSecrets {
    fn get(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        let s = self.0.get(DataKind::Secret, name).ok_or_else(|| {
            format!("secret {name:?} was not given (a Secret document or --secret)")
        })?;
        s.entries
            .get(key)
            .cloned()
            .ok_or_else(|| format!("key {key:?} not found in secret {name:?}"))
    }
}

impl Remote {
    /// # Errors
    /// The runtime or the HTTP clients cannot be made.
    pub fn new(
        cache_dir: Option<PathBuf>,
        offline: bool,
        data: &DataSet,
    ) -> anyhow::Result<Remote> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let resolvers = Resolvers::new(Options {
            cache_dir,
            offline,
            ..Options::default()
        })?;
        Ok(Remote {
            rt,
            resolvers,
            secrets: DataSecrets(data.clone()),
            sources: BTreeMap::new(),
        })
    }

    /// Resolves `resolver` with `params` (already substituted), expecting
    /// `kind`; `at` is the ref's place for messages. Returns its remote key
    /// and the object it found (of `kind`), loaded and validated.
    ///
    /// # Errors
    /// Every problem, as lines naming the place, the source and the field.
    pub fn fetch(
        &mut self,
        at: &str,
        resolver: &str,
        params: &[Param],
        kind: Kind,
    ) -> Result<(String, Object), String> {
        let key = remote::key(resolver, params);
        let req = Request {
            resolver: resolver.to_string(),
            params: params
                .iter()
                .map(|p| (p.name.clone(), remote::value_text(&p.value)))
                .collect(),
            kind,
        };
        let got = self
            .rt
            .block_on(self.resolvers.resolve(&req, &self.secrets))
            .map_err(|e| format!("{at}: {e}"))?;
        let found = tektite_resolve::decode(&got.label(), &got.data, kind)
            .map_err(|e| format!("{at}: {e}"))?;
        self.sources.insert(key.clone(), got.source);
        Ok((key, found))
    }

    /// The StepActions the resolver refs of `spec`'s steps name, for the
    /// run `tr`, into `actions`.
    ///
    /// # Errors
    /// As [`Remote::fetch`]; a ref param the run cannot give before it starts.
    pub fn step_actions(
        &mut self,
        at: &str,
        spec: &TaskSpec,
        tr: &TaskRun,
        actions: &mut StepActions,
    ) -> Result<(), String> {
        for (i, s) in spec.steps.iter().enumerate() {
            let Some(r) = &s.step_ref else { continue };
            let Some(resolver) = &r.resolver else {
                continue;
            };
            let here = format!("{at}.steps[{i}].ref");
            let params = stepaction::ref_params(r, spec, tr).map_err(|e| format!("{here}: {e}"))?;
            known_before_start(&here, &params)?;
            if actions.contains_key(&remote::key(resolver, &params)) {
                continue;
            }
            let (key, found) = self.fetch(&here, resolver, &params, Kind::StepAction)?;
            if let Object::StepAction(sa) = found {
                actions.insert(key, sa.spec);
            }
        }
        Ok(())
    }

    /// What a PipelineRun needs from resolvers, `pipeline` its Pipeline
    /// spec: the Tasks its pipeline tasks name through a resolver (their
    /// params substituted with the run's values over the Pipeline's
    /// defaults), and the StepActions of every Task it runs.
    ///
    /// # Errors
    /// As [`Remote::fetch`].
    pub fn for_pipeline(
        &mut self,
        at: &str,
        pipeline: &PipelineSpec,
        run_params: &[Param],
        tasks: &mut BTreeMap<String, TaskSpec>,
        actions: &mut StepActions,
    ) -> Result<(), String> {
        let vars = param_vars(&values(run_params, &pipeline.params));
        let all = [("tasks", &pipeline.tasks), ("finally", &pipeline.finally)];
        for (list, pts) in all {
            for (i, pt) in pts.iter().enumerate() {
                let here = format!("{at}.{list}[{i}]");
                if let Some(r) = &pt.task_ref
                    && let Some(resolver) = &r.resolver
                {
                    let params = substitute(&format!("{here}.taskRef"), &r.params, &vars)?;
                    if !tasks.contains_key(&remote::key(resolver, &params)) {
                        let (key, found) =
                            self.fetch(&format!("{here}.taskRef"), resolver, &params, Kind::Task)?;
                        if let Object::Task(t) = found {
                            tasks.insert(key, t.spec);
                        }
                    }
                }
                let spec = match (&pt.task_spec, &pt.task_ref) {
                    (Some(e), _) => Some(e.task.clone()),
                    (None, Some(r)) => remote::task_ref_key(r)
                        .map(|k| substitute_key(&k, r, &vars))
                        .and_then(|k| tasks.get(&k).cloned()),
                    _ => None,
                };
                if let Some(spec) = spec {
                    // The TaskRun it will get: the pipeline task's params,
                    // with the run's values in where they are known now.
                    let mut tr = TaskRun::default();
                    for p in &pt.params {
                        let value = vars
                            .param_value(&p.value, "params")
                            .unwrap_or_else(|_| p.value.clone());
                        tr.spec.params.push(Param {
                            name: p.name.clone(),
                            value,
                        });
                    }
                    self.step_actions(&format!("{here} (its Task's spec)"), &spec, &tr, actions)?;
                }
            }
        }
        Ok(())
    }
}

/// The key of a Task ref once its params are substituted (a named ref's
/// key is its name).
fn substitute_key(k: &str, r: &tektite_api::v1::TaskRef, vars: &Vars) -> String {
    match &r.resolver {
        Some(res) => substitute("", &r.params, vars)
            .map(|p| remote::key(res, &p))
            .unwrap_or_else(|_| k.to_string()),
        None => k.to_string(),
    }
}

/// Refuses params that still hold a reference.
fn known_before_start(at: &str, params: &[Param]) -> Result<(), String> {
    for p in params {
        let text = remote::value_text(&p.value);
        if text.contains("$(") {
            return Err(format!(
                "{at}.params: {:?} is {text:?}: a resolver's params may use the run's params only, which are known before the run starts",
                p.name
            ));
        }
    }
    Ok(())
}

/// The ref's params with the run's values in; a reference left over cannot
/// be known before the run starts.
pub fn substitute(at: &str, params: &[Param], vars: &Vars) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    for p in params {
        let v = vars
            .param_value(&p.value, &format!("{at}.params"))
            .map_err(|e| format!("{at}: {e}"))?;
        out.push(Param {
            name: p.name.clone(),
            value: v,
        });
    }
    known_before_start(at, &out)?;
    Ok(out)
}

/// Whether running `spec` needs a resolver: a pipeline task's `taskRef`
/// or a step `ref` (of an embedded or named Task) with `resolver:`.
pub fn pipeline_needs(spec: &PipelineSpec, tasks: &BTreeMap<String, TaskSpec>) -> bool {
    let steps_need = |t: &TaskSpec| {
        t.steps
            .iter()
            .any(|s| s.step_ref.as_ref().is_some_and(|r| r.resolver.is_some()))
    };
    spec.tasks.iter().chain(&spec.finally).any(|pt| {
        pt.task_ref.as_ref().is_some_and(|r| r.resolver.is_some())
            || pt.task_spec.as_ref().is_some_and(|e| steps_need(&e.task))
            || pt
                .task_ref
                .as_ref()
                .and_then(|r| r.name.as_ref())
                .and_then(|n| tasks.get(n))
                .is_some_and(steps_need)
    })
}

/// The variables a resolver's params may use: `values` as params.
pub fn param_vars(values: &BTreeMap<String, ParamValue>) -> Vars {
    let mut vars = Vars::new(&[]);
    tektite_engine::params::add_to(&mut vars, values);
    vars
}

/// Params as values, over `defaults` (a spec's declared defaults).
pub fn values(
    given: &[Param],
    defaults: &[tektite_api::v1::ParamSpec],
) -> BTreeMap<String, ParamValue> {
    let mut out: BTreeMap<String, ParamValue> = defaults
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.default.clone()?)))
        .collect();
    for p in given {
        out.insert(p.name.clone(), p.value.clone());
    }
    out
}
