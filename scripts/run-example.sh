#!/usr/bin/env bash
# The main job: install what is missing, build, and run the example training.
#   scripts/run-example.sh [example arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh --target train_synthetic
"${BUILD_DIR:-build}/examples/train_synthetic" "$@"
