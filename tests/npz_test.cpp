#include <fmt/format.h>

#include <filesystem>
#include <map>

#include "container/crc32.h"
#include "support.h"
#include "test_programs.h"

namespace tth {
namespace {

using test::python;
using test::read_file;
using test::run_command;
using test::same_tensor;
using test::shell_quote;
using test::TempDir;
using test::write_file;

const std::vector<std::vector<int64_t>> kShapes = {{}, {0}, {3}, {2, 3}, {0, 5}, {2, 1, 3}};

struct DtypeCase {
  at::ScalarType dtype;
  std::string numpy;  // numpy's dtype.str for what we write
};
const std::vector<DtypeCase> kDtypes = {{at::kBool, "|b1"},
                                        {at::kChar, "|i1"},
                                        {at::kByte, "|u1"},
                                        {at::kShort, "<i2"},
                                        {at::kInt, "<i4"},
                                        {at::kLong, "<i8"},
                                        {at::kHalf, "<f2"},
                                        {at::kFloat, "<f4"},
                                        {at::kDouble, "<f8"},
                                        {at::kComplexFloat, "<c8"},
                                        {at::kComplexDouble, "<c16"},
                                        {at::kBFloat16, "<f4"}};

std::string python_shape(at::IntArrayRef sizes) {
  if (sizes.size() == 1) return fmt::format("({},)", sizes[0]);
  return fmt::format("({})", fmt::join(sizes, ", "));
}

std::string hex(const at::Tensor& tensor) {
  const at::Tensor bytes = tensor.contiguous();
  const auto* data = static_cast<const uint8_t*>(bytes.data_ptr());
  std::string out;
  for (size_t i = 0; i < bytes.nbytes(); ++i) out += fmt::format("{:02x}", data[i]);
  return out;
}

at::Tensor sample(at::ScalarType dtype, const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  at::Tensor values = at::arange(numel, at::kDouble).reshape(shape) * 1.5 - 2;
  if (dtype == at::kBool) return values.remainder(2).gt(0.5);
  if (dtype == at::kByte) return values.abs().to(dtype);
  if (at::isComplexType(dtype)) return at::complex(values, -values).to(dtype);
  return values.to(dtype);
}

// Key, dtype, shape and data as numpy sees them, one line per array: the data's bytes in hex,
// or with a second argument "crc" their CRC-32 (for large arrays).
constexpr const char* kDescribe = R"(
import sys, zlib, numpy as np
crc = sys.argv[2:] == ['crc']
with np.load(sys.argv[1]) as f:
    for k in f.files:
        a = f[k]
        if a.dtype.kind == 'U':
            print(k, a.dtype.str, a.shape, repr(str(a)))
        else:
            data = np.ascontiguousarray(a).tobytes()
            print(k, a.dtype.str, a.shape, zlib.crc32(data) if crc else data.hex())
)";

// read_npz gives back every tensor (dtype, shape, bytes) and text of `state`.
void expect_reads_back(const std::string& path, const StateDict& state) {
  const StateDict back = read_npz(path);
  ASSERT_EQ(back.size(), state.size());
  for (const auto& [key, value] : state) {
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      EXPECT_TRUE(same_tensor(back.tensor(key), *tensor)) << key;
    } else {
      EXPECT_EQ(back.text(key), std::get<std::string>(value)) << key;
    }
  }
}

