//! The resolvers against real servers on loopback: a repository served by
//! `git daemon` (and `file://`), Debian's `docker-registry` (anonymous and
//! with htpasswd), and small HTTP servers for the http and hub resolvers.
//! Failure cases: unknown revision, missing path, a link, a tampered bundle
//! layer, an unreachable host, bad credentials, a wrong digest, offline
//! without a cache.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tektite_resolve::bundle::{self, Entry, Object};
use tektite_resolve::{Kind, Options, Request, Resolved, Resolvers, Secrets};
use tempfile::TempDir;

const TASK: &str = "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: hello\nspec:\n  steps:\n    - name: s\n      image: busybox\n      script: echo hello\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn resolvers(cache: Option<&Path>, offline: bool) -> Resolvers {
    Resolvers::new(Options {
        cache_dir: cache.map(Path::to_path_buf),
        offline,
        timeout: Duration::from_secs(20),
        ..Options::default()
    })
    .unwrap()
}

fn request(resolver: &str, kind: Kind, params: &[(&str, &str)]) -> Request {
    Request {
        resolver: resolver.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        kind,
    }
}

struct SecretMap(BTreeMap<(String, String), Vec<u8>>);

impl Secrets for SecretMap {
    fn get(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        self.0
            .get(&(name.to_string(), key.to_string()))
            .cloned()
            .ok_or_else(|| format!("secret {name:?} has no key {key:?}"))
    }
}

/// One runtime for the whole test binary: a client's pooled connections
/// belong to the runtime that made them.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn resolve(rs: &Resolvers, req: &Request, secrets: &dyn Secrets) -> Result<Resolved, String> {
    rt().block_on(rs.resolve(req, secrets))
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------ git

/// A repository with `task.yaml` on `main` (two commits), a tag `v1` on the
/// first, a link and a directory; served by `git daemon` on loopback.
struct Repo {
    dir: TempDir,
    first: String,
    head: String,
    daemon: Child,
    port: u16,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("catalog");
        let git = |args: &[&str]| {
            run(Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com"))
        };
        std::fs::create_dir_all(repo.join("tasks")).unwrap();
        run(Command::new("git")
            .args(["init", "--quiet", "--initial-branch=main"])
            .arg(&repo));
        std::fs::write(
            repo.join("tasks/hello.yaml"),
            TASK.replace("echo hello", "echo one"),
        )
        .unwrap();
        git(&["add", "-A"]);
        git(&["commit", "--quiet", "-m", "one"]);
        git(&["tag", "-a", "v1", "-m", "v1"]);
        let first = git(&["rev-parse", "HEAD"]);
        std::fs::write(repo.join("tasks/hello.yaml"), TASK).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", repo.join("tasks/link.yaml")).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "--quiet", "-m", "two"]);
        let head = git(&["rev-parse", "HEAD"]);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let daemon = git_daemon()
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Repo {
            dir,
            first,
            head,
            daemon,
            port,
        }
    }

