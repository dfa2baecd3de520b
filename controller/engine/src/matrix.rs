//! Matrix fan-out: the combinations of a PipelineTask's matrix params, with
//! `include` entries, in Tekton's order (the first param varies fastest).

use std::collections::BTreeMap;

use tektite_api::param::ParamValue;
use tektite_api::v1::{Matrix, Param};

/// One combination: param name → value, sorted by name.
pub type Combination = BTreeMap<String, String>;

/// Why a matrix cannot be fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanOutError {
    /// A matrix param is not an array (after substitution).
    NotArray(String),
    /// An include param is not a string.
    NotString(String),
}

/// All combinations of `m`: the cartesian product of its array params,
/// then `include` (added to every matching combination, or as a new one
/// when it matches none). An empty array param gives no combinations.
///
/// # Errors
/// A matrix param that is not an array, an include param that is not a string.
pub fn fan_out(m: &Matrix) -> Result<Vec<Combination>, FanOutError> {
    let mut combos: Vec<Combination> = Vec::new();
    for (pi, p) in m.params.iter().enumerate() {
        let ParamValue::Array(values) = &p.value else {
            return Err(FanOutError::NotArray(p.name.clone()));
        };
        if pi == 0 {
            combos = values
                .iter()
                .map(|v| Combination::from([(p.name.clone(), v.clone())]))
                .collect();
            continue;
        }
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for v in values {
            for c in &combos {
                let mut c = c.clone();
                c.insert(p.name.clone(), v.clone());
                next.push(c);
            }
        }
        combos = next;
    }
    if m.params.is_empty() {
        for inc in &m.include {
            combos.push(include_params(&inc.params)?);
        }
        return Ok(combos);
    }
    if combos.is_empty() {
        return Ok(combos);
    }
    let mut extra = Vec::new();
    let includes: Vec<Combination> = m
        .include
        .iter()
        .map(|i| include_params(&i.params))
        .collect::<Result<_, _>>()?;
    for inc in &includes {
        let mut matched = false;
        for c in &mut combos {
            let matches = inc.iter().all(|(k, v)| c.get(k).is_none_or(|cv| cv == v));
            if matches {
                for (k, v) in inc {
                    c.insert(k.clone(), v.clone());
                }
                matched = true;
            }
        }
        if !matched {
            extra.push(inc.clone());
        }
    }
    combos.extend(extra.into_iter().filter(|c| !c.is_empty()));
    Ok(combos)
}

fn include_params(params: &[Param]) -> Result<Combination, FanOutError> {
    params
        .iter()
        .map(|p| match &p.value {
            ParamValue::String(s) => Ok((p.name.clone(), s.clone())),
            _ => Err(FanOutError::NotString(p.name.clone())),
        })
        .collect()
}

/// Whether a matrix param is an empty array (the task is then skipped).
pub fn has_empty_array(m: &Matrix) -> bool {
    m.params
        .iter()
        .any(|p| matches!(&p.value, ParamValue::Array(a) if a.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tektite_api::v1::MatrixInclude;

    fn arr(name: &str, v: &[&str]) -> Param {
        Param {
            name: name.into(),
            value: ParamValue::Array(v.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn s(name: &str, v: &str) -> Param {
        Param {
            name: name.into(),
            value: ParamValue::String(v.into()),
        }
    }

    fn show(c: &[Combination]) -> Vec<String> {
        c.iter()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn first_param_varies_fastest() {
        let m = Matrix {
            params: vec![arr("a", &["1", "2"]), arr("b", &["x", "y"])],
            include: vec![],
        };
        assert_eq!(
            show(&fan_out(&m).unwrap()),
            ["a=1,b=x", "a=2,b=x", "a=1,b=y", "a=2,b=y"]
        );
    }

    #[test]
    fn include_extends_matches_and_adds_the_rest() {
        let m = Matrix {
            params: vec![arr("os", &["linux", "mac"]), arr("arch", &["amd64"])],
            include: vec![
                MatrixInclude {
                    name: None,
                    params: vec![s("os", "linux"), s("flags", "-static")],
                },
                MatrixInclude {
                    name: None,
                    params: vec![s("os", "windows"), s("arch", "arm64")],
                },
            ],
        };
        assert_eq!(
            show(&fan_out(&m).unwrap()),
            [
                "arch=amd64,flags=-static,os=linux",
                "arch=amd64,os=mac",
                "arch=arm64,os=windows"
            ]
        );
    }

    #[test]
    fn only_includes_and_errors() {
        let m = Matrix {
            params: vec![],
            include: vec![MatrixInclude {
                name: Some("one".into()),
                params: vec![s("x", "1")],
            }],
        };
        assert_eq!(show(&fan_out(&m).unwrap()), ["x=1"]);
        let bad = Matrix {
            params: vec![s("a", "not-array")],
            include: vec![],
        };
        assert_eq!(fan_out(&bad), Err(FanOutError::NotArray("a".into())));
        let empty = Matrix {
            params: vec![arr("a", &[])],
            include: vec![],
        };
        assert!(has_empty_array(&empty));
        assert!(fan_out(&empty).unwrap().is_empty());
    }
}
