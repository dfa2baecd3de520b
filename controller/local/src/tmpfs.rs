//! Where a pod's own bookkeeping lives while it runs: in memory.
//!
//! Each step of a pod makes about ten files and directories that only the
//! pod's machinery reads (its run directory's markers, exit code and
//! report, its `/tekton/steps` links, its credentials home, the
//! termination file): made, read once and removed within the run. On a
//! disk file system each costs an inode allocation and a free (on ext4
//! without a journal, a search past every inode freed in the last minute),
//! which was most of a short step's cost. The volumes that hold them
//! (`podman::is_bookkeeping_volume`) are placed in a private directory on a tmpfs
//! instead; workspaces, results, scripts, `HOME` and the logs stay on disk.
//!
//! The directory is `TEKTITE_RUN_TMPFS` when it is set to a path (`off`
//! keeps everything on disk), else the first usable of
//! `/dev/shm/tektite-<uid>` and `$XDG_RUNTIME_DIR/tektite` whose parent is
//! a tmpfs (not `/run`, which the system needs and which a step could
//! fill). It is used only when it is a real directory (not a link) of this
//! user that no one else can enter, beneath directories that only root or
//! this user can change (or sticky ones, where others cannot move what is
//! ours): in a shared, world-writable parent another user may have made it
//! first, and a runtime directory inherited through `sudo -E` is another
//! user's.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::Digest as _;

/// The variable that chooses the directory (a path) or turns it off (`off`).
pub const ENV: &str = "TEKTITE_RUN_TMPFS";

/// `statfs`'s type of a tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// This user's private directory for pods' bookkeeping, if there is one
/// (looked for once per process).
pub fn base() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(find).as_deref()
}

fn find() -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(v) if v == "off" || v == "0" => return None,
        Some(v) if !v.is_empty() => return private_dir(Path::new(&v)),
        _ => {}
    }
    let uid = nix::unistd::geteuid();
    let mut candidates = vec![PathBuf::from(format!("/dev/shm/tektite-{uid}"))];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        candidates.push(x.join("tektite"));
    }
    candidates
        .into_iter()
        .filter(|c| c.is_absolute() && c.parent().is_some_and(is_tmpfs))
        .find_map(|c| private_dir(&c))
}

/// Whether `dir` is on a tmpfs.
pub fn is_tmpfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|s| u64::try_from(s.f_type).is_ok_and(|t| t == TMPFS_MAGIC))
}

/// `dir` (its parent's links resolved), made (mode 0700) if it is
/// missing, when it is a directory of this user's that only this user can
/// enter, beneath [`trusted_ancestors`].
fn private_dir(dir: &Path) -> Option<PathBuf> {
    let (parent, name) = (dir.parent()?, dir.file_name()?);
    if !dir.is_absolute() {
        return None;
    }
    let dir = std::fs::canonicalize(parent).ok()?.join(name);
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    (is_private(&dir) && trusted_ancestors(&dir)).then_some(dir)
}

/// Whether `dir` is a directory (not a link) of this user's with no
/// access for anyone else.
fn is_private(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|m| {
        m.file_type().is_dir()
            && m.uid() == nix::unistd::geteuid().as_raw()
            && m.mode() & 0o077 == 0
    })
}

/// Whether every directory above `dir` is a real directory (no link) that
/// only root or this user can change, or a sticky one (where no one else
/// can rename or remove what is this user's): no one else can put
/// something else in `dir`'s place.
fn trusted_ancestors(dir: &Path) -> bool {
    let uid = nix::unistd::geteuid().as_raw();
    dir.ancestors().skip(1).all(|a| {
        std::fs::symlink_metadata(a).is_ok_and(|m| {
            m.file_type().is_dir()
                && (m.uid() == 0 || m.uid() == uid)
                && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0)
        })
    })
}

/// Whether `path` can be a run's directory (named `leaf`) of some store in
/// a private directory as [`base`] takes one: what a run recorded of where
/// its directory was, checked before it is removed (the base may have
/// been another, with another environment).
pub fn is_run_dir(path: &Path, leaf: &str) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.file_name() == Some(std::ffi::OsStr::new(leaf))
        && path
            .parent()
            .and_then(Path::parent)
            .is_some_and(|base| is_private(base) && trusted_ancestors(base))
}

