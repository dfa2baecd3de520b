//! Deterministic child names, as Kubernetes controllers make them: the
//! parent's name plus a suffix, shortened with a hash when it would pass the
//! 63-character limit of a label value (and of most object names).

use md5::{Digest, Md5};

/// The longest name a child may have.
pub const MAX: usize = 63;

/// Whether `value` may be a label's value: at most [`MAX`] letters,
/// digits, `-`, `_` or `.`, beginning and ending with a letter or digit
/// (empty aside, which only a label meant to be empty may be).
pub fn is_label_value(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() <= MAX
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// `parent` + `suffix`, at most 63 characters, by Kubernetes' (knative's)
/// rule, so names match the ones Tekton gives: a longer one is the first
/// `31 - len(suffix)` characters of `parent`, the MD5 of `parent` in hex,
/// then `suffix`. A suffix of 31 characters or more: the first 31 of
/// `parent`, the MD5 of both, as much of the suffix as fits, with trailing
/// non-alphanumerics removed. Same inputs, same name, every time.
pub fn child(parent: &str, suffix: &str) -> String {
    const HEAD: usize = 31;
    if parent.len() + suffix.len() <= MAX {
        return format!("{parent}{suffix}");
    }
    let prefix = |n: usize| {
        let mut cut = n.min(parent.len());
        while !parent.is_char_boundary(cut) {
            cut -= 1;
        }
        &parent[..cut]
    };
    if suffix.len() >= HEAD {
        let mut s = format!(
            "{}{}",
            prefix(HEAD),
            hex(&Md5::digest(format!("{parent}{suffix}").as_bytes()))
        );
        if s.len() < MAX {
            s.push_str(&suffix[..(MAX - s.len()).min(suffix.len())]);
        }
        return s
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
    }
    format!(
        "{}{}{suffix}",
        prefix(HEAD - suffix.len()),
        hex(&Md5::digest(parent.as_bytes()))
    )
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
        // The vector Tekton's own tests use.
        let parent = "task-run-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789";
        assert_eq!(
            child(parent, "-pod"),
            "task-run-0123456789-01234560d38957287bb0283c59440df14069f59-pod"
        );
        let n = child(&"a".repeat(70), "-pod-retry1");
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-pod-retry1"));
        assert_ne!(n, child(&"a".repeat(71), "-pod-retry1"));
        let long_suffix = "-".repeat(40);
        assert!(child(&"b".repeat(40), &long_suffix).len() <= 63);
    }
}

/// `<prefix>-` and the first `len` hex digits of the FNV-1a (32-bit) hash
/// of `name` (no leading zeros, right-padded with `0`): Tekton's
/// deterministic volume names (`ws-20573` for workspace `custom`).
pub fn hashed(prefix: &str, name: &str, len: usize) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut hex = format!("{h:x}");
    hex.truncate(len);
    while hex.len() < len {
        hex.push('0');
    }
    format!("{prefix}-{hex}")
}

/// The claim a `volumeClaimTemplate` binding creates: the template's name
/// (or `pvc`), `-`, and 10 hex digits of SHA-256 over the workspace name and
/// the owner's UID, as Tekton names it.
pub fn claim(template_name: Option<&str>, workspace: &str, owner_uid: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(format!("{workspace}{owner_uid}").as_bytes());
    let mut h = hex(&digest);
    h.truncate(10);
    format!(
        "{}-{h}",
        template_name.filter(|n| !n.is_empty()).unwrap_or("pvc")
    )
}

#[cfg(test)]
mod hashed_tests {
    #[test]
    fn tekton_vectors() {
        assert_eq!(super::hashed("ws", "custom", 5), "ws-20573");
        assert_eq!(
            super::hashed("tekton-creds", "multi-creds", 8),
            "tekton-creds-8e736f4e"
        );
        let c = super::claim(None, "source", "uid-1");
        assert!(c.starts_with("pvc-") && c.len() == 14, "{c}");
    }
}
