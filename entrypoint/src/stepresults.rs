//! Earlier steps' results in a step's command, args and env
//! (`$(steps.<step>.results.<name>)`, with `[*]`, `[i]` or `.key`), and in
//! its `when`: only the pod knows them, so they are replaced when the
//! step's turn comes, as Tekton's entrypoint does. A result is read from
//! `<steps>/step-<step>/results/<name>` as results are harvested
//! ([`crate::results`]: a regular file within the size limit, never through
//! a link); array and object results are the JSON the step wrote.

use std::path::Path;

/// Where results are read, and how large one may be.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub steps_dir: &'a Path,
    pub limit: usize,
}

/// Whether `text` refers to a step result at all.
pub fn refers(text: &str) -> bool {
    text.contains("$(steps.")
}

/// The command with each reference replaced; an argument that is exactly
/// `$(steps.s.results.r[*])` becomes the array's elements.
///
/// # Errors
/// A reference that cannot be read or does not fit its result.
pub fn expand_args(args: &[String], src: Source<'_>) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        if let Some(expr) = a
            .strip_prefix("$(steps.")
            .and_then(|e| e.strip_suffix("[*])"))
            && !expr.contains(')')
        {
            out.extend(array(&value(expr, src)?, expr)?);
        } else {
            out.push(substitute(a, src)?);
        }
    }
    Ok(out)
}

/// `text` with each reference replaced by its value (the whole result, an
/// array element `[i]` or an object value `.key`).
///
/// # Errors
/// As [`expand_args`]; `[*]` inside a longer string.
pub fn substitute(text: &str, src: Source<'_>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$(steps.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "$(steps.".len()..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let expr = &after[..end];
        if expr.ends_with("[*]") {
            return Err(format!(
                "$(steps.{expr}) stands for several values: it must be a whole argument"
            ));
        }
        out.push_str(&selected(expr, src)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of `<step>.results.<name>`, `….<name>[i]` or `….<name>.key`.
fn selected(expr: &str, src: Source<'_>) -> Result<String, String> {
    let (path, index) = match expr.strip_suffix(']').and_then(|e| e.rsplit_once('[')) {
        Some((p, i)) => (p, Some(i)),
        None => (expr, None),
    };
    let Some((step, rest)) = path.split_once(".results.") else {
        return Err(format!("$(steps.{expr}) is not a step result reference"));
    };
    let (name, key) = match rest.split_once('.') {
        Some((n, k)) => (n, Some(k)),
        None => (rest, None),
    };
    let raw = read(src, step, name)?;
    match (index, key) {
        (None, None) => Ok(raw),
        (Some(i), None) => {
            let i: usize = i
                .parse()
                .map_err(|_| format!("$(steps.{expr}): {i:?} is not an index"))?;
            array(&raw, expr)?
                .into_iter()
                .nth(i)
                .ok_or_else(|| format!("$(steps.{expr}): the array has no element {i}"))
        }
        (None, Some(k)) => {
            let obj: std::collections::BTreeMap<String, String> = serde_json::from_str(&raw)
                .map_err(|_| format!("$(steps.{expr}): the result is not an object of strings"))?;
            obj.get(k)
                .cloned()
                .ok_or_else(|| format!("$(steps.{expr}): the object has no key {k:?}"))
        }
        (Some(_), Some(_)) => Err(format!("$(steps.{expr}) is not a step result reference")),
    }
}

/// The whole result `<step>.results.<name>[*]` stands for.
fn value(expr_star: &str, src: Source<'_>) -> Result<String, String> {
    match expr_star.split_once(".results.") {
        Some((step, name)) if !name.contains('.') => read(src, step, name),
        _ => Err(format!(
            "$(steps.{expr_star}[*]) is not a step result reference"
        )),
    }
}

/// A result's JSON array of strings.
fn array(raw: &str, expr: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(raw)
        .map_err(|_| format!("$(steps.{expr}): the result is not an array of strings"))
}

/// One step result, read as a regular file of at most `src.limit` bytes.
fn read(src: Source<'_>, step: &str, name: &str) -> Result<String, String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !plain(step) || !plain(name) {
        return Err(format!(
            "$(steps.{step}.results.{name}) is not a step result reference"
        ));
    }
    let path = src
        .steps_dir
        .join(format!("step-{step}"))
        .join("results")
        .join(name);
    let what = format!("result {name:?} of step {step:?}");
    match crate::results::read_result(&path, src.limit) {
        Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| format!("{what}: not UTF-8")),
        Ok(None) => Err(format!(
            "{what}: not written (no regular file at {})",
            path.display()
        )),
        Err(size) => Err(format!(
            "{what}: {size} bytes, over the limit of {} bytes",
            src.limit
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_of_every_form() {
        let dir = std::env::temp_dir().join(format!("stepresults-{}", std::process::id()));
        let results = dir.join("step-make").join("results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join("s"), "foo").unwrap();
        std::fs::write(results.join("a"), r#"["x", "y z"]"#).unwrap();
        std::fs::write(results.join("o"), r#"{"url": "ar.com"}"#).unwrap();
        let src = Source {
            steps_dir: &dir,
            limit: 4096,
        };
        let args: Vec<String> = [
            "$(steps.make.results.a[*])",
            "$(steps.make.results.a[1])",
            "at $(steps.make.results.o.url)/$(steps.make.results.s)",
            "plain",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expand_args(&args, src).unwrap(),
            vec!["x", "y z", "y z", "at ar.com/foo", "plain"]
        );
        for bad in [
            "$(steps.make.results.missing)",
            "$(steps.make.results.a[9])",
            "$(steps.make.results.o.nokey)",
            "x $(steps.make.results.a[*])",
            "$(steps.../results.s)",
        ] {
            assert!(substitute(bad, src).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc/hostname", results.join("link")).unwrap();
        assert!(substitute("$(steps.make.results.link)", src).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
