// Weights files of every kind (tth/weights_file.h, tth/load_weights.h) and the `tth` tool on
// them. Oracles: files written by /usr/bin/python3 with torch 1.13 (torch.save, torch.jit.save,
// the legacy format) and numpy 1.24 (savez, savez_compressed), each beside its expected values
// as numpy wrote them (<name>.expected.npz, read back with read_npz); damaged files are
// rebuilt from them with Python's zipfile (correct CRC-32s unless a byte is flipped on
// purpose). One script writes them all, once per test process.
#include "tth/weights_file.h"

#include <fmt/format.h>

#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <sstream>

#include "support.h"
#include "test_programs.h"
#include "tth/key_maps.h"
#include "tth/load_weights.h"

namespace tth::test {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

// Writes the oracle files into sys.argv[1].
constexpr const char* kMakeFiles = R"py(
import collections, os, struct, sys, zipfile
import numpy as np
import torch
out = sys.argv[1]
def p(name):
    return os.path.join(out, name)
def expect(name, state):
    np.savez(p(name + '.expected.npz'), **{k: v.detach().numpy() for k, v in state.items()})
def save(name, obj, expected=None, **kwargs):
    torch.save(obj, p(name), **kwargs)
    if expected is not None:
        expect(name, expected)
torch.manual_seed(0)
linear = torch.nn.Linear(3, 4)
save('linear.pt', linear.state_dict(), linear.state_dict())
conv = torch.nn.Conv2d(2, 3, 3)
save('conv.pt', conv.state_dict(), conv.state_dict())
bn = torch.nn.BatchNorm2d(3)
bn.train()
for _ in range(2):
    bn(torch.randn(4, 3, 5, 5) * 3 + 1)
save('bn.pt', bn.state_dict(), bn.state_dict())
lstm = torch.nn.LSTM(3, 5, num_layers=2)
save('lstm.pt', lstm.state_dict(), lstm.state_dict())
outputs = {'lstm': lstm(torch.ones(1, 1, 3))[0].detach().numpy()}
half = torch.nn.Linear(3, 4).half()
save('half.pt', half.state_dict(), half.state_dict())
double = torch.nn.Linear(3, 4).double()
save('double.pt', double.state_dict())
t = torch.arange(12, dtype=torch.float32)
save('shared.pt', {'a': t, 'b': t[1:]})
m = torch.arange(12, dtype=torch.float32).reshape(3, 4)
save('noncontig.pt', {'t': m.t(), 's': m[:, ::2]}, {'t': m.t(), 's': m[:, ::2]})
seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                          torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
seq.train()
seq(torch.randn(2, 1, 6, 6))
torch.jit.script(seq).save(p('seq.jit.pt'))
expect('seq.jit.pt', seq.state_dict())
seq.eval()
outputs['seq'] = seq(torch.arange(36.0).reshape(1, 1, 6, 6) / 36).detach().numpy()
np.savez(p('outputs.npz'), **outputs)
seq.train()
lstm2 = torch.nn.LSTM(3, 5, num_layers=2)
torch.jit.script(lstm2).save(p('lstm.jit.pt'))
expect('lstm.jit.pt', lstm2.state_dict())
adam = torch.optim.Adam(seq.parameters(), lr=0.01, fused=False)  # None by default in 2.x
seq(torch.randn(2, 1, 6, 6)).sum().backward()
adam.step()
save('checkpoint.pt', {'model': seq.state_dict(), 'epoch': 3, 'optimizer': adam.state_dict()},
     seq.state_dict())
np.savez(p('checkpoint.exp_avg.npz'),
         **{str(i): s['exp_avg'].numpy() for i, s in adam.state_dict()['state'].items()})
save('params.pt', dict(linear.named_parameters()))
save('percent.pt', {'a%41': torch.ones(1), 'if': torch.zeros(1)})  # keys as they are
save('dataparallel.pt', torch.nn.DataParallel(linear).state_dict())
np.savez_compressed(p('linear.compressed.npz'),
                    **{k: v.numpy() for k, v in linear.state_dict().items()})
save('legacy.pt', linear.state_dict(), _use_new_zipfile_serialization=False)
save('legacy4.pt', linear.state_dict(), _use_new_zipfile_serialization=False, pickle_protocol=4)
save('numpy_global.pt', {'x': np.float64(1.0)})
save('module.pt', linear)
# Views of a one-element storage: 8 KiB and 2^63 bytes of Half described by a few bytes.
tiny = torch.zeros(1, dtype=torch.half)
save('expand.pt', {'weight': tiny.expand(64, 64), 'bias': torch.zeros(4)})
save('expand_huge.pt', {'weight': tiny.expand(2**31, 2**31), 'bias': torch.zeros(4)})
# A submodule named with '%': kept as it is.
torch.jit.script(torch.nn.Sequential(collections.OrderedDict([('a%41', torch.nn.Linear(2, 2))]))
                 ).save(p('percent.jit.pt'))
with open(p('not_zip.bin'), 'wb') as f:
    f.write(b'just some text, not a zip file\n' * 4)
with zipfile.ZipFile(p('other.zip'), 'w') as z:
    z.writestr('readme.txt', 'hello')
    z.writestr('model/weights.bin', bytes(16))

def rebuild(source, target, change):
    # Copies the zip `source` member by member through change(name, data), which returns the
    # new data or None to leave the member out.
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, 'w') as dst:
        for info in src.infolist():
            data = change(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
rebuild(p('linear.pt'), p('missing_storage.pt'),
        lambda n, d: None if n == 'linear/data/1' else d)
# A byteorder member saying 'big', as PyTorch >= 2.1 writes it on such machines (it writes
# 'little' on ours; 1.13 writes none).
rebuild(p('linear.pt'), p('big_endian.pt'),
        lambda n, d: None if n == 'linear/byteorder' else d)
with zipfile.ZipFile(p('big_endian.pt'), 'a') as z:
    z.writestr('linear/byteorder', 'big')
rebuild(p('linear.pt'), p('short_storage.pt'),
        lambda n, d: d[:-4] if n == 'linear/data/0' else d)
# {'w': zeros(3, 5)}: size (3, 5) -> (4, 5), 20 elements of a storage of 15.
torch.save({'w': torch.zeros(3, 5)}, p('stride.pt'))
def patch_size(name, data):
    if not name.endswith('data.pkl'):
        return data
    assert data.count(b'K\x03K\x05\x86') == 1
    return data.replace(b'K\x03K\x05\x86', b'K\x04K\x05\x86')
rebuild(p('stride.pt'), p('outside_storage.pt'), patch_size)

def flip(source, target, member):
    # Copies `source` with one byte flipped inside the data of `member`.
    with zipfile.ZipFile(source) as z:
        info = z.getinfo(member)
    data = bytearray(open(source, 'rb').read())
    at = info.header_offset
    name_length, extra_length = struct.unpack('<HH', data[at + 26:at + 30])
    data[at + 30 + name_length + extra_length + 1] ^= 0x10
    open(target, 'wb').write(bytes(data))
flip(p('linear.pt'), p('crc.pt'), 'linear/data/0')
flip(p('seq.jit.pt'), p('crc.jit.pt'), 'seq.jit/data/0')
flip(p('linear.pt.expected.npz'), p('crc.npz'), 'weight.npy')
)py";

