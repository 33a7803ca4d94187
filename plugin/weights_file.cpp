#include "tth/weights_file.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <limits>

#include "container/pickle.h"
#include "container/zip_reader.h"
#include "posix_file.h"
#include "snapshot_file_impl.h"
#include "torch_archive.h"
#include "tth/error.h"
#include "tth/npz.h"
#include "tth/snapshot_file.h"

namespace tth {

namespace {

// Python's torch.save before 1.6 (and with _use_new_zipfile_serialization=False) writes bare
// pickles, which start with PROTO (0x80) and the protocol, 2 to 5.
constexpr unsigned char kPickleProto = 0x80;

[[noreturn]] void throw_not_weights(const std::string& path) {
  const File file = File::open_regular(path);
  std::array<unsigned char, 2> head{};
  if (file.pread_all(head.data(), head.size(), 0) == head.size() && head[0] == kPickleProto &&
      head[1] >= 2 && head[1] <= 5) {
    throw FormatError(fmt::format(
        "'{}' is a bare Python pickle: the legacy torch.save format (before PyTorch 1.6, or "
        "_use_new_zipfile_serialization=False), which only Python's unpickler reads; re-save "
        "it in Python with torch.save(torch.load(f), f2) (PyTorch >= 1.6 writes the zip format)",
        path));
  }
  throw FormatError(fmt::format(
      "'{}' is not a weights file: neither an npz nor a LibTorch, TorchScript or torch.save "
      "archive (all of them are zip files)",
      path));
}

bool holds_format_version(const container::TorchArchiveLayout& layout) {
  for (const auto& entry : layout.entries) {
    if (entry.key == kFormatVersionKey) return true;
  }
  return false;
}

WeightsFormat archive_format(const container::TorchArchiveLayout& layout) {
  if (holds_format_version(layout)) return WeightsFormat::kSnapshotArchive;
  return layout.module ? WeightsFormat::kTorchScript : WeightsFormat::kTorchSave;
}

bool is_snapshot(WeightsFormat format) {
  return format == WeightsFormat::kSnapshotArchive || format == WeightsFormat::kSnapshotNpz;
}

// A view of a small storage may describe more bytes than 64 bits count: saturated.
WeightsEntry describe_tensor(std::string key, at::ScalarType dtype, std::vector<int64_t> shape) {
  uint64_t bytes = c10::elementSize(dtype);
  for (int64_t size : shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(size), &bytes)) {
      bytes = std::numeric_limits<uint64_t>::max();
      break;
    }
  }
  return {std::move(key), c10::toString(dtype), std::move(shape), bytes};
}

// The entries of an archive, from its layout: nothing but data.pkl is read.
std::vector<WeightsEntry> archive_entries(const container::TorchArchiveLayout& layout) {
  using Kind = container::PickleValue::Kind;
  std::vector<WeightsEntry> out;
  for (const auto& entry : layout.entries) {
    const container::PickleValue& value = entry.value;
    switch (value.kind) {
      case Kind::kTensor:
        out.push_back(
            describe_tensor(entry.key, scalar_type(value.tensor.type), value.tensor.sizes));
        break;
      case Kind::kInt:
        out.push_back(describe_tensor(entry.key, at::kLong, {}));
        break;
      case Kind::kDouble:
        out.push_back(describe_tensor(entry.key, at::kDouble, {}));
        break;
      case Kind::kBool:
        out.push_back(describe_tensor(entry.key, at::kBool, {}));
        break;
      case Kind::kString:
        out.push_back({entry.key, "text", {}, value.text.size()});
        break;
      case Kind::kNone:
        out.push_back({entry.key, "None", {}, 0});
        break;
    }
  }
  return out;
}

std::vector<WeightsEntry> state_entries(const StateDict& state) {
  std::vector<WeightsEntry> out;
  for (const auto& [key, value] : state) {
    if (const auto* tensor = std::get_if<at::Tensor>(&value)) {
      out.push_back(describe_tensor(key, tensor->scalar_type(), tensor->sizes().vec()));
    } else {
      out.push_back({key, "text", {}, std::get<std::string>(value).size()});
    }
  }
  return out;
}

}  // namespace

const char* to_string(WeightsFormat format) {
  switch (format) {
    case WeightsFormat::kSnapshotArchive:
      return "TorchTrainerHook snapshot (LibTorch archive)";
    case WeightsFormat::kSnapshotNpz:
      return "TorchTrainerHook snapshot (npz)";
    case WeightsFormat::kNpz:
      return "npz";
    case WeightsFormat::kTorchScript:
      return "TorchScript archive";
    case WeightsFormat::kTorchSave:
      break;
  }
  return "PyTorch torch.save file";
}

WeightsFormat detect_weights_format(const std::string& path) {
  if (!starts_like_zip(path)) throw_not_weights(path);
  const container::ZipReader reader(path);
  switch (zip_format(reader)) {
    case FileFormat::kNpz:
      return reader.find(std::string(kFormatVersionKey) + ".npy") != nullptr
                 ? WeightsFormat::kSnapshotNpz
                 : WeightsFormat::kNpz;
    case FileFormat::kTorchArchive:
      return archive_format(container::read_torch_archive(reader, kFormatVersionKey));
    case FileFormat::kOther:
      break;
  }
  throw FormatError(fmt::format(
      "'{}' is a zip file, but neither an npz (only .npy members) nor a tensor archive (no "
      "'<dir>/data.pkl' member)",
      path));
}

WeightsInfo inspect_weights(const std::string& path) {
  WeightsInfo info;
  info.format = detect_weights_format(path);
  if (is_snapshot(info.format)) {
    const StateDict metadata = read_snapshot_metadata(path);  // checked as read_snapshot does
    info.format_version = metadata.get_int(kFormatVersionKey);
    if (metadata.contains(kIterationKey)) info.iteration = metadata.get_int(kIterationKey);
  }
  if (info.format == WeightsFormat::kNpz || info.format == WeightsFormat::kSnapshotNpz) {
    info.entries = state_entries(read_npz(path));
  } else {
    const container::ZipReader reader(path);
    info.entries = archive_entries(container::read_torch_archive(reader, kFormatVersionKey));
  }
  return info;
}

WeightsFormat verify_weights(const std::string& path) {
  const WeightsFormat format = detect_weights_format(path);
  if (is_snapshot(format)) {
    verify_snapshot(path);
  } else {
    verify_file(path);
  }
  return format;
}

StateDict read_weights(const std::string& path) {
  const WeightsFormat format = detect_weights_format(path);
  if (is_snapshot(format)) return read_snapshot(path);
  verify_file(path);
  return format == WeightsFormat::kNpz ? read_npz(path) : read_torch_archive(path);
}

}  // namespace tth
