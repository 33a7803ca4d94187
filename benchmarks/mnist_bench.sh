#!/usr/bin/env bash
# The MNIST example against the same training in Python PyTorch (benchmarks/mnist_python.py):
# the same CNN, data, batch size, optimizer and thread count, one process each, and prints
# training images per second in one table:
#   C++ bare    examples/mnist --no-extensions: the loop with only the hook's counting
#   C++ full    every extension of the example (evaluation, logs, plots, LR shift, checks),
#               a snapshot of the whole state each epoch and the best/final models
#   Python bare the loop alone
#   Python full the loop plus per-epoch evaluation and a torch.save (fsynced) of model and
#               optimizer
# Both sides count training images over the wall time of their loop (data loading and
# process start excluded); the final test evaluation is outside the timed region. The five
# runs are repeated in rounds, interleaved, and each keeps its best rate: on a shared machine
# the load changes from one run to the next, and the best of a few is the least disturbed.
#   benchmarks/mnist_bench.sh [BUILD_DIR]
# Environment: TTH_MNIST_DATA (default /usr/share/datasets/fashion-mnist), TTH_MNIST_LIMIT
# (at most this many examples of each split; default all: 60000 training, 10000 test), TTH_MNIST_EPOCHS (default 1), TTH_MNIST_THREADS
# (default: all cores), TTH_MNIST_BATCH (default 64), TTH_MNIST_ROUNDS (default 2). Output
# directories go under $TTH_BENCH_DIR, else /var/tmp (not /tmp, which may be a tmpfs), and are
# removed.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
mnist=$build/examples/mnist/mnist
[[ -x $mnist ]] || { echo "mnist_bench: $mnist not found; build it: scripts/build.sh --target mnist" >&2; exit 1; }
data=${TTH_MNIST_DATA:-/usr/share/datasets/fashion-mnist}
limit=${TTH_MNIST_LIMIT:-}
epochs=${TTH_MNIST_EPOCHS:-1}
threads=${TTH_MNIST_THREADS:-$(nproc)}
batch=${TTH_MNIST_BATCH:-64}
rounds=${TTH_MNIST_ROUNDS:-2}
# Each program runs as its users run it: the example keeps freed blocks in glibc's heap itself
# (mallopt, see its main.cpp), Python with glibc's defaults. A fifth run gives the Python loop
# the example's malloc settings through glibc's environment variables, to show what they are
# worth there too ("Python bare loop, tuned malloc").
tuned_malloc=(MALLOC_MMAP_THRESHOLD_=$((64 << 20)) MALLOC_TRIM_THRESHOLD_=$((512 << 20)))
work=$(mktemp -d "${TTH_BENCH_DIR:-/var/tmp}/tth-mnist-bench-XXXXXX")
trap 'rm -rf "$work"' EXIT
common=(--data "$data" --epochs "$epochs" --threads "$threads" --batch-size "$batch" --seed 0)
[[ -z $limit ]] || common+=(--limit "$limit")

# The images/s of the example's last line: "... in 12.3 s: 1234 images/s".
cpp_rate() {
  local name=$1
  shift
  rm -rf "${work:?}/$name"
  if ! "$mnist" "${common[@]}" --out "$work/$name" --resume none "$@" >"$work/$name.txt" 2>&1; then
    cat "$work/$name.txt" >&2
    echo "mnist_bench: the C++ example failed ($name)" >&2
    exit 1
  fi
  local rate
  rate=$(sed -n 's/^mnist: test accuracy .* s: \([0-9.]*\) images\/s$/\1/p' "$work/$name.txt")
  [[ -n $rate ]] || { echo "mnist_bench: no images/s line in $work/$name.txt" >&2; exit 1; }
  echo "$rate"
}
python_rate() {
  local mode=$1
  shift
  env "$@" TTH_BENCH_DIR="$work" /usr/bin/python3 "$here/mnist_python.py" "${common[@]}" --mode "$mode" |
    /usr/bin/python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["images_per_second"])'
}

# One line per round: the four rates. (Assignments, so that a failed run ends the script.)
for ((round = 0; round < rounds; ++round)); do
  cpp_bare=$(cpp_rate bare --no-extensions)
  cpp_full=$(cpp_rate full)
  python_bare=$(python_rate bare)
  python_full=$(python_rate full)
  python_tuned=$(python_rate bare "${tuned_malloc[@]}")
  echo "$cpp_bare $cpp_full $python_bare $python_full $python_tuned" >>"$work/rates.txt"
done
/usr/bin/python3 - "$work/rates.txt" "${limit:-all}" "$epochs" "$batch" "$threads" "$rounds" <<'PY'
import sys
rounds = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
cpp_bare, cpp_full, py_bare, py_full, py_tuned = (max(column) for column in zip(*rounds))
limit, epochs, batch, threads, count = sys.argv[2:7]
print(f"MNIST-format CNN: {epochs} epoch(s) of {limit} images, batch {batch}, {threads} threads, "
      f"best of {count} rounds (training images per second; higher is better)")
print(f"{'run':46} {'images/s':>9} {'x own bare':>11} {'C++ / Python':>13}")
rows = [("C++ bare loop (--no-extensions)", cpp_bare, cpp_bare, cpp_bare / py_bare),
        ("C++ with every extension and snapshots", cpp_full, cpp_bare, cpp_full / py_full),
        ("Python bare loop", py_bare, py_bare, None),
        ("Python with evaluation + torch.save", py_full, py_bare, None),
        ("Python bare loop, tuned malloc", py_tuned, py_bare, None)]
for name, rate, bare, versus in rows:
    ratio = f"{versus:12.2f}x" if versus is not None else f"{'':13}"
    print(f"{name:46} {rate:9.0f} {rate / bare:10.2f}x {ratio}")
print(f"C++ with every extension and snapshots / Python bare loop: {cpp_full / py_bare:.2f}x")
PY