// For each (kind, original, converted) triple of sys.argv[1:], prints "<index> <key>
// <True|False>" for each array of the npz `converted`: whether it equals (dtype, shape, values)
// the value its key names in `original` as Python loads it: torch.load for kind "save" (keys
// joined with '/'), torch.jit.load for "jit" (submodules joined with '.').
constexpr const char* kCompareNpz = R"py(
import sys
import numpy as np
import torch
def resolve(kind, root, key):
    parts = key.split('/')
    value = root
    if kind == 'jit':
        for name in parts[0].split('.'):
            value = getattr(value, name)
        parts = parts[1:]
    for part in parts:
        if isinstance(value, dict):
            value = value[part] if part in value else value[int(part)]
        else:
            value = value[int(part)]
    return value
args = sys.argv[1:]
for index in range(len(args) // 3):
    kind, original, converted = args[3 * index:3 * index + 3]
    root = torch.jit.load(original) if kind == 'jit' else torch.load(original)
    with np.load(converted) as z:
        for key in z.files:
            want = resolve(kind, root, key)
            if isinstance(want, torch.Tensor):
                want = want.detach().numpy()
            want = np.asarray(want)
            got = z[key]
            print(index, key, got.dtype == want.dtype and got.shape == want.shape and
                  np.array_equal(got, want))
)py";

// The oracle files and our own snapshots, written once per process.
class Files {
 public:
  Files() {
    python(kMakeFiles, {dir_.path().string()});
    // Our snapshots, with Python's Linear(3, 4) weights under models/main/, and the same
    // state without metadata (no snapshot then: a LibTorch archive is TorchScript).
    const StateDict linear = read_npz(dir_ / "linear.pt.expected.npz");
    StateDict state;
    state.set_int(kFormatVersionKey, kSnapshotFormatVersion);
    state.set_int(kIterationKey, 5);
    state.merge("models/main", linear);
    state.set("extensions/log", std::string("[]"));
    torch_savefun()(dir_ / "snapshot.pt", state);
    npz_savefun()(dir_ / "snapshot.npz", state);
    torch_savefun()(dir_ / "ours.pt", without_metadata(state));
    npz_savefun()(dir_ / "ours.npz", without_metadata(state));
  }
  std::string operator/(const std::string& name) const { return dir_ / name; }
  const fs::path& path() const { return dir_.path(); }

 private:
  TempDir dir_;
};

const Files& files() {
  static const Files instance;
  return instance;
}

std::string file(const std::string& name) { return files() / name; }

StateDict expected(const std::string& name) { return read_npz(file(name + ".expected.npz")); }

// Every parameter and buffer of `module` by its state-dict key.
std::map<std::string, at::Tensor> module_tensors(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : module.named_parameters()) out[item.key()] = item.value();
  for (const auto& item : module.named_buffers()) out[item.key()] = item.value();
  return out;
}

std::map<std::string, at::Tensor> copy_tensors(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [key, tensor] : module_tensors(module)) out[key] = tensor.detach().clone();
  return out;
}

// `module` holds exactly the keys of `want`, each with its values (converted to the module's
// dtype, which must be `dtype`).
void expect_module_holds(const torch::nn::Module& module, const StateDict& want,
                         at::ScalarType dtype = at::kFloat) {
  const auto tensors = module_tensors(module);
  std::vector<std::string> keys, want_keys;
  for (const auto& [key, tensor] : tensors) keys.push_back(key);
  for (const auto& [key, value] : want) want_keys.push_back(key);
  std::sort(want_keys.begin(), want_keys.end());
  ASSERT_EQ(keys, want_keys);
  for (const auto& [key, tensor] : tensors) {
    const at::Tensor& value = want.tensor(key);
    const at::ScalarType as = value.scalar_type() == at::kLong ? at::kLong : dtype;
    EXPECT_TRUE(same_tensor(tensor.detach(), value.to(as))) << key;
  }
}

void expect_unchanged(const torch::nn::Module& module,
                      const std::map<std::string, at::Tensor>& before) {
  const auto after = module_tensors(module);
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [key, tensor] : after) {
    EXPECT_TRUE(same_tensor(tensor.detach(), before.at(key))) << key;
  }
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Runs `commands` four at a time (the tool loads LibTorch: most of a second each).
std::vector<CommandResult> run_all(const std::vector<std::string>& commands) {
  constexpr std::size_t kParallel = 4;
  std::vector<CommandResult> results;
  for (std::size_t start = 0; start < commands.size(); start += kParallel) {
    std::vector<std::future<CommandResult>> running;
    for (std::size_t i = start; i < std::min(commands.size(), start + kParallel); ++i) {
      running.push_back(std::async(std::launch::async, run_command, commands[i]));
    }
    for (auto& result : running) results.push_back(result.get());
  }
  return results;
}

