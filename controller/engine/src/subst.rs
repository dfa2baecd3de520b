//! Tekton variable substitution: `$(params.x)`, `$(params['x'])`,
//! `$(params.arr[*])` (as a whole array element), `$(params.arr[1])`,
//! `$(params.obj.key)`, `$(context.taskRun.name)`, `$(tasks.t.results.r)`, …
//!
//! A [`Vars`] maps the dotted name of each variable (`params.x`,
//! `results.out.path`, `tasks.build.results.digest`) to its value. A
//! reference is parsed with [`tektite_api::refs::split`]; the longest known
//! name that prefixes it wins, and what follows (`[*]`, `[N]`, `.key`) is
//! applied to the value. References under a *strict* prefix that match
//! nothing are errors naming the field; others (`$(date)`, or a context
//! variable of another scope) are left as written, as Tekton does.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;
use tektite_api::param::ParamValue;
use tektite_api::refs::{self, Part};

/// Roots substituted here: Tekton's variable roots, plus `credentials`
/// (`$(credentials.path)`) and `artifacts` (`$(artifacts.path)`).
fn is_root(root: &str) -> bool {
    refs::ROOTS.contains(&root) || root == "credentials" || root == "artifacts"
}

/// A reference that could not be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    /// The field, e.g. `spec.steps[0].args[2]`.
    pub path: String,
    /// The reference as written, e.g. `$(params.missing)`.
    pub reference: String,
    pub message: String,
}

impl fmt::Display for SubstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.reference, self.message)
    }
}

impl std::error::Error for SubstError {}

/// The variables of one scope.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: HashMap<String, ParamValue>,
    /// Prefixes (`params.`, `context.taskRun.`, …) under which a reference
    /// that matches nothing is an error.
    strict: Vec<&'static str>,
}

