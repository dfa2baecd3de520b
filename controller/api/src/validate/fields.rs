//! Fields several kinds share: result declarations, the workspaces a
//! Task or Pipeline needs bound, `when` expressions, and references by
//! name or resolver.

use super::{Checker, is_result_name};
use crate::path::Path;
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// Result declarations (name, type, properties): each named once, with
    /// a valid name; object results declare their properties.
    pub(super) fn result_decls<'r>(
        &mut self,
        items: impl Iterator<
            Item = (
                &'r str,
                Option<&'r String>,
                &'r std::collections::BTreeMap<String, PropertySpec>,
            ),
        >,
        path: &Path,
    ) {
        let items: Vec<_> = items.collect();
        self.unique(
            items.iter().enumerate().map(|(i, (n, _, _))| (i, *n)),
            path,
            "name",
            "result",
        );
        for (i, (name, ty, props)) in items.iter().enumerate() {
            let rp = path.idx(i);
            if !is_result_name(name) {
                self.err(
                    &rp.key("name"),
                    format!("{name:?} is not a valid result name: expected letters, digits, '-', '_' and '.', starting and ending with a letter or digit"),
                );
            }
            if ty.map(String::as_str) == Some("object") && props.is_empty() {
                self.err(
                    &rp.key("properties"),
                    "object results need properties: declare each key",
                );
            }
        }
    }

    /// Every workspace `who` declares and does not mark optional is in
    /// `bound`.
    pub(super) fn required_workspaces(
        &mut self,
        bound: &[&str],
        decls: impl Iterator<Item = (&'a str, bool)>,
        at: &Path,
        who: &str,
    ) {
        let missing: Vec<&str> = decls
            .filter(|(n, optional)| !optional && !bound.contains(n))
            .map(|(n, _)| n)
            .collect();
        if !missing.is_empty() {
            self.err(
                at,
                format!(
                    "{who} needs workspace{} that {} not bound: {}",
                    if missing.len() > 1 { "s" } else { "" },
                    if missing.len() > 1 { "are" } else { "is" },
                    missing.join(", ")
                ),
            );
        }
    }

    /// One `when` expression: `cel` alone, or input, operator and values.
    pub(super) fn when(&mut self, w: &WhenExpression, path: &Path) {
        if let Some(cel) = &w.cel {
            if w.input.is_some() || w.operator.is_some() || !w.values.is_empty() {
                self.err(
                    path,
                    "cel cannot be combined with input, operator or values",
                );
            }
            if cel.trim().is_empty() {
                self.err(&path.key("cel"), "cel expression must not be empty");
            }
            return;
        }
        if w.input.is_none() && w.operator.is_none() && w.values.is_empty() {
            self.err(
                path,
                "empty when expression: set input, operator and values (or cel)",
            );
            return;
        }
        if w.input.as_deref().unwrap_or("").is_empty() {
            self.err(&path.key("input"), "required field is missing");
        }
        match w.operator.as_deref() {
            None => self.err(
                &path.key("operator"),
                "required field is missing: expected in or notin",
            ),
            Some("in" | "notin") => {}
            Some(_) => {} // the schema reports values outside the enum
        }
        if w.values.is_empty() {
            self.err(&path.key("values"), "values must not be empty");
        }
    }

    /// A reference by `name`, or by `resolver` and its params (a name
    /// alongside a resolver is a URL); resolver params named once.
    pub(super) fn resolver_ref(
        &mut self,
        name: Option<&str>,
        resolver: Option<&str>,
        params: &[Param],
        path: &Path,
    ) {
        match (name, resolver) {
            (None, None) => self.err(
                &path.key("name"),
                "required field is missing: set name, or resolver and params",
            ),
            (Some(_), None) if !params.is_empty() => self.err(
                &path.key("params"),
                "params need a resolver: set resolver, or use name alone",
            ),
            (Some(n), Some(_)) if !n.contains("://") => {
                self.err(
                    &path.key("name"),
                    "set either name or resolver (a name alongside a resolver must be a URL)",
                );
            }
            _ => {}
        }
        self.unique(
            params.iter().enumerate().map(|(i, p)| (i, p.name.as_str())),
            &path.key("params"),
            "name",
            "resolver param",
        );
    }
}