TEST(NpzSavefun, EveryDtypeAndShapeReadsInNumpyWithTheSameBytes) {
  TempDir dir;
  StateDict state;
  std::vector<std::string> expected;
  for (const auto& [dtype, numpy] : kDtypes) {
    for (size_t s = 0; s < kShapes.size(); ++s) {
      const std::string key = fmt::format("{}/s{}", c10::toString(dtype), s);
      const at::Tensor value = sample(dtype, kShapes[s]);
      state.set(key, value);
      const at::Tensor as_numpy = dtype == at::kBFloat16 ? value.to(at::kFloat) : value;
      expected.push_back(
          fmt::format("{} {} {} {}", key, numpy, python_shape(value.sizes()), hex(as_numpy)));
    }
  }
  // A non-contiguous tensor, a large one written in chunks, and texts.
  const at::Tensor transposed = sample(at::kFloat, {3, 4}).t();
  state.set("transposed", transposed);
  expected.push_back("transposed <f4 (4, 3) " + hex(transposed));
  const at::Tensor strided =
      at::arange(3 * 1024 * 1024, at::kFloat).reshape({3, 1024, 1024}).transpose(1, 2);
  state.set("chunked", strided);
  expected.push_back("chunked <f4 (3, 1024, 1024) " + hex(strided));
  state.set("text", std::string("h\xc3\xa9llo \xe2\x9c\x93"));
  expected.push_back("text <U7 () 'h\xc3\xa9llo \xe2\x9c\x93'");
  state.set("empty_text", std::string());
  expected.push_back("empty_text <U1 () ''");

  for (auto compression : {NpzCompression::kStored, NpzCompression::kDeflate}) {
    const std::string path = dir / "all.npz";
    npz_savefun(NpzOptions().compression(compression))(path, state);
    std::string out = python(kDescribe, {path});
    for (const std::string& line : expected) {
      EXPECT_NE(out.find(line + "\n"), std::string::npos) << line.substr(0, 120);
    }
    // The bfloat16 arrays are listed for the way back, and everything reads back equal.
    EXPECT_NE(out.find("tth/npz_dtypes <U"), std::string::npos);
    expect_reads_back(path, state);
  }
}

TEST(NpzSavefun, ContainerPassesZipfileAndUnzipAndAFlippedByteFailsBothReaders) {
  TempDir dir;
  StateDict state;
  state.set("w", at::arange(1000, at::kFloat));
  state.set_int("n", 3);
  npz_savefun()(dir / "a.npz", state);
  EXPECT_NE(
      python("import sys, zipfile\nprint(zipfile.ZipFile(sys.argv[1]).testzip())", {dir / "a.npz"})
          .find("None"),
      std::string::npos);
  const auto unzip = run_command("unzip -t " + shell_quote(dir / "a.npz"));
  EXPECT_EQ(unzip.exit_code, 0) << unzip.output;
  auto bytes = read_file(dir / "a.npz");
  bytes[64 + 500] ^= 0x10;  // inside w's data (stored members start at offset 0)
  write_file(dir / "bad.npz", bytes);
  EXPECT_THROW_WITH(read_npz(dir / "bad.npz"), FormatError, "CRC-32 mismatch");
  EXPECT_THROW_WITH(read_snapshot(dir / "bad.npz"), FormatError, "member 'w.npy'");
  EXPECT_NE(python(R"(
import sys, numpy as np
try:
    np.load(sys.argv[1])['w']
    print('numpy read it')
except Exception as e:
    print('numpy failed:', e)
)",
                   {dir / "bad.npz"})
                .find("numpy failed: Bad CRC-32"),
            std::string::npos);
}

// A lazy conjugate or negation is a flag beside unchanged memory: the file must hold the
// values the tensor has, stored and deflated.
TEST(NpzSavefun, WritesTheValuesOfLazyConjugatesAndNegations) {
  TempDir dir;
  const at::Tensor complex = torch::complex(torch::randn({6}), torch::randn({6}));
  StateDict state;
  state.set("conjugate", complex.conj());
  state.set("negated", torch::imag(complex.conj()));
  state.set("strided_conjugate", complex.conj().slice(0, 0, 6, 2));
  ASSERT_TRUE(state.tensor("conjugate").is_conj());
  ASSERT_TRUE(state.tensor("negated").is_neg());
  for (auto compression : {NpzCompression::kStored, NpzCompression::kDeflate}) {
    const std::string path = dir / "lazy.npz";
    npz_savefun(NpzOptions().compression(compression))(path, state);
    const StateDict saved = read_npz(path);
    for (const auto& entry : state) {
      const at::Tensor expected =
          std::get<at::Tensor>(entry.second).resolve_conj().resolve_neg().contiguous();
      EXPECT_TRUE(same_tensor(saved.tensor(entry.first), expected))
          << entry.first << (compression == NpzCompression::kStored ? " stored" : " deflated");
    }
  }
}

