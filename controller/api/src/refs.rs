//! Finding Tekton variable references (`$(params.x)`, `$(tasks.a.results.b)`,
//! …) in strings, and parsing them into a structured form.
//!
//! Shell command substitution such as `$(date)` looks the same, so only
//! expressions starting with one of Tekton's roots are references.

/// The roots Tekton substitutes; anything else inside `$( )` is left to the shell.
pub const ROOTS: &[&str] = &[
    "params",
    "context",
    "workspaces",
    "results",
    "tasks",
    "finally",
    "steps",
    "step",
    "resources",
    "inputs",
    "outputs",
];

/// Every `$(…)` expression in `s` whose first segment is a Tekton root.
pub fn scan(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("$(") {
        let after = &rest[start + 2..];
        // Tekton expressions hold no parentheses; stop at the first `)`.
        let Some(end) = after.find(')') else { break };
        let expr = &after[..end];
        let root = expr.split(['.', '[']).next().unwrap_or("");
        if ROOTS.contains(&root) && !expr.contains(char::is_whitespace) {
            out.push(expr);
            rest = &after[end + 1..];
        } else {
            rest = after;
        }
    }
    out
}

/// One segment after the root: a name, `[*]`, or `[N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    Name(&'a str),
    Star,
    Index(usize),
}

/// Splits `params['a.b'][*]` into `params`, `a.b`, `*`.
///
/// # Errors
/// The expression's own text, when brackets or quotes are unbalanced.
pub fn split(expr: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = expr;
    let bad = || format!("malformed reference $({expr})");
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            if let Some(q) = r.strip_prefix('\'').or_else(|| r.strip_prefix('"')) {
                let quote = &r[..1];
                let end = q.find(quote).ok_or_else(bad)?;
                parts.push(Part::Name(&q[..end]));
                rest = q[end + 1..].strip_prefix(']').ok_or_else(bad)?;
            } else {
                let end = r.find(']').ok_or_else(bad)?;
                let inner = &r[..end];
                parts.push(if inner == "*" {
                    Part::Star
                } else {
                    Part::Index(inner.parse().map_err(|_| bad())?)
                });
                rest = &r[end + 1..];
            }
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err(bad());
            }
            parts.push(Part::Name(&r[..end]));
            rest = &r[end..];
        }
    }
    Ok(parts)
}

/// A reference to a param: its name, and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef<'a> {
    pub name: String,
    /// `[*]` follows the name.
    pub star: bool,
    /// `[N]` follows the name.
    pub index: Option<usize>,
    /// `.key` follows the name (object params).
    pub key: Option<&'a str>,
}

/// Parses `params.…` against the declared names. Param names may contain
/// dots, so the longest declared name that matches wins; otherwise the first
/// segment is taken as the name.
pub fn param_ref<'a>(parts: &[Part<'a>], declared: &dyn Fn(&str) -> bool) -> Option<ParamRef<'a>> {
    let names: Vec<&str> = parts
        .iter()
        .skip(1)
        .take_while(|p| matches!(p, Part::Name(_)))
        .filter_map(|p| match p {
            Part::Name(n) => Some(*n),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return None;
    }
    let mut take = 1;
    for n in (1..=names.len()).rev() {
        if declared(&names[..n].join(".")) {
            take = n;
            break;
        }
    }
    let name = names[..take].join(".");
    let rest = &parts[1 + take..];
    let mut r = ParamRef {
        name,
        star: false,
        index: None,
        key: None,
    };
    match rest {
        [] => {}
        [Part::Star] => r.star = true,
        [Part::Index(i)] => r.index = Some(*i),
        [Part::Name(k)] => r.key = Some(k),
        _ => {
            // Unusual trailing parts: report against the full name.
            r.name = names.join(".");
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_only_tekton_roots() {
        let s = "echo $(date) $(params.a) $(tasks.b.results.c[*]) $( params.x) $(results.r.path)";
        assert_eq!(
            scan(s),
            vec!["params.a", "tasks.b.results.c[*]", "results.r.path"]
        );
    }

    #[test]
    fn splits_brackets_and_quotes() {
        assert_eq!(
            split("params['a.b'][*]").unwrap(),
            vec![Part::Name("params"), Part::Name("a.b"), Part::Star]
        );
        assert_eq!(
            split("tasks.t.results.r[2]").unwrap(),
            vec![
                Part::Name("tasks"),
                Part::Name("t"),
                Part::Name("results"),
                Part::Name("r"),
                Part::Index(2)
            ]
        );
        assert!(split("params['a").is_err());
    }

    #[test]
    fn dotted_param_names_prefer_declared() {
        let parts = split("params.foo.bar").unwrap();
        let r = param_ref(&parts, &|n| n == "foo.bar").unwrap();
        assert_eq!(r.name, "foo.bar");
        let r = param_ref(&parts, &|n| n == "foo").unwrap();
        assert_eq!((r.name.as_str(), r.key), ("foo", Some("bar")));
    }
}
