//! The git resolver: one file of a repository at a revision.
//!
//! The revision is fetched shallow (`--depth=1`, no tags) into an empty
//! bare repository with the `git` program, and the file is read as a blob
//! of the fetched commit: nothing is checked out, so no link in the
//! repository can reach outside it. A token (`gitToken`, a Secret, key
//! `gitTokenKey`, default `token`) goes as HTTP basic auth for user `git`
//! through git's environment, never on its command line. Every `git` runs
//! under `timeout` in a process group of its own.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use crate::{MAX_DOCUMENT, RefSource, Request, Resolved, Resolvers, Secrets, key};

pub(crate) async fn resolve(
    rs: &Resolvers,
    req: &Request,
    secrets: &dyn Secrets,
) -> Result<Resolved, String> {
    if req.param("repo").is_some_and(|r| !r.is_empty()) {
        return Err(
            "the SCM API mode (repo, org, token, scmType, serverURL) is not supported: give the repository's url"
                .into(),
        );
    }
    req.required(&["url", "pathInRepo"])?;
    let url = req.param("url").unwrap_or_default().to_string();
    check_url(&url)?;
    if !rs.options.machine && url.starts_with("file://") {
        return Err(format!(
            "invalid git repository url: {url}: file:// reads the controller's own files"
        ));
    }
    let revision = match req.param("revision") {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => "main".to_string(),
    };
    if revision.starts_with('-') {
        return Err(format!(
            "invalid revision {revision:?}: must not begin with '-'"
        ));
    }
    let path = clean_path(req.param("pathInRepo").unwrap_or_default())?;
    let token = match req.param("gitToken").filter(|t| !t.is_empty()) {
        Some(name) => {
            let key = req
                .param("gitTokenKey")
                .filter(|k| !k.is_empty())
                .unwrap_or("token");
            Some(
                secrets
                    .get(name, key)
                    .map_err(|e| format!("cannot get the git token: {e}"))?,
            )
        }
        None => None,
    };
    let pinned = |commit: &str| key(&["git", &url, commit, &path]);
    let last = key(&["git", &url, &revision, &path]);
    if is_full_sha(&revision)
        && let Some(hit) = rs.cache.get("immutable", &pinned(&revision))
    {
        return Ok(hit);
    }
    if rs.options.offline {
        return rs.cache.get("last", &last).ok_or_else(|| {
            format!("offline, and {url} at {revision:?} ({path}) is not in the cache")
        });
    }
    let timeout = rs.options.timeout;
    let (u, r, p) = (url.clone(), revision.clone(), path.clone());
    let machine = rs.options.machine;
    let (commit, data) =
        tokio::task::spawn_blocking(move || fetch(&u, &r, &p, token, timeout, machine))
            .await
            .map_err(|e| format!("git: {e}"))??;
    let resolved = Resolved {
        data,
        source: RefSource {
            uri: Some(format!("git+{url}")),
            digest: [("sha1".to_string(), commit.clone())].into(),
            entry_point: Some(path.clone()),
        },
    };
    rs.cache.put("immutable", &pinned(&commit), &resolved);
    rs.cache.put("last", &last, &resolved);
    Ok(resolved)
}

/// Tekton's URL forms (`user@host:path`, `git|ssh|ftp(s)|http(s)://`),
/// and `file://` too.
fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = [
        "git://", "ssh://", "ftp://", "ftps://", "http://", "https://", "file://",
    ]
    .iter()
    .any(|s| url.starts_with(s));
    let scp_like = url.split_once('@').is_some_and(|(user, rest)| {
        !user.is_empty() && rest.contains(':') && !rest.starts_with(':')
    });
    // `transport::address` would name a remote helper (ext::, fd::).
    if url.starts_with('-') || url.contains("::") || !(scheme_ok || scp_like) {
        return Err(format!("invalid git repository url: {url}"));
    }
    Ok(())
}

/// `pathInRepo` without a leading `/`, refused with a `..` component.
fn clean_path(p: &str) -> Result<String, String> {
    let p = p.trim_start_matches('/');
    if p.split('/').any(|c| c == "..") {
        return Err(format!(
            "invalid path {p:?}: must not contain '..' components"
        ));
    }
    if p.is_empty() {
        return Err("missing required git resolver params: pathInRepo".into());
    }
    Ok(p.to_string())
}

