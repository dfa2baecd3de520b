//! Paths that come from a pod (or from YAML) resolved beneath a root that
//! `tkt` owns, without following a symbolic link anywhere on the way.
//!
//! A step is untrusted code, and what it leaves in a run directory or a
//! workspace (a symlink to `/etc`, a FIFO, `/dev/zero`, a huge file) must
//! never make `tkt`, which may be root, read, write or chmod outside the
//! run. So every path below a root is walked one component at a time with
//! `openat(O_NOFOLLOW)`, as a kubelet resolves subPaths: a link, a `..` or
//! an absolute part is refused, and what is read must be a regular file
//! within a size limit.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a path beneath a root was refused or could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error("{path}: {what}")]
    Refused { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BeneathError {
    fn refused(path: &Path, what: impl Into<String>) -> BeneathError {
        BeneathError::Refused {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    fn io(path: &Path, e: impl Into<std::io::Error>) -> BeneathError {
        BeneathError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }
    }
}

/// The normal components of `rel`, or why it does not stay beneath its
/// root (absolute, or with `..`). `.` parts are dropped.
fn parts(rel: &Path) -> Result<Vec<&OsStr>, String> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' is not allowed".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be a relative path".into());
            }
        }
    }
    Ok(out)
}

const DIR: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

/// Opens the directory `root/rel`, refusing a symlink anywhere in `rel`
/// (`root` itself is `tkt`'s own and is taken as it is). With `create`,
/// missing directories are made with `mode`, as `mkdir -p` would, but
/// never through a link.
fn open_dir(root: &Path, rel: &Path, create: Option<u32>) -> Result<OwnedFd, BeneathError> {
    let full = root.join(rel);
    let parts = parts(rel).map_err(|what| BeneathError::refused(&full, what))?;
    if create.is_some() {
        std::fs::create_dir_all(root).map_err(|e| BeneathError::io(root, e))?;
    }
    let mut dir = rustix::fs::openat(rustix::fs::CWD, root, DIR, Mode::empty())
        .map_err(|e| BeneathError::io(root, e))?;
    let mut at = root.to_path_buf();
    for p in parts {
        at.push(p);
        let opened = match rustix::fs::openat(&dir, p, DIR, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if create.is_some() => {
                let mode = Mode::from_bits_truncate(create.unwrap_or(0o755));
                let made = match rustix::fs::mkdirat(&dir, p, mode) {
                    Ok(()) => true,
                    Err(rustix::io::Errno::EXIST) => false,
                    Err(e) => return Err(BeneathError::io(&at, e)),
                };
                let opened = rustix::fs::openat(&dir, p, DIR, Mode::empty());
                // The mode as given, whatever the umask: set on the
                // directory just made and opened, never through a path.
                if made && let Ok(fd) = &opened {
                    rustix::fs::fchmod(fd, mode).map_err(|e| BeneathError::io(&at, e))?;
                }
                opened
            }
            other => other,
        };
        dir = opened.map_err(|e| not_a_dir(&dir, p, &at, e))?;
    }
    Ok(dir)
}

/// The error for a component `name` of `parent` that could not be opened
/// as a directory: a symlink, or something else, said plainly.
fn not_a_dir(parent: &OwnedFd, name: &OsStr, at: &Path, e: rustix::io::Errno) -> BeneathError {
    if !matches!(e, rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) {
        return BeneathError::io(at, e);
    }
    let link = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
    if link {
        BeneathError::refused(at, "is a symbolic link, which is not followed")
    } else {
        BeneathError::refused(at, "is not a directory")
    }
}

/// Makes (if missing) and checks the directory `root/rel` with no symlink
/// on the way, and returns its path. Each directory this call makes gets
/// exactly `mode` (the umask aside); one that is there keeps its own, as a
/// kubelet leaves it.
///
/// # Errors
/// `rel` leaves `root`, a part of it is a symlink or not a directory, or
/// the I/O error.
pub fn dir(root: &Path, rel: &Path, mode: u32) -> Result<PathBuf, BeneathError> {
    open_dir(root, rel, Some(mode))?;
    Ok(root.join(rel))
}

