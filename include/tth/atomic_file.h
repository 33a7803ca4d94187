// Atomic, durable file replacement: the one commit path of every snapshot and log.
//
// `atomic_write(path, write)` never leaves a torn file at `path`: a reader sees the previous
// complete file or the new complete file, also after a crash or power loss. Steps (leveldb's
// SetCurrentFile, made durable):
//   1. create `.<name>.tmp.<random>` with O_EXCL in the target's own directory (so the rename
//      stays within one file system), mode 0666 & ~umask like any new file (not mkstemp's
//      0600, chainer#4461); missing parent directories are created, each made durable by an
//      fsync of the directory that holds it;
//   2. `write(temp_path)` fills it (e.g. a savefun);
//   3. fsync the temp file: a failing fsync fails the write, never retried;
//   4. rename it over `path`, then fsync the directory so the rename itself is durable.
// On a failure before the rename, the temp file is removed, the error rethrown, and `path`
// is untouched. If only the final directory fsync fails, `path` already holds the new
// complete file, but its rename may not survive a power loss; the error is rethrown. A `path`
// that exists and is not a regular file (a FIFO, a device, a directory) is refused, never
// replaced.
//
// Temp files of a process that crashed between steps 1 and 4 are left behind; they are
// recognisable by name (`is_temp_file_name`). Only a temp file whose writer is gone may be
// removed, and a process that writes temps into a directory says it is alive by holding the
// directory's lock: an flock on `<directory>/LOCK` (kLockFileName), as LevelDB's LOCK file.
// A training run holds the lock of its output directory and of every directory its snapshots
// are written into (TorchTrainerHook::lock_directory), from start until it is finalized, and
// only then removes their temps (`remove_temp_files`, in the snapshot extensions' resume
// phase); a second run on the same directory fails at start. `atomic_write_standalone` does
// the same for a program outside a run (`tth convert`). doc/snapshots.md describes the whole
// commit, what a crash can leave, and the lock.
//
// Thread safety: concurrent atomic_write calls are safe, also on the same path (the last
// rename wins). A write that holds no lock of its directory (atomic_write called directly, or
// an atomic_write_standalone that found the lock held) can lose its temp file, and fail, if a
// process that takes the lock later cleans the directory while it writes.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace tth {

/// The lock file that a process keeps in a directory while it writes there: "LOCK". It holds
/// the holder's pid; a released lock removes it.
inline constexpr char kLockFileName[] = "LOCK";

/// Writes `path` atomically and durably; see the header comment. Throws tth::IOError naming
/// the path for system-call failures, tth::Error "atomic_write: '<path>' exists and is not a
/// regular file (a FIFO)" for such a target, and rethrows whatever `write` throws.
void atomic_write(const std::string& path, const std::function<void(const std::string&)>& write);

/// atomic_write for a program that is not a training run, such as `tth convert`: when no other
/// process holds the lock of `path`'s directory, takes it for the write and first removes the
/// directory's temp files, whose writers are then gone (returns their paths). When another
/// process holds it (a run writes there), writes without the lock and removes nothing. Throws
/// as atomic_write does.
std::vector<std::string> atomic_write_standalone(
    const std::string& path, const std::function<void(const std::string&)>& write);

/// Whether `file_name` (no directory) is a temp name made by atomic_write.
bool is_temp_file_name(const std::string& file_name);

/// Removes every temp file of atomic_write directly in `directory`; returns their paths.
/// A missing directory is not an error. REQUIRES: the caller holds the directory's lock (see
/// the header comment), else the in-flight temp file of a live writer could be removed.
std::vector<std::string> remove_temp_files(const std::string& directory);

/// fsyncs an existing file (or, with a directory path, the directory). Throws tth::IOError.
void sync_path(const std::string& path);

}  // namespace tth
