#!/usr/bin/env bash
# The whole test suite: install what is missing, build everything (library, tests, examples,
# benchmarks), then run every ctest test except the long ones labelled stress and large.
# Arguments replace that selection and go to ctest: scripts/test.sh -L stress
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd "${BUILD_DIR:-build}"
if [[ $# -eq 0 ]]; then set -- -LE 'stress|large'; fi
# As many tests at once as there are cores: most are single-threaded processes, and the
# long ones (the consumer build, the fuzzers) then overlap the rest.
ctest --output-on-failure --timeout 1500 --parallel "$(nproc)" "$@"