/// The directory of one run store's pods under `base`: named after the
/// store's path, so a later `tkt` (recovering a run a crash left) finds
/// it again.
pub fn store_dir(base: &Path, store_root: &Path) -> PathBuf {
    let root = std::fs::canonicalize(store_root).unwrap_or_else(|_| store_root.to_path_buf());
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    base.join(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tkt-tmpfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_private_directory_is_made_or_taken_only_when_no_one_else_can_enter_it() {
        let d = scratch("private");
        // Made, 0700.
        let made = private_dir(&d.join("new")).unwrap();
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Taken again as it is.
        assert_eq!(private_dir(&made), Some(made.clone()));
        // Open to others: refused.
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_dir(&open), None);
        // A link to a private directory: refused (it may point anywhere).
        let link = d.join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert_eq!(private_dir(&link), None);
        // A file: refused; a relative path: refused.
        std::fs::write(d.join("file"), b"").unwrap();
        assert_eq!(private_dir(&d.join("file")), None);
        assert_eq!(private_dir(Path::new("relative")), None);
        // Another user's (as root, which can make one): refused.
        if nix::unistd::geteuid().is_root() {
            let theirs = d.join("theirs");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&theirs)
                .unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            assert_eq!(private_dir(&theirs), None);
            // Ours, but in another user's directory (an inherited
            // `XDG_RUNTIME_DIR`): they could move it and put theirs there.
            let home = d.join("their-runtime-dir");
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
            assert_eq!(private_dir(&home.join("tektite")), None);
        }
        // In a directory anyone can write: refused, unless it is sticky.
        let shared = d.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(private_dir(&shared.join("a")), None);
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(private_dir(&shared.join("b")), Some(shared.join("b")));
        // Through a link to its parent: taken at the parent's real place.
        std::os::unix::fs::symlink(&shared, d.join("to-shared")).unwrap();
        assert_eq!(
            private_dir(&d.join("to-shared").join("b")),
            Some(shared.join("b"))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_recorded_run_directory_is_trusted_only_in_a_private_base() {
        let d = scratch("recorded");
        let base = private_dir(&d.join("base")).unwrap();
        let run = base.join("0123456789abcdef").join("taskrun-a");
        assert!(is_run_dir(&run, "taskrun-a"));
        assert!(!is_run_dir(&run, "taskrun-b"), "another run's name");
        let up = base.join("k").join("..").join("taskrun-a");
        assert!(!is_run_dir(&up, "taskrun-a"), "..");
        assert!(!is_run_dir(Path::new("k/taskrun-a"), "taskrun-a"));
        assert!(!is_run_dir(&d.join("k").join("taskrun-a"), "taskrun-a"));
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!is_run_dir(&run, "taskrun-a"), "a base others can enter");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_found_directory_is_on_a_tmpfs_when_the_machine_has_one() {
        if std::env::var_os(ENV).is_some() {
            return; // chosen by whoever runs the tests
        }
        let shm = Path::new("/dev/shm");
        match base() {
            Some(b) => assert!(is_tmpfs(b), "{} is not a tmpfs", b.display()),
            None => assert!(!is_tmpfs(shm), "/dev/shm is a tmpfs, yet none was found"),
        }
    }

    #[test]
    fn a_store_has_one_directory_whatever_path_names_it() {
        let d = scratch("store");
        let a = store_dir(Path::new("/b"), &d);
        let b = store_dir(Path::new("/b"), &d.join("x").join(".."));
        std::fs::create_dir(d.join("x")).unwrap();
        let c = store_dir(Path::new("/b"), &d.join("x").join(".."));
        assert_ne!(a, b, "a path that does not resolve is taken as it is");
        assert_eq!(a, c);
        assert_ne!(a, store_dir(Path::new("/b"), &d.join("x")));
        assert_eq!(a.parent(), Some(Path::new("/b")));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
