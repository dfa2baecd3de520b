//! Tektite's concurrency annotations on Pipelines and PipelineRuns (Tekton
//! ignores them): their names and the reading of their values, shared by
//! validation (`tkt validate`) and the engine.

use std::collections::BTreeMap;

/// The key runs share: a template over the run's params and context.
pub const KEY: &str = "tektite.dev/concurrency-key";
/// How many runs of a key may run at once (default 1).
pub const LIMIT: &str = "tektite.dev/concurrency-limit";
/// `queue` (the default) or `cancel-in-progress`.
pub const STRATEGY: &str = "tektite.dev/concurrency-strategy";
/// Higher goes first in a queue (default 0).
pub const PRIORITY: &str = "tektite.dev/priority";
/// How many of a run's pipeline tasks may run at once.
pub const MAX_PARALLEL_TASKS: &str = "tektite.dev/max-parallel-tasks";

pub const QUEUE: &str = "queue";
pub const CANCEL_IN_PROGRESS: &str = "cancel-in-progress";

/// The longest key (after substitution), in bytes.
pub const MAX_KEY_LEN: usize = 253;

/// A count above zero; `Err` says what was expected.
///
/// # Errors
/// As above.
pub fn positive(v: &str) -> Result<u32, &'static str> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or("a positive integer")
}

/// `queue` or `cancel-in-progress`.
///
/// # Errors
/// Anything else (`Err` says what was expected).
pub fn strategy(v: &str) -> Result<&'static str, &'static str> {
    match v.trim() {
        QUEUE => Ok(QUEUE),
        CANCEL_IN_PROGRESS => Ok(CANCEL_IN_PROGRESS),
        _ => Err("\"queue\" or \"cancel-in-progress\""),
    }
}

/// A priority: any 32-bit integer.
///
/// # Errors
/// Not one (`Err` says what was expected).
pub fn priority(v: &str) -> Result<i32, &'static str> {
    v.trim().parse::<i32>().map_err(|_| "an integer")
}

/// Each annotation of `annotations` that is set to a value it cannot take:
/// its name, its value and what was expected. `max-parallel-tasks` is a
/// run's only (`run`).
pub fn problems(
    annotations: &BTreeMap<String, String>,
    run: bool,
) -> Vec<(&'static str, String, &'static str)> {
    let mut out = Vec::new();
    let mut check = |name: &'static str, ok: fn(&str) -> Result<(), &'static str>| {
        if let Some(v) = annotations.get(name)
            && let Err(expected) = ok(v)
        {
            out.push((name, v.clone(), expected));
        }
    };
    check(LIMIT, |v| positive(v).map(drop));
    check(STRATEGY, |v| strategy(v).map(drop));
    check(PRIORITY, |v| priority(v).map(drop));
    if run {
        check(MAX_PARALLEL_TASKS, |v| positive(v).map(drop));
    }
    out
}
