#!/usr/bin/env bash
# Bootstrap the guest base image offline-from-registries: Debian bookworm from
# Debian's package mirror with mmdebstrap, imported into Docker with
# `docker import`. Used when no container registry answers (CI, air-gapped
# hosts). The runtime packages the guest needs are baked in so that
# Dockerfile.guest needs no network for its final stage.
#
# usage: guest/bootstrap-base.sh [TAG]          build and `docker import` (default idagent-base:bookworm)
#        guest/bootstrap-base.sh --tar FILE     only write the root filesystem tarball
#                                               (`idagent image build` imports it through the Engine API)
set -euo pipefail
out_tar=
if [ "${1:-}" = "--tar" ]; then out_tar=${2:?--tar needs a file}; fi
tag=${1:-idagent-base:bookworm}
mirror=${IDAGENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,nodejs,ca-certificates,iptables,iproute2,curl,procps,util-linux,python3-grpcio,python3-httpx,python3-h2
if [ -n "$out_tar" ]; then
  tarball=$out_tar
else
  tarball=$(mktemp --suffix=.tar)
  trap 'rm -f "$tarball"' EXIT
fi
echo "bootstrapping Debian bookworm ($packages) with mmdebstrap from $mirror" >&2
mmdebstrap --variant=minbase --include="$packages" \
  --aptopt='Acquire::Retries "3"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  bookworm "$tarball" "$mirror"
[ -n "$out_tar" ] && exit 0
docker import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
echo "imported $tag" >&2
