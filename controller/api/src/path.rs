//! Field paths such as `spec.tasks[2].runAfter[0]`, used by every error.

use std::fmt;
use std::str::FromStr;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A field path inside one document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(Vec<Seg>);

impl Path {
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    /// This path extended by an index.
    #[must_use]
    pub fn idx(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn segs(&self) -> &[Seg] {
        &self.0
    }

    pub fn starts_with(&self, prefix: &Path) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// Replaces `from` at the start of this path with `to`.
    #[must_use]
    pub fn rebase(&self, from: &Path, to: &Path) -> Self {
        let mut segs = to.0.clone();
        segs.extend_from_slice(&self.0[from.0.len()..]);
        Path(segs)
    }

    pub fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
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
                    segs.push(Seg::Key(q.trim_end_matches('"').to_string()));
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
                segs.push(Seg::Key(r[..end].to_string()));
                rest = &r[end..];
            }
        }
        Ok(Path(segs))
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
