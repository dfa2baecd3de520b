//! Deterministic child names, as Kubernetes controllers make them: the
//! parent's name plus a suffix, shortened with a hash when it would pass the
//! 63-character limit of a label value (and of most object names).

use md5::{Digest, Md5};

/// The longest name a child may have.
pub const MAX: usize = 63;

/// `parent` + `suffix`, at most 63 characters. A longer one keeps the head
/// of `parent`, then the MD5 of `parent` in hex, then `suffix`; when the
/// suffix alone leaves no room, the MD5 of both. Never ends in `-` or `.`
/// before the suffix. Same inputs, same name, every time.
pub fn child(parent: &str, suffix: &str) -> String {
    if parent.len() + suffix.len() <= MAX {
        return format!("{parent}{suffix}");
    }
    let hash_len = 32;
    if suffix.len() + hash_len >= MAX {
        let h = hex(&Md5::digest(format!("{parent}{suffix}").as_bytes()));
        return h.trim_end_matches(['-', '.']).to_string();
    }
    let head = MAX - suffix.len() - hash_len;
    let mut cut = head.min(parent.len());
    while !parent.is_char_boundary(cut) {
        cut -= 1;
    }
    let h = hex(&Md5::digest(parent.as_bytes()));
    let base = format!("{}{h}", &parent[..cut]);
    format!("{}{suffix}", base.trim_end_matches(['-', '.']))
}

/// A short, stable hash of `parts`, for names that must not collide
/// (`pvc-…`), in lowercase hex.
pub fn short_hash(parts: &[&str], len: usize) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut s = hex(&h.finalize());
    s.truncate(len);
    s
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(child("build-run", "-pod"), "build-run-pod");
    }

    #[test]
    fn long_names_are_hashed_to_63() {
        let parent = "a".repeat(70);
        let n = child(&parent, "-pod");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-pod"));
        assert!(n.starts_with(&"a".repeat(27)));
        assert_eq!(n, child(&parent, "-pod"), "deterministic");
        assert_ne!(n, child(&"a".repeat(71), "-pod"));
        let dashed = format!("{}-{}", "b".repeat(26), "c".repeat(50));
        assert!(!child(&dashed, "-pod").contains("--"));
    }
}
