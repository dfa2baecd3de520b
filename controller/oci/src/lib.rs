//! Image config lookup over the OCI distribution API: the `ENTRYPOINT` and `CMD`
//! of an image, per platform.
//!
//! A Tekton step without `command` runs its image's entrypoint, but every step
//! is wrapped by our `entrypoint` binary, so the controller must know that
//! entrypoint before it builds the pod. The engine stays pure and receives the
//! answer as resolved data; this crate is the controller-side I/O that fetches it.
//!
//! Data flow: image reference → [`Reference::parse`] (Docker's normalization) →
//! tag resolved to a manifest digest (`HEAD`, cached for [`ClientOptions::tag_ttl`]) →
//! manifest or index fetched by digest → one manifest and config blob per
//! platform → [`ImageInfo`], cached by digest for the client's lifetime.
//!
//! # Guarantees
//! - Every manifest is fetched by digest and its bytes' sha256 checked against
//!   that digest; every config blob is checked against its descriptor's digest.
//!   A reference pinned with `@sha256:…` therefore yields exactly that content.
//! - Anonymous access is tried first; a `401` answered with a `Bearer` challenge
//!   fetches a token from its realm (with the credentials, if any), a `Basic`
//!   challenge sends the credentials. A realm is asked only over HTTPS, unless
//!   the registry itself is reached over plain HTTP ([`ClientOptions::plain_http`]);
//!   redirects never go from HTTPS to plain HTTP.
//! - Concurrent lookups of the same reference share one registry round trip.
//!
//! This crate depends on no kube client and none of our crates; the controller
//! uses it through the [`ImageLookup`] trait so it can be faked in tests.

mod auth;
mod blobs;
mod reference;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

pub use auth::{Challenge, Credentials};
pub use blobs::Pushed;
pub use reference::{DOCKER_HUB, Reference};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const MAX_MANIFEST: usize = 4 << 20;
const MAX_CONFIG: usize = 8 << 20;

/// What an image runs when the container does not override it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The commands of an image, for each platform it is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Digest of the manifest or index the reference resolved to; pin the
    /// step's image to it so the pod runs what was looked up.
    pub digest: String,
    /// Keyed by `os/architecture[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
    pub platforms: BTreeMap<String, ImageCommand>,
}

impl ImageInfo {
    /// The command for `platform` (`os/arch[/variant]`). An exact key wins;
    /// otherwise a variant given on only one side is ignored, so `linux/arm64`
    /// finds `linux/arm64/v8` and the other way round.
    pub fn command_for(&self, platform: &str) -> Option<&ImageCommand> {
        fn split(p: &str) -> (&str, Option<&str>) {
            match p.match_indices('/').nth(1) {
                Some((i, _)) => (&p[..i], Some(&p[i + 1..])),
                None => (p, None),
            }
        }
        if let Some(command) = self.platforms.get(platform) {
            return Some(command);
        }
        let (want, want_variant) = split(platform);
        self.platforms.iter().find_map(|(key, command)| {
            let (have, variant) = split(key);
            (have == want && (want_variant.is_none() || variant.is_none())).then_some(command)
        })
    }
}

