//! The fake API server's TokenReviews and SubjectAccessReviews over real
//! HTTP, as a service authorising its callers asks them: tokens from the
//! kubeconfig and `POST /_dev/tokens`, RBAC objects created as `kubectl
//! create -f` would.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use tektite_devcluster::apiserver::{ADMIN_USER, ApiServer};

#[path = "common/mod.rs"]
mod common;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// `method path` with a JSON `body` (none when null): status and JSON body.
async fn call(api: &ApiServer, method: &str, path: &str, body: &Value) -> (u16, Value) {
    common::call_as(api, (method, path), "application/json", body).await
}

async fn token_review(api: &ApiServer, token: &str) -> Value {
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {"token": token}});
    let (code, out) = call(api, "POST", TOKEN_REVIEWS, &review).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["spec"], review["spec"], "the review is echoed");
    out["status"].clone()
}

/// Whether `user` may `get` TaskRun `name` in `ns` (and the reason).
async fn may_get_taskrun(api: &ApiServer, user: &str, ns: &str, name: &str) -> (bool, String) {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ["system:authenticated"],
                 "resourceAttributes": {"namespace": ns, "verb": "get", "group": "tekton.dev",
                                        "resource": "taskruns", "name": name}}});
    let (code, out) = call(api, "POST", ACCESS_REVIEWS, &review).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["status"]["denied"], false);
    let reason = out["status"]["reason"].as_str().unwrap().to_string();
    (out["status"]["allowed"].as_bool().unwrap(), reason)
}

