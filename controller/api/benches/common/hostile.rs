//! Inputs whose cost once grew faster than their size, generated (shared
//! by `tests/linear.rs` and the `hostile` benchmark): each is a name and
//! its text.

use std::fmt::Write as _;

/// A mapping of `n` keys (about 10 bytes each), the last a duplicate of the
/// first, so the duplicate check runs over every key.
pub fn many_keys(n: usize) -> String {
    let mut s = String::with_capacity(n * 12);
    for i in 0..n {
        let _ = writeln!(s, "k{i}: v");
    }
    s.push_str("k0: again\n");
    s
}

/// A valid Task with `n` labels.
pub fn many_labels(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: labelled\n  labels:\n",
    );
    for i in 0..n {
        let _ = writeln!(s, "    label-{i}: value-{i}");
    }
    s.push_str("spec:\n  steps:\n    - name: s\n      image: alpine\n      script: echo hi\n");
    s
}

/// A Pipeline task passing a param named `a`×`n` to an embedded Task that
/// declares one named `b`×`n` (a misspelling to suggest for), and
/// referring to `$(params.<a…>)` and `$(workspaces.<a…>.path)`.
pub fn long_names(n: usize) -> String {
    let (a, b) = ("a".repeat(n), "b".repeat(n));
    format!(
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: names\nspec:\n  tasks:\n    - name: t\n      params:\n        - name: {a}\n          value: x\n      taskSpec:\n        params:\n          - name: {b}\n        steps:\n          - name: s\n            image: alpine\n            script: echo $(params.{a}) $(workspaces.{a}.path)\n"
    )
}

/// A Task named `a`×`name_len` (an invalid name) whose step refers to an
/// undeclared param `refs` times: every problem names the object.
pub fn many_refs_long_name(name_len: usize, refs: usize) -> String {
    let mut script = String::new();
    for _ in 0..refs {
        script.push_str("$(params.x) ");
    }
    format!(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: {}\nspec:\n  steps:\n    - name: s\n      image: alpine\n      script: \"{script}\"\n",
        "a".repeat(name_len)
    )
}

/// A flow mapping of about `bytes` bytes on one line.
fn flow(bytes: usize) -> String {
    let mut map = String::with_capacity(bytes + 32);
    map.push('{');
    let mut i = 0;
    while map.len() < bytes {
        let _ = write!(map, "k{i}: v, ");
        i += 1;
    }
    map.push_str("last: v}");
    map
}

/// A Task whose labels are one flow mapping of about `bytes` bytes on one
/// line.
pub fn flow_map(bytes: usize) -> String {
    format!(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: flow\n  labels: {}\nspec:\n  steps:\n    - name: s\n      image: alpine\n      script: echo hi\n",
        flow(bytes)
    )
}

/// The same flow mapping as a Task's spec, where every key is an unknown
/// field: as many problems as keys.
pub fn flow_map_of_unknown_fields(bytes: usize) -> String {
    format!(
        "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: unknown\nspec: {}\n",
        flow(bytes)
    )
}
