//! Workspaces for `tkt run`: what `-w NAME=…` binds, and the warning for a
//! Pipeline workspace bound to `emptyDir` that several TaskRuns use (each
//! gets an empty directory of its own, as on Tekton, which reads like a
//! bug when one task is meant to see what another wrote).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tektite_api::v1::{PipelineSpec, WorkspaceBinding};

/// The forms of `-w`, for help and messages.
pub const FORMS: &str = "NAME=PATH, NAME=emptyDir or NAME=volumeClaimTemplate";

/// The binding `-w name=value` makes: `emptyDir`; `volumeClaimTemplate` (a
/// claim of the run's own, shared by every TaskRun of a PipelineRun, as a
/// `volumeClaimTemplate` of 1Gi ReadWriteOnce would be on a cluster); or a
/// host directory, given to the run as a claim named after its path.
///
/// # Errors
/// A path that is not an existing directory.
pub fn binding(
    name: &str,
    value: &str,
    claims: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<WorkspaceBinding> {
    let mut b = WorkspaceBinding {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        "emptyDir" => b.empty_dir = Some(EmptyDirVolumeSource::default()),
        "volumeClaimTemplate" => b.volume_claim_template = Some(claim_template()),
        path => {
            let path = std::fs::canonicalize(path)
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
    }
    Ok(b)
}

/// What `-w NAME=volumeClaimTemplate` stands for.
fn claim_template() -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A warning for each Pipeline workspace bound to `emptyDir` that more than
/// one TaskRun uses (two pipeline tasks, or one fanned out by a matrix):
/// each gets an empty directory of its own, so nothing one writes reaches
/// another.
pub fn shared_empty_dirs(spec: &PipelineSpec, bound: &[WorkspaceBinding]) -> Vec<String> {
    let mut warnings = Vec::new();
    for b in bound.iter().filter(|b| b.empty_dir.is_some()) {
        let users: Vec<(&str, bool)> = spec
            .tasks
            .iter()
            .chain(&spec.finally)
            .filter(|pt| tektite_engine::pipelinerun::pipeline_workspaces_of(pt).contains(&b.name))
            .map(|pt| (pt.name.as_str(), pt.matrix.is_some()))
            .collect();
        if users.len() < 2 && !users.iter().any(|(_, fanned)| *fanned) {
            continue;
        }
        let names: Vec<&str> = users.iter().map(|(n, _)| *n).collect();
        warnings.push(format!(
            "warning: workspace {:?} is bound to emptyDir: each TaskRun that uses it ({}) gets an \
             empty directory of its own, as on Tekton, so files one task writes are not seen by \
             the others; to share them, bind it with -w {}=volumeClaimTemplate (a directory \
             for the run) or -w {}=PATH",
            b.name,
            names.join(", "),
            b.name,
            b.name
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(yaml: &str) -> PipelineSpec {
        let v = tektite_api::yaml::parse_values(yaml).unwrap().remove(0);
        serde_json::from_value(v).unwrap()
    }

    fn bound(name: &str, value: &str) -> WorkspaceBinding {
        binding(name, value, &mut BTreeMap::new()).unwrap()
    }

    #[test]
    fn an_empty_dir_used_by_two_tasks_is_warned_about_once_with_both_names() {
        let spec = pipeline(
            "workspaces: [{name: src}, {name: other}]\n\
             tasks:\n\
             - {name: clone, taskRef: {name: c}, workspaces: [{name: output, workspace: src}]}\n\
             - {name: test, taskRef: {name: t}, workspaces: [{name: src}]}\n\
             - {name: lone, taskRef: {name: l}, workspaces: [{name: x, workspace: other}]}\n",
        );
        let w = shared_empty_dirs(
            &spec,
            &[bound("src", "emptyDir"), bound("other", "emptyDir")],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("\"src\"") && w[0].contains("(clone, test)"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("-w src=volumeClaimTemplate"), "{}", w[0]);
        // Shared for real: no warning.
        let claim = bound("src", "volumeClaimTemplate");
        assert!(claim.volume_claim_template.is_some());
        assert!(shared_empty_dirs(&spec, &[claim]).is_empty());
    }

    #[test]
    fn a_matrix_and_an_embedded_spec_count_as_users() {
        let spec = pipeline(
            "workspaces: [{name: src}]\n\
             tasks:\n\
             - name: fan\n  taskRef: {name: t}\n  workspaces: [{name: src}]\n  \
               matrix: {params: [{name: v, value: [a, b]}]}\n",
        );
        assert_eq!(
            shared_empty_dirs(&spec, &[bound("src", "emptyDir")]).len(),
            1
        );
        // Implicit propagation: the embedded spec uses $(workspaces.src.path).
        let spec = pipeline(
            "workspaces: [{name: src}]\n\
             tasks:\n\
             - {name: a, taskRef: {name: t}, workspaces: [{name: src}]}\n\
             - name: b\n  taskSpec:\n    steps:\n    - {name: s, image: i, script: 'ls $(workspaces.src.path)'}\n",
        );
        let w = shared_empty_dirs(&spec, &[bound("src", "emptyDir")]);
        assert!(w.len() == 1 && w[0].contains("(a, b)"), "{w:?}");
    }

    #[test]
    fn a_path_that_is_no_directory_is_refused_naming_the_flag() {
        let e = binding("src", "/no/such/dir", &mut BTreeMap::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("-w src=/no/such/dir: no such directory"),
            "{e:#}"
        );
    }
}
