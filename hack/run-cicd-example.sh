#!/usr/bin/env bash
# The ci-cd pipeline's local path on a fresh machine: installs what it needs
# (git; checkov in a virtualenv, as hack/test.sh does; cargo is the one that
# builds tkt), makes the sample service (tests/catalog/sample-app) a git
# repository in a temporary directory, builds tkt and the step wrapper, and
# runs tasks/pipelines/ci-cd.yaml on host processes: clone, cargo test and
# the Checkov scan run and the run ends Completed. Build, image scan, sign
# and deploy are skipped (no image repository, signing key or cluster here),
# and the preflight and the final report say why.
# Extra arguments go to `tkt run` (e.g. -o json, -p revision=...);
# TEKTITE_TKT names a tkt binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v git >/dev/null || need+=(git)
command -v cc >/dev/null || need+=(gcc)    # the sample's build script links
command -v file >/dev/null || need+=(file) # build-entrypoint.sh checks the binary is static
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "run-cicd-example: missing ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
  echo "run-cicd-example: cargo is missing: install Rust (https://rustup.rs)" >&2
  exit 1
}
checkov_bin=$(hack/setup-checkov.sh | tail -n 1)

# TEKTITE_TKT: a tkt already built (hack/test.sh passes its debug build,
# so CI does not build a release tkt for this alone).
tkt=${TEKTITE_TKT:-}
if [ -z "$tkt" ]; then
  cargo build --quiet --release --locked -p tektite-cli --bin tkt
  tkt=target/release/tkt
fi
TEKTITE_ENTRYPOINT=$PWD/$(hack/build-entrypoint.sh | tail -n 1)
export TEKTITE_ENTRYPOINT

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r tests/catalog/sample-app "$work/sample"
git -C "$work/sample" init --quiet --initial-branch=main
git -C "$work/sample" add -A
git -C "$work/sample" -c user.name=tektite -c user.email=tektite@example.com \
  commit --quiet -m "sample service"

# The steps run this machine's cargo and checkov: they are on PATH.
PATH="$checkov_bin:$PATH" "$tkt" run --runtime process \
  -f tasks/pipelines/tests/run.yaml -p "repo-url=file://$work/sample" \
  --state-dir "${TEKTITE_EXAMPLE_STATE:-$work/state}" "$@"
