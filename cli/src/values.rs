//! ConfigMaps and Secrets of `tkt run`: the documents given with `-f`,
//! `--configmap NAME=SOURCE` and `--secret NAME=SOURCE` (values kept out of
//! YAML), and the check that every object and key a run names is given.
//!
//! A SOURCE is `DIR` (one key per regular file directly in it, named after
//! the file, as `kubectl create configmap --from-file=DIR`: links,
//! subdirectories and other entries are skipped), `FILE` (one key named
//! after the file) or `KEY=FILE`. Flags naming one object add up; an object
//! given by flags replaces a document of the same kind and name.

use std::collections::BTreeMap;
use std::path::Path;

use tektite_api::LoadedData;
use tektite_api::data::{self, DataKind, DataObject, DataSet};
use tektite_api::v1::{PipelineRun, PipelineSpec, TaskRun, TaskSpec};
use tektite_engine::sources::Checker;
use tektite_engine::subst::Vars;

/// The objects the flags give, or what is wrong with a flag.
///
/// # Errors
/// A flag that is not `NAME=SOURCE`, a source that cannot be read, a bad
/// or repeated key, an object over 1 MiB.
pub fn from_flags(configmaps: &[String], secrets: &[String]) -> Result<Vec<DataObject>, String> {
    let mut by_name: BTreeMap<(DataKind, String), DataObject> = BTreeMap::new();
    let flags = configmaps
        .iter()
        .map(|f| (DataKind::ConfigMap, f))
        .chain(secrets.iter().map(|f| (DataKind::Secret, f)));
    for (kind, flag) in flags {
        let what = format!("--{} {flag}", kind.lower());
        let (name, source) = flag
            .split_once('=')
            .filter(|(n, s)| !n.is_empty() && !s.is_empty())
            .ok_or_else(|| format!("{what}: expected NAME=DIR, NAME=FILE or NAME=KEY=FILE"))?;
        if tektite_api::validate::claim_name_problem(name).is_some() {
            return Err(format!(
                "{what}: {name:?} is not a valid {kind} name: expected lower-case letters, digits, '-' and '.' (DNS-1123 subdomain)"
            ));
        }
        let o = by_name
            .entry((kind, name.to_string()))
            .or_insert_with(|| DataObject {
                kind,
                name: name.to_string(),
                entries: BTreeMap::new(),
                binary_keys: Default::default(),
            });
        for (key, bytes) in read_source(source).map_err(|e| format!("{what}: {e}"))? {
            if let Some(p) = data::key_problem(&key) {
                return Err(format!("{what}: {p}"));
            }
            if o.entries.insert(key.clone(), bytes).is_some() {
                return Err(format!("{what}: key {key:?} is given twice"));
            }
        }
        let size: usize = o.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > data::MAX_SIZE {
            return Err(format!(
                "{what}: {kind} {name:?} holds {size} bytes: at most {} (1 MiB) are allowed",
                data::MAX_SIZE
            ));
        }
    }
    Ok(by_name.into_values().collect())
}

