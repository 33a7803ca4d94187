#!/usr/bin/python3
"""The comparison tables that benchmarks/run.sh prints, from the benchmarks' outputs.

  report_tables.py hook HOOK_JSON
  report_tables.py snapshot SNAPSHOT_JSON PYTHON_JSON_LINES
  report_tables.py training TRAINING_JSON
  report_tables.py memory MEMORY_JSON_LINES

The JSON files are Google Benchmark's --benchmark_format=json with repetitions and
aggregates: the "min" aggregate (the best repetition, the least disturbed on a shared machine)
gives the ratios and targets, the median is shown beside it. The JSON-lines files are
python_baselines.py's (best and median of its runs) and snapshot_memory's output. Every target
is one line marked "pass" or "MISS": targets are what the project aims for, not assertions,
so a miss does not fail the script.
"""
import json
import os
import sys

MIB = 1 << 20

# Targets (ratios within one run).
NPZ_MAX_X_RAW = 1.05         # BM_NpzSnapshot / BM_RawWriteFsync, at TARGET_SIZES
TORCH_MAX_X_RAW = 1.10       # BM_TorchSnapshot / BM_RawWriteFsync, at TARGET_SIZES
TARGET_SIZES = (256, 1024)   # MiB; at 64 MiB the fixed costs (two fsyncs, a rename) dominate
STALL_MAX_X_MEMCPY = 1.2     # BM_ThreadWriterStall, BM_QueueWriterStall / BM_Memcpy
DEFLATE_MIN_X_NUMPY = 3.0    # BM_NpzDeflateSnapshot throughput / numpy.savez_compressed's
THREAD_WRITER_MIN_X = 0.95   # BM_TrainThreadWriter iterations/s / BM_TrainNoSnapshot's
# Expectations of the memory table, in MiB above the state: about one 4 MiB chunk for a
# synchronous write (deflate: the compressed members in flight, at most one per core plus
# one, each about a 4 MiB tensor's size), plus one copy of the state per snapshot an
# asynchronous writer holds.
CHUNK_SLACK_MIB = 8
DEFLATE_MEMBER_MIB = 4
COPIES = {"simple": 0, "thread": 1, "queue": 2}


def aggregates(path):
    """{(name, arg): {aggregate name: benchmark}} of the aggregates (median, min, ...); exits on
    a failed benchmark."""
    result, failed = {}, []
    for b in json.load(open(path))["benchmarks"]:
        parts = b["run_name"].split("/")
        arg = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        if b.get("error_occurred"):
            failed.append(f"{parts[0]}: {b.get('error_message', 'error')}")
        elif b.get("aggregate_name"):
            assert b["time_unit"] == "ms", b["time_unit"]
            result.setdefault((parts[0], arg), {})[b["aggregate_name"]] = b
    if failed:
        sys.exit(f"{path}: benchmarks failed: " + "; ".join(failed))
    return result


def verdict(ok):
    return "pass" if ok else "MISS"


def hook(path):
    runs = {b["run_name"]: b["real_time"] for b in json.load(open(path))["benchmarks"]
            if b.get("aggregate_name") == "median"}
    step = runs["BM_SmallMlpStep"]
    print(f"{'benchmark':32} {'median ns':>12} {'% of an MLP step':>18}")
    for name, ns in runs.items():
        print(f"{name:32} {ns:12.0f} {100 * ns / step:17.4f}%")


