#!/usr/bin/env bash
# Installs checkov (the IaC scanner of the checkov-scan task) from PyPI into
# its own virtualenv at $TEKTITE_TOOLS/checkov (default /opt/tektite-tools),
# with python3-venv from Debian when missing (as root). Kept while the
# version is the same. Prints the directory to put on PATH as its last line.
set -euo pipefail

tools=${TEKTITE_TOOLS:-/opt/tektite-tools}
checkov_version=3.2.499

if ! "$tools/checkov/bin/checkov" --version 2>/dev/null | grep -qx "$checkov_version"; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup-checkov: python3 with venv is missing (run as root, or install python3-venv)" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
  fi
  rm -rf "$tools/checkov"
  python3 -m venv "$tools/checkov"
  "$tools/checkov/bin/pip" install --quiet --disable-pip-version-check "checkov==$checkov_version"
fi
echo "setup-checkov: checkov $("$tools/checkov/bin/checkov" --version)" >&2
echo "$tools/checkov/bin"
