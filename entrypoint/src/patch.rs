//! Reporting to the API server: a JSON merge patch that sets the
//! `tektite.dev/step.<name>` annotation on the step's own pod, with the
//! pod's service-account token and CA. Conflicts (409), throttling (429) and
//! server errors (5xx) are retried with backoff within a bounded time; the
//! caller falls back to the termination message when this fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::STEP_ANNOTATION_PREFIX;

/// Where the pod's service account is mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`] (tests).
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "TEKTITE_SERVICEACCOUNT_DIR";
/// The pod's name and namespace, given by the engine through the downward API.
pub const POD_NAME_ENV: &str = "TEKTITE_POD_NAME";
pub const POD_NAMESPACE_ENV: &str = "TEKTITE_POD_NAMESPACE";
/// How long reporting may take in all before giving up (milliseconds).
pub const DEADLINE_ENV: &str = "TEKTITE_REPORT_DEADLINE_MS";

/// Everything needed to patch our own pod.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub token_file: String,
    pub ca_pem: Vec<u8>,
    pub deadline: Duration,
}

impl Api {
    /// The API from the environment, when running in a pod that may report:
    /// `KUBERNETES_SERVICE_HOST`/`PORT`, the service account's token and CA,
    /// and the pod's name. `None` means no API access.
    pub fn from_env() -> Option<Api> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = env("KUBERNETES_SERVICE_HOST")?;
        let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
        let pod = env(POD_NAME_ENV)?;
        let sa = env(SERVICE_ACCOUNT_DIR_ENV).unwrap_or_else(|| SERVICE_ACCOUNT_DIR.into());
        let namespace = env(POD_NAMESPACE_ENV).or_else(|| {
            std::fs::read_to_string(format!("{sa}/namespace"))
                .ok()
                .map(|s| s.trim().to_string())
        })?;
        let ca_pem = std::fs::read(format!("{sa}/ca.crt")).ok()?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let deadline = env(DEADLINE_ENV)
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(15), Duration::from_millis);
        Some(Api {
            url: format!("https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{pod}"),
            token_file: format!("{sa}/token"),
            ca_pem,
            deadline,
        })
    }

    /// Sets `tektite.dev/step.<step>` to `report_json` on the pod.
    ///
    /// # Errors
    /// What went wrong with the last attempt.
    pub fn report(&self, step: &str, report_json: &str) -> Result<(), String> {
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&self.ca_pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err("the service account's ca.crt holds no certificate".into());
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            // The API server answers the PATCH itself: a redirect or a
            // proxy from the step's env would send the pod's token
            // elsewhere.
            .max_redirects(0)
            .proxy(None)
            .build()
            .into();
        let body = serde_json::json!({
            "metadata": {"annotations": {format!("{STEP_ANNOTATION_PREFIX}{step}"): report_json}}
        })
        .to_string();
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            // Projected tokens rotate: read it for every attempt.
            let token = std::fs::read_to_string(&self.token_file)
                .map_err(|e| format!("cannot read {}: {e}", self.token_file))?;
            let outcome = agent
                .patch(&self.url)
                .header("Authorization", &format!("Bearer {}", token.trim()))
                .content_type("application/merge-patch+json")
                .send(body.as_bytes());
            let last = match outcome {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    if (200..300).contains(&code) {
                        return Ok(());
                    }
                    if !(code == 409 || code == 429 || code >= 500) {
                        return Err(format!("PATCH {} answered {code}", self.url));
                    }
                    format!("PATCH {} answered {code}", self.url)
                }
                Err(e) => format!("PATCH {}: {e}", self.url),
            };
            if start.elapsed() + backoff > self.deadline {
                return Err(format!("{last} (gave up after {:?})", start.elapsed()));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
