//! Harvesting results: task results from `/tekton/results/<name>`, step
//! results from `<step_metadata_dir>/results/<name>`.

use crate::contract::{ResultKind, ResultValue};

/// A result over the size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub name: String,
    pub kind: ResultKind,
    pub size: usize,
    pub limit: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ResultKind::Task => "result",
            ResultKind::Step => "step result",
        };
        write!(
            f,
            "{kind} {:?} is {} bytes, over the limit of {} bytes",
            self.name, self.size, self.limit
        )
    }
}

/// Reads the named results that exist (a result a step did not write is not
/// reported). Values are taken as text; invalid UTF-8 is replaced.
///
/// # Errors
/// The first result over `limit`.
pub fn harvest(
    dir: &str,
    names: &[String],
    kind: ResultKind,
    limit: usize,
) -> Result<Vec<ResultValue>, TooLarge> {
    let mut out = Vec::new();
    for name in names {
        let path = std::path::Path::new(dir).join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.len() > limit {
            return Err(TooLarge {
                name: name.clone(),
                kind,
                size: bytes.len(),
                limit,
            });
        }
        out.push(ResultValue {
            name: name.clone(),
            kind,
            value: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(out)
}