std::string tool(const std::string& args) { return std::string(TTH_TOOL) + " " + args; }

// The suites share the files: each sets them up before its first test.
class WeightsFiles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { files(); }
};
class WeightsFile : public WeightsFiles {};
class LoadWeights : public WeightsFiles {};
class WeightsTool : public WeightsFiles {};
class WeightsBadInput : public WeightsFiles {};

// ---- detecting and reading ----

TEST_F(WeightsFile, DetectsEveryKindFromItsContent) {
  const std::vector<std::pair<std::string, WeightsFormat>> cases = {
      {"snapshot.pt", WeightsFormat::kSnapshotArchive},
      {"snapshot.npz", WeightsFormat::kSnapshotNpz},
      {"ours.pt", WeightsFormat::kTorchScript},  // torch_savefun without metadata
      {"ours.npz", WeightsFormat::kNpz},
      {"linear.pt.expected.npz", WeightsFormat::kNpz},  // numpy.savez
      {"linear.compressed.npz", WeightsFormat::kNpz},   // numpy.savez_compressed
      {"seq.jit.pt", WeightsFormat::kTorchScript},
      {"lstm.jit.pt", WeightsFormat::kTorchScript},
      {"linear.pt", WeightsFormat::kTorchSave},
      {"checkpoint.pt", WeightsFormat::kTorchSave},
      {"params.pt", WeightsFormat::kTorchSave},
  };
  for (const auto& [name, format] : cases) {
    SCOPED_TRACE(name);
    EXPECT_EQ(detect_weights_format(file(name)), format);
    EXPECT_EQ(verify_weights(file(name)), format);
    EXPECT_EQ(inspect_weights(file(name)).format, format);
  }
  // The name says nothing: a torch.save file named .npz is still one.
  fs::copy_file(file("linear.pt"), files().path() / "renamed.npz",
                fs::copy_options::overwrite_existing);
  EXPECT_EQ(detect_weights_format(file("renamed.npz")), WeightsFormat::kTorchSave);
  EXPECT_STREQ(to_string(WeightsFormat::kSnapshotArchive),
               "TorchTrainerHook snapshot (LibTorch archive)");
  EXPECT_STREQ(to_string(WeightsFormat::kSnapshotNpz), "TorchTrainerHook snapshot (npz)");
  EXPECT_STREQ(to_string(WeightsFormat::kNpz), "npz");
  EXPECT_STREQ(to_string(WeightsFormat::kTorchScript), "TorchScript archive");
  EXPECT_STREQ(to_string(WeightsFormat::kTorchSave), "PyTorch torch.save file");
}

TEST_F(WeightsFile, InspectListsEntriesWithDtypeShapeAndBytesInFileOrder) {
  const WeightsInfo linear = inspect_weights(file("linear.pt"));
  EXPECT_FALSE(linear.format_version);
  EXPECT_FALSE(linear.iteration);
  ASSERT_EQ(linear.entries.size(), 2u);
  EXPECT_EQ(linear.entries[0].key, "weight");
  EXPECT_EQ(linear.entries[0].dtype, "Float");
  EXPECT_EQ(linear.entries[0].shape, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(linear.entries[0].bytes, 48u);
  EXPECT_EQ(linear.entries[1].key, "bias");
  EXPECT_EQ(linear.entries[1].bytes, 16u);

  const WeightsInfo snapshot = inspect_weights(file("snapshot.npz"));
  EXPECT_EQ(snapshot.format_version, kSnapshotFormatVersion);
  EXPECT_EQ(snapshot.iteration, 5);
  const WeightsInfo script = inspect_weights(file("seq.jit.pt"));
  std::map<std::string, WeightsEntry> by_key;
  for (const auto& entry : script.entries) by_key[entry.key] = entry;
  EXPECT_EQ(script.entries.size(), 26u);
  EXPECT_EQ(by_key.at("_is_full_backward_hook").dtype, "None");
  EXPECT_EQ(by_key.at("_is_full_backward_hook").bytes, 0u);
  EXPECT_EQ(by_key.at("training").dtype, "Bool");
  EXPECT_EQ(by_key.at("1.num_batches_tracked").dtype, "Long");
  EXPECT_TRUE(by_key.at("1.num_batches_tracked").shape.empty());
  EXPECT_EQ(by_key.at("4.weight").shape, (std::vector<int64_t>{3, 32}));
  const WeightsInfo half = inspect_weights(file("half.pt"));
  EXPECT_EQ(half.entries.at(0).dtype, "Half");
  EXPECT_EQ(half.entries.at(0).bytes, 24u);
}

TEST_F(WeightsFile, ReadsTorchSaveStateDictsEqualToPython) {
  for (const std::string name : {"linear.pt", "conv.pt", "bn.pt", "lstm.pt", "half.pt"}) {
    SCOPED_TRACE(name);
    const StateDict got = read_weights(file(name));
    const StateDict want = expected(name);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got.entries()[i].first, want.entries()[i].first);  // Python's order
      EXPECT_TRUE(same_tensor(got.tensor(want.entries()[i].first),
                              std::get<at::Tensor>(want.entries()[i].second)));
    }
  }
  // Two forward passes in train mode.
  EXPECT_EQ(read_weights(file("bn.pt")).get_int("num_batches_tracked"), 2);
  // nn.Parameter values (_rebuild_parameter) come back as plain tensors.
  const StateDict params = read_weights(file("params.pt"));
  ASSERT_EQ(params.size(), 2u);
  EXPECT_TRUE(same_tensor(params.tensor("weight"), expected("linear.pt").tensor("weight")));
  EXPECT_TRUE(same_tensor(params.tensor("bias"), expected("linear.pt").tensor("bias")));
  EXPECT_FALSE(params.tensor("weight").requires_grad());
  // Python's keys are never percent-decoded (only our savefun's are encoded).
  const StateDict percent = read_weights(file("percent.pt"));
  ASSERT_EQ(percent.size(), 2u);
  EXPECT_TRUE(same_tensor(percent.tensor("a%41"), at::ones({1})));
  EXPECT_TRUE(same_tensor(percent.tensor("if"), at::zeros({1})));
}

