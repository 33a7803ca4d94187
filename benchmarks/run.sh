#!/usr/bin/env bash
# Runs the benchmarks side by side in one process each (shared machines are noisy: compare
# ratios within a run, not absolute numbers across runs) and prints the comparison table.
#   benchmarks/run.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
json=$(mktemp)
trap 'rm -f "$json"' EXIT
"$build/benchmarks/hook_overhead_benchmark" --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"$json"
/usr/bin/python3 - "$json" <<'PY'
import json, sys
runs = {b["run_name"]: b["real_time"] for b in json.load(open(sys.argv[1]))["benchmarks"]
        if b.get("aggregate_name") == "median"}
step = runs["BM_SmallMlpStep"]
print(f"{'benchmark':32} {'median ns':>12} {'% of an MLP step':>18}")
for name, ns in runs.items():
    print(f"{name:32} {ns:12.0f} {100 * ns / step:17.4f}%")
PY
