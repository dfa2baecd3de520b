#!/usr/bin/env bash
# Builds the step wrapper as a fully static binary (glibc with crt-static;
# the musl target is not installed here) and checks its budgets:
# statically linked, <= 3 MB stripped, <= 2 MB RSS while waiting.
# Prints the path of the binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the static flags away from build scripts and proc macros;
# a non-PIE static binary is what `file` calls "statically linked".
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --quiet --locked --profile entrypoint -p tektite-entrypoint --bin entrypoint --target "$target"
bin="target/$target/entrypoint/entrypoint"

kind=$(file -b "$bin")
case "$kind" in
  *"statically linked"*) ;;
  *) echo "build-entrypoint: $bin is not static: $kind" >&2; exit 1 ;;
esac
size=$(stat -c %s "$bin")
if [ "$size" -gt 3000000 ]; then
  echo "build-entrypoint: $bin is $size bytes, over the 3 MB budget" >&2
  exit 1
fi

# RSS while waiting for a marker that is written once the figure is read.
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" -wait_file "$dir/out" -termination_path "" -- true &
pid=$!
for _ in $(seq 100); do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$rss" ] && grep -q inotify "/proc/$pid/fdinfo/"* 2>/dev/null && break
  sleep 0.02
done
touch "$dir/out"
wait "$pid"
if [ -z "${rss:-}" ] || [ "$rss" -gt 2048 ]; then
  echo "build-entrypoint: RSS while waiting is ${rss:-unknown} KiB, over the 2 MB budget" >&2
  exit 1
fi
echo "entrypoint: $size bytes, $kind" | cut -c1-120
echo "entrypoint: ${rss} KiB RSS while waiting"
echo "$bin"