TEST(NpzSavefun, RejectsWhatNumpyCannotHold) {
  TempDir dir;
  StateDict state;
  state.set("q", at::zeros({2}, at::kComplexHalf));
  EXPECT_THROW_WITH(npz_savefun()(dir / "x.npz", state), Error,
                    "npz_savefun: key 'q': dtype ComplexHalf has no numpy equivalent");
  StateDict text;
  text.set("t", std::string("\xff\xfe"));
  EXPECT_THROW_WITH(npz_savefun()(dir / "y.npz", text), Error,
                    "key 't' holds a text that is not valid UTF-8");
  text.set("t", std::string("\xed\xa0\x80"));  // a surrogate
  EXPECT_THROW_WITH(npz_savefun()(dir / "y.npz", text), Error, "not valid UTF-8");
  EXPECT_THROW_WITH(npz_savefun(NpzOptions().level(12)), Error, "level must be -1 or 0..9, got 12");
}

TEST(NpzSavefun, MoreThan65535EntriesUseZip64) {
  TempDir dir;
  StateDict state;
  for (int i = 0; i < 70000; ++i) state.set_int(fmt::format("k{}", i), i);
  npz_savefun()(dir / "many.npz", state);
  const std::string out = python(R"(
import sys, zipfile, numpy as np
z = zipfile.ZipFile(sys.argv[1])
print('entries', len(z.infolist()))
print('value', int(np.load(sys.argv[1])['k69999']))
)",
                                 {dir / "many.npz"});
  EXPECT_NE(out.find("entries 70000"), std::string::npos) << out;
  EXPECT_NE(out.find("value 69999"), std::string::npos) << out;
  EXPECT_EQ(read_npz(dir / "many.npz").size(), 70000u);
}

TEST(ReadNpz, ReadsNumpySavezAndSavezCompressedOfEveryDtype) {
  TempDir dir;
  const std::string out = python(R"(
import sys, numpy as np
arrays = {}
for name in ['?', 'i1', 'u1', 'i2', 'i4', 'i8', 'f2', 'f4', 'f8', 'c8', 'c16']:
    for i, shape in enumerate([(), (0,), (3,), (2, 3), (0, 5), (2, 1, 3)]):
        n = int(np.prod(shape))
        a = (np.arange(n) * 3 - 4).reshape(shape)
        values = (a % 2 == 1) if name == '?' else (abs(a) if name == 'u1' else a)
        arrays[f'{name}/s{i}'] = values.astype(name)
arrays['big/i4'] = np.arange(6, dtype='>i4').reshape(2, 3)
arrays['big/f8'] = np.linspace(0, 1, 5).astype('>f8')
arrays['big/c16'] = (np.arange(3) + 1j).astype('>c16')
arrays['fortran/f4'] = np.asfortranarray(np.arange(6, dtype='f4').reshape(2, 3))
arrays['fortran/3d'] = np.asfortranarray(np.arange(24, dtype='i8').reshape(2, 3, 4))
arrays['text'] = np.array('caf\u00e9')
np.savez(sys.argv[1], none=np.array(None), **arrays)
np.savez_compressed(sys.argv[2], none=np.array(None), **arrays)
for k, a in arrays.items():
    if a.dtype.kind == 'U':
        continue
    le = np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<'))
    print(k, le.dtype.str, a.shape, le.tobytes().hex())
)",
                                 {dir / "plain.npz", dir / "compressed.npz"});
  std::map<std::string, std::string> expected;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    expected[line.substr(0, line.find(' '))] = line;
  }
  ASSERT_GE(expected.size(), 70u);
  const std::map<at::ScalarType, std::string> numpy_of = {
      {at::kBool, "|b1"},         {at::kChar, "|i1"},          {at::kByte, "|u1"},
      {at::kShort, "<i2"},        {at::kInt, "<i4"},           {at::kLong, "<i8"},
      {at::kHalf, "<f2"},         {at::kFloat, "<f4"},         {at::kDouble, "<f8"},
      {at::kComplexFloat, "<c8"}, {at::kComplexDouble, "<c16"}};
  for (const std::string file : {"plain.npz", "compressed.npz"}) {
    const StateDict state = read_npz(dir / file);
    EXPECT_FALSE(state.contains("none"));  // a 0-d object array (Chainer's None) is absent
    EXPECT_EQ(state.text("text"), "caf\xc3\xa9");
    for (const auto& [key, line] : expected) {
      ASSERT_TRUE(state.contains(key)) << key;
      const at::Tensor& tensor = state.tensor(key);
      EXPECT_EQ(fmt::format("{} {} {} {}", key, numpy_of.at(tensor.scalar_type()),
                            python_shape(tensor.sizes()), hex(tensor)),
                line)
          << file;
    }
  }
}

