//! `tkt run --cluster -f FILE…`: the files' Tasks, Pipelines, StepActions,
//! ConfigMaps and Secrets applied (server-side apply, field manager `tkt`),
//! their TaskRuns and PipelineRuns created (or, for a lone Task or
//! Pipeline, a run of it with `-p`/`-w`), and each run followed to its end
//! as `tkt pr|tr logs -f` does; the exit code is the runs' outcome.
//!
//! Ctrl-C on a terminal asks whether to cancel the run on the cluster (then
//! it is followed until it has stopped) or to leave it running; without a
//! terminal `tkt` leaves it running, and says so. Either way it exits 130.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tektite_api::diag::{Diagnostic, Severity};
use tektite_api::load::{Loaded, Object, load_str};
use tektite_api::v1::ParamSpec;

use crate::cluster::{Cluster, MANAGER};
use crate::inspect::Kind;
use crate::run::{Args, Format, param_value};
use crate::{EXIT_INVALID, note};

/// Exit code of a follow cut by Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;

/// The files' names and text, `-` being standard input.
fn read_files(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in crate::files::expand(&args.files)? {
        out.push(crate::files::read(&p)?);
    }
    Ok(out)
}

/// The API resource of an object's `apiVersion` and `kind`.
fn resource_of(v: &Value) -> Option<ApiResource> {
    let api_version = v["apiVersion"].as_str()?;
    let kind = v["kind"].as_str()?;
    let plural = match kind {
        "Task" => "tasks",
        "Pipeline" => "pipelines",
        "StepAction" => "stepactions",
        "TaskRun" => "taskruns",
        "PipelineRun" => "pipelineruns",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        _ => return None,
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some(ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// What the files hold for the cluster.
#[derive(Debug, Default)]
struct Given {
    /// Tasks, Pipelines, StepActions, ConfigMaps and Secrets, to apply,
    /// each with its file.
    definitions: Vec<(String, Value)>,
    /// TaskRuns and PipelineRuns, to create, each with its file.
    runs: Vec<(String, Value)>,
    /// The Tekton objects as loaded (for a lone Task or Pipeline).
    loaded: Vec<Loaded>,
}

/// Reads and validates the files; `Err(code)` when they are not valid (the
/// problems are printed, naming file and field).
fn load(args: &Args) -> anyhow::Result<Result<Given, u8>> {
    let mut given = Given::default();
    let mut diags: Vec<Diagnostic> = Vec::new();
    for (file, text) in read_files(args)? {
        let o = load_str(&file, &text);
        diags.extend(o.diagnostics);
        given.loaded.extend(o.objects);
        // ConfigMaps and Secrets go as written (they were checked above).
        if !o.data.is_empty() {
            let docs = tektite_api::yaml::parse_values(&text).unwrap_or_default();
            let data = docs.into_iter().filter(|d| {
                d["apiVersion"] == "v1"
                    && matches!(d["kind"].as_str(), Some("ConfigMap" | "Secret"))
            });
            given.definitions.extend(data.map(|d| (file.clone(), d)));
        }
    }
    // A param a run lacks is fine when -p gives it (it is added below).
    let flags = crate::run::flag_names(&args.params);
    diags.extend(tektite_api::validate::validate_all_given(
        &given.loaded,
        &flags,
    ));
    for d in &diags {
        note(&d.to_string());
    }
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Ok(Err(EXIT_INVALID));
    }
    for l in &given.loaded {
        let v = (l.file.clone(), l.object.to_json());
        match &l.object {
            Object::TaskRun(_) | Object::PipelineRun(_) => given.runs.push(v),
            _ => given.definitions.push(v),
        }
    }
    Ok(Ok(given))
}

/// A workspace binding from tkn's `-w` forms: `name=ws,emptyDir=`,
/// `name=ws,claimName=C`, `name=ws,config=CM`, `name=ws,secret=S`,
/// `name=ws,volumeClaimTemplateFile=…` aside; and tkt's `ws=emptyDir` and
/// `ws=volumeClaimTemplate`. A host path cannot be given to a cluster.
pub(crate) fn cluster_workspace(raw: &str) -> anyhow::Result<Value> {
    let fields: BTreeMap<&str, &str> = raw.split(',').filter_map(|kv| kv.split_once('=')).collect();
    if let Some(name) = fields.get("name") {
        let b = if fields.contains_key("emptyDir") {
            json!({"name": name, "emptyDir": {}})
        } else if let Some(c) = fields.get("claimName") {
            json!({"name": name, "persistentVolumeClaim": {"claimName": c}})
        } else if let Some(c) = fields.get("config") {
            json!({"name": name, "configMap": {"name": c}})
        } else if let Some(s) = fields.get("secret") {
            json!({"name": name, "secret": {"secretName": s}})
        } else {
            anyhow::bail!(
                "-w {raw:?}: expected name=WS,emptyDir= or name=WS,claimName=C (also config=, secret=)"
            );
        };
        return Ok(b);
    }
    match raw.split_once('=') {
        Some((name, "emptyDir")) if !name.is_empty() => Ok(json!({"name": name, "emptyDir": {}})),
        Some((name, "volumeClaimTemplate")) if !name.is_empty() => Ok(json!({
            "name": name,
            "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"],
                                             "resources": {"requests": {"storage": "1Gi"}}}}
        })),
        _ => anyhow::bail!(
            "-w {raw:?}: on a cluster a workspace is name=WS,emptyDir=, name=WS,claimName=C, \
             WS=emptyDir or WS=volumeClaimTemplate (a host directory cannot be mounted there)"
        ),
    }
}