/// A whole commit id (SHA-1 or SHA-256), which names content that cannot
/// change.
fn is_full_sha(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fetches `revision` of `url` and reads `path` at it: the commit and the
/// file's bytes.
fn fetch(
    url: &str,
    revision: &str,
    path: &str,
    token: Option<Vec<u8>>,
    timeout: Duration,
    machine: bool,
) -> Result<(String, Vec<u8>), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
    let git = Git {
        dir: dir.path(),
        timeout,
        machine,
    };
    git.run(&["init", "--quiet", "--bare", "."], None)?;
    git.run(
        &[
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--",
            url,
            revision,
        ],
        token.as_deref(),
    )
    .map_err(|e| format!("git fetch error: {e}"))?;
    let commit = text(git.run(&["rev-parse", "--verify", "FETCH_HEAD^{commit}"], None)?);
    let listing = git.run(&["ls-tree", "-z", "--full-tree", &commit, "--", path], None)?;
    // "<mode> <type> <object>\t<path>\0", for the path itself only.
    let entry = listing
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .find(|e| e.split_once('\t').is_some_and(|(_, p)| p == path));
    let Some(entry) = entry else {
        return Err(format!("error opening file {path:?}: file does not exist"));
    };
    let fields: Vec<&str> = entry.split(['\t', ' ']).collect();
    match fields.as_slice() {
        ["120000", ..] => Err(format!(
            "{path:?} is a symbolic link: the git resolver reads regular files only"
        )),
        [_, "blob", object, ..] => {
            let size: usize = text(git.run(&["cat-file", "-s", object], None)?)
                .parse()
                .unwrap_or(usize::MAX);
            if size > MAX_DOCUMENT {
                return Err(format!(
                    "{path:?} is {size} bytes, more than the {MAX_DOCUMENT} a resolved document may have"
                ));
            }
            Ok((commit, git.run(&["cat-file", "blob", object], None)?))
        }
        _ => Err(format!(
            "{path:?} is not a file (it is a directory or a submodule)"
        )),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// `git` in one scratch repository.
struct Git<'a> {
    dir: &'a Path,
    timeout: Duration,
    /// Whether this machine's git configuration and credentials apply.
    machine: bool,
}

impl Git<'_> {
    /// Runs `git args` (with `token` as basic auth for user `git`), under
    /// `timeout` so it and what it starts end in time; its output, or its
    /// error output as the message.
    fn run(&self, args: &[&str], token: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let secs = self.timeout.as_secs().max(1).to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=5", &secs, "git"])
            .args(args)
            .current_dir(self.dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_DIR", self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // After whatever GIT_CONFIG_* the environment already has (the
        // machine's; none in the controller): only these transports.
        let mut config: Vec<(String, String)> = Vec::new();
        if !self.machine {
            cmd.env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("HOME", self.dir)
                .env_remove("GIT_CONFIG_COUNT")
                .env("GIT_ASKPASS", "/bin/false")
                .env("SSH_ASKPASS", "/bin/false");
        }
        config.push(("protocol.allow".into(), "never".into()));
        let mut allowed = vec!["https", "http", "git", "ssh"];
        if self.machine {
            allowed.push("file");
        }
        for p in allowed {
            config.push((format!("protocol.{p}.allow"), "always".into()));
        }
        if let Some(t) = token {
            let mut basic = b"git:".to_vec();
            basic.extend_from_slice(t);
            let header = format!(
                "Authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode(basic)
            );
            config.push(("http.extraHeader".into(), header));
        }
        let n: usize = if self.machine {
            std::env::var("GIT_CONFIG_COUNT")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{}", n + i), k)
                .env(format!("GIT_CONFIG_VALUE_{}", n + i), v);
        }
        cmd.env("GIT_CONFIG_COUNT", (n + config.len()).to_string());
        let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
        let mut err = Vec::new();
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            if let Some(e) = stderr {
                let _ = e.take(64 << 10).read_to_end(&mut err);
            }
            err
        });
        let mut out = Vec::new();
        if let Some(o) = child.stdout.as_mut() {
            o.take(MAX_DOCUMENT as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("reading git's output: {e}"))?;
            // What is past the limit is read and dropped, so git never waits.
            let _ = std::io::copy(o, &mut std::io::sink());
        }
        let status = child.wait().map_err(|e| format!("git: {e}"))?;
        let err = reader.join().unwrap_or_default();
        if status.code() == Some(124) || status.code() == Some(137) {
            return Err(format!(
                "git {} took longer than {secs}s",
                args.first().copied().unwrap_or_default()
            ));
        }
        if !status.success() {
            let msg = String::from_utf8_lossy(&err);
            let msg = msg.trim();
            if msg.contains("could not read Username") || msg.contains("Authentication failed") {
                return Err("authentication required or refused".into());
            }
            return Err(format!(
                "{msg}: exit status {}",
                status.code().unwrap_or(-1)
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_paths_and_shas_are_checked_as_tekton_does() {
        for ok in [
            "https://h/r.git",
            "git@h:o/r.git",
            "file:///tmp/r",
            "ssh://h/r",
            "git://h/r",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/tmp/r",
            "-uhoh",
            "h/r",
            "@h:r",
            "x@:r",
            "ext::sh -c touch% /tmp/x@h:r",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert_eq!(clean_path("/a/b.yaml").unwrap(), "a/b.yaml");
        assert!(
            clean_path("a/../../etc/passwd")
                .unwrap_err()
                .contains("'..'")
        );
        assert!(is_full_sha(&"a".repeat(40)) && !is_full_sha("main") && !is_full_sha("abc123"));
    }
}
