#!/usr/bin/env bash
# Configures and builds everything into BUILD_DIR (default: build). Shared by run-example.sh
# and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
"$PWD/scripts/install-deps.sh"
build=${BUILD_DIR:-build}
# ccache: relative paths let a fresh clone (CI) reuse this machine's cache; the sloppiness
# lets it cache compiles that use the tests' precompiled header.
export CCACHE_BASEDIR="$PWD" CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" --parallel "$(nproc)" "$@"
