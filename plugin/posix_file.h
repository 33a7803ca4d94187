// File: the one layer between the library and the operating system's file calls. Private.
//
// Every descriptor the library opens is owned by a File, so no error path closes one by hand,
// and every read and write goes through the loops here, which retry EINTR and short transfers.
// Every failed call is a tth::IOError naming the operation and the path (LevelDB keeps its
// POSIX calls in one env_posix.cc for the same reasons); open_regular also refuses what is not
// a regular file. DirectoryLock is LevelDB's LOCK file: one run per output directory.
// LibTorch-free: the zip container uses it.
//
// Thread safety: the const members (pread_all, size, is_regular) may run concurrently, as
// ZipReader's readers do: pread_all does not move the file position. Writes, sync and close
// need one thread at a time. A DirectoryLock excludes every other holder, in this process too.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "tth/atomic_file.h"

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

/// What kind of file a stat(2) mode describes, for messages: "a regular file", "a directory",
/// "a FIFO", "a character device", "a block device", "a socket", "a symbolic link" or "of an
/// unknown kind".
const char* file_kind(mode_t mode);

/// An exclusive advisory lock on a directory, held while the object lives: LevelDB's LOCK.
///
/// The lock is flock(LOCK_EX | LOCK_NB) on `<directory>/LOCK` (kLockFileName of
/// tth/atomic_file.h), opened anew by every try_lock: flock locks belong to an open file
/// description, so a second lock of the same directory fails also in the same process. The
/// holder writes its pid into the file, for the message of whoever is refused. The kernel drops
/// the lock when the holder dies, so a LOCK file left by a killed process blocks nobody.
///
/// Releasing (destruction) removes the LOCK file, then unlocks, so a finished run leaves no
/// file behind. try_lock therefore checks, once it holds the lock, that the path still names
/// the file it locked (a releaser may have unlinked it meanwhile) and tries again if not.
/// Deleting the LOCK file of a live holder by hand breaks the exclusion; nothing else does.
class DirectoryLock {
 public:
  /// Takes the lock of the existing `directory`, creating its LOCK file (mode 0666 & ~umask).
  /// Returns nothing when another open file holds it; then `*holder_pid`, if given, receives
  /// the pid written in the file (0 when it holds none yet). Throws tth::IOError naming the
  /// lock file when it cannot be created or locked (an unwritable or missing directory).
  /// `name` replaces LOCK for a lock of its own: each rank of a data-parallel job holds
  /// "LOCK.rank<r>" of the directory the ranks share, rank 0 "LOCK".
  static std::optional<DirectoryLock> try_lock(const std::string& directory,
                                               long* holder_pid = nullptr,
                                               const std::string& name = kLockFileName);
  /// `<directory>/<name>`.
  static std::string lock_path(const std::string& directory,
                               const std::string& name = kLockFileName);

  /// Removes the LOCK file if it is still the locked one, then releases the lock.
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept = default;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  /// The locked directory, as given to try_lock.
  const std::string& directory() const noexcept { return directory_; }

 private:
  DirectoryLock(std::string directory, std::string name, File file);
  void release() noexcept;

  std::string directory_;
  std::string name_;
  File file_;  // fd -1 once moved from
};

}  // namespace tth
