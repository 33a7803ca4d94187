// File: the one layer between the library and the operating system's file calls. Private.
//
// Every descriptor the library opens is owned by a File, so no error path closes one by hand,
// and every read and write goes through the loops here, which retry EINTR and short transfers.
// Every failed call is a tth::IOError naming the operation and the path (LevelDB keeps its
// POSIX calls in one env_posix.cc for the same reasons); open_regular also refuses what is not
// a regular file. LibTorch-free: the zip container uses it.
//
// Thread safety: the const members (pread_all, size, is_regular) may run concurrently, as
// ZipReader's readers do: pread_all does not move the file position. Writes, sync and close
// need one thread at a time.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tth {

/// An open file descriptor with the path it was opened by, closed on destruction.
class File {
 public:
  /// Opens `path` with open(2) `flags` (O_CLOEXEC is added) and, when creating, `mode`
  /// (0666: the umask decides, as for any new file). Throws tth::IOError naming the path.
  File(const std::string& path, int flags, mode_t mode = 0666);
  /// Opens the existing file `path` read-only and refuses anything but a regular file (a
  /// directory, a FIFO, a device) with tth::FormatError "'<path>' is not a regular file (a
  /// FIFO)". The open does not wait for a FIFO's writer, so a FIFO fails at once instead of
  /// hanging. For readers of archives and snapshots. Throws tth::IOError if it cannot be opened.
  static File open_regular(const std::string& path);
  /// Closes the descriptor if still open; a close error is lost here, so writers call close().
  ~File();
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }

  /// Writes all of `data` at the current position.
  void write_all(const void* data, std::size_t size);
  /// write_all, then (for writes of 1 MiB or more) starts the disk's writeback of those bytes
  /// without waiting, so the disk works while the caller prepares the next bytes and the final
  /// fsync has less left to do. For files written front to back, such as a snapshot; may be
  /// mixed with the other writes.
  void write_streaming(const void* data, std::size_t size);
  /// Writes all of `data` at `offset`; the position does not move.
  void pwrite_all(const void* data, std::size_t size, uint64_t offset);
  /// Reads up to `size` bytes at `offset`; returns fewer only at the end of the file.
  std::size_t pread_all(void* data, std::size_t size, uint64_t offset) const;
  /// The file's size (fstat).
  uint64_t size() const;
  /// Whether it is a regular file (fstat).
  bool is_regular() const;
  /// fsync: its failure fails the caller (never retried: the kernel may have dropped the data).
  void sync();
  /// Closes now and reports a close error (a deferred write error on some file systems).
  void close();

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace tth