/// The keys and bytes of one SOURCE.
fn read_source(source: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if let Some((key, file)) = source.split_once('=') {
        return Ok(vec![(key.to_string(), read(Path::new(file))?)]);
    }
    let path = Path::new(source);
    let meta = std::fs::metadata(path).map_err(|e| format!("{source}: {e}"))?;
    if !meta.is_dir() {
        let key = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![(key, read(path)?)]);
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(path).map_err(|e| format!("{source}: {e}"))?;
    for e in entries {
        let e = e.map_err(|e| format!("{source}: {e}"))?;
        // Regular files only: the entry's own type, no link followed.
        if e.file_type().is_ok_and(|t| t.is_file()) {
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                read(&e.path())?,
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// The documents, then the flags' objects over them.
pub fn gather(documents: &[LoadedData], flags: Vec<DataObject>) -> DataSet {
    let mut set = DataSet::default();
    for d in documents {
        set.insert(d.object.clone());
    }
    for o in flags {
        set.insert(o);
    }
    set
}

/// The params of a run as variables, when they resolve (else names that
/// use params are left to the run).
fn param_vars(
    declared: &[tektite_api::v1::ParamSpec],
    given: &[tektite_api::v1::Param],
) -> Option<Vars> {
    let values = tektite_engine::params::resolve(declared, given, true, "x", "run").ok()?;
    let mut vars = Vars::new(&[]);
    tektite_engine::params::add_to(&mut vars, &values);
    Some(vars)
}

/// Every ConfigMap, Secret or key a TaskRun names that is not given and
/// not optional: `path: message`.
pub fn check_task_run(
    tr: &TaskRun,
    spec: &TaskSpec,
    task: Option<&str>,
    data: &DataSet,
) -> Vec<String> {
    let vars = param_vars(&spec.params, &tr.spec.params);
    let mut c = Checker {
        data,
        vars: vars.as_ref(),
        problems: Vec::new(),
    };
    c.check_bindings(&tr.spec.workspaces, "spec.workspaces");
    match task {
        Some(t) => c.check_task(spec, &format!("Task {t}: spec")),
        None => c.check_task(spec, "spec.taskSpec"),
    }
    c.problems
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

/// A pipeline task's params with the pipeline's params substituted where
/// they are known (a task's result is not: it stays as written).
fn task_params(
    pipeline_vars: Option<&Vars>,
    given: &[tektite_api::v1::Param],
) -> Vec<tektite_api::v1::Param> {
    let Some(vars) = pipeline_vars else {
        return given.to_vec();
    };
    given
        .iter()
        .map(|p| tektite_api::v1::Param {
            name: p.name.clone(),
            value: vars
                .param_value(&p.value, "")
                .unwrap_or_else(|_| p.value.clone()),
        })
        .collect()
}

/// The same for a PipelineRun: its bindings, and the specs of its tasks
/// with the params they get from the pipeline (names made of results are
/// left to the run).
pub fn check_pipeline_run(
    pr: &PipelineRun,
    spec: &PipelineSpec,
    pipeline: Option<&str>,
    tasks: &BTreeMap<String, TaskSpec>,
    data: &DataSet,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut c = Checker {
        data,
        vars: None,
        problems: Vec::new(),
    };
    c.check_bindings(&pr.spec.workspaces, "spec.workspaces");
    problems.append(&mut c.problems);
    let pipeline_vars = param_vars(&spec.params, &pr.spec.params);
    let base = match pipeline {
        Some(p) => format!("Pipeline {p}: spec"),
        None => "spec.pipelineSpec".into(),
    };
    for (list, pts) in [("tasks", &spec.tasks), ("finally", &spec.finally)] {
        for (i, t) in pts.iter().enumerate() {
            let (task_spec, at) = match (&t.task_spec, &t.task_ref) {
                (Some(e), _) => (&e.task, format!("{base}.{list}[{i}].taskSpec")),
                (None, Some(r)) => {
                    let Some(n) = r.name.as_deref() else { continue };
                    let Some(s) = tasks.get(n) else { continue };
                    (s, format!("Task {n} (of {base}.{list}[{i}]): spec"))
                }
                _ => continue,
            };
            let given = task_params(pipeline_vars.as_ref(), &t.params);
            let vars = param_vars(&task_spec.params, &given);
            let mut c = Checker {
                data,
                vars: vars.as_ref(),
                problems: Vec::new(),
            };
            c.check_task(task_spec, &at);
            problems.append(&mut c.problems);
        }
    }
    problems
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_directories_files_and_keyed_files() {
        let d = std::env::temp_dir().join(format!("tkt-values-flags-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("dir/sub")).unwrap();
        std::fs::write(d.join("dir/a.txt"), "A").unwrap();
        std::fs::write(d.join("dir/.env"), "E").unwrap();
        std::fs::write(d.join("dir/sub/no"), "-").unwrap();
        std::os::unix::fs::symlink(d.join("dir/a.txt"), d.join("dir/link")).unwrap();
        std::fs::write(d.join("token"), "T").unwrap();
        let dir = format!("c={}", d.join("dir").display());
        let file = format!("s={}", d.join("token").display());
        let keyed = format!("s=pw={}", d.join("token").display());
        let got = from_flags(&[dir], &[file.clone(), keyed]).unwrap();
        let keys: Vec<(DataKind, &str, Vec<&str>)> = got
            .iter()
            .map(|o| {
                (
                    o.kind,
                    o.name.as_str(),
                    o.entries.keys().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                (DataKind::ConfigMap, "c", vec![".env", "a.txt"]),
                (DataKind::Secret, "s", vec!["pw", "token"]),
            ]
        );
        let twice = from_flags(&[], &[file.clone(), file]).unwrap_err();
        assert!(twice.contains("key \"token\" is given twice"), "{twice}");
        let bad = from_flags(&["Bad_Name=x".into()], &[]).unwrap_err();
        assert!(bad.contains("not a valid ConfigMap name"), "{bad}");
        let bad = from_flags(&["c".into()], &[]).unwrap_err();
        assert!(bad.contains("expected NAME=DIR"), "{bad}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