/// Whether `root/rel` is a regular file, reached with no symlink on the
/// way (a link, a missing path or anything else is not).
pub fn is_file(root: &Path, rel: &Path) -> bool {
    let Some(name) = rel.file_name() else {
        return false;
    };
    let Ok(dir) = open_dir(root, rel.parent().unwrap_or(Path::new("")), None) else {
        return false;
    };
    rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// Opens the file `root/rel` for reading: no symlink anywhere in `rel`, a
/// regular file (a FIFO or a device is never opened), and at most `limit`
/// bytes long.
fn open_file(root: &Path, rel: &Path, limit: u64) -> Result<std::fs::File, BeneathError> {
    let full = root.join(rel);
    let Some(name) = rel.file_name() else {
        return Err(BeneathError::refused(&full, "names no file"));
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = open_dir(root, parent, None)?;
    // First only a handle (O_PATH): opening a FIFO to read would wait for
    // a writer, and opening some devices does something (a watchdog arms,
    // a tape rewinds). What it is is checked on the handle; only a regular
    // file is then opened for reading, through the handle itself.
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let handle = rustix::fs::openat(&dir, name, flags, Mode::empty())
        .map_err(|e| BeneathError::io(&full, e))?;
    let st = rustix::fs::fstat(&handle).map_err(|e| BeneathError::io(&full, e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => {}
        FileType::Symlink => {
            return Err(BeneathError::refused(
                &full,
                "is a symbolic link, which is not followed",
            ));
        }
        _ => return Err(BeneathError::refused(&full, "is not a regular file")),
    }
    let fd = rustix::fs::openat(
        rustix::fs::CWD,
        format!("/proc/self/fd/{}", handle.as_raw_fd()),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| BeneathError::io(&full, e))?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return Err(BeneathError::refused(
            &full,
            format!("is {size} bytes, over the limit of {limit} bytes"),
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Reads the regular file `root/rel` (no symlink on the way), of at most
/// `limit` bytes; a file that grows while it is read is cut at `limit + 1`
/// bytes and refused.
///
/// # Errors
/// As [`dir`], and: not a regular file, or over the limit.
pub fn read(root: &Path, rel: &Path, limit: u64) -> Result<Vec<u8>, BeneathError> {
    let mut f = open_file(root, rel, limit)?;
    let mut bytes = Vec::new();
    (&mut f)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| BeneathError::io(&root.join(rel), e))?;
    if bytes.len() as u64 > limit {
        return Err(BeneathError::refused(
            &root.join(rel),
            format!("grew over the limit of {limit} bytes while being read"),
        ));
    }
    Ok(bytes)
}

/// Creates the file `root/rel` with `bytes` and `mode`; never through a
/// symlink and never over something already there (`O_EXCL`).
///
/// # Errors
/// As [`dir`], and: the file exists (whatever it is).
pub fn create(root: &Path, rel: &Path, bytes: &[u8], mode: u32) -> Result<(), BeneathError> {
    use std::io::Write as _;
    let full = root.join(rel);
    let Some(name) = rel.file_name() else {
        return Err(BeneathError::refused(&full, "names no file"));
    };
    let dir = open_dir(root, rel.parent().unwrap_or(Path::new("")), None)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, name, flags, Mode::from_bits_truncate(mode))
        .map_err(|e| BeneathError::io(&full, e))?;
    // The mode as given, whatever the umask.
    rustix::fs::fchmod(&fd, Mode::from_bits_truncate(mode))
        .map_err(|e| BeneathError::io(&full, e))?;
    std::fs::File::from(fd)
        .write_all(bytes)
        .map_err(|e| BeneathError::io(&full, e))
}

/// `path` as (root, the part below it), for a path known to lie under one
/// of `roots`; `None` when it lies under none.
pub fn split<'a>(path: &'a Path, roots: &[&'a Path]) -> Option<(&'a Path, &'a Path)> {
    roots
        .iter()
        .filter_map(|r| Some((*r, path.strip_prefix(r).ok()?)))
        .max_by_key(|(r, _)| r.as_os_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tektite-beneath-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn dirs_are_made_but_never_through_a_symlink() {
        let d = tmp("dirs");
        let root = d.join("root");
        let outside = d.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("src")).unwrap();
        for rel in ["src", "src/deeper"] {
            let e = dir(&root, Path::new(rel), 0o777).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        assert!(!outside.join("deeper").exists());
        let mode = std::fs::metadata(&outside).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the link's target was chmodded");
        let made = dir(&root, Path::new("a/b"), 0o777).unwrap();
        assert_eq!(made, root.join("a/b"));
        assert_eq!(
            std::fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o777
        );
        for bad in ["../x", "/etc", "a/../../x"] {
            assert!(dir(&root, Path::new(bad), 0o755).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reads_refuse_links_fifos_and_big_files() {
        let d = tmp("reads");
        std::fs::create_dir_all(d.join("s")).unwrap();
        std::fs::write(d.join("secret"), "host secret").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("s/link")).unwrap();
        std::os::unix::fs::symlink(&d, d.join("dirlink")).unwrap();
        nix::unistd::mkfifo(&d.join("s/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(d.join("s/big"), vec![b'x'; 100]).unwrap();
        std::fs::write(d.join("s/ok"), "fine").unwrap();
        assert_eq!(read(&d, Path::new("s/ok"), 10).unwrap(), b"fine");
        for (rel, says) in [
            ("s/link", "symbolic link"),
            ("dirlink/secret", "symbolic link"),
            ("s/fifo", "not a regular file"),
            ("s/big", "over the limit"),
            ("../secret", "'..'"),
        ] {
            let e = read(&d, Path::new(rel), 10).unwrap_err().to_string();
            assert!(e.contains(says), "{rel}: {e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_never_writes_through_a_link_or_over_a_file() {
        let d = tmp("create");
        std::fs::write(d.join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink(d.join("victim"), d.join("ready")).unwrap();
        assert!(create(&d, Path::new("ready"), b"READY", 0o644).is_err());
        assert_eq!(std::fs::read_to_string(d.join("victim")).unwrap(), "keep");
        create(&d, Path::new("fresh"), b"READY", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("fresh")).unwrap(), "READY");
        assert!(create(&d, Path::new("fresh"), b"again", 0o600).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
