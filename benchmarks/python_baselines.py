#!/usr/bin/python3
"""Python's own snapshot writers on the states snapshot_benchmark uses, for comparison.

At each size (MiB; $TTH_BENCH_SIZES, comma or space separated, default "64,256,1024"), the
state is float32 arrays of 4 MiB with model-like keys and random values, written by
  python_raw_write_fsync         a raw write of the bytes, then fsync (the disk floor, as
                                 BM_RawWriteFsync);
  python_numpy_savez             numpy.savez,
  python_numpy_savez_compressed  numpy.savez_compressed (zlib's default level),
  python_torch_save              torch.save of the tensors (sharing the arrays' memory),
each of the last three committed as a durable snapshot is: into a temp file in the target's
directory, fsync, os.replace over the target, fsync of the directory (as tth::atomic_write).
Files go to $TTH_BENCH_DIR or a fresh directory under /var/tmp (not /tmp, which may be a
tmpfs) and are removed after every run, outside the timed region. Prints one JSON line per
writer and size, {"name": ..., "mib": ..., "ms": ..., "median_ms": ...}: the best (the least
disturbed on a shared machine) and the median of up to $TTH_BENCH_PY_RUNS (default 3) timed
runs, fewer once a writer spent TIME_BUDGET_S seconds (at least one run);
each writer first writes a 4 MiB state untimed (lazy imports, first-touch costs). Run with
/usr/bin/python3 (Debian's numpy and torch): benchmarks/run.sh does.
"""
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

MIB = 1 << 20
ARRAY_BYTES = 4 * MIB
DEFAULT_SIZES = "64,256,1024"
TIME_BUDGET_S = 30.0


def sizes():
    words = os.environ.get("TTH_BENCH_SIZES") or DEFAULT_SIZES
    result = [int(word) for word in words.replace(",", " ").split()]
    for mib in result:
        if mib <= 0 or mib * MIB % ARRAY_BYTES:
            sys.exit(f"TTH_BENCH_SIZES: {mib} is not a positive multiple of 4 (MiB)")
    return result


def make_state(mib):
    rng = np.random.default_rng(0)
    elements = ARRAY_BYTES // 4
    return {f"models/main/layers/{i}/weight":
            rng.standard_normal(elements, dtype=np.float32).reshape(elements // 1024, 1024)
            for i in range(mib * MIB // ARRAY_BYTES)}


def fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable(write):
    """Opens `path`, lets `write(file)` fill it, then flushes and fsyncs before closing."""
    def save(path):
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return save


def atomic(write):
    """`write(file)` into a temp file beside `path`, fsync, rename over `path`, fsync the
    directory: the commit of tth::atomic_write."""
    def save(path):
        directory, name = os.path.split(path)
        fd, temp = tempfile.mkstemp(prefix=f".{name}.tmp.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.remove(temp)
            raise
        fsync_directory(directory)
    return save


def writers(arrays):
    tensors = {key: torch.from_numpy(array) for key, array in arrays.items()}

    def raw(f):
        for array in arrays.values():
            f.write(memoryview(array).cast("B"))

    return [
        ("python_raw_write_fsync", durable(raw)),
        ("python_numpy_savez", atomic(lambda f: np.savez(f, **arrays))),
        ("python_numpy_savez_compressed", atomic(lambda f: np.savez_compressed(f, **arrays))),
        ("python_torch_save", atomic(lambda f: torch.save(tensors, f))),
    ]


def best_and_median_ms(save, path, runs):
    times = []
    spent = 0.0
    while len(times) < runs and (not times or spent < TIME_BUDGET_S):
        start = time.perf_counter()
        save(path)
        elapsed = time.perf_counter() - start
        os.remove(path)
        times.append(elapsed * 1000)
        spent += elapsed
    return min(times), statistics.median(times)


def main():
    runs = int(os.environ.get("TTH_BENCH_PY_RUNS") or 3)
    given = os.environ.get("TTH_BENCH_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        directory = given
    else:
        directory = tempfile.mkdtemp(prefix="tth-bench-py-", dir="/var/tmp")
    try:
        for name, save in writers(make_state(4)):  # warm-up, untimed
            path = os.path.join(directory, f"{name}.warmup")
            save(path)
            os.remove(path)
        for mib in sizes():
            arrays = make_state(mib)
            assert sum(a.nbytes for a in arrays.values()) == mib * MIB
            for name, save in writers(arrays):
                best, median = best_and_median_ms(
                    save, os.path.join(directory, f"{name}_{mib}.bin"), runs)
                print(json.dumps({"name": name, "mib": mib, "ms": round(best, 3),
                                  "median_ms": round(median, 3)}), flush=True)
            del arrays
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
