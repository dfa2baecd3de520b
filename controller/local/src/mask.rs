//! Secret values hidden from what `tkt` shows and keeps: step logs (on the
//! screen and in the store), records, `-o json|yaml`.
//!
//! Every occurrence of a Secret's value, and of each line of a value of
//! several lines, becomes `***`, as CI systems mask their secrets. Values
//! shorter than [`MIN_LEN`] bytes are not masked: a value of one or two
//! characters would turn every log into stars and hide nothing worth
//! hiding (Azure Pipelines' agent and google-github-actions skip short
//! values the same way). Logs are masked a line at a time, after the
//! lines are put together from the container's writes, so a value written
//! in two pieces is still found, and so is one that straddles two pieces
//! of a line longer than [`crate::logs::MAX_LINE`] (the end of a piece
//! waits for the next).

use std::borrow::Cow;

use serde_json::Value;

/// The shortest value that is masked, in bytes.
pub const MIN_LEN: usize = 4;

/// What a masked value becomes.
pub const MASK: &[u8] = b"***";

/// The values to hide, longest first (so that a value containing another
/// is hidden whole).
#[derive(Clone, Default)]
pub struct Masker {
    values: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} values)", self.values.len())
    }
}

impl Masker {
    /// A masker of `values` (and of each of their lines).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        let mut all: Vec<Vec<u8>> = Vec::new();
        for v in values {
            let trimmed = v.strip_suffix(b"\n").unwrap_or(v);
            let lines = trimmed.split(|b| *b == b'\n');
            for part in std::iter::once(trimmed).chain(lines) {
                let part = part.strip_suffix(b"\r").unwrap_or(part);
                if part.len() >= MIN_LEN && !all.iter().any(|x| x == part) {
                    all.push(part.to_vec());
                }
            }
        }
        all.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Masker { values: all }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `bytes` with every value replaced by `***`.
    pub fn mask<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        if self.values.is_empty() || !self.values.iter().any(|v| contains(bytes, v)) {
            return Cow::Borrowed(bytes);
        }
        Cow::Owned(self.mask_until(bytes, bytes.len()).0)
    }

    /// `bytes` masked up to where a value could still begin here and end
    /// in bytes yet to come: the masked part, and where it ends in `bytes`
    /// (what follows is for the caller to mask with what comes next).
    pub fn mask_prefix(&self, bytes: &[u8]) -> (Vec<u8>, usize) {
        let longest = self.values.first().map_or(0, Vec::len);
        let limit = bytes.len().saturating_sub(longest.saturating_sub(1));
        self.mask_until(bytes, limit)
    }

    /// `bytes` with every value that starts before `limit` replaced by
    /// `***` (a value may run past `limit`), up to there: the masked bytes
    /// and where they end in `bytes`.
    fn mask_until(&self, bytes: &[u8], limit: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(limit);
        let mut i = 0;
        while i < limit {
            match self.values.iter().find(|v| bytes[i..].starts_with(v)) {
                Some(v) => {
                    out.extend_from_slice(MASK);
                    i += v.len();
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        (out, i)
    }

    /// `text` masked.
    pub fn mask_str<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.mask(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
        }
    }

    /// Every string of `v` masked (keys too).
    pub fn mask_json(&self, v: &mut Value) {
        if self.values.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Cow::Owned(m) = self.mask_str(s) {
                    *s = m;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.mask_json(i)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut item) in entries {
                    self.mask_json(&mut item);
                    map.insert(self.mask_str(&k).into_owned(), item);
                }
            }
            _ => {}
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_their_lines_are_masked_short_ones_are_not() {
        let m = Masker::new([&b"hunter2"[..], b"ab", b"line-one\nline-two\n"]);
        assert_eq!(&*m.mask(b"pw=hunter2 ab"), b"pw=*** ab");
        assert_eq!(&*m.mask(b"x line-two y"), b"x *** y");
        assert_eq!(m.mask_str("nothing here"), "nothing here");
        let mut j = serde_json::json!({"a": ["hunter2!"], "hunter2": 1});
        m.mask_json(&mut j);
        assert_eq!(j, serde_json::json!({"a": ["***!"], "***": 1}));
    }
}
