//! A step's `when` expressions (`-when_expressions`, Tekton's JSON list of
//! `{input, operator, values}`): the step runs only when every one holds.
//!
//! The engine substitutes what it knows (params, `$(workspaces.x.bound)`);
//! what only the pod knows, an earlier step's results
//! (`$(steps.<step>.results.<name>)`), is read here through
//! [`crate::stepresults`].

use std::path::Path;

use serde::Deserialize;

/// One expression as the engine passes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct When {
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub cel: String,
}

/// Reads the flag's JSON.
///
/// # Errors
/// The JSON does not hold a list of expressions.
pub fn parse(json: &str) -> Result<Vec<When>, String> {
    serde_json::from_str(json).map_err(|e| format!("flag -when_expressions: {e}"))
}

/// Whether every expression holds, once the earlier steps' results they
/// refer to are read from `steps_dir` (`/tekton/steps`).
///
/// # Errors
/// A CEL expression (not evaluated here), an operator other than `in` and
/// `notin`, or a step result that cannot be read.
pub fn allows(whens: &[When], steps_dir: &Path, limit: usize) -> Result<bool, String> {
    for w in whens {
        if !w.cel.is_empty() {
            return Err(format!("when: cel {:?} is not supported in a step", w.cel));
        }
        let src = crate::stepresults::Source { steps_dir, limit };
        let input =
            crate::stepresults::substitute(&w.input, src).map_err(|e| format!("when: {e}"))?;
        let values = w
            .values
            .iter()
            .map(|v| crate::stepresults::substitute(v, src).map_err(|e| format!("when: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let found = values.contains(&input);
        let holds = match w.operator.as_str() {
            "in" => found,
            "notin" => !found,
            other => return Err(format!("when: operator {other:?} is not in or notin")),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn w(input: &str, operator: &str, values: &[&str]) -> When {
        When {
            input: input.into(),
            operator: operator.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            cel: String::new(),
        }
    }

    #[test]
    fn operators_and_step_results() {
        let dir = std::env::temp_dir().join(format!("when-{}", std::process::id()));
        let results = dir.join("step-first").join("results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join("answer"), "yes").unwrap();
        let ok = |ws: &[When]| allows(ws, &dir, 4096);
        assert_eq!(ok(&[w("a", "in", &["a", "b"])]), Ok(true));
        assert_eq!(ok(&[w("a", "notin", &["a"])]), Ok(false));
        assert_eq!(
            ok(&[w("$(steps.first.results.answer)", "in", &["yes"])]),
            Ok(true)
        );
        assert_eq!(
            ok(&[
                w("x", "in", &["x"]),
                w("$(steps.first.results.answer)", "in", &["no"])
            ]),
            Ok(false)
        );
        assert!(ok(&[w("$(steps.first.results.missing)", "in", &["x"])]).is_err());
        assert!(ok(&[w("$(steps.../results.x)", "in", &["x"])]).is_err());
        assert!(ok(&[w("a", "equals", &["a"])]).is_err());
        let cel = When {
            cel: "1 == 1".into(),
            ..w("", "", &[])
        };
        assert!(ok(&[cel]).is_err());
        // A link where the result should be is refused.
        std::os::unix::fs::symlink("/etc/hostname", results.join("link")).unwrap();
        assert!(ok(&[w("$(steps.first.results.link)", "in", &["x"])]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            parse(r#"[{"input":"a","operator":"in","values":["a"]}]"#).unwrap(),
            vec![w("a", "in", &["a"])]
        );
        assert!(parse("{").is_err());
    }
}
