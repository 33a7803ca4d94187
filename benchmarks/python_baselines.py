#!/usr/bin/python3
"""Python's own snapshot writers on the state snapshot_benchmark uses, for comparison.

64 MiB of float32 (16 arrays of 4 MiB, random values) written by torch.save, numpy.savez and a
raw write, each followed by fsync (as a durable snapshot needs), into $TTH_BENCH_DIR or a fresh
directory under /var/tmp (not /tmp, which may be a tmpfs). Prints one JSON line per writer,
{"name": ..., "ms": ...}, the median of 5 timed runs after one untimed warm-up; the file is
removed after every run, outside the timed region. Run with /usr/bin/python3 (Debian's numpy and
torch): benchmarks/run.sh does.
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
ARRAYS = 16
ARRAY_BYTES = 4 * MIB
RUNS = 5


def make_state():
    rng = np.random.default_rng(0)
    elements = ARRAY_BYTES // 4
    return {f"models/main/layers/{i}/weight":
            rng.standard_normal(elements, dtype=np.float32).reshape(elements // 1024, 1024)
            for i in range(ARRAYS)}


def durable(write):
    """Opens `path`, lets `write(file)` fill it, then flushes and fsyncs before closing."""
    def save(path):
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return save


def median_ms(save, path):
    save(path)  # warm-up: first-touch costs, lazy imports
    os.remove(path)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        save(path)
        times.append((time.perf_counter() - start) * 1000)
        os.remove(path)
    return statistics.median(times)


def main():
    arrays = make_state()
    tensors = {key: torch.from_numpy(array) for key, array in arrays.items()}
    assert sum(a.nbytes for a in arrays.values()) == ARRAYS * ARRAY_BYTES

    def raw(f):
        for array in arrays.values():
            f.write(memoryview(array).cast("B"))

    writers = [
        ("python_raw_write_fsync", durable(raw)),
        ("python_numpy_savez", durable(lambda f: np.savez(f, **arrays))),
        ("python_torch_save", durable(lambda f: torch.save(tensors, f))),
    ]
    given = os.environ.get("TTH_BENCH_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        directory = given
    else:
        directory = tempfile.mkdtemp(prefix="tth-bench-py-", dir="/var/tmp")
    try:
        for name, save in writers:
            ms = median_ms(save, os.path.join(directory, f"{name}.bin"))
            print(json.dumps({"name": name, "ms": round(ms, 3)}), flush=True)
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