/// Errors of a lookup. Each names the image reference or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse; nothing was sent.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry has no such repository, tag, manifest or blob (HTTP 404).
    #[error("image {reference} not found{detail}")]
    NotFound { reference: String, detail: String },
    /// The registry refused access (401/403), after authenticating if it asked.
    #[error("registry {registry} refused access to {reference} (HTTP {status}){detail}")]
    Unauthorized {
        reference: String,
        registry: String,
        status: u16,
        detail: String,
    },
    /// Content does not match the digest it was fetched by: a tampered or
    /// broken registry, or a wrong pinned digest.
    #[error("{what} of image {reference} has digest {actual}, expected {expected}")]
    DigestMismatch {
        reference: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// The token service named by a Bearer challenge failed.
    #[error("getting a registry token from {realm} for {reference} failed: {reason}")]
    Token {
        reference: String,
        realm: String,
        reason: String,
    },
    /// Connecting, TLS or reading the answer failed.
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Any other unexpected HTTP status.
    #[error("{url} answered HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    /// An answer that is not a manifest, index or image config we understand.
    #[error("{url} answered an invalid {what}: {reason}")]
    Invalid {
        url: String,
        what: &'static str,
        reason: String,
    },
    /// The image has no entry for the requested platform.
    #[error("image {reference} has no {platform} variant (it has: {})", available.join(", "))]
    NoPlatform {
        reference: String,
        platform: String,
        available: Vec<String>,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client failed: {0}")]
    Setup(#[source] reqwest::Error),
}

/// How a [`Client`] talks to registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]`, as in the image reference) reached over
    /// plain HTTP instead of HTTPS, e.g. `127.0.0.1:5000` in tests.
    pub plain_http: Vec<String>,
    /// Also reach registries on loopback addresses (`localhost`,
    /// `127.0.0.0/8`, `::1`) over plain HTTP, as docker and podman do.
    pub plain_http_loopback: bool,
    /// Platform [`Client::command`] picks, e.g. `linux/amd64`.
    pub default_platform: String,
    /// How long a tag→digest resolution is trusted; zero re-resolves every time.
    pub tag_ttl: Duration,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            plain_http: Vec::new(),
            plain_http_loopback: false,
            default_platform: "linux/amd64".to_owned(),
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The boxed future of [`ImageLookup::lookup`].
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Result<ImageInfo, Error>> + Send + 'a>>;

/// Looks up an image's commands; [`Client`] implements it, tests fake it.
pub trait ImageLookup: Send + Sync {
    fn lookup<'a>(&'a self, image: &'a str, creds: Option<&'a Credentials>) -> LookupFuture<'a>;
}

impl ImageLookup for Client {
    fn lookup<'a>(&'a self, image: &'a str, creds: Option<&'a Credentials>) -> LookupFuture<'a> {
        Box::pin(Client::lookup(self, image, creds))
    }
}

/// How to authenticate to one repository, learned from its last challenge.
#[derive(Debug, Clone)]
enum Auth {
    Basic,
    Bearer(String),
}

