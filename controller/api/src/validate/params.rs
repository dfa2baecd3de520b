//! Param declarations and the values given to them.

use std::collections::HashSet;

use super::{Checker, article, is_param_name, is_whole_reference};
use crate::path::Path;
use crate::refs;
use crate::v1::*;

impl<'a> Checker<'_, 'a> {
    /// Param declarations: each named once, with a valid name when
    /// `check_names` (Pipelines take any), and each [`Self::param_spec`].
    pub(super) fn param_specs(&mut self, specs: &[ParamSpec], path: &Path, check_names: bool) {
        self.unique(
            specs.iter().enumerate().map(|(i, p)| (i, p.name.as_str())),
            path,
            "name",
            "param",
        );
        for (i, p) in specs.iter().enumerate() {
            self.param_spec(p, &path.idx(i), check_names);
        }
    }

    /// One param declaration: its name, properties (declared by object
    /// params only, as strings), default and enum.
    fn param_spec(&mut self, p: &ParamSpec, pp: &Path, check_names: bool) {
        let ty = p.kind();
        if p.name.is_empty() {
            self.err(&pp.key("name"), "required field is missing");
        } else if check_names && !is_param_name(&p.name, ty == "object") {
            self.err(
                &pp.key("name"),
                if ty == "object" {
                    format!("{:?} is not a valid object param name: expected letters, digits, '_' and '-', starting with a letter or '_'", p.name)
                } else {
                    format!("{:?} is not a valid param name: expected letters, digits, '_', '-' and '.', starting with a letter or '_'", p.name)
                },
            );
        }
        if ty == "object" {
            if p.properties.is_empty() {
                self.err(
                    &pp.key("properties"),
                    "object params need properties: declare each key",
                );
            }
        } else if !p.properties.is_empty() {
            self.err(
                &pp.key("properties"),
                format!("properties are only for object params, this one is {ty}"),
            );
        }
        for (k, prop) in &p.properties {
            if let Some(t) = &prop.type_
                && t != "string"
            {
                self.err(
                    &pp.key("properties").key_owned(k).key("type"),
                    format!("{t:?} is not supported: object keys are strings"),
                );
            }
        }
        if let Some(d) = &p.default {
            self.param_default(d, pp, ty);
        }
        if !p.enum_.is_empty() {
            self.param_enum(p, pp, ty);
        }
    }

    /// A param's default `d`: of the declared type `ty`. An object default
    /// may lack keys: a run's value gives the rest (Tekton checks the keys
    /// of the two together when the run starts, and so does the engine).
    fn param_default(&mut self, d: &ParamValue, pp: &Path, ty: &str) {
        if d.kind() != ty {
            self.err(
                &pp.key("default"),
                format!(
                    "default is {} {} but the param is declared {ty}",
                    article(d.kind()),
                    d.kind()
                ),
            );
        }
    }

    /// A param's enum: only for string params, values listed once, the
    /// default one of them.
    fn param_enum(&mut self, p: &ParamSpec, pp: &Path, ty: &str) {
        if ty != "string" {
            self.err(
                &pp.key("enum"),
                format!("enum is only for string params, this one is {ty}"),
            );
        }
        let mut seen = HashSet::new();
        for (j, e) in p.enum_.iter().enumerate() {
            if !seen.insert(e) {
                self.err(
                    &pp.key("enum").idx(j),
                    format!("duplicate enum value {e:?}"),
                );
            }
        }
        if let Some(ParamValue::String(d)) = &p.default
            && !p.enum_.contains(d)
        {
            self.err(
                &pp.key("default"),
                format!(
                    "default {d:?} is not one of the enum values: {}",
                    p.enum_.join(", ")
                ),
            );
        }
    }

    /// Values given to params declared in `specs`: every required param is
    /// given, types match, enum values hold. `given_elsewhere` names params
    /// supplied another way (matrix, pipeline propagation).
    pub(super) fn param_values(
        &mut self,
        values: &[Param],
        specs: &[ParamSpec],
        path: &Path,
        missing_at: &Path,
        given_elsewhere: &dyn Fn(&str) -> bool,
        who: &str,
    ) {
        let mut missing = Vec::new();
        for s in specs {
            if s.default.is_none()
                && !values.iter().any(|v| v.name == s.name)
                && !given_elsewhere(&s.name)
            {
                missing.push(s.name.as_str());
            }
        }
        if !missing.is_empty() {
            self.err(
                missing_at,
                format!(
                    "missing value for required param{} of {who}: {}",
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", ")
                ),
            );
        }
        for (i, v) in values.iter().enumerate() {
            let Some(s) = specs.iter().find(|s| s.name == v.name) else {
                continue;
            };
            let vp = path.idx(i).key("value");
            let declared = s.kind();
            let given = v.value.kind();
            let whole_ref = match &v.value {
                ParamValue::String(st) => is_whole_reference(st),
                _ => false,
            };
            if given != declared && !whole_ref {
                self.err(
                    &vp,
                    format!(
                        "param {:?} of {who} is declared {declared} but is given {} {given}",
                        v.name,
                        article(given)
                    ),
                );
            }
            if let (ParamValue::String(st), false) = (&v.value, s.enum_.is_empty())
                && refs::scan(st).is_empty()
                && !s.enum_.contains(st)
            {
                self.err(
                    &vp,
                    format!(
                        "{st:?} is not one of the allowed values of param {:?}: {}",
                        v.name,
                        s.enum_.join(", ")
                    ),
                );
            }
            if let (ParamValue::Object(obj), "object") = (&v.value, declared) {
                for k in s.properties.keys() {
                    if !obj.contains_key(k)
                        && !s.default.as_ref().is_some_and(
                            |d| matches!(d, ParamValue::Object(o) if o.contains_key(k)),
                        )
                    {
                        self.err(
                            &vp,
                            format!("object param {:?} of {who} needs key {k:?}", v.name),
                        );
                    }
                }
            }
        }
    }
}
