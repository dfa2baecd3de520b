//! `tkt bundle push` and `tkt bundle list`: Tekton bundles, as `tkn bundle`
//! makes and reads them (one layer per object; see
//! [`tektite_resolve::bundle`]). The files are validated as `tkt validate`
//! would first; registries on loopback addresses are spoken to over plain
//! HTTP, credentials come from the docker config.

use std::io::Write;

use clap::{Parser, Subcommand};
use tektite_api::load::Object;
use tektite_api::{Severity, validate};
use tektite_resolve::bundle::{self, Entry};
use tektite_resolve::{Options, Resolvers};

use crate::{EXIT_INVALID, note};

#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Pack Tasks, Pipelines and StepActions into a bundle and push it
    Push {
        /// Where to push: registry/repository:tag
        reference: String,
        /// Files (or folders) of Tasks, Pipelines and StepActions (repeatable)
        #[arg(short = 'f', long = "file", value_name = "FILE|DIR", required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// List the objects of a bundle: KIND.tekton.dev/NAME per line
    List {
        /// The bundle: registry/repository:tag or @sha256:…
        reference: String,
        /// Only this kind (task, pipeline, stepaction)
        kind: Option<String>,
        /// Only this name
        name: Option<String>,
        /// name (default) or json
        #[arg(short = 'o', long = "output", default_value = "name")]
        output: String,
    },
}

pub fn run(args: &Args, out: &mut impl Write) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resolvers = Resolvers::new(Options::default())?;
    match &args.command {
        Verb::Push { reference, files } => {
            let objects = match objects(files)? {
                Ok(o) => o,
                Err(code) => return Ok(code),
            };
            for o in &objects {
                note(&format!("added {} {:?}", o.entry.kind, o.entry.name));
            }
            match rt.block_on(bundle::push(&resolvers, reference, &objects)) {
                Ok(p) => {
                    writeln!(out, "{}", p.pinned)?;
                    Ok(0)
                }
                Err(e) => {
                    note(&format!("tkt bundle push {reference}: {e}"));
                    Ok(1)
                }
            }
        }
        Verb::List {
            reference,
            kind,
            name,
            output,
        } => {
            let entries = match rt.block_on(bundle::list(&resolvers, reference)) {
                Ok(e) => e,
                Err(e) => {
                    note(&format!("tkt bundle list {reference}: {e}"));
                    return Ok(1);
                }
            };
            let kind = kind.as_deref().map(normal_kind);
            let shown: Vec<&Entry> = entries
                .iter()
                .filter(|e| kind.as_deref().is_none_or(|k| e.kind == k))
                .filter(|e| name.as_deref().is_none_or(|n| e.name == n))
                .collect();
            if shown.is_empty() && (kind.is_some() || name.is_some()) {
                note(&format!(
                    "tkt bundle list {reference}: no objects of kind {:?}{} found",
                    kind.unwrap_or_default(),
                    name.as_deref()
                        .map(|n| format!(" named {n:?}"))
                        .unwrap_or_default()
                ));
                return Ok(1);
            }
            match output.as_str() {
                "json" => {
                    let list: Vec<_> = shown
                        .iter()
                        .map(|e| serde_json::json!({"kind": e.kind, "name": e.name, "apiVersion": e.api_version}))
                        .collect();
                    writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                }
                "name" => {
                    for e in shown {
                        writeln!(out, "{}.tekton.dev/{}", e.kind, e.name)?;
                    }
                }
                other => {
                    note(&format!(
                        "tkt bundle list: -o {other:?}: expected name or json"
                    ));
                    return Ok(EXIT_INVALID);
                }
            }
            Ok(0)
        }
    }
}

/// `Tasks` → `task`, as `tkn` takes kinds.
fn normal_kind(k: &str) -> String {
    let k = k.to_ascii_lowercase();
    k.strip_suffix('s').map(str::to_string).unwrap_or(k)
}

/// The objects of `files`, validated, each as JSON with its entry; invalid
/// input prints its problems and exits 2.
fn objects(files: &[std::path::PathBuf]) -> anyhow::Result<Result<Vec<bundle::Object>, u8>> {
    let paths = crate::files::expand(files)?;
    let mut loaded = Vec::new();
    let mut diags = Vec::new();
    for p in &paths {
        let o = crate::files::load(p)?;
        diags.extend(o.diagnostics);
        loaded.extend(o.objects);
    }
    diags.extend(validate::validate_all(&loaded));
    let errors: Vec<_> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        for d in errors {
            note(&d.to_string());
        }
        note("tkt: invalid input: nothing was pushed");
        return Ok(Err(EXIT_INVALID));
    }
    let mut out = Vec::new();
    for l in &loaded {
        let (kind, value) = match &l.object {
            Object::Task(t) => ("task", serde_json::to_value(t)?),
            Object::Pipeline(p) => ("pipeline", serde_json::to_value(p)?),
            Object::StepAction(s) => ("stepaction", serde_json::to_value(s)?),
            other => {
                note(&format!(
                    "{}: {} {}: a bundle holds Tasks, Pipelines and StepActions",
                    l.file,
                    other.kind(),
                    other.display_name()
                ));
                return Ok(Err(EXIT_INVALID));
            }
        };
        // The version only (`v1`), as tkn writes it.
        let version = value["apiVersion"]
            .as_str()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        out.push(bundle::Object {
            entry: Entry {
                kind: kind.into(),
                name: l.object.display_name(),
                api_version: version,
            },
            json: serde_json::to_vec(&value)?,
        });
    }
    if out.is_empty() {
        note("tkt bundle push: no Task, Pipeline or StepAction in the files");
        return Ok(Err(EXIT_INVALID));
    }
    Ok(Ok(out))
}
