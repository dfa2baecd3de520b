//! Timing for the benchmarks (shared by `tektite-api` and `tektite-engine`
//! through `#[path]`): run a closure N times, report min, p50 and p99.

use std::time::{Duration, Instant};

pub struct Stats {
    pub min: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn measure(iters: usize, mut f: impl FnMut()) -> Stats {
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Stats {
        min: times[0],
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Milliseconds with `decimals` places.
pub fn ms(d: Duration, decimals: usize) -> String {
    format!("{:.decimals$}", d.as_secs_f64() * 1000.0)
}
