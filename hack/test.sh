#!/usr/bin/env bash
# The one test command (README, .ci/run). On a fresh Debian machine as root it
# installs what is missing, then checks formatting, clippy -D warnings, that
# crds/ matches the Rust types, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# Each step says when it starts, counted from the start: where the time
# of a CI run goes is in its log.
step() { printf '\n==> %s (at %ss)\n' "$*" "$(( $(date +%s) - start ))"; }
# Disk is what a fresh run can run out of: say what there is at the start and
# what the builds took at the end.
disk() { df -h --output=avail,size . | tail -n 1 | awk '{print "disk: " $1 " free of " $2}'; }
# A fresh build gains nothing from incremental compilation, which would add
# gigabytes of caches (a developer's own cargo runs keep it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "packages"
disk
need=()
command -v cc >/dev/null || need+=(gcc)          # mimalloc builds a little C
command -v git >/dev/null || need+=(git)
command -v diff >/dev/null || need+=(diffutils)
command -v file >/dev/null || need+=(file)       # build-entrypoint.sh checks the binary is static
command -v curl >/dev/null || need+=(curl)       # the dev cluster step deletes pods over HTTP
command -v python3 >/dev/null || need+=(python3) # the entrypoint's tests start it with signals blocked
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo --version
if [ "${TEKTITE_SKIP_PODMAN:-}" = 1 ]; then
  echo "TEKTITE_SKIP_PODMAN=1: podman is not set up and its tests do not run"
else
  hack/setup-podman.sh
  # The image lookup tests run a real registry (docker-registry) with
  # htpasswd users (apache2-utils).
  need=()
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

step "the log archive's S3 server"
# The log archive's tests run its S3 backend against moto's S3 server (from
# PyPI, in its own virtualenv) on loopback: hack/s3-server.py.
TEKTITE_S3_PYTHON=$(hack/setup-s3.sh)
export TEKTITE_S3_PYTHON

step "catalog tools"
# The catalog's tools (shellcheck, yamllint, git, promtool, jq, checkov): its lint and
# its real task runs (tests/catalog.rs). Before the images: the tools image
# is built from this machine's git and promtool.
hack/setup-catalog-tools.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "crds/ matches the types"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet --locked -p tektite-api --bin tektite-crdgen -- "$tmp" >/dev/null
if ! diff -r -q crds "$tmp"; then
  echo "crds/ is out of date: run hack/gen-crds.sh and commit the result" >&2
  exit 1
fi

step "static entrypoint (size and RSS budgets)"
hack/build-entrypoint.sh | tee "$tmp/entrypoint.log"
bin=$(tail -n 1 "$tmp/entrypoint.log")

if [ "${TEKTITE_SKIP_PODMAN:-}" != 1 ]; then
  step "local images"
  hack/images.sh "$bin"
  # Debian with cargo, gcc and checkov, for the catalog's tasks on podman
  # (about two minutes on a fresh machine; kept while its recipe is the same).
  hack/image-ci-tools.sh
fi

step "examples validate"
cargo run --quiet --locked -p tektite-cli --bin tkt -- validate -f tests/examples

step "cargo test"
# Libraries, binaries and integration tests (no doctests: the crates have
# none, and benches run with hack/bench.sh).
cargo test --workspace --locked --lib --bins --tests 2>&1 | tee "$tmp/test.log"
if [ "${TEKTITE_SKIP_PODMAN:-}" != 1 ]; then
  step "tkt run on podman again, with the static entrypoint an install has"
  # Above, the debug entrypoint: podman pods keep their init containers and
  # podman starts them. With the static one, tkt places the scripts, makes
  # the pod and starts its containers in step order itself.
  TEKTITE_TEST_ENTRYPOINT=static cargo test --workspace --locked --test run podman:: 2>&1 |
    tee -a "$tmp/test.log"
fi
passed=$(awk '/^test result:/ {s += $4} END {print s+0}' "$tmp/test.log")
failed=$(awk '/^test result:/ {s += $6} END {print s+0}' "$tmp/test.log")

