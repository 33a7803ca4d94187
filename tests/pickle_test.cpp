// Tests of the restricted pickle reader and the tensor-archive layout (container/pickle.h),
// LibTorch-free: they also run under ASan/UBSan (tth_container_tests_asan). The oracles are
// the real writers: /usr/bin/python3's torch.jit.save and torch.save (torch 1.13) and
// pickletools; the refusals are hand-made byte sequences, each of which a general unpickler
// would accept (or crash on).
#include "container/pickle.h"

#include <fcntl.h>

#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "container/zip_reader.h"
#include "container/zip_writer.h"
#include "posix_file.h"
#include "test_util.h"
#include "tth/error.h"

namespace tth::container {
namespace {

using test::python;
using test::TempDir;
using ::testing::HasSubstr;

// Builds pickles opcode by opcode, as LibTorch's pickler writes them.
class Pickle {
 public:
  Pickle& raw(const std::string& bytes) {
    bytes_ += bytes;
    return *this;
  }
  Pickle& op(uint8_t code) {
    bytes_ += static_cast<char>(code);
    return *this;
  }
  Pickle& proto() { return op(0x80).op(2); }
  Pickle& str(const std::string& text) {
    op('X');
    le32(static_cast<uint32_t>(text.size()));
    return raw(text);
  }
  Pickle& int1(uint8_t value) { return op('K').op(value); }
  Pickle& int4(int32_t value) {
    op('J');
    return le32(static_cast<uint32_t>(value));
  }
  // LONG1 with the minimal two's complement bytes of `value`, as Python writes it.
  Pickle& long1(int64_t value) {
    std::string bytes;
    for (int i = 0; i < 8; ++i)
      bytes += static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff);
    while (bytes.size() > 1) {
      const auto last = static_cast<uint8_t>(bytes.back());
      const auto before = static_cast<uint8_t>(bytes[bytes.size() - 2]);
      if ((last == 0 && (before & 0x80) == 0) || (last == 0xff && (before & 0x80) != 0)) {
        bytes.pop_back();
      } else {
        break;
      }
    }
    op(0x8a).op(static_cast<uint8_t>(bytes.size()));
    return raw(bytes);
  }
  // An int the way Python picks the opcode.
  Pickle& integer(int64_t value) {
    if (value >= 0 && value < 256) return int1(static_cast<uint8_t>(value));
    if (value >= INT32_MIN && value <= INT32_MAX) return int4(static_cast<int32_t>(value));
    return long1(value);
  }
  Pickle& global(const std::string& module, const std::string& name) {
    return op('c').raw(module + "\n" + name + "\n");
  }
  Pickle& mark() { return op('('); }
  Pickle& tuple() { return op('t'); }
  Pickle& ints(const std::vector<int64_t>& values) {
    mark();
    for (int64_t v : values) integer(v);
    return tuple();
  }
  // BINFLOAT: the double's bits, big-endian.
  Pickle& real(double value) {
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof bits);
    op('G');
    for (int i = 7; i >= 0; --i) bytes_ += static_cast<char>((bits >> (8 * i)) & 0xff);
    return *this;
  }
  Pickle& put(uint8_t index) { return op('q').op(index); }  // BINPUT
  Pickle& get(uint8_t index) { return op('h').op(index); }  // BINGET
  // _rebuild_tensor_v2((storage, type, key, 'cpu', numel), offset, sizes, strides, False, {}
  // [, extra]): `extra`, when not empty, is the pickled seventh argument.
  Pickle& tensor(const std::string& key, const std::string& type, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides,
                 const std::string& extra = "") {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    mark().str("storage").global("torch", type).str(key).str("cpu").integer(numel).tuple();
    op('Q').integer(offset).ints(sizes).ints(strides).op(0x89);
    global("collections", "OrderedDict").op(')').op('R');
    return raw(extra).tuple().op('R');
  }
  // _rebuild_parameter(<tensor>, True, OrderedDict()), as torch.save writes an nn.Parameter.
  Pickle& parameter(const std::string& key, int64_t numel, const std::vector<int64_t>& sizes,
                    const std::vector<int64_t>& strides) {
    global("torch._utils", "_rebuild_parameter");
    tensor(key, "FloatStorage", numel, 0, sizes, strides).op(0x88);
    return global("collections", "OrderedDict").op(')').op('R').op(0x87).op('R');
  }
  // A __torch__ object: NEWOBJ, then BUILD with the dict of the attributes pushed between
  // begin_object() and end_object() (name, value, name, value, ...).
  Pickle& begin_object(const std::string& name) {
    return global("__torch__", name).op(')').op(0x81).op('}').mark();
  }
  Pickle& end_object() { return op('u').op('b'); }
  // A dict or list of the values pushed between begin and end.
  Pickle& begin_dict() { return op('}').mark(); }
  Pickle& end_dict() { return op('u'); }
  Pickle& begin_list() { return op(']').mark(); }
  Pickle& end_list() { return op('e'); }
  // torch.jit._pickle.<builder>((<list>,)) around the list's items pushed in between.
  Pickle& begin_typed_list(const std::string& builder) {
    return global("torch.jit._pickle", builder).mark().begin_list();
  }
  Pickle& end_typed_list() { return end_list().tuple().op('R'); }
  // The opening and closing of a module object, as torch_savefun writes it.
  Pickle& begin_module() {
    return proto().global("__torch__", "Module").op(')').op(0x81).op('}').mark();
  }
  Pickle& end_module() { return op('u').op('b').op('.'); }

  const std::string& bytes() const { return bytes_; }

 private:
  Pickle& le32(uint32_t value) {
    for (int i = 0; i < 4; ++i) bytes_ += static_cast<char>((value >> (8 * i)) & 0xff);
    return *this;
  }
  std::string bytes_;
};

std::vector<PickleAttribute> parse(const std::string& bytes) {
  return parse_tensor_pickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                             "member 'archive/data.pkl'");
}

PickleContents contents(const std::string& bytes) {
  return parse_pickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                      "member 'archive/data.pkl'");
}

// A leaf as one line, for exact comparisons: "<path> = <value>", then " [m]" for a module
// attribute. Values: None, true, false, ints, floats (the shortest that reads back, with a '.'),
// 'strings' and tensors as <storage type>(<sizes>).
std::string line(const std::string& name, const PickleValue& value, bool module_attribute) {
  std::ostringstream out;
  out << name << " = ";
  switch (value.kind) {
    case PickleValue::Kind::kNone:
      out << "None";
      break;
    case PickleValue::Kind::kBool:
      out << (value.boolean ? "true" : "false");
      break;
    case PickleValue::Kind::kInt:
      out << value.integer;
      break;
    case PickleValue::Kind::kDouble: {
      char text[64];
      const auto end = std::to_chars(text, text + sizeof text, value.real).ptr;
      std::string real(text, end);  // the shortest that reads back
      if (real.find_first_of(".en") == std::string::npos) real += ".0";
      out << real;
      break;
    }
    case PickleValue::Kind::kString:
      out << "'" << value.text << "'";
      break;
    case PickleValue::Kind::kTensor: {
      out << storage_type_name(value.tensor.type) << "(";
      for (std::size_t i = 0; i < value.tensor.sizes.size(); ++i)
        out << (i > 0 ? ", " : "") << value.tensor.sizes[i];
      out << ")";
      break;
    }
  }
  if (module_attribute) out << " [m]";
  return out.str();
}

std::vector<std::string> lines(const std::vector<PickleAttribute>& attributes) {
  std::vector<std::string> out;
  for (const auto& a : attributes) out.push_back(line(a.name, a.value, a.module_attribute));
  return out;
}

std::vector<std::string> lines(const TorchArchiveLayout& layout) {
  std::vector<std::string> out;
  for (const auto& e : layout.entries) out.push_back(line(e.key, e.value, e.module_attribute));
  return out;
}

// Expects parse(bytes) to throw a FormatError containing every fragment.
void expect_refused(const std::string& bytes, const std::vector<std::string>& fragments) {
  try {
    parse(bytes);
    ADD_FAILURE() << "accepted; expected '" << fragments.front() << "'";
  } catch (const FormatError& error) {
    EXPECT_THAT(error.what(), HasSubstr("member 'archive/data.pkl': byte "));
    for (const auto& fragment : fragments) EXPECT_THAT(error.what(), HasSubstr(fragment));
  }
}

// A module with one float tensor "w" around `middle`.
std::string module_with(const std::string& middle) {
  return Pickle().begin_module().raw(middle).end_module().bytes();
}

// ---- what is accepted ----

