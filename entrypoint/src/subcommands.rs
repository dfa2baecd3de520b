//! `entrypoint init SRC DST [STEP…]`, `cp SRC DST`, `step-init [STEP…]`
//! and `decode-script PATH`, as in Tekton.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::contract::ROOT_ENV;

/// `/tekton`, or where `TEKTITE_TEKTON_ROOT` points.
pub fn root() -> PathBuf {
    std::env::var_os(ROOT_ENV).map_or_else(|| PathBuf::from("/tekton"), PathBuf::from)
}

/// Copies a file, keeping it executable.
///
/// # Errors
/// A message naming the paths.
pub fn cp(src: &Path, dst: &Path) -> Result<(), String> {
    if let Some(dir) = dst.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::copy(src, dst)
        .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dst.display()))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", dst.display()))
}

/// Links `<root>/steps/<name>` and `<root>/steps/<i>` to `<root>/run/<i>/status`.
///
/// # Errors
/// A message naming the link that could not be made.
pub fn step_init(root: &Path, steps: &[String]) -> Result<(), String> {
    let dir = root.join("steps");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    step_links(&dir, &root.join("run"), steps)
}

/// Links `<dir>/<name>` and `<dir>/<i>` to `<run>/<i>/status` for each step
/// (an existing link is kept): `step-init` in the pod, or `tkt run` in the
/// host directory of the steps volume, with `run` the pod's `/tekton/run`.
///
/// # Errors
/// A step name that is not one path component, or a link that cannot be
/// made, named.
pub fn step_links(dir: &Path, run: &Path, steps: &[String]) -> Result<(), String> {
    for (i, name) in steps.iter().enumerate() {
        // Container names are DNS labels: anything else would link elsewhere.
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!(
                "step name {name:?} cannot name a link in {}: expected a DNS label",
                dir.display()
            ));
        }
        let target = run.join(i.to_string()).join("status");
        for link in [dir.join(name), dir.join(i.to_string())] {
            match std::os::unix::fs::symlink(&target, &link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(format!(
                        "cannot link {} to {}: {e}",
                        link.display(),
                        target.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Decodes a base64 script file in place, keeping its permissions.
///
/// # Errors
/// A message naming the file.
pub fn decode_script(path: &Path) -> Result<(), String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read script {}: {e}", path.display()))?;
    let compact: Vec<u8> = text
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| format!("script {} is not base64: {e}", path.display()))?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions())
        .map_err(|e| e.to_string())?;
    crate::report::write_atomic(path, &decoded)?;
    std::fs::set_permissions(path, mode)
        .map_err(|e| format!("cannot set permissions of {}: {e}", path.display()))
}

/// Runs a subcommand if `args` names one; `None` otherwise.
pub fn dispatch(args: &[String]) -> Option<Result<(), String>> {
    let (cmd, rest) = args.split_first()?;
    let paths = |n: usize| -> Result<Vec<PathBuf>, String> {
        if rest.len() < n {
            return Err(format!("{cmd} needs {n} path(s), got {}", rest.len()));
        }
        Ok(rest[..n].iter().map(PathBuf::from).collect())
    };
    Some(match cmd.as_str() {
        "init" => paths(2).and_then(|p| {
            cp(&p[0], &p[1])?;
            step_init(&root(), &rest[2..])
        }),
        "cp" => paths(2).and_then(|p| cp(&p[0], &p[1])),
        "step-init" => step_init(&root(), rest),
        "decode-script" => paths(1).and_then(|p| decode_script(&p[0])),
        _ => return None,
    })
}
