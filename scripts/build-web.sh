#!/usr/bin/env bash
# Builds the browser dashboard (web/) into $BUILD/web, where hostcached's
# default --web-dir points (docs/MANAGER.md, Dashboard).
#
#   npm ci      when web/package-lock.json changed since the last one (or
#               web/node_modules is missing): preact, htm, uPlot, and for the
#               build and the tests esbuild and playwright-core, from the npm
#               registry, exactly as the lock file says; no install scripts
#               run.  Nothing is fetched at run time: the daemon serves it all.
#   build.mjs   when a source is newer than the last build: one hashed
#               bundle and stylesheet under assets/, index.html, favicon.svg.
#
# Node.js (>= 18) and npm come from Debian (scripts/setup-deps.sh).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build}
OUT=${WEB_OUT:-$BUILD/web}
WEB=$SRC/web

for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-web: $tool not found; run scripts/setup-deps.sh (Debian's nodejs and npm)" >&2
        exit 1
    fi
done
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
    echo "build-web: node $(node --version) is too old; the dashboard needs 18 or newer" >&2
    exit 1
fi

stamp=$WEB/node_modules/.hostcache-package-lock.json
if ! cmp -s "$WEB/package-lock.json" "$stamp"; then
    echo "build-web: npm ci in web/"
    (cd "$WEB" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    cp "$WEB/package-lock.json" "$stamp"
fi

built=$OUT/.built
if [ -f "$built" ] && [ -f "$OUT/index.html" ] &&
   [ -z "$(find "$WEB/src" "$WEB/index.html" "$WEB/favicon.svg" "$WEB/build.mjs" "$stamp" \
           -newer "$built" -print -quit)" ]; then
    exit 0
fi
(cd "$WEB" && node build.mjs "$OUT")
touch "$built"