TEST(ReadNpz, TextsKeepInnerNulsAndReadBigEndian) {
  TempDir dir;
  python(
      "import sys, numpy as np\n"
      "np.savez(sys.argv[1], nul=np.array('a\\x00b'), big=np.array('abc', dtype='>U3'))",
      {dir / "texts.npz"});
  const StateDict state = read_npz(dir / "texts.npz");
  EXPECT_EQ(state.text("nul"), std::string("a\0b", 3));
  EXPECT_EQ(state.text("big"), "abc");
}

TEST(ReadNpz, ForeignMembersAndGarbageAreFormatErrors) {
  TempDir dir;
  python(
      "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.writestr('a.txt', 'x')",
      {dir / "txt.npz"});
  EXPECT_THROW_WITH(read_npz(dir / "txt.npz"), FormatError, "member 'a.txt': not an .npy array");
  python(R"(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000,), }" + b' ' * 45
    z.writestr('a.npy', b"\x93NUMPY\x01\x00\x6d\x00" + header + b'\n' + b'\0' * 16)
)",
         {dir / "lying.npz"});
  EXPECT_THROW_WITH(read_npz(dir / "lying.npz"), FormatError,
                    "the header declares 8000000 data bytes");
  write_file(dir / "junk.npz", {'P', 'K', 3, 4, 0, 0});
  EXPECT_THROW(read_npz(dir / "junk.npz"), FormatError);
}

// A module laid out like a Chainer model with links l1 and l2.
struct Net : torch::nn::Module {
  Net()
      : l1(register_module("l1", torch::nn::Linear(3, 4))),
        l2(register_module("l2", torch::nn::Linear(4, 2))) {}
  torch::nn::Linear l1, l2;
};

constexpr const char* kChainerSnapshot = R"(
import sys, numpy as np
p = 'updater/model:main/predictor/'
np.savez_compressed(sys.argv[1], **{
    p + 'l1/W': np.arange(12, dtype='f4').reshape(4, 3) / 10,
    p + 'l1/b': np.array([1, 2, 3, 4], dtype='f4'),
    p + 'l2/W': (np.arange(8).reshape(2, 4) / 4).astype('f2'),
    p + 'l2/b': np.array([-1, 1], dtype='f4'),
    'updater/iteration': np.array(1200),
    'updater/optimizer:main/t': np.array(1200),
    'extensions/LogReport/_log': np.array('[]'),
    'updater/iterator:main/order': np.array(None),
})
)";

TEST(LoadNpz, LoadsAChainerModelWithAPrefixAndTheChainerKeyMap) {
  TempDir dir;
  python(kChainerSnapshot, {dir / "chainer.npz"});
  Net net;
  load_npz(dir / "chainer.npz", net,
           NpzLoadOptions().prefix("updater/model:main/predictor/").key_map(chainer_names));
  EXPECT_TRUE(same_tensor(net.l1->weight, at::arange(12, at::kFloat).reshape({4, 3}) / 10));
  EXPECT_TRUE(same_tensor(net.l1->bias, at::tensor({1.f, 2.f, 3.f, 4.f})));
  // float16 in the file, float32 in the module: converted.
  EXPECT_TRUE(
      same_tensor(net.l2->weight, (at::arange(8, at::kDouble).reshape({2, 4}) / 4).to(at::kFloat)));
  EXPECT_EQ(chainer_names("bn/avg_mean"), "bn.running_mean");
  EXPECT_EQ(chainer_names("W"), "weight");
  EXPECT_EQ(chainer_names("l1/Wx"), "l1.Wx");
}

