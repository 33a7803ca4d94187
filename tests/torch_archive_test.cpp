// Tests of reading LibTorch archives without LibTorch's reader (torch_archive.h, savefun.h),
// of the encoded keys of both savefuns, of the checked snapshot metadata (snapshot_file.h),
// and probes with crafted archives: each must be a tth::FormatError naming the file through
// every reader (read_snapshot, verify_file, autoload, `tth verify`, `tth convert`), never a
// crash, never garbage. Oracles: /usr/bin/python3 with torch 1.13 (torch.jit.load,
// torch.save, pickle) and numpy 1.24.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <future>
#include <sstream>

#include "support.h"
#include "test_programs.h"

namespace tth {
namespace {

namespace fs = std::filesystem;
using test::CapturedWarnings;
using test::python;
using test::read_file;
using test::run_command;
using test::same_tensor;
using test::shell_quote;
using test::TempDir;
using test::Training;

// Every printable ASCII character but '/' (the key separator), then é, 中 and an emoji.
std::string every_character_name() {
  std::string name;
  for (char c = ' '; c <= '~'; ++c) {
    if (c != '/') name += c;
  }
  return name + "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80";
}

std::string hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> sorted_hex_keys(const StateDict& state, bool tensors_only) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : state) {
    if (!tensors_only || std::holds_alternative<at::Tensor>(value)) keys.push_back(hex(key));
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

// Same keys in the same order, same values; the training clock (which runs on between two
// state_dict calls) only by key.
// Runs `commands` (each as run_command does), four at a time: the tool loads LibTorch, which
// takes most of a second per process.
std::vector<test::CommandResult> run_all(const std::vector<std::string>& commands) {
  constexpr std::size_t kParallel = 4;
  std::vector<test::CommandResult> results;
  for (std::size_t start = 0; start < commands.size(); start += kParallel) {
    std::vector<std::future<test::CommandResult>> running;
    for (std::size_t i = start; i < std::min(commands.size(), start + kParallel); ++i) {
      running.push_back(std::async(std::launch::async, run_command, commands[i]));
    }
    for (auto& result : running) results.push_back(result.get());
  }
  return results;
}

void expect_same_state(const StateDict& got, const StateDict& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& [key, value] = got.entries()[i];
    EXPECT_EQ(key, expected.entries()[i].first);
    if (key == "manager/elapsed_time") continue;
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      EXPECT_TRUE(same_tensor(*tensor, expected.tensor(key))) << key;
    } else {
      EXPECT_EQ(std::get<std::string>(value), expected.text(key)) << key;
    }
  }
}

// ---- reading what torch_savefun writes ----

TEST(TorchArchive, EveryDtypeShapeViewAndTextRoundTripsWithSharedStorages) {
  TempDir dir;
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  const at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6});
  state.set("float", base);
  state.set("transposed", base.t());                       // non-contiguous
  state.set("narrowed", base.narrow(1, 2, 3));             // offset and strides into `base`
  state.set("expanded", at::ones({1, 3}).expand({4, 3}));  // stride 0
  for (const auto dtype :
       {at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
        at::kByte, at::kBool, at::kComplexFloat, at::kComplexDouble}) {
    state.set(std::string("dtype/") + c10::toString(dtype),
              at::arange(6).reshape({2, 3}).to(dtype));
    state.set(std::string("scalar/") + c10::toString(dtype), at::tensor(1).to(dtype).reshape({}));
  }
  state.set("empty", at::zeros({0, 3}));
  state.set_int("int", -(int64_t{1} << 40));
  state.set_double("nan", std::nan(""));
  state.set("text", std::string("{\"log\": [1, \"\xc3\xa9\xe4\xb8\xad\"]}"));
  state.set("empty text", std::string());
  torch_savefun()(dir / "all.pt", state);
  EXPECT_EQ(verify_file(dir / "all.pt"), FileFormat::kTorchArchive);
  const StateDict back = torch_loadfun()(dir / "all.pt");
  ASSERT_EQ(back.size(), state.size());
  for (std::size_t i = 0; i < back.size(); ++i) {
    const auto& [key, value] = back.entries()[i];
    EXPECT_EQ(key, state.entries()[i].first);
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      const at::Tensor& expected = state.tensor(key);
      EXPECT_EQ(tensor->scalar_type(), expected.scalar_type()) << key;
      EXPECT_EQ(tensor->sizes(), expected.sizes()) << key;
      EXPECT_EQ(tensor->strides(), expected.strides()) << key;  // views come back as views
      if (expected.scalar_type() == at::kDouble && expected.dim() == 0 && key == "nan") {
        EXPECT_TRUE(std::isnan(tensor->item<double>()));
      } else {
        EXPECT_TRUE(tensor->equal(expected)) << key;
      }
    } else {
      EXPECT_EQ(std::get<std::string>(value), state.text(key));
    }
  }
  // One buffer per storage, shared as LibTorch shares it.
  EXPECT_TRUE(back.tensor("transposed").is_alias_of(back.tensor("float")));
  EXPECT_TRUE(back.tensor("narrowed").is_alias_of(back.tensor("float")));
  EXPECT_EQ(back.tensor("narrowed").storage_offset(), 2);
}

