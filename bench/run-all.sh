#!/usr/bin/env bash
# Runs every benchmark of issue 6 end to end and writes bench/results/*.{json,md,svg}:
#   bench/fs.ts                     file system speed of a mount vs local disk (if present)
#   bench/container-start/main.ts   container start times over an emulated 100 Mbit/s, 20 ms link
#
#   sudo bench/run-all.sh                         # everything, default parameters (≤ 30 min here)
#   FS_ARGS="--scale 0.2" CONTAINER_ARGS="--runs 3 --images minbase,python" bench/run-all.sh
#   SKIP_BUILD=1 bench/run-all.sh                 # dist/ is current already
#   SKIP_FS=1 bench/run-all.sh                    # only the container bench
#
# Needs root, FUSE, overlayfs, containerd/runc/ctr, docker-registry, skopeo, debootstrap, iproute2.
# The first run also builds the container images from the Debian mirror (debootstrap + apt-get,
# about 8 minutes, cached in ${BENCH_DIR:-/var/tmp/cvmfs-ts-bench}/images).
#
# Each bench cleans up after itself (also on Ctrl-C); on exit this script additionally removes
# whatever a killed bench could have left: network namespaces, veths, mounts, daemons.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "run-all.sh: needs root (network namespaces, mounts, containerd)" >&2
  exit 1
fi

cleanup() {
  npx ts-node bench/container-start/main.ts --cleanup || true
}
trap cleanup EXIT
trap 'echo "run-all.sh: interrupted" >&2; exit 130' INT TERM

started=$(date +%s)
status=0

if [ -z "${SKIP_BUILD:-}" ]; then
  npm run --silent build || { echo "run-all.sh: npm run build failed" >&2; exit 1; }
fi

if [ -f bench/fs.ts ] && [ -z "${SKIP_FS:-}" ]; then
  echo "== bench/fs ($(date -u +%H:%M:%S))" >&2
  # shellcheck disable=SC2086
  npx ts-node bench/fs.ts ${FS_ARGS:-} || { echo "run-all.sh: bench/fs failed" >&2; status=1; }
fi

echo "== bench/container-start ($(date -u +%H:%M:%S))" >&2
# shellcheck disable=SC2086
npx ts-node bench/container-start/main.ts ${CONTAINER_ARGS:-} || { echo "run-all.sh: bench/container-start failed" >&2; status=1; }

echo "== done in $(( ($(date +%s) - started) / 60 )) min; results in bench/results/" >&2
ls -l bench/results/ >&2
exit $status
