//! `entrypoint container SPEC -- COMMAND [ARG…]`: how the process runtime
//! of `tkt run` starts each container of a pod on the host, with system
//! calls and no shell or `mount(8)` in between.
//!
//! The process (started by `tkt`, not a process group leader) makes a
//! session of its own, so that everything the container starts can be
//! found and stopped, and asks to be killed with the `tkt` thread that
//! started it. Then:
//!
//! - without a namespace (`tkt run` without root: paths rewritten), it
//!   becomes the command;
//! - with one (as root), it makes private mount and PID namespaces, mounts
//!   a tmpfs on each of the spec's roots (`/tekton`, `/workspace`,
//!   `/ko-app`) and binds the container's volumes at their paths, parents
//!   before children, as a kubelet does; then it starts itself again as
//!   `container-init`, the namespace's PID 1, which mounts the namespace's
//!   own `/proc`, asks to be killed with its parent and becomes the command
//!   in its working directory. The parent waits for it and exits as it
//!   did (128 + the signal that killed it); signals that would end the
//!   parent before it are caught (the group's members get them too). When
//!   PID 1 ends, or the parent is killed, the kernel kills everything left
//!   in the namespace, as when a container ends.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// Exit code when the command cannot be found (as a shell's).
pub const NOT_FOUND: i32 = 127;
/// Exit code when the command cannot be run (as a shell's).
pub const CANNOT_RUN: i32 = 126;

/// What `entrypoint container` sets up before the command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Private mount and PID namespaces; none: the command runs as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
}

/// The mounts of a container's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// Directories that get an empty tmpfs of their own first.
    pub tmpfs: Vec<String>,
    /// Bind mounts, in this order (parents before children).
    pub mounts: Vec<Mount>,
    /// Where the command starts (made if missing).
    pub working_dir: String,
}

/// A host file or directory bound at a path of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host: PathBuf,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The arguments that run `command` as `spec` says: `container SPEC --
/// COMMAND…`, after the entrypoint's own path.
///
/// # Errors
/// The spec cannot be written as JSON (it always can).
pub fn args(spec: &Spec, command: &[String]) -> Result<Vec<String>, String> {
    let mut v = vec![
        "container".to_string(),
        serde_json::to_string(spec).map_err(|e| e.to_string())?,
        "--".to_string(),
    ];
    v.extend(command.iter().cloned());
    Ok(v)
}

/// What the process does once the container is set up.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Exit with this code.
    Exit(i32),
    /// The command is this binary: run the step wrapper here with these
    /// arguments (an `exec` of the same file would only cost time).
    Wrapper(Vec<String>),
}

/// `entrypoint container SPEC -- COMMAND…` (the words after `container`):
/// what to do next, unless the command replaced this process.
pub fn main(args: &[String]) -> Next {
    match parse(args).and_then(|(spec, command)| run(&spec, command)) {
        Ok(next) => next,
        Err(e) => {
            eprintln!("entrypoint container: {e}");
            Next::Exit(crate::exit::IO)
        }
    }
}

fn parse(args: &[String]) -> Result<(Spec, &[String]), String> {
    let [spec, dashes, command @ ..] = args else {
        return Err("usage: entrypoint container SPEC -- COMMAND [ARG…]".into());
    };
    if dashes != "--" || command.is_empty() {
        return Err("usage: entrypoint container SPEC -- COMMAND [ARG…]".into());
    }
    let spec: Spec = serde_json::from_str(spec).map_err(|e| format!("bad spec: {e}"))?;
    Ok((spec, command))
}