TEST(TorchArchive, ReadsPythonTorchSaveAndJitSaveAndPythonReadsOurs) {
  TempDir dir;
  const std::string script = dir / "make.py";
  const std::string source = R"(
import sys, torch
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        self.register_buffer('steps', torch.tensor([3, 4]))
        self.n = 7
        self.x = 0.5
        self.name = 'hello'
    def forward(self, x):
        return x
torch.jit.save(torch.jit.script(M()), sys.argv[1])
torch.save({'a': torch.arange(5, dtype=torch.float64)[1:4], 'b': torch.tensor(True), 'c': 3},
           sys.argv[2])
)";
  test::write_file(script, test::Bytes(source.begin(), source.end()));
  python("import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0])",
         {script, dir / "jit.pt", dir / "dict.pt"});
  const StateDict module = torch_loadfun()(dir / "jit.pt");
  EXPECT_TRUE(same_tensor(module.tensor("w"), at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_TRUE(same_tensor(module.tensor("steps"), at::tensor({3, 4}, at::kLong)));
  EXPECT_EQ(module.get_int("n"), 7);
  EXPECT_EQ(module.get_double("x"), 0.5);
  EXPECT_TRUE(module.get_bool("training"));
  EXPECT_EQ(module.text("name"), "hello");
  EXPECT_FALSE(module.tensor("w").requires_grad());
  const StateDict dict = torch_loadfun()(dir / "dict.pt");
  EXPECT_TRUE(same_tensor(dict.tensor("a"), at::arange(1, 4, at::kDouble)));
  EXPECT_TRUE(dict.get_bool("b"));
  EXPECT_EQ(dict.get_int("c"), 3);

  StateDict ours;
  ours.set("models/main/w", at::arange(4, at::kBFloat16));
  ours.set("t", std::string("x"));
  torch_savefun()(dir / "ours.pt", ours);
  EXPECT_EQ(python(R"(
import sys, torch
m = torch.jit.load(sys.argv[1])
print(getattr(m, 'models/main/w').float().tolist(), m.t)
)",
                   {dir / "ours.pt"}),
            "[0.0, 1.0, 2.0, 3.0] x\n");
}

// ---- keys: every character, both savefuns, through a whole training state ----

class Counter : public Extension {
 public:
  void operator()(TorchTrainerHook&) override { ++count; }
  StateDict state_dict() const override {
    StateDict state;
    state.set_int("count", count);
    state.set("quote\"back\\slash\nnewline %41", std::string("\xc3\xa9"));
    return state;
  }
  void load_state_dict(const StateDict& state) override { count = state.get_int("count"); }
  int64_t count = 0;
};

class Box : public Stateful {
 public:
  StateDict state_dict() const override {
    StateDict state;
    state.set("value", value);
    return state;
  }
  void load_state_dict(const StateDict& state) override { value = state.tensor("value").clone(); }
  at::Tensor value = at::zeros({2});
};

