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
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
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
    assert_eq!(docs.len(), 18, "objects built");
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
    let constraints = spec.match_constraints.unwrap();
    // Every pod: a step may not patch pods Tektite did not make either.
    assert!(constraints.object_selector.is_none());
    assert_eq!(spec.param_kind.unwrap().kind.as_deref(), Some("ConfigMap"));
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
        "k.startsWith('tektite.dev/')",
    ] {
        assert!(all.contains(needle), "no {needle:?} in the policy");
    }
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    assert_eq!(binding["spec"]["policyName"], "tektite-step-reports");
    assert_eq!(binding["spec"]["validationActions"][0], "Deny");
    // Its parameter exists, and lists every service account the step
    // reporter role is bound to: none of them patches pods unchecked.
    let params = &binding["spec"]["paramRef"];
    let accounts = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == params["name"]
                && d["metadata"]["namespace"] == params["namespace"]
        })
        .unwrap_or_else(|| panic!("no ConfigMap {params}"));
    let listed: Vec<&str> = accounts["data"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    let bound: Vec<String> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("RoleBinding" | "ClusterRoleBinding")
            ) && d["roleRef"]["name"] == "tektite-step-reporter"
        })
        .flat_map(|d| d["subjects"].as_array().unwrap().clone())
        .map(|s| {
            assert_eq!(s["kind"], "ServiceAccount", "{s}");
            format!(
                "{}:{}",
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(!bound.is_empty());
    for b in &bound {
        assert!(listed.contains(&b.as_str()), "{b} is not in {listed:?}");
    }
    // The step reporter role: get and patch pods, nothing else.
    let r = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "tektite-step-reporter")
        .unwrap();
    assert_eq!(
        r["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}])
    );
}

#[test]
fn the_crds_are_the_generated_ones() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for e in std::fs::read_dir(root.join("crds")).unwrap() {
        let p = e.unwrap().path();
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

/// The step annotation policy's verdict on one update, evaluated with a CEL
/// interpreter the way an API server runs a ValidatingAdmissionPolicy:
/// `None` when its match conditions leave the request alone, else
/// `Some(messages of the validations that failed)`.
fn policy_verdict(request: &Value, old: &Value, new: &Value) -> Option<Vec<String>> {
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
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    let params = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap" && d["metadata"]["name"] == binding["spec"]["paramRef"]["name"]
        })
        .unwrap();
    let mut ctx = cel::Context::default();
    ctx.add_variable("params", params.clone()).unwrap();
    ctx.add_variable("request", request.clone()).unwrap();
    ctx.add_variable("object", new.clone()).unwrap();
    ctx.add_variable("oldObject", old.clone()).unwrap();
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

#[test]
fn the_policy_admits_a_steps_own_report_and_refuses_everything_else() {
    // `default:default` is the step service account the install lists.
    let user = |pod: &str, account: &str| {
        json!({"username": format!("system:serviceaccount:{account}"),
               "extra": {"authentication.kubernetes.io/pod-name": [pod]}})
    };
    let request = |pod: &str| json!({"userInfo": user(pod, "default:default")});
    let pod = |name: &str, annotations: Value| {
        json!({"metadata": {"name": name, "namespace": "default",
                            "labels": {"tekton.dev/taskRun": "build"},
                            "annotations": annotations},
               "spec": {"containers": [{"name": "step-a", "image": "busybox"}]}})
    };
    let old = pod("build-pod", json!({"tekton.dev/ready": "READY"}));
    let report = pod(
        "build-pod",
        json!({"tekton.dev/ready": "READY", "tektite.dev/step.step-a": "{\"exitCode\":0}"}),
    );
    // Its own report: admitted (a retry's pod too).
    assert_eq!(
        policy_verdict(&request("build-pod"), &old, &report),
        Some(vec![])
    );
    let retry_old = pod("build-pod-retry2", json!({}));
    let retry_new = pod("build-pod-retry2", json!({"tektite.dev/step.step-a": "{}"}));
    assert_eq!(
        policy_verdict(&request("build-pod-retry2"), &retry_old, &retry_new),
        Some(vec![])
    );
    // Another pod, Tektite's or not.
    let other_old = pod("deploy-pod", json!({}));
    let other_new = pod("deploy-pod", json!({"tektite.dev/step.step-a": "{}"}));
    assert_eq!(
        policy_verdict(&request("build-pod"), &other_old, &other_new),
        Some(vec![OWN_POD.to_string()])
    );
    // A pod of the same name in another namespace.
    let mut elsewhere_old = old.clone();
    elsewhere_old["metadata"]["namespace"] = json!("prod");
    let mut elsewhere_new = report.clone();
    elsewhere_new["metadata"]["namespace"] = json!("prod");
    assert_eq!(
        policy_verdict(&request("build-pod"), &elsewhere_old, &elsewhere_new),
        Some(vec![OWN_POD.to_string()])
    );
    let db_old =
        json!({"metadata": {"name": "db-0", "namespace": "default"}, "spec": {"containers": []}});
    let mut db_new = db_old.clone();
    db_new["metadata"]["labels"] = json!({"role": "primary"});
    let refused = policy_verdict(&request("build-pod"), &db_old, &db_new).unwrap();
    assert!(
        refused.contains(&OWN_POD.to_string())
            && refused.contains(&"a step may not change its pod's labels".to_string()),
        "{refused:?}"
    );
    // Its own pod, beyond the reports.
    let mut spec = report.clone();
    spec["spec"]["containers"][0]["image"] = json!("evil");
    assert_eq!(
        policy_verdict(&request("build-pod"), &old, &spec),
        Some(vec!["a step may not change its pod's spec".to_string()])
    );
    let mut labels = report.clone();
    labels["metadata"]["labels"]["tekton.dev/taskRun"] = json!("other");
    assert_eq!(
        policy_verdict(&request("build-pod"), &old, &labels),
        Some(vec!["a step may not change its pod's labels".to_string()])
    );
    let mut owners = report.clone();
    owners["metadata"]["finalizers"] = json!(["x"]);
    assert_eq!(
        policy_verdict(&request("build-pod"), &old, &owners),
        Some(vec![
            "a step may not change its pod's owners or finalizers".to_string()
        ])
    );
    for annotations in [
        json!({"tekton.dev/ready": "READY", "other/key": "x"}),
        json!({}),
        json!({"tekton.dev/ready": "NOT"}),
    ] {
        let new = pod("build-pod", annotations.clone());
        assert_eq!(
            policy_verdict(&request("build-pod"), &old, &new),
            Some(vec![
                "a step may change only its pod's tektite.dev/ annotations".to_string()
            ]),
            "{annotations}"
        );
    }
    // The step's account from a pod of another kind, or with a token bound
    // to no pod: no pod but its own, and none at all without one.
    assert_eq!(
        policy_verdict(&request("web-7d9f8-x2b4q"), &other_old, &other_new),
        Some(vec![OWN_POD.to_string()])
    );
    let unbound = json!({"userInfo": {"username": "system:serviceaccount:default:default"}});
    assert_eq!(
        policy_verdict(&unbound, &old, &report),
        Some(vec![OWN_POD.to_string()])
    );
    // Accounts not listed, users and the controller: left to RBAC.
    let other_account = json!({"userInfo": user("web-7d9f8-x2b4q", "default:deployer")});
    assert_eq!(policy_verdict(&other_account, &other_old, &other_new), None);
    let controller = json!({"userInfo": {
        "username": "system:serviceaccount:tektite:tektite-controller",
        "extra": {"authentication.kubernetes.io/pod-name": ["tektite-controller-5d8-abcde"]}}});
    assert_eq!(policy_verdict(&controller, &old, &spec), None);
    let no_pod = json!({"userInfo": {"username": "alice"}});
    assert_eq!(policy_verdict(&no_pod, &old, &spec), None);
}
