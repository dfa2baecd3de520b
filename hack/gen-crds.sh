#!/usr/bin/env bash
# Regenerates crds/ from the Rust types (controller/api/src/v1.rs).
# hack/test.sh fails when crds/ is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p tektite-api --bin tektite-crdgen -- crds
