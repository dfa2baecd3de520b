//! `tkt run`: runs TaskRuns and PipelineRuns on this machine.
//!
//! Input: TaskRun/PipelineRun documents, or one Task/Pipeline plus `-p` and
//! `-w` (defaults used, like `tkn … start --use-param-defaults`). References
//! by name resolve against the given files, `--task-dir` folders and the
//! shipped `tasks/` catalog. Exit codes: 0 Succeeded, 1 Failed, 2 invalid
//! input, 130 interrupted.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource};
use tektite_api::load::{Loaded, Object, display_name};
use tektite_api::param::ParamValue;
use tektite_api::v1::{
    Condition, Param, ParamSpec, PipelineRef, PipelineRun, PipelineRunSpec, PipelineSpec, TaskRef,
    TaskRun, TaskRunSpec, TaskSpec, TimeoutFields, WorkspaceBinding,
};
use tektite_api::{Diagnostic, Severity, validate};
use tektite_engine::params::{Failure, declared_kind};
use tektite_engine::pod::Config;
use tektite_local::runner::{Msg, Options, Progress, Runner, RuntimeKind, TaskSource};
use tektite_local::runtime;
use tektite_local::store::Store;

use crate::EXIT_INVALID;

/// Exit code of an interrupted run.
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// podman when it works, else host processes
    Auto,
    /// containers through `podman kube play`
    Podman,
    /// steps as host processes
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// `tkt run` arguments.
#[derive(Debug, Parser)]
pub struct Args {
    /// Files or directories with TaskRun/PipelineRun documents, or a Task/Pipeline
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// A param: name=value; arrays as a,b,c; objects as k1:v1,k2:v2
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A workspace: name=PATH (a host directory) or name=emptyDir
    #[arg(short = 'w', long = "workspace", value_name = "NAME=PATH|emptyDir")]
    workspaces: Vec<String>,
    /// More folders of Tasks and Pipelines that references resolve against
    #[arg(long = "task-dir", value_name = "DIR")]
    task_dirs: Vec<PathBuf>,
    /// Where steps run
    #[arg(long, value_enum, default_value = "auto")]
    runtime: RuntimeArg,
    /// TaskRuns of a PipelineRun running at once (default: number of cores)
    #[arg(long)]
    parallel: Option<usize>,
    /// Overrides timeouts.pipeline (PipelineRun) or timeout (TaskRun), e.g. 10m
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// The run store (default $XDG_STATE_HOME/tektite)
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print the final run object (status included) on stdout; logs go to stderr
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Format,
    /// Keep pods and run directories after the run
    #[arg(long)]
    keep: bool,
    /// No colours (also NO_COLOR)
    #[arg(long = "no-color")]
    no_color: bool,
}

/// The shipped catalog: `TEKTITE_CATALOG`, else `tasks/` of this source tree.
fn catalog_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TEKTITE_CATALOG") {
        return Some(PathBuf::from(d));
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks");
    d.is_dir().then_some(d)
}

/// Every `*.yaml|*.yml|*.json` file of `path` (a file is itself).
fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("{}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// Parses `-p name=value` for a param declared as `kind` (tkn's forms).
fn param_value(raw: &str, kind: &str) -> anyhow::Result<ParamValue> {
    Ok(match kind {
        "array" => ParamValue::Array(if raw.is_empty() {
            Vec::new()
        } else {
            raw.split(',').map(str::to_string).collect()
        }),
        "object" => {
            let mut m = BTreeMap::new();
            for kv in raw.split(',').filter(|s| !s.is_empty()) {
                let Some((k, v)) = kv.split_once(':') else {
                    bail!("object value {raw:?}: expected key:value pairs separated by commas");
                };
                m.insert(k.to_string(), v.to_string());
            }
            ParamValue::Object(m)
        }
        _ => ParamValue::String(raw.to_string()),
    })
}

fn split_flag<'a>(flag: &str, raw: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    raw.split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .with_context(|| format!("{flag} {raw:?}: expected NAME=VALUE"))
}

