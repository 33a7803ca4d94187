// libFuzzer target for the restricted pickle reader and the tensor-archive layout
// (container/pickle.h): the input as a data.pkl, the input as a whole archive (a zip whose
// `<dir>/data.pkl` and storage members read_torch_archive checks), and the input as a key for
// the key codec. Properties checked beyond "no crash":
//   - every tensor the reader accepts addresses only elements inside its storage, recomputed
//     here independently in 128-bit arithmetic, with as many strides as sizes, at most
//     kMaxDims of each, all non-negative;
//   - every storage of an accepted archive is a member of exactly numel * element size bytes,
//     and every tensor of the layout names a storage of its type and size;
//   - parsing is deterministic (the same bytes give the same attributes);
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
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "container/pickle.h"
#include "container/zip_reader.h"
#include "tth/error.h"

namespace {

using tth::container::PickleAttribute;
using tth::container::PickleValue;
using tth::container::TensorRef;

// Keys longer than this are not worth encoding on every run.
constexpr std::size_t kMaxKeyBytes = 512;

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
}

bool same(const std::vector<PickleAttribute>& a, const std::vector<PickleAttribute>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const PickleValue &x = a[i].value, &y = b[i].value;
    if (a[i].name != b[i].name || x.kind != y.kind || x.boolean != y.boolean ||
        x.integer != y.integer || x.text != y.text ||
        x.tensor.storage_key != y.tensor.storage_key || x.tensor.offset != y.tensor.offset ||
        x.tensor.sizes != y.tensor.sizes || x.tensor.strides != y.tensor.strides) {
      return false;
    }
  }
  return true;
}

std::optional<std::vector<PickleAttribute>> parse(const uint8_t* data, std::size_t size) {
  try {
    return tth::container::parse_tensor_pickle(data, size, "fuzz");
  } catch (const tth::Error&) {
    return std::nullopt;
  }
}

void fuzz_pickle(const uint8_t* data, std::size_t size) {
  const auto attributes = parse(data, size);
  if (!attributes) return;
  for (const PickleAttribute& attribute : *attributes) {
    if (attribute.value.kind == PickleValue::Kind::kTensor) check_tensor(attribute.value.tensor);
  }
  const auto again = parse(data, size);
  if (!again || !same(*attributes, *again)) bug();
}

void fuzz_archive(const uint8_t* data, std::size_t size) {
  std::optional<tth::container::ZipReader> reader;
  try {
    reader.emplace(data, size);
  } catch (const tth::Error&) {
    return;
  }
  try {
    const auto layout = tth::container::read_torch_archive(*reader, "tth/format_version");
    for (const auto& storage : layout.storages) {
      if (storage.entry == nullptr || reader->find(storage.entry->name) != storage.entry ||
          storage.entry->uncompressed_size !=
              storage.numel * tth::container::storage_element_size(storage.type)) {
        bug();
      }
    }
    for (const auto& entry : layout.entries) {
      if (entry.value.kind != PickleValue::Kind::kTensor) continue;
      if (entry.storage >= layout.storages.size()) bug();
      const auto& storage = layout.storages[entry.storage];
      if (storage.type != entry.value.tensor.type ||
          storage.numel != entry.value.tensor.storage_numel) {
        bug();
      }
      check_tensor(entry.value.tensor);
    }
  } catch (const tth::Error&) {
  }
}

void fuzz_key(const uint8_t* data, std::size_t size) {
  const std::string key(reinterpret_cast<const char*>(data), std::min(size, kMaxKeyBytes));
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