struct NamedSetup {
  NamedSetup(const std::string& out, const std::string& name, int64_t seed) {
    torch::manual_seed(seed);
    model = torch::nn::Linear(3, 2);
    optimizer =
        std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.1));
    hook = std::make_unique<TorchTrainerHook>(HookOptions(2).out(out));
    hook->add_model(name, model);
    hook->add_optimizer(name, optimizer);
    hook->add_state(name, box);
    hook->extend(counter, ExtendOptions().name(name).trigger({1, iteration}));
  }
  void step() {
    hook->run_iteration([&] {
      optimizer->zero_grad();
      model->forward(torch::randn({4, 3})).pow(2).mean().backward();
      optimizer->step();
      box->value += 1;
    });
  }
  torch::nn::Linear model{nullptr};
  std::shared_ptr<torch::optim::Adam> optimizer;
  std::shared_ptr<Box> box = std::make_shared<Box>();
  std::shared_ptr<Counter> counter = std::make_shared<Counter>();
  std::unique_ptr<TorchTrainerHook> hook;
};

TEST(ArchiveKeys, NamesWithEveryCharacterRoundTripInBothFormatsAndInPython) {
  TempDir dir;
  const std::string name = every_character_name();
  StateDict saved;
  {
    NamedSetup setup(dir / "run", name, 0);
    setup.hook->extend(snapshot(SnapshotOptions().filename("t_{iteration}")),
                       ExtendOptions().trigger({1, iteration}));
    setup.hook->extend(snapshot(SnapshotOptions().filename("n_{iteration}").savefun(npz_savefun())),
                       ExtendOptions().trigger({1, iteration}));
    setup.step();
    setup.step();
    saved = setup.hook->state_dict();
    EXPECT_TRUE(saved.contains("models/" + name + "/weight"));
    EXPECT_TRUE(saved.contains("extensions/" + name + "/quote\"back\\slash\nnewline %41"));
  }
  for (const std::string file : {"t_2", "n_2"}) {
    SCOPED_TRACE(file);
    const StateDict back = without_metadata(read_snapshot(dir / ("run/" + file)));
    expect_same_state(back, saved);
  }
  // Python: torch.jit.load lists the tensors under their encoded names, which unquote to the
  // keys; np.load lists every key as it is.
  const std::string out = python(R"(
import sys, urllib.parse, torch, numpy as np
m = torch.jit.load(sys.argv[1])
for n, _ in m.named_parameters():
    print('torch', urllib.parse.unquote(n).encode('utf-8').hex())
for n in np.load(sys.argv[2]).files:
    print('numpy', n.encode('utf-8').hex())
)",
                                 {dir / "run/t_2", dir / "run/n_2"});
  std::vector<std::string> torch_keys, numpy_keys;
  for (const std::string& line : lines(out)) {
    if (line.rfind("torch ", 0) == 0) torch_keys.push_back(line.substr(6));
    if (line.rfind("numpy ", 0) == 0) numpy_keys.push_back(line.substr(6));
  }
  StateDict with_metadata = saved;
  with_metadata.set_int(kFormatVersionKey, 0);
  with_metadata.set_int(kIterationKey, 0);
  std::sort(torch_keys.begin(), torch_keys.end());
  std::sort(numpy_keys.begin(), numpy_keys.end());
  EXPECT_EQ(torch_keys, sorted_hex_keys(with_metadata, /*tensors_only=*/true));
  EXPECT_EQ(numpy_keys, sorted_hex_keys(with_metadata, /*tensors_only=*/false));

  // Autoload of the whole state into a fresh setup with the same names, from each format.
  for (const std::string file : {"t_", "n_"}) {
    SCOPED_TRACE(file);
    NamedSetup resumed(dir / "run", name, /*seed=*/5);
    auto options = SnapshotOptions().filename(file + "{iteration}").autoload(true);
    if (file == "n_") options.savefun(npz_savefun());
    // Both snapshot extensions again, with their triggers (their state is in the files).
    auto snap = snapshot(options);
    auto other =
        snapshot(SnapshotOptions().filename(file == "t_" ? "n_{iteration}" : "t_{iteration}"));
    if (file == "t_") {
      resumed.hook->extend(snap, ExtendOptions().trigger({1, iteration}));
      resumed.hook->extend(other, ExtendOptions().trigger({1, iteration}));
    } else {
      resumed.hook->extend(other, ExtendOptions().trigger({1, iteration}));
      resumed.hook->extend(snap, ExtendOptions().trigger({1, iteration}));
    }
    resumed.hook->start();
    ASSERT_TRUE(snap->loaded_path());
    EXPECT_EQ(*snap->loaded_path(), dir / ("run/" + file + "2"));
    EXPECT_EQ(resumed.hook->iteration(), 2);
    EXPECT_EQ(resumed.counter->count, 2);
    expect_same_state(resumed.hook->state_dict(), saved);
  }
}

