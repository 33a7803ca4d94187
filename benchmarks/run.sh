#!/usr/bin/env bash
# Runs the benchmarks side by side in one process each (shared machines are noisy: compare
# ratios within a run, not absolute numbers across runs) and prints the comparison tables:
# the hook's per-iteration overhead, what a snapshot costs against a raw write+fsync, what a
# resume costs in memory (resume_memory.cpp), and the MNIST example's training speed against
# Python PyTorch's (mnist_bench.sh).
#   benchmarks/run.sh [BUILD_DIR]
# Snapshot files go to $TTH_BENCH_DIR, else to fresh directories under /var/tmp (not /tmp,
# which may be a tmpfs). TTH_BENCH_REPETITIONS (default 5) sets the snapshot repetitions.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
json=$(mktemp)
snapshot_json=$(mktemp)
python_json=$(mktemp)
trap 'rm -f "$json" "$snapshot_json" "$python_json"' EXIT
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

# Snapshots: each C++ row against BM_RawWriteFsync, each Python row against Python's raw
# write+fsync, per byte (the deflate state is smaller than the others).
"$build/benchmarks/snapshot_benchmark" --benchmark_repetitions="${TTH_BENCH_REPETITIONS:-5}" \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"$snapshot_json"
/usr/bin/python3 "$here/python_baselines.py" >"$python_json"
/usr/bin/python3 - "$snapshot_json" "$python_json" <<'PY'
import json, sys
MIB = 1 << 20
PYTHON_MIB = 64  # python_baselines.py writes 16 arrays of 4 MiB
rows, failed = [], []
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    name = b["run_name"].split("/")[0]
    if b.get("error_occurred"):
        failed.append(f"{name}: {b.get('error_message', 'error')}")
    elif b.get("aggregate_name") == "median":
        assert b["time_unit"] == "ms", b["time_unit"]
        ms, bps = b["real_time"], b["bytes_per_second"]
        rows.append((name, bps * ms / 1000 / MIB, ms))
if failed:
    sys.exit("snapshot_benchmark failed: " + "; ".join(failed))
python = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
rows += [(p["name"], PYTHON_MIB, p["ms"]) for p in python]

def per_mib(name):
    return next(ms / mib for n, mib, ms in rows if n == name)

print()
print(f"{'snapshot (median of repetitions)':32} {'MiB':>5} {'median ms':>10} {'MB/s':>8} "
      f"{'x raw write+fsync':>18}")
for name, mib, ms in rows:
    raw = per_mib("python_raw_write_fsync" if name.startswith("python_") else "BM_RawWriteFsync")
    print(f"{name:32} {mib:5.0f} {ms:10.1f} {mib * MIB / 1e3 / ms:8.0f} "
          f"{ms / mib / raw:17.2f}x")
PY

# What a resume costs in memory above the model: autoload of a 192 MiB state (64 MiB of
# parameters and Adam's two moments) in a fresh process, for each format.
echo
printf '%-10s %10s %16s %8s\n' format "state MiB" "peak above MiB" ratio
memory_dir=$(mktemp -d "${TTH_BENCH_DIR:-/var/tmp}/tth-resume-XXXXXX")
for format in torch npz; do
  "$build/benchmarks/resume_memory" save "$memory_dir/$format" 64 "$format" 2>/dev/null
  "$build/benchmarks/resume_memory" resume "$memory_dir/$format" 64 "$format" 2>/dev/null |
    /usr/bin/python3 -c 'import json, sys; r = json.loads(sys.stdin.read())
print("%-10s %10.0f %16.1f %7.2fx" % (r["format"], r["state_mib"], r["peak_above_mib"], r["ratio"]))'
done
rm -rf "$memory_dir"

# The MNIST example against the same training in Python PyTorch (mnist_bench.sh).
echo
"$here/mnist_bench.sh" "$build"
