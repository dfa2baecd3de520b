//! The hub resolver, through the Artifact Hub API: a catalog's Task,
//! Pipeline or StepAction by name and version (or a version constraint,
//! answered with the highest version that meets it).
//!
//! `GET <hub>/api/v1/packages/tekton-<kind>/<catalog>/<name>/<version>`
//! answers JSON whose `data.manifestRaw` is the YAML; the versions come
//! from the same path without the version (`available_versions`).

use serde::Deserialize;

use crate::{MAX_DOCUMENT, RefSource, Request, Resolved, Resolvers, sha256_hex};

pub(crate) async fn resolve(rs: &Resolvers, req: &Request) -> Result<Resolved, String> {
    req.required(&["name", "version"])?;
    let name = req.param("name").unwrap_or_default();
    let kind = req
        .param("kind")
        .filter(|k| !k.is_empty())
        .unwrap_or(req.kind.lower())
        .to_string();
    if !matches!(kind.as_str(), "task" | "pipeline" | "stepaction") {
        return Err(format!("unknown or unsupported resource kind '{kind}'"));
    }
    match req
        .param("type")
        .filter(|t| !t.is_empty())
        .unwrap_or("artifact")
    {
        "artifact" => {}
        "tekton" => {
            return Err("type tekton (Tekton Hub) is not supported: Tekton Hub is shut down; use type artifact (Artifact Hub)".into());
        }
        other => return Err(format!("type must be artifact or tekton, not {other:?}")),
    }
    let catalog = match (
        req.param("catalog").filter(|c| !c.is_empty()),
        kind.as_str(),
    ) {
        (Some(c), _) => c.to_string(),
        (None, "task") => "tekton-catalog-tasks".into(),
        (None, "pipeline") => "tekton-catalog-pipelines".into(),
        (None, _) => return Err(format!("failed to resolve catalog name with kind: {kind}")),
    };
    let base = match req.param("url").filter(|u| !u.is_empty()) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => u,
        Some(u) => {
            return Err(format!(
                "invalid url param: url must use http or https scheme: {u}"
            ));
        }
        None => rs.options.artifact_hub.as_str(),
    };
    let package = format!(
        "{}/api/v1/packages/tekton-{kind}/{catalog}/{name}",
        base.trim_end_matches('/')
    );
    let wanted = req.param("version").unwrap_or_default();
    let last = crate::key(&["hub", &package, wanted]);
    if rs.options.offline {
        return rs
            .cache
            .get("last", &last)
            .ok_or_else(|| format!("offline, and {package} version {wanted} is not in the cache"));
    }
    let version = match Constraint::parse(wanted) {
        Some(c) => pick(rs, &package, &c).await?,
        None => wanted.to_string(),
    };
    let endpoint = format!("{package}/{version}");
    #[derive(Deserialize)]
    struct Answer {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "manifestRaw")]
        manifest_raw: String,
    }
    let body = get(rs, &endpoint).await?;
    let a: Answer = serde_json::from_slice(&body)
        .map_err(|e| format!("{endpoint} answered no package (data.manifestRaw): {e}"))?;
    let data = a.data.manifest_raw.into_bytes();
    if data.len() > MAX_DOCUMENT {
        return Err(format!(
            "{endpoint}: the document is larger than {MAX_DOCUMENT} bytes"
        ));
    }
    let resolved = Resolved {
        source: RefSource {
            uri: Some(endpoint),
            digest: [("sha256".to_string(), sha256_hex(&data))].into(),
            entry_point: None,
        },
        data,
    };
    rs.cache.put("last", &last, &resolved);
    Ok(resolved)
}

/// A GET of at most 4 MiB; a status other than 200 is an error naming it.
async fn get(rs: &Resolvers, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = rs
        .http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("fail to fetch Artifact Hub resource: {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "fail to fetch Artifact Hub resource: requested resource '{url}' not found on hub (HTTP {})",
            resp.status().as_u16()
        ));
    }
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + c.len() > 4 * MAX_DOCUMENT {
            return Err(format!(
                "{url}: the answer is larger than {} bytes",
                4 * MAX_DOCUMENT
            ));
        }
        body.extend_from_slice(&c);
    }
    Ok(body)
}