/// What a reference resolved to.
enum Resolved<'a> {
    Str(&'a str),
    /// `[*]` of an array (or `$(params.arr)` used alone in an array element).
    Array(&'a [String]),
    /// `[*]` of an object, or an object used alone.
    Object(&'a std::collections::BTreeMap<String, String>),
}

impl Vars {
    pub fn new(strict: &[&'static str]) -> Vars {
        Vars {
            values: HashMap::new(),
            strict: strict.to_vec(),
        }
    }

    pub fn set(&mut self, name: impl Into<String>, value: ParamValue) {
        self.values.insert(name.into(), value);
    }

    pub fn set_str(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values
            .insert(name.into(), ParamValue::String(value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    pub fn strict(&mut self, prefix: &'static str) {
        self.strict.push(prefix);
    }

    /// Forgets `name` (e.g. `params.x`): a reference to it is then left as
    /// written.
    pub fn remove(&mut self, name: &str) {
        self.values.remove(name);
    }

    /// No prefix is strict any more: unknown references are left as written.
    pub fn clear_strict(&mut self) {
        self.strict.clear();
    }

    fn is_strict(&self, expr: &str) -> bool {
        self.strict.iter().any(|p| expr.starts_with(p))
    }

    /// Resolves one expression (without `$(` `)`). `Ok(None)`: not ours,
    /// leave it as written.
    fn resolve<'a>(&'a self, expr: &str) -> Result<Option<Resolved<'a>>, String> {
        let parts = refs::split(expr)?;
        let names: Vec<&str> = parts
            .iter()
            .take_while(|p| matches!(p, Part::Name(_)))
            .map(|p| match p {
                Part::Name(n) => *n,
                _ => "",
            })
            .collect();
        let mut found = None;
        for n in (1..=names.len()).rev() {
            if let Some(v) = self.values.get(&names[..n].join(".")) {
                found = Some((v, &parts[n..]));
                break;
            }
        }
        let Some((value, rest)) = found else {
            if self.is_strict(expr) {
                return Err("no such variable here".into());
            }
            return Ok(None);
        };
        let r = match (value, rest) {
            (ParamValue::String(s), []) => Resolved::Str(s),
            (ParamValue::Array(a), [] | [Part::Star]) => Resolved::Array(a),
            (ParamValue::Array(a), [Part::Index(i)]) => match a.get(*i) {
                Some(s) => Resolved::Str(s),
                None => {
                    return Err(format!(
                        "index {i} is out of range: the array has {} elements",
                        a.len()
                    ));
                }
            },
            (ParamValue::Object(o), [] | [Part::Star]) => Resolved::Object(o),
            (ParamValue::Object(o), [Part::Name(k)]) => match o.get(*k) {
                Some(s) => Resolved::Str(s),
                None => {
                    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
                    return Err(format!(
                        "the object has no key {k:?} (keys: {})",
                        keys.join(", ")
                    ));
                }
            },
            (v, _) => {
                return Err(format!("a {} value cannot be indexed like this", v.kind()));
            }
        };
        Ok(Some(r))
    }

    /// Substitutes every reference in a string. Arrays and objects cannot
    /// be placed inside a string.
    ///
    /// # Errors
    /// The first reference that does not resolve to a string.
    pub fn str(&self, s: &str, path: &str) -> Result<String, SubstError> {
        if !s.contains("$(") {
            return Ok(s.to_string());
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("$(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let expr = &after[..end];
            let root = expr.split(['.', '[']).next().unwrap_or("");
            if !is_root(root) || expr.contains(char::is_whitespace) {
                // Shell command substitution or text: keep `$(` and go on
                // inside it (it may hold a reference itself).
                out.push_str("$(");
                rest = after;
                continue;
            }
            let err = |message: String| SubstError {
                path: path.to_string(),
                reference: format!("$({expr})"),
                message,
            };
            match self.resolve(expr).map_err(err)? {
                None => out.push_str(&rest[start..start + 2 + end + 1]),
                Some(Resolved::Str(v)) => out.push_str(v),
                Some(Resolved::Array(_)) => {
                    return Err(err(
                        "an array can only be used as a whole element of an array field \
                         (e.g. args: [\"$(params.x[*])\"])"
                            .into(),
                    ));
                }
                Some(Resolved::Object(_)) => {
                    return Err(err(
                        "an object can only be used whole where an object is expected; \
                         use $(params.x.key) for one key"
                            .into(),
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Substitutes an array of strings: an element that is exactly one
    /// array reference (`$(params.x[*])`, or `$(params.x)` naming an array)
    /// is replaced by the array's elements.
    ///
    /// # Errors
    /// As [`Vars::str`].
    pub fn array(&self, items: &[String], path: &str) -> Result<Vec<String>, SubstError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let here = format!("{path}[{i}]");
            if let Some(a) = self.whole_array(item, &here)? {
                out.extend(a.iter().cloned());
            } else {
                out.push(self.str(item, &here)?);
            }
        }
        Ok(out)
    }

    /// The array an element names when it is exactly one array reference.
    fn whole_array(&self, item: &str, path: &str) -> Result<Option<&[String]>, SubstError> {
        let Some(expr) = item
            .strip_prefix("$(")
            .and_then(|s| s.strip_suffix(')'))
            .filter(|e| !e.contains(['(', ')', ' ']))
        else {
            return Ok(None);
        };
        match self.resolve(expr) {
            Ok(Some(Resolved::Array(a))) => Ok(Some(a)),
            Ok(_) => Ok(None),
            Err(message) => Err(SubstError {
                path: path.to_string(),
                reference: item.to_string(),
                message,
            }),
        }
    }

    /// Substitutes a param value given to a Task or Pipeline: a whole
    /// `$(…[*])` or object reference keeps its type.
    ///
    /// # Errors
    /// As [`Vars::str`].
    pub fn param_value(&self, value: &ParamValue, path: &str) -> Result<ParamValue, SubstError> {
        Ok(match value {
            ParamValue::String(s) => {
                if let Some(expr) = s.strip_prefix("$(").and_then(|e| e.strip_suffix(')'))
                    && !expr.contains(['(', ')', ' '])
                {
                    let err = |message: String| SubstError {
                        path: path.to_string(),
                        reference: s.clone(),
                        message,
                    };
                    match self.resolve(expr).map_err(err)? {
                        Some(Resolved::Array(a)) => return Ok(ParamValue::Array(a.to_vec())),
                        Some(Resolved::Object(o)) => return Ok(ParamValue::Object(o.clone())),
                        _ => {}
                    }
                }
                ParamValue::String(self.str(s, path)?)
            }
            ParamValue::Array(a) => ParamValue::Array(self.array(a, path)?),
            ParamValue::Object(o) => {
                let mut out = std::collections::BTreeMap::new();
                for (k, v) in o {
                    out.insert(k.clone(), self.str(v, &format!("{path}.{k}"))?);
                }
                ParamValue::Object(out)
            }
        })
    }

    /// Substitutes every string in a JSON tree; arrays of strings expand
    /// whole-element array references. Keys listed in `skip` (at any depth)
    /// are left alone.
    ///
    /// # Errors
    /// As [`Vars::str`], with the JSON path of the field.
    pub fn json(&self, v: &mut Value, path: &str, skip: &[&str]) -> Result<(), SubstError> {
        match v {
            Value::String(s) if s.contains("$(") => *s = self.str(s, path)?,
            Value::Array(items) => {
                if items.iter().all(Value::is_string)
                    && items
                        .iter()
                        .any(|i| i.as_str().is_some_and(|s| s.contains("$(")))
                {
                    let strings: Vec<String> = items
                        .iter()
                        .map(|i| i.as_str().unwrap_or_default().to_string())
                        .collect();
                    *items = self
                        .array(&strings, path)?
                        .into_iter()
                        .map(Value::String)
                        .collect();
                } else {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.json(item, &format!("{path}[{i}]"), skip)?;
                    }
                }
            }
            Value::Object(map) => {
                for (k, item) in map.iter_mut() {
                    if !skip.contains(&k.as_str()) {
                        self.json(item, &format!("{path}.{k}"), skip)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars() -> Vars {
        let mut v = Vars::new(&["params.", "context.taskRun."]);
        v.set_str("params.name", "world");
        v.set_str("params.a.b", "dotted");
        v.set(
            "params.list",
            ParamValue::Array(vec!["x".into(), "y z".into()]),
        );
        v.set(
            "params.obj",
            ParamValue::Object(BTreeMap::from([("url".into(), "https://e".into())])),
        );
        v.set_str("context.taskRun.name", "run-1");
        v
    }

    #[test]
    fn strings_every_form() {
        let v = vars();
        assert_eq!(v.str("hi $(params.name)!", "p").unwrap(), "hi world!");
        assert_eq!(v.str("$(params['name'])", "p").unwrap(), "world");
        assert_eq!(v.str("$(params[\"a.b\"])", "p").unwrap(), "dotted");
        assert_eq!(v.str("$(params.list[1])", "p").unwrap(), "y z");
        assert_eq!(v.str("$(params.obj.url)", "p").unwrap(), "https://e");
        assert_eq!(
            v.str("$(context.taskRun.name)-$(params.name)", "p")
                .unwrap(),
            "run-1-world"
        );
    }

    #[test]
    fn shell_and_other_scopes_are_left_alone() {
        let v = vars();
        assert_eq!(
            v.str(
                "d=$(date) $( echo $(params.name) ) $(context.pipelineRun.name)",
                "p"
            )
            .unwrap(),
            "d=$(date) $( echo world ) $(context.pipelineRun.name)"
        );
    }

    #[test]
    fn arrays_expand_as_whole_elements() {
        let v = vars();
        let items: Vec<String> = vec![
            "a".into(),
            "$(params.list[*])".into(),
            "$(params.name)".into(),
        ];
        assert_eq!(v.array(&items, "args").unwrap(), ["a", "x", "y z", "world"]);
        let e = v
            .str("--flags=$(params.list[*])", "spec.args[0]")
            .unwrap_err();
        assert_eq!(e.path, "spec.args[0]");
        assert!(e.message.contains("whole element"), "{e}");
    }

    #[test]
    fn unknown_strict_references_name_the_field() {
        let v = vars();
        let e = v.str("$(params.nope)", "spec.steps[0].image").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.steps[0].image: $(params.nope): no such variable here"
        );
        let e = v.str("$(params.list[5])", "x").unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = v.str("$(params.obj.nokey)", "x").unwrap_err();
        assert!(e.message.contains("no key \"nokey\""), "{e}");
    }

    #[test]
    fn param_values_keep_their_type() {
        let v = vars();
        let got = v
            .param_value(&ParamValue::String("$(params.list[*])".into()), "p")
            .unwrap();
        assert_eq!(got, ParamValue::Array(vec!["x".into(), "y z".into()]));
        let got = v
            .param_value(&ParamValue::String("$(params.obj[*])".into()), "p")
            .unwrap();
        assert_eq!(got.kind(), "object");
    }

    #[test]
    fn json_walk_skips_keys_and_reports_paths() {
        let v = vars();
        let mut j = serde_json::json!({"name": "$(params.name)", "args": ["$(params.list[*])"], "env": [{"value": "$(params.nope)"}]});
        let e = v.json(&mut j, "spec", &["name"]).unwrap_err();
        assert_eq!(e.path, "spec.env[0].value");
        let mut j = serde_json::json!({"name": "$(params.name)", "args": ["$(params.list[*])"]});
        v.json(&mut j, "spec", &["name"]).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "$(params.name)", "args": ["x", "y z"]})
        );
    }
}
