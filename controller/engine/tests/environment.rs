//! The `tektite.dev/environment` label a PipelineRun gets from its
//! Pipeline's annotation (what makes it a deployment for DORA): resolved
//! over the run's params and the Pipeline's defaults; a run's own label
//! wins; a value that is not a label value is refused, saying why.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use tektite_api::param::ParamValue;
use tektite_api::v1::{Param, ParamSpec, PipelineRun, PipelineRunSpec, PipelineSpec};
use tektite_engine::dora::ENVIRONMENT_LABEL;
use tektite_engine::pipelinerun::environment_label;

fn pipeline() -> PipelineSpec {
    PipelineSpec {
        params: vec![ParamSpec {
            name: "environment".into(),
            default: Some(ParamValue::String("dev".into())),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn run(environment: Option<&str>, label: Option<&str>) -> PipelineRun {
    let mut pr = PipelineRun::new("r", PipelineRunSpec::default());
    pr.metadata.namespace = Some("ci".into());
    if let Some(e) = environment {
        pr.spec.params.push(Param {
            name: "environment".into(),
            value: ParamValue::String(e.into()),
        });
    }
    if let Some(l) = label {
        pr.metadata.labels = Some(BTreeMap::from([(ENVIRONMENT_LABEL.into(), l.into())]));
    }
    pr
}

fn annotations(value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ENVIRONMENT_LABEL.to_string(), value.to_string())])
}

fn label(pr: &PipelineRun, value: &str) -> Option<Result<String, String>> {
    environment_label(pr, (&pipeline(), Some("ci-cd")), &annotations(value))
}

#[test]
fn the_label_comes_from_the_param_or_its_default() {
    let env = "$(params.environment)";
    assert_eq!(
        label(&run(Some("prod"), None), env),
        Some(Ok("prod".into()))
    );
    assert_eq!(label(&run(None, None), env), Some(Ok("dev".into())));
    assert_eq!(
        label(
            &run(Some("stage"), None),
            "$(context.pipeline.name)-$(params.environment)"
        ),
        Some(Ok("ci-cd-stage".into()))
    );
}

#[test]
fn a_runs_own_label_wins_and_no_annotation_is_no_label() {
    assert_eq!(
        label(&run(Some("prod"), Some("qa")), "$(params.environment)"),
        None
    );
    let none = environment_label(
        &run(Some("prod"), None),
        (&pipeline(), None),
        &BTreeMap::new(),
    );
    assert_eq!(none, None);
}

#[test]
fn a_value_that_is_not_a_label_value_is_refused() {
    for bad in ["prod env", "-prod", &"x".repeat(64), ""] {
        let e = label(&run(Some(bad), None), "$(params.environment)")
            .unwrap()
            .unwrap_err();
        assert!(
            e.starts_with(r#"pipeline metadata.annotations["tektite.dev/environment"]: "#)
                && e.contains("is not a label value"),
            "{bad:?}: {e}"
        );
    }
}
