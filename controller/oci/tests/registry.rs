//! Lookups against a real registry: Debian's `docker-registry` (CNCF distribution)
//! on 127.0.0.1, filled by `podman push`. Needs the apt packages `podman`,
//! `docker-registry` and `apache2-utils` (htpasswd); set `TEKTITE_SKIP_PODMAN=1`
//! to skip where they cannot run.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use tektite_oci::{Client, ClientOptions, Credentials, Error, ImageCommand};
use tempfile::TempDir;

fn tools_present() -> bool {
    if std::env::var_os("TEKTITE_SKIP_PODMAN").is_some_and(|v| v == "1") {
        eprintln!("skipping registry test: TEKTITE_SKIP_PODMAN=1");
        return false;
    }
    for tool in ["podman", "docker-registry", "htpasswd", "tar"] {
        assert!(
            Command::new("/bin/sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: apt-get install -y podman docker-registry apache2-utils, or set TEKTITE_SKIP_PODMAN=1"
        );
    }
    true
}

/// A `docker-registry serve` process on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    dir: TempDir,
    host: String,
}

/// How the registry authenticates clients.
enum Auth<'a> {
    Anonymous,
    /// `auth: htpasswd` with this one user and password: HTTP Basic.
    Htpasswd(&'a str, &'a str),
    /// `auth: token` trusting tokens signed by [`TokenServer`].
    Token(&'a TokenServer),
}

impl Registry {
    /// `None` when the test is to be skipped.
    fn start(auth: Auth<'_>) -> Option<Self> {
        if !tools_present() {
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
        match auth {
            Auth::Anonymous => {}
            Auth::Htpasswd(user, password) => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, line).unwrap();
                let path = file.display();
                cfg += &format!("auth:\n  htpasswd:\n    realm: tektite-test\n    path: {path}\n");
            }
            Auth::Token(server) => {
                let file = dir.path().join("token-ca.pem");
                std::fs::write(&file, &server.root_pem).unwrap();
                let (realm, bundle) = (&server.realm, file.display());
                cfg += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n"
                );
            }
        }
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Self { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                registry.host
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(registry)
    }

    fn client(&self, tag_ttl: Duration) -> Client {
        let plain_http = vec![self.host.clone()];
        Client::new(ClientOptions {
            plain_http,
            tag_ttl,
            ..ClientOptions::default()
        })
        .unwrap()
    }

    /// Where the filesystem driver keeps a blob (manifests are blobs too).
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let blobs = self
            .dir
            .path()
            .join("store/docker/registry/v2/blobs/sha256");
        blobs.join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SERVICE: &str = "tektite-registry";
const ISSUER: &str = "tektite-test-issuer";

/// A token server for the registry's `auth: token` (Docker's token protocol):
/// to `user:password` it grants what the scope asks for, to anonymous
/// callers a token without access, to wrong credentials a 401.
struct TokenServer {
    realm: String,
    root_pem: String,
}

impl TokenServer {
    fn start(user: &'static str, password: &str) -> Self {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["tektite-token".to_owned()]).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signing_key.serialized_der();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng).unwrap();
        let header =
            serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(cert.der())]});
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let expected = format!("basic {}", STANDARD.encode(format!("{user}:{password}")));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let lines: Vec<String> = BufReader::new(&stream)
                    .lines()
                    .map(Result::unwrap)
                    .take_while(|l| !l.is_empty())
                    .collect();
                let auth = lines.iter().find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("authorization:")
                        .map(|v| v.trim().to_owned())
                });
                let authorized = auth.as_deref().map(|a| a == expected.to_ascii_lowercase());
                let (status, body) = if authorized == Some(false) {
                    ("401 Unauthorized", String::new())
                } else {
                    let query = lines[0].split(['?', ' ']).nth(2).unwrap_or_default();
                    let access: Vec<_> = query
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("scope="))
                        .map(percent_decode)
                        .filter(|_| authorized == Some(true))
                        .map(|scope| {
                            let parts: Vec<&str> = scope.splitn(3, ':').collect();
                            let actions: Vec<&str> = parts[2].split(',').collect();
                            serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions})
                        })
                        .collect();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let claims = serde_json::json!({
                        "iss": ISSUER, "sub": user, "aud": SERVICE, "jti": n.to_string(),
                        "iat": now, "nbf": now - 10, "exp": now + 300, "access": access,
                    });
                    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
                    let signature = signer.sign(&rng, input.as_bytes()).unwrap();
                    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
                    ("200 OK", serde_json::json!({"token": token}).to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            realm,
            root_pem: cert.pem(),
        }
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).unwrap()
}