TEST(LoadNpz, StrictnessIgnoredNamesShapesAndLossyDtypesAreChecked) {
  TempDir dir;
  python(kChainerSnapshot, {dir / "chainer.npz"});
  const auto options = NpzLoadOptions().prefix("updater/").key_map([](const std::string& key) {
    return chainer_names(key.rfind("model:main/predictor/", 0) == 0 ? key.substr(21) : key);
  });
  Net net;
  const at::Tensor before = net.l1->weight.clone();
  EXPECT_THROW_WITH(load_npz(dir / "chainer.npz", net, options), StateError,
                    "load_npz: " + (dir / "chainer.npz") +
                        ": key 'iteration': is not expected: nothing here saves it");
  EXPECT_TRUE(same_tensor(net.l1->weight, before));  // nothing changed
  load_npz(dir / "chainer.npz", net,
           NpzLoadOptions(options).ignore({"iteration", "optimizer:main/t"}));
  EXPECT_FALSE(same_tensor(net.l1->weight, before));
  Net other;
  load_npz(dir / "chainer.npz", other, NpzLoadOptions(options).strict(false));
  EXPECT_TRUE(same_tensor(other.l1->weight, net.l1->weight));

  struct Wide : torch::nn::Module {
    Wide() { l1 = register_module("l1", torch::nn::Linear(3, 5)); }
    torch::nn::Linear l1{nullptr};
  } wide;
  EXPECT_THROW_WITH(load_npz(dir / "chainer.npz", wide,
                             NpzLoadOptions()
                                 .prefix("updater/model:main/predictor/")
                                 .key_map(chainer_names)
                                 .strict(false)),
                    StateError,
                    "load_npz: " + (dir / "chainer.npz") +
                        ": key 'l1.weight': holds Float[4, 3] but Float[5, 3] is expected");
  Net missing;
  // A prefix that selects nothing is named (a mistyped prefix); one that selects too little
  // names the first key it misses.
  EXPECT_THROW_WITH(load_npz(dir / "chainer.npz", missing, NpzLoadOptions().prefix("nothing/")),
                    StateError,
                    "load_npz: " + (dir / "chainer.npz") +
                        ": key 'nothing/': no key of the file starts with this prefix");
  EXPECT_THROW_WITH(
      load_npz(dir / "chainer.npz", missing,
               NpzLoadOptions().prefix("updater/model:main/predictor/l2/").key_map(chainer_names)),
      StateError,
      "load_npz: " + (dir / "chainer.npz") + ": key 'l1.weight': is missing from the loaded state");
  StateDict doubles;
  doubles.set("l1.weight", at::zeros({4, 3}, at::kDouble));
  doubles.set("l1.bias", at::zeros({4}));
  doubles.set("l2.weight", at::zeros({2, 4}));
  doubles.set("l2.bias", at::zeros({2}));
  npz_savefun()(dir / "doubles.npz", doubles);
  EXPECT_THROW_WITH(load_npz(dir / "doubles.npz", missing), StateError,
                    "load_npz: " + (dir / "doubles.npz") +
                        ": key 'l1.weight': the file holds Double values, which do not convert to "
                        "Float without loss");
}

