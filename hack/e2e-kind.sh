#!/usr/bin/env bash
# End to end on a kind cluster (not runnable on our build machines: no
# cluster, no registry access). Builds the controller and entrypoint images,
# creates a kind cluster (or uses KIND_CLUSTER), loads the images, installs
# Tektite with kustomize, runs the PipelineRuns and TaskRuns of tests/runs/
# and tests/examples/, and checks that each ends Succeeded (or, for the runs
# meant to fail, Failed), with `kubectl wait`; then `tkt` against it: run
# with follow, --detach and logs -f, cancel, list, rerun --from-failed.
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

echo "==> tkt against the cluster"
# The dev cluster's tests of tkt (controller/controller/tests/cluster/cli.rs),
# here against a real API server and kubelet.
cargo build --quiet --locked -p tektite-cli --bin tkt
tkt() { target/debug/tkt "$@" -n "$ns"; }
check() { if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; failed=1; fi; }
out=$(tkt run -f tests/runs/pipeline-flow.yaml 2>/dev/null) && rc=0 || rc=$?
check test "$rc" = 0
check grep -q '\[verify : check\] verify sha256:abc built' <<<"$out"
name=$(tkt run --detach -f tests/runs/pipeline-retries.yaml 2>/dev/null)
out=$(tkt pr logs -f "$name") && rc=0 || rc=$?
check test "$rc" = 1
check test "$(grep -c '\[flaky : try\] second attempt' <<<"$out")" = 1
name=$(tkt run --detach -f tests/runs/pipeline-long.yaml 2>/dev/null)
sleep 5
check tkt pr cancel "$name"
kubectl -n "$ns" wait "pipelinerun/$name" --for=condition=Succeeded=False --timeout=120s >/dev/null
check test "$(tkt pr list -o name | grep -c "pipelinerun.tekton.dev/$name")" = 1
name=$(tkt run --detach -f tests/runs/pipeline-rerun.yaml 2>/dev/null)
tkt pr logs -f "$name" >/dev/null || true
out=$(tkt pr rerun "$name" --from-failed 2>/dev/null) && rc=0 || rc=$?
check test "$rc" = 0
check grep -q 'second succeeds' <<<"$out"
check test "$(kubectl -n "$ns" get taskruns -l tekton.dev/pipelineTask=first -o name | wc -l)" -ge 1

echo "==> logs that outlive pods"
# The archive's server is reached through a port-forward (the ConfigMap's
# URL is the in-cluster Service's). kind's kubeconfig signs in with a client
# certificate, which the server cannot check: tkt runs as a service account
# with a token, bound to read the namespace's runs, pods and logs.
name=$(tkt run --detach -f tests/runs/pipeline-flow.yaml 2>/dev/null)
kubectl -n "$ns" wait "pipelinerun/$name" --for=condition=Succeeded --timeout=300s >/dev/null
sleep 3
kubectl -n "$ns" delete pods -l "tekton.dev/pipelineRun=$name" --wait=true >/dev/null
kubectl -n "$ns" create serviceaccount log-reader --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" create role run-reader --verb=get,list,watch \
  --resource=taskruns.tekton.dev,pipelineruns.tekton.dev,pods,pods/log \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kc=$(mktemp)
ca=$(mktemp)
kubectl config view --raw >"$kc"
token=$(kubectl -n "$ns" create token log-reader)
KUBECONFIG=$kc kubectl config set-credentials log-reader --token="$token" >/dev/null
KUBECONFIG=$kc kubectl config set-context --current --user=log-reader >/dev/null
kubectl -n tektite get configmap tektite-logs -o jsonpath='{.data.ca\.crt}' >"$ca"
kubectl -n tektite port-forward svc/tektite-logs 18443:8443 >/dev/null 2>&1 &
pf=$!
sleep 2
as_reader() { TEKTITE_LOGS_URL=https://localhost:18443 TEKTITE_LOGS_CA="$ca" target/debug/tkt --kubeconfig "$kc" "$@" -n "$ns"; }
# The server itself: no token 401, a token not bound to get the TaskRun 403.
tr=$(kubectl -n "$ns" get taskruns -l "tekton.dev/pipelineRun=$name" -o jsonpath='{.items[0].metadata.name}')
url="https://localhost:18443/v1/namespaces/$ns/taskruns/$tr/logs"
check test "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "$url")" = 401
check test "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" -H "Authorization: Bearer $token" "$url")" = 403
kubectl -n "$ns" create rolebinding log-reader --role=run-reader --serviceaccount="$ns:log-reader" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sleep 12   # the server reuses a decision for 10 s
out=$(as_reader pr logs "$name" 2>&1)
check grep -q '\[verify : check\] verify sha256:abc built' <<<"$out"
kill "$pf"
rm -f "$kc" "$ca"
exit "$failed"