/// A random suffix like Kubernetes' `generateName`.
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    (0..5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn name_of(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    if meta.name.as_deref().is_none_or(str::is_empty) {
        let base = meta.generate_name.clone().unwrap_or_else(|| "run-".into());
        meta.name = Some(format!("{base}{}", suffix()));
    }
    if meta.namespace.is_none() {
        meta.namespace = Some("default".into());
    }
    if meta.uid.is_none() {
        meta.uid = Some(format!("local-{}-{}", std::process::id(), suffix()));
    }
}

/// A run to carry out, resolved.
enum Job {
    Task(Box<TaskRun>, TaskSource),
    Pipeline(
        Box<PipelineRun>,
        Result<(PipelineSpec, Option<String>), Failure>,
    ),
}

/// Runs `tkt run`.
///
/// # Errors
/// Failures to write output or to open the store.
pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    // Load and check every input.
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut given_paths = Vec::new();
    for f in &args.files {
        for p in files_of(f)? {
            given_paths.push(p.clone());
            let o = tektite_api::load_file(&p);
            diags.extend(o.diagnostics);
            loaded.extend(o.objects);
        }
    }
    let n_given = loaded.len();
    let mut lib_dirs: Vec<PathBuf> = args.task_dirs.clone();
    lib_dirs.extend(catalog_dir());
    for d in &lib_dirs {
        for p in files_of(d)? {
            // A task's own test runs (`<task>/tests/run.yaml`) are not library.
            let inside = p.strip_prefix(d).unwrap_or(&p);
            if given_paths.contains(&p) || inside.components().any(|c| c.as_os_str() == "tests") {
                continue;
            }
            let o = tektite_api::load_file(&p);
            diags.extend(
                o.diagnostics
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error),
            );
            loaded.extend(o.objects);
        }
    }
    diags.extend(validate::validate_all(&loaded[..n_given]));
    if diags.iter().any(|d| d.severity == Severity::Error) {
        print_diagnostics(&diags);
        eprintln!("tkt: invalid input: nothing was run");
        return Ok(EXIT_INVALID);
    }

    let mut tasks: BTreeMap<String, TaskSpec> = BTreeMap::new();
    let mut pipelines: BTreeMap<String, PipelineSpec> = BTreeMap::new();
    // Given files win over task dirs and the catalog.
    for l in loaded.iter().rev() {
        match &l.object {
            Object::Task(t) => {
                tasks.insert(t.metadata.name.clone().unwrap_or_default(), t.spec.clone());
            }
            Object::Pipeline(p) => {
                pipelines.insert(p.metadata.name.clone().unwrap_or_default(), p.spec.clone());
            }
            _ => {}
        }
    }

    // The runs: given, or made from the one Task/Pipeline given.
    // Each with the file it comes from, for messages.
    let mut runs: Vec<(Object, String)> = loaded[..n_given]
        .iter()
        .filter(|l| matches!(l.object, Object::TaskRun(_) | Object::PipelineRun(_)))
        .map(|l| (l.object.clone(), l.file.clone()))
        .collect();
    if runs.is_empty() {
        let defs: Vec<&Loaded> = loaded[..n_given]
            .iter()
            .filter(|l| matches!(l.object, Object::Task(_) | Object::Pipeline(_)))
            .collect();
        let file = defs.first().map(|l| l.file.clone()).unwrap_or_default();
        match defs
            .iter()
            .map(|l| &l.object)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [Object::Pipeline(p)] => {
                let name = p.metadata.name.clone().unwrap_or_default();
                let mut pr = PipelineRun::new(
                    "",
                    PipelineRunSpec {
                        pipeline_ref: Some(PipelineRef {
                            name: Some(name.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                );
                pr.metadata.name = None;
                pr.metadata.generate_name = Some(format!("{name}-run-"));
                runs.push((Object::PipelineRun(Box::new(pr)), file));
            }
            [Object::Task(t)] => {
                let name = t.metadata.name.clone().unwrap_or_default();
                let mut tr = TaskRun::new(
                    "",
                    TaskRunSpec {
                        task_ref: Some(TaskRef {
                            name: Some(name.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                );
                tr.metadata.name = None;
                tr.metadata.generate_name = Some(format!("{name}-run-"));
                runs.push((Object::TaskRun(Box::new(tr)), file));
            }
            [] => {
                let files: Vec<String> = given_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                eprintln!(
                    "tkt: {}: no TaskRun, PipelineRun, Task or Pipeline: nothing to run",
                    files.join(", ")
                );
                return Ok(EXIT_INVALID);
            }
            _ => {
                let found: Vec<String> = defs
                    .iter()
                    .map(|l| {
                        format!(
                            "{}/{} ({})",
                            l.object.kind(),
                            l.object.display_name(),
                            l.file
                        )
                    })
                    .collect();
                eprintln!(
                    "tkt: no TaskRun or PipelineRun, and several Tasks/Pipelines ({}): give a run, or one Task or Pipeline",
                    found.join(", ")
                );
                return Ok(EXIT_INVALID);
            }
        }
    }

    // -p and -w, checked against declarations; then what is still missing.
    let mut claims: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut jobs = Vec::new();
    for (run, file) in runs {
        match run {
            Object::TaskRun(mut tr) => {
                let source = match (&tr.spec.task_spec, &tr.spec.task_ref) {
                    (Some(s), _) => TaskSource::Spec(s.clone(), None),
                    (None, Some(r)) => {
                        let n = r.name.clone().unwrap_or_default();
                        match tasks.get(&n) {
                            Some(s) => TaskSource::Spec(Box::new(s.clone()), Some(n)),
                            None => {
                                eprintln!(
                                    "{file}: TaskRun {}: spec.taskRef.name: no Task {n:?} in the given files, --task-dir folders or the catalog",
                                    display_name(&tr.metadata)
                                );
                                return Ok(EXIT_INVALID);
                            }
                        }
                    }
                    _ => unreachable!("validated"),
                };
                let TaskSource::Spec(spec, _) = &source else {
                    unreachable!()
                };
                apply_flags(
                    args,
                    &spec.params,
                    &mut tr.spec.params,
                    &mut tr.spec.workspaces,
                    &mut claims,
                )?;
                let missing = missing(
                    &spec.params,
                    &tr.spec.params,
                    spec.workspaces
                        .iter()
                        .filter(|w| !w.optional)
                        .map(|w| w.name.as_str()),
                    &tr.spec.workspaces,
                );
                if let Some(m) = missing {
                    eprintln!("{file}: TaskRun {}: {m}", display_name(&tr.metadata));
                    return Ok(EXIT_INVALID);
                }
                if let Some(t) = &args.timeout {
                    tr.spec.timeout = Some(t.clone());
                }
                name_of(&mut tr.metadata);
                jobs.push(Job::Task(tr, source));
            }
            Object::PipelineRun(mut pr) => {
                let resolved = match (&pr.spec.pipeline_spec, &pr.spec.pipeline_ref) {
                    (Some(s), _) => Ok(((**s).clone(), None)),
                    (None, Some(r)) => {
                        let n = r.name.clone().unwrap_or_default();
                        match pipelines.get(&n) {
                            Some(s) => Ok((s.clone(), Some(n))),
                            None => {
                                eprintln!(
                                    "{file}: PipelineRun {}: spec.pipelineRef.name: no Pipeline {n:?} in the given files, --task-dir folders or the catalog",
                                    display_name(&pr.metadata)
                                );
                                return Ok(EXIT_INVALID);
                            }
                        }
                    }
                    _ => unreachable!("validated"),
                };
                let Ok((spec, _)) = &resolved else {
                    unreachable!()
                };
                apply_flags(
                    args,
                    &spec.params,
                    &mut pr.spec.params,
                    &mut pr.spec.workspaces,
                    &mut claims,
                )?;
                let missing = missing(
                    &spec.params,
                    &pr.spec.params,
                    spec.workspaces
                        .iter()
                        .filter(|w| !w.optional)
                        .map(|w| w.name.as_str()),
                    &pr.spec.workspaces,
                );
                if let Some(m) = missing {
                    eprintln!("{file}: PipelineRun {}: {m}", display_name(&pr.metadata));
                    return Ok(EXIT_INVALID);
                }
                // Tasks the pipeline refers to must exist.
                let absent: Vec<String> = [("tasks", &spec.tasks), ("finally", &spec.finally)]
                    .into_iter()
                    .flat_map(|(list, ts)| ts.iter().enumerate().map(move |(i, t)| (list, i, t)))
                    .filter_map(|(list, i, t)| {
                        let n = t.task_ref.as_ref()?.name.clone()?;
                        (!tasks.contains_key(&n)).then(|| format!("{list}[{i}].taskRef.name {n:?}"))
                    })
                    .collect();
                if !absent.is_empty() {
                    let at = if pr.spec.pipeline_spec.is_some() {
                        "spec.pipelineSpec"
                    } else {
                        "the Pipeline's spec"
                    };
                    eprintln!(
                        "{file}: PipelineRun {}: {at}: no such Task in the given files, --task-dir folders or the catalog: {}",
                        display_name(&pr.metadata),
                        absent.join(", ")
                    );
                    return Ok(EXIT_INVALID);
                }
                if let Some(t) = &args.timeout {
                    pr.spec
                        .timeouts
                        .get_or_insert_with(TimeoutFields::default)
                        .pipeline = Some(t.clone());
                }
                name_of(&mut pr.metadata);
                jobs.push(Job::Pipeline(pr, resolved));
            }
            _ => {}
        }
    }

    // The runtime.
    let machine = |text: bool, line: &str| {
        if text {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    let text = args.output == Format::Text;
    let process = || -> Result<RuntimeKind, String> {
        tektite_local::process::available()?;
        Ok(RuntimeKind::Process(
            tektite_local::process::entrypoint_binary()?,
        ))
    };
    const PROCESS_BANNER: &str =
        "host processes (the steps' images are not used: commands run with this machine's tools)";
    let config = Config::default();
    let kind = match args.runtime {
        RuntimeArg::Podman => match runtime::podman_available() {
            Ok(what) => {
                machine(
                    text,
                    &format!("runtime: {what}, because of --runtime podman"),
                );
                RuntimeKind::Podman
            }
            Err(why) => {
                eprintln!("tkt: --runtime podman: {why}");
                return Ok(EXIT_INVALID);
            }
        },
        RuntimeArg::Process => match process() {
            Ok(k) => {
                machine(
                    text,
                    &format!("runtime: {PROCESS_BANNER}, because of --runtime process"),
                );
                k
            }
            Err(why) => {
                eprintln!("tkt: --runtime process: {why}");
                return Ok(EXIT_INVALID);
            }
        },
        RuntimeArg::Auto => match runtime::podman_available() {
            Ok(what) => {
                machine(
                    text,
                    &format!("runtime: {what}, because it works on this machine"),
                );
                RuntimeKind::Podman
            }
            Err(podman_why) => match process() {
                Ok(k) => {
                    machine(
                        text,
                        &format!("runtime: {PROCESS_BANNER}, because {podman_why}"),
                    );
                    k
                }
                Err(why) => {
                    eprintln!("tkt: cannot run here: {podman_why}; and {why}");
                    return Ok(EXIT_INVALID);
                }
            },
        },
    };
    if matches!(kind, RuntimeKind::Process(_))
        && tektite_local::process::mode() == tektite_local::process::Mode::Rewrite
    {
        machine(
            text,
            &format!("runtime: {}", tektite_local::process::REWRITE_LIMITS),
        );
    }
    if matches!(kind, RuntimeKind::Podman) {
        for image in [&config.entrypoint_image, &config.shell_image] {
            if runtime::image_command(image).is_err() {
                eprintln!("tkt: image {image} is missing: build it with hack/images.sh");
                return Ok(EXIT_INVALID);
            }
        }
    }

    let store = Store::open(args.state_dir.as_deref())?;
    let parallel = args
        .parallel
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let color = !args.no_color
        && std::env::var_os("NO_COLOR").is_none()
        && std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal();
    // One signal thread for every job: it interrupts the job running now.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let interrupt: std::sync::Arc<std::sync::Mutex<Option<mpsc::Sender<Msg>>>> = Default::default();
    install_interrupt(interrupt.clone(), interrupted.clone());
    let mut worst = 0u8;
    for job in jobs {
        let (name, is_pipeline) = match &job {
            Job::Task(tr, _) => (tr.metadata.name.clone().unwrap_or_default(), false),
            Job::Pipeline(pr, _) => (pr.metadata.name.clone().unwrap_or_default(), true),
        };
        let taken = if is_pipeline {
            store.has_pipeline_run(&name)
        } else {
            store.has_task_run(&name)
        };
        if taken {
            eprintln!(
                "tkt: {} {name:?} already exists in the run store ({}): use metadata.generateName, or delete it first",
                if is_pipeline {
                    "pipelinerun"
                } else {
                    "taskrun"
                },
                store.root().display()
            );
            return Ok(EXIT_INVALID);
        }
        let work = store.root().join("work").join(&name);
        let opts = Options {
            runtime: kind.clone(),
            parallel,
            keep: args.keep,
            config: config.clone(),
            work: work.clone(),
            claims: claims.clone(),
        };
        let (ptx, prx) = mpsc::channel::<Progress>();
        let runner = Runner::new(opts, store.clone(), ptx);
        if let Ok(mut t) = interrupt.lock() {
            *t = Some(runner.interrupter());
        }
        let printer = {
            let logs_to_stdout = text;
            std::thread::spawn(move || print_progress(prx, is_pipeline, logs_to_stdout, color))
        };
        machine(
            text,
            &format!(
                "{} {name} started",
                if is_pipeline {
                    "pipelinerun"
                } else {
                    "taskrun"
                }
            ),
        );
        let (object, cond) = match job {
            Job::Task(tr, source) => {
                let tr = runner.run_task(*tr, source);
                let _ = store.save_task_run(&tr);
                let c = tr
                    .status
                    .as_ref()
                    .and_then(|s| Condition::succeeded(&s.conditions))
                    .cloned();
                (serde_json::to_value(&tr)?, c)
            }
            Job::Pipeline(pr, resolved) => {
                let pipeline = resolved.as_ref().map(|(s, n)| (s, n.as_deref()));
                let (pr, _children) = runner.run_pipeline(*pr, pipeline, &tasks);
                let _ = store.save_pipeline_run(&pr);
                let c = pr
                    .status
                    .as_ref()
                    .and_then(|s| Condition::succeeded(&s.conditions))
                    .cloned();
                (serde_json::to_value(&pr)?, c)
            }
        };
        drop(runner);
        let _ = printer.join();
        if !args.keep {
            let _ = std::fs::remove_dir_all(&work);
        }
        let c = cond.unwrap_or_default();
        machine(
            text,
            &format!(
                "{} {name} {}: {}",
                if is_pipeline {
                    "pipelinerun"
                } else {
                    "taskrun"
                },
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ),
        );
        match args.output {
            Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&object)?)?,
            Format::Yaml => write!(out, "{}", tektite_api::yaml::to_yaml(&object))?,
            Format::Text => {}
        }
        let code = if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            EXIT_INTERRUPTED
        } else if c.status == "True" {
            0
        } else {
            1
        };
        worst = worst.max(code);
        if code == EXIT_INTERRUPTED {
            break;
        }
    }
    Ok(worst)
}

/// Adds `-p` and `-w` to a run's params and workspaces.
fn apply_flags(
    args: &Args,
    declared: &[ParamSpec],
    params: &mut Vec<Param>,
    workspaces: &mut Vec<WorkspaceBinding>,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for raw in &args.params {
        let (name, value) = split_flag("-p", raw)?;
        let kind = declared
            .iter()
            .find(|p| p.name == name)
            .map_or("string", declared_kind);
        let value = param_value(value, kind).with_context(|| format!("-p {name}"))?;
        params.retain(|p| p.name != name);
        params.push(Param {
            name: name.to_string(),
            value,
        });
    }
    for raw in &args.workspaces {
        let (name, value) = split_flag("-w", raw)?;
        let mut b = WorkspaceBinding {
            name: name.to_string(),
            ..Default::default()
        };
        if value == "emptyDir" {
            b.empty_dir = Some(EmptyDirVolumeSource::default());
        } else {
            let path = std::fs::canonicalize(value)
                .with_context(|| format!("-w {name}={value}: no such directory"))?;
            if !path.is_dir() {
                bail!("-w {name}={value}: not a directory");
            }
            let claim = format!(
                "tkt-path-{}",
                tektite_engine::names::short_hash(&[&path.to_string_lossy()], 10)
            );
            claims.insert(claim.clone(), path);
            b.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            });
        }
        workspaces.retain(|w| w.name != name);
        workspaces.push(b);
    }
    Ok(())
}

/// What a run still lacks: params without value or default, unbound workspaces.
fn missing<'a>(
    declared: &[ParamSpec],
    given: &[Param],
    required_ws: impl Iterator<Item = &'a str>,
    bound: &[WorkspaceBinding],
) -> Option<String> {
    let params: Vec<&str> = declared
        .iter()
        .filter(|p| p.default.is_none() && !given.iter().any(|g| g.name == p.name))
        .map(|p| p.name.as_str())
        .collect();
    let ws: Vec<&str> = required_ws
        .filter(|w| !bound.iter().any(|b| b.name == *w))
        .collect();
    if params.is_empty() && ws.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !params.is_empty() {
        parts.push(format!(
            "spec.params: missing params: {} (give them with -p NAME=VALUE)",
            params.join(", ")
        ));
    }
    if !ws.is_empty() {
        parts.push(format!(
            "spec.workspaces: missing workspaces: {} (give them with -w NAME=PATH or -w NAME=emptyDir)",
            ws.join(", ")
        ));
    }
    Some(parts.join("; "))
}

/// SIGINT and SIGTERM cancel the run (once); a second one exits at once.
fn install_interrupt(
    tx: std::sync::Arc<std::sync::Mutex<Option<mpsc::Sender<Msg>>>>,
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        loop {
            if set.wait().is_err() {
                return;
            }
            if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
                eprintln!("tkt: interrupted again: exiting without waiting");
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            eprintln!("tkt: interrupted: cancelling the run (again to exit at once)");
            if let Some(tx) = tx.lock().ok().and_then(|t| t.clone()) {
                let _ = tx.send(Msg::Interrupt);
            }
        }
    });
}