TEST(ArchiveKeys, VersionOneStatesAreWrittenAndReadWithRawKeys) {
  TempDir dir;
  StateDict v1;
  v1.set_int(kFormatVersionKey, 1);
  v1.set("x%41", at::ones({1}));
  torch_savefun()(dir / "v1.pt", v1);
  EXPECT_TRUE(read_snapshot(dir / "v1.pt").contains("x%41"));  // not decoded to "xA"
  StateDict v2 = v1;
  v2.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  torch_savefun()(dir / "v2.pt", v2);
  EXPECT_TRUE(read_snapshot(dir / "v2.pt").contains("x%41"));  // encoded as x%2541
  EXPECT_EQ(python("import sys, torch\nprint([n for n, _ in "
                   "torch.jit.load(sys.argv[1]).named_parameters()])",
                   {dir / "v2.pt"}),
            "['tth/format_version', 'x%2541']\n");
  v1.set("ma\"in", at::ones({1}));
  EXPECT_THROW_WITH(torch_savefun()(dir / "bad.pt", v1), Error,
                    "torch_savefun: key 'ma\"in' must be encoded");
}

// archive_state round-trips its object's own bytes through LibTorch's InputArchive, which
// compiles the key names; a non-strict load hands it the file's extra keys too.
TEST(ArchiveState, KeysFromAFileNeverReachLibTorchsReader) {
  auto sampler = std::make_shared<torch::data::samplers::RandomSampler>(10);
  TorchTrainerHook hook(HookOptions(2));
  hook.add_state("sampler", archive_state(sampler));
  StateDict state = hook.state_dict();
  const std::string extra = "state/sampler/x\")\n" + std::string(1000, '(');
  state.set(extra, at::ones({1}));
  CapturedWarnings warnings;
  const IncompatibleKeys left_out = hook.load_state_dict(state, /*strict=*/false);
  EXPECT_EQ(left_out.unexpected_keys, std::vector<std::string>{extra});
}

// ---- metadata read with checked conversions ----

TEST(SnapshotMetadata, AnythingButA0dIntegerInRangeIsAFormatErrorNamingFileAndKey) {
  TempDir dir;
  const std::string tool = TTH_TOOL;
  const std::vector<std::pair<std::string, StateValue>> bad = {
      {"1e300", torch::full({}, 1e300, torch::kDouble)},
      {"nan", torch::full({}, std::nan(""), torch::kDouble)},
      {"float", torch::full({}, 3.0, torch::kFloat)},
      {"complex", torch::full({}, c10::complex<double>(1, 2), torch::kComplexDouble)},
      {"text", std::string("7")},
      {"vector", torch::full({1}, 7, torch::kLong)},
      {"bool", torch::full({}, true, torch::kBool)},
      {"negative", torch::full({}, -3, torch::kLong)},
  };
  std::vector<std::string> paths;
  for (const char* key : {kIterationKey, kFormatVersionKey}) {
    for (const auto& [what, value] : bad) {
      for (const bool npz : {false, true}) {
        const std::string path = dir / fmt::format("{}_{}_{}", key[4], what, npz ? "npz" : "pt");
        SCOPED_TRACE(path);
        StateDict state;
        state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
        state.set_int(kIterationKey, 3);
        state.set("models/main/w", at::ones({2}));
        state.set(key, value);
        (npz ? npz_savefun() : torch_savefun())(path, state);
        paths.push_back(path);
        try {
          read_snapshot(path);
          ADD_FAILURE() << "read";
        } catch (const FormatError& error) {
          EXPECT_THAT(error.what(), ::testing::HasSubstr("'" + path + "'"));
          if (what != "negative") EXPECT_THAT(error.what(), ::testing::HasSubstr(key));
        }
      }
    }
  }
  ASSERT_EQ(paths.size(), 32u);
  std::vector<std::string> commands;
  for (const auto& path : paths) commands.push_back(tool + " inspect " + shell_quote(path));
  const auto inspected = run_all(commands);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const auto& inspect = inspected[i];
    EXPECT_EQ(inspect.exit_code, 1) << inspect.output;  // not a signal
    EXPECT_THAT(inspect.output, ::testing::HasSubstr("tth: '" + paths[i] + "'"));
    EXPECT_THAT(inspect.output, ::testing::Not(::testing::HasSubstr("terminate")));
  }
  // Integers of any integer dtype are fine.
  StateDict state;
  state.set(kFormatVersionKey, torch::full({}, kSnapshotFormatVersion, torch::kInt));
  state.set(kIterationKey, torch::full({}, 9, torch::kShort));
  npz_savefun()(dir / "ok", state);
  EXPECT_EQ(read_snapshot(dir / "ok").get_int(kIterationKey), 9);
}