TEST(PickleReader, ReadsTheModuleTorchSavefunWritesWithEveryValueKind) {
  const std::string bytes =
      Pickle()
          .begin_module()
          .str("models/main/0.weight")
          .tensor("0", "FloatStorage", 12, 0, {4, 3}, {1, 4})
          .str("view")
          .tensor("1", "BFloat16Storage", 12, 2, {5}, {1})
          .str("scalar")
          .tensor("2", "LongStorage", 1, 0, {}, {})
          .str("empty")
          .tensor("3", "HalfStorage", 0, 0, {0, 3}, {3, 1})
          .str("text")
          .str("{\"a\": [1, \"\xc3\xa9\"]}")
          .str("int")
          .long1(-(int64_t{1} << 40))
          .str("real")
          .op('G')
          .raw(std::string("\x3f\xd0\x00\x00\x00\x00\x00\x00", 8))  // 0.25, big-endian
          .str("flag")
          .op(0x88)
          .str("nothing")
          .op('N')
          .end_module()
          .bytes();
  const PickleContents all = contents(bytes);
  EXPECT_TRUE(all.module);
  const auto& attributes = all.attributes;
  ASSERT_EQ(attributes.size(), 9u);  // None is listed too
  for (const auto& attribute : attributes) EXPECT_TRUE(attribute.module_attribute);
  EXPECT_EQ(attributes[0].name, "models/main/0.weight");
  const TensorRef& w = attributes[0].value.tensor;
  EXPECT_EQ(attributes[0].value.kind, PickleValue::Kind::kTensor);
  EXPECT_EQ(w.storage_key, "0");
  EXPECT_EQ(w.type, StorageType::kFloat32);
  EXPECT_EQ(w.storage_numel, 12u);
  EXPECT_EQ(w.sizes, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(w.strides, (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(attributes[1].value.tensor.offset, 2);
  EXPECT_EQ(attributes[1].value.tensor.type, StorageType::kBFloat16);
  EXPECT_TRUE(attributes[2].value.tensor.sizes.empty());
  EXPECT_EQ(attributes[3].value.tensor.storage_numel, 0u);
  EXPECT_EQ(attributes[4].value.kind, PickleValue::Kind::kString);
  EXPECT_EQ(attributes[4].value.text, "{\"a\": [1, \"\xc3\xa9\"]}");
  EXPECT_EQ(attributes[5].value.integer, -(int64_t{1} << 40));
  EXPECT_EQ(attributes[6].value.kind, PickleValue::Kind::kDouble);
  EXPECT_EQ(attributes[6].value.real, 0.25);
  EXPECT_EQ(attributes[7].value.kind, PickleValue::Kind::kBool);
  EXPECT_TRUE(attributes[7].value.boolean);
  EXPECT_EQ(attributes[8].name, "nothing");
  EXPECT_EQ(attributes[8].value.kind, PickleValue::Kind::kNone);
  // parse_tensor_pickle is parse_pickle's attributes.
  EXPECT_EQ(lines(parse(bytes)), lines(attributes));
}

TEST(PickleReader, Long1CoversInt64AndRefusesMore) {
  for (int64_t value : {int64_t{0}, int64_t{-1}, int64_t{255}, int64_t{-129}, int64_t{1} << 40,
                        std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    const auto attributes = parse(module_with(Pickle().str("n").long1(value).bytes()));
    ASSERT_EQ(attributes.size(), 1u);
    EXPECT_EQ(attributes[0].value.integer, value);
  }
  EXPECT_EQ(parse(module_with(Pickle().str("n").op(0x8a).op(0).bytes()))[0].value.integer, 0);
  expect_refused(module_with(Pickle().str("n").op(0x8a).op(9).raw(std::string(9, '\1')).bytes()),
                 {"LONG1 of 9 bytes does not fit int64"});
}

// The archives Python writes: torch.jit.save of a scripted module with parameters, buffers and
// int, float, bool and str attributes; torch.save of a dict and of a module's state_dict (an
// OrderedDict with a _metadata attribute set by BUILD).
// Runs `script` from a file, as torch.jit.script needs (it reads the source of the classes).
void python_file(const TempDir& dir, const std::string& script,
                 const std::vector<std::string>& args) {
  const std::string path = dir / "script.py";
  test::write_file(path, test::Bytes(script.begin(), script.end()));
  std::vector<std::string> all = {path};
  all.insert(all.end(), args.begin(), args.end());
  python("import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0])", all);
}

TEST(PickleReader, ReadsPythonJitSaveAndTorchSaveArchives) {
  TempDir dir;
  python_file(dir, R"(
import sys, torch
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        self.register_buffer('steps', torch.tensor([3, 4], dtype=torch.int64))
        self.n = -7
        self.big = 2 ** 40
        self.x = 0.5
        self.flag = True
        self.name = 'hello'
    def forward(self, x):
        return x
torch.jit.save(torch.jit.script(M()), sys.argv[1])
torch.save({'a': torch.ones(2, dtype=torch.float64), 'b': torch.arange(5)[1:3], 'c': 4},
           sys.argv[2])
lin = torch.nn.Linear(3, 2)
torch.save(lin.state_dict(), sys.argv[3])
)",
              {dir / "jit.pt", dir / "dict.pt", dir / "linear.pt"});

  const ZipReader jit(dir / "jit.pt");
  const TorchArchiveLayout module = read_torch_archive(jit, "tth/format_version");
  EXPECT_EQ(module.directory, "jit/");
  EXPECT_TRUE(module.module);
  std::vector<std::string> names;
  for (const auto& entry : module.entries) names.push_back(entry.key);
  // Python's scripted modules carry `training` and `_is_full_backward_hook` (None).
  EXPECT_EQ(names, (std::vector<std::string>{"w", "steps", "training", "_is_full_backward_hook",
                                             "n", "big", "x", "flag", "name"}));
  for (const auto& entry : module.entries) EXPECT_TRUE(entry.module_attribute) << entry.key;
  EXPECT_EQ(module.entries[0].value.tensor.sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(module.storages[module.entries[1].storage].type, StorageType::kInt64);
  EXPECT_EQ(module.entries[3].value.kind, PickleValue::Kind::kNone);
  EXPECT_EQ(module.entries[4].value.integer, -7);
  EXPECT_EQ(module.entries[5].value.integer, int64_t{1} << 40);
  EXPECT_EQ(module.entries[6].value.real, 0.5);
  EXPECT_TRUE(module.entries[7].value.boolean);
  EXPECT_EQ(module.entries[8].value.text, "hello");

  const ZipReader dict_file(dir / "dict.pt");
  const TorchArchiveLayout dict = read_torch_archive(dict_file, "tth/format_version");
  EXPECT_FALSE(dict.module);
  ASSERT_EQ(dict.entries.size(), 3u);
  EXPECT_FALSE(dict.entries[0].module_attribute);
  EXPECT_EQ(dict.entries[1].value.tensor.offset, 1);  // a view keeps its whole storage
  EXPECT_EQ(dict.entries[1].value.tensor.storage_numel, 5u);
  EXPECT_EQ(dict.entries[2].value.integer, 4);

  const ZipReader linear_file(dir / "linear.pt");
  const TorchArchiveLayout linear = read_torch_archive(linear_file, "tth/format_version");
  ASSERT_EQ(linear.entries.size(), 2u);
  EXPECT_EQ(linear.entries[0].key, "weight");
  EXPECT_EQ(linear.entries[1].key, "bias");
}

// Nested writers' output: scripted containers and recurrent modules (nested module objects,
// typed lists, type tags, None), a state dict, a checkpoint with an optimizer's state (int
// keys, lists, tuples, None) and named parameters (_rebuild_parameter).
TEST(PickleReader, ReadsPythonNestedModulesCheckpointsAndParameters) {
  TempDir dir;
  python_file(dir, R"(
import sys, torch
torch.manual_seed(0)
seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                          torch.nn.Linear(8, 3))
torch.jit.save(torch.jit.script(seq), sys.argv[1])
torch.jit.save(torch.jit.script(torch.nn.LSTM(4, 3)), sys.argv[2])
torch.save(seq.state_dict(), sys.argv[3])
lin = torch.nn.Linear(3, 2)
opt = torch.optim.Adam(lin.parameters(), lr=0.01, fused=False)  # None by default in 2.x
lin(torch.ones(1, 3)).sum().backward()
opt.step()
torch.save({'model': lin.state_dict(), 'epoch': 3, 'opt': opt.state_dict()}, sys.argv[4])
torch.save(dict(lin.named_parameters()), sys.argv[5])
)",
              {dir / "seq.pt", dir / "lstm.pt", dir / "sd.pt", dir / "ckpt.pt", dir / "params.pt"});
  const auto read = [&](const std::string& name) {
    const ZipReader reader(dir / name);
    return read_torch_archive(reader, "tth/format_version");
  };
  const TorchArchiveLayout seq = read("seq.pt");
  EXPECT_TRUE(seq.module);
  EXPECT_EQ(lines(seq), (std::vector<std::string>{"training = true [m]",
                                                  "_is_full_backward_hook = None [m]",
                                                  "0.weight = FloatStorage(2, 1, 3, 3) [m]",
                                                  "0.bias = FloatStorage(2) [m]",
                                                  "0.training = true [m]",
                                                  "0._is_full_backward_hook = None [m]",
                                                  "0.transposed = false [m]",
                                                  "0._reversed_padding_repeated_twice/0 = 0",
                                                  "0._reversed_padding_repeated_twice/1 = 0",
                                                  "0._reversed_padding_repeated_twice/2 = 0",
                                                  "0._reversed_padding_repeated_twice/3 = 0",
                                                  "1.weight = FloatStorage(2) [m]",
                                                  "1.bias = FloatStorage(2) [m]",
                                                  "1.running_mean = FloatStorage(2) [m]",
                                                  "1.running_var = FloatStorage(2) [m]",
                                                  "1.num_batches_tracked = LongStorage() [m]",
                                                  "1.training = true [m]",
                                                  "1._is_full_backward_hook = None [m]",
                                                  "2.training = true [m]",
                                                  "2._is_full_backward_hook = None [m]",
                                                  "3.weight = FloatStorage(3, 8) [m]",
                                                  "3.bias = FloatStorage(3) [m]",
                                                  "3.training = true [m]",
                                                  "3._is_full_backward_hook = None [m]"}));
  const TorchArchiveLayout lstm = read("lstm.pt");
  EXPECT_TRUE(lstm.module);
  EXPECT_EQ(lines(lstm),
            (std::vector<std::string>{
                "weight_ih_l0 = FloatStorage(12, 4) [m]", "weight_hh_l0 = FloatStorage(12, 3) [m]",
                "bias_ih_l0 = FloatStorage(12) [m]", "bias_hh_l0 = FloatStorage(12) [m]",
                "training = true [m]", "_is_full_backward_hook = None [m]",
                "_flat_weights_names/0 = 'weight_ih_l0'", "_flat_weights_names/1 = 'weight_hh_l0'",
                "_flat_weights_names/2 = 'bias_ih_l0'", "_flat_weights_names/3 = 'bias_hh_l0'",
                "_all_weights/0/0 = 'weight_ih_l0'", "_all_weights/0/1 = 'weight_hh_l0'",
                "_all_weights/0/2 = 'bias_ih_l0'", "_all_weights/0/3 = 'bias_hh_l0'",
                "_flat_weights/0 = FloatStorage(12, 4)", "_flat_weights/1 = FloatStorage(12, 3)",
                "_flat_weights/2 = FloatStorage(12)", "_flat_weights/3 = FloatStorage(12)"}));
  // The flat weights are the parameters again: views of the same four storages.
  ASSERT_EQ(lstm.entries.size(), 18u);
  EXPECT_EQ(lstm.storages.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lstm.entries[14 + i].storage, lstm.entries[i].storage);
  }
  const TorchArchiveLayout sd = read("sd.pt");
  EXPECT_FALSE(sd.module);
  EXPECT_EQ(lines(sd), (std::vector<std::string>{
                           "0.weight = FloatStorage(2, 1, 3, 3)", "0.bias = FloatStorage(2)",
                           "1.weight = FloatStorage(2)", "1.bias = FloatStorage(2)",
                           "1.running_mean = FloatStorage(2)", "1.running_var = FloatStorage(2)",
                           "1.num_batches_tracked = LongStorage()", "3.weight = FloatStorage(3, 8)",
                           "3.bias = FloatStorage(3)"}));
  const TorchArchiveLayout ckpt = read("ckpt.pt");
  EXPECT_FALSE(ckpt.module);
  EXPECT_EQ(lines(ckpt), (std::vector<std::string>{"model/weight = FloatStorage(2, 3)",
                                                   "model/bias = FloatStorage(2)",
                                                   "epoch = 3",
                                                   "opt/state/0/step = FloatStorage()",
                                                   "opt/state/0/exp_avg = FloatStorage(2, 3)",
                                                   "opt/state/0/exp_avg_sq = FloatStorage(2, 3)",
                                                   "opt/state/1/step = FloatStorage()",
                                                   "opt/state/1/exp_avg = FloatStorage(2)",
                                                   "opt/state/1/exp_avg_sq = FloatStorage(2)",
                                                   "opt/param_groups/0/lr = 0.01",
                                                   "opt/param_groups/0/betas/0 = 0.9",
                                                   "opt/param_groups/0/betas/1 = 0.999",
                                                   "opt/param_groups/0/eps = 1e-08",
                                                   "opt/param_groups/0/weight_decay = 0",
                                                   "opt/param_groups/0/amsgrad = false",
                                                   "opt/param_groups/0/maximize = false",
                                                   "opt/param_groups/0/foreach = None",
                                                   "opt/param_groups/0/capturable = false",
                                                   "opt/param_groups/0/differentiable = false",
                                                   "opt/param_groups/0/fused = false",
                                                   "opt/param_groups/0/params/0 = 0",
                                                   "opt/param_groups/0/params/1 = 1"}));
  // The step counters are 0-d tensors (torch 1.13's Adam); the rest shares no storage.
  EXPECT_EQ(ckpt.storages.size(), 8u);
  EXPECT_EQ(ckpt.storages[ckpt.entries[3].storage].numel, 1u);
  const TorchArchiveLayout params = read("params.pt");
  EXPECT_FALSE(params.module);
  EXPECT_EQ(lines(params),
            (std::vector<std::string>{"weight = FloatStorage(2, 3)", "bias = FloatStorage(2)"}));
}

// ---- what is refused ----

TEST(PickleReader, RefusesEveryGlobalButThoseTensorArchivesUse) {
  const std::vector<std::pair<std::string, std::string>> globals = {
      {"os", "system"},
      {"posix", "system"},
      {"builtins", "eval"},
      {"builtins", "getattr"},
      {"builtins", "set"},
      {"builtins", "bytearray"},
      {"__builtin__", "exec"},
      {"subprocess", "Popen"},
      {"numpy.core.multiarray", "scalar"},  // a numpy scalar in a state dict
      {"numpy", "dtype"},
      {"torch._utils", "_rebuild_parameter_with_state"},  // PyTorch 2's parameter with state
      {"torch._utils", "_rebuild_qtensor"},
      {"torch._utils", "_rebuild_sparse_tensor"},
      {"torch", "load"},
      {"torch", "QInt8Storage"},
      {"torch.storage", "FloatStorage"},
      {"collections", "defaultdict"},
      {"torch.jit._pickle", "build_strlist"},  // not a builder TorchScript has
      {"torch.jit._pickle", "build_list"},
      {"torch.jit", "_pickle"},
      {"torch.jit._pickle.x", "build_intlist"},
      {"__torch__.a b", "C"},
      {"__torch__x", "C"},
      {"__torch__", "C\x01"},
      {"__torch__", ""},
      {"", ""}};
  for (const auto& [module, name] : globals) {
    SCOPED_TRACE(module + "." + name);
    // As a callable, and merely pushed (a global is refused when it is named).
    expect_refused(
        module_with(Pickle().str("x").global(module, name).str("ls").op(0x85).op('R').bytes()),
        {"GLOBAL '" + module, "' is not allowed"});
  }
  expect_refused(Pickle().proto().global("os", std::string(300, 'a')).bytes(),
                 {"GLOBAL needs a module and a name of at most 256 bytes"});
  expect_refused(Pickle().proto().raw("cos\nsys").bytes(), {"ending with a newline"});
}

TEST(PickleReader, AllowedGlobalsAreUsableOnlyWhereTheWritersUseThem) {
  // The storage type called; a class reduced; the tensor rebuilder as a class; OrderedDict
  // with arguments; a __torch__ object with constructor arguments.
  expect_refused(
      module_with(Pickle().str("x").global("torch", "FloatStorage").op(')').op('R').bytes()),
      {"REDUCE may call only", "the global 'torch.FloatStorage'"});
  expect_refused(module_with(Pickle().str("x").global("__torch__", "M").op(')').op('R').bytes()),
                 {"REDUCE may call only"});
  expect_refused(
      module_with(
          Pickle().str("x").global("torch._utils", "_rebuild_tensor_v2").op(')').op(0x81).bytes()),
      {"NEWOBJ may build only a __torch__ class"});
  expect_refused(
      module_with(
          Pickle().str("x").global("collections", "OrderedDict").int1(1).op(0x85).op('R').bytes()),
      {"OrderedDict's arguments must be a tuple of 0"});
  expect_refused(
      module_with(Pickle().str("x").global("__torch__", "M").int1(1).op(0x85).op(0x81).bytes()),
      {"NEWOBJ's arguments must be a tuple of 0"});
  expect_refused(
      module_with(
          Pickle().str("x").global("torch._utils", "_rebuild_tensor_v2").op(')').op('R').bytes()),
      {"_rebuild_tensor_v2's arguments must be a tuple of 6, got a tuple of 0"});
}

TEST(PickleReader, RefusesEveryOpcodeOurArchivesDoNotUse) {
  // Every opcode of protocols 0-5 that LibTorch and torch.save do not write into an archive.
  // (EMPTY_LIST, LIST, APPEND and APPENDS are read: see ReadsListsAndTypedLists.)
  const std::string refused = std::string("dio") + "pgIL" + "FSVUTBC" + "0123P" +
                              "\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98" +
                              "\x82\x83\x84" + std::string(1, '\0') + "\xff";
  for (char code : refused) {
    SCOPED_TRACE(static_cast<int>(static_cast<uint8_t>(code)));
    expect_refused(
        Pickle().proto().op(static_cast<uint8_t>(code)).raw(std::string(16, '\0')).bytes(),
        {"byte 2: opcode 0x", "is not accepted"});
  }
  // The ones a general unpickler would build a value of, in the middle of a real module.
  for (const auto& [bytes, fragment] : std::vector<std::pair<std::string, std::string>>{
           {Pickle().op(0x8f).bytes(), "opcode 0x8f is not accepted"},            // EMPTY_SET
           {Pickle().op(0x95).raw(std::string(8, '\0')).bytes(), "opcode 0x95"},  // FRAME
           {Pickle().op(0x8c).op(1).raw("x").bytes(), "opcode 0x8c"},  // SHORT_BINUNICODE
           {Pickle().op('B').raw(std::string(4, '\0')).bytes(), "opcode 0x42 ('B')"},  // BINBYTES
           {Pickle().op('C').op(0).bytes(), "opcode 0x43 ('C')"},                // SHORT_BINBYTES
           {Pickle().op('i').raw("os\nsystem\n").bytes(), "opcode 0x69 ('i')"},  // INST
           {Pickle().mark().op('o').bytes(), "opcode 0x6f ('o')"},               // OBJ
           {Pickle().op('d').bytes(), "opcode 0x64 ('d')"},                      // DICT
       }) {
    SCOPED_TRACE(fragment);
    expect_refused(module_with(Pickle().str("x").raw(bytes).bytes()), {fragment});
  }
  expect_refused(Pickle().op(0x80).op(4).bytes(), {"pickle protocol 4; only 2 is accepted"});
  expect_refused(Pickle().proto().proto().bytes(), {"PROTO must be the first opcode"});
}

TEST(PickleReader, DeepNestingIsRefusedWithoutRecursion) {
  constexpr int kLevels = 100000;
  // 100,000 open MARKs (nested tuples), 100,000 TUPLE1s, 100,000 lists, 100,000 dicts.
  expect_refused(Pickle().proto().raw(std::string(kLevels, '(')).bytes(),
                 {"more than 32 MARKs open"});
  expect_refused(Pickle().proto().op(')').raw(std::string(kLevels, '\x85')).bytes(),
                 {"nested more than 32 levels"});
  Pickle lists;  // each list holds the one before: L[k + 1] = [L[k]]
  lists.proto().op(']').put(0);
  for (int i = 0; i < kLevels; ++i) lists.op(']').get(0).op('a').put(0);
  expect_refused(lists.bytes(), {"nested more than 32 levels"});
  Pickle appended;  // one list appended to itself, again and again
  appended.proto().op(']').put(0);
  for (int i = 0; i < kLevels; ++i) appended.get(0).op('a');
  expect_refused(appended.bytes(), {"nested more than 32 levels"});
  Pickle dicts;
  dicts.proto().op('}').op('q').op(0);
  for (int i = 0; i < kLevels; ++i) dicts.str("k").op('h').op(0).op('s');  // d['k'] = d
  expect_refused(dicts.bytes(), {"nested more than 32 levels"});
}

TEST(PickleReader, MemoIndicesAreBounded) {
  expect_refused(Pickle().proto().op('N').op('r').raw("\xff\xff\xff\xff").bytes(),
                 {"memo index 4294967295 skips ahead of the 0 entries"});
  expect_refused(Pickle().proto().op('j').raw("\xff\xff\xff\xff").bytes(),
                 {"memo index 4294967295 was never assigned"});
  expect_refused(Pickle().proto().op('h').op(0).bytes(), {"memo index 0 was never assigned"});
  expect_refused(Pickle().proto().op('q').op(0).bytes(), {"stack underflow"});
  // Overwriting an assigned index is what pickle allows.
  const std::string ok = Pickle()
                             .begin_module()
                             .str("a")
                             .op('q')
                             .op(0)
                             .int1(1)
                             .str("b")
                             .op('q')
                             .op(0)
                             .op('h')
                             .op(0)
                             .end_module()
                             .bytes();
  EXPECT_EQ(parse(ok)[1].value.text, "b");
}

TEST(PickleReader, EveryTruncationOfARealPickleIsAFormatError) {
  const std::string bytes = Pickle()
                                .begin_module()
                                .str("w")
                                .tensor("0", "FloatStorage", 6, 0, {2, 3}, {3, 1})
                                .str("t")
                                .str("text")
                                .str("n")
                                .long1(1 << 20)
                                .end_module()
                                .bytes();
  ASSERT_EQ(parse(bytes).size(), 3u);
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    SCOPED_TRACE(size);
    EXPECT_THROW(parse(bytes.substr(0, size)), FormatError);
  }
  expect_refused(bytes + "N", {"1 bytes follow the STOP opcode"});
  // A string longer than what is left, and the largest length there is.
  expect_refused(Pickle().proto().op('X').raw("\xff\xff\xff\xff").raw("abc").bytes(),
                 {"needs 4294967295 bytes, 3 remain (truncated)"});
  expect_refused(Pickle().proto().op('N').bytes(), {"ends without a STOP opcode"});
}