TEST(LoadNpz, LoadsOptimizerStateFromAnNpzSnapshot) {
  TempDir dir;
  torch::manual_seed(0);
  Net net;
  auto optimizer =
      std::make_shared<torch::optim::Adam>(net.parameters(), torch::optim::AdamOptions(0.02));
  TorchTrainerHook hook{HookOptions(4).out(dir.path().string())};
  hook.add_optimizer("main", optimizer);
  hook.extend(snapshot(SnapshotOptions().savefun(npz_savefun()).filename("s.npz")),
              ExtendOptions().trigger({2, iteration}));
  for (int i = 0; i < 2; ++i) {
    hook.run_iteration([&] {
      optimizer->zero_grad();
      net.l2->forward(net.l1->forward(torch::randn({2, 3}))).sum().backward();
      optimizer->step();
    });
  }
  EXPECT_EQ(verify_file(dir / "s.npz"), FileFormat::kNpz);
  Net fresh;
  torch::optim::Adam target(fresh.parameters(), torch::optim::AdamOptions(0.5));
  load_npz(dir / "s.npz", target, NpzLoadOptions().prefix("optimizers/main/"));
  EXPECT_DOUBLE_EQ(target.param_groups()[0].options().get_lr(), 0.02);
  EXPECT_EQ(target.state().size(), 4u);
}

// A deep copy of an optimizer's per-parameter state, to compare after a load.
StateDict optimizer_tensors(const TorchTrainerHook& hook) {
  StateDict copy;
  for (const auto& [key, value] : hook.state_dict()) {
    if (key.rfind("optimizers/", 0) == 0 && std::holds_alternative<at::Tensor>(value)) {
      copy.set(key, std::get<at::Tensor>(value).clone());
    }
  }
  return copy;
}

TEST(LoadNpz, NonStrictOptimizerLoadKeepsWhatTheFileLacks) {
  TempDir dir;
  torch::manual_seed(0);
  Net net;
  auto optimizer =
      std::make_shared<torch::optim::Adam>(net.parameters(), torch::optim::AdamOptions(0.02));
  TorchTrainerHook hook{HookOptions(4).out(dir.path().string())};
  hook.add_optimizer("main", optimizer);
  for (int i = 0; i < 3; ++i) {
    hook.run_iteration([&] {
      optimizer->zero_grad();
      net.l2->forward(net.l1->forward(torch::randn({2, 3}))).sum().backward();
      optimizer->step();
    });
  }
  const StateDict before = optimizer_tensors(hook);
  ASSERT_EQ(optimizer->state().size(), 4u);
  // A file with none of the optimizer's keys: the weights of a model alone.
  StateDict weights;
  weights.set("l1.weight", at::zeros({4, 3}));
  npz_savefun()(dir / "weights.npz", weights);
  test::CapturedWarnings warnings;
  const IncompatibleKeys left_out =
      load_npz(dir / "weights.npz", *optimizer, NpzLoadOptions().strict(false));
  EXPECT_EQ(optimizer->state().size(), 4u);  // not wiped
  const StateDict after = optimizer_tensors(hook);
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [key, value] : before) {
    EXPECT_TRUE(same_tensor(after.tensor(key), std::get<at::Tensor>(value))) << key;
  }
  EXPECT_DOUBLE_EQ(optimizer->param_groups()[0].options().get_lr(), 0.02);
  EXPECT_EQ(left_out.unexpected_keys, std::vector<std::string>{"l1.weight"});
  // Every option of the group and every field of the 4 parameters' state was left out.
  EXPECT_NE(
      std::find(left_out.missing_keys.begin(), left_out.missing_keys.end(), "param_groups/0/lr"),
      left_out.missing_keys.end());
  EXPECT_NE(
      std::find(left_out.missing_keys.begin(), left_out.missing_keys.end(), "state/0/3/exp_avg_sq"),
      left_out.missing_keys.end());
  EXPECT_TRUE(warnings.contains("load_npz: " + (dir / "weights.npz") +
                                ": non-strict load kept the current values of"));

  // Strict, the same file is an error naming the file and the key, and changes nothing.
  EXPECT_THROW_WITH(load_npz(dir / "weights.npz", *optimizer), StateError,
                    "load_npz: " + (dir / "weights.npz") +
                        ": key 'param_groups/0/lr': is missing from the loaded state");
  EXPECT_EQ(optimizer->state().size(), 4u);
}

