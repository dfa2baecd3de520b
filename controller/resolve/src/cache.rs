//! The resolvers' disk cache: a resolved document and its source under a
//! key (a commit, a bundle digest: content that cannot change), and the
//! last answer for a name that can move (a branch, a tag, a URL), which
//! only `--offline` reads.
//!
//! Each entry is one JSON file named by the sha256 of its key, written to
//! a temporary file and renamed into place, so a crash leaves the old entry
//! or the new one, never half of one. An entry that does not read back as
//! what it claims is ignored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{RefSource, Resolved, sha256_hex};

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    data: String,
    source: RefSource,
}

#[derive(Debug)]
pub(crate) struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn path(&self, kind: &str, key: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(kind).join(sha256_hex(key.as_bytes())))
    }

    /// The entry for `key` in `kind` (`immutable` or `last`).
    pub(crate) fn get(&self, kind: &str, key: &str) -> Option<Resolved> {
        let path = self.path(kind, key)?;
        let text = std::fs::read(&path).ok()?;
        let e: Entry = serde_json::from_slice(&text).ok()?;
        (e.key == key).then(|| Resolved {
            data: e.data.into_bytes(),
            source: e.source,
        })
    }

    /// Keeps `r` under `key`; a cache that cannot be written is no error
    /// (the next resolution fetches again).
    pub(crate) fn put(&self, kind: &str, key: &str, r: &Resolved) {
        let Some(path) = self.path(kind, key) else {
            return;
        };
        let Ok(data) = String::from_utf8(r.data.clone()) else {
            return;
        };
        let entry = Entry {
            key: key.to_string(),
            data,
            source: r.source.clone(),
        };
        let Some(dir) = path.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
            return;
        };
        let ok =
            serde_json::to_writer(&mut tmp, &entry).is_ok() && tmp.as_file().sync_all().is_ok();
        if ok {
            let _ = tmp.persist(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_comes_back_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(Some(dir.path().to_path_buf()));
        let r = Resolved {
            data: b"kind: Task\n".to_vec(),
            source: RefSource {
                uri: Some("git+file:///r".into()),
                ..Default::default()
            },
        };
        assert!(c.get("immutable", "k").is_none());
        c.put("immutable", "k", &r);
        assert_eq!(c.get("immutable", "k"), Some(r.clone()));
        assert!(c.get("last", "k").is_none());
        let path = c.path("immutable", "k").unwrap();
        std::fs::write(&path, b"{\"key\": \"k\", \"da").unwrap();
        assert!(c.get("immutable", "k").is_none());
        // No directory: nothing kept, nothing found.
        let none = Cache::new(None);
        none.put("immutable", "k", &r);
        assert!(none.get("immutable", "k").is_none());
    }
}
