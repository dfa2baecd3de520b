//! A stand-in Kubernetes for trying Tektite on one machine, and for the
//! controller's and `tkt --cluster`'s black-box tests: a fake API server
//! (objects in memory, watches, `pods/log`) and a kubelet that plays its
//! Pods with podman. It is not a cluster: no authentication, admission,
//! scheduling, validation or defaulting (README, "A dev cluster").

pub mod apiserver;
pub mod kubelet;

use std::path::Path;

use serde_json::Value;

/// Creates the CustomResourceDefinitions in the YAML files of `dir` (as
/// `kubectl create -f crds/` would); returns how many.
///
/// # Errors
/// A file cannot be read or parsed, or the server refuses one.
pub fn install_crds(api: &apiserver::Shared, dir: &Path) -> anyhow::Result<usize> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut n = 0;
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let docs = tektite_api::yaml::parse_values(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        for crd in docs.into_iter().filter(Value::is_object) {
            let (code, out) = api.create(
                "apiextensions.k8s.io/v1",
                "customresourcedefinitions",
                "",
                crd,
            );
            if code != 201 {
                anyhow::bail!("{}: {}", file.display(), out["message"]);
            }
            n += 1;
        }
    }
    Ok(n)
}
