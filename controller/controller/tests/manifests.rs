//! The install manifests (`controller/config`): `kubectl kustomize` builds
//! them, every object is valid against its schema (it deserializes into its
//! typed Kubernetes struct and serializes back to exactly what was written:
//! an unknown field, a wrong type or a misspelt key shows as a difference),
//! and the properties the install promises hold (least privilege, a
//! hardened Deployment, the step annotation policy).

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn built() -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl is not installed: run hack/setup-catalog-tools.sh (Debian's kubernetes-client)");
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tektite_api::yaml::parse_values(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// `v` through its typed struct and back.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(v.clone()).map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(typed).unwrap())
}

/// Where `a` and `b` differ, as JSON paths.
fn diff(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(v, w, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}: not in the schema")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{at}.{k}: added"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, &format!("{at}[{i}]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{at}: {a} became {b}")),
    }
}

#[test]
fn every_object_is_valid_against_its_schema() {
    let docs = built();
    assert_eq!(docs.len(), 22, "objects built");
    let mut problems = Vec::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or("");
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        let back = match kind {
            "Namespace" => round_trip::<Namespace>(d),
            "CustomResourceDefinition" => round_trip::<CustomResourceDefinition>(d),
            "ServiceAccount" => round_trip::<ServiceAccount>(d),
            "ClusterRole" => round_trip::<ClusterRole>(d),
            "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(d),
            "Role" => round_trip::<Role>(d),
            "RoleBinding" => round_trip::<RoleBinding>(d),
            "ValidatingAdmissionPolicy" => round_trip::<ValidatingAdmissionPolicy>(d),
            "ValidatingAdmissionPolicyBinding" => round_trip::<ValidatingAdmissionPolicyBinding>(d),
            "ConfigMap" => round_trip::<ConfigMap>(d),
            "Deployment" => round_trip::<Deployment>(d),
            "Service" => round_trip::<Service>(d),
            "PersistentVolumeClaim" => round_trip::<PersistentVolumeClaim>(d),
            other => Err(format!("no schema for kind {other}")),
        };
        match back {
            Ok(b) => {
                let mut out = Vec::new();
                diff(d, &b, "", &mut out);
                problems.extend(out.into_iter().map(|p| format!("{kind}/{name}{p}")));
            }
            Err(e) => problems.push(format!("{kind}/{name}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_schema_check_catches_a_misspelt_field() {
    // The check itself: a typo and a wrong type do not pass.
    let mut d = built()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] =
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].clone();
    let mut out = Vec::new();
    diff(&d, &round_trip::<Deployment>(&d).unwrap(), "", &mut out);
    assert_eq!(
        out,
        [".spec.template.spec.containers[0].readinesProbe: not in the schema"]
    );
    d["spec"]["replicas"] = Value::String("one".into());
    assert!(
        round_trip::<Deployment>(&d)
            .unwrap_err()
            .contains("spec.replicas")
    );
}

#[test]
fn the_controller_has_least_privilege_and_a_hardened_pod() {
    let docs = built();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "tektite-controller")
        .unwrap();
    let role: ClusterRole = serde_json::from_value(role.clone()).unwrap();
    for rule in role.rules.unwrap() {
        let all = |v: &Option<Vec<String>>| v.iter().flatten().any(|x| x == "*");
        assert!(
            !all(&Some(rule.verbs.clone())) && !all(&rule.resources) && !all(&rule.api_groups),
            "a wildcard: {rule:?}"
        );
        assert!(
            !rule.resources.iter().flatten().any(|r| r == "secrets"),
            "secrets: {rule:?}"
        );
        assert!(
            !rule
                .verbs
                .iter()
                .any(|v| v == "escalate" || v == "bind" || v == "impersonate"),
            "{rule:?}"
        );
    }
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let dep: Deployment = serde_json::from_value(dep.clone()).unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    assert_eq!(
        c.image.as_deref(),
        Some("localhost/tektite/controller:latest")
    );
}