TEST_F(WeightsFile, TensorsThatSharedAStorageShareMemory) {
  const StateDict state = read_weights(file("shared.pt"));
  at::Tensor a = state.tensor("a");
  at::Tensor b = state.tensor("b");
  EXPECT_TRUE(same_tensor(a, at::arange(12, at::kFloat)));
  EXPECT_TRUE(same_tensor(b, at::arange(1, 12, at::kFloat)));
  EXPECT_TRUE(a.is_alias_of(b));
  EXPECT_EQ(static_cast<const char*>(b.data_ptr()),
            static_cast<const char*>(a.data_ptr()) + sizeof(float));
  a[5] = 100.0f;
  EXPECT_EQ(b[4].item<float>(), 100.0f);
}

TEST_F(WeightsFile, NonContiguousTensorsComeBackAsTheSameViews) {
  const StateDict state = read_weights(file("noncontig.pt"));
  const StateDict want = expected("noncontig.pt");
  const at::Tensor& t = state.tensor("t");
  const at::Tensor& s = state.tensor("s");
  EXPECT_TRUE(same_tensor(t, want.tensor("t")));
  EXPECT_TRUE(same_tensor(s, want.tensor("s")));
  EXPECT_TRUE(same_tensor(t, at::arange(12, at::kFloat).reshape({3, 4}).t()));
  EXPECT_EQ(t.strides(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(s.strides(), (std::vector<int64_t>{4, 2}));
  EXPECT_TRUE(t.is_alias_of(s));  // both views of Python's one 3x4 tensor
}

TEST_F(WeightsFile, ReadsANestedCheckpointWithItsScalarsAndOptimizerState) {
  const StateDict state = read_weights(file("checkpoint.pt"));
  EXPECT_EQ(state.get_int("epoch"), 3);
  EXPECT_EQ(state.tensor("epoch").scalar_type(), at::kLong);
  EXPECT_EQ(state.get_double("optimizer/param_groups/0/lr"), 0.01);
  EXPECT_EQ(state.get_double("optimizer/param_groups/0/betas/1"), 0.999);
  EXPECT_FALSE(state.get_bool("optimizer/param_groups/0/amsgrad"));
  EXPECT_EQ(state.get_int("optimizer/param_groups/0/params/5"), 5);
  // None has no value.
  EXPECT_FALSE(state.contains("optimizer/param_groups/0/foreach"));
  const StateDict exp_avg = read_npz(file("checkpoint.exp_avg.npz"));
  ASSERT_EQ(exp_avg.size(), 6u);
  for (const auto& [index, value] : exp_avg) {
    EXPECT_TRUE(same_tensor(state.tensor("optimizer/state/" + index + "/exp_avg"),
                            std::get<at::Tensor>(value)))
        << index;
    EXPECT_TRUE(
        same_tensor(state.tensor("optimizer/state/" + index + "/step"), at::scalar_tensor(1.0f)));
  }
  const StateDict model = expected("checkpoint.pt");
  for (const auto& [key, value] : model) {
    EXPECT_TRUE(same_tensor(state.tensor("model/" + key), std::get<at::Tensor>(value))) << key;
  }
}

TEST_F(WeightsFile, ReadsEveryAttributeOfATorchScriptModule) {
  const StateDict state = read_weights(file("seq.jit.pt"));
  EXPECT_TRUE(state.get_bool("training"));
  EXPECT_TRUE(state.get_bool("4.training"));
  EXPECT_FALSE(state.get_bool("0.transposed"));
  EXPECT_EQ(state.get_int("0._reversed_padding_repeated_twice/3"), 0);
  EXPECT_FALSE(state.contains("_is_full_backward_hook"));  // None
  for (const auto& [key, value] : expected("seq.jit.pt")) {
    EXPECT_TRUE(same_tensor(state.tensor(key), std::get<at::Tensor>(value))) << key;
  }
  // The LSTM's _flat_weights list holds its parameters: the same storages.
  const StateDict lstm = read_weights(file("lstm.jit.pt"));
  EXPECT_TRUE(lstm.tensor("_flat_weights/0").is_alias_of(lstm.tensor("weight_ih_l0")));
  EXPECT_TRUE(lstm.tensor("_flat_weights/7").is_alias_of(lstm.tensor("bias_hh_l1")));
  EXPECT_EQ(lstm.text("_flat_weights_names/0"), "weight_ih_l0");
}

TEST_F(WeightsFile, ReadsNumpyNpzAndOurSnapshotsWithTheirMetadata) {
  const StateDict want = expected("linear.pt");
  const StateDict compressed = read_weights(file("linear.compressed.npz"));
  ASSERT_EQ(compressed.size(), 2u);
  EXPECT_TRUE(same_tensor(compressed.tensor("weight"), want.tensor("weight")));
  EXPECT_TRUE(same_tensor(compressed.tensor("bias"), want.tensor("bias")));
  for (const std::string name : {"snapshot.pt", "snapshot.npz"}) {
    SCOPED_TRACE(name);
    const StateDict state = read_weights(file(name));
    EXPECT_EQ(state.get_int(kFormatVersionKey), kSnapshotFormatVersion);
    EXPECT_EQ(state.get_int(kIterationKey), 5);
    EXPECT_TRUE(same_tensor(state.tensor("models/main/weight"), want.tensor("weight")));
    EXPECT_EQ(state.text("extensions/log"), "[]");
  }
}

// ---- loading into LibTorch modules ----

TEST_F(LoadWeights, TorchSaveStateDictsIntoTheEquivalentModules) {
  torch::nn::Linear linear(3, 4);
  EXPECT_TRUE(load_weights(file("linear.pt"), *linear).empty());
  expect_module_holds(*linear, expected("linear.pt"));

  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(2, 3, 3));
  load_weights(file("conv.pt"), *conv);
  expect_module_holds(*conv, expected("conv.pt"));

  torch::nn::BatchNorm2d bn(3);
  load_weights(file("bn.pt"), *bn);
  expect_module_holds(*bn, expected("bn.pt"));
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 2);
  EXPECT_FALSE(bn->running_var.equal(at::ones({3})));  // non-trivial statistics

  torch::nn::LSTM lstm(torch::nn::LSTMOptions(3, 5).num_layers(2));
  load_weights(file("lstm.pt"), *lstm);
  expect_module_holds(*lstm, expected("lstm.pt"));
  // The LSTM computes with what it loaded (its flat weights are the parameters): Python's
  // output.
  const at::Tensor output = std::get<0>(lstm->forward(at::ones({1, 1, 3})));
  const at::Tensor python_output = read_npz(file("outputs.npz")).tensor("lstm");
  EXPECT_EQ(output.sizes(), python_output.sizes());
  EXPECT_TRUE(output.allclose(python_output, 1e-6, 1e-6)) << output << python_output;

  // nn.Parameter values.
  torch::nn::Linear from_params(3, 4);
  load_weights(file("params.pt"), *from_params);
  expect_module_holds(*from_params, expected("linear.pt"));
}