    fn daemon_url(&self) -> String {
        format!("git://127.0.0.1:{}/catalog", self.port)
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.dir.path().join("catalog").display())
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn git_resolves_a_branch_a_tag_and_a_commit_over_git_daemon_and_file_urls() {
    let repo = Repo::new();
    let rs = resolvers(None, false);
    for url in [repo.daemon_url(), repo.file_url()] {
        let git = |rev: &str| {
            resolve(
                &rs,
                &request(
                    "git",
                    Kind::Task,
                    &[
                        ("url", &url),
                        ("revision", rev),
                        ("pathInRepo", "/tasks/hello.yaml"),
                    ],
                ),
                &tektite_resolve::NoSecrets,
            )
        };
        let main = git("main").unwrap();
        assert_eq!(String::from_utf8(main.data.clone()).unwrap(), TASK);
        assert_eq!(
            main.source.uri.as_deref(),
            Some(format!("git+{url}").as_str())
        );
        assert_eq!(main.source.digest["sha1"], repo.head);
        assert_eq!(main.source.entry_point.as_deref(), Some("tasks/hello.yaml"));
        assert_eq!(
            main.label(),
            format!("git+{url}@{}:tasks/hello.yaml", repo.head)
        );
        let tag = git("v1").unwrap();
        assert_eq!(
            tag.source.digest["sha1"], repo.first,
            "an annotated tag gives its commit"
        );
        assert!(String::from_utf8(tag.data).unwrap().contains("echo one"));
        let pinned = git(&repo.first).unwrap();
        assert_eq!(pinned.source.digest["sha1"], repo.first);
        // No revision: main, as Tekton's default-revision.
        let default = resolve(
            &rs,
            &request(
                "git",
                Kind::Task,
                &[("url", &url), ("pathInRepo", "tasks/hello.yaml")],
            ),
            &tektite_resolve::NoSecrets,
        )
        .unwrap();
        assert_eq!(default.source.digest["sha1"], repo.head);
    }
}

#[test]
fn git_failures_name_what_failed() {
    let repo = Repo::new();
    let rs = resolvers(None, false);
    let url = repo.daemon_url();
    let git = |params: &[(&str, &str)]| {
        resolve(
            &rs,
            &request("git", Kind::Task, params),
            &tektite_resolve::NoSecrets,
        )
        .unwrap_err()
    };
    let e = git(&[
        ("url", &url),
        ("revision", "nope"),
        ("pathInRepo", "tasks/hello.yaml"),
    ]);
    assert!(
        e.starts_with("error requesting remote resource: git resolver: git fetch error:"),
        "{e}"
    );
    assert!(e.contains("nope"), "{e}");
    let e = git(&[
        ("url", &url),
        ("revision", "main"),
        ("pathInRepo", "tasks/missing.yaml"),
    ]);
    assert!(
        e.ends_with("error opening file \"tasks/missing.yaml\": file does not exist"),
        "{e}"
    );
    let e = git(&[
        ("url", &url),
        ("revision", "main"),
        ("pathInRepo", "tasks/link.yaml"),
    ]);
    assert!(e.contains("is a symbolic link"), "{e}");
    let e = git(&[("url", &url), ("revision", "main"), ("pathInRepo", "tasks")]);
    assert!(e.contains("is not a file"), "{e}");
    let e = git(&[("url", &url), ("pathInRepo", "../x")]);
    assert!(e.contains("must not contain '..'"), "{e}");
    let e = git(&[("revision", "main")]);
    assert!(
        e.ends_with("missing required git resolver params: url, pathInRepo"),
        "{e}"
    );
    let e = git(&[("url", "/tmp/x"), ("pathInRepo", "a")]);
    assert!(e.ends_with("invalid git repository url: /tmp/x"), "{e}");
    let e = git(&[
        ("url", &url),
        ("revision", "--upload-pack=x"),
        ("pathInRepo", "a"),
    ]);
    assert!(e.contains("must not begin with '-'"), "{e}");
    // Nobody listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = git(&[
        ("url", &format!("git://127.0.0.1:{closed}/x")),
        ("pathInRepo", "a"),
    ]);
    assert!(
        e.contains("git fetch error:") && e.contains("127.0.0.1"),
        "{e}"
    );
}

