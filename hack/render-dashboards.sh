#!/usr/bin/env bash
# Renders the Grafana dashboards of controller/config/grafana/ to
# docs/images/dashboard-pipelines.png and dashboard-dora.png, without
# Grafana: a synthetic history of the controller's metrics
# (render-dashboards/synth.py) is backfilled into a Prometheus TSDB with
# promtool, with the recording rules of controller/config/prometheus/dora.yaml
# and the ALERTS of alerts.yaml; a Prometheus server on 127.0.0.1 answers
# every panel's queries (render-dashboards/query.py), a static page draws
# the panels by their gridPos with uPlot (render-dashboards/render.js) and
# headless Chromium takes the picture. A preview for the docs, not part of
# CI; rerunnable, and the same pictures each time (fixed seed and time).
#
#   hack/render-dashboards.sh [pipelines|dora]...
#
# Needs prometheus and promtool (Debian's prometheus package), chromium,
# python3 with PyYAML, npm, and the Inter font (fonts-inter) for Grafana's
# look; as root on Debian it installs what is missing.
# TEKTITE_RENDER_NOW (RFC 3339, default 2026-12-08T16:00:00Z) is the
# dashboards' "now"; TEKTITE_RENDER_WIDTH (1600) the page's width in pixels;
# TEKTITE_RENDER_OUT (docs/images) where the pictures go; TEKTITE_RENDER_TSDB
# a directory to keep the backfilled TSDB in, reused by the next run while
# the time, synth.py, query.py and the rules are the same (a minute saved
# when only the dashboards or the page change).
set -euo pipefail
cd "$(dirname "$0")/.."
here=hack/render-dashboards
now=$(date -u -d "${TEKTITE_RENDER_NOW:-2026-12-08T16:00:00Z}" +%s)
width=${TEKTITE_RENDER_WIDTH:-1600}
out=${TEKTITE_RENDER_OUT:-docs/images}
dashboards=("$@")
((${#dashboards[@]})) || dashboards=(pipelines dora)

need=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
fc-list 2>/dev/null | grep -q 'Inter' || need+=(fonts-inter)
if ((${#need[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "render-dashboards: missing ${need[*]} (Debian packages; run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq
  # prometheus' service must not start: the server is started here, on loopback.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

tmp=$(mktemp -d)
prometheus_pid=
stop_prometheus() {
  if [ -n "$prometheus_pid" ]; then
    kill "$prometheus_pid" 2>/dev/null || true
    wait "$prometheus_pid" 2>/dev/null || true
    prometheus_pid=
  fi
}
trap 'stop_prometheus; rm -rf "$tmp"' EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
printf 'global:\n  scrape_interval: 1m\n' >"$tmp/prometheus.yml"
start_prometheus() {
  prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tsdb" \
    --storage.tsdb.retention.time=10y --web.listen-address="127.0.0.1:$port" >>"$tmp/prometheus.log" 2>&1 &
  prometheus_pid=$!
  for _ in $(seq 120); do
    if curl -sf "$url/-/ready" >/dev/null 2>&1; then
      return
    fi
    if ! kill -0 "$prometheus_pid" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  tail -n 20 "$tmp/prometheus.log" >&2
  echo "render-dashboards: prometheus did not start" >&2
  exit 1
}

step() { printf 'render-dashboards: %s\n' "$*"; }

step "uPlot from npm ($here/package-lock.json)"
(cd "$here" && npm ci --no-audit --no-fund --silent)

backfill() {
  step "synthetic metrics: a day of runs, five weeks of deployments"
  if [ -e "$tsdb" ] && [ ! -e "$tsdb/tektite-render-now" ] && [ -n "$(ls -A "$tsdb")" ]; then
    echo "render-dashboards: $tsdb is not empty and not one of ours: not touching it" >&2
    exit 1
  fi
  rm -rf "$tsdb"
  python3 "$here/synth.py" pipelines "$now" "$tmp/om/pipelines"
  python3 "$here/synth.py" dora "$now" "$tmp/om/dora"
  find "$tmp/om" -name '*.om' -print0 |
    xargs -0 -P "$(nproc)" -I{} promtool tsdb create-blocks-from openmetrics -q {} "$tsdb" >/dev/null

  step "recording rules (dora.yaml) and ALERTS (alerts.yaml), backfilled"
  start_prometheus
  promtool tsdb create-blocks-from rules -q --url "$url" --start $((now - 31 * 86400)) --end "$now" \
    --eval-interval 1m --output-dir "$tmp/rules" controller/config/prometheus/dora.yaml >"$tmp/rules.log" 2>&1 ||
    { cat "$tmp/rules.log" >&2; exit 1; }
  python3 "$here/query.py" alerts "$url" controller/config/prometheus/alerts.yaml $((now - 26 * 3600)) "$now" "$tmp/alerts.om"
  promtool tsdb create-blocks-from openmetrics -q "$tmp/alerts.om" "$tmp/rules" >/dev/null
  stop_prometheus
  mv "$tmp/rules"/* "$tsdb/"
  echo "$stamp" >"$tsdb/tektite-render-now"
}
tsdb=${TEKTITE_RENDER_TSDB:-$tmp/tsdb}
# What the TSDB was made from: reused only when that is the same.
stamp="$now $(cat "$here/synth.py" "$here/query.py" controller/config/prometheus/*.yaml | sha256sum | cut -c1-16)"
if [ "$(cat "$tsdb/tektite-render-now" 2>/dev/null)" != "$stamp" ]; then
  backfill
else
  step "reusing the TSDB in $tsdb"
fi
start_prometheus

mkdir -p "$out"
for name in "${dashboards[@]}"; do
  case $name in
    pipelines) scrape=60 ;;   # the synthetic scrape interval: Grafana's $__rate_interval
    dora) scrape=600 ;;
    *) echo "render-dashboards: no dashboard $name (pipelines, dora)" >&2; exit 2 ;;
  esac
  step "$name: panels queried, page drawn, picture taken"
  page=$tmp/page-$name
  mkdir -p "$page"
  cp "$here/page.html" "$here/style.css" "$here/render.js" \
    "$here/node_modules/uplot/dist/uPlot.iife.min.js" "$here/node_modules/uplot/dist/uPlot.min.css" "$page/"
  height=$(python3 "$here/query.py" panels "$url" "controller/config/grafana/tektite-$name.json" "$now" \
    "$scrape" "$width" "$page/data.js")
  TZ=UTC timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
    --force-device-scale-factor=1 --user-data-dir="$tmp/chromium-$name" --virtual-time-budget=5000 \
    --enable-logging=stderr --v=0 \
    --window-size="$width,$height" --screenshot="$PWD/$out/dashboard-$name.png" \
    "file://$page/page.html" >"$tmp/chromium-$name.log" 2>&1 ||
    { cat "$tmp/chromium-$name.log" >&2; exit 1; }
  # A script error leaves an empty page: say so rather than keep it.
  if grep -q 'CONSOLE.*Uncaught' "$tmp/chromium-$name.log"; then
    grep 'CONSOLE' "$tmp/chromium-$name.log" >&2
    echo "render-dashboards: the page of $name failed to draw" >&2
    exit 1
  fi
  step "$out/dashboard-$name.png (${width}x$height)"
done
