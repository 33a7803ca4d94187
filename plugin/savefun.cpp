#include "tth/savefun.h"

#include <fmt/format.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "archive_values.h"
#include "tth/error.h"

namespace tth {

namespace {

// Writes the archive through our own descriptor. LibTorch's file writer throws from its
// destructor when a write fails (a full disk), which terminates the process; here a failed
// write is remembered, later bytes are dropped, and the error is raised after save_to returns.
void save_archive(torch::serialize::OutputArchive& archive, const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw IOError("open", path, errno);
  int error = 0;
  try {
    archive.save_to([&](const void* data, size_t size) -> size_t {
      const auto* bytes = static_cast<const char*>(data);
      for (size_t done = 0; error == 0 && done < size;) {
        const ssize_t written = ::write(fd, bytes + done, size - done);
        if (written < 0 && errno == EINTR) continue;
        if (written < 0) {
          error = errno;
        } else {
          done += static_cast<size_t>(written);
        }
      }
      return size;
    });
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) throw IOError("write", path, error);
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
