#!/usr/bin/env bash
# tkt's memory and time with steps that print a lot, on both runtimes: a
# step printing a few lines (the baseline, measured in the same run), 50 MB
# of short lines, and one line of 32 MB (podman) or 64 MB (process runtime)
# with no newline in it. For each: tkt's peak RSS (VmHWM, sampled every
# 10 ms), wall time, and whether the stored log equals what the step wrote
# byte for byte. Needs podman and the local images for the podman rows.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --locked -p tektite-cli --bin tkt -p tektite-entrypoint --bin entrypoint
tkt=$PWD/target/release/tkt
export TEKTITE_ENTRYPOINT=$PWD/target/release/entrypoint
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

taskrun() { # name script
  printf 'apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata:\n  generateName: %s-\nspec:\n  taskSpec:\n    steps:\n      - name: s\n        image: localhost/tektite/busybox:latest\n        script: |\n          %s\n' "$1" "$2"
}
taskrun few 'seq 1 10' >"$work/few.yaml"
taskrun lines 'seq 1 6900000' >"$work/lines.yaml"          # 50 MB
taskrun line32 'head -c 33554432 /dev/zero | tr "\0" x' >"$work/line32.yaml"
taskrun line64 'head -c 67108864 /dev/zero | tr "\0" x' >"$work/line64.yaml"

expected() { # case
  case $1 in
    few) seq 1 10 ;;
    lines) seq 1 6900000 ;;
    line32) head -c 33554432 /dev/zero | tr '\0' x ;;
    line64) head -c 67108864 /dev/zero | tr '\0' x ;;
  esac
}

measure() { # runtime case
  local state="$work/state-$1-$2" t0 t1 pid peak=0 hwm log same
  t0=$(date +%s.%N)
  "$tkt" run -f "$work/$2.yaml" --runtime "$1" --state-dir "$state" >/dev/null 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    sleep 0.01
  done
  wait "$pid"
  t1=$(date +%s.%N)
  log=$(find "$state/logs" -name step-s.log)
  if cmp -s <(expected "$2") "$log"; then same=yes; else same=NO; fi
  printf '%-9s %-44s %9.1f %8.2f %6s\n' "$1" "$3" "$(echo "$peak / 1024" | bc -l)" \
    "$(echo "$t1 - $t0" | bc)" "$same"
}

printf '%-9s %-44s %9s %8s %6s\n' runtime "step output" "RSS MiB" seconds exact
measure process few "a few lines (baseline)"
measure process lines "50 MB of lines"
measure process line64 "one 64 MB line, no newline in it"
if [ "${TEKTITE_SKIP_PODMAN:-}" != 1 ]; then
  measure podman few "a few lines (baseline)"
  measure podman lines "50 MB of lines"
  measure podman line32 "one 32 MB line, no newline in it"
fi
