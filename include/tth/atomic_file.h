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
// complete file, but its rename may not survive a power loss; the error is rethrown.
//
// Temp files of a process that crashed between steps 1 and 4 are left behind; they are
// recognisable by name (`is_temp_file_name`) and removed by `remove_temp_files`, which the
// snapshot extensions call when training starts (their resume phase). doc/snapshots.md
// describes the whole commit and what a crash can leave.
//
// Thread safety: concurrent atomic_write calls are safe, also on the same path (the last
// rename wins).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace tth {

/// Writes `path` atomically and durably; see the header comment. Throws tth::IOError naming
/// the path for system-call failures, and rethrows whatever `write` throws.
void atomic_write(const std::string& path, const std::function<void(const std::string&)>& write);

/// Whether `file_name` (no directory) is a temp name made by atomic_write.
bool is_temp_file_name(const std::string& file_name);

/// Removes every temp file of atomic_write directly in `directory`; returns their paths.
/// A missing directory is not an error.
std::vector<std::string> remove_temp_files(const std::string& directory);

/// fsyncs an existing file (or, with a directory path, the directory). Throws tth::IOError.
void sync_path(const std::string& path);

}  // namespace tth
