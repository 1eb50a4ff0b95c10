#!/usr/bin/env bash
# Installs everything cvmfs-ts needs on a fresh Debian 12 machine (as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  python3          # shared/tools/treelist.py, the reference listing tool
  attr             # setfattr/getfattr for test trees with extended attributes
  nginx-light      # the documented nginx configuration is tested against the real server
  squid            # proxy tests run a private squid (test/helpers/squid.ts)
  libfuse2 fuse3   # fuse-native's prebuilt binary (client)
  g++ make         # better-sqlite3 compiles from source against Node's headers
  time             # /usr/bin/time measures peak memory of publishes (tests, bench)
  util-linux       # setpriv (tests drop root's file capabilities), mount
  containerd runc  # thin images and the proxy snapshotter run real containers in the tests
  docker-registry  # a private OCI registry on loopback for image ingest/push tests
  skopeo umoci     # build and convert test images offline
  busybox-static   # the test images' userland
  debootstrap iproute2  # bench/container-start builds Debian images and an emulated network
  autofs           # on-demand /cvmfs mounts through the autofs program map (tests run a private automount)
  linux-perf       # bench/fs counts FUSE requests with perf trace points
  libcap2-bin openssl  # setcap/getcap for file-capability layers; token-signing keys and TLS certificates for registry tests
  stargz-snapshotter  # ctr-remote: `images rpull` sends the layer labels remote snapshotters use
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on port 80; our tests run their own on loopback.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
# squid's package starts (and enables) a system squid on port 3128; the tests start their own on free
# loopback ports and never use that one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet squid 2>/dev/null; then
  systemctl disable --now squid >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/squid ] && [ -s /run/squid.pid ] && kill -0 "$(cat /run/squid.pid)" 2>/dev/null; then
  /etc/init.d/squid stop >/dev/null 2>&1 || true
fi
# autofs's package enables a system automount; ours is configured by the administrator (README).
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet autofs 2>/dev/null; then
  systemctl disable --now autofs >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/autofs ] && pgrep -x automount >/dev/null 2>&1; then
  /etc/init.d/autofs stop >/dev/null 2>&1 || true
fi
# docker-registry's package may start a system registry on :5000; the tests start private ones on
# loopback. Only the service's own process (its pid file) is stopped, never other registries.
if [ -x /etc/init.d/docker-registry ] && [ -s /run/docker-registry.pid ] && kill -0 "$(cat /run/docker-registry.pid)" 2>/dev/null; then
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

npm ci --no-audit --no-fund --loglevel=error
# fuse-native with per-open page-cache flags (native/fuse-native-open-flags.patch; see README, revision updates).
bash scripts/build-fuse-native.sh
npm run --silent build
echo "setup: done"