TEST(LoadNpz, NonStrictModuleLoadReportsWhatItLeftOut) {
  TempDir dir;
  StateDict partial;
  partial.set("l1.weight", at::ones({4, 3}));
  partial.set("extra", at::ones({1}));
  npz_savefun()(dir / "partial.npz", partial);
  Net net;
  const at::Tensor bias = net.l1->bias.clone();
  const IncompatibleKeys left_out =
      load_npz(dir / "partial.npz", net, NpzLoadOptions().strict(false));
  EXPECT_TRUE(same_tensor(net.l1->weight, at::ones({4, 3})));
  EXPECT_TRUE(same_tensor(net.l1->bias, bias));
  EXPECT_EQ(left_out.missing_keys, (std::vector<std::string>{"l1.bias", "l2.weight", "l2.bias"}));
  EXPECT_EQ(left_out.unexpected_keys, std::vector<std::string>{"extra"});
}

TEST(Tool, ConvertsBetweenFormatsAndInspectsNpz) {
  TempDir dir;
  StateDict state;
  state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
  state.set_int(kIterationKey, 7);
  state.set("models/main/w", at::arange(6, at::kFloat).reshape({2, 3}));
  state.set("models/main/h", at::ones({2}, at::kBFloat16));
  state.set("extensions/log/json", std::string("[1, 2]"));
  torch_savefun()(dir / "a.pt", state);
  const std::string tool = TTH_TOOL;
  auto result = run_command(tool + " convert " + shell_quote(dir / "a.pt") + " " +
                            shell_quote(dir / "b.npz"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(verify_file(dir / "b.npz"), FileFormat::kNpz);
  result = run_command(tool + " convert " + shell_quote(dir / "b.npz") + " " +
                       shell_quote(dir / "c.pt"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const StateDict back = read_snapshot(dir / "c.pt");
  ASSERT_EQ(back.size(), state.size());
  EXPECT_TRUE(same_tensor(back.tensor("models/main/h"), state.tensor("models/main/h")));
  EXPECT_TRUE(same_tensor(back.tensor("models/main/w"), state.tensor("models/main/w")));
  EXPECT_EQ(back.text("extensions/log/json"), "[1, 2]");
  const auto inspect = run_command(tool + " inspect " + shell_quote(dir / "b.npz"));
  EXPECT_THAT(inspect.output, ::testing::HasSubstr("format: TorchTrainerHook snapshot (npz)\n"));
  EXPECT_THAT(inspect.output, ::testing::HasSubstr("iteration: 7"));
  EXPECT_THAT(inspect.output, ::testing::ContainsRegex("models/main/h +BFloat16 +\\(2\\)"));
  EXPECT_EQ(run_command(tool + " verify " + shell_quote(dir / "b.npz")).exit_code, 0);
}

// ------------------------------------------------------------ deflate on all cores

std::string crc_line(const std::string& key, const std::string& numpy, const at::Tensor& value) {
  const at::Tensor bytes =
      (value.scalar_type() == at::kBFloat16 ? value.to(at::kFloat) : value).contiguous();
  return fmt::format(
      "{} {} {} {}", key, numpy, python_shape(value.sizes()),
      container::crc32_update(container::kCrc32Initial, bytes.data_ptr(), bytes.nbytes()));
}

// The threads of this process, from /proc/self/task.
size_t thread_count() {
  size_t count = 0;
  for ([[maybe_unused]] const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    ++count;
  }
  return count;
}

TEST(NpzSavefun, DeflateOnWorkerThreadsReadsBackInNumpyUnzipAndReadNpz) {
  TempDir dir;
  torch::manual_seed(5);
  StateDict state;
  std::vector<std::string> expected;
  const auto add = [&](const std::string& key, const std::string& numpy, const at::Tensor& value) {
    state.set(key, value);
    expected.push_back(crc_line(key, numpy, value));
  };
  // Weights of many sizes (random floats: only their exponents compress), written from their
  // own memory, among members that are converted first or are texts.
  const std::vector<std::vector<int64_t>> sizes = {{1024, 1024}, {512, 1024}, {1000, 3},
                                                   {257},        {1},         {2048, 1024}};
  for (size_t i = 0; i < sizes.size(); ++i) {
    add(fmt::format("layers/{}/weight", i), "<f4", at::randn(sizes[i]));
  }
  add("empty", "<f4", at::zeros({0, 3}));
  add("empty_bf16", "<f4", at::zeros({0}, at::kBFloat16));
  add("scalar", "<f8", at::scalar_tensor(2.5, at::kDouble));
  add("count", "<i8", at::scalar_tensor(12345, at::kLong));
  state.set("text", std::string("h\xc3\xa9llo \xe2\x9c\x93"));
  expected.push_back("text <U7 () 'h\xc3\xa9llo \xe2\x9c\x93'");
  add("bf16", "<f4", at::randn({300, 7}).to(at::kBFloat16));
  add("transposed", "<f4", at::randn({600, 500}).t());
  add("bf16_transposed", "<f4", at::randn({40, 30}).to(at::kBFloat16).t());
  add("offset", "<f4", at::randn({100, 64}).narrow(0, 10, 50));  // contiguous, not at 0
  add("ints", "<i8", at::arange(-500, 500, at::kLong).reshape({10, 100}));
  state.set("log", std::string(5000, 'x'));
  expected.push_back("log <U5000 () '" + std::string(5000, 'x') + "'");

  std::map<int, std::vector<uint8_t>> bytes_of;
  for (int threads : {1, 3, 0}) {
    SCOPED_TRACE(threads);
    const std::string path = dir / fmt::format("t{}.npz", threads);
    npz_savefun(NpzOptions().compression(NpzCompression::kDeflate).threads(threads))(path, state);
    bytes_of[threads] = read_file(path);
    const std::string out = python(kDescribe, {path, "crc"});
    for (const std::string& line : expected) {
      EXPECT_NE(out.find(line + "\n"), std::string::npos) << line.substr(0, 120) << "\n" << out;
    }
    expect_reads_back(path, state);
  }
  // Each member is compressed alone: the same bytes for any thread count.
  EXPECT_EQ(bytes_of[1], bytes_of[3]);
  EXPECT_EQ(bytes_of[1], bytes_of[0]);

  const std::string path = dir / "t1.npz";
  EXPECT_EQ(python(R"(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    infos = z.infolist()
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
    assert all(i.extract_version == 20 for i in infos)  # sizes known up front: no ZIP64 extra
    assert infos[-1].filename == 'tth/npz_dtypes.npy', infos[-1].filename
    w = z.getinfo('layers/5/weight.npy')
    assert w.compress_size < w.file_size * 0.95, (w.compress_size, w.file_size)
    print(z.testzip())
)",
                   {path}),
            "None\n");
  const auto unzip = run_command("unzip -t " + shell_quote(path));
  EXPECT_EQ(unzip.exit_code, 0) << unzip.output;
}

TEST(NpzSavefun, DeflateErrorAtALateKeyIsTheSameErrorAndJoinsEveryThread) {
  TempDir dir;
  StateDict state;
  for (int i = 0; i < 12; ++i) state.set(fmt::format("w{}", i), at::randn({256, 1024}));
  const auto deflate = npz_savefun(NpzOptions().compression(NpzCompression::kDeflate).threads(2));
  deflate(dir / "ok.npz", state);  // Starts whatever threads LibTorch starts on first use.
  const size_t threads_before = thread_count();
  state.set("q", at::zeros({2}, at::kComplexHalf));
  state.set("after", at::ones({3}));
  EXPECT_THROW_WITH(deflate(dir / "x.npz", state), Error,
                    "npz_savefun: key 'q': dtype ComplexHalf has no numpy equivalent");
  EXPECT_EQ(thread_count(), threads_before);
  StateDict text;
  text.set("w", at::randn({256, 1024}));
  text.set("t", std::string("\xff\xfe"));
  EXPECT_THROW_WITH(deflate(dir / "y.npz", text), Error,
                    "key 't' holds a text that is not valid UTF-8");
  EXPECT_EQ(thread_count(), threads_before);
  EXPECT_THROW_WITH(npz_savefun(NpzOptions().threads(-1)), Error,
                    "NpzOptions: threads must be >= 0, got -1");
}

}  // namespace
}  // namespace tth