TEST(PickleReader, StackAndMarkMisuseIsRefused) {
  expect_refused(Pickle().proto().op(0x85).bytes(), {"stack underflow"});
  expect_refused(Pickle().proto().op('N').op('N').op('.').bytes(),
                 {"STOP with 2 values on the stack instead of one"});
  expect_refused(Pickle().proto().op('N').mark().op('.').bytes(), {"STOP with a MARK still open"});
  expect_refused(Pickle().proto().op('t').bytes(), {"needs a MARK, and none is open"});
  expect_refused(Pickle().proto().op('N').mark().op(0x85).bytes(),
                 {"stack underflow"});  // below the MARK
  expect_refused(Pickle().proto().op('}').mark().op('N').op('u').bytes(),
                 {"SETITEMS with an odd number of values"});
  expect_refused(Pickle().proto().op('N').mark().op('N').op('N').op('u').bytes(),
                 {"SETITEMS needs a dict below its values, got None"});
  expect_refused(Pickle().proto().op('.').bytes(), {"STOP with 0 values"});
}

TEST(PickleReader, TensorsMustLieInsideTheirStorage) {
  struct Case {
    int64_t numel, offset;
    std::vector<int64_t> sizes, strides;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {6, 200, {}, {}, "offset 200"},                        // heap past the end
      {6, 2000000000, {2, 3}, {3, 1}, "offset 2000000000"},  // far past it
      {6, 1, {2, 3}, {3, 1}, "addresses elements outside its storage '0' of 6 elements"},
      {6, 0, {2, 4}, {3, 1}, "size (2, 4)"},                               // sizes past the end
      {6, 0, {2, 3}, {4, 1}, "stride (4, 1)"},                             // strides past the end
      {6, 0, {3}, {-1}, "a tensor's stride must hold ints >= 0, got -1"},  // negative stride
      {6, -1, {1}, {1}, "outside its storage"},                            // negative offset
      {6, 0, {-1}, {1}, "a tensor's size must hold ints >= 0, got -1"},
      {6, 0, {2, 3}, {1}, "2 sizes but 1 strides"},
      {6, 0, {INT64_MAX, 2}, {0, 0}, "outside its storage"},  // numel overflows
      {6, 0, {2}, {INT64_MAX}, "outside its storage"},        // offset overflows
      {6, INT64_MAX, {2}, {1}, "outside its storage"},
      {0, 0, {}, {}, "of 0 elements"},          // 0-d needs one
      {0, 1, {0}, {1}, "outside its storage"},  // empty, offset past
      {-1, 0, {}, {}, "element count must be >= 0, got -1"},
      {6, 0, std::vector<int64_t>(65, 1), std::vector<int64_t>(65, 0), "65 dimensions"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fragment);
    expect_refused(
        module_with(Pickle()
                        .str("w")
                        .tensor("0", "FloatStorage", c.numel, c.offset, c.sizes, c.strides)
                        .bytes()),
        {c.fragment});
  }
  // The edges that are inside: the last element, an empty tensor at the end, a broadcast.
  for (const Case& c : std::vector<Case>{{6, 5, {}, {}, ""},
                                         {6, 0, {2, 3}, {3, 1}, ""},
                                         {6, 6, {0, 4}, {4, 1}, ""},
                                         {1, 0, {1000, 1000}, {0, 0}, ""},
                                         {6, 3, {3}, {1}, ""}}) {
    EXPECT_EQ(
        parse(module_with(Pickle()
                              .str("w")
                              .tensor("0", "FloatStorage", c.numel, c.offset, c.sizes, c.strides)
                              .bytes()))
            .size(),
        1u);
  }
}