#[test]
fn steps_may_change_only_their_own_pods_tektite_annotations() {
    let docs = built();
    let p = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    let p: ValidatingAdmissionPolicy = serde_json::from_value(p.clone()).unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let constraints = spec.match_constraints.unwrap();
    // Every pod: a step may not patch pods Tektite did not make either.
    assert!(constraints.object_selector.is_none());
    let rules = constraints.resource_rules.unwrap();
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_string()][..])
    );
    let exprs: Vec<String> = spec
        .validations
        .unwrap()
        .into_iter()
        .map(|v| v.expression)
        .collect();
    let all = exprs.join("\n");
    for needle in [
        "variables.pods[0] == object.metadata.name",
        "'system:serviceaccount:' + object.metadata.namespace + ':'",
        "object.spec == oldObject.spec",
        "k in variables.reports",
    ] {
        assert!(all.contains(needle), "no {needle:?} in the policy");
    }
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    assert_eq!(binding["spec"]["policyName"], "tektite-step-reports");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
}

#[test]
fn the_crds_are_the_generated_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for e in std::fs::read_dir(root.join("crds")).unwrap() {
        let p = e.unwrap().path();
        // The CRDs; not `schemas/`, which `tkt` embeds.
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let copy = root
            .join("controller/config/crds")
            .join(p.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            std::fs::read_to_string(&copy).unwrap_or_default(),
            "{} differs from crds/: run hack/gen-crds.sh",
            copy.display()
        );
    }
}

/// What RBAC lets a user do, as `group/resource/verb` (`*` for any).
type Grants = Vec<String>;

/// The grants of the built ClusterRole `name`.
fn grants_of(name: &str) -> Grants {
    let docs = built();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.push(format!("{g}/{r}/{v}"));
                }
            }
        }
    }
    out
}

/// An API server's CEL `authorizer` for a user RBAC grants `grants`
/// (namespaces aside): `authorizer.group(g).resource(r).namespace(n)
/// .check(verb).allowed()`. The builder is a `g/r` string; `check` answers
/// `allowed` or `denied`.
fn add_authorizer(ctx: &mut cel::Context, grants: Grants) {
    use cel::extractors::This;
    use std::sync::Arc;
    ctx.add_variable("authorizer", "").unwrap();
    ctx.add_function("group", |This(_): This<Arc<String>>, g: Arc<String>| {
        g.to_string()
    })
    .unwrap();
    ctx.add_function("resource", |This(g): This<Arc<String>>, r: Arc<String>| {
        format!("{g}/{r}")
    })
    .unwrap();
    ctx.add_function(
        "namespace",
        |This(gr): This<Arc<String>>, _ns: Arc<String>| gr.to_string(),
    )
    .unwrap();
    ctx.add_function(
        "check",
        move |This(gr): This<Arc<String>>, verb: Arc<String>| {
            let (g, r) = gr.split_once('/').unwrap();
            let allowed = grants.iter().any(|grant| {
                let have: Vec<&str> = grant.splitn(3, '/').collect();
                [g, r, verb.as_str()]
                    .iter()
                    .zip(&have)
                    .all(|(want, have)| *have == "*" || have == want)
            });
            if allowed { "allowed" } else { "denied" }.to_string()
        },
    )
    .unwrap();
    ctx.add_function("allowed", |This(d): This<Arc<String>>| {
        d.as_str() == "allowed"
    })
    .unwrap();
}

