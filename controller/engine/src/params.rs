//! The param values a Task runs with: the run's values over the Task's
//! defaults, checked against the declarations as Tekton's reconciler does.

use std::collections::BTreeMap;

use tektite_api::param::ParamValue;
use tektite_api::v1::{Param, ParamSpec};

use crate::subst::Vars;

/// A user error that fails a run (never retried): Tekton's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The type a param is declared with, defaulted as Tekton does: explicit
/// `type`, else `object` when it has `properties`, else the default's type,
/// else `string`.
pub fn declared_kind(ps: &ParamSpec) -> &str {
    if let Some(t) = ps.type_.as_deref() {
        return t;
    }
    if !ps.properties.is_empty() {
        return "object";
    }
    ps.default.as_ref().map_or("string", ParamValue::kind)
}

/// A whole-value reference (`$(params.x)`, `$(tasks.t.results.r[*])`), which
/// may stand for an array or object until it is substituted.
fn is_reference(v: &ParamValue) -> bool {
    matches!(v, ParamValue::String(s) if s.starts_with("$(") && s.ends_with(')'))
}

/// Resolves the values of `declared` params from `given` (a run's or a
/// PipelineTask's) and the defaults. Params given but not declared are kept:
/// they reach embedded specs (Tekton's implicit propagation).
///
/// `merge_objects`: an object value given for an object param keeps the
/// default's other keys (TaskRuns do; PipelineRuns replace the object).
///
/// # Errors
/// `reason` with every missing param, every type mismatch, missing object
/// keys; `InvalidParamValue` for a value outside the param's `enum`.
pub fn resolve(
    declared: &[ParamSpec],
    given: &[Param],
    merge_objects: bool,
    reason: &'static str,
    owner: &str,
) -> Result<BTreeMap<String, ParamValue>, Failure> {
    let given_map: BTreeMap<&str, &ParamValue> =
        given.iter().map(|p| (p.name.as_str(), &p.value)).collect();
    let mut out = BTreeMap::new();
    let mut problems = Problems::default();
    for ps in declared {
        let Some(value) = value_of(ps, given_map.get(ps.name.as_str()).copied(), merge_objects)
        else {
            problems.missing.push(ps.name.clone());
            continue;
        };
        if value.kind() != declared_kind(ps) && !is_reference(&value) {
            problems.mismatched.push(ps.name.clone());
            continue;
        }
        if let Some(lacking) = lacking_keys(ps, &value) {
            problems.missing_keys.push(lacking);
        }
        check_enum(ps, &value, owner)?;
        out.insert(ps.name.clone(), value);
    }
    problems.check(reason, owner)?;
    for p in given {
        out.entry(p.name.clone()).or_insert_with(|| p.value.clone());
    }
    substitute_defaults(&mut out, declared, given);
    Ok(out)
}

/// A declared param's value: the one `given`, else its default (an object
/// given over an object default keeps the default's other keys when
/// `merge_objects`); `None` when it has neither.
fn value_of(ps: &ParamSpec, given: Option<&ParamValue>, merge_objects: bool) -> Option<ParamValue> {
    match (given, &ps.default) {
        (Some(v), Some(ParamValue::Object(d))) if merge_objects => match v {
            ParamValue::Object(o) => {
                let mut m = d.clone();
                m.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
                Some(ParamValue::Object(m))
            }
            other => Some(other.clone()),
        },
        (Some(v), _) => Some(v.clone()),
        (None, Some(d)) => Some(d.clone()),
        (None, None) => None,
    }
}

/// `name:[key ...]` for an object value that lacks keys its declaration's
/// `properties` require.
fn lacking_keys(ps: &ParamSpec, value: &ParamValue) -> Option<String> {
    let ParamValue::Object(o) = value else {
        return None;
    };
    let lacking: Vec<&str> = ps
        .properties
        .keys()
        .filter(|k| !o.contains_key(*k))
        .map(String::as_str)
        .collect();
    (!lacking.is_empty()).then(|| format!("{}:[{}]", ps.name, lacking.join(" ")))
}

/// Fails with `InvalidParamValue` when a string value (not a reference) is
/// outside the param's `enum`.
fn check_enum(ps: &ParamSpec, value: &ParamValue, owner: &str) -> Result<(), Failure> {
    if !ps.enum_.is_empty()
        && let ParamValue::String(s) = value
        && !is_reference(value)
        && !ps.enum_.contains(s)
    {
        return Err(Failure::new(
            "InvalidParamValue",
            format!(
                "param {:?} value {s:?} is not in the enum [{}] of {owner}",
                ps.name,
                ps.enum_.join(" ")
            ),
        ));
    }
    Ok(())
}

/// What is wrong with the params, gathered so that one message names it all.
#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    mismatched: Vec<String>,
    missing_keys: Vec<String>,
}