TEST(PickleReader, TensorArgumentsAndPersistentIdsAreChecked) {
  const auto rebuild = [](const std::string& storage, const std::string& rest) {
    return module_with(Pickle()
                           .str("w")
                           .global("torch._utils", "_rebuild_tensor_v2")
                           .mark()
                           .raw(storage)
                           .raw(rest)
                           .tuple()
                           .op('R')
                           .bytes());
  };
  const std::string good_rest = Pickle()
                                    .int1(0)
                                    .ints({1})
                                    .ints({1})
                                    .op(0x89)
                                    .global("collections", "OrderedDict")
                                    .op(')')
                                    .op('R')
                                    .bytes();
  const auto pid = [](const std::string& fields) {
    return Pickle().mark().raw(fields).tuple().op('Q').bytes();
  };
  const std::string type = Pickle().global("torch", "FloatStorage").bytes();
  EXPECT_EQ(
      parse(rebuild(pid(Pickle().str("storage").raw(type).str("0").str("cuda:1").int1(1).bytes()),
                    good_rest))
          .size(),
      1u);
  expect_refused(
      rebuild(pid(Pickle().str("file").raw(type).str("0").str("cpu").int1(1).bytes()), good_rest),
      {"must start with 'storage'"});
  expect_refused(
      rebuild(pid(Pickle().str("storage").str("x").str("0").str("cpu").int1(1).bytes()), good_rest),
      {"a storage's type must be torch.<T>Storage, got a string"});
  for (const std::string& key :
       std::vector<std::string>{"../code/__torch__.py", "", "a/b", std::string(65, '1')}) {
    expect_refused(
        rebuild(pid(Pickle().str("storage").raw(type).str(key).str("cpu").int1(1).bytes()),
                good_rest),
        {"a storage's key must be a string of letters, digits and '_'"});
  }
  expect_refused(
      rebuild(pid(Pickle().str("storage").raw(type).str("0").str("cpu").bytes()), good_rest),
      {"a persistent id must be a tuple of 5, got a tuple of 4"});
  expect_refused(rebuild(Pickle().str("0").bytes(), good_rest),
                 {"a tensor's storage must come from a persistent id, got a string"});
  const std::string storage =
      pid(Pickle().str("storage").raw(type).str("0").str("cpu").int1(1).bytes());
  expect_refused(rebuild(storage, Pickle().int1(0).ints({1}).ints({1}).int1(1).op('}').bytes()),
                 {"requires_grad must be a bool"});
  expect_refused(rebuild(storage, Pickle()
                                      .int1(0)
                                      .ints({1})
                                      .ints({1})
                                      .op(0x89)
                                      .op('}')
                                      .str("hook")
                                      .op('N')
                                      .op('s')
                                      .bytes()),
                 {"backward hooks must be an empty dict"});
  expect_refused(rebuild(storage, Pickle().op('N').ints({1}).ints({1}).op(0x89).op('}').bytes()),
                 {"storage offset must be an int, got None"});
  expect_refused(rebuild(storage, Pickle().int1(0).str("1").ints({1}).op(0x89).op('}').bytes()),
                 {"size must be a tuple, got a string"});
  expect_refused(
      rebuild(storage, Pickle().int1(0).mark().op(0x88).tuple().ints({1}).op(0x89).op('}').bytes()),
      {"size must be an int, got a bool"});
}