#[test]
fn off_the_machine_git_refuses_file_urls_and_ignores_local_credentials() {
    let repo = Repo::new();
    let rs = Resolvers::new(Options {
        machine: false,
        timeout: Duration::from_secs(20),
        ..Options::default()
    })
    .unwrap();
    let e = resolve(
        &rs,
        &request(
            "git",
            Kind::Task,
            &[
                ("url", &repo.file_url()),
                ("pathInRepo", "tasks/hello.yaml"),
            ],
        ),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(
        e.contains("file:// reads the controller's own files"),
        "{e}"
    );
    // Over the network it works, with no configuration of this machine.
    let r = resolve(
        &rs,
        &request(
            "git",
            Kind::Task,
            &[
                ("url", &repo.daemon_url()),
                ("pathInRepo", "tasks/hello.yaml"),
            ],
        ),
        &tektite_resolve::NoSecrets,
    )
    .unwrap();
    assert_eq!(r.source.digest["sha1"], repo.head);
}

#[test]
fn credentials_in_a_url_never_reach_a_message_or_a_source() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rs = resolvers(None, false);
    for (resolver, url) in [
        (
            "http",
            format!("http://ada:s3cret@127.0.0.1:{closed}/t.yaml"),
        ),
        (
            "git",
            format!("https://ada:s3cret@127.0.0.1:{closed}/r.git"),
        ),
    ] {
        let e = resolve(
            &rs,
            &request(
                resolver,
                Kind::Task,
                &[("url", &url), ("pathInRepo", "t.yaml")],
            ),
            &tektite_resolve::NoSecrets,
        )
        .unwrap_err();
        assert!(!e.contains("s3cret") && !e.contains("ada:"), "{e}");
    }
}

#[test]
fn git_answers_offline_from_its_cache_and_says_what_it_lacks() {
    let repo = Repo::new();
    let cache = tempfile::tempdir().unwrap();
    let url = repo.daemon_url();
    let req = request(
        "git",
        Kind::Task,
        &[
            ("url", &url),
            ("revision", "main"),
            ("pathInRepo", "tasks/hello.yaml"),
        ],
    );
    let offline = resolvers(Some(cache.path()), true);
    let e = resolve(&offline, &req, &tektite_resolve::NoSecrets).unwrap_err();
    assert!(
        e.contains("offline, and") && e.contains("is not in the cache"),
        "{e}"
    );
    let online = resolve(
        &resolvers(Some(cache.path()), false),
        &req,
        &tektite_resolve::NoSecrets,
    )
    .unwrap();
    let again = resolve(&offline, &req, &tektite_resolve::NoSecrets).unwrap();
    assert_eq!(again, online);
    // A commit is content: the cache answers it without the server.
    drop(repo);
    let pinned = request(
        "git",
        Kind::Task,
        &[
            ("url", &url),
            ("revision", &online.source.digest["sha1"]),
            ("pathInRepo", "tasks/hello.yaml"),
        ],
    );
    let hit = resolve(
        &resolvers(Some(cache.path()), false),
        &pinned,
        &tektite_resolve::NoSecrets,
    )
    .unwrap();
    assert_eq!(hit.data, online.data);
}

// ----------------------------------------------------------------- http

/// Serves `routes` (path → body) on loopback; `auth` is the Authorization
/// value required, if any. Answers 404 elsewhere.
fn http_server(routes: BTreeMap<String, Vec<u8>>, auth: Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let lines: Vec<String> = BufReader::new(&stream)
                .lines()
                .map_while(Result::ok)
                .take_while(|l| !l.is_empty())
                .collect();
            let path = lines
                .first()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or("/")
                .to_string();
            let given = lines.iter().find_map(|l| {
                l.strip_prefix("Authorization: ")
                    .or_else(|| l.strip_prefix("authorization: "))
            });
            let (status, body) = match (&auth, given) {
                (Some(want), got) if got != Some(want.as_str()) => ("401 Unauthorized", Vec::new()),
                _ => match routes.get(&path) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", Vec::new()),
                },
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    base
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(b))
}