/// `-p` values typed as `decls` declare them (strings when undeclared).
fn params_json(flags: &[String], decls: &[ParamSpec]) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for raw in flags {
        let (name, value) = raw
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .with_context(|| format!("-p {raw:?}: expected NAME=VALUE"))?;
        let kind = decls
            .iter()
            .find(|d| d.name == name)
            .and_then(|d| d.type_.clone())
            .unwrap_or_else(|| "string".into());
        out.push(json!({"name": name, "value": param_value(value, &kind)?}));
    }
    Ok(out)
}

/// `-p` over a run's own params, by name.
fn merge_params(run: &mut Value, params: Vec<Value>) {
    let list = run["spec"]["params"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut merged: Vec<Value> = list
        .into_iter()
        .filter(|p| !params.iter().any(|q| q["name"] == p["name"]))
        .collect();
    merged.extend(params);
    if !merged.is_empty() {
        run["spec"]["params"] = Value::Array(merged);
    }
}

/// The Pipeline to run when the files hold no run: the only Pipeline
/// (its Tasks may be beside it), else the only Task. Its kind, name,
/// params and required workspaces.
fn lone(loaded: &[Loaded]) -> anyhow::Result<(&'static str, String, &[ParamSpec], Vec<String>)> {
    let pipelines: Vec<_> = loaded
        .iter()
        .filter_map(|l| match &l.object {
            Object::Pipeline(p) => Some(p),
            _ => None,
        })
        .collect();
    let tasks: Vec<_> = loaded
        .iter()
        .filter_map(|l| match &l.object {
            Object::Task(t) => Some(t),
            _ => None,
        })
        .collect();
    let required = |ws: Vec<(&String, bool)>| -> Vec<String> {
        ws.into_iter()
            .filter(|(_, o)| !o)
            .map(|(n, _)| n.clone())
            .collect()
    };
    match (pipelines.as_slice(), tasks.as_slice()) {
        ([p], _) => Ok((
            "PipelineRun",
            p.metadata.name.clone().unwrap_or_default(),
            &p.spec.params,
            required(
                p.spec
                    .workspaces
                    .iter()
                    .map(|w| (&w.name, w.optional))
                    .collect(),
            ),
        )),
        ([], [t]) => Ok((
            "TaskRun",
            t.metadata.name.clone().unwrap_or_default(),
            &t.spec.params,
            required(
                t.spec
                    .workspaces
                    .iter()
                    .map(|w| (&w.name, w.optional))
                    .collect(),
            ),
        )),
        _ => anyhow::bail!(
            "no TaskRun or PipelineRun in the files: give one, or one Pipeline (or one Task) to run with -p/-w"
        ),
    }
}

/// A run of the definition `name` (`generateName: NAME-run-`), by
/// reference, with `params` and the workspace bindings `workspaces`.
pub(crate) fn run_of_definition(
    kind: Kind,
    name: &str,
    params: &[tektite_api::v1::Param],
    workspaces: &[Value],
) -> Value {
    let (run_kind, reference) = match kind {
        Kind::PipelineRun => ("PipelineRun", "pipelineRef"),
        Kind::TaskRun => ("TaskRun", "taskRef"),
    };
    json!({
        "apiVersion": tektite_api::v1::API_VERSION,
        "kind": run_kind,
        "metadata": {"generateName": format!("{name}-run-")},
        "spec": {reference: {"name": name}, "params": params, "workspaces": workspaces},
    })
}

/// A run of a lone Pipeline or Task, with `-p` and `-w`.
fn run_of(loaded: &[Loaded], args: &Args) -> anyhow::Result<Value> {
    let (kind, name, decls, required) = lone(loaded)?;
    let what = format!(
        "{} {name}",
        if kind == "PipelineRun" {
            "pipeline"
        } else {
            "task"
        }
    );
    let params = crate::start::typed_params(&what, decls, Vec::new(), &args.params)?;
    let workspaces: Vec<Value> = args
        .workspaces
        .iter()
        .map(|w| cluster_workspace(w))
        .collect::<anyhow::Result<_>>()?;
    for w in &required {
        if !workspaces.iter().any(|b| b["name"] == w.as_str()) {
            anyhow::bail!(
                "{kind} of {name}: workspace {w:?} is not bound: give -w {w}=emptyDir (or another binding)"
            );
        }
    }
    let run_kind = if kind == "PipelineRun" {
        Kind::PipelineRun
    } else {
        Kind::TaskRun
    };
    Ok(run_of_definition(run_kind, &name, &params, &workspaces))
}

fn api_for(client: &Client, ns: &str, v: &Value) -> anyhow::Result<Api<DynamicObject>> {
    let ar = resource_of(v)
        .with_context(|| format!("cannot send {} {} to a cluster", v["apiVersion"], v["kind"]))?;
    Ok(Api::namespaced_with(client.clone(), ns, &ar))
}

/// Applies the definitions and creates the runs; the runs' kinds and names.
/// Refuses an object that names a namespace other than the target's (as
/// `kubectl` does): everything goes to, and is followed in, one namespace.
fn check_namespace(c: &Cluster, file: &str, v: &Value) -> anyhow::Result<()> {
    match v["metadata"]["namespace"].as_str() {
        Some(ns) if ns != c.namespace => anyhow::bail!(
            "{file}: {} {}: metadata.namespace {ns:?} is not the target namespace ({:?}): use -n {ns}",
            v["kind"].as_str().unwrap_or(""),
            v["metadata"]["name"]
                .as_str()
                .or(v["metadata"]["generateName"].as_str())
                .unwrap_or(""),
            c.namespace
        ),
        _ => Ok(()),
    }
}

/// The runs made: kind and name, and each as the server returned it.
type Made = (Vec<(Kind, String)>, Vec<Value>);

fn submit(c: &Cluster, given: Given, args: &Args) -> anyhow::Result<Made> {
    for (file, v) in given.definitions.iter().chain(&given.runs) {
        check_namespace(c, file, v)?;
    }
    // What will be created is settled before anything is sent.
    let mut runs: Vec<Value> = given.runs.into_iter().map(|(_, v)| v).collect();
    if runs.is_empty() {
        runs.push(run_of(&given.loaded, args)?);
    } else {
        let params = params_json(&args.params, &[])?;
        for r in &mut runs {
            merge_params(r, params.clone());
        }
        if !args.workspaces.is_empty() {
            anyhow::bail!(
                "-w binds the workspaces of a lone Task or Pipeline; the runs given bind their own"
            );
        }
    }
    let pp = PatchParams::apply(MANAGER).force();
    for (_, d) in &given.definitions {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        let ns = &c.namespace;
        let api = api_for(&c.client, ns, d)?;
        c.block(api.patch(name, &pp, &Patch::Apply(d)))
            .with_context(|| format!("cannot apply {} {name}", d["kind"].as_str().unwrap_or("")))?;
        note(&format!(
            "{} {name} applied",
            d["kind"].as_str().unwrap_or("").to_lowercase()
        ));
    }
    let mut made = Vec::new();
    let mut objects = Vec::new();
    for r in runs {
        let ns = c.namespace.clone();
        let api = api_for(&c.client, &ns, &r)?;
        let obj: DynamicObject = serde_json::from_value(r.clone())?;
        let created = c
            .block(api.create(&PostParams::default(), &obj))
            .with_context(|| format!("cannot create {}", r["kind"].as_str().unwrap_or("run")))?;
        let name = created.metadata.name.clone().unwrap_or_default();
        objects.push(serde_json::to_value(&created)?);
        let kind = if r["kind"] == "PipelineRun" {
            Kind::PipelineRun
        } else {
            Kind::TaskRun
        };
        note(&format!(
            "{} {name} created in namespace {ns}",
            kind.lower()
        ));
        made.push((kind, name));
    }
    Ok((made, objects))
}

/// Runs `tkt run` on the cluster the flags name.
///
/// # Errors
/// The cluster cannot be reached or refuses an object; a follow fails.
pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    let given = match load(args)? {
        Ok(g) => g,
        Err(code) => return Ok(code),
    };
    let c = Cluster::connect(&args.target)?;
    let (made, objects) = match submit(&c, given, args) {
        Ok(m) => m,
        Err(e) => {
            note(&format!("tkt: {:#}", c.explain(e)));
            return Ok(EXIT_INVALID);
        }
    };
    if args.detach {
        // The names, or with -o json|yaml the runs as created.
        if args.output == Format::Text {
            for (_, name) in &made {
                writeln!(out, "{name}")?;
            }
        }
        print_finals(args.output, &objects, out)?;
        return Ok(0);
    }
    follow_runs(&c, &made, args.output, out).map_err(|e| c.explain(e))
}