/// An OCI distribution client with a digest-keyed cache. Share one per process.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    options: ClientOptions,
    /// `registry/repo@digest` → info; content-addressed, so never stale.
    images: Mutex<HashMap<String, ImageInfo>>,
    /// `registry/repo:tag` → (digest, when resolved).
    tags: Mutex<HashMap<String, (String, Instant)>>,
    /// `registry/repo username` → how to authenticate.
    auth: Mutex<HashMap<String, Auth>>,
    /// One gate per reference being looked up, so lookups do not stampede.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    requests: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl Client {
    /// # Errors
    /// [`Error::Setup`] when the TLS backend cannot be initialized.
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("tektite/", env!("CARGO_PKG_VERSION")))
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::custom(no_downgrade))
            .build()
            .map_err(Error::Setup)?;
        Ok(Self {
            http,
            options,
            images: Mutex::default(),
            tags: Mutex::default(),
            auth: Mutex::default(),
            inflight: Mutex::default(),
            requests: AtomicU64::new(0),
        })
    }

    /// How many HTTP requests this client has sent (token requests included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The image's command for [`ClientOptions::default_platform`].
    ///
    /// # Errors
    /// Those of [`Client::lookup`], and [`Error::NoPlatform`].
    pub async fn command(
        &self,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<ImageCommand, Error> {
        let info = self.lookup(image, creds).await?;
        let platform = &self.options.default_platform;
        info.command_for(platform)
            .cloned()
            .ok_or_else(|| Error::NoPlatform {
                reference: image.to_owned(),
                platform: platform.clone(),
                available: info.platforms.keys().cloned().collect(),
            })
    }

    /// Resolves `image` and returns its commands for every platform it has.
    /// `creds` are sent only when the registry asks for authentication.
    ///
    /// # Errors
    /// See [`Error`]; a reference that does not parse sends nothing.
    pub async fn lookup(
        &self,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<ImageInfo, Error> {
        let reference = Reference::parse(image)?;
        let key = reference.to_string();
        let gate = Arc::clone(lock(&self.inflight).entry(key.clone()).or_default());
        let guard = gate.lock().await;
        let result = self.lookup_parsed(&reference, creds).await;
        drop(guard);
        let mut inflight = lock(&self.inflight);
        // Clones are only made under this lock: 2 means nobody else waits.
        if Arc::strong_count(&gate) == 2 {
            inflight.remove(&key);
        }
        result
    }

    async fn lookup_parsed(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<ImageInfo, Error> {
        let digest = match &r.digest {
            Some(digest) => digest.clone(),
            None => self.resolve_tag(r, creds).await?,
        };
        let key = format!("{}@{digest}", r.name());
        if let Some(info) = lock(&self.images).get(&key) {
            return Ok(info.clone());
        }
        let info = self.fetch_image(r, &digest, creds).await?;
        tracing::debug!(image = %r, digest = %digest, platforms = info.platforms.len(), "fetched image config");
        lock(&self.images).insert(key, info.clone());
        Ok(info)
    }

    /// Tag → manifest digest, from the cache while fresh, else by `HEAD`.
    async fn resolve_tag(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<String, Error> {
        let key = r.to_string();
        if let Some((digest, at)) = lock(&self.tags).get(&key)
            && at.elapsed() < self.options.tag_ttl
        {
            return Ok(digest.clone());
        }
        let path = format!("manifests/{}", r.target());
        let head = self.send(r, Method::HEAD, &path, creds).await?;
        let header = head
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        let digest = match header {
            Some(d) if reference::is_sha256_digest(d) => d.to_owned(),
            // Registries SHOULD send the header; without it, hash the manifest.
            _ => {
                let url = head.url().to_string();
                let get = self.send(r, Method::GET, &path, creds).await?;
                sha256(&read_limited(get, &url, MAX_MANIFEST).await?)
            }
        };
        tracing::debug!(image = %r, digest = %digest, "resolved tag");
        lock(&self.tags).insert(key, (digest.clone(), Instant::now()));
        Ok(digest)
    }

    async fn fetch_image(
        &self,
        r: &Reference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<ImageInfo, Error> {
        let (url, is_index, bytes) = self.manifest(r, digest, creds).await?;
        let mut platforms = BTreeMap::new();
        if !is_index {
            let (platform, command) = self.config(r, &url, &bytes, creds).await?;
            platforms.insert(platform, command);
        } else {
            let index =
                ImageIndex::from_reader(&bytes[..]).map_err(|e| invalid(&url, "image index", e))?;
            for entry in index.manifests() {
                let platform = entry.platform().as_ref().map(|p| {
                    platform_key(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    )
                });
                // Attestations (buildkit provenance, SBOMs) are listed as unknown/unknown.
                if platform.as_deref().is_some_and(|p| p.contains("unknown")) {
                    continue;
                }
                let (url, nested, bytes) = self.manifest(r, entry.digest().as_ref(), creds).await?;
                if nested {
                    tracing::debug!(image = %r, url = %url, "skipping nested index");
                    continue;
                }
                let (config_platform, command) = self.config(r, &url, &bytes, creds).await?;
                platforms.insert(platform.unwrap_or(config_platform), command);
            }
        }
        Ok(ImageInfo {
            digest: digest.to_owned(),
            platforms,
        })
    }

    /// Fetches a manifest or index by digest and verifies it; returns its URL,
    /// whether it is an index, and its bytes.
    async fn manifest(
        &self,
        r: &Reference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<(String, bool, Vec<u8>), Error> {
        let resp = self
            .send(r, Method::GET, &format!("manifests/{digest}"), creds)
            .await?;
        let url = resp.url().to_string();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_limited(resp, &url, MAX_MANIFEST).await?;
        verify(r, "manifest", digest, &bytes)?;
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<serde::de::IgnoredAny>,
        }
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&url, "manifest", e))?;
        let media = content_type.or(probe.media_type).unwrap_or_default();
        let is_index = [OCI_INDEX, DOCKER_LIST]
            .iter()
            .any(|m| media.starts_with(m))
            || probe.manifests.is_some();
        Ok((url, is_index, bytes))
    }

    /// Fetches and verifies the config blob of an image manifest; returns its
    /// platform key and command.
    async fn config(
        &self,
        r: &Reference,
        url: &str,
        manifest: &[u8],
        creds: Option<&Credentials>,
    ) -> Result<(String, ImageCommand), Error> {
        let manifest =
            ImageManifest::from_reader(manifest).map_err(|e| invalid(url, "image manifest", e))?;
        let descriptor: &Descriptor = manifest.config();
        let digest = descriptor.digest().to_string();
        let resp = self
            .send(r, Method::GET, &format!("blobs/{digest}"), creds)
            .await?;
        let url = resp.url().to_string();
        let bytes = read_limited(resp, &url, MAX_CONFIG).await?;
        verify(r, "config blob", &digest, &bytes)?;
        let config = ImageConfiguration::from_reader(&bytes[..])
            .map_err(|e| invalid(&url, "image config", e))?;
        let platform = platform_key(
            &config.os().to_string(),
            &config.architecture().to_string(),
            config.variant().as_deref(),
        );
        let command = config
            .config()
            .as_ref()
            .map_or_else(ImageCommand::default, |c| ImageCommand {
                entrypoint: c.entrypoint().clone().unwrap_or_default(),
                cmd: c.cmd().clone().unwrap_or_default(),
            });
        Ok((platform, command))
    }

    /// Whether `r`'s registry is reached over plain HTTP.
    fn plain_http(&self, r: &Reference) -> bool {
        self.options.plain_http.contains(&r.registry)
            || (self.options.plain_http_loopback && is_loopback(&r.registry))
    }

    /// The URL of `/v2/<repo>/<path>` on `r`'s registry.
    fn url(&self, r: &Reference, path: &str) -> String {
        let scheme = if self.plain_http(r) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{path}", r.registry, r.repository)
    }

    /// Sends a request for `/v2/<repo>/<path>`, authenticating once if challenged.
    async fn send(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        creds: Option<&Credentials>,
    ) -> Result<Response, Error> {
        self.send_to(r, method, self.url(r, path), None, creds)
            .await
    }

    /// Sends a request for `url` on `r`'s registry, with `body` (bytes and
    /// content type) if any, authenticating once if challenged.
    async fn send_to(
        &self,
        r: &Reference,
        method: Method,
        url: String,
        body: Option<(&[u8], &str)>,
        creds: Option<&Credentials>,
    ) -> Result<Response, Error> {
        let auth_key = format!("{} {}", r.name(), creds.map_or("", |c| c.username.as_str()));
        let mut challenged = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, MANIFEST_ACCEPT);
            if let Some((bytes, content_type)) = body {
                req = req.header(CONTENT_TYPE, content_type).body(bytes.to_vec());
            }
            match (lock(&self.auth).get(&auth_key).cloned(), creds) {
                (Some(Auth::Bearer(token)), _) => req = req.bearer_auth(token),
                (Some(Auth::Basic), Some(c)) => {
                    req = req.basic_auth(&c.username, Some(&c.password))
                }
                _ => {}
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = req.send().await.map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            if resp.status() != StatusCode::UNAUTHORIZED || challenged {
                return Err(status_error(r, &url, resp).await);
            }
            challenged = true;
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            let auth = match challenge {
                Some(Challenge::Basic) if creds.is_some() => Auth::Basic,
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => Auth::Bearer(self.token(r, &realm, service, scope, creds).await?),
                _ => return Err(status_error(r, &url, resp).await),
            };
            lock(&self.auth).insert(auth_key.clone(), auth);
        }
    }

    /// Docker's token protocol: `GET realm?service=…&scope=…`, basic auth if we have credentials.
    async fn token(
        &self,
        r: &Reference,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
        creds: Option<&Credentials>,
    ) -> Result<String, Error> {
        let fail = |reason: String| Error::Token {
            reference: r.to_string(),
            realm: realm.to_owned(),
            reason,
        };
        auth::realm_allowed(realm, self.plain_http(r)).map_err(fail)?;
        let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", r.repository));
        let mut req = self.http.get(realm).query(&[("scope", scope)]);
        if let Some(service) = service {
            req = req.query(&[("service", service)]);
        }
        if let Some(c) = creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = resp.json().await.map_err(|e| fail(e.to_string()))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("the answer has no token".to_owned()))
    }
}

