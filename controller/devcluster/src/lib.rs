//! A stand-in Kubernetes for trying Tektite on one machine, and for the
//! controller's and `tkt --cluster`'s black-box tests: a fake API server
//! (objects in memory, watches, `pods/log`) and a kubelet that plays its
//! Pods with podman. It is not a cluster: no admission, scheduling,
//! validation or defaulting, and it authenticates and authorises none of
//! its own callers (README, "`tkt` on a cluster").
//!
//! It answers the reviews a service that authorises its callers asks for:
//! TokenReviews, for the tokens it was given (its kubeconfig carries the
//! token of an admin, `dev-admin` in `system:masters`; tests add others),
//! and SubjectAccessReviews, by RBAC from the Roles, ClusterRoles and their
//! bindings it holds. `auth` decides them, purely, from what `apiserver`
//! holds; `kubelet` writes Pods' status and logs back through `apiserver`.
//! It depends on no Kubernetes client: the tests and the real controller
//! are its clients.

pub mod apiserver;
pub mod auth;
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