TEST_F(LoadWeights, NpzFilesAndSnapshots) {
  for (const std::string name : {"linear.pt.expected.npz", "linear.compressed.npz"}) {
    torch::nn::Linear linear(3, 4);
    load_weights(file(name), *linear);
    expect_module_holds(*linear, expected("linear.pt"));
  }
  for (const std::string name : {"snapshot.pt", "snapshot.npz"}) {
    torch::nn::Linear linear(3, 4);
    load_weights(file(name), *linear, LoadWeightsOptions().prefix("models/main/"));
    expect_module_holds(*linear, expected("linear.pt"));
  }
}

TEST_F(LoadWeights, TorchScriptArchivesGiveOnlyTheirModulesTensorAttributes) {
  torch::nn::Sequential seq(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3)),
                            torch::nn::BatchNorm2d(2), torch::nn::ReLU(), torch::nn::Flatten(),
                            torch::nn::Linear(32, 3));
  // Strict: `training`, `transposed`, the padding list and None were left out.
  EXPECT_TRUE(load_weights(file("seq.jit.pt"), *seq).empty());
  expect_module_holds(*seq, expected("seq.jit.pt"));
  seq->eval();
  const at::Tensor output = seq->forward(at::arange(36.0, at::kFloat).reshape({1, 1, 6, 6}) / 36);
  const at::Tensor python_output = read_npz(file("outputs.npz")).tensor("seq");
  EXPECT_EQ(output.sizes(), python_output.sizes());
  EXPECT_TRUE(output.allclose(python_output, 1e-6, 1e-6)) << output << python_output;

  // The LSTM's _flat_weights list is not taken either.
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(3, 5).num_layers(2));
  EXPECT_TRUE(load_weights(file("lstm.jit.pt"), *lstm).empty());
  expect_module_holds(*lstm, expected("lstm.jit.pt"));

  // Our own archive without metadata is TorchScript too: its tensors are attributes.
  torch::nn::Linear linear(3, 4);
  load_weights(file("ours.pt"), *linear, LoadWeightsOptions().prefix("models/main/"));
  expect_module_holds(*linear, expected("linear.pt"));
}

TEST_F(LoadWeights, CheckpointDictWithPrefix) {
  torch::nn::Sequential seq(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3)),
                            torch::nn::BatchNorm2d(2), torch::nn::ReLU(), torch::nn::Flatten(),
                            torch::nn::Linear(32, 3));
  const auto before = copy_tensors(*seq);
  // Without the prefix, every key is unexpected (and the module's missing).
  EXPECT_THROW_WITH(load_weights(file("checkpoint.pt"), *seq), StateError, file("checkpoint.pt"));
  expect_unchanged(*seq, before);
  EXPECT_TRUE(
      load_weights(file("checkpoint.pt"), *seq, LoadWeightsOptions().prefix("model/")).empty());
  expect_module_holds(*seq, expected("checkpoint.pt"));
}

TEST_F(LoadWeights, HalfConvertsToFloatButDoubleDoesNot) {
  torch::nn::Linear linear(3, 4);
  load_weights(file("half.pt"), *linear);
  EXPECT_EQ(linear->weight.scalar_type(), at::kFloat);
  expect_module_holds(*linear, expected("half.pt"), at::kFloat);

  const auto before = copy_tensors(*linear);
  try {
    load_weights(file("double.pt"), *linear);
    ADD_FAILURE() << "a double file loaded into float weights";
  } catch (const StateError& error) {
    EXPECT_THAT(error.what(), HasSubstr("load_weights"));
    EXPECT_THAT(error.what(), HasSubstr(file("double.pt")));
    EXPECT_THAT(error.what(), HasSubstr("'weight'"));
    EXPECT_THAT(error.what(), HasSubstr("Double"));
    EXPECT_THAT(error.what(), HasSubstr("Float"));
  }
  expect_unchanged(*linear, before);
}