TEST(PickleReader, TheResultMustBeAContainerOfPlainValues) {
  expect_refused(Pickle().proto().int1(1).op('.').bytes(),
                 {"the pickle holds the int 1, not a module object, a dict or a list"});
  expect_refused(Pickle().proto().str("x").op('.').bytes(), {"the pickle holds a string"});
  expect_refused(Pickle().proto().global("__torch__", "M").op(')').op(0x81).op('.').bytes(),
                 {"byte 16: a module object has no state (no BUILD)"});
  expect_refused(
      module_with(Pickle().str("sub").global("__torch__", "Sub").op(')').op(0x81).bytes()),
      {"a module object has no state (no BUILD)"});
  expect_refused(module_with(Pickle().int1(1).int1(2).bytes()),
                 {"an attribute name must be a string, got the int 1"});
  expect_refused(module_with(Pickle().str("a").int1(1).str("a").int1(2).bytes()),
                 {"the key 'a' appears twice"});
  // Containers are flattened (see FlattensModulesDictsListsAndTuples); empty ones add nothing.
  EXPECT_EQ(lines(parse(module_with(Pickle()
                                        .str("t")
                                        .op(')')
                                        .str("d")
                                        .op('}')
                                        .str("l")
                                        .op(']')
                                        .str("sub")
                                        .begin_object("Sub")
                                        .end_object()
                                        .str("n")
                                        .int1(1)
                                        .bytes()))),
            (std::vector<std::string>{"n = 1 [m]"}));
  // Leaves that are no value: a global, a storage, whatever a typed list or tag hands on.
  const std::string storage = Pickle()
                                  .mark()
                                  .str("storage")
                                  .global("torch", "FloatStorage")
                                  .str("0")
                                  .str("cpu")
                                  .int1(1)
                                  .tuple()
                                  .op('Q')
                                  .bytes();
  expect_refused(module_with(Pickle().str("g").global("torch", "FloatStorage").bytes()),
                 {"the key 'g' holds the global 'torch.FloatStorage', which a weights entry "
                  "cannot be"});
  expect_refused(module_with(Pickle().str("g").global("__torch__", "C").bytes()),
                 {"the key 'g' holds the global '__torch__.C'"});
  expect_refused(module_with(Pickle().str("s").raw(storage).bytes()),
                 {"the key 's' holds a storage"});
  expect_refused(module_with(Pickle()
                                 .str("l")
                                 .begin_typed_list("build_tensorlist")
                                 .raw(storage)
                                 .end_typed_list()
                                 .bytes()),
                 {"the key 'l/0' holds a storage"});
  expect_refused(module_with(Pickle()
                                 .str("t")
                                 .global("torch.jit._pickle", "restore_type_tag")
                                 .global("torch", "FloatStorage")
                                 .str("int")
                                 .op(0x86)
                                 .op('R')
                                 .bytes()),
                 {"the key 't' holds the global 'torch.FloatStorage'"});
  expect_refused(Pickle().begin_module().op('u').op('b').op('}').op('b').op('.').bytes(),
                 {"BUILD of a module object that was built already"});
  expect_refused(
      Pickle().proto().global("__torch__", "M").op(')').op(0x81).op(')').op('b').op('.').bytes(),
      {"BUILD's state must be a dict, got a tuple of 0"});
  expect_refused(Pickle().proto().int1(1).op('}').op('b').op('.').bytes(), {"BUILD of the int 1"});
  expect_refused(Pickle().proto().op(']').op('}').op('b').op('.').bytes(), {"BUILD of a list"});
  // A name's unprintable bytes are escaped in messages.
  expect_refused(module_with(Pickle().str("a\n\"").global("torch", "FloatStorage").bytes()),
                 {"'a\\x0a\"' holds"});
}

TEST(PickleReader, DictKeysMustBeStringsOrInts) {
  // Floats, tuples, None and bools are keys Python allows and no state dict has.
  const std::vector<std::pair<std::string, std::string>> keys = {
      {Pickle().real(0.5).bytes(), "got a float"},
      {Pickle().op(')').bytes(), "got a tuple of 0"},
      {Pickle().int1(1).op(0x85).bytes(), "got a tuple of 1"},
      {Pickle().op('N').bytes(), "got None"},
      {Pickle().op(0x88).bytes(), "got a bool"},
      {Pickle().tensor("0", "FloatStorage", 1, 0, {}, {}).bytes(), "got a tensor"},
  };
  for (const auto& [key, fragment] : keys) {
    SCOPED_TRACE(fragment);
    expect_refused(
        Pickle().proto().begin_dict().str("ok").int1(1).raw(key).int1(2).end_dict().op('.').bytes(),
        {"a dict key must be a string or an int, " + fragment});
    // Below a module object too.
    expect_refused(module_with(Pickle().str("d").begin_dict().raw(key).int1(2).end_dict().bytes()),
                   {"a dict key must be a string or an int, " + fragment});
  }
}

// ---- flattening ----

TEST(PickleReader, FlattensModulesDictsListsAndTuples) {
  // Root module object: '.' below module objects, '/' below dicts, lists and tuples; int keys
  // in decimal; a module attribute only along module objects.
  const std::string root_module = Pickle()
                                      .begin_module()
                                      .str("w")
                                      .tensor("0", "FloatStorage", 6, 0, {2, 3}, {3, 1})
                                      .str("sub")
                                      .begin_object("Sub")
                                      .str("b")
                                      .int1(1)
                                      .str("inner")
                                      .begin_object("Inner")
                                      .str("c")
                                      .op('N')
                                      .end_object()
                                      .end_object()
                                      .str("d")
                                      .begin_dict()
                                      .str("k")
                                      .int1(2)
                                      .integer(7)
                                      .str("seven")
                                      .integer(-3)
                                      .op('N')
                                      .long1(int64_t{1} << 40)
                                      .op(0x89)
                                      .str("l")
                                      .begin_list()
                                      .int1(3)
                                      .begin_list()
                                      .real(0.5)
                                      .op(0x88)
                                      .end_list()
                                      .end_list()
                                      .str("m")
                                      .begin_object("Mod")
                                      .str("x")
                                      .int1(5)
                                      .end_object()
                                      .str("e")
                                      .op('}')
                                      .end_dict()
                                      .str("t")
                                      .int1(8)
                                      .int1(9)
                                      .op(0x85)
                                      .op(0x86)
                                      .str("mods")
                                      .op(']')
                                      .begin_object("Item")
                                      .str("w")
                                      .int1(6)
                                      .end_object()
                                      .op('a')
                                      .str("flag")
                                      .op(0x89)
                                      .end_module()
                                      .bytes();
  const PickleContents module = contents(root_module);
  EXPECT_TRUE(module.module);
  EXPECT_EQ(lines(module.attributes), (std::vector<std::string>{
                                          "w = FloatStorage(2, 3) [m]",
                                          "sub.b = 1 [m]",
                                          "sub.inner.c = None [m]",
                                          "d/k = 2",
                                          "d/7 = 'seven'",
                                          "d/-3 = None",
                                          "d/1099511627776 = false",
                                          "d/l/0 = 3",
                                          "d/l/1/0 = 0.5",
                                          "d/l/1/1 = true",
                                          "d/m.x = 5",
                                          "t/0 = 8",
                                          "t/1/0 = 9",
                                          "mods/0.w = 6",
                                          "flag = false [m]",
                                      }));

  // Root dict (torch.save): no module attributes, even below a module object.
  const PickleContents dict = contents(Pickle()
                                           .proto()
                                           .begin_dict()
                                           .str("model")
                                           .begin_object("M")
                                           .str("w")
                                           .int1(1)
                                           .str("sub")
                                           .begin_object("S")
                                           .str("v")
                                           .int1(2)
                                           .end_object()
                                           .end_object()
                                           .str("epoch")
                                           .int1(3)
                                           .integer(0)
                                           .begin_dict()
                                           .str("step")
                                           .int1(4)
                                           .end_dict()
                                           .end_dict()
                                           .op('.')
                                           .bytes());
  EXPECT_FALSE(dict.module);
  EXPECT_EQ(lines(dict.attributes), (std::vector<std::string>{"model.w = 1", "model.sub.v = 2",
                                                              "epoch = 3", "0/step = 4"}));

  // Root list and root tuple.
  const PickleContents list = contents(Pickle()
                                           .proto()
                                           .begin_list()
                                           .int1(1)
                                           .begin_dict()
                                           .str("a")
                                           .begin_list()
                                           .int1(2)
                                           .end_list()
                                           .end_dict()
                                           .op(')')
                                           .str("s")
                                           .end_list()
                                           .op('.')
                                           .bytes());
  EXPECT_FALSE(list.module);
  EXPECT_EQ(lines(list.attributes), (std::vector<std::string>{"0 = 1", "1/a/0 = 2", "3 = 's'"}));
  // LIST (items under a MARK) as well as EMPTY_LIST with APPENDS.
  EXPECT_EQ(
      lines(contents(Pickle().proto().mark().int1(1).int1(2).op('l').op('.').bytes()).attributes),
      (std::vector<std::string>{"0 = 1", "1 = 2"}));
  EXPECT_EQ(lines(contents(Pickle().proto().int1(1).op(0x85).op('.').bytes()).attributes),
            (std::vector<std::string>{"0 = 1"}));
  // Empty roots hold nothing.
  EXPECT_TRUE(contents(Pickle().proto().op('}').op('.').bytes()).attributes.empty());
  EXPECT_TRUE(contents(Pickle().proto().op(']').op('.').bytes()).attributes.empty());
  const PickleContents empty_module = contents(Pickle().begin_module().end_module().bytes());
  EXPECT_TRUE(empty_module.module);
  EXPECT_TRUE(empty_module.attributes.empty());
  // APPEND and APPENDS need a list below.
  expect_refused(Pickle().proto().op('}').int1(1).op('a').op('.').bytes(),
                 {"APPEND needs a list below its values, got a dict"});
  expect_refused(Pickle().proto().op(')').mark().int1(1).op('e').op('.').bytes(),
                 {"APPENDS needs a list below its values, got a tuple of 0"});
  expect_refused(Pickle().proto().op(']').op('a').op('.').bytes(), {"stack underflow"});
}