#[test]
fn http_fetches_checks_the_digest_and_sends_basic_auth_from_a_secret() {
    let routes = BTreeMap::from([
        ("/task.yaml".to_string(), TASK.as_bytes().to_vec()),
        ("/big".to_string(), vec![b'a'; (1 << 20) + 1]),
    ]);
    let base = http_server(routes.clone(), None);
    let rs = resolvers(None, false);
    let url = format!("{base}/task.yaml");
    let r = resolve(
        &rs,
        &request("http", Kind::Task, &[("url", &url)]),
        &tektite_resolve::NoSecrets,
    )
    .unwrap();
    assert_eq!(r.data, TASK.as_bytes());
    assert_eq!(r.source.uri.as_deref(), Some(url.as_str()));
    assert_eq!(r.source.digest["sha256"], sha256(TASK.as_bytes()));
    let good = format!("sha256:{}", sha256(TASK.as_bytes()));
    assert!(
        resolve(
            &rs,
            &request("http", Kind::Task, &[("url", &url), ("digest", &good)]),
            &tektite_resolve::NoSecrets
        )
        .is_ok()
    );
    let bad = format!("sha256:{}", "0".repeat(64));
    let e = resolve(
        &rs,
        &request("http", Kind::Task, &[("url", &url), ("digest", &bad)]),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(e.contains("SHA mismatch"), "{e}");
    let e = resolve(
        &rs,
        &request("http", Kind::Task, &[("url", &format!("{base}/nope"))]),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(e.contains("answered HTTP 404"), "{e}");
    let e = resolve(
        &rs,
        &request("http", Kind::Task, &[("url", &format!("{base}/big"))]),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(
        e.contains("exceeds maximum allowed size of 1048576 bytes"),
        "{e}"
    );
    let e = resolve(
        &rs,
        &request("http", Kind::Task, &[("url", "ftp://h/x")]),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(e.contains("is not a valid http(s) url"), "{e}");

    // Basic auth: the password from a Secret; a wrong one is refused.
    use base64::Engine as _;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:s3cret")
    );
    let locked = http_server(routes, Some(want));
    let url = format!("{locked}/task.yaml");
    let params = [
        ("url", url.as_str()),
        ("http-username", "ada"),
        ("http-password-secret", "web"),
    ];
    let secrets = SecretMap(BTreeMap::from([(
        ("web".into(), "password".into()),
        b"s3cret".to_vec(),
    )]));
    assert!(resolve(&rs, &request("http", Kind::Task, &params), &secrets).is_ok());
    let wrong = SecretMap(BTreeMap::from([(
        ("web".into(), "password".into()),
        b"nope".to_vec(),
    )]));
    let e = resolve(&rs, &request("http", Kind::Task, &params), &wrong).unwrap_err();
    assert!(
        e.contains("answered HTTP 401") && !e.contains("nope"),
        "{e}"
    );
    let e = resolve(&rs, &request("http", Kind::Task, &params[..2]), &secrets).unwrap_err();
    assert!(
        e.contains("missing required param http-password-secret"),
        "{e}"
    );
}

// ------------------------------------------------------------------ hub

#[test]
fn hub_picks_the_highest_version_meeting_a_constraint_from_artifact_hub() {
    let pkg = "/api/v1/packages/tekton-task/tekton-catalog-tasks/hello";
    let versions = serde_json::json!({"available_versions": [
        {"version": "0.5.0", "prerelease": false},
        {"version": "0.6.1", "prerelease": false},
        {"version": "0.7.0", "prerelease": true},
    ]});
    let raw = |v: &str| {
        serde_json::to_vec(&serde_json::json!({"data": {"manifestRaw": TASK.replace("hello\n", &format!("hello\n  labels: {{v: \"{v}\"}}\n"))}})).unwrap()
    };
    let base = http_server(
        BTreeMap::from([
            (pkg.to_string(), serde_json::to_vec(&versions).unwrap()),
            (format!("{pkg}/0.6.1"), raw("0.6.1")),
            (format!("{pkg}/0.5.0"), raw("0.5.0")),
        ]),
        None,
    );
    let rs = resolvers(None, false);
    let hub = |version: &str| {
        resolve(
            &rs,
            &request(
                "hub",
                Kind::Task,
                &[("name", "hello"), ("version", version), ("url", &base)],
            ),
            &tektite_resolve::NoSecrets,
        )
    };
    let r = hub(">= 0.5, < 0.8").unwrap();
    assert_eq!(r.source.uri, Some(format!("{base}{pkg}/0.6.1")));
    assert!(String::from_utf8(r.data).unwrap().contains("0.6.1"));
    assert!(hub("0.5").unwrap().source.uri.unwrap().ends_with("/0.5.0"));
    let e = hub("0.9").unwrap_err();
    assert!(e.contains("no version found for constraint 0.9"), "{e}");
    // Unreachable: the URL is named.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = resolve(
        &rs,
        &request(
            "hub",
            Kind::Task,
            &[
                ("name", "hello"),
                ("version", "0.6.1"),
                ("url", &format!("http://127.0.0.1:{closed}")),
            ],
        ),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(e.contains(&format!("127.0.0.1:{closed}")), "{e}");
    let e = resolve(
        &rs,
        &request("hub", Kind::StepAction, &[("name", "x"), ("version", "1")]),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(
        e.contains("failed to resolve catalog name with kind: stepaction"),
        "{e}"
    );
}

// -------------------------------------------------------------- bundles

fn registry_present() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("skipping registry test: TEKTITE_SKIP_PODMAN=1");
        return false;
    }
    for tool in ["docker-registry", "htpasswd"] {
        assert!(
            Command::new("/bin/sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .unwrap()
                .success(),
            "{tool} is missing: apt-get install -y docker-registry apache2-utils, or set TEKTITE_SKIP_PODMAN=1"
        );
    }
    true
}

/// `docker-registry serve` on a free loopback port (with one htpasswd user
/// when given), killed on drop.
struct Registry {
    child: Child,
    dir: TempDir,
    host: String,
}

impl Registry {
    fn start(user: Option<(&str, &str)>) -> Option<Registry> {
        if !registry_present() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("store").display()
        );
        if let Some((u, p)) = user {
            let line = run(Command::new("htpasswd").args(["-Bbn", u, p]));
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line).unwrap();
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: tektite-test\n    path: {}\n",
                file.display()
            );
        }
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {host}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Registry { child, dir, host })
    }

    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("store/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn objects() -> Vec<Object> {
    let task: serde_json::Value = serde_json::json!({
        "apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "hello"},
        "spec": {"steps": [{"name": "s", "image": "busybox", "script": "echo hello"}]}});
    let pipeline: serde_json::Value = serde_json::json!({
        "apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "hello"},
        "spec": {"tasks": [{"name": "t", "taskRef": {"name": "hello"}}]}});
    [("task", task), ("pipeline", pipeline)]
        .into_iter()
        .map(|(kind, v)| Object {
            entry: Entry {
                kind: kind.into(),
                name: "hello".into(),
                api_version: "v1".into(),
            },
            json: serde_json::to_vec(&v).unwrap(),
        })
        .collect()
}

