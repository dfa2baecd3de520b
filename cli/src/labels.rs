//! Kubernetes label selectors (`-l`), for the local store; a cluster is
//! given the selector as it is and applies it itself.

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Req>);

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(key: &str, rest: &str, whole: &str) -> anyhow::Result<(String, Vec<String>)> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            anyhow::anyhow!("label selector {whole:?}: expected (v1,v2) after {key:?}")
        })?;
    Ok((
        key.to_string(),
        inner.split(',').map(|v| v.trim().to_string()).collect(),
    ))
}

impl Selector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`
    /// and `!k`, comma-separated.
    ///
    /// # Errors
    /// A term that is none of these, or an empty key.
    pub fn parse(s: &str) -> anyhow::Result<Selector> {
        let mut reqs = Vec::new();
        for t in terms(s)
            .into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let req = if let Some((k, v)) = t.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                let (k, vs) = set(k.trim(), rest, s)?;
                Req::NotIn(k, vs)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                let (k, vs) = set(k.trim(), rest, s)?;
                Req::In(k, vs)
            } else if let Some(k) = t.strip_prefix('!') {
                Req::Absent(k.trim().into())
            } else {
                Req::Exists(t.into())
            };
            let key = match &req {
                Req::Eq(k, _) | Req::Ne(k, _) | Req::In(k, _) | Req::NotIn(k, _) => k,
                Req::Exists(k) | Req::Absent(k) => k,
            };
            if key.is_empty() || key.contains([' ', '(', ')']) {
                anyhow::bail!(
                    "label selector {s:?}: {t:?} is not a requirement (k=v, k!=v, k in (a,b), k, !k)"
                );
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Req::Exists(k) => get(k).is_some(),
            Req::Absent(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_as_kubernetes_does() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let yes = |s: &str| Selector::parse(s).unwrap().matches(Some(&l));
        assert!(yes("app=web"));
        assert!(yes("app==web,tier"));
        assert!(yes("app!=db,!owner"));
        assert!(yes("tier in (back, front),app notin (db)"));
        assert!(!yes("app=db"));
        assert!(!yes("owner"));
        assert!(!yes("app in (db,cache)"));
        assert!(!Selector::parse("x").unwrap().matches(None));
        assert!(Selector::parse("!x").unwrap().matches(None));
    }

    #[test]
    fn bad_selectors_are_refused_with_the_term() {
        let e = Selector::parse("app in web").unwrap_err().to_string();
        assert!(e.contains("expected (v1,v2)"), "{e}");
        let e = Selector::parse("=web").unwrap_err().to_string();
        assert!(e.contains("is not a requirement"), "{e}");
    }
}
