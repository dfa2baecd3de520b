#!/usr/bin/env bash
# End to end on a kind cluster (not runnable on our build machines: no
# cluster, no registry access). Builds the controller and entrypoint images,
# creates a kind cluster (or uses KIND_CLUSTER), loads the images, installs
# Tektite with kustomize, runs the PipelineRuns and TaskRuns of tests/runs/
# and tests/examples/, and checks that each ends Succeeded (or, for the runs
# meant to fail, Failed), with `kubectl wait`.
# Needs: docker or podman, kind, kubectl. Usage: hack/e2e-kind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-tektite-e2e}
engine=$(command -v podman || command -v docker)
for tool in kind kubectl "$engine"; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is needed" >&2; exit 1; }
done

echo "==> images"
"$engine" build -t localhost/tektite/controller:latest -f controller/image/Containerfile .
hack/images.sh >/dev/null   # entrypoint and busybox images, from files

echo "==> cluster $cluster"
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
for image in localhost/tektite/controller:latest localhost/tektite/entrypoint:latest localhost/tektite/busybox:latest; do
  archive=$(mktemp)
  "$engine" save -o "$archive" "$image"
  kind load image-archive --name "$cluster" "$archive"
  rm -f "$archive"
done

echo "==> install"
kubectl apply --server-side -k controller/config
kubectl -n tektite rollout status deployment/tektite-controller --timeout=180s

echo "==> runs"
ns=tektite-e2e
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
# Steps report with the namespace's default account: bound to the step role,
# which also puts its pod updates under the step annotation policy.
kubectl -n "$ns" create rolebinding tektite-step-reporter --clusterrole=tektite-step-reporter \
  --serviceaccount="$ns:default" --dry-run=client -o yaml | kubectl apply -f -
failed=0
# Runs whose file says `# e2e: Failed` must fail; the others must succeed.
for f in tests/examples/*.yaml tests/runs/*.yaml; do
  grep -q '^kind: \(PipelineRun\|TaskRun\)' "$f" || { kubectl -n "$ns" apply -f "$f" >/dev/null; continue; }
  want=Succeeded
  grep -q '^# e2e: Failed' "$f" && want=Failed
  name=$(kubectl -n "$ns" create -f "$f" -o name)
  if kubectl -n "$ns" wait "$name" --for="condition=Succeeded=$([ "$want" = Succeeded ] && echo True || echo False)" --timeout=300s >/dev/null; then
    echo "ok: $f ($name $want)"
  else
    echo "FAIL: $f ($name): $(kubectl -n "$ns" get "$name" -o jsonpath='{.status.conditions[0].reason}: {.status.conditions[0].message}')"
    failed=1
  fi
done
exit "$failed"
