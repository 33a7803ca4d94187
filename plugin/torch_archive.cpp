#include "torch_archive.h"

#include <fmt/format.h>

#include <cstring>

#include "container/pickle.h"
#include "container/zip_reader.h"
#include "empty_for_filling.h"
#include "tth/error.h"
#include "tth/snapshot_file.h"

namespace tth {

at::ScalarType scalar_type(container::StorageType type) {
  using container::StorageType;
  switch (type) {
    case StorageType::kBool:
      return at::kBool;
    case StorageType::kUInt8:
      return at::kByte;
    case StorageType::kInt8:
      return at::kChar;
    case StorageType::kInt16:
      return at::kShort;
    case StorageType::kInt32:
      return at::kInt;
    case StorageType::kInt64:
      return at::kLong;
    case StorageType::kFloat16:
      return at::kHalf;
    case StorageType::kBFloat16:
      return at::kBFloat16;
    case StorageType::kFloat32:
      return at::kFloat;
    case StorageType::kFloat64:
      return at::kDouble;
    case StorageType::kComplexFloat:
      return at::kComplexFloat;
    case StorageType::kComplexDouble:
      break;
  }
  return at::kComplexDouble;
}

namespace {

using container::StorageType;

// The storage's elements, read straight into one fresh buffer. The layout guarantees that the
// member holds exactly numel * element size bytes; the sink still refuses more.
at::Tensor read_storage(const container::ZipReader& reader,
                        const container::TorchArchiveLayout::Storage& storage) {
  at::Tensor buffer =
      empty_for_filling({static_cast<int64_t>(storage.numel)}, scalar_type(storage.type),
                        storage.entry->uncompressed_size);
  auto* out = static_cast<uint8_t*>(buffer.data_ptr());
  const uint64_t size = storage.entry->uncompressed_size;
  uint64_t filled = 0;
  reader.read(*storage.entry, [&](const uint8_t* data, size_t n) {
    if (n > size - filled) {
      throw FormatError(fmt::format("{}: member '{}' holds more than {} bytes", reader.label(),
                                    storage.entry->name, size));
    }
    std::memcpy(out + filled, data, n);
    filled += n;
  });
  if (filled != size) {
    throw FormatError(fmt::format("{}: member '{}' holds {} bytes, not {}", reader.label(),
                                  storage.entry->name, filled, size));
  }
  return buffer;
}

// The entries `wanted` accepts; only their storages are read.
StateDict read_entries(
    const container::ZipReader& reader, const container::TorchArchiveLayout& layout,
    const std::function<bool(const container::TorchArchiveLayout::Entry&)>& wanted) {
  std::vector<bool> used(layout.storages.size(), false);
  for (const auto& entry : layout.entries) {
    if (wanted(entry) && entry.value.kind == container::PickleValue::Kind::kTensor) {
      used[entry.storage] = true;
    }
  }
  std::vector<at::Tensor> storages(layout.storages.size());
  for (size_t i = 0; i < layout.storages.size(); ++i) {
    if (used[i]) storages[i] = read_storage(reader, layout.storages[i]);
  }
  StateDict state;
  for (const auto& entry : layout.entries) {
    if (!wanted(entry)) continue;
    const container::PickleValue& value = entry.value;
    switch (value.kind) {
      case container::PickleValue::Kind::kTensor: {
        const container::TensorRef& tensor = value.tensor;
        // In bounds: container::read_torch_archive checked offset, sizes and strides.
        state.set(entry.key,
                  storages[entry.storage].as_strided(tensor.sizes, tensor.strides, tensor.offset));
        break;
      }
      case container::PickleValue::Kind::kString:
        state.set(entry.key, value.text);
        break;
      case container::PickleValue::Kind::kInt:
        state.set_int(entry.key, value.integer);
        break;
      case container::PickleValue::Kind::kDouble:
        state.set_double(entry.key, value.real);
        break;
      case container::PickleValue::Kind::kBool:
        state.set_bool(entry.key, value.boolean);
        break;
      case container::PickleValue::Kind::kNone:
        break;  // a StateDict has no None (as npz files leave Chainer's None out)
    }
  }
  return state;
}

}  // namespace

void check_torch_archive(const container::ZipReader& reader) {
  container::read_torch_archive(reader, kFormatVersionKey);
}

StateDict read_torch_archive(const std::string& path) { return read_torch_archive(path, {}); }

StateDict read_torch_archive(const std::string& path,
                             const std::function<bool(const std::string&)>& wanted) {
  const container::ZipReader reader(path);
  const container::TorchArchiveLayout layout =
      container::read_torch_archive(reader, kFormatVersionKey);
  return read_entries(reader, layout, [&](const container::TorchArchiveLayout::Entry& entry) {
    return !wanted || wanted(entry.key);
  });
}

StateDict read_module_weights(const std::string& path) {
  const container::ZipReader reader(path);
  const container::TorchArchiveLayout layout =
      container::read_torch_archive(reader, kFormatVersionKey);
  return read_entries(reader, layout, [](const container::TorchArchiveLayout::Entry& entry) {
    return entry.module_attribute && entry.value.kind == container::PickleValue::Kind::kTensor;
  });
}

bool archive_keys_encoded(const StateDict& state) {
  if (!state.contains(kFormatVersionKey)) return true;
  const auto* version = std::get_if<at::Tensor>(&state.at(kFormatVersionKey));
  if (version == nullptr || version->dim() != 0 ||
      !at::isIntegralType(version->scalar_type(), /*includeBool=*/false)) {
    return true;
  }
  const int64_t value = version->item<int64_t>();
  return !(value >= 1 && value <= container::kLastUnencodedKeysVersion);
}

}  // namespace tth