if [ "${TEKTITE_SKIP_PODMAN:-}" != 1 ]; then
  step "the dev cluster, as the README starts it"
  # hack/dev-cluster.sh up, one run through `tkt run --cluster`, down; then
  # nothing of it may be left running.
  export TEKTITE_DEV_CLUSTER="$tmp/dev-cluster"
  trap 'hack/dev-cluster.sh down 2>/dev/null; rm -rf "$tmp"' EXIT
  eval "$(hack/dev-cluster.sh up | tail -n 1)"
  if ! target/debug/tkt run --cluster -f tests/runs/pipeline-flow.yaml >"$tmp/dev.log" 2>&1 ||
    ! grep -q '\[verify : check\] verify sha256:abc built' "$tmp/dev.log"; then
    cat "$tmp/dev.log" "$TEKTITE_DEV_CLUSTER/controller.log" >&2
    echo "tkt run --cluster on the dev cluster failed" >&2
    exit 1
  fi
  # Its pods deleted, its logs come from the archive.
  for pod in $(target/debug/tkt tr list --cluster -o json | python3 -c 'import json,sys; print(" ".join(t["status"]["podName"] for t in json.load(sys.stdin)["items"] if t.get("status", {}).get("podName")))'); do
    curl -sf -X DELETE "$(cat "$TEKTITE_DEV_CLUSTER/url")/api/v1/namespaces/default/pods/$pod" >/dev/null
  done
  if ! target/debug/tkt pr logs --cluster --last >"$tmp/archived.log" 2>&1 ||
    ! grep -q '\[verify : check\] verify sha256:abc built' "$tmp/archived.log"; then
    cat "$tmp/archived.log" "$TEKTITE_DEV_CLUSTER/controller.log" >&2
    echo "tkt pr logs --cluster did not read the log archive" >&2
    exit 1
  fi
  pids=$(cat "$TEKTITE_DEV_CLUSTER"/*.pid)
  hack/dev-cluster.sh down
  unset KUBECONFIG
  for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "hack/dev-cluster.sh down left process $pid running" >&2
      exit 1
    fi
  done
  echo "dev cluster: up, a PipelineRun through tkt run --cluster, its logs from the archive, down"
fi

step "the ci-cd example, as a newcomer runs it"
# README's second command: clone, cargo test and the Checkov scan of the
# sample service on host processes, to Completed.
# The debug tkt that cargo test built: no release build for this alone.
TEKTITE_TKT=$PWD/target/debug/tkt hack/run-cicd-example.sh -o json >"$tmp/cicd.json" 2>"$tmp/cicd.log" || {
  tail -n 40 "$tmp/cicd.log" >&2
  echo "hack/run-cicd-example.sh failed" >&2
  exit 1
}
python3 - "$tmp/cicd.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
cond = [c for c in run["status"]["conditions"] if c["type"] == "Succeeded"][0]
assert (cond["status"], cond["reason"]) == ("True", "Completed"), cond
ran = {t["pipelineTaskName"] for t in run["status"].get("childReferences", [])}
assert {"clone", "test", "iac-scan", "report"} <= ran, ran
print("ci-cd example:", cond["reason"], "with", ", ".join(sorted(ran)))
PY

step "fuzz: the YAML reader and substitution (short, fixed seed)"
# cargo fuzz passes rustc flags that only a nightly compiler takes by name;
# RUSTC_BOOTSTRAP=1 lets this machine's stable one take them. No sanitizer:
# the code is safe Rust; the targets check for panics and for work out of
# proportion to the input. New inputs go to a scratch corpus, not the repo.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
for target in yaml subst; do
  mkdir -p "$tmp/fuzz-$target"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" \
    "$tmp/fuzz-$target" "seeds/$target" -- -seed=1 -runs=20000 -max_len=4096 2>&1 | tail -n 2)
done

echo
disk
du -sh target fuzz/target 2>/dev/null || true
echo "hack/test.sh: all checks passed in $(( $(date +%s) - start ))s"
echo "tests: $passed passed, $failed failed"
