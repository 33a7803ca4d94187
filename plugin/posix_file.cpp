#include "posix_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "tth/atomic_file.h"
#include "tth/error.h"

namespace tth {

namespace {

// Linux transfers at most about 2 GiB per call; larger requests only come back short.
constexpr std::size_t kMaxTransfer = std::size_t{1} << 30;
// Writes at least this large start their writeback at once (write_streaming).
constexpr std::size_t kWritebackBytes = std::size_t{1} << 20;

}  // namespace

File::File(const std::string& path, int flags, mode_t mode)
    : fd_(::open(path.c_str(), flags | O_CLOEXEC, mode)), path_(path) {
  if (fd_ < 0) throw IOError("open", path, errno);
}

File File::open_regular(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  File file(path, O_RDONLY | O_NONBLOCK);
  struct stat info {};
  if (::fstat(file.fd_, &info) != 0) throw IOError("stat", path, errno);
  if (!S_ISREG(info.st_mode)) {
    throw FormatError("'" + path + "' is not a regular file (" + file_kind(info.st_mode) + ")");
  }
  // Back to blocking reads, although Linux ignores O_NONBLOCK for regular files.
  const int flags = ::fcntl(file.fd_, F_GETFL);
  if (flags < 0 || ::fcntl(file.fd_, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    throw IOError("fcntl", path, errno);
  }
  return file;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File::File(File&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

void File::write_all(const void* data, std::size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, bytes, std::min(size, kMaxTransfer));
    if (n < 0 && errno == EINTR) continue;
    // A write that makes no progress without an error would loop forever: report it.
    if (n <= 0) throw IOError("write", path_, n < 0 ? errno : EIO);
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
}

void File::write_streaming(const void* data, std::size_t size) {
  write_all(data, size);
#ifdef SYNC_FILE_RANGE_WRITE
  if (size < kWritebackBytes) return;
  // The bytes just written end at the position (whatever wrote before them). Only a hint: a
  // failure here (a pipe has no position) is ignored, and write errors surface at the fsync.
  const off_t end = ::lseek(fd_, 0, SEEK_CUR);
  if (end >= static_cast<off_t>(size)) {
    ::sync_file_range(fd_, end - static_cast<off_t>(size), static_cast<off_t>(size),
                      SYNC_FILE_RANGE_WRITE);
  }
#endif
}

void File::pwrite_all(const void* data, std::size_t size, uint64_t offset) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n =
        ::pwrite(fd_, bytes, std::min(size, kMaxTransfer), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw IOError("pwrite", path_, n < 0 ? errno : EIO);
    bytes += n;
    size -= static_cast<std::size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

std::size_t File::pread_all(void* data, std::size_t size, uint64_t offset) const {
  auto* bytes = static_cast<uint8_t*>(data);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd_, bytes + done, std::min(size - done, kMaxTransfer),
                              static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IOError("read", path_, errno);
    if (n == 0) break;  // end of file
    done += static_cast<std::size_t>(n);
  }
  return done;
}

uint64_t File::size() const {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) throw IOError("stat", path_, errno);
  return static_cast<uint64_t>(info.st_size);
}

bool File::is_regular() const {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) throw IOError("stat", path_, errno);
  return S_ISREG(info.st_mode);
}

void File::sync() {
  if (::fsync(fd_) != 0) throw IOError("fsync", path_, errno);
}

void File::close() {
  const int fd = std::exchange(fd_, -1);
  if (fd >= 0 && ::close(fd) != 0) throw IOError("close", path_, errno);
}

const char* file_kind(mode_t mode) {
  return S_ISREG(mode)    ? "a regular file"
         : S_ISDIR(mode)  ? "a directory"
         : S_ISFIFO(mode) ? "a FIFO"
         : S_ISCHR(mode)  ? "a character device"
         : S_ISBLK(mode)  ? "a block device"
         : S_ISSOCK(mode) ? "a socket"
         : S_ISLNK(mode)  ? "a symbolic link"
                          : "of an unknown kind";
}

namespace {

// A releaser unlinks LOCK while it still holds it, so each retry of try_lock follows a
// release that happened meanwhile; more than a few in a row means something else is wrong.
constexpr int kLockAttempts = 100;

// Whether `path` still names the file open as `file`.
bool names(const std::string& path, const File& file) {
  struct stat opened {
  }, named{};
  if (::fstat(file.fd(), &opened) != 0) throw IOError("stat", file.path(), errno);
  if (::stat(path.c_str(), &named) != 0) {
    if (errno == ENOENT) return false;
    throw IOError("stat", path, errno);
  }
  return opened.st_dev == named.st_dev && opened.st_ino == named.st_ino;
}

// The pid a holder wrote into its lock file; 0 if none can be read (it may not have written
// it yet).
long read_pid(const File& file) {
  char text[32] = {};
  const std::size_t n = file.pread_all(text, sizeof text - 1, 0);
  char* end = nullptr;
  const long pid = std::strtol(text, &end, 10);
  return n > 0 && end != text && pid > 0 ? pid : 0;
}

}  // namespace

std::string DirectoryLock::lock_path(const std::string& directory, const std::string& name) {
  return (std::filesystem::path(directory) / name).string();
}

DirectoryLock::DirectoryLock(std::string directory, std::string name, File file)
    : directory_(std::move(directory)), name_(std::move(name)), file_(std::move(file)) {}

std::optional<DirectoryLock> DirectoryLock::try_lock(const std::string& directory, long* holder_pid,
                                                     const std::string& name) {
  const std::string path = lock_path(directory, name);
  for (int attempt = 0;; ++attempt) {
    // Never O_TRUNC: the file may be someone else's, holding their pid.
    File file(path, O_RDWR | O_CREAT);
    if (::flock(file.fd(), LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      if (error != EWOULDBLOCK) throw IOError("lock", path, error);
      if (holder_pid != nullptr) *holder_pid = read_pid(file);
      return std::nullopt;
    }
    if (!names(path, file)) {
      // Locked a file its releaser had already unlinked: the lock of the directory is that of
      // the file now at the path, if any.
      if (attempt == kLockAttempts) throw IOError("lock", path, EAGAIN);
      continue;
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(file.fd(), 0) != 0) throw IOError("truncate", path, errno);
    file.pwrite_all(pid.data(), pid.size(), 0);
    return DirectoryLock(directory, name, std::move(file));
  }
}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    release();
    directory_ = std::move(other.directory_);
    name_ = std::move(other.name_);
    file_ = std::move(other.file_);
  }
  return *this;
}

DirectoryLock::~DirectoryLock() { release(); }

void DirectoryLock::release() noexcept {
  if (file_.fd() < 0) return;
  // Unlink while still holding the lock, and only our own file: one that replaced it (after
  // someone deleted ours by hand) belongs to its holder. Errors change nothing for the lock.
  const std::string path = lock_path(directory_, name_);
  try {
    if (names(path, file_)) ::unlink(path.c_str());
  } catch (const IOError&) {
  }
  const File unlocked = std::move(file_);  // closing the descriptor releases the lock
}

}  // namespace tth
