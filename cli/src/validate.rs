//! `tkt validate -f FILE... [-o text|json]`: every problem, or `OK`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use tektite_api::validate::validate_all;
use tektite_api::{Diagnostic, LoadOutput};

/// Flags of `tkt validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to check (`-` for standard input); directories are
    /// searched for *.yaml, *.yml and *.json
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Problems shown per document (the rest are counted); 0 shows all
    #[arg(long = "max-errors", value_name = "N", default_value_t = tektite_api::diag::DEFAULT_MAX_PER_DOCUMENT)]
    pub max_errors: usize,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    valid: bool,
    objects: Vec<ObjectRef>,
    diagnostics: &'a [Diagnostic],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    file: String,
    document: usize,
    api_version: String,
    kind: &'static str,
    name: String,
}

/// Loads and validates; returns the exit code (0 valid, 2 invalid).
///
/// # Errors
/// Only failures to write the report (or to list a directory).
pub fn run(args: &Args, out: &mut dyn Write) -> Result<u8> {
    tektite_api::diag::set_max_per_document(args.max_errors);
    let mut all = LoadOutput::default();
    for file in crate::files::expand(&args.files)? {
        let loaded = crate::files::load(&file)?;
        all.objects.extend(loaded.objects);
        all.data.extend(loaded.data);
        all.diagnostics.extend(loaded.diagnostics);
    }
    all.diagnostics.extend(validate_all(&all.objects));
    // Report in reading order: files as given, then document and line.
    let mut files: Vec<String> = Vec::new();
    for d in &all.diagnostics {
        if !files.contains(&d.file) {
            files.push(d.file.clone());
        }
    }
    all.diagnostics.sort_by_key(|d| {
        let rank = files
            .iter()
            .position(|f| *f == d.file)
            .unwrap_or(usize::MAX);
        (rank, d.document.unwrap_or(0), d.line.unwrap_or(0))
    });
    let valid = !all.diagnostics.iter().any(Diagnostic::is_error);
    match args.output {
        Format::Json => {
            let report = Report {
                valid,
                objects: all
                    .objects
                    .iter()
                    .map(|o| ObjectRef {
                        file: o.file.clone(),
                        document: o.document,
                        api_version: o.source_version.clone(),
                        kind: o.object.kind(),
                        name: o.object.display_name(),
                    })
                    .chain(all.data.iter().map(|d| ObjectRef {
                        file: d.file.clone(),
                        document: d.document,
                        api_version: "v1".into(),
                        kind: d.object.kind.as_str(),
                        name: d.object.name.clone(),
                    }))
                    .collect(),
                diagnostics: &all.diagnostics,
            };
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
        Format::Text => {
            for d in &all.diagnostics {
                writeln!(out, "{d}")?;
            }
            let errors = all.diagnostics.iter().filter(|d| d.is_error()).count();
            let warnings = all.diagnostics.len() - errors;
            if valid {
                let w = if warnings > 0 {
                    format!(", {warnings} warning(s)")
                } else {
                    String::new()
                };
                let n = all.objects.len() + all.data.len();
                writeln!(out, "OK: {n} object(s) valid{w}")?;
            } else {
                writeln!(out, "{errors} error(s), {warnings} warning(s)")?;
            }
        }
    }
    Ok(if valid { 0 } else { crate::EXIT_INVALID })
}