TEST(PickleReader, APathMayAppearOnlyOnce) {
  // A key holding the separator against the nesting it spells; a string key against an int.
  expect_refused(Pickle()
                     .proto()
                     .begin_dict()
                     .str("a/b")
                     .int1(1)
                     .str("a")
                     .begin_dict()
                     .str("b")
                     .int1(2)
                     .end_dict()
                     .end_dict()
                     .op('.')
                     .bytes(),
                 {"the key 'a/b' appears twice"});
  expect_refused(
      Pickle().proto().begin_dict().str("1").int1(1).int1(1).int1(2).end_dict().op('.').bytes(),
      {"the key '1' appears twice"});
  expect_refused(module_with(Pickle()
                                 .str("sub.w")
                                 .int1(1)
                                 .str("sub")
                                 .begin_object("Sub")
                                 .str("w")
                                 .int1(2)
                                 .end_object()
                                 .bytes()),
                 {"the key 'sub.w' appears twice"});
  expect_refused(Pickle()
                     .proto()
                     .begin_dict()
                     .str("l/0")
                     .int1(1)
                     .str("l")
                     .begin_list()
                     .int1(2)
                     .end_list()
                     .end_dict()
                     .op('.')
                     .bytes(),
                 {"the key 'l/0' appears twice"});
  // One key twice in a dict (Python would keep the last).
  expect_refused(
      Pickle().proto().begin_dict().str("a").int1(1).str("a").int1(2).end_dict().op('.').bytes(),
      {"the key 'a' appears twice"});
  // The same value under two paths is two entries.
  EXPECT_EQ(lines(parse(Pickle()
                            .proto()
                            .begin_dict()
                            .str("a")
                            .tensor("0", "FloatStorage", 2, 0, {2}, {1})
                            .put(0)
                            .str("b")
                            .get(0)
                            .end_dict()
                            .op('.')
                            .bytes())),
            (std::vector<std::string>{"a = FloatStorage(2)", "b = FloatStorage(2)"}));
}

TEST(PickleReader, ReadsListsAndTypedLists) {
  // torch.jit._pickle's builders and type tags, as TorchScript writes lists and dicts.
  const PickleContents typed = contents(Pickle()
                                            .begin_module()
                                            .str("ints")
                                            .begin_typed_list("build_intlist")
                                            .int1(1)
                                            .integer(-2)
                                            .end_typed_list()
                                            .str("reals")
                                            .begin_typed_list("build_doublelist")
                                            .real(0.25)
                                            .end_typed_list()
                                            .str("flags")
                                            .begin_typed_list("build_boollist")
                                            .op(0x88)
                                            .op(0x89)
                                            .end_typed_list()
                                            .str("tensors")
                                            .begin_typed_list("build_tensorlist")
                                            .tensor("0", "FloatStorage", 2, 0, {2}, {1})
                                            .end_typed_list()
                                            .str("empty")
                                            .begin_typed_list("build_intlist")
                                            .end_typed_list()
                                            .str("names")
                                            .global("torch.jit._pickle", "restore_type_tag")
                                            .begin_list()
                                            .str("a")
                                            .str("b")
                                            .end_list()
                                            .str("List[str]")
                                            .op(0x86)
                                            .op('R')
                                            .str("map")
                                            .global("torch.jit._pickle", "restore_type_tag")
                                            .begin_dict()
                                            .str("k")
                                            .int1(1)
                                            .end_dict()
                                            .str("Dict[str, int]")
                                            .op(0x86)
                                            .op('R')
                                            .str("n")
                                            .global("torch.jit._pickle", "restore_type_tag")
                                            .int1(5)
                                            .str("int")
                                            .op(0x86)
                                            .op('R')
                                            .end_module()
                                            .bytes());
  EXPECT_EQ(
      lines(typed.attributes),
      (std::vector<std::string>{"ints/0 = 1", "ints/1 = -2", "reals/0 = 0.25", "flags/0 = true",
                                "flags/1 = false", "tensors/0 = FloatStorage(2)", "names/0 = 'a'",
                                "names/1 = 'b'", "map/k = 1", "n = 5 [m]"}));

  const auto call = [](const std::string& name, const std::string& args) {
    return module_with(
        Pickle().str("x").global("torch.jit._pickle", name).raw(args).op('R').bytes());
  };
  expect_refused(call("build_intlist", Pickle().op(')').bytes()),
                 {"a typed list's arguments must be a tuple of 1, got a tuple of 0"});
  expect_refused(call("build_intlist", Pickle().op(']').op(']').op(0x86).bytes()),
                 {"a typed list's arguments must be a tuple of 1, got a tuple of 2"});
  expect_refused(call("build_intlist", Pickle().op(']').bytes()),
                 {"a typed list's arguments must be a tuple of 1, got a list of 0"});
  expect_refused(call("build_doublelist", Pickle().int1(1).op(0x85).bytes()),
                 {"a typed list", "got the int 1"});
  expect_refused(call("build_boollist", Pickle().op(')').op(0x85).bytes()),
                 {"a typed list", "got a tuple of 0"});
  expect_refused(call("build_tensorlist", Pickle().op('}').op(0x85).bytes()),
                 {"a typed list", "got a dict"});
  expect_refused(call("restore_type_tag", Pickle().op(']').op(0x85).bytes()),
                 {"restore_type_tag's arguments must be a tuple of 2, got a tuple of 1"});
  expect_refused(call("restore_type_tag", Pickle().op(']').int1(3).op(0x86).bytes()),
                 {"a type tag must be a string, got the int 3"});
  expect_refused(call("restore_type_tag", Pickle().op(']').op('N').op(0x86).bytes()),
                 {"a type tag must be a string, got None"});
  expect_refused(call("restore_type_tag", Pickle().op(']').str("t").op(']').op(0x87).bytes()),
                 {"restore_type_tag's arguments must be a tuple of 2, got a tuple of 3"});
  // Only called by REDUCE.
  expect_refused(
      module_with(
          Pickle().str("x").global("torch.jit._pickle", "build_intlist").op(')').op(0x81).bytes()),
      {"NEWOBJ may build only a __torch__ class"});
  expect_refused(
      module_with(Pickle().str("x").global("torch.jit._pickle", "restore_type_tag").bytes()),
      {"the key 'x' holds the global 'torch.jit._pickle.restore_type_tag'"});
}

TEST(PickleReader, RebuildParameterIsTheTensorItWraps) {
  const auto attributes = parse(Pickle()
                                    .proto()
                                    .begin_dict()
                                    .str("weight")
                                    .parameter("0", 6, {2, 3}, {3, 1})
                                    .str("bias")
                                    .parameter("1", 2, {2}, {1})
                                    .end_dict()
                                    .op('.')
                                    .bytes());
  EXPECT_EQ(lines(attributes),
            (std::vector<std::string>{"weight = FloatStorage(2, 3)", "bias = FloatStorage(2)"}));
  EXPECT_EQ(attributes[0].value.tensor.storage_key, "0");
  EXPECT_EQ(attributes[0].value.tensor.storage_numel, 6u);
  EXPECT_EQ(attributes[0].value.tensor.strides, (std::vector<int64_t>{3, 1}));

  const std::string tensor = Pickle().tensor("0", "FloatStorage", 1, 0, {}, {}).bytes();
  const std::string hooks = Pickle().global("collections", "OrderedDict").op(')').op('R').bytes();
  const auto call = [](const std::string& args) {
    return module_with(
        Pickle().str("p").global("torch._utils", "_rebuild_parameter").raw(args).op('R').bytes());
  };
  EXPECT_EQ(parse(call(Pickle().raw(tensor).op(0x89).raw(hooks).op(0x87).bytes())).size(), 1u);
  expect_refused(call(Pickle().int1(1).op(0x88).raw(hooks).op(0x87).bytes()),
                 {"a parameter must wrap a tensor, got the int 1"});
  expect_refused(call(Pickle().op('}').op(0x88).raw(hooks).op(0x87).bytes()),
                 {"a parameter must wrap a tensor, got a dict"});
  expect_refused(call(Pickle().raw(tensor).int1(1).raw(hooks).op(0x87).bytes()),
                 {"a parameter's requires_grad must be a bool, got the int 1"});
  expect_refused(call(Pickle()
                          .raw(tensor)
                          .op(0x88)
                          .begin_dict()
                          .str("hook")
                          .op('N')
                          .end_dict()
                          .op(0x87)
                          .bytes()),
                 {"a parameter's backward hooks must be an empty dict, got a dict"});
  expect_refused(call(Pickle().raw(tensor).op(0x88).op(0x86).bytes()),
                 {"_rebuild_parameter's arguments must be a tuple of 3, got a tuple of 2"});
  expect_refused(call(Pickle().raw(tensor).op(0x85).bytes()),
                 {"_rebuild_parameter's arguments must be a tuple of 3, got a tuple of 1"});
}