fn run(spec: &Spec, command: &[String]) -> Result<Next, String> {
    nix::unistd::setsid().map_err(|e| format!("cannot make a session: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("cannot ask to end with tkt: {e}"))?;
    let Some(ns) = &spec.namespace else {
        return Ok(become_command(command, None));
    };
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot make namespaces: {e}"))?;
    // Nothing mounted here reaches the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the mounts private: {e}"))?;
    for root in &ns.tmpfs {
        mount(
            Some("tektite"),
            root.as_str(),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("cannot mount a tmpfs on {root}: {e}"))?;
    }
    for m in &ns.mounts {
        bind(m)?;
    }
    // A relative working directory is taken from the root, as in a container.
    let dir = Path::new("/").join(&ns.working_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot make working directory {}: {e}", dir.display()))?;
    // Caught, not ignored (the command starts with them at their default):
    // the process group's members get them, and this one reports how its
    // child ended.
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(sig as i32, flag)
            .map_err(|e| format!("cannot catch {sig}: {e}"))?;
    }
    let status = Command::new("/proc/self/exe")
        .arg("container-init")
        .arg(&dir)
        .arg("--")
        .args(command)
        .status()
        .map_err(|e| format!("cannot start the namespace's first process: {e}"))?;
    Ok(Next::Exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    ))
}

/// Bind-mounts one volume, making its mount point as a kubelet would: a
/// file for a file, a directory for a directory.
fn bind(m: &Mount) -> Result<(), String> {
    let path = Path::new(&m.path);
    let made = if std::fs::symlink_metadata(path).is_ok() {
        Ok(())
    } else if std::fs::symlink_metadata(&m.host).is_ok_and(|h| h.is_file()) {
        path.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(drop)
            })
    } else {
        std::fs::create_dir_all(path)
    };
    made.map_err(|e| format!("cannot make mount point {}: {e}", m.path))?;
    mount(
        Some(&m.host),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("cannot bind {} at {}: {e}", m.host.display(), m.path))?;
    if m.read_only {
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make {} read-only: {e}", m.path))?;
    }
    Ok(())
}

/// `entrypoint container-init DIR -- COMMAND…`: the namespace's first
/// process.
pub fn init(args: &[String]) -> Next {
    let [dir, dashes, command @ ..] = args else {
        eprintln!("usage: entrypoint container-init DIR -- COMMAND [ARG…]");
        return Next::Exit(crate::exit::USAGE);
    };
    if dashes != "--" || command.is_empty() {
        eprintln!("usage: entrypoint container-init DIR -- COMMAND [ARG…]");
        return Next::Exit(crate::exit::USAGE);
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("entrypoint container: cannot ask to end with the container: {e}");
        return Next::Exit(crate::exit::IO);
    }
    // This namespace's processes, as a container's `/proc` shows them.
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        eprintln!("entrypoint container: cannot mount /proc: {e}");
        return Next::Exit(crate::exit::IO);
    }
    become_command(command, Some(Path::new(dir)))
}

/// Becomes `command` (in `dir`): runs it in place of this process, or,
/// when it is this very binary, says to run the wrapper here. Returns the
/// exit code a shell would give when it cannot run.
fn become_command(command: &[String], dir: Option<&Path>) -> Next {
    let empty = String::new();
    let (program, args) = command.split_first().unwrap_or((&empty, &[]));
    if let Some(d) = dir
        && let Err(e) = nix::unistd::chdir(d)
    {
        eprintln!(
            "entrypoint container: cannot enter working directory {}: {e}",
            d.display()
        );
        return Next::Exit(CANNOT_RUN);
    }
    if is_this_binary(program) {
        // As `ps` would name it after an exec.
        let _ = nix::sys::prctl::set_name(c"entrypoint");
        return Next::Wrapper(args.to_vec());
    }
    let e = Command::new(program)
        .args(args.iter().map(OsString::from))
        .exec();
    if e.kind() == std::io::ErrorKind::NotFound {
        eprintln!("entrypoint container: {program}: not found");
        Next::Exit(NOT_FOUND)
    } else {
        eprintln!("entrypoint container: cannot run {program}: {e}");
        Next::Exit(CANNOT_RUN)
    }
}

/// Whether `program`, a path, is the file this process runs (the same
/// file, bound or linked elsewhere: same device and inode).
fn is_this_binary(program: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if !program.contains('/') {
        return false;
    }
    match (
        std::fs::metadata(program),
        std::fs::metadata("/proc/self/exe"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_and_command_go_through_the_arguments_unchanged() {
        let spec = Spec {
            namespace: Some(Namespace {
                tmpfs: vec!["/tekton".into()],
                mounts: vec![Mount {
                    host: PathBuf::from("/run dir/it's \"here\""),
                    path: "/workspace/a b".into(),
                    read_only: true,
                }],
                working_dir: "/workspace".into(),
            }),
        };
        let command = vec!["sh".to_string(), "-c".into(), "echo -- \"$1\"".into()];
        let words = args(&spec, &command).unwrap();
        assert_eq!(words[0], "container");
        let (back, cmd) = parse(&words[1..]).unwrap();
        assert_eq!(back, spec);
        assert_eq!(cmd, command.as_slice());
    }

    #[test]
    fn a_missing_command_or_separator_is_refused() {
        let spec = serde_json::to_string(&Spec::default()).unwrap();
        assert!(parse(&[spec.clone(), "--".into()]).is_err());
        assert!(parse(&[spec, "x".into(), "true".into()]).is_err());
        assert!(parse(&["{".into(), "--".into(), "true".into()]).is_err());
    }
}
