#!/usr/bin/env bash
# Applies native/fuse-native-open-flags.patch to node_modules/fuse-native (once: re-running is a
# no-op for the patch) and builds the binding from source with npm's bundled node-gyp, so that
# node-gyp-build loads build/Release instead of the unpatched prebuild. Run after `npm ci`.
# Without it the client still works, with the pre-patch page-cache behaviour (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
patch_file="$root/native/fuse-native-open-flags.patch"
pkg="$root/node_modules/fuse-native"
[ -d "$pkg" ] || { echo "build-fuse-native: $pkg is missing (run npm ci first)" >&2; exit 1; }

# GNU patch if present; otherwise git apply, kept from treating the project's repository as its own.
apply() { # apply [--reverse] [--check]
  local reverse="" check=""
  for a in "$@"; do case "$a" in --reverse) reverse=1 ;; --check) check=1 ;; esac; done
  if command -v patch >/dev/null 2>&1; then
    patch -p1 -s -f ${reverse:+-R} ${check:+--dry-run} -d "$pkg" <"$patch_file" >/dev/null
  else
    (cd "$pkg" && GIT_CEILING_DIRECTORIES="$(dirname "$pkg")" git apply -p1 ${reverse:+-R} ${check:+--check} "$patch_file")
  fi
}
if apply --reverse --check 2>/dev/null; then
  echo "build-fuse-native: patch already applied"
elif apply --check 2>/dev/null; then
  apply
  echo "build-fuse-native: patch applied"
else
  echo "build-fuse-native: $patch_file does not apply to $(node -p "require('$pkg/package.json').version" 2>/dev/null || echo '?') in $pkg" >&2
  exit 1
fi

# npm's own node-gyp (npm sets npm_config_node_gyp when it runs scripts); nodedir from npm's config
# (the project's .npmrc says /usr: Debian's node headers, no download).
gyp="${npm_config_node_gyp:-$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js}"
[ -f "$gyp" ] || { echo "build-fuse-native: npm's node-gyp not found at $gyp" >&2; exit 1; }
nodedir="$(npm config get nodedir 2>/dev/null || true)"
args=(rebuild)
if [ -n "$nodedir" ] && [ "$nodedir" != "undefined" ] && [ "$nodedir" != "null" ]; then args+=("--nodedir=$nodedir"); fi
(cd "$pkg" && node "$gyp" "${args[@]}" >"$pkg/build.log" 2>&1) || {
  tail -n 40 "$pkg/build.log" >&2
  echo "build-fuse-native: node-gyp failed (full log: $pkg/build.log)" >&2
  exit 1
}

# The loaded binary must be the patched one: it exports the open flag bits.
node -e "
const Fuse = require('$pkg');
if (typeof Fuse.OPEN_DIRECT_IO !== 'number' || typeof Fuse.OPEN_KEEP_CACHE !== 'number') {
  console.error('build-fuse-native: built, but the binary node loads is not the patched one');
  process.exit(1);
}"
echo "build-fuse-native: built $pkg/build/Release/fuse.node (per-open direct_io/keep_cache)"