TEST(PickleReader, RebuildTensorTakesADictOfAttributesAsSeventhArgument) {
  // PyTorch 2's torch.save passes the tensor's Python attributes (usually an empty dict).
  const auto with = [](const std::string& seventh) {
    return module_with(
        Pickle().str("w").tensor("0", "FloatStorage", 6, 1, {5}, {1}, seventh).bytes());
  };
  for (const std::string& seventh :
       {Pickle().op('}').bytes(), Pickle().begin_dict().str("name").str("x").end_dict().bytes(),
        Pickle().global("collections", "OrderedDict").op(')').op('R').bytes()}) {
    const auto attributes = parse(with(seventh));
    ASSERT_EQ(attributes.size(), 1u);
    EXPECT_EQ(lines(attributes), (std::vector<std::string>{"w = FloatStorage(5) [m]"}));
    EXPECT_EQ(attributes[0].value.tensor.offset, 1);
  }
  expect_refused(with(Pickle().op('N').bytes()), {"a tensor's metadata must be a dict, got None"});
  expect_refused(with(Pickle().op(']').bytes()),
                 {"a tensor's metadata must be a dict, got a list of 0"});
  expect_refused(with(Pickle().op('}').op('}').bytes()),
                 {"_rebuild_tensor_v2's arguments must be a tuple of 6, got a tuple of 8"});
  // Its bounds are checked as with six.
  expect_refused(
      module_with(Pickle().str("w").tensor("0", "FloatStorage", 6, 2, {5}, {1}, "}").bytes()),
      {"addresses elements outside its storage '0' of 6 elements"});
}

// ---- bounds against memo references ----

// How long `body` takes, in seconds.
template <typename F>
double seconds(F&& body) {
  const auto start = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(PickleReader, ContainersThatHoldThemselvesAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cycles = {
      // d = {}; d['a'] = d
      {"dict", Pickle().proto().op('}').put(0).str("a").get(0).op('s').op('.').bytes()},
      // l = []; l.append(l)
      {"list", Pickle().proto().op(']').put(0).get(0).op('a').op('.').bytes()},
      // a = {}; b = {'a': a}; a['b'] = b
      {"two dicts", Pickle()
                        .proto()
                        .op('}')
                        .put(0)
                        .str("b")
                        .op('}')
                        .str("a")
                        .get(0)
                        .op('s')
                        .op('s')
                        .op('.')
                        .bytes()},
      // m.self = m
      {"module object", Pickle()
                            .proto()
                            .global("__torch__", "M")
                            .op(')')
                            .op(0x81)
                            .put(0)
                            .op('}')
                            .str("self")
                            .get(0)
                            .op('s')
                            .op('b')
                            .op('.')
                            .bytes()},
      // a typed list holding its own list
      {"typed list", Pickle()
                         .proto()
                         .op(']')
                         .put(0)
                         .global("torch.jit._pickle", "build_intlist")
                         .get(0)
                         .op(0x85)
                         .op('R')
                         .op('a')
                         .op('.')
                         .bytes()},
  };
  for (const auto& [what, bytes] : cycles) {
    SCOPED_TRACE(what);
    const double took = seconds([&] {
      expect_refused(bytes, {"nested more than 32 levels deep", "holds itself"});
    });
    EXPECT_LT(took, 5.0);
  }
}

TEST(PickleReader, NestingIsBoundedWhenTheResultIsFlattened) {
  // Lists filled after they were appended: the nesting grows after the reader saw each
  // APPEND, so only the flattening can count it. A root tuple holds L[0], ..., L[n - 1] with
  // L[k] = [L[k + 1]] and L[n - 1] = [1].
  const auto chain = [](int n) {
    Pickle pickle;
    pickle.proto().mark().op(']').put(0);
    for (int k = 1; k < n; ++k) pickle.op(']').put(1).op('a').get(1);  // L[k-1].append(L[k])
    pickle.int1(1).op('a');
    return pickle.tuple().op('.').bytes();
  };
  // The root tuple and 31 lists: 32 levels of containers.
  const auto ok = parse(chain(31));
  ASSERT_EQ(ok.size(), 31u);
  std::string deepest = "0";
  for (int k = 0; k < 31; ++k) deepest += "/0";
  EXPECT_EQ(ok.front().name, deepest);
  EXPECT_EQ(ok.back().name, "30/0");
  expect_refused(chain(32), {"nested more than 32 levels deep"});
  expect_refused(chain(1000), {"nested more than 32 levels deep"});
}

// An exponential DAG: L[0] = `leaves`, L[k] = [L[k - 1], L[k - 1]] for k <= levels; 2^levels
// paths to L[0], from a few hundred bytes. The value's opcodes, using memo indices 0..levels.
std::string doubling_value(int levels, const std::string& leaves) {
  Pickle pickle;
  for (int k = levels; k > 0; --k) pickle.op(']');  // L[levels], ..., L[1] on the stack
  pickle.raw(leaves).put(0);
  for (int k = 1; k <= levels; ++k) {
    // L[k] = [L[k-1], L[k-1]]; memo k is L[k] (memo indices are assigned in order).
    pickle.op('a').get(static_cast<uint8_t>(k - 1)).op('a').put(static_cast<uint8_t>(k));
  }
  return pickle.bytes();
}

// The pickle of that DAG alone.
std::string doubling(int levels, const std::string& leaves) {
  return Pickle().proto().raw(doubling_value(levels, leaves)).op('.').bytes();
}

TEST(PickleReader, RepeatedReferencesAreBoundedByTheValuesVisited) {
  // Small enough to read: 2^5 copies of [1, 2].
  const std::string two = Pickle().begin_list().int1(1).int1(2).end_list().bytes();
  const auto small = parse(doubling(5, two));
  ASSERT_EQ(small.size(), 64u);
  EXPECT_EQ(small.front().name, "0/0/0/0/0/0");
  EXPECT_EQ(small.back().name, "1/1/1/1/1/1");
  // 2^30 empty lists at the bottom (2^31 - 1 values): the keys of their paths stop it (the
  // values counted stop shorter paths: zip_limits_test.cpp's PickleMemory).
  double took = seconds([&] {
    expect_refused(doubling(30, Pickle().op(']').bytes()),
                   {"keys of more than 67108864 bytes in all"});
  });
  EXPECT_LT(took, 30.0);
  // 2^30 tensors of 64 dimensions: their dimensions in all stop it.
  took = seconds([&] {
    expect_refused(doubling(30, Pickle()
                                    .begin_list()
                                    .tensor("0", "FloatStorage", 1, 0, std::vector<int64_t>(64, 1),
                                            std::vector<int64_t>(64, 0))
                                    .end_list()
                                    .bytes()),
                   {"tensors of more than 4194304 dimensions in all (repeated references)"});
  });
  EXPECT_LT(took, 30.0);
}

TEST(PickleReader, KeysAreBounded) {
  const auto dict_of = [](const std::string& key, const std::string& value) {
    return Pickle().proto().begin_dict().str(key).raw(value).end_dict().op('.').bytes();
  };
  const std::string longest(kMaxKeyBytes, 'k');
  const auto ok = parse(dict_of(longest, Pickle().int1(1).bytes()));
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].name, longest);
  expect_refused(dict_of(longest + "k", Pickle().int1(1).bytes()),
                 {"a key of more than 65536 bytes"});
  expect_refused(module_with(Pickle().str(longest + "k").int1(1).bytes()),
                 {"a key of more than 65536 bytes"});
  // Components within the bound, the path beyond it: "<half>/<half>".
  const std::string half(kMaxKeyBytes / 2, 'h');
  expect_refused(dict_of(half, Pickle().begin_dict().str(half).int1(1).end_dict().bytes()),
                 {"a key of more than 65536 bytes"});
  // A long key above repeated references: the bytes of all keys are bounded too.
  expect_refused(dict_of(std::string(60000, 'k'), doubling_value(20, Pickle().op(']').bytes())),
                 {"keys of more than 67108864 bytes in all"});
}

TEST(PickleReader, ValueCountIsBounded) {
  // Each EMPTY_DICT makes a value; a stack of 2^20 of them is the limit.
  std::string many = Pickle().proto().bytes();
  many += std::string(kMaxStack + 1, '}');
  expect_refused(many, {"values on the stack"});
}

// ---- keys ----

TEST(ArchiveKeys, EncodingLeavesTypicalKeysAndTakesEveryByteBack) {
  for (const std::string key : {"models/main/0.weight", "optimizers/main/param_groups/0/lr",
                                "a:b-c_d.e", "tth/format_version", "weight"}) {
    EXPECT_EQ(encode_archive_key(key), key);
  }
  EXPECT_EQ(encode_archive_key("ma\"in/%"), "ma%22in/%25");
  EXPECT_EQ(encode_archive_key("\\\n "), "%5C%0A%20");
  EXPECT_EQ(encode_archive_key("\xc3\xa9"), "%C3%A9");
  // Names TorchScript cannot take bare (its keywords, module metadata): the first byte.
  EXPECT_EQ(encode_archive_key("if"), "%69f");
  EXPECT_EQ(encode_archive_key("None"), "%4Eone");
  EXPECT_EQ(encode_archive_key("__parameters__"), "%5F_parameters__");
  EXPECT_EQ(encode_archive_key("ifx"), "ifx");
  std::string every;
  for (int c = 0; c < 256; ++c) every += static_cast<char>(c);
  const std::string encoded = encode_archive_key(every);
  for (char c : encoded) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) ||
                std::string("_./:-%").find(c) != std::string::npos)
        << c;
  }
  EXPECT_EQ(decode_archive_key(encoded), every);
  std::mt19937 random(8);
  for (int i = 0; i < 1000; ++i) {
    std::string key(random() % 12, '\0');
    for (char& c : key) c = static_cast<char>(random() % 256);
    EXPECT_EQ(decode_archive_key(encode_archive_key(key)), key);
  }
  // Names that were never encoded come back unchanged.
  for (const std::string name : {"50%", "%zz", "a%4", "%", "plain"}) {
    EXPECT_EQ(decode_archive_key(name), name);
  }
  EXPECT_EQ(decode_archive_key("%41%62"), "Ab");
}

// ---- the archive around the pickle ----

// Writes a zip of (name, bytes) members with our ZipWriter (CRCs right).
void write_zip(const std::string& path,
               const std::vector<std::pair<std::string, std::string>>& members) {
  File file(path, O_WRONLY | O_CREAT | O_TRUNC);
  ZipWriter writer(file);
  for (const auto& [name, bytes] : members) {
    writer.begin_member(name);
    writer.write(bytes.data(), bytes.size());
    writer.end_member();
  }
  writer.finish();
  file.close();
}

