//! Registry credentials and `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::fmt;

/// Username and password for a registry, as a `kubernetes.io/dockerconfigjson`
/// secret holds them (its `auth` field is base64 of `username:password`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a registry asked for in its 401 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` (docker token protocol) and send it as `Bearer`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Send the credentials as HTTP Basic.
    Basic,
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value such as
    /// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`.
    /// Returns `None` for unknown schemes or a Bearer challenge without a realm.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = parse_params(params);
        Some(Self::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        })
    }
}

/// Whether a token may be asked of the Bearer realm `realm` (a URL the
/// registry named) for a registry reached over plain HTTP or not: only over
/// HTTPS, unless the registry itself is reached over plain HTTP (then
/// everything, credentials included, crosses the network in clear anyway:
/// local and test registries). A registry could otherwise send the
/// credentials it is given for its token service to any plain-HTTP URL.
///
/// # Errors
/// Why the realm is refused.
pub(crate) fn realm_allowed(realm: &str, registry_over_http: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(realm).map_err(|e| format!("the realm is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if registry_over_http => Ok(()),
        "http" => Err(
            "refused: a plain-HTTP realm for a registry reached over HTTPS \
             (credentials and tokens go over HTTPS only)"
                .to_owned(),
        ),
        other => Err(format!(
            "refused: the realm's scheme {other:?} is not https"
        )),
    }
}

/// `key=value` or `key="quoted, value"` pairs separated by commas; keys lowercased.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Option<Challenge> {
        Some(Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        })
    }

    #[test]
    fn parses_bearer_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            bearer(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                Some("repository:library/alpine:pull")
            )
        );
        // Commas inside quotes, escapes, odd spacing, case-insensitive scheme and keys, bare tokens.
        assert_eq!(
            Challenge::parse(
                r#"bearer  Realm = "http://127.0.0.1:1/t?a=b" , scope="repository:a/b:pull,push",error="x\"y""#
            ),
            bearer(
                "http://127.0.0.1:1/t?a=b",
                None,
                Some("repository:a/b:pull,push")
            )
        );
        assert_eq!(
            Challenge::parse("Bearer realm=https://r/t,service=s"),
            bearer("https://r/t", Some("s"), None)
        );
    }

    #[test]
    fn parses_basic_and_rejects_the_rest() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=x"), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse(""), None);
    }

    #[test]
    fn realms_are_https_unless_the_registry_is_plain_http() {
        assert_eq!(realm_allowed("https://auth.docker.io/token", false), Ok(()));
        assert_eq!(realm_allowed("https://auth.docker.io/token", true), Ok(()));
        assert_eq!(realm_allowed("http://127.0.0.1:5001/token", true), Ok(()));
        for (realm, plain) in [
            ("http://127.0.0.1:5001/token", false),
            ("HTTP://evil.example/token", false),
            ("file:///etc/passwd", true),
            ("ftp://evil.example/token", true),
            ("evil.example/token", true),
        ] {
            assert!(realm_allowed(realm, plain).is_err(), "{realm}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