// ---- crafted archives ----

// A real snapshot of a small training run.

// Writes one crafted archive per case into argv[2] from the real snapshot argv[1], each with
// correct CRC-32s (zipfile writes them), and prints the case names. The tensor attacked is
// models/main/0.weight: Float[4, 3], strides (3, 1), a storage of 12 elements.
constexpr const char* kCraft = R"py(
import os, struct, sys, zipfile, pickletools
source, out, marker = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(source) as z:
    members = {n: z.read(n) for n in z.namelist()}
pkl = members['archive/data.pkl']
ops = list(pickletools.genops(pkl))
spans = [(op.name, arg, pos, ops[i + 1][2] if i + 1 < len(ops) else len(pkl))
         for i, (op, arg, pos) in enumerate(ops)]
def find(name, arg, start=0):
    return next(i for i, s in enumerate(spans) if i >= start and s[0] == name and arg(s[1]))
def after(i, name):
    while spans[i][0] != name:
        i += 1
    return i
def value_after(i):  # the next op after i that is not a BINPUT
    i += 1
    while spans[i][0] in ('BINPUT', 'LONG_BINPUT'):
        i += 1
    return i
key = find('BINUNICODE', lambda a: a == 'models/main/0.weight')
pid = after(key, 'BINPERSID')
storage_key_op = max(i for i in range(key, pid)
                     if spans[i][0] == 'BINUNICODE' and spans[i][1].isdigit())
storage_key = spans[storage_key_op][1]
numel_op = max(i for i in range(key, pid) if spans[i][0].startswith('BININT'))
type_op = storage_key_op - 1
while spans[type_op][0] in ('BINPUT', 'LONG_BINPUT'):
    type_op -= 1
offset_op = value_after(pid)
size_op = offset_op + 2   # MARK, then the first size
stride_op = after(size_op, 'TUPLE') + 2
next_key = find('BINUNICODE', lambda a: a == 'models/main/0.bias', key)
first_binput = after(0, 'BINPUT')
first_binget = after(0, 'BINGET')
rebuild = find('GLOBAL', lambda a: a == 'torch._utils _rebuild_tensor_v2')

def patch(*edits):
    data, shift = pkl, 0
    for index, new in sorted(edits):
        a, b = spans[index][2] + shift, spans[index][3] + shift
        data = data[:a] + new + data[b:]
        shift += len(new) - (b - a)
    return data
def binint(n): return b'J' + struct.pack('<i', n)
def long1(n): return b'\x8a\x08' + struct.pack('<q', n)
def uni(s):
    s = s.encode()
    return b'X' + struct.pack('<I', len(s)) + s
def glob(m, n): return b'c' + m.encode() + b'\n' + n.encode() + b'\n'
module_open = b'\x80\x02' + glob('__torch__', 'Module') + b')\x81}('
module_close = b'ub.'
cmd = 'touch ' + marker
system = b'\x80\x02' + glob('os', 'system') + uni(cmd) + b'\x85R.'
python_eval = "__import__('os').system('" + cmd + "')"
weight = 'data/' + storage_key

