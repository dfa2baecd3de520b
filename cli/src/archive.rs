//! Logs of a cluster's runs whose pods are gone: read from the
//! controller's log archive over HTTPS.
//!
//! The server is found in the ConfigMap `tektite-logs` of the controller's
//! namespace (`$TEKTITE_NAMESPACE`, default `tektite`): its `url` and the
//! `ca.crt` to trust; `$TEKTITE_LOGS_URL` and `$TEKTITE_LOGS_CA` (a PEM
//! file) override it, for a server reached another way (an Ingress, a
//! port-forward). Requests carry the kubeconfig's own credentials (its
//! token, or its exec plugin's), through a kube client pointed at that
//! URL: the server asks the API server who the token is and whether they
//! may `get` the TaskRun. A kubeconfig that signs in without a token (a
//! client certificate) is given one with `$TEKTITE_LOGS_TOKEN`.

use anyhow::Context as _;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, Config};
use serde::Deserialize;
use tektite_api::v1::TaskRun;

/// One archived container of a TaskRun.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Entry {
    pub pod: String,
    /// A pod deleted and made again under its name has another uid.
    pub pod_uid: String,
    pub name: String,
    /// Sealed: the container ended and all of its log is there.
    pub complete: bool,
}

#[derive(Debug, Deserialize)]
struct Listing {
    containers: Vec<Entry>,
}

