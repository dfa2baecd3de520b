use super::*;
use tektite_api::data::DataObject;

fn data() -> DataSet {
    let mut d = DataSet::default();
    let obj = |kind, name: &str, kv: &[(&str, &str)]| DataObject {
        kind,
        name: name.into(),
        entries: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        binary_keys: Default::default(),
    };
    d.insert(obj(
        DataKind::Secret,
        "s",
        &[("user", "u1"), ("pass", "p4ss")],
    ));
    d.insert(obj(DataKind::ConfigMap, "c", &[("a", "1"), ("b", "2")]));
    d
}

fn pod(yaml: &str) -> Pod {
    let v = tektite_api::yaml::parse_values(yaml).unwrap().remove(0);
    serde_json::from_value(v).unwrap()
}

fn env(m: &Materialized) -> Vec<(String, String)> {
    m.pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn env_from_keys_and_env_from_with_prefix_become_values() {
    let p = pod(r#"
spec:
  containers:
  - name: step-a
    envFrom:
    - configMapRef: {name: c}
      prefix: CM_
    - secretRef: {name: missing, optional: true}
    env:
    - {name: U, valueFrom: {secretKeyRef: {name: s, key: user}}}
    - {name: X, valueFrom: {configMapKeyRef: {name: c, key: nope, optional: true}}}
    - {name: CM_a, value: over}
"#);
    let m = materialize(&p, &data(), Path::new("/v")).unwrap();
    assert_eq!(
        env(&m),
        [
            ("CM_a".to_string(), "1".to_string()),
            ("CM_b".into(), "2".into()),
            ("U".into(), "u1".into()),
            ("CM_a".into(), "over".into()),
        ]
    );
}

#[test]
fn missing_objects_and_keys_fail_with_kubernetes_messages() {
    let p = pod(
        "spec:\n  containers:\n  - name: s\n    env:\n    - {name: U, valueFrom: {secretKeyRef: {name: s1, key: k}}}\n",
    );
    assert_eq!(
        materialize(&p, &data(), Path::new("/v")).unwrap_err(),
        "secret \"s1\" not found"
    );
    let p = pod(
        "spec:\n  containers:\n  - name: s\n    env:\n    - {name: U, valueFrom: {secretKeyRef: {name: s, key: k}}}\n",
    );
    assert_eq!(
        materialize(&p, &data(), Path::new("/v")).unwrap_err(),
        "couldn't find key k in Secret default/s"
    );
}

#[test]
fn volumes_become_read_only_directories_with_their_files() {
    let p = pod(r#"
spec:
  containers:
  - name: step-a
    volumeMounts: [{name: sec, mountPath: /s}, {name: pro, mountPath: /p}, {name: e, mountPath: /e}]
  volumes:
  - name: sec
    secret: {secretName: s, defaultMode: 256, items: [{key: pass, path: sub/pw}, {key: user, path: u, mode: 0o600}]}
  - name: pro
    projected:
      sources:
      - configMap: {name: c, items: [{key: a, path: a.txt}]}
      - secret: {name: nope, optional: true}
  - name: e
    emptyDir: {}
"#);
    let m = materialize(&p, &data(), Path::new("/v")).unwrap();
    let files: Vec<(String, String, u32)> = m
        .volumes
        .iter()
        .flat_map(|v| {
            v.files.iter().map(move |f| {
                (
                    format!("{}/{}", v.volume, f.path),
                    String::from_utf8(f.bytes.clone()).unwrap(),
                    f.mode,
                )
            })
        })
        .collect();
    assert_eq!(
        files,
        [
            ("sec/sub/pw".to_string(), "p4ss".to_string(), 0o400),
            ("sec/u".into(), "u1".into(), 0o600),
            ("pro/a.txt".into(), "1".into(), 0o644),
        ]
    );
    let spec = m.pod.spec.unwrap();
    let vols = spec.volumes.unwrap();
    assert_eq!(vols[0].host_path.as_ref().unwrap().path, "/v/sec");
    assert!(vols[2].empty_dir.is_some(), "others stay");
    let ro: Vec<Option<bool>> = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.read_only)
        .collect();
    assert_eq!(ro, [Some(true), Some(true), None]);
}

#[test]
fn unsupported_sources_and_escaping_items_are_refused() {
    let p = pod(
        "spec:\n  containers: [{name: s}]\n  volumes:\n  - name: n\n    nfs: {server: x, path: /}\n",
    );
    let e = materialize(&p, &data(), Path::new("/v")).unwrap_err();
    assert!(e.contains("nfs volumes are not supported"), "{e}");
    let p = pod(
        "spec:\n  containers: [{name: s}]\n  volumes:\n  - name: n\n    configMap: {name: c, items: [{key: a, path: ../x}]}\n",
    );
    let e = materialize(&p, &data(), Path::new("/v")).unwrap_err();
    assert!(e.contains("without '..'"), "{e}");
}

#[test]
fn the_checker_names_the_field_and_substitutes_params() {
    let spec: TaskSpec = serde_json::from_value(serde_json::json!({
        "steps": [{"name": "a", "image": "x", "env": [
            {"name": "A", "value": "v"},
            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "$(params.s)", "key": "k"}}}
        ]}],
        "volumes": [{"name": "v", "configMap": {"name": "gone", "optional": true}}]
    }))
    .unwrap();
    let mut vars = Vars::new(&["params."]);
    vars.set_str("params.s", "s");
    let d = data();
    let mut c = Checker {
        data: &d,
        vars: Some(&vars),
        problems: Vec::new(),
    };
    c.check_task(&spec, "spec.taskSpec");
    assert_eq!(
        c.problems,
        [Problem {
            path: "spec.taskSpec.steps[0].env[1].valueFrom.secretKeyRef".into(),
            message: "Secret \"s\" has no key \"k\"".into()
        }]
    );
}
