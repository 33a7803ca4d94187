#!/usr/bin/env bash
# Installs the Debian 12 packages the build, the tests and the benchmarks need. Idempotent and
# quick when everything is present (no apt-get call at all then). Runs apt-get as root, or
# through sudo.
set -euo pipefail

packages=(
  cmake ninja-build g++ ccache pkg-config
  libtorch-dev libfmt-dev nlohmann-json3-dev zlib1g-dev libdeflate-dev
  libgloo-dev  # c10d's ProcessGroupGloo headers (tth/process_group.h)
  # The optimized BLAS that Debian's libtorch recommends (apt skips recommends here), in its
  # OpenMP build as LibTorch's own threads are OpenMP: the example trains 2.4x faster than on
  # the reference BLAS that libtorch-dev pulls in.
  libopenblas0-openmp
  libplplot-dev plplot-driver-cairo  # PlotReport: PNG, SVG and PDF through Cairo
  libcli11-dev dataset-fashion-mnist  # the example: its flags and its default data
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy unzip
  clang libclang-rt-dev  # the libFuzzer target (ctest -L fuzz)
  clang-format git           # the format check (ctest -L format)
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
