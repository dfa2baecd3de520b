//! Archived logs over HTTPS, for `tkt … logs` once a pod is gone.
//!
//! Every request carries the caller's Kubernetes bearer token. The API
//! server says whose it is (a TokenReview) and whether that user may `get`
//! the TaskRun (a SubjectAccessReview): whoever may read a TaskRun may read
//! its logs, and nobody else. There is no anonymous access. A decision is
//! remembered for [`DECISION_TTL`] per token and TaskRun, so the few
//! requests of one `tkt logs` cost one review.
//!
//! ```text
//! GET /v1/namespaces/NS/taskruns/NAME/logs
//!     {"uid", "containers": [{"pod", "pod_uid", "name", "complete", "updated_ms"}]}
//! GET /v1/namespaces/NS/taskruns/NAME/logs/POD/CONTAINER?pod_uid=UID
//!     the log, gzip (application/gzip: members one after another), sent as
//!     it is read from the store
//! ```
//!
//! `?uid=UID` answers only for that TaskRun uid (a run deleted and made
//! again under its name is another run). Errors are Kubernetes `Status`
//! objects, as the API server's, so a Kubernetes client reads them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tektite_api::v1::TaskRun;

use super::store::{LogStore, PodId, RunKey};

/// The ConfigMap (in the controller's namespace) that tells clients where
/// the server is: `url` and the `ca.crt` to trust.
pub const CONFIG_MAP: &str = "tektite-logs";

/// How long an authorisation decision is reused.
pub const DECISION_TTL: Duration = Duration::from_secs(10);

/// Decisions remembered at most (oldest dropped past it).
const DECISIONS: usize = 10_000;

/// The log server's state.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // the client is not Debug
pub struct LogServer {
    pub client: Client,
    pub store: LogStore,
    decisions: Arc<Mutex<Decisions>>,
    /// Reviews asked of the API server at once (a caller with ever new
    /// tokens costs one each).
    reviews: Arc<tokio::sync::Semaphore>,
}

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;

/// Reviews asked of the API server at once.
const MAX_REVIEWS: usize = 16;

/// How long a client may take to send a request's head (a connection that
/// sends nothing is closed after it).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Authorisation decisions by hash of (token, namespace, TaskRun): when
/// each was made, and what it was.
type Decisions = HashMap<[u8; 32], (Instant, Result<(), Refusal>)>;

/// Why a request is refused: an HTTP code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

impl LogServer {
    pub fn new(client: Client, store: LogStore) -> LogServer {
        LogServer {
            client,
            store,
            decisions: Arc::default(),
            reviews: Arc::new(tokio::sync::Semaphore::new(MAX_REVIEWS)),
        }
    }

