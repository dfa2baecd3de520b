//! `tkt validate` and the API loader on the corpora in `tests/corpus/`:
//! - `valid/`: documents written by us that together use every field;
//!   they validate cleanly and round-trip through the types losslessly.
//! - `v1beta1/`: `X.yaml` converts to exactly the v1 document `X.v1.yaml`.
//! - `bad/`: one mistake per file; `X.out` is the exact expected report.

#[allow(dead_code)]
mod util;

use serde_json::Value;
use tektite_api::yaml::parse_documents;
use tektite_api::{load_file, load_str};
use util::{files, stdout, tests_dir, tkt, tkt_stdin};

#[test]
fn valid_corpus_validates_cleanly() {
    let o = tkt(&["validate", "-f", "corpus/valid"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(out, "OK: 11 object(s) valid\n");
}

/// Every document of the valid corpus, as JSON, equals what the typed object
/// serializes back to: no field is lost, renamed or defaulted.
#[test]
fn valid_corpus_round_trips_losslessly() {
    let mut checked = 0;
    for path in files(&tests_dir().join("corpus/valid"), "") {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut originals: Vec<Value> = Vec::new();
        for doc in parse_documents(&text).unwrap() {
            let v = doc.root.to_json();
            match v.get("items") {
                Some(Value::Array(items)) => originals.extend(items.iter().cloned()),
                _ => originals.push(v),
            }
        }
        let loaded = load_file(&path);
        assert!(
            loaded.diagnostics.is_empty(),
            "{}: {:?}",
            path.display(),
            loaded.diagnostics
        );
        assert_eq!(loaded.objects.len(), originals.len(), "{}", path.display());
        for (object, original) in loaded.objects.iter().zip(&originals) {
            let back = object.object.to_json();
            let mut diffs = Vec::new();
            diff(original, &back, "", &mut diffs);
            assert!(
                diffs.is_empty(),
                "{object} does not round-trip:\n{}",
                diffs.join("\n")
            );
            // And once more through text.
            let again = load_str("again.json", &serde_json::to_string(&back).unwrap());
            assert_eq!(again.objects[0].object, object.object);
            checked += 1;
        }
    }
    assert_eq!(checked, 11);
}

/// Paths where two JSON values differ (mapping order ignored).
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: lost")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: added"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

#[test]
fn v1beta1_documents_convert_to_their_v1_form() {
    let dir = tests_dir().join("corpus/v1beta1");
    let mut checked = 0;
    for input in files(&dir, ".yaml")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".v1.yaml"))
    {
        let expected_path = input.with_extension("v1.yaml");
        let got = load_file(&input);
        let want = load_file(&expected_path);
        assert!(
            got.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            got.diagnostics
        );
        assert!(want.diagnostics.is_empty(), "{:?}", want.diagnostics);
        assert_eq!(got.objects.len(), 1);
        assert_eq!(got.objects[0].source_version, "tekton.dev/v1beta1");
        assert_eq!(
            got.objects[0].object.to_json(),
            want.objects[0].object.to_json(),
            "{} does not convert to {}",
            input.display(),
            expected_path.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn v1beta1_deprecated_fields_are_warnings_not_errors() {
    let o = tkt(&["validate", "-f", "corpus/v1beta1/task.yaml"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains(
        "warning: corpus/v1beta1/task.yaml:32: Task/golang-test (document 1): spec.steps[0].ports: ports is deprecated"
    ), "{out}");
    assert!(
        out.ends_with("OK: 1 object(s) valid, 2 warning(s)\n"),
        "{out}"
    );
}

/// Each bad document gets exactly the report in its `.out` file and exit code 2.
#[test]
fn bad_corpus_reports_exact_errors() {
    let dir = tests_dir().join("corpus/bad");
    let cases = files(&dir, ".yaml");
    assert!(cases.len() >= 40, "only {} bad-input cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let rel = format!("corpus/bad/{}", case.file_name().unwrap().to_string_lossy());
        let expected = std::fs::read_to_string(case.with_extension("out")).unwrap_or_default();
        let o = tkt(&["validate", "-f", &rel]);
        let got = stdout(&o);
        if o.status.code() != Some(2) || got != expected {
            failures.push(format!(
                "{rel}: exit {:?}\n--- expected\n{expected}--- got\n{got}",
                o.status.code()
            ));
        }
        // Every error names the file and (except file-level ones) a line.
        for line in got.lines().filter(|l| l.starts_with("corpus/")) {
            assert!(line.starts_with(&format!("{rel}:")), "{line}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_output_lists_objects_and_diagnostics() {
    let o = tkt(&[
        "validate",
        "-o",
        "json",
        "-f",
        "corpus/bad/23-runafter-unknown-task.yaml",
        "corpus/valid/list.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["objects"].as_array().unwrap().len(), 4);
    assert_eq!(v["objects"][1]["kind"], "Pipeline");
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "corpus/bad/23-runafter-unknown-task.yaml");
    assert_eq!(d["document"], 1);
    assert_eq!(d["object"], "Pipeline/p");
    assert_eq!(d["line"], 11);
    assert_eq!(d["path"], "spec.tasks[1].runAfter[0]");
    assert_eq!(
        d["message"],
        "unknown task \"tset\" (did you mean \"test\"?)"
    );

    let o = tkt(&["validate", "-o", "json", "-f", "corpus/valid/list.json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"], Value::Array(vec![]));
}

#[test]
fn references_across_files_are_checked() {
    // The PipelineRun names a Pipeline given in another file.
    let dir = std::env::temp_dir().join(format!("tkt-xref-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = dir.join("run.yaml");
    std::fs::write(
        &run,
        "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  generateName: hello-\nspec:\n  pipelineRef:\n    name: hello\n",
    )
    .unwrap();
    let run = run.to_string_lossy().into_owned();
    let o = tkt(&["validate", "-f", &run]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "alone, the Pipeline is unknown and not checked"
    );
    let o = tkt(&["validate", "-f", &run, "corpus/valid/pipeline-full.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = tkt(&["validate", "-f", "corpus/valid/list.json", &run]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    std::fs::write(
        dir.join("run.yaml"),
        "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  generateName: ci-\nspec:\n  pipelineRef:\n    name: ci\n  taskRunSpecs:\n    - pipelineTaskName: tets\n",
    )
    .unwrap();
    let o = tkt(&["validate", "-f", &run, "corpus/valid/pipeline-full.yaml"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("spec.params: missing value for required param of Pipeline \"ci\": repo-url"),
        "{out}"
    );
    assert!(
        out.contains("spec.workspaces: Pipeline \"ci\" needs workspace that is not bound: shared"),
        "{out}"
    );
    assert!(out.contains(":9: PipelineRun/ci-* (document 1): spec.taskRunSpecs[0].pipelineTaskName: the Pipeline has no task \"tets\" (did you mean \"test\"?)"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn same_object_twice_is_an_error() {
    let dir = std::env::temp_dir().join(format!("tkt-twice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("copy.json");
    std::fs::copy(tests_dir().join("corpus/valid/list.json"), &copy).unwrap();
    let copy = copy.to_string_lossy().into_owned();
    let o = tkt(&["validate", "-f", "corpus/valid/list.json", &copy]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "{copy}:8: Pipeline/hello (document 1): metadata.name: Pipeline \"hello\" is defined twice (first in corpus/valid/list.json, document 1)"
        )),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stdin_unreadable_files_and_usage_errors() {
    let text =
        std::fs::read_to_string(tests_dir().join("corpus/bad/17-enum-onerror.yaml")).unwrap();
    let o = tkt_stdin(&["validate", "-f", "-"], Some(&text));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).starts_with("<stdin>:9: Task/t (document 1): spec.steps[0].onError:"),
        "{}",
        stdout(&o)
    );

    let o = tkt(&["validate", "-f", "corpus/does-not-exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).starts_with("corpus/does-not-exist.yaml: cannot read file:"),
        "{}",
        stdout(&o)
    );

    let o = tkt(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "missing -f is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--filename"));
    let o = tkt(&["validate", "-f", "x.yaml", "-o", "xml"]);
    assert_eq!(o.status.code(), Some(2));
}

/// What Tekton's webhook accepts is only warned about, so existing Tasks
/// (the catalog's included) still validate.
#[test]
fn what_tekton_accepts_is_only_a_warning() {
    let o = tkt(&["validate", "-f", "corpus/warn/lenient.yaml"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let expected = [
        "warning: corpus/warn/lenient.yaml:4: ServiceAccount/builder (document 1): apiVersion: \"v1\" is not a Tekton API version: not checked",
        "warning: corpus/warn/lenient.yaml:20: Task/legacy (document 2): spec.steps[0].image: $(inputs.params.image) is deprecated: use $(params.image)",
        "warning: corpus/warn/lenient.yaml:24: Task/legacy (document 2): spec.steps[0].env[0].value: $(workspaces.output.path) refers to workspace \"output\", which the Task does not declare; it would be left as written",
        "warning: corpus/warn/lenient.yaml:28: Task/legacy (document 2): spec.steps[0].env[1].valueFrom.secretKeyRef.name: $(params.token-secret) refers to param \"token-secret\", which the Task does not declare (Tekton does not check this field; the reference would be left as written)",
        "OK: 3 object(s) valid, 4 warning(s)",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
}

/// A document with many problems shows the first hundred and counts the
/// rest; `--max-errors` shows more or fewer (0: all).
#[test]
fn many_problems_are_capped_per_document() {
    let refs: String = (0..250).map(|i| format!("$(params.p{i}) ")).collect();
    let yaml = format!(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: t\nspec:\n  steps:\n    - name: s\n      image: alpine\n      script: \"{refs}\"\n"
    );
    let problems = |o: &std::process::Output| {
        stdout(o)
            .lines()
            .filter(|l| l.contains("which the Task does not declare"))
            .count()
    };
    let o = tkt_stdin(&["validate", "-f", "-"], Some(&yaml));
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert_eq!(problems(&o), 100, "{out}");
    assert!(
        out.contains("150 more problem(s) in this document not shown (the first 100 are; --max-errors 0 shows all)"),
        "{out}"
    );
    let o = tkt_stdin(&["validate", "--max-errors", "0", "-f", "-"], Some(&yaml));
    assert_eq!(problems(&o), 250, "{}", stdout(&o));
    assert!(!stdout(&o).contains("not shown"));
    let o = tkt_stdin(&["validate", "--max-errors", "5", "-f", "-"], Some(&yaml));
    assert_eq!(problems(&o), 5, "{}", stdout(&o));
}

/// ConfigMaps and Secrets given with Tekton objects are checked (base64,
/// keys, fields) and counted, not skipped as other Kubernetes objects are.
#[test]
fn configmaps_and_secrets_are_checked_not_skipped() {
    let ok = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a.txt: x}\nbinaryData: {b: AAE=}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {p: aGk=}\nstringData: {u: me}\n";
    let o = tkt_stdin(&["validate", "-f", "-"], Some(ok));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "OK: 2 object(s) valid\n");
    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  p: not base64!\n  'a/b': aGk=\nspec: {}\n";
    let o = tkt_stdin(&["validate", "-f", "-"], Some(bad));
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    for line in [
        "<stdin>:5: Secret/s (document 1): data.p: not valid base64",
        "<stdin>:6: Secret/s (document 1): data[\"a/b\"]: invalid key \"a/b\"",
        "<stdin>:7: Secret/s (document 1): spec: unknown field in a Secret",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    assert!(!out.contains("aGk"), "no value is shown: {out}");
}
