//! Patches on the fake API server as Kubernetes answers them: one that
//! names a `resourceVersion` applies only to that version (a 409
//! otherwise), which is how a controller writes over the version it read.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use tektite_devcluster::apiserver::{ApiServer, Key};

#[path = "common/mod.rs"]
mod common;

const TEKTON: &str = "tekton.dev/v1";
const RUN: &str = "/apis/tekton.dev/v1/namespaces/ci/pipelineruns/p/status";

#[tokio::test]
async fn a_patch_naming_a_stale_resource_version_is_refused() {
    let api = ApiServer::start().await.unwrap();
    let (code, created) = api.shared.create(
        TEKTON,
        "pipelineruns",
        "ci",
        json!({"apiVersion": TEKTON, "kind": "PipelineRun", "metadata": {"name": "p"},
               "spec": {"pipelineRef": {"name": "x"}}}),
    );
    assert_eq!(code, 201, "{created}");
    let read = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone else writes after it was read.
    api.shared
        .update(&Key::new(TEKTON, "pipelineruns", "ci", "p"), |p| {
            p["status"] = json!({"conditions": [{"type": "Succeeded", "status": "False"}]});
        });
    let apply = "application/apply-patch+yaml";
    let stale = json!({"apiVersion": TEKTON, "kind": "PipelineRun",
                       "metadata": {"resourceVersion": read},
                       "status": {"concurrency": {"admittedTime": "2026-12-07T10:00:00Z"}}});
    let (code, out) = common::call_as(&api, ("PATCH", RUN), apply, &stale).await;
    assert_eq!(code, 409, "{out}");
    let now = api
        .shared
        .get(&Key::new(TEKTON, "pipelineruns", "ci", "p"))
        .unwrap();
    assert!(now["status"]["concurrency"].is_null(), "{now}");
    // Over the version it has now, the same patch applies.
    let mut fresh = stale.clone();
    fresh["metadata"]["resourceVersion"] = now["metadata"]["resourceVersion"].clone();
    let (code, out) = common::call_as(&api, ("PATCH", RUN), apply, &fresh).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        out["status"]["concurrency"]["admittedTime"],
        "2026-12-07T10:00:00Z"
    );
}
