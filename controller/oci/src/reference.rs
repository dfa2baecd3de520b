//! Image references, parsed and normalized the way Docker does it.

use std::fmt;

use crate::Error;

/// The registry Docker Hub names (`docker.io`, `index.docker.io`) are served from.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed image reference: `registry/repository[:tag][@digest]`.
///
/// Parsing fills in Docker's defaults: `alpine` is
/// `registry-1.docker.io/library/alpine:latest`. When a digest is given it wins
/// over the tag, which is then informational only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Host and optional port of the registry API.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/alpine`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// A pinned `sha256:<64 hex>` manifest digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `image` like `docker pull` does.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] naming the reference and what is wrong with it.
    pub fn parse(image: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: image.to_owned(),
            reason: reason.to_owned(),
        };
        if image.is_empty() {
            return Err(bad("it is empty"));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(bad(
                        "the digest must be sha256:<64 lowercase hex characters>",
                    ));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (image, None),
        };
        // A tag is a `:` after the last `/`; an earlier `:` belongs to a port.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = (1..=128).contains(&tag.len())
                && !tag.starts_with(['.', '-'])
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !valid {
                return Err(bad(
                    "the tag must be 1-128 characters of letters, digits, '_', '.', '-' and not start with '.' or '-'",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((host, path))
                if host.contains(['.', ':'])
                    || host == "localhost"
                    || host != host.to_lowercase() =>
            {
                (host.to_owned(), path.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "docker.io" | "index.docker.io" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if registry.is_empty() || !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be '/'-separated lowercase components of letters, digits and '.', '_', '-'",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The digest if pinned, else the tag: what to ask the registry for.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `s` is `sha256:` followed by 64 lowercase hex characters.
pub(crate) fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[track_caller]
    fn ok(image: &str, want: &str) {
        assert_eq!(
            Reference::parse(image).unwrap().to_string(),
            want,
            "parsing {image}"
        );
    }

    #[test]
    fn normalizes_like_docker() {
        ok("alpine", "registry-1.docker.io/library/alpine:latest");
        ok(
            "docker.io/alpine:3",
            "registry-1.docker.io/library/alpine:3",
        );
        ok(
            "index.docker.io/tekton/pipeline",
            "registry-1.docker.io/tekton/pipeline:latest",
        );
        ok("user/app:v1", "registry-1.docker.io/user/app:v1");
        ok("localhost/app", "localhost/app:latest");
        ok("localhost:5000/a/b:c", "localhost:5000/a/b:c");
        ok("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest");
        ok("ghcr.io/o/r:1.2-x_y", "ghcr.io/o/r:1.2-x_y");
        ok(&format!("gcr.io/app@{D}"), &format!("gcr.io/app@{D}"));
        ok(&format!("host:1/app:v1@{D}"), &format!("host:1/app:v1@{D}"));
        let r = Reference::parse(&format!("host:1/app:v1@{D}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.target()),
            ("host:1", "app", D)
        );
    }

    #[test]
    fn rejects_bad_references_with_a_reason() {
        for (image, reason) in [
            ("", "empty"),
            ("Alpine", "lowercase"),
            ("app:", "tag must"),
            ("app:-x", "tag must"),
            ("app@sha256:abc", "digest must"),
            ("app@md5:0123", "digest must"),
            ("host:5000/", "repository must"),
            ("a//b", "repository must"),
        ] {
            let err = Reference::parse(image).unwrap_err().to_string();
            assert!(
                err.contains(reason) && err.contains(&format!("{image:?}")),
                "{image}: {err}"
            );
        }
    }
}