/// The step annotation policy's verdict on one update by a user RBAC
/// grants `grants`, evaluated with a CEL interpreter the way an API server
/// runs a ValidatingAdmissionPolicy: `None` when its match conditions leave
/// the request alone, else `Some(messages of the validations that failed)`.
/// `params` is null, as an API server gives it to a policy bound with no
/// parameter object (or whose parameter is missing).
fn policy_verdict(
    request: &Value,
    grants: &[String],
    old: &Value,
    new: &Value,
) -> Option<Vec<String>> {
    let docs = built();
    let p = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    let eval = |ctx: &cel::Context, expr: &str| -> cel::Value {
        let program = cel::Program::compile(expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        program
            .execute(ctx)
            .unwrap_or_else(|e| panic!("{expr}: {e:?}"))
    };
    let mut request = request.clone();
    request["namespace"] = old["metadata"]["namespace"].clone();
    let mut ctx = cel::Context::default();
    ctx.add_variable("params", Value::Null).unwrap();
    ctx.add_variable("request", request).unwrap();
    ctx.add_variable("object", new.clone()).unwrap();
    ctx.add_variable("oldObject", old.clone()).unwrap();
    add_authorizer(&mut ctx, grants.to_vec());
    let spec = &p["spec"];
    for c in spec["matchConditions"].as_array().unwrap() {
        if eval(&ctx, c["expression"].as_str().unwrap()) != cel::Value::Bool(true) {
            return None;
        }
    }
    let mut vars = std::collections::HashMap::new();
    for v in spec["variables"].as_array().unwrap() {
        let value = eval(&ctx, v["expression"].as_str().unwrap());
        vars.insert(v["name"].as_str().unwrap().to_string(), value);
    }
    ctx.add_variable_from_value("variables", cel::Value::from(vars));
    Some(
        spec["validations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| eval(&ctx, v["expression"].as_str().unwrap()) != cel::Value::Bool(true))
            .map(|v| v["message"].as_str().unwrap().to_string())
            .collect(),
    )
}

const OWN_POD: &str = "a step may change only its own pod (with a token bound to that pod)";
const KEEP: &str =
    "a step may not change or remove its pod's annotations (a report once written included)";
const ONLY_REPORTS: &str =
    "a step may add only the reports of its pod's steps (tektite.dev/step.<step container>)";

/// A request by service account `account` (`namespace:name`) with a token
/// bound to `pod`.
fn by(account: &str, pod: &str) -> Value {
    json!({"userInfo": {"username": format!("system:serviceaccount:{account}"),
                        "extra": {"authentication.kubernetes.io/pod-name": [pod]}}})
}

/// A step pod `name` in `default`: step `a`, sidecar `db`, `annotations`.
fn step_pod(name: &str, annotations: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "default",
                        "labels": {"tekton.dev/taskRun": "build"},
                        "annotations": annotations},
           "spec": {"containers": [{"name": "step-a", "image": "busybox"},
                                   {"name": "sidecar-db", "image": "postgres"}]}})
}

#[test]
fn the_policy_admits_a_steps_own_report_and_refuses_everything_else() {
    // `default:default` is the step service account the install binds.
    let step = grants_of("tektite-step-reporter");
    let request = |pod: &str| by("default:default", pod);
    let old = step_pod("build-pod", json!({"tekton.dev/ready": "READY"}));
    let report = step_pod(
        "build-pod",
        json!({"tekton.dev/ready": "READY", "tektite.dev/step.step-a": "{\"exitCode\":0}"}),
    );
    // Its own report: admitted (a retry's pod too).
    assert_eq!(
        policy_verdict(&request("build-pod"), &step, &old, &report),
        Some(vec![])
    );
    let retry_old = step_pod("build-pod-retry2", json!({}));
    let retry_new = step_pod("build-pod-retry2", json!({"tektite.dev/step.step-a": "{}"}));
    assert_eq!(
        policy_verdict(&request("build-pod-retry2"), &step, &retry_old, &retry_new),
        Some(vec![])
    );
    // Another pod, Tektite's or not.
    let other_old = step_pod("deploy-pod", json!({}));
    let other_new = step_pod("deploy-pod", json!({"tektite.dev/step.step-a": "{}"}));
    assert_eq!(
        policy_verdict(&request("build-pod"), &step, &other_old, &other_new),
        Some(vec![OWN_POD.to_string()])
    );
    // A pod of the same name in another namespace.
    let mut elsewhere_old = old.clone();
    elsewhere_old["metadata"]["namespace"] = json!("prod");
    let mut elsewhere_new = report.clone();
    elsewhere_new["metadata"]["namespace"] = json!("prod");
    assert_eq!(
        policy_verdict(&request("build-pod"), &step, &elsewhere_old, &elsewhere_new),
        Some(vec![OWN_POD.to_string()])
    );
    let db_old =
        json!({"metadata": {"name": "db-0", "namespace": "default"}, "spec": {"containers": []}});
    let mut db_new = db_old.clone();
    db_new["metadata"]["labels"] = json!({"role": "primary"});
    let refused = policy_verdict(&request("build-pod"), &step, &db_old, &db_new).unwrap();
    assert!(
        refused.contains(&OWN_POD.to_string())
            && refused.contains(&"a step may not change its pod's labels".to_string()),
        "{refused:?}"
    );
    // Its own pod, beyond the reports.
    let mut spec = report.clone();
    spec["spec"]["containers"][0]["image"] = json!("evil");
    assert_eq!(
        policy_verdict(&request("build-pod"), &step, &old, &spec),
        Some(vec!["a step may not change its pod's spec".to_string()])
    );
    let mut labels = report.clone();
    labels["metadata"]["labels"]["tekton.dev/taskRun"] = json!("other");
    assert_eq!(
        policy_verdict(&request("build-pod"), &step, &old, &labels),
        Some(vec!["a step may not change its pod's labels".to_string()])
    );
    let mut owners = report.clone();
    owners["metadata"]["finalizers"] = json!(["x"]);
    assert_eq!(
        policy_verdict(&request("build-pod"), &step, &old, &owners),
        Some(vec![
            "a step may not change its pod's owners or finalizers".to_string()
        ])
    );
    for (annotations, refusal) in [
        (
            json!({"tekton.dev/ready": "READY", "other/key": "x"}),
            ONLY_REPORTS,
        ),
        (json!({}), KEEP),
        (json!({"tekton.dev/ready": "NOT"}), KEEP),
    ] {
        let new = step_pod("build-pod", annotations.clone());
        assert_eq!(
            policy_verdict(&request("build-pod"), &step, &old, &new),
            Some(vec![refusal.to_string()]),
            "{annotations}"
        );
    }
    // The step's account from a pod of another kind, or with a token bound
    // to no pod: no pod but its own, and none at all without one.
    assert_eq!(
        policy_verdict(&request("web-7d9f8-x2b4q"), &step, &other_old, &other_new),
        Some(vec![OWN_POD.to_string()])
    );
    let unbound = json!({"userInfo": {"username": "system:serviceaccount:default:default"}});
    assert_eq!(
        policy_verdict(&unbound, &step, &old, &report),
        Some(vec![OWN_POD.to_string()])
    );
    // Accounts without the step role, people and the controller: left to
    // RBAC.
    let operator = vec!["/pods/get".to_string(), "/pods/patch".to_string()];
    let other_account = by("default:deployer", "web-7d9f8-x2b4q");
    assert_eq!(
        policy_verdict(&other_account, &operator, &other_old, &other_new),
        None
    );
    let controller = by("tektite:tektite-controller", "tektite-controller-5d8-abcde");
    let controller_grants = grants_of("tektite-controller");
    assert_eq!(
        policy_verdict(&controller, &controller_grants, &old, &spec),
        None
    );
    let no_pod = json!({"userInfo": {"username": "alice"}});
    assert_eq!(policy_verdict(&no_pod, &step, &old, &spec), None);
}