impl Problems {
    /// One `reason` failure naming every problem, in Tekton's words.
    fn check(self, reason: &'static str, owner: &str) -> Result<(), Failure> {
        let mut problems = Vec::new();
        if !self.missing.is_empty() {
            problems.push(format!(
                "missing values for these params which have no default values: [{}]",
                self.missing.join(" ")
            ));
        }
        if !self.mismatched.is_empty() {
            problems.push(format!(
                "param types don't match the user-specified type: [{}]",
                self.mismatched.join(" ")
            ));
        }
        if !self.missing_keys.is_empty() {
            problems.push(format!(
                "missing keys for these params which are required in ParamSpec's properties map[{}]",
                self.missing_keys.join(" ")
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Failure::new(
            reason,
            format!("invalid input params for {owner}: {}", problems.join("; ")),
        ))
    }
}

/// A default may refer to other params (`default: $(params.base)/sub`):
/// one pass with the values known so far, as Tekton does.
fn substitute_defaults(
    out: &mut BTreeMap<String, ParamValue>,
    declared: &[ParamSpec],
    given: &[Param],
) {
    let given_names: Vec<&str> = given.iter().map(|p| p.name.as_str()).collect();
    let mut plain = Vars::default();
    for (k, v) in out.iter() {
        plain.set(format!("params.{k}"), v.clone());
    }
    for ps in declared {
        if given_names.contains(&ps.name.as_str()) {
            continue;
        }
        if let Some(v) = out.get_mut(&ps.name)
            && v.strings().iter().any(|s| s.contains("$(params"))
            && let Ok(nv) = plain.param_value(v, "")
        {
            *v = nv;
        }
    }
}

/// Adds `params.<name>` (and the legacy `inputs.params.<name>`) for every value.
pub fn add_to(vars: &mut Vars, values: &BTreeMap<String, ParamValue>) {
    for (k, v) in values {
        vars.set(format!("params.{k}"), v.clone());
        vars.set(format!("inputs.params.{k}"), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: Option<&str>, default: Option<ParamValue>) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            type_: kind.map(str::to_string),
            default,
            ..Default::default()
        }
    }

    fn s(v: &str) -> ParamValue {
        ParamValue::String(v.into())
    }

    #[test]
    fn given_over_defaults_and_undeclared_kept() {
        let declared = [
            spec("a", None, Some(s("da"))),
            spec("b", None, Some(s("db"))),
        ];
        let given = [
            Param {
                name: "a".into(),
                value: s("ga"),
            },
            Param {
                name: "extra".into(),
                value: s("x"),
            },
        ];
        let got = resolve(&declared, &given, true, "R", "task t").unwrap();
        assert_eq!(got["a"], s("ga"));
        assert_eq!(got["b"], s("db"));
        assert_eq!(got["extra"], s("x"));
    }

    #[test]
    fn every_problem_in_one_message() {
        let declared = [
            spec("a", None, None),
            spec("b", None, None),
            spec("arr", Some("array"), None),
        ];
        let given = [Param {
            name: "arr".into(),
            value: s("not-an-array"),
        }];
        let e = resolve(&declared, &given, true, "TaskRunValidationFailed", "task t").unwrap_err();
        assert_eq!(e.reason, "TaskRunValidationFailed");
        assert_eq!(
            e.message,
            "invalid input params for task t: missing values for these params which have no \
             default values: [a b]; param types don't match the user-specified type: [arr]"
        );
    }

    #[test]
    fn objects_merge_with_defaults_and_need_their_keys() {
        let mut o = spec(
            "o",
            Some("object"),
            Some(ParamValue::Object(BTreeMap::from([(
                "k1".into(),
                "d1".into(),
            )]))),
        );
        o.properties.insert("k1".into(), Default::default());
        o.properties.insert("k2".into(), Default::default());
        let given = [Param {
            name: "o".into(),
            value: ParamValue::Object(BTreeMap::from([("k2".into(), "g2".into())])),
        }];
        let got = resolve(std::slice::from_ref(&o), &given, true, "R", "t").unwrap();
        assert_eq!(
            got["o"],
            ParamValue::Object(BTreeMap::from([
                ("k1".into(), "d1".into()),
                ("k2".into(), "g2".into())
            ]))
        );
        let e = resolve(&[o], &given, false, "R", "t").unwrap_err();
        assert!(e.message.contains("map[o:[k1]]"), "{e}");
    }

    #[test]
    fn enum_and_default_references() {
        let mut e = spec("mode", None, None);
        e.enum_ = vec!["fast".into(), "slow".into()];
        let given = [Param {
            name: "mode".into(),
            value: s("medium"),
        }];
        let err = resolve(std::slice::from_ref(&e), &given, true, "R", "task t").unwrap_err();
        assert_eq!(err.reason, "InvalidParamValue");
        let declared = [
            spec("base", None, None),
            spec("sub", None, Some(s("$(params.base)/src"))),
        ];
        let given = [Param {
            name: "base".into(),
            value: s("/w"),
        }];
        let got = resolve(&declared, &given, true, "R", "t").unwrap();
        assert_eq!(got["sub"], s("/w/src"));
    }
}