std::string le64(int64_t value) {
  std::string bytes;
  for (int i = 0; i < 8; ++i)
    bytes += static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff);
  return bytes;
}

TEST(TorchArchiveLayout, ChecksEveryStorageMemberAgainstItsTensors) {
  TempDir dir;
  const std::string two = Pickle()
                              .begin_module()
                              .str("a")
                              .tensor("0", "FloatStorage", 4, 0, {4}, {1})
                              .str("b")
                              .tensor("0", "FloatStorage", 4, 2, {2}, {1})  // a shared storage
                              .end_module()
                              .bytes();
  write_zip(dir / "ok.pt", {{"archive/data.pkl", two}, {"archive/data/0", std::string(16, 'x')}});
  const ZipReader ok(dir / "ok.pt");
  const TorchArchiveLayout layout = read_torch_archive(ok, "tth/format_version");
  ASSERT_EQ(layout.storages.size(), 1u);
  EXPECT_EQ(layout.entries[0].storage, layout.entries[1].storage);

  const auto refused = [&](const std::string& name,
                           const std::vector<std::pair<std::string, std::string>>& members,
                           const std::string& fragment) {
    SCOPED_TRACE(name);
    write_zip(dir / name, members);
    const ZipReader reader(dir / name);
    try {
      read_torch_archive(reader, "tth/format_version");
      ADD_FAILURE() << "accepted";
    } catch (const FormatError& error) {
      EXPECT_THAT(error.what(), HasSubstr("file '" + (dir / name) + "'"));
      EXPECT_THAT(error.what(), HasSubstr(fragment));
    }
  };
  refused("missing.pt", {{"archive/data.pkl", two}},
          "its storage member 'archive/data/0' is missing");
  refused("short.pt", {{"archive/data.pkl", two}, {"archive/data/0", std::string(15, 'x')}},
          "holds 15 bytes, but 4 elements of FloatStorage need 16");
  refused("long.pt", {{"archive/data.pkl", two}, {"archive/data/0", std::string(17, 'x')}},
          "holds 17 bytes");
  refused("none.pt", {{"archive/x.pkl", two}}, "holds no '<dir>/data.pkl' member");
  refused("nested.pt", {{"a/b/data.pkl", two}}, "holds no '<dir>/data.pkl' member");
  refused("two.pt", {{"a/data.pkl", two}, {"b/data.pkl", two}}, "holds 2 '<dir>/data.pkl' members");
  refused("garbage.pt", {{"archive/data.pkl", "\x80\x02os.system"}},
          "member 'archive/data.pkl': byte 2");
  const std::string conflict = Pickle()
                                   .begin_module()
                                   .str("a")
                                   .tensor("0", "FloatStorage", 4, 0, {4}, {1})
                                   .str("b")
                                   .tensor("0", "IntStorage", 4, 0, {4}, {1})
                                   .end_module()
                                   .bytes();
  refused("conflict.pt", {{"archive/data.pkl", conflict}, {"archive/data/0", std::string(16, 'x')}},
          "key 'b': storage '0' is used as IntStorage of 4 elements and as FloatStorage of 4");
  const std::string huge = Pickle()
                               .begin_module()
                               .str("a")
                               .tensor("0", "DoubleStorage", int64_t{1} << 62, 0, {1}, {1})
                               .end_module()
                               .bytes();
  refused("huge.pt", {{"archive/data.pkl", huge}, {"archive/data/0", std::string(8, 'x')}},
          "need more than 2^64");
}

TEST(TorchArchiveLayout, KeysAreDecodedUnlessTheFormatVersionIsOne) {
  TempDir dir;
  const auto archive = [&](const std::string& name, int64_t version, bool as_tensor) {
    Pickle pickle;
    pickle.begin_module().str("tth/format_version");
    if (as_tensor) {
      pickle.tensor("0", "LongStorage", 1, 0, {}, {});
    } else {
      pickle.integer(version);
    }
    pickle.str("ma%22in").int1(1).str("x%41").int1(2).end_module();
    write_zip(dir / name,
              {{"archive/data.pkl", pickle.bytes()}, {"archive/data/0", le64(version)}});
  };
  const auto keys = [&](const std::string& name) {
    const ZipReader reader(dir / name);
    std::vector<std::string> out;
    for (const auto& entry : read_torch_archive(reader, "tth/format_version").entries)
      out.push_back(entry.key);
    return out;
  };
  archive("v1.pt", 1, true);
  EXPECT_EQ(keys("v1.pt"), (std::vector<std::string>{"tth/format_version", "ma%22in", "x%41"}));
  archive("v1int.pt", 1, false);
  EXPECT_EQ(keys("v1int.pt"), (std::vector<std::string>{"tth/format_version", "ma%22in", "x%41"}));
  archive("v2.pt", 2, true);
  EXPECT_EQ(keys("v2.pt"), (std::vector<std::string>{"tth/format_version", "ma\"in", "xA"}));
  archive("v0.pt", 0, true);  // not a version that stored raw keys (and refused when read)
  EXPECT_EQ(keys("v0.pt"), (std::vector<std::string>{"tth/format_version", "ma\"in", "xA"}));

  const std::string clash =
      Pickle().begin_module().str("xA").int1(1).str("x%41").int1(2).end_module().bytes();
  write_zip(dir / "clash.pt", {{"archive/data.pkl", clash}});
  const ZipReader reader(dir / "clash.pt");
  EXPECT_THROW_WITH(read_torch_archive(reader, "tth/format_version"), FormatError,
                    "two entries decode to the key 'xA'");
}

TEST(TorchArchiveLayout, OnlyALittleEndianByteOrderIsRead) {
  TempDir dir;
  const std::string pickle = Pickle()
                                 .begin_module()
                                 .str("w")
                                 .tensor("0", "FloatStorage", 2, 0, {2}, {1})
                                 .str("n")
                                 .op('N')
                                 .end_module()
                                 .bytes();
  const auto archive = [&](const std::string& name, const std::string& order) {
    write_zip(dir / name, {{"archive/data.pkl", pickle},
                           {"archive/byteorder", order},
                           {"archive/data/0", std::string(8, 'x')}});
    return dir / name;
  };
  // PyTorch 2 writes "little"; LibTorch 1.13 and torch_savefun write no byteorder member.
  const ZipReader little(archive("little.pt", "little"));
  const TorchArchiveLayout layout = read_torch_archive(little, "tth/format_version");
  EXPECT_TRUE(layout.module);
  EXPECT_EQ(lines(layout), (std::vector<std::string>{"w = FloatStorage(2) [m]", "n = None [m]"}));
  for (const auto& [name, order, fragment] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"big.pt", "big", "member 'archive/byteorder' says 'big': only little-endian"},
           {"empty.pt", "", "member 'archive/byteorder' says ''"},
           {"newline.pt", "little\n", "member 'archive/byteorder' says 'little\\x0a'"},
           {"long.pt", std::string(17, 'l'), "member 'archive/byteorder' declares 17 bytes"}}) {
    SCOPED_TRACE(name);
    const ZipReader reader(archive(name, order));
    EXPECT_THROW_WITH(read_torch_archive(reader, "tth/format_version"), FormatError,
                      "file '" + (dir / name) + "': " + fragment);
  }
}

TEST(TorchArchiveLayout, ListsNestedEntriesWithTheirStorages) {
  // A torch.save-like checkpoint: the module flag, flattened keys and shared storages.
  TempDir dir;
  const std::string pickle = Pickle()
                                 .proto()
                                 .begin_dict()
                                 .str("model")
                                 .begin_dict()
                                 .str("weight")
                                 .parameter("0", 4, {2, 2}, {2, 1})
                                 .end_dict()
                                 .str("state")
                                 .begin_dict()
                                 .integer(0)
                                 .begin_dict()
                                 .str("exp_avg")
                                 .tensor("1", "FloatStorage", 4, 0, {2, 2}, {2, 1})
                                 .str("step")
                                 .real(1.0)
                                 .end_dict()
                                 .end_dict()
                                 .str("params")
                                 .begin_list()
                                 .int1(0)
                                 .end_list()
                                 .str("foreach")
                                 .op('N')
                                 .end_dict()
                                 .op('.')
                                 .bytes();
  write_zip(dir / "ckpt.pt", {{"archive/data.pkl", pickle},
                              {"archive/data/0", std::string(16, 'a')},
                              {"archive/data/1", std::string(16, 'b')}});
  const ZipReader reader(dir / "ckpt.pt");
  const TorchArchiveLayout layout = read_torch_archive(reader, "tth/format_version");
  EXPECT_FALSE(layout.module);
  EXPECT_EQ(lines(layout), (std::vector<std::string>{
                               "model/weight = FloatStorage(2, 2)",
                               "state/0/exp_avg = FloatStorage(2, 2)",
                               "state/0/step = 1.0",
                               "params/0 = 0",
                               "foreach = None",
                           }));
  ASSERT_EQ(layout.storages.size(), 2u);
  EXPECT_EQ(layout.storages[layout.entries[0].storage].key, "0");
  EXPECT_EQ(layout.storages[layout.entries[1].storage].key, "1");
  // Storages are checked below any nesting.
  write_zip(dir / "short.pt",
            {{"archive/data.pkl", pickle}, {"archive/data/0", std::string(16, 'a')}});
  const ZipReader short_reader(dir / "short.pt");
  EXPECT_THROW_WITH(read_torch_archive(short_reader, "tth/format_version"), FormatError,
                    "key 'state/0/exp_avg': its storage member 'archive/data/1' is missing");
}

}  // namespace
}  // namespace tth::container
