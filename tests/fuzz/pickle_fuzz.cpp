// libFuzzer target for the restricted pickle reader and the tensor-archive layout
// (container/pickle.h): the input as a data.pkl, the input as a whole archive (a zip whose
// `<dir>/data.pkl` and storage members read_torch_archive checks), and the input as a key for
// the key codec. Properties checked beyond "no crash":
//   - every tensor the reader accepts addresses only elements inside its storage, recomputed
//     here independently in 128-bit arithmetic, with as many strides as sizes, at most
//     kMaxDims of each, all non-negative, and tensor_in_bounds agrees;
//   - the flattened result (parse_pickle) holds at most kMaxEntries leaves, each path at most
//     kMaxKeyBytes long (kMaxPickleBytes in all) and none twice; only a module object's result
//     has module attributes; parse_tensor_pickle returns the same leaves;
//   - every storage of an accepted archive is a member of exactly numel * element size bytes,
//     every tensor of the layout names a storage of its type and size, no two entries share a
//     key, and the module flag is the pickle's;
//   - parsing is deterministic (the same bytes give the same result);
//   - decode_archive_key(encode_archive_key(k)) == k, and the encoding holds only
//     [A-Za-z0-9_./:-%].
//
// Any exception other than tth::Error, any sanitizer report, leak, abort or timeout is a bug.
// tests/fuzz/run_fuzz.sh --target pickle builds and runs it with seeds from real archives
// (ctest -L fuzz); by hand, from the container's sources as CMake lists them:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -DTTH_HAVE_LIBDEFLATE -Iplugin -Iinclude
//     tests/fuzz/pickle_fuzz.cpp $(cat build/tests/fuzz/container_sources.txt)
//     -lz -ldeflate -o pickle_fuzz
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "container/pickle.h"
#include "container/zip_reader.h"
#include "tth/error.h"

namespace {

using tth::container::PickleAttribute;
using tth::container::PickleContents;
using tth::container::PickleValue;
using tth::container::TensorRef;

// Keys longer than this are not worth encoding on every run.
constexpr std::size_t kMaxCodecKeyBytes = 512;

[[noreturn]] void bug() { std::abort(); }

// The bounds check again, in arithmetic that cannot overflow for int64 inputs.
void check_tensor(const TensorRef& tensor) {
  if (tensor.sizes.size() != tensor.strides.size() ||
      tensor.sizes.size() > tth::container::kMaxDims || tensor.offset < 0) {
    bug();
  }
  unsigned __int128 numel = 1;
  unsigned __int128 last = static_cast<uint64_t>(tensor.offset);
  for (std::size_t i = 0; i < tensor.sizes.size(); ++i) {
    if (tensor.sizes[i] < 0 || tensor.strides[i] < 0) bug();
    numel *= static_cast<uint64_t>(tensor.sizes[i]);
    if (numel > static_cast<uint64_t>(INT64_MAX)) bug();
    if (tensor.sizes[i] > 0) {
      last += static_cast<unsigned __int128>(tensor.sizes[i] - 1) *
              static_cast<uint64_t>(tensor.strides[i]);
    }
  }
  if (numel == 0) {
    if (static_cast<uint64_t>(tensor.offset) > tensor.storage_numel) bug();
  } else if (last >= tensor.storage_numel) {
    bug();
  }
  if (!tth::container::tensor_in_bounds(tensor)) bug();
}

bool same_value(const PickleValue& x, const PickleValue& y) {
  return x.kind == y.kind && x.boolean == y.boolean && x.integer == y.integer &&
         std::memcmp(&x.real, &y.real, sizeof x.real) == 0 && x.text == y.text &&
         x.tensor.storage_key == y.tensor.storage_key && x.tensor.type == y.tensor.type &&
         x.tensor.storage_numel == y.tensor.storage_numel && x.tensor.offset == y.tensor.offset &&
         x.tensor.sizes == y.tensor.sizes && x.tensor.strides == y.tensor.strides;
}

bool same(const std::vector<PickleAttribute>& a, const std::vector<PickleAttribute>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].module_attribute != b[i].module_attribute ||
        !same_value(a[i].value, b[i].value)) {
      return false;
    }
  }
  return true;
}