/// The `token:` of a kubeconfig the server wrote.
fn token_in(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token in\n{text}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn token_review_of_a_registered_token_says_whose_it_is() {
    let api = ApiServer::start().await.unwrap();
    let body = json!({"token": "alice-token", "username": "alice", "groups": ["devs"]});
    let (code, out) = call(&api, "POST", "/_dev/tokens", &body).await;
    assert_eq!(code, 201, "{out}");
    let status = token_review(&api, "alice-token").await;
    assert_eq!(
        status,
        json!({"authenticated": true,
               "user": {"username": "alice", "uid": "dev-uid-alice", "groups": ["devs"]}})
    );
    api.shared
        .add_token("bob-token", "bob", &["system:authenticated"]);
    let status = token_review(&api, "bob-token").await;
    assert_eq!(status["user"]["username"], "bob");
}

#[tokio::test]
async fn token_review_of_an_unknown_token_is_not_authenticated() {
    let api = ApiServer::start().await.unwrap();
    let status = token_review(&api, "nobody-s-token").await;
    assert_eq!(status["authenticated"], false);
    assert_eq!(status["error"], "invalid bearer token");
    // Reviews are answered, not stored.
    let (_, list) = call(&api, "GET", TOKEN_REVIEWS, &Value::Null).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn reviews_and_dev_tokens_refuse_bodies_without_what_they_need() {
    let api = ApiServer::start().await.unwrap();
    let (code, out) = call(&api, "POST", TOKEN_REVIEWS, &json!({"spec": {}})).await;
    assert_eq!(code, 400, "{out}");
    assert_eq!(
        out["message"],
        "spec.token: token is required for TokenReview in authentication"
    );
    let no_subject = json!({"spec": {"resourceAttributes": {"verb": "get"}}});
    let (code, out) = call(&api, "POST", ACCESS_REVIEWS, &no_subject).await;
    assert_eq!(code, 422, "{out}");
    assert_eq!(out["reason"], "Invalid");
    let (code, out) = call(&api, "POST", "/_dev/tokens", &json!({"token": "t"})).await;
    assert_eq!(code, 400, "{out}");
    assert_eq!(
        out["message"],
        "/_dev/tokens: token and username must be non-empty strings"
    );
    let bad_groups = json!({"token": "t", "username": "u", "groups": "devs"});
    let (code, _) = call(&api, "POST", "/_dev/tokens", &bad_groups).await;
    assert_eq!(code, 400);
    assert_eq!(token_review(&api, "t").await["authenticated"], false);
}

#[tokio::test]
async fn kubeconfig_carries_the_admin_token() {
    let api = ApiServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("tektite-devcluster-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = token_in(&api.kubeconfig(&dir).unwrap());
    assert_eq!(token, api.shared.admin_token());
    assert_eq!(token.len(), 32);
    let status = token_review(&api, &token).await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"]["username"], ADMIN_USER);
    assert_eq!(
        status["user"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );

    api.shared
        .add_token("carol-token", "carol", &["system:authenticated"]);
    let carol = api
        .kubeconfig_for(&dir, "carol.kubeconfig", "carol-token")
        .unwrap();
    assert_eq!(carol, dir.join("carol.kubeconfig"));
    assert_eq!(token_in(&carol), "carol-token");
    let status = token_review(&api, &token_in(&carol)).await;
    assert_eq!(status["user"]["username"], "carol");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn rbac_objects_created_over_http_decide_subject_access_reviews() {
    let api = ApiServer::start().await.unwrap();
    assert!(!may_get_taskrun(&api, "alice", "ci", "build-1").await.0);

    // As `kubectl create -f` sends them (kind given), and without a kind.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "taskrun-reader"},
        "rules": [{"apiGroups": ["tekton.dev"], "resources": ["taskruns"], "verbs": ["get"]}]});
    let (code, out) = call(&api, "POST", &format!("{RBAC}/namespaces/ci/roles"), &role).await;
    assert_eq!(code, 201, "{out}");
    let binding = json!({"metadata": {"name": "alice-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "taskrun-reader"},
        "subjects": [{"kind": "User", "name": "alice"}]});
    let bindings = format!("{RBAC}/namespaces/ci/rolebindings");
    let (code, out) = call(&api, "POST", &bindings, &binding).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["kind"], "RoleBinding");

    let (code, list) = call(&api, "GET", &bindings, &Value::Null).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "RoleBindingList");
    assert_eq!(list["items"][0]["metadata"]["name"], "alice-reads");

    let (allowed, reason) = may_get_taskrun(&api, "alice", "ci", "build-1").await;
    assert!(allowed, "{reason}");
    assert_eq!(
        reason,
        "RBAC: allowed by RoleBinding \"alice-reads/ci\" of Role \"taskrun-reader\" to User \"alice\""
    );
    assert!(!may_get_taskrun(&api, "alice", "prod", "build-1").await.0);
    assert!(!may_get_taskrun(&api, "bob", "ci", "build-1").await.0);

    // Cluster-wide, through a ClusterRoleBinding to a ClusterRole.
    let cluster_role = json!({"metadata": {"name": "taskrun-reader"},
        "rules": [{"apiGroups": ["tekton.dev"], "resources": ["taskruns"], "verbs": ["get"]}]});
    let (code, _) = call(&api, "POST", &format!("{RBAC}/clusterroles"), &cluster_role).await;
    assert_eq!(code, 201);
    let cluster_binding = json!({"metadata": {"name": "bob-reads"},
        "roleRef": {"kind": "ClusterRole", "name": "taskrun-reader"},
        "subjects": [{"kind": "User", "name": "bob"}]});
    let (code, out) = call(
        &api,
        "POST",
        &format!("{RBAC}/clusterrolebindings"),
        &cluster_binding,
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(out["kind"], "ClusterRoleBinding");
    assert!(may_get_taskrun(&api, "bob", "prod", "build-1").await.0);

    let (code, _) = call(
        &api,
        "DELETE",
        &format!("{bindings}/alice-reads"),
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    let (allowed, reason) = may_get_taskrun(&api, "alice", "ci", "build-1").await;
    assert!(!allowed, "{reason}");
    assert_eq!(
        reason,
        "RBAC: no binding lets user \"alice\" get taskruns.tekton.dev \"build-1\" in namespace \"ci\""
    );
}