/// The policy is bound with no parameter object, so nothing missing can
/// switch it off, and every account bound to the step role is held by it
/// (the role itself carries the match): there is no list of accounts to
/// leave one out of. Accounts without the role are never matched, so the
/// policy refuses no one else's pod updates; one allowed everything is
/// RBAC's concern.
#[test]
fn the_step_policy_fails_closed_for_every_account_bound_to_the_step_role() {
    let docs = built();
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .unwrap();
    assert!(policy["spec"].get("paramKind").is_none(), "{policy}");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    assert!(binding["spec"].get("paramRef").is_none(), "{binding}");

    // A step account listed nowhere (bound to the role in `ci`), swapping
    // another pod's image: refused.
    let step = grants_of("tektite-step-reporter");
    let victim_old = json!({"metadata": {"name": "api-7c9-x", "namespace": "ci"},
                            "spec": {"containers": [{"name": "api", "image": "api:1"}]}});
    let mut victim_new = victim_old.clone();
    victim_new["spec"]["containers"][0]["image"] = json!("evil:1");
    let builder = by("ci:builder", "release-pod");
    let refused = policy_verdict(&builder, &step, &victim_old, &victim_new).unwrap();
    assert!(refused.contains(&OWN_POD.to_string()), "{refused:?}");
    assert!(
        refused.contains(&"a step may not change its pod's spec".to_string()),
        "{refused:?}"
    );

    // Everyone else: not matched, whatever they patch.
    let operator = vec!["/pods/get".to_string(), "/pods/patch".to_string()];
    let cluster_admin = vec!["*/*/*".to_string()];
    for grants in [operator, cluster_admin, vec![]] {
        let deployer = by("ci:deployer", "deployer-5f-q");
        assert_eq!(
            policy_verdict(&deployer, &grants, &victim_old, &victim_new),
            None,
            "{grants:?}"
        );
    }
}

