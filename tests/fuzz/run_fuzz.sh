#!/usr/bin/env bash
# Builds and runs the libFuzzer target zip_reader_fuzz.cpp for a fixed time; the ctest test
# `fuzz_zip_reader` (label fuzz) calls it.
#   tests/fuzz/run_fuzz.sh SOURCE_DIR WORK_DIR [SECONDS]
# SECONDS defaults to $TTH_FUZZ_SECONDS, else 20. WORK_DIR is build/tests/fuzz: there CMake
# writes container_sources.txt, the container's sources (TTH_CONTAINER_SOURCES in the top-level
# CMakeLists.txt, absolute paths, one a line), which the fuzzer is built from. WORK_DIR also
# keeps the fuzzer binary (rebuilt only when a source is newer), the seed corpus made by
# /usr/bin/python3 (numpy, zipfile and torch writers), the growing corpus, the dictionary, the
# log and any crash reproducer.
# Quiet when all is well: one summary line. Exits non-zero on a crash, leak, timeout, out of
# memory or sanitizer report, printing the report and the command that reproduces it.
set -euo pipefail

usage() { echo "usage: $0 SOURCE_DIR WORK_DIR [SECONDS]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
source_dir=$(cd "$1" && pwd)
mkdir -p "$2"
work_dir=$(cd "$2" && pwd)
seconds=${3:-${TTH_FUZZ_SECONDS:-20}}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "fuzz: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2; }
python=/usr/bin/python3

cxx=
for candidate in clang++-14 clang++; do
  if command -v "$candidate" >/dev/null; then cxx=$(command -v "$candidate"); break; fi
done
if [[ -z $cxx ]]; then
  echo "fuzz: clang++ (clang++-14 or clang++) not found; libFuzzer needs clang (apt-get install clang)" >&2
  exit 1
fi

# 1. The fuzzer, rebuilt when this script, the source list or any source it is made of (or a
# header beside one) is newer than it.
source_list=$work_dir/container_sources.txt
if [[ ! -s $source_list ]]; then
  echo "fuzz: $source_list is missing; CMake writes it when it configures (build/tests/fuzz)" >&2
  exit 1
fi
mapfile -t container_sources < <(grep -v '^$' "$source_list")
for source in "${container_sources[@]}"; do
  [[ -f $source ]] || { echo "fuzz: $source (listed in $source_list) does not exist" >&2; exit 1; }
done
fuzzer=$work_dir/zip_reader_fuzz
sources=("$source_dir/tests/fuzz/zip_reader_fuzz.cpp" "${container_sources[@]}")
inputs=("${sources[@]}" "$source_dir"/include/tth/*.h "$source_list" "${BASH_SOURCE[0]}")
while IFS= read -r dir; do
  for header in "$dir"/*.h; do
    if [[ -f $header ]]; then inputs+=("$header"); fi
  done
done < <(for source in "${sources[@]}"; do dirname "$source"; done | sort -u)
stale=0
if [[ ! -x $fuzzer ]]; then
  stale=1
else
  for input in "${inputs[@]}"; do
    if [[ $input -nt $fuzzer ]]; then stale=1; break; fi
  done
fi
if (( stale )); then
  if ! "$cxx" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
      -fno-sanitize-recover=undefined -I "$source_dir/plugin" -I "$source_dir/include" \
      -DTTH_HAVE_LIBDEFLATE "${sources[@]}" -lz -ldeflate -o "$fuzzer.tmp" \
      >"$work_dir/build.log" 2>&1; then
    cat "$work_dir/build.log" >&2
    if grep -q 'libclang_rt\.\(fuzzer\|asan\|ubsan\)' "$work_dir/build.log"; then
      echo "fuzz: clang's sanitizer runtimes are missing (Debian: apt-get install libclang-rt-14-dev)" >&2
    fi
    echo "fuzz: building $fuzzer with $cxx failed" >&2
    exit 1
  fi
  mv -f "$fuzzer.tmp" "$fuzzer"
fi

# 2. The seed corpus: small files from the real writers, remade when this script changes.
seeds=$work_dir/seeds
if [[ ! -f $seeds/.complete || ${BASH_SOURCE[0]} -nt $seeds/.complete ]]; then
  rm -rf "$seeds"
  mkdir -p "$seeds"
  if ! "$python" - "$seeds" >"$work_dir/seeds.log" 2>&1 <<'PY'; then
import io, os, sys, zipfile
import numpy as np

out = sys.argv[1]

def put(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

def npz(save, **arrays):
    buf = io.BytesIO()
    save(buf, **arrays)
    return buf.getvalue()

def npy(array, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
    return buf.getvalue()

arrays = {
    "f4": np.arange(6, dtype="<f4").reshape(2, 3),
    "scalar_i8": np.array(7, dtype="<i8"),
    "scalar_f8": np.array(0.5),
    "flag": np.array(True),
    "u1": np.arange(5, dtype=np.uint8),
    "i1": np.array([-1, 2], dtype=np.int8),
    "i2": np.array([[1], [-2]], dtype="<i2"),
    "i4": np.arange(3, dtype="<i4"),
    "f2": np.array([1.5, -2], dtype="<f2"),
    "c8": np.array([1 + 2j], dtype="<c8"),
    "c16": np.array([[3 - 1j]], dtype="<c16"),
    "text": np.array('{"log": [1, "\u00e9\u4e2d"]}'),
    "big_f8": np.array([1.0, 2.0], dtype=">f8"),
    "big_i4": np.array([[1, 2], [3, 4]], dtype=">i4"),
    "fortran": np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)),
    "empty": np.zeros((0, 3), dtype="<f4"),
    "cube": np.ones((2, 1, 2), dtype="<f8"),
}
put("savez_all.npz", npz(np.savez, **arrays))
put("savez_compressed_all.npz", npz(np.savez_compressed, **arrays))
put("savez_small.npz", npz(np.savez, w=arrays["f4"], t=arrays["scalar_i8"]))
put("savez_compressed_small.npz", npz(np.savez_compressed, w=arrays["f4"]))
put("savez_chainer_keys.npz", npz(np.savez, **{
    "updater/model:main/predictor/l1/W": arrays["f4"],
    "updater/iteration": arrays["scalar_i8"],
    "extensions/LogReport/_log": arrays["text"]}))
put("savez_none.npz", npz(np.savez, none=np.array(None, dtype=object)))
put("savez_empty.npz", npz(np.savez))
for name, array in arrays.items():
    put(f"{name}.npy", npy(array))
put("v2.npy", npy(arrays["f4"], version=(2, 0)))
put("v3.npy", npy(arrays["text"], version=(3, 0)))

class Unseekable(io.RawIOBase):
    """A pipe-like stream: zipfile then writes data descriptors (flag bit 3)."""
    def __init__(self):
        self.data = bytearray()
    def writable(self):
        return True
    def write(self, b):
        self.data += b
        return len(b)

for method, tag in ((zipfile.ZIP_STORED, "stored"), (zipfile.ZIP_DEFLATED, "deflated")):
    stream = Unseekable()
    with zipfile.ZipFile(stream, "w", compression=method) as z:
        z.writestr("w.npy", npy(arrays["f4"]))
        z.writestr("t.npy", npy(arrays["text"]))
    put(f"data_descriptor_{tag}.zip", bytes(stream.data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        with z.open("w.npy", "w", force_zip64=True) as member:
            member.write(npy(arrays["f4"]))
        z.writestr("\u00e9t\u00e9.npy", npy(arrays["i1"]))
    put(f"zip64_utf8_{tag}.zip", buf.getvalue())

try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    buf = io.BytesIO()
    torch.save({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                "step": torch.tensor(3)}, buf)
    put("torch_save.pt", buf.getvalue())
PY
    cat "$work_dir/seeds.log" >&2
    echo "fuzz: making the seed corpus with $python failed" >&2
    exit 1
  fi
  touch "$seeds/.complete"
fi

# Tokens of the formats, so mutations reach past the signature and header checks.
dict=$work_dir/zip_npy.dict
cat >"$dict" <<'EOF'
local_header="PK\x03\x04"
central_header="PK\x01\x02"
end_record="PK\x05\x06"
zip64_end_record="PK\x06\x06"
zip64_locator="PK\x06\x07"
data_descriptor="PK\x07\x08"
zip64_extra="\x01\x00\x10\x00"
max32="\xff\xff\xff\xff"
npy_magic="\x93NUMPY"
npy_v1="\x01\x00"
npy_v2="\x02\x00"
npy_v3="\x03\x00"
descr="'descr'"
fortran_order="'fortran_order'"
shape="'shape'"
false="False"
true="True"
f4="'<f4'"
big_f8="'>f8'"
b1="'|b1'"
object="'|O'"
unicode="'<U"
long_suffix="L"
npy_suffix=".npy"
EOF

# 3. The run. The corpus directory comes first so that new inputs are saved there.
corpus=$work_dir/corpus
artifacts=$work_dir/artifacts
log=$work_dir/fuzz.log
mkdir -p "$corpus" "$artifacts"
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict="$dict" \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "$seeds" >"$log" 2>&1 \
  || status=$?

# libFuzzer's own exit status covers crashes, leaks, timeouts and OOM; the grep catches a
# sanitizer report that somehow did not end the run.
if (( status != 0 )) || grep -qE '^==[0-9]+==ERROR|runtime error:|^SUMMARY: ' "$log"; then
  tail -n 80 "$log" >&2
  reproducer=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  echo "fuzz: FAILED (exit status $status); full log: $log" >&2
  if [[ -n $reproducer ]]; then
    echo "fuzz: reproducer: $reproducer" >&2
    echo "fuzz: reproduce with: $fuzzer $reproducer" >&2
  fi
  exit 1
fi

runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)
if [[ -z $runs ]]; then
  tail -n 40 "$log" >&2
  echo "fuzz: FAILED: the fuzzer exited without its final 'Done N runs' line; full log: $log" >&2
  exit 1
fi
echo "fuzz: $runs runs in $secs s, no crash ($(find "$corpus" -type f | wc -l) corpus files, $cxx)"
