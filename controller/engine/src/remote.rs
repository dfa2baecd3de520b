//! Objects from resolvers (`taskRef`, `pipelineRef` or a step's `ref` with
//! `resolver:`), kept in the same maps as named ones.
//!
//! An executor resolves every remote ref before its run needs it and keeps
//! the spec under [`key`]: the resolver and its params as substituted,
//! behind a mark no Kubernetes name can hold. The engine and the executors
//! then find a Task ref's spec by [`task_ref_key`] whether it is named or
//! remote (a step ref's: `stepaction::remote_key`).

use tektite_api::param::ParamValue;
use tektite_api::v1::{Param, TaskRef};

/// Starts every remote key: not a character of any Kubernetes name.
const MARK: char = '\u{1}';

/// The key of a resolver and its params (their order does not matter).
pub fn key(resolver: &str, params: &[Param]) -> String {
    let mut ps: Vec<(&str, String)> = params
        .iter()
        .map(|p| (p.name.as_str(), value_text(&p.value)))
        .collect();
    ps.sort();
    let body = serde_json::to_string(&(resolver, ps)).unwrap_or_default();
    format!("{MARK}{body}")
}

/// A param's value as a resolver takes it: a string as it is, an array or
/// object as its JSON.
pub fn value_text(v: &ParamValue) -> String {
    match v {
        ParamValue::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Whether `k` is a remote key (not a name).
pub fn is_remote(k: &str) -> bool {
    k.starts_with(MARK)
}

/// A remote key for people: `resolver git (pathInRepo=task.yaml, url=…)`;
/// a name as it is.
pub fn describe(k: &str) -> String {
    let Some(body) = k.strip_prefix(MARK) else {
        return k.to_string();
    };
    match serde_json::from_str::<(String, Vec<(String, String)>)>(body) {
        Ok((resolver, ps)) => {
            let ps: Vec<String> = ps
                .iter()
                .map(|(n, v)| format!("{n}={}", tektite_api::redact::redact(v)))
                .collect();
            format!("resolver {resolver} ({})", ps.join(", "))
        }
        Err(_) => body.to_string(),
    }
}

/// Where a Task ref's spec is kept: its key when it names a resolver, else
/// its name.
pub fn task_ref_key(r: &TaskRef) -> Option<String> {
    match (&r.resolver, &r.name) {
        (Some(res), _) => Some(key(res, &r.params)),
        (None, Some(n)) => Some(n.clone()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: &str, v: &str) -> Param {
        Param {
            name: n.into(),
            value: ParamValue::String(v.into()),
        }
    }

    #[test]
    fn keys_ignore_param_order_and_never_look_like_names() {
        let a = key("git", &[p("url", "u"), p("pathInRepo", "t.yaml")]);
        let b = key("git", &[p("pathInRepo", "t.yaml"), p("url", "u")]);
        assert_eq!(a, b);
        assert!(is_remote(&a) && !is_remote("git-clone"));
        assert_ne!(a, key("http", &[p("url", "u"), p("pathInRepo", "t.yaml")]));
        assert_eq!(describe(&a), "resolver git (pathInRepo=t.yaml, url=u)");
        let named = TaskRef {
            name: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(task_ref_key(&named).as_deref(), Some("x"));
    }
}
