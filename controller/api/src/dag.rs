//! The task graph of a Pipeline: edges from `runAfter` and from result
//! references (`$(tasks.a.results.x)` makes the task run after `a`).

use std::collections::HashMap;

use crate::refs;
use crate::v1::PipelineTask;

/// A Pipeline's `tasks` as a graph. Indexes are positions in `tasks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    /// For each task, the tasks it waits for (deduplicated, in first-seen order).
    pub deps: Vec<Vec<usize>>,
    /// A topological order (ties broken by position in `tasks`).
    pub order: Vec<usize>,
}

/// Why a graph could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// The tasks named, in order, depend on each other in a loop; the first
    /// name is repeated at the end.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Names of tasks whose results `task` uses (params, matrix, when, and
/// strings of an embedded spec).
pub fn result_dependencies(task: &PipelineTask) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut visit = |s: &str| {
        for expr in refs::scan(s) {
            if let Ok(parts) = refs::split(expr)
                && let [
                    refs::Part::Name("tasks"),
                    refs::Part::Name(t),
                    refs::Part::Name("results"),
                    ..,
                ] = parts.as_slice()
                && !out.iter().any(|o| o == t)
            {
                out.push((*t).to_string());
            }
        }
    };
    for p in task.params.iter().chain(task.matrix.iter().flat_map(|m| {
        m.params
            .iter()
            .chain(m.include.iter().flat_map(|i| i.params.iter()))
    })) {
        for s in p.value.strings() {
            visit(s);
        }
    }
    for w in &task.when {
        for s in w.input.iter().chain(w.values.iter()).chain(w.cel.iter()) {
            visit(s);
        }
    }
    out
}

/// Builds the graph. Unknown task names in `runAfter` or result references
/// are ignored here (validation reports them).
///
/// # Errors
/// [`DagError::Cycle`] with the tasks of one cycle.
pub fn build(tasks: &[PipelineTask]) -> Result<Dag, DagError> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let mut d: Vec<usize> = Vec::new();
        for name in t.run_after.iter().cloned().chain(result_dependencies(t)) {
            if let Some(&j) = index.get(name.as_str())
                && !d.contains(&j)
            {
                d.push(j);
            }
        }
        if d.contains(&i) {
            return Err(DagError::Cycle(vec![t.name.clone(), t.name.clone()]));
        }
        deps.push(d);
    }
    // Kahn's algorithm; the lowest ready index goes first so the order is stable.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..tasks.len())
        .filter(|&i| waiting[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(tasks.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &k in &dependents[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.push(std::cmp::Reverse(k));
            }
        }
    }
    if order.len() == tasks.len() {
        return Ok(Dag { deps, order });
    }
    Err(DagError::Cycle(find_cycle(tasks, &deps, &waiting)))
}

/// Walks dependencies from a task still waiting until a task repeats.
fn find_cycle(tasks: &[PipelineTask], deps: &[Vec<usize>], waiting: &[usize]) -> Vec<String> {
    let Some(start) = (0..tasks.len()).find(|&i| waiting[i] > 0) else {
        return Vec::new();
    };
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path: Vec<usize> = Vec::new();
    let mut cur = start;
    loop {
        if let Some(&pos) = seen.get(&cur) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            // Report in run order: a -> b means b runs after a.
            cycle.reverse();
            // Start at the task written first, so the message is stable.
            if let Some(min_pos) = (0..cycle.len()).min_by_key(|&k| cycle[k]) {
                cycle.rotate_left(min_pos);
            }
            let first = cycle[0];
            cycle.push(first);
            return cycle.into_iter().map(|i| tasks[i].name.clone()).collect();
        }
        seen.insert(cur, path.len());
        path.push(cur);
        // Only dependencies that are themselves stuck can lead back.
        match deps[cur].iter().find(|&&d| waiting[d] > 0) {
            Some(&next) => cur = next,
            None => return vec![tasks[cur].name.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Param, ParamValue};

    fn task(name: &str, after: &[&str]) -> PipelineTask {
        PipelineTask {
            name: name.into(),
            run_after: after.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn order_follows_run_after_and_results() {
        let mut c = task("c", &[]);
        c.params.push(Param {
            name: "x".into(),
            value: ParamValue::String("$(tasks.b.results.out)".into()),
        });
        let dag = build(&[task("a", &[]), task("b", &["a"]), c]).unwrap();
        assert_eq!(dag.order, vec![0, 1, 2]);
        assert_eq!(dag.deps[2], vec![1]);
    }

    #[test]
    fn cycles_name_their_path() {
        let e = build(&[
            task("a", &["c"]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &[]),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle: a -> b -> c -> a");
        let e = build(&[task("a", &["a"])]).unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle: a -> a");
    }
}