/// The entrypoint only PATCHes its own pod (entrypoint/src/patch.rs): the
/// step role may not read pods, so a step cannot read the specs (env,
/// images) of the other pods of its namespace.
#[test]
fn the_step_role_cannot_read_pods() {
    let grants = grants_of("tektite-step-reporter");
    assert_eq!(grants, ["/pods/patch", "tektite.dev/stepreports/report"]);
    for verb in ["get", "list", "watch", "*"] {
        assert!(
            !grants.contains(&format!("/pods/{verb}")),
            "{verb}: {grants:?}"
        );
    }
}

/// What a step may write on its own pod: the report of one of its steps,
/// once. Not another container's key, not a changed or removed report, and
/// not the controller's annotations (`sidecars-stopped` would hide a failed
/// sidecar, `tekton.dev/ready` release the steps early).
#[test]
fn steps_may_write_each_step_report_once_and_nothing_the_controller_owns() {
    let step = grants_of("tektite-step-reporter");
    let request = by("default:default", "build-pod");
    let verdict = |old: Value, new: Value| {
        let (old, new) = (step_pod("build-pod", old), step_pod("build-pod", new));
        policy_verdict(&request, &step, &old, &new).unwrap()
    };
    let first = json!({"tektite.dev/step.step-a": "{\"exitCode\":0}"});
    // Once; the same value again (a retried PATCH) changes nothing.
    assert_eq!(verdict(json!({}), first.clone()), Vec::<String>::new());
    assert_eq!(verdict(first.clone(), first.clone()), Vec::<String>::new());
    // Changed or removed once written.
    let changed = json!({"tektite.dev/step.step-a": "{\"exitCode\":1}"});
    assert_eq!(verdict(first.clone(), changed), [KEEP]);
    assert_eq!(verdict(first, json!({})), [KEEP]);
    // Keys that are not a report of one of the pod's steps.
    for key in [
        "tektite.dev/sidecars-stopped",
        "tektite.dev/step.sidecar-db",
        "tektite.dev/step.step-b",
        "tektite.dev/other",
        "tekton.dev/ready",
    ] {
        assert_eq!(
            verdict(json!({}), json!({key: "true"})),
            [ONLY_REPORTS],
            "{key}"
        );
    }
    // The controller's, once set, stay as they are.
    let stopped = json!({"tektite.dev/sidecars-stopped": "true", "tekton.dev/ready": "READY"});
    assert_eq!(
        verdict(stopped, json!({"tekton.dev/ready": "READY"})),
        [KEEP]
    );
}

/// Resolver credentials: the default install reads no Secret; the optional
/// role grants `get` on Secrets and nothing else.
#[test]
fn the_resolver_secrets_role_is_optional_and_only_reads_secrets() {
    let docs = built();
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "tektite-resolver-secrets"),
        "the default install binds the Secrets role"
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config/optional/rbac-resolver-secrets.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let values = tektite_api::yaml::parse_values(&text).unwrap();
    let role = values.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])
    );
    let binding = values
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "tektite-controller");
    assert_eq!(binding["roleRef"]["name"], "tektite-resolver-secrets");
}

#[test]
fn the_s3_patch_moves_the_archive_to_a_bucket_with_two_replicas() {
    // kustomize takes relative paths only: from the temp dir up to / and
    // down to the config.
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().canonicalize().unwrap().components().count() - 1);
    let config = format!(
        "{up}{}",
        config.display().to_string().trim_start_matches('/')
    );
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "resources: [{config}]\npatches:\n  - path: {config}/optional/log-archive-s3.yaml\n"
        ),
    )
    .unwrap();
    let out = Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = tektite_api::yaml::parse_values(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let dep: Deployment = serde_json::from_value(dep.clone()).unwrap();
    let spec = dep.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    let env = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .map(|e| (e.value.clone(), e.value_from.is_some()))
    };
    assert_eq!(
        env("TEKTITE_LOG_ARCHIVE").unwrap().0.as_deref(),
        Some("s3://tektite-logs/cluster-a")
    );
    assert_eq!(env("AWS_SECRET_ACCESS_KEY"), Some((None, true)));
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(!mounts.contains(&"/var/lib/tektite/logs"), "{mounts:?}");
    assert!(mounts.contains(&"/etc/tektite/logs-tls"), "{mounts:?}");
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(!volumes.contains(&"logs"), "{volumes:?}");
    assert!(
        c.args
            .iter()
            .flatten()
            .any(|a| a.starts_with("--logs-tls-cert="))
    );
}
