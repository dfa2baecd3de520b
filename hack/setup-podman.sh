#!/usr/bin/env bash
# Installs and configures podman for Tektite's container tests and local runs
# (as root on Debian): podman, runc and busybox-static from apt, then a
# containers.conf drop-in. On these machines cgroups are v1/hybrid, where crun
# fails: runc is the runtime. The default ulimits are set explicitly because
# the inherited ones are refused by runc here.
set -euo pipefail

need=()
command -v file >/dev/null || need+=(file)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
if ! command -v busybox >/dev/null || ! { command -v file >/dev/null && file -b "$(command -v busybox)" | grep -q "statically linked"; }; then
  need+=(busybox-static)
fi
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-podman: missing ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

conf=/etc/containers/containers.conf.d/50-tektite.conf
want='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-podman: cannot write $conf (run as root)" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" >"$conf"
fi

if ! out=$(podman info --format '{{.Host.OCIRuntime.Name}}' 2>&1); then
  echo "setup-podman: podman does not work here: $out" >&2
  exit 1
fi
echo "setup-podman: $(podman --version), runtime $out"
