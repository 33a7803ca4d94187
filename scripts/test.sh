#!/usr/bin/env bash
# The whole test suite: install what is missing, build everything (library, tests, examples,
# benchmarks), then run every ctest test. Extra arguments go to ctest (e.g. -L stress).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 1500 "$@"
