#!/usr/bin/env bash
# Vendors the dashboard's one library, uPlot, into host/assets/dashboard/vendor/:
# the pinned release from the npm registry, checked against its published
# integrity, its minified script and stylesheet, and its licence. The host
# embeds these files, so the page works offline and `just run` builds nothing.
#
# Usage: scripts/vendor-dashboard.sh    (run again only to change the version)
set -euo pipefail

readonly PACKAGE=uplot
readonly VERSION=1.6.32
readonly INTEGRITY=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/host/assets/dashboard/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
tarball=$(npm pack --silent "$PACKAGE@$VERSION")
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ $actual != "$INTEGRITY" ]]; then
    echo "vendor-dashboard.sh: $tarball does not match the pinned integrity" >&2
    exit 1
fi
tar xzf "$tarball"
mkdir -p "$dest"
cp package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE "$dest/"
printf '%s@%s %s\n' "$PACKAGE" "$VERSION" "$INTEGRITY" >"$dest/VERSION"
echo "vendor-dashboard.sh: $PACKAGE $VERSION in ${dest#"$root"/}"