TEST_F(LoadWeights, LibTorchSaveOfAModule) {
  // torch::save(module) writes a TorchScript archive of nested module objects: loaded by name.
  TempDir dir;
  torch::manual_seed(3);
  torch::nn::Sequential saved(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  saved->train();
  saved->forward(torch::randn({5, 3}));  // running statistics that are not the initial ones
  torch::save(saved, dir / "net.pt");
  EXPECT_EQ(detect_weights_format(dir / "net.pt"), WeightsFormat::kTorchScript);
  torch::nn::Sequential loaded(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  EXPECT_TRUE(load_weights(dir / "net.pt", *loaded).empty());
  const auto want = module_tensors(*saved);
  const auto got = module_tensors(*loaded);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [key, tensor] : want) {
    EXPECT_TRUE(same_tensor(got.at(key).detach(), tensor.detach())) << key;
  }
}

TEST_F(LoadWeights, AViewOfATinyStorageIsNeverMaterialized) {
  // The shapes differ from the module's: reported with the file's dtype, before any conversion
  // could allocate what the view describes (8 KiB here; 2^63 bytes, which LibTorch would refuse
  // with its own error, for expand_huge).
  torch::nn::Linear linear(3, 4);
  const auto before = copy_tensors(*linear);
  EXPECT_THROW_WITH(load_weights(file("expand.pt"), *linear), StateError,
                    "key 'weight': holds Half[64, 64] but Float[4, 3] is expected");
  EXPECT_THROW_WITH(load_weights(file("expand_huge.pt"), *linear), StateError,
                    "key 'weight': holds Half[2147483648, 2147483648] but Float[4, 3] is expected");
  expect_unchanged(*linear, before);
  // Inspecting it shows what it describes, without overflow.
  const WeightsInfo info = inspect_weights(file("expand_huge.pt"));
  ASSERT_EQ(info.entries.size(), 2u);
  EXPECT_EQ(info.entries[0].bytes, uint64_t{1} << 63);
}

TEST_F(WeightsFile, TorchScriptNamesAreKeptAsTheyAre) {
  // Only torch_savefun's archives are percent-encoded; a TorchScript module's names are not.
  const StateDict state = read_weights(file("percent.jit.pt"));
  EXPECT_TRUE(state.contains("a%41.weight"));
  EXPECT_FALSE(state.contains("aA.weight"));
}

TEST_F(LoadWeights, DataParallelKeysThroughPytorchNames) {
  torch::nn::Linear linear(3, 4);
  const auto before = copy_tensors(*linear);
  // The error says what to do about the wrapper's prefix.
  EXPECT_THROW_WITH(load_weights(file("dataparallel.pt"), *linear), StateError,
                    "key 'weight': is missing from the loaded state (the file's keys carry the "
                    "'module.' or '_orig_mod.' of Python's DataParallel or torch.compile: load "
                    "with key_map(tth::pytorch_names))");
  expect_unchanged(*linear, before);
  EXPECT_TRUE(
      load_weights(file("dataparallel.pt"), *linear, LoadWeightsOptions().key_map(pytorch_names))
          .empty());
  expect_module_holds(*linear, expected("linear.pt"));
}

// ---- the tool ----

TEST_F(WeightsTool, InspectPrintsTheKindAndEveryEntry) {
  struct Case {
    std::string name;
    std::string format;
    std::vector<std::string> lines;  // regexes, each matching a whole line
    std::vector<std::string> absent;
  };
  const std::vector<Case> cases = {
      {"linear.pt",
       "PyTorch torch.save file",
       {"weight +Float +\\(4, 3\\) +48", "bias +Float +\\(4\\) +16",
        "total: 64 bytes in 2 entries"},
       {}},
      {"seq.jit.pt",
       "TorchScript archive",
       {"_is_full_backward_hook +None +0", "training +Bool +\\(\\) +1",
        "0\\.weight +Float +\\(2, 1, 3, 3\\) +72", "1\\.num_batches_tracked +Long +\\(\\) +8",
        "0\\._reversed_padding_repeated_twice/3 +Long +\\(\\) +8",
        "total: 555 bytes in 26 entries"},
       {}},
      {"lstm.jit.pt",
       "TorchScript archive",
       {"weight_ih_l0 +Float +\\(20, 3\\) +240", "_flat_weights_names/0 +text +12"},
       {}},
      {"checkpoint.pt",
       "PyTorch torch.save file",
       {"epoch +Long +\\(\\) +8", "model/4\\.weight +Float +\\(3, 32\\) +384",
        "optimizer/param_groups/0/foreach +None +0", "optimizer/state/5/step +Float +\\(\\) +4"},
       {}},
      {"linear.compressed.npz", "npz", {"weight +Float +\\(4, 3\\) +48"}, {}},
      {"snapshot.pt",
       "TorchTrainerHook snapshot \\(LibTorch archive\\)",
       {fmt::format("version: {}", kSnapshotFormatVersion), "iteration: 5",
        "models/main/weight +Float +\\(4, 3\\) +48", "extensions/log +text +2",
        "total: 66 bytes in 3 entries"},
       {"tth/format_version"}},
      {"snapshot.npz",
       "TorchTrainerHook snapshot \\(npz\\)",
       {"iteration: 5", "models/main/bias +Float +\\(4\\) +16"},
       {"tth/iteration"}},
      {"ours.pt",
       "TorchScript archive",
       {"models/main/weight +Float +\\(4, 3\\) +48"},
       {"version:", "iteration:"}},
  };
  std::vector<std::string> commands;
  for (const auto& c : cases) commands.push_back(tool("inspect " + shell_quote(file(c.name))));
  const auto results = run_all(commands);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    EXPECT_EQ(results[i].exit_code, 0) << results[i].output;
    const auto printed = lines(results[i].output);
    EXPECT_THAT(printed, Contains("file: " + file(cases[i].name)));
    EXPECT_THAT(printed, Contains(MatchesRegex("format: " + cases[i].format)));
    for (const auto& line : cases[i].lines) EXPECT_THAT(printed, Contains(MatchesRegex(line)));
    for (const auto& text : cases[i].absent) EXPECT_THAT(results[i].output, Not(HasSubstr(text)));
  }
}

