#!/usr/bin/env bash
# Installs this checkout of cvmfs-ts as a system service (run scripts/setup.sh first: it builds it).
#
#   /usr/bin/cvmfs-ts                        -> <checkout>/bin/cvmfs-ts         (the units' ExecStart)
#   /sbin/mount.cvmfs-ts                     -> <checkout>/bin/mount.cvmfs-ts   (mount -t cvmfs-ts, fstab)
#   /usr/libexec/cvmfs-ts/auto.cvmfs-ts      -> <checkout>/autofs/auto.cvmfs-ts (autofs program map)
#   /etc/systemd/system/cvmfs-ts@.service, cvmfs-ts-snapshotter.service (copies of systemd/)
#   /cvmfs                                   (the mount root)
#   with --autofs: /etc/auto.master.d/cvmfs-ts.autofs (autofs then manages all of /cvmfs)
#
# The programs are symbolic links into the checkout, which must stay where it is (its dist/ and
# node_modules/ are the installation). Units are copied: systemd reads them before any file system
# but the root one may be mounted. Nothing is enabled; see README.md, "Running as a system service".
#
#   scripts/install.sh [--autofs] [--uninstall]
#   DESTDIR=DIR scripts/install.sh   installs below DIR instead of / and reloads nothing (staging, tests)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd -P)
destdir=${DESTDIR:-}
autofs=no
action=install
for arg in "$@"; do
  case $arg in
    --autofs) autofs=yes ;;
    --uninstall) action=uninstall ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

units=(cvmfs-ts@.service cvmfs-ts-snapshotter.service)
# mount(8) looks for helpers in /sbin (/usr/sbin on merged-/usr systems: the same directory).
links=(
  "/usr/bin/cvmfs-ts:$here/bin/cvmfs-ts"
  "/sbin/mount.cvmfs-ts:$here/bin/mount.cvmfs-ts"
  "/usr/libexec/cvmfs-ts/auto.cvmfs-ts:$here/autofs/auto.cvmfs-ts"
)

# Whether a running systemd (or autofs) should be told about changed files.
live() { [ -z "$destdir" ]; }

if [ "$action" = uninstall ]; then
  for l in "${links[@]}"; do rm -f "$destdir${l%%:*}"; done
  rmdir "$destdir/usr/libexec/cvmfs-ts" 2>/dev/null || true
  for u in "${units[@]}"; do rm -f "$destdir/etc/systemd/system/$u"; done
  rm -f "$destdir/etc/auto.master.d/cvmfs-ts.autofs"
  if live && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  echo "install.sh: removed cvmfs-ts from ${destdir:-/} (/cvmfs, /etc/cvmfs and caches are left)"
  exit 0
fi

if [ ! -f "$here/dist/cli/main.js" ] || [ ! -f "$here/dist/cli/mount-helper.js" ]; then
  echo "install.sh: $here is not built; run scripts/setup.sh (or npm ci && npm run build) first" >&2
  exit 1
fi

for l in "${links[@]}"; do
  target=$destdir${l%%:*}
  mkdir -p "$(dirname "$target")"
  ln -sfn "${l#*:}" "$target"
done
install -d "$destdir/etc/systemd/system"
for u in "${units[@]}"; do install -m 0644 "$here/systemd/$u" "$destdir/etc/systemd/system/$u"; done
install -d "$destdir/cvmfs"
if [ "$autofs" = yes ]; then
  install -d "$destdir/etc/auto.master.d"
  install -m 0644 "$here/autofs/cvmfs-ts.autofs" "$destdir/etc/auto.master.d/cvmfs-ts.autofs"
fi

if live; then
  # systemd as PID 1 (not in containers started otherwise): make it read the new units.
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  if [ "$autofs" = yes ] && command -v systemctl >/dev/null && systemctl is-active --quiet autofs 2>/dev/null; then
    systemctl reload autofs
  fi
fi
echo "install.sh: installed cvmfs-ts from $here into ${destdir:-/}"
