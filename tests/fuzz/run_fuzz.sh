#!/usr/bin/env bash
# Builds and runs a libFuzzer target of the container code, or of the MNIST example's IDX
# reader, for a fixed time; the ctest tests `fuzz_zip_reader`, `fuzz_pickle_reader` and
# `fuzz_idx_reader` (label fuzz) call it.
#   tests/fuzz/run_fuzz.sh [--target zip_reader|pickle|idx] SOURCE_DIR WORK_DIR [SECONDS]
# --target zip_reader (the default): zip_reader_fuzz.cpp, the zip and npy readers.
# --target pickle: pickle_fuzz.cpp, the restricted pickle reader and the tensor-archive layout
# (container/pickle.h), seeded with real archives: the data.pkl and the whole file of
# torch.jit.save'd modules (submodules, typed lists) and torch.save'd dicts (state dicts, a
# checkpoint with an optimizer's state, named parameters, one in PyTorch 2's form made by
# hand), and, when $TTH_TOOL names the tth tool (ctest sets it), of our own torch_savefun's
# output (`tth convert` of npz files numpy writes).
# --target idx: idx_fuzz.cpp, the IDX reader of examples/mnist/idx.cpp (LibTorch-free), built
# from it and plugin/error.cpp only, seeded with small IDX files, raw and gzip, cut from
# Debian's Fashion-MNIST when installed and generated otherwise.
# SECONDS defaults to $TTH_FUZZ_SECONDS, else 20. WORK_DIR is build/tests/fuzz: there CMake
# writes container_sources.txt, the container's sources (TTH_CONTAINER_SOURCES in the top-level
# CMakeLists.txt, absolute paths, one a line), which the fuzzers are built from. WORK_DIR also
# keeps the fuzzer binaries (rebuilt only when a source is newer) and, per target (zip_reader
# in WORK_DIR itself, pickle in WORK_DIR/pickle), the seed corpus made by /usr/bin/python3
# (numpy, zipfile and torch writers), the growing corpus, the dictionary, the log and any crash
# reproducer.
# Quiet when all is well: one summary line. Exits non-zero on a crash, leak, timeout, out of
# memory or sanitizer report, printing the report and the command that reproduces it.
set -euo pipefail

