//! Remote Tasks, Pipelines and StepActions: Tekton's resolvers, for `tkt
//! run` and the controller alike.
//!
//! A ref such as `taskRef: {resolver: git, params: [...]}` becomes a
//! [`Request`] (its params already substituted); [`Resolvers::resolve`]
//! fetches the document and says where it came from ([`RefSource`], what
//! Tekton records as `status.provenance.refSource`). The caller loads and
//! validates the bytes like a local file, naming [`Resolved::label`] as the
//! file in its messages.
//!
//! - `git`: `url`, `revision`, `pathInRepo` (and `gitToken`/`gitTokenKey`, a
//!   Secret holding a token sent as `git`'s password); fetched shallow with
//!   the `git` program, read as a blob of the resolved commit.
//! - `http`: `url`, `http-username`, `http-password-secret`(`-key`),
//!   `digest`; at most 1 MiB.
//! - `bundles`: `bundle`, `name`, `kind`, `secret`; Tekton's bundle format,
//!   each layer checked against its digest ([`bundle`]).
//! - `hub`: `name`, `version` (a version or a constraint), `kind`,
//!   `catalog`, `type` (`artifact` only), `url`; the Artifact Hub API.
//! - `cluster` is the controller's (it reads the API server).
//!
//! Immutable answers (a commit, a bundle digest) are cached on disk by
//! that identity; a branch, tag or URL is fetched again unless
//! [`Options::offline`], which answers from the cache only.

pub mod bundle;
mod cache;
mod git;
mod http;
mod hub;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use tektite_api::v1::RefSource;

/// What the ref that asks expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Task,
    Pipeline,
    StepAction,
}

impl Kind {
    /// Tekton's lowercase singular name (`task`), as resolver params and
    /// bundle annotations write it.
    pub fn lower(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Pipeline => "pipeline",
            Kind::StepAction => "stepaction",
        }
    }

    /// The `kind` of the document (`Task`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "Task",
            Kind::Pipeline => "Pipeline",
            Kind::StepAction => "StepAction",
        }
    }
}

/// One resolution to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `git`, `http`, `bundles`, `hub` (or `cluster`, which only the
    /// controller answers).
    pub resolver: String,
    /// The ref's params, substituted; arrays and objects as their JSON.
    pub params: BTreeMap<String, String>,
    /// What the ref expects.
    pub kind: Kind,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A param that must be given and not be empty.
    fn required(&self, names: &[&str]) -> Result<(), String> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.param(n).is_none_or(str::is_empty))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "missing required {} resolver params: {}",
            self.resolver,
            missing.join(", ")
        ))
    }
}

/// A resolved document and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The document as fetched (YAML or JSON).
    pub data: Vec<u8>,
    pub source: RefSource,
}

impl Resolved {
    /// The source as one line, for messages in place of a file name:
    /// `git+https://host/repo.git@<commit>:task.yaml`,
    /// `registry/repo@sha256:…` (`name`), `https://host/task.yaml`.
    pub fn label(&self) -> String {
        self.source.label()
    }
}

/// Reads a Secret's key for a resolver (`gitToken`, `http-password-secret`,
/// a bundle's `secret`): locally the Secrets given to `tkt run`, on a
/// cluster the run's namespace.
pub trait Secrets: Sync {
    /// The value of `key` in Secret `name`.
    ///
    /// # Errors
    /// A message saying what is missing (never the value).
    fn get(&self, name: &str, key: &str) -> Result<Vec<u8>, String>;
}

/// No Secrets at all.
#[derive(Debug)]
pub struct NoSecrets;

impl Secrets for NoSecrets {
    fn get(&self, name: &str, _: &str) -> Result<Vec<u8>, String> {
        Err(format!("secret {name:?} not found"))
    }
}

/// How resolutions are made.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where immutable answers are kept; none keeps nothing.
    pub cache_dir: Option<PathBuf>,
    /// Answer from the cache only; fail what it lacks.
    pub offline: bool,
    /// Longest a resolution may take (Tekton's `fetch-timeout`, 1m).
    pub timeout: Duration,
    /// Artifact Hub's base URL (Tekton's `ARTIFACT_HUB_API`).
    pub artifact_hub: String,
    /// Registries (`host[:port]`) spoken to over plain HTTP, besides the
    /// loopback ones, which always are.
    pub plain_http: Vec<String>,
    /// A docker `config.json` with registry credentials for bundles.
    pub docker_config: Option<PathBuf>,
    /// Whether this machine's own setup may be used: `file://` git URLs,
    /// git's configuration and credential helpers, the docker config. True
    /// for `tkt run` (the user's own machine); false in the controller,
    /// where a run must not reach the controller's files or credentials.
    pub machine: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_dir: None,
            offline: false,
            timeout: Duration::from_secs(60),
            artifact_hub: "https://artifacthub.io".into(),
            plain_http: Vec::new(),
            docker_config: None,
            machine: true,
        }
    }
}

