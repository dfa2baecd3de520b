#!/usr/bin/env bash
# Prepares the local images the podman tests and the local runtime use. Base
# images cannot be pulled on these machines, so both are built from files:
#   localhost/tektite/busybox:latest     busybox-static with its applets linked
#   localhost/tektite/entrypoint:latest  the static step wrapper at /ko-app/entrypoint
#   localhost/tektite/tools:latest       busybox plus this machine's git and promtool
#                                        (with their libraries), for the catalog's
#                                        tests on podman; only when both are installed
# Usage: hack/images.sh [ENTRYPOINT_BINARY]  (default: builds it with
# hack/build-entrypoint.sh). Rebuilds both every time; it takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-$(hack/build-entrypoint.sh | tail -n 1)}
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -b "$busybox" | grep -q "statically linked"; then
  echo "images: a static busybox is needed (apt-get install busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# busybox: every applet as a link, /tmp writable, a passwd for non-root users.
root="$work/busybox"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/root"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
tar -C "$root" -cf "$work/busybox.tar" .
cp -a "$root" "$work/tools"
podman import --quiet \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
  --change 'CMD ["/bin/sh"]' \
  "$work/busybox.tar" localhost/tektite/busybox:latest >/dev/null

# entrypoint: only the binary, as Tekton's entrypoint image.
root="$work/entrypoint"
mkdir -p "$root/ko-app"
cp "$bin" "$root/ko-app/entrypoint"
tar -C "$root" -cf "$work/entrypoint.tar" .
podman import --quiet \
  --change 'ENTRYPOINT ["/ko-app/entrypoint"]' \
  --change "LABEL dev.tektite.entrypoint.sha256=$(sha256sum "$bin" | cut -d' ' -f1)" \
  "$work/entrypoint.tar" localhost/tektite/entrypoint:latest >/dev/null

built="localhost/tektite/busybox:latest localhost/tektite/entrypoint:latest"

# tools: the busybox tree plus git and promtool as installed here, each with
# the shared libraries ldd lists, so catalog tasks run on podman offline.
git=/usr/bin/git
promtool=$(command -v promtool || true)
if [ -x "$git" ] && [ -n "$promtool" ]; then
  root="$work/tools"
  add() { # a file and, for programs, the libraries it loads
    mkdir -p "$root$(dirname "$1")"
    cp -a "$1" "$root$1"
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      real=$(readlink -f "$lib")
      mkdir -p "$root$(dirname "$lib")" "$root$(dirname "$real")"
      [ -e "$root$real" ] || cp "$real" "$root$real"
      [ "$lib" = "$real" ] || ln -sf "$real" "$root$lib"
    done
  }
  add "$git"
  add "$promtool"
  mkdir -p "$root/usr/lib" "$root/usr/share/git-core" "$root/home/nonroot"
  cp -a /usr/lib/git-core "$root/usr/lib/"
  cp -a /usr/share/git-core/templates "$root/usr/share/git-core/"
  ldd /usr/lib/git-core/git-remote-http 2>/dev/null | grep -q 'not found' || add /usr/lib/git-core/git-remote-http
  chown 65532:65532 "$root/home/nonroot"
  # Local test repositories are trusted: submodules may use file:// URLs,
  # which git refuses by default.
  printf '[protocol "file"]\n\tallow = always\n' >"$root/etc/gitconfig"
  tar -C "$root" -cf "$work/tools.tar" .
  podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
    --change 'CMD ["/bin/sh"]' \
    "$work/tools.tar" localhost/tektite/tools:latest >/dev/null
  built="$built localhost/tektite/tools:latest"
else
  echo "images: git or promtool missing: localhost/tektite/tools not built (hack/setup-catalog-tools.sh installs them)" >&2
fi

echo "images: $built ready"
