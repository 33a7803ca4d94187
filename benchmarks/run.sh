#!/usr/bin/env bash
# Runs the benchmarks side by side, one process each (shared machines are noisy: compare
# ratios within a run, not absolute numbers across runs), and prints the comparison tables
# (benchmarks/report_tables.py), each target marked pass or MISS:
#   hook      the hook's per-iteration overhead (hook_overhead_benchmark);
#   snapshot  per state size, what a snapshot costs against a raw write+fsync and what an
#             asynchronous writer stalls against a memcpy (snapshot_benchmark), next to
#             Python's torch.save / numpy.savez / numpy.savez_compressed (python_baselines.py);
#   training  training iterations per second with snapshots through each writer
#             (training_overhead_benchmark);
#   memory    the peak memory that two snapshots add above the state, per writer and savefun
#             (snapshot_memory, a fresh process per case);
#   resume    what a resume costs in memory (resume_memory);
#   mnist     the MNIST example's training speed against Python PyTorch's (mnist_bench.sh).
#
#   benchmarks/run.sh [BUILD_DIR]
# Environment: TTH_BENCH_PARTS (default "hook snapshot training memory resume mnist"),
# TTH_BENCH_SIZES (snapshot state sizes in MiB, default "64,256,1024"), TTH_BENCH_FILTER
# (a --benchmark_filter regex for snapshot_benchmark), TTH_BENCH_REPETITIONS (default 3),
# TTH_BENCH_MEMORY_MIB (the memory table's state, default 256); the variables that the programs
# read themselves (TTH_BENCH_ITERATIONS, TTH_BENCH_PY_RUNS, TTH_TRAIN_SNAPSHOT_EVERY,
# TTH_TRAIN_BLOCKS, TTH_MNIST_*) pass through. Files go to $TTH_BENCH_DIR, else to fresh
# directories under /var/tmp (not /tmp, which may be a tmpfs where fsync is free).
# A 1024 MiB size needs about 3 GiB of free disk and 5 GiB of memory.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
parts=" ${TTH_BENCH_PARTS:-hook snapshot training memory resume mnist} "
repetitions=${TTH_BENCH_REPETITIONS:-3}
export TTH_BENCH_SIZES=${TTH_BENCH_SIZES:-64,256,1024}
memory_mib=${TTH_BENCH_MEMORY_MIB:-256}
report() { /usr/bin/python3 "$here/report_tables.py" "$@"; }
wants() { [[ $parts == *" $1 "* ]]; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aggregates=(--benchmark_repetitions="$repetitions" --benchmark_report_aggregates_only=true
  --benchmark_format=json)

if wants hook; then
  "$build/benchmarks/hook_overhead_benchmark" "${aggregates[@]}" >"$work/hook.json"
  report hook "$work/hook.json"
fi

if wants snapshot; then
  echo
  "$build/benchmarks/snapshot_benchmark" "${aggregates[@]}" \
    --benchmark_filter="${TTH_BENCH_FILTER:-.}" >"$work/snapshot.json"
  /usr/bin/python3 "$here/python_baselines.py" >"$work/python.jsonl"
  report snapshot "$work/snapshot.json" "$work/python.jsonl"
fi

if wants training; then
  # Repetitions interleaved in random order, so that a burst of load on a shared machine
  # does not land on one benchmark's repetitions only.
  echo
  "$build/benchmarks/training_overhead_benchmark" "${aggregates[@]}" \
    --benchmark_enable_random_interleaving=true >"$work/training.json"
  report training "$work/training.json"
fi

if wants memory; then
  echo
  memory_dir=$(mktemp -d "${TTH_BENCH_DIR:-/var/tmp}/tth-snapshot-memory-XXXXXX")
  for writer in simple thread queue; do
    for savefun in torch npz deflate; do
      if ! "$build/benchmarks/snapshot_memory" "$writer" "$savefun" "$memory_mib" "$memory_dir" \
        >>"$work/memory.jsonl"; then
        rm -rf "$memory_dir"
        exit 1
      fi
    done
  done
  rm -rf "$memory_dir"
  report memory "$work/memory.jsonl"
fi

if wants resume; then
  # What a resume costs in memory above the model: autoload of a 192 MiB state (64 MiB of
  # parameters and Adam's two moments) in a fresh process, for each format.
  echo
  printf '%-10s %10s %16s %8s\n' format "state MiB" "peak above MiB" ratio
  memory_dir=$(mktemp -d "${TTH_BENCH_DIR:-/var/tmp}/tth-resume-XXXXXX")
  for format in torch npz; do
    "$build/benchmarks/resume_memory" save "$memory_dir/$format" 64 "$format" 2>/dev/null
    "$build/benchmarks/resume_memory" resume "$memory_dir/$format" 64 "$format" 2>/dev/null |
      /usr/bin/python3 -c 'import json, sys; r = json.loads(sys.stdin.read())
print("%-10s %10.0f %16.1f %7.2fx" %
      (r["format"], r["state_mib"], r["peak_above_mib"], r["ratio"]))'
  done
  rm -rf "$memory_dir"
fi

if wants mnist; then
  # The MNIST example against the same training in Python PyTorch (mnist_bench.sh).
  echo
  "$here/mnist_bench.sh" "$build"
fi