usage() { echo "usage: $0 [--target zip_reader|pickle|idx] SOURCE_DIR WORK_DIR [SECONDS]" >&2; exit 2; }
target=zip_reader
if [[ ${1:-} == --target ]]; then
  [[ $# -ge 2 ]] || usage
  target=$2
  shift 2
fi
if [[ $target != zip_reader && $target != pickle && $target != idx ]]; then
  echo "fuzz: --target must be zip_reader, pickle or idx, got '$target'" >&2
  exit 2
fi
[[ $# -ge 2 && $# -le 3 ]] || usage
source_dir=$(cd "$1" && pwd)
mkdir -p "$2"
work_dir=$(cd "$2" && pwd)
seconds=${3:-${TTH_FUZZ_SECONDS:-20}}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "fuzz: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2; }
python=/usr/bin/python3
# Where this target's seeds, corpus, dictionary, logs and reproducers live.
state_dir=$work_dir
if [[ $target != zip_reader ]]; then state_dir=$work_dir/$target; fi
mkdir -p "$state_dir"

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
fuzzer=$work_dir/${target}_fuzz
sources=("$source_dir/tests/fuzz/${target}_fuzz.cpp" "${container_sources[@]}")
include_dirs=(-I "$source_dir/plugin" -I "$source_dir/include")
if [[ $target == idx ]]; then
  # The reader and the error classes it throws; nothing else of the container.
  mapfile -t error_source < <(grep '/plugin/error\.cpp$' "$source_list")
  [[ ${#error_source[@]} -eq 1 ]] || { echo "fuzz: plugin/error.cpp is not listed in $source_list" >&2; exit 1; }
  sources=("$source_dir/tests/fuzz/idx_fuzz.cpp" "$source_dir/examples/mnist/idx.cpp"
    "${error_source[0]}")
  include_dirs+=(-I "$source_dir/examples/mnist")
fi
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
      -fno-sanitize-recover=undefined "${include_dirs[@]}" \
      -DTTH_HAVE_LIBDEFLATE "${sources[@]}" -lz -ldeflate -o "$fuzzer.tmp" \
      >"$state_dir/build.log" 2>&1; then
    cat "$state_dir/build.log" >&2
    if grep -q 'libclang_rt\.\(fuzzer\|asan\|ubsan\)' "$state_dir/build.log"; then
      echo "fuzz: clang's sanitizer runtimes are missing (Debian: apt-get install libclang-rt-14-dev)" >&2
    fi
    echo "fuzz: building $fuzzer with $cxx failed" >&2
    exit 1
  fi
  mv -f "$fuzzer.tmp" "$fuzzer"
fi

# 2. The seed corpus: small files from the real writers, remade when this script changes.
zip_reader_seeds() {
  "$python" - "$1" <<'PY'
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
}

pickle_seeds() {
  local seeds=$1
  # Our own savefun's archives, through the tool, from npz files numpy writes.
  if [[ -n ${TTH_TOOL:-} && -x ${TTH_TOOL:-} ]]; then
    "$python" - "$seeds" <<'PY'
import sys
import numpy as np
out = sys.argv[1]
np.savez(out + "/ours_all.npz", **{
    "tth/format_version": np.array(2), "tth/iteration": np.array(7),
    "models/main/0.weight": np.arange(12, dtype="<f4").reshape(3, 4),
    "models/ma\"in/%41": np.ones(2, dtype="<f8"), "f2": np.ones(3, dtype="<f2"),
    "i1": np.array([-1, 2], dtype="i1"), "u1": np.arange(3, dtype="u1"),
    "i2": np.arange(2, dtype="<i2"), "i4": np.arange(2, dtype="<i4"),
    "b": np.array(True), "c8": np.array([1 + 2j], dtype="<c8"),
    "c16": np.array(1j), "empty": np.zeros((0, 3), dtype="<f4"),
    "h": np.ones(2, dtype="<f4"),
    "tth/npz_dtypes": np.array('{"h": "bfloat16"}'),
    "extensions/log/json": np.array('[1, "\u00e9"]')})
np.savez(out + "/ours_v1.npz", **{"tth/format_version": np.array(1), "w": np.ones(1)})
PY
    [[ $? -eq 0 ]] || return 1
    for npz in "$seeds"/ours_*.npz; do
      "$TTH_TOOL" convert "$npz" "${npz%.npz}.pt" --to torch >/dev/null || return 1
      rm -f "$npz"
    done
  else
    echo "fuzz: TTH_TOOL is not set: no seeds from our own savefun" >&2
  fi
  "$python" - "$seeds" <<'PY'
import io, os, runpy, sys, tempfile, zipfile
import torch

out = sys.argv[1]

def put(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

# torch.jit.script reads the source of the classes: run it from a file.
source = """
import torch
class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        self.register_buffer("steps", torch.tensor([3, 4]))
        self.register_buffer("h16", torch.ones(2, dtype=torch.float16))
        self.n = -7
        self.big = 2 ** 40
        self.x = 0.5
        self.flag = True
        self.name = "hello"
    def forward(self, x):
        return x
class Nested(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = torch.nn.Linear(2, 2)
    def forward(self, x):
        return self.sub(x)
# Submodules, typed lists (build_intlist, build_tensorlist), type tags, None attributes.
modules = {"jit_plain": Plain(), "jit_nested": Nested(),
           "jit_sequential": torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                                                 torch.nn.Flatten(), torch.nn.Linear(8, 3)),
           "jit_lstm": torch.nn.LSTM(4, 3)}
"""
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "modules.py")
    with open(path, "w") as f:
        f.write(source)
    modules = runpy.run_path(path)["modules"]
    for name, module in modules.items():
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(module), buf)
        put(name + ".pt", buf.getvalue())

base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
dicts = {
    "save_dict": {"a": torch.ones(2), "view": base[1:, 2:], "t": base.t(), "n": 3,
                  "x": 0.25, "b": torch.tensor(True), "s": "text"},
    "save_state_dict": torch.nn.Linear(3, 2).state_dict(),
    "save_dtypes": {str(d): torch.zeros(2, dtype=d) for d in (
        torch.bfloat16, torch.int8, torch.uint8, torch.int16, torch.int32, torch.complex64)},
}
# A checkpoint: nested dicts, int keys, lists, tuples, floats, None (an optimizer's state).
lin = torch.nn.Linear(3, 2)
opt = torch.optim.Adam(lin.parameters(), lr=0.01)
lin(torch.ones(1, 3)).sum().backward()
opt.step()
dicts["save_checkpoint"] = {"model": lin.state_dict(), "epoch": 3, "opt": opt.state_dict()}
dicts["save_parameters"] = dict(lin.named_parameters())  # _rebuild_parameter
for name, value in dicts.items():
    buf = io.BytesIO()
    torch.save(value, buf)
    put(name + ".pt", buf.getvalue())

# What PyTorch 2's torch.save adds, pickled by hand: the seventh argument of
# _rebuild_tensor_v2 (a dict) and the `<dir>/byteorder` member.
import collections, pickle

class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel

class Tensor:
    def __init__(self, storage, size):
        self.storage, self.size = storage, size
    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.size, (1,), False, collections.OrderedDict(), {}))

class Parameter:
    def __init__(self, tensor):
        self.tensor = tensor
    def __reduce__(self):
        return (torch._utils._rebuild_parameter, (self.tensor, True, collections.OrderedDict()))

class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None

buf = io.BytesIO()
Pickler(buf, protocol=2).dump({"w": Tensor(Storage("0", 3), (3,)),
                               "p": Parameter(Tensor(Storage("1", 2), (2,))),
                               "meta": {"epoch": 1, "names": ["a", None]}})
archive = io.BytesIO()
with zipfile.ZipFile(archive, "w") as z:
    z.writestr("pt2/data.pkl", buf.getvalue())
    z.writestr("pt2/byteorder", "little")
    z.writestr("pt2/data/0", bytes(12))
    z.writestr("pt2/data/1", bytes(8))
    z.writestr("pt2/version", "3\n")
put("pt2_style.pt", archive.getvalue())

# Every archive's data.pkl alone, too: the pickle reader without a zip around it.
for name in sorted(os.listdir(out)):
    if name.endswith(".pt"):
        with zipfile.ZipFile(os.path.join(out, name)) as z:
            for member in z.namelist():
                if member.endswith("/data.pkl"):
                    put(name[:-3] + ".pkl", z.read(member))
PY
}

idx_seeds() {
  "$python" - "$1" <<'PY'
import gzip, os, random, struct, sys

out = sys.argv[1]
fashion = "/usr/share/datasets/fashion-mnist"

def put(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

def idx(type_code, dims, data):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + data

# A few real images and labels when Debian's dataset-fashion-mnist is there, else noise.
count = 3
try:
    with gzip.open(os.path.join(fashion, "t10k-images-idx3-ubyte.gz")) as f:
        pixels = f.read(16 + count * 784)[16:]
    with gzip.open(os.path.join(fashion, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read(8 + 20)[8:]
except OSError:
    rng = random.Random(0)
    pixels = bytes(rng.randrange(256) for _ in range(count * 784))
    labels = bytes(rng.randrange(10) for _ in range(20))

images = idx(0x08, [count, 28, 28], pixels)
label_file = idx(0x08, [len(labels)], labels)
small = idx(0x08, [2, 3, 4], bytes(range(24)))
for name, data in {
    "images": images, "labels": label_file, "small": small,
    "zero_images": idx(0x08, [0, 28, 28], b""),
    "truncated": images[:200], "trailing": label_file + b"\x00\x01",
    "float_type": idx(0x0D, [1, 2, 2], bytes(16)), "two_dims": idx(0x08, [2, 2], bytes(4)),
}.items():
    put(name + ".idx", data)
    put(name + ".idx.gz", gzip.compress(data, mtime=0))
put("two_members.gz", gzip.compress(small[:9], mtime=0) + gzip.compress(small[9:], mtime=0))
PY
}

seeds=$state_dir/seeds
if [[ ! -f $seeds/.complete || ${BASH_SOURCE[0]} -nt $seeds/.complete ]]; then
  rm -rf "$seeds"
  mkdir -p "$seeds"
  if ! "${target}_seeds" "$seeds" >"$state_dir/seeds.log" 2>&1; then
    cat "$state_dir/seeds.log" >&2
    echo "fuzz: making the seed corpus with $python failed" >&2
    exit 1
  fi
  touch "$seeds/.complete"
fi

# Tokens of the formats, so mutations reach past the signature and header checks.
dict=$state_dir/$target.dict
if [[ $target == idx ]]; then
  cat >"$dict" <<'EOF'
images_magic="\x00\x00\x08\x03"
labels_magic="\x00\x00\x08\x01"
float_magic="\x00\x00\x0d\x03"
gzip_magic="\x1f\x8b\x08\x00"
dim_28="\x00\x00\x00\x1c"
dim_max="\xff\xff\xff\xff"
EOF
elif [[ $target == pickle ]]; then
  cat >"$dict" <<'EOF'
proto="\x80\x02"
rebuild="ctorch._utils\x0a_rebuild_tensor_v2\x0a"
ordered_dict="ccollections\x0aOrderedDict\x0a"
float_storage="ctorch\x0aFloatStorage\x0a"
long_storage="ctorch\x0aLongStorage\x0a"
module="c__torch__\x0aModule\x0a"
storage="X\x07\x00\x00\x00storage"
cpu="X\x03\x00\x00\x00cpu"
newobj=")\x81}("
setitems_build="ub."
reduce=")R"
binpersid="tQ"
long1="\x8a\x08"
long_binput="r"
data_pkl="archive/data.pkl"
data_dir="archive/data/"
byteorder="archive/byteorder"
little="little"
empty_list="]"
appends="e"
append="a"
list="l"
binget="h"
binput="q"
none="N"
jit_pickle="torch.jit._pickle"
build_intlist="build_intlist"
restore_type_tag="restore_type_tag"
rebuild_parameter="_rebuild_parameter"
global_intlist="ctorch.jit._pickle\x0abuild_intlist\x0a"
global_tensorlist="ctorch.jit._pickle\x0abuild_tensorlist\x0a"
global_type_tag="ctorch.jit._pickle\x0arestore_type_tag\x0a"
global_parameter="ctorch._utils\x0a_rebuild_parameter\x0a"
local_header="PK\x03\x04"
central_header="PK\x01\x02"
end_record="PK\x05\x06"
EOF
else
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
fi

# 3. The run. The corpus directory comes first so that new inputs are saved there.
corpus=$state_dir/corpus
artifacts=$state_dir/artifacts
log=$state_dir/fuzz.log
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
echo "fuzz: $target: $runs runs in $secs s, no crash ($(find "$corpus" -type f | wc -l) corpus files, $cxx)"