TEST_F(WeightsTool, VerifyNamesEachFileWithItsKindAndFailsOnACorruptMember) {
  const std::vector<std::pair<std::string, std::string>> good = {
      {"linear.pt", "PyTorch torch.save file"},
      {"seq.jit.pt", "TorchScript archive"},
      {"linear.pt.expected.npz", "npz"},
      {"linear.compressed.npz", "npz"},
      {"snapshot.pt", "TorchTrainerHook snapshot (LibTorch archive)"},
      {"snapshot.npz", "TorchTrainerHook snapshot (npz)"},
      {"ours.pt", "TorchScript archive"},
  };
  std::string args;
  for (const auto& [name, kind] : good) args += " " + shell_quote(file(name));
  const auto ok = run_command(tool("verify" + args));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  std::vector<std::string> want;
  for (const auto& [name, kind] : good) want.push_back(fmt::format("ok {} ({})", file(name), kind));
  EXPECT_EQ(lines(ok.output), want);

  // One byte flipped inside a tensor's member: its CRC-32.
  const std::vector<std::pair<std::string, std::string>> corrupt = {
      {"crc.pt", "linear/data/0"}, {"crc.jit.pt", "seq.jit/data/0"}, {"crc.npz", "weight.npy"}};
  for (const auto& [name, member] : corrupt) {
    SCOPED_TRACE(name);
    const auto failed = run_command(
        tool("verify " + shell_quote(file("linear.pt")) + " " + shell_quote(file(name))));
    EXPECT_EQ(failed.exit_code, 1) << failed.output;
    EXPECT_THAT(failed.output, HasSubstr("ok " + file("linear.pt")));
    EXPECT_THAT(failed.output, HasSubstr("FAILED " + file(name) + ": "));
    EXPECT_THAT(failed.output, HasSubstr("member '" + member + "': CRC-32 mismatch"));
    EXPECT_THROW_WITH(verify_weights(file(name)), FormatError, "'" + file(name) + "'");
    EXPECT_THROW_WITH(read_weights(file(name)), FormatError, "'" + file(name) + "'");
  }
}

TEST_F(WeightsTool, ConvertToNpzGivesNumpyThePythonValues) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"checkpoint.pt", "save"}, {"seq.jit.pt", "jit"}, {"linear.pt", "save"}};
  std::vector<std::string> commands, compare_args, want;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& [name, kind] = cases[i];
    const std::string out = dir / (name + ".npz");
    commands.push_back(tool("convert " + shell_quote(file(name)) + " " + shell_quote(out)));
    compare_args.insert(compare_args.end(), {kind, file(name), out});
    // Every entry inspect lists but None, each equal to what Python loads.
    for (const auto& entry : inspect_weights(file(name)).entries) {
      if (entry.dtype != "None") want.push_back(fmt::format("{} {} True", i, entry.key));
    }
  }
  const auto converted = run_all(commands);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const std::string out = dir / (cases[i].first + ".npz");
    ASSERT_EQ(converted[i].exit_code, 0) << converted[i].output;
    EXPECT_THAT(converted[i].output, HasSubstr(fmt::format("{} (", file(cases[i].first))));
    EXPECT_EQ(detect_weights_format(out), WeightsFormat::kNpz);
  }
  std::vector<std::string> got = lines(python(kCompareNpz, compare_args));
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(want.size(), 44u + 20u + 2u);  // checkpoint.pt: 1 None of 45, seq.jit.pt: 6 of 26
}

TEST_F(WeightsTool, ConvertToTorchReadsBackEqual) {
  TempDir dir;
  for (const std::string name : {"checkpoint.pt", "seq.jit.pt", "linear.compressed.npz"}) {
    SCOPED_TRACE(name);
    const std::string out = dir / (name + ".converted.pt");
    const auto convert = run_command(
        tool("convert " + shell_quote(file(name)) + " " + shell_quote(out) + " --to torch"));
    ASSERT_EQ(convert.exit_code, 0) << convert.output;
    EXPECT_EQ(detect_weights_format(out), WeightsFormat::kTorchScript);
    const StateDict original = read_weights(file(name));
    const StateDict back = read_weights(out);
    ASSERT_EQ(back.size(), original.size());
    for (std::size_t i = 0; i < back.size(); ++i) {
      const auto& [key, value] = original.entries()[i];
      EXPECT_EQ(back.entries()[i].first, key);
      ASSERT_TRUE(back.contains(key)) << key;
      if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
        EXPECT_TRUE(same_tensor(back.tensor(key), *tensor)) << key;
      } else {
        EXPECT_EQ(back.text(key), std::get<std::string>(value)) << key;
      }
    }
  }
}

// ---- bad input: a FormatError naming the file, and the module unchanged ----

// Every reader refuses `path` with a FormatError holding each of `fragments` (and the path);
// load_weights leaves `module` as it was.
void expect_refused(const std::string& path, const std::vector<std::string>& fragments,
                    torch::nn::Module& module) {
  SCOPED_TRACE(path);
  const auto before = copy_tensors(module);
  const std::vector<std::pair<std::string, std::function<void()>>> readers = {
      {"inspect_weights", [&] { inspect_weights(path); }},
      {"verify_weights", [&] { verify_weights(path); }},
      {"read_weights", [&] { read_weights(path); }},
      {"load_weights", [&] { load_weights(path, module); }},
  };
  for (const auto& [name, read] : readers) {
    SCOPED_TRACE(name);
    try {
      read();
      ADD_FAILURE() << "no error";
    } catch (const FormatError& error) {
      EXPECT_THAT(error.what(), HasSubstr("'" + path + "'"));
      for (const auto& fragment : fragments) EXPECT_THAT(error.what(), HasSubstr(fragment));
    } catch (const std::exception& error) {
      ADD_FAILURE() << "not a FormatError: " << error.what();
    }
  }
  expect_unchanged(module, before);
}