/// Follows the runs made, one after the other, to their ends; prints each
/// one's outcome (and with `-o json|yaml` the final objects, logs then
/// going to standard error). The exit code: 0 all succeeded, 1 one did
/// not, 130 interrupted.
///
/// # Errors
/// A run cannot be followed or read.
pub(crate) fn follow_runs(
    c: &Cluster,
    made: &[(Kind, String)],
    output: Format,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let current = Arc::new(Mutex::new(None::<(Kind, String)>));
    let interrupted = on_interrupt(c, current.clone())?;
    let mut code = 0u8;
    let mut finals = Vec::new();
    for (kind, name) in made {
        *current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((*kind, name.clone()));
        let outcome = follow_shown(c, *kind, name, output)?;
        code = code.max(outcome);
        let object = match kind {
            Kind::PipelineRun => serde_json::to_value(c.block(c.prs().get(name))?)?,
            Kind::TaskRun => serde_json::to_value(c.block(c.trs().get(name))?)?,
        };
        note(&format!("{} {name} {}", kind.lower(), reason_of(&object)));
        finals.push(object);
    }
    print_finals(output, &finals, out)?;
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(code)
}

/// Follows one run, shown as `tkt run` shows a local one: its lines with
/// their `[task : step]` prefixes, each task's start, end and skip, and on
/// a terminal the live table of tasks (logs on standard output; standard
/// error with `-o json|yaml`).
fn follow_shown(c: &Cluster, kind: Kind, name: &str, output: Format) -> anyhow::Result<u8> {
    use tektite_local::runner::Progress;
    let pipeline = kind == Kind::PipelineRun;
    let text = output == Format::Text;
    let color = std::env::var_os("NO_COLOR").is_none()
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Progress>(256);
    let printer = std::thread::spawn(move || crate::run::print_progress(rx, pipeline, text, color));
    let filter = crate::follow::Filter::all();
    let outcome = crate::follow::follow_events(c, kind, name, &filter, |e| {
        let p = match e {
            crate::follow::Event::Lines { task, step, bytes } => Progress::Lines {
                task: task.unwrap_or_else(|| name.to_string()),
                step,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            },
            crate::follow::Event::Task(p) => p,
        };
        // The printer ends only when this sender goes.
        let _ = tx.send(p);
        Ok(())
    });
    drop(tx);
    let _ = printer.join();
    outcome
}