/// The highest version of the package that meets `c` (prereleases left
/// out), written with three numbers as Artifact Hub names versions.
async fn pick(rs: &Resolvers, package: &str, c: &Constraint) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Package {
        #[serde(default)]
        available_versions: Vec<Version>,
    }
    #[derive(Deserialize)]
    struct Version {
        version: String,
        #[serde(default)]
        prerelease: bool,
    }
    let p: Package = serde_json::from_slice(&get(rs, package).await?)
        .map_err(|e| format!("{package} answered no version list: {e}"))?;
    p.available_versions
        .iter()
        .filter(|v| !v.prerelease)
        .filter_map(|v| Some((numbers(&v.version)?, v)))
        .filter(|(n, _)| c.allows(n))
        .max_by(|a, b| cmp(&a.0, &b.0))
        .map(|(n, _)| {
            let mut n = n;
            n.resize(3, 0);
            format!("{}.{}.{}", n[0], n[1], n[2])
        })
        .ok_or_else(|| format!("no version found for constraint {}", c.text))
}

/// `1.2.3` (a `v` in front allowed) as numbers.
fn numbers(v: &str) -> Option<Vec<u64>> {
    let v = v.trim().trim_start_matches('v');
    let n: Option<Vec<u64>> = v.split('.').map(|p| p.parse().ok()).collect();
    n.filter(|n| !n.is_empty() && n.len() <= 4)
}

fn cmp(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let len = a.len().max(b.len());
    let at = |x: &[u64], i: usize| x.get(i).copied().unwrap_or(0);
    (0..len)
        .map(|i| at(a, i).cmp(&at(b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// A version constraint as Tekton's hub resolver takes it (hashicorp's
/// form): comma-separated `op version`, ops `= != > < >= <= ~>`; a bare
/// version means `=`.
struct Constraint {
    text: String,
    parts: Vec<(String, Vec<u64>)>,
}

impl Constraint {
    fn parse(text: &str) -> Option<Constraint> {
        let mut parts = Vec::new();
        for p in text.split(',') {
            let p = p.trim();
            let op_len = p
                .find(|c: char| c.is_ascii_digit() || c == 'v')
                .unwrap_or(p.len());
            let (op, v) = p.split_at(op_len);
            let op = match op.trim() {
                "" => "=",
                o @ ("=" | "!=" | ">" | "<" | ">=" | "<=" | "~>") => o,
                _ => return None,
            };
            parts.push((op.to_string(), numbers(v)?));
        }
        Some(Constraint {
            text: text.to_string(),
            parts,
        })
    }

    fn allows(&self, v: &[u64]) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        self.parts.iter().all(|(op, want)| {
            let o = cmp(v, want);
            match op.as_str() {
                "=" => o == Equal,
                "!=" => o != Equal,
                ">" => o == Greater,
                "<" => o == Less,
                ">=" => o != Less,
                "<=" => o != Greater,
                // ~> 1.2 allows 1.x from 1.2; ~> 1.2.3 allows 1.2.x from 1.2.3.
                _ => {
                    let keep = want.len().saturating_sub(1).max(1);
                    o != Less && v.get(..keep) == want.get(..keep)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_pick_as_hashicorp_versions_do() {
        let c = |t: &str| Constraint::parse(t).unwrap();
        assert!(c("0.6").allows(&[0, 6, 0]) && !c("0.6").allows(&[0, 6, 1]));
        assert!(c(">= 0.5, < 0.7").allows(&[0, 6, 2]));
        assert!(!c(">= 0.5, < 0.7").allows(&[0, 7, 0]));
        assert!(c("~> 0.6").allows(&[0, 9, 0]) && !c("~> 0.6").allows(&[1, 0, 0]));
        assert!(c("~> 0.6.1").allows(&[0, 6, 5]) && !c("~> 0.6.1").allows(&[0, 7, 0]));
        assert!(!c("~> 0.6.1").allows(&[0, 6, 0]));
        assert!(Constraint::parse("latest").is_none());
        assert_eq!(cmp(&[0, 6], &[0, 6, 0]), std::cmp::Ordering::Equal);
    }
}
