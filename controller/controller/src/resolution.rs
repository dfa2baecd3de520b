//! Remote refs in the controller: `resolver:` refs of TaskRuns,
//! PipelineRuns and their steps, resolved off the reconcile loop.
//!
//! A reconcile asks [`Resolution::poll`] for a ref: the first time, a
//! resolution starts in the background (at most [`WORKERS`] at once; the
//! Secrets its params name are read first, in the run's namespace) and the
//! run waits, `Unknown` with Tekton's `ResolvingTaskRef` /
//! `ResolvingPipelineRef`, requeued each second; a later reconcile finds the
//! answer. Answers are kept for [`KEEP`] (a commit or a digest is content,
//! but memory is bounded: at most [`MAX_ENTRIES`]), failures for a few
//! seconds, so a fixed source is tried again. A resolution past the
//! configured timeout fails. The `cluster` resolver is answered here, from
//! the API server, within the namespace rules.
//!
//! No credential reaches an event, a status or a log: a Secret's value goes
//! to the resolver only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use tektite_api::stepaction::StepAction;
use tektite_api::v1::{Pipeline, RefSource, Task};
use tektite_resolve::{Kind, Request, Resolved, Resolvers};

/// Resolutions running at once.
pub const WORKERS: usize = 4;
/// How long an answer is kept.
pub const KEEP: Duration = Duration::from_secs(300);
/// How long a failure is kept before the ref is tried again.
const KEEP_FAILURE: Duration = Duration::from_secs(5);
/// Answers kept at most.
pub const MAX_ENTRIES: usize = 1000;
/// Bytes of answers kept at most (the controller's memory is bounded).
pub const MAX_BYTES: usize = 32 << 20;

/// Where one ref stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// Resolving: come back later.
    Pending,
    Ready(Resolved),
    /// The resolver's message (no credential in it).
    Failed(String),
}

#[derive(Debug)]
enum Entry {
    /// Since when; one running past its time has died (a panic) and is
    /// tried again.
    Running(Instant),
    Done(Result<Resolved, String>, Instant),
}

impl Entry {
    fn bytes(&self) -> usize {
        match self {
            Entry::Done(Ok(r), _) => r.data.len(),
            _ => 0,
        }
    }
}

/// The controller's resolutions.
#[derive(Debug)]
pub struct Resolution {
    resolvers: Arc<Resolvers>,
    permits: Arc<tokio::sync::Semaphore>,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    timeout: Duration,
    /// The cluster resolver's namespace rules.
    pub cluster: ClusterRules,
}

/// Which namespaces the cluster resolver may read (Tekton's
/// `allowed-namespaces`, `blocked-namespaces`, `default-namespace`).
#[derive(Debug, Clone, Default)]
pub struct ClusterRules {
    pub allowed: Vec<String>,
    pub blocked: Vec<String>,
    pub default_namespace: Option<String>,
}

