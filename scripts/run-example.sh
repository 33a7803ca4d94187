#!/usr/bin/env bash
# The main job: install what is missing, build, and train the example: a CNN on Fashion-MNIST
# (Debian's dataset-fashion-mnist) with TorchTrainerHook's extensions (examples/mnist).
#   scripts/run-example.sh [mnist arguments]      e.g. --epochs 1 --model mlp; --help lists them
# Run it again after an interruption and it continues from the last snapshot in --out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh --target mnist
exec "${BUILD_DIR:-build}/examples/mnist/mnist" "$@"
