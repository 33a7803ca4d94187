#include "tth/snapshot_file.h"

#include <fmt/format.h>

#include <array>
#include <cstring>

#include "container/zip_reader.h"
#include "posix_file.h"
#include "text_util.h"
#include "tth/error.h"
#include "tth/npz.h"
#include "tth/state_layout.h"

namespace tth {

namespace {

constexpr std::array<char, 4> kZipMagic = {'P', 'K', '\x03', '\x04'};
constexpr std::array<char, 4> kEmptyZipMagic = {'P', 'K', '\x05', '\x06'};

// Refuses a directory or a FIFO (tth::FormatError) before reading: a FIFO would block.
bool starts_like_zip(const std::string& path) {
  const File file = File::open_regular(path);
  std::array<char, 4> head{};
  return file.pread_all(head.data(), head.size(), 0) == head.size() &&
         (head == kZipMagic || head == kEmptyZipMagic);
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

FileFormat verify_file(const std::string& path) {
  if (!starts_like_zip(path)) return FileFormat::kOther;
  container::ZipReader reader(path);
  reader.verify();
  const auto& entries = reader.entries();
  bool all_npy = true, has_pickle = false;
  for (const auto& entry : entries) {
    all_npy = all_npy && ends_with(entry.name, ".npy");
    has_pickle = has_pickle || ends_with(entry.name, "/data.pkl");
  }
  if (has_pickle) return FileFormat::kTorchArchive;
  if (all_npy) return FileFormat::kNpz;
  return FileFormat::kOther;
}

StateDict read_snapshot(const std::string& path, const LoadFunction& loadfun) {
  const FileFormat format = verify_file(path);
  StateDict state;
  if (format == FileFormat::kOther && !loadfun) {
    throw FormatError(fmt::format(
        "'{}' is neither a LibTorch archive nor an npz file (pass the loadfun of its savefun)",
        path));
  }
  int64_t version = 0;
  try {
    state = format == FileFormat::kTorchArchive ? torch_loadfun()(path)
            : format == FileFormat::kNpz        ? npz_loadfun()(path)
                                                : loadfun(path);
    if (!state.contains(kFormatVersionKey)) {
      throw FormatError(fmt::format("'{}' has no '{}' entry: not a TorchTrainerHook snapshot", path,
                                    kFormatVersionKey));
    }
    version = state.get_int(kFormatVersionKey);
  } catch (const FormatError&) {
    throw;
  } catch (const IOError&) {
    throw;
  } catch (const std::exception& error) {
    // Whatever else reading a file throws (a wrongly typed entry, LibTorch refusing a value)
    // means the file is not a usable snapshot.
    throw FormatError(fmt::format("'{}' is not a usable snapshot: {}", path, error.what()));
  }
  if (version > kSnapshotFormatVersion || version < 1) {
    throw FormatError(
        fmt::format("'{}' has format version {}, but this build reads versions 1 "
                    "to {}; upgrade TorchTrainerHook to load it",
                    path, version, kSnapshotFormatVersion));
  }
  return state;
}

StateDict without_metadata(const StateDict& state) {
  static const std::string kMetadataPrefix = state_layout::key(state_layout::kMetadata, "");
  StateDict rest;
  for (const auto& [key, value] : state) {
    if (key.compare(0, kMetadataPrefix.size(), kMetadataPrefix) != 0) rest.set(key, value);
  }
  return rest;
}

}  // namespace tth
