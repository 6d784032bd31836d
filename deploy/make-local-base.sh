#!/usr/bin/env bash
# Build a local stand-in for the Dockerfile's default base image (python:3.11-slim-bookworm) with
# debootstrap and `podman import`, for machines that can reach Debian's archive but no image registry.
#
# Debian bookworm's python3 is 3.11, the same minor version as the default base, so the wheelhouse
# that deploy/container-smoke.sh downloads (cp311 wheels) installs into either.
#
# Usage: sudo deploy/make-local-base.sh [IMAGE_NAME]   (default: localhost/vitserve-base:bookworm)
set -euo pipefail

IMAGE=${1:-localhost/vitserve-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE already exists; remove it with 'podman rmi $IMAGE' to rebuild" >&2
    exit 0
fi

for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y podman runc debootstrap" >&2; exit 1; }
done

root=$(mktemp -d /var/tmp/vitserve-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

# minbase: dpkg, apt, coreutils, passwd (useradd) and no more. python3-venv brings ensurepip, which
# the Dockerfile's builder stage needs to create the virtual environment (python:slim has it too).
# ca-certificates and tzdata match what python:slim ships.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tzdata \
    "$SUITE" "$root" "$MIRROR"

# Same trimming the official slim images do: no apt lists, docs or man pages in the base layer.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*

tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE"
echo "built $IMAGE"