const COLORS: &[&str] = &["36", "33", "35", "32", "34", "96", "93", "95"];

/// Where each task of the run stands, for the progress view.
#[derive(Default)]
struct Board {
    /// Task → (state, started, duration when ended), in first-seen order.
    tasks: Vec<(
        String,
        String,
        Option<std::time::Instant>,
        Option<std::time::Duration>,
    )>,
}

impl Board {
    fn set(&mut self, task: &str, state: &str) {
        let now = std::time::Instant::now();
        match self.tasks.iter_mut().find(|t| t.0 == task) {
            Some(t) => {
                t.1 = state.to_string();
                if state != "running" {
                    t.3 = t.2.map(|s| now - s);
                }
            }
            None => self.tasks.push((
                task.to_string(),
                state.to_string(),
                (state == "running").then_some(now),
                None,
            )),
        }
    }

    fn count(&self, state: &str) -> usize {
        self.tasks.iter().filter(|t| t.1 == state).count()
    }

    /// One line: what runs, and how many ended which way.
    fn line(&self) -> String {
        let running: Vec<&str> = self
            .tasks
            .iter()
            .filter(|t| t.1 == "running")
            .map(|t| t.0.as_str())
            .collect();
        format!(
            "running: {} | succeeded: {} | failed: {} | skipped: {}",
            if running.is_empty() {
                "-".to_string()
            } else {
                running.join(", ")
            },
            self.count("succeeded"),
            self.count("failed"),
            self.count("skipped")
        )
    }

