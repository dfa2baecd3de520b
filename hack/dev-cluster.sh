#!/usr/bin/env bash
# A stand-in Kubernetes on this machine, for trying `tkt --cluster` and the
# controller without a cluster: the fake API server with podman as its
# kubelet (tektite-devcluster), the real tektite-controller, and crds/.
# It is not a cluster: no admission, scheduling or validation, and no
# authentication of its own API (README, "A dev cluster"); it answers
# TokenReviews and SubjectAccessReviews, for the log archive's server.
#
#   hack/dev-cluster.sh up     builds and starts it; the last line printed is
#                              `export KUBECONFIG=…`
#   hack/dev-cluster.sh down   stops everything `up` started (and its pods)
#
# State lives in $TEKTITE_DEV_CLUSTER (default: tektite-dev-cluster in
# $XDG_RUNTIME_DIR, else /tmp/tektite-dev-cluster-$UID), a directory of this
# user's only. Its API server has no authentication: anyone on this machine
# who can reach loopback can create pods that podman runs as this user.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TEKTITE_DEV_CLUSTER:-${XDG_RUNTIME_DIR:-/tmp}/tektite-dev-cluster-$(id -u)}
# The pid files say what `down` kills: the directory must be ours alone.
mkdir -p "$(dirname "$dir")"
[ -d "$dir" ] || mkdir -m 700 "$dir"
if [ "$(stat -c %u "$dir")" != "$(id -u)" ] || [ -n "$(find "$dir" -maxdepth 0 -perm /077)" ]; then
  echo "dev-cluster: $dir is not this user's alone (owner and mode 700 needed)" >&2
  exit 1
fi

stop() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case "${1:-}" in
up)
  if [ -f "$dir/apiserver.pid" ] && kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
    echo "dev-cluster: already up (hack/dev-cluster.sh down first)" >&2
    echo "export KUBECONFIG=$dir/kubeconfig"
    exit 0
  fi
  cargo build --quiet --locked -p tektite-devcluster -p tektite-controller
  # The images pods run (busybox, the step wrapper): hack/images.sh.
  for image in localhost/tektite/busybox:latest localhost/tektite/entrypoint:latest; do
    podman image exists "$image" || {
      echo "dev-cluster: image $image is missing: run hack/setup-podman.sh and hack/images.sh" >&2
      exit 1
    }
  done
  rm -f "$dir/url"
  setsid target/debug/tektite-devcluster --dir "$dir" --crds crds >"$dir/url" 2>"$dir/apiserver.log" &
  echo $! >"$dir/apiserver.pid"
  for _ in $(seq 1 100); do
    [ -s "$dir/url" ] && break
    kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null || {
      cat "$dir/apiserver.log" >&2
      exit 1
    }
    sleep 0.1
  done
  [ -s "$dir/url" ] || { echo "dev-cluster: the API server did not start" >&2; exit 1; }
  # Logs are archived in $dir/archive and served on a free loopback port
  # (tkt finds it in the ConfigMap tektite/tektite-logs).
  logs_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  KUBECONFIG="$dir/kubeconfig" setsid target/debug/tektite-controller \
    --namespace tektite --identity dev-cluster \
    --metrics-addr 127.0.0.1:0 \
    --entrypoint-image localhost/tektite/entrypoint:latest \
    --shell-image localhost/tektite/busybox:latest \
    --log-archive "file://$dir/archive" \
    --logs-addr "127.0.0.1:$logs_port" --logs-url "https://127.0.0.1:$logs_port" \
    </dev/null >"$dir/controller.log" 2>&1 &
  echo $! >"$dir/controller.pid"
  echo "dev-cluster: API server $(cat "$dir/url"), controller log $dir/controller.log" >&2
  echo "export KUBECONFIG=$dir/kubeconfig"
  ;;
down)
  stop "$dir/controller.pid"
  stop "$dir/apiserver.pid"
  # The pods' directories and claims, the logs and their archive: nothing
  # is left but the last logs of the server and the controller.
  rm -rf "$dir/kubelet" "$dir/archive" "$dir/kubeconfig" "$dir/url"
  echo "dev-cluster: down" >&2
  ;;
*)
  echo "usage: hack/dev-cluster.sh up|down" >&2
  exit 2
  ;;
esac