/// `Reason: message` of a run's Succeeded condition.
fn reason_of(run: &Value) -> String {
    let conds = run["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let c = conds.iter().find(|c| c["type"] == "Succeeded");
    c.map(|c| {
        format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        )
    })
    .unwrap_or_default()
}

/// `-o json`: one run as itself, several as a JSON array; `-o yaml`: YAML
/// documents separated by `---`.
pub(crate) fn print_finals(
    format: Format,
    finals: &[Value],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match (format, finals) {
        (Format::Text, _) => {}
        (Format::Json, [one]) => writeln!(out, "{}", serde_json::to_string_pretty(one)?)?,
        (Format::Json, all) => writeln!(out, "{}", serde_json::to_string_pretty(all)?)?,
        (Format::Yaml, all) => {
            for (i, v) in all.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                write!(out, "{}", tektite_api::yaml::to_yaml(v))?;
            }
        }
    }
    Ok(())
}

/// Ctrl-C while following: on a terminal, asks whether to cancel the run
/// on the cluster (then following goes on until it has stopped) or leave
/// it (exit now); without one, leaves it and says so. A second Ctrl-C
/// exits at once. The flag says whether it happened.
fn on_interrupt(
    c: &Cluster,
    current: Arc<Mutex<Option<(Kind, String)>>>,
) -> anyhow::Result<Arc<std::sync::atomic::AtomicBool>> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = flag.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])?;
    let client = c.client.clone();
    let handle = c.rt.handle().clone();
    let ns = c.namespace.clone();
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if seen.swap(true, std::sync::atomic::Ordering::Relaxed) {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            let Some((kind, name)) = current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
            else {
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            };
            let short = if kind == Kind::PipelineRun {
                "pr"
            } else {
                "tr"
            };
            let follow_again = format!("tkt {short} logs -f {name} -n {ns}");
            if !std::io::stdin().is_terminal() {
                note(&format!(
                    "tkt: interrupted: {} {name} goes on running on the cluster (not on a terminal: not cancelled); follow it with `{follow_again}`",
                    kind.lower()
                ));
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            // On a line of its own, under the live table's status line.
            eprint!(
                "\ntkt: cancel {} {name} on the cluster? [y/N] ",
                kind.lower()
            );
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            if !answer.trim().eq_ignore_ascii_case("y") {
                note(&format!(
                    "tkt: left {} {name} running; follow it with `{follow_again}`",
                    kind.lower()
                ));
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            let status = if kind == Kind::PipelineRun {
                "Cancelled"
            } else {
                "TaskRunCancelled"
            };
            let patch = Patch::Merge(json!({"spec": {"status": status}}));
            let r = handle.block_on(async {
                match kind {
                    Kind::PipelineRun => {
                        Api::<tektite_api::v1::PipelineRun>::namespaced(client.clone(), &ns)
                            .patch(&name, &PatchParams::default(), &patch)
                            .await
                            .map(|_| ())
                    }
                    Kind::TaskRun => {
                        Api::<tektite_api::v1::TaskRun>::namespaced(client.clone(), &ns)
                            .patch(&name, &PatchParams::default(), &patch)
                            .await
                            .map(|_| ())
                    }
                }
            });
            match r {
                Ok(()) => note(&format!(
                    "tkt: cancelling {} {name}; following it until it stops",
                    kind.lower()
                )),
                Err(e) => {
                    note(&format!("tkt: cannot cancel {} {name}: {e}", kind.lower()));
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
            }
        }
    });
    Ok(flag)
}
