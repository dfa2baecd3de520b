//! Manifests and blobs as content, for Tekton bundles: fetched by digest and
//! checked against it, and pushed (blobs first, then the manifest by tag).

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode};

use crate::{Client, Credentials, Error, Reference, read_limited, sha256, status_error, verify};

/// What a push made: the manifest's digest, and the reference it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:<hex>` of the manifest's bytes.
    pub digest: String,
    /// `registry/repository@sha256:<hex>`.
    pub pinned: String,
}

impl Client {
    /// The manifest `image` names (its tag resolved, or its digest as given):
    /// its digest and bytes, checked against that digest. An index is
    /// returned as it is; the caller decides what it accepts.
    ///
    /// # Errors
    /// See [`Error`]; a reference that does not parse sends nothing.
    pub async fn manifest_of(
        &self,
        image: &str,
        creds: Option<&Credentials>,
    ) -> Result<(Reference, String, Vec<u8>), Error> {
        let r = Reference::parse(image)?;
        let digest = match &r.digest {
            Some(d) => d.clone(),
            None => self.resolve_tag(&r, creds).await?,
        };
        let (_, _, bytes) = self.manifest(&r, &digest, creds).await?;
        Ok((r, digest, bytes))
    }

    /// The blob `digest` of `r`'s repository, at most `limit` bytes, checked
    /// against its digest.
    ///
    /// # Errors
    /// See [`Error`]; [`Error::DigestMismatch`] for content that is not
    /// what its digest says, [`Error::Invalid`] past `limit`.
    pub async fn blob(
        &self,
        r: &Reference,
        digest: &str,
        limit: usize,
        creds: Option<&Credentials>,
    ) -> Result<Vec<u8>, Error> {
        let resp = self
            .send(r, Method::GET, &format!("blobs/{digest}"), creds)
            .await?;
        let url = resp.url().to_string();
        let bytes = read_limited(resp, &url, limit).await?;
        verify(r, "blob", digest, &bytes)?;
        Ok(bytes)
    }

    /// Uploads `bytes` as a blob of `r`'s repository (a monolithic upload),
    /// unless the registry has it already; returns its digest.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn push_blob(
        &self,
        r: &Reference,
        bytes: &[u8],
        creds: Option<&Credentials>,
    ) -> Result<String, Error> {
        let digest = sha256(bytes);
        let head = self
            .send(r, Method::HEAD, &format!("blobs/{digest}"), creds)
            .await;
        if head.is_ok() {
            return Ok(digest);
        }
        let start = self
            .send_to(r, Method::POST, self.url(r, "blobs/uploads/"), None, creds)
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            let url = start.url().to_string();
            return Err(status_error(r, &url, start).await);
        }
        let location = start
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Invalid {
                url: start.url().to_string(),
                what: "upload answer",
                reason: "it has no Location header".into(),
            })?;
        // Relative to the registry, or absolute; the digest goes in the query.
        let mut url = start.url().join(location).map_err(|e| Error::Invalid {
            url: start.url().to_string(),
            what: "upload location",
            reason: e.to_string(),
        })?;
        url.query_pairs_mut().append_pair("digest", &digest);
        self.send_to(
            r,
            Method::PUT,
            url.to_string(),
            Some((bytes, "application/octet-stream")),
            creds,
        )
        .await?;
        Ok(digest)
    }

    /// Puts `manifest` (of `media_type`) at `r`'s tag (or digest).
    ///
    /// # Errors
    /// See [`Error`]; [`Error::DigestMismatch`] when the registry answers
    /// with a digest other than that of the bytes sent.
    pub async fn push_manifest(
        &self,
        r: &Reference,
        manifest: &[u8],
        media_type: &str,
        creds: Option<&Credentials>,
    ) -> Result<Pushed, Error> {
        let digest = sha256(manifest);
        let path = format!("manifests/{}", r.target());
        let resp = self
            .send_to(
                r,
                Method::PUT,
                self.url(r, &path),
                Some((manifest, media_type)),
                creds,
            )
            .await?;
        let answered = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        if let Some(a) = answered
            && a != digest
        {
            return Err(Error::DigestMismatch {
                reference: r.to_string(),
                what: "pushed manifest",
                expected: digest,
                actual: a.to_owned(),
            });
        }
        Ok(Pushed {
            pinned: format!("{}@{digest}", r.name()),
            digest,
        })
    }
}
