// Tests of the restricted pickle reader and the tensor-archive layout (container/pickle.h),
// LibTorch-free: they also run under ASan/UBSan (tth_container_tests_asan). The oracles are
// the real writers: /usr/bin/python3's torch.jit.save and torch.save (torch 1.13) and
// pickletools; the refusals are hand-made byte sequences, each of which a general unpickler
// would accept (or crash on).
#include "container/pickle.h"

#include <fcntl.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
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
  // _rebuild_tensor_v2((storage, type, key, 'cpu', numel), offset, sizes, strides, False, {})
  Pickle& tensor(const std::string& key, const std::string& type, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    mark().str("storage").global("torch", type).str(key).str("cpu").integer(numel).tuple();
    op('Q').integer(offset).ints(sizes).ints(strides).op(0x89);
    global("collections", "OrderedDict").op(')').op('R');
    return tuple().op('R');
  }
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
  const auto attributes = parse(bytes);
  ASSERT_EQ(attributes.size(), 8u);  // None is left out
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
  std::vector<std::string> names;
  for (const auto& entry : module.entries) names.push_back(entry.key);
  // Python's scripted modules carry `training` and `_is_full_backward_hook` (None: left out).
  EXPECT_EQ(names,
            (std::vector<std::string>{"w", "steps", "training", "n", "big", "x", "flag", "name"}));
  EXPECT_EQ(module.entries[0].value.tensor.sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(module.storages[module.entries[1].storage].type, StorageType::kInt64);
  EXPECT_EQ(module.entries[3].value.integer, -7);
  EXPECT_EQ(module.entries[4].value.integer, int64_t{1} << 40);
  EXPECT_EQ(module.entries[5].value.real, 0.5);
  EXPECT_TRUE(module.entries[6].value.boolean);
  EXPECT_EQ(module.entries[7].value.text, "hello");

  const ZipReader dict_file(dir / "dict.pt");
  const TorchArchiveLayout dict = read_torch_archive(dict_file, "tth/format_version");
  ASSERT_EQ(dict.entries.size(), 3u);
  EXPECT_EQ(dict.entries[1].value.tensor.offset, 1);  // a view keeps its whole storage
  EXPECT_EQ(dict.entries[1].value.tensor.storage_numel, 5u);
  EXPECT_EQ(dict.entries[2].value.integer, 4);

  const ZipReader linear_file(dir / "linear.pt");
  const TorchArchiveLayout linear = read_torch_archive(linear_file, "tth/format_version");
  ASSERT_EQ(linear.entries.size(), 2u);
  EXPECT_EQ(linear.entries[0].key, "weight");
  EXPECT_EQ(linear.entries[1].key, "bias");
}

// ---- what is refused ----

TEST(PickleReader, RefusesEveryGlobalButTheFourTensorArchivesUse) {
  const std::vector<std::pair<std::string, std::string>> globals = {
      {"os", "system"},
      {"posix", "system"},
      {"builtins", "eval"},
      {"builtins", "getattr"},
      {"__builtin__", "exec"},
      {"subprocess", "Popen"},
      {"torch._utils", "_rebuild_parameter"},  // torch.save of a bare nn.Parameter: not ours
      {"torch._utils", "_rebuild_qtensor"},
      {"torch._utils", "_rebuild_sparse_tensor"},
      {"torch", "load"},
      {"torch", "QInt8Storage"},
      {"torch.storage", "FloatStorage"},
      {"collections", "defaultdict"},
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
  const std::string refused = std::string("]ael") + "dio" + "pgIL" + "FSVUTBC" + "0123P" +
                              "\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98" +
                              "\x82\x83\x84" + std::string(1, '\0') + "\xff";
  for (char code : refused) {
    SCOPED_TRACE(static_cast<int>(static_cast<uint8_t>(code)));
    expect_refused(
        Pickle().proto().op(static_cast<uint8_t>(code)).raw(std::string(16, '\0')).bytes(),
        {"byte 2: opcode 0x", "is not accepted"});
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
  expect_refused(Pickle().proto().raw(std::string(kLevels, ']')).bytes(), {"opcode 0x5d"});
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

TEST(PickleReader, TheResultMustBeAModuleOrADictOfPlainValues) {
  expect_refused(Pickle().proto().int1(1).op('.').bytes(),
                 {"the pickle holds the int 1, not a module"});
  expect_refused(Pickle().proto().global("__torch__", "M").op(')').op(0x81).op('.').bytes(),
                 {"the module object has no state (no BUILD)"});
  expect_refused(module_with(Pickle().int1(1).int1(2).bytes()),
                 {"an attribute name must be a string, got the int 1"});
  expect_refused(module_with(Pickle().str("a").int1(1).str("a").int1(2).bytes()),
                 {"the attribute 'a' appears twice"});
  expect_refused(module_with(Pickle().str("t").op(')').bytes()),
                 {"the attribute 't' holds a tuple of 0"});
  expect_refused(module_with(Pickle().str("d").op('}').bytes()),
                 {"the attribute 'd' holds a dict"});
  expect_refused(
      module_with(
          Pickle().str("sub").global("__torch__", "Sub").op(')').op(0x81).op('}').op('b').bytes()),
      {"the attribute 'sub' holds a module object"});
  expect_refused(Pickle().begin_module().op('u').op('b').op('}').op('b').op('.').bytes(),
                 {"BUILD of a module object that was built already"});
  expect_refused(
      Pickle().proto().global("__torch__", "M").op(')').op(0x81).op(')').op('b').op('.').bytes(),
      {"BUILD's state must be a dict, got a tuple of 0"});
  expect_refused(Pickle().proto().int1(1).op('}').op('b').op('.').bytes(), {"BUILD of the int 1"});
  // A name's unprintable bytes are escaped in messages.
  expect_refused(module_with(Pickle().str("a\n\"").op(')').bytes()), {"'a\\x0a\"' holds"});
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

}  // namespace
}  // namespace tth::container
