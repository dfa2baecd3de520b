//! Load + validate + DAG of generated pipelines (`cargo bench -p tektite-api`).
//!
//! Budget (docs/performance.md): a 1,000-task pipeline in ≤ 20 ms. Rows:
//! - `YAML scanner only` is saphyr-parser's event stream alone, the floor of
//!   any YAML loader built on it;
//! - `YAML to values` is the baseline measured in the same run: the text
//!   turned into JSON values, with nothing checked;
//! - `load YAML` adds the schema check (unknown fields, types) and typed
//!   deserializing; `load YAML+validate+dag` is what `tkt validate` pays;
//! - `API JSON+validate+dag` is what the controller pays for an object the
//!   API server sends (JSON, already schema-checked by the server).
//!
//! The CRD schema of each kind is read once per process; that one-time cost
//! is reported on its own row.

use std::fmt::Write as _;

/// The allocator `tkt` uses, so the figures are what users get.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[path = "common/measure.rs"]
mod measure;

use measure::measure;
use std::time::Instant;

use tektite_api::load::Object;
use tektite_api::v1::Pipeline;
use tektite_api::validate::{Catalog, validate, validate_all};
use tektite_api::{dag, load_str, yaml};

/// A pipeline of `n` tasks in layers of 10: each task runs after one task of
/// the previous layer and uses a result of another; every task has params,
/// a workspace and a `when` guard, and one in ten embeds its Task spec.
fn pipeline(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: big\nspec:\n  params:\n    - name: env\n      default: dev\n  workspaces:\n    - name: shared\n  tasks:\n",
    );
    for i in 0..n {
        let _ = write!(s, "    - name: t{i}\n      taskRef:\n        name: unit\n");
        let _ = write!(
            s,
            "      params:\n        - name: env\n          value: $(params.env)\n        - name: input\n          value: \"{}\"\n",
            if i >= 10 {
                format!("$(tasks.t{}.results.out)", i - 10 + (i % 3))
            } else {
                "seed".into()
            }
        );
        if i >= 10 {
            let _ = writeln!(s, "      runAfter: [t{}]", i - 10);
        }
        let _ = write!(
            s,
            "      workspaces:\n        - name: src\n          workspace: shared\n"
        );
        let _ = write!(
            s,
            "      when:\n        - input: $(params.env)\n          operator: in\n          values: [dev, stage]\n"
        );
    }
    s.push_str(
        "---\napiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: unit\nspec:\n  params:\n    - name: env\n    - name: input\n  workspaces:\n    - name: src\n  results:\n    - name: out\n  steps:\n    - name: run\n      image: registry.local/busybox:1\n      env:\n        - name: INPUT\n          value: $(params.input)\n      script: |\n        echo \"$INPUT $(params.env)\" > $(results.out.path)\n",
    );
    s
}

fn main() {
    let t = Instant::now();
    let warm = load_str("warm.yaml", &pipeline(2));
    assert!(warm.diagnostics.is_empty(), "{:?}", warm.diagnostics);
    let init = t.elapsed();

    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9}",
        "case (tasks)", "iters", "min ms", "p50 ms", "p99 ms"
    );
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9}",
        "schema load (once per kind)",
        1,
        measure::ms(init, 2),
        measure::ms(init, 2),
        measure::ms(init, 2)
    );
    for n in [100, 1000] {
        let text = pipeline(n);
        let iters = if n >= 1000 { 60 } else { 200 };
        let check = load_str("big.yaml", &text);
        assert!(
            check.diagnostics.is_empty(),
            "{:?}",
            &check.diagnostics[..check.diagnostics.len().min(3)]
        );
        assert!(
            validate_all(&check.objects).is_empty(),
            "generated pipeline must be valid"
        );

        let scan = measure(iters, || {
            std::hint::black_box(saphyr_parser::Parser::new_from_str(&text).count());
        });
        let base = measure(iters, || {
            std::hint::black_box(yaml::parse_values(&text).expect("yaml"));
        });
        let load = measure(iters, || {
            std::hint::black_box(load_str("big.yaml", &text));
        });
        let full = measure(iters, || {
            let out = load_str("big.yaml", &text);
            let diags = validate_all(&out.objects);
            let Object::Pipeline(p) = &out.objects[0].object else {
                panic!("pipeline first")
            };
            let graph = dag::build(&p.spec.tasks).expect("acyclic");
            std::hint::black_box((diags, graph));
        });
        // What the controller gets from the API server: JSON objects.
        let Object::Task(task) = &check.objects[1].object else {
            panic!("task second")
        };
        let pipeline_json =
            serde_json::to_string(&check.objects[0].object.to_json()).expect("json");
        let api = measure(iters, || {
            let p: Pipeline = serde_json::from_str(&pipeline_json).expect("pipeline json");
            let object = Object::Pipeline(Box::new(p));
            let mut catalog = Catalog::default();
            catalog.tasks.insert("unit".into(), &task.spec);
            let findings = validate(&object, &catalog);
            assert!(findings.is_empty());
            let Object::Pipeline(p) = &object else {
                unreachable!()
            };
            std::hint::black_box((findings, dag::build(&p.spec.tasks).expect("acyclic")));
        });
        for (name, s) in [
            ("YAML scanner only (floor)", scan),
            ("YAML to values (baseline)", base),
            ("load YAML", load),
            ("load YAML+validate+dag", full),
            ("API JSON+validate+dag", api),
        ] {
            println!(
                "{:<34} {:>7} {:>9} {:>9} {:>9}",
                format!("{name} ({n})"),
                iters,
                measure::ms(s.min, 2),
                measure::ms(s.p50, 2),
                measure::ms(s.p99, 2)
            );
        }
    }
}