/// Redirects are followed (registries send blobs to storage hosts), but
/// never from HTTPS to plain HTTP, and at most 10.
fn no_downgrade(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
    if from_https && attempt.url().scheme() != "https" {
        let to = attempt.url().to_string();
        attempt.error(format!("redirect from https to {to} refused"))
    } else if attempt.previous().len() > 10 {
        attempt.error("too many redirects")
    } else {
        attempt.follow()
    }
}

/// Whether `host[:port]` is `localhost`, an address of `127.0.0.0/8` or `::1`.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn platform_key(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

fn verify(r: &Reference, what: &'static str, expected: &str, bytes: &[u8]) -> Result<(), Error> {
    let actual = sha256(bytes);
    if actual == expected {
        return Ok(());
    }
    Err(Error::DigestMismatch {
        reference: r.to_string(),
        what,
        expected: expected.to_owned(),
        actual,
    })
}

fn invalid(url: &str, what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Invalid {
        url: url.to_owned(),
        what,
        reason: e.to_string(),
    }
}

async fn read_limited(mut resp: Response, url: &str, limit: usize) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| Error::Http {
        url: url.to_owned(),
        source,
    })? {
        if buf.len() + chunk.len() > limit {
            return Err(invalid(
                url,
                "answer",
                format!("it is larger than {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Maps a failed answer to an error, with the registry's own error codes as detail.
async fn status_error(r: &Reference, url: &str, resp: Response) -> Error {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<RegistryError>,
    }
    #[derive(serde::Deserialize)]
    struct RegistryError {
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = resp.status();
    let body = read_limited(resp, url, 64 << 10).await.unwrap_or_default();
    let detail = match serde_json::from_slice::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let list: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            format!(": {}", list.join("; "))
        }
        _ => String::new(),
    };
    match status {
        StatusCode::NOT_FOUND => Error::NotFound {
            reference: r.to_string(),
            detail,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
            reference: r.to_string(),
            registry: r.registry.clone(),
            status: status.as_u16(),
            detail,
        },
        _ => Error::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_known_by_address() {
        for r in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.9.9.9",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "registry.example:5000",
            "10.0.0.1:5000",
            "localhost.example",
            "[::2]:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn command_for_matches_variants_loosely() {
        let cmd = |e: &str| ImageCommand {
            entrypoint: vec![e.into()],
            cmd: vec![],
        };
        let info = ImageInfo {
            digest: sha256(b"x"),
            platforms: [
                ("linux/amd64", cmd("a")),
                ("linux/arm64/v8", cmd("b")),
                ("linux/arm/v7", cmd("c")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        assert_eq!(info.command_for("linux/amd64"), Some(&cmd("a")));
        assert_eq!(info.command_for("linux/arm64"), Some(&cmd("b")));
        assert_eq!(info.command_for("linux/amd64/v2"), Some(&cmd("a")));
        assert_eq!(info.command_for("linux/arm/v6"), None);
        assert_eq!(info.command_for("windows/amd64"), None);
    }

    #[tokio::test]
    async fn image_lookup_can_be_faked_behind_dyn() {
        struct Fake;
        impl ImageLookup for Fake {
            fn lookup<'a>(
                &'a self,
                image: &'a str,
                _: Option<&'a Credentials>,
            ) -> LookupFuture<'a> {
                Box::pin(async move {
                    Err(Error::NotFound {
                        reference: image.to_owned(),
                        detail: String::new(),
                    })
                })
            }
        }
        let lookups: [Box<dyn ImageLookup>; 2] = [
            Box::new(Fake),
            Box::new(Client::new(ClientOptions::default()).unwrap()),
        ];
        let err = lookups[0].lookup("x", None).await.unwrap_err();
        assert_eq!(err.to_string(), "image x not found");
        // The real client rejects a bad reference before any I/O.
        let err = lookups[1].lookup("a//b", None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidReference { .. }), "{err}");
    }

    /// A registry reached over HTTPS that names a plain-HTTP token realm
    /// would get the credentials sent there in clear: the realm is not
    /// asked. The same realm of a registry reached over plain HTTP is.
    #[tokio::test]
    async fn a_plain_http_bearer_realm_is_refused_for_an_https_registry() {
        use std::io::{Read, Write};
        let creds = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        let r = Reference::parse("registry.example.com/team/app:1").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let client = Client::new(ClientOptions::default()).unwrap();
        let err = client
            .token(&r, &realm, None, None, Some(&creds))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Token { reason, .. } if reason.contains("plain-HTTP realm")),
            "{err}"
        );
        assert_eq!(client.requests(), 0);
        assert!(listener.accept().is_err(), "the realm was connected to");

        listener.set_nonblocking(false).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let body = r#"{"token":"t"}"#;
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let plain = Client::new(ClientOptions {
            plain_http: vec![r.registry.clone()],
            ..ClientOptions::default()
        })
        .unwrap();
        let token = plain.token(&r, &realm, None, None, Some(&creds)).await;
        assert_eq!(token.unwrap(), "t");
        assert!(server.join().unwrap().starts_with("GET /token?"));
    }

    #[test]
    fn digests_are_lowercase_sha256() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let r = Reference::parse("app").unwrap();
        let err = verify(&r, "manifest", "sha256:00", b"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "manifest of image registry-1.docker.io/library/app:latest has digest sha256:e3b0"
            ),
            "{err}"
        );
    }
}