TEST_F(WeightsBadInput, TruncatedFilesOfEveryKind) {
  TempDir dir;
  torch::nn::Linear linear(3, 4);
  std::vector<std::string> paths;
  for (const std::string name : {"linear.pt", "seq.jit.pt", "linear.pt.expected.npz",
                                 "linear.compressed.npz", "snapshot.pt", "snapshot.npz"}) {
    const Bytes bytes = read_file(file(name));
    ASSERT_GT(bytes.size(), 200u);
    for (const std::size_t size :
         {std::size_t{0}, std::size_t{2}, std::size_t{40}, bytes.size() / 3, bytes.size() / 2,
          bytes.size() - 22, bytes.size() - 1}) {
      const std::string path = dir / fmt::format("{}.{}", name, size);
      write_file(path, Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size)));
      expect_refused(path, {}, *linear);
      EXPECT_THROW_WITH(detect_weights_format(path), FormatError, "'" + path + "'");
      paths.push_back(path);
    }
  }
  std::string args;
  for (const auto& path : paths) args += " " + shell_quote(path);
  const auto verify = run_command(tool("verify" + args));
  EXPECT_EQ(verify.exit_code, 1) << verify.output;
  EXPECT_THAT(verify.output, Not(HasSubstr("ok ")));
  for (const auto& path : paths) EXPECT_THAT(verify.output, HasSubstr("FAILED " + path + ": "));
}

TEST_F(WeightsBadInput, LegacyTorchSaveSaysHowToResave) {
  torch::nn::Linear linear(3, 4);
  for (const std::string name : {"legacy.pt", "legacy4.pt"}) {  // pickle protocols 2 and 4
    SCOPED_TRACE(name);
    expect_refused(file(name), {"legacy torch.save format", "re-save"}, *linear);
    EXPECT_THROW_WITH(detect_weights_format(file(name)), FormatError, "legacy");
  }
}

TEST_F(WeightsBadInput, OtherFilesAndZips) {
  torch::nn::Linear linear(3, 4);
  expect_refused(file("not_zip.bin"), {"is not a weights file"}, *linear);
  EXPECT_THROW_WITH(detect_weights_format(file("not_zip.bin")), FormatError, "not a weights");
  expect_refused(file("other.zip"), {"is a zip file, but neither an npz"}, *linear);
  EXPECT_THROW_WITH(detect_weights_format(file("other.zip")), FormatError, "neither an npz");
}

TEST_F(WeightsBadInput, StorageMembersMissingOrShortNameTheMember) {
  torch::nn::Linear linear(3, 4);
  expect_refused(file("missing_storage.pt"), {"'bias'", "'linear/data/1' is missing"}, *linear);
  expect_refused(file("short_storage.pt"), {"'weight'", "'linear/data/0' holds 44 bytes"}, *linear);
}

TEST_F(WeightsBadInput, CorruptTensorMemberFailsEveryReaderThatReadsIt) {
  torch::nn::Linear linear(3, 4);
  torch::nn::Sequential seq(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 3)),
                            torch::nn::BatchNorm2d(2), torch::nn::ReLU(), torch::nn::Flatten(),
                            torch::nn::Linear(32, 3));
  const std::vector<std::tuple<std::string, std::string, torch::nn::Module*>> cases = {
      {"crc.pt", "linear/data/0", linear.get()},
      {"crc.jit.pt", "seq.jit/data/0", seq.get()},  // load_weights reads module attributes
      {"crc.npz", "weight.npy", linear.get()},
  };
  for (const auto& [name, member, module] : cases) {
    SCOPED_TRACE(name);
    const std::string path = file(name);
    const auto before = copy_tensors(*module);
    const std::string fragment = "member '" + member + "': CRC-32 mismatch";
    EXPECT_THROW_WITH(verify_weights(path), FormatError, fragment);
    EXPECT_THROW_WITH(read_weights(path), FormatError, fragment);
    EXPECT_THROW_WITH(load_weights(path, *module), FormatError, fragment);
    EXPECT_THROW_WITH(load_weights(path, *module), FormatError, "'" + path + "'");
    expect_unchanged(*module, before);
  }
}

TEST_F(WeightsBadInput, BigEndianStoragesAreRefused) {
  torch::nn::Linear linear(3, 4);
  expect_refused(file("big_endian.pt"), {"'linear/byteorder'", "little-endian"}, *linear);
}

TEST_F(WeightsBadInput, TensorReachingOutsideItsStorage) {
  torch::nn::Linear linear(3, 4);
  expect_refused(file("outside_storage.pt"), {"size (4, 5)", "outside its storage"}, *linear);
}

TEST_F(WeightsBadInput, UnknownGlobalsAreRefusedByName) {
  torch::nn::Linear linear(3, 4);
  // numpy.core.multiarray.scalar (numpy 1), numpy._core.multiarray.scalar (numpy 2).
  expect_refused(file("numpy_global.pt"), {"GLOBAL 'numpy.", "multiarray.scalar'"}, *linear);
  // A whole module pickled by torch.save names its class.
  expect_refused(file("module.pt"), {"GLOBAL 'torch.nn.modules.linear.Linear'"}, *linear);
}

TEST_F(WeightsBadInput, ToolConvertRefusesWhatTheDiskCannotHold) {
  // 2^63 bytes described by a view of a one-element storage: refused before writing.
  TempDir dir;
  const std::string out = dir / "huge.npz";
  const auto convert =
      run_command(tool("convert " + shell_quote(file("expand_huge.pt")) + " " + shell_quote(out)));
  EXPECT_EQ(convert.exit_code, 1) << convert.output;
  EXPECT_THAT(convert.output, HasSubstr("tth: convert: '" + file("expand_huge.pt") + "' holds "));
  EXPECT_THAT(convert.output, HasSubstr("bytes of values, more than the"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST_F(WeightsBadInput, ToolConvertOfABadFileWritesNothing) {
  TempDir dir;
  for (const std::string name : {"numpy_global.pt", "crc.pt", "legacy.pt", "crc.npz"}) {
    SCOPED_TRACE(name);
    const std::string out = dir / (name + ".npz");
    const auto convert = run_command(
        tool("convert " + shell_quote(file(name)) + " " + shell_quote(out) + " --to npz"));
    EXPECT_EQ(convert.exit_code, 1) << convert.output;
    EXPECT_THAT(convert.output, HasSubstr("tth: "));
    EXPECT_THAT(convert.output, HasSubstr("'" + file(name) + "'"));
    EXPECT_FALSE(fs::exists(out));
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

}  // namespace
}  // namespace tth::test