#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn podman(args: &[&str]) -> String {
    run(Command::new("podman").args(args))
}

/// Creates a local one-file image with `podman import`; returns its name.
fn image(arch: &str, variant: Option<&str>, changes: &[&str]) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "localhost/tektite-oci-test/img:{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), &name).unwrap();
    let tar = dir.path().join("layer.tar");
    run(Command::new("tar")
        .arg("cf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .arg("f"));
    let mut cmd = Command::new("podman");
    cmd.args(["import", "--os", "linux", "--arch", arch]);
    cmd.args(variant.map(|v| ["--variant", v]).iter().flatten());
    for change in changes {
        cmd.args(["--change", change]);
    }
    run(cmd.arg(&tar).arg(&name));
    name
}

/// Pushes a local image (then removes it) and returns the pushed manifest's digest.
fn push(local: &str, dest: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let digest_file = dir.path().join("digest");
    let digest_file = digest_file.to_str().unwrap();
    let mut args = vec![
        "push",
        "--quiet",
        "--tls-verify=false",
        "--digestfile",
        digest_file,
    ];
    args.extend(extra);
    let dest = format!("docker://{dest}");
    podman(&[&args[..], &[local, &dest]].concat());
    podman(&["rmi", "-f", local]);
    std::fs::read_to_string(digest_file)
        .unwrap()
        .trim()
        .to_owned()
}

fn command(entrypoint: &[&str], cmd: &[&str]) -> ImageCommand {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    ImageCommand {
        entrypoint: own(entrypoint),
        cmd: own(cmd),
    }
}

const TTL: Duration = Duration::from_secs(300);

#[tokio::test]
async fn single_manifest_entrypoint_and_cmd() {
    let Some(reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let img = image(
        "amd64",
        None,
        &[r#"ENTRYPOINT ["/bin/echo", "hello"]"#, r#"CMD ["world"]"#],
    );
    let digest = push(&img, &format!("{}/tools/echo:v1", reg.host), &[]);
    let client = reg.client(TTL);

    let info = client
        .lookup(&format!("{}/tools/echo:v1", reg.host), None)
        .await
        .unwrap();
    assert_eq!(info.digest, digest);
    let want = command(&["/bin/echo", "hello"], &["world"]);
    assert_eq!(
        info.platforms.into_iter().collect::<Vec<_>>(),
        [("linux/amd64".to_owned(), want.clone())]
    );
    assert_eq!(
        client
            .command(&format!("{}/tools/echo:v1", reg.host), None)
            .await
            .unwrap(),
        want
    );
}

#[tokio::test]
async fn docker_v2_manifest_with_only_cmd() {
    let Some(reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let img = image("amd64", None, &[r#"CMD ["sh", "-c", "echo hi"]"#]);
    let dest = format!("{}/only-cmd:v1", reg.host);
    let digest = push(&img, &dest, &["--format", "v2s2"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reg.blob(&digest)).unwrap()).unwrap();
    let docker_v2 = "application/vnd.docker.distribution.manifest.v2+json";
    assert_eq!(manifest["mediaType"], docker_v2);
    let client = reg.client(TTL);
    let got = client
        .command(&format!("{}/only-cmd:v1", reg.host), None)
        .await
        .unwrap();
    assert_eq!(got, command(&[], &["sh", "-c", "echo hi"]));
}

#[tokio::test]
async fn multi_arch_index_lists_every_platform_but_attestations() {
    let Some(reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let amd = image("amd64", None, &[r#"ENTRYPOINT ["/amd"]"#]);
    let arm = image(
        "arm64",
        Some("v8"),
        &[r#"ENTRYPOINT ["/arm"]"#, r#"CMD ["x"]"#],
    );
    let attestation = image("amd64", None, &[]);
    let list = format!("localhost/tektite-oci-test/list:{}", std::process::id());
    podman(&["manifest", "create", &list]);
    podman(&[
        "manifest",
        "add",
        &list,
        &format!("containers-storage:{amd}"),
    ]);
    podman(&[
        "manifest",
        "add",
        &list,
        &format!("containers-storage:{arm}"),
    ]);
    let att = format!("containers-storage:{attestation}");
    podman(&[
        "manifest", "add", "--os", "unknown", "--arch", "unknown", &list, &att,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let digest_file = dir.path().join("digest");
    let dest = format!("docker://{}/multi:v1", reg.host);
    let df = digest_file.to_str().unwrap();
    podman(&[
        "manifest",
        "push",
        "--quiet",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        df,
        &list,
        &dest,
    ]);
    podman(&["manifest", "rm", &list]);
    podman(&["rmi", "-f", &amd, &arm, &attestation]);

    let index_digest = std::fs::read_to_string(&digest_file).unwrap();
    let index = std::fs::read_to_string(reg.blob(index_digest.trim())).unwrap();
    assert!(
        index.contains(r#""architecture":"unknown","os":"unknown""#),
        "{index}"
    );

    let client = reg.client(TTL);
    let info = client
        .lookup(&format!("{}/multi:v1", reg.host), None)
        .await
        .unwrap();
    assert_eq!(
        info.digest,
        std::fs::read_to_string(&digest_file).unwrap().trim()
    );
    let platforms: Vec<_> = info
        .platforms
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        platforms,
        [
            ("linux/amd64", command(&["/amd"], &[])),
            ("linux/arm64/v8", command(&["/arm"], &["x"]))
        ]
    );
    assert_eq!(
        info.command_for("linux/arm64"),
        Some(&command(&["/arm"], &["x"]))
    );
}

#[tokio::test]
async fn pinned_digests_are_verified() {
    let Some(reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let img = image("amd64", None, &[r#"ENTRYPOINT ["/bin/hello"]"#]);
    let digest = push(&img, &format!("{}/pinned:v1", reg.host), &[]);
    let client = reg.client(TTL);
    for image in [
        format!("{}/pinned@{digest}", reg.host),
        format!("{}/pinned:other@{digest}", reg.host),
    ] {
        let info = client.lookup(&image, None).await.unwrap();
        assert_eq!(
            (info.digest.as_str(), info.platforms.len()),
            (digest.as_str(), 1),
            "{image}"
        );
    }

    // A digest the registry does not have.
    let wrong = format!("{}/pinned@sha256:{}", reg.host, "0".repeat(64));
    let err = client.lookup(&wrong, None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("image {wrong} not found: MANIFEST_UNKNOWN")),
        "{err}"
    );

    // Tamper with the stored config, then with the manifest (same length, one byte changed).
    let manifest_path = reg.blob(&digest);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config_path = reg.blob(config_digest);
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace("/bin/hello", "/bin/HELLO")).unwrap();
    let pinned = format!("{}/pinned@{digest}", reg.host);
    let err = reg.client(TTL).lookup(&pinned, None).await.unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { what: "config blob", expected, .. } if expected == config_digest),
        "{err}"
    );

    let bytes = std::fs::read_to_string(&manifest_path).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        &layer[..70],
        if layer.ends_with('0') { '1' } else { '0' }
    );
    std::fs::write(&manifest_path, bytes.replace(layer, &flipped)).unwrap();
    for image in [pinned.clone(), format!("{}/pinned:v1", reg.host)] {
        let err = reg.client(TTL).lookup(&image, None).await.unwrap_err();
        assert!(
            matches!(&err, Error::DigestMismatch { what: "manifest", expected, .. } if *expected == digest),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("manifest of image {}/pinned", reg.host)),
            "{err}"
        );
    }
    // The first client cached the verified content by digest.
    assert_eq!(client.lookup(&pinned, None).await.unwrap().digest, digest);
}

#[tokio::test]
async fn unknown_images_are_not_found() {
    let Some(reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let client = reg.client(TTL);
    let err = client
        .lookup(&format!("{}/nope:v1", reg.host), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("image {}/nope:v1 not found", reg.host)
    );
    let err = client
        .lookup(&format!("{}/Nope", reg.host), None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidReference { .. }), "{err}");
}

#[tokio::test]
async fn cache_serves_repeats_and_concurrent_lookups_without_refetching() {
    let Some(mut reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let img = image("amd64", None, &[r#"ENTRYPOINT ["/e"]"#]);
    let digest = push(&img, &format!("{}/cached:v1", reg.host), &[]);
    let client = Arc::new(reg.client(TTL));
    let image = format!("{}/cached:v1", reg.host);

    let mut lookups = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, image) = (Arc::clone(&client), image.clone());
        lookups.spawn(async move { client.lookup(&image, None).await.unwrap() });
    }
    while let Some(info) = lookups.join_next().await {
        assert_eq!(info.unwrap().digest, digest);
    }
    // HEAD the tag, GET the manifest, GET the config: once for all eight.
    assert_eq!(client.requests(), 3);

    reg.child.kill().unwrap();
    reg.child.wait().unwrap();
    let pinned = format!("{}/cached@{digest}", reg.host);
    for image in [&image, &pinned] {
        assert_eq!(client.lookup(image, None).await.unwrap().digest, digest);
    }
    assert_eq!(client.requests(), 3);
}

#[tokio::test]
async fn tag_ttl_expiry_re_resolves_the_tag() {
    let Some(reg) = Registry::start(Auth::Anonymous) else {
        return;
    };
    let image = format!("{}/moving:latest", reg.host);
    push(
        &self::image("amd64", None, &[r#"ENTRYPOINT ["/old"]"#]),
        &image,
        &[],
    );
    let (fresh, cached) = (reg.client(Duration::ZERO), reg.client(TTL));
    for client in [&fresh, &cached] {
        assert_eq!(
            client.command(&image, None).await.unwrap(),
            command(&["/old"], &[])
        );
    }
    // Same content again: only the tag is re-resolved (one HEAD).
    let before = fresh.requests();
    fresh.lookup(&image, None).await.unwrap();
    assert_eq!(fresh.requests(), before + 1);

    push(
        &self::image("amd64", None, &[r#"ENTRYPOINT ["/new"]"#]),
        &image,
        &[],
    );
    assert_eq!(
        fresh.command(&image, None).await.unwrap(),
        command(&["/new"], &[])
    );
    assert_eq!(
        cached.command(&image, None).await.unwrap(),
        command(&["/old"], &[])
    );
}

#[tokio::test]
async fn basic_auth_from_an_htpasswd_registry() {
    let Some(reg) = Registry::start(Auth::Htpasswd("tektite", "s3cret")) else {
        return;
    };
    let image = format!("{}/private:v1", reg.host);
    let img = self::image("amd64", None, &[r#"ENTRYPOINT ["/private"]"#]);
    push(&img, &image, &["--creds", "tektite:s3cret"]);
    let client = reg.client(TTL);

    let creds = |password: &str| Credentials {
        username: "tektite".into(),
        password: password.into(),
    };
    for creds in [None, Some(creds("wrong"))] {
        let err = client.lookup(&image, creds.as_ref()).await.unwrap_err();
        assert!(
            matches!(err, Error::Unauthorized { status: 401, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("registry {} refused access to {image}", reg.host)),
            "{err}"
        );
    }
    let got = client
        .command(&image, Some(&creds("s3cret")))
        .await
        .unwrap();
    assert_eq!(got, command(&["/private"], &[]));
}

#[tokio::test]
async fn bearer_token_from_the_realm_of_a_token_registry() {
    let tokens = TokenServer::start("tektite", "s3cret");
    let Some(reg) = Registry::start(Auth::Token(&tokens)) else {
        return;
    };
    let image = format!("{}/team/private:v1", reg.host);
    let img = self::image("amd64", None, &[r#"ENTRYPOINT ["/private"]"#]);
    push(&img, &image, &["--creds", "tektite:s3cret"]);
    let client = reg.client(TTL);
    let creds = |password: &str| Credentials {
        username: "tektite".into(),
        password: password.into(),
    };

    let err = client.lookup(&image, None).await.unwrap_err();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{err}"
    );
    let err = client
        .lookup(&image, Some(&creds("wrong")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Token { realm, .. } if *realm == tokens.realm),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("failed: HTTP 401 Unauthorized"),
        "{err}"
    );

    let client = reg.client(TTL);
    let got = client
        .command(&image, Some(&creds("s3cret")))
        .await
        .unwrap();
    assert_eq!(got, command(&["/private"], &[]));
    // HEAD (401), token, HEAD, manifest, config: one token for the whole lookup.
    assert_eq!(client.requests(), 5);
}
