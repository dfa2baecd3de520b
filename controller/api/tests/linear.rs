//! Reading and validating cost what their input is worth, whatever it is:
//! the shapes a fuzzing run found growing faster than their size, made
//! here (not committed as files), each held to
//! - work (`diag::cost`: map keys looked up, edit-distance cells) within
//!   a small multiple of its size, where the quadratic checks did n², and
//! - output (every diagnostic as `tkt validate` prints it) of at most a
//!   few hundred KB, however many problems it has.
//!
//! No wall-clock time is asserted.

// Test helpers panic on setup failures by design.
#![allow(clippy::unwrap_used)]

#[path = "../benches/common/hostile.rs"]
mod hostile;

use tektite_api::diag::cost;
use tektite_api::load_str;
use tektite_api::validate::validate_all;

/// What reading and validating `text` printed (as `tkt validate`) and the
/// work it counted.
fn check(text: &str) -> (String, u64) {
    let before = cost::units();
    let mut loaded = load_str("hostile.yaml", text);
    loaded.diagnostics.extend(validate_all(&loaded.objects));
    let work = cost::units() - before;
    let out: String = loaded
        .diagnostics
        .iter()
        .map(|d| format!("{d}\n"))
        .collect();
    (out, work)
}

/// Work per input byte, with room for what counting does not see.
const WORK_PER_BYTE: u64 = 4;
/// Output allowed whatever the input (100 problems of 2 KB each at most,
/// and a summary).
const MAX_OUTPUT: usize = 256 << 10;

fn bounded(what: &str, text: &str, out: &str, work: u64) {
    let size = text.len() as u64;
    assert!(
        work <= WORK_PER_BYTE * size,
        "{what}: {work} units of work for {size} bytes"
    );
    assert!(
        out.len() <= MAX_OUTPUT,
        "{what}: {} bytes of output for {size} bytes of input",
        out.len()
    );
}

/// Regression: each key was compared with every earlier one (100,000 keys:
/// 5·10⁹ comparisons, 25 s).
#[test]
fn regression_duplicate_keys_are_checked_in_quadratic_time() {
    let text = hostile::many_keys(100_000);
    let (out, work) = check(&text);
    assert!(out.contains(r#"invalid YAML: duplicate key "k0""#), "{out}");
    bounded("100,000 keys", &text, &out, work);
}

/// Regression: a valid Task with 50,000 labels took 2.7 s.
#[test]
fn regression_fifty_thousand_labels_take_seconds() {
    let text = hostile::many_labels(50_000);
    let (out, work) = check(&text);
    assert_eq!(out, "", "valid");
    bounded("50,000 labels", &text, &out, work);
}

/// Regression: "did you mean" compared two 75,000-character names cell by
/// cell (5.6·10⁹ cells, 15 s). Long names get no suggestion; the problems
/// are still reported, their names clipped.
#[test]
fn regression_did_you_mean_on_long_names_is_quadratic() {
    let text = hostile::long_names(75_000);
    let (out, work) = check(&text);
    assert!(out.contains("bytes]…"), "long names are clipped");
    assert!(!out.contains("did you mean"));
    bounded("two 75,000-character names", &text, &out, work);
}

/// Regression: 10,000 references in a Task whose name is 100,000
/// characters printed 1 GB (the name in each of 10,000 problems). Now the
/// first 100 problems are shown with the name clipped, and a count of the
/// rest.
#[test]
fn regression_many_problems_under_a_long_name_print_a_gigabyte() {
    let text = hostile::many_refs_long_name(100_000, 10_000);
    let (out, work) = check(&text);
    let lines = out.lines().count();
    assert!(lines <= 102, "{lines} lines");
    assert!(
        out.contains("more problem(s) in this document not shown"),
        "{}",
        &out[out.len().saturating_sub(500)..]
    );
    bounded(
        "10,000 problems under a 100,000-character name",
        &text,
        &out,
        work,
    );
}

/// A 10 MB flow mapping on one line: read in time proportional to it.
#[test]
fn a_ten_megabyte_flow_map_is_read_in_linear_time() {
    let text = hostile::flow_map(10 << 20);
    let (out, work) = check(&text);
    assert_eq!(out, "", "valid");
    bounded("a 10 MB flow map", &text, &out, work);
}

/// The same mapping as a spec of unknown fields: a million problems, of
/// which the first hundred are shown.
#[test]
fn a_million_unknown_fields_print_a_hundred_problems() {
    let text = hostile::flow_map_of_unknown_fields(10 << 20);
    let (out, work) = check(&text);
    assert!(out.contains("more problem(s) in this document not shown"));
    bounded("a 10 MB flow map of unknown fields", &text, &out, work);
}

/// Ordinary input keeps its suggestions.
#[test]
fn suggestions_are_kept_for_ordinary_misspellings() {
    let text = "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: t\nspec:\n  params:\n    - name: revision\n  steps:\n    - name: s\n      image: alpine\n      script: echo $(params.revison)\n";
    let (out, _) = check(text);
    assert!(out.contains(r#"(did you mean "revision"?)"#), "{out}");
}
