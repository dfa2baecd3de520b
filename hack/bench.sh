#!/usr/bin/env bash
# Runs the benchmarks and prints their tables (figures go in docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
cargo bench -p tektite-api --bench validate
cargo bench -p tektite-api --bench hostile
cargo bench -p tektite-engine --bench plan
cargo bench -p tektite-entrypoint --bench handoff
# 10,000 PipelineRuns at 50/s: about 3.5 minutes (BENCH_RUNS, BENCH_RATE).
cargo bench -p tektite-controller --bench apiserver
# 200 containers logging for 10 s, without and with the log archive.
cargo bench -p tektite-controller --bench archive
# 1,000 queued PipelineRuns over 50 keys (limit 2) drained, against no keys.
cargo bench -p tektite-controller --bench queue
hack/bench-run.sh
hack/bench-logs.sh
hack/build-entrypoint.sh