cases = {
    'offset_200': {'data.pkl': patch((offset_op, binint(200)))},
    'offset_2e9': {'data.pkl': patch((offset_op, binint(2000000000)))},
    'offset_negative': {'data.pkl': patch((offset_op, binint(-1)))},
    'sizes_past_end': {'data.pkl': patch((size_op, b'K\x05'))},
    'strides_past_end': {'data.pkl': patch((stride_op, b'K\x04'))},
    'stride_negative': {'data.pkl': patch((stride_op, binint(-3)))},
    'size_negative': {'data.pkl': patch((size_op, binint(-4)))},
    'sizes_overflow': {'data.pkl': patch((size_op, long1(2 ** 62)), (stride_op, long1(2 ** 62)))},
    'numel_larger': {'data.pkl': patch((numel_op, b'K\x0d'))},
    'numel_huge': {'data.pkl': patch((numel_op, long1(2 ** 62)))},
    'numel_negative': {'data.pkl': patch((numel_op, binint(-12)))},
    'storage_missing': {weight: None},
    'storage_short': {weight: members['archive/' + weight][:40]},
    'storage_long': {weight: members['archive/' + weight] + b'\0' * 4},
    'storage_key_escape': {'data.pkl': patch((storage_key_op, uni('../code/__torch__.py')))},
    'storage_type_quantized': {'data.pkl': patch((type_op, glob('torch', 'QInt8Storage')))},
    'storage_type_double': {'data.pkl': patch((type_op, glob('torch', 'DoubleStorage')))},
    'global_rebuild_parameter':
        {'data.pkl': patch((rebuild, glob('torch._utils', '_rebuild_parameter')))},
    'global_os_system': {'data.pkl': system},
    'global_posix_system': {'data.pkl': module_open + uni('w') + glob('posix', 'system') +
                            uni(cmd) + b'\x85R' + module_close},
    'global_builtins_eval':
        {'data.pkl': b'\x80\x02' + glob('builtins', 'eval') + uni(python_eval) + b'\x85R.'},
    'global_builtins_getattr':
        {'data.pkl': b'\x80\x02' + glob('builtins', 'getattr') + glob('os', 'system') +
                     uni('x') + b'\x86R.'},
    'deep_marks': {'data.pkl': b'\x80\x02' + b'(' * 100000 + b')' + b't' * 100000 + b'.'},
    'deep_tuples': {'data.pkl': b'\x80\x02)' + b'\x85' * 100000 + b'.'},
    'deep_lists': {'data.pkl': b'\x80\x02' + b']' * 100000 + b'a' * 99999 + b'.'},
    'deep_dicts': {'data.pkl': b'\x80\x02}q\x00' + (uni('k') + b'h\x00s') * 100000 + b'.'},
    'memo_huge_put': {'data.pkl': patch((first_binput, b'r\xff\xff\xff\xff'))},
    'memo_huge_get': {'data.pkl': patch((first_binget, b'j\xff\xff\xff\x7f'))},
    'truncated_half': {'data.pkl': pkl[:len(pkl) // 2]},
    'truncated_last_byte': {'data.pkl': pkl[:-1]},
    'truncated_string': {'data.pkl': pkl[:spans[key][2] + 3]},
    'trailing_bytes': {'data.pkl': pkl + b'N'},
    'protocol_4': {'data.pkl': b'\x80\x04' + pkl[2:]},
    'protocol_0_opcode': {'data.pkl': patch((offset_op, b'I0\n'))},
    'not_a_module': {'data.pkl': b'\x80\x02K\x01.'},
    'duplicate_key': {'data.pkl': patch((next_key, uni('models/main/0.weight')))},
    'decoded_duplicate_key': {'data.pkl': patch((next_key, uni('models%2Fmain%2F0.weight')))},
    'attribute_global': {'data.pkl': module_open + uni('w') + b'ctorch\nFloatStorage\n' +
                         module_close},
    'no_data_pkl': {'data.pkl': None, 'data.pickle': pkl},
    'two_data_pkl': {'../other/data.pkl': pkl},
    'empty_data_pkl': {'data.pkl': b''},
}
def write(path, files):
    with zipfile.ZipFile(path, 'w') as z:
        for member, data in files.items():
            z.writestr(member, data)
for name, changes in cases.items():
    files = dict(members)
    for member, data in changes.items():
        path = os.path.normpath('archive/' + member)
        if data is None:
            del files[path]
        else:
            files[path] = data
    write(os.path.join(out, name), files)
    print(name)
# Code is never compiled now: 100,000 nested parentheses in it change nothing.
files = dict(members)
files['archive/code/__torch__.py'] = b'(' * 100000 + b')' * 100000
write(os.path.join(out, '..', 'nested_code'), files)
# The payloads are live: Python's own unpickler runs this one (touching another marker).
import pickle
try:
    pickle.loads(system.replace(uni(cmd), uni(cmd + '.python')))
except Exception:
    pass
)py";

TEST(CraftedArchive, EveryProbeIsAFormatErrorNamingTheFileInEveryReaderAndNeverACrash) {
  TempDir dir;
  {
    Training setup(dir / "good");
    setup.hook->extend(snapshot(), ExtendOptions().trigger({1, iteration}));
    setup.step();  // good/snapshot_iter_1
  }
  const std::string good = dir / "good/snapshot_iter_1";
  fs::create_directories(dir / "crafted");
  const std::string marker = dir / "pwned";
  const std::vector<std::string> cases = lines(python(kCraft, {good, dir / "crafted", marker}));
  ASSERT_GE(cases.size(), 40u);
  EXPECT_TRUE(fs::exists(marker + ".python"));

  int crashed = 0;
  std::string verify_args;
  for (const std::string& name : cases) {
    SCOPED_TRACE(name);
    const std::string path = dir / ("crafted/" + name);
    verify_args += " " + shell_quote(path);
    EXPECT_THROW_WITH(read_snapshot(path), FormatError, "'" + path + "'");
    if (name != "no_data_pkl") {  // a zip of other members: nothing to check but the CRCs
      EXPECT_THROW_WITH(verify_file(path), FormatError, "'" + path + "'");
    }
    // Autoload: the crafted file is the newest; it is skipped with a warning naming it.
    const std::string run = dir / ("autoload_" + name);
    fs::create_directories(run);
    fs::copy_file(good, run + "/snapshot_iter_1");
    fs::copy_file(path, run + "/snapshot_iter_9");
    CapturedWarnings warnings;
    Training resumed(run, /*seed=*/3);
    auto snap = snapshot(SnapshotOptions().autoload(true));
    resumed.hook->extend(snap, ExtendOptions().trigger({1, iteration}));
    resumed.hook->start();
    ASSERT_TRUE(snap->loaded_path());
    EXPECT_EQ(*snap->loaded_path(), run + "/snapshot_iter_1");
    EXPECT_TRUE(warnings.contains("autoload skips '" + run + "/snapshot_iter_9'"));
  }
  // The tool, in other processes: a crash would be a signal, not exit status 1.
  const std::string tool = TTH_TOOL;
  const auto verify = run_command(tool + " verify" + verify_args);
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  if (verify.exit_code != 1) ++crashed;
  for (const std::string& name : cases) {
    EXPECT_THAT(verify.output,
                ::testing::HasSubstr("FAILED " + (dir / ("crafted/" + name)) + ": "));
  }
  std::vector<std::string> commands;
  for (const std::string& name : cases) {
    commands.push_back(tool + " convert " + shell_quote(dir / ("crafted/" + name)) + " " +
                       shell_quote(dir / (name + ".npz")));
  }
  const auto converted = run_all(commands);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& convert = converted[i];
    EXPECT_EQ(convert.exit_code, 1) << cases[i] << ": " << convert.output;
    if (convert.exit_code != 1) ++crashed;
    EXPECT_THAT(convert.output, ::testing::StartsWith("tth: ")) << cases[i];
    EXPECT_THAT(convert.output, ::testing::HasSubstr("'" + (dir / ("crafted/" + cases[i])) + "'"));
    EXPECT_FALSE(fs::exists(dir / (cases[i] + ".npz"))) << cases[i];
  }
  EXPECT_FALSE(fs::exists(marker));  // no payload ran
  EXPECT_EQ(crashed, 0);
  std::cout << "crafted archives tried: " << cases.size() << " (each through read_snapshot, "
            << "verify_file, autoload, tth verify, tth convert); crashed: " << crashed << "\n";

  // 100,000 nested parentheses in the archive's code: irrelevant, the code is never compiled.
  const StateDict nested = read_snapshot(dir / "nested_code");
  expect_same_state(nested, read_snapshot(good));
}

}  // namespace
}  // namespace tth