/// A failed resolution: the resolver and what went wrong. The message
/// never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error requesting remote resource: {resolver} resolver: {message}")]
pub struct Error {
    pub resolver: String,
    pub message: String,
}

/// The resolvers, sharing one registry client and one cache.
#[derive(Debug)]
pub struct Resolvers {
    options: Options,
    oci: tektite_oci::Client,
    cache: cache::Cache,
    http: reqwest::Client,
}

impl Resolvers {
    /// # Errors
    /// The HTTP client cannot be built (TLS setup).
    pub fn new(options: Options) -> Result<Self, Error> {
        let fail = |e: String| Error {
            resolver: "any".into(),
            message: e,
        };
        let oci = tektite_oci::Client::new(tektite_oci::ClientOptions {
            plain_http: options.plain_http.clone(),
            plain_http_loopback: true,
            timeout: options.timeout,
            tag_ttl: Duration::ZERO,
            ..Default::default()
        })
        .map_err(|e| fail(e.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("tektite/", env!("CARGO_PKG_VERSION")))
            .timeout(options.timeout)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            cache: cache::Cache::new(options.cache_dir.clone()),
            options,
            oci,
            http,
        })
    }

    /// Resolves `req`; `secrets` answers for credentials the params name.
    ///
    /// # Errors
    /// [`Error`]: params missing or invalid, the source unreachable, the
    /// answer not there, too big or not what its digest says, the time
    /// limit passed, or (offline) not in the cache.
    pub async fn resolve(&self, req: &Request, secrets: &dyn Secrets) -> Result<Resolved, Error> {
        let work = async {
            match req.resolver.as_str() {
                "git" => git::resolve(self, req, secrets).await,
                "http" => http::resolve(self, req, secrets).await,
                "bundles" => bundle::resolve(self, req, secrets).await,
                "hub" => hub::resolve(self, req).await,
                "cluster" => Err(
                    "the cluster resolver reads objects from a cluster's API server: it works in the controller, not in tkt run"
                        .into(),
                ),
                other => Err(format!(
                    "unknown resolver {other:?} (git, http, bundles, hub and cluster are known)"
                )),
            }
        };
        let out = match tokio::time::timeout(self.options.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "resolution took longer than {}s",
                self.options.timeout.as_secs()
            )),
        };
        out.map(|mut r| {
            r.source.uri = r.source.uri.as_deref().map(redact);
            r
        })
        .map_err(|message| Error {
            resolver: req.resolver.clone(),
            message: redact(&message),
        })
    }
}

/// The one object of `kind` in a resolved document, loaded and validated as
/// a file named `label` would be (so every message names the source).
///
/// # Errors
/// Every problem, one per line; an object of another kind (`resource is
/// not a task: it is a StepAction`); none or more than one object.
pub fn decode(label: &str, data: &[u8], kind: Kind) -> Result<tektite_api::load::Object, String> {
    use tektite_api::Severity;
    let text = std::str::from_utf8(data).map_err(|_| {
        format!("{label}: the answer is not text (UTF-8), so not a YAML or JSON document")
    })?;
    let out = tektite_api::load_str(label, text);
    let mut problems: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    problems.extend(
        tektite_api::validate::validate_all(&out.objects)
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string),
    );
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut objects = out.objects.into_iter().map(|l| l.object);
    let found = match objects.next() {
        Some(o) if o.kind() == kind.as_str() => o,
        Some(o) => {
            return Err(format!(
                "{label}: resource is not a {}: it is a {}",
                kind.lower(),
                o.kind()
            ));
        }
        None => return Err(format!("{label}: no Tekton object in the answer")),
    };
    if objects.next().is_some() {
        return Err(format!(
            "{label}: more than one object: a resolver answers one"
        ));
    }
    Ok(found)
}

pub use tektite_api::redact::redact;

/// A cache key of `parts` (JSON, so no part can run into the next).
fn key(parts: &[&str]) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

/// `sha256` hex of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// The most a resolved document may weigh (Tekton's http resolver's limit).
pub const MAX_DOCUMENT: usize = 1 << 20;
