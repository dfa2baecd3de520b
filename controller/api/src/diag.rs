//! Diagnostics: problems found in input files, each naming the file, the
//! document, the line, the field path and what was expected.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// How serious a diagnostic is. Only errors make input invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based index of the document in its file (absent for file-level errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// `Kind/name` of the document, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Field path such as `spec.tasks[2].runAfter[0]` (empty for file-level errors).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line: Kind/name (document N): path: message`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(":")?;
        match (&self.object, self.document) {
            (Some(o), Some(d)) => write!(f, " {o} (document {d}):")?,
            (None, Some(d)) => write!(f, " document {d}:")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

/// The work reading and validating does that could grow faster than its
/// input if written carelessly (map keys looked up, cells of the edit
/// distances behind "did you mean"), counted per thread: the tests hold it
/// to a multiple of the input's size.
pub mod cost {
    use std::cell::Cell;

    thread_local! {
        static UNITS: Cell<u64> = const { Cell::new(0) };
        static SUGGESTIONS: Cell<u64> = const { Cell::new(SUGGESTION_BUDGET) };
    }

    /// Edit-distance cells "did you mean" may spend on one document: enough
    /// for thousands of ordinary misspellings, a bound for hostile input
    /// (past it, messages just have no suggestion).
    pub const SUGGESTION_BUDGET: u64 = 4_000_000;

    /// Counts `n` units of work.
    pub fn add(n: u64) {
        UNITS.with(|u| u.set(u.get().saturating_add(n)));
    }

    /// The units counted on this thread so far.
    pub fn units() -> u64 {
        UNITS.with(Cell::get)
    }

    /// Gives the suggestions of the next document their whole budget.
    pub fn reset_suggestions() {
        SUGGESTIONS.with(|s| s.set(SUGGESTION_BUDGET));
    }

    /// Takes `n` cells from the suggestion budget; false (taking nothing)
    /// when it has fewer left.
    pub(crate) fn spend_suggestion(n: u64) -> bool {
        SUGGESTIONS.with(|s| {
            let left = s.get();
            if left < n {
                return false;
            }
            s.set(left - n);
            add(n);
            true
        })
    }
}

/// Problems shown per document (`tkt validate --max-errors`; 0: all). A
/// file with thousands of mistakes gets the first of them and a count of
/// the rest, not output many times its size.
static MAX_PER_DOCUMENT: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_PER_DOCUMENT);

/// The default of [`set_max_per_document`].
pub const DEFAULT_MAX_PER_DOCUMENT: usize = 100;

/// Sets how many problems of one document are kept (0: all).
pub fn set_max_per_document(n: usize) {
    MAX_PER_DOCUMENT.store(n, Ordering::Relaxed);
}

/// How many problems of one document are kept (0: all).
pub fn max_per_document() -> usize {
    MAX_PER_DOCUMENT.load(Ordering::Relaxed)
}

/// Counts the problems of one document and says which are kept.
#[derive(Debug)]
pub struct Cap {
    max: usize,
    kept: usize,
    left_out: usize,
}

impl Default for Cap {
    fn default() -> Cap {
        Cap {
            max: max_per_document(),
            kept: 0,
            left_out: 0,
        }
    }
}

impl Cap {
    /// Whether the next problem is kept (counted either way).
    pub fn admit(&mut self) -> bool {
        if self.max != 0 && self.kept >= self.max {
            self.left_out += 1;
            return false;
        }
        self.kept += 1;
        true
    }

    /// The line that stands for the problems left out, if any.
    pub fn summary(&self) -> Option<String> {
        (self.left_out > 0).then(|| {
            format!(
                "{} more problem(s) in this document not shown (the first {} are; --max-errors 0 shows all)",
                self.left_out, self.max
            )
        })
    }
}

/// Keeps the first problems of one document, those `diags` holds from
/// `start` on, as [`Cap`] does, with one line for the rest.
pub fn cap_from(diags: &mut Vec<Diagnostic>, start: usize) {
    let mut cap = Cap::default();
    let mut kept = start;
    for i in start..diags.len() {
        if cap.admit() {
            diags.swap(kept, i);
            kept += 1;
        }
    }
    if let Some(summary) = cap.summary() {
        let mut last = diags[start].clone();
        diags.truncate(kept);
        last.severity = Severity::Warning;
        last.line = None;
        last.path = String::new();
        last.message = summary;
        diags.push(last);
    }
}

/// Names longer than this get no suggestion: nobody misspells them, and
/// their edit distance costs the product of the lengths.
const SUGGEST_MAX_LEN: usize = 128;

/// "did you mean" for a misspelt name, when a candidate is close enough.
/// Bounded: long names and candidates are skipped, those whose length
/// alone puts them out of reach are not compared, and each document has a
/// budget of comparisons ([`cost::SUGGESTION_BUDGET`]).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if word.len() > SUGGEST_MAX_LEN {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let reach = (c.len().max(word.len()) / 3).max(1);
        if c.len() > SUGGEST_MAX_LEN || c.len().abs_diff(word.len()) > reach {
            continue;
        }
        if !cost::spend_suggestion((word.len() * c.len()).max(1) as u64) {
            break;
        }
        let d = strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase());
        if d <= reach && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `s` cut to about `max` bytes, its start and its end kept (at character
/// boundaries) and saying how much was left out between: user text quoted
/// in a message (a name, a key, a reference) cannot make each of many
/// messages as big as the input, and what the message says after it stays.
pub fn clip(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut head = max * 2 / 3;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - (max - max * 2 / 3);
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…[{} bytes]…{}", &s[..head], tail - head, &s[tail..]).into()
}

/// Appends ` (did you mean "x"?)` when a suggestion exists.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(
            did_you_mean("runAftr", ["runAfter", "retries"]),
            Some("runAfter")
        );
        assert_eq!(
            did_you_mean("paramz", ["params", "workspaces"]),
            Some("params")
        );
        assert_eq!(did_you_mean("foo", ["params", "workspaces"]), None);
        assert_eq!(did_you_mean("tset", ["test", "build"]), Some("test"));
    }
}