std::optional<PickleContents> parse(const uint8_t* data, std::size_t size) {
  try {
    return tth::container::parse_pickle(data, size, "fuzz");
  } catch (const tth::Error&) {
    return std::nullopt;
  }
}

void fuzz_pickle(const uint8_t* data, std::size_t size) {
  const auto contents = parse(data, size);
  if (!contents) {
    // The attributes alone are refused alike.
    try {
      (void)tth::container::parse_tensor_pickle(data, size, "fuzz");
    } catch (const tth::Error&) {
      return;
    }
    bug();
  }
  const auto& attributes = contents->attributes;
  if (attributes.size() > tth::container::kMaxEntries) bug();
  std::unordered_set<std::string> names;
  std::size_t name_bytes = 0;
  for (const PickleAttribute& attribute : attributes) {
    if (attribute.name.size() > tth::container::kMaxKeyBytes) bug();
    name_bytes += attribute.name.size();
    if (!names.insert(attribute.name).second) bug();
    if (attribute.module_attribute && !contents->module) bug();
    if (attribute.value.kind == PickleValue::Kind::kTensor) check_tensor(attribute.value.tensor);
  }
  if (name_bytes > tth::container::kMaxPickleBytes) bug();
  const auto again = parse(data, size);
  if (!again || again->module != contents->module || !same(attributes, again->attributes)) bug();
  if (!same(attributes, tth::container::parse_tensor_pickle(data, size, "fuzz"))) bug();
}

void fuzz_archive(const uint8_t* data, std::size_t size) {
  std::optional<tth::container::ZipReader> reader;
  try {
    reader.emplace(data, size);
  } catch (const tth::Error&) {
    return;
  }
  std::optional<tth::container::TorchArchiveLayout> accepted;
  try {
    accepted.emplace(tth::container::read_torch_archive(*reader, "tth/format_version"));
  } catch (const tth::Error&) {
    return;
  }
  // An accepted archive reads again without error: any exception from here on is a bug.
  const auto& layout = *accepted;
  for (const auto& storage : layout.storages) {
    if (storage.entry == nullptr || reader->find(storage.entry->name) != storage.entry ||
        storage.entry->uncompressed_size !=
            storage.numel * tth::container::storage_element_size(storage.type)) {
      bug();
    }
  }
  std::unordered_set<std::string> keys;
  for (const auto& entry : layout.entries) {
    if (!keys.insert(entry.key).second) bug();
    if (entry.module_attribute && !layout.module) bug();
    if (entry.value.kind != PickleValue::Kind::kTensor) continue;
    if (entry.storage >= layout.storages.size()) bug();
    const auto& storage = layout.storages[entry.storage];
    if (storage.type != entry.value.tensor.type ||
        storage.numel != entry.value.tensor.storage_numel) {
      bug();
    }
    check_tensor(entry.value.tensor);
  }
  // The layout is the pickle's leaves, in order, with the pickle's module flag.
  const auto* pickle = reader->find(layout.directory + "data.pkl");
  if (pickle == nullptr) bug();
  const std::vector<uint8_t> bytes = reader->read_all(*pickle);
  const PickleContents contents = tth::container::parse_pickle(bytes.data(), bytes.size(), "fuzz");
  if (contents.module != layout.module || contents.attributes.size() != layout.entries.size()) {
    bug();
  }
  for (std::size_t i = 0; i < layout.entries.size(); ++i) {
    const auto& attribute = contents.attributes[i];
    const auto& entry = layout.entries[i];
    if (entry.module_attribute != attribute.module_attribute ||
        !same_value(entry.value, attribute.value) ||
        (layout.keys_encoded ? tth::container::decode_archive_key(attribute.name)
                             : attribute.name) != entry.key) {
      bug();
    }
  }
}

void fuzz_key(const uint8_t* data, std::size_t size) {
  const std::string key(reinterpret_cast<const char*>(data), std::min(size, kMaxCodecKeyBytes));
  const std::string encoded = tth::container::encode_archive_key(key);
  for (char c : encoded) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       std::string_view("_./:-%").find(c) != std::string_view::npos;
    if (!plain) bug();
  }
  if (tth::container::decode_archive_key(encoded) != key) bug();
  (void)tth::container::decode_archive_key(key);  // any bytes decode
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  fuzz_pickle(data, size);
  fuzz_archive(data, size);
  fuzz_key(data, size);
  return 0;
}
