//! ConfigMap and Secret volumes of a local pod written out: the files
//! `tektite_engine::sources::materialize` lists, beneath a directory of
//! the run that only `tkt` may enter (0700), each volume a directory
//! (0755, as a kubelet's, for steps running as another user) and each file
//! with its mode. Everything is made new with the `beneath` helpers, so no
//! link a step may have left is ever followed; the directory goes with the
//! run's work directory.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use tektite_engine::sources::VolumeFiles;

use crate::beneath;
use crate::runtime::RuntimeError;

fn err(message: impl Into<String>) -> RuntimeError {
    RuntimeError {
        what: "configMap/secret volume".into(),
        message: message.into(),
    }
}

/// Writes `volumes` under `root` (made anew, 0700).
///
/// # Errors
/// A directory or file cannot be made, or a path would leave `root`.
pub fn write(root: &Path, volumes: &[VolumeFiles]) -> Result<(), RuntimeError> {
    // remove_dir_all follows no link.
    let _ = std::fs::remove_dir_all(root);
    if volumes.is_empty() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .and_then(|()| std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| err(format!("{}: {e}", root.display())))?;
    for v in volumes {
        let base = Path::new(&v.volume);
        beneath::dir(root, base, 0o755).map_err(|e| err(e.to_string()))?;
        for f in &v.files {
            let rel = base.join(&f.path);
            if let Some(parent) = rel.parent().filter(|p| *p != base) {
                beneath::dir(root, parent, 0o755).map_err(|e| err(e.to_string()))?;
            }
            beneath::create(root, &rel, &f.bytes, f.mode).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(())
}
