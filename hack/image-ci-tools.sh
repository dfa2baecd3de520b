#!/usr/bin/env bash
# Builds localhost/tektite/ci-tools:latest, the image the catalog's tests give
# cargo-test, cargo-build and checkov-scan on podman (no image can be pulled
# here): a Debian bookworm root made with debootstrap from this machine's
# Debian mirror, with cargo, rustc, gcc, git and python3, and checkov from
# PyPI in /opt/checkov (on PATH). About two minutes; skipped when an image
# from the same recipe exists (label dev.tektite.recipe). As root.
set -euo pipefail

image=localhost/tektite/ci-tools:latest
checkov_version=3.2.499
packages=cargo,rustc,gcc,libc6-dev,git,ca-certificates,python3,python3-venv
recipe=$(printf 'bookworm minbase %s checkov==%s v1' "$packages" "$checkov_version" | sha256sum | cut -c1-16)
if [ "$(podman image inspect --format '{{index .Config.Labels "dev.tektite.recipe"}}' "$image" 2>/dev/null)" = "$recipe" ]; then
  echo "image-ci-tools: $image is up to date"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "image-ci-tools: debootstrap needs root" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
# The mirror apt uses here (deb822 or one-line sources), else Debian's own.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian

root=$(mktemp -d /var/tmp/tektite-ci-tools.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"
# pip inside the root trusts what this machine trusts (a proxy's CA, say).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" python3 -m venv /opt/checkov
chroot "$root" env -u PIP_FIND_LINKS PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
  /opt/checkov/bin/pip install --quiet "checkov==$checkov_version"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/root/.cache
tar -C "$root" -cf - . | podman import --quiet \
  --change 'ENV PATH=/opt/checkov/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "LABEL dev.tektite.recipe=$recipe" \
  --change 'CMD ["/bin/sh"]' \
  - "$image" >/dev/null
echo "image-ci-tools: $image built ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
