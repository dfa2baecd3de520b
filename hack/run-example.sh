#!/usr/bin/env bash
# The main job on a fresh machine: sets up podman (as root: installs podman,
# runc and busybox-static, writes the containers.conf drop-in), builds the
# local images, builds tkt and runs the sample PipelineRun locally.
# Extra arguments go to `tkt run` (e.g. -o json).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup-podman.sh >/dev/null
command -v file >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file >/dev/null; }
command -v cc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; }
hack/images.sh >/dev/null
cargo build --quiet --release --locked -p tektite-cli --bin tkt
exec target/release/tkt run -f tests/examples/hello-pipelinerun.yaml "$@"
