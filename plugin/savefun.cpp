#include "tth/savefun.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <exception>

#include "archive_values.h"
#include "posix_file.h"
#include "tth/error.h"

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
    torch::serialize::OutputArchive archive;
    for (const auto& [key, value] : state) write_value(archive, key, value, /*as_buffer=*/false);
    save_archive(archive, path);
  };
}

LoadFunction torch_loadfun() {
  return [](const std::string& path) {
    try {
      torch::serialize::InputArchive archive;
      archive.load_from(path, at::kCPU);  // a CUDA snapshot loads on a CPU-only machine too
      return read_values(archive, "'" + path + "'", /*scalars=*/true);
    } catch (const c10::Error& error) {
      throw FormatError(fmt::format("'{}' is not a readable LibTorch archive: {}", path,
                                    error.what_without_backtrace()));
    }
  };
}

}  // namespace tth
