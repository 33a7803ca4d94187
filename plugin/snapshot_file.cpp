#include "tth/snapshot_file.h"

#include <fmt/format.h>

#include <array>
#include <cstring>

#include "container/pickle.h"
#include "container/zip_reader.h"
#include "posix_file.h"
#include "snapshot_file_impl.h"
#include "text_util.h"
#include "torch_archive.h"
#include "tth/error.h"
#include "tth/npz.h"
#include "tth/state_layout.h"

namespace tth {

namespace {

constexpr std::array<char, 4> kZipMagic = {'P', 'K', '\x03', '\x04'};
constexpr std::array<char, 4> kEmptyZipMagic = {'P', 'K', '\x05', '\x06'};

// The value of the metadata entry `key`, which must be a 0-d integer tensor: a file is hostile
// input, and converting anything else (1e300, NaN, a complex, a text, a 1-d tensor) would throw
// LibTorch's errors or abort in the callers that print it.
int64_t metadata_int(const StateDict& state, const char* key, const std::string& path) {
  const StateValue& value = state.at(key);
  const auto* tensor = std::get_if<at::Tensor>(&value);
  if (tensor == nullptr || tensor->dim() != 0 ||
      !at::isIntegralType(tensor->scalar_type(), /*includeBool=*/false)) {
    throw FormatError(fmt::format("'{}': key '{}' holds {}, but it must be a 0-d integer tensor",
                                  path, key, describe(value)));
  }
  return tensor->item<int64_t>();  // every integral dtype converts exactly
}

}  // namespace

const char* to_string(FileFormat format) {
  switch (format) {
    case FileFormat::kTorchArchive:
      return "LibTorch archive";
    case FileFormat::kNpz:
      return "npz";
    case FileFormat::kOther:
      break;
  }
  return "other";
}

bool starts_like_zip(const std::string& path) {
  const File file = File::open_regular(path);
  std::array<char, 4> head{};
  return file.pread_all(head.data(), head.size(), 0) == head.size() &&
         (head == kZipMagic || head == kEmptyZipMagic);
}

FileFormat zip_format(const container::ZipReader& reader) {
  bool all_npy = true, has_pickle = false;
  for (const auto& entry : reader.entries()) {
    all_npy = all_npy && ends_with(entry.name, ".npy");
    has_pickle = has_pickle || ends_with(entry.name, "/data.pkl");
  }
  if (has_pickle) return FileFormat::kTorchArchive;
  if (all_npy) return FileFormat::kNpz;
  return FileFormat::kOther;
}

FileFormat verify_file(const std::string& path) {
  if (!starts_like_zip(path)) return FileFormat::kOther;
  container::ZipReader reader(path);
  reader.verify();
  const FileFormat format = zip_format(reader);
  if (format == FileFormat::kTorchArchive) {
    // The structure read_torch_archive relies on, so that a file that verifies also loads.
    check_torch_archive(reader);
  }
  return format;
}

namespace {

bool is_metadata(const std::string& key) {
  static const std::string kMetadataPrefix = state_layout::key(state_layout::kMetadata, "");
  return key.compare(0, kMetadataPrefix.size(), kMetadataPrefix) == 0;
}

// Checks the metadata entries of `state`, read from `path`.
void check_metadata(const StateDict& state, const std::string& path) {
  if (!state.contains(kFormatVersionKey)) {
    throw FormatError(fmt::format("'{}' has no '{}' entry: not a TorchTrainerHook snapshot", path,
                                  kFormatVersionKey));
  }
  const int64_t version = metadata_int(state, kFormatVersionKey, path);
  if (version > kSnapshotFormatVersion || version < 1) {
    throw FormatError(
        fmt::format("'{}' has format version {}, but this build reads versions 1 "
                    "to {}; upgrade TorchTrainerHook to load it",
                    path, version, kSnapshotFormatVersion));
  }
  if (state.contains(kIterationKey)) {
    const int64_t iteration = metadata_int(state, kIterationKey, path);
    if (iteration < 0) {
      throw FormatError(fmt::format("'{}': key '{}' holds {}, but an iteration is >= 0", path,
                                    kIterationKey, iteration));
    }
  }
}

}  // namespace

StateDict read_snapshot(const std::string& path, const LoadFunction& loadfun) {
  const FileFormat format = verify_file(path);
  StateDict state;
  if (format == FileFormat::kOther && !loadfun) {
    throw FormatError(fmt::format(
        "'{}' is neither a LibTorch archive nor an npz file (pass the loadfun of its savefun)",
        path));
  }
  try {
    state = format == FileFormat::kTorchArchive ? torch_loadfun()(path)
            : format == FileFormat::kNpz        ? npz_loadfun()(path)
                                                : loadfun(path);
  } catch (const FormatError&) {
    throw;
  } catch (const IOError&) {
    throw;
  } catch (const std::exception& error) {
    // Whatever else reading a file throws (a wrongly typed entry, LibTorch refusing a value)
    // means the file is not a usable snapshot.
    throw FormatError(fmt::format("'{}' is not a usable snapshot: {}", path, error.what()));
  }
  check_metadata(state, path);
  return state;
}

namespace {

// The metadata of `path`, a LibTorch archive or an npz file (`format`), and nothing else.
// Metadata members are a few bytes: a large one is a file built to make the reader allocate.
StateDict read_metadata(const std::string& path, FileFormat format) {
  constexpr uint64_t kMaxMetadataBytes = uint64_t{1} << 20;
  auto check_size = [](const container::ZipReader& reader, const container::ZipEntry& entry) {
    if (entry.uncompressed_size > kMaxMetadataBytes) {
      throw FormatError(fmt::format("{}: member '{}' declares {} bytes, but metadata is small",
                                    reader.label(), entry.name, entry.uncompressed_size));
    }
  };
  {
    const container::ZipReader reader(path);
    if (format == FileFormat::kNpz) {
      for (const auto& entry : reader.entries()) {
        if (is_metadata(entry.name)) check_size(reader, entry);
      }
    } else {
      const container::TorchArchiveLayout layout =
          container::read_torch_archive(reader, kFormatVersionKey);
      for (const auto& entry : layout.entries) {
        if (is_metadata(entry.key) && entry.value.kind == container::PickleValue::Kind::kTensor) {
          check_size(reader, *layout.storages[entry.storage].entry);
        }
      }
    }
  }
  StateDict metadata = format == FileFormat::kTorchArchive ? read_torch_archive(path, is_metadata)
                                                           : read_npz(path, is_metadata);
  check_metadata(metadata, path);
  return metadata;
}

[[noreturn]] void throw_not_a_snapshot_format(const std::string& path) {
  throw FormatError(fmt::format("'{}' is neither a LibTorch archive nor an npz file", path));
}

}  // namespace

StateDict verify_snapshot(const std::string& path) {
  const FileFormat format = verify_file(path);
  if (format == FileFormat::kOther) throw_not_a_snapshot_format(path);
  return read_metadata(path, format);
}

StateDict read_snapshot_metadata(const std::string& path) {
  if (!starts_like_zip(path)) throw_not_a_snapshot_format(path);
  const FileFormat format = zip_format(container::ZipReader(path));
  if (format == FileFormat::kOther) throw_not_a_snapshot_format(path);
  return read_metadata(path, format);
}

StateDict without_metadata(const StateDict& state) {
  StateDict rest;
  for (const auto& [key, value] : state) {
    if (!is_metadata(key)) rest.set(key, value);
  }
  return rest;
}

}  // namespace tth
