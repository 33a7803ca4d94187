#include "tth/savefun.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <torch/serialize/output-archive.h>

#include <exception>

#include "archive_values.h"
#include "container/pickle.h"
#include "posix_file.h"
#include "torch_archive.h"
#include "tth/error.h"
#include "tth/snapshot_file.h"

namespace tth {

namespace {

// Writes the archive through our own File. LibTorch's file writer throws from its destructor
// when a write fails (a full disk), which terminates the process; here the callback never
// throws into LibTorch's writer: the first failed write is remembered, later bytes are dropped,
// and the error is raised after save_to returns. Large records (tensor data) go through
// write_streaming, so their writeback starts while LibTorch serializes the next ones.
void save_archive(torch::serialize::OutputArchive& archive, const std::string& path) {
  File file(path, O_WRONLY | O_CREAT | O_TRUNC);
  std::exception_ptr error;
  archive.save_to([&](const void* data, size_t size) -> size_t {
    if (!error) {
      try {
        file.write_streaming(data, size);
      } catch (...) {
        error = std::current_exception();
      }
    }
    return size;
  });
  if (error) std::rethrow_exception(error);
  file.close();
}

}  // namespace

SaveFunction torch_savefun() {
  return [](const std::string& path, const StateDict& state) {
    const bool encode = archive_keys_encoded(state);
    torch::serialize::OutputArchive archive;
    for (const auto& [key, value] : state) {
      // LibTorch writes each name unescaped into the archive's TorchScript source.
      if (!encode && !container::storable_unencoded(key)) {
        throw Error(fmt::format(
            "torch_savefun: key '{}' must be encoded, which the keys of a state whose '{}' is "
            "{} are not; set it to {} to write the current format",
            key, kFormatVersionKey, container::kLastUnencodedKeysVersion, kSnapshotFormatVersion));
      }
      write_value(archive, encode ? container::encode_archive_key(key) : key, value,
                  /*as_buffer=*/false);
    }
    save_archive(archive, path);
  };
}

LoadFunction torch_loadfun() {
  return [](const std::string& path) { return read_torch_archive(path); };
}

}  // namespace tth
