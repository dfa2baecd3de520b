#!/usr/bin/env bash
# Prepares the local images the podman tests and the local runtime use. Base
# images cannot be pulled on these machines, so both are built from files:
#   localhost/tektite/busybox:latest     busybox-static with its applets linked
#   localhost/tektite/entrypoint:latest  the static step wrapper at /ko-app/entrypoint
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
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
tar -C "$root" -cf "$work/busybox.tar" .
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


echo "images: localhost/tektite/busybox:latest localhost/tektite/entrypoint:latest ready"
