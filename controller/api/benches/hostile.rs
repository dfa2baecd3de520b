//! Validation time per MB of the inputs that once cost more than their
//! size (`benches/common/hostile.rs`), against an ordinary pipeline of
//! about 1 MB measured in the same run (`cargo bench -p tektite-api
//! --bench hostile`; `hack/bench.sh` runs it). What `tkt validate` pays:
//! load, validate, and every diagnostic formatted.

/// The allocator `tkt` uses, so the figures are what users get.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[path = "common/hostile.rs"]
mod hostile;
// Only the median is reported here.
#[allow(dead_code)]
#[path = "common/measure.rs"]
mod measure;

use std::fmt::Write as _;

use measure::{measure, ms};
use tektite_api::load_str;
use tektite_api::validate::validate_all;

/// An ordinary Pipeline of `n` tasks, each with params, a workspace, a
/// `when` and a result passed on (about 250 bytes a task).
fn ordinary(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: big\nspec:\n  params:\n    - name: env\n  workspaces:\n    - name: shared\n  tasks:\n",
    );
    for i in 0..n {
        let input = if i > 0 {
            format!("$(tasks.t{}.results.out)", i - 1)
        } else {
            "seed".into()
        };
        let _ = write!(
            s,
            "    - name: t{i}\n      taskRef:\n        name: unit\n      params:\n        - name: env\n          value: $(params.env)\n        - name: input\n          value: \"{input}\"\n      workspaces:\n        - name: src\n          workspace: shared\n      when:\n        - input: $(params.env)\n          operator: in\n          values: [dev, stage]\n"
        );
    }
    s.push_str("---\napiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: unit\nspec:\n  params:\n    - name: env\n    - name: input\n  workspaces:\n    - name: src\n  results:\n    - name: out\n  steps:\n    - name: run\n      image: alpine\n      script: echo $(params.input) > $(results.out.path)\n");
    s
}

/// Loads, validates and formats every diagnostic; returns the output size.
fn validate(text: &str) -> usize {
    let mut loaded = load_str("bench.yaml", text);
    loaded.diagnostics.extend(validate_all(&loaded.objects));
    loaded
        .diagnostics
        .iter()
        .map(|d| d.to_string().len() + 1)
        .sum()
}

fn main() {
    let mb = |n: usize| n as f64 / (1 << 20) as f64;
    let cases: Vec<(&str, String)> = vec![
        ("ordinary pipeline (baseline)", ordinary(4_000)),
        ("100,000 keys, one duplicate", hostile::many_keys(100_000)),
        ("Task with 50,000 labels", hostile::many_labels(50_000)),
        ("two 75,000-character names", hostile::long_names(75_000)),
        (
            "10,000 problems, 100,000-char name",
            hostile::many_refs_long_name(100_000, 10_000),
        ),
        ("10 MB flow map (labels)", hostile::flow_map(10 << 20)),
        (
            "10 MB flow map (unknown fields)",
            hostile::flow_map_of_unknown_fields(10 << 20),
        ),
    ];
    println!(
        "{:<36} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "input", "MB", "p50 ms", "ms/MB", "× base", "out KB"
    );
    let mut base = None;
    for (name, text) in &cases {
        let out = validate(text);
        let iters = if text.len() > 4 << 20 { 3 } else { 7 };
        let s = measure(iters, || {
            std::hint::black_box(validate(text));
        });
        let per_mb = s.p50.as_secs_f64() * 1000.0 / mb(text.len());
        let base_per_mb = *base.get_or_insert(per_mb);
        println!(
            "{:<36} {:>8.2} {:>9} {:>9.1} {:>9.2} {:>9}",
            name,
            mb(text.len()),
            ms(s.p50, 1),
            per_mb,
            per_mb / base_per_mb,
            out / 1024
        );
    }
}
