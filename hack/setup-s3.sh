#!/usr/bin/env bash
# Installs the S3-compatible server of the log archive's tests (moto's S3,
# from PyPI) in its own virtualenv, and prints the python to start
# hack/s3-server.py with. Kept while the pinned version is installed.
set -euo pipefail
venv="${TEKTITE_S3_VENV:-/opt/tektite-s3}"
version=5.2.6
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$version')" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[s3]==$version" flask flask-cors >&2
echo "$venv/bin/python"
