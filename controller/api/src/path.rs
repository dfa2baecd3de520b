//! Field paths such as `spec.tasks[2].runAfter[0]`, used by every error.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(Cow<'static, str>),
    Index(usize),
}

/// A field path inside one document.
///
/// Validation builds a path for every field it looks at, and almost all of
/// them are thrown away: so a path is a shared linked list (extending it is
/// one small allocation, cloning it none) and literal keys are not copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(Option<Arc<Link>>);

#[derive(Debug, PartialEq, Eq, Hash)]
struct Link {
    parent: Path,
    seg: Seg,
}

impl Path {
    pub fn root() -> Self {
        Self::default()
    }

    fn with(&self, seg: Seg) -> Self {
        Path(Some(Arc::new(Link {
            parent: self.clone(),
            seg,
        })))
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, key: &'static str) -> Self {
        self.with(Seg::Key(Cow::Borrowed(key)))
    }

    /// This path extended by a key that is not a literal.
    #[must_use]
    pub fn key_owned(&self, key: &str) -> Self {
        self.with(Seg::Key(Cow::Owned(key.to_string())))
    }

    /// This path extended by an index.
    #[must_use]
    pub fn idx(&self, i: usize) -> Self {
        self.with(Seg::Index(i))
    }

    /// The last segment, if any.
    pub fn last(&self) -> Option<&Seg> {
        self.0.as_ref().map(|l| &l.seg)
    }

    /// The segments from the root.
    pub fn segs(&self) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut cur = &self.0;
        while let Some(link) = cur {
            out.push(link.seg.clone());
            cur = &link.parent.0;
        }
        out.reverse();
        out
    }

    pub fn starts_with(&self, prefix: &Path) -> bool {
        self.segs().starts_with(&prefix.segs())
    }

    /// Replaces `from` at the start of this path with `to`.
    #[must_use]
    pub fn rebase(&self, from: &Path, to: &Path) -> Self {
        let mut p = to.clone();
        for seg in self.segs().into_iter().skip(from.segs().len()) {
            p.push(seg);
        }
        p
    }

    pub fn push(&mut self, seg: Seg) {
        *self = self.with(seg);
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segs().iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A path string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed field path {0:?}")]
pub struct BadPath(pub String);

impl FromStr for Path {
    type Err = BadPath;

    /// Parses the `Display` form back (used by tests and v1beta1 path maps).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPath(s.to_string());
        let mut segs = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let end = if let Some(quoted) = r.strip_prefix('"') {
                    quoted.find("\"]").map(|e| e + 2).ok_or_else(bad)?
                } else {
                    r.find(']').ok_or_else(bad)?
                };
                let inner = &r[..end];
                if let Some(q) = inner.strip_prefix('"') {
                    segs.push(Seg::Key(Cow::Owned(q.trim_end_matches('"').to_string())));
                } else {
                    segs.push(Seg::Index(inner.parse().map_err(|_| bad())?));
                }
                rest = &r[end + 1..];
            } else {
                let r = rest.strip_prefix('.').unwrap_or(rest);
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return Err(bad());
                }
                segs.push(Seg::Key(Cow::Owned(r[..end].to_string())));
                rest = &r[end..];
            }
        }
        let mut p = Path::root();
        for seg in segs {
            p.push(seg);
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_agree() {
        for s in [
            "spec.tasks[2].runAfter[0]",
            "metadata.labels[\"app.kubernetes.io/name\"]",
            "spec",
        ] {
            let p: Path = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        let p = Path::root().key("spec").key("params").idx(3).key("name");
        assert_eq!(p.to_string(), "spec.params[3].name");
    }
}
