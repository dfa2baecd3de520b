#!/usr/bin/env bash
# tkt run overhead: a 20-step no-op TaskRun under podman against the same 20
# containers as a hand-written plain pod played by podman (the baseline),
# measured in the same run; and the per-step cost on the process runtime
# (a 20-step TaskRun against a 1-step one). Prints p50/min over N runs.
# Needs podman and the local images (hack/setup-podman.sh, hack/images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-7}
cargo build --quiet --release --locked -p tektite-cli --bin tkt
tkt=target/release/tkt
# The static entrypoint, as an install has it (podman then needs no
# prepare init container).
TEKTITE_ENTRYPOINT=$PWD/$(hack/build-entrypoint.sh | tail -1)
export TEKTITE_ENTRYPOINT
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img=localhost/tektite/busybox:latest
# The run store (its work directories are made and removed by every run):
# BENCH_STATE puts it elsewhere, e.g. on a tmpfs, to see what the file
# system costs.
state=${BENCH_STATE:-$work/state}

taskrun() { # steps
  printf 'apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  generateName: noop-\nspec:\n  taskSpec:\n    steps:\n'
  for i in $(seq "$1"); do printf '      - {name: s%d, image: %s, command: ["true"]}\n' "$i" "$img"; done
}
plainpod() {
  printf 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain-bench\nspec:\n  restartPolicy: Never\n  containers:\n'
  for i in $(seq 20); do printf '    - {name: c%d, image: %s, command: ["true"]}\n' "$i" "$img"; done
}
taskrun 20 >"$work/tr20.yaml"
taskrun 1 >"$work/tr1.yaml"
plainpod >"$work/plain.yaml"

now() { date +%s.%N; }
time_tkt() { # runtime file
  local t0 t1
  t0=$(now)
  "$tkt" run -f "$2" --runtime "$1" --state-dir "$state" >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc
}
time_plain() {
  local t0 t1 names
  names=$(for i in $(seq 20); do printf 'plain-bench-c%d ' "$i"; done)
  t0=$(now)
  pod=$(podman kube play "$work/plain.yaml" 2>/dev/null | sed -n '/^Pod:/{n;p;}')
  # shellcheck disable=SC2086
  podman wait $names >/dev/null 2>&1
  # As tkt does: the pod is removed once podman has stopped its infra
  # container (a `pod rm` while podman is at it waits for seconds).
  timeout 3 podman wait "${pod:0:12}-infra" >/dev/null 2>&1 || true
  podman pod rm --force --time 0 plain-bench >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc
}
# podman finishes a pod's containers in the background (each conmon stays
# for a `podman container cleanup`): each case starts once that is over (at
# most 10 s), not while it takes the CPU of the case after.
settle() {
  for _ in $(seq 100); do
    pgrep -x conmon >/dev/null || pgrep -f 'podman.* container cleanup' >/dev/null || return 0
    sleep 0.1
  done
}
stats() { sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[int((NR+1)/2)], a[1]}'; }

declare -A res
for name in plain podman20 process20 process1; do : >"$work/$name"; done
for _ in $(seq "$N"); do # interleaved, so both see the same machine
  settle
  time_plain >>"$work/plain"
  settle
  time_tkt podman "$work/tr20.yaml" >>"$work/podman20"
  settle
  time_tkt process "$work/tr20.yaml" >>"$work/process20"
  time_tkt process "$work/tr1.yaml" >>"$work/process1"
done
for name in plain podman20 process20 process1; do res[$name]=$(stats <"$work/$name"); done
read -r plain_p50 plain_min <<<"${res[plain]}"
read -r pod_p50 pod_min <<<"${res[podman20]}"
read -r p20_p50 p20_min <<<"${res[process20]}"
read -r p1_p50 p1_min <<<"${res[process1]}"
printf '%-62s %8s %8s\n' "case ($N runs each, seconds)" "p50" "min"
printf '%-62s %8s %8s\n' "plain pod, 20 containers: play+wait+rm (baseline)" "$plain_p50" "$plain_min"
printf '%-62s %8s %8s\n' "tkt run, 20-step TaskRun, podman" "$pod_p50" "$pod_min"
printf '%-62s %8.2f %8.2f\n' "ratio tkt/plain (budget <= 1.15 on both)" \
  "$(echo "$pod_p50 / $plain_p50" | bc -l)" "$(echo "$pod_min / $plain_min" | bc -l)"
printf '%-62s %8s %8s\n' "tkt run, 1-step TaskRun, process runtime (budget <= 0.050)" "$p1_p50" "$p1_min"
printf '%-62s %8s %8s\n' "tkt run, 20-step TaskRun, process runtime" "$p20_p50" "$p20_min"
printf '%-62s %8.1f %8.1f\n' "process runtime: ms per extra step (budget <= 5)" \
  "$(echo "($p20_p50 - $p1_p50) * 1000 / 19" | bc -l)" "$(echo "($p20_min - $p1_min) * 1000 / 19" | bc -l)"
