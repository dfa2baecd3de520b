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
        let bytes = match read_result(&path, limit) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(size) => {
                return Err(TooLarge {
                    name: name.clone(),
                    kind,
                    size,
                    limit,
                });
            }
        };
        out.push(ResultValue {
            name: name.clone(),
            kind,
            value: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(out)
}

/// A result file's bytes: `None` when there is no regular file there. A
/// result is a file the step wrote, not a link (which could point into a
/// workspace the step cannot see but this wrapper's step can), a FIFO
/// (which would block) or a device; its size is checked before it is
/// read, and the read stops past the limit. `Err(size)` when over `limit`.
pub(crate) fn read_result(path: &std::path::Path, limit: usize) -> Result<Option<Vec<u8>>, usize> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    else {
        if path.is_symlink() {
            eprintln!(
                "entrypoint: result {} is a symbolic link: not read",
                path.display()
            );
        }
        return Ok(None);
    };
    let Ok(meta) = f.metadata() else {
        return Ok(None);
    };
    if !meta.is_file() {
        eprintln!(
            "entrypoint: result {} is not a regular file: not read",
            path.display()
        );
        return Ok(None);
    }
    let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if size > limit {
        return Err(size);
    }
    let mut bytes = Vec::with_capacity(size);
    let read = f.take(limit as u64 + 1).read_to_end(&mut bytes);
    match read {
        Ok(n) if n > limit => Err(n),
        Ok(_) => Ok(Some(bytes)),
        Err(_) => Ok(None),
    }
}