    /// The final table: every task, its outcome and duration.
    fn table(&self) -> String {
        let w = self
            .tasks
            .iter()
            .map(|t| t.0.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!("{:<w$}   {:<9}   DURATION\n", "TASK", "STATUS");
        for (name, state, _, d) in &self.tasks {
            let d = d.map_or("---".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
            s.push_str(&format!("{name:<w$}   {state:<9}   {d}\n"));
        }
        s
    }
}

fn print_progress(rx: mpsc::Receiver<Progress>, pipeline: bool, to_stdout: bool, color: bool) {
    let mut palette: BTreeMap<String, &str> = BTreeMap::new();
    // On a terminal, a status line of the tasks stays at the bottom, redrawn
    // under each new line; elsewhere, plain lines.
    let live = color && pipeline;
    let mut board = Board::default();
    let emit = |s: &str, board: &Board| {
        let text = if live {
            format!("\r\x1b[K{s}\n\x1b[2m{}\x1b[0m", board.line())
        } else {
            format!("{s}\n")
        };
        if to_stdout {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        } else {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(text.as_bytes());
        }
    };
    for p in rx {
        match p {
            Progress::Line { task, step, line } => {
                let prefix = if pipeline {
                    format!("[{task} : {step}]")
                } else {
                    format!("[{step}]")
                };
                if color {
                    let n = palette.len();
                    let c = palette
                        .entry(format!("{task}/{step}"))
                        .or_insert(COLORS[n % COLORS.len()]);
                    emit(&format!("\x1b[{c}m{prefix}\x1b[0m {line}"), &board);
                } else {
                    emit(&format!("{prefix} {line}"), &board);
                }
            }
            Progress::Started { task, task_run } if pipeline => {
                board.set(&task, "running");
                emit(&format!("task {task} started (taskrun {task_run})"), &board);
            }
            Progress::Finished {
                task,
                status,
                reason,
                message,
                ..
            } if pipeline => {
                board.set(
                    &task,
                    if status == "True" {
                        "succeeded"
                    } else {
                        "failed"
                    },
                );
                emit(&format!("task {task} {reason}: {message}"), &board);
            }
            Progress::Skipped { task, reason } => {
                board.set(&task, "skipped");
                emit(&format!("task {task} skipped: {reason}"), &board);
            }
            _ => {}
        }
    }
    if live {
        let text = format!("\r\x1b[K{}", board.table());
        if to_stdout {
            let _ = std::io::stdout().write_all(text.as_bytes());
        } else {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}