#[test]
fn a_pushed_bundle_is_listed_resolved_by_kind_and_name_and_a_tampered_layer_is_refused() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let rs = resolvers(None, false);
    let rt = rt();
    let tag = format!("{}/catalog/hello:v1", reg.host);
    let pushed = rt.block_on(bundle::push(&rs, &tag, &objects())).unwrap();
    assert!(
        pushed
            .pinned
            .starts_with(&format!("{}/catalog/hello@sha256:", reg.host))
    );
    let listed = rt.block_on(bundle::list(&rs, &tag)).unwrap();
    let names: Vec<(String, String)> = listed
        .iter()
        .map(|e| (e.kind.clone(), e.name.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("task".into(), "hello".into()),
            ("pipeline".into(), "hello".into())
        ]
    );

    let get = |kind: Kind, params: &[(&str, &str)]| {
        resolve(
            &rs,
            &request("bundles", kind, params),
            &tektite_resolve::NoSecrets,
        )
    };
    let task = get(
        Kind::Task,
        &[("bundle", &tag), ("name", "hello"), ("kind", "task")],
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&task.data).unwrap();
    assert_eq!(v["kind"], "Task");
    assert_eq!(
        task.source.uri.as_deref(),
        Some(format!("{}/catalog/hello", reg.host).as_str())
    );
    assert_eq!(
        format!("sha256:{}", task.source.digest["sha256"]),
        pushed.digest
    );
    assert_eq!(task.source.entry_point.as_deref(), Some("hello"));
    // The kind defaults to what the ref expects.
    let pipeline = get(
        Kind::Pipeline,
        &[("bundle", &pushed.pinned), ("name", "hello")],
    )
    .unwrap();
    assert!(
        String::from_utf8(pipeline.data)
            .unwrap()
            .contains("\"Pipeline\"")
    );
    let e = get(Kind::Task, &[("bundle", &tag), ("name", "other")]).unwrap_err();
    assert!(
        e.ends_with("could not find object in image with kind: task and name: other"),
        "{e}"
    );
    let e = get(
        Kind::Task,
        &[
            ("bundle", &format!("{}/catalog/none:v1", reg.host)),
            ("name", "hello"),
        ],
    )
    .unwrap_err();
    assert!(
        e.contains("cannot retrieve the oci image") && e.contains("not found"),
        "{e}"
    );

    // A layer changed in the registry's storage no longer matches its digest.
    let manifest = std::fs::read(reg.blob(&pushed.digest)).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let mut bytes = std::fs::read(reg.blob(layer)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(reg.blob(layer), bytes).unwrap();
    let fresh = resolvers(None, false);
    let e = resolve(
        &fresh,
        &request(
            "bundles",
            Kind::Task,
            &[("bundle", &tag), ("name", "hello")],
        ),
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(
        e.contains("has digest") && e.contains(&format!("expected {layer}")),
        "{e}"
    );
}

#[test]
fn bundles_with_htpasswd_use_the_docker_config_or_a_secret_and_refuse_bad_credentials() {
    let Some(reg) = Registry::start(Some(("ada", "s3cret"))) else {
        return;
    };
    let config = tempfile::tempdir().unwrap();
    let write = |pass: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("ada:{pass}"));
        let json = serde_json::json!({"auths": {reg.host.clone(): {"auth": auth}}});
        std::fs::write(config.path().join("config.json"), json.to_string()).unwrap();
        json.to_string().into_bytes()
    };
    let with = |file: Option<PathBuf>| {
        Resolvers::new(Options {
            docker_config: file,
            timeout: Duration::from_secs(20),
            ..Options::default()
        })
        .unwrap()
    };
    let good = write("s3cret");
    let rs = with(Some(config.path().join("config.json")));
    let rt = rt();
    let tag = format!("{}/private/hello:v1", reg.host);
    rt.block_on(bundle::push(&rs, &tag, &objects())).unwrap();
    let req = request(
        "bundles",
        Kind::Task,
        &[("bundle", &tag), ("name", "hello")],
    );
    if let Err(e) = resolve(&rs, &req, &tektite_resolve::NoSecrets) {
        panic!("with the docker config: {e}");
    }
    // From a Secret named by the `secret` param, and nothing on the machine.
    let anonymous = with(None);
    let secret_req = request(
        "bundles",
        Kind::Task,
        &[("bundle", &tag), ("name", "hello"), ("secret", "pull")],
    );
    let secrets = SecretMap(BTreeMap::from([(
        ("pull".into(), ".dockerconfigjson".into()),
        good,
    )]));
    if std::env::var_os("DOCKER_CONFIG").is_none() {
        assert!(resolve(&anonymous, &secret_req, &secrets).is_ok());
    }
    write("wrong");
    let e = resolve(
        &with(Some(config.path().join("config.json"))),
        &req,
        &tektite_resolve::NoSecrets,
    )
    .unwrap_err();
    assert!(
        e.contains("refused access") && e.contains("401") && !e.contains("wrong"),
        "{e}"
    );
}

/// `git-daemon` itself, not `git daemon`: `git` runs it as a child, which
/// outlived the `git` a test killed and kept serving after the tests.
fn git_daemon() -> Command {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git is installed");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Command::new(std::path::Path::new(&dir).join("git-daemon"))
}