impl ClusterRules {
    /// Tekton's rule, in its order.
    fn check(&self, ns: &str) -> Result<(), String> {
        if self.blocked.iter().any(|b| b == ns) {
            return Err(format!("access to specified namespace {ns} is blocked"));
        }
        if self.allowed.iter().any(|a| a == ns) {
            return Ok(());
        }
        if self.blocked.iter().any(|b| b == "*") {
            return Err("only explicit allowed access to namespaces is allowed".into());
        }
        if !self.allowed.is_empty() {
            return Err(format!("access to specified namespace {ns} is not allowed"));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Resolution {
    /// # Errors
    /// The resolvers' HTTP clients cannot be made.
    pub fn new(
        timeout: Duration,
        plain_http: Vec<String>,
    ) -> Result<Resolution, tektite_resolve::Error> {
        Resolution::with_options(tektite_resolve::Options {
            timeout,
            plain_http,
            // No file:// and none of the controller's own git or registry
            // credentials: a run has only the Secrets its params name.
            machine: false,
            ..Default::default()
        })
    }

    /// With these resolver options (tests use this machine's `file://`).
    ///
    /// # Errors
    /// The resolvers' HTTP clients cannot be made.
    pub fn with_options(
        options: tektite_resolve::Options,
    ) -> Result<Resolution, tektite_resolve::Error> {
        let timeout = options.timeout;
        let resolvers = Resolvers::new(options)?;
        Ok(Resolution {
            resolvers: Arc::new(resolvers),
            permits: Arc::new(tokio::sync::Semaphore::new(WORKERS)),
            entries: Arc::new(Mutex::new(HashMap::new())),
            timeout,
            cluster: ClusterRules::default(),
        })
    }

    /// Where `req` (of a run in namespace `ns`) stands; starts it when it
    /// has not been asked for (or its last answer is too old).
    pub fn poll(&self, client: &Client, ns: &str, req: &Request) -> Poll {
        let id = serde_json::to_string(&(
            ns,
            req.kind.lower(),
            tektite_engine::remote::key(&req.resolver, &params_of(req)),
        ))
        .unwrap_or_default();
        {
            let mut entries = lock(&self.entries);
            match entries.get(&id) {
                // One running past any time it could take has died: again.
                Some(Entry::Running(since))
                    if since.elapsed()
                        < self.timeout + Duration::from_secs(WORKERS as u64 * 60) =>
                {
                    return Poll::Pending;
                }
                Some(Entry::Done(r, at)) => {
                    let keep = if r.is_ok() { KEEP } else { KEEP_FAILURE };
                    if at.elapsed() < keep {
                        return match r {
                            Ok(r) => Poll::Ready(r.clone()),
                            Err(m) => Poll::Failed(m.clone()),
                        };
                    }
                }
                Some(Entry::Running(_)) | None => {}
            }
            evict(&mut entries);
            entries.insert(id.clone(), Entry::Running(Instant::now()));
        }
        let (resolvers, permits, entries) = (
            self.resolvers.clone(),
            self.permits.clone(),
            self.entries.clone(),
        );
        let (client, ns, req, timeout, rules) = (
            client.clone(),
            ns.to_string(),
            req.clone(),
            self.timeout,
            self.cluster.clone(),
        );
        tokio::spawn(async move {
            // Waiting for a worker does not count against the time limit.
            let permit = permits.acquire().await;
            let work = async {
                if req.resolver == "cluster" {
                    return cluster(&client, &req, &rules).await;
                }
                let secrets = read_secrets(&client, &ns, &req).await?;
                resolvers
                    .resolve(&req, &secrets)
                    .await
                    .map_err(|e| e.to_string())
            };
            let result = match (permit, tokio::time::timeout(timeout, work).await) {
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), Ok(r)) => r,
                (Ok(_), Err(_)) => Err(format!(
                    "resolution took longer than global timeout of {}s",
                    timeout.as_secs()
                )),
            };
            lock(&entries).insert(id, Entry::Done(result, Instant::now()));
        });
        Poll::Pending
    }
}

/// Makes room for one more entry: the oldest answers go while there are
/// too many or they weigh too much.
fn evict(entries: &mut HashMap<String, Entry>) {
    let mut bytes: usize = entries.values().map(Entry::bytes).sum();
    while entries.len() >= MAX_ENTRIES || bytes > MAX_BYTES {
        let oldest = entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Done(_, at) => Some((k.clone(), *at)),
                Entry::Running(_) => None,
            })
            .min_by_key(|(_, at)| *at)
            .map(|(k, _)| k);
        let Some(k) = oldest else { break };
        if let Some(e) = entries.remove(&k) {
            bytes -= e.bytes();
        }
    }
}

fn params_of(req: &Request) -> Vec<tektite_api::v1::Param> {
    req.params
        .iter()
        .map(|(n, v)| tektite_api::v1::Param {
            name: n.clone(),
            value: tektite_api::param::ParamValue::String(v.clone()),
        })
        .collect()
}

/// The Secrets a request's params name, read from the run's namespace.
struct SecretMap(BTreeMap<(String, String), Vec<u8>>);

impl tektite_resolve::Secrets for SecretMap {
    fn get(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        self.0
            .get(&(name.to_string(), key.to_string()))
            .cloned()
            .ok_or_else(|| format!("key {key} not found in secret {name}"))
    }
}

