#!/usr/bin/env bash
# Regenerates crds/ from the Rust types (controller/api/src/v1.rs and
# stepaction.rs), and the copies the install manifests use
# (controller/config/crds/: kustomize reads no file outside its directory).
# hack/test.sh fails when either is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p tektite-api --bin tektite-crdgen -- crds
cp crds/*.yaml controller/config/crds/