def snapshot(path, python_path):
    cpp = aggregates(path)
    python = {}
    for line in open(python_path):
        if line.strip():
            p = json.loads(line)
            python[(p["name"], p["mib"])] = (p["ms"], p["median_ms"])
    sizes = sorted({mib for _, mib in cpp})
    targets = []
    pairs = {"BM_RawWriteFsync": "python_raw_write_fsync", "BM_NpzSnapshot": "python_numpy_savez",
             "BM_NpzDeflateSnapshot": "python_numpy_savez_compressed",
             "BM_TorchSnapshot": "python_torch_save"}
    for mib in sizes:
        # (name, best ms, median ms) of this size, C++ rows first.
        rows = [(name, runs["min"]["real_time"], runs["median"]["real_time"])
                for (name, size), runs in cpp.items() if size == mib]
        rows += [(name, best, median) for (name, size), (best, median) in python.items()
                 if size == mib]
        best = {name: ms for name, ms, _ in rows}
        print()
        print(f"snapshot of {mib} MiB              {'best ms':>9} {'median':>9} {'MB/s':>6} "
              f"{'ratio':>7} {'of':22} {'x Python':>8}  target")
        for name, ms, median in rows:
            if name.startswith("python_"):
                basis = "python_raw_write_fsync"
            elif name.endswith("Stall"):
                basis = "BM_Memcpy"
            else:
                basis = "BM_RawWriteFsync"
            ratio = ms / best[basis] if basis in best else float("nan")
            python_ms = python.get((pairs.get(name), mib), (None,))[0]
            versus = f"{ms / python_ms:7.2f}x" if python_ms else ""
            target = ""
            if name == "BM_NpzSnapshot" and mib in TARGET_SIZES:
                ok = ratio <= NPZ_MAX_X_RAW
                target = f"<= {NPZ_MAX_X_RAW:.2f}x: {verdict(ok)}"
                targets.append((f"npz {mib} MiB: {ratio:.2f}x raw write+fsync "
                                f"(<= {NPZ_MAX_X_RAW})", ok))
            elif name == "BM_TorchSnapshot" and mib in TARGET_SIZES:
                ok = ratio <= TORCH_MAX_X_RAW
                target = f"<= {TORCH_MAX_X_RAW:.2f}x: {verdict(ok)}"
                targets.append((f"torch {mib} MiB: {ratio:.2f}x raw write+fsync "
                                f"(<= {TORCH_MAX_X_RAW})", ok))
            elif name.endswith("Stall"):
                ok = ratio <= STALL_MAX_X_MEMCPY
                target = f"<= {STALL_MAX_X_MEMCPY:.1f}x: {verdict(ok)}"
                targets.append((f"{name} {mib} MiB: {ratio:.2f}x memcpy "
                                f"(<= {STALL_MAX_X_MEMCPY})", ok))
            elif name == "BM_NpzDeflateSnapshot" and python_ms:
                speedup = python_ms / ms
                ok = speedup >= DEFLATE_MIN_X_NUMPY
                target = (f"MB/s {speedup:.1f}x savez_compressed's, "
                          f">= {DEFLATE_MIN_X_NUMPY:.0f}x: {verdict(ok)}")
                targets.append((f"deflate {mib} MiB: MB/s {speedup:.1f}x numpy.savez_compressed's "
                                f"(>= {DEFLATE_MIN_X_NUMPY:.0f}x)", ok))
            print(f"{name:32} {ms:9.1f} {median:9.1f} {mib * MIB / 1e3 / ms:6.0f} "
                  f"{ratio:6.2f}x {basis if basis != name else '':22} {versus:>8}  {target}")
    print()
    print("snapshot targets (best repetitions):")
    for line, ok in targets:
        print(f"  {verdict(ok)}  {line}")


def training(path):
    runs = aggregates(path)
    # In a fixed order: the repetitions ran interleaved in random order.
    order = ["BM_TrainNoSnapshot", "BM_TrainSimpleWriter", "BM_TrainThreadWriter",
             "BM_TrainThreadWriterPipelined"]
    names = sorted((name for name, _ in runs), key=lambda n: (order + [n]).index(n))
    every = runs[(names[0], None)]["median"]["snapshot_every"]
    threads = runs[(names[0], None)]["median"]["torch_threads"]
    # Iterations per second of the best repetition (the shortest time per block of `every`
    # iterations) and the median repetition's.
    best = {n: every * 1000 / runs[(n, None)]["min"]["real_time"] for n in names}
    median = {n: runs[(n, None)]["median"]["items_per_second"] for n in names}
    base = best.get("BM_TrainNoSnapshot")
    print(f"training loop ({threads:.0f} LibTorch threads), a snapshot every {every:.0f} "
          "iterations")
    print(f"{'':48} {'best iter/s':>11} {'x none':>7} {'median':>7} {'x none':>7}  target")
    target_line = None
    for name in names:
        ratio = best[name] / base
        target = ""
        if name == "BM_TrainThreadWriter":
            ok = ratio >= THREAD_WRITER_MIN_X
            target = f">= {THREAD_WRITER_MIN_X:.2f}x: {verdict(ok)}"
            target_line = (f"  {verdict(ok)}  ThreadWriter: {ratio:.3f}x the iterations/s "
                           f"without snapshots (>= {THREAD_WRITER_MIN_X})")
        print(f"{name:48} {best[name]:11.1f} {ratio:6.3f}x {median[name]:7.1f} "
              f"{median[name] / median['BM_TrainNoSnapshot']:6.3f}x  {target}")
    if target_line:
        print("training target (best repetitions):")
        print(target_line)


def memory(path):
    print(f"{'writer':7} {'savefun':8} {'state MiB':>9} {'peak above MiB':>15} {'x state':>8}  "
          f"expected (2 snapshots back to back)")
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        copies = COPIES[r["writer"]]
        bound = copies * r["state_mib"] + CHUNK_SLACK_MIB
        what = {0: "about one chunk", 1: "one copy of the state",
                2: "at most two copies"}[copies]
        if r["savefun"] == "deflate":
            bound += (os.cpu_count() + 1) * DEFLATE_MEMBER_MIB
            what += f", {os.cpu_count() + 1} members compressing"
        mark = "as expected" if r["peak_above_mib"] <= bound else "ABOVE"
        print(f"{r['writer']:7} {r['savefun']:8} {r['state_mib']:9.0f} "
              f"{r['peak_above_mib']:15.1f} {r['ratio']:7.2f}x  <= {bound:.0f} MiB "
              f"({what}): {mark}")


def main(argv):
    commands = {"hook": hook, "snapshot": snapshot, "training": training, "memory": memory}
    if len(argv) < 3 or argv[1] not in commands:
        sys.exit(__doc__)
    commands[argv[1]](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
