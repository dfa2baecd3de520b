#!/usr/bin/env bash
# Installs the tools the task catalog's checks and real runs use (as root on
# Debian): shellcheck and yamllint (lint), git, promtool (Debian's prometheus
# package), jq, buildah with docker-registry and curl, and checkov from PyPI
# into its own virtualenv (hack/setup-checkov.sh).
# Trivy, cosign, helm and kubectl have no Debian package and cannot be
# fetched here: their tasks are checked with recording stand-ins instead
# (tests/catalog.rs).
# Prints the directory to put on PATH for checkov as its last line.
set -euo pipefail

need=()
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v yamllint >/dev/null || need+=(yamllint)
command -v git >/dev/null || need+=(git)
command -v promtool >/dev/null || need+=(prometheus)
command -v jq >/dev/null || need+=(jq)
command -v buildah >/dev/null || need+=(buildah)                  # buildah-build, for real
command -v docker-registry >/dev/null || need+=(docker-registry)  # ... pushing to loopback
command -v curl >/dev/null || need+=(curl)
command -v kubectl >/dev/null || need+=(kubernetes-client)        # kubectl kustomize of the install manifests
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-catalog-tools: missing ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  # prometheus' service must not start: only promtool is wanted.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

checkov_bin=$("$(dirname "$0")/setup-checkov.sh" | tail -n 1)
echo "setup-catalog-tools: shellcheck $(shellcheck --version | awk '/^version:/ {print $2}'), yamllint $(yamllint --version | awk '{print $2}'), promtool $(promtool --version 2>&1 | awk 'NR==1 {print $3}'), checkov $("$checkov_bin/checkov" --version)"
echo "$checkov_bin"