/// A client of the log archive's server.
pub(crate) struct Archive {
    client: Client,
    url: String,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

/// The controller's namespace, where `tektite-logs` is.
fn controller_namespace() -> String {
    std::env::var("TEKTITE_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "tektite".into())
}

/// The DER certificates of a PEM text.
fn certificates(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(certs)
}

impl Archive {
    /// Finds the server (see the module) and makes a client for it with
    /// `cluster`'s credentials.
    ///
    /// # Errors
    /// No server is published (the cluster keeps no archive), or its CA
    /// cannot be read.
    pub(crate) async fn find(client: &Client, cluster: &Config) -> anyhow::Result<Archive> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        // The URL, the CA's PEM, and where they were read (for errors).
        let (url, ca, from) = match env("TEKTITE_LOGS_URL") {
            Some(url) => {
                let (ca, from) = match env("TEKTITE_LOGS_CA") {
                    Some(f) => (
                        std::fs::read_to_string(&f)
                            .with_context(|| format!("$TEKTITE_LOGS_CA {f}"))?,
                        format!("$TEKTITE_LOGS_CA {f}"),
                    ),
                    None => (String::new(), String::new()),
                };
                (url, ca, from)
            }
            None => {
                let ns = controller_namespace();
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
                let cm = crate::cluster::get_opt(&api, "tektite-logs")
                    .await?
                    .with_context(|| {
                        format!("the cluster keeps no log archive (no ConfigMap {ns}/tektite-logs)")
                    })?;
                let data = cm.data.unwrap_or_default();
                let url = data
                    .get("url")
                    .cloned()
                    .with_context(|| format!("ConfigMap {ns}/tektite-logs has no url"))?;
                let ca = data.get("ca.crt").cloned().unwrap_or_default();
                (url, ca, format!("ConfigMap {ns}/tektite-logs, key ca.crt"))
            }
        };
        let mut config = cluster.clone();
        if let Some(token) = env("TEKTITE_LOGS_TOKEN") {
            config.auth_info.token = Some(secrecy::SecretString::from(token));
        }
        let a = &config.auth_info;
        let tokenless = a.token.is_none()
            && a.token_file.is_none()
            && a.exec.is_none()
            && a.auth_provider.is_none();
        anyhow::ensure!(
            !tokenless,
            "the kubeconfig signs in without a token (a client certificate?), which the log archive's server cannot check: \
             set $TEKTITE_LOGS_TOKEN (e.g. to `kubectl create token SERVICE-ACCOUNT`)"
        );
        config.cluster_url = url
            .parse()
            .with_context(|| format!("log archive url {url:?}"))?;
        if !ca.trim().is_empty() {
            config.root_cert = Some(
                certificates(&ca).with_context(|| format!("{from}: expected PEM certificates"))?,
            );
        }
        config.tls_server_name = None;
        let client = Client::try_from(config).context("a client for the log archive")?;
        Ok(Archive { client, url })
    }

    fn path(tr: &TaskRun) -> String {
        format!(
            "/v1/namespaces/{}/taskruns/{}/logs",
            tr.metadata.namespace.as_deref().unwrap_or_default(),
            tr.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn get(path: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
        Ok(http::Request::get(path).body(Vec::new())?)
    }

    /// The containers archived for `tr` (this TaskRun: its uid).
    ///
    /// # Errors
    /// The server cannot be reached or refuses (401, 403).
    pub(crate) async fn containers(&self, tr: &TaskRun) -> anyhow::Result<Vec<Entry>> {
        let uid = tr.metadata.uid.as_deref().unwrap_or_default();
        let req = Self::get(&format!("{}?uid={uid}", Self::path(tr)))?;
        let text = self
            .client
            .request_text(req)
            .await
            .map_err(|e| self.explain(e))?;
        let listing: Listing = serde_json::from_str(&text)
            .with_context(|| format!("log archive at {}: not a listing", self.url))?;
        Ok(listing.containers)
    }

    /// The archived log of a container (sent as gzip), uncompressed.
    ///
    /// # Errors
    /// The server cannot be reached, refuses, has no such log, or sends
    /// something that is not gzip.
    pub(crate) async fn log(&self, tr: &TaskRun, e: &Entry) -> anyhow::Result<Vec<u8>> {
        let uid = tr.metadata.uid.as_deref().unwrap_or_default();
        let req = Self::get(&format!(
            "{}/{}/{}?uid={uid}&pod_uid={}",
            Self::path(tr),
            e.pod,
            e.name,
            e.pod_uid
        ))?;
        let mut stream = std::pin::pin!(
            self.client
                .request_stream(req)
                .await
                .map_err(|e| self.explain(e))?
        );
        let mut gz = Vec::new();
        stream.read_to_end(&mut gz).await?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut out)
            .with_context(|| {
                format!(
                    "log archive at {}: the log of {} is not gzip",
                    self.url, e.name
                )
            })?;
        Ok(out)
    }

    fn explain(&self, e: kube::Error) -> anyhow::Error {
        match e {
            kube::Error::Api(s) => anyhow::anyhow!("log archive: {}", s.message),
            other => anyhow::Error::new(other)
                .context(format!("cannot reach the log archive at {}", self.url)),
        }
    }
}

/// Whether a gone pod's archived logs (`mine`) are all there is to wait
/// for: something archived, every log sealed, and one at least of each of
/// its `containers` that the TaskRun says `ran` (one that never ran has no
/// log). Nothing archived yet may be an archiver that had not written its
/// first part when the pod went.
fn settled(mine: &[Entry], containers: &[String], ran: &[String]) -> bool {
    !mine.is_empty()
        && mine.iter().all(|e| e.complete)
        && containers
            .iter()
            .filter(|c| ran.contains(c))
            .all(|c| mine.iter().any(|e| e.name == *c))
}

/// Whether `tr` ended more than a minute ago.
fn ended_a_while_ago(tr: &TaskRun) -> bool {
    let done = tr.status.as_ref().and_then(|s| s.completion_time.as_ref());
    done.is_some_and(|t| {
        k8s_openapi::jiff::Timestamp::now()
            .duration_since(t.0)
            .as_secs()
            > 60
    })
}

/// The containers of `tr`'s steps that its status says started.
fn started(tr: &TaskRun) -> Vec<String> {
    tr.status
        .iter()
        .flat_map(|s| &s.steps)
        .filter(|s| {
            s.running.is_some()
                || s.terminated
                    .as_ref()
                    .is_some_and(|t| t.started_at.is_some())
        })
        .filter_map(|s| s.container.clone())
        .collect()
}

/// The archive of a cluster, found on first use (most `logs` commands
/// never need it); cheap to clone into followers.
#[derive(Clone)]
pub(crate) struct Lazy {
    client: Client,
    config: Config,
    found: std::sync::Arc<tokio::sync::OnceCell<Result<Archive, String>>>,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy").finish_non_exhaustive()
    }
}

/// How long a gone pod's logs are waited for to be sealed (the archiver
/// seals them within seconds of the pod's end).
const SEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl Lazy {
    pub(crate) fn new(client: Client, config: Config) -> Lazy {
        Lazy {
            client,
            config,
            found: std::sync::Arc::default(),
        }
    }

    async fn get(&self) -> Result<&Archive, String> {
        self.found
            .get_or_init(|| async {
                Archive::find(&self.client, &self.config)
                    .await
                    .map_err(|e| format!("{e:#}"))
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The archived logs of the `containers` of `pod` (a TaskRun's pod
    /// that is gone), in that order, those archived only; a pod made
    /// again under its name gives the logs of each of its lives, oldest
    /// first. A log not sealed yet is waited for a while; past that, what
    /// there is comes with a warning.
    ///
    /// # Errors
    /// Why the archive cannot say (none, unreachable, refused), as text.
    pub(crate) async fn pod_logs(
        &self,
        tr: &TaskRun,
        pod: &str,
        containers: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let archive = self.get().await?;
        // Waited for only while the run goes on or has just ended; the
        // logs of a run that ended long ago are as the archive has them.
        let wait = if ended_a_while_ago(tr) {
            std::time::Duration::ZERO
        } else {
            SEAL_WAIT
        };
        let deadline = tokio::time::Instant::now() + wait;
        // Waited for less long when the TaskRun says no step started.
        let ran = started(tr);
        let short = tokio::time::Instant::now() + wait / 5;
        let entries = loop {
            let all = archive.containers(tr).await.map_err(|e| format!("{e:#}"))?;
            let mine: Vec<Entry> = all
                .into_iter()
                .filter(|e| e.pod == pod && containers.contains(&e.name))
                .collect();
            let now = tokio::time::Instant::now();
            let give_up = now > deadline || (ran.is_empty() && now > short);
            if settled(&mine, containers, &ran) || give_up {
                break mine;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        let mut lives: Vec<&str> = Vec::new();
        for e in &entries {
            if !lives.contains(&e.pod_uid.as_str()) {
                lives.push(&e.pod_uid);
            }
        }
        let mut out = Vec::new();
        for life in lives {
            for c in containers {
                let Some(e) = entries.iter().find(|e| e.pod_uid == life && e.name == *c) else {
                    continue;
                };
                if !e.complete {
                    crate::note(&format!(
                        "tkt: warning: the archived log of {c} in pod {pod} is not sealed: it may lack its last lines"
                    ));
                }
                // Once more after a moment: a log read as it was sealed
                // loses its parts under the reader.
                let log = match archive.log(tr, e).await {
                    Ok(log) => log,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        archive.log(tr, e).await.map_err(|e| format!("{e:#}"))?
                    }
                };
                out.push((c.clone(), log));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, complete: bool) -> Entry {
        Entry {
            pod: "p".into(),
            pod_uid: "u".into(),
            name: name.into(),
            complete,
        }
    }

    #[test]
    fn a_gone_pods_logs_are_settled_once_every_step_that_ran_is_sealed() {
        let steps = ["step-a".to_string(), "step-b".to_string()];
        let ran = ["step-a".to_string()];
        // Nothing archived yet: waited for.
        assert!(!settled(&[], &steps, &ran));
        // Archived but open: waited for.
        assert!(!settled(&[entry("step-a", false)], &steps, &ran));
        // A step that never ran is not waited for.
        assert!(settled(&[entry("step-a", true)], &steps, &ran));
        // A step that ran and is missing is.
        assert!(!settled(&[entry("step-a", true)], &steps, &steps));
    }
}