    /// Serves HTTPS on `listener` with `tls` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = connections.clone().acquire_owned().await else {
                return;
            };
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, server) = (acceptor.clone(), self.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.answer(&req).await {
            Ok(r) => r,
            Err(Refusal(code, message)) => status(code, &message),
        }
    }

    async fn answer(&self, req: &Request<Incoming>) -> Result<Response<Body>, Refusal> {
        if req.method() != http::Method::GET {
            return Err(Refusal(405, "only GET is served".into()));
        }
        let path = req.uri().path();
        let Some(route) = route(path) else {
            return Err(Refusal(404, format!("no such path: {path}")));
        };
        let token = bearer(req.headers()).ok_or_else(|| {
            Refusal(
                401,
                "a bearer token is required (Authorization: Bearer …): archived logs are never served anonymously".into(),
            )
        })?;
        self.authorize(&token, &route.namespace, &route.taskrun)
            .await?;
        let q = req.uri().query().unwrap_or("");
        let want_uid = query(q, "uid");
        let run = self.run(&route.namespace, &route.taskrun, want_uid).await?;
        match route.container {
            None => {
                let containers = self.store.containers(&run).await.map_err(unavailable)?;
                let body = json!({
                    "namespace": run.namespace,
                    "taskrun": run.taskrun,
                    "uid": run.taskrun_uid,
                    "containers": containers,
                });
                Ok(response(200, "application/json", body.to_string().into()))
            }
            Some((pod, container)) => {
                let pod_uid = query(q, "pod_uid")
                    .ok_or_else(|| Refusal(400, "expected ?pod_uid=UID".into()))?;
                let pod = PodId {
                    name: pod,
                    uid: pod_uid,
                };
                let complete = self
                    .store
                    .containers(&run)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .any(|a| a.pod_uid == pod.uid && a.name == container && a.complete);
                let log = self
                    .store
                    .gzip_stream(&run, &pod, &container)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| {
                        Refusal(
                            404,
                            format!(
                                "no log of container {container} of pod {} (taskrun {}) is archived",
                                pod.name, run.taskrun
                            ),
                        )
                    })?;
                let frames = log
                    .map_ok(hyper::body::Frame::data)
                    .map_err(std::io::Error::other);
                let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/gzip"),
                );
                r.headers_mut().insert(
                    "x-tektite-log-complete",
                    http::HeaderValue::from_static(if complete { "true" } else { "false" }),
                );
                Ok(r)
            }
        }
    }

    /// Who holds `token`, and may they `get` the TaskRun?
    async fn authorize(&self, token: &str, namespace: &str, name: &str) -> Result<(), Refusal> {
        let key: [u8; 32] = Sha256::new()
            .chain_update(token)
            .chain_update([0])
            .chain_update(namespace)
            .chain_update([0])
            .chain_update(name)
            .finalize()
            .into();
        if let Some((at, decision)) = self.lock().get(&key)
            && at.elapsed() < DECISION_TTL
        {
            return decision.clone();
        }
        let decision = self.review(token, namespace, name).await;
        // A review that could not be made is not remembered.
        if !matches!(&decision, Err(Refusal(503, _))) {
            let mut decisions = self.lock();
            if decisions.len() >= DECISIONS {
                decisions.retain(|_, (at, _)| at.elapsed() < DECISION_TTL);
                if decisions.len() >= DECISIONS {
                    decisions.clear();
                }
            }
            decisions.insert(key, (Instant::now(), decision.clone()));
        }
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Decisions> {
        self.decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn review(&self, token: &str, namespace: &str, name: &str) -> Result<(), Refusal> {
        let _turn = self
            .reviews
            .acquire()
            .await
            .map_err(|_| Refusal(503, "the server is stopping".into()))?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal(503, format!("the token could not be reviewed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true));
        let Some(user) = user else {
            return Err(Refusal(
                401,
                format!(
                    "the bearer token is not authenticated{}",
                    status.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        };
        let username = user.username.clone().unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some("get".into()),
                    group: Some("tekton.dev".into()),
                    resource: Some("taskruns".into()),
                    name: Some(name.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| Refusal(503, format!("access could not be reviewed: {e}")))?;
        if reviewed.status.is_some_and(|s| s.allowed) {
            Ok(())
        } else {
            Err(Refusal(
                403,
                format!(
                    "taskruns.tekton.dev \"{name}\" is forbidden: User \"{username}\" cannot get resource \"taskruns\" in API group \"tekton.dev\" in the namespace \"{namespace}\", so may not read its logs"
                ),
            ))
        }
    }

    /// The archive's key of the TaskRun, as the API server has it now.
    async fn run(
        &self,
        namespace: &str,
        name: &str,
        want_uid: Option<String>,
    ) -> Result<RunKey, Refusal> {
        let tr = Api::<TaskRun>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Refusal(503, format!("taskrun {name}: {e}")))?;
        let tr = tr.filter(|t| want_uid.is_none() || t.uid() == want_uid);
        let Some(tr) = tr else {
            return Err(Refusal(
                404,
                format!("taskruns.tekton.dev \"{name}\" not found"),
            ));
        };
        RunKey::of(&tr).ok_or_else(|| Refusal(503, format!("taskrun {name} has no uid")))
    }
}

/// A store error as an answer: a name that is not one is the caller's
/// (400), the rest the store's (503).
fn unavailable(e: super::store::Error) -> Refusal {
    match e {
        super::store::Error::Name { .. } => Refusal(400, e.to_string()),
        _ => Refusal(503, e.to_string()),
    }
}

/// A request's target.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    namespace: String,
    taskrun: String,
    container: Option<(String, String)>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, taskrun, container) = match parts.as_slice() {
        ["v1", "namespaces", ns, "taskruns", tr, "logs"] => (*ns, *tr, None),
        ["v1", "namespaces", ns, "taskruns", tr, "logs", pod, c] => (*ns, *tr, Some((*pod, *c))),
        _ => return None,
    };
    let name = |s: &str| super::store::segment("name", s).ok();
    Some(Route {
        namespace: name(namespace)?,
        taskrun: name(taskrun)?,
        container: match container {
            Some((pod, c)) => Some((name(pod)?, name(c)?)),
            None => None,
        },
    })
}

fn bearer(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn response(code: u16, kind: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    r
}

/// A Kubernetes `Status` for an error.
fn status(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        _ => "ServiceUnavailable",
    };
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    response(code, "application/json", body.to_string().into())
}

/// The TLS settings of the log server: the certificate and key in PEM
/// files, or (`None`) a self-signed certificate for `names` (host names
/// and IP addresses), whose PEM is returned for clients to trust.
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the pair does
/// not make a TLS configuration.
pub fn tls(
    files: Option<(&std::path::Path, &std::path::Path)>,
    names: &[String],
) -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (certs, key, pem) = match files {
        Some((cert, key)) => {
            let pem = std::fs::read_to_string(cert)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{}: no certificate", cert.display());
            let k = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            (certs, k, pem)
        }
        None => {
            let signed = rcgen::generate_simple_self_signed(names.to_vec())?;
            let pem = signed.cert.pem();
            let key = PrivateKeyDer::try_from(signed.signing_key.serialize_der())
                .map_err(|e| anyhow::anyhow!("self-signed key: {e}"))?;
            (vec![signed.cert.der().clone()], key, pem)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok((Arc::new(config), pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_only_kubernetes_names() {
        assert_eq!(
            route("/v1/namespaces/ci/taskruns/build-x/logs/build-x-pod/step-a"),
            Some(Route {
                namespace: "ci".into(),
                taskrun: "build-x".into(),
                container: Some(("build-x-pod".into(), "step-a".into())),
            })
        );
        assert!(route("/v1/namespaces/ci/taskruns/build-x/logs").is_some());
        assert_eq!(route("/v1/namespaces/ci/taskruns/../logs"), None);
        assert_eq!(route("/v1/namespaces/ci/taskruns/a/logs/p/.."), None);
        assert_eq!(route("/v1/namespaces/ci/taskruns/a/logs/step-a"), None);
        assert_eq!(route("/v1/namespaces/CI/taskruns/a/logs"), None);
        assert_eq!(route("/v1/namespaces/ci/pods/a/logs"), None);
    }

    #[test]
    fn only_a_bearer_token_is_a_credential() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Basic YTpi".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
    }
}
