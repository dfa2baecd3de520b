//! The http resolver: a document at a URL, at most 1 MiB, with optional
//! basic auth (`http-username`, and the password in Secret
//! `http-password-secret`, key `http-password-secret-key`, default
//! `password`) and an optional `digest` (`sha256:<hex>` or
//! `sha512:<hex>`) the body must have.

use sha2::Digest as _;

use crate::{MAX_DOCUMENT, RefSource, Request, Resolved, Resolvers, Secrets, sha256_hex};

pub(crate) async fn resolve(
    rs: &Resolvers,
    req: &Request,
    secrets: &dyn Secrets,
) -> Result<Resolved, String> {
    req.required(&["url"])?;
    let url = req.param("url").unwrap_or_default();
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("cannot parse url {url}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("url {url} is not a valid http(s) url"));
    }
    let auth = basic_auth(req, secrets)?;
    let want = req
        .param("digest")
        .filter(|d| !d.is_empty())
        .map(parse_digest)
        .transpose()?;
    let key = crate::key(&["http", url]);
    if let Some((alg, hex)) = &want {
        let pinned = crate::key(&["http", url, alg, hex]);
        if let Some(hit) = rs.cache.get("immutable", &pinned) {
            return Ok(hit);
        }
    }
    if rs.options.offline {
        return rs
            .cache
            .get("last", &key)
            .ok_or_else(|| format!("offline, and {url} is not in the cache"));
    }
    let mut get = rs.http.get(parsed);
    if let Some((u, p)) = auth {
        get = get.basic_auth(u, Some(p));
    }
    let mut resp = get
        .send()
        .await
        .map_err(|e| format!("error fetching URL: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "requested URL '{url}' answered HTTP {}",
            resp.status().as_u16()
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("error fetching URL: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(format!(
                "response body exceeds maximum allowed size of {MAX_DOCUMENT} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if let Some((alg, hex)) = &want {
        let got = match alg.as_str() {
            "sha256" => sha256_hex(&body),
            _ => format!("{:x}", sha2::Sha512::digest(&body)),
        };
        if &got != hex {
            return Err(format!(
                "error validating digest: SHA mismatch, expected {hex}, got {got}"
            ));
        }
    }
    let resolved = Resolved {
        source: RefSource {
            uri: Some(url.to_string()),
            digest: [("sha256".to_string(), sha256_hex(&body))].into(),
            entry_point: None,
        },
        data: body,
    };
    if let Some((alg, hex)) = &want {
        rs.cache.put(
            "immutable",
            &crate::key(&["http", url, alg, hex]),
            &resolved,
        );
    }
    rs.cache.put("last", &key, &resolved);
    Ok(resolved)
}

/// The user and password to send, when `http-username` and
/// `http-password-secret` are given (both or neither).
fn basic_auth(req: &Request, secrets: &dyn Secrets) -> Result<Option<(String, String)>, String> {
    let user = req.param("http-username").filter(|u| !u.is_empty());
    let secret = req.param("http-password-secret").filter(|s| !s.is_empty());
    Ok(match (user, secret) {
        (Some(u), Some(s)) => {
            let key = req
                .param("http-password-secret-key")
                .filter(|k| !k.is_empty())
                .unwrap_or("password");
            let password = secrets
                .get(s, key)
                .map_err(|e| format!("cannot get the password: {e}"))?;
            Some((
                u.to_string(),
                String::from_utf8_lossy(&password).into_owned(),
            ))
        }
        (Some(_), None) => {
            return Err(
                "missing required param http-password-secret when using http-username".into(),
            );
        }
        (None, Some(_)) => {
            return Err(
                "missing required param http-username when using http-password-secret".into(),
            );
        }
        (None, None) => None,
    })
}

/// `sha256:<64 hex>` or `sha512:<128 hex>`.
fn parse_digest(d: &str) -> Result<(String, String), String> {
    let bad = |why: String| format!("error validating digest: {why}");
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| bad(format!("invalid digest format: {d}")))?;
    let len = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad(format!("invalid digest algorithm: {alg}"))),
    };
    if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "invalid {alg} digest value, expected length: {len}, got: {}",
            hex.len()
        )));
    }
    Ok((alg.to_string(), hex.to_ascii_lowercase()))
}