async fn read_secrets(client: &Client, ns: &str, req: &Request) -> Result<SecretMap, String> {
    let mut out = BTreeMap::new();
    let named = ["gitToken", "http-password-secret", "secret"];
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for p in named {
        let Some(name) = req.params.get(p).filter(|n| !n.is_empty()) else {
            continue;
        };
        let s = api
            .get_opt(name)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => format!(
                    "cannot read secret {name}: the controller may not read Secrets; \
                     bind the ClusterRole tektite-resolver-secrets (controller/config/optional) to let it"
                ),
                e => format!("cannot read secret {name}: {e}"),
            })?
            .ok_or_else(|| format!("secret {name} not found in namespace {ns}"))?;
        for (k, v) in s.data.unwrap_or_default() {
            out.insert((name.clone(), k), v.0);
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert((name.clone(), k), v.into_bytes());
        }
    }
    Ok(SecretMap(out))
}

/// The cluster resolver: a Task, Pipeline or StepAction of a namespace the
/// rules let runs read.
async fn cluster(client: &Client, req: &Request, rules: &ClusterRules) -> Result<Resolved, String> {
    let kind = req
        .params
        .get("kind")
        .filter(|k| !k.is_empty())
        .cloned()
        .unwrap_or_else(|| req.kind.lower().to_string());
    let name = req.params.get("name").cloned().unwrap_or_default();
    let ns = req
        .params
        .get("namespace")
        .filter(|n| !n.is_empty())
        .cloned()
        .or_else(|| rules.default_namespace.clone())
        .unwrap_or_default();
    let missing: Vec<&str> = [("name", &name), ("namespace", &ns)]
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing required cluster resolver params: {}",
            missing.join(", ")
        ));
    }
    for (what, v) in [("namespace", &ns), ("name", &name)] {
        let ok = !v.is_empty()
            && v.len() <= 253
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !v.starts_with(['-', '.']);
        if !ok {
            return Err(format!("invalid {what} {v:?}: not a Kubernetes name"));
        }
    }
    rules.check(&ns)?;
    let fail = |e: kube::Error| e.to_string();
    let (value, uid) = match kind.as_str() {
        "task" => {
            let o = Api::<Task>::namespaced(client.clone(), &ns)
                .get(&name)
                .await
                .map_err(fail)?;
            (serde_json::to_value(&o), o.metadata.uid.clone())
        }
        "pipeline" => {
            let o = Api::<Pipeline>::namespaced(client.clone(), &ns)
                .get(&name)
                .await
                .map_err(fail)?;
            (serde_json::to_value(&o), o.metadata.uid.clone())
        }
        "stepaction" => {
            let o = Api::<StepAction>::namespaced(client.clone(), &ns)
                .get(&name)
                .await
                .map_err(fail)?;
            (serde_json::to_value(&o), o.metadata.uid.clone())
        }
        other => return Err(format!("unknown or unsupported resource kind '{other}'")),
    };
    let mut value = value.map_err(|e| e.to_string())?;
    // The object as written: no status, no server fields.
    if let Some(m) = value.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
    }
    let data = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    Ok(Resolved {
        source: RefSource {
            uri: Some(format!(
                "/apis/tekton.dev/v1/namespaces/{ns}/{kind}/{name}@{}",
                uid.unwrap_or_default()
            )),
            digest: [("sha256".to_string(), sha256_hex(&data))].into(),
            entry_point: None,
        },
        data,
    })
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(b))
}

/// A request for `resolver` with `params` (substituted), expecting `kind`.
pub fn request(resolver: &str, params: &[tektite_api::v1::Param], kind: Kind) -> Request {
    Request {
        resolver: resolver.to_string(),
        params: params
            .iter()
            .map(|p| (p.name.clone(), tektite_engine::remote::value_text(&p.value)))
            .collect(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_rules_are_tektons_in_its_order() {
        let r = |allowed: &[&str], blocked: &[&str]| ClusterRules {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            blocked: blocked.iter().map(|s| s.to_string()).collect(),
            default_namespace: None,
        };
        assert!(r(&[], &[]).check("any").is_ok());
        assert_eq!(
            r(&["a"], &["a"]).check("a").unwrap_err(),
            "access to specified namespace a is blocked"
        );
        assert!(r(&["a"], &["*"]).check("a").is_ok());
        assert_eq!(
            r(&[], &["*"]).check("b").unwrap_err(),
            "only explicit allowed access to namespaces is allowed"
        );
        assert_eq!(
            r(&["a"], &[]).check("b").unwrap_err(),
            "access to specified namespace b is not allowed"
        );
    }
}
